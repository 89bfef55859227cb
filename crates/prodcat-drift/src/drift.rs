//! Comparing a current profile with a reference profile: test selection as Evidently 0.7.23
//! chooses its defaults, running the tests, and assembling the report.
//!
//! Default selection (n = rows of the reference column without missing values, u = distinct
//! values over both sides):
//!
//! | kind                 | n <= 1000                                 | n > 1000                     |
//! |----------------------|-------------------------------------------|------------------------------|
//! | numeric, u > 5       | K-S (p <= 0.05)                           | Wasserstein normed (>= 0.1)  |
//! | numeric, 2 < u <= 5  | chi-square (p < 0.05)                     | Jensen-Shannon (>= 0.1)      |
//! | numeric, u <= 2      | Z-test (p < 0.05)                         | Jensen-Shannon (>= 0.1)      |
//! | categorical/binary, u > 2 | chi-square (p < 0.05)                | Jensen-Shannon (>= 0.1)      |
//! | categorical/binary, u <= 2 | Z-test (p < 0.05)                   | Jensen-Shannon (>= 0.1)      |
//! | text                 | domain classifier AUC > 95th pct. of random | domain classifier AUC > 0.55 |
//!
//! Dataset drift: share of drifted columns >= drift share (default 0.5).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{DriftError, Result};
use crate::kolmogorov::two_sample_ks;
use crate::profile::{ColumnKind, ColumnValues, Profile, ProfileColumn};
use crate::report::{ColumnDrift, ColumnSummary, DriftReport, Histogram, TextDriftDetails};
use crate::stattest::{
    category_binned_shares, chi_square_test, distinct_count, fill_empty_bins,
    jensen_shannon_distance, numeric_binned_shares, population_stability_index, population_std,
    proportion_z_test, wasserstein_normed, BinnedShares, CategoryNumber, StatTestKind,
};
use crate::text_drift::{domain_classifier_drift, TextDriftMode};

/// Reference size up to which the statistical tests (rather than distances) are used.
pub const SMALL_REFERENCE_ROWS: usize = 1000;

/// Settings of a drift comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftOptions {
    /// Dataset drift when the share of drifted columns is at least this (0..=1).
    pub drift_share: f64,
    /// Tests forced for named columns (e.g. PSI for the predicted class).
    pub per_column_test: BTreeMap<String, StatTestKind>,
    /// Thresholds overriding the tests' defaults for named columns.
    pub per_column_threshold: BTreeMap<String, f64>,
    /// Number of bins of numeric charts.
    pub chart_bins: usize,
    /// Largest number of categories drawn per chart (the rest is grouped as "(other)").
    pub chart_categories: usize,
    /// Heading of the report.
    pub title: String,
}

impl Default for DriftOptions {
    fn default() -> Self {
        Self {
            drift_share: 0.5,
            per_column_test: BTreeMap::new(),
            per_column_threshold: BTreeMap::new(),
            chart_bins: 20,
            chart_categories: 20,
            title: "Drift report".into(),
        }
    }
}

impl DriftOptions {
    /// Forces `test` for `column`.
    pub fn with_test(mut self, column: impl Into<String>, test: StatTestKind) -> Self {
        self.per_column_test.insert(column.into(), test);
        self
    }

    /// Overrides the threshold of `column`.
    pub fn with_threshold(mut self, column: impl Into<String>, threshold: f64) -> Self {
        self.per_column_threshold.insert(column.into(), threshold);
        self
    }
}

/// Evidently's default test for a column of `kind` with `reference_rows` reference values
/// and `distinct_values` distinct values over both sides.
pub fn select_test(
    kind: ColumnKind,
    reference_rows: usize,
    distinct_values: usize,
) -> StatTestKind {
    let small = reference_rows <= SMALL_REFERENCE_ROWS;
    match kind {
        ColumnKind::Text if small => StatTestKind::TextDomainClassifierPercentile,
        ColumnKind::Text => StatTestKind::TextDomainClassifierAbsolute,
        ColumnKind::Numeric if small && distinct_values > 5 => StatTestKind::KolmogorovSmirnov,
        ColumnKind::Numeric if !small && distinct_values > 5 => StatTestKind::WassersteinNormed,
        ColumnKind::Numeric | ColumnKind::Categorical | ColumnKind::Binary if !small => {
            StatTestKind::JensenShannon
        }
        ColumnKind::Numeric | ColumnKind::Categorical | ColumnKind::Binary => {
            if distinct_values > 2 {
                StatTestKind::ChiSquare
            } else {
                StatTestKind::ProportionZ
            }
        }
    }
}

/// Distinct values over both sides of a column (texts compared whole).
pub fn distinct_values(reference: &ColumnValues, current: &ColumnValues) -> usize {
    match (reference, current) {
        (ColumnValues::Numeric(a), ColumnValues::Numeric(b)) => {
            distinct_count(&as_category_numbers(a), &as_category_numbers(b))
        }
        (ColumnValues::Categorical(a), ColumnValues::Categorical(b))
        | (ColumnValues::Text(a), ColumnValues::Text(b)) => distinct_count(a, b),
        (ColumnValues::Binary(a), ColumnValues::Binary(b)) => distinct_count(a, b),
        _ => 0,
    }
}

fn as_category_numbers(values: &[f64]) -> Vec<CategoryNumber> {
    values.iter().copied().map(CategoryNumber::new).collect()
}

/// Compares every column of the reference profile with the same column of the current one.
pub fn detect_drift(
    reference: &Profile,
    current: &Profile,
    options: &DriftOptions,
) -> Result<DriftReport> {
    if !(0.0..=1.0).contains(&options.drift_share) {
        return Err(DriftError::InvalidSetting {
            setting: "drift_share",
            reason: format!("{} is not within [0, 1]", options.drift_share),
        });
    }
    let mut columns = Vec::with_capacity(reference.columns.len());
    for reference_column in &reference.columns {
        let current_column =
            current
                .column(&reference_column.name)
                .ok_or_else(|| DriftError::MissingColumn {
                    column: reference_column.name.clone(),
                })?;
        columns.push(test_column(reference_column, current_column, options)?);
    }
    let drifted_columns = columns.iter().filter(|c| c.drifted).count();
    let share_of_drifted_columns = if columns.is_empty() {
        0.0
    } else {
        drifted_columns as f64 / columns.len() as f64
    };
    Ok(DriftReport {
        title: options.title.clone(),
        reference_rows: reference.sampled_rows,
        current_rows: current.sampled_rows,
        dataset_drift: !columns.is_empty() && share_of_drifted_columns >= options.drift_share,
        columns,
        drifted_columns,
        share_of_drifted_columns,
        drift_share: options.drift_share,
        concept_drift: None,
    })
}

/// Tests one column pair, with the test and threshold from `options` or the defaults.
pub fn test_column(
    reference: &ProfileColumn,
    current: &ProfileColumn,
    options: &DriftOptions,
) -> Result<ColumnDrift> {
    let name = reference.name.clone();
    if reference.kind() != current.kind() {
        return Err(DriftError::KindMismatch {
            column: name,
            reference_kind: reference.kind().to_string(),
            current_kind: current.kind().to_string(),
        });
    }
    if reference.values.is_empty() {
        return Err(DriftError::EmptyColumn {
            column: name,
            dataset: "reference",
        });
    }
    if current.values.is_empty() {
        return Err(DriftError::EmptyColumn {
            column: name,
            dataset: "current",
        });
    }
    let distinct = distinct_values(&reference.values, &current.values);
    let test = options
        .per_column_test
        .get(&name)
        .copied()
        .unwrap_or_else(|| select_test(reference.kind(), reference.values.len(), distinct));
    let threshold = options
        .per_column_threshold
        .get(&name)
        .copied()
        .unwrap_or_else(|| test.default_threshold());
    let outcome = run_test(&name, test, threshold, &reference.values, &current.values)?;
    Ok(ColumnDrift {
        kind: reference.kind(),
        test,
        test_name: test.evidently_name().to_owned(),
        score: outcome.score,
        score_kind: test.score_kind(),
        statistic: outcome.statistic,
        ks_method: outcome.ks_method,
        threshold,
        decision_threshold: outcome.decision_threshold,
        drifted: test.is_drift(outcome.score, outcome.decision_threshold),
        distinct_values: distinct,
        reference: summarise(reference),
        current: summarise(current),
        histogram: histogram(&reference.values, &current.values, options),
        text_details: outcome.text_details,
        name,
    })
}

struct TestOutcome {
    score: f64,
    statistic: Option<f64>,
    ks_method: Option<crate::kolmogorov::KolmogorovMethod>,
    decision_threshold: f64,
    text_details: Option<TextDriftDetails>,
}

impl TestOutcome {
    fn plain(score: f64, statistic: Option<f64>, threshold: f64) -> Self {
        Self {
            score,
            statistic,
            ks_method: None,
            decision_threshold: threshold,
            text_details: None,
        }
    }
}

fn not_applicable(test: StatTestKind, column: &str, kind: ColumnKind) -> DriftError {
    DriftError::TestNotApplicable {
        test: test.evidently_name(),
        column: column.to_owned(),
        kind: kind.to_string(),
    }
}

fn run_test(
    column: &str,
    test: StatTestKind,
    threshold: f64,
    reference: &ColumnValues,
    current: &ColumnValues,
) -> Result<TestOutcome> {
    let empty = || DriftError::EmptyColumn {
        column: column.to_owned(),
        dataset: "reference or current",
    };
    let kind = reference.kind();
    match test {
        StatTestKind::KolmogorovSmirnov => {
            let (ColumnValues::Numeric(a), ColumnValues::Numeric(b)) = (reference, current) else {
                return Err(not_applicable(test, column, kind));
            };
            let result = two_sample_ks(a, b).ok_or_else(empty)?;
            Ok(TestOutcome {
                ks_method: Some(result.method),
                ..TestOutcome::plain(result.p_value, Some(result.statistic), threshold)
            })
        }
        StatTestKind::WassersteinNormed => {
            let (ColumnValues::Numeric(a), ColumnValues::Numeric(b)) = (reference, current) else {
                return Err(not_applicable(test, column, kind));
            };
            let distance = wasserstein_normed(a, b).ok_or_else(empty)?;
            Ok(TestOutcome::plain(distance, None, threshold))
        }
        StatTestKind::ChiSquare | StatTestKind::ProportionZ => {
            let run = |test: StatTestKind| -> Option<crate::stattest::TestStatistic> {
                fn pick<K: Ord + Clone>(
                    test: StatTestKind,
                    a: &[K],
                    b: &[K],
                ) -> Option<crate::stattest::TestStatistic> {
                    if test == StatTestKind::ChiSquare {
                        chi_square_test(a, b)
                    } else {
                        proportion_z_test(a, b)
                    }
                }
                match (reference, current) {
                    (ColumnValues::Numeric(a), ColumnValues::Numeric(b)) => {
                        pick(test, &as_category_numbers(a), &as_category_numbers(b))
                    }
                    (ColumnValues::Categorical(a), ColumnValues::Categorical(b)) => {
                        pick(test, a, b)
                    }
                    (ColumnValues::Binary(a), ColumnValues::Binary(b)) => pick(test, a, b),
                    _ => None,
                }
            };
            if kind == ColumnKind::Text {
                return Err(not_applicable(test, column, kind));
            }
            let result = run(test).ok_or_else(empty)?;
            Ok(TestOutcome::plain(
                result.p_value,
                Some(result.statistic),
                threshold,
            ))
        }
        StatTestKind::JensenShannon | StatTestKind::PopulationStabilityIndex => {
            let mut shares = binned_shares(reference, current)
                .ok_or_else(|| not_applicable(test, column, kind))?;
            let score = if test == StatTestKind::JensenShannon {
                jensen_shannon_distance(&shares.reference, &shares.current)
            } else {
                fill_empty_bins(&mut shares.reference);
                fill_empty_bins(&mut shares.current);
                population_stability_index(&shares.reference, &shares.current)
            }
            .ok_or_else(empty)?;
            Ok(TestOutcome::plain(score, None, threshold))
        }
        StatTestKind::TextDomainClassifierPercentile
        | StatTestKind::TextDomainClassifierAbsolute => {
            let (ColumnValues::Text(a), ColumnValues::Text(b)) = (reference, current) else {
                return Err(not_applicable(test, column, kind));
            };
            let mode = if test == StatTestKind::TextDomainClassifierPercentile {
                TextDriftMode::Percentile {
                    confidence: threshold,
                }
            } else {
                TextDriftMode::Absolute { threshold }
            };
            let outcome = domain_classifier_drift(a, b, mode).map_err(|error| match error {
                DriftError::InvalidInput(reason) => {
                    DriftError::InvalidInput(format!("column `{column}`: {reason}"))
                }
                other => other,
            })?;
            Ok(TestOutcome {
                score: outcome.roc_auc,
                statistic: None,
                ks_method: None,
                decision_threshold: outcome.decision_threshold,
                text_details: Some(TextDriftDetails {
                    typical_current_words: outcome.typical_current_words,
                    typical_reference_words: outcome.typical_reference_words,
                }),
            })
        }
    }
}

/// Evidently's bins for the distance tests: Sturges bins over the pooled sample for numeric
/// columns with more than 20 distinct reference values, category shares otherwise.
pub fn binned_shares(reference: &ColumnValues, current: &ColumnValues) -> Option<BinnedShares> {
    match (reference, current) {
        (ColumnValues::Numeric(a), ColumnValues::Numeric(b)) => {
            let reference_numbers = as_category_numbers(a);
            if distinct_count(&reference_numbers, &[]) > 20 {
                Some(numeric_binned_shares(a, b))
            } else {
                Some(category_binned_shares(
                    &reference_numbers,
                    &as_category_numbers(b),
                ))
            }
        }
        (ColumnValues::Categorical(a), ColumnValues::Categorical(b)) => {
            Some(category_binned_shares(a, b))
        }
        (ColumnValues::Binary(a), ColumnValues::Binary(b)) => Some(category_binned_shares(a, b)),
        _ => None,
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn most_common<K: Ord + Clone>(values: &[K]) -> Option<(K, usize)> {
    let mut counts: BTreeMap<&K, usize> = BTreeMap::new();
    for value in values {
        *counts.entry(value).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(k, c)| (k.clone(), c))
}

/// Summary statistics of one column.
pub fn summarise(column: &ProfileColumn) -> ColumnSummary {
    let missing = column.missing_count;
    match &column.values {
        ColumnValues::Numeric(values) => {
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let count = sorted.len();
            ColumnSummary::Numeric {
                count,
                missing,
                mean: if count == 0 {
                    f64::NAN
                } else {
                    sorted.iter().sum::<f64>() / count as f64
                },
                std: population_std(&sorted),
                min: sorted.first().copied().unwrap_or(f64::NAN),
                median: median(&sorted),
                max: sorted.last().copied().unwrap_or(f64::NAN),
            }
        }
        ColumnValues::Categorical(values) => categorical_summary(values, missing, |v| v.clone()),
        ColumnValues::Binary(values) => categorical_summary(values, missing, |v| v.to_string()),
        ColumnValues::Text(values) => {
            let count = values.len().max(1) as f64;
            ColumnSummary::Text {
                count: values.len(),
                missing,
                distinct: distinct_count(values, &[]),
                mean_characters: values.iter().map(|t| t.chars().count() as f64).sum::<f64>()
                    / count,
                mean_words: values
                    .iter()
                    .map(|t| t.split_whitespace().count() as f64)
                    .sum::<f64>()
                    / count,
            }
        }
    }
}

fn categorical_summary<K: Ord + Clone>(
    values: &[K],
    missing: usize,
    label: impl Fn(&K) -> String,
) -> ColumnSummary {
    let (most_common_value, most_common_count) = most_common(values)
        .map(|(k, c)| (label(&k), c))
        .unwrap_or_default();
    ColumnSummary::Categorical {
        count: values.len(),
        missing,
        distinct: distinct_count(values, &[]),
        most_common: most_common_value,
        most_common_share: if values.is_empty() {
            0.0
        } else {
            most_common_count as f64 / values.len() as f64
        },
    }
}

/// Chart bins shared by both sides: equal-width bins over the pooled range for numbers
/// (text: over characters per text), the most frequent categories otherwise.
pub fn histogram(
    reference: &ColumnValues,
    current: &ColumnValues,
    options: &DriftOptions,
) -> Histogram {
    match (reference, current) {
        (ColumnValues::Numeric(a), ColumnValues::Numeric(b)) => {
            let (numbers_a, numbers_b) = (as_category_numbers(a), as_category_numbers(b));
            if distinct_count(&numbers_a, &numbers_b)
                <= options.chart_categories.min(options.chart_bins)
            {
                // Few distinct numbers (ratings, flags): one bar per value, in value order.
                let mut histogram =
                    category_histogram(&numbers_a, &numbers_b, usize::MAX, false, |v| {
                        short_number(v.value())
                    });
                histogram.measure = "value".into();
                histogram
            } else {
                numeric_histogram("value", a, b, options.chart_bins)
            }
        }
        (ColumnValues::Text(a), ColumnValues::Text(b)) => {
            let lengths = |texts: &[String]| -> Vec<f64> {
                texts.iter().map(|t| t.chars().count() as f64).collect()
            };
            numeric_histogram(
                "characters per text",
                &lengths(a),
                &lengths(b),
                options.chart_bins,
            )
        }
        (ColumnValues::Categorical(a), ColumnValues::Categorical(b)) => {
            category_histogram(a, b, options.chart_categories, true, |v| v.clone())
        }
        (ColumnValues::Binary(a), ColumnValues::Binary(b)) => {
            category_histogram(a, b, options.chart_categories, true, |v| v.to_string())
        }
        _ => Histogram {
            measure: "value".into(),
            labels: Vec::new(),
            reference: Vec::new(),
            current: Vec::new(),
        },
    }
}

fn numeric_histogram(measure: &str, a: &[f64], b: &[f64], bins: usize) -> Histogram {
    let bins = bins.max(1);
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in a.iter().chain(b) {
        low = low.min(v);
        high = high.max(v);
    }
    if !low.is_finite() {
        return Histogram {
            measure: measure.into(),
            labels: Vec::new(),
            reference: Vec::new(),
            current: Vec::new(),
        };
    }
    if high == low {
        low -= 0.5;
        high += 0.5;
    }
    let edges = crate::stattest::linspace(low, high, bins + 1);
    let share = |values: &[f64]| -> Vec<f64> {
        let n = values.len().max(1) as f64;
        crate::stattest::histogram_counts(values, &edges)
            .into_iter()
            .map(|c| c / n)
            .collect()
    };
    Histogram {
        measure: measure.into(),
        labels: edges
            .windows(2)
            .map(|w| format!("{}–{}", short_number(w[0]), short_number(w[1])))
            .collect(),
        reference: share(a),
        current: share(b),
    }
}

fn category_histogram<K: Ord + Clone>(
    a: &[K],
    b: &[K],
    limit: usize,
    by_frequency: bool,
    label: impl Fn(&K) -> String,
) -> Histogram {
    let counts = crate::stattest::count_categories(a, b);
    let mut order: Vec<usize> = (0..counts.keys.len()).collect();
    order.sort_by(|x, y| {
        if !by_frequency {
            return x.cmp(y);
        }
        (counts.reference[*y] + counts.current[*y])
            .total_cmp(&(counts.reference[*x] + counts.current[*x]))
            .then(x.cmp(y))
    });
    let (na, nb) = (a.len().max(1) as f64, b.len().max(1) as f64);
    let limit = limit.max(1);
    let mut histogram = Histogram {
        measure: "category".into(),
        labels: Vec::new(),
        reference: Vec::new(),
        current: Vec::new(),
    };
    let (mut other_reference, mut other_current) = (0.0, 0.0);
    for (position, index) in order.into_iter().enumerate() {
        if position < limit {
            histogram.labels.push(label(&counts.keys[index]));
            histogram.reference.push(counts.reference[index] / na);
            histogram.current.push(counts.current[index] / nb);
        } else {
            other_reference += counts.reference[index] / na;
            other_current += counts.current[index] / nb;
        }
    }
    if other_reference + other_current > 0.0 {
        histogram.labels.push("(other)".into());
        histogram.reference.push(other_reference);
        histogram.current.push(other_current);
    }
    histogram
}

/// A compact number label for chart axes.
pub fn short_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude != 0.0 && !(0.01..1e6).contains(&magnitude) {
        format!("{value:.2e}")
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_follows_evidently_table() {
        use ColumnKind::*;
        use StatTestKind::*;
        let cases = [
            (Numeric, 1000, 6, KolmogorovSmirnov),
            (Numeric, 1000, 5, ChiSquare),
            (Numeric, 1000, 3, ChiSquare),
            (Numeric, 1000, 2, ProportionZ),
            (Numeric, 1001, 6, WassersteinNormed),
            (Numeric, 1001, 5, JensenShannon),
            (Numeric, 1001, 2, JensenShannon),
            (Categorical, 10, 3, ChiSquare),
            (Categorical, 10, 2, ProportionZ),
            (Categorical, 5000, 2, JensenShannon),
            (Binary, 1000, 2, ProportionZ),
            (Binary, 1001, 2, JensenShannon),
            (Text, 1000, 900, TextDomainClassifierPercentile),
            (Text, 1001, 900, TextDomainClassifierAbsolute),
        ];
        for (kind, rows, distinct, expected) in cases {
            assert_eq!(
                select_test(kind, rows, distinct),
                expected,
                "{kind} rows={rows} distinct={distinct}"
            );
        }
    }

    #[test]
    fn short_numbers_are_readable() {
        assert_eq!(short_number(3.0), "3");
        assert_eq!(short_number(0.125), "0.125");
        assert_eq!(short_number(1234.56), "1234.6");
        assert_eq!(short_number(0.0001), "1.00e-4");
    }
}
