//! Notifications: Slack-compatible webhooks (`{"text": ..., "blocks": [...]}`, which Slack,
//! Mattermost, Rocket.Chat and most chat tools accept) when drift is found, when a retraining
//! ends, when an alias moves (promotion, rollback) and when a canary or shadow starts, stops or
//! is rolled back. Each delivery is signed when a secret is configured: `X-Prodcat-Timestamp`
//! (Unix seconds), `X-Prodcat-Delivery` (a unique id) and `X-Prodcat-Signature:
//! sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, so a receiver can check the origin and
//! refuse a replay (an old timestamp or a delivery id seen before). A failed delivery is retried
//! with backoff; every attempt is recorded in the `notifications` table, and a notification that
//! cannot be delivered is logged and recorded, never fatal to what sent it.

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
    /// An alias moved: a promotion, a rollback, a canary or shadow started or stopped.
    ModelEvent {
        /// `promoted`, `rolled-back`, `canary-started`, `canary-stopped`, `canary-rolled-back`,
        /// `shadow-started`, `shadow-stopped`.
        event: String,
        alias: String,
        from_version: Option<String>,
        to_version: Option<String>,
        actor: String,
        reason: String,
        /// Whether a guard rail did it (no person).
        automatic: bool,
        /// The figures behind an automatic action.
        figures: Option<serde_json::Value>,
    },
}

impl Notification {
    pub fn kind(&self) -> &'static str {
        match self {
            Notification::DriftFound { .. } => "drift-found",
            Notification::RetrainingEnded { .. } => "retraining-ended",
            Notification::ModelEvent { .. } => "model-event",
        }
    }

    /// The one-line summary (the payload's `text`, shown by chat tools in notifications).
    pub fn summary(&self) -> String {
        if let Some(summary) = self.model_event_summary() {
            return summary;
        }
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
            Notification::ModelEvent { .. } => String::new(),
        }
    }

    /// The one-line summary of a model event.
    fn model_event_summary(&self) -> Option<String> {
        let Notification::ModelEvent {
            event,
            alias,
            from_version,
            to_version,
            actor,
            reason,
            automatic,
            ..
        } = self
        else {
            return None;
        };
        let version = |value: &Option<String>| value.clone().unwrap_or_else(|| "none".to_string());
        Some(format!(
            "prodcat: {event} ({alias}: {} -> {}) by {actor}{}: {reason}",
            version(from_version),
            version(to_version),
            if *automatic { " (automatic)" } else { "" }
        ))
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
            Notification::ModelEvent { figures, .. } => {
                if let Some(figures) = figures {
                    details.push(format!("figures: `{figures}`"));
                }
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

/// Sends notifications to the configured webhooks (or nowhere, when none is).
#[derive(Clone)]
pub struct Notifier {
    urls: Vec<String>,
    secret: Option<Vec<u8>>,
    timeout: Duration,
    attempts: u32,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "destinations",
                &self
                    .urls
                    .iter()
                    .map(|url| redacted_destination(url))
                    .collect::<Vec<_>>(),
            )
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
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

/// The `X-Prodcat-Signature` value of a delivery: `sha256=` and the hex HMAC-SHA256 of
/// `"<timestamp>.<body>"` with `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| {
        <hmac::Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new(&Default::default())
    });
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

impl Notifier {
    /// A notifier for `url` (`None` or blank: notifications are recorded, not sent), unsigned.
    pub fn new(url: Option<String>) -> Self {
        Self::to_all(url.into_iter().collect(), None)
    }

    /// A notifier for every URL in `urls`, signing with `secret` when given.
    pub fn to_all(urls: Vec<String>, secret: Option<Vec<u8>>) -> Self {
        Self {
            urls: urls.into_iter().filter(|u| !u.trim().is_empty()).collect(),
            secret: secret.filter(|secret| !secret.is_empty()),
            timeout: Duration::from_secs(10),
            attempts: 3,
        }
    }

    /// A notifier for the platform's configured webhooks and signing secret.
    pub fn for_platform(platform: &Platform) -> Self {
        Self::to_all(
            platform.webhook_urls().to_vec(),
            platform.webhook_secret().map(<[u8]>::to_vec),
        )
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Tries each delivery at most this many times (with 0.5 s, 1 s, ... between).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    pub fn is_configured(&self) -> bool {
        !self.urls.is_empty()
    }

    /// Sends to every webhook (when configured) and records each delivery. Never fails:
    /// problems end up in the records and the log. Returns the first webhook's delivery (or
    /// the record of a notification with nowhere to go).
    pub async fn notify(
        &self,
        database: &Database,
        notification: &Notification,
        pipeline_run: Option<&str>,
    ) -> Delivery {
        let payload = notification.payload();
        let body = payload.to_string();
        let event_id = format!("evt-{}", prodcat_domain::unique_hex16("notification"));
        let mut deliveries = Vec::new();
        if self.urls.is_empty() {
            deliveries.push((
                Delivery {
                    kind: notification.kind().to_string(),
                    status: DeliveryStatus::NotConfigured,
                    destination: "none".to_string(),
                    error: None,
                    summary: notification.summary(),
                },
                0,
            ));
        }
        for url in &self.urls {
            let destination = redacted_destination(url);
            let (result, attempts) = self
                .deliver(url, &body, notification.kind(), &event_id)
                .await;
            if let Err(error) = &result {
                tracing::warn!(%destination, %error, kind = notification.kind(), "notification not delivered");
            }
            deliveries.push((
                Delivery {
                    kind: notification.kind().to_string(),
                    status: if result.is_ok() {
                        DeliveryStatus::Sent
                    } else {
                        DeliveryStatus::Failed
                    },
                    destination,
                    error: result.err(),
                    summary: notification.summary(),
                },
                attempts,
            ));
        }
        for (delivery, attempts) in &deliveries {
            let recorded = record(
                database,
                delivery,
                &payload,
                pipeline_run,
                (&event_id, *attempts),
            )
            .await;
            if let Err(error) = recorded {
                tracing::warn!(%error, "the notification could not be recorded");
            }
        }
        deliveries.swap_remove(0).0
    }

    /// Posts with retries; returns the outcome and the number of attempts.
    async fn deliver(
        &self,
        url: &str,
        body: &str,
        kind: &str,
        event_id: &str,
    ) -> (Result<(), String>, i64) {
        let mut last = Err("not attempted".to_string());
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << (attempt - 1))).await;
            }
            last = self.post(url, body, kind, event_id).await;
            match &last {
                Ok(()) => return (Ok(()), i64::from(attempt) + 1),
                Err(error) if error.starts_with("refused:") => {
                    return (last.clone(), i64::from(attempt) + 1)
                }
                Err(_) => {}
            }
        }
        (last, i64::from(self.attempts))
    }

    async fn post(&self, url: &str, body: &str, kind: &str, event_id: &str) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|error| format!("HTTP client: {error}"))?;
        let timestamp = now_ms() / 1000;
        let mut request = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-prodcat-event", kind)
            .header("x-prodcat-delivery", event_id)
            .header("x-prodcat-timestamp", timestamp.to_string())
            .body(body.to_string());
        if let Some(secret) = &self.secret {
            request = request.header(
                "x-prodcat-signature",
                signature(secret, timestamp, body.as_bytes()),
            );
        }
        let response = request
            .send()
            .await
            .map_err(|error| format!("request failed: {}", without_url(&error)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(200).collect();
            // A 4xx other than 408 and 429 will not change on a retry.
            let permanent = status.is_client_error()
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
            Err(format!(
                "{}the webhook answered {status}: {text}",
                if permanent { "refused: " } else { "" }
            ))
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
    (event_id, attempts): (&str, i64),
) -> Result<(), PipelineError> {
    sqlx::query(
        "INSERT INTO notifications (at_ms, kind, destination, status, error, payload, \
         pipeline_run, event_id, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(now_ms())
    .bind(delivery.kind.clone())
    .bind(delivery.destination.clone())
    .bind(delivery.status.as_str().to_string())
    .bind(delivery.error.clone())
    .bind(payload.to_string())
    .bind(pipeline_run.map(str::to_string))
    .bind(event_id.to_string())
    .bind(attempts)
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
