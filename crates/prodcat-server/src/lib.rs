//! The HTTP service of prodcat (axum): prediction (single, batch, durable jobs), the catalogue
//! (products, review queue), the model registry (list, promote, roll back, with a hot swap of
//! the model in service), security (OAuth2 token endpoint issuing signed JWTs, roles, audit log,
//! rate limits, body limits, timeouts) and operations (Prometheus metrics, health and readiness,
//! OpenAPI document and Swagger UI).
//!
//! Only this crate knows HTTP and JSON request shapes: the request and response types in
//! [`api`] are converted by hand from the library types, and every library error is mapped to a
//! status in [`error`].
//!
//! Start it with [`start`] (returns a [`RunningServer`] handle) or [`serve_until_signal`]
//! (returns after SIGTERM/SIGINT, once in-flight requests are finished).

pub mod api;
pub mod audit;
pub mod auth;
pub mod catalogue;
pub mod error;
mod handlers;
mod metrics_export;
mod middleware;
pub mod model_service;
mod openapi;
pub mod search_service;
mod server;
pub mod settings;
mod state;
mod swagger;
pub mod users;

pub use auth::{Caller, Permission, Role, TokenClaims, TokenSigner};
pub use openapi::openapi_document;
pub use server::{router, serve_until_signal, shutdown_signal, start, RunningServer};
pub use settings::{load_or_create_secret, ServerSettings};
pub use state::AppState;
pub use users::{add_user, get_user, list_users, set_disabled, NewUser, UserKind, UserRecord};

/// Errors of the service's own operations (catalogue, users, configuration, start-up).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("product {0} does not exist")]
    UnknownProduct(i64),
    #[error("product {0} already exists")]
    ProductExists(i64),
    #[error(
        "product {0} is not classified yet; it can be reviewed once a model has classified it"
    )]
    NotClassifiedYet(i64),
    #[error("{0}")]
    InvalidInput(String),
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    #[error("user {0:?} already exists")]
    UserExists(String),
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
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    #[error("stored data of {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error(transparent)]
    Model(#[from] prodcat_model::ModelError),
    #[error(transparent)]
    Pipeline(#[from] prodcat_pipelines::PipelineError),
    #[error(transparent)]
    Registry(#[from] prodcat_registry::RegistryError),
    #[error(transparent)]
    Jobs(#[from] prodcat_jobs::JobError),
    #[error(transparent)]
    Storage(#[from] prodcat_storage::StorageError),
}

impl From<sqlx::Error> for ServerError {
    fn from(error: sqlx::Error) -> Self {
        ServerError::Storage(prodcat_storage::StorageError::Sql(error))
    }
}
