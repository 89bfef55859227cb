//! The scheduler: pipelines fired by cron expressions from the configuration
//! (`[schedules] weekly-check = "0 3 * * 1"`, minute granularity, UTC, seconds optional), run by
//! `prodcat worker`.
//!
//! Any number of workers may run a scheduler; one leader at a time holds a lease in SQL (renewed
//! well before it expires, taken over by another worker when its holder stops renewing), and each
//! due time is claimed by compare-and-set on the schedule's state row, so a due time fires once
//! even if two schedulers believed they were leader. A due time missed while no scheduler ran is
//! fired once when one comes back (only the latest one); a new schedule starts counting from the
//! moment it is first seen.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use prodcat_storage::Database;
use serde::Serialize;
use sqlx::Row;

use crate::pipelines::{run_pipeline, PipelineName, PipelineRequest, StartMode};
use crate::PipelineError;
use prodcat_platform::Platform;

/// The lease row all schedulers compete for.
pub const LEASE_NAME: &str = "scheduler";

/// A pipeline and when it runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The schedule's name: the pipeline it runs (`weekly-check`, `retrain`).
    pub name: String,
    pub pipeline: PipelineName,
    /// The cron expression as written.
    pub expression: String,
    cron: Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.expression == other.expression
    }
}

impl Schedule {
    /// A schedule of the pipeline `name` at the cron `expression` (5 fields, or 6 with seconds).
    pub fn parse(name: &str, expression: &str) -> Result<Self, PipelineError> {
        let pipeline = PipelineName::from_str(name.trim())?;
        let invalid = |reason: String| PipelineError::Schedule {
            name: name.to_string(),
            reason,
        };
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) && !expression.trim().starts_with('@') {
            return Err(invalid(format!(
                "{expression:?} has {fields} fields; expected 5 (minute hour day-of-month month day-of-week) or 6 with seconds first"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression.trim())
            .map_err(|error| invalid(format!("{expression:?}: {error}")))?;
        Ok(Self {
            name: name.trim().to_string(),
            pipeline,
            expression: expression.trim().to_string(),
            cron,
        })
    }

    /// The first due time strictly after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let start = Utc.timestamp_millis_opt(after_ms).single()?;
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The latest due time in `(after_ms, now_ms]`, if any.
    pub fn latest_due(&self, after_ms: i64, now_ms: i64) -> Option<i64> {
        let now = Utc.timestamp_millis_opt(now_ms).single()?;
        let due = self
            .cron
            .find_previous_occurrence(&now, true)
            .ok()?
            .timestamp_millis();
        (due > after_ms).then_some(due)
    }

    /// The expression in words ("At 03:00 on Monday").
    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

/// Parses `(name, cron expression)` pairs from the configuration.
pub fn parse_schedules<'a, I>(entries: I) -> Result<Vec<Schedule>, PipelineError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    entries
        .into_iter()
        .map(|(name, expression)| Schedule::parse(name, expression))
        .collect()
}

/// Timing of a scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Who this scheduler is (host, process and a random part by default).
    pub holder: String,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How often the scheduler wakes up to renew the lease and look for due times.
    pub tick: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        let host = prodcat_platform::host_name();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Self {
            holder: format!("{host}-{}-{nanos:08x}", std::process::id()),
            lease_ttl: Duration::from_secs(30),
            tick: Duration::from_secs(5),
        }
    }
}

/// Starts the pipeline of a schedule for a due time; returns the pipeline run id.
pub type Launcher = Arc<
    dyn Fn(Schedule, i64) -> Pin<Box<dyn Future<Output = Result<String, PipelineError>> + Send>>
        + Send
        + Sync,
>;

/// A clock in Unix milliseconds (tests move it by hand).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What one pass of the scheduler did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TickOutcome {
    pub leader: bool,
    /// (schedule, due time) fired by this pass.
    pub fired: Vec<(String, i64)>,
}

/// Takes or renews the lease; returns whether `holder` is the leader now.
pub async fn acquire_lease(
    database: &Database,
    holder: &str,
    now_ms: i64,
    ttl: Duration,
) -> Result<bool, PipelineError> {
    let expires = now_ms + ttl.as_millis() as i64;
    sqlx::query(
        "INSERT INTO scheduler_lease (name, holder, acquired_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET \
           acquired_at_ms = CASE WHEN scheduler_lease.holder = excluded.holder \
             THEN scheduler_lease.acquired_at_ms ELSE excluded.acquired_at_ms END, \
           holder = excluded.holder, expires_at_ms = excluded.expires_at_ms \
         WHERE scheduler_lease.holder = excluded.holder OR scheduler_lease.expires_at_ms <= $3",
    )
    .bind(LEASE_NAME.to_string())
    .bind(holder.to_string())
    .bind(now_ms)
    .bind(expires)
    .execute(database.pool())
    .await?;
    let current: Option<String> =
        sqlx::query_scalar("SELECT holder FROM scheduler_lease WHERE name = $1")
            .bind(LEASE_NAME.to_string())
            .fetch_optional(database.pool())
            .await?;
    Ok(current.as_deref() == Some(holder))
}

/// Gives the lease up (on shutdown), so another scheduler takes over at once.
pub async fn release_lease(database: &Database, holder: &str) -> Result<(), PipelineError> {
    sqlx::query("DELETE FROM scheduler_lease WHERE name = $1 AND holder = $2")
        .bind(LEASE_NAME.to_string())
        .bind(holder.to_string())
        .execute(database.pool())
        .await?;
    Ok(())
}

/// The current leader and when its lease ends, if any.
pub async fn lease_holder(database: &Database) -> Result<Option<(String, i64)>, PipelineError> {
    let row = sqlx::query("SELECT holder, expires_at_ms FROM scheduler_lease WHERE name = $1")
        .bind(LEASE_NAME.to_string())
        .fetch_optional(database.pool())
        .await?;
    match row {
        Some(row) => Ok(Some((
            row.try_get("holder")?,
            row.try_get("expires_at_ms")?,
        ))),
        None => Ok(None),
    }
}

/// The recorded state of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleState {
    pub schedule: String,
    pub cron: String,
    pub last_due_ms: i64,
    pub last_fired_at_ms: Option<i64>,
    pub last_run_id: Option<String>,
    pub last_holder: Option<String>,
}

/// Every schedule's recorded state.
pub async fn schedule_states(database: &Database) -> Result<Vec<ScheduleState>, PipelineError> {
    let rows = sqlx::query(
        "SELECT schedule, cron, last_due_ms, last_fired_at_ms, last_run_id, last_holder \
         FROM schedule_state ORDER BY schedule",
    )
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ScheduleState {
                schedule: row.try_get("schedule")?,
                cron: row.try_get("cron")?,
                last_due_ms: row.try_get("last_due_ms")?,
                last_fired_at_ms: row.try_get("last_fired_at_ms")?,
                last_run_id: row.try_get("last_run_id")?,
                last_holder: row.try_get("last_holder")?,
            })
        })
        .collect()
}

/// Claims the latest due time of `schedule` up to `now_ms`; returns it when this caller won it.
async fn claim_due(
    database: &Database,
    schedule: &Schedule,
    holder: &str,
    now_ms: i64,
) -> Result<Option<i64>, PipelineError> {
    let row = sqlx::query("SELECT cron, last_due_ms FROM schedule_state WHERE schedule = $1")
        .bind(schedule.name.clone())
        .fetch_optional(database.pool())
        .await?;
    let Some(row) = row else {
        // First sight of this schedule: it counts from now.
        sqlx::query(
            "INSERT INTO schedule_state (schedule, cron, last_due_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (schedule) DO NOTHING",
        )
        .bind(schedule.name.clone())
        .bind(schedule.expression.clone())
        .bind(now_ms)
        .execute(database.pool())
        .await?;
        return Ok(None);
    };
    let cron: String = row.try_get("cron")?;
    let last_due: i64 = row.try_get("last_due_ms")?;
    if cron != schedule.expression {
        // The expression changed: the new one counts from now.
        sqlx::query(
            "UPDATE schedule_state SET cron = $2, last_due_ms = $3, updated_at_ms = $3 \
             WHERE schedule = $1 AND cron = $4",
        )
        .bind(schedule.name.clone())
        .bind(schedule.expression.clone())
        .bind(now_ms)
        .bind(cron)
        .execute(database.pool())
        .await?;
        return Ok(None);
    }
    let Some(due) = schedule.latest_due(last_due, now_ms) else {
        return Ok(None);
    };
    let claimed = sqlx::query(
        "UPDATE schedule_state SET last_due_ms = $2, last_fired_at_ms = $3, last_holder = $4, \
         updated_at_ms = $3 WHERE schedule = $1 AND last_due_ms = $5",
    )
    .bind(schedule.name.clone())
    .bind(due)
    .bind(now_ms)
    .bind(holder.to_string())
    .bind(last_due)
    .execute(database.pool())
    .await?
    .rows_affected();
    Ok((claimed == 1).then_some(due))
}

async fn record_run_id(
    database: &Database,
    schedule: &str,
    due: i64,
    run_id: &str,
) -> Result<(), PipelineError> {
    sqlx::query(
        "UPDATE schedule_state SET last_run_id = $3 WHERE schedule = $1 AND last_due_ms = $2",
    )
    .bind(schedule.to_string())
    .bind(due)
    .bind(run_id.to_string())
    .execute(database.pool())
    .await?;
    Ok(())
}

/// One pass: renew or take the lease, and when leader claim each schedule's due time. Returns
/// the due times won; the caller launches them.
pub async fn scheduler_pass(
    database: &Database,
    schedules: &[Schedule],
    options: &SchedulerOptions,
    now_ms: i64,
) -> Result<TickOutcome, PipelineError> {
    let leader = acquire_lease(database, &options.holder, now_ms, options.lease_ttl).await?;
    let mut outcome = TickOutcome {
        leader,
        fired: Vec::new(),
    };
    if !leader {
        return Ok(outcome);
    }
    for schedule in schedules {
        if let Some(due) = claim_due(database, schedule, &options.holder, now_ms).await? {
            outcome.fired.push((schedule.name.clone(), due));
        }
    }
    Ok(outcome)
}

/// Runs the scheduler until `shutdown` completes, launching due pipelines with `launch`.
/// Errors (a database that does not answer) are logged and retried on the next tick; the lease
/// is released on shutdown. A schedule whose previous launch is still running skips a due time.
pub async fn run_scheduler_with(
    database: Database,
    schedules: Vec<Schedule>,
    options: SchedulerOptions,
    clock: Clock,
    launch: Launcher,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut was_leader = false;
    tracing::info!(holder = %options.holder, schedules = schedules.len(), "scheduler started");
    metrics::gauge!("prodcat_scheduler_schedules").set(schedules.len() as f64);
    loop {
        running.retain(|_, handle| !handle.is_finished());
        let pass = scheduler_pass(&database, &schedules, &options, clock()).await;
        metrics::gauge!("prodcat_scheduler_last_tick_timestamp_seconds")
            .set(prodcat_storage::now_ms() as f64 / 1000.0);
        match pass {
            Ok(outcome) => {
                metrics::gauge!("prodcat_scheduler_leader")
                    .set(f64::from(u8::from(outcome.leader)));
                if outcome.leader != was_leader {
                    tracing::info!(holder = %options.holder, leader = outcome.leader, "scheduler leadership changed");
                    was_leader = outcome.leader;
                }
                for (name, due) in outcome.fired {
                    let Some(schedule) = schedules.iter().find(|s| s.name == name).cloned() else {
                        continue;
                    };
                    if running.contains_key(&name) {
                        tracing::warn!(schedule = %name, due, "previous run still going; this due time is skipped");
                        continue;
                    }
                    tracing::info!(schedule = %name, due, "schedule fired");
                    let database = database.clone();
                    let launch = launch.clone();
                    running.insert(
                        name.clone(),
                        tokio::spawn(async move {
                            match launch(schedule, due).await {
                                Ok(run_id) => {
                                    if let Err(error) =
                                        record_run_id(&database, &name, due, &run_id).await
                                    {
                                        tracing::warn!(schedule = %name, %error, "could not record the run id");
                                    }
                                }
                                Err(error) => {
                                    tracing::error!(schedule = %name, %error, "scheduled pipeline did not start");
                                }
                            }
                        }),
                    );
                }
            }
            Err(error) => {
                metrics::gauge!("prodcat_scheduler_leader").set(0.0);
                tracing::warn!(%error, "scheduler pass failed; retrying");
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(options.tick) => {}
        }
    }
    for (name, handle) in running {
        if !handle.is_finished() {
            tracing::warn!(schedule = %name, "stopping with a pipeline still running; it can be resumed (prodcat pipeline run)");
            handle.abort();
        }
    }
    if let Err(error) = release_lease(&database, &options.holder).await {
        tracing::warn!(%error, "could not release the scheduler lease");
    }
    metrics::gauge!("prodcat_scheduler_leader").set(0.0);
    tracing::info!(holder = %options.holder, "scheduler stopped");
}

/// Runs the scheduler for the worker: due pipelines run on `platform` with their default
/// parameters (`triggered_by` = `schedule:<name>`), until `shutdown` completes.
pub async fn run_scheduler(
    platform: Platform,
    schedules: Vec<Schedule>,
    shutdown: impl Future<Output = ()>,
) {
    let database = platform.database.clone();
    let launch: Launcher = Arc::new(move |schedule: Schedule, _due: i64| {
        let platform = platform.clone();
        Box::pin(async move {
            let request = PipelineRequest::new(
                schedule.pipeline,
                &format!("schedule:{}", schedule.name),
                StartMode::Fresh,
            );
            let run = run_pipeline(&platform, &request).await?;
            Ok(run.id)
        })
    });
    run_scheduler_with(
        database,
        schedules,
        SchedulerOptions::default(),
        Arc::new(prodcat_storage::now_ms),
        launch,
        shutdown,
    )
    .await;
}
