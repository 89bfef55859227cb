//! Storage seams of prodcat: SQL metadata through `sqlx` (an SQLite file by default, PostgreSQL in
//! production; one schema, migrated automatically) and blobs (images, model bundles, reports)
//! through `object_store` (a local folder by default, S3-compatible storage in production).
//!
//! Higher crates write their own queries against [`Database`]; the schema and its migrations live
//! here so there is one migration history for the whole project.

mod database;
mod objects;
pub mod testing;

pub use database::{now_ms, Backend, Database, SqlPlaceholders};
pub use objects::{image_key, ObjectStorage};

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid database url {url:?}: {reason}")]
    InvalidDatabaseUrl { url: String, reason: String },
    #[error("could not connect to the database at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("invalid object store location {location:?}: {reason}")]
    InvalidObjectStore { location: String, reason: String },
    #[error("object {key:?} was not found in the object store")]
    ObjectNotFound { key: String },
    #[error("object store error on {key:?}: {source}")]
    Object {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
