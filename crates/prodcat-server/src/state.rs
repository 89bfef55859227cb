//! What every handler shares: the platform (database, object store), the predictor (the model
//! in service, the CPU budget, the prediction log), the token signer, the rate limiter and the
//! search indexes.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use prodcat_platform::{ModelService, Platform, Predictor, ServerSettings};
use tokio::sync::{Notify, Semaphore};

use crate::auth::TokenSigner;
use crate::middleware::RateLimiter;
use crate::revocation::RevocationCache;
use crate::search_service::SearchService;
use crate::swagger::SwaggerAssets;

/// Shared state of the service (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

/// The parts of [`AppState`].
pub struct StateInner {
    pub platform: Platform,
    pub settings: ServerSettings,
    pub signer: TokenSigner,
    /// The one way to predict; its model service follows the champion.
    pub predictor: Predictor,
    pub limiter: RateLimiter,
    pub swagger: SwaggerAssets,
    /// Keyword and meaning search, similar products.
    pub search: Arc<SearchService>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub started: Instant,
    /// Wakes the task that classifies pending products (after a model swap, a new product).
    pub pending_wakeup: Notify,
    /// Users' current states, for revoking tokens.
    pub revocation: RevocationCache,
    /// Bounds the password checks (argon2, 19 MiB each) running at once.
    pub password_checks: Semaphore,
    /// The bearer token scrapers outside the private networks send for `/metrics`.
    pub metrics_token: Option<String>,
    /// The OpenAPI document of this server (its limits come from the settings).
    pub openapi: String,
}

impl Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.inner
    }
}

impl AppState {
    pub(crate) fn new(inner: StateInner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The platform handle.
    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }

    /// The model service (for callers that promote outside the API).
    pub fn model_service(&self) -> &Arc<ModelService> {
        self.inner.predictor.models()
    }

    /// Waits until every prediction-log row queued so far is written.
    pub async fn flush_prediction_log(&self) {
        if let Some(writer) = self.inner.predictor.log_writer() {
            writer.flush().await;
        }
    }

    /// The predictor of this service.
    pub fn predictor(&self) -> &Predictor {
        &self.inner.predictor
    }
}
