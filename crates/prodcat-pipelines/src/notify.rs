//! Notifications: a Slack-compatible webhook (`{"text": ..., "blocks": [...]}`, which Slack,
//! Mattermost, Rocket.Chat and most chat tools accept) when drift is found and when a retraining
//! ends. Every attempt is recorded in the `notifications` table; a notification that can not be
//! delivered is logged and recorded, never fatal to the pipeline that sent it.

use std::time::Duration;

use prodcat_storage::{now_ms, Database};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use prodcat_platform::Platform;

use crate::PipelineError;

/// Something worth telling the team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Notification {
    /// A weekly check (or `prodcat drift`) found data or concept drift.
    DriftFound {
        model_version: String,
        report_id: String,
        window: String,
        dataset_drift: bool,
        drifted_features: Vec<String>,
        share_of_drifted_features: f64,
        concept_current_f1: Option<f64>,
        concept_reference_f1: Option<f64>,
        concept_drift: bool,
        /// What happens next ("retraining started", "retraining disabled").
        action: String,
    },
    /// A retraining ended, promoted or not.
    RetrainingEnded {
        pipeline_run: String,
        dataset_version: String,
        new_rows: usize,
        champion: String,
        challenger: Option<String>,
        evaluation_set: Option<String>,
        champion_f1: Option<f64>,
        challenger_f1: Option<f64>,
        promoted: bool,
        /// Why (the policy's reasons, or why nothing was trained).
        reasons: Vec<String>,
    },
}

impl Notification {
    pub fn kind(&self) -> &'static str {
        match self {
            Notification::DriftFound { .. } => "drift-found",
            Notification::RetrainingEnded { .. } => "retraining-ended",
        }
    }

    /// The one-line summary (the payload's `text`, shown by chat tools in notifications).
    pub fn summary(&self) -> String {
        let f1 = |value: Option<f64>| {
            value
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "n/a".to_string())
        };
        match self {
            Notification::DriftFound {
                model_version,
                window,
                dataset_drift,
                share_of_drifted_features,
                concept_drift,
                concept_current_f1,
                concept_reference_f1,
                action,
                ..
            } => {
                let mut kinds = Vec::new();
                if *dataset_drift {
                    kinds.push(format!(
                        "data drift ({:.0}% of features drifted)",
                        share_of_drifted_features * 100.0
                    ));
                }
                if *concept_drift {
                    kinds.push(format!(
                        "concept drift (weighted F1 {} on reviewed products, reference {})",
                        f1(*concept_current_f1),
                        f1(*concept_reference_f1)
                    ));
                }
                if kinds.is_empty() {
                    kinds.push("no drift".to_string());
                }
                format!(
                    "prodcat: {} for model {model_version} over {window}; {action}",
                    kinds.join(" and ")
                )
            }
            Notification::RetrainingEnded {
                champion,
                challenger,
                champion_f1,
                challenger_f1,
                promoted,
                evaluation_set,
                ..
            } => match challenger {
                Some(challenger) if *promoted => format!(
                    "prodcat: retraining promoted {challenger} to champion (weighted F1 {} vs {} for {champion} on {})",
                    f1(*challenger_f1),
                    f1(*champion_f1),
                    evaluation_set.as_deref().unwrap_or("the same set")
                ),
                Some(challenger) => format!(
                    "prodcat: retraining kept {champion} as champion; challenger {challenger} scored {} vs {} on {}",
                    f1(*challenger_f1),
                    f1(*champion_f1),
                    evaluation_set.as_deref().unwrap_or("the same set")
                ),
                None => format!("prodcat: retraining ended without a challenger; {champion} stays champion"),
            },
        }
    }

    /// The Slack-compatible JSON payload.
    pub fn payload(&self) -> serde_json::Value {
        let summary = self.summary();
        let mut fields: Vec<String> = Vec::new();
        let mut details: Vec<String> = Vec::new();
        match self {
            Notification::DriftFound {
                report_id,
                drifted_features,
                concept_current_f1,
                concept_reference_f1,
                ..
            } => {
                fields.push(format!("*Report*\n`{report_id}`"));
                fields.push(format!(
                    "*Drifted features*\n{}",
                    if drifted_features.is_empty() {
                        "none".to_string()
                    } else {
                        drifted_features.join(", ")
                    }
                ));
                if let (Some(current), Some(reference)) = (concept_current_f1, concept_reference_f1)
                {
                    fields.push(format!(
                        "*Weighted F1 (reviewed)*\n{current:.4} (reference {reference:.4})"
                    ));
                }
                details.push(format!(
                    "`prodcat drift show {report_id}` for the full report"
                ));
            }
            Notification::RetrainingEnded {
                pipeline_run,
                dataset_version,
                new_rows,
                reasons,
                ..
            } => {
                fields.push(format!("*Pipeline run*\n`{pipeline_run}`"));
                fields.push(format!(
                    "*Dataset*\n`{dataset_version}` ({new_rows} new or relabelled rows)"
                ));
                details.extend(reasons.iter().map(|r| format!("• {r}")));
            }
        }
        let mut blocks = vec![
            json!({"type": "section", "text": {"type": "mrkdwn", "text": summary}}),
            json!({"type": "section", "fields": fields
                .iter()
                .map(|f| json!({"type": "mrkdwn", "text": f}))
                .collect::<Vec<_>>()}),
        ];
        if !details.is_empty() {
            blocks.push(json!({
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": details.join("\n")}]
            }));
        }
        json!({ "text": summary, "blocks": blocks })
    }
}

/// What happened to one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryStatus {
    Sent,
    Failed,
    /// No webhook is configured; the notification is recorded only.
    NotConfigured,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::NotConfigured => "not-configured",
        }
    }
}

/// The recorded outcome of one notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub kind: String,
    pub status: DeliveryStatus,
    /// Scheme, host and port of the webhook (the path often holds a secret and is not shown).
    pub destination: String,
    pub error: Option<String>,
    pub summary: String,
}

/// Sends notifications to one webhook (or nowhere, when none is configured).
#[derive(Debug, Clone)]
pub struct Notifier {
    url: Option<String>,
    timeout: Duration,
}

/// The webhook location safe to print: scheme, host and port only.
pub fn redacted_destination(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => format!(
            "{}://{}{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or("?"),
            parsed.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(invalid webhook url)".to_string(),
    }
}

impl Notifier {
    /// A notifier for `url` (`None` or blank: notifications are recorded, not sent).
    pub fn new(url: Option<String>) -> Self {
        Self {
            url: url.filter(|u| !u.trim().is_empty()),
            timeout: Duration::from_secs(10),
        }
    }

    /// A notifier for the platform's configured webhook, if any.
    pub fn for_platform(platform: &Platform) -> Self {
        Self::new(platform.webhook_url().map(str::to_string))
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn is_configured(&self) -> bool {
        self.url.is_some()
    }

    /// Sends (when configured) and records. Never fails: problems end up in the record and log.
    pub async fn notify(
        &self,
        database: &Database,
        notification: &Notification,
        pipeline_run: Option<&str>,
    ) -> Delivery {
        let payload = notification.payload();
        let (status, destination, error) = match &self.url {
            None => (
                DeliveryStatus::NotConfigured,
                "none".to_string(),
                None::<String>,
            ),
            Some(url) => {
                let destination = redacted_destination(url);
                match self.post(url, &payload).await {
                    Ok(()) => (DeliveryStatus::Sent, destination, None),
                    Err(error) => {
                        tracing::warn!(%destination, %error, kind = notification.kind(), "notification not delivered");
                        (DeliveryStatus::Failed, destination, Some(error))
                    }
                }
            }
        };
        let delivery = Delivery {
            kind: notification.kind().to_string(),
            status,
            destination,
            error,
            summary: notification.summary(),
        };
        if let Err(error) = record(database, &delivery, &payload, pipeline_run).await {
            tracing::warn!(%error, "the notification could not be recorded");
        }
        delivery
    }

    async fn post(&self, url: &str, payload: &serde_json::Value) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|error| format!("HTTP client: {error}"))?;
        let response = client
            .post(url)
            .json(payload)
            .send()
            .await
            .map_err(|error| format!("request failed: {}", without_url(&error)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            Err(format!("the webhook answered {status}: {body}"))
        }
    }
}

/// A reqwest error message without the URL (webhook paths carry secrets).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), &redacted_destination(url.as_str()));
    }
    text
}

async fn record(
    database: &Database,
    delivery: &Delivery,
    payload: &serde_json::Value,
    pipeline_run: Option<&str>,
) -> Result<(), PipelineError> {
    sqlx::query(
        "INSERT INTO notifications (at_ms, kind, destination, status, error, payload, pipeline_run) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now_ms())
    .bind(delivery.kind.clone())
    .bind(delivery.destination.clone())
    .bind(delivery.status.as_str().to_string())
    .bind(delivery.error.clone())
    .bind(payload.to_string())
    .bind(pipeline_run.map(str::to_string))
    .execute(database.pool())
    .await?;
    Ok(())
}

/// A recorded notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    pub at_ms: i64,
    pub kind: String,
    pub destination: String,
    pub status: String,
    pub error: Option<String>,
    pub payload: serde_json::Value,
    pub pipeline_run: Option<String>,
}

/// The latest recorded notifications, newest first.
pub async fn list_notifications(
    database: &Database,
    limit: usize,
) -> Result<Vec<NotificationRecord>, PipelineError> {
    let rows = sqlx::query(
        "SELECT at_ms, kind, destination, status, error, payload, pipeline_run \
         FROM notifications ORDER BY at_ms DESC, id DESC LIMIT $1",
    )
    .bind(limit as i64)
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let payload: String = row.try_get("payload")?;
            Ok(NotificationRecord {
                at_ms: row.try_get("at_ms")?,
                kind: row.try_get("kind")?,
                destination: row.try_get("destination")?,
                status: row.try_get("status")?,
                error: row.try_get("error")?,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                pipeline_run: row.try_get("pipeline_run")?,
            })
        })
        .collect()
}
