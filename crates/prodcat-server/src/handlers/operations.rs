//! Operations routes: the landing page, liveness and readiness, Prometheus metrics, the OpenAPI
//! document and Swagger UI, and the audit log for admins.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::{AuditEntryBody, AuditList, HealthBody, ReadyBody};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use prodcat_catalogue::audit::{self, AuditFilter};
use prodcat_catalogue::Permission;

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = HealthBody)))]
pub async fn healthz(State(state): State<AppState>) -> Json<HealthBody> {
    Json(HealthBody {
        status: "ok".to_string(),
        uptime_seconds: state.started.elapsed().as_secs(),
    })
}

/// Whether a request may see operational details (`/metrics`, the details of `/readyz`): it
/// comes from a private network, carries the scrapers' token, or an admin's token.
fn may_see_operations(state: &AppState, request_parts: &OperationsCaller) -> bool {
    let private = request_parts.address.0.is_some_and(|address| {
        state
            .settings
            .private_networks
            .iter()
            .any(|net| net.contains(&address))
    });
    let scraper = match (&state.metrics_token, &request_parts.bearer) {
        (Some(expected), Some(given)) => constant_time_equal(expected.as_bytes(), given.as_bytes()),
        _ => false,
    };
    let admin = request_parts
        .caller
        .as_ref()
        .is_some_and(|caller| caller.role.allows(Permission::Audit));
    private || scraper || admin
}

pub(crate) fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the operations routes need to know about a request.
pub struct OperationsCaller {
    address: crate::middleware::ClientAddress,
    bearer: Option<String>,
    caller: Option<Caller>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OperationsCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            address: parts
                .extensions
                .get::<crate::middleware::ClientAddress>()
                .copied()
                .unwrap_or(crate::middleware::ClientAddress(None)),
            bearer: parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim().to_string()),
            caller: parts
                .extensions
                .get::<crate::auth::Authentication>()
                .and_then(crate::auth::Authentication::caller)
                .cloned(),
        })
    }
}

/// Ready to serve: a model is loaded and the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 503, description = "Not ready (no model, or the database does not answer)", body = ReadyBody),
    ),
)]
pub async fn readyz(State(state): State<AppState>, who: OperationsCaller) -> Response {
    let database_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.platform.database.ping()).await,
        Ok(Ok(()))
    );
    let model = state
        .model_service()
        .current()
        .map(|m| m.version.to_string());
    let ready = database_ok && model.is_some();
    // Details (versions, load errors) only for the private network, scrapers and admins.
    let detailed = may_see_operations(&state, &who);
    let body = ReadyBody {
        ready,
        model_version: model.filter(|_| detailed),
        database: if database_ok { "ok" } else { "unreachable" }.to_string(),
        model_load_error: state
            .model_service()
            .last_failure()
            .filter(|_| detailed)
            .map(|failure| format!("{}: {}", failure.version, failure.error)),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus exposition format", content_type = "text/plain"),
        (status = 403, description = "Not from the private network, without the scrapers' token or an admin's", body = ErrorBody),
    ),
)]
pub async fn metrics(State(state): State<AppState>, who: OperationsCaller) -> Response {
    if !may_see_operations(&state, &who) {
        return ApiError::forbidden(
            "metrics are served to the private network, to scrapers with the metrics token and \
             to admins",
        )
        .into_response();
    }
    let mut text = state
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    // The latest drift report's scores, read from the database so that reports written by
    // `prodcat drift`, a worker or a scheduled pipeline all show here.
    let drift = prodcat_pipelines::latest_drift_gauges(&state.platform.database).await;
    // The exposition format wants the series of one metric together, after its TYPE line.
    let mut grouped: std::collections::BTreeMap<String, Vec<(String, f64)>> = Default::default();
    for (series, value) in drift {
        let name = series.split('{').next().unwrap_or(&series).to_string();
        grouped.entry(name).or_default().push((series, value));
    }
    for (name, series) in grouped {
        text.push_str(&format!("# TYPE {name} gauge\n"));
        for (series, value) in series {
            text.push_str(&format!("{series} {value}\n"));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The OpenAPI document of this API.
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
        .into_response()
}

/// Swagger UI (or a plain page saying how to install it).
pub async fn docs(State(state): State<AppState>) -> Html<String> {
    Html(state.swagger.page())
}

/// Swagger UI's static files.
pub async fn docs_file(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.swagger.file(&name) {
        Some((bytes, content_type)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            bytes,
        )
            .into_response(),
        None => ApiError::not_found(format!("no documentation file {name:?}")).into_response(),
    }
}

/// The landing page.
pub async fn landing(State(state): State<AppState>) -> Html<String> {
    let serving = state
        .model_service()
        .current()
        .map(|m| m.version.to_string())
        .unwrap_or_else(|| "none yet".to_string());
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>prodcat</title>
<style>body{{font-family:sans-serif;max-width:48rem;margin:3rem auto;line-height:1.5}}code{{background:#f3f3f3;padding:0 .2rem}}</style></head>
<body>
<h1>prodcat</h1>
<p>Product classification service. Model in service: <code>{serving}</code>.</p>
<ul>
<li><a href="/ui">/ui</a>: the admin web UI (sign in with a prodcat account)</li>
<li><a href="/docs">/docs</a>: the API, interactive (Swagger UI)</li>
<li><a href="/openapi.json">/openapi.json</a>: the OpenAPI document</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="/healthz">/healthz</a> and <a href="/readyz">/readyz</a>: health and readiness</li>
</ul>
<p>Get a token: <code>prodcat users add NAME --role admin</code>, then
<code>curl -d grant_type=password -d username=NAME -d password=... http://HOST/v1/auth/token</code>.</p>
</body></html>
"#
    ))
}

/// Query of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AuditQuery {
    /// Only entries at or after this time (Unix milliseconds).
    #[serde(default, deserialize_with = "crate::handlers::whole::option")]
    since_ms: Option<i64>,
    /// Only this actor.
    actor: Option<String>,
    /// At most this many entries (default 100, at most 10,000).
    #[param(minimum = 1, maximum = 10000)]
    #[serde(default, deserialize_with = "crate::handlers::whole::option")]
    limit: Option<i64>,
}

/// The audit log of writes, newest first (admins).
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "security",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditList),
        (status = 403, description = "Admins only", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    caller.require(Permission::Audit)?;
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let entries = audit::list(
        &state.platform.database,
        &AuditFilter {
            since_ms: query.since_ms,
            actor: query.actor,
            limit: crate::handlers::in_range("limit", query.limit, 100, 1, 10_000)?,
        },
    )
    .await?;
    Ok(Json(AuditList {
        entries: entries
            .into_iter()
            .map(|entry| AuditEntryBody {
                id: entry.id,
                at_ms: entry.at_ms,
                actor: entry.actor,
                role: entry.role,
                action: entry.action,
                target: entry.target,
                detail: entry.detail,
                client_address: entry.client_address,
                status: entry.status,
            })
            .collect(),
    }))
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /docs for the API")
}
