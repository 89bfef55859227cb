//! The prediction log: one row per served prediction with a profile of its inputs (normalised
//! text, image statistics, never the raw image), the model version, the confidence and the
//! outcome. Reviewer labels are joined later (`label_code`, `labelled_at_ms`).
//!
//! Rows reach the database two ways: job items write theirs inside the completion transaction
//! ([`insert_prediction_log`]), and request handlers hand theirs to a [`PredictionLogWriter`], a
//! background task that writes whatever has queued up in multi-row inserts, so no request waits
//! on the database.

use std::time::Duration;

use prodcat_model::{Branch, ProductPrediction};
use prodcat_storage::{now_ms, Database, SqlPlaceholders};
use sqlx::AnyConnection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::JobError;

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
}

impl PredictionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PredictionSource::Predict => "predict",
            PredictionSource::Batch => "batch",
            PredictionSource::Job => "job",
            PredictionSource::Product => "product",
        }
    }
}

/// One row of `prediction_log`.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionLogRow {
    pub at_ms: i64,
    pub model_version: String,
    pub source: PredictionSource,
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
    pub latency_us: i64,
}

/// `text`, `image` or `text+image`.
pub fn branches_label(branches: &[Branch]) -> String {
    branches
        .iter()
        .map(|branch| match branch {
            Branch::Text => "text",
            Branch::Image => "image",
        })
        .collect::<Vec<_>>()
        .join("+")
}

fn truncate_chars(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

impl PredictionLogRow {
    /// The row for a prediction. `description` is the raw description the client sent (only
    /// whether it was empty is kept).
    pub fn from_prediction(
        prediction: &ProductPrediction,
        source: PredictionSource,
        product_id: Option<i64>,
        description: &str,
    ) -> Self {
        let stats = prediction.image_stats.as_ref();
        Self {
            at_ms: now_ms(),
            model_version: prediction.model_version.to_string(),
            source,
            product_id,
            text: truncate_chars(&prediction.normalized_text, TEXT_LOG_LIMIT),
            description_empty: description.trim().is_empty(),
            image_width: stats.map(|s| i64::from(s.width)),
            image_height: stats.map(|s| i64::from(s.height)),
            image_brightness: stats.map(|s| s.mean_brightness),
            image_border_ratio: stats.map(|s| s.white_border_ratio),
            predicted_code: i64::from(prediction.category.value()),
            confidence: f64::from(prediction.confidence),
            automatic: prediction.automatic,
            branches: branches_label(&prediction.branches),
            latency_us: prediction.elapsed_microseconds as i64,
        }
    }
}

const LOG_COLUMNS: usize = 15;
/// Rows per INSERT. Small on purpose: SQLite resolves each named parameter (`$N`) by scanning
/// the statement's parameter list, so binding costs grow with the square of the parameters per
/// statement; at 400 rows (6,000 parameters) the log writer spent a third of the server's CPU
/// there under load. 32 rows keep statements few and binding cheap.
const ROWS_PER_STATEMENT: usize = 32;

/// Inserts rows on a connection (a pooled connection or an open transaction).
pub async fn insert_prediction_log(
    connection: &mut AnyConnection,
    rows: &[PredictionLogRow],
) -> Result<(), JobError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO prediction_log (at_ms, model_version, source, product_id, text, \
             description_empty, image_width, image_height, image_brightness, image_border_ratio, \
             predicted_code, confidence, automatic, branches, latency_us) VALUES {}",
            SqlPlaceholders::values(chunk.len(), LOG_COLUMNS)
        );
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = query
                .bind(row.at_ms)
                .bind(row.model_version.clone())
                .bind(row.source.as_str())
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
                .bind(row.latency_us);
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
}

enum Message {
    Row(Box<PredictionLogRow>),
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
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Row(row) => rows.push(*row),
                Message::Flush(done) => waiting.push(done),
            }
            if rows.len() < BATCH_LIMIT {
                next = receiver.try_recv().ok();
            }
        }
        if !rows.is_empty() {
            write_batch(&database, &rows).await;
            rows.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn write_batch(database: &Database, rows: &[PredictionLogRow]) {
    for attempt in 0..3 {
        let result = async {
            let mut connection = database.pool().acquire().await?;
            insert_prediction_log(&mut connection, rows).await
        }
        .await;
        match result {
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
