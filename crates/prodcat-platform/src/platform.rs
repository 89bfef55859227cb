//! The platform handle: the one place that turns settings into a database, an object store,
//! the pretrained model folder and the models loaded from the registry.
//!
//! Loaded model versions are kept in a small cache (least recently used first out), so a
//! version is loaded and verified once while it is in use, and a process that has served many
//! versions over its life does not keep them all in memory.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prodcat_embed::TextEmbedder;
use prodcat_model::{load_bundle, BackboneChoice, ImageBackbone, ProductClassifier};
use prodcat_registry::ModelVersion;
use prodcat_storage::{Database, ObjectStorage};

use crate::settings::Settings;
use crate::PlatformError;

/// Everything an operation needs, shared cheaply between tasks.
#[derive(Clone)]
pub struct Platform {
    pub database: Database,
    pub objects: ObjectStorage,
    model_dir: PathBuf,
    backbones: Arc<Mutex<HashMap<BackboneChoice, Option<ImageBackbone>>>>,
    embedder: Arc<Mutex<Option<Option<Arc<TextEmbedder>>>>>,
    classifiers: Arc<Mutex<ClassifierCache>>,
    webhook_urls: Vec<String>,
    webhook_secret: Option<Vec<u8>>,
    /// Who acts through this platform (recorded with runs), e.g. the signed-in system user.
    actor: String,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("database", &self.database.display_url())
            .field("objects", &self.objects.location())
            .field("model_dir", &self.model_dir)
            .finish_non_exhaustive()
    }
}

/// Loaded classifiers by version id, most recently used last.
struct ClassifierCache {
    capacity: usize,
    entries: VecDeque<(String, ProductClassifier)>,
}

impl ClassifierCache {
    fn get(&mut self, key: &str) -> Option<ProductClassifier> {
        let position = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(position)?;
        let classifier = entry.1.clone();
        self.entries.push_back(entry);
        Some(classifier)
    }

    fn insert(&mut self, key: String, classifier: ProductClassifier) {
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push_back((key, classifier));
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }
}

/// The webhook signing secret from its file (at least 16 bytes).
fn webhook_secret(settings: &Settings) -> Result<Option<Vec<u8>>, PlatformError> {
    let Some(path) = &settings.webhook_secret_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| PlatformError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let secret = text.trim().as_bytes().to_vec();
    if secret.len() < 16 {
        return Err(PlatformError::Settings {
            name: "webhook-secret-file".to_string(),
            reason: format!("{} holds fewer than 16 bytes", path.display()),
        });
    }
    Ok(Some(secret))
}

impl Platform {
    /// Opens the database (running migrations) and the object store the settings name.
    pub async fn from_settings(settings: &Settings) -> Result<Self, PlatformError> {
        let database = settings.open_database().await?;
        let objects = settings.open_objects()?;
        Ok(Self::new(database, objects, &settings.model_dir)
            .with_model_cache_size(settings.model_cache_size)
            .with_webhooks(settings.webhook_urls.clone(), webhook_secret(settings)?)
            .with_actor(settings.actor.clone()))
    }

    /// Like [`Platform::from_settings`], with the short database waits of a service: a
    /// request that cannot get a connection within `server.database-timeout-milliseconds`
    /// fails (and is answered 503) instead of waiting.
    pub async fn for_service(settings: &Settings) -> Result<Self, PlatformError> {
        let wait = prodcat_storage::ConnectOptions::interactive(settings.server.database_timeout);
        let database = settings.open_database_with(&wait).await?;
        let objects = settings.open_objects()?;
        Ok(Self::new(database, objects, &settings.model_dir)
            .with_model_cache_size(settings.model_cache_size)
            .with_webhooks(settings.webhook_urls.clone(), webhook_secret(settings)?)
            .with_actor(settings.actor.clone()))
    }

    /// A platform over an open database and object store (tests, tools).
    pub fn new(database: Database, objects: ObjectStorage, model_dir: &Path) -> Self {
        Self {
            database,
            objects,
            model_dir: model_dir.to_path_buf(),
            backbones: Arc::new(Mutex::new(HashMap::new())),
            embedder: Arc::new(Mutex::new(None)),
            classifiers: Arc::new(Mutex::new(ClassifierCache {
                capacity: 4,
                entries: VecDeque::new(),
            })),
            webhook_urls: Vec::new(),
            webhook_secret: None,
            actor: "unknown".to_string(),
        }
    }

    /// Names who acts through this platform (recorded with runs and pipeline runs).
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// Who acts through this platform.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// Keeps at most `size` loaded versions in memory (at least one).
    pub fn with_model_cache_size(self, size: usize) -> Self {
        self.classifiers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .capacity = size.max(1);
        self
    }

    /// Sets the webhook notifications go to (`None`: recorded only).
    pub fn with_webhook_url(mut self, url: Option<String>) -> Self {
        self.webhook_urls = url
            .into_iter()
            .filter(|url| !url.trim().is_empty())
            .collect();
        self
    }

    /// Sets every webhook notifications go to, and the secret that signs deliveries.
    pub fn with_webhooks(mut self, urls: Vec<String>, secret: Option<Vec<u8>>) -> Self {
        self.webhook_urls = urls;
        self.webhook_secret = secret;
        self
    }

    /// The webhooks notifications go to (secrets: never print them).
    pub fn webhook_urls(&self) -> &[String] {
        &self.webhook_urls
    }

    /// The secret that signs webhook deliveries, if configured.
    pub fn webhook_secret(&self) -> Option<&[u8]> {
        self.webhook_secret.as_deref()
    }

    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    /// The default image backbone (MobileNetV2), loaded once; `None` when its files are not
    /// installed.
    pub fn backbone(&self) -> Result<Option<ImageBackbone>, PlatformError> {
        self.backbone_for(BackboneChoice::default())
    }

    /// A backbone choice, loaded once; `None` when its files are not installed.
    pub fn backbone_for(
        &self,
        choice: BackboneChoice,
    ) -> Result<Option<ImageBackbone>, PlatformError> {
        let mut loaded = self.backbones.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(backbone) = loaded.get(&choice) {
            return Ok(backbone.clone());
        }
        let backbone = ImageBackbone::load_choice_if_present(&self.model_dir, choice)?;
        loaded.insert(choice, backbone.clone());
        Ok(backbone)
    }

    /// The folder of the text embedding model.
    pub fn embedder_dir(&self) -> PathBuf {
        self.model_dir.join("e5-small")
    }

    /// The text embedder, loaded once; `None` when its files are not installed.
    pub fn embedder(&self) -> Result<Option<Arc<TextEmbedder>>, PlatformError> {
        let mut slot = self.embedder.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(loaded) = slot.as_ref() {
            return Ok(loaded.clone());
        }
        let directory = self.embedder_dir();
        let loaded = if directory.join("manifest.json").is_file() {
            Some(Arc::new(TextEmbedder::load(&directory)?))
        } else {
            None
        };
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    /// The classifier of a registry reference (id, prefix, alias, `latest`).
    pub async fn classifier(&self, reference: &str) -> Result<ProductClassifier, PlatformError> {
        let version = prodcat_registry::resolve(&self.database, reference).await?;
        self.classifier_for(&version).await
    }

    /// The classifier of a registered version (loaded, verified and cached).
    pub async fn classifier_for(
        &self,
        version: &ModelVersion,
    ) -> Result<ProductClassifier, PlatformError> {
        let key = version.id.to_string();
        if let Some(found) = self
            .classifiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(found);
        }
        let bundle = load_bundle(&self.objects, &version.id).await?;
        // The backbone the image branch was trained with (serving another one's features
        // would answer nonsense).
        let backbone = if bundle.image.is_some() {
            self.backbone_for(bundle.image_backbone_choice()?)?
        } else {
            None
        };
        let mut classifier = ProductClassifier::new(bundle, backbone)?;
        // The sentence embedder, when the text branch takes its vectors as features.
        if classifier.text_embedder_needed().is_some() {
            let embedder = self
                .embedder()?
                .ok_or(prodcat_model::ModelError::TextEmbedderUnavailable)?;
            classifier = classifier.with_text_embedder(embedder)?;
        }
        self.classifiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, classifier.clone());
        Ok(classifier)
    }

    /// How many loaded versions the cache holds now.
    pub fn cached_models(&self) -> usize {
        self.classifiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }
}
