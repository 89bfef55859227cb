//! What every handler shares: the platform (database, object store, models), the model in
//! service, the token signer, the prediction log writer, the rate limiter and the CPU pool.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use prodcat_jobs::PredictionLogWriter;
use prodcat_pipelines::Platform;
use tokio::sync::{Notify, Semaphore};

use crate::auth::TokenSigner;
use crate::middleware::RateLimiter;
use crate::model_service::ModelService;
use crate::search_service::SearchService;
use crate::settings::ServerSettings;
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
    pub models: ModelService,
    pub log: PredictionLogWriter,
    pub limiter: RateLimiter,
    /// Bounds model work on the blocking pool to the number of cores.
    pub cpu: Semaphore,
    pub swagger: SwaggerAssets,
    /// Keyword and meaning search, similar products.
    pub search: Arc<SearchService>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub started: Instant,
    /// Wakes the task that classifies pending products (after a model swap, a new product).
    pub pending_wakeup: Notify,
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
    pub fn model_service(&self) -> &ModelService {
        &self.inner.models
    }
}
