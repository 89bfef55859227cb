//! The weekly check: a drift report of the champion over the last window of its prediction log
//! (data drift by the per-feature tests, concept drift from reviewed labels), a decision, a
//! notification when drift is found, and the retrain pipeline when the decision says so.

use serde::{Deserialize, Serialize};

use crate::drift_check::{check_prediction_log, DriftCheckOptions};
use crate::notify::{Delivery, Notification};
use crate::pipeline_run::{list_pipeline_runs, PipelineExecution, RetryPolicy, RunStatus};
use crate::pipelines::{run_retrain_pipeline, PipelineName, PipelineRequest, StartMode};
use prodcat_platform::Platform;

use crate::notify::Notifier;
use crate::retrain::RetrainOutput;
use crate::window::{format_ms, parse_duration_ms, DriftWindow};
use crate::PipelineError;

/// Parameters of a weekly check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WeeklyCheckParameters {
    /// The model to check (an alias, id or prefix).
    pub model: String,
    /// Length of the window, ending at `until_ms` (`7d`).
    pub window: String,
    /// End of the window; fixed when the run starts (now), so a resumed run checks the same one.
    pub until_ms: Option<i64>,
    pub drift: DriftCheckOptions,
    /// Start the retrain pipeline when drift is found.
    pub retrain: bool,
    /// Parameters handed to the retrain pipeline.
    pub retrain_parameters: serde_json::Value,
}

impl Default for WeeklyCheckParameters {
    fn default() -> Self {
        Self {
            model: "champion".to_string(),
            window: "7d".to_string(),
            until_ms: None,
            drift: DriftCheckOptions::default(),
            retrain: true,
            retrain_parameters: serde_json::Value::Object(Default::default()),
        }
    }
}

/// Output of the drift-report step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftStepOutput {
    pub model_version: String,
    pub window: DriftWindow,
    /// No prediction in the window: nothing to judge.
    pub no_traffic: bool,
    pub report_id: Option<String>,
    pub window_rows: usize,
    pub labelled_rows: usize,
    pub dataset_drift: bool,
    pub share_of_drifted_features: f64,
    pub drifted_features: Vec<String>,
    pub tested_features: usize,
    pub concept_drift: Option<bool>,
    pub concept_current_f1: Option<f64>,
    pub concept_reference_f1: Option<f64>,
}

/// Output of the decide step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub drift_found: bool,
    pub retrain: bool,
    pub reasons: Vec<String>,
}

/// Output of the retrain step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrainStepOutput {
    pub run_id: String,
    pub status: RunStatus,
    pub result: Option<RetrainOutput>,
}

/// What a weekly check produced (the run's output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeeklyCheckOutput {
    pub drift: DriftStepOutput,
    pub decision: Decision,
    pub notification: Option<Delivery>,
    pub retrain: Option<RetrainStepOutput>,
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

async fn drift_step(
    platform: &Platform,
    parameters: &WeeklyCheckParameters,
    window: DriftWindow,
) -> Result<DriftStepOutput, PipelineError> {
    let version = prodcat_registry::resolve(&platform.database, &parameters.model).await?;
    match check_prediction_log(platform, version.id.as_str(), window, &parameters.drift).await {
        Ok(check) => {
            let concept = check.report.concept_drift.as_ref();
            Ok(DriftStepOutput {
                model_version: check.model_version.clone(),
                window,
                no_traffic: false,
                report_id: Some(check.id.clone()),
                window_rows: check.window_rows,
                labelled_rows: check.labelled_rows,
                dataset_drift: check.report.dataset_drift,
                share_of_drifted_features: check.report.share_of_drifted_columns,
                drifted_features: check.drifted_features(),
                tested_features: check.report.columns.len(),
                concept_drift: concept.map(|c| c.drifted),
                concept_current_f1: concept.map(|c| c.current_f1),
                concept_reference_f1: concept.map(|c| c.reference_f1),
            })
        }
        Err(PipelineError::NoTraffic { .. }) => Ok(DriftStepOutput {
            model_version: version.id.to_string(),
            window,
            no_traffic: true,
            report_id: None,
            window_rows: 0,
            labelled_rows: 0,
            dataset_drift: false,
            share_of_drifted_features: 0.0,
            drifted_features: Vec::new(),
            tested_features: 0,
            concept_drift: None,
            concept_current_f1: None,
            concept_reference_f1: None,
        }),
        Err(error) => Err(error),
    }
}

fn decide(drift: &DriftStepOutput, parameters: &WeeklyCheckParameters) -> Decision {
    let mut reasons = Vec::new();
    if drift.no_traffic {
        reasons.push(format!(
            "no prediction of {} between {} and {}",
            drift.model_version,
            format_ms(drift.window.start_ms),
            format_ms(drift.window.end_ms)
        ));
    } else {
        reasons.push(format!(
            "{} of {} features drifted ({:.0}%, dataset drift at {:.0}%): {}",
            drift.drifted_features.len(),
            drift.tested_features,
            drift.share_of_drifted_features * 100.0,
            parameters.drift.drift_share * 100.0,
            if drift.dataset_drift {
                "data drift"
            } else {
                "no data drift"
            }
        ));
        match (
            drift.concept_drift,
            drift.concept_current_f1,
            drift.concept_reference_f1,
        ) {
            (Some(drifted), Some(current), Some(reference)) => reasons.push(format!(
                "weighted F1 {current:.4} on {} reviewed predictions vs {reference:.4} at training (margin {:.2}): {}",
                drift.labelled_rows,
                parameters.drift.concept_margin,
                if drifted { "concept drift" } else { "no concept drift" }
            )),
            _ => reasons.push(format!(
                "{} reviewed predictions (at least {} are needed to judge concept drift)",
                drift.labelled_rows, parameters.drift.min_labelled
            )),
        }
    }
    let drift_found = drift.dataset_drift || drift.concept_drift == Some(true);
    let retrain = drift_found && parameters.retrain;
    if drift_found && !parameters.retrain {
        reasons.push("retraining is disabled for this check".to_string());
    }
    Decision {
        drift_found,
        retrain,
        reasons,
    }
}

async fn retrain_step(
    platform: &Platform,
    run_id: &str,
    parameters: &WeeklyCheckParameters,
    drift: &DriftStepOutput,
) -> Result<RetrainStepOutput, PipelineError> {
    // A retrain this check started earlier and that failed is resumed rather than repeated.
    let earlier = list_pipeline_runs(&platform.database, Some("retrain"), 20)
        .await?
        .into_iter()
        .find(|run| run.parent_run.as_deref() == Some(run_id));
    let mode = match earlier {
        Some(run) if run.status == RunStatus::Succeeded => {
            return Ok(RetrainStepOutput {
                run_id: run.id.clone(),
                status: run.status,
                result: run
                    .output
                    .and_then(|output| serde_json::from_value(output).ok()),
            })
        }
        Some(run) if run.resumable(prodcat_storage::now_ms()) => StartMode::Resume(run.id),
        _ => StartMode::Fresh,
    };
    let mut retrain_parameters = match &parameters.retrain_parameters {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if let Some(report) = &drift.report_id {
        retrain_parameters
            .entry("reason")
            .or_insert_with(|| format!("drift found by report {report}").into());
    }
    let mut request =
        PipelineRequest::new(PipelineName::Retrain, &format!("pipeline:{run_id}"), mode)
            .with_parameters(serde_json::Value::Object(retrain_parameters));
    request.parent_run = Some(run_id.to_string());
    let run = run_retrain_pipeline(platform, &request).await?;
    if run.status != RunStatus::Succeeded {
        return Err(PipelineError::Invalid(format!(
            "the retrain run {} failed: {}",
            run.id,
            run.error.unwrap_or_default()
        )));
    }
    Ok(RetrainStepOutput {
        run_id: run.id.clone(),
        status: run.status,
        result: run
            .output
            .and_then(|output| serde_json::from_value(output).ok()),
    })
}

/// Runs the weekly check's steps on `execution`; returns the run's output.
pub async fn run_weekly_check(
    platform: &Platform,
    execution: &mut PipelineExecution,
    parameters: &WeeklyCheckParameters,
) -> Result<serde_json::Value, PipelineError> {
    let run_id = execution.id().to_string();
    let until = parameters.until_ms.unwrap_or(execution.run().started_at_ms);
    let window = DriftWindow::ending_at(until, parse_duration_ms(&parameters.window)?);
    let drift: DriftStepOutput = execution
        .step("drift-report", |_| drift_step(platform, parameters, window))
        .await?;
    let decision: Decision = execution
        .step("decide", |_| {
            let decision = decide(&drift, parameters);
            async move { Ok(decision) }
        })
        .await?;
    let mut notification = None;
    if decision.drift_found {
        let message = Notification::DriftFound {
            model_version: drift.model_version.clone(),
            report_id: drift.report_id.clone().unwrap_or_default(),
            window: format!(
                "{} to {}",
                format_ms(window.start_ms),
                format_ms(window.end_ms)
            ),
            dataset_drift: drift.dataset_drift,
            drifted_features: drift.drifted_features.clone(),
            share_of_drifted_features: drift.share_of_drifted_features,
            concept_current_f1: drift.concept_current_f1,
            concept_reference_f1: drift.concept_reference_f1,
            concept_drift: drift.concept_drift == Some(true),
            action: if decision.retrain {
                "retraining started".to_string()
            } else {
                "retraining is disabled; no action taken".to_string()
            },
        };
        let notifier = Notifier::for_platform(platform);
        let delivery: Delivery = execution
            .step_with("notify", RetryPolicy::once(), |_| {
                let notifier = notifier.clone();
                let message = message.clone();
                let run_id = run_id.clone();
                async move {
                    Ok(notifier
                        .notify(&platform.database, &message, Some(&run_id))
                        .await)
                }
            })
            .await?;
        notification = Some(delivery);
    }
    let mut retrain = None;
    if decision.retrain {
        let output: RetrainStepOutput = execution
            .step_with("retrain", RetryPolicy::once(), |_| {
                retrain_step(platform, &run_id, parameters, &drift)
            })
            .await?;
        retrain = Some(output);
    }
    let mut metrics = serde_json::Map::new();
    metrics.insert("drift_share".into(), drift.share_of_drifted_features.into());
    metrics.insert(
        "dataset_drift".into(),
        (if drift.dataset_drift { 1.0 } else { 0.0 }).into(),
    );
    metrics.insert("window_rows".into(), (drift.window_rows as f64).into());
    if let Some(f1) = drift.concept_current_f1 {
        metrics.insert("concept_weighted_f1".into(), f1.into());
    }
    Ok(serde_json::to_value(WeeklyCheckOutput {
        drift,
        decision,
        notification,
        retrain,
        metrics,
    })?)
}
