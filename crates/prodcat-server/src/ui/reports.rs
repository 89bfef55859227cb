//! What the models, monitoring and data pages show from stored reports: a version's quality
//! pictures (confusion matrix, reliability diagram), the drift reports and their weekly figures,
//! the pipeline runs and their outcome, and sample products of a dataset class.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prodcat_catalogue::Permission;
use prodcat_domain::{CategoryCode, ContentHash, DatasetVersionId};
use prodcat_pipelines::{DriftReportSummary, PipelineRun, RunStatus};
use serde_json::{json, Value};

use super::charts::{line_chart, Series};
use super::{message, Session};
use crate::state::AppState;

/// The pictures a training or evaluation run stores that the models page shows.
const MODEL_PICTURES: [&str; 2] = ["confusion-system.svg", "reliability-system.svg"];

/// How many drift reports the weekly charts cover.
const CHART_REPORTS: usize = 26;

fn not_found(session: &Session, what: &str) -> Response {
    message(StatusCode::NOT_FOUND, Some(session), "Not found", what)
}

/// A stored document served with its own content policy: `policy` replaces the pages' (the
/// UI's header layer keeps a policy a handler has set).
fn document(bytes: Bytes, content_type: &'static str, policy: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        bytes,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    response
}

/// `GET /ui/models/{version}/pictures/{name}`: the confusion-matrix heat map or the reliability
/// diagram of the run that trained a version.
pub async fn model_picture(
    State(state): State<AppState>,
    session: Session,
    Path((version, name)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = session.refusal(Permission::Models).await {
        return refused;
    }
    if !MODEL_PICTURES.contains(&name.as_str()) {
        return not_found(
            &session,
            "Models have a confusion matrix and a reliability diagram only.",
        );
    }
    let database = &state.platform.database;
    let Ok(version) = prodcat_registry::resolve(database, &version).await else {
        return not_found(&session, "There is no such model version.");
    };
    let Some(run) = version.run_id else {
        return not_found(&session, "This version was not trained by a recorded run.");
    };
    let artifact = prodcat_registry::list_artifacts(database, &run)
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|artifact| artifact.name == name);
    let Some(artifact) = artifact else {
        return not_found(
            &session,
            "The run that trained this version stored no such picture.",
        );
    };
    match state.platform.objects.get(&artifact.object_key).await {
        Ok(bytes) => document(
            bytes,
            "image/svg+xml",
            "default-src 'none'; style-src 'unsafe-inline'",
        ),
        Err(error) => {
            tracing::error!(%error, key = artifact.object_key, "a model picture is unreadable");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&session),
                "Unavailable",
                "The picture could not be read from the object store; try again.",
            )
        }
    }
}

/// Which of a version's pictures its run stored, as (name, address) for the models page.
pub fn model_pictures(version: &str, stored: &[prodcat_registry::Artifact]) -> Vec<Value> {
    MODEL_PICTURES
        .iter()
        .filter(|name| stored.iter().any(|artifact| artifact.name == **name))
        .map(|name| {
            let title = if name.starts_with("confusion") {
                "Confusion matrix (test split)"
            } else {
                "Reliability diagram (test split)"
            };
            json!({ "name": title, "href": format!("/ui/models/{version}/pictures/{name}") })
        })
        .collect()
}

/// `GET /ui/monitoring/drift/{id}`: a stored drift report's page, shown framed in the
/// monitoring page. It has no script; its own styles are allowed and nothing else.
pub async fn drift_report(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = session.refusal(Permission::Models).await {
        return refused;
    }
    let Ok(check) = prodcat_pipelines::get_drift_report(&state.platform, &id).await else {
        return not_found(&session, "There is no such drift report.");
    };
    match prodcat_pipelines::drift_report_html(&state.platform, &check).await {
        Ok(html) => {
            let mut response = document(
                Bytes::from(html),
                "text/html; charset=utf-8",
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                 frame-ancestors 'self'; sandbox",
            );
            response.headers_mut().insert(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("SAMEORIGIN"),
            );
            response
        }
        Err(error) => {
            tracing::error!(%error, report = id, "a drift report page is unreadable");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&session),
                "Unavailable",
                "The report could not be read from the object store; try again.",
            )
        }
    }
}

/// When a report's figures were measured: the end of its window, or when it was made.
fn report_time(report: &DriftReportSummary) -> i64 {
    report
        .window
        .as_ref()
        .map_or(report.created_at_ms, |window| window.end_ms)
}

/// The monitoring page's drift part: the latest report, the weekly charts, the recent reports.
pub async fn drift_overview(state: &AppState) -> Value {
    let reports =
        match prodcat_pipelines::list_drift_reports(&state.platform.database, None, CHART_REPORTS)
            .await
        {
            Ok(reports) => reports,
            Err(error) => {
                tracing::warn!(%error, "drift reports unavailable");
                return Value::Null;
            }
        };
    let Some(latest) = reports.first() else {
        return Value::Null;
    };
    let mut chronological = reports.clone();
    chronological.reverse();
    let points = |value: &dyn Fn(&DriftReportSummary) -> Option<f64>| -> Vec<(i64, f64)> {
        chronological
            .iter()
            .filter_map(|report| Some((report_time(report), value(report)?)))
            .collect()
    };
    let f1_chart = line_chart(
        "Weighted F1 on labelled traffic, per report",
        &[
            Series {
                name: "weighted F1",
                colour: "#1f77b4",
                points: points(&|report| report.concept_current_f1),
                dashed: false,
            },
            Series {
                name: "reference F1",
                colour: "#7f7f7f",
                points: points(&|report| report.concept_reference_f1),
                dashed: true,
            },
        ],
    );
    let share_chart = line_chart(
        "Share of drifted features, per report",
        &[Series {
            name: "drifted share",
            colour: "#d62728",
            points: points(&|report| Some(report.drift_share)),
            dashed: false,
        }],
    );
    let listed: Vec<Value> = reports
        .iter()
        .take(8)
        .map(|report| {
            json!({
                "id": report.id,
                "when": prodcat_domain::format_utc_minutes(report_time(report)),
                "model": report.model_version,
                "source": report.source,
                "rows": report.current_rows,
                "datasetDrift": report.dataset_drift,
                "share": report.drift_share,
                "drifted": report.drifted_features,
                "tested": report.tested_features,
                "conceptDrift": report.concept_drift,
                "f1": report.concept_current_f1,
            })
        })
        .collect();
    json!({
        "latest": listed.first(),
        "reports": listed,
        "f1Chart": f1_chart,
        "shareChart": share_chart,
        "labelled": latest.labelled_rows,
    })
}

/// A retrain's outcome in a few words.
fn retrain_outcome(output: &Value) -> Option<String> {
    let promoted = output.get("promoted")?.as_bool()?;
    if let Some(skipped) = output.get("skipped").and_then(Value::as_str) {
        return Some(format!("no challenger: {skipped}"));
    }
    let f1 = |name: &str| {
        output
            .get(name)
            .and_then(Value::as_f64)
            .map_or("?".to_string(), |value| format!("{value:.3}"))
    };
    Some(format!(
        "challenger F1 {} vs champion {}: {}",
        f1("challengerF1"),
        f1("championF1"),
        if promoted { "promoted" } else { "not promoted" }
    ))
}

/// What a pipeline run ended with, in a few words.
fn run_outcome(run: &PipelineRun) -> String {
    match run.status {
        RunStatus::Running => return "running".to_string(),
        RunStatus::Failed => {
            return format!("failed: {}", run.error.as_deref().unwrap_or("no message"));
        }
        RunStatus::Succeeded => {}
    }
    let Some(output) = &run.output else {
        return "succeeded".to_string();
    };
    if let Some(decision) = output.get("decision") {
        let drift = decision.get("driftFound").and_then(Value::as_bool) == Some(true);
        let mut text = if drift { "drift found" } else { "no drift" }.to_string();
        if let Some(retrain) = output.get("retrain").filter(|r| !r.is_null()) {
            match retrain.get("result").and_then(retrain_outcome) {
                Some(result) => text.push_str(&format!("; retrained, {result}")),
                None => text.push_str("; retrain started"),
            }
        }
        return text;
    }
    retrain_outcome(output).unwrap_or_else(|| "succeeded".to_string())
}

/// The latest pipeline runs (weekly checks and retrains) with their outcome.
pub async fn pipeline_runs(state: &AppState) -> Vec<Value> {
    prodcat_pipelines::list_pipeline_runs(&state.platform.database, None, 10)
        .await
        .unwrap_or_default()
        .iter()
        .map(|run| {
            json!({
                "id": run.id,
                "pipeline": run.pipeline,
                "started": prodcat_domain::format_utc_minutes(run.started_at_ms),
                "status": run.status.as_str(),
                "trigger": run.triggered_by,
                "outcome": run_outcome(run),
            })
        })
        .collect()
}

/// How many sample products of a class the data page shows.
const CLASS_SAMPLES: usize = 12;

/// Sample products of one class of a dataset version, for the data page.
pub async fn class_samples(state: &AppState, version: &str, code: u16) -> Value {
    let (Ok(version), Ok(category)) = (
        DatasetVersionId::parse(version),
        CategoryCode::from_u16(code),
    ) else {
        return Value::Null;
    };
    let rows =
        prodcat_dataset::class_rows(&state.platform.database, &version, category, CLASS_SAMPLES)
            .await
            .unwrap_or_default();
    let samples: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "productId": row.product_id,
                "designation": row.designation,
                "image": row.image_hash.as_ref().map(|hash| format!("/ui/data/images/{hash}")),
                "split": row.split.as_str(),
            })
        })
        .collect();
    json!({ "code": code, "name": category.name(), "samples": samples })
}

/// `GET /ui/data/images/{hash}`: a thumbnail of a dataset photo, by its content hash.
pub async fn dataset_image(
    State(state): State<AppState>,
    session: Session,
    Path(hash): Path<String>,
) -> Response {
    if let Some(refused) = session.refusal(Permission::Models).await {
        return refused;
    }
    let Ok(hash) = ContentHash::parse(&hash) else {
        return not_found(&session, "That is not a photo's content hash.");
    };
    match state
        .platform
        .objects
        .get(&prodcat_storage::image_key(&hash))
        .await
    {
        Ok(bytes) => super::pages::thumbnail_response(bytes).await,
        Err(_) => not_found(&session, "There is no stored photo with that hash."),
    }
}
