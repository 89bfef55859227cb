//! The prediction log: one row per served prediction with a profile of its inputs (normalised
//! text, image statistics, never the raw image), the model version, the confidence and the
//! outcome. Reviewer labels are joined later (`label_code`, `labelled_at_ms`).
//!
//! Rows reach the database two ways: job items and pending products write theirs inside their
//! own transaction ([`insert_prediction_log`]), and every other prediction hands its row to a
//! [`PredictionLogWriter`], a background task that writes whatever has queued up in one
//! transaction per batch, so no request waits on the database. Each row carries the id its
//! prediction was given when it was made, and inserts skip ids already stored: a batch retried
//! after an uncertain commit adds no duplicate.

use std::time::Duration;

use prodcat_domain::CategoryCode;
use prodcat_model::{Branch, ProductPrediction};
use prodcat_storage::{now_ms, Database, SqlPlaceholders};
use sqlx::{AnyConnection, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::CatalogueError;

/// The normalised text is stored up to this many characters.
pub const TEXT_LOG_LIMIT: usize = 2_000;

/// Where a prediction was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionSource {
    /// `POST /v1/predict`.
    Predict,
    /// `POST /v1/predict/batch`.
    Batch,
    /// An item of a classification job.
    Job,
    /// A catalogue product (added, changed, or classified later).
    Product,
    /// Replayed traffic of the drift simulation.
    Simulation,
}

impl PredictionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PredictionSource::Predict => "predict",
            PredictionSource::Batch => "batch",
            PredictionSource::Job => "job",
            PredictionSource::Product => "product",
            PredictionSource::Simulation => "simulation",
        }
    }
}

/// Which part a model played in answering (the champion answers; a canary answers a share of
/// traffic instead of it; a shadow scores a copy of the traffic and answers nobody).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingRole {
    Champion,
    Canary,
    Shadow,
}

impl ServingRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ServingRole::Champion => "champion",
            ServingRole::Canary => "canary",
            ServingRole::Shadow => "shadow",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "champion" => Some(ServingRole::Champion),
            "canary" => Some(ServingRole::Canary),
            "shadow" => Some(ServingRole::Shadow),
            _ => None,
        }
    }
}

/// One row of `prediction_log`.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionLogRow {
    /// The prediction's id (`pred-` and 16 hex digits), chosen when it was made.
    pub prediction_id: String,
    pub at_ms: i64,
    pub model_version: String,
    pub source: PredictionSource,
    pub serving_role: ServingRole,
    /// Who asked (a user or client name), when known.
    pub client: Option<String>,
    /// The stored product this prediction is about; set only by trusted sources (the catalogue
    /// itself), so that a reviewer's decision labels only predictions of that product.
    pub product_id: Option<i64>,
    /// Normalised text, at most [`TEXT_LOG_LIMIT`] characters.
    pub text: String,
    pub description_empty: bool,
    pub image_width: Option<i64>,
    pub image_height: Option<i64>,
    pub image_brightness: Option<f64>,
    pub image_border_ratio: Option<f64>,
    pub predicted_code: i64,
    pub confidence: f64,
    pub automatic: bool,
    /// `text`, `image` or `text+image`.
    pub branches: String,
    /// Each branch's top classes and the fusion weight, as JSON.
    pub branch_outputs: Option<String>,
    pub latency_us: i64,
    /// The reviewed label, when one is known at write time (replayed traffic).
    pub label_code: Option<i64>,
    pub labelled_at_ms: Option<i64>,
}

/// `text`, `image` or `text+image`.
pub fn branches_label(branches: &[Branch]) -> String {
    Branch::label(branches)
}

fn truncate_chars(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

/// Where a prediction came from and on whose behalf, for its log row.
#[derive(Debug, Clone)]
pub struct PredictionContext {
    pub prediction_id: String,
    pub source: PredictionSource,
    pub serving_role: ServingRole,
    pub client: Option<String>,
    pub product_id: Option<i64>,
}

/// A new prediction id: `pred-` and 16 lowercase hex digits, unique across processes.
pub fn new_prediction_id() -> String {
    format!(
        "{PREDICTION_ID_PREFIX}{}",
        prodcat_domain::unique_hex16("prediction")
    )
}

/// The prefix of prediction ids.
pub const PREDICTION_ID_PREFIX: &str = "pred-";

/// Whether `text` has the shape of a prediction id.
pub fn is_prediction_id(text: &str) -> bool {
    prodcat_domain::is_prefixed_hex(text, PREDICTION_ID_PREFIX, 16)
}

/// Each branch's three most probable categories, and the fusion weight, as JSON.
fn branch_outputs_json(
    prediction: &ProductPrediction,
    categories: &[CategoryCode],
) -> Option<String> {
    let top = |probabilities: &Option<Vec<f32>>| -> Option<serde_json::Value> {
        let probabilities = probabilities.as_ref()?;
        let mut ranked: Vec<(u16, f32)> = categories
            .iter()
            .map(|code| code.value())
            .zip(probabilities.iter().copied())
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(3);
        Some(serde_json::Value::Array(
            ranked
                .iter()
                .map(|(code, probability)| {
                    serde_json::json!({ "category": code, "probability": probability })
                })
                .collect(),
        ))
    };
    let mut outputs = serde_json::Map::new();
    if let Some(text) = top(&prediction.text_probabilities) {
        outputs.insert("text".to_string(), text);
    }
    if let Some(image) = top(&prediction.image_probabilities) {
        outputs.insert("image".to_string(), image);
    }
    if outputs.is_empty() {
        return None;
    }
    if let Some(weight) = prediction.fusion_weight {
        outputs.insert("fusionWeight".to_string(), serde_json::json!(weight));
    }
    Some(serde_json::Value::Object(outputs).to_string())
}

impl PredictionLogRow {
    /// The row for a prediction. `description_empty` says whether the raw description the
    /// client sent was blank; `categories` is the model's label set (for the branch outputs).
    pub fn from_prediction(
        prediction: &ProductPrediction,
        context: &PredictionContext,
        description_empty: bool,
        categories: &[CategoryCode],
    ) -> Self {
        let stats = prediction.image_stats.as_ref();
        Self {
            prediction_id: context.prediction_id.clone(),
            at_ms: now_ms(),
            model_version: prediction.model_version.to_string(),
            source: context.source,
            serving_role: context.serving_role,
            client: context.client.clone(),
            product_id: context.product_id,
            text: truncate_chars(&prediction.normalized_text, TEXT_LOG_LIMIT),
            description_empty,
            image_width: stats.map(|s| i64::from(s.width)),
            image_height: stats.map(|s| i64::from(s.height)),
            image_brightness: stats.map(|s| s.mean_brightness),
            image_border_ratio: stats.map(|s| s.white_border_ratio),
            predicted_code: i64::from(prediction.category.value()),
            confidence: f64::from(prediction.confidence),
            automatic: prediction.automatic,
            branches: branches_label(&prediction.branches),
            branch_outputs: branch_outputs_json(prediction, categories),
            latency_us: prediction.elapsed_microseconds as i64,
            label_code: None,
            labelled_at_ms: None,
        }
    }
}

const LOG_COLUMNS: usize = 21;
/// Rows per INSERT. Small on purpose: SQLite resolves each named parameter (`$N`) by scanning
/// the statement's parameter list, so binding costs grow with the square of the parameters per
/// statement; at 400 rows (6,000 parameters) the log writer spent a third of the server's CPU
/// there under load. 32 rows keep statements few and binding cheap.
const ROWS_PER_STATEMENT: usize = 32;

/// Inserts rows on a connection (a pooled connection or an open transaction); rows whose
/// prediction id is already stored are skipped.
pub async fn insert_prediction_log(
    connection: &mut AnyConnection,
    rows: &[PredictionLogRow],
) -> Result<(), CatalogueError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO prediction_log (prediction_id, at_ms, model_version, source, \
             serving_role, client, product_id, text, description_empty, image_width, \
             image_height, image_brightness, image_border_ratio, predicted_code, confidence, \
             automatic, branches, branch_outputs, latency_us, label_code, labelled_at_ms) \
             VALUES {} ON CONFLICT (prediction_id) DO NOTHING",
            SqlPlaceholders::values(chunk.len(), LOG_COLUMNS)
        );
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = query
                .bind(row.prediction_id.clone())
                .bind(row.at_ms)
                .bind(row.model_version.clone())
                .bind(row.source.as_str())
                .bind(row.serving_role.as_str())
                .bind(row.client.clone())
                .bind(row.product_id)
                .bind(row.text.clone())
                .bind(i64::from(row.description_empty))
                .bind(row.image_width)
                .bind(row.image_height)
                .bind(row.image_brightness)
                .bind(row.image_border_ratio)
                .bind(row.predicted_code)
                .bind(row.confidence)
                .bind(i64::from(row.automatic))
                .bind(row.branches.clone())
                .bind(row.branch_outputs.clone())
                .bind(row.latency_us)
                .bind(row.label_code)
                .bind(row.labelled_at_ms);
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
}

/// Writes rows in one transaction: all of them or none.
pub async fn write_prediction_log(
    database: &Database,
    rows: &[PredictionLogRow],
) -> Result<(), CatalogueError> {
    let mut transaction = database.begin_write().await?;
    insert_prediction_log(&mut transaction, rows).await?;
    transaction.commit().await?;
    Ok(())
}

/// A logged prediction as drift checks and lineage read it back.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedPrediction {
    pub prediction_id: Option<String>,
    pub at_ms: i64,
    pub model_version: String,
    pub source: String,
    pub serving_role: String,
    pub client: Option<String>,
    pub product_id: Option<i64>,
    pub text: String,
    pub description_empty: bool,
    pub image_width: Option<i64>,
    pub image_height: Option<i64>,
    pub image_brightness: Option<f64>,
    pub image_border_ratio: Option<f64>,
    pub predicted_code: i64,
    pub confidence: f64,
    pub automatic: bool,
    pub branches: String,
    pub branch_outputs: Option<String>,
    pub latency_us: i64,
    pub label_code: Option<i64>,
    pub labelled_at_ms: Option<i64>,
}

const LOGGED_COLUMNS: &str = "prediction_id, at_ms, model_version, source, serving_role, client, \
    product_id, text, description_empty, image_width, image_height, image_brightness, \
    image_border_ratio, predicted_code, confidence, automatic, branches, branch_outputs, \
    latency_us, label_code, labelled_at_ms";

fn logged_from_row(row: &sqlx::any::AnyRow) -> Result<LoggedPrediction, sqlx::Error> {
    Ok(LoggedPrediction {
        prediction_id: row.try_get("prediction_id")?,
        at_ms: row.try_get("at_ms")?,
        model_version: row.try_get("model_version")?,
        source: row.try_get("source")?,
        serving_role: row.try_get("serving_role")?,
        client: row.try_get("client")?,
        product_id: row.try_get("product_id")?,
        text: row.try_get("text")?,
        description_empty: row.try_get::<i64, _>("description_empty")? != 0,
        image_width: row.try_get("image_width")?,
        image_height: row.try_get("image_height")?,
        image_brightness: row.try_get("image_brightness")?,
        image_border_ratio: row.try_get("image_border_ratio")?,
        predicted_code: row.try_get("predicted_code")?,
        confidence: row.try_get("confidence")?,
        automatic: row.try_get::<i64, _>("automatic")? != 0,
        branches: row.try_get("branches")?,
        branch_outputs: row.try_get("branch_outputs")?,
        latency_us: row.try_get("latency_us")?,
        label_code: row.try_get("label_code")?,
        labelled_at_ms: row.try_get("labelled_at_ms")?,
    })
}

/// The predictions a model version served (as champion or canary, not as a shadow) in
/// `[start_ms, end_ms)`, oldest first, reviewed labels included.
pub async fn served_predictions(
    database: &Database,
    model_version: &str,
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<LoggedPrediction>, CatalogueError> {
    let rows = sqlx::query(&format!(
        "SELECT {LOGGED_COLUMNS} FROM prediction_log WHERE model_version = $1 AND at_ms >= $2 \
         AND at_ms < $3 AND serving_role <> 'shadow' ORDER BY at_ms, id"
    ))
    .bind(model_version.to_string())
    .bind(start_ms)
    .bind(end_ms)
    .fetch_all(database.pool())
    .await?;
    Ok(rows.iter().map(logged_from_row).collect::<Result<_, _>>()?)
}

/// A logged prediction by its id.
pub async fn get_prediction(
    database: &Database,
    prediction_id: &str,
) -> Result<Option<LoggedPrediction>, CatalogueError> {
    let row = sqlx::query(&format!(
        "SELECT {LOGGED_COLUMNS} FROM prediction_log WHERE prediction_id = $1"
    ))
    .bind(prediction_id.to_string())
    .fetch_optional(database.pool())
    .await?;
    Ok(row.as_ref().map(logged_from_row).transpose()?)
}

/// The predictions logged for a product, newest first (at most `limit`).
pub async fn product_predictions(
    database: &Database,
    product_id: i64,
    limit: i64,
) -> Result<Vec<LoggedPrediction>, CatalogueError> {
    let rows = sqlx::query(&format!(
        "SELECT {LOGGED_COLUMNS} FROM prediction_log WHERE product_id = $1 \
         ORDER BY at_ms DESC, id DESC LIMIT $2"
    ))
    .bind(product_id)
    .bind(limit.clamp(1, 1_000))
    .fetch_all(database.pool())
    .await?;
    Ok(rows.iter().map(logged_from_row).collect::<Result<_, _>>()?)
}

/// A prediction that failed, for the error rates of live comparisons.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionErrorRow {
    pub at_ms: i64,
    pub model_version: String,
    pub serving_role: ServingRole,
    /// The error's kind (`input`, `unavailable`, ...).
    pub error_kind: String,
    pub latency_us: i64,
}

enum Message {
    Row(Box<PredictionLogRow>),
    Error(PredictionErrorRow),
    Flush(oneshot::Sender<()>),
}

/// A handle to the background writer; cheap to clone. Dropping every handle lets the writer
/// write what is queued and stop.
#[derive(Clone, Debug)]
pub struct PredictionLogWriter {
    sender: mpsc::Sender<Message>,
}

/// Rows queued beyond this are dropped (and counted in
/// `prodcat_prediction_log_dropped_total`) rather than slowing requests down.
const QUEUE_CAPACITY: usize = 65_536;
const BATCH_LIMIT: usize = 2_000;

impl PredictionLogWriter {
    /// Starts the writer task on the current runtime. The join handle ends after every handle
    /// was dropped and the queue was written.
    pub fn start(database: Database) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(write_loop(database, receiver));
        (Self { sender }, task)
    }

    /// Queues a row without waiting. Returns false when the queue is full and the row was
    /// dropped.
    pub fn record(&self, row: PredictionLogRow) -> bool {
        match self.sender.try_send(Message::Row(Box::new(row))) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("prodcat_prediction_log_dropped_total").increment(1);
                false
            }
        }
    }

    /// Queues a failed prediction without waiting.
    pub fn record_error(&self, row: PredictionErrorRow) -> bool {
        self.sender.try_send(Message::Error(row)).is_ok()
    }

    /// Waits until every row queued before this call is written (or failed to be written).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_loop(database: Database, mut receiver: mpsc::Receiver<Message>) {
    let mut rows: Vec<PredictionLogRow> = Vec::new();
    let mut errors: Vec<PredictionErrorRow> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Row(row) => rows.push(*row),
                Message::Error(error) => errors.push(error),
                Message::Flush(done) => waiting.push(done),
            }
            if rows.len() + errors.len() < BATCH_LIMIT {
                next = receiver.try_recv().ok();
            }
        }
        if !rows.is_empty() {
            write_batch(&database, &rows).await;
            rows.clear();
        }
        if !errors.is_empty() {
            if let Err(error) = write_errors(&database, &errors).await {
                tracing::warn!(%error, rows = errors.len(), "writing failed predictions failed");
            }
            errors.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn write_errors(
    database: &Database,
    rows: &[PredictionErrorRow],
) -> Result<(), CatalogueError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO prediction_errors (at_ms, model_version, serving_role, error_kind, \
             latency_us) VALUES {}",
            SqlPlaceholders::values(chunk.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = query
                .bind(row.at_ms)
                .bind(row.model_version.clone())
                .bind(row.serving_role.as_str())
                .bind(row.error_kind.clone())
                .bind(row.latency_us);
        }
        query.execute(database.pool()).await?;
    }
    Ok(())
}

/// One served prediction as a live comparison reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedPrediction {
    pub prediction_id: Option<String>,
    pub model_version: String,
    pub serving_role: String,
    pub predicted_code: i64,
    pub confidence: f64,
    pub automatic: bool,
    pub latency_us: i64,
    pub label_code: Option<i64>,
}

/// The predictions served from `since_ms` on, newest first, at most `limit` (every version and
/// serving role).
pub async fn recent_predictions(
    database: &Database,
    since_ms: i64,
    limit: i64,
) -> Result<Vec<ServedPrediction>, CatalogueError> {
    let rows = sqlx::query(
        "SELECT prediction_id, model_version, serving_role, predicted_code, confidence, \
         automatic, latency_us, label_code FROM prediction_log WHERE at_ms >= $1 \
         ORDER BY at_ms DESC, id DESC LIMIT $2",
    )
    .bind(since_ms)
    .bind(limit.max(1))
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ServedPrediction {
                prediction_id: row.try_get("prediction_id")?,
                model_version: row.try_get("model_version")?,
                serving_role: row.try_get("serving_role")?,
                predicted_code: row.try_get("predicted_code")?,
                confidence: row.try_get("confidence")?,
                automatic: row.try_get::<i64, _>("automatic")? != 0,
                latency_us: row.try_get("latency_us")?,
                label_code: row.try_get("label_code")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(CatalogueError::from)
}

/// Failed predictions from `since_ms` on, counted by version and serving role.
pub async fn recent_error_counts(
    database: &Database,
    since_ms: i64,
) -> Result<Vec<(String, String, i64)>, CatalogueError> {
    let rows = sqlx::query(
        "SELECT model_version, serving_role, COUNT(*) AS count FROM prediction_errors \
         WHERE at_ms >= $1 GROUP BY model_version, serving_role",
    )
    .bind(since_ms)
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("model_version")?,
                row.try_get("serving_role")?,
                row.try_get("count")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(CatalogueError::from)
}

async fn write_batch(database: &Database, rows: &[PredictionLogRow]) {
    for attempt in 0..3 {
        match write_prediction_log(database, rows).await {
            Ok(()) => {
                metrics::counter!("prodcat_prediction_log_written_total")
                    .increment(rows.len() as u64);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, attempt, rows = rows.len(), "writing the prediction log failed");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    tracing::error!(
        rows = rows.len(),
        "prediction log rows were dropped after three failed writes"
    );
    metrics::counter!("prodcat_prediction_log_dropped_total").increment(rows.len() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate_chars("éléphant", 3), "élé");
        assert_eq!(truncate_chars("abc", 10), "abc");
        assert_eq!(truncate_chars("", 0), "");
        assert_eq!(branches_label(&[Branch::Text, Branch::Image]), "text+image");
    }
}
