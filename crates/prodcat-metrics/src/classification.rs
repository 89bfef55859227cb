//! Classification metrics over class indices, with scikit-learn's definitions
//! (`confusion_matrix`, `accuracy_score`, `precision_recall_fscore_support`,
//! `classification_report`): a ratio whose denominator is zero counts as 0.

use serde::{Deserialize, Serialize};

use crate::{check_labels, MetricsError};

/// Counts of (true class, predicted class) pairs: `counts[truth * class_count + predicted]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfusionMatrix {
    pub class_count: usize,
    pub counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// The number of samples of class `truth` predicted as `predicted` (0 when out of range).
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        if truth >= self.class_count || predicted >= self.class_count {
            return 0;
        }
        self.counts[truth * self.class_count + predicted]
    }

    /// The row of class `truth`: how its samples were predicted.
    pub fn row(&self, truth: usize) -> &[u64] {
        let start = (truth * self.class_count).min(self.counts.len());
        let end = (start + self.class_count).min(self.counts.len());
        &self.counts[start..end]
    }

    /// Number of samples whose true class is `class`.
    pub fn support(&self, class: usize) -> u64 {
        self.row(class).iter().sum()
    }

    /// Number of samples predicted as `class`.
    pub fn predicted_count(&self, class: usize) -> u64 {
        (0..self.class_count)
            .map(|truth| self.count(truth, class))
            .sum()
    }

    /// Total number of samples.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassMetrics {
    pub class: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Samples whose true class is this one.
    pub support: u64,
    /// Samples predicted as this class.
    pub predicted: u64,
}

/// Everything `classification_report` prints, plus the confusion matrix.
///
/// Macro averages run over the classes that occur in the truth or the predictions, which is what
/// scikit-learn does when it is not given an explicit label list; weighted averages weight each
/// class by its support, so absent classes do not matter there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassificationReport {
    pub sample_count: u64,
    pub accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub weighted_precision: f64,
    pub weighted_recall: f64,
    pub weighted_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    pub confusion: ConfusionMatrix,
}

fn check_pairs(
    truth: &[usize],
    predicted: &[usize],
    class_count: usize,
) -> Result<(), MetricsError> {
    check_lengths(truth, predicted)?;
    check_labels(truth, class_count)?;
    check_labels(predicted, class_count)
}

/// One prediction per truth, and at least one.
fn check_lengths(truth: &[usize], predicted: &[usize]) -> Result<(), MetricsError> {
    if truth.len() != predicted.len() {
        return Err(MetricsError::LengthMismatch {
            what: "predictions",
            expected: truth.len(),
            actual: predicted.len(),
        });
    }
    if truth.is_empty() {
        return Err(MetricsError::Empty);
    }
    Ok(())
}

/// The confusion matrix of `predicted` against `truth`, classes `0..class_count`.
pub fn confusion_matrix(
    truth: &[usize],
    predicted: &[usize],
    class_count: usize,
) -> Result<ConfusionMatrix, MetricsError> {
    check_pairs(truth, predicted, class_count)?;
    let mut counts = vec![0u64; class_count * class_count];
    for (&t, &p) in truth.iter().zip(predicted) {
        counts[t * class_count + p] += 1;
    }
    Ok(ConfusionMatrix {
        class_count,
        counts,
    })
}

/// Fraction of predictions equal to the truth.
pub fn accuracy(truth: &[usize], predicted: &[usize]) -> Result<f64, MetricsError> {
    check_lengths(truth, predicted)?;
    let correct = truth.iter().zip(predicted).filter(|(t, p)| t == p).count();
    Ok(correct as f64 / truth.len() as f64)
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Accuracy, per-class and averaged precision / recall / F1, and the confusion matrix.
pub fn classification_report(
    truth: &[usize],
    predicted: &[usize],
    class_count: usize,
) -> Result<ClassificationReport, MetricsError> {
    let confusion = confusion_matrix(truth, predicted, class_count)?;
    let per_class: Vec<ClassMetrics> = (0..class_count)
        .map(|class| {
            let true_positives = confusion.count(class, class);
            let support = confusion.support(class);
            let predicted = confusion.predicted_count(class);
            let precision = ratio(true_positives, predicted);
            let recall = ratio(true_positives, support);
            // 2 tp / (2 tp + fp + fn), the form scikit-learn uses; 0 when nothing is there.
            let f1 = ratio(2 * true_positives, support + predicted);
            ClassMetrics {
                class,
                precision,
                recall,
                f1,
                support,
                predicted,
            }
        })
        .collect();
    let sample_count = confusion.total();
    let present: Vec<&ClassMetrics> = per_class
        .iter()
        .filter(|metrics| metrics.support > 0 || metrics.predicted > 0)
        .collect();
    let macro_average = |field: fn(&ClassMetrics) -> f64| -> f64 {
        present.iter().map(|metrics| field(metrics)).sum::<f64>() / present.len() as f64
    };
    let weighted_average = |field: fn(&ClassMetrics) -> f64| -> f64 {
        per_class
            .iter()
            .map(|metrics| field(metrics) * metrics.support as f64)
            .sum::<f64>()
            / sample_count as f64
    };
    let correct: u64 = (0..class_count)
        .map(|class| confusion.count(class, class))
        .sum();
    Ok(ClassificationReport {
        sample_count,
        accuracy: ratio(correct, sample_count),
        macro_precision: macro_average(|m| m.precision),
        macro_recall: macro_average(|m| m.recall),
        macro_f1: macro_average(|m| m.f1),
        weighted_precision: weighted_average(|m| m.precision),
        weighted_recall: weighted_average(|m| m.recall),
        weighted_f1: weighted_average(|m| m.f1),
        per_class,
        confusion,
    })
}
