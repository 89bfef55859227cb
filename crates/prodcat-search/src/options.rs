//! Settings of the search indexes, with the defaults and the reasons for them.

use std::path::PathBuf;

use crate::error::SearchError;

/// How [`crate::CatalogueSearch`] indexes and ranks. `Default` gives the documented values.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    /// Where the keyword index lives; `None` keeps it in memory (rebuilt at every start anyway).
    pub keyword_index_directory: Option<PathBuf>,
    /// Where product vectors are persisted, keyed by a hash of the embedded text and named by
    /// model, so a restart embeds only new or changed products; `None` keeps them in memory
    /// only.
    pub embedding_cache_directory: Option<PathBuf>,
    /// Words of the (normalised) description embedded after the title: 30.
    /// multilingual-e5-small embeds about 60-80 titles per CPU-second; whole descriptions
    /// would be 5-10 times slower for little gain.
    pub description_words_embedded: usize,
    /// Product texts embedded per call during a build (progress is reported after each): 64.
    pub embedding_batch_size: usize,
    /// Threads of the keyword index writer: 2.
    pub writer_threads: usize,
    /// Memory of the keyword index writer before it flushes a segment: 64 MB.
    pub writer_memory_bytes: usize,
    /// BM25 multiplier of title matches over description matches: 2.5.
    pub title_boost: f32,
    /// Reciprocal-rank-fusion constant `k` in `score = Σ 1 / (k + rank)`: 60, the value of the
    /// original RRF paper (Cormack, Clarke and Büttcher, 2009), which damps the weight of the
    /// very first ranks so one list cannot dominate.
    pub fusion_constant: f32,
    /// Depth of each list (keyword, meaning) fused in hybrid search: 100 (or the requested
    /// page's end, when deeper).
    pub fusion_depth: usize,
    /// Cosine similarity between a query and a product text from which the product counts as a
    /// match by meaning. See [`DEFAULT_MINIMUM_MEANING_SIMILARITY`].
    pub minimum_meaning_similarity: f32,
    /// "Did you mean" suggestions are computed when keyword search finds fewer products: 3.
    pub suggest_below: usize,
    /// Spelling suggestions returned at most: 3.
    pub max_spelling_suggestions: usize,
    /// Similar products.
    pub similarity: SimilarityOptions,
}

/// Query-to-product cosine similarity (multilingual-e5-small, `query: ` / `passage: `) from which
/// a product counts as a match by meaning: 0.82. Measured on the real sample (see
/// `docs/benchmarks/prodcat-search.md`): below it most nearest products are from unrelated
/// categories.
pub const DEFAULT_MINIMUM_MEANING_SIMILARITY: f32 = 0.82;

/// How "similar products" are scored.
///
/// Each modality's cosine similarity `c` is rescaled to `(c - floor) / (1 - floor)`, where
/// `floor` is the similarity typical of unrelated products for that modality (text and image
/// vectors have very different cosine ranges); the product's similarity is the weighted mean
/// of the rescaled values of the modalities both products have (text only, image only, or
/// both with `text_weight` and `image_weight`). Products at or above `minimum_similarity` count
/// as similar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimilarityOptions {
    /// Weight of the text similarity when both products also have image features: 0.6.
    pub text_weight: f32,
    /// Weight of the image similarity when both products have image features: 0.4.
    pub image_weight: f32,
    /// Text cosine (e5 passage to passage) typical of unrelated products.
    pub text_floor: f32,
    /// Image cosine (MobileNetV2 pooled features) typical of unrelated products.
    pub image_floor: f32,
    /// Rescaled similarity from which a product counts as similar.
    pub minimum_similarity: f32,
    /// Nearest products taken from each modality before combining: 200.
    pub candidates_per_modality: usize,
}

impl Default for SimilarityOptions {
    fn default() -> Self {
        Self {
            text_weight: 0.6,
            image_weight: 0.4,
            text_floor: 0.80,
            image_floor: 0.45,
            minimum_similarity: 0.45,
            candidates_per_modality: 200,
        }
    }
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            keyword_index_directory: None,
            embedding_cache_directory: None,
            description_words_embedded: 30,
            embedding_batch_size: 64,
            writer_threads: 2,
            writer_memory_bytes: 64_000_000,
            title_boost: 2.5,
            fusion_constant: 60.0,
            fusion_depth: 100,
            minimum_meaning_similarity: DEFAULT_MINIMUM_MEANING_SIMILARITY,
            suggest_below: 3,
            max_spelling_suggestions: 3,
            similarity: SimilarityOptions::default(),
        }
    }
}

impl SearchOptions {
    /// Rejects values that cannot work (zero batch, negative weights, floors of 1 or more).
    pub fn validate(&self) -> Result<(), SearchError> {
        let similarity = &self.similarity;
        let checks: [(bool, &str); 9] = [
            (
                self.embedding_batch_size > 0,
                "embedding_batch_size must be at least 1",
            ),
            (self.writer_threads > 0, "writer_threads must be at least 1"),
            (
                self.title_boost.is_finite() && self.title_boost > 0.0,
                "title_boost must be a positive number",
            ),
            (
                self.fusion_constant.is_finite() && self.fusion_constant >= 0.0,
                "fusion_constant must be a non-negative number",
            ),
            (self.fusion_depth > 0, "fusion_depth must be at least 1"),
            (
                self.minimum_meaning_similarity.is_finite(),
                "minimum_meaning_similarity must be a number",
            ),
            (
                similarity.text_weight.is_finite()
                    && similarity.image_weight.is_finite()
                    && similarity.text_weight >= 0.0
                    && similarity.image_weight >= 0.0
                    && similarity.text_weight + similarity.image_weight > 0.0,
                "similarity weights must be non-negative and not both zero",
            ),
            (
                similarity.text_floor.is_finite()
                    && similarity.image_floor.is_finite()
                    && similarity.text_floor < 1.0
                    && similarity.image_floor < 1.0,
                "similarity floors must be numbers below 1",
            ),
            (
                similarity.minimum_similarity.is_finite() && similarity.candidates_per_modality > 0,
                "minimum_similarity must be a number and candidates_per_modality at least 1",
            ),
        ];
        for (ok, message) in checks {
            if !ok {
                return Err(SearchError::InvalidOptions(message.to_string()));
            }
        }
        Ok(())
    }
}
