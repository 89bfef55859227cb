//! The live catalogue of prodcat and the records around it, each table owned here and nowhere
//! else:
//!
//! - [`products`]: products added through the API or loaded from a dataset version, their
//!   classification and status (pending, classified, review, reviewed), the review queue and
//!   reviewers' decisions, the retry state of products waiting for a model;
//! - [`users`]: people and service clients, their roles ([`Role`], [`Permission`]) and argon2
//!   password hashes;
//! - [`audit`]: every write made through the API;
//! - [`prediction_log`]: one row per served prediction (a profile of its inputs, never the raw
//!   image), written in batches by a background writer or inside a caller's transaction, and
//!   read back by drift checks.
//!
//! Nothing here knows HTTP; errors say what went wrong and how to classify it
//! ([`CatalogueError::kind`]).

pub mod access;
pub mod audit;
pub mod prediction_log;
pub mod products;
pub mod throttle;
pub mod users;

pub use access::{Permission, Role};
pub use prediction_log::{PredictionLogRow, PredictionLogWriter, PredictionSource, TEXT_LOG_LIMIT};
pub use products::{
    Classification, ImageUpload, NewProduct, Product, ProductChanges, ProductFilter, ProductStatus,
    ReviewDecision,
};
pub use users::{NewUser, UserKind, UserRecord};

use prodcat_domain::ErrorKind;
use prodcat_storage::StorageError;

/// Errors of the catalogue's operations.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("product {0} does not exist")]
    UnknownProduct(i64),
    #[error("product {0} already exists")]
    ProductExists(i64),
    #[error(
        "product {0} is not classified yet; it can be reviewed once a model has classified it"
    )]
    NotClassifiedYet(i64),
    #[error(
        "product {id} changed meanwhile (revision {current}, the change was made against \
         revision {expected}); read it again and retry"
    )]
    RevisionMismatch {
        id: i64,
        expected: i64,
        current: i64,
    },
    #[error("the review of product {id} can not be taken back: {reason}")]
    CannotUndoReview { id: i64, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    #[error("stored data of {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error(transparent)]
    Dataset(#[from] prodcat_dataset::DatasetError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for CatalogueError {
    fn from(error: sqlx::Error) -> Self {
        CatalogueError::Storage(StorageError::Sql(error))
    }
}

impl CatalogueError {
    /// Whose fault the error is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CatalogueError::UnknownProduct(_) | CatalogueError::UnknownUser(_) => {
                ErrorKind::NotFound
            }
            CatalogueError::ProductExists(_)
            | CatalogueError::NotClassifiedYet(_)
            | CatalogueError::RevisionMismatch { .. }
            | CatalogueError::CannotUndoReview { .. }
            | CatalogueError::UserExists(_) => ErrorKind::Conflict,
            CatalogueError::Invalid(_) => ErrorKind::Input,
            CatalogueError::PasswordHash(_) | CatalogueError::Corrupt { .. } => ErrorKind::Internal,
            CatalogueError::Dataset(prodcat_dataset::DatasetError::Storage(storage)) => {
                storage.kind()
            }
            CatalogueError::Dataset(_) => ErrorKind::Internal,
            CatalogueError::Storage(storage) => storage.kind(),
        }
    }
}

/// What a backup of the catalogue must hold, to compare a restore with it: every product with
/// its revision, status and category, every reviewer decision, every user and role.
pub const BACKUP_CHECKS: &[prodcat_storage::backup::Check] = &[
    prodcat_storage::backup::Check {
        name: "products",
        sql: "SELECT CAST(id AS TEXT) || ' ' || CAST(revision AS TEXT) || ' ' || status || ' ' \
              || COALESCE(CAST(category_code AS TEXT), '-') FROM products ORDER BY id",
    },
    prodcat_storage::backup::Check {
        name: "review decisions",
        sql: "SELECT CAST(id AS TEXT) || ' ' || CAST(product_id AS TEXT) || ' ' || decision \
              FROM review_decisions ORDER BY id",
    },
    prodcat_storage::backup::Check {
        name: "users",
        sql: "SELECT name || ' ' || role FROM users ORDER BY name",
    },
];
