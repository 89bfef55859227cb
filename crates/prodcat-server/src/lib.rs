//! The HTTP service of prodcat (axum): prediction (single, batch, durable jobs), the catalogue
//! (products, review queue), the model registry (list, promote, roll back, with a hot swap of
//! the model in service), security (OAuth2 token endpoint issuing signed JWTs, roles, audit log,
//! rate limits, body limits, timeouts) and operations (Prometheus metrics, health and readiness,
//! OpenAPI document and Swagger UI), and the admin web UI under `/ui` ([`ui`]: server-rendered
//! pages over the same handlers).
//!
//! This crate speaks HTTP and JSON and nothing else: predictions go through the platform's
//! [`prodcat_platform::Predictor`], the catalogue's tables through [`prodcat_catalogue`]; the
//! request and response types in [`api`] are converted by hand from the library types, and
//! every library error is mapped to a status by its kind in [`error`].
//!
//! Start it with [`start`] (returns a [`RunningServer`] handle) or [`serve_until_signal`]
//! (returns after SIGTERM/SIGINT, once in-flight requests are finished).

pub mod api;
pub mod auth;
pub mod error;
mod guard;
mod handlers;
pub mod keys;
mod metrics_export;
mod middleware;
mod notifications;
mod openapi;
pub mod revocation;
pub mod search_service;
mod server;
mod state;
mod swagger;
mod ui;
mod worker_endpoints;

pub use auth::{Caller, TokenClaims, TokenSigner};
pub use keys::{load_or_create_secret, SigningKey, SigningKeys};
pub use openapi::{openapi_document, DocumentSettings};
pub use prodcat_platform::shutdown_signal;
pub use prodcat_platform::ServerSettings;
pub use server::{router, serve_until_signal, start, RunningServer};
pub use state::AppState;
pub use worker_endpoints::{WorkerEndpoints, WorkerHealth};

/// Errors of the service's own start-up and configuration.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting { name: &'static str, reason: String },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {reason}")]
    Task { what: String, reason: String },
    #[error(transparent)]
    Platform(#[from] prodcat_platform::PlatformError),
    #[error(transparent)]
    Catalogue(#[from] prodcat_catalogue::CatalogueError),
    #[error(transparent)]
    Storage(#[from] prodcat_storage::StorageError),
}

impl ServerError {
    /// Whose fault the error is.
    pub fn kind(&self) -> prodcat_domain::ErrorKind {
        use prodcat_domain::ErrorKind;
        match self {
            ServerError::InvalidSetting { .. } => ErrorKind::Input,
            ServerError::Listen { .. } | ServerError::Io { .. } | ServerError::Task { .. } => {
                ErrorKind::Internal
            }
            ServerError::Platform(error) => error.kind(),
            ServerError::Catalogue(error) => error.kind(),
            ServerError::Storage(error) => error.kind(),
        }
    }
}
