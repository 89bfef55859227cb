//! Catalogue search for prodcat (placeholder doc, rewritten below).

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
pub use vectors::{kernel_name, QuantizedVector};
