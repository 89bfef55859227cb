//! Catalogue data: the generated demo catalogue, streaming import of the challenge layout with
//! row-level validation, and immutable, content-addressed dataset versions with stratified splits
//! (listed, inspected, compared and derived the way data-versioning tools do).

mod derive;
pub mod generate;
mod import;
mod records;
mod source;
mod split;
mod version;

use prodcat_domain::ErrorKind;

pub use derive::{derive_version, record_image, DeriveOptions, DeriveOutcome, ReviewedLabel};
pub use import::{
    import_dataset, ImportOptions, ImportOutcome, ImportProgress, ImportReport, ProblemKind,
    RowProblem,
};
pub use source::{ImportSource, SourceLayout};
pub use split::{Split, SplitRatios};
pub use version::{
    class_rows, create_version, diff_versions, list_versions, load_rows, resolve_version,
    show_version, DatasetRow, DatasetVersion, NewVersionRow, VersionDetails, VersionDiff,
    VersionMetadata,
};

/// Errors from dataset operations.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CSV error in {path}: {source}")]
    Csv {
        path: String,
        #[source]
        source: csv::Error,
    },
    #[error("{0}")]
    InvalidOption(String),
    #[error("{0}")]
    Layout(String),
    #[error("{path}: missing column(s) {missing}; the header must contain {expected}")]
    MissingColumns {
        path: String,
        missing: String,
        expected: String,
    },
    #[error("{file}:{line}: {message} (--strict stops at the first problem)")]
    StrictProblem {
        file: String,
        line: u64,
        message: String,
    },
    #[error("no valid rows to import ({problems} problem rows); nothing was stored")]
    NothingToImport { problems: usize },
    #[error("the import was cancelled; nothing was stored")]
    Cancelled,
    #[error("{task} failed: {message}")]
    TaskFailed { task: &'static str, message: String },
    #[error("dataset version {0:?} does not exist (see `prodcat data list`)")]
    UnknownVersion(String),
    #[error(transparent)]
    Domain(#[from] prodcat_domain::DomainError),
    #[error(transparent)]
    Storage(#[from] prodcat_storage::StorageError),
}

impl DatasetError {
    /// Whose fault the error is. Files, folders, CSV content and options all come from the
    /// caller, so what is wrong with them is `Input` (a file system that fails for another
    /// reason is `Internal`); a cancelled import may simply be run again (`Unavailable`).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DatasetError::Io { source, .. } => io_error_kind(source),
            DatasetError::Csv { source, .. } => match source.kind() {
                csv::ErrorKind::Io(error) => io_error_kind(error),
                _ => ErrorKind::Input,
            },
            DatasetError::InvalidOption(_)
            | DatasetError::Layout(_)
            | DatasetError::MissingColumns { .. }
            | DatasetError::StrictProblem { .. }
            | DatasetError::NothingToImport { .. } => ErrorKind::Input,
            DatasetError::Cancelled => ErrorKind::Unavailable,
            DatasetError::TaskFailed { .. } => ErrorKind::Internal,
            DatasetError::UnknownVersion(_) => ErrorKind::NotFound,
            DatasetError::Domain(error) => error.kind(),
            DatasetError::Storage(error) => error.kind(),
        }
    }
}

/// A path the caller named that does not exist or cannot be used is the caller's problem.
fn io_error_kind(error: &std::io::Error) -> ErrorKind {
    match error.kind() {
        std::io::ErrorKind::NotFound
        | std::io::ErrorKind::PermissionDenied
        | std::io::ErrorKind::NotADirectory
        | std::io::ErrorKind::IsADirectory
        | std::io::ErrorKind::InvalidInput
        | std::io::ErrorKind::InvalidData => ErrorKind::Input,
        _ => ErrorKind::Internal,
    }
}

impl From<sqlx::Error> for DatasetError {
    fn from(error: sqlx::Error) -> Self {
        DatasetError::Storage(prodcat_storage::StorageError::Sql(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_say_whose_fault_an_error_is() {
        let missing = DatasetError::Io {
            path: "data/X_train.csv".to_string(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(missing.kind(), ErrorKind::Input);
        assert_eq!(
            DatasetError::UnknownVersion("ds-0123456789abcdef".to_string()).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(DatasetError::Cancelled.kind(), ErrorKind::Unavailable);
        let timed_out = DatasetError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(timed_out.kind(), ErrorKind::Unavailable);
        let worker = DatasetError::TaskFailed {
            task: "the image check",
            message: "panicked".to_string(),
        };
        assert_eq!(worker.kind(), ErrorKind::Internal);
    }
}
