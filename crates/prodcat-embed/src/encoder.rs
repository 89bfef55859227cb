//! The BERT / XLM-R encoder of multilingual-e5-small over 4-bit weights: embeddings (word +
//! position + token type, layer norm), then per layer self-attention and a GELU feed-forward
//! block, each followed by a residual layer norm; the output is the mean of the final hidden
//! states over each sequence's tokens.
//!
//! Several sequences run as one batch: their tokens are concatenated into one activation
//! matrix, so every weight matrix is streamed once per batch, and attention stays within each
//! sequence. With `parallel` set, a single batch's matrix products and attention heads are
//! split across the current rayon pool (for low latency on one text).

use std::ops::Range;

use rayon::prelude::*;

use crate::error::EmbedError;
use crate::math;
use crate::model_file::{EncoderConfig, ModelFile, TensorType, BLOCK_BYTES, BLOCK_SIZE};
use crate::quantized::{self, QuantizedActivations, QuantizedMatrix, ROW_TILE};

/// Work (tokens × rows × columns) below which a matrix product is not split across threads.
const PARALLEL_MATMUL_MINIMUM: usize = 1 << 18;

struct LayerWeights {
    /// Query, key and value projections stacked: `[3 · hidden × hidden]`.
    query_key_value: QuantizedMatrix,
    query_key_value_bias: Vec<f32>,
    attention_output: QuantizedMatrix,
    attention_output_bias: Vec<f32>,
    attention_norm_weight: Vec<f32>,
    attention_norm_bias: Vec<f32>,
    intermediate: QuantizedMatrix,
    intermediate_bias: Vec<f32>,
    output: QuantizedMatrix,
    output_bias: Vec<f32>,
    output_norm_weight: Vec<f32>,
    output_norm_bias: Vec<f32>,
}

/// Encoder weights, ready to run.
pub(crate) struct Encoder {
    config: EncoderConfig,
    /// The word embedding table, kept as Q4_0 rows (dequantised per token on lookup).
    word_embeddings: Vec<u8>,
    position_embeddings: Vec<f32>,
    token_type_embedding: Vec<f32>,
    embedding_norm_weight: Vec<f32>,
    embedding_norm_bias: Vec<f32>,
    layers: Vec<LayerWeights>,
}

/// Per-batch working memory.
#[derive(Default)]
struct Buffers {
    hidden: Vec<f32>,
    query_key_value: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    intermediate: Vec<f32>,
    activations: QuantizedActivations,
}

impl Encoder {
    /// Builds the encoder from a parsed model file (the file's bytes are released after).
    pub fn from_model_file(file: ModelFile) -> Result<Self, EmbedError> {
        let config = *file.config();
        let hidden = config.hidden_size;
        let intermediate = config.intermediate_size;
        let invalid = |detail: String| EmbedError::InvalidModel {
            path: file.path().to_path_buf(),
            detail,
        };
        if !hidden.is_multiple_of(ROW_TILE) || !intermediate.is_multiple_of(ROW_TILE) {
            return Err(invalid(format!(
                "hidden size {hidden} and intermediate size {intermediate} must be multiples of {ROW_TILE}"
            )));
        }
        let word = file.tensor(
            "emb.word",
            TensorType::Q4Block,
            config.word_vocabulary_size * hidden,
        )?;
        let position_embeddings = file.float_tensor("emb.pos", config.max_positions * hidden)?;
        let token_types = file.float_tensor("emb.type", config.token_type_count * hidden)?;
        let embedding_norm_weight = file.float_tensor("emb.ln.w", hidden)?;
        let embedding_norm_bias = file.float_tensor("emb.ln.b", hidden)?;
        let q4 = |name: &str, rows: usize, columns: usize| -> Result<QuantizedMatrix, EmbedError> {
            let entry = file.tensor(name, TensorType::Q4Block, rows * columns)?;
            Ok(QuantizedMatrix::from_q4_blocks(
                &file.bytes()[entry.bytes],
                rows,
                columns,
            ))
        };
        let mut layers = Vec::with_capacity(config.layer_count);
        for layer in 0..config.layer_count {
            let name = |suffix: &str| format!("l{layer}.{suffix}");
            // Stack Q, K and V row-wise (their raw Q4 rows concatenated).
            let mut stacked = Vec::with_capacity(3 * hidden * hidden / BLOCK_SIZE * BLOCK_BYTES);
            let mut stacked_bias = Vec::with_capacity(3 * hidden);
            for part in ["q", "k", "v"] {
                let entry = file.tensor(
                    &name(&format!("{part}.w")),
                    TensorType::Q4Block,
                    hidden * hidden,
                )?;
                stacked.extend_from_slice(&file.bytes()[entry.bytes]);
                stacked_bias.extend(file.float_tensor(&name(&format!("{part}.b")), hidden)?);
            }
            layers.push(LayerWeights {
                query_key_value: QuantizedMatrix::from_q4_blocks(&stacked, 3 * hidden, hidden),
                query_key_value_bias: stacked_bias,
                attention_output: q4(&name("ao.w"), hidden, hidden)?,
                attention_output_bias: file.float_tensor(&name("ao.b"), hidden)?,
                attention_norm_weight: file.float_tensor(&name("aln.w"), hidden)?,
                attention_norm_bias: file.float_tensor(&name("aln.b"), hidden)?,
                intermediate: q4(&name("fi.w"), intermediate, hidden)?,
                intermediate_bias: file.float_tensor(&name("fi.b"), intermediate)?,
                output: q4(&name("fo.w"), hidden, intermediate)?,
                output_bias: file.float_tensor(&name("fo.b"), hidden)?,
                output_norm_weight: file.float_tensor(&name("oln.w"), hidden)?,
                output_norm_bias: file.float_tensor(&name("oln.b"), hidden)?,
            });
        }
        let all_finite = position_embeddings
            .iter()
            .chain(&token_types)
            .chain(&embedding_norm_weight)
            .chain(&embedding_norm_bias)
            .all(|value| value.is_finite());
        if !all_finite {
            return Err(invalid(
                "embedding tensors hold non-finite values".to_string(),
            ));
        }
        Ok(Self {
            config,
            word_embeddings: file.bytes()[word.bytes].to_vec(),
            position_embeddings,
            token_type_embedding: token_types[..hidden].to_vec(),
            embedding_norm_weight,
            embedding_norm_bias,
            layers,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Bytes held by the weights (embedding table plus repacked matrices).
    pub fn memory_bytes(&self) -> usize {
        let matrices: usize = self
            .layers
            .iter()
            .map(|layer| {
                layer.query_key_value.memory_bytes()
                    + layer.attention_output.memory_bytes()
                    + layer.intermediate.memory_bytes()
                    + layer.output.memory_bytes()
            })
            .sum();
        self.word_embeddings.len() + matrices
    }

    /// Runs a batch of token sequences (each framed by `<s>` … `</s>`, at most
    /// `max_positions` long, ids below the word vocabulary size) and returns, per sequence,
    /// the mean of its final hidden states.
    pub fn mean_pooled(&self, sequences: &[&[u32]], parallel: bool) -> Vec<Vec<f32>> {
        let hidden = self.config.hidden_size;
        let mut spans = Vec::with_capacity(sequences.len());
        let mut total = 0;
        for sequence in sequences {
            debug_assert!(sequence.len() <= self.config.max_positions);
            spans.push(total..total + sequence.len());
            total += sequence.len();
        }
        if total == 0 {
            return vec![vec![0.0; hidden]; sequences.len()];
        }
        let mut buffers = Buffers::default();
        self.embed_tokens(sequences, &mut buffers.hidden);
        for layer in &self.layers {
            self.run_layer(layer, &spans, &mut buffers, parallel);
        }
        spans
            .iter()
            .map(|span| {
                let mut mean = vec![0.0f32; hidden];
                for token in span.clone() {
                    for (sum, value) in mean
                        .iter_mut()
                        .zip(&buffers.hidden[token * hidden..(token + 1) * hidden])
                    {
                        *sum += *value;
                    }
                }
                let inverse = 1.0 / span.len().max(1) as f32;
                mean.iter_mut().for_each(|value| *value *= inverse);
                mean
            })
            .collect()
    }

    fn embed_tokens(&self, sequences: &[&[u32]], hidden_states: &mut Vec<f32>) {
        let hidden = self.config.hidden_size;
        let row_bytes = hidden / BLOCK_SIZE * BLOCK_BYTES;
        let table = &self.word_embeddings;
        hidden_states.clear();
        let mut row = vec![0.0f32; hidden];
        for sequence in sequences {
            for (position, id) in sequence.iter().enumerate() {
                let id = (*id as usize).min(self.config.word_vocabulary_size - 1);
                quantized::dequantize_q4_row(
                    &table[id * row_bytes..(id + 1) * row_bytes],
                    &mut row,
                );
                let position_row =
                    &self.position_embeddings[position * hidden..(position + 1) * hidden];
                for ((value, position_value), type_value) in row
                    .iter_mut()
                    .zip(position_row)
                    .zip(&self.token_type_embedding)
                {
                    *value += *position_value + *type_value;
                }
                hidden_states.extend_from_slice(&row);
            }
        }
        math::add_layer_norm(
            hidden_states,
            None,
            &self.embedding_norm_weight,
            &self.embedding_norm_bias,
            hidden,
            self.config.layer_norm_epsilon,
        );
    }

    fn run_layer(
        &self,
        layer: &LayerWeights,
        spans: &[Range<usize>],
        buffers: &mut Buffers,
        parallel: bool,
    ) {
        let hidden = self.config.hidden_size;
        let intermediate = self.config.intermediate_size;
        let tokens = buffers.hidden.len() / hidden;
        let epsilon = self.config.layer_norm_epsilon;

        buffers
            .activations
            .quantize(&buffers.hidden, tokens, hidden);
        linear(
            &layer.query_key_value,
            &layer.query_key_value_bias,
            &buffers.activations,
            &mut buffers.query_key_value,
            parallel,
        );
        self.attention(
            spans,
            &buffers.query_key_value,
            &mut buffers.context,
            parallel,
        );
        buffers
            .activations
            .quantize(&buffers.context, tokens, hidden);
        linear(
            &layer.attention_output,
            &layer.attention_output_bias,
            &buffers.activations,
            &mut buffers.projected,
            parallel,
        );
        math::add_layer_norm(
            &mut buffers.hidden,
            Some(&buffers.projected),
            &layer.attention_norm_weight,
            &layer.attention_norm_bias,
            hidden,
            epsilon,
        );

        buffers
            .activations
            .quantize(&buffers.hidden, tokens, hidden);
        linear(
            &layer.intermediate,
            &layer.intermediate_bias,
            &buffers.activations,
            &mut buffers.intermediate,
            parallel,
        );
        if parallel && tokens * intermediate >= 1 << 15 {
            buffers
                .intermediate
                .par_chunks_mut(intermediate * 8)
                .for_each(math::gelu);
        } else {
            math::gelu(&mut buffers.intermediate);
        }
        buffers
            .activations
            .quantize(&buffers.intermediate, tokens, intermediate);
        linear(
            &layer.output,
            &layer.output_bias,
            &buffers.activations,
            &mut buffers.projected,
            parallel,
        );
        math::add_layer_norm(
            &mut buffers.hidden,
            Some(&buffers.projected),
            &layer.output_norm_weight,
            &layer.output_norm_bias,
            hidden,
            epsilon,
        );
    }

    /// Multi-head self-attention within each span; `query_key_value` rows are
    /// `[queries | keys | values]`, `context` receives `tokens × hidden`.
    fn attention(
        &self,
        spans: &[Range<usize>],
        query_key_value: &[f32],
        context: &mut Vec<f32>,
        parallel: bool,
    ) {
        let hidden = self.config.hidden_size;
        let heads = self.config.head_count;
        let head_size = self.config.head_size();
        let stride = 3 * hidden;
        let scale = 1.0 / (head_size as f32).sqrt();
        let tokens = query_key_value.len() / stride;
        // Every element is written below (each head fills its columns of each token).
        context.resize(tokens * hidden, 0.0);
        let run = |span: &Range<usize>, head: usize, out: &mut Vec<f32>, scratch: &mut Vec<f32>| {
            let base = span.start * stride + head * head_size;
            let end = span.end * stride;
            out.clear();
            out.resize(span.len() * head_size, 0.0);
            let head = math::HeadInput {
                queries: &query_key_value[base..end],
                keys: &query_key_value[base + hidden..end],
                values: &query_key_value[base + 2 * hidden..end],
                stride,
                length: span.len(),
                head_size,
                scale,
            };
            math::attention_head(head, out, scratch);
        };
        let scatter = |context: &mut [f32], span: &Range<usize>, head: usize, block: &[f32]| {
            for (index, token) in span.clone().enumerate() {
                context[token * hidden + head * head_size..token * hidden + (head + 1) * head_size]
                    .copy_from_slice(&block[index * head_size..(index + 1) * head_size]);
            }
        };
        if parallel {
            let jobs: Vec<(usize, usize)> = (0..spans.len())
                .flat_map(|span| (0..heads).map(move |head| (span, head)))
                .collect();
            let blocks: Vec<Vec<f32>> = jobs
                .par_iter()
                .map_init(Vec::new, |scratch, (span, head)| {
                    let mut out = Vec::new();
                    run(&spans[*span], *head, &mut out, scratch);
                    out
                })
                .collect();
            for ((span, head), block) in jobs.iter().zip(&blocks) {
                scatter(context, &spans[*span], *head, block);
            }
        } else {
            let mut scratch = Vec::new();
            let mut out = Vec::new();
            for span in spans {
                for head in 0..heads {
                    run(span, head, &mut out, &mut scratch);
                    scatter(context, span, head, &out);
                }
            }
        }
    }
}

/// `out = input · matrixᵀ + bias` (`tokens × matrix.rows`), split by rows across the current
/// rayon pool when `parallel` and the product is large enough.
fn linear(
    matrix: &QuantizedMatrix,
    bias: &[f32],
    input: &QuantizedActivations,
    out: &mut Vec<f32>,
    parallel: bool,
) {
    let rows = matrix.rows;
    let tokens = input.tokens;
    // Every element is written below; resizing only allocates on first use.
    out.resize(tokens * rows, 0.0);
    let threads = rayon::current_num_threads();
    if !parallel || threads < 2 || tokens * rows * matrix.columns < PARALLEL_MATMUL_MINIMUM {
        quantized::matmul(matrix, bias, input, 0..rows, out, rows);
        return;
    }
    // Row ranges in multiples of the kernel's row tile, a few per thread for balance.
    let parts = (threads * 2).min(rows / ROW_TILE);
    let tiles = rows / ROW_TILE;
    let ranges: Vec<Range<usize>> = (0..parts)
        .map(|part| (tiles * part / parts * ROW_TILE)..(tiles * (part + 1) / parts * ROW_TILE))
        .collect();
    let blocks: Vec<Vec<f32>> = ranges
        .par_iter()
        .map(|range| {
            let mut block = vec![0.0f32; tokens * range.len()];
            quantized::matmul(matrix, bias, input, range.clone(), &mut block, range.len());
            block
        })
        .collect();
    for (range, block) in ranges.iter().zip(&blocks) {
        let width = range.len();
        for token in 0..tokens {
            out[token * rows + range.start..token * rows + range.end]
                .copy_from_slice(&block[token * width..(token + 1) * width]);
        }
    }
}
