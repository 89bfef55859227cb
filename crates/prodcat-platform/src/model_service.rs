//! The model in service and its hot swap, shared by the HTTP service and the job worker.
//!
//! The served classifier sits behind an atomic pointer: a request takes the current one at its
//! start and keeps it to its end, so swapping never drops or mixes a request.
//! [`ModelService::refresh`] compares the followed reference (normally the `champion` alias)
//! with the version in service and loads the new one beside the requests; if it fails to load
//! (a corrupt bundle, a missing file), the error is logged and counted, the previous model
//! keeps serving, and the next refresh tries again.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use prodcat_domain::ModelVersionId;
use prodcat_model::ProductClassifier;
use prodcat_storage::now_ms;

use crate::platform::Platform;
use crate::PlatformError;

/// A loaded model version.
#[derive(Debug)]
pub struct ServedModel {
    pub classifier: ProductClassifier,
    pub version: ModelVersionId,
    pub loaded_at_ms: i64,
}

/// The last failed attempt to load a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    pub version: String,
    pub error: String,
    pub at_ms: i64,
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The alias points at the version in service.
    Unchanged,
    /// The alias is not set: nothing to serve (the previous model, if any, keeps serving).
    NoChampion,
    /// Swapped to this version.
    Swapped { from: Option<String>, to: String },
    /// The new version failed to load; the previous one keeps serving.
    Failed(LoadFailure),
}

/// The served model and how it is replaced.
pub struct ModelService {
    platform: Platform,
    alias: String,
    current: ArcSwapOption<ServedModel>,
    last_failure: Mutex<Option<LoadFailure>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ModelService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelService")
            .field("alias", &self.alias)
            .field("serving", &self.current().map(|m| m.version.to_string()))
            .finish()
    }
}

impl ModelService {
    /// A service following `reference` (an alias such as `champion`, which follows promotions,
    /// or a fixed version), serving nothing yet.
    pub fn new(platform: Platform, reference: &str) -> Self {
        Self {
            platform,
            alias: reference.to_string(),
            current: ArcSwapOption::empty(),
            last_failure: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The model in service now (kept by the caller for the whole request).
    pub fn current(&self) -> Option<Arc<ServedModel>> {
        self.current.load_full()
    }

    /// The last failed load, if the version that failed is still not in service.
    pub fn last_failure(&self) -> Option<LoadFailure> {
        self.last_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_failure(&self, failure: Option<LoadFailure>) {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = failure;
    }

    /// The reference followed (an alias or a version).
    pub fn reference(&self) -> &str {
        &self.alias
    }

    /// The platform the models are loaded from.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The version the followed reference names now (`None`: an alias that is not set).
    async fn target(&self) -> Result<Option<ModelVersionId>, PlatformError> {
        let names_a_version =
            self.alias == "latest" || self.alias.starts_with(ModelVersionId::PREFIX);
        if names_a_version {
            let version = prodcat_registry::resolve(&self.platform.database, &self.alias).await?;
            return Ok(Some(version.id));
        }
        Ok(prodcat_registry::alias_target(&self.platform.database, &self.alias).await?)
    }

    /// Loads the followed version if it differs from the one in service.
    pub async fn refresh(&self) -> Result<RefreshOutcome, PlatformError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let Some(target) = self.target().await? else {
            return Ok(RefreshOutcome::NoChampion);
        };
        let previous = self.current();
        if previous.as_ref().is_some_and(|m| m.version == target) {
            return Ok(RefreshOutcome::Unchanged);
        }
        let loaded = async {
            let version = prodcat_registry::get_version(&self.platform.database, &target).await?;
            self.platform.classifier_for(&version).await
        }
        .await;
        match loaded {
            Ok(classifier) => {
                let served = Arc::new(ServedModel {
                    version: classifier.version().clone(),
                    classifier,
                    loaded_at_ms: now_ms(),
                });
                self.current.store(Some(served));
                self.set_failure(None);
                let from = previous.map(|m| m.version.to_string());
                if let Some(from) = &from {
                    metrics::gauge!("prodcat_model_info", "version" => from.clone()).set(0.0);
                }
                metrics::gauge!("prodcat_model_info", "version" => target.to_string()).set(1.0);
                metrics::counter!("prodcat_model_swaps_total").increment(1);
                tracing::info!(from = ?from, to = %target, "model in service swapped");
                Ok(RefreshOutcome::Swapped {
                    from,
                    to: target.to_string(),
                })
            }
            Err(error) => {
                let failure = LoadFailure {
                    version: target.to_string(),
                    error: error.to_string(),
                    at_ms: now_ms(),
                };
                metrics::counter!("prodcat_model_load_failures_total").increment(1);
                tracing::error!(
                    version = %target,
                    %error,
                    serving = ?previous.as_ref().map(|m| m.version.to_string()),
                    "the promoted model failed to load; the previous model keeps serving"
                );
                self.set_failure(Some(failure.clone()));
                Ok(RefreshOutcome::Failed(failure))
            }
        }
    }
}
