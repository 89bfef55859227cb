//! Live rollouts over HTTP (admins): start and stop a shadow or a canary, compare the serving
//! versions live, say which version each alias named at a given time; and the lineage of one
//! prediction (which version answered, on what, with which branch outputs).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prodcat_catalogue::prediction_log::{get_prediction, LoggedPrediction};
use prodcat_catalogue::Permission;
use prodcat_domain::CategoryCode;
use prodcat_registry::{GuardRails, NewRollout, RolloutKind, Stickiness};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::{
    AliasEventBody, AliasesAtBody, CategoryRef, ImageProfileBody, LiveBody, PredictionRecordBody,
    RolloutBody, RolloutList, RolloutRequest,
};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::middleware::AuditNote;
use crate::notifications::ModelEvent;
use crate::state::AppState;

fn with_note(mut response: Response, detail: String) -> Response {
    response.extensions_mut().insert(AuditNote {
        actor: None,
        detail,
    });
    response
}

fn rollout_of(
    kind: RolloutKind,
    version: String,
    request: RolloutRequest,
    actor: &str,
) -> Result<NewRollout, ApiError> {
    let defaults = GuardRails::default();
    let share = request.share.unwrap_or(match kind {
        RolloutKind::Shadow => 0.25,
        RolloutKind::Canary => 0.1,
    });
    Ok(NewRollout {
        kind,
        version,
        share,
        stickiness: Stickiness::parse(request.stickiness.as_deref().unwrap_or("product"))
            .map_err(|error| ApiError::invalid(error.to_string()))?,
        guard: GuardRails {
            max_error_rate_increase: request
                .max_error_rate_increase
                .unwrap_or(defaults.max_error_rate_increase),
            max_p99_increase: request
                .max_p99_increase
                .unwrap_or(defaults.max_p99_increase),
            max_f1_drop: request.max_f1_drop.unwrap_or(defaults.max_f1_drop),
            min_labels: request.min_labels.unwrap_or(defaults.min_labels),
            min_requests: request.min_requests.unwrap_or(defaults.min_requests),
        },
        actor: actor.to_string(),
        reason: request
            .reason
            .filter(|reason| !reason.trim().is_empty())
            .unwrap_or_else(|| format!("started through the API by {actor}")),
    })
}

async fn start(
    state: AppState,
    caller: Caller,
    kind: RolloutKind,
    version: String,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(Permission::Models)?;
    let request: RolloutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RolloutRequest::default()
    } else {
        crate::handlers::parse_json(&body)?
    };
    let rollout = rollout_of(kind, version, request, &caller.name)?;
    let started = prodcat_registry::start_rollout(&state.platform.database, &rollout).await?;
    if let Err(error) = state.predictor.refresh_rollouts().await {
        tracing::warn!(%error, "applying the rollout in this replica failed; the poller retries");
    }
    crate::notifications::announce(
        &state,
        ModelEvent {
            event: &format!("{}-started", kind.as_str()),
            alias: kind.alias(),
            from_version: None,
            to_version: Some(started.version.to_string()),
            actor: &caller.name,
            reason: &started.reason,
            figures: None,
        },
    );
    let detail = format!(
        "{} {} at {:.0} %",
        kind.as_str(),
        started.version,
        started.share * 100.0
    );
    Ok(with_note(
        Json(RolloutBody::of(&started)).into_response(),
        detail,
    ))
}

async fn stop(
    state: AppState,
    caller: Caller,
    kind: RolloutKind,
    query: StopQuery,
) -> Result<Response, ApiError> {
    caller.require(Permission::Models)?;
    let reason = query
        .reason
        .filter(|reason| !reason.trim().is_empty())
        .unwrap_or_else(|| format!("stopped through the API by {}", caller.name));
    let event =
        prodcat_registry::stop_rollout(&state.platform.database, kind, &caller.name, &reason, None)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no {} is running", kind.as_str())))?;
    if let Err(error) = state.predictor.refresh_rollouts().await {
        tracing::warn!(%error, "ending the rollout in this replica failed; the poller retries");
    }
    crate::notifications::announce(
        &state,
        ModelEvent {
            event: &format!("{}-stopped", kind.as_str()),
            alias: kind.alias(),
            from_version: event.from_version.as_ref().map(|v| v.to_string()),
            to_version: None,
            actor: &caller.name,
            reason: &reason,
            figures: None,
        },
    );
    Ok(with_note(
        Json(AliasEventBody::of(&event)).into_response(),
        format!("{} stopped", kind.as_str()),
    ))
}

/// Why a rollout is stopped.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct StopQuery {
    /// Recorded in the alias history.
    reason: Option<String>,
}

fn stop_query(
    query: Result<Query<StopQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StopQuery, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::invalid(rejection.body_text()))
}

/// Make a version score a share of live predictions off the request path (the caller always
/// gets the champion's answer); its results are logged beside the champion's.
#[utoipa::path(
    post,
    path = "/v1/models/{version}/shadow",
    tag = "rollouts",
    params(("version" = String, Path, description = "Version id, unique prefix, alias or latest")),
    request_body = RolloutRequest,
    responses(
        (status = 200, description = "The shadow in force", body = RolloutBody),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "Unknown version", body = ErrorBody),
        (status = 409, description = "Archived version", body = ErrorBody),
        (status = 422, description = "Share outside 0..1, unknown stickiness", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn start_shadow(
    State(state): State<AppState>,
    caller: Caller,
    Path(version): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    start(state, caller, RolloutKind::Shadow, version, body).await
}

/// Serve a share of live requests with a version instead of the champion, sticky per product
/// or client, rolled back automatically when it does worse than its guard rails allow.
#[utoipa::path(
    post,
    path = "/v1/models/{version}/canary",
    tag = "rollouts",
    params(("version" = String, Path, description = "Version id, unique prefix, alias or latest")),
    request_body = RolloutRequest,
    responses(
        (status = 200, description = "The canary in force", body = RolloutBody),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "Unknown version", body = ErrorBody),
        (status = 409, description = "Archived version", body = ErrorBody),
        (status = 422, description = "Share outside 0..1, unknown stickiness, bad guard rails", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn start_canary(
    State(state): State<AppState>,
    caller: Caller,
    Path(version): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    start(state, caller, RolloutKind::Canary, version, body).await
}

/// End the shadow.
#[utoipa::path(
    delete,
    path = "/v1/models/shadow",
    tag = "rollouts",
    params(StopQuery),
    responses(
        (status = 200, description = "The recorded move", body = AliasEventBody),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No shadow is running", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn stop_shadow(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<StopQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    stop(state, caller, RolloutKind::Shadow, stop_query(query)?).await
}

/// End the canary (the champion answers everything again).
#[utoipa::path(
    delete,
    path = "/v1/models/canary",
    tag = "rollouts",
    params(StopQuery),
    responses(
        (status = 200, description = "The recorded move", body = AliasEventBody),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No canary is running", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn stop_canary(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<StopQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    stop(state, caller, RolloutKind::Canary, stop_query(query)?).await
}

/// Window of the live comparison.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct LiveQuery {
    /// How far back, e.g. `15m`, `1h`, `7d` (default 1h).
    window: Option<String>,
}

/// Whether `text` is 1 to 6 digits (no leading zero) and one of the units s, m, h, d, w: the
/// windows the OpenAPI document states.
fn is_whole_duration(text: &str) -> bool {
    let Some(digits) = text.strip_suffix(['s', 'm', 'h', 'd', 'w']) else {
        return false;
    };
    (1..=6).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Compare the versions serving live traffic: requests, errors, agreement with the champion,
/// confidence, automatic share, latency and, once reviewers' labels arrive, weighted F1.
#[utoipa::path(
    get,
    path = "/v1/models/live",
    tag = "rollouts",
    params(LiveQuery),
    responses(
        (status = 200, body = LiveBody),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 422, description = "Bad window", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn live(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<LiveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LiveBody>, ApiError> {
    caller.require(Permission::Models)?;
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let window = query.window.as_deref().unwrap_or("1h");
    if !is_whole_duration(window) {
        return Err(ApiError::invalid(format!(
            "window {window:?} is not a whole number and a unit (s, m, h, d or w), like 15m or 7d"
        )));
    }
    let window = prodcat_pipelines::parse_duration_ms(window)?;
    let since = prodcat_storage::now_ms() - window;
    let comparison = prodcat_platform::live::compare(&state.platform, since).await?;
    let rollouts = prodcat_registry::active_rollouts(&state.platform.database).await?;
    Ok(Json(LiveBody::of(&comparison, &rollouts)))
}

/// The rollouts in force.
#[utoipa::path(
    get,
    path = "/v1/models/rollouts",
    tag = "rollouts",
    responses(
        (status = 200, body = RolloutList),
        (status = 403, description = "Admins only", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn rollouts(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RolloutList>, ApiError> {
    caller.require(Permission::Models)?;
    let rollouts = prodcat_registry::active_rollouts(&state.platform.database).await?;
    Ok(Json(RolloutList {
        rollouts: rollouts.iter().map(RolloutBody::of).collect(),
    }))
}

/// A point in time.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AtQuery {
    /// An RFC 3339 time (`2026-11-30T12:00:00Z`), a date, `now`, a duration back from now
    /// (`7d`) or Unix milliseconds.
    at: Option<String>,
}

/// Which version the champion, canary and shadow aliases named at a given time.
#[utoipa::path(
    get,
    path = "/v1/models/aliases-at",
    tag = "rollouts",
    params(AtQuery),
    responses(
        (status = 200, body = AliasesAtBody),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 422, description = "Bad time", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn aliases_at(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AtQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AliasesAtBody>, ApiError> {
    caller.require(Permission::Models)?;
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let at = prodcat_pipelines::parse_time_ms(
        query.at.as_deref().unwrap_or("now"),
        prodcat_storage::now_ms(),
    )?;
    let database = &state.platform.database;
    let named = |alias: &'static str| async move {
        prodcat_registry::alias_at(database, alias, at)
            .await
            .map(|version| version.map(|v| v.to_string()))
    };
    Ok(Json(AliasesAtBody {
        at_ms: at,
        champion: named(prodcat_registry::CHAMPION).await?,
        canary: named(prodcat_registry::CANARY).await?,
        shadow: named(prodcat_registry::SHADOW).await?,
    }))
}

fn category(code: i64) -> Option<CategoryRef> {
    u16::try_from(code)
        .ok()
        .and_then(|code| CategoryCode::from_u16(code).ok())
        .map(CategoryRef::of)
}

fn record_body(row: LoggedPrediction) -> PredictionRecordBody {
    let image = row.image_width.map(|width| ImageProfileBody {
        width: Some(width),
        height: row.image_height,
        mean_brightness: row.image_brightness,
        white_border_ratio: row.image_border_ratio,
    });
    PredictionRecordBody {
        prediction_id: row.prediction_id.unwrap_or_default(),
        at_ms: row.at_ms,
        model_version: row.model_version,
        serving_role: row.serving_role,
        source: row.source,
        client: row.client,
        product_id: row.product_id,
        text: row.text,
        description_empty: row.description_empty,
        image,
        category: category(row.predicted_code).unwrap_or(CategoryRef {
            code: 0,
            name: String::new(),
        }),
        confidence: row.confidence,
        automatic: row.automatic,
        branches: row.branches,
        branch_outputs: row
            .branch_outputs
            .and_then(|text| serde_json::from_str(&text).ok()),
        latency_us: row.latency_us,
        label: row.label_code.and_then(category),
        shadow: None,
    }
}

/// Which version answered a prediction, on which inputs' profile, with which branch outputs
/// (and the shadow's answer to the same request, when there was one). Admins and reviewers see
/// every prediction; a client sees its own.
#[utoipa::path(
    get,
    path = "/v1/predictions/{id}",
    tag = "prediction",
    params(("id" = String, Path, description = "The predictionId of an answer", pattern = "^pred-[0-9a-f]{16}$")),
    responses(
        (status = 200, body = PredictionRecordBody),
        (status = 404, description = "Unknown prediction (or another client's)", body = ErrorBody),
        (status = 422, description = "Not a prediction id", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn prediction(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PredictionRecordBody>, ApiError> {
    if !prodcat_catalogue::prediction_log::is_prediction_id(&id) {
        return Err(ApiError::invalid(format!(
            "{id:?} is not a prediction id (pred- and 16 hex digits)"
        )));
    }
    let database = &state.platform.database;
    let not_found = || ApiError::not_found(format!("prediction {id} does not exist"));
    let row = get_prediction(database, &id).await?.ok_or_else(not_found)?;
    let sees_all = caller.role.allows(Permission::Models) || caller.role.allows(Permission::Review);
    if !sees_all && row.client.as_deref() != Some(caller.name.as_str()) {
        return Err(not_found());
    }
    let shadow = get_prediction(database, &format!("{id}-shadow")).await?;
    let mut body = record_body(row);
    body.shadow = shadow.map(|row| Box::new(record_body(row)));
    Ok(Json(body))
}
