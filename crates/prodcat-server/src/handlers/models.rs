//! The model registry over HTTP (admins): list versions, promote one to champion under the
//! promotion policy (both models re-scored on the same set now; `force` with a reason
//! overrides), roll the champion back. A move swaps the model in service at once.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prodcat_pipelines::PlatformRescorer;
use prodcat_registry::{PromotionOutcome, PromotionPolicy, PromotionRequest, CHAMPION};

use crate::api::{
    AliasEventBody, ModelList, ModelVersionBody, PromoteRequest, PromotionResponse, RollbackRequest,
};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::handlers::JsonBody;
use crate::middleware::AuditNote;
use crate::state::AppState;
use prodcat_catalogue::Permission;
use prodcat_platform::RefreshOutcome;

/// Model versions, newest first, with their aliases and which one this server serves.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    responses(
        (status = 200, body = ModelList),
        (status = 403, description = "Admins only", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ModelList>, ApiError> {
    caller.require(Permission::Models)?;
    let versions = prodcat_registry::list_versions(&state.platform.database).await?;
    let serving = state
        .model_service()
        .current()
        .map(|m| m.version.to_string());
    Ok(Json(ModelList {
        versions: versions
            .iter()
            .map(|version| ModelVersionBody {
                id: version.id.to_string(),
                created_at_ms: version.created_at_ms,
                dataset_version: version.dataset_version.as_ref().map(|d| d.to_string()),
                aliases: version.aliases.clone(),
                status: version.status.as_str().to_string(),
                summary_metrics: version.summary_metrics.clone(),
                created_by: version.created_by.clone(),
                note: version.note.clone(),
                serving: serving.as_deref() == Some(version.id.as_str()),
            })
            .collect(),
        serving,
    }))
}

/// Swaps to the champion now; a version that fails to load is reported in the log and metrics
/// and the previous model keeps serving.
async fn swap_now(state: &AppState) -> Option<String> {
    match state.model_service().refresh().await {
        Ok(RefreshOutcome::Failed(failure)) => {
            tracing::error!(version = %failure.version, error = %failure.error, "the new champion failed to load");
        }
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "checking the champion after a move failed"),
    }
    state.pending_wakeup.notify_one();
    state
        .model_service()
        .current()
        .map(|m| m.version.to_string())
}

fn note(mut response: Response, detail: String) -> Response {
    response.extensions_mut().insert(AuditNote {
        actor: None,
        detail,
    });
    response
}

/// Promote a version to champion under the promotion policy.
#[utoipa::path(
    post,
    path = "/v1/models/{version}/promote",
    tag = "models",
    params(("version" = String, Path, description = "Version id, unique prefix, alias or latest")),
    request_body = PromoteRequest,
    responses(
        (status = 200, description = "The outcome (a refusal by the policy is an outcome too)", body = PromotionResponse),
        (status = 404, description = "Unknown version", body = ErrorBody),
        (status = 409, description = "Already the champion, archived", body = ErrorBody),
        (status = 422, description = "Force without a reason, bad evaluation set", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Path(version): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(Permission::Models)?;
    let request: PromoteRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PromoteRequest::default()
    } else {
        crate::handlers::parse_json(&body)?
    };
    let database = &state.platform.database;
    let challenger = prodcat_registry::resolve(database, &version).await?;
    let evaluation_set = request.evaluation_set.clone().or_else(|| {
        challenger
            .dataset_version
            .as_ref()
            .map(|dataset| format!("{dataset}:test"))
    });
    let promotion = PromotionRequest {
        alias: CHAMPION.to_string(),
        version: challenger.id.to_string(),
        actor: caller.name.clone(),
        reason: request
            .reason
            .clone()
            .unwrap_or_else(|| format!("promoted through the API by {}", caller.name)),
        force: request.force.unwrap_or(false),
        evaluation_set,
        policy: PromotionPolicy::default(),
    };
    if promotion.force
        && request
            .reason
            .as_deref()
            .is_none_or(|r| r.trim().is_empty())
    {
        return Err(ApiError::invalid("force needs a reason"));
    }
    let rescorer = PlatformRescorer {
        platform: &state.platform,
    };
    let outcome = prodcat_registry::promote(database, &promotion, &rescorer).await?;
    let serving = if outcome.moved() {
        swap_now(&state).await
    } else {
        state
            .model_service()
            .current()
            .map(|m| m.version.to_string())
    };
    let name = match &outcome {
        PromotionOutcome::FirstVersion { .. } => "firstVersion",
        PromotionOutcome::Promoted { .. } => "promoted",
        PromotionOutcome::Forced { .. } => "forced",
        PromotionOutcome::Refused { .. } => "refused",
    };
    let decision = outcome
        .decision()
        .and_then(|decision| serde_json::to_value(decision).ok());
    if let Some(event) = outcome.event() {
        crate::notifications::announce(
            &state,
            crate::notifications::ModelEvent {
                event: "promoted",
                alias: CHAMPION,
                from_version: event.from_version.as_ref().map(|v| v.to_string()),
                to_version: event.to_version.as_ref().map(|v| v.to_string()),
                actor: &caller.name,
                reason: &event.reason,
                figures: None,
            },
        );
    }
    let detail = format!("{} {name}", challenger.id);
    Ok(note(
        Json(PromotionResponse {
            outcome: name.to_string(),
            moved: outcome.moved(),
            decision,
            event: outcome.event().map(AliasEventBody::of),
            serving,
        })
        .into_response(),
        detail,
    ))
}

/// Move the champion back to the version before its last move.
#[utoipa::path(
    post,
    path = "/v1/models/rollback",
    tag = "models",
    request_body = RollbackRequest,
    responses(
        (status = 200, body = PromotionResponse),
        (status = 409, description = "Nothing to roll back to", body = ErrorBody),
        (status = 422, description = "No reason", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<RollbackRequest>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Models)?;
    let reason = request
        .reason
        .filter(|reason| !reason.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("a rollback needs a reason"))?;
    let event =
        prodcat_registry::rollback(&state.platform.database, CHAMPION, &caller.name, &reason)
            .await?;
    let serving = swap_now(&state).await;
    crate::notifications::announce(
        &state,
        crate::notifications::ModelEvent {
            event: "rolled-back",
            alias: CHAMPION,
            from_version: event.from_version.as_ref().map(|v| v.to_string()),
            to_version: event.to_version.as_ref().map(|v| v.to_string()),
            actor: &caller.name,
            reason: &reason,
            figures: None,
        },
    );
    let detail = format!(
        "champion rolled back to {}",
        event
            .to_version
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default()
    );
    Ok(note(
        Json(PromotionResponse {
            outcome: "rolledBack".to_string(),
            moved: true,
            decision: None,
            event: Some(AliasEventBody::of(&event)),
            serving,
        })
        .into_response(),
        detail,
    ))
}
