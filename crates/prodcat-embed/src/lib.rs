//! Multilingual text embeddings for search by meaning and similar products.
//!
//! Runs multilingual-e5-small (XLM-R tokenizer, 12-layer BERT encoder, 384 dimensions, trained
//! on about 100 languages) on the CPU from its 4-bit E5S1 file: a SentencePiece unigram
//! tokenizer, 4-bit × 8-bit integer matrix products (AVX-512 VNNI or AVX2 when the CPU has
//! them), mean pooling and L2 normalisation, with e5's `query: ` / `passage: ` prefixes.
//!
//! ```no_run
//! use prodcat_embed::TextEmbedder;
//! # fn main() -> Result<(), prodcat_embed::EmbedError> {
//! let embedder = TextEmbedder::load(std::path::Path::new("models/e5-small"))?;
//! let query = embedder.embed_query("piscine hors sol");
//! let products = embedder.embed_passages(&["Piscine tubulaire ronde 3,66 m", "Roman policier"]);
//! let scores: Vec<f32> = products.iter().map(|p| prodcat_embed::cosine_similarity(&query, p)).collect();
//! assert!(scores[0] > scores[1]);
//! # Ok(())
//! # }
//! ```
//!
//! The model directory is prepared by `scripts/models/fetch-e5.py`; see [`model_directory`]
//! for its layout. Any directory with an E5S1 file (and optionally a compatible
//! `tokenizer.json`) loads.

mod embedder;
mod encoder;
mod error;
mod math;
pub mod model_directory;
pub mod model_file;
mod quantized;
pub mod tokenizer;

pub use embedder::{
    cosine_similarity, EmbedderOptions, InputKind, LongTextPolicy, TextEmbedder, TokenizerSource,
};
pub use error::EmbedError;
pub use math::InstructionSet;
pub use model_directory::ModelDirectory;
pub use model_file::{EncoderConfig, ModelFile};
pub use tokenizer::Tokenizer;
