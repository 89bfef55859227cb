//! Model-quality arithmetic shared by every prodcat model: classification metrics with
//! scikit-learn's definitions, probability calibration (softmax, temperature scaling, expected
//! calibration error) and self-contained SVG pictures (confusion matrix, reliability diagram).
//!
//! Classes are indices `0..class_count`; mapping them to category codes is the caller's job.
//! Score and probability matrices are row-major slices with `class_count` columns.
//! Nothing here does I/O or panics on bad input: every entry point validates and returns
//! [`MetricsError`].

mod calibration;
mod classification;
mod svg;

pub use calibration::{
    expected_calibration_error, negative_log_likelihood, reliability_diagram, softmax,
    softmax_in_place, ReliabilityBin, ReliabilityDiagram, TemperatureScaling,
    DEFAULT_CALIBRATION_BINS,
};
pub use classification::{
    accuracy, classification_report, confusion_matrix, ClassMetrics, ClassificationReport,
    ConfusionMatrix,
};
pub use svg::{confusion_matrix_svg, reliability_diagram_svg};

use prodcat_domain::ErrorKind;

/// Everything that can be wrong with the inputs of a metric.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("no samples: a metric needs at least one (truth, prediction) pair")]
    Empty,
    #[error("{what} has {actual} entries but {expected} were expected")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("class index {class} at position {position} is outside 0..{class_count}")]
    ClassOutOfRange {
        class: usize,
        position: usize,
        class_count: usize,
    },
    #[error("class_count must be at least 1, got {0}")]
    NoClasses(usize),
    #[error("{what} at position {position} is not a finite number ({value})")]
    NotFinite {
        what: &'static str,
        position: usize,
        value: f64,
    },
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
}

impl MetricsError {
    /// Every metrics error is about the values given: `Input`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MetricsError::Empty
            | MetricsError::LengthMismatch { .. }
            | MetricsError::ClassOutOfRange { .. }
            | MetricsError::NoClasses(_)
            | MetricsError::NotFinite { .. }
            | MetricsError::InvalidParameter { .. } => ErrorKind::Input,
        }
    }
}

/// Checks that `labels` are class indices below `class_count`.
pub(crate) fn check_labels(labels: &[usize], class_count: usize) -> Result<(), MetricsError> {
    if class_count == 0 {
        return Err(MetricsError::NoClasses(class_count));
    }
    match labels.iter().position(|&class| class >= class_count) {
        Some(position) => Err(MetricsError::ClassOutOfRange {
            class: labels[position],
            position,
            class_count,
        }),
        None => Ok(()),
    }
}

/// Checks that a row-major matrix has one row of `class_count` finite values per label.
pub(crate) fn check_matrix(
    what: &'static str,
    values: &[f64],
    class_count: usize,
    labels: &[usize],
) -> Result<(), MetricsError> {
    check_labels(labels, class_count)?;
    if labels.is_empty() {
        return Err(MetricsError::Empty);
    }
    let expected = labels.len() * class_count;
    if values.len() != expected {
        return Err(MetricsError::LengthMismatch {
            what,
            expected,
            actual: values.len(),
        });
    }
    match values.iter().position(|value| !value.is_finite()) {
        Some(position) => Err(MetricsError::NotFinite {
            what,
            position,
            value: values[position],
        }),
        None => Ok(()),
    }
}
