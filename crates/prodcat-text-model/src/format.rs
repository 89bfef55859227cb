//! The model file: a compact, deterministic, versioned binary format.
//!
//! ```text
//! magic "PCTXTMDL" | u32 format version | u64 payload length | payload | u64 checksum(payload)
//! payload:
//!   options as JSON (u32 length + UTF-8)          the hyper-parameters, human-readable (with
//!                                                 the dense companion features, if any)
//!   u32 category count, u16 code each
//!   f64 temperature
//!   word block, char_wb block:
//!     u64 documents fitted on, u32 term count,
//!     terms front-coded in sorted order (varint shared-prefix bytes, varint suffix bytes, suffix),
//!     f32 idf per term
//!   u32 class count, u32 feature count, u32 iterations per class, f32 intercept per class,
//!   f32 weights, feature-major (n-gram columns, then the companion's columns)
//! ```
//! All numbers little-endian. The same model always gives the same bytes. Loading checks the
//! magic, the version, every length against what is left, the checksum, that the parts agree with
//! each other, and that nothing is left over; a damaged file gives an error, never a panic.

use std::path::Path;

use prodcat_domain::CategoryCode;
use prodcat_metrics::TemperatureScaling;

use crate::classifier::TextClassifier;
use crate::options::{TextClassifierOptions, TfidfOptions};
use crate::svm::LinearSvm;
use crate::vectorizer::{FeatureBlock, TextVectorizer};
use crate::TextModelError;

const MAGIC: &[u8; 8] = b"PCTXTMDL";

/// Version of the model file format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A 64-bit checksum over 8-byte words (multiply-rotate mixing); catches damaged files, not
/// deliberate tampering (the model registry's sha256 does that).
fn checksum(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = (hash ^ u64::from_le_bytes(word))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    hash = (hash ^ u64::from_le_bytes(tail))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29);
    hash ^ (hash >> 32)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_block(out: &mut Vec<u8>, block: &FeatureBlock) {
    out.extend_from_slice(&(block.document_count() as u64).to_le_bytes());
    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
    let mut previous: &[u8] = &[];
    for term in block.terms() {
        let bytes = term.as_bytes();
        let shared = previous
            .iter()
            .zip(bytes)
            .take_while(|(a, b)| a == b)
            .count();
        put_varint(out, shared as u64);
        put_varint(out, (bytes.len() - shared) as u64);
        out.extend_from_slice(&bytes[shared..]);
        previous = bytes;
    }
    for value in block.idf() {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

impl TextClassifier {
    /// The model as bytes in the current format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        let options = serde_json::to_vec(&self.options).unwrap_or_default();
        payload.extend_from_slice(&(options.len() as u32).to_le_bytes());
        payload.extend_from_slice(&options);
        payload.extend_from_slice(&(self.categories.len() as u32).to_le_bytes());
        for category in &self.categories {
            payload.extend_from_slice(&category.value().to_le_bytes());
        }
        payload.extend_from_slice(&self.calibration.temperature.to_le_bytes());
        put_block(&mut payload, self.vectorizer.word());
        put_block(&mut payload, self.vectorizer.char_wb());
        let svm = &self.svm;
        payload.extend_from_slice(&(svm.class_count() as u32).to_le_bytes());
        payload.extend_from_slice(&(svm.feature_count() as u32).to_le_bytes());
        for count in svm.iterations() {
            payload.extend_from_slice(&count.to_le_bytes());
        }
        for value in svm.intercepts().iter().chain(svm.weights()) {
            payload.extend_from_slice(&value.to_le_bytes());
        }
        let mut out = Vec::with_capacity(payload.len() + 28);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&checksum(&payload).to_le_bytes());
        out
    }

    /// Reads a model from bytes written by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TextModelError> {
        let mut header = Reader::new(bytes);
        let magic =
            header
                .take(MAGIC.len(), "magic")
                .map_err(|_| TextModelError::NotAModelFile {
                    found: bytes.to_vec(),
                })?;
        if magic != MAGIC {
            return Err(TextModelError::NotAModelFile {
                found: magic.to_vec(),
            });
        }
        let version = header.u32("format version")?;
        if version != FORMAT_VERSION {
            return Err(TextModelError::UnsupportedFormatVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let payload_length = header.u64("payload length")?;
        let payload_length = usize::try_from(payload_length)
            .map_err(|_| TextModelError::Corrupt(format!("payload length {payload_length}")))?;
        let payload = header.take(payload_length, "payload")?;
        let stored = header.u64("checksum")?;
        if header.remaining() != 0 {
            return Err(TextModelError::Corrupt(format!(
                "{} unexpected bytes after the checksum",
                header.remaining()
            )));
        }
        if checksum(payload) != stored {
            return Err(TextModelError::Corrupt(
                "checksum mismatch: the file was damaged or changed after it was written".into(),
            ));
        }
        parse_payload(payload)
    }

    /// Writes the model to `path`.
    pub fn save(&self, path: &Path) -> Result<(), TextModelError> {
        std::fs::write(path, self.to_bytes()).map_err(|source| TextModelError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a model from `path`.
    pub fn load(path: &Path) -> Result<Self, TextModelError> {
        let bytes = std::fs::read(path).map_err(|source| TextModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }
}

fn parse_payload(payload: &[u8]) -> Result<TextClassifier, TextModelError> {
    let mut reader = Reader::new(payload);
    let options_length = reader.u32("options length")? as usize;
    let options_json = reader.take(options_length, "options")?;
    let options: TextClassifierOptions = serde_json::from_slice(options_json)
        .map_err(|error| TextModelError::Corrupt(format!("options: {error}")))?;
    if let Some(companion) = &options.companion {
        companion
            .validate()
            .map_err(|error| TextModelError::Corrupt(format!("options: {error}")))?;
    }
    let category_count = reader.u32("category count")? as usize;
    reader.ensure(category_count.saturating_mul(2), "categories")?;
    let mut categories = Vec::with_capacity(category_count);
    for _ in 0..category_count {
        let code = reader.u16("category")?;
        let category = CategoryCode::from_u16(code)
            .map_err(|error| TextModelError::Corrupt(format!("category: {error}")))?;
        categories.push(category);
    }
    if categories.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(TextModelError::Corrupt(
            "categories not strictly ascending".into(),
        ));
    }
    let temperature = reader.f64("temperature")?;
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(TextModelError::Corrupt(format!(
            "temperature {temperature}"
        )));
    }
    let word = read_block(&mut reader, options.vectorizer.word.clone(), "word block")?;
    let char_wb = read_block(
        &mut reader,
        options.vectorizer.char_wb.clone(),
        "char_wb block",
    )?;
    let vectorizer = TextVectorizer::from_blocks(word, char_wb)?;
    let class_count = reader.u32("class count")? as usize;
    let feature_count = reader.u32("feature count")? as usize;
    let columns = vectorizer.feature_count() + crate::classifier::companion_width(&options);
    if class_count != categories.len() || feature_count != columns {
        return Err(TextModelError::Corrupt(format!(
            "SVM has {class_count} classes and {feature_count} features, the model has {} \
             categories and {columns} columns",
            categories.len(),
        )));
    }
    reader.ensure(class_count.saturating_mul(4), "iterations")?;
    let iterations = (0..class_count)
        .map(|_| reader.u32("iterations"))
        .collect::<Result<Vec<u32>, _>>()?;
    let intercepts = reader.f32_array(class_count, "intercepts")?;
    let weights = reader.f32_array(feature_count.saturating_mul(class_count), "weights")?;
    if reader.remaining() != 0 {
        return Err(TextModelError::Corrupt(format!(
            "{} unexpected bytes after the weights",
            reader.remaining()
        )));
    }
    let svm = LinearSvm::from_parts(
        class_count,
        feature_count,
        weights,
        intercepts,
        iterations,
        options.svm.clone(),
    )?;
    Ok(TextClassifier {
        options,
        categories,
        vectorizer,
        svm,
        calibration: TemperatureScaling { temperature },
    })
}

fn read_block(
    reader: &mut Reader<'_>,
    options: TfidfOptions,
    section: &'static str,
) -> Result<FeatureBlock, TextModelError> {
    let document_count = reader.u64(section)?;
    let document_count = usize::try_from(document_count)
        .map_err(|_| TextModelError::Corrupt(format!("{section}: {document_count} documents")))?;
    let term_count = reader.u32(section)? as usize;
    // Every term takes at least two bytes; refuse counts the rest of the file cannot hold
    // before allocating for them.
    reader.ensure(term_count.saturating_mul(2), section)?;
    let mut terms: Vec<Box<str>> = Vec::with_capacity(term_count);
    let mut previous: Vec<u8> = Vec::new();
    for _ in 0..term_count {
        let shared = reader.varint(section)? as usize;
        let suffix_length = reader.varint(section)? as usize;
        if shared > previous.len() {
            return Err(TextModelError::Corrupt(format!(
                "{section}: shared prefix {shared} longer than the previous term"
            )));
        }
        let suffix = reader.take(suffix_length, section)?;
        previous.truncate(shared);
        previous.extend_from_slice(suffix);
        let term = std::str::from_utf8(&previous)
            .map_err(|_| TextModelError::Corrupt(format!("{section}: term is not UTF-8")))?;
        terms.push(term.into());
    }
    let idf = reader.f32_array(term_count, section)?;
    FeatureBlock::from_parts(options, document_count, terms, idf)
}

/// A bounds-checked cursor over the file bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn ensure(&self, needed: usize, section: &'static str) -> Result<(), TextModelError> {
        if needed > self.remaining() {
            Err(TextModelError::Truncated {
                section,
                needed,
                available: self.remaining(),
            })
        } else {
            Ok(())
        }
    }

    fn take(&mut self, count: usize, section: &'static str) -> Result<&'a [u8], TextModelError> {
        self.ensure(count, section)?;
        let slice = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, section: &'static str) -> Result<[u8; N], TextModelError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, section)?);
        Ok(out)
    }

    fn u16(&mut self, section: &'static str) -> Result<u16, TextModelError> {
        Ok(u16::from_le_bytes(self.array(section)?))
    }

    fn u32(&mut self, section: &'static str) -> Result<u32, TextModelError> {
        Ok(u32::from_le_bytes(self.array(section)?))
    }

    fn u64(&mut self, section: &'static str) -> Result<u64, TextModelError> {
        Ok(u64::from_le_bytes(self.array(section)?))
    }

    fn f64(&mut self, section: &'static str) -> Result<f64, TextModelError> {
        Ok(f64::from_le_bytes(self.array(section)?))
    }

    fn varint(&mut self, section: &'static str) -> Result<u64, TextModelError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1, section)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(TextModelError::Corrupt(format!(
            "{section}: varint too long"
        )))
    }

    fn f32_array(
        &mut self,
        count: usize,
        section: &'static str,
    ) -> Result<Vec<f32>, TextModelError> {
        let bytes = self.take(count.saturating_mul(4), section)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect())
    }
}
