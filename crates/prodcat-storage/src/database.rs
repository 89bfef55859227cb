//! The SQL seam: one `sqlx` pool over SQLite or PostgreSQL, chosen by URL, migrated on connect.
//!
//! Queries are written once with `$1, $2, ...` placeholders, which both backends accept.
//! Types are kept to what both backends share: BIGINT, DOUBLE PRECISION, TEXT and bytes; times are
//! Unix milliseconds in BIGINT columns.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions as _, Executor};

use crate::StorageError;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// The migrator of one dialect's embedded migrations (checksums as sqlx computes them, so
/// databases migrated by earlier builds validate).
fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    let migrations: Vec<sqlx::migrate::Migration> = migrations
        .iter()
        .map(|(version, description, sql)| {
            sqlx::migrate::Migration::new(
                *version,
                std::borrow::Cow::Borrowed(*description),
                sqlx::migrate::MigrationType::Simple,
                std::borrow::Cow::Borrowed(*sql),
                sql.starts_with("-- no-transaction"),
            )
        })
        .collect();
    sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(migrations),
        ..sqlx::migrate::Migrator::DEFAULT
    }
}

/// Which SQL engine is behind a [`Database`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// How long database work waits before it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// For a free connection from the pool (a database that is down answers after this).
    pub acquire_timeout: Duration,
    /// For SQLite's write lock held by another writer.
    pub busy_timeout: Duration,
}

impl Default for ConnectOptions {
    /// Patient waits, right for batch work (imports, training, workers).
    fn default() -> Self {
        Self {
            acquire_timeout: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(30),
        }
    }
}

impl ConnectOptions {
    /// Short waits, right for a service that would rather answer 503 with `Retry-After` than
    /// keep a client waiting (`wait` for a connection, at most five seconds for SQLite's lock).
    pub fn interactive(wait: Duration) -> Self {
        Self {
            acquire_timeout: wait,
            busy_timeout: wait
                .max(Duration::from_millis(100))
                .min(Duration::from_secs(5)),
        }
    }
}

/// A migrated connection pool to the metadata database.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    display_url: String,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|duration| duration.as_millis() as i64)
        .unwrap_or(0)
}

impl Database {
    /// Connects to `url` and runs pending migrations.
    ///
    /// Accepted forms: `sqlite://path/to/file.db` (created with its folder when missing), a bare
    /// file path ending in `.db`, `sqlite::memory:`, and `postgres://user@host:port/database`.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        Self::connect_with(url, &ConnectOptions::default()).await
    }

    /// Connects with explicit waits (see [`ConnectOptions`]).
    pub async fn connect_with(url: &str, wait: &ConnectOptions) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = normalise_url(url)?;
        let display_url = redact_password(&url);
        let options = AnyConnectOptions::from_str(&url).map_err(|error| {
            StorageError::InvalidDatabaseUrl {
                url: display_url.clone(),
                reason: error.to_string(),
            }
        })?;
        let options = options.disable_statement_logging();
        let pool_options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(wait.acquire_timeout);
        let busy_timeout = format!("PRAGMA busy_timeout = {}", wait.busy_timeout.as_millis());
        let pool_options = match backend {
            Backend::Sqlite => pool_options.after_connect(move |connection, _| {
                let busy_timeout = busy_timeout.clone();
                Box::pin(async move {
                    connection.execute(busy_timeout.as_str()).await?;
                    connection.execute("PRAGMA foreign_keys = ON").await?;
                    connection.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            }),
            Backend::Postgres => pool_options,
        };
        let pool =
            pool_options
                .connect_with(options)
                .await
                .map_err(|source| StorageError::Connect {
                    url: display_url.clone(),
                    source,
                })?;
        if backend == Backend::Sqlite && !url.contains(":memory:") {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        match backend {
            Backend::Sqlite => migrator(embedded::SQLITE).run(&pool).await?,
            Backend::Postgres => migrator(embedded::POSTGRES).run(&pool).await?,
        }
        tracing::debug!(url = %display_url, backend = backend.name(), "database ready");
        Ok(Self {
            pool,
            backend,
            display_url,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`, waiting for it up to the busy timeout): a plain `BEGIN` reads from a
    /// snapshot first, and its first write then fails at once, without waiting, when another
    /// connection committed in between (`SQLITE_BUSY_SNAPSHOT`), which under concurrent
    /// writers turns a read-then-write transaction into a spurious 503. On PostgreSQL, a
    /// plain `BEGIN` (its row locks do that work).
    ///
    /// Starting a transaction is not safe to cancel in the driver: a begin dropped half-way
    /// (a killed worker loop, a client gone mid-request) can leave its connection inside a
    /// transaction that nothing rolls back, which on SQLite holds the write lock for good and
    /// wedges every writer. So the begin runs on a task of its own: a caller dropped meanwhile
    /// leaves a finished transaction behind, rolled back as it is dropped.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        let pool = self.pool.clone();
        let backend = self.backend;
        tokio::spawn(async move {
            match backend {
                Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
                Backend::Postgres => pool.begin().await,
            }
        })
        .await
        .map_err(|error| sqlx::Error::Protocol(format!("starting a transaction failed: {error}")))?
    }

    /// The connection URL with any password replaced by `***`, safe to print.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Builds `($1, $2, ...), (...)` placeholder lists for multi-row inserts.
pub struct SqlPlaceholders;

impl SqlPlaceholders {
    /// `rows` groups of `columns` placeholders, numbered from 1.
    pub fn values(rows: usize, columns: usize) -> String {
        let mut out = String::with_capacity(rows * columns * 5);
        let mut next = 1;
        for row in 0..rows {
            if row > 0 {
                out.push_str(", ");
            }
            out.push('(');
            for column in 0..columns {
                if column > 0 {
                    out.push_str(", ");
                }
                out.push('$');
                out.push_str(&next.to_string());
                next += 1;
            }
            out.push(')');
        }
        out
    }
}

pub(crate) fn normalise_url(url: &str) -> Result<(Backend, String), StorageError> {
    let trimmed = url.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        return Ok((Backend::Postgres, trimmed.to_string()));
    }
    if trimmed == "sqlite::memory:" || trimmed == "sqlite://:memory:" {
        return Ok((Backend::Sqlite, "sqlite::memory:".to_string()));
    }
    let path_text = if let Some(rest) = trimmed.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = trimmed.strip_prefix("sqlite:") {
        rest
    } else if trimmed.contains("://") {
        return Err(StorageError::InvalidDatabaseUrl {
            url: redact_password(trimmed),
            reason: "expected sqlite://PATH, a file path, or postgres://...".to_string(),
        });
    } else {
        trimmed
    };
    let (path_part, query) = match path_text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_text, None),
    };
    if path_part.is_empty() {
        return Err(StorageError::InvalidDatabaseUrl {
            url: trimmed.to_string(),
            reason: "the SQLite file path is empty".to_string(),
        });
    }
    let path = Path::new(path_part);
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|source| StorageError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
    }
    let mut url = format!("sqlite://{path_part}");
    match query {
        Some(query) if query.contains("mode=") => {
            url.push('?');
            url.push_str(query);
        }
        Some(query) => {
            url.push_str("?mode=rwc&");
            url.push_str(query);
        }
        None => url.push_str("?mode=rwc"),
    }
    Ok((Backend::Sqlite, url))
}

pub(crate) fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_across_rows() {
        assert_eq!(SqlPlaceholders::values(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(SqlPlaceholders::values(1, 1), "($1)");
    }

    #[test]
    fn urls_are_recognised() {
        let dir = std::env::temp_dir().join("prodcat-url-test");
        let file = dir.join("x.db");
        let (backend, url) = normalise_url(file.to_str().unwrap()).unwrap();
        assert_eq!(backend, Backend::Sqlite);
        assert!(url.starts_with("sqlite://") && url.ends_with("?mode=rwc"));
        assert_eq!(
            normalise_url("postgres://u@h/db").unwrap().0,
            Backend::Postgres
        );
        assert!(normalise_url("mysql://x").is_err());
        assert_eq!(
            redact_password("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
    }
}
