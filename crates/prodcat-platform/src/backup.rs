//! Backups of a whole platform and their restore: the metadata database as one consistent
//! snapshot taken while it serves, every object of the object store, and a manifest that
//! records what the snapshot holds (the champion, the aliases and versions, every product with
//! its revision, the reviews, the users) so that a restore proves it brought back the same.
//!
//! ```text
//! backup-folder/
//!   manifest.json         what was copied and the answers to the checks
//!   database.pgdump       (PostgreSQL, pg_dump custom format) or database.sqlite
//!   objects/...           the object store's keys, as files
//! ```

use std::path::{Path, PathBuf};

use prodcat_storage::backup::{self, Check, CheckAnswer};
use prodcat_storage::{now_ms, Database, ObjectStorage};
use serde::{Deserialize, Serialize};

use crate::{Platform, PlatformError};

/// The manifest's format; a restore refuses formats it does not know.
const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";

/// Everything a backup answers for.
pub fn checks() -> Vec<Check> {
    prodcat_registry::BACKUP_CHECKS
        .iter()
        .chain(prodcat_catalogue::BACKUP_CHECKS)
        .copied()
        .collect()
}

/// What a backup folder holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupManifest {
    pub format: u32,
    pub created_at_ms: i64,
    pub code_version: String,
    /// `sqlite` or `postgres`: a backup restores into the same kind of database.
    pub backend: String,
    pub database_file: String,
    /// Whether `objects/` holds the object store (else it is backed up by other means, such
    /// as bucket versioning).
    pub objects_included: bool,
    pub object_count: usize,
    pub object_bytes: u64,
    pub checks: Vec<CheckRecord>,
}

/// One check's answer, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckRecord {
    pub name: String,
    pub rows: u64,
    pub sha256: String,
    pub first: Option<String>,
}

impl From<CheckAnswer> for CheckRecord {
    fn from(answer: CheckAnswer) -> Self {
        Self {
            name: answer.name,
            rows: answer.rows,
            sha256: answer.sha256,
            first: answer.first,
        }
    }
}

impl BackupManifest {
    /// A check's record by name.
    pub fn check(&self, name: &str) -> Option<&CheckRecord> {
        self.checks.iter().find(|check| check.name == name)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PlatformError + '_ {
    move |source| PlatformError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Backs up `platform` (its database reached at `database_url`) into the new folder `out`;
/// with `include_objects`, the object store is copied too. `progress(done, total)` follows the
/// object copy.
pub async fn backup(
    platform: &Platform,
    database_url: &str,
    out: &Path,
    include_objects: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BackupManifest, PlatformError> {
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(io_error(out))?
            .next()
            .is_some()
    {
        return Err(PlatformError::Settings {
            name: "backup folder".to_string(),
            reason: format!("{} is not empty; back up into a new folder", out.display()),
        });
    }
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    // The database first: every object its snapshot names was written before it, so the
    // object copy that follows holds them all.
    let (file, answers) =
        backup::dump_database(&platform.database, database_url, out, &checks()).await?;
    let (object_count, object_bytes) = if include_objects {
        let folder = out.join("objects");
        let target = open_folder_store(&folder)?;
        backup::copy_objects(&platform.objects, &target, progress).await?
    } else {
        (0, 0)
    };
    let manifest = BackupManifest {
        format: FORMAT,
        created_at_ms: now_ms(),
        code_version: prodcat_registry::code_version().to_string(),
        backend: platform.database.backend().name().to_string(),
        database_file: file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        objects_included: include_objects,
        object_count,
        object_bytes,
        checks: answers.into_iter().map(CheckRecord::from).collect(),
    };
    let path = out.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|error| PlatformError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(error),
    })?;
    std::fs::write(&path, json).map_err(io_error(&path))?;
    Ok(manifest)
}

fn open_folder_store(folder: &Path) -> Result<ObjectStorage, PlatformError> {
    std::fs::create_dir_all(folder).map_err(io_error(folder))?;
    let location = folder.to_str().ok_or_else(|| PlatformError::Settings {
        name: "backup folder".to_string(),
        reason: format!("{} is not valid UTF-8", folder.display()),
    })?;
    Ok(ObjectStorage::open(location)?)
}

/// Reads a backup folder's manifest.
pub fn read_manifest(folder: &Path) -> Result<BackupManifest, PlatformError> {
    let path = folder.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
    let manifest: BackupManifest =
        serde_json::from_str(&text).map_err(|error| PlatformError::Settings {
            name: "backup manifest".to_string(),
            reason: format!("{} is not a backup manifest: {error}", path.display()),
        })?;
    if manifest.format != FORMAT {
        return Err(PlatformError::Settings {
            name: "backup manifest".to_string(),
            reason: format!(
                "{} has format {}, this version reads format {FORMAT}",
                path.display(),
                manifest.format
            ),
        });
    }
    Ok(manifest)
}

/// What a restore brought back.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub manifest: BackupManifest,
    pub objects_copied: usize,
    /// Each check, as restored.
    pub checks: Vec<CheckRecord>,
}

/// Restores the backup in `from` into the empty database at `database_url` and into
/// `objects`; then compares every check with the manifest and fails on any difference.
pub async fn restore(
    from: &Path,
    database_url: &str,
    objects: &ObjectStorage,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(RestoreReport, Database), PlatformError> {
    let manifest = read_manifest(from)?;
    let backend = backup::restore_database(database_url, from).await?;
    if backend.name() != manifest.backend {
        return Err(PlatformError::Settings {
            name: "database url".to_string(),
            reason: format!(
                "the backup is of a {} database, the target is {}",
                manifest.backend,
                backend.name()
            ),
        });
    }
    // Connecting applies the migrations of this version, when the backup is older.
    let database = Database::connect(database_url).await?;
    let objects_copied = if manifest.objects_included {
        let source = open_folder_store(&from.join("objects"))?;
        backup::copy_objects(&source, objects, progress).await?.0
    } else {
        0
    };
    let checks: Vec<CheckRecord> = backup::run_checks(&database, &checks())
        .await?
        .into_iter()
        .map(CheckRecord::from)
        .collect();
    let differences: Vec<String> = manifest
        .checks
        .iter()
        .filter(|expected| checks.iter().all(|found| found != *expected))
        .map(|expected| {
            let found = checks.iter().find(|found| found.name == expected.name);
            format!(
                "{}: {} rows in the backup, {} restored",
                expected.name,
                expected.rows,
                found.map_or(0, |found| found.rows)
            )
        })
        .collect();
    if !differences.is_empty() {
        return Err(PlatformError::Settings {
            name: "restore".to_string(),
            reason: format!(
                "the restored data differs from the backup: {}",
                differences.join("; ")
            ),
        });
    }
    Ok((
        RestoreReport {
            manifest,
            objects_copied,
            checks,
        },
        database,
    ))
}

/// The default folder name for a backup taken now: `prodcat-backup-YYYYMMDD-HHMM`.
pub fn default_folder(parent: &Path) -> PathBuf {
    let stamp = prodcat_domain::format_utc_minutes(now_ms())
        .replace(['-', ':'], "")
        .replace(' ', "-");
    parent.join(format!("prodcat-backup-{stamp}"))
}
