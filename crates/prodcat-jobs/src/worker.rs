//! The worker: lease a batch of items, classify it through the [`Predictor`] (whose model
//! service follows the champion, so a newly promoted version is picked up at the next batch),
//! renew the leases while it works, complete the batch in one guarded transaction, and stop
//! between batches when the shutdown token is cancelled.
//!
//! A worker without a model in service does not lease anything (items are not charged an
//! attempt for a worker's own trouble); it waits and tries again. Whether a failed item is
//! retried is decided by the error's kind, the same kind the HTTP service turns into a status.

use std::time::{Duration, Instant};

use prodcat_catalogue::PredictionSource;
use prodcat_platform::{
    LogMode, PredictError, Predictor, ProductToClassify, RefreshOutcome, Requester,
};
use prodcat_storage::{image_key, Database, ObjectStorage};
use tokio_util::sync::CancellationToken;

use crate::queue::{
    complete_items, lease_items, reclaim_expired, renew_leases, ItemOutcome, ItemResult,
    LeasedItem, RetryPolicy,
};
use crate::JobError;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Names this worker in leases (each concurrent loop adds `/<n>`).
    pub owner: String,
    /// Items leased at once.
    pub batch_size: usize,
    /// Batches in work at the same time in this process.
    pub concurrency: usize,
    /// How long a lease lasts without renewal; leases are renewed every third of it.
    pub lease_duration: Duration,
    pub retry: RetryPolicy,
    /// Wait when there is nothing to do (or no model yet).
    pub idle_wait: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            owner: default_owner(),
            batch_size: 256,
            concurrency: 1,
            lease_duration: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            idle_wait: Duration::from_millis(500),
        }
    }
}

/// `worker-<host>-<pid>`.
pub fn default_owner() -> String {
    format!(
        "worker-{}-{}",
        prodcat_platform::host_name(),
        std::process::id()
    )
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub batches: u64,
    pub done: u64,
    pub failed: u64,
    pub retried: u64,
    /// Completions refused because the lease was lost meanwhile.
    pub refused: u64,
}

impl WorkerStats {
    fn add(&mut self, other: &WorkerStats) {
        self.batches += other.batches;
        self.done += other.done;
        self.failed += other.failed;
        self.retried += other.retried;
        self.refused += other.refused;
    }
}

fn check(options: &WorkerOptions) -> Result<(), JobError> {
    if options.batch_size == 0 {
        return Err(JobError::InvalidOption {
            name: "batch size",
            reason: "must be at least 1".to_string(),
        });
    }
    if options.concurrency == 0 {
        return Err(JobError::InvalidOption {
            name: "concurrency",
            reason: "must be at least 1".to_string(),
        });
    }
    if options.lease_duration < Duration::from_millis(100) {
        return Err(JobError::InvalidOption {
            name: "lease duration",
            reason: "must be at least 100 ms".to_string(),
        });
    }
    if options.retry.max_attempts < 1 {
        return Err(JobError::InvalidOption {
            name: "max attempts",
            reason: "must be at least 1".to_string(),
        });
    }
    Ok(())
}

/// Runs `options.concurrency` worker loops until `shutdown` is cancelled; each loop finishes
/// the batch it holds before it stops. The predictor's model service is refreshed between
/// batches, so promotions reach the worker.
pub async fn run_worker(
    predictor: &Predictor,
    options: &WorkerOptions,
    shutdown: CancellationToken,
) -> Result<WorkerStats, JobError> {
    check(options)?;
    let mut loops = tokio::task::JoinSet::new();
    for index in 0..options.concurrency {
        let predictor = predictor.clone();
        let mut options = options.clone();
        if options.concurrency > 1 {
            options.owner = format!("{}/{index}", options.owner);
        }
        let shutdown = shutdown.clone();
        loops.spawn(async move { worker_loop(predictor, options, shutdown).await });
    }
    let mut total = WorkerStats::default();
    while let Some(joined) = loops.join_next().await {
        match joined {
            Ok(stats) => total.add(&stats),
            Err(error) => tracing::error!(%error, "a worker loop ended abnormally"),
        }
    }
    Ok(total)
}

async fn wait_or_stop(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

async fn worker_loop(
    predictor: Predictor,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut last_model_warning: Option<Instant> = None;
    let mut last_cleanup: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        if last_cleanup.is_none_or(|at| at.elapsed() > Duration::from_secs(600)) {
            last_cleanup = Some(Instant::now());
            // Uploads whose process died half-way: their items would never complete a job.
            match crate::queue::remove_stale_uploads(
                &predictor.models().platform().database,
                3_600_000,
            )
            .await
            {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "unfinished job uploads removed"),
                Err(error) => tracing::warn!(%error, "removing unfinished job uploads failed"),
            }
        }
        let refreshed = predictor.models().refresh().await;
        if predictor.models().current().is_none() {
            if last_model_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                match &refreshed {
                    Ok(RefreshOutcome::Failed(failure)) => tracing::warn!(
                        version = %failure.version,
                        error = %failure.error,
                        "the model to classify with failed to load; waiting"
                    ),
                    Err(error) => tracing::warn!(%error, "no model to classify with yet; waiting"),
                    Ok(_) => tracing::warn!(
                        model = %predictor.models().reference(),
                        "no model to classify with yet; waiting"
                    ),
                }
                last_model_warning = Some(Instant::now());
            }
            wait_or_stop(&shutdown, options.idle_wait.max(Duration::from_secs(1))).await;
            continue;
        }
        match process_one_batch(&predictor, &options).await {
            Ok(Some(batch)) => stats.add(&batch),
            Ok(None) => wait_or_stop(&shutdown, options.idle_wait).await,
            Err(error) => {
                tracing::warn!(%error, owner = %options.owner, "job batch failed; leases will expire and be retried");
                wait_or_stop(&shutdown, options.idle_wait.max(Duration::from_secs(1))).await;
            }
        }
    }
    tracing::info!(owner = %options.owner, ?stats, "worker loop stopped");
    stats
}

/// Leases, classifies and completes one batch; `None` when there was nothing to do.
async fn process_one_batch(
    predictor: &Predictor,
    options: &WorkerOptions,
) -> Result<Option<WorkerStats>, JobError> {
    let database = &predictor.models().platform().database;
    reclaim_expired(database, &options.retry).await?;
    let items = lease_items(
        database,
        &options.owner,
        options.batch_size,
        options.lease_duration,
    )
    .await?;
    if items.is_empty() {
        return Ok(None);
    }
    let started = Instant::now();
    let heartbeat = spawn_heartbeat(database, &items, options.lease_duration);
    let outcomes = classify_items(predictor, &items).await;
    drop(heartbeat);
    // The heartbeat may have renewed leases: completions are guarded by owner and attempt, and
    // by an expiry that renewals only extend, so the leased items are still the right tokens.
    let report = complete_items(database, &outcomes, &options.retry).await?;
    metrics::counter!("prodcat_job_items_total", "outcome" => "done").increment(report.done as u64);
    metrics::counter!("prodcat_job_items_total", "outcome" => "failed")
        .increment(report.failed as u64);
    metrics::counter!("prodcat_job_items_total", "outcome" => "retried")
        .increment(report.retried as u64);
    metrics::counter!("prodcat_job_items_total", "outcome" => "refused")
        .increment(report.refused as u64);
    tracing::debug!(
        owner = %options.owner,
        items = items.len(),
        done = report.done,
        failed = report.failed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "job batch completed"
    );
    Ok(Some(WorkerStats {
        batches: 1,
        done: report.done as u64,
        failed: report.failed as u64,
        retried: report.retried as u64,
        refused: report.refused as u64,
    }))
}

/// Stops the heartbeat when dropped, so a worker that is stopped (or whose task is aborted)
/// stops renewing its leases and they expire.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn spawn_heartbeat(
    database: &Database,
    items: &[LeasedItem],
    lease_duration: Duration,
) -> Heartbeat {
    let database = database.clone();
    let mut held: Vec<LeasedItem> = items.to_vec();
    Heartbeat(tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease_duration / 3).await;
            match renew_leases(&database, &mut held, lease_duration).await {
                Ok(renewed) if renewed < held.len() => {
                    tracing::warn!(
                        renewed,
                        held = held.len(),
                        "some job item leases were lost before renewal"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "renewing job item leases failed"),
            }
        }
    }))
}

/// Reads an item's image from the object store.
async fn item_image(
    objects: &ObjectStorage,
    item: &LeasedItem,
) -> Result<Option<bytes::Bytes>, String> {
    let Some(hash) = &item.input.image_hash else {
        return Ok(None);
    };
    let hash = prodcat_domain::ContentHash::parse(hash)
        .map_err(|error| format!("the item's image hash is invalid: {error}"))?;
    objects
        .get(&image_key(&hash))
        .await
        .map(Some)
        .map_err(|error| format!("the item's image could not be read: {error}"))
}

/// The outcome of an item whose prediction failed: retried when the error's kind says trying
/// again may help.
fn failed(error: &PredictError) -> ItemOutcome {
    ItemOutcome::Failed {
        retryable: error.kind().is_transient(),
        error: error.to_string(),
    }
}

/// Classifies leased items: images are read from the object store, the predictor runs the
/// model within the CPU budget and gives each prediction its log row.
async fn classify_items(
    predictor: &Predictor,
    items: &[LeasedItem],
) -> Vec<(LeasedItem, ItemOutcome)> {
    let objects = &predictor.models().platform().objects;
    let mut outcomes: Vec<Option<ItemOutcome>> = Vec::with_capacity(items.len());
    let mut products = Vec::new();
    let mut requesters = Vec::new();
    let mut positions = Vec::new();
    for (position, item) in items.iter().enumerate() {
        match item_image(objects, item).await {
            Ok(image) => {
                outcomes.push(None);
                positions.push(position);
                requesters.push(Requester::new(PredictionSource::Job));
                products.push(ProductToClassify {
                    designation: item.input.designation.clone(),
                    description: item.input.description.clone(),
                    image,
                    explain: false,
                });
            }
            Err(error) => outcomes.push(Some(ItemOutcome::Failed {
                error,
                retryable: true,
            })),
        }
    }
    let predictions = match predictor
        .predict_batch(products, &requesters, LogMode::Caller)
        .await
    {
        Ok(predictions) => predictions,
        Err(error) => positions
            .iter()
            .map(|_| Err(PredictError::Task(error.to_string())))
            .collect(),
    };
    for (position, prediction) in positions.into_iter().zip(predictions) {
        outcomes[position] = Some(match prediction {
            Ok(predicted) => ItemOutcome::Done {
                result: ItemResult::from_prediction(&predicted.prediction),
                log: Some(Box::new(predicted.log)),
            },
            Err(error) => failed(&error),
        });
    }
    items
        .iter()
        .zip(outcomes)
        .map(|(item, outcome)| {
            (
                item.clone(),
                outcome.unwrap_or(ItemOutcome::Failed {
                    error: "the item was not classified".to_string(),
                    retryable: true,
                }),
            )
        })
        .collect()
}
