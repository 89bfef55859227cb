//! Storage seams of prodcat: SQL metadata through `sqlx` (an SQLite file by default, PostgreSQL in
//! production; one schema, migrated automatically) and blobs (images, model bundles, reports)
//! through `object_store` (a local folder by default, S3-compatible storage in production).
//!
//! Higher crates write their own queries against [`Database`]; the schema and its migrations live
//! here so there is one migration history for the whole project.

mod database;
mod objects;
pub mod testing;

pub use database::{now_ms, Backend, ConnectOptions, Database, SqlPlaceholders};
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

impl StorageError {
    /// Whose fault the error is: a database or object store that cannot be reached (or is busy,
    /// locked or shutting down) is `Unavailable`, a missing object `NotFound`, the rest is the
    /// system's own fault.
    pub fn kind(&self) -> prodcat_domain::ErrorKind {
        use prodcat_domain::ErrorKind;
        match self {
            StorageError::Connect { .. } => ErrorKind::Unavailable,
            StorageError::Sql(error) => sql_error_kind(error),
            StorageError::ObjectNotFound { .. } => ErrorKind::NotFound,
            StorageError::Object { source, .. } => match source {
                object_store::Error::NotFound { .. } => ErrorKind::NotFound,
                _ => ErrorKind::Unavailable,
            },
            StorageError::InvalidDatabaseUrl { .. }
            | StorageError::Migrate(_)
            | StorageError::InvalidObjectStore { .. }
            | StorageError::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// `Unavailable` for errors that say the database cannot answer now (connection lost, pool
/// exhausted, server shutting down, SQLite busy or locked); `Internal` otherwise.
pub fn sql_error_kind(error: &sqlx::Error) -> prodcat_domain::ErrorKind {
    use prodcat_domain::ErrorKind;
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorKind::Unavailable,
        sqlx::Error::Database(database) => {
            let code = database.code().unwrap_or_default();
            let message = database.message().to_ascii_lowercase();
            // PostgreSQL: 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now,
            // 08xxx connection exceptions, 40001/40P01 serialisation failure and deadlock.
            // SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED (and their extended codes).
            let transient_code = code.starts_with("57P")
                || code.starts_with("08")
                || code == "40001"
                || code == "40P01"
                || (code.len() < 5
                    && code
                        .parse::<i32>()
                        .is_ok_and(|n| n & 0xff == 5 || n & 0xff == 6));
            if transient_code || message.contains("database is locked") || message.contains("busy")
            {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Internal
            }
        }
        _ => ErrorKind::Internal,
    }
}
