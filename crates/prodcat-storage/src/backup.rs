//! Consistent copies of the metadata database and of the object store, and their restore.
//!
//! The database is copied as one snapshot while it keeps serving: PostgreSQL with `pg_dump`
//! (custom format, one transaction), SQLite with `VACUUM INTO`. A restore goes only into an
//! empty database (PostgreSQL: no table in the `public` schema; SQLite: no file yet), so that
//! nothing stored is ever overwritten. Objects are written once under their keys, so copying
//! them after the database snapshot gives every object the snapshot names.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use sqlx::any::AnyPoolOptions;

use crate::database::{normalise_url, Backend};
use crate::{Database, ObjectStorage, StorageError};

/// The file name of the database copy inside a backup folder, by backend.
pub fn dump_file_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "database.pgdump",
        Backend::Sqlite => "database.sqlite",
    }
}

/// A question asked of the copied data, to compare a restore with its backup: a query that
/// returns one text column (both backends' SQL), whose rows are counted and digested.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub name: &'static str,
    pub sql: &'static str,
}

/// The answer to a [`Check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckAnswer {
    pub name: String,
    pub rows: u64,
    /// SHA-256 of the rows, each followed by a newline.
    pub sha256: String,
    /// The first row (for a one-row check, its value).
    pub first: Option<String>,
}

/// Runs `checks` on `connection`.
async fn answer(
    connection: &mut sqlx::AnyConnection,
    checks: &[Check],
) -> Result<Vec<CheckAnswer>, StorageError> {
    let mut answers = Vec::with_capacity(checks.len());
    for check in checks {
        let rows: Vec<Option<String>> = sqlx::query_scalar(check.sql)
            .fetch_all(&mut *connection)
            .await?;
        let mut text = String::new();
        for row in &rows {
            text.push_str(row.as_deref().unwrap_or(""));
            text.push('\n');
        }
        answers.push(CheckAnswer {
            name: check.name.to_string(),
            rows: rows.len() as u64,
            sha256: prodcat_domain::sha256_hex(text.as_bytes()),
            first: rows.first().cloned().flatten(),
        });
    }
    Ok(answers)
}

/// Runs `checks` on a live database (after a restore, to compare with the backup's answers).
pub async fn run_checks(
    database: &Database,
    checks: &[Check],
) -> Result<Vec<CheckAnswer>, StorageError> {
    let mut connection = database.pool().acquire().await?;
    answer(&mut connection, checks).await
}

/// Writes a consistent copy of `database` (reached at `url`) into `folder` while it keeps
/// serving, and answers `checks` on exactly what was copied. Returns the copy's path.
pub async fn dump_database(
    database: &Database,
    url: &str,
    folder: &Path,
    checks: &[Check],
) -> Result<(PathBuf, Vec<CheckAnswer>), StorageError> {
    let target = folder.join(dump_file_name(database.backend()));
    if target.exists() {
        return Err(StorageError::Backup(format!(
            "{} already exists; back up into a new folder",
            target.display()
        )));
    }
    let answers = match database.backend() {
        Backend::Sqlite => {
            let text = target.to_str().ok_or_else(|| {
                StorageError::Backup(format!("{} is not valid UTF-8", target.display()))
            })?;
            sqlx::query(&format!("VACUUM INTO '{}'", text.replace('\'', "''")))
                .execute(database.pool())
                .await?;
            // The copy, opened read-only, is what the answers describe.
            let copy = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&format!("sqlite://{text}?mode=ro"))
                .await
                .map_err(|source| StorageError::Connect {
                    url: text.to_string(),
                    source,
                })?;
            let answers = match copy.acquire().await {
                Ok(mut connection) => answer(&mut connection, checks).await,
                Err(error) => Err(error.into()),
            };
            copy.close().await;
            answers?
        }
        Backend::Postgres => {
            // pg_dump reads the snapshot this transaction exports, so the answers and the dump
            // describe the same moment whatever is written meanwhile.
            let mut connection = database.pool().acquire().await?;
            sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *connection)
                .await?;
            let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
                .fetch_one(&mut *connection)
                .await?;
            let answers = answer(&mut connection, checks).await;
            let dumped = match &answers {
                Ok(_) => {
                    let (url, password) = without_password(url)?;
                    let mut command = tokio::process::Command::new("pg_dump");
                    command
                        .arg("--format=custom")
                        .arg("--no-owner")
                        .arg("--no-privileges")
                        .arg(format!("--snapshot={snapshot}"))
                        .arg(format!("--file={}", target.display()))
                        .arg(format!("--dbname={url}"));
                    run_client(command, password, "pg_dump").await
                }
                Err(_) => Ok(()),
            };
            sqlx::query("COMMIT").execute(&mut *connection).await?;
            dumped?;
            answers?
        }
    };
    Ok((target, answers))
}

/// Restores the copy in `folder` into the empty database at `url` (created for SQLite).
pub async fn restore_database(url: &str, folder: &Path) -> Result<Backend, StorageError> {
    let (backend, normalised) = normalise_url(url)?;
    let source = folder.join(dump_file_name(backend));
    if !source.is_file() {
        return Err(StorageError::Backup(format!(
            "{} holds no {} copy ({} is missing); was the backup taken from the other kind \
             of database?",
            folder.display(),
            backend.name(),
            dump_file_name(backend)
        )));
    }
    match backend {
        Backend::Sqlite => {
            let path = sqlite_path(&normalised)?;
            if path.exists() {
                return Err(StorageError::Backup(format!(
                    "{} already exists; restore into an empty database: a file that does not exist yet (move this one away first)",
                    path.display()
                )));
            }
            tokio::fs::copy(&source, &path)
                .await
                .map_err(|source| StorageError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
        }
        Backend::Postgres => {
            let tables = public_tables(&normalised).await?;
            if tables > 0 {
                return Err(StorageError::Backup(format!(
                    "the target database already holds {tables} tables; restore into an empty \
                     database (createdb a new one)"
                )));
            }
            let (url, password) = without_password(&normalised)?;
            let mut command = tokio::process::Command::new("pg_restore");
            command
                .arg("--no-owner")
                .arg("--no-privileges")
                .arg("--exit-on-error")
                .arg("--single-transaction")
                .arg(format!("--dbname={url}"))
                .arg(&source);
            run_client(command, password, "pg_restore").await?;
        }
    }
    Ok(backend)
}

/// Copies every object of `from` into `to`, skipping keys `to` already holds; returns the
/// number of objects copied and their bytes. `progress` is told of each object.
pub async fn copy_objects(
    from: &ObjectStorage,
    to: &ObjectStorage,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(usize, u64), StorageError> {
    let keys = from.list("").await?;
    let mut copied = 0;
    let mut bytes = 0u64;
    for (index, key) in keys.iter().enumerate() {
        progress(index + 1, keys.len());
        if to.exists(key).await? {
            continue;
        }
        let data = from.get(key).await?;
        bytes += data.len() as u64;
        to.put(key, data).await?;
        copied += 1;
    }
    Ok((copied, bytes))
}

fn sqlite_path(normalised: &str) -> Result<PathBuf, StorageError> {
    let rest = normalised
        .strip_prefix("sqlite://")
        .unwrap_or(normalised)
        .split('?')
        .next()
        .unwrap_or_default();
    if rest.is_empty() || rest.contains(":memory:") {
        return Err(StorageError::Backup(
            "an in-memory SQLite database cannot be restored into".to_string(),
        ));
    }
    Ok(PathBuf::from(rest))
}

/// Tables in the `public` schema of the PostgreSQL database at `url`, read without migrating.
async fn public_tables(url: &str) -> Result<i64, StorageError> {
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(|source| StorageError::Connect {
            url: crate::database::redact_password(url),
            source,
        })?;
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(count)
}

/// The URL without its password (kept out of the process list), and the password.
fn without_password(url: &str) -> Result<(String, Option<String>), StorageError> {
    let mut parsed = url::Url::parse(url).map_err(|error| StorageError::InvalidDatabaseUrl {
        url: crate::database::redact_password(url),
        reason: error.to_string(),
    })?;
    let password = parsed.password().map(|password| {
        percent_encoding::percent_decode_str(password)
            .decode_utf8_lossy()
            .into_owned()
    });
    let _ = parsed.set_password(None);
    Ok((parsed.to_string(), password))
}

/// Runs a PostgreSQL client tool; a missing tool or a failure is an error with its message.
async fn run_client(
    mut command: tokio::process::Command,
    password: Option<String>,
    tool: &str,
) -> Result<(), StorageError> {
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|error| {
            StorageError::Backup(if error.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{tool} was not found: install the PostgreSQL client tools of the server's \
                     major version (Debian: apt-get install postgresql-client)"
                )
            } else {
                format!("{tool} could not start: {error}")
            })
        })?;
    if !output.status.success() {
        return Err(StorageError::Backup(format!(
            "{tool} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
