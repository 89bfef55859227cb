//! The crate's single error type: every variant names the column or input that was wrong.

use prodcat_domain::ErrorKind;
use thiserror::Error;

/// Everything that can go wrong while profiling data or testing it for drift.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DriftError {
    /// A column has no usable values (all missing, infinite or NaN) in one of the datasets.
    #[error("column `{column}` has no usable values in the {dataset} data")]
    EmptyColumn {
        column: String,
        dataset: &'static str,
    },

    /// The reference and current profiles do not describe the same column the same way.
    #[error("column `{column}` is {reference_kind} in the reference but {current_kind} in the current data")]
    KindMismatch {
        column: String,
        reference_kind: String,
        current_kind: String,
    },

    /// A column of the reference profile is absent from the current profile.
    #[error("column `{column}` is missing from the current data")]
    MissingColumn { column: String },

    /// A test was asked for a column kind it cannot handle.
    #[error("test `{test}` cannot be applied to column `{column}` of kind {kind}")]
    TestNotApplicable {
        test: &'static str,
        column: String,
        kind: String,
    },

    /// A row does not have as many values as the profile has columns.
    #[error("row {row} has {found} values but the profile has {expected} columns")]
    RowLength {
        row: usize,
        expected: usize,
        found: usize,
    },

    /// A value does not fit the kind of its column.
    #[error("row {row}, column `{column}`: expected a {expected} value, found {found}")]
    ValueKind {
        row: usize,
        column: String,
        expected: &'static str,
        found: &'static str,
    },

    /// Two columns share a name.
    #[error("column `{column}` is declared twice")]
    DuplicateColumn { column: String },

    /// Sample sizes, dimensions or lengths that do not fit together.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A configuration value outside its allowed range.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidSetting {
        setting: &'static str,
        reason: String,
    },

    /// Serialising a report or profile failed.
    #[error("could not serialise {what}: {reason}")]
    Serialisation { what: &'static str, reason: String },
}

impl DriftError {
    /// Whose fault the error is: the data, profiles and settings handed in (`Input`), except a
    /// report or profile that cannot be serialised (`Internal`).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DriftError::EmptyColumn { .. }
            | DriftError::KindMismatch { .. }
            | DriftError::MissingColumn { .. }
            | DriftError::TestNotApplicable { .. }
            | DriftError::RowLength { .. }
            | DriftError::ValueKind { .. }
            | DriftError::DuplicateColumn { .. }
            | DriftError::InvalidInput(_)
            | DriftError::InvalidSetting { .. } => ErrorKind::Input,
            DriftError::Serialisation { .. } => ErrorKind::Internal,
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, DriftError>;
