//! Turning decision values into probabilities that can be trusted: softmax, temperature scaling
//! fitted by minimising the negative log-likelihood on held-out scores, and the expected
//! calibration error (ECE) with its reliability diagram.
//!
//! Temperature scaling divides every score by one positive number `T` before the softmax. It
//! never changes which class ranks first, only how confident the probabilities are. The fit works
//! on `beta = 1 / T`, in which the mean negative log-likelihood is convex
//! (`mean(logsumexp(beta * s) - beta * s_true)`, second derivative = mean variance of the scores
//! under the softmax), so a bracketed Newton/bisection search finds the global minimum,
//! deterministically.

use serde::{Deserialize, Serialize};

use crate::{check_labels, check_matrix, MetricsError};

/// The usual number of equal-width confidence bins for ECE.
pub const DEFAULT_CALIBRATION_BINS: usize = 15;

/// Smallest and largest inverse temperature the fit considers (T between 1e-6 and 1e9).
const MIN_BETA: f64 = 1e-9;
const MAX_BETA: f64 = 1e6;

/// Replaces scores by their softmax, in place; a row of equal scores becomes uniform.
/// Non-finite input yields non-finite output; use [`softmax`] for a checked version.
pub fn softmax_in_place(row: &mut [f64]) {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for value in row.iter_mut() {
        *value = (*value - max).exp();
        sum += *value;
    }
    for value in row.iter_mut() {
        *value /= sum;
    }
}

/// The softmax of one row of scores.
pub fn softmax(row: &[f64]) -> Result<Vec<f64>, MetricsError> {
    if row.is_empty() {
        return Err(MetricsError::Empty);
    }
    if let Some(position) = row.iter().position(|value| !value.is_finite()) {
        return Err(MetricsError::NotFinite {
            what: "score",
            position,
            value: row[position],
        });
    }
    let mut out = row.to_vec();
    softmax_in_place(&mut out);
    Ok(out)
}

/// `log(sum(exp(beta * row)))`, computed without overflow.
fn log_sum_exp(row: &[f64], beta: f64) -> f64 {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max) * beta;
    let sum: f64 = row.iter().map(|value| (beta * value - max).exp()).sum();
    max + sum.ln()
}

/// Mean negative log-likelihood of the true classes under `softmax(scores / temperature)`.
pub fn negative_log_likelihood(
    scores: &[f64],
    class_count: usize,
    labels: &[usize],
    temperature: f64,
) -> Result<f64, MetricsError> {
    check_matrix("score", scores, class_count, labels)?;
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(MetricsError::InvalidParameter {
            name: "temperature",
            reason: format!("must be a positive finite number, got {temperature}"),
        });
    }
    Ok(mean_nll(scores, class_count, labels, 1.0 / temperature))
}

fn mean_nll(scores: &[f64], class_count: usize, labels: &[usize], beta: f64) -> f64 {
    let total: f64 = scores
        .chunks_exact(class_count)
        .zip(labels)
        .map(|(row, &label)| log_sum_exp(row, beta) - beta * row[label])
        .sum();
    total / labels.len() as f64
}

/// First and second derivative of the mean NLL with respect to `beta`.
fn nll_derivatives(scores: &[f64], class_count: usize, labels: &[usize], beta: f64) -> (f64, f64) {
    let mut first = 0.0;
    let mut second = 0.0;
    let mut probabilities = vec![0.0; class_count];
    for (row, &label) in scores.chunks_exact(class_count).zip(labels) {
        for (p, s) in probabilities.iter_mut().zip(row) {
            *p = beta * s;
        }
        softmax_in_place(&mut probabilities);
        let mean: f64 = probabilities.iter().zip(row).map(|(p, s)| p * s).sum();
        let mean_square: f64 = probabilities.iter().zip(row).map(|(p, s)| p * s * s).sum();
        first += mean - row[label];
        second += (mean_square - mean * mean).max(0.0);
    }
    let count = labels.len() as f64;
    (first / count, second / count)
}

/// A fitted temperature: probabilities are `softmax(scores / temperature)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemperatureScaling {
    pub temperature: f64,
}

impl Default for TemperatureScaling {
    fn default() -> Self {
        Self::identity()
    }
}

impl TemperatureScaling {
    /// Temperature 1: the plain softmax.
    pub fn identity() -> Self {
        Self { temperature: 1.0 }
    }

    /// Fits the temperature that minimises the mean negative log-likelihood of `labels` under
    /// `softmax(scores / T)` (`scores` row-major, `class_count` columns).
    ///
    /// The result is never worse than `T = 1` on the fitting data. When the scores separate the
    /// classes perfectly the likelihood keeps improving as `T` shrinks; the search stops at
    /// `T = 1e-6`.
    pub fn fit(scores: &[f64], class_count: usize, labels: &[usize]) -> Result<Self, MetricsError> {
        check_matrix("score", scores, class_count, labels)?;
        let derivative = |beta: f64| nll_derivatives(scores, class_count, labels, beta);
        // Bracket the root of the first derivative (it increases with beta).
        let mut low = MIN_BETA;
        let mut high = 1.0;
        if derivative(low).0 >= 0.0 {
            high = low;
        } else {
            while derivative(high).0 < 0.0 && high < MAX_BETA {
                low = high;
                high = (high * 4.0).min(MAX_BETA);
            }
        }
        let mut beta = 0.5 * (low + high);
        for _ in 0..200 {
            if high - low <= 1e-12 * high.max(1.0) {
                break;
            }
            let (first, second) = derivative(beta);
            if first == 0.0 {
                break;
            }
            if first < 0.0 {
                low = beta;
            } else {
                high = beta;
            }
            // Newton step when it stays inside the bracket, bisection otherwise.
            let newton = if second > 0.0 {
                beta - first / second
            } else {
                f64::NAN
            };
            beta = if newton.is_finite() && newton > low && newton < high {
                newton
            } else {
                0.5 * (low + high)
            };
        }
        let beta = beta.clamp(MIN_BETA, MAX_BETA);
        let fitted = mean_nll(scores, class_count, labels, beta);
        let unscaled = mean_nll(scores, class_count, labels, 1.0);
        if fitted <= unscaled {
            Ok(Self {
                temperature: 1.0 / beta,
            })
        } else {
            Ok(Self::identity())
        }
    }

    /// Calibrated probabilities of one row of scores.
    pub fn probabilities(&self, scores: &[f64]) -> Vec<f64> {
        let mut row: Vec<f64> = scores.iter().map(|s| s / self.temperature).collect();
        softmax_in_place(&mut row);
        row
    }

    /// Calibrated probabilities of a row-major score matrix.
    pub fn probability_matrix(&self, scores: &[f64], class_count: usize) -> Vec<f64> {
        if class_count == 0 {
            return Vec::new();
        }
        scores
            .chunks_exact(class_count)
            .flat_map(|row| self.probabilities(row))
            .collect()
    }
}

/// One equal-width bin of top-1 confidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
    /// Mean top-1 probability of the samples in the bin (0 when empty).
    pub mean_confidence: f64,
    /// Fraction of those samples whose top-1 class is right (0 when empty).
    pub accuracy: f64,
}

/// Reliability bins and the expected calibration error they add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReliabilityDiagram {
    pub sample_count: u64,
    pub expected_calibration_error: f64,
    pub bins: Vec<ReliabilityBin>,
}

/// Bins the top-1 confidence of each probability row into `bin_count` equal-width bins
/// (`lower < confidence <= upper`, the first bin also takes 0) and measures each bin's accuracy.
/// ECE = sum over bins of `count / n * |accuracy - mean confidence|`.
pub fn reliability_diagram(
    probabilities: &[f64],
    class_count: usize,
    labels: &[usize],
    bin_count: usize,
) -> Result<ReliabilityDiagram, MetricsError> {
    check_matrix("probability", probabilities, class_count, labels)?;
    check_labels(labels, class_count)?;
    if bin_count == 0 {
        return Err(MetricsError::InvalidParameter {
            name: "bin_count",
            reason: "must be at least 1".into(),
        });
    }
    let bins_f = bin_count as f64;
    let mut counts = vec![0u64; bin_count];
    let mut confidence_sums = vec![0.0f64; bin_count];
    let mut correct = vec![0u64; bin_count];
    for (row, &label) in probabilities.chunks_exact(class_count).zip(labels) {
        let (predicted, confidence) =
            row.iter()
                .copied()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |best, (class, p)| {
                    if p > best.1 {
                        (class, p)
                    } else {
                        best
                    }
                });
        let confidence = confidence.clamp(0.0, 1.0);
        let mut bin = ((confidence * bins_f).ceil() as usize).saturating_sub(1);
        bin = bin.min(bin_count - 1);
        // Settle values that sit on a boundary exactly as `lower < c <= upper` says.
        while bin > 0 && confidence <= bin as f64 / bins_f {
            bin -= 1;
        }
        while bin + 1 < bin_count && confidence > (bin + 1) as f64 / bins_f {
            bin += 1;
        }
        counts[bin] += 1;
        confidence_sums[bin] += confidence;
        if predicted == label {
            correct[bin] += 1;
        }
    }
    let sample_count = labels.len() as u64;
    let mut ece = 0.0;
    let bins = (0..bin_count)
        .map(|bin| {
            let count = counts[bin];
            let (mean_confidence, accuracy) = if count == 0 {
                (0.0, 0.0)
            } else {
                (
                    confidence_sums[bin] / count as f64,
                    correct[bin] as f64 / count as f64,
                )
            };
            ece += count as f64 / sample_count as f64 * (accuracy - mean_confidence).abs();
            ReliabilityBin {
                lower: bin as f64 / bins_f,
                upper: (bin + 1) as f64 / bins_f,
                count,
                mean_confidence,
                accuracy,
            }
        })
        .collect();
    Ok(ReliabilityDiagram {
        sample_count,
        expected_calibration_error: ece,
        bins,
    })
}

/// Expected calibration error of probability rows against `labels` with `bin_count` bins.
pub fn expected_calibration_error(
    probabilities: &[f64],
    class_count: usize,
    labels: &[usize],
    bin_count: usize,
) -> Result<f64, MetricsError> {
    reliability_diagram(probabilities, class_count, labels, bin_count)
        .map(|diagram| diagram.expected_calibration_error)
}
