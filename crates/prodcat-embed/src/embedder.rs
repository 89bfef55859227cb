//! `TextEmbedder`: loads a model directory and turns queries and passages into L2-normalised
//! multilingual-e5-small vectors, with e5's `query: ` / `passage: ` prefixes, sliding windows
//! for texts longer than the model's 512 positions, and batches spread over a thread pool.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::encoder::Encoder;
use crate::error::EmbedError;
use crate::math::InstructionSet;
use crate::model_directory::{self, ModelDirectory};
use crate::model_file::{EncoderConfig, ModelFile};
use crate::tokenizer::Tokenizer;

/// What a text is, which decides e5's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A search query: prefixed with `query: `.
    Query,
    /// A document to be found (product title and description): prefixed with `passage: `.
    Passage,
}

impl InputKind {
    /// The prefix e5 was trained with.
    pub fn prefix(self) -> &'static str {
        match self {
            InputKind::Query => "query: ",
            InputKind::Passage => "passage: ",
        }
    }
}

/// How texts longer than the model's window (510 content tokens) are embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongTextPolicy {
    /// Split into consecutive windows and average their mean-pooled states weighted by token
    /// count (what the reference engine does; every token counts).
    #[default]
    SlidingWindows,
    /// Keep only the first window.
    Truncate,
}

/// Which tokenizer description to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenizerSource {
    /// `tokenizer.json` when the directory has one, else the model file's own vocabulary.
    #[default]
    Automatic,
    /// `tokenizer.json`, which must exist.
    TokenizerJson,
    /// The vocabulary built into the model file.
    ModelFile,
}

/// Loading and running options.
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// Worker threads; `None` uses every available core.
    pub threads: Option<usize>,
    pub long_text: LongTextPolicy,
    pub tokenizer: TokenizerSource,
    /// Check files against `manifest.json` (when present) before using them.
    pub verify_checksums: bool,
    /// Upper bound on tokens run together in one batch.
    pub batch_tokens: usize,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        Self {
            threads: None,
            long_text: LongTextPolicy::SlidingWindows,
            tokenizer: TokenizerSource::Automatic,
            verify_checksums: true,
            batch_tokens: 1024,
        }
    }
}

/// A loaded multilingual-e5-small: tokenizer, 4-bit encoder and worker threads.
///
/// `Send + Sync`: share one instance (e.g. in an `Arc`) between request handlers.
pub struct TextEmbedder {
    tokenizer: Tokenizer,
    encoder: Encoder,
    pool: rayon::ThreadPool,
    options: EmbedderOptions,
    model_path: PathBuf,
    tokenizer_description: String,
    model_id: String,
}

impl std::fmt::Debug for TextEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEmbedder")
            .field("model_id", &self.model_id)
            .field("threads", &self.threads())
            .finish()
    }
}

/// One window of one text.
struct Window {
    text_index: usize,
    weight: f32,
    sequence: Vec<u32>,
}

impl TextEmbedder {
    /// Loads the model directory (see [`crate::model_directory`]) with default options.
    pub fn load(directory: &Path) -> Result<Self, EmbedError> {
        Self::load_with_options(directory, EmbedderOptions::default())
    }

    /// Loads the model directory with explicit options.
    pub fn load_with_options(
        directory: &Path,
        options: EmbedderOptions,
    ) -> Result<Self, EmbedError> {
        let files = ModelDirectory::locate(directory)?;
        let manifest = if options.verify_checksums {
            files.manifest()?
        } else {
            None
        };
        let model_bytes = std::fs::read(&files.model_file).map_err(|source| EmbedError::Io {
            path: files.model_file.clone(),
            source,
        })?;
        if let Some(manifest) = &manifest {
            manifest.verify(&files.model_file, &model_bytes)?;
        }
        let model_file = ModelFile::parse(&files.model_file, model_bytes)?;

        let use_json = match options.tokenizer {
            TokenizerSource::Automatic => files.tokenizer_json.is_some(),
            TokenizerSource::TokenizerJson => true,
            TokenizerSource::ModelFile => false,
        };
        let (tokenizer, tokenizer_description) = if use_json {
            let path = files
                .tokenizer_json
                .clone()
                .unwrap_or_else(|| directory.join(model_directory::TOKENIZER_FILE_NAME));
            let bytes = std::fs::read(&path).map_err(|source| EmbedError::Io {
                path: path.clone(),
                source,
            })?;
            if let Some(manifest) = &manifest {
                manifest.verify(&path, &bytes)?;
            }
            let text = String::from_utf8(bytes).map_err(|_| EmbedError::InvalidTokenizer {
                source_name: path.display().to_string(),
                detail: "not UTF-8".to_string(),
            })?;
            let tokenizer = Tokenizer::from_tokenizer_json(&text, &path.display().to_string())?;
            let (bos, eos, _, unk) = model_file.special_ids();
            if (tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.unk_id()) != (bos, eos, unk) {
                return Err(EmbedError::TokenizerModelMismatch {
                    detail: format!(
                        "tokenizer.json has <s>, </s>, <unk> = {}, {}, {}; the model file {}, {}, {}",
                        tokenizer.bos_id(),
                        tokenizer.eos_id(),
                        tokenizer.unk_id(),
                        bos,
                        eos,
                        unk
                    ),
                });
            }
            (tokenizer, path.display().to_string())
        } else {
            let vocabulary = model_file.built_in_vocabulary()?;
            (
                Tokenizer::from_built_in(&vocabulary)?,
                format!("vocabulary of {}", files.model_file.display()),
            )
        };
        let model_id = ModelDirectory {
            tokenizer_json: if use_json {
                files.tokenizer_json.clone()
            } else {
                None
            },
            ..files.clone()
        }
        .model_id()?;
        let config = *model_file.config();
        if tokenizer.vocabulary_size() > config.word_vocabulary_size {
            return Err(EmbedError::TokenizerModelMismatch {
                detail: format!(
                    "the tokenizer has {} pieces but the model embeds only {}",
                    tokenizer.vocabulary_size(),
                    config.word_vocabulary_size
                ),
            });
        }
        let tokenizer = tokenizer.with_max_length(config.max_positions);
        let encoder = Encoder::from_model_file(model_file)?;

        let threads = options
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |count| count.get()))
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("prodcat-embed-{index}"))
            .build()
            .map_err(|error| EmbedError::ThreadPool {
                threads,
                detail: error.to_string(),
            })?;
        Ok(Self {
            tokenizer,
            encoder,
            pool,
            options,
            model_path: files.model_file,
            tokenizer_description,
            model_id,
        })
    }

    /// Identifies the weights and tokenizer in use (see [`ModelDirectory::model_id`]): vectors
    /// of different ids must never be mixed.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Embedding dimension (384 for multilingual-e5-small).
    pub fn dimension(&self) -> usize {
        self.encoder.config().hidden_size
    }

    /// Encoder shape.
    pub fn config(&self) -> &EncoderConfig {
        self.encoder.config()
    }

    /// The tokenizer in use.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Where the weights and the tokenizer came from.
    pub fn describe(&self) -> String {
        format!(
            "multilingual-e5-small from {}, tokenizer from {}, {} threads, {} kernels",
            self.model_path.display(),
            self.tokenizer_description,
            self.threads(),
            self.instruction_set().name()
        )
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The kernels in use.
    pub fn instruction_set(&self) -> InstructionSet {
        InstructionSet::detect()
    }

    /// Approximate bytes held by the weights.
    pub fn memory_bytes(&self) -> usize {
        self.encoder.memory_bytes()
    }

    /// Token ids the model sees for `text` (prefix included, without `<s>` / `</s>`, before
    /// windowing).
    pub fn token_ids(&self, text: &str, kind: InputKind) -> Vec<u32> {
        self.tokenizer
            .content_ids(&format!("{}{}", kind.prefix(), text))
    }

    /// Embeds one search query.
    pub fn embed_query(&self, text: &str) -> Vec<f32> {
        self.embed(&[text], InputKind::Query)
            .pop()
            .unwrap_or_default()
    }

    /// Embeds one passage.
    pub fn embed_passage(&self, text: &str) -> Vec<f32> {
        self.embed(&[text], InputKind::Passage)
            .pop()
            .unwrap_or_default()
    }

    /// Embeds many queries.
    pub fn embed_queries(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        self.embed(texts, InputKind::Query)
    }

    /// Embeds many passages (product texts).
    pub fn embed_passages(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        self.embed(texts, InputKind::Passage)
    }

    /// Embeds `texts` of one kind; returns one unit-length vector per text, in order.
    pub fn embed(&self, texts: &[&str], kind: InputKind) -> Vec<Vec<f32>> {
        if texts.is_empty() {
            return Vec::new();
        }
        self.pool.install(|| {
            let windows = self.windows(texts, kind);
            let pooled = self.run_windows(&windows);
            self.combine(texts.len(), &windows, &pooled)
        })
    }

    fn windows(&self, texts: &[&str], kind: InputKind) -> Vec<Window> {
        let window_content = self.encoder.config().max_positions - 2;
        let bos = self.tokenizer.bos_id();
        let eos = self.tokenizer.eos_id();
        let tokenized: Vec<Vec<u32>> = if texts.len() > 1 {
            texts
                .par_iter()
                .map(|text| self.token_ids(text, kind))
                .collect()
        } else {
            texts
                .iter()
                .map(|text| self.token_ids(text, kind))
                .collect()
        };
        let mut windows = Vec::new();
        for (text_index, ids) in tokenized.iter().enumerate() {
            let chunks: Vec<&[u32]> = if ids.is_empty() {
                vec![&[]]
            } else {
                ids.chunks(window_content).collect()
            };
            let keep = match self.options.long_text {
                LongTextPolicy::SlidingWindows => chunks.len(),
                LongTextPolicy::Truncate => 1,
            };
            for chunk in chunks.into_iter().take(keep) {
                let mut sequence = Vec::with_capacity(chunk.len() + 2);
                sequence.push(bos);
                sequence.extend_from_slice(chunk);
                sequence.push(eos);
                windows.push(Window {
                    text_index,
                    weight: chunk.len().max(1) as f32,
                    sequence,
                });
            }
        }
        windows
    }

    /// Mean-pooled states of every window, in order.
    fn run_windows(&self, windows: &[Window]) -> Vec<Vec<f32>> {
        let total_tokens: usize = windows.iter().map(|window| window.sequence.len()).sum();
        let threads = self.threads();
        // Enough batches to keep every thread busy, each under the token budget.
        let budget = self
            .options
            .batch_tokens
            .min(total_tokens.div_ceil(threads))
            .max(self.encoder.config().max_positions);
        let mut batches: Vec<std::ops::Range<usize>> = Vec::new();
        let mut start = 0;
        let mut tokens = 0;
        for (index, window) in windows.iter().enumerate() {
            if index > start && tokens + window.sequence.len() > budget {
                batches.push(start..index);
                start = index;
                tokens = 0;
            }
            tokens += window.sequence.len();
        }
        batches.push(start..windows.len());

        let run = |range: &std::ops::Range<usize>, parallel: bool| {
            let sequences: Vec<&[u32]> = windows[range.clone()]
                .iter()
                .map(|window| window.sequence.as_slice())
                .collect();
            self.encoder.mean_pooled(&sequences, parallel)
        };
        if batches.len() == 1 {
            return run(&batches[0], threads > 1);
        }
        batches
            .par_iter()
            .map(|range| run(range, false))
            .collect::<Vec<_>>()
            .into_iter()
            .flatten()
            .collect()
    }

    fn combine(&self, text_count: usize, windows: &[Window], pooled: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let dimension = self.dimension();
        let mut sums = vec![vec![0.0f32; dimension]; text_count];
        let mut weights = vec![0.0f32; text_count];
        for (window, mean) in windows.iter().zip(pooled) {
            for (sum, value) in sums[window.text_index].iter_mut().zip(mean) {
                *sum += window.weight * *value;
            }
            weights[window.text_index] += window.weight;
        }
        for (vector, weight) in sums.iter_mut().zip(&weights) {
            let inverse = if *weight > 0.0 { 1.0 / *weight } else { 1.0 };
            vector.iter_mut().for_each(|value| *value *= inverse);
            let norm = vector
                .iter()
                .map(|value| value * value)
                .sum::<f32>()
                .max(1e-12)
                .sqrt();
            vector.iter_mut().for_each(|value| *value /= norm);
        }
        sums
    }
}

/// Cosine similarity of two vectors (their dot product when both are unit length).
pub fn cosine_similarity(left: &[f32], right: &[f32]) -> f32 {
    let dot: f32 = left.iter().zip(right).map(|(a, b)| a * b).sum();
    let left_norm: f32 = left.iter().map(|a| a * a).sum::<f32>().sqrt();
    let right_norm: f32 = right.iter().map(|b| b * b).sum::<f32>().sqrt();
    if left_norm == 0.0 || right_norm == 0.0 {
        return 0.0;
    }
    dot / (left_norm * right_norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedder_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TextEmbedder>();
    }

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine_similarity(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine_similarity(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-6);
        assert!((cosine_similarity(&[1.0, 1.0], &[-2.0, -2.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
