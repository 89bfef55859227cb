//! Jobs and their items in the SQL store: creation under an idempotency key, leasing in batches,
//! lease renewal and reclaiming, and completion guarded by the lease (exactly once).
//!
//! An item's lease is identified by its owner and its attempt number: leasing increments
//! `attempts`, and a completion only applies to an item that is still `leased`, by the same owner,
//! at the same attempt, before its expiry. Anything else (the lease expired, another worker took
//! the item, the item was finished) leaves the row untouched and is reported as refused.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use prodcat_storage::{now_ms, Backend, Database, SqlPlaceholders};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use crate::JobError;
use prodcat_catalogue::prediction_log::insert_prediction_log;
use prodcat_catalogue::PredictionLogRow;

/// A job id: `job-` and 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    pub const PREFIX: &'static str = "job-";

    pub fn parse(text: &str) -> Result<Self, JobError> {
        let trimmed = text.trim();
        if prodcat_domain::is_prefixed_hex(trimmed, Self::PREFIX, 16) {
            Ok(Self(trimmed.to_string()))
        } else {
            Err(JobError::InvalidJobId(trimmed.to_string()))
        }
    }

    fn generate() -> Self {
        Self(format!(
            "{}{}",
            Self::PREFIX,
            prodcat_domain::unique_hex16("")
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a job does with its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Classify products with the model in service.
    Classify,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Classify => "classify",
        }
    }

    fn parse(text: &str) -> Result<Self, JobError> {
        match text {
            "classify" => Ok(JobKind::Classify),
            other => Err(JobError::Corrupt {
                what: "job kind".to_string(),
                reason: format!("unknown kind {other:?}"),
            }),
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Its upload is still being read (items already stored may be worked on).
    Receiving,
    /// Accepted; no item taken yet.
    Queued,
    /// Some items were taken by a worker.
    Running,
    /// Every item is done or failed.
    Completed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Receiving => "receiving",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
        }
    }

    fn parse(text: &str) -> Result<Self, JobError> {
        match text {
            "receiving" => Ok(JobStatus::Receiving),
            "queued" => Ok(JobStatus::Queued),
            "running" => Ok(JobStatus::Running),
            "completed" => Ok(JobStatus::Completed),
            other => Err(JobError::Corrupt {
                what: "job status".to_string(),
                reason: format!("unknown status {other:?}"),
            }),
        }
    }
}

/// Where an item is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ItemStatus {
    Pending,
    Leased,
    Done,
    Failed,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Leased => "leased",
            ItemStatus::Done => "done",
            ItemStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self, JobError> {
        match text {
            "pending" => Ok(ItemStatus::Pending),
            "leased" => Ok(ItemStatus::Leased),
            "done" => Ok(ItemStatus::Done),
            "failed" => Ok(ItemStatus::Failed),
            other => Err(JobError::Corrupt {
                what: "job item status".to_string(),
                reason: format!("unknown status {other:?}"),
            }),
        }
    }
}

/// One product to classify, as stored with the item (the image lives in the object store under
/// its content hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemInput {
    pub designation: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<i64>,
}

/// A category and its probability in a stored result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoredCategory {
    pub category: u16,
    pub probability: f32,
}

/// The stored result of a classified item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult {
    pub category: u16,
    pub confidence: f32,
    pub automatic: bool,
    pub top: Vec<ScoredCategory>,
    pub branches: Vec<String>,
    pub model_version: String,
}

impl ItemResult {
    pub fn from_prediction(prediction: &prodcat_model::ProductPrediction) -> Self {
        Self {
            category: prediction.category.value(),
            confidence: prediction.confidence,
            automatic: prediction.automatic,
            top: prediction
                .top
                .iter()
                .map(|scored| ScoredCategory {
                    category: scored.category.value(),
                    probability: scored.probability,
                })
                .collect(),
            branches: prediction
                .branches
                .iter()
                .map(|branch| branch.as_str().to_string())
                .collect(),
            model_version: prediction.model_version.to_string(),
        }
    }
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: JobKind,
    /// The same key returns the job created with it (when the items are the same).
    pub idempotency_key: Option<String>,
    pub created_by: String,
    pub items: Vec<ItemInput>,
}

/// A job with its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub idempotency_key: Option<String>,
    pub created_by: String,
    pub item_count: i64,
    pub done_count: i64,
    pub failed_count: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub error: Option<String>,
}

impl Job {
    /// Items not finished yet.
    pub fn remaining(&self) -> i64 {
        self.item_count - self.done_count - self.failed_count
    }
}

/// An item with its state.
#[derive(Debug, Clone, PartialEq)]
pub struct JobItem {
    pub position: i64,
    pub input: ItemInput,
    pub status: ItemStatus,
    pub attempts: i64,
    pub result: Option<ItemResult>,
    pub error: Option<String>,
    pub finished_at_ms: Option<i64>,
}

/// An item a worker holds.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedItem {
    pub id: i64,
    pub job_id: JobId,
    pub position: i64,
    pub input: ItemInput,
    /// The attempt this lease is (1 for the first).
    pub attempt: i64,
    pub owner: String,
    pub lease_expires_ms: i64,
}

/// What happened to a leased item.
#[derive(Debug, Clone)]
pub enum ItemOutcome {
    /// Classified; the prediction log row is written in the same transaction.
    Done {
        result: ItemResult,
        /// Boxed: a log row is several times larger than a failure.
        log: Option<Box<PredictionLogRow>>,
    },
    /// Not classified. A retryable failure is tried again later (until the policy's maximum of
    /// attempts); a permanent one (bad input) is recorded at once.
    Failed { error: String, retryable: bool },
}

/// Retries: how many attempts, and how long to wait between them.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: i64,
    /// Wait after the first failure; doubled after each further one.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before the attempt after `attempt` failed.
    pub fn backoff(&self, attempt: i64) -> Duration {
        let exponent = (attempt.max(1) - 1).min(30) as u32;
        self.backoff_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.backoff_max)
    }
}

/// What a completion call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompletionReport {
    pub done: usize,
    pub failed: usize,
    /// Put back for a later attempt.
    pub retried: usize,
    /// Not applied: the lease had expired or belonged to someone else.
    pub refused: usize,
}

/// Items waiting or in work, over every job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub pending: i64,
    pub leased: i64,
    pub failed: i64,
}

fn validate_key(key: &str) -> Result<(), JobError> {
    if key.is_empty() || key.len() > 200 {
        return Err(JobError::InvalidIdempotencyKey {
            key: key.chars().take(40).collect(),
            reason: "it must have 1 to 200 characters",
        });
    }
    if key.chars().any(|c| c.is_control()) {
        return Err(JobError::InvalidIdempotencyKey {
            key: key.to_string(),
            reason: "it must not contain control characters",
        });
    }
    Ok(())
}

const JOB_COLUMNS: &str = "id, kind, status, idempotency_key, created_by, item_count, done_count, \
    failed_count, created_at_ms, updated_at_ms, finished_at_ms, error";

fn job_from_row(row: &sqlx::any::AnyRow) -> Result<Job, JobError> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    Ok(Job {
        id: JobId::parse(&id)?,
        kind: JobKind::parse(&kind)?,
        status: JobStatus::parse(&status)?,
        idempotency_key: {
            // Stored in the creator's key space (`<creator>:<key>`); shown as the client sent it.
            let created_by: String = row.try_get("created_by")?;
            let stored: Option<String> = row.try_get("idempotency_key")?;
            stored.map(|key| {
                key.strip_prefix(&format!("{created_by}:"))
                    .map(str::to_string)
                    .unwrap_or(key)
            })
        },
        created_by: row.try_get("created_by")?,
        item_count: row.try_get("item_count")?,
        done_count: row.try_get("done_count")?,
        failed_count: row.try_get("failed_count")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        error: row.try_get("error")?,
    })
}

async fn find_by_key(database: &Database, key: &str) -> Result<Option<(Job, String)>, JobError> {
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS}, content_hash FROM jobs WHERE idempotency_key = $1"
    ))
    .bind(key.to_string())
    .fetch_optional(database.pool())
    .await?;
    match row {
        Some(row) => {
            let hash: String = row.try_get("content_hash")?;
            Ok(Some((job_from_row(&row)?, hash)))
        }
        None => Ok(None),
    }
}

fn existing_or_conflict(
    key: &str,
    found: (Job, String),
    hash: &str,
) -> Result<(Job, bool), JobError> {
    let (job, stored_hash) = found;
    if stored_hash == hash {
        Ok((job, false))
    } else {
        Err(JobError::IdempotencyConflict {
            key: key.to_string(),
            job: job.id.to_string(),
        })
    }
}

/// Items per INSERT: small, because SQLite binds named parameters in time that grows with the
/// square of their number per statement.
const ITEM_INSERT_ROWS: usize = 64;

/// The idempotency key as stored: each client has its own key space.
fn namespaced_key(created_by: &str, key: &str) -> String {
    format!("{created_by}:{key}")
}

/// What an upload does with the items it is given.
enum UploadMode {
    /// Store them under a new job.
    Store,
    /// The idempotency key names this job already: only hash them, to compare.
    Verify { existing: Job, hash: String },
}

/// A job being created from an upload read in chunks: each chunk of items is stored in its own
/// short transaction (no writer waits long, memory stays flat whatever the job's size), the
/// job stays `receiving` until [`JobUpload::finish`], and [`JobUpload::abandon`] removes what
/// was stored when the upload turns out to be bad.
pub struct JobUpload {
    id: JobId,
    key: Option<String>,
    hasher: sha2::Sha256,
    count: i64,
    mode: UploadMode,
}

impl JobUpload {
    /// Starts a job of `kind` for `created_by`, under an optional idempotency key.
    pub async fn begin(
        database: &Database,
        kind: JobKind,
        created_by: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Self, JobError> {
        use sha2::Digest;
        let key = match idempotency_key {
            Some(key) => {
                validate_key(key)?;
                Some(namespaced_key(created_by, key))
            }
            None => None,
        };
        let mut hasher = sha2::Sha256::new();
        hasher.update(kind.as_str().as_bytes());
        let id = JobId::generate();
        if let Some(key) = &key {
            if let Some((existing, hash)) = find_by_key(database, key).await? {
                return Ok(Self {
                    id,
                    key: Some(key.clone()),
                    hasher,
                    count: 0,
                    mode: UploadMode::Verify { existing, hash },
                });
            }
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO jobs (id, kind, status, idempotency_key, content_hash, created_by, \
             item_count, done_count, failed_count, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, 'receiving', NULL, '', $3, 0, 0, 0, $4, $4)",
        )
        .bind(id.as_str().to_string())
        .bind(kind.as_str())
        .bind(created_by.to_string())
        .bind(now)
        .execute(database.pool())
        .await?;
        Ok(Self {
            id,
            key,
            hasher,
            count: 0,
            mode: UploadMode::Store,
        })
    }

    /// Items added so far.
    pub fn count(&self) -> i64 {
        self.count
    }

    /// Adds a chunk of items (stored in one transaction; already pending for the workers).
    pub async fn add(&mut self, database: &Database, items: &[ItemInput]) -> Result<(), JobError> {
        use sha2::Digest;
        let mut encoded = Vec::with_capacity(items.len());
        for item in items {
            let text = serde_json::to_string(item)?;
            self.hasher.update(b"\n");
            self.hasher.update(text.as_bytes());
            encoded.push(text);
        }
        let first = self.count;
        self.count += items.len() as i64;
        if matches!(self.mode, UploadMode::Verify { .. }) || items.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut transaction = database.begin_write().await?;
        let mut position = first;
        for chunk in encoded.chunks(ITEM_INSERT_ROWS) {
            let sql = format!(
                "INSERT INTO job_items (job_id, position, input, status, attempts, \
                 next_attempt_ms) VALUES {}",
                SqlPlaceholders::values(chunk.len(), 6)
            );
            let mut query = sqlx::query(&sql);
            for text in chunk {
                query = query
                    .bind(self.id.as_str().to_string())
                    .bind(position)
                    .bind(text.clone())
                    .bind(ItemStatus::Pending.as_str())
                    .bind(0i64)
                    .bind(now);
                position += 1;
            }
            query.execute(&mut *transaction).await?;
        }
        sqlx::query("UPDATE jobs SET item_count = $1, updated_at_ms = $2 WHERE id = $3")
            .bind(self.count)
            .bind(now)
            .bind(self.id.as_str().to_string())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Ends the upload: the job is queued (or completed, when the workers were faster), or,
    /// when the idempotency key named a job already, that job is returned (`false`) or a
    /// conflict when the items differ.
    pub async fn finish(self, database: &Database) -> Result<(Job, bool), JobError> {
        use sha2::Digest;
        let hash = hex_of(&self.hasher.clone().finalize());
        if let UploadMode::Verify {
            existing,
            hash: stored,
        } = &self.mode
        {
            let key = self.key.clone().unwrap_or_default();
            return existing_or_conflict(&key, (existing.clone(), stored.clone()), &hash);
        }
        if self.count == 0 {
            self.abandon(database).await?;
            return Err(JobError::EmptyJob);
        }
        let now = now_ms();
        let finished = sqlx::query(
            "UPDATE jobs SET idempotency_key = $1, content_hash = $2, item_count = $3, \
             updated_at_ms = $4, \
             status = CASE WHEN done_count + failed_count >= $3 THEN 'completed' \
                           WHEN done_count + failed_count > 0 THEN 'running' ELSE 'queued' END, \
             finished_at_ms = CASE WHEN done_count + failed_count >= $3 THEN $4 ELSE NULL END \
             WHERE id = $5",
        )
        .bind(self.key.clone())
        .bind(hash.clone())
        .bind(self.count)
        .bind(now)
        .bind(self.id.as_str().to_string())
        .execute(database.pool())
        .await;
        match finished {
            Ok(_) => Ok((get_job(database, self.id.as_str()).await?, true)),
            Err(error) => {
                // A concurrent upload under the same key may have finished first.
                if let Some(key) = &self.key {
                    if let Some(found) = find_by_key(database, key).await? {
                        let key = key.clone();
                        self.abandon(database).await?;
                        return existing_or_conflict(&key, found, &hash);
                    }
                }
                Err(error.into())
            }
        }
    }

    /// Removes the job and every item stored so far (a bad upload leaves nothing behind).
    pub async fn abandon(self, database: &Database) -> Result<(), JobError> {
        if matches!(self.mode, UploadMode::Verify { .. }) {
            return Ok(());
        }
        delete_job(database, self.id.as_str()).await
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deletes a job and its items, in short transactions.
async fn delete_job(database: &Database, id: &str) -> Result<(), JobError> {
    loop {
        let deleted = sqlx::query(
            "DELETE FROM job_items WHERE id IN (SELECT id FROM job_items WHERE job_id = $1 \
             LIMIT 5000)",
        )
        .bind(id.to_string())
        .execute(database.pool())
        .await?
        .rows_affected();
        if deleted == 0 {
            break;
        }
    }
    sqlx::query("DELETE FROM jobs WHERE id = $1")
        .bind(id.to_string())
        .execute(database.pool())
        .await?;
    Ok(())
}

/// Removes uploads that stopped half-way (their process died) more than `older_than_ms` ago.
pub async fn remove_stale_uploads(
    database: &Database,
    older_than_ms: i64,
) -> Result<usize, JobError> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'receiving' AND updated_at_ms < $1")
            .bind(now_ms() - older_than_ms)
            .fetch_all(database.pool())
            .await?;
    for id in &ids {
        delete_job(database, id).await?;
    }
    Ok(ids.len())
}

/// Creates a job with its items (in chunks, see [`JobUpload`]). With an idempotency key that
/// was used before by the same client, returns the existing job and `false` (or a conflict
/// when the items differ).
pub async fn create_job(database: &Database, new_job: &NewJob) -> Result<(Job, bool), JobError> {
    if new_job.items.is_empty() {
        return Err(JobError::EmptyJob);
    }
    let mut upload = JobUpload::begin(
        database,
        new_job.kind,
        &new_job.created_by,
        new_job.idempotency_key.as_deref(),
    )
    .await?;
    for chunk in new_job.items.chunks(1_000) {
        if let Err(error) = upload.add(database, chunk).await {
            upload.abandon(database).await?;
            return Err(error);
        }
    }
    upload.finish(database).await
}

/// A job by id.
pub async fn get_job(database: &Database, id: &str) -> Result<Job, JobError> {
    let id = JobId::parse(id)?;
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .bind(id.as_str().to_string())
        .fetch_optional(database.pool())
        .await?;
    match row {
        Some(row) => job_from_row(&row),
        None => Err(JobError::UnknownJob(id.to_string())),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, JobError> {
    serde_json::from_str(text).map_err(|error| JobError::Corrupt {
        what: what.to_string(),
        reason: error.to_string(),
    })
}

/// Items of a job in position order, from `offset`, at most `limit`.
pub async fn job_items(
    database: &Database,
    id: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<JobItem>, JobError> {
    let job = get_job(database, id).await?;
    let rows = sqlx::query(
        "SELECT position, input, status, attempts, result, error, finished_at_ms FROM job_items \
         WHERE job_id = $1 AND position >= $2 ORDER BY position LIMIT $3",
    )
    .bind(job.id.as_str().to_string())
    .bind(offset.max(0))
    .bind(limit.max(0))
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let input: String = row.try_get("input")?;
            let status: String = row.try_get("status")?;
            let result: Option<String> = row.try_get("result")?;
            Ok(JobItem {
                position: row.try_get("position")?,
                input: parse_json("job item input", &input)?,
                status: ItemStatus::parse(&status)?,
                attempts: row.try_get("attempts")?,
                result: result
                    .map(|text| parse_json("job item result", &text))
                    .transpose()?,
                error: row.try_get("error")?,
                finished_at_ms: row.try_get("finished_at_ms")?,
            })
        })
        .collect()
}

/// How many items of a job are in each status (counted from the items themselves).
pub async fn item_status_counts(
    database: &Database,
    id: &str,
) -> Result<BTreeMap<ItemStatus, i64>, JobError> {
    let job = get_job(database, id).await?;
    let rows = sqlx::query(
        "SELECT status, COUNT(*) AS count FROM job_items WHERE job_id = $1 GROUP BY status",
    )
    .bind(job.id.as_str().to_string())
    .fetch_all(database.pool())
    .await?;
    let mut counts = BTreeMap::new();
    for row in rows {
        let status: String = row.try_get("status")?;
        counts.insert(ItemStatus::parse(&status)?, row.try_get::<i64, _>("count")?);
    }
    Ok(counts)
}

/// Items waiting or in work over every job, and items that failed for good.
pub async fn queue_depth(database: &Database) -> Result<QueueDepth, JobError> {
    let rows = sqlx::query(
        "SELECT status, COUNT(*) AS count FROM job_items \
         WHERE status IN ('pending', 'leased', 'failed') GROUP BY status",
    )
    .fetch_all(database.pool())
    .await?;
    let mut depth = QueueDepth::default();
    for row in rows {
        let status: String = row.try_get("status")?;
        let count: i64 = row.try_get("count")?;
        match ItemStatus::parse(&status)? {
            ItemStatus::Pending => depth.pending = count,
            ItemStatus::Leased => depth.leased = count,
            ItemStatus::Failed => depth.failed = count,
            ItemStatus::Done => {}
        }
    }
    Ok(depth)
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Takes up to `limit` pending items (oldest first) for `owner` until now + `lease_duration`.
/// Concurrent callers get disjoint items.
pub async fn lease_items(
    database: &Database,
    owner: &str,
    limit: usize,
    lease_duration: Duration,
) -> Result<Vec<LeasedItem>, JobError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let expires = now + duration_ms(lease_duration);
    let lock = match database.backend() {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE job_items SET status = 'leased', lease_owner = $1, lease_expires_ms = $2, \
         attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM job_items WHERE status = 'pending' AND next_attempt_ms <= $3 \
                      ORDER BY id LIMIT $4{lock}) \
           AND status = 'pending' \
         RETURNING id, job_id, position, input, attempts"
    );
    let rows = sqlx::query(&sql)
        .bind(owner.to_string())
        .bind(expires)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(database.pool())
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let job_id: String = row.try_get("job_id")?;
        let input: String = row.try_get("input")?;
        items.push(LeasedItem {
            id: row.try_get("id")?,
            job_id: JobId::parse(&job_id)?,
            position: row.try_get("position")?,
            input: parse_json("job item input", &input)?,
            attempt: row.try_get("attempts")?,
            owner: owner.to_string(),
            lease_expires_ms: expires,
        });
    }
    items.sort_by_key(|item| item.id);
    let mut jobs: Vec<&str> = items.iter().map(|item| item.job_id.as_str()).collect();
    jobs.dedup();
    for job in jobs {
        sqlx::query(
            "UPDATE jobs SET status = 'running', updated_at_ms = $1 \
             WHERE id = $2 AND status = 'queued'",
        )
        .bind(now)
        .bind(job.to_string())
        .execute(database.pool())
        .await?;
    }
    Ok(items)
}

/// Extends the leases `owner` still holds on `items` to now + `lease_duration`; returns how many
/// it still held (a lease that expired and was taken over is not renewed).
pub async fn renew_leases(
    database: &Database,
    items: &mut [LeasedItem],
    lease_duration: Duration,
) -> Result<usize, JobError> {
    let now = now_ms();
    let expires = now + duration_ms(lease_duration);
    let mut renewed = 0;
    let mut transaction = database.begin_write().await?;
    for item in items.iter_mut() {
        let result = sqlx::query(
            "UPDATE job_items SET lease_expires_ms = $1 WHERE id = $2 AND status = 'leased' \
             AND lease_owner = $3 AND attempts = $4 AND lease_expires_ms >= $5",
        )
        .bind(expires)
        .bind(item.id)
        .bind(item.owner.clone())
        .bind(item.attempt)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        if result.rows_affected() == 1 {
            item.lease_expires_ms = expires;
            renewed += 1;
        }
    }
    transaction.commit().await?;
    Ok(renewed)
}

async fn add_counts(
    connection: &mut AnyConnection,
    per_job: &BTreeMap<String, (i64, i64)>,
    now: i64,
) -> Result<(), JobError> {
    for (job, (done, failed)) in per_job {
        sqlx::query(
            "UPDATE jobs SET done_count = done_count + $1, failed_count = failed_count + $2, \
             updated_at_ms = $3 WHERE id = $4",
        )
        .bind(*done)
        .bind(*failed)
        .bind(now)
        .bind(job.clone())
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "UPDATE jobs SET status = 'completed', finished_at_ms = $1 \
             WHERE id = $2 AND status NOT IN ('completed', 'receiving') \
             AND done_count + failed_count >= item_count",
        )
        .bind(now)
        .bind(job.clone())
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Returns expired leases to the queue so another worker takes them; an item whose expired
/// lease was its last allowed attempt is failed with a recorded error. Returns
/// (items put back, items failed).
pub async fn reclaim_expired(
    database: &Database,
    policy: &RetryPolicy,
) -> Result<(usize, usize), JobError> {
    let now = now_ms();
    let mut transaction = database.begin_write().await?;
    let failed_rows = sqlx::query(
        "UPDATE job_items SET status = 'failed', lease_owner = NULL, lease_expires_ms = NULL, \
         finished_at_ms = $1, \
         error = 'the worker processing this item stopped responding on every attempt' \
         WHERE status = 'leased' AND lease_expires_ms < $1 AND attempts >= $2 \
         RETURNING job_id",
    )
    .bind(now)
    .bind(policy.max_attempts)
    .fetch_all(&mut *transaction)
    .await?;
    let mut per_job: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for row in &failed_rows {
        let job: String = row.try_get("job_id")?;
        per_job.entry(job).or_default().1 += 1;
    }
    add_counts(&mut transaction, &per_job, now).await?;
    let returned = sqlx::query(
        "UPDATE job_items SET status = 'pending', lease_owner = NULL, lease_expires_ms = NULL, \
         next_attempt_ms = $1 WHERE status = 'leased' AND lease_expires_ms < $1",
    )
    .bind(now)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    let returned = returned.rows_affected() as usize;
    if returned > 0 || !failed_rows.is_empty() {
        tracing::info!(
            returned,
            failed = failed_rows.len(),
            "reclaimed expired job item leases"
        );
    }
    Ok((returned, failed_rows.len()))
}

/// Items finished by one statement: 7 parameters each, far below both backends' limits, few
/// round trips per batch (each one costs a wake-up of the database and of the worker).
const COMPLETION_CHUNK: usize = 64;

/// What one finished item becomes.
struct ItemChange {
    status: ItemStatus,
    result: Option<String>,
    error: Option<String>,
    /// When it finished, or for a retry, when it may be tried again.
    at_ms: i64,
}

/// One statement finishing `count` items, each guarded by its lease (the same id, owner and
/// attempt, not yet expired now); it returns the ids it changed. Parameters, numbered in the
/// order they appear: per item id, owner, attempt, new status, result, error, time, then now.
/// A retry keeps its result and finish time and waits until its time; a done or failed item
/// records its time as finished.
fn completion_sql(count: usize) -> String {
    let rows: Vec<String> = (0..count)
        .map(|index| {
            let n = 1 + index * 7;
            format!(
                "(CAST(${n} AS BIGINT), ${}, CAST(${} AS BIGINT), ${}, ${}, ${}, CAST(${} AS BIGINT))",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6
            )
        })
        .collect();
    format!(
        "WITH changes (item_id, item_owner, item_attempt, new_status, new_result, new_error, at_ms) \
         AS (VALUES {}) \
         UPDATE job_items SET \
           status = changes.new_status, \
           result = CASE WHEN changes.new_status = 'done' THEN changes.new_result ELSE job_items.result END, \
           error = changes.new_error, \
           lease_owner = NULL, \
           lease_expires_ms = NULL, \
           finished_at_ms = CASE WHEN changes.new_status = 'pending' THEN job_items.finished_at_ms ELSE changes.at_ms END, \
           next_attempt_ms = CASE WHEN changes.new_status = 'pending' THEN changes.at_ms ELSE job_items.next_attempt_ms END \
         FROM changes \
         WHERE job_items.id = changes.item_id AND job_items.status = 'leased' \
           AND job_items.lease_owner = changes.item_owner AND job_items.attempts = changes.item_attempt \
           AND job_items.lease_expires_ms >= ${} \
         RETURNING job_items.id AS id",
        rows.join(", "),
        count * 7 + 1
    )
}

/// Finishes leased items in one transaction, each guarded by its lease: results and prediction
/// log rows of `Done` items, retries (with backoff) or recorded errors of `Failed` items. Items
/// whose lease is no longer held are left untouched and counted as refused.
pub async fn complete_items(
    database: &Database,
    outcomes: &[(LeasedItem, ItemOutcome)],
    policy: &RetryPolicy,
) -> Result<CompletionReport, JobError> {
    let now = now_ms();
    let mut report = CompletionReport::default();
    let mut per_job: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut log_rows: Vec<PredictionLogRow> = Vec::new();
    // What each item becomes; items whose lease is no longer held are refused by the guard.
    let mut changes = Vec::with_capacity(outcomes.len());
    for (item, outcome) in outcomes {
        let change = match outcome {
            ItemOutcome::Done { result, .. } => ItemChange {
                status: ItemStatus::Done,
                result: Some(serde_json::to_string(result)?),
                error: None,
                at_ms: now,
            },
            ItemOutcome::Failed { error, retryable } => {
                if *retryable && item.attempt < policy.max_attempts {
                    ItemChange {
                        status: ItemStatus::Pending,
                        result: None,
                        error: Some(error.clone()),
                        at_ms: now + duration_ms(policy.backoff(item.attempt)),
                    }
                } else {
                    let error = if *retryable {
                        format!("{error} (gave up after {} attempts)", item.attempt)
                    } else {
                        error.clone()
                    };
                    ItemChange {
                        status: ItemStatus::Failed,
                        result: None,
                        error: Some(error),
                        at_ms: now,
                    }
                }
            }
        };
        changes.push(change);
    }
    let mut transaction = database.begin_write().await?;
    let mut applied: HashSet<i64> = HashSet::with_capacity(outcomes.len());
    for (chunk, chunk_changes) in outcomes
        .chunks(COMPLETION_CHUNK)
        .zip(changes.chunks(COMPLETION_CHUNK))
    {
        let sql = completion_sql(chunk.len());
        let mut query = sqlx::query(&sql);
        for ((item, _), change) in chunk.iter().zip(chunk_changes) {
            query = query
                .bind(item.id)
                .bind(item.owner.clone())
                .bind(item.attempt)
                .bind(change.status.as_str())
                .bind(change.result.clone())
                .bind(change.error.clone())
                .bind(change.at_ms);
        }
        query = query.bind(now);
        for row in query.fetch_all(&mut *transaction).await? {
            applied.insert(row.try_get("id")?);
        }
    }
    for ((item, outcome), change) in outcomes.iter().zip(&changes) {
        if !applied.contains(&item.id) {
            report.refused += 1;
            continue;
        }
        let counts = per_job.entry(item.job_id.as_str().to_string()).or_default();
        match change.status {
            ItemStatus::Done => {
                report.done += 1;
                counts.0 += 1;
                if let ItemOutcome::Done { log: Some(row), .. } = outcome {
                    log_rows.push(PredictionLogRow::clone(row));
                }
            }
            ItemStatus::Failed => {
                report.failed += 1;
                counts.1 += 1;
            }
            ItemStatus::Pending | ItemStatus::Leased => report.retried += 1,
        }
    }
    insert_prediction_log(&mut transaction, &log_rows).await?;
    add_counts(&mut transaction, &per_job, now).await?;
    transaction.commit().await?;
    if report.refused > 0 {
        tracing::warn!(
            refused = report.refused,
            "completions refused: the leases had expired or were taken over"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_reject_garbage() {
        let id = JobId::generate();
        assert_eq!(JobId::parse(id.as_str()).unwrap(), id);
        for bad in [
            "",
            "job-",
            "job-XYZ",
            "job-0123456789abcdeg",
            "run-0123456789abcdef",
        ] {
            assert!(JobId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
        };
        let waits: Vec<u128> = (1..=6).map(|a| policy.backoff(a).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.backoff(1_000_000), Duration::from_millis(1000));
    }

    #[test]
    fn completion_statement_numbers_seven_parameters_per_item() {
        let sql = completion_sql(2);
        assert!(sql.contains(
            "(CAST($1 AS BIGINT), $2, CAST($3 AS BIGINT), $4, $5, $6, CAST($7 AS BIGINT)), \
             (CAST($8 AS BIGINT), $9, CAST($10 AS BIGINT), $11, $12, $13, CAST($14 AS BIGINT))"
        ));
        assert!(sql.contains("job_items.lease_expires_ms >= $15 "));
        assert!(!sql.contains("$16"));
    }
}
