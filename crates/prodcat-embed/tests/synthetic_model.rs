//! End-to-end checks that need no downloaded files: the test writes a small E5S1 model with
//! random 4-bit weights (2 layers, hidden size 64, 2 heads of 32, 16 positions), loads it
//! through `TextEmbedder`, and compares the embeddings with a plain double-precision
//! implementation of the same encoder (the same int8 activation rounding before each product,
//! exact GELU and softmax, mean pooling, windows of 14 content tokens averaged by token count).

use std::path::{Path, PathBuf};

use prodcat_embed::{
    cosine_similarity, EmbedError, EmbedderOptions, InputKind, LongTextPolicy, TextEmbedder,
    TokenizerSource,
};

const HIDDEN: usize = 64;
const LAYERS: usize = 2;
const HEADS: usize = 2;
const INTERMEDIATE: usize = 128;
const POSITIONS: usize = 16;
const TOKEN_TYPES: usize = 2;

const PIECES: &[(&str, f32)] = &[
    ("<s>", 0.0),
    ("<pad>", 0.0),
    ("</s>", 0.0),
    ("<unk>", 0.0),
    ("▁", -2.0),
    ("▁a", -2.5),
    ("b", -3.0),
    ("▁ab", -3.5),
    ("c", -3.2),
    ("▁piscine", -4.0),
    ("▁pis", -5.0),
    ("cine", -5.0),
    ("▁query", -3.0),
    ("▁passage", -3.0),
    (":", -2.0),
    ("▁de", -2.2),
    ("▁jardin", -4.5),
    ("s", -2.1),
    ("e", -2.3),
    ("i", -2.4),
    ("n", -2.4),
    ("▁f", -3.3),
    ("fi", -3.1),
    ("l", -2.6),
    ("m", -2.6),
    ("▁film", -4.1),
];

struct Random(u64);

impl Random {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn uniform(&mut self) -> f32 {
        self.next_u32() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
    }
}

fn half_to_float(bits: u16) -> f32 {
    // Normal numbers only (the generator makes no others).
    let sign = ((bits & 0x8000) as u32) << 16;
    let exponent = ((bits >> 10) & 0x1f) as u32;
    let mantissa = (bits & 0x3ff) as u32;
    f32::from_bits(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13))
}

/// A Q4_0 tensor: its bytes and its dequantised values (row-major).
fn random_q4(
    random: &mut Random,
    rows: usize,
    columns: usize,
    magnitude_exponent: u16,
) -> (Vec<u8>, Vec<f64>) {
    let mut bytes = Vec::new();
    let mut values = vec![0.0f64; rows * columns];
    for row in 0..rows {
        for block in 0..columns / 32 {
            let scale_bits = (magnitude_exponent << 10) | (random.next_u32() % 1024) as u16;
            let scale = half_to_float(scale_bits) as f64;
            bytes.extend_from_slice(&scale_bits.to_le_bytes());
            let mut nibbles = [0u8; 32];
            for nibble in nibbles.iter_mut() {
                *nibble = (random.next_u32() % 16) as u8;
            }
            for j in 0..16 {
                bytes.push(nibbles[j] | (nibbles[j + 16] << 4));
            }
            for (j, nibble) in nibbles.iter().enumerate() {
                values[row * columns + block * 32 + j] = (*nibble as f64 - 8.0) * scale;
            }
        }
    }
    (bytes, values)
}

struct Tensor {
    name: String,
    type_byte: u8,
    elements: usize,
    bytes: Vec<u8>,
}

struct Layer {
    query: Vec<f64>,
    query_bias: Vec<f64>,
    key: Vec<f64>,
    key_bias: Vec<f64>,
    value: Vec<f64>,
    value_bias: Vec<f64>,
    attention_output: Vec<f64>,
    attention_output_bias: Vec<f64>,
    attention_norm: (Vec<f64>, Vec<f64>),
    intermediate: Vec<f64>,
    intermediate_bias: Vec<f64>,
    output: Vec<f64>,
    output_bias: Vec<f64>,
    output_norm: (Vec<f64>, Vec<f64>),
}

struct Model {
    word: Vec<f64>,
    positions: Vec<f64>,
    token_type: Vec<f64>,
    embedding_norm: (Vec<f64>, Vec<f64>),
    layers: Vec<Layer>,
}

fn float_tensor(name: &str, values: &[f32]) -> Tensor {
    Tensor {
        name: name.to_string(),
        type_byte: 0,
        elements: values.len(),
        bytes: values
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect(),
    }
}

/// Builds the model; returns the E5S1 bytes and the same weights as f64 for the reference.
fn build_model(seed: u64) -> (Vec<u8>, Model) {
    let mut random = Random(seed);
    let mut tensors = Vec::new();
    let float = |random: &mut Random,
                 name: &str,
                 count: usize,
                 centre: f32,
                 spread: f32,
                 tensors: &mut Vec<Tensor>| {
        let values: Vec<f32> = (0..count)
            .map(|_| centre + spread * random.uniform())
            .collect();
        tensors.push(float_tensor(name, &values));
        values.iter().map(|v| *v as f64).collect::<Vec<f64>>()
    };
    let q4 = |random: &mut Random,
              name: &str,
              rows: usize,
              columns: usize,
              exponent: u16,
              tensors: &mut Vec<Tensor>| {
        let (bytes, values) = random_q4(random, rows, columns, exponent);
        tensors.push(Tensor {
            name: name.to_string(),
            type_byte: 1,
            elements: rows * columns,
            bytes,
        });
        values
    };
    let word = q4(
        &mut random,
        "emb.word",
        PIECES.len(),
        HIDDEN,
        11,
        &mut tensors,
    );
    let positions = float(
        &mut random,
        "emb.pos",
        POSITIONS * HIDDEN,
        0.0,
        0.3,
        &mut tensors,
    );
    let token_types = float(
        &mut random,
        "emb.type",
        TOKEN_TYPES * HIDDEN,
        0.0,
        0.1,
        &mut tensors,
    );
    let embedding_norm = (
        float(&mut random, "emb.ln.w", HIDDEN, 1.0, 0.1, &mut tensors),
        float(&mut random, "emb.ln.b", HIDDEN, 0.0, 0.1, &mut tensors),
    );
    let mut layers = Vec::new();
    for layer in 0..LAYERS {
        let name = |suffix: &str| format!("l{layer}.{suffix}");
        // Weight scales around 2^-4: outputs of order one for unit-variance inputs.
        layers.push(Layer {
            query: q4(&mut random, &name("q.w"), HIDDEN, HIDDEN, 11, &mut tensors),
            query_bias: float(&mut random, &name("q.b"), HIDDEN, 0.0, 0.1, &mut tensors),
            key: q4(&mut random, &name("k.w"), HIDDEN, HIDDEN, 11, &mut tensors),
            key_bias: float(&mut random, &name("k.b"), HIDDEN, 0.0, 0.1, &mut tensors),
            value: q4(&mut random, &name("v.w"), HIDDEN, HIDDEN, 11, &mut tensors),
            value_bias: float(&mut random, &name("v.b"), HIDDEN, 0.0, 0.1, &mut tensors),
            attention_output: q4(&mut random, &name("ao.w"), HIDDEN, HIDDEN, 11, &mut tensors),
            attention_output_bias: float(
                &mut random,
                &name("ao.b"),
                HIDDEN,
                0.0,
                0.1,
                &mut tensors,
            ),
            attention_norm: (
                float(&mut random, &name("aln.w"), HIDDEN, 1.0, 0.1, &mut tensors),
                float(&mut random, &name("aln.b"), HIDDEN, 0.0, 0.1, &mut tensors),
            ),
            intermediate: q4(
                &mut random,
                &name("fi.w"),
                INTERMEDIATE,
                HIDDEN,
                11,
                &mut tensors,
            ),
            intermediate_bias: float(
                &mut random,
                &name("fi.b"),
                INTERMEDIATE,
                0.0,
                0.1,
                &mut tensors,
            ),
            output: q4(
                &mut random,
                &name("fo.w"),
                HIDDEN,
                INTERMEDIATE,
                10,
                &mut tensors,
            ),
            output_bias: float(&mut random, &name("fo.b"), HIDDEN, 0.0, 0.1, &mut tensors),
            output_norm: (
                float(&mut random, &name("oln.w"), HIDDEN, 1.0, 0.1, &mut tensors),
                float(&mut random, &name("oln.b"), HIDDEN, 0.0, 0.1, &mut tensors),
            ),
        });
    }
    let model = Model {
        word,
        positions,
        token_type: token_types[..HIDDEN].to_vec(),
        embedding_norm,
        layers,
    };
    (write_e5s1(&tensors), model)
}

fn write_e5s1(tensors: &[Tensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"E5S1");
    out.extend_from_slice(&1u32.to_le_bytes());
    for value in [
        HIDDEN,
        LAYERS,
        HEADS,
        INTERMEDIATE,
        PIECES.len(),
        POSITIONS,
        TOKEN_TYPES,
    ] {
        out.extend_from_slice(&(value as i32).to_le_bytes());
    }
    out.extend_from_slice(&1e-12f32.to_le_bytes());
    out.extend_from_slice(&32i32.to_le_bytes());
    // Vocabulary.
    out.extend_from_slice(&(PIECES.len() as i32).to_le_bytes());
    for id in [0i32, 2, 1, 3] {
        out.extend_from_slice(&id.to_le_bytes());
    }
    let text: Vec<u8> = PIECES.iter().flat_map(|(piece, _)| piece.bytes()).collect();
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    let mut offset = 0u32;
    out.extend_from_slice(&offset.to_le_bytes());
    for (piece, _) in PIECES {
        offset += piece.len() as u32;
        out.extend_from_slice(&offset.to_le_bytes());
    }
    for (_, score) in PIECES {
        out.extend_from_slice(&score.to_le_bytes());
    }
    out.extend_from_slice(&text);
    // Normalisation: a control character is deleted, the "ﬁ" ligature becomes "fi".
    let mut map = Vec::new();
    for (codepoint, replacement) in [(0x1u32, vec![]), (0xfb01, vec![0x66u32, 0x69])] {
        map.extend_from_slice(&codepoint.to_le_bytes());
        map.push(replacement.len() as u8);
        for value in replacement {
            map.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&2i32.to_le_bytes());
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    out.extend_from_slice(&map);
    // Directory, then data aligned to 32 bytes.
    let directory_length: usize = 4 + tensors
        .iter()
        .map(|t| 2 + t.name.len() + 1 + 4 + 8 + 8)
        .sum::<usize>();
    let mut data_offset = (out.len() + directory_length).div_ceil(32) * 32;
    let mut placements = Vec::new();
    out.extend_from_slice(&(tensors.len() as i32).to_le_bytes());
    for tensor in tensors {
        out.extend_from_slice(&(tensor.name.len() as u16).to_le_bytes());
        out.extend_from_slice(tensor.name.as_bytes());
        out.push(tensor.type_byte);
        out.extend_from_slice(&(tensor.elements as u32).to_le_bytes());
        out.extend_from_slice(&(data_offset as u64).to_le_bytes());
        out.extend_from_slice(&(tensor.bytes.len() as u64).to_le_bytes());
        placements.push(data_offset);
        data_offset = (data_offset + tensor.bytes.len()).div_ceil(32) * 32;
    }
    for (tensor, placement) in tensors.iter().zip(placements) {
        out.resize(placement, 0);
        out.extend_from_slice(&tensor.bytes);
    }
    out
}

fn layer_norm(row: &mut [f64], (weight, bias): &(Vec<f64>, Vec<f64>)) {
    let mean = row.iter().sum::<f64>() / row.len() as f64;
    let variance = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / row.len() as f64;
    let inverse = 1.0 / (variance + 1e-12).sqrt();
    for (index, value) in row.iter_mut().enumerate() {
        *value = (*value - mean) * inverse * weight[index] + bias[index];
    }
}

/// The engine feeds every product int8 activations (per 32-value block: step max|x| / 127,
/// round to nearest even); the reference does the same so that only float rounding differs.
fn quantize_activations(input: &[f64]) -> Vec<f64> {
    input
        .chunks(32)
        .flat_map(|block| {
            let maximum = block.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let step = maximum / 127.0;
            block.iter().map(move |x| {
                if step > 0.0 {
                    (x / step).round_ties_even().clamp(-128.0, 127.0) * step
                } else {
                    0.0
                }
            })
        })
        .collect()
}

fn linear(input: &[f64], weights: &[f64], bias: &[f64], rows: usize) -> Vec<f64> {
    let input = &quantize_activations(input);
    let columns = input.len();
    (0..rows)
        .map(|row| {
            bias[row]
                + (0..columns)
                    .map(|c| weights[row * columns + c] * input[c])
                    .sum::<f64>()
        })
        .collect()
}

fn erf(x: f64) -> f64 {
    if x.abs() > 5.0 {
        return x.signum();
    }
    // Maclaurin series, converging for the clamped range in double precision.
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        term *= -x * x / n as f64;
        let next = term / (2 * n + 1) as f64;
        sum += next;
        if next.abs() < 1e-17 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// Mean of the final hidden states of one framed sequence.
fn reference_forward(model: &Model, sequence: &[u32]) -> Vec<f64> {
    let length = sequence.len();
    let mut hidden: Vec<Vec<f64>> = sequence
        .iter()
        .enumerate()
        .map(|(position, id)| {
            let mut row: Vec<f64> = (0..HIDDEN)
                .map(|d| {
                    model.word[*id as usize * HIDDEN + d]
                        + model.positions[position * HIDDEN + d]
                        + model.token_type[d]
                })
                .collect();
            layer_norm(&mut row, &model.embedding_norm);
            row
        })
        .collect();
    let head_size = HIDDEN / HEADS;
    for layer in &model.layers {
        let queries: Vec<Vec<f64>> = hidden
            .iter()
            .map(|x| linear(x, &layer.query, &layer.query_bias, HIDDEN))
            .collect();
        let keys: Vec<Vec<f64>> = hidden
            .iter()
            .map(|x| linear(x, &layer.key, &layer.key_bias, HIDDEN))
            .collect();
        let values: Vec<Vec<f64>> = hidden
            .iter()
            .map(|x| linear(x, &layer.value, &layer.value_bias, HIDDEN))
            .collect();
        let mut context = vec![vec![0.0; HIDDEN]; length];
        for head in 0..HEADS {
            let range = head * head_size..(head + 1) * head_size;
            for i in 0..length {
                let scores: Vec<f64> = (0..length)
                    .map(|j| {
                        range
                            .clone()
                            .map(|d| queries[i][d] * keys[j][d])
                            .sum::<f64>()
                            / (head_size as f64).sqrt()
                    })
                    .collect();
                let maximum = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - maximum).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in range.clone() {
                    context[i][d] = (0..length).map(|j| weights[j] / total * values[j][d]).sum();
                }
            }
        }
        for (row, context_row) in hidden.iter_mut().zip(&context) {
            let projected = linear(
                context_row,
                &layer.attention_output,
                &layer.attention_output_bias,
                HIDDEN,
            );
            row.iter_mut().zip(&projected).for_each(|(x, y)| *x += y);
            layer_norm(row, &layer.attention_norm);
            let intermediate: Vec<f64> = linear(
                row,
                &layer.intermediate,
                &layer.intermediate_bias,
                INTERMEDIATE,
            )
            .into_iter()
            .map(|x| 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)))
            .collect();
            let output = linear(&intermediate, &layer.output, &layer.output_bias, HIDDEN);
            row.iter_mut().zip(&output).for_each(|(x, y)| *x += y);
            layer_norm(row, &layer.output_norm);
        }
    }
    (0..HIDDEN)
        .map(|d| hidden.iter().map(|row| row[d]).sum::<f64>() / length as f64)
        .collect()
}

fn reference_embedding(model: &Model, content: &[u32], windows: bool) -> Vec<f32> {
    let window = POSITIONS - 2;
    let chunks: Vec<&[u32]> = if content.is_empty() {
        vec![&[]]
    } else {
        content.chunks(window).collect()
    };
    let keep = if windows { chunks.len() } else { 1 };
    let mut sum = vec![0.0f64; HIDDEN];
    let mut weight_total = 0.0;
    for chunk in chunks.iter().take(keep) {
        let mut sequence = vec![0u32];
        sequence.extend_from_slice(chunk);
        sequence.push(2);
        let mean = reference_forward(model, &sequence);
        let weight = chunk.len().max(1) as f64;
        sum.iter_mut()
            .zip(&mean)
            .for_each(|(s, m)| *s += weight * m);
        weight_total += weight;
    }
    let norm = sum
        .iter()
        .map(|x| (x / weight_total).powi(2))
        .sum::<f64>()
        .sqrt();
    sum.iter()
        .map(|x| (x / weight_total / norm) as f32)
        .collect()
}

fn model_directory(name: &str, bytes: &[u8]) -> PathBuf {
    let directory = std::env::temp_dir().join(format!(
        "prodcat-embed-synthetic-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join("e5-small-q4.bin"), bytes).unwrap();
    directory
}

fn load(directory: &Path, threads: usize, long_text: LongTextPolicy) -> TextEmbedder {
    TextEmbedder::load_with_options(
        directory,
        EmbedderOptions {
            threads: Some(threads),
            long_text,
            tokenizer: TokenizerSource::ModelFile,
            ..EmbedderOptions::default()
        },
    )
    .expect("the synthetic model loads")
}

const TEXTS: &[&str] = &[
    "piscine de jardin",
    "ab ab c",
    "ﬁlm\u{1} piscine",
    "",
    "piscine piscine piscine piscine piscine piscine piscine piscine piscine piscine de jardin ab c",
    "zzz ab",
];

#[test]
fn encoder_matches_a_double_precision_reference() {
    let (bytes, model) = build_model(42);
    let directory = model_directory("reference", &bytes);
    for threads in [1, 2] {
        let embedder = load(&directory, threads, LongTextPolicy::SlidingWindows);
        assert_eq!(embedder.dimension(), HIDDEN);
        let batch = embedder.embed_passages(TEXTS);
        for (text, batched) in TEXTS.iter().zip(&batch) {
            let content = embedder.token_ids(text, InputKind::Passage);
            let expected = reference_embedding(&model, &content, true);
            let single = embedder.embed_passage(text);
            let cosine = cosine_similarity(&single, &expected);
            assert!(
                cosine > 0.99999,
                "{text:?} on {threads} threads: cosine {cosine}"
            );
            assert!(
                cosine_similarity(&single, batched) > 0.99999,
                "{text:?}: batch and single differ"
            );
        }
    }
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn long_texts_are_windowed_or_truncated() {
    let (bytes, model) = build_model(7);
    let directory = model_directory("windows", &bytes);
    let text = TEXTS[4];
    let windowed = load(&directory, 2, LongTextPolicy::SlidingWindows);
    let content = windowed.token_ids(text, InputKind::Query);
    assert!(
        content.len() > POSITIONS - 2,
        "the text must need two windows"
    );
    let truncated = load(&directory, 1, LongTextPolicy::Truncate);
    let full = windowed.embed_query(text);
    let first_window = truncated.embed_query(text);
    assert!(cosine_similarity(&full, &reference_embedding(&model, &content, true)) > 0.9999);
    assert!(
        cosine_similarity(&first_window, &reference_embedding(&model, &content, false)) > 0.9999
    );
    assert!(cosine_similarity(&full, &first_window) < 0.9999);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn tokenizer_from_the_model_file_uses_its_normalisation() {
    let (bytes, _) = build_model(3);
    let directory = model_directory("tokenizer", &bytes);
    let embedder = load(&directory, 1, LongTextPolicy::SlidingWindows);
    let tokenizer = embedder.tokenizer();
    let pieces = |text: &str| -> Vec<String> {
        tokenizer
            .content_ids(text)
            .iter()
            .map(|id| tokenizer.piece(*id).unwrap().to_string())
            .collect()
    };
    assert_eq!(pieces("ﬁlm\u{1}"), vec!["▁film"]);
    assert_eq!(pieces("piscine  de"), vec!["▁piscine", "▁de"]);
    assert_eq!(pieces("ab"), vec!["▁ab"]);
    // "z" is not in the vocabulary: one <unk> for the run "zzz".
    assert_eq!(pieces("zzz ab"), vec!["▁", "<unk>", "▁ab"]);
    assert_eq!(
        embedder.token_ids("piscine", InputKind::Query),
        tokenizer.content_ids("query: piscine")
    );
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn inconsistent_model_files_are_rejected() {
    let (bytes, _) = build_model(5);
    // A tensor directory entry naming a wrong element count.
    let name = b"l1.fo.w";
    let position = bytes
        .windows(name.len())
        .position(|window| window == name)
        .unwrap();
    let mut damaged = bytes.clone();
    let count_at = position + name.len() + 1;
    damaged[count_at..count_at + 4]
        .copy_from_slice(&((HIDDEN * INTERMEDIATE * 2) as u32).to_le_bytes());
    let directory = model_directory("inconsistent", &damaged);
    let error = TextEmbedder::load(&directory).expect_err("inconsistent sizes fail");
    assert!(matches!(error, EmbedError::InvalidModel { .. }), "{error}");
    println!("{error}");

    // A tensor renamed away.
    let mut renamed = bytes.clone();
    renamed[position] = b'x';
    std::fs::write(directory.join("e5-small-q4.bin"), &renamed).unwrap();
    let error = TextEmbedder::load(&directory).expect_err("missing tensor fails");
    assert!(matches!(error, EmbedError::MissingTensor { .. }), "{error}");

    // Every truncation point fails cleanly (never a panic).
    for cut in [0, 3, 7, 40, 60, 200, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(directory.join("e5-small-q4.bin"), &bytes[..cut]).unwrap();
        assert!(TextEmbedder::load(&directory).is_err(), "cut at {cut}");
    }
    std::fs::remove_dir_all(&directory).unwrap();
}
