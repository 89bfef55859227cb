//! The worker: lease a batch of items, classify it with the model in service (through the
//! platform, so a newly promoted champion is picked up at the next batch), renew the leases while
//! it works, complete the batch in one guarded transaction, and stop between batches when the
//! shutdown token is cancelled.
//!
//! A worker that can not load the model does not lease anything (items are not charged an
//! attempt for a worker's own trouble); it waits and tries again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prodcat_model::{ModelError, ProductClassifier, ProductInput};
use prodcat_pipelines::Platform;
use prodcat_storage::image_key;
use tokio_util::sync::CancellationToken;

use crate::prediction_log::{PredictionLogRow, PredictionSource};
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
    /// The model to classify with (an alias such as `champion`, or a version reference).
    pub model_reference: String,
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
            model_reference: prodcat_registry::CHAMPION.to_string(),
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
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "local".to_string());
    format!("worker-{host}-{}", std::process::id())
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
/// the batch it holds before it stops.
pub async fn run_worker(
    platform: &Platform,
    options: &WorkerOptions,
    shutdown: CancellationToken,
) -> Result<WorkerStats, JobError> {
    check(options)?;
    let mut loops = tokio::task::JoinSet::new();
    for index in 0..options.concurrency {
        let platform = platform.clone();
        let mut options = options.clone();
        if options.concurrency > 1 {
            options.owner = format!("{}/{index}", options.owner);
        }
        let shutdown = shutdown.clone();
        loops.spawn(async move { worker_loop(platform, options, shutdown).await });
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
    platform: Platform,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut last_model_warning: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        let classifier = match platform.classifier(&options.model_reference).await {
            Ok(classifier) => classifier,
            Err(error) => {
                if last_model_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(
                        %error,
                        model = %options.model_reference,
                        "no model to classify with yet; waiting"
                    );
                    last_model_warning = Some(Instant::now());
                }
                wait_or_stop(&shutdown, options.idle_wait.max(Duration::from_secs(1))).await;
                continue;
            }
        };
        match process_one_batch(&platform, &classifier, &options).await {
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
    platform: &Platform,
    classifier: &ProductClassifier,
    options: &WorkerOptions,
) -> Result<Option<WorkerStats>, JobError> {
    reclaim_expired(&platform.database, &options.retry).await?;
    let items = lease_items(
        &platform.database,
        &options.owner,
        options.batch_size,
        options.lease_duration,
    )
    .await?;
    if items.is_empty() {
        return Ok(None);
    }
    let started = Instant::now();
    let heartbeat = spawn_heartbeat(platform, &items, options.lease_duration);
    let outcomes = classify_items(platform, classifier, &items).await;
    drop(heartbeat);
    // The heartbeat may have renewed leases: completions are guarded by owner and attempt, and
    // by an expiry that renewals only extend, so the leased items are still the right tokens.
    let report = complete_items(&platform.database, &outcomes, &options.retry).await?;
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
    platform: &Platform,
    items: &[LeasedItem],
    lease_duration: Duration,
) -> Heartbeat {
    let database = platform.database.clone();
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

/// Whether trying again later could help.
fn retryable(error: &ModelError) -> bool {
    !error.concerns_the_input()
}

/// Classifies leased items: images are read from the object store, the model runs on the
/// blocking pool.
async fn classify_items(
    platform: &Platform,
    classifier: &ProductClassifier,
    items: &[LeasedItem],
) -> Vec<(LeasedItem, ItemOutcome)> {
    let mut images: Vec<Result<Option<bytes::Bytes>, String>> = Vec::with_capacity(items.len());
    for item in items {
        images.push(match &item.input.image_hash {
            None => Ok(None),
            Some(hash) => match prodcat_domain::ContentHash::parse(hash) {
                Ok(hash) => platform
                    .objects
                    .get(&image_key(&hash))
                    .await
                    .map(Some)
                    .map_err(|error| format!("the item's image could not be read: {error}")),
                Err(error) => Err(format!("the item's image hash is invalid: {error}")),
            },
        });
    }
    let shared_items: Arc<Vec<LeasedItem>> = Arc::new(items.to_vec());
    let shared_images = Arc::new(images);
    let classifier = classifier.clone();
    let work_items = shared_items.clone();
    let work_images = shared_images.clone();
    let predictions = tokio::task::spawn_blocking(move || {
        let inputs: Vec<ProductInput<'_>> = work_items
            .iter()
            .zip(work_images.iter())
            .map(|(item, image)| ProductInput {
                designation: &item.input.designation,
                description: &item.input.description,
                image: image.as_ref().ok().and_then(|b| b.as_deref()),
            })
            .collect();
        classifier.predict_batch(&inputs)
    })
    .await;
    let predictions = match predictions {
        Ok(predictions) => predictions,
        Err(error) => {
            tracing::error!(%error, "the classification task failed");
            return items
                .iter()
                .map(|item| {
                    (
                        item.clone(),
                        ItemOutcome::Failed {
                            error: "the classification task failed".to_string(),
                            retryable: true,
                        },
                    )
                })
                .collect();
        }
    };
    items
        .iter()
        .zip(shared_images.iter())
        .zip(predictions)
        .map(|((item, image), prediction)| {
            let outcome = match (image, prediction) {
                (Err(error), _) => ItemOutcome::Failed {
                    error: error.clone(),
                    retryable: true,
                },
                (Ok(_), Ok(prediction)) => {
                    metrics::counter!(
                        "prodcat_predictions_total",
                        "category" => prediction.category.value().to_string(),
                        "source" => "job"
                    )
                    .increment(1);
                    ItemOutcome::Done {
                        result: ItemResult::from_prediction(&prediction),
                        log: Some(Box::new(PredictionLogRow::from_prediction(
                            &prediction,
                            PredictionSource::Job,
                            item.input.product_id,
                            &item.input.description,
                        ))),
                    }
                }
                (Ok(_), Err(error)) => ItemOutcome::Failed {
                    retryable: retryable(&error),
                    error: error.to_string(),
                },
            };
            (item.clone(), outcome)
        })
        .collect()
}
