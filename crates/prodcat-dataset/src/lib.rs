//! Catalogue data: the generated demo catalogue, streaming import of the challenge layout with
//! row-level validation, and immutable, content-addressed dataset versions with stratified splits
//! (listed, inspected, compared and derived the way data-versioning tools do).

mod derive;
pub mod generate;
mod import;
mod source;
mod split;
mod version;

pub use derive::{derive_version, DeriveOptions, DeriveOutcome};
pub use import::{
    import_dataset, ImportOptions, ImportOutcome, ImportProgress, ImportReport, ProblemKind,
    RowProblem,
};
pub use source::{ImportSource, SourceLayout};
pub use split::{Split, SplitRatios};
pub use version::{
    create_version, diff_versions, list_versions, load_rows, resolve_version, show_version,
    DatasetRow, DatasetVersion, NewVersionRow, VersionDetails, VersionDiff, VersionMetadata,
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
    #[error("dataset version {0:?} does not exist (see `prodcat data list`)")]
    UnknownVersion(String),
    #[error(transparent)]
    Domain(#[from] prodcat_domain::DomainError),
    #[error(transparent)]
    Storage(#[from] prodcat_storage::StorageError),
}

impl From<sqlx::Error> for DatasetError {
    fn from(error: sqlx::Error) -> Self {
        DatasetError::Storage(prodcat_storage::StorageError::Sql(error))
    }
}
