//! The drift tests themselves, each built the way Evidently 0.7 builds it on top of scipy:
//! chi-square on category frequencies with expected counts scaled from the reference,
//! two-proportion Z-test, Wasserstein-1 distance normed by the reference standard deviation,
//! Jensen-Shannon distance (natural log, square root of the divergence) and PSI on
//! Evidently's bins (Sturges histogram over the pooled sample for numeric columns with more
//! than 20 distinct reference values, category frequencies otherwise).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::special::{chi_square_survival, normal_cdf};

/// A drift test, named after Evidently's registry entry it reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StatTestKind {
    /// Two-sample Kolmogorov-Smirnov p-value (Evidently `ks`).
    KolmogorovSmirnov,
    /// Chi-square goodness of fit of current category counts against the reference (`chisquare`).
    ChiSquare,
    /// Two-proportion Z-test for two-valued columns (`z`).
    ProportionZ,
    /// Wasserstein-1 distance divided by the reference standard deviation (`wasserstein`).
    WassersteinNormed,
    /// Jensen-Shannon distance (`jensenshannon`).
    JensenShannon,
    /// Population stability index (`psi`).
    PopulationStabilityIndex,
    /// Domain classifier ROC AUC against the 95th percentile of random classifiers
    /// (`perc_text_content_drift`).
    TextDomainClassifierPercentile,
    /// Domain classifier ROC AUC against a fixed threshold (`abs_text_content_drift`).
    TextDomainClassifierAbsolute,
}

/// Whether a score is a p-value (drift when small) or a distance (drift when large).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScoreKind {
    PValue,
    Distance,
    RocAuc,
}

impl StatTestKind {
    /// Every test, in a stable order.
    pub const ALL: [StatTestKind; 8] = [
        StatTestKind::KolmogorovSmirnov,
        StatTestKind::ChiSquare,
        StatTestKind::ProportionZ,
        StatTestKind::WassersteinNormed,
        StatTestKind::JensenShannon,
        StatTestKind::PopulationStabilityIndex,
        StatTestKind::TextDomainClassifierPercentile,
        StatTestKind::TextDomainClassifierAbsolute,
    ];

    /// The name Evidently registers the same test under.
    pub fn evidently_name(self) -> &'static str {
        match self {
            StatTestKind::KolmogorovSmirnov => "ks",
            StatTestKind::ChiSquare => "chisquare",
            StatTestKind::ProportionZ => "z",
            StatTestKind::WassersteinNormed => "wasserstein",
            StatTestKind::JensenShannon => "jensenshannon",
            StatTestKind::PopulationStabilityIndex => "psi",
            StatTestKind::TextDomainClassifierPercentile => "perc_text_content_drift",
            StatTestKind::TextDomainClassifierAbsolute => "abs_text_content_drift",
        }
    }

    /// Parses an Evidently test name.
    pub fn from_evidently_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.evidently_name() == name)
    }

    /// Human-readable name for reports.
    pub fn display_name(self) -> &'static str {
        match self {
            StatTestKind::KolmogorovSmirnov => "K-S p-value",
            StatTestKind::ChiSquare => "chi-square p-value",
            StatTestKind::ProportionZ => "Z-test p-value",
            StatTestKind::WassersteinNormed => "Wasserstein distance (normed)",
            StatTestKind::JensenShannon => "Jensen-Shannon distance",
            StatTestKind::PopulationStabilityIndex => "PSI",
            StatTestKind::TextDomainClassifierPercentile => {
                "Domain classifier ROC AUC (percentile)"
            }
            StatTestKind::TextDomainClassifierAbsolute => "Domain classifier ROC AUC (absolute)",
        }
    }

    /// Evidently's default threshold for the test.
    pub fn default_threshold(self) -> f64 {
        match self {
            StatTestKind::KolmogorovSmirnov
            | StatTestKind::ChiSquare
            | StatTestKind::ProportionZ => 0.05,
            StatTestKind::WassersteinNormed
            | StatTestKind::JensenShannon
            | StatTestKind::PopulationStabilityIndex => 0.1,
            StatTestKind::TextDomainClassifierPercentile => 0.95,
            StatTestKind::TextDomainClassifierAbsolute => 0.55,
        }
    }

    /// What the score means.
    pub fn score_kind(self) -> ScoreKind {
        match self {
            StatTestKind::KolmogorovSmirnov
            | StatTestKind::ChiSquare
            | StatTestKind::ProportionZ => ScoreKind::PValue,
            StatTestKind::WassersteinNormed
            | StatTestKind::JensenShannon
            | StatTestKind::PopulationStabilityIndex => ScoreKind::Distance,
            StatTestKind::TextDomainClassifierPercentile
            | StatTestKind::TextDomainClassifierAbsolute => ScoreKind::RocAuc,
        }
    }

    /// The verdict for a score, with Evidently's exact comparison for each test
    /// (`<=` for K-S, `<` for chi-square and Z, `>=` for the distances, `>` for ROC AUC).
    /// For the percentile text test the threshold passed here is the random-classifier
    /// percentile, not the confidence level.
    pub fn is_drift(self, score: f64, threshold: f64) -> bool {
        match self {
            StatTestKind::KolmogorovSmirnov => score <= threshold,
            StatTestKind::ChiSquare | StatTestKind::ProportionZ => score < threshold,
            StatTestKind::WassersteinNormed
            | StatTestKind::JensenShannon
            | StatTestKind::PopulationStabilityIndex => score >= threshold,
            StatTestKind::TextDomainClassifierPercentile
            | StatTestKind::TextDomainClassifierAbsolute => score > threshold,
        }
    }
}

/// A finite f64 with a total order, so numbers can be counted as categories.
#[derive(Debug, Clone, Copy)]
pub struct CategoryNumber(f64);

impl CategoryNumber {
    /// Wraps a value, folding -0.0 into 0.0 so both count as one category.
    pub fn new(value: f64) -> Self {
        Self(if value == 0.0 { 0.0 } else { value })
    }
    pub fn value(self) -> f64 {
        self.0
    }
}

impl PartialEq for CategoryNumber {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for CategoryNumber {}
impl PartialOrd for CategoryNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for CategoryNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Counts of each category over the union of both samples, keys in ascending order.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryCounts<K> {
    pub keys: Vec<K>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// Counts categories of both samples over their union.
pub fn count_categories<K: Ord + Clone>(reference: &[K], current: &[K]) -> CategoryCounts<K> {
    let mut table: BTreeMap<K, (f64, f64)> = BTreeMap::new();
    for key in reference {
        table.entry(key.clone()).or_default().0 += 1.0;
    }
    for key in current {
        table.entry(key.clone()).or_default().1 += 1.0;
    }
    let mut counts = CategoryCounts {
        keys: Vec::with_capacity(table.len()),
        reference: Vec::with_capacity(table.len()),
        current: Vec::with_capacity(table.len()),
    };
    for (key, (in_reference, in_current)) in table {
        counts.keys.push(key);
        counts.reference.push(in_reference);
        counts.current.push(in_current);
    }
    counts
}

/// Number of distinct values over both samples.
pub fn distinct_count<K: Ord + Clone>(reference: &[K], current: &[K]) -> usize {
    let mut all: Vec<&K> = reference.iter().chain(current).collect();
    all.sort();
    all.dedup();
    all.len()
}

/// Result of a test that yields a statistic and a p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestStatistic {
    pub statistic: f64,
    pub p_value: f64,
}

/// Chi-square test of the current category counts against expected counts equal to the
/// reference counts scaled to the current sample size; k - 1 degrees of freedom.
/// A category absent from the reference but present in the current data gives an
/// infinite statistic and p = 0, as scipy's `chisquare` does.
pub fn chi_square_test<K: Ord + Clone>(reference: &[K], current: &[K]) -> Option<TestStatistic> {
    if reference.is_empty() || current.is_empty() {
        return None;
    }
    let counts = count_categories(reference, current);
    let scale = current.len() as f64 / reference.len() as f64;
    let mut statistic = 0.0;
    for (expected_count, observed) in counts.reference.iter().zip(&counts.current) {
        let expected = expected_count * scale;
        let difference = observed - expected;
        if expected == 0.0 {
            if difference != 0.0 {
                statistic = f64::INFINITY;
            }
            continue;
        }
        statistic += difference * difference / expected;
    }
    let degrees = counts.keys.len().saturating_sub(1) as f64;
    let p_value = if degrees == 0.0 {
        f64::NAN
    } else {
        chi_square_survival(statistic, degrees)
    };
    Some(TestStatistic { statistic, p_value })
}

/// Two-sided two-proportion Z-test. The first (smallest) category over both samples is
/// coded 0 and every other value 1; identical single-valued samples give p = 1.
pub fn proportion_z_test<K: Ord + Clone>(reference: &[K], current: &[K]) -> Option<TestStatistic> {
    if reference.is_empty() || current.is_empty() {
        return None;
    }
    let first = reference.iter().chain(current).min()?.clone();
    let reference_single = reference.iter().all(|value| *value == reference[0]);
    let current_single = current.iter().all(|value| *value == current[0]);
    if reference_single && current_single && reference[0] == current[0] {
        return Some(TestStatistic {
            statistic: 0.0,
            p_value: 1.0,
        });
    }
    let ones = |values: &[K]| values.iter().filter(|value| **value != first).count() as f64;
    let (n1, n2) = (reference.len() as f64, current.len() as f64);
    let (p1, p2) = (ones(reference) / n1, ones(current) / n2);
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let p_value = 2.0 * (1.0 - normal_cdf(z.abs()));
    Some(TestStatistic {
        statistic: z,
        p_value,
    })
}

/// Wasserstein-1 distance between two empirical distributions (area between their CDFs).
pub fn wasserstein_distance(first: &[f64], second: &[f64]) -> Option<f64> {
    let (a, b) = crate::kolmogorov::sorted_samples(first, second)?;
    let mut all: Vec<f64> = a.iter().chain(&b).copied().collect();
    all.sort_by(f64::total_cmp);
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut total = 0.0;
    for window in all.windows(2) {
        let value = window[0];
        while i < a.len() && a[i] <= value {
            i += 1;
        }
        while j < b.len() && b[j] <= value {
            j += 1;
        }
        total += (i as f64 / n1 - j as f64 / n2).abs() * (window[1] - window[0]);
    }
    Some(total)
}

/// Population standard deviation (ddof = 0).
pub fn population_std(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let variance =
        values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / values.len() as f64;
    variance.sqrt()
}

/// Wasserstein-1 distance divided by max(reference std, 0.001), as Evidently norms it.
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> Option<f64> {
    let distance = wasserstein_distance(reference, current)?;
    Some(distance / population_std(reference).max(0.001))
}

/// Jensen-Shannon distance between two (not necessarily normalised) frequency vectors:
/// the square root of the divergence, natural logarithm.
pub fn jensen_shannon_distance(first: &[f64], second: &[f64]) -> Option<f64> {
    if first.len() != second.len() || first.is_empty() {
        return None;
    }
    let sum_first: f64 = first.iter().sum();
    let sum_second: f64 = second.iter().sum();
    if sum_first <= 0.0 || sum_second <= 0.0 {
        return None;
    }
    let relative_entropy = |x: f64, y: f64| -> f64 {
        if x > 0.0 && y > 0.0 {
            x * (x / y).ln()
        } else if x == 0.0 && y >= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let mut left = 0.0;
    let mut right = 0.0;
    for (a, b) in first.iter().zip(second) {
        let (p, q) = (a / sum_first, b / sum_second);
        let middle = (p + q) / 2.0;
        left += relative_entropy(p, middle);
        right += relative_entropy(q, middle);
    }
    Some(((left + right) / 2.0).max(0.0).sqrt())
}

/// PSI = Σ (r - c) · ln(r / c) over bins (shares must be strictly positive).
pub fn population_stability_index(reference_shares: &[f64], current_shares: &[f64]) -> Option<f64> {
    if reference_shares.len() != current_shares.len() || reference_shares.is_empty() {
        return None;
    }
    Some(
        reference_shares
            .iter()
            .zip(current_shares)
            .map(|(r, c)| (r - c) * (r / c).ln())
            .sum(),
    )
}

/// Bin edges of numpy's `histogram_bin_edges(values, bins="sturges")`.
pub fn sturges_edges(values: &[f64]) -> Vec<f64> {
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for &value in values {
        low = low.min(value);
        high = high.max(value);
    }
    if values.is_empty() {
        return vec![0.0, 1.0];
    }
    let range = high - low;
    let width = range / ((values.len() as f64).log2() + 1.0);
    let (first, last, bins) = if range == 0.0 {
        (low - 0.5, high + 0.5, 1usize)
    } else {
        (low, high, (range / width).ceil().max(1.0) as usize)
    };
    linspace(first, last, bins + 1)
}

/// numpy's `linspace(start, stop, count)` with the endpoint pinned exactly.
pub fn linspace(start: f64, stop: f64, count: usize) -> Vec<f64> {
    if count == 0 {
        return Vec::new();
    }
    if count == 1 {
        return vec![start];
    }
    let divisions = (count - 1) as f64;
    let delta = stop - start;
    let step = delta / divisions;
    let mut edges: Vec<f64> = (0..count)
        .map(|i| {
            if step == 0.0 {
                i as f64 / divisions * delta + start
            } else {
                i as f64 * step + start
            }
        })
        .collect();
    edges[count - 1] = stop;
    edges
}

/// numpy's `histogram(values, edges)`: left-closed bins, the last one closed on both ends,
/// values outside the edges ignored.
pub fn histogram_counts(values: &[f64], edges: &[f64]) -> Vec<f64> {
    if edges.len() < 2 {
        return Vec::new();
    }
    let bins = edges.len() - 1;
    let mut counts = vec![0.0; bins];
    let last = edges[bins];
    for &value in values {
        if value < edges[0] || value > last || value.is_nan() {
            continue;
        }
        let index = if value == last {
            bins - 1
        } else {
            edges.partition_point(|edge| *edge <= value) - 1
        };
        counts[index.min(bins - 1)] += 1.0;
    }
    counts
}

/// Share of each bin in both samples, built as Evidently's `get_binned_data`.
#[derive(Debug, Clone, PartialEq)]
pub struct BinnedShares {
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// Sturges-binned shares of two numeric samples (bins over the pooled sample).
pub fn numeric_binned_shares(reference: &[f64], current: &[f64]) -> BinnedShares {
    let pooled: Vec<f64> = reference.iter().chain(current).copied().collect();
    let edges = sturges_edges(&pooled);
    let share = |values: &[f64]| -> Vec<f64> {
        let n = values.len().max(1) as f64;
        histogram_counts(values, &edges)
            .into_iter()
            .map(|c| c / n)
            .collect()
    };
    BinnedShares {
        reference: share(reference),
        current: share(current),
    }
}

/// Category shares of two samples over their union.
pub fn category_binned_shares<K: Ord + Clone>(reference: &[K], current: &[K]) -> BinnedShares {
    let counts = count_categories(reference, current);
    let (n1, n2) = (reference.len().max(1) as f64, current.len().max(1) as f64);
    BinnedShares {
        reference: counts.reference.iter().map(|c| c / n1).collect(),
        current: counts.current.iter().map(|c| c / n2).collect(),
    }
}

/// Replaces empty bins as Evidently does before PSI: by min(non-zero share) / 10^6 when
/// that minimum is at most 0.0001, otherwise by 0.0001.
pub fn fill_empty_bins(shares: &mut [f64]) {
    let smallest = shares
        .iter()
        .copied()
        .filter(|share| *share != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !smallest.is_finite() {
        return;
    }
    let replacement = if smallest <= 0.0001 {
        smallest / 1e6
    } else {
        0.0001
    };
    for share in shares.iter_mut() {
        if *share == 0.0 {
            *share = replacement;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sturges_matches_numpy_bin_count() {
        // numpy: len(np.histogram_bin_edges(np.arange(2000.0), "sturges")) - 1 == 12
        let values: Vec<f64> = (0..2000).map(f64::from).collect();
        assert_eq!(sturges_edges(&values).len() - 1, 12);
        // A power of two: log2(1024) + 1 = 11 exactly.
        let values: Vec<f64> = (0..1024).map(f64::from).collect();
        assert_eq!(sturges_edges(&values).len() - 1, 11);
    }

    #[test]
    fn histogram_closes_the_last_bin() {
        let counts = histogram_counts(&[0.0, 0.5, 1.0, 1.5, 2.0], &[0.0, 1.0, 2.0]);
        assert_eq!(counts, vec![2.0, 3.0]);
    }

    #[test]
    fn fill_empty_bins_follows_evidently() {
        let mut shares = vec![0.5, 0.0, 0.5];
        fill_empty_bins(&mut shares);
        assert_eq!(shares, vec![0.5, 0.0001, 0.5]);
        let mut shares = vec![0.00005, 0.0, 0.99995];
        fill_empty_bins(&mut shares);
        assert!((shares[1] - 0.00005 / 1e6).abs() < 1e-20);
    }
}
