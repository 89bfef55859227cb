//! The one way to predict. Every entry point (the HTTP routes, the job worker, pending
//! products, the command line, drift checks over files, the simulation) classifies through a
//! [`Predictor`], which
//!
//! - takes the model in service from the [`ModelService`] (one model for the whole call);
//! - checks the input with the model's own checks before any heavy work (text sizes, something
//!   to classify, the image's header), so the same bad input gets the same error everywhere;
//! - runs the model on the blocking pool within the CPU budget (one task per core at most;
//!   short text-only products run inline, they take tens of microseconds, unless the text
//!   branch embeds its text);
//! - counts the prediction in the metrics, once;
//! - builds the prediction-log row and either hands it to the background writer or gives it to
//!   the caller, who writes it in its own transaction (job items, pending products).

use std::sync::Arc;

use bytes::Bytes;
use prodcat_catalogue::prediction_log::{
    new_prediction_id, PredictionContext, PredictionErrorRow, ServingRole,
};
use prodcat_catalogue::{PredictionLogRow, PredictionLogWriter, PredictionSource};
use prodcat_domain::{CategoryCode, ErrorKind};
use prodcat_model::{ModelError, ProductInput, ProductPrediction};
use tokio::sync::Semaphore;

use crate::model_service::{ModelService, ServedModel};
use crate::rollout::RolloutRouter;

/// A product as a caller hands it over.
#[derive(Debug, Clone, Default)]
pub struct ProductToClassify {
    pub designation: String,
    pub description: String,
    /// Encoded JPEG or PNG bytes.
    pub image: Option<Bytes>,
    /// Add the text n-grams behind the decision.
    pub explain: bool,
}

impl ProductToClassify {
    fn input(&self) -> ProductInput<'_> {
        ProductInput {
            designation: &self.designation,
            description: &self.description,
            image: self.image.as_deref(),
        }
    }
}

/// Who asks, from where, and about which stored product (set only by trusted callers: the
/// catalogue itself).
#[derive(Debug, Clone)]
pub struct Requester {
    pub source: PredictionSource,
    pub client: Option<String>,
    pub product_id: Option<i64>,
    /// A product the client says this is about: not trusted to link the prediction to a
    /// stored product, only used to keep the product on one side of a canary.
    pub claimed_product: Option<i64>,
}

impl Requester {
    pub fn new(source: PredictionSource) -> Self {
        Self {
            source,
            client: None,
            product_id: None,
            claimed_product: None,
        }
    }

    pub fn client(mut self, client: impl Into<String>) -> Self {
        self.client = Some(client.into());
        self
    }

    pub fn product(mut self, product_id: i64) -> Self {
        self.product_id = Some(product_id);
        self
    }

    /// The product a client says this is about (routing only, see `claimed_product`).
    pub fn claiming(mut self, product_id: Option<i64>) -> Self {
        self.claimed_product = product_id;
        self
    }
}

/// A prediction with its id and its log row.
#[derive(Debug, Clone)]
pub struct Predicted {
    pub prediction: ProductPrediction,
    pub prediction_id: String,
    /// The row that was (or is to be) written to the prediction log.
    pub log: PredictionLogRow,
    /// The answering model's label set.
    pub categories: Arc<[CategoryCode]>,
}

/// Why a prediction was not made.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(
        "no model is in service yet: train one and promote it to champion (prodcat train --promote)"
    )]
    NoModel,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the classification task failed: {0}")]
    Task(String),
    #[error(
        "not classified: the request's time budget of {0:?} ran out before this product's turn"
    )]
    OverBudget(std::time::Duration),
}

impl PredictError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PredictError::NoModel => ErrorKind::Unavailable,
            PredictError::Model(error) => error.kind(),
            PredictError::Task(_) => ErrorKind::Internal,
            PredictError::OverBudget(_) => ErrorKind::Unavailable,
        }
    }
}

/// Where log rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// Handed to the background writer now.
    Background,
    /// Returned to the caller, who writes them in its own transaction.
    Caller,
}

/// Classifies with the model in service; see the module's documentation.
#[derive(Clone)]
pub struct Predictor {
    models: Arc<ModelService>,
    log: Option<PredictionLogWriter>,
    cpu: Arc<Semaphore>,
    /// Text-only products with at most this many bytes of text run inline.
    inline_text_bytes: usize,
    /// The time a batch may take: products whose turn comes later are not scored.
    batch_budget: std::time::Duration,
    /// Canary and shadow in force (`None`: the champion answers everything).
    rollouts: Option<Arc<RolloutRouter>>,
    /// Shadow scoring runs at most this many at once; beyond, a copy is skipped rather than
    /// delaying anything.
    shadow_slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor")
            .field("models", &self.models)
            .field("logging", &self.log.is_some())
            .finish_non_exhaustive()
    }
}

/// The number of cores this process may use.
pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

impl Predictor {
    /// A predictor over `models`; `log` receives the rows of [`LogMode::Background`] calls
    /// (`None`: nothing is logged, as for a command-line prediction).
    pub fn new(models: Arc<ModelService>, log: Option<PredictionLogWriter>) -> Self {
        Self {
            models,
            log,
            cpu: Arc::new(Semaphore::new(available_cores())),
            inline_text_bytes: 8_192,
            batch_budget: std::time::Duration::from_secs(60),
            rollouts: None,
            shadow_slots: Arc::new(Semaphore::new(1)),
        }
    }

    /// Applies the live rollouts (canary, shadow) read from the registry by
    /// [`Predictor::refresh_rollouts`].
    pub fn with_rollouts(mut self) -> Self {
        self.rollouts = Some(Arc::new(RolloutRouter::default()));
        self
    }

    /// The rollouts in force, when this predictor applies them.
    pub fn rollouts(&self) -> Option<&Arc<RolloutRouter>> {
        self.rollouts.as_ref()
    }

    /// Reads the rollouts again (a canary or shadow set or stopped through any replica).
    pub async fn refresh_rollouts(&self) -> Result<(), crate::PlatformError> {
        match &self.rollouts {
            Some(router) => router.refresh(self.models.platform()).await,
            None => Ok(()),
        }
    }

    /// Sets the time a batch may take (the service's request timeout).
    pub fn with_batch_budget(mut self, budget: std::time::Duration) -> Self {
        self.batch_budget = budget;
        self
    }

    /// A predictor that serves one reference (a version, or an alias as it is now) and logs
    /// nothing: for commands, drift checks over files and the simulation.
    pub async fn for_reference(
        platform: &crate::Platform,
        reference: &str,
    ) -> Result<Self, crate::PlatformError> {
        let models = Arc::new(ModelService::new(platform.clone(), reference));
        match models.refresh().await? {
            crate::RefreshOutcome::Failed(failure) => {
                return Err(crate::PlatformError::Settings {
                    name: format!("model {reference}"),
                    reason: format!(
                        "version {} failed to load: {}",
                        failure.version, failure.error
                    ),
                })
            }
            crate::RefreshOutcome::NoChampion => {
                return Err(crate::PlatformError::Registry(
                    prodcat_registry::RegistryError::UnknownAlias(reference.to_string()),
                ))
            }
            crate::RefreshOutcome::Swapped { .. } | crate::RefreshOutcome::Unchanged => {}
        }
        Ok(Self::new(models, None))
    }

    /// The model service this predictor follows.
    pub fn models(&self) -> &Arc<ModelService> {
        &self.models
    }

    /// The background log writer, if any.
    pub fn log_writer(&self) -> Option<&PredictionLogWriter> {
        self.log.as_ref()
    }

    /// The model in service, or [`PredictError::NoModel`].
    pub fn served(&self) -> Result<Arc<ServedModel>, PredictError> {
        self.models.current().ok_or(PredictError::NoModel)
    }

    /// Runs CPU work on the blocking pool, at most one task per core at a time.
    pub async fn run_cpu<T, F>(&self, work: F) -> Result<T, PredictError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .cpu
            .acquire()
            .await
            .map_err(|error| PredictError::Task(error.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| PredictError::Task(error.to_string()))
    }

    /// Checks a product with the model's checks, without classifying it.
    pub fn check(&self, product: &ProductToClassify) -> Result<(), PredictError> {
        let model = self.served()?;
        Ok(model.classifier.check_input(&product.input())?)
    }

    /// Fully decodes an image (on the blocking pool) to make sure it is one and within the
    /// limits; returns its width and height.
    pub async fn check_image(&self, image: Bytes) -> Result<(u32, u32), PredictError> {
        let max_pixels = self
            .models
            .current()
            .map(|model| model.classifier.limits().max_image_pixels)
            .unwrap_or(prodcat_model::DEFAULT_MAX_IMAGE_PIXELS);
        prodcat_model::probe_image(&image, max_pixels)?;
        let decoded = self
            .run_cpu(move || prodcat_model::decode_image(&image, max_pixels))
            .await?;
        Ok(decoded?)
    }

    /// Classifies one product with the model in service.
    pub async fn predict(
        &self,
        product: ProductToClassify,
        requester: &Requester,
        mode: LogMode,
    ) -> Result<Predicted, PredictError> {
        let champion = self.served()?;
        let prediction_id = new_prediction_id();
        let (model, role) = match &self.rollouts {
            Some(router) => router.answering(&champion, requester, &prediction_id),
            None => (champion, ServingRole::Champion),
        };
        let shadow = self
            .rollouts
            .as_ref()
            .and_then(|router| router.shadowing(requester, &prediction_id))
            .map(|shadow| (shadow, product.clone()));
        let started = std::time::Instant::now();
        let outcome = self
            .score(
                &model,
                product,
                requester,
                mode,
                role,
                prediction_id.clone(),
            )
            .await;
        match &outcome {
            Ok(_) => {
                if let Some((shadow, product)) = shadow {
                    self.spawn_shadow(shadow, product, requester.clone(), prediction_id);
                }
            }
            Err(error) => self.record_failure(&model, role, error, started),
        }
        outcome
    }

    /// Records a failed prediction for the error rates of live comparisons.
    fn record_failure(
        &self,
        model: &ServedModel,
        role: ServingRole,
        error: &PredictError,
        started: std::time::Instant,
    ) {
        if let Some(writer) = &self.log {
            writer.record_error(PredictionErrorRow {
                at_ms: prodcat_storage::now_ms(),
                model_version: model.version.to_string(),
                serving_role: role,
                error_kind: error.kind().as_str().to_string(),
                latency_us: started.elapsed().as_micros() as i64,
            });
        }
    }

    /// Scores a copy of a request with the shadow version, off the request path: at most one
    /// at a time (a copy that finds the shadow busy is skipped), logged beside the answer with
    /// the answer's prediction id and `-shadow`.
    fn spawn_shadow(
        &self,
        shadow: Arc<ServedModel>,
        product: ProductToClassify,
        requester: Requester,
        prediction_id: String,
    ) {
        let Ok(slot) = self.shadow_slots.clone().try_acquire_owned() else {
            metrics::counter!("prodcat_shadow_skipped_total").increment(1);
            return;
        };
        let log = self.log.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let started = std::time::Instant::now();
            let model = shadow.clone();
            let description_empty = product.description.trim().is_empty();
            let scored = tokio::task::spawn_blocking(move || {
                model.classifier.predict(&product.input(), false)
            })
            .await;
            let Some(writer) = log else {
                return;
            };
            match scored {
                Ok(Ok(prediction)) => {
                    let context = PredictionContext {
                        prediction_id: format!("{prediction_id}-shadow"),
                        source: requester.source,
                        serving_role: ServingRole::Shadow,
                        client: requester.client.clone(),
                        product_id: requester.product_id,
                    };
                    writer.record(PredictionLogRow::from_prediction(
                        &prediction,
                        &context,
                        description_empty,
                        shadow.classifier.categories(),
                    ));
                }
                Ok(Err(error)) => {
                    writer.record_error(PredictionErrorRow {
                        at_ms: prodcat_storage::now_ms(),
                        model_version: shadow.version.to_string(),
                        serving_role: ServingRole::Shadow,
                        error_kind: error.kind().as_str().to_string(),
                        latency_us: started.elapsed().as_micros() as i64,
                    });
                }
                Err(_) => {}
            }
        });
    }

    /// Classifies one product with a given loaded model.
    pub async fn predict_with(
        &self,
        model: &Arc<ServedModel>,
        product: ProductToClassify,
        requester: &Requester,
        mode: LogMode,
    ) -> Result<Predicted, PredictError> {
        self.score(
            model,
            product,
            requester,
            mode,
            ServingRole::Champion,
            new_prediction_id(),
        )
        .await
    }

    /// Classifies one product with `model`, which plays `role`, under `prediction_id`.
    async fn score(
        &self,
        model: &Arc<ServedModel>,
        product: ProductToClassify,
        requester: &Requester,
        mode: LogMode,
        role: ServingRole,
        prediction_id: String,
    ) -> Result<Predicted, PredictError> {
        model.classifier.check_input(&product.input())?;
        // A text branch that embeds its text (milliseconds) runs on the blocking pool too.
        let inline = product.image.is_none()
            && model.classifier.text_embedder_needed().is_none()
            && product.designation.len() + product.description.len() <= self.inline_text_bytes;
        let description_empty = product.description.trim().is_empty();
        let prediction = if inline {
            model
                .classifier
                .predict(&product.input(), product.explain)?
        } else {
            let classifier = model.classifier.clone();
            self.run_cpu(move || classifier.predict(&product.input(), product.explain))
                .await??
        };
        Ok(self.finish(
            model,
            prediction,
            requester,
            description_empty,
            mode,
            (role, prediction_id),
        ))
    }

    /// Classifies many products with the model in service, in parallel; one result per
    /// product, in order. Products that fail their checks answer with their error.
    pub async fn predict_batch(
        &self,
        products: Vec<ProductToClassify>,
        requesters: &[Requester],
        mode: LogMode,
    ) -> Result<Vec<Result<Predicted, PredictError>>, PredictError> {
        let model = self.served()?;
        Ok(self
            .predict_batch_with(&model, products, requesters, mode)
            .await)
    }

    /// Classifies many products with a given loaded model.
    pub async fn predict_batch_with(
        &self,
        model: &Arc<ServedModel>,
        products: Vec<ProductToClassify>,
        requesters: &[Requester],
        mode: LogMode,
    ) -> Vec<Result<Predicted, PredictError>> {
        let classifier = model.classifier.clone();
        let products = Arc::new(products);
        let work = products.clone();
        let budget = self.batch_budget;
        let deadline = std::time::Instant::now() + budget;
        let outcomes = self
            .run_cpu(move || -> Vec<Result<ProductPrediction, PredictError>> {
                use rayon::prelude::*;
                // Past the deadline, the products left are not scored: the work stops
                // with the request instead of running on after its answer.
                work.par_iter()
                    .map(|product| {
                        if std::time::Instant::now() > deadline {
                            return Err(PredictError::OverBudget(budget));
                        }
                        Ok(classifier.predict(&product.input(), product.explain)?)
                    })
                    .collect()
            })
            .await;
        let outcomes = match outcomes {
            Ok(outcomes) => outcomes,
            Err(error) => {
                return products
                    .iter()
                    .map(|_| Err(PredictError::Task(error.to_string())))
                    .collect()
            }
        };
        outcomes
            .into_iter()
            .zip(products.iter())
            .enumerate()
            .map(|(index, (outcome, product))| {
                let requester = requesters
                    .get(index)
                    .or(requesters.last())
                    .cloned()
                    .unwrap_or_else(|| Requester::new(PredictionSource::Batch));
                let description_empty = product.description.trim().is_empty();
                Ok(self.finish(
                    model,
                    outcome?,
                    &requester,
                    description_empty,
                    mode,
                    (ServingRole::Champion, new_prediction_id()),
                ))
            })
            .collect()
    }

    /// Counts, and builds (and in [`LogMode::Background`] sends) the log row.
    fn finish(
        &self,
        model: &ServedModel,
        prediction: ProductPrediction,
        requester: &Requester,
        description_empty: bool,
        mode: LogMode,
        (role, prediction_id): (ServingRole, String),
    ) -> Predicted {
        metrics::counter!(
            "prodcat_predictions_total",
            "category" => prediction.category.value().to_string(),
            "source" => requester.source.as_str()
        )
        .increment(1);
        metrics::counter!(
            "prodcat_prediction_decisions_total",
            "decision" => if prediction.automatic { "automatic" } else { "review" },
            "source" => requester.source.as_str()
        )
        .increment(1);
        metrics::histogram!("prodcat_prediction_confidence")
            .record(f64::from(prediction.confidence));
        let context = PredictionContext {
            prediction_id: prediction_id.clone(),
            source: requester.source,
            serving_role: role,
            client: requester.client.clone(),
            product_id: requester.product_id,
        };
        let categories: Arc<[CategoryCode]> = model.classifier.categories().into();
        let log = PredictionLogRow::from_prediction(
            &prediction,
            &context,
            description_empty,
            &categories,
        );
        if mode == LogMode::Background {
            if let Some(writer) = &self.log {
                writer.record(log.clone());
            }
        }
        Predicted {
            prediction,
            prediction_id,
            log,
            categories,
        }
    }
}
