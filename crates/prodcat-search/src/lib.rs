//! Catalogue search for prodcat: a tantivy BM25 index (accent folding, typo tolerance ranked
//! below exact words), int8 cosine search over multilingual-e5-small text vectors, hybrid
//! ranking by reciprocal rank fusion, "did you mean" from the title vocabulary, similar products
//! by text and image vectors with a popularity fallback, and a persistent embedding cache keyed
//! by text hash.
//!
//! [`CatalogueSearch`] holds the indexes; the caller keeps them in step with its products.

mod analysis;
mod catalogue;
mod embedding;
mod error;
mod keyword;
mod options;
mod search;
mod similar;
mod types;
mod vectors;
mod vocabulary;

pub use analysis::{edit_distance, embedding_text, folded_tokens};
pub use catalogue::CatalogueSearch;
pub use embedding::{model_id_of_directory, E5Embedder, EmbeddingCache, SentenceEmbedder};
pub use error::SearchError;
pub use keyword::{required_words, FUZZY_PENALTY, MAX_FUZZY_EXPANSIONS};
pub use options::{SearchOptions, SimilarityOptions, DEFAULT_MINIMUM_MEANING_SIMILARITY};
pub use search::reciprocal_rank_fusion;
pub use similar::combined_similarity;
pub use types::*;
pub use vectors::{kernel_name, set_portable_kernels, QuantizedVector};
