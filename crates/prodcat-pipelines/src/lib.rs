//! Operations that tie the pieces together, shared by the CLI, the server and the worker:
//! training runs recorded in the registry, evaluation runs, re-scoring for promotions, drift
//! checks over the prediction log, notifications, and the scheduled pipelines (weekly drift
//! check, retraining) with recorded, resumable steps, their scheduler, and the drift simulation.

use prodcat_domain::ErrorKind;

mod drift_check;
mod evaluation_run;
mod notify;
mod pipeline_run;
mod pipelines;
mod rescore;
mod retrain;
mod scheduler;
mod simulate;
pub mod testing;
mod training_run;
mod weekly_check;
mod window;

pub use drift_check::{
    check_files, check_prediction_log, compare_profiles, drift_report_html, get_drift_report,
    latest_drift_gauges, list_drift_reports, try_latest_drift_gauges, DriftCheck,
    DriftCheckOptions, DriftReportSummary, SkippedColumn,
};
pub use evaluation_run::{
    evaluate_on_files, evaluate_on_split, record_evaluation_run, EvaluationInput, EvaluationRun,
};
pub use notify::{
    list_notifications, redacted_destination, signature, Delivery, DeliveryStatus, Notification,
    NotificationRecord, Notifier,
};
pub use pipeline_run::{
    get_pipeline_run, last_run_ends, list_pipeline_runs, pipeline_steps, PipelineExecution,
    PipelineRun, PipelineStep, RetryPolicy, RunStatus, ABANDONED_AFTER_MS,
};
pub use pipelines::{run_pipeline, PipelineName, PipelineRequest, StartMode};
pub use rescore::PlatformRescorer;
pub use retrain::{
    training_options_from_manifest, ChallengerOutput, EvaluationOutput, PromotionOutput,
    RetrainOutput, RetrainParameters, SnapshotOutput,
};
pub use scheduler::{
    acquire_lease, lease_holder, parse_schedules, release_lease, run_scheduler, run_scheduler_with,
    schedule_states, scheduler_pass, Clock, Launcher, Schedule, ScheduleState, SchedulerOptions,
    TickOutcome, LEASE_NAME,
};
pub use simulate::{
    run_simulation, SimulationOptions, SimulationProgress, SimulationReport, WeekResult,
};
pub use training_run::{cross_validate_training, run_training, TrainingRequest, TrainingRunResult};
pub use weekly_check::{
    Decision, DriftStepOutput, RetrainStepOutput, WeeklyCheckOutput, WeeklyCheckParameters,
};
pub use window::{format_ms, parse_duration_ms, parse_time_ms, DriftWindow, DAY_MS};

/// Errors of the operations.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Model(#[from] prodcat_model::ModelError),
    #[error(transparent)]
    Registry(#[from] prodcat_registry::RegistryError),
    #[error(transparent)]
    Dataset(#[from] prodcat_dataset::DatasetError),
    #[error(transparent)]
    Storage(#[from] prodcat_storage::StorageError),
    #[error(transparent)]
    Platform(#[from] prodcat_platform::PlatformError),
    #[error(transparent)]
    Predict(#[from] prodcat_platform::PredictError),
    #[error(transparent)]
    Catalogue(#[from] prodcat_catalogue::CatalogueError),
    #[error("text embedding model: {0}")]
    Embed(#[from] prodcat_embed::EmbedError),
    #[error(transparent)]
    Domain(#[from] prodcat_domain::DomainError),
    #[error("drift: {0}")]
    Drift(#[from] prodcat_drift::DriftError),
    #[error("{file}: {message}")]
    Input { file: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("serialisation: {0}")]
    Json(#[from] serde_json::Error),
    #[error("model {model} served no prediction between {window}; there is nothing to compare")]
    NoTraffic { model: String, window: String },
    #[error("unknown pipeline {0:?}: the pipelines are weekly-check and retrain")]
    UnknownPipeline(String),
    #[error("pipeline run {0:?} does not exist (see `prodcat pipeline list`)")]
    UnknownPipelineRun(String),
    #[error("schedule {name:?}: {reason}")]
    Schedule { name: String, reason: String },
    #[error("step {step} failed after {attempts} attempt(s): {message}")]
    StepFailed {
        step: String,
        attempts: u32,
        message: String,
    },
}

impl From<sqlx::Error> for PipelineError {
    fn from(error: sqlx::Error) -> Self {
        PipelineError::Storage(prodcat_storage::StorageError::Sql(error))
    }
}

impl PipelineError {
    /// Whose fault the error is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PipelineError::Model(error) => error.kind(),
            PipelineError::Registry(error) => error.kind(),
            PipelineError::Dataset(error) => error.kind(),
            PipelineError::Storage(error) => error.kind(),
            PipelineError::Platform(error) => error.kind(),
            PipelineError::Predict(error) => error.kind(),
            PipelineError::Catalogue(error) => error.kind(),
            PipelineError::Domain(_)
            | PipelineError::Input { .. }
            | PipelineError::Invalid(_)
            | PipelineError::NoTraffic { .. }
            | PipelineError::Schedule { .. } => ErrorKind::Input,
            PipelineError::UnknownPipeline(_) | PipelineError::UnknownPipelineRun(_) => {
                ErrorKind::NotFound
            }
            PipelineError::Embed(error) => error.kind(),
            PipelineError::Drift(error) => error.kind(),
            PipelineError::Json(_) | PipelineError::StepFailed { .. } => ErrorKind::Internal,
        }
    }

    /// Whether trying again may help (storage, network and registry races), as opposed to a
    /// mistake in the input or the setup that a retry would only repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Registry(
                prodcat_registry::RegistryError::AliasMovedMeanwhile { .. }
                | prodcat_registry::RegistryError::Rescore { .. }
                | prodcat_registry::RegistryError::MlflowRequest { .. },
            ) => true,
            _ => self.kind().is_transient(),
        }
    }
}
