//! The one error type of the crate: what went wrong, with the value or size that was wrong.

use prodcat_domain::ErrorKind;

/// Errors of vectorising, training, predicting and loading a text model.
#[derive(Debug, thiserror::Error)]
pub enum TextModelError {
    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
    #[error("no training documents")]
    EmptyCorpus,
    #[error("{texts} texts but {labels} labels: every text needs exactly one label")]
    LabelCountMismatch { texts: usize, labels: usize },
    #[error("training needs at least two classes, found {found}")]
    TooFewClasses { found: usize },
    #[error("class index {class} at row {row} is outside 0..{class_count}")]
    ClassOutOfRange {
        class: usize,
        row: usize,
        class_count: usize,
    },
    #[error(
        "the {block} block keeps no terms after pruning (min_df {min_df}, max_df {max_df}, \
         {documents} documents): lower min_df or raise max_df"
    )]
    NoTermsRemain {
        block: &'static str,
        min_df: String,
        max_df: String,
        documents: usize,
    },
    #[error("matrix has {actual} columns but the model expects {expected}")]
    FeatureCountMismatch { expected: usize, actual: usize },
    #[error(
        "companion features: {reason} (the model takes {dimension} values per text from {source_name})"
    )]
    Companion {
        reason: String,
        dimension: usize,
        source_name: String,
    },
    #[error("category {0} is not one of the model's classes")]
    UnknownCategory(String),
    #[error("calibration: {0}")]
    Calibration(#[from] prodcat_metrics::MetricsError),
    #[error("not a prodcat text model file (magic bytes {found:?})")]
    NotAModelFile { found: Vec<u8> },
    #[error(
        "unsupported text model format version {found} (this build reads version {supported})"
    )]
    UnsupportedFormatVersion { found: u32, supported: u32 },
    #[error("text model file is truncated: {section} needs {needed} more bytes, {available} left")]
    Truncated {
        section: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("text model file is corrupt: {0}")]
    Corrupt(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl TextModelError {
    /// Whose fault the error is: texts, labels, options and matrices handed in are the
    /// caller's (`Input`); a model file that cannot be read or understood is the system's own
    /// data (`Internal`), as for the other model files of prodcat.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TextModelError::InvalidOption { .. }
            | TextModelError::EmptyCorpus
            | TextModelError::LabelCountMismatch { .. }
            | TextModelError::TooFewClasses { .. }
            | TextModelError::ClassOutOfRange { .. }
            | TextModelError::NoTermsRemain { .. }
            | TextModelError::FeatureCountMismatch { .. }
            | TextModelError::Companion { .. }
            | TextModelError::UnknownCategory(_) => ErrorKind::Input,
            TextModelError::Calibration(error) => error.kind(),
            TextModelError::NotAModelFile { .. }
            | TextModelError::UnsupportedFormatVersion { .. }
            | TextModelError::Truncated { .. }
            | TextModelError::Corrupt(_)
            | TextModelError::Io { .. } => ErrorKind::Internal,
        }
    }
}
