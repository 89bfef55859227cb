//! Telling the team about model events (promotions, rollbacks, rollouts) through the
//! configured webhooks, off the request path.

use prodcat_pipelines::{Notification, Notifier};

use crate::state::AppState;

/// A model event to announce.
pub(crate) struct ModelEvent<'a> {
    /// `promoted`, `rolled-back`, `canary-started`, `canary-stopped`, `canary-rolled-back`,
    /// `shadow-started`, `shadow-stopped`.
    pub event: &'a str,
    pub alias: &'a str,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub actor: &'a str,
    pub reason: &'a str,
    /// The figures behind an automatic action.
    pub figures: Option<serde_json::Value>,
}

/// Sends a model event in the background (delivery and retries never delay the answer).
pub(crate) fn announce(state: &AppState, event: ModelEvent<'_>) {
    let notification = Notification::ModelEvent {
        event: event.event.to_string(),
        alias: event.alias.to_string(),
        from_version: event.from_version,
        to_version: event.to_version,
        actor: event.actor.to_string(),
        reason: event.reason.to_string(),
        automatic: event.figures.is_some(),
        figures: event.figures,
    };
    let notifier = Notifier::for_platform(&state.platform);
    let database = state.platform.database.clone();
    tokio::spawn(async move {
        notifier.notify(&database, &notification, None).await;
    });
}
