//! [`CatalogueSearch`]: the keyword index, the text and image vectors, the product entries and
//! the title vocabulary kept together; building from the products table, incremental updates
//! and deletes, and the status. Searching lives in `search.rs`, similar products in
//! `similar.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use prodcat_domain::{normalize_text, CategoryCode};

use crate::analysis::{self, analyse, AnalysedToken};
use crate::embedding::{text_key, EmbeddingCache, SentenceEmbedder, TextKey};
use crate::error::SearchError;
use crate::keyword::{KeywordDocument, KeywordIndex, KeywordRanking};
use crate::options::SearchOptions;
use crate::types::{BuildProgress, BuildStage, BuildSummary, IndexStatus, SearchDocument};
use crate::vectors::{QuantizedVector, VectorStore, NO_TAG};
use crate::vocabulary::TitleVocabulary;

/// What is kept in memory about one product.
#[derive(Debug, Clone)]
pub(crate) struct ProductEntry {
    pub designation: String,
    pub title_tokens: Vec<AnalysedToken>,
    pub category: Option<CategoryCode>,
    pub popularity: f64,
    pub text_key: TextKey,
}

pub(crate) struct State {
    pub entries: HashMap<i64, ProductEntry>,
    pub text_vectors: VectorStore,
    pub image_vectors: Option<VectorStore>,
    pub vocabulary: TitleVocabulary,
}

/// A product checked and prepared for indexing.
struct PreparedDocument {
    product_id: i64,
    title: String,
    description: String,
    entry: ProductEntry,
    embedding_text: String,
    image: Option<QuantizedVector>,
    image_dimension: Option<usize>,
}

pub(crate) fn category_tag(category: Option<CategoryCode>) -> u16 {
    category.map_or(NO_TAG, |code| code.index() as u16)
}

/// Keyword search, search by meaning and similar products over the live catalogue.
///
/// `Send + Sync`; share it in an `Arc`. Searches run concurrently with each other and with
/// updates; updates are serialised. See the crate documentation for how a server uses it.
pub struct CatalogueSearch {
    pub(crate) options: SearchOptions,
    pub(crate) embedder: Option<Arc<dyn SentenceEmbedder>>,
    pub(crate) keyword: KeywordIndex,
    pub(crate) state: RwLock<State>,
    cache: Option<Mutex<EmbeddingCache>>,
    /// Serialises writers (build phases, upserts, deletes) so the keyword index and the
    /// in-memory state change in the same order.
    write_lock: Mutex<()>,
    /// Serialises builds (a build releases `write_lock` while it embeds).
    build_lock: Mutex<()>,
}

impl std::fmt::Debug for CatalogueSearch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CatalogueSearch")
            .field("status", &self.status())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CatalogueSearch {
    /// Creates empty indexes. With an `embedder`, products get text vectors (search by meaning,
    /// hybrid ranking, text similarity); without, only keyword search and image similarity
    /// work. Opening the embedding cache reads its key table (about 0.1 s per 100,000 vectors).
    pub fn open(
        options: SearchOptions,
        embedder: Option<Arc<dyn SentenceEmbedder>>,
    ) -> Result<Self, SearchError> {
        options.validate()?;
        let keyword = KeywordIndex::open(
            options.keyword_index_directory.as_deref(),
            options.writer_threads,
            options.writer_memory_bytes,
            KeywordRanking {
                title_boost: options.title_boost,
            },
        )?;
        let dimension = embedder.as_ref().map_or(0, |embedder| embedder.dimension());
        let cache = match (&embedder, &options.embedding_cache_directory) {
            (Some(embedder), Some(directory)) => Some(Mutex::new(EmbeddingCache::open(
                directory,
                embedder.model_id(),
                dimension,
            )?)),
            _ => None,
        };
        Ok(Self {
            state: RwLock::new(State {
                entries: HashMap::new(),
                text_vectors: VectorStore::new(dimension),
                image_vectors: None,
                vocabulary: TitleVocabulary::new(),
            }),
            options,
            embedder,
            keyword,
            cache,
            write_lock: Mutex::new(()),
            build_lock: Mutex::new(()),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &SearchOptions {
        &self.options
    }

    /// Whether search by meaning and text similarity are available.
    pub fn has_embedder(&self) -> bool {
        self.embedder.is_some()
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn prepare(&self, document: &SearchDocument) -> Result<PreparedDocument, String> {
        if !document.popularity.is_finite() {
            return Err(format!(
                "popularity {} is not a finite number",
                document.popularity
            ));
        }
        let (image, image_dimension) = match &document.image_features {
            None => (None, None),
            Some(features) => {
                if features.iter().any(|value| !value.is_finite()) {
                    return Err("image features contain a non-finite value".to_string());
                }
                match QuantizedVector::from_values(features) {
                    Some(vector) => (Some(vector), Some(features.len())),
                    // An all-zero feature vector has no direction: the product is compared by
                    // text only.
                    None => (None, None),
                }
            }
        };
        let title = normalize_text(analysis::truncate_at_char_boundary(
            &document.designation,
            analysis::MAX_INDEXED_FIELD_BYTES,
        ));
        let description = normalize_text(analysis::truncate_at_char_boundary(
            &document.description,
            analysis::MAX_INDEXED_FIELD_BYTES,
        ));
        let embedding_text = analysis::embedding_text(
            &document.designation,
            &document.description,
            self.options.description_words_embedded,
        );
        let entry = ProductEntry {
            title_tokens: analyse(&title),
            designation: title.clone(),
            category: document.category,
            popularity: document.popularity,
            text_key: text_key(&embedding_text),
        };
        Ok(PreparedDocument {
            product_id: document.product_id,
            title,
            description,
            entry,
            embedding_text,
            image,
            image_dimension,
        })
    }

    fn check_image_dimension(
        state_dimension: Option<usize>,
        prepared: &PreparedDocument,
    ) -> Result<(), String> {
        match (state_dimension, prepared.image_dimension) {
            (Some(expected), Some(actual)) if expected != actual => Err(format!(
                "image features have {actual} values; the index holds {expected}-value features"
            )),
            _ => Ok(()),
        }
    }

    /// Embeds texts in one call and checks the output.
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<QuantizedVector>, SearchError> {
        let Some(embedder) = &self.embedder else {
            return Ok(Vec::new());
        };
        let vectors = embedder.embed_passages(texts);
        if vectors.len() != texts.len() {
            return Err(SearchError::EmbedderOutput {
                model_id: embedder.model_id().to_string(),
                detail: format!("{} vectors for {} texts", vectors.len(), texts.len()),
            });
        }
        let dimension = embedder.dimension();
        vectors
            .iter()
            .map(|vector| {
                if vector.len() != dimension {
                    return Err(SearchError::EmbedderOutput {
                        model_id: embedder.model_id().to_string(),
                        detail: format!("a {}-value vector instead of {dimension}", vector.len()),
                    });
                }
                // A text the model maps to zero (cannot happen with e5's normalised output)
                // gets a fixed direction rather than failing the whole batch.
                Ok(QuantizedVector::from_values(vector).unwrap_or_else(|| {
                    let mut codes = vec![0i8; dimension];
                    if let Some(first) = codes.first_mut() {
                        *first = 127;
                    }
                    QuantizedVector {
                        scale: 1.0 / 127.0,
                        codes,
                    }
                }))
            })
            .collect()
    }

    /// Vectors for `texts` (key, text): from the cache when there, else embedded and cached.
    fn vectors_for(
        &self,
        texts: &[(TextKey, &str)],
    ) -> Result<HashMap<TextKey, QuantizedVector>, SearchError> {
        let mut found = HashMap::new();
        if self.embedder.is_none() || texts.is_empty() {
            return Ok(found);
        }
        let mut missing: Vec<(TextKey, &str)> = Vec::new();
        match &self.cache {
            Some(cache) => {
                let mut cache = lock(cache);
                for (key, text) in texts {
                    match cache.get(key)? {
                        Some(vector) => {
                            found.insert(*key, vector);
                        }
                        None => missing.push((*key, text)),
                    }
                }
            }
            None => missing.extend(texts.iter().copied()),
        }
        missing.sort_by_key(|(key, _)| *key);
        missing.dedup_by_key(|(key, _)| *key);
        for batch in missing.chunks(self.options.embedding_batch_size) {
            let batch_texts: Vec<&str> = batch.iter().map(|(_, text)| *text).collect();
            let vectors = self.embed_texts(&batch_texts)?;
            let entries: Vec<(TextKey, QuantizedVector)> =
                batch.iter().map(|(key, _)| *key).zip(vectors).collect();
            if let Some(cache) = &self.cache {
                lock(cache).append(&entries)?;
            }
            found.extend(entries);
        }
        Ok(found)
    }

    /// Replaces everything with `documents` (typically every live row of the products table).
    ///
    /// Blocking; run it on a blocking thread. Keyword search over the new documents works as
    /// soon as the [`BuildStage::Keyword`] stage is done; text vectors then come from the
    /// embedding cache, and the rest is embedded in batches of
    /// [`SearchOptions::embedding_batch_size`] (about 15 minutes of 2 cores for 85,000 products
    /// the first time). Searches and updates go on meanwhile: products not embedded yet are
    /// only found by keyword. Invalid documents are left out and listed in the summary.
    pub fn build(
        &self,
        documents: impl IntoIterator<Item = SearchDocument>,
        progress: &(dyn Fn(BuildProgress) + Sync),
    ) -> Result<BuildSummary, SearchError> {
        let _build = lock(&self.build_lock);
        let keyword_started = Instant::now();
        let mut rejected: Vec<(i64, String)> = Vec::new();
        let mut prepared: Vec<PreparedDocument> = Vec::new();
        let mut seen: HashSet<i64> = HashSet::new();
        let mut image_dimension: Option<usize> = None;
        for document in documents {
            if !seen.insert(document.product_id) {
                rejected.push((
                    document.product_id,
                    "the same product id appears more than once".to_string(),
                ));
                continue;
            }
            match self.prepare(&document).and_then(|ready| {
                Self::check_image_dimension(image_dimension, &ready)?;
                Ok(ready)
            }) {
                Ok(ready) => {
                    image_dimension = image_dimension.or(ready.image_dimension);
                    prepared.push(ready);
                }
                Err(reason) => rejected.push((document.product_id, reason)),
            }
        }
        let total = prepared.len();
        {
            let _writer = lock(&self.write_lock);
            let reported = std::sync::atomic::AtomicUsize::new(0);
            self.keyword
                .replace_all(prepared.iter().enumerate().map(|(index, document)| {
                    if (index + 1) % 1000 == 0 {
                        reported.store(index + 1, std::sync::atomic::Ordering::Relaxed);
                        progress(BuildProgress {
                            stage: BuildStage::Keyword,
                            done: index + 1,
                            total,
                        });
                    }
                    KeywordDocument {
                        product_id: document.product_id,
                        title: &document.title,
                        description: &document.description,
                        category: document.entry.category,
                    }
                }))?;
            progress(BuildProgress {
                stage: BuildStage::Keyword,
                done: total,
                total,
            });
            let mut state = self.write_state();
            let dimension = state.text_vectors.dimension();
            let mut text_vectors = VectorStore::new(dimension);
            let mut image_vectors = image_dimension.map(VectorStore::new);
            let mut vocabulary = TitleVocabulary::new();
            let mut entries = HashMap::with_capacity(total);
            for document in &prepared {
                let tag = category_tag(document.entry.category);
                // Keep vectors of unchanged texts (a rebuild of a running index).
                if let Some(previous) = state.entries.get(&document.product_id) {
                    if previous.text_key == document.entry.text_key {
                        if let Some(vector) = state.text_vectors.get(document.product_id) {
                            text_vectors.upsert(document.product_id, &vector, tag);
                        }
                    }
                }
                if let (Some(store), Some(image)) = (image_vectors.as_mut(), &document.image) {
                    store.upsert(document.product_id, image, tag);
                }
                vocabulary.add_title(&document.entry.title_tokens);
                entries.insert(document.product_id, document.entry.clone());
            }
            *state = State {
                entries,
                text_vectors,
                image_vectors,
                vocabulary,
            };
        }
        let keyword_seconds = keyword_started.elapsed().as_secs_f64();
        let image_vectors = self
            .read_state()
            .image_vectors
            .as_ref()
            .map_or(0, VectorStore::len);

        let embedding_started = Instant::now();
        let (vectors_from_cache, vectors_embedded) = self.embed_missing(&prepared, progress)?;
        Ok(BuildSummary {
            documents: total,
            rejected,
            keyword_seconds,
            vectors_from_cache,
            vectors_embedded,
            embedding_seconds: embedding_started.elapsed().as_secs_f64(),
            image_vectors,
        })
    }

    /// Gives a text vector to every built product still without one; returns how many came
    /// from the cache and how many were embedded.
    fn embed_missing(
        &self,
        prepared: &[PreparedDocument],
        progress: &(dyn Fn(BuildProgress) + Sync),
    ) -> Result<(usize, usize), SearchError> {
        if self.embedder.is_none() {
            return Ok((0, 0));
        }
        let missing: Vec<&PreparedDocument> = {
            let state = self.read_state();
            prepared
                .iter()
                .filter(|document| !state.text_vectors.contains(document.product_id))
                .collect()
        };
        let mut from_cache = 0;
        let mut to_embed: Vec<&PreparedDocument> = Vec::new();
        if let Some(cache) = &self.cache {
            let wanted: HashSet<TextKey> = missing
                .iter()
                .map(|document| document.entry.text_key)
                .collect();
            let cached = lock(cache).get_many(&wanted)?;
            let mut state = self.write_state();
            for document in &missing {
                match cached.get(&document.entry.text_key) {
                    Some(vector) => {
                        from_cache += usize::from(Self::insert_vector_if_current(
                            &mut state, document, vector,
                        ));
                    }
                    None => to_embed.push(document),
                }
            }
            drop(state);
            progress(BuildProgress {
                stage: BuildStage::CachedVectors,
                done: from_cache,
                total: missing.len(),
            });
        } else {
            to_embed = missing;
        }
        // Identical texts (relisted products) are embedded once.
        let mut by_key: HashMap<TextKey, Vec<&PreparedDocument>> = HashMap::new();
        let mut order: Vec<TextKey> = Vec::new();
        for document in to_embed {
            let key = document.entry.text_key;
            by_key.entry(key).or_insert_with(|| {
                order.push(key);
                Vec::new()
            });
            if let Some(list) = by_key.get_mut(&key) {
                list.push(document);
            }
        }
        let total = order.len();
        let mut embedded = 0;
        let mut done = 0;
        for keys in order.chunks(self.options.embedding_batch_size) {
            let texts: Vec<&str> = keys
                .iter()
                .filter_map(|key| by_key.get(key).and_then(|documents| documents.first()))
                .map(|document| document.embedding_text.as_str())
                .collect();
            let vectors = self.embed_texts(&texts)?;
            let entries: Vec<(TextKey, QuantizedVector)> =
                keys.iter().copied().zip(vectors).collect();
            if let Some(cache) = &self.cache {
                lock(cache).append(&entries)?;
            }
            {
                let mut state = self.write_state();
                for (key, vector) in &entries {
                    for document in by_key.get(key).into_iter().flatten() {
                        embedded += usize::from(Self::insert_vector_if_current(
                            &mut state, document, vector,
                        ));
                    }
                }
            }
            done += keys.len();
            progress(BuildProgress {
                stage: BuildStage::Embedding,
                done,
                total,
            });
        }
        if let (Some(cache), Some(embedder)) = (&self.cache, &self.embedder) {
            let live: HashSet<TextKey> = self
                .read_state()
                .entries
                .values()
                .map(|entry| entry.text_key)
                .collect();
            let mut cache = lock(cache);
            cache.sync()?;
            cache.compact_if_mostly_stale(&live, embedder.model_id())?;
        }
        Ok((from_cache, embedded))
    }

    /// Stores a built product's vector unless the product changed or went away meanwhile.
    fn insert_vector_if_current(
        state: &mut State,
        document: &PreparedDocument,
        vector: &QuantizedVector,
    ) -> bool {
        let current = state
            .entries
            .get(&document.product_id)
            .filter(|entry| entry.text_key == document.entry.text_key)
            .map(|entry| category_tag(entry.category));
        match current {
            Some(tag) if !state.text_vectors.contains(document.product_id) => {
                state.text_vectors.upsert(document.product_id, vector, tag);
                true
            }
            _ => false,
        }
    }

    /// Adds or replaces one product (after a create or an edit in the products table).
    /// Blocking: embeds the text when it changed (about 5-15 ms) and commits the keyword
    /// index (a few ms in memory); the next search sees the product.
    pub fn upsert(&self, document: SearchDocument) -> Result<(), SearchError> {
        self.upsert_many(vec![document])
    }

    /// Adds or replaces many products with one embedding pass and one keyword commit. Fails
    /// without changing anything when a document is invalid.
    pub fn upsert_many(&self, documents: Vec<SearchDocument>) -> Result<(), SearchError> {
        if documents.is_empty() {
            return Ok(());
        }
        let mut prepared: Vec<PreparedDocument> = Vec::with_capacity(documents.len());
        let mut seen: HashMap<i64, usize> = HashMap::new();
        let mut image_dimension = self
            .read_state()
            .image_vectors
            .as_ref()
            .map(VectorStore::dimension);
        for document in &documents {
            let ready = self.prepare(document).and_then(|ready| {
                Self::check_image_dimension(image_dimension, &ready)?;
                Ok(ready)
            });
            let ready = ready.map_err(|reason| SearchError::InvalidDocument {
                product_id: document.product_id,
                reason,
            })?;
            image_dimension = image_dimension.or(ready.image_dimension);
            // The last version of a product in the batch wins.
            match seen.get(&ready.product_id) {
                Some(&position) => prepared[position] = ready,
                None => {
                    seen.insert(ready.product_id, prepared.len());
                    prepared.push(ready);
                }
            }
        }
        let needed: Vec<(TextKey, &str)> = {
            let state = self.read_state();
            prepared
                .iter()
                .filter(|document| {
                    let unchanged = state
                        .entries
                        .get(&document.product_id)
                        .is_some_and(|entry| entry.text_key == document.entry.text_key)
                        && state.text_vectors.contains(document.product_id);
                    !unchanged
                })
                .map(|document| (document.entry.text_key, document.embedding_text.as_str()))
                .collect()
        };
        let vectors = self.vectors_for(&needed)?;

        let _writer = lock(&self.write_lock);
        {
            // Another writer may have set the image dimension since the check above.
            let state = self.read_state();
            let dimension = state.image_vectors.as_ref().map(VectorStore::dimension);
            for document in &prepared {
                Self::check_image_dimension(dimension, document).map_err(|reason| {
                    SearchError::InvalidDocument {
                        product_id: document.product_id,
                        reason,
                    }
                })?;
            }
        }
        let keyword_documents: Vec<KeywordDocument<'_>> = prepared
            .iter()
            .map(|document| KeywordDocument {
                product_id: document.product_id,
                title: &document.title,
                description: &document.description,
                category: document.entry.category,
            })
            .collect();
        self.keyword.apply(&keyword_documents, &[])?;
        let mut state = self.write_state();
        for document in &prepared {
            let tag = category_tag(document.entry.category);
            if let Some(previous) = state.entries.remove(&document.product_id) {
                state.vocabulary.remove_title(&previous.title_tokens);
            }
            state.vocabulary.add_title(&document.entry.title_tokens);
            match vectors.get(&document.entry.text_key) {
                Some(vector) => state.text_vectors.upsert(document.product_id, vector, tag),
                None => state.text_vectors.set_tag(document.product_id, tag),
            }
            match (&document.image, document.image_dimension) {
                (Some(image), Some(dimension)) => {
                    let store = state
                        .image_vectors
                        .get_or_insert_with(|| VectorStore::new(dimension));
                    store.upsert(document.product_id, image, tag);
                }
                _ => {
                    if let Some(store) = state.image_vectors.as_mut() {
                        store.remove(document.product_id);
                    }
                }
            }
            state
                .entries
                .insert(document.product_id, document.entry.clone());
        }
        Ok(())
    }

    /// Removes a product (after a delete in the products table); returns whether it was
    /// indexed. Blocking (one keyword commit); the next search no longer finds it.
    pub fn delete(&self, product_id: i64) -> Result<bool, SearchError> {
        let _writer = lock(&self.write_lock);
        if !self.read_state().entries.contains_key(&product_id) {
            return Ok(false);
        }
        self.keyword.apply(&[], &[product_id])?;
        let mut state = self.write_state();
        if let Some(previous) = state.entries.remove(&product_id) {
            state.vocabulary.remove_title(&previous.title_tokens);
        }
        state.text_vectors.remove(product_id);
        if let Some(store) = state.image_vectors.as_mut() {
            store.remove(product_id);
        }
        Ok(true)
    }

    /// Changes a product's popularity (e.g. after a view); cheap, nothing is re-indexed.
    pub fn set_popularity(&self, product_id: i64, popularity: f64) -> Result<(), SearchError> {
        if !popularity.is_finite() {
            return Err(SearchError::InvalidDocument {
                product_id,
                reason: format!("popularity {popularity} is not a finite number"),
            });
        }
        let mut state = self.write_state();
        let entry = state
            .entries
            .get_mut(&product_id)
            .ok_or(SearchError::UnknownProduct(product_id))?;
        entry.popularity = popularity;
        Ok(())
    }

    /// Whether a product is indexed.
    pub fn contains(&self, product_id: i64) -> bool {
        self.read_state().entries.contains_key(&product_id)
    }

    /// Products indexed.
    pub fn len(&self) -> usize {
        self.read_state().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the indexes hold.
    pub fn status(&self) -> IndexStatus {
        let state = self.read_state();
        let entries_bytes: usize = state
            .entries
            .values()
            .map(|entry| {
                96 + entry.designation.capacity()
                    + entry
                        .title_tokens
                        .iter()
                        .map(|token| 48 + token.folded.capacity() + token.surface.capacity())
                        .sum::<usize>()
            })
            .sum();
        IndexStatus {
            products: state.entries.len(),
            keyword_documents: self.keyword.document_count(),
            keyword_segments: self.keyword.segment_count(),
            text_vectors: state.text_vectors.len(),
            image_vectors: state.image_vectors.as_ref().map_or(0, VectorStore::len),
            model_id: self
                .embedder
                .as_ref()
                .map(|embedder| embedder.model_id().to_string()),
            title_words: state.vocabulary.len(),
            memory_bytes: entries_bytes
                + state.text_vectors.memory_bytes()
                + state
                    .image_vectors
                    .as_ref()
                    .map_or(0, VectorStore::memory_bytes)
                + state.vocabulary.memory_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_search_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CatalogueSearch>();
        assert_send_sync::<Arc<CatalogueSearch>>();
    }
}
