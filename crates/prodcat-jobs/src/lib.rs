//! The durable job queue of prodcat, in the same SQL store as everything else (SQLite or
//! PostgreSQL), and the worker that drains it.
//!
//! - **Jobs** ([`queue`]): a job is a batch of items accepted at once ([`create_job`]), optionally
//!   under an idempotency key (the same key returns the existing job). Each item is leased by one
//!   worker at a time with an expiry ([`lease_items`]); a worker that dies lets its leases expire
//!   and another worker takes the items ([`reclaim_expired`]). Completion ([`complete_items`])
//!   writes the result and the status in one transaction guarded by the lease, so a late worker
//!   whose lease expired can not overwrite anything: every item ends `done` or `failed` exactly
//!   once. Failures are retried with exponential backoff up to a maximum number of attempts, then
//!   recorded as the item's error.
//! - **Worker** ([`worker`]): lease a batch, classify it through the platform's
//!   [`prodcat_platform::Predictor`] (the model in service, followed by the same
//!   [`prodcat_platform::ModelService`] as the HTTP service), renew the leases while it works,
//!   complete the batch with its prediction-log rows in one transaction, and stop between
//!   batches when asked to.
//! - **Pending products** ([`pending`]): catalogue products stored before a model could
//!   classify them are classified later, each retried with backoff up to a cap, one at a time,
//!   so a product that keeps failing never holds back the others.
//!
//! Leasing uses one conditional `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`, which
//! both engines support; on PostgreSQL the inner select adds `FOR UPDATE SKIP LOCKED` so
//! concurrent workers take disjoint batches without waiting on each other.

pub mod pending;
pub mod queue;
pub mod worker;

pub use pending::{classify_pending, PendingPolicy, PendingReport};
pub use queue::{
    complete_items, create_job, get_job, item_status_counts, job_items, lease_items, queue_depth,
    reclaim_expired, remove_stale_uploads, renew_leases, CompletionReport, ItemInput, ItemOutcome,
    ItemResult, ItemStatus, Job, JobId, JobItem, JobKind, JobStatus, JobUpload, LeasedItem, NewJob,
    QueueDepth, RetryPolicy, ScoredCategory,
};
pub use worker::{run_worker, WorkerOptions, WorkerStats};

/// Errors of the job queue and the worker.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {0:?} does not exist")]
    UnknownJob(String),
    #[error("invalid job id {0:?}: expected \"job-\" followed by 16 lowercase hex digits")]
    InvalidJobId(String),
    #[error("a job has at least one item; this one has none")]
    EmptyJob,
    #[error("idempotency key {key:?} was already used for job {job} with different items")]
    IdempotencyConflict { key: String, job: String },
    #[error("invalid idempotency key {key:?}: {reason}")]
    InvalidIdempotencyKey { key: String, reason: &'static str },
    #[error("invalid worker option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
    #[error("stored data of {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error(transparent)]
    Catalogue(#[from] prodcat_catalogue::CatalogueError),
    #[error(transparent)]
    Storage(#[from] prodcat_storage::StorageError),
    #[error("serialisation: {0}")]
    Json(#[from] serde_json::Error),
}

impl JobError {
    /// Whose fault the error is.
    pub fn kind(&self) -> prodcat_domain::ErrorKind {
        use prodcat_domain::ErrorKind;
        match self {
            JobError::UnknownJob(_) => ErrorKind::NotFound,
            JobError::InvalidJobId(_)
            | JobError::EmptyJob
            | JobError::InvalidIdempotencyKey { .. } => ErrorKind::Input,
            JobError::IdempotencyConflict { .. } => ErrorKind::Conflict,
            JobError::InvalidOption { .. } | JobError::Corrupt { .. } | JobError::Json(_) => {
                ErrorKind::Internal
            }
            JobError::Catalogue(error) => error.kind(),
            JobError::Storage(error) => error.kind(),
        }
    }
}

impl From<sqlx::Error> for JobError {
    fn from(error: sqlx::Error) -> Self {
        JobError::Storage(prodcat_storage::StorageError::Sql(error))
    }
}
