//! Recorded, resumable pipeline runs: a run is a sequence of named steps, each recorded in SQL
//! with its status, attempts, times, output (JSON) or error. A failed step is retried with
//! exponential backoff; a run resumed after a failure (or after its process died) skips the steps
//! that completed and reuses their recorded output, so every step only has to be idempotent for
//! the attempt that was interrupted.

use std::future::Future;
use std::time::Duration;

use prodcat_domain::sha256_hex;
use prodcat_storage::{now_ms, Database};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use prodcat_platform::Platform;

use crate::PipelineError;

/// How often a working step refreshes its run's heartbeat.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// A running run whose heartbeat is older than this is taken as abandoned (its process died).
pub const ABANDONED_AFTER_MS: i64 = 120_000;

/// How a failed step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Each further wait is the previous one times this.
    pub multiplier: f64,
    /// Longest wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(2),
            multiplier: 4.0,
            max_backoff: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// No retry: one attempt.
    pub fn once() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1) as i32);
        let seconds = self.initial_backoff.as_secs_f64() * factor;
        Duration::from_secs_f64(seconds.min(self.max_backoff.as_secs_f64()))
    }
}

/// Where a run or a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            _ => RunStatus::Running,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRun {
    pub id: String,
    pub pipeline: String,
    pub status: RunStatus,
    /// `cli`, `schedule:<name>`, `pipeline:<parent run>`, `simulation`, ...
    pub triggered_by: String,
    pub parameters: serde_json::Value,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub heartbeat_at_ms: i64,
    /// How many times the run was resumed.
    pub resumed: i64,
    pub error: Option<String>,
    pub output: Option<serde_json::Value>,
    /// The registry run (kind pipeline) of the latest attempt.
    pub registry_run: Option<String>,
    /// The run that started this one (a retrain started by a weekly check).
    pub parent_run: Option<String>,
    pub created_by: String,
}

impl PipelineRun {
    /// Whether the run is marked running but its process stopped refreshing the heartbeat.
    pub fn abandoned(&self, now_ms: i64) -> bool {
        self.status == RunStatus::Running && now_ms - self.heartbeat_at_ms > ABANDONED_AFTER_MS
    }

    /// Whether the run can be resumed: it failed, or its process died.
    pub fn resumable(&self, now_ms: i64) -> bool {
        self.status == RunStatus::Failed || self.abandoned(now_ms)
    }
}

/// A stored step of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStep {
    pub name: String,
    pub position: i64,
    pub status: RunStatus,
    pub attempts: i64,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
}

const RUN_COLUMNS: &str = "id, pipeline, status, triggered_by, parameters, started_at_ms, \
    ended_at_ms, heartbeat_at_ms, resumed, error, output, registry_run, parent_run, created_by";

fn parse_json(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn run_from_row(row: &sqlx::any::AnyRow) -> Result<PipelineRun, PipelineError> {
    let status: String = row.try_get("status")?;
    let parameters: String = row.try_get("parameters")?;
    Ok(PipelineRun {
        id: row.try_get("id")?,
        pipeline: row.try_get("pipeline")?,
        status: RunStatus::parse(&status),
        triggered_by: row.try_get("triggered_by")?,
        parameters: serde_json::from_str(&parameters).unwrap_or(serde_json::Value::Null),
        started_at_ms: row.try_get("started_at_ms")?,
        ended_at_ms: row.try_get("ended_at_ms")?,
        heartbeat_at_ms: row.try_get("heartbeat_at_ms")?,
        resumed: row.try_get("resumed")?,
        error: row.try_get("error")?,
        output: parse_json(row.try_get("output")?),
        registry_run: row.try_get("registry_run")?,
        parent_run: row.try_get("parent_run")?,
        created_by: row.try_get("created_by")?,
    })
}

/// A run by id, or by a unique prefix of its id.
pub async fn get_pipeline_run(
    database: &Database,
    reference: &str,
) -> Result<PipelineRun, PipelineError> {
    let reference = reference.trim();
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE id = $1 OR id LIKE $2 \
         ORDER BY started_at_ms DESC LIMIT 3"
    ))
    .bind(reference.to_string())
    .bind(format!("{reference}%"))
    .fetch_all(database.pool())
    .await?;
    let runs: Vec<PipelineRun> = rows.iter().map(run_from_row).collect::<Result<_, _>>()?;
    if let Some(exact) = runs.iter().find(|run| run.id == reference) {
        return Ok(exact.clone());
    }
    match runs.len() {
        1 if reference.len() >= 5 => Ok(runs[0].clone()),
        0 | 1 => Err(PipelineError::UnknownPipelineRun(reference.to_string())),
        _ => Err(PipelineError::Invalid(format!(
            "pipeline run reference {reference:?} matches several runs; give more of the id"
        ))),
    }
}

/// Runs, newest first, optionally of one pipeline.
pub async fn list_pipeline_runs(
    database: &Database,
    pipeline: Option<&str>,
    limit: usize,
) -> Result<Vec<PipelineRun>, PipelineError> {
    let rows = match pipeline {
        Some(name) => {
            sqlx::query(&format!(
                "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE pipeline = $1 \
                 ORDER BY started_at_ms DESC, id DESC LIMIT $2"
            ))
            .bind(name.to_string())
            .bind(limit as i64)
            .fetch_all(database.pool())
            .await?
        }
        None => {
            sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs ORDER BY started_at_ms DESC, id DESC LIMIT $1"
        ))
            .bind(limit as i64)
            .fetch_all(database.pool())
            .await?
        }
    };
    rows.iter().map(run_from_row).collect()
}

/// The steps of a run, in order.
pub async fn pipeline_steps(
    database: &Database,
    run_id: &str,
) -> Result<Vec<PipelineStep>, PipelineError> {
    let rows = sqlx::query(
        "SELECT name, position, status, attempts, started_at_ms, ended_at_ms, output, error \
         FROM pipeline_steps WHERE run_id = $1 ORDER BY position, started_at_ms",
    )
    .bind(run_id.to_string())
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            Ok(PipelineStep {
                name: row.try_get("name")?,
                position: row.try_get("position")?,
                status: RunStatus::parse(&status),
                attempts: row.try_get("attempts")?,
                started_at_ms: row.try_get("started_at_ms")?,
                ended_at_ms: row.try_get("ended_at_ms")?,
                output: parse_json(row.try_get("output")?),
                error: row.try_get("error")?,
            })
        })
        .collect()
}

fn new_run_id(pipeline: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!(
        "{nanos} {} {} {pipeline}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    format!("pr-{}", &sha256_hex(seed.as_bytes())[..16])
}

/// A run being executed: hands out steps, records them, and closes the run.
pub struct PipelineExecution {
    database: Database,
    run: PipelineRun,
    retry: RetryPolicy,
    next_position: i64,
}

impl PipelineExecution {
    /// Starts a new run of `pipeline`.
    pub async fn start(
        platform: &Platform,
        pipeline: &str,
        triggered_by: &str,
        parameters: serde_json::Value,
        parent_run: Option<&str>,
        retry: RetryPolicy,
    ) -> Result<Self, PipelineError> {
        let database = &platform.database;
        let now = now_ms();
        let run = PipelineRun {
            id: new_run_id(pipeline),
            pipeline: pipeline.to_string(),
            status: RunStatus::Running,
            triggered_by: triggered_by.to_string(),
            parameters,
            started_at_ms: now,
            ended_at_ms: None,
            heartbeat_at_ms: now,
            resumed: 0,
            error: None,
            output: None,
            registry_run: None,
            parent_run: parent_run.map(str::to_string),
            created_by: platform.actor().to_string(),
        };
        sqlx::query(
            "INSERT INTO pipeline_runs (id, pipeline, status, triggered_by, parameters, \
             started_at_ms, heartbeat_at_ms, resumed, parent_run, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)",
        )
        .bind(run.id.clone())
        .bind(run.pipeline.clone())
        .bind(run.status.as_str().to_string())
        .bind(run.triggered_by.clone())
        .bind(run.parameters.to_string())
        .bind(now)
        .bind(now)
        .bind(run.parent_run.clone())
        .bind(run.created_by.clone())
        .execute(database.pool())
        .await?;
        tracing::info!(run = %run.id, pipeline, triggered_by, "pipeline run started");
        Ok(Self {
            database: database.clone(),
            run,
            retry,
            next_position: 0,
        })
    }

    /// Picks up a failed or abandoned run again: completed steps will be skipped.
    /// The run is claimed atomically, so two processes can not resume it at once.
    pub async fn resume(
        database: &Database,
        run_id: &str,
        retry: RetryPolicy,
    ) -> Result<Self, PipelineError> {
        let run = get_pipeline_run(database, run_id).await?;
        let now = now_ms();
        if !run.resumable(now) {
            return Err(PipelineError::Invalid(format!(
                "pipeline run {} is {}{}; only a failed run (or one whose process died) can be resumed",
                run.id,
                run.status,
                if run.status == RunStatus::Running {
                    " and still alive"
                } else {
                    ""
                }
            )));
        }
        let claimed = sqlx::query(
            "UPDATE pipeline_runs SET status = 'running', error = NULL, ended_at_ms = NULL, \
             heartbeat_at_ms = $2, resumed = resumed + 1 \
             WHERE id = $1 AND status = $3 AND heartbeat_at_ms = $4",
        )
        .bind(run.id.clone())
        .bind(now)
        .bind(run.status.as_str().to_string())
        .bind(run.heartbeat_at_ms)
        .execute(database.pool())
        .await?
        .rows_affected();
        if claimed != 1 {
            return Err(PipelineError::Invalid(format!(
                "pipeline run {} was picked up by another process meanwhile",
                run.id
            )));
        }
        let run = get_pipeline_run(database, &run.id).await?;
        tracing::info!(run = %run.id, pipeline = %run.pipeline, resumed = run.resumed, "pipeline run resumed");
        Ok(Self {
            database: database.clone(),
            run,
            retry,
            next_position: 0,
        })
    }

    pub fn run(&self) -> &PipelineRun {
        &self.run
    }

    pub fn id(&self) -> &str {
        &self.run.id
    }

    pub fn parameters(&self) -> &serde_json::Value {
        &self.run.parameters
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Records the registry run (kind pipeline) of this attempt.
    pub async fn set_registry_run(&mut self, registry_run: &str) -> Result<(), PipelineError> {
        sqlx::query("UPDATE pipeline_runs SET registry_run = $2 WHERE id = $1")
            .bind(self.run.id.clone())
            .bind(registry_run.to_string())
            .execute(self.database.pool())
            .await?;
        self.run.registry_run = Some(registry_run.to_string());
        Ok(())
    }

    async fn heartbeat(&self) {
        let result = sqlx::query("UPDATE pipeline_runs SET heartbeat_at_ms = $2 WHERE id = $1")
            .bind(self.run.id.clone())
            .bind(now_ms())
            .execute(self.database.pool())
            .await;
        if let Err(error) = result {
            tracing::warn!(run = %self.run.id, %error, "pipeline heartbeat failed");
        }
    }

    async fn completed_output(&self, name: &str) -> Result<Option<String>, PipelineError> {
        let row = sqlx::query(
            "SELECT status, output FROM pipeline_steps WHERE run_id = $1 AND name = $2",
        )
        .bind(self.run.id.clone())
        .bind(name.to_string())
        .fetch_optional(self.database.pool())
        .await?;
        match row {
            Some(row) => {
                let status: String = row.try_get("status")?;
                let output: Option<String> = row.try_get("output")?;
                Ok((status == RunStatus::Succeeded.as_str())
                    .then(|| output.unwrap_or_else(|| "null".to_string())))
            }
            None => Ok(None),
        }
    }

    async fn record_attempt(&self, name: &str, position: i64) -> Result<i64, PipelineError> {
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE pipeline_steps SET status = 'running', attempts = attempts + 1, \
             started_at_ms = $3, ended_at_ms = NULL, error = NULL WHERE run_id = $1 AND name = $2",
        )
        .bind(self.run.id.clone())
        .bind(name.to_string())
        .bind(now)
        .execute(self.database.pool())
        .await?
        .rows_affected();
        if updated == 0 {
            sqlx::query(
                "INSERT INTO pipeline_steps (run_id, name, position, status, attempts, started_at_ms) \
                 VALUES ($1, $2, $3, 'running', 1, $4)",
            )
            .bind(self.run.id.clone())
            .bind(name.to_string())
            .bind(position)
            .bind(now)
            .execute(self.database.pool())
            .await?;
        }
        let attempts: i64 = sqlx::query_scalar(
            "SELECT attempts FROM pipeline_steps WHERE run_id = $1 AND name = $2",
        )
        .bind(self.run.id.clone())
        .bind(name.to_string())
        .fetch_one(self.database.pool())
        .await?;
        Ok(attempts)
    }

    async fn record_end(
        &self,
        name: &str,
        status: RunStatus,
        output: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), PipelineError> {
        sqlx::query(
            "UPDATE pipeline_steps SET status = $3, ended_at_ms = $4, output = $5, error = $6 \
             WHERE run_id = $1 AND name = $2",
        )
        .bind(self.run.id.clone())
        .bind(name.to_string())
        .bind(status.as_str().to_string())
        .bind(now_ms())
        .bind(output.map(str::to_string))
        .bind(error.map(str::to_string))
        .execute(self.database.pool())
        .await?;
        Ok(())
    }

    /// Runs step `name` with the run's retry policy, or returns its recorded output when it
    /// completed in an earlier attempt of this run. `action` receives the attempt number
    /// (1-based, counted over every resume of the run).
    pub async fn step<T, F, Fut>(&mut self, name: &str, action: F) -> Result<T, PipelineError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, PipelineError>>,
    {
        let retry = self.retry;
        self.step_with(name, retry, action).await
    }

    /// [`Self::step`] with a retry policy of its own.
    pub async fn step_with<T, F, Fut>(
        &mut self,
        name: &str,
        retry: RetryPolicy,
        mut action: F,
    ) -> Result<T, PipelineError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, PipelineError>>,
    {
        let position = self.next_position;
        self.next_position += 1;
        if let Some(output) = self.completed_output(name).await? {
            tracing::info!(run = %self.run.id, step = name, "step already completed; reusing its output");
            return serde_json::from_str(&output).map_err(|error| {
                PipelineError::Invalid(format!(
                    "the recorded output of step {name} of run {} can not be read: {error}",
                    self.run.id
                ))
            });
        }
        let max_attempts = retry.max_attempts.max(1);
        let mut attempts_here = 0u32;
        loop {
            attempts_here += 1;
            let attempt = self.record_attempt(name, position).await?;
            self.heartbeat().await;
            tracing::info!(run = %self.run.id, step = name, attempt, "step started");
            let result = {
                let work = action(u32::try_from(attempt).unwrap_or(u32::MAX));
                tokio::pin!(work);
                let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
                ticker.tick().await;
                loop {
                    tokio::select! {
                        result = &mut work => break result,
                        _ = ticker.tick() => self.heartbeat().await,
                    }
                }
            };
            match result {
                Ok(value) => {
                    let output = serde_json::to_string(&value)?;
                    self.record_end(name, RunStatus::Succeeded, Some(&output), None)
                        .await?;
                    tracing::info!(run = %self.run.id, step = name, attempt, "step succeeded");
                    return Ok(value);
                }
                Err(error) => {
                    let message = error.to_string();
                    self.record_end(name, RunStatus::Failed, None, Some(&message))
                        .await?;
                    let retry_now = attempts_here < max_attempts && error.is_transient();
                    tracing::warn!(run = %self.run.id, step = name, attempt, error = %message, retry = retry_now, "step failed");
                    if !retry_now {
                        return Err(PipelineError::StepFailed {
                            step: name.to_string(),
                            attempts: attempt as u32,
                            message,
                        });
                    }
                    tokio::time::sleep(retry.backoff(attempts_here)).await;
                }
            }
        }
    }

    /// Closes the run as succeeded with its output.
    pub async fn succeed(
        mut self,
        output: serde_json::Value,
    ) -> Result<PipelineRun, PipelineError> {
        let now = now_ms();
        sqlx::query(
            "UPDATE pipeline_runs SET status = 'succeeded', ended_at_ms = $2, heartbeat_at_ms = $2, \
             output = $3, error = NULL WHERE id = $1",
        )
        .bind(self.run.id.clone())
        .bind(now)
        .bind(output.to_string())
        .execute(self.database.pool())
        .await?;
        self.run.status = RunStatus::Succeeded;
        self.run.ended_at_ms = Some(now);
        self.run.output = Some(output);
        tracing::info!(run = %self.run.id, pipeline = %self.run.pipeline, "pipeline run succeeded");
        Ok(self.run)
    }

    /// Closes the run as failed with the error.
    pub async fn fail(mut self, error: &str) -> Result<PipelineRun, PipelineError> {
        let now = now_ms();
        sqlx::query(
            "UPDATE pipeline_runs SET status = 'failed', ended_at_ms = $2, heartbeat_at_ms = $2, \
             error = $3 WHERE id = $1",
        )
        .bind(self.run.id.clone())
        .bind(now)
        .bind(error.to_string())
        .execute(self.database.pool())
        .await?;
        self.run.status = RunStatus::Failed;
        self.run.ended_at_ms = Some(now);
        self.run.error = Some(error.to_string());
        tracing::warn!(run = %self.run.id, pipeline = %self.run.pipeline, error, "pipeline run failed");
        Ok(self.run)
    }
}

/// When the latest run of each pipeline that ended with each final status ended: `(pipeline,
/// status, ended_at_ms)`, for the `prodcat_pipeline_last_run_timestamp_seconds` gauge.
pub async fn last_run_ends(
    database: &Database,
) -> Result<Vec<(String, String, i64)>, PipelineError> {
    let rows = sqlx::query(
        "SELECT pipeline, status, MAX(ended_at_ms) AS ended FROM pipeline_runs \
         WHERE ended_at_ms IS NOT NULL AND status IN ('succeeded', 'failed') \
         GROUP BY pipeline, status",
    )
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect()
}
