//! The platform of prodcat, below every entry point (HTTP service, job worker, pipelines,
//! command line):
//!
//! - [`settings`]: the one settings tree (defaults, `prodcat.toml`, overrides from the binary);
//! - [`platform`]: [`Platform::from_settings`], the one place that turns settings into a
//!   database, an object store, the pretrained model folder and loaded models (a bounded
//!   cache);
//! - [`model_service`]: the model in service, following an alias with an atomic swap;
//! - [`predictor`]: the one way to predict (checks, CPU budget, metrics, prediction-log row).

pub mod backup;
pub mod live;
pub mod model_service;
pub mod platform;
pub mod predictor;
pub mod rollout;
pub mod settings;
mod signal;

pub use model_service::{LoadFailure, ModelService, RefreshOutcome, ServedModel};
pub use platform::Platform;
pub use predictor::{
    available_cores, LogMode, PredictError, Predicted, Predictor, ProductToClassify, Requester,
};
pub use settings::{ServerSettings, Settings, SettingsLayer, WorkerSettings};
pub use signal::shutdown_signal;

use prodcat_domain::ErrorKind;

/// This machine's name (from `/etc/hostname`; `local` when unreadable), to name workers and
/// scheduler leases.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "local".to_string())
}

/// Errors of the platform's wiring.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("invalid setting {name}: {reason}")]
    Settings { name: String, reason: String },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Model(#[from] prodcat_model::ModelError),
    #[error(transparent)]
    Registry(#[from] prodcat_registry::RegistryError),
    #[error("text embedding model: {0}")]
    Embed(#[from] prodcat_embed::EmbedError),
    #[error(transparent)]
    Storage(#[from] prodcat_storage::StorageError),
    #[error(transparent)]
    Catalogue(#[from] prodcat_catalogue::CatalogueError),
}

impl PlatformError {
    /// Whose fault the error is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PlatformError::Settings { .. } => ErrorKind::Input,
            PlatformError::Io { .. } => ErrorKind::Internal,
            PlatformError::Embed(error) => error.kind(),
            PlatformError::Model(error) => error.kind(),
            PlatformError::Registry(error) => error.kind(),
            PlatformError::Storage(error) => error.kind(),
            PlatformError::Catalogue(error) => error.kind(),
        }
    }
}
