//! Tracked runs: start a run, log parameters, metrics (with steps) and artifacts, finish or fail
//! it, and read runs back (one in full, or a filtered list, newest first).
//!
//! A finished or failed run is a closed record: logging to it is refused.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use prodcat_domain::{is_prefixed_hex, sha256_hex, DatasetVersionId, ModelVersionId};
use prodcat_storage::{now_ms, Database, ObjectStorage, SqlPlaceholders};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{validate, RegistryError};

/// A run identifier: `run-` followed by 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    pub const PREFIX: &'static str = "run-";

    /// Parses a full run id.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let trimmed = text.trim();
        if is_prefixed_hex(trimmed, Self::PREFIX, 16) {
            Ok(Self(trimmed.to_string()))
        } else {
            Err(RegistryError::InvalidRunId(trimmed.to_string()))
        }
    }

    /// A new, unique id.
    fn generate(name: &str) -> Self {
        Self(format!(
            "{}{}",
            Self::PREFIX,
            prodcat_domain::unique_hex16(name)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RunId {
    type Error = RegistryError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> String {
        id.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Train,
    Evaluate,
    Pipeline,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Train => "train",
            RunKind::Evaluate => "evaluate",
            RunKind::Pipeline => "pipeline",
        }
    }

    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        match text.trim() {
            "train" => Ok(RunKind::Train),
            "evaluate" => Ok(RunKind::Evaluate),
            "pipeline" => Ok(RunKind::Pipeline),
            _ => Err(RegistryError::InvalidName {
                what: "run kind",
                value: text.to_string(),
                reason: "expected train, evaluate or pipeline",
            }),
        }
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Finished,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        match text.trim() {
            "running" => Ok(RunStatus::Running),
            "finished" => Ok(RunStatus::Finished),
            "failed" => Ok(RunStatus::Failed),
            _ => Err(RegistryError::InvalidName {
                what: "run status",
                value: text.to_string(),
                reason: "expected running, finished or failed",
            }),
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first of `candidates` that is a valid actor name (trimmed), else `unknown`. The binary
/// passes what names the person or service acting (`PRODCAT_ACTOR`, then the login name).
pub fn actor_or_unknown<I, S>(candidates: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    candidates
        .into_iter()
        .map(|value| value.as_ref().trim().to_string())
        .find(|value| !value.is_empty() && validate::actor(value).is_ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// What a new run records at its start.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub kind: RunKind,
    /// A short human name (`train text+image`, `nightly retrain`).
    pub name: String,
    pub dataset_version: Option<DatasetVersionId>,
    /// The model version an evaluation scores (a training run gets its version when registered).
    pub model_version: Option<ModelVersionId>,
    pub code_version: String,
    pub parameters: BTreeMap<String, String>,
    pub created_by: String,
}

impl NewRun {
    /// A run of `kind` named `name`, started by `created_by`, with the process's code version
    /// ([`crate::code_version`]) and no parameters.
    pub fn new(kind: RunKind, name: &str, created_by: &str) -> Self {
        Self {
            kind,
            name: name.to_string(),
            dataset_version: None,
            model_version: None,
            code_version: crate::code_version(),
            parameters: BTreeMap::new(),
            created_by: created_by.to_string(),
        }
    }
}

/// A stored run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub id: RunId,
    pub kind: RunKind,
    pub status: RunStatus,
    pub name: String,
    pub dataset_version: Option<DatasetVersionId>,
    pub model_version: Option<ModelVersionId>,
    pub code_version: String,
    pub parameters: BTreeMap<String, String>,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub error: Option<String>,
    pub created_by: String,
}

impl Run {
    /// Wall time from start to end, once the run has ended.
    pub fn duration_ms(&self) -> Option<i64> {
        self.ended_at_ms.map(|end| end - self.started_at_ms)
    }
}

/// One value of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricPoint {
    pub step: i64,
    pub value: f64,
    pub timestamp_ms: i64,
}

/// A file recorded for a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub name: String,
    pub object_key: String,
    pub sha256: String,
    pub byte_length: i64,
    pub media_type: String,
    pub created_at_ms: i64,
}

/// A file to record for a run (its bytes already written to the object store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArtifact {
    /// Relative path naming the artifact within the run (`model/manifest.json`, `report.html`).
    pub name: String,
    pub object_key: String,
    pub sha256: String,
    pub byte_length: i64,
    pub media_type: String,
}

/// A run with everything it logged.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub run: Run,
    /// The value at the highest step of each metric.
    pub metrics: BTreeMap<String, f64>,
    /// Every value of each metric, by step.
    pub metric_history: BTreeMap<String, Vec<MetricPoint>>,
    pub artifacts: Vec<Artifact>,
}

/// Which runs [`list_runs`] returns.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub kind: Option<RunKind>,
    pub status: Option<RunStatus>,
    pub dataset_version: Option<DatasetVersionId>,
    pub model_version: Option<ModelVersionId>,
    /// At most this many (newest first); `None` for all.
    pub limit: Option<usize>,
}

const RUN_COLUMNS: &str = "id, kind, status, name, dataset_version, model_version, code_version, \
    parameters, started_at_ms, ended_at_ms, error, created_by";

fn run_from_row(row: &sqlx::any::AnyRow) -> Result<Run, RegistryError> {
    let id: String = row.try_get("id")?;
    let corrupt = |reason: String| RegistryError::Corrupt {
        what: format!("run {id}"),
        reason,
    };
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let dataset_version: Option<String> = row.try_get("dataset_version")?;
    let model_version: Option<String> = row.try_get("model_version")?;
    let parameters: String = row.try_get("parameters")?;
    Ok(Run {
        id: RunId::parse(&id)?,
        kind: RunKind::parse(&kind)?,
        status: RunStatus::parse(&status)?,
        name: row.try_get("name")?,
        dataset_version: dataset_version
            .map(|value| DatasetVersionId::parse(&value))
            .transpose()?,
        model_version: model_version
            .map(|value| ModelVersionId::parse(&value))
            .transpose()?,
        code_version: row.try_get("code_version")?,
        parameters: serde_json::from_str(&parameters)
            .map_err(|error| corrupt(format!("parameters are not a JSON object: {error}")))?,
        started_at_ms: row.try_get("started_at_ms")?,
        ended_at_ms: row.try_get("ended_at_ms")?,
        error: row.try_get("error")?,
        created_by: row.try_get("created_by")?,
    })
}

fn check_parameters(parameters: &BTreeMap<String, String>) -> Result<(), RegistryError> {
    for (key, value) in parameters {
        validate::key("parameter key", key)?;
        if value.len() > 6000 {
            return Err(RegistryError::InvalidName {
                what: "parameter value",
                value: format!("{key}={}...", &value[..value.floor_char_boundary(40)]),
                reason: "it is longer than 6000 bytes; store it as an artifact instead",
            });
        }
    }
    Ok(())
}

fn parameters_json(parameters: &BTreeMap<String, String>) -> String {
    serde_json::to_string(parameters).unwrap_or_else(|_| "{}".to_string())
}

/// Starts a run and returns it (status `running`).
pub async fn start_run(database: &Database, new_run: &NewRun) -> Result<Run, RegistryError> {
    if new_run.name.trim().is_empty() || new_run.name.len() > 250 {
        return Err(RegistryError::InvalidName {
            what: "run name",
            value: new_run.name.clone(),
            reason: "it must be 1 to 250 characters",
        });
    }
    validate::actor(&new_run.created_by)?;
    check_parameters(&new_run.parameters)?;
    let code_version = if new_run.code_version.trim().is_empty() {
        crate::code_version()
    } else {
        new_run.code_version.trim().to_string()
    };
    let id = RunId::generate(&new_run.name);
    sqlx::query(
        "INSERT INTO runs (id, kind, status, name, dataset_version, model_version, code_version, \
         parameters, started_at_ms, ended_at_ms, error, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10)",
    )
    .bind(id.as_str().to_string())
    .bind(new_run.kind.as_str())
    .bind(RunStatus::Running.as_str())
    .bind(new_run.name.trim().to_string())
    .bind(
        new_run
            .dataset_version
            .as_ref()
            .map(|v| v.as_str().to_string()),
    )
    .bind(
        new_run
            .model_version
            .as_ref()
            .map(|v| v.as_str().to_string()),
    )
    .bind(code_version)
    .bind(parameters_json(&new_run.parameters))
    .bind(now_ms())
    .bind(new_run.created_by.clone())
    .execute(database.pool())
    .await?;
    tracing::info!(run = %id, kind = new_run.kind.as_str(), "run started");
    find_run(database, &id)
        .await?
        .ok_or_else(|| RegistryError::UnknownRun(id.to_string()))
}

async fn find_run(database: &Database, id: &RunId) -> Result<Option<Run>, RegistryError> {
    let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .bind(id.as_str().to_string())
        .fetch_optional(database.pool())
        .await?;
    row.map(|row| run_from_row(&row)).transpose()
}

/// The run `id`, which must exist and be running.
async fn running_run(database: &Database, id: &RunId) -> Result<Run, RegistryError> {
    let run = find_run(database, id)
        .await?
        .ok_or_else(|| RegistryError::UnknownRun(id.to_string()))?;
    if run.status != RunStatus::Running {
        return Err(RegistryError::RunClosed {
            run: id.to_string(),
            status: run.status.to_string(),
        });
    }
    Ok(run)
}

/// Adds parameters to a running run. Logging a parameter again with the same value is a no-op;
/// with another value it is refused.
pub async fn log_params<I, K, V>(
    database: &Database,
    run: &RunId,
    parameters: I,
) -> Result<(), RegistryError>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let new: BTreeMap<String, String> = parameters
        .into_iter()
        .map(|(key, value)| (key.into(), value.into()))
        .collect();
    check_parameters(&new)?;
    let mut transaction = database.begin_write().await?;
    // A write first: on PostgreSQL it takes the run's row lock before the read (SQLite's write
    // lock is held from the start); it also tells an unknown run.
    let touched = sqlx::query("UPDATE runs SET status = status WHERE id = $1")
        .bind(run.as_str().to_string())
        .execute(&mut *transaction)
        .await?;
    if touched.rows_affected() == 0 {
        return Err(RegistryError::UnknownRun(run.to_string()));
    }
    let row = sqlx::query("SELECT status, parameters FROM runs WHERE id = $1")
        .bind(run.as_str().to_string())
        .fetch_one(&mut *transaction)
        .await?;
    let status: String = row.try_get("status")?;
    if status != RunStatus::Running.as_str() {
        return Err(RegistryError::RunClosed {
            run: run.to_string(),
            status,
        });
    }
    let stored: String = row.try_get("parameters")?;
    let mut merged: BTreeMap<String, String> =
        serde_json::from_str(&stored).map_err(|error| RegistryError::Corrupt {
            what: format!("run {run}"),
            reason: format!("parameters are not a JSON object: {error}"),
        })?;
    for (key, value) in new {
        match merged.get(&key) {
            Some(old) if *old != value => {
                return Err(RegistryError::ParameterChanged {
                    run: run.to_string(),
                    key,
                    old: old.clone(),
                    new: value,
                })
            }
            _ => {
                merged.insert(key, value);
            }
        }
    }
    sqlx::query("UPDATE runs SET parameters = $1 WHERE id = $2")
        .bind(parameters_json(&merged))
        .bind(run.as_str().to_string())
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(())
}

/// Records one metric value at a step (0 for single values; the epoch for curves). Logging the
/// same key and step again replaces the value.
pub async fn log_metric(
    database: &Database,
    run: &RunId,
    key: &str,
    step: i64,
    value: f64,
) -> Result<(), RegistryError> {
    log_metrics(database, run, [(key, step, value)]).await
}

/// Records many metric values at once, in one transaction: `(key, step, value)`.
pub async fn log_metrics<I, K>(
    database: &Database,
    run: &RunId,
    metrics: I,
) -> Result<(), RegistryError>
where
    I: IntoIterator<Item = (K, i64, f64)>,
    K: AsRef<str>,
{
    // The last value for a (key, step) wins, as it would with one call per value.
    let mut values: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for (key, step, value) in metrics {
        let key = key.as_ref();
        validate::key("metric key", key)?;
        if !value.is_finite() {
            return Err(RegistryError::NonFiniteMetric {
                run: run.to_string(),
                key: key.to_string(),
                step,
                value,
            });
        }
        values.insert((key.to_string(), step), value);
    }
    running_run(database, run).await?;
    if values.is_empty() {
        return Ok(());
    }
    let timestamp = now_ms();
    let values: Vec<((String, i64), f64)> = values.into_iter().collect();
    let mut transaction = database.begin_write().await?;
    for batch in values.chunks(200) {
        let sql = format!(
            "INSERT INTO run_metrics (run_id, key, step, value, timestamp_ms) VALUES {} \
             ON CONFLICT (run_id, key, step) DO UPDATE SET value = excluded.value, \
             timestamp_ms = excluded.timestamp_ms",
            SqlPlaceholders::values(batch.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for ((key, step), value) in batch {
            query = query
                .bind(run.as_str().to_string())
                .bind(key.clone())
                .bind(*step)
                .bind(*value)
                .bind(timestamp);
        }
        query.execute(&mut *transaction).await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// Records an artifact whose bytes the caller already wrote to the object store. Recording the
/// same name with the same content again is a no-op; with other content it is refused.
pub async fn log_artifact(
    database: &Database,
    run: &RunId,
    artifact: &NewArtifact,
) -> Result<Artifact, RegistryError> {
    validate::artifact_name(&artifact.name)?;
    if artifact.object_key.trim().is_empty() {
        return Err(RegistryError::InvalidName {
            what: "artifact object key",
            value: artifact.object_key.clone(),
            reason: "it is empty",
        });
    }
    if !is_prefixed_hex(&artifact.sha256, "", 64) {
        return Err(RegistryError::InvalidName {
            what: "artifact sha256",
            value: artifact.sha256.clone(),
            reason: "expected 64 lowercase hex digits",
        });
    }
    if artifact.byte_length < 0 {
        return Err(RegistryError::InvalidName {
            what: "artifact length",
            value: artifact.byte_length.to_string(),
            reason: "it is negative",
        });
    }
    running_run(database, run).await?;
    if let Some(existing) = find_artifact(database, run, &artifact.name).await? {
        return if existing.sha256 == artifact.sha256 && existing.object_key == artifact.object_key {
            Ok(existing)
        } else {
            Err(RegistryError::ArtifactConflict {
                run: run.to_string(),
                name: artifact.name.clone(),
            })
        };
    }
    let media_type = if artifact.media_type.trim().is_empty() {
        media_type_for(&artifact.name).to_string()
    } else {
        artifact.media_type.trim().to_string()
    };
    sqlx::query(
        "INSERT INTO run_artifacts (run_id, name, object_key, sha256, byte_length, media_type, \
         created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(run.as_str().to_string())
    .bind(artifact.name.clone())
    .bind(artifact.object_key.clone())
    .bind(artifact.sha256.clone())
    .bind(artifact.byte_length)
    .bind(media_type)
    .bind(now_ms())
    .execute(database.pool())
    .await?;
    find_artifact(database, run, &artifact.name)
        .await?
        .ok_or_else(|| RegistryError::UnknownRun(run.to_string()))
}

/// Writes `bytes` to the object store under `runs/<run id>/<name>` and records the artifact.
/// An empty `media_type` is guessed from the name's extension.
pub async fn store_artifact(
    database: &Database,
    objects: &ObjectStorage,
    run: &RunId,
    name: &str,
    bytes: Bytes,
    media_type: &str,
) -> Result<Artifact, RegistryError> {
    validate::artifact_name(name)?;
    running_run(database, run).await?;
    let object_key = format!("runs/{run}/{name}");
    let artifact = NewArtifact {
        name: name.to_string(),
        object_key: object_key.clone(),
        sha256: sha256_hex(&bytes),
        byte_length: bytes.len() as i64,
        media_type: media_type.to_string(),
    };
    if let Some(existing) = find_artifact(database, run, name).await? {
        if existing.sha256 != artifact.sha256 {
            return Err(RegistryError::ArtifactConflict {
                run: run.to_string(),
                name: name.to_string(),
            });
        }
        return Ok(existing);
    }
    objects.put(&object_key, bytes).await?;
    log_artifact(database, run, &artifact).await
}

/// A media type from a file name's extension (`application/octet-stream` when unknown).
pub fn media_type_for(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "csv" => "text/csv",
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        _ => "application/octet-stream",
    }
}

const ARTIFACT_COLUMNS: &str = "name, object_key, sha256, byte_length, media_type, created_at_ms";

fn artifact_from_row(row: &sqlx::any::AnyRow) -> Result<Artifact, RegistryError> {
    Ok(Artifact {
        name: row.try_get("name")?,
        object_key: row.try_get("object_key")?,
        sha256: row.try_get("sha256")?,
        byte_length: row.try_get("byte_length")?,
        media_type: row.try_get("media_type")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

async fn find_artifact(
    database: &Database,
    run: &RunId,
    name: &str,
) -> Result<Option<Artifact>, RegistryError> {
    let row = sqlx::query(&format!(
        "SELECT {ARTIFACT_COLUMNS} FROM run_artifacts WHERE run_id = $1 AND name = $2"
    ))
    .bind(run.as_str().to_string())
    .bind(name.to_string())
    .fetch_optional(database.pool())
    .await?;
    row.map(|row| artifact_from_row(&row)).transpose()
}

async fn close_run(
    database: &Database,
    run: &RunId,
    status: RunStatus,
    error: Option<&str>,
) -> Result<Run, RegistryError> {
    let result = sqlx::query(
        "UPDATE runs SET status = $1, ended_at_ms = $2, error = $3 WHERE id = $4 AND status = $5",
    )
    .bind(status.as_str())
    .bind(now_ms())
    .bind(error.map(str::to_string))
    .bind(run.as_str().to_string())
    .bind(RunStatus::Running.as_str())
    .execute(database.pool())
    .await?;
    if result.rows_affected() == 0 {
        // Either unknown or already closed: say which.
        running_run(database, run).await?;
    }
    tracing::info!(run = %run, status = status.as_str(), "run ended");
    find_run(database, run)
        .await?
        .ok_or_else(|| RegistryError::UnknownRun(run.to_string()))
}

/// Ends a running run successfully.
pub async fn finish_run(database: &Database, run: &RunId) -> Result<Run, RegistryError> {
    close_run(database, run, RunStatus::Finished, None).await
}

/// Ends a running run as failed, keeping the error message.
pub async fn fail_run(database: &Database, run: &RunId, error: &str) -> Result<Run, RegistryError> {
    let message = if error.trim().is_empty() {
        "failed without a message"
    } else {
        error
    };
    close_run(database, run, RunStatus::Failed, Some(message)).await
}

/// Finds a run by full id or by a unique prefix of it (at least `run-` and 4 hex digits).
pub async fn resolve_run(database: &Database, reference: &str) -> Result<Run, RegistryError> {
    let reference = reference.trim();
    if let Ok(id) = RunId::parse(reference) {
        return find_run(database, &id)
            .await?
            .ok_or_else(|| RegistryError::UnknownRun(reference.to_string()));
    }
    let digits = reference.len().saturating_sub(RunId::PREFIX.len());
    let is_prefix = digits >= 4 && is_prefixed_hex(reference, RunId::PREFIX, digits);
    if !is_prefix {
        return Err(RegistryError::UnknownRun(reference.to_string()));
    }
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id LIKE $1 ORDER BY id LIMIT 3"
    ))
    .bind(format!("{reference}%"))
    .fetch_all(database.pool())
    .await?;
    match rows.len() {
        0 => Err(RegistryError::UnknownRun(reference.to_string())),
        1 => run_from_row(&rows[0]),
        matches => Err(RegistryError::AmbiguousRun {
            reference: reference.to_string(),
            matches,
        }),
    }
}

/// Every metric value of a run, by key, in step order.
pub async fn metric_history(
    database: &Database,
    run: &RunId,
) -> Result<BTreeMap<String, Vec<MetricPoint>>, RegistryError> {
    let rows = sqlx::query(
        "SELECT key, step, value, timestamp_ms FROM run_metrics WHERE run_id = $1 \
         ORDER BY key, step",
    )
    .bind(run.as_str().to_string())
    .fetch_all(database.pool())
    .await?;
    let mut history: BTreeMap<String, Vec<MetricPoint>> = BTreeMap::new();
    for row in rows {
        let key: String = row.try_get("key")?;
        history.entry(key).or_default().push(MetricPoint {
            step: row.try_get("step")?,
            value: row.try_get("value")?,
            timestamp_ms: row.try_get("timestamp_ms")?,
        });
    }
    Ok(history)
}

/// The value at the highest step of each metric.
pub fn latest_values(history: &BTreeMap<String, Vec<MetricPoint>>) -> BTreeMap<String, f64> {
    history
        .iter()
        .filter_map(|(key, points)| {
            points
                .iter()
                .max_by_key(|point| point.step)
                .map(|point| (key.clone(), point.value))
        })
        .collect()
}

/// Artifacts of a run, by name.
pub async fn list_artifacts(
    database: &Database,
    run: &RunId,
) -> Result<Vec<Artifact>, RegistryError> {
    let rows = sqlx::query(&format!(
        "SELECT {ARTIFACT_COLUMNS} FROM run_artifacts WHERE run_id = $1 ORDER BY name"
    ))
    .bind(run.as_str().to_string())
    .fetch_all(database.pool())
    .await?;
    rows.iter().map(artifact_from_row).collect()
}

/// A run with its metrics (latest values and full history) and artifacts. `reference` is a run id
/// or a unique prefix of one.
pub async fn get_run(database: &Database, reference: &str) -> Result<RunDetails, RegistryError> {
    let run = resolve_run(database, reference).await?;
    let metric_history = metric_history(database, &run.id).await?;
    let artifacts = list_artifacts(database, &run.id).await?;
    Ok(RunDetails {
        metrics: latest_values(&metric_history),
        metric_history,
        artifacts,
        run,
    })
}

/// Runs matching the filter, newest first.
pub async fn list_runs(database: &Database, filter: &RunFilter) -> Result<Vec<Run>, RegistryError> {
    let mut conditions = Vec::new();
    let mut values: Vec<String> = Vec::new();
    if let Some(kind) = filter.kind {
        values.push(kind.as_str().to_string());
        conditions.push(format!("kind = ${}", values.len()));
    }
    if let Some(status) = filter.status {
        values.push(status.as_str().to_string());
        conditions.push(format!("status = ${}", values.len()));
    }
    if let Some(dataset) = &filter.dataset_version {
        values.push(dataset.as_str().to_string());
        conditions.push(format!("dataset_version = ${}", values.len()));
    }
    if let Some(model) = &filter.model_version {
        values.push(model.as_str().to_string());
        conditions.push(format!("model_version = ${}", values.len()));
    }
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY started_at_ms DESC, id DESC");
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as usize)));
    }
    let mut query = sqlx::query(&sql);
    for value in values {
        query = query.bind(value);
    }
    let rows = query.fetch_all(database.pool()).await?;
    rows.iter().map(run_from_row).collect()
}

/// Sets the model version a run produced (done by [`crate::register_version`]).
pub(crate) async fn set_run_model_version<'c, E>(
    executor: E,
    run: &RunId,
    version: &ModelVersionId,
) -> Result<(), RegistryError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let result = sqlx::query("UPDATE runs SET model_version = $1 WHERE id = $2")
        .bind(version.as_str().to_string())
        .bind(run.as_str().to_string())
        .execute(executor)
        .await?;
    if result.rows_affected() == 0 {
        return Err(RegistryError::UnknownRun(run.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids() {
        let id = RunId::generate("x");
        assert!(RunId::parse(id.as_str()).is_ok());
        assert_ne!(RunId::generate("x"), id);
        assert!(RunId::parse("run-0123").is_err());
        assert!(RunId::parse("run-0123456789ABCDEF").is_err());
        assert!(RunId::parse("mv-0123456789abcdef").is_err());
    }

    #[test]
    fn latest_value_is_the_highest_step() {
        let mut history = BTreeMap::new();
        history.insert(
            "loss".to_string(),
            vec![
                MetricPoint {
                    step: 2,
                    value: 0.5,
                    timestamp_ms: 1,
                },
                MetricPoint {
                    step: 7,
                    value: 0.1,
                    timestamp_ms: 0,
                },
                MetricPoint {
                    step: 3,
                    value: 0.4,
                    timestamp_ms: 2,
                },
            ],
        );
        assert_eq!(latest_values(&history)["loss"], 0.1);
    }

    #[test]
    fn the_first_valid_actor_is_chosen() {
        assert_eq!(actor_or_unknown(["", "  alice ", "bob"]), "alice");
        assert_eq!(actor_or_unknown(Vec::<String>::new()), "unknown");
        assert_eq!(actor_or_unknown(["   "]), "unknown");
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type_for("report.HTML"), "text/html");
        assert_eq!(
            media_type_for("model/weights.bin"),
            "application/octet-stream"
        );
        assert_eq!(media_type_for("noextension"), "application/octet-stream");
    }
}
