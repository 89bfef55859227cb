//! Catalogue search in the service: the indexes of `prodcat-search` kept in step with the
//! products table.
//!
//! At start the indexes are built from every live product in the background (keyword search
//! answers as soon as the keyword stage is done; products are embedded afterwards, from the
//! embedding cache when they were embedded before). Then a sync task reads the products changed
//! since the last pass (by `updated_at_ms`, so changes made by other processes are seen too) and
//! updates or removes them; handlers that change a product wake it at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prodcat_catalogue::products::IndexedProduct;
use prodcat_model::FeatureCache;
use prodcat_platform::Platform;
use prodcat_search::{
    BuildStage, CatalogueSearch, E5Embedder, SearchDocument, SearchOptions, SentenceEmbedder,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::ServerError;

/// The search indexes of the live catalogue.
pub struct SearchService {
    index: Arc<CatalogueSearch>,
    features: Option<FeatureCache>,
    /// Highest `updated_at_ms` already applied to the indexes.
    synced_until_ms: AtomicI64,
    built: AtomicBool,
    wakeup: Notify,
}

impl SearchService {
    /// Opens empty indexes. The text embedder comes from the platform's model folder
    /// (`e5-small`); without it, search is by keyword only and similar products use images.
    /// `cache_dir` keeps product embeddings across restarts.
    pub fn open(platform: &Platform, cache_dir: Option<PathBuf>) -> Result<Self, ServerError> {
        let embedder: Option<Arc<dyn SentenceEmbedder>> = match platform.embedder() {
            Ok(Some(embedder)) => {
                let directory = platform.model_dir().join("e5-small");
                let model_id = prodcat_search::model_id_of_directory(&directory)
                    .unwrap_or_else(|_| "e5-small".to_string());
                Some(Arc::new(E5Embedder::new(embedder, model_id)))
            }
            Ok(None) => {
                tracing::warn!(
                    "the text embedding model is not installed (scripts/setup): search is by \
                     keyword only"
                );
                None
            }
            Err(error) => {
                tracing::warn!(%error, "the text embedding model failed to load: search is by keyword only");
                None
            }
        };
        let features = match platform.backbone() {
            Ok(Some(backbone)) => Some(FeatureCache::new(platform.objects.clone(), backbone)),
            _ => None,
        };
        let options = SearchOptions {
            embedding_cache_directory: cache_dir,
            ..SearchOptions::default()
        };
        let index = CatalogueSearch::open(options, embedder).map_err(|error| {
            ServerError::InvalidSetting {
                name: "search index",
                reason: error.to_string(),
            }
        })?;
        Ok(Self {
            index: Arc::new(index),
            features,
            synced_until_ms: AtomicI64::new(i64::MIN),
            built: AtomicBool::new(false),
            wakeup: Notify::new(),
        })
    }

    /// The indexes (searching and similar products).
    pub fn index(&self) -> &Arc<CatalogueSearch> {
        &self.index
    }

    /// Whether the first build has finished (before that, results may be incomplete).
    pub fn is_built(&self) -> bool {
        self.built.load(Ordering::Acquire)
    }

    /// Asks the sync task to look for changed products now.
    pub fn notify_change(&self) {
        self.wakeup.notify_one();
    }

    async fn read_rows(
        &self,
        platform: &Platform,
        since_ms: Option<i64>,
    ) -> Result<Vec<IndexedProduct>, ServerError> {
        Ok(prodcat_catalogue::products::products_for_index(&platform.database, since_ms).await?)
    }

    /// Search documents for live rows, with image features where the backbone is installed
    /// (computed once per image and cached in the object store).
    async fn documents(&self, rows: &[IndexedProduct]) -> Vec<SearchDocument> {
        let live: Vec<&IndexedProduct> = rows.iter().filter(|row| !row.deleted).collect();
        let mut image_features: Vec<Option<Vec<f32>>> = vec![None; live.len()];
        if let Some(cache) = &self.features {
            let with_image: Vec<(usize, String)> = live
                .iter()
                .enumerate()
                .filter_map(|(position, row)| row.image_hash.clone().map(|hash| (position, hash)))
                .collect();
            let hashes: Vec<String> = with_image.iter().map(|(_, hash)| hash.clone()).collect();
            if !hashes.is_empty() {
                match cache.features_for(&hashes, &|_| {}).await {
                    Ok(results) => {
                        for ((position, hash), result) in with_image.into_iter().zip(results) {
                            match result {
                                Ok(features) => image_features[position] = Some(features),
                                Err(error) => {
                                    tracing::warn!(image = %hash, %error, "image features unavailable for search")
                                }
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "image features unavailable for search")
                    }
                }
            }
        }
        live.into_iter()
            .zip(image_features)
            .map(|(row, image_features)| SearchDocument {
                product_id: row.id,
                designation: row.designation.clone(),
                description: row.description.clone(),
                category: row.category,
                image_features,
                popularity: row.view_count as f64,
            })
            .collect()
    }

    /// Builds the indexes from every live product.
    pub async fn build(&self, platform: &Platform) -> Result<(), ServerError> {
        let rows = self.read_rows(platform, None).await?;
        let high_water = rows.iter().map(|row| row.updated_at_ms).max();
        let documents = self.documents(&rows).await;
        let index = self.index.clone();
        let summary = tokio::task::spawn_blocking(move || {
            index.build(documents, &|progress| {
                if progress.stage == BuildStage::Keyword && progress.done == progress.total {
                    tracing::info!(products = progress.total, "keyword search index ready");
                }
            })
        })
        .await
        .map_err(|error| ServerError::Task {
            what: "search index build".to_string(),
            reason: error.to_string(),
        })?
        .map_err(|error| ServerError::Task {
            what: "search index".to_string(),
            reason: error.to_string(),
        })?;
        for (product, reason) in &summary.rejected {
            tracing::warn!(product, %reason, "product left out of the search index");
        }
        tracing::info!(
            documents = summary.documents,
            embedded = summary.vectors_embedded,
            from_cache = summary.vectors_from_cache,
            image_vectors = summary.image_vectors,
            "search index built"
        );
        if let Some(high_water) = high_water {
            self.synced_until_ms.fetch_max(high_water, Ordering::AcqRel);
        }
        self.built.store(true, Ordering::Release);
        Ok(())
    }

    /// Applies the products changed since the last pass; returns how many.
    pub async fn sync_changes(&self, platform: &Platform) -> Result<usize, ServerError> {
        let since = self.synced_until_ms.load(Ordering::Acquire);
        // Rows written in the same millisecond as the high-water mark are read again: applying
        // a product twice is harmless, missing one is not.
        let rows = self
            .read_rows(platform, Some(if since == i64::MIN { 0 } else { since }))
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let high_water = rows.iter().map(|row| row.updated_at_ms).max();
        let deleted: Vec<i64> = rows.iter().filter(|r| r.deleted).map(|r| r.id).collect();
        let documents = self.documents(&rows).await;
        let changed = rows.len();
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || {
            for id in deleted {
                index.delete(id)?;
            }
            index.upsert_many(documents)
        })
        .await
        .map_err(|error| ServerError::Task {
            what: "search index update".to_string(),
            reason: error.to_string(),
        })?
        .map_err(|error| ServerError::Task {
            what: "search index".to_string(),
            reason: error.to_string(),
        })?;
        if let Some(high_water) = high_water {
            self.synced_until_ms.fetch_max(high_water, Ordering::AcqRel);
        }
        Ok(changed)
    }

    /// Builds, then keeps the indexes in step with the products table until `shutdown`.
    pub async fn run(self: Arc<Self>, platform: Platform, shutdown: CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            built = self.build(&platform) => {
                if let Err(error) = built {
                    tracing::error!(%error, "building the search index failed; it is filled as products change");
                    self.built.store(true, Ordering::Release);
                }
            }
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = self.wakeup.notified() => {}
            }
            if let Err(error) = self.sync_changes(&platform).await {
                tracing::warn!(%error, "updating the search index failed; retrying");
            }
        }
    }
}
