//! Operations that tie the pieces together, shared by the CLI, the server and the worker:
//! training runs recorded in the registry, evaluation runs, re-scoring for promotions, and the
//! scheduled pipelines (weekly drift check, retraining).

mod evaluation_run;
mod platform;
mod rescore;
mod training_run;

pub use evaluation_run::{
    evaluate_on_files, evaluate_on_split, record_evaluation_run, EvaluationInput, EvaluationRun,
};
pub use platform::Platform;
pub use rescore::PlatformRescorer;
pub use training_run::{run_training, TrainingRequest, TrainingRunResult};

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
    #[error("text embedding model: {0}")]
    Embed(#[from] prodcat_embed::EmbedError),
    #[error(transparent)]
    Domain(#[from] prodcat_domain::DomainError),
    #[error("{file}: {message}")]
    Input { file: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("serialisation: {0}")]
    Json(#[from] serde_json::Error),
}
