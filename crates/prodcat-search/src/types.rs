//! What goes in and out: the product document the caller supplies, search and similarity
//! requests, and results that say why each product was returned.

use prodcat_domain::CategoryCode;

/// A product as the search indexes see it; the caller reads it from its products table.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchDocument {
    pub product_id: i64,
    /// Title (raw marketplace text; HTML and entities are cleaned here).
    pub designation: String,
    /// Description (raw, often HTML, may be empty).
    pub description: String,
    /// Confirmed or predicted category; `None` when not classified yet.
    pub category: Option<CategoryCode>,
    /// Image features (e.g. MobileNetV2's 1280 pooled values from `prodcat-model`'s
    /// `FeatureCache`); every product must use the same length.
    pub image_features: Option<Vec<f32>>,
    /// Larger is more popular (e.g. the view count): orders the fallback of similar products.
    pub popularity: f64,
}

/// Which ranking a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SearchMode {
    /// BM25 over titles and descriptions only.
    Keyword,
    /// Cosine similarity of text embeddings only.
    Meaning,
    /// Both lists fused by reciprocal rank (falls back to keyword when no embedder is loaded).
    #[default]
    Hybrid,
}

impl SearchMode {
    /// `keyword`, `meaning` or `hybrid`.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Keyword => "keyword",
            SearchMode::Meaning => "meaning",
            SearchMode::Hybrid => "hybrid",
        }
    }

    /// Parses `keyword`, `meaning` (or `semantic`) and `hybrid`, case-insensitively.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "keyword" | "keywords" => Some(SearchMode::Keyword),
            "meaning" | "semantic" => Some(SearchMode::Meaning),
            "hybrid" => Some(SearchMode::Hybrid),
            _ => None,
        }
    }
}

/// A search: query text, optional category filter, mode and page.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub query: String,
    pub category: Option<CategoryCode>,
    pub mode: SearchMode,
    /// Results skipped (page start).
    pub offset: usize,
    /// Results returned at most (page size), 1 to [`MAX_PAGE_SIZE`].
    pub limit: usize,
}

/// Largest page.
pub const MAX_PAGE_SIZE: usize = 200;
/// Deepest page start.
pub const MAX_OFFSET: usize = 10_000;
/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 2_048;

impl SearchRequest {
    /// A hybrid search of the first 20 results in every category.
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            category: None,
            mode: SearchMode::Hybrid,
            offset: 0,
            limit: 20,
        }
    }

    pub fn with_category(mut self, category: CategoryCode) -> Self {
        self.category = Some(category);
        self
    }

    pub fn with_mode(mut self, mode: SearchMode) -> Self {
        self.mode = mode;
        self
    }

    pub fn with_page(mut self, offset: usize, limit: usize) -> Self {
        self.offset = offset;
        self.limit = limit;
        self
    }
}

/// Why a product is in the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchKind {
    /// Its words match the query (BM25, typos tolerated).
    Keyword,
    /// Its text is close in meaning to the query.
    Meaning,
    /// Both.
    Both,
}

impl MatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::Keyword => "keyword",
            MatchKind::Meaning => "meaning",
            MatchKind::Both => "both",
        }
    }
}

/// A score and the 1-based rank it gave in its own list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankedScore {
    pub score: f32,
    pub rank: usize,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub product_id: i64,
    /// Normalised title.
    pub designation: String,
    pub category: Option<CategoryCode>,
    /// The ranking score: BM25 (keyword mode), cosine similarity (meaning mode) or the
    /// reciprocal-rank-fusion score (hybrid).
    pub score: f32,
    pub matched_by: MatchKind,
    /// BM25 score and keyword rank, when the words match.
    pub keyword: Option<RankedScore>,
    /// Cosine similarity and rank by meaning, when close in meaning.
    pub meaning: Option<RankedScore>,
}

/// One replaced word in a spelling suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    /// The query word as written (lowercase).
    pub from: String,
    /// The catalogue word proposed instead, as titles write it.
    pub to: String,
    pub edits: usize,
}

/// "Did you mean ...?": a corrected query and how many products it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpellingSuggestion {
    pub query: String,
    pub corrections: Vec<Correction>,
    /// Query words left out because no title has them or anything close, when the query found
    /// nothing with them.
    pub dropped: Vec<String>,
    pub keyword_matches: usize,
}

/// A page of results with what the client needs to explain them.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    /// Products matching in all (keyword: BM25 matches; meaning: products at or above the
    /// similarity threshold; hybrid: products matching either way).
    pub total: usize,
    /// Products whose words match.
    pub keyword_matches: usize,
    /// Products at or above the meaning threshold (0 when meaning was not used).
    pub meaning_matches: usize,
    /// The mode actually used (hybrid becomes keyword when no embedder is loaded).
    pub mode: SearchMode,
    /// Spelling suggestions, when keyword search found fewer than `suggest_below` products.
    pub did_you_mean: Vec<SpellingSuggestion>,
    /// When the first page is empty: the products nearest in meaning, whatever their
    /// similarity (empty when no embedder is loaded).
    pub nearest_by_meaning: Vec<SearchHit>,
}

/// Which rule put a product in a "similar products" list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimilarReason {
    /// Close by text and/or image, above the similarity threshold.
    Similar,
    /// Among the most popular products of the same category.
    PopularInCategory,
    /// Among the most popular products overall.
    PopularOverall,
}

impl SimilarReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SimilarReason::Similar => "similar",
            SimilarReason::PopularInCategory => "popularInCategory",
            SimilarReason::PopularOverall => "popularOverall",
        }
    }
}

/// One product of a "similar products" list.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarProduct {
    pub product_id: i64,
    pub designation: String,
    pub category: Option<CategoryCode>,
    pub reason: SimilarReason,
    /// Combined rescaled similarity (see [`crate::SimilarityOptions`]), for every product that
    /// has a vector in common with the viewed one.
    pub similarity: Option<f32>,
    /// Cosine similarity of the text embeddings, when both have one.
    pub text_similarity: Option<f32>,
    /// Cosine similarity of the image features, when both have them.
    pub image_similarity: Option<f32>,
    pub popularity: f64,
}

/// Stage of a build reported to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStage {
    /// Documents written to the keyword index.
    Keyword,
    /// Product vectors found in the embedding cache.
    CachedVectors,
    /// Product texts embedded by the model.
    Embedding,
}

/// Progress of a build: `done` of `total` for the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildProgress {
    pub stage: BuildStage,
    pub done: usize,
    pub total: usize,
}

/// What a build did.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSummary {
    pub documents: usize,
    /// Documents left out, with the reason (non-finite numbers, wrong image feature length,
    /// duplicate id).
    pub rejected: Vec<(i64, String)>,
    pub keyword_seconds: f64,
    pub vectors_from_cache: usize,
    pub vectors_embedded: usize,
    pub embedding_seconds: f64,
    pub image_vectors: usize,
}

/// What the indexes hold.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexStatus {
    pub products: usize,
    /// Products in the keyword index (as of its last commit).
    pub keyword_documents: u64,
    pub keyword_segments: usize,
    /// Products with a text vector (equals `products` once embedding has caught up).
    pub text_vectors: usize,
    pub image_vectors: usize,
    /// The embedding model in use, if any.
    pub model_id: Option<String>,
    pub title_words: usize,
    /// Approximate bytes held in memory by vectors, product entries and the vocabulary
    /// (the keyword index is accounted by tantivy separately).
    pub memory_bytes: usize,
}
