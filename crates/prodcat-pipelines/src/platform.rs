//! The platform handle: database, object store, pretrained model files, and the models loaded from
//! the registry (cached by version, so a version is loaded and verified once per process).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prodcat_embed::TextEmbedder;
use prodcat_model::{load_bundle, ImageBackbone, ProductClassifier};
use prodcat_registry::ModelVersion;
use prodcat_storage::{Database, ObjectStorage};

use crate::notify::Notifier;
use crate::PipelineError;

/// Everything an operation needs, shared cheaply between tasks.
#[derive(Clone)]
pub struct Platform {
    pub database: Database,
    pub objects: ObjectStorage,
    model_dir: PathBuf,
    backbone: Arc<Mutex<Option<Option<ImageBackbone>>>>,
    embedder: Arc<Mutex<Option<Option<Arc<TextEmbedder>>>>>,
    classifiers: Arc<Mutex<HashMap<String, ProductClassifier>>>,
    webhook_url: Option<String>,
}

impl Platform {
    pub fn new(database: Database, objects: ObjectStorage, model_dir: &Path) -> Self {
        Self {
            database,
            objects,
            model_dir: model_dir.to_path_buf(),
            backbone: Arc::new(Mutex::new(None)),
            embedder: Arc::new(Mutex::new(None)),
            classifiers: Arc::new(Mutex::new(HashMap::new())),
            webhook_url: std::env::var(crate::notify::WEBHOOK_ENVIRONMENT_VARIABLE)
                .ok()
                .filter(|url| !url.trim().is_empty()),
        }
    }

    /// Sets the webhook notifications go to (`None`: recorded only). The default comes from
    /// `PRODCAT_WEBHOOK_URL`.
    pub fn with_webhook_url(mut self, url: Option<String>) -> Self {
        self.webhook_url = url.filter(|url| !url.trim().is_empty());
        self
    }

    /// The notifier for the configured webhook.
    pub fn notifier(&self) -> Notifier {
        Notifier::new(self.webhook_url.clone())
    }

    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    /// The image backbone, loaded once; `None` when its files are not installed.
    pub fn backbone(&self) -> Result<Option<ImageBackbone>, PipelineError> {
        let mut slot = self.backbone.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(loaded) = slot.as_ref() {
            return Ok(loaded.clone());
        }
        let loaded = ImageBackbone::load_if_present(&self.model_dir)?;
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    /// The text embedder, loaded once; `None` when its files are not installed.
    pub fn embedder(&self) -> Result<Option<Arc<TextEmbedder>>, PipelineError> {
        let mut slot = self.embedder.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(loaded) = slot.as_ref() {
            return Ok(loaded.clone());
        }
        let directory = self.model_dir.join("e5-small");
        let loaded = if directory.join("manifest.json").is_file() {
            Some(Arc::new(TextEmbedder::load(&directory)?))
        } else {
            None
        };
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    /// The classifier of a registry reference (id, prefix, alias, `latest`).
    pub async fn classifier(&self, reference: &str) -> Result<ProductClassifier, PipelineError> {
        let version = prodcat_registry::resolve(&self.database, reference).await?;
        self.classifier_for(&version).await
    }

    /// The classifier of a registered version (loaded, verified and cached).
    pub async fn classifier_for(
        &self,
        version: &ModelVersion,
    ) -> Result<ProductClassifier, PipelineError> {
        let key = version.id.to_string();
        if let Some(found) = self
            .classifiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(found.clone());
        }
        let bundle = load_bundle(&self.objects, &version.id).await?;
        let backbone = if bundle.image.is_some() {
            self.backbone()?
        } else {
            None
        };
        let classifier = ProductClassifier::new(bundle, backbone)?;
        self.classifiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, classifier.clone());
        Ok(classifier)
    }
}
