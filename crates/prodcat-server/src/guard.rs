//! The canary's guard rails, checked by every replica's poller: when the canary does worse
//! than the champion by more than its rails allow (error rate, p99 latency, or weighted F1 on
//! reviewed products with enough labels), it is rolled back: the canary alias is removed with
//! the reason and the figures (alias history), the audit log records it, and the webhooks are
//! told. Replicas that see the same verdict find the canary already gone.

use prodcat_catalogue::audit::{self, AuditEntry};
use prodcat_registry::RolloutKind;

use crate::notifications::{announce, ModelEvent};
use crate::state::AppState;

/// The actor automatic rollbacks are recorded under.
pub(crate) const GUARD_ACTOR: &str = "guard-rails";

/// How far back the canary's traffic is judged (at most; never before it started).
const WINDOW_MS: i64 = 15 * 60_000;

/// Rolls the canary back when its guard rails say so.
pub(crate) async fn check_canary(state: &AppState) {
    let Some(router) = state.predictor.rollouts() else {
        return;
    };
    let Some(canary) = router.canary() else {
        return;
    };
    let rollout = &canary.rollout;
    let since = rollout
        .started_at_ms
        .max(prodcat_storage::now_ms() - WINDOW_MS);
    let comparison = match prodcat_platform::live::compare(&state.platform, since).await {
        Ok(comparison) => comparison,
        Err(error) => {
            tracing::warn!(%error, "checking the canary's guard rails failed");
            return;
        }
    };
    let Some((reason, figures)) =
        prodcat_platform::live::guard_verdict(rollout, &rollout.guard, &comparison)
    else {
        return;
    };
    let reason = format!("automatic rollback: {reason}");
    let stopped = prodcat_registry::stop_rollout(
        &state.platform.database,
        RolloutKind::Canary,
        GUARD_ACTOR,
        &reason,
        Some(figures.clone()),
    )
    .await;
    match stopped {
        Ok(Some(event)) => {
            tracing::warn!(version = %rollout.version, %reason, "canary rolled back");
            metrics::counter!("prodcat_canary_rollbacks_total").increment(1);
            let entry = AuditEntry {
                id: 0,
                at_ms: 0,
                actor: GUARD_ACTOR.to_string(),
                role: "system".to_string(),
                action: "ROLLBACK canary".to_string(),
                target: format!("/v1/models/{}/canary", rollout.version),
                detail: format!("{reason}; figures: {figures}"),
                client_address: "internal".to_string(),
                status: 200,
            };
            if let Err(error) = audit::record(&state.platform.database, &entry).await {
                tracing::error!(%error, "recording the canary rollback in the audit log failed");
            }
            announce(
                state,
                ModelEvent {
                    event: "canary-rolled-back",
                    alias: prodcat_registry::CANARY,
                    from_version: event.from_version.as_ref().map(|v| v.to_string()),
                    to_version: None,
                    actor: GUARD_ACTOR,
                    reason: &reason,
                    figures: Some(figures),
                },
            );
            if let Err(error) = state.predictor.refresh_rollouts().await {
                tracing::warn!(%error, "ending the canary in this replica failed; the poller retries");
            }
        }
        Ok(None) => {}
        Err(error) => tracing::error!(%error, "rolling the canary back failed"),
    }
}
