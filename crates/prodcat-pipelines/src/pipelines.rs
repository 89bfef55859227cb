//! The named pipelines and how a run of one starts: fresh, resuming the latest failed (or
//! abandoned) run of the same pipeline, or resuming a given run. The CLI (`prodcat pipeline run`),
//! the worker's scheduler and the simulation all start pipelines here.

use std::fmt;
use std::str::FromStr;

use prodcat_registry::{fail_run, finish_run, log_metrics, start_run, NewRun, Run, RunId, RunKind};
use prodcat_storage::now_ms;
use serde::{Deserialize, Serialize};

use crate::pipeline_run::{
    get_pipeline_run, list_pipeline_runs, PipelineExecution, PipelineRun, RetryPolicy,
};
use crate::retrain::{run_retrain, RetrainParameters};
use crate::weekly_check::{run_weekly_check, WeeklyCheckParameters};
use crate::PipelineError;
use prodcat_platform::Platform;

/// The pipelines prodcat knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineName {
    /// Drift report of the champion over the last week, decision, notification, and a retraining
    /// when drift is found.
    WeeklyCheck,
    /// Snapshot a dataset version with the reviewed labels and new imports, train a challenger
    /// with the champion's parameters, evaluate both on the same held-out set, promote by policy,
    /// notify.
    Retrain,
}

impl PipelineName {
    pub const ALL: [PipelineName; 2] = [PipelineName::WeeklyCheck, PipelineName::Retrain];

    pub fn as_str(self) -> &'static str {
        match self {
            PipelineName::WeeklyCheck => "weekly-check",
            PipelineName::Retrain => "retrain",
        }
    }

    /// One line on what the pipeline does.
    pub fn description(self) -> &'static str {
        match self {
            PipelineName::WeeklyCheck => {
                "drift report of the champion over the last 7 days (data and concept drift), \
                 decision, notification, and the retrain pipeline when drift is found"
            }
            PipelineName::Retrain => {
                "snapshot a dataset version (previous one + reviewed labels + new imports), train \
                 a challenger with the champion's parameters, evaluate both on the new test split, \
                 promote by policy, notify"
            }
        }
    }

    /// The steps, in order.
    pub fn steps(self) -> &'static [&'static str] {
        match self {
            PipelineName::WeeklyCheck => &["drift-report", "decide", "notify", "retrain"],
            PipelineName::Retrain => &[
                "snapshot",
                "train-challenger",
                "evaluate",
                "promote",
                "notify",
            ],
        }
    }
}

impl fmt::Display for PipelineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PipelineName {
    type Err = PipelineError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "weekly-check" => Ok(PipelineName::WeeklyCheck),
            "retrain" => Ok(PipelineName::Retrain),
            other => Err(PipelineError::UnknownPipeline(other.to_string())),
        }
    }
}

/// How a run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartMode {
    /// A new run.
    Fresh,
    /// Resume the latest run of this pipeline if it failed or its process died; else a new run.
    ResumeFailed,
    /// Resume this run.
    Resume(String),
}

/// A request to run a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineRequest {
    pub pipeline: PipelineName,
    /// Overrides of the default parameters (a JSON object with camelCase keys, see
    /// [`WeeklyCheckParameters`] and [`RetrainParameters`]); ignored when resuming.
    pub parameters: serde_json::Value,
    /// `cli`, `schedule:<name>`, `pipeline:<run>`, `simulation`.
    pub triggered_by: String,
    pub mode: StartMode,
    pub retry: RetryPolicy,
    pub parent_run: Option<String>,
}

impl PipelineRequest {
    /// Default parameters and retry policy.
    pub fn new(pipeline: PipelineName, triggered_by: &str, mode: StartMode) -> Self {
        Self {
            pipeline,
            parameters: serde_json::Value::Object(Default::default()),
            triggered_by: triggered_by.to_string(),
            mode,
            retry: RetryPolicy::default(),
            parent_run: None,
        }
    }

    pub fn with_parameters(mut self, parameters: serde_json::Value) -> Self {
        self.parameters = parameters;
        self
    }
}

/// The full parameters of a fresh run: defaults, the request's overrides, and what must be fixed
/// at the start so a resume repeats the same work (the weekly check's window end).
fn resolve_parameters(
    pipeline: PipelineName,
    overrides: &serde_json::Value,
) -> Result<serde_json::Value, PipelineError> {
    let overrides = match overrides {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        other => other.clone(),
    };
    let invalid = |error: serde_json::Error| {
        PipelineError::Invalid(format!("invalid parameters for {pipeline}: {error}"))
    };
    Ok(match pipeline {
        PipelineName::WeeklyCheck => {
            let mut parameters: WeeklyCheckParameters =
                serde_json::from_value(overrides).map_err(invalid)?;
            parameters.until_ms.get_or_insert_with(now_ms);
            serde_json::to_value(parameters)?
        }
        PipelineName::Retrain => {
            let parameters: RetrainParameters =
                serde_json::from_value(overrides).map_err(invalid)?;
            serde_json::to_value(parameters)?
        }
    })
}

/// Runs (or resumes) a pipeline to its end. A pipeline that fails is recorded as failed and
/// returned as `Ok` with status failed and its error; `Err` means the run could not be started
/// or recorded at all.
pub async fn run_pipeline(
    platform: &Platform,
    request: &PipelineRequest,
) -> Result<PipelineRun, PipelineError> {
    let execution = prepare(platform, request).await?;
    match request.pipeline {
        PipelineName::WeeklyCheck => execute_weekly_check(platform, execution).await,
        PipelineName::Retrain => execute_retrain(platform, execution).await,
    }
}

/// [`run_pipeline`] for the retrain pipeline only (what the weekly check starts; a separate
/// function so the weekly check's future does not contain itself).
pub(crate) async fn run_retrain_pipeline(
    platform: &Platform,
    request: &PipelineRequest,
) -> Result<PipelineRun, PipelineError> {
    if request.pipeline != PipelineName::Retrain {
        return Err(PipelineError::Invalid(format!(
            "expected a retrain request, got {}",
            request.pipeline
        )));
    }
    let execution = prepare(platform, request).await?;
    execute_retrain(platform, execution).await
}

async fn prepare(
    platform: &Platform,
    request: &PipelineRequest,
) -> Result<PipelineExecution, PipelineError> {
    Ok(match &request.mode {
        StartMode::Resume(run_id) => {
            let run = get_pipeline_run(&platform.database, run_id).await?;
            if run.pipeline != request.pipeline.as_str() {
                return Err(PipelineError::Invalid(format!(
                    "run {} is a {} run, not {}",
                    run.id, run.pipeline, request.pipeline
                )));
            }
            PipelineExecution::resume(&platform.database, &run.id, request.retry).await?
        }
        StartMode::ResumeFailed => {
            let latest = list_pipeline_runs(&platform.database, Some(request.pipeline.as_str()), 1)
                .await?
                .into_iter()
                .next();
            match latest {
                Some(run) if run.resumable(now_ms()) => {
                    PipelineExecution::resume(&platform.database, &run.id, request.retry).await?
                }
                _ => start_fresh(platform, request).await?,
            }
        }
        StartMode::Fresh => start_fresh(platform, request).await?,
    })
}

async fn start_fresh(
    platform: &Platform,
    request: &PipelineRequest,
) -> Result<PipelineExecution, PipelineError> {
    let parameters = resolve_parameters(request.pipeline, &request.parameters)?;
    PipelineExecution::start(
        platform,
        request.pipeline.as_str(),
        &request.triggered_by,
        parameters,
        request.parent_run.as_deref(),
        request.retry,
    )
    .await
}

fn unreadable(execution: &PipelineExecution, error: serde_json::Error) -> PipelineError {
    PipelineError::Invalid(format!(
        "the stored parameters of run {} can not be read: {error}",
        execution.id()
    ))
}

async fn execute_weekly_check(
    platform: &Platform,
    mut execution: PipelineExecution,
) -> Result<PipelineRun, PipelineError> {
    let registry_run = open_registry_run(platform, &mut execution).await?;
    let result =
        match serde_json::from_value::<WeeklyCheckParameters>(execution.parameters().clone()) {
            Ok(parameters) => run_weekly_check(platform, &mut execution, &parameters).await,
            Err(error) => Err(unreadable(&execution, error)),
        };
    close(platform, execution, registry_run, result).await
}

async fn execute_retrain(
    platform: &Platform,
    mut execution: PipelineExecution,
) -> Result<PipelineRun, PipelineError> {
    let registry_run = open_registry_run(platform, &mut execution).await?;
    let result = match serde_json::from_value::<RetrainParameters>(execution.parameters().clone()) {
        Ok(parameters) => run_retrain(platform, &mut execution, &parameters).await,
        Err(error) => Err(unreadable(&execution, error)),
    };
    close(platform, execution, registry_run, result).await
}

/// Each attempt of a pipeline run is also a registry run of kind pipeline.
async fn open_registry_run(
    platform: &Platform,
    execution: &mut PipelineExecution,
) -> Result<Option<RunId>, PipelineError> {
    match start_registry_run(platform, execution).await {
        Ok(run) => {
            execution.set_registry_run(run.id.as_str()).await?;
            Ok(Some(run.id))
        }
        Err(error) => {
            tracing::warn!(%error, "the pipeline run could not be recorded in the registry");
            Ok(None)
        }
    }
}

async fn close(
    platform: &Platform,
    execution: PipelineExecution,
    registry_run: Option<RunId>,
    result: Result<serde_json::Value, PipelineError>,
) -> Result<PipelineRun, PipelineError> {
    if let Some(run) = &registry_run {
        close_registry_run(platform, run, &result).await;
    }
    match result {
        Ok(output) => execution.succeed(output).await,
        Err(error) => execution.fail(&error.to_string()).await,
    }
}

async fn start_registry_run(
    platform: &Platform,
    execution: &PipelineExecution,
) -> Result<Run, PipelineError> {
    let run = execution.run();
    let pipeline = run.pipeline.clone();
    let mut new_run = NewRun::new(
        RunKind::Pipeline,
        &format!(
            "pipeline {pipeline} {}{}",
            run.id,
            if run.resumed > 0 { " (resumed)" } else { "" }
        ),
        platform.actor(),
    );
    new_run
        .parameters
        .insert("pipeline".to_string(), pipeline.clone());
    new_run
        .parameters
        .insert("pipelineRun".to_string(), run.id.clone());
    new_run
        .parameters
        .insert("triggeredBy".to_string(), run.triggered_by.clone());
    if let serde_json::Value::Object(map) = &run.parameters {
        for (key, value) in map {
            let text = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            new_run.parameters.insert(format!("param.{key}"), text);
        }
    }
    Ok(start_run(&platform.database, &new_run).await?)
}

async fn close_registry_run(
    platform: &Platform,
    run: &RunId,
    result: &Result<serde_json::Value, PipelineError>,
) {
    let closed = match result {
        Ok(output) => {
            let metrics: Vec<(String, i64, f64)> = output
                .get("metrics")
                .and_then(|m| m.as_object())
                .map(|map| {
                    map.iter()
                        .filter_map(|(key, value)| Some((key.clone(), 0, value.as_f64()?)))
                        .filter(|(_, _, value)| value.is_finite())
                        .collect()
                })
                .unwrap_or_default();
            if let Err(error) = log_metrics(&platform.database, run, metrics).await {
                tracing::warn!(%error, "pipeline metrics not recorded");
            }
            finish_run(&platform.database, run).await.map(|_| ())
        }
        Err(error) => fail_run(&platform.database, run, &error.to_string())
            .await
            .map(|_| ()),
    };
    if let Err(error) = closed {
        tracing::warn!(%error, "the registry run of the pipeline could not be closed");
    }
}
