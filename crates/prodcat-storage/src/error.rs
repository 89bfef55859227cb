//! The storage layer's error type, and whose fault each error is: a database or object store
//! that cannot be reached now (refused connection, pool timeout, server shutting down, a locked
//! SQLite file) is `Unavailable`, an object that is not there is `NotFound`, anything else is the
//! system's own problem.

use prodcat_domain::ErrorKind;

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
    /// A backup or a restore that cannot be done as asked (a target that is not empty, a
    /// missing client tool, a tool that failed), with what to do.
    #[error("{0}")]
    Backup(String),
}

impl StorageError {
    /// Whose fault the error is. A connection that fails, a pool that times out or is closed,
    /// a server that is shutting down or refuses connections for now, an SQLite file locked by
    /// another writer, a transaction that lost a deadlock or serialisation race, and an
    /// unreachable object store are `Unavailable` (trying again later may succeed); an object
    /// that does not exist is `NotFound`; the rest (bad configuration, a failed migration, a
    /// query the schema does not accept, a broken file system) is `Internal`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::Connect { .. } => ErrorKind::Unavailable,
            StorageError::Sql(error) => sql_error_kind(error),
            StorageError::Migrate(error) => match error {
                sqlx::migrate::MigrateError::Execute(error)
                | sqlx::migrate::MigrateError::ExecuteMigration(error, _) => sql_error_kind(error),
                _ => ErrorKind::Internal,
            },
            StorageError::ObjectNotFound { .. } => ErrorKind::NotFound,
            StorageError::Object { source, .. } => object_error_kind(source),
            StorageError::InvalidDatabaseUrl { .. }
            | StorageError::InvalidObjectStore { .. }
            | StorageError::Io { .. }
            | StorageError::Backup(_) => ErrorKind::Internal,
        }
    }
}

/// The kind of an `sqlx` error: `Unavailable` when the database cannot answer now (connection
/// lost or broken mid-protocol, pool exhausted or closed, SQLite's worker gone, a transient
/// server state, see [`StorageError::kind`]); `Internal` otherwise. (The enum is not
/// exhaustive, hence the fallback arm.)
pub fn sql_error_kind(error: &sqlx::Error) -> ErrorKind {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => ErrorKind::Unavailable,
        sqlx::Error::Database(database) if database_error_is_transient(database.as_ref()) => {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Internal,
    }
}

/// PostgreSQL SQLSTATEs that say "not now": connection exceptions (class 08), too many
/// connections, the server shutting down, crashed or starting up, an idle session ended, and a
/// transaction that lost a serialisation or deadlock race (retrying it is the documented
/// remedy).
const POSTGRES_TRANSIENT_STATES: [&str; 7] = [
    "53300", "57P01", "57P02", "57P03", "57P05", "40001", "40P01",
];

/// SQLite's primary result codes for "the file is locked by another connection".
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

fn database_error_is_transient(error: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(postgres) = error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = postgres.code();
        return code.starts_with("08") || POSTGRES_TRANSIENT_STATES.contains(&code);
    }
    if error
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // The code is SQLite's extended result code; its low byte is the primary code.
        let primary = error
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .map(|code| code & 0xff);
        return matches!(primary, Some(SQLITE_BUSY | SQLITE_LOCKED));
    }
    false
}

/// The kind of an object store error. A remote store (S3) that fails to answer after the
/// client's own retries (network failures, timeouts, 5xx and throttling answers all end as its
/// generic error) is `Unavailable`, as is a connection failure under a local folder (a network
/// mount); a conditional write that lost is a `Conflict`; refused credentials, bad paths and a
/// broken local file system are `Internal`.
fn object_error_kind(error: &object_store::Error) -> ErrorKind {
    match error {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            ErrorKind::Conflict
        }
        object_store::Error::Generic { store, .. }
            if !LOCAL_STORES.contains(store) || has_connection_failure(error) =>
        {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Internal,
    }
}

/// The `store` names of object stores that live on this machine.
const LOCAL_STORES: [&str; 2] = ["LocalFileSystem", "InMemory"];

/// Whether the chain of causes holds a failed connection, request or timeout.
fn has_connection_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(http) = current.downcast_ref::<object_store::client::HttpError>() {
            if matches!(
                http.kind(),
                object_store::client::HttpErrorKind::Connect
                    | object_store::client::HttpErrorKind::Request
                    | object_store::client::HttpErrorKind::Timeout
                    | object_store::client::HttpErrorKind::Interrupted
            ) {
                return true;
            }
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::NotConnected
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) {
                return true;
            }
        }
        cause = current.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::{ConnectOptions, Connection};

    use super::*;

    #[test]
    fn connection_failures_are_unavailable() {
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            assert_eq!(StorageError::Sql(error).kind(), ErrorKind::Unavailable);
        }
        assert_eq!(
            StorageError::Connect {
                url: "postgres://db/prodcat".to_string(),
                source: sqlx::Error::PoolTimedOut,
            }
            .kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            StorageError::Sql(sqlx::Error::RowNotFound).kind(),
            ErrorKind::Internal
        );
        assert_eq!(
            StorageError::ObjectNotFound {
                key: "images/ab/x.jpg".to_string()
            }
            .kind(),
            ErrorKind::NotFound
        );
        let unreachable = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::other("503 Slow Down, after 10 retries")),
        };
        assert_eq!(object_error_kind(&unreachable), ErrorKind::Unavailable);
        let mount = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        };
        assert_eq!(object_error_kind(&mount), ErrorKind::Unavailable);
        let denied = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        assert_eq!(object_error_kind(&denied), ErrorKind::Internal);
    }

    #[tokio::test]
    async fn a_locked_sqlite_file_is_unavailable() {
        let folder = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(folder.path().join("locked.db"))
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let mut holder = options.clone().connect().await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut holder)
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut holder)
            .await
            .unwrap();
        let mut other = options.connect().await.unwrap();
        let error = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut other)
            .await
            .unwrap_err();
        assert_eq!(
            StorageError::Sql(error).kind(),
            ErrorKind::Unavailable,
            "a locked file"
        );
        let syntax = sqlx::query("SELEC 1")
            .execute(&mut other)
            .await
            .unwrap_err();
        assert_eq!(StorageError::Sql(syntax).kind(), ErrorKind::Internal);
        holder.close().await.unwrap();
        other.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_pool_timeout_is_unavailable() {
        let folder = tempfile::tempdir().unwrap();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(50))
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(folder.path().join("pool.db"))
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        let held = pool.acquire().await.unwrap();
        let error = pool.acquire().await.unwrap_err();
        assert_eq!(StorageError::Sql(error).kind(), ErrorKind::Unavailable);
        drop(held);
        pool.close().await;
    }

    #[tokio::test]
    async fn a_terminated_postgres_session_is_unavailable() {
        let Ok(url) = std::env::var("PRODCAT_TEST_POSTGRES_URL") else {
            eprintln!("skipped: PRODCAT_TEST_POSTGRES_URL is not set");
            return;
        };
        let mut connection = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
        // The server ends this session as an administrator would (SQLSTATE 57P01).
        let error = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
            .execute(&mut connection)
            .await
            .unwrap_err();
        assert_eq!(
            StorageError::Sql(error).kind(),
            ErrorKind::Unavailable,
            "admin shutdown"
        );
        let mut connection = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
        let error = sqlx::query("SELECT * FROM no_such_table")
            .execute(&mut connection)
            .await
            .unwrap_err();
        assert_eq!(StorageError::Sql(error).kind(), ErrorKind::Internal);
    }
}
