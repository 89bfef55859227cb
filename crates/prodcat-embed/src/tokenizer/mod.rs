//! XLM-R SentencePiece unigram tokenizer: normalisation, metaspace word splitting and the
//! Viterbi search for the most probable segmentation of each word into vocabulary pieces.
//!
//! Loads from a standard `tokenizer.json` (the form users can supply) or from the vocabulary
//! built into an E5S1 model file. Behaviour follows SentencePiece: unknown characters become
//! `<unk>` (a run of them one `<unk>`), special pieces such as `<s>` are never matched inside
//! text, and `<s>` / `</s>` frame the encoded sequence.

mod charsmap;
mod normalizer;
mod tokenizer_json;

pub(crate) use normalizer::{Metaspace, NormalizerStep};

use std::path::Path;

use crate::error::EmbedError;
use crate::model_file::BuiltInVocabulary;

/// Token budget of multilingual-e5-small, `<s>` and `</s>` included.
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// Score penalty of an unknown character relative to the least likely piece (SentencePiece's
/// and the reference engine's value).
const UNKNOWN_PENALTY: f64 = 10.0;

/// Compact open-addressing table from piece text to id, with scores.
#[derive(Debug, Clone)]
struct PieceTable {
    text: Vec<u8>,
    offsets: Vec<u32>,
    scores: Vec<f64>,
    slots: Vec<u32>,
    mask: usize,
    max_piece_bytes: usize,
}

/// FNV-1a offset basis.
const HASH_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Extends an FNV-1a hash by `bytes` (so the Viterbi search hashes each longer candidate
/// piece incrementally).
fn extend_hash(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= *byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn piece_hash(bytes: &[u8]) -> u64 {
    extend_hash(HASH_START, bytes)
}

impl PieceTable {
    /// `matchable[id]` says whether Viterbi may use the piece.
    fn new(pieces: &[(String, f64)], matchable: &[bool]) -> Self {
        let mut text = Vec::new();
        let mut offsets = Vec::with_capacity(pieces.len() + 1);
        let mut scores = Vec::with_capacity(pieces.len());
        offsets.push(0u32);
        for (piece, score) in pieces {
            text.extend_from_slice(piece.as_bytes());
            offsets.push(text.len() as u32);
            scores.push(*score);
        }
        let capacity = (pieces.len() * 2).next_power_of_two().max(16);
        let mask = capacity - 1;
        let mut table = Self {
            text,
            offsets,
            scores,
            slots: vec![0; capacity],
            mask,
            max_piece_bytes: 1,
        };
        for (id, (piece, _)) in pieces.iter().enumerate() {
            if piece.is_empty() || !matchable[id] || table.lookup(piece.as_bytes()).is_some() {
                continue; // first occurrence of a duplicate wins
            }
            let mut slot = piece_hash(piece.as_bytes()) as usize & mask;
            while table.slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            table.slots[slot] = id as u32 + 1;
            table.max_piece_bytes = table.max_piece_bytes.max(piece.len());
        }
        table
    }

    fn piece(&self, id: usize) -> &[u8] {
        &self.text[self.offsets[id] as usize..self.offsets[id + 1] as usize]
    }

    fn lookup(&self, bytes: &[u8]) -> Option<usize> {
        self.lookup_hashed(bytes, piece_hash(bytes))
    }

    /// Lookup with the precomputed `piece_hash` of `bytes`.
    fn lookup_hashed(&self, bytes: &[u8], hash: u64) -> Option<usize> {
        let mut slot = hash as usize & self.mask;
        loop {
            let entry = self.slots[slot];
            if entry == 0 {
                return None;
            }
            let id = entry as usize - 1;
            if self.piece(id) == bytes {
                return Some(id);
            }
            slot = (slot + 1) & self.mask;
        }
    }

    fn len(&self) -> usize {
        self.scores.len()
    }
}

/// A SentencePiece unigram tokenizer. Cheap to share across threads (`Send + Sync`).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    normalizer: Vec<NormalizerStep>,
    metaspace: Metaspace,
    pieces: PieceTable,
    unk_id: u32,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    unk_score: f64,
    max_length: usize,
}

/// Everything a tokenizer is built from, whatever the source file.
pub(crate) struct TokenizerParts {
    pub normalizer: Vec<NormalizerStep>,
    pub metaspace: Metaspace,
    pub pieces: Vec<(String, f64)>,
    pub unmatchable: Vec<u32>,
    pub unk_id: u32,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
}

impl Tokenizer {
    pub(crate) fn from_parts(parts: TokenizerParts, source_name: &str) -> Result<Self, EmbedError> {
        let invalid = |detail: String| EmbedError::InvalidTokenizer {
            source_name: source_name.to_string(),
            detail,
        };
        let count = parts.pieces.len();
        if count == 0 {
            return Err(invalid("the vocabulary is empty".to_string()));
        }
        for (name, id) in [
            ("<unk>", parts.unk_id),
            ("<s>", parts.bos_id),
            ("</s>", parts.eos_id),
            ("<pad>", parts.pad_id),
        ] {
            if id as usize >= count {
                return Err(invalid(format!(
                    "{name} id {id} is outside the {count}-piece vocabulary"
                )));
            }
        }
        if let Some((index, (piece, score))) = parts
            .pieces
            .iter()
            .enumerate()
            .find(|(_, (_, score))| !score.is_finite())
        {
            return Err(invalid(format!(
                "piece {index} {piece:?} has score {score}"
            )));
        }
        let mut matchable = vec![true; count];
        for id in parts.unmatchable.iter().chain([&parts.unk_id]) {
            if let Some(flag) = matchable.get_mut(*id as usize) {
                *flag = false;
            }
        }
        let minimum_score = parts
            .pieces
            .iter()
            .map(|(_, score)| *score)
            .fold(f64::INFINITY, f64::min);
        Ok(Self {
            normalizer: parts.normalizer,
            metaspace: parts.metaspace,
            pieces: PieceTable::new(&parts.pieces, &matchable),
            unk_id: parts.unk_id,
            bos_id: parts.bos_id,
            eos_id: parts.eos_id,
            pad_id: parts.pad_id,
            unk_score: minimum_score - UNKNOWN_PENALTY,
            max_length: DEFAULT_MAX_LENGTH,
        })
    }

    /// Loads a `tokenizer.json` (SentencePiece unigram model, as XLM-R ships it).
    pub fn from_tokenizer_json_file(path: &Path) -> Result<Self, EmbedError> {
        let json = std::fs::read_to_string(path).map_err(|source| EmbedError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_tokenizer_json(&json, &path.display().to_string())
    }

    /// Parses `tokenizer.json` text; `source_name` names it in errors.
    pub fn from_tokenizer_json(json: &str, source_name: &str) -> Result<Self, EmbedError> {
        let parts = tokenizer_json::parse(json, source_name)?;
        Self::from_parts(parts, source_name)
    }

    /// Builds the tokenizer from the vocabulary and normalisation table inside an E5S1 file.
    /// Its normalisation works per codepoint, so it does not compose decomposed accents
    /// (the `tokenizer.json` rules do).
    pub fn from_built_in(vocabulary: &BuiltInVocabulary) -> Result<Self, EmbedError> {
        let parts = TokenizerParts {
            normalizer: vec![
                NormalizerStep::CodepointMap(vocabulary.normalization.clone()),
                NormalizerStep::CollapseSpaces,
            ],
            metaspace: Metaspace::default(),
            pieces: vocabulary
                .pieces
                .iter()
                .map(|(piece, score)| (piece.clone(), *score as f64))
                .collect(),
            // Control pieces: everything with the special-token score 0 that looks like <...>.
            unmatchable: vocabulary
                .pieces
                .iter()
                .enumerate()
                .filter(|(_, (piece, score))| {
                    *score == 0.0
                        && piece.len() > 2
                        && piece.starts_with('<')
                        && piece.ends_with('>')
                })
                .map(|(id, _)| id as u32)
                .collect(),
            unk_id: vocabulary.unk_id,
            bos_id: vocabulary.bos_id,
            eos_id: vocabulary.eos_id,
            pad_id: vocabulary.pad_id,
        };
        Self::from_parts(parts, "model file vocabulary")
    }

    /// Returns a copy that truncates [`Tokenizer::encode`] to `max_length` ids (at least 3).
    pub fn with_max_length(mut self, max_length: usize) -> Self {
        self.max_length = max_length.max(3);
        self
    }

    /// Maximum sequence length of [`Tokenizer::encode`], `<s>` and `</s>` included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Number of pieces in the vocabulary.
    pub fn vocabulary_size(&self) -> usize {
        self.pieces.len()
    }

    /// Text of a piece.
    pub fn piece(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.pieces.len())
            .then(|| std::str::from_utf8(self.pieces.piece(id as usize)).ok())
            .flatten()
    }

    /// Id of a piece that text can produce (special pieces are not matchable).
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.pieces.lookup(piece.as_bytes()).map(|id| id as u32)
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// The normalised text, before metaspace marking (for inspection and tests).
    pub fn normalize(&self, text: &str) -> String {
        normalizer::normalize(&self.normalizer, text)
    }

    /// Token ids of `text` without `<s>` / `</s>` and without truncation.
    pub fn content_ids(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalize(text);
        let (marked, words) = self.metaspace.apply(&normalized);
        let mut ids = Vec::with_capacity(marked.len() / 3 + 2);
        let mut scratch = ViterbiScratch::default();
        for word in words {
            self.segment_word(&marked[word], &mut scratch, &mut ids);
        }
        ids
    }

    /// `<s>` + ids + `</s>`, the content truncated to fit [`Tokenizer::max_length`].
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let content = self.content_ids(text);
        let keep = content.len().min(self.max_length - 2);
        let mut ids = Vec::with_capacity(keep + 2);
        ids.push(self.bos_id);
        ids.extend_from_slice(&content[..keep]);
        ids.push(self.eos_id);
        ids
    }

    /// Viterbi over one word; appends the best segmentation's ids to `out`.
    fn segment_word(&self, word: &str, scratch: &mut ViterbiScratch, out: &mut Vec<u32>) {
        let bytes = word.as_bytes();
        scratch.boundaries.clear();
        scratch
            .boundaries
            .extend(word.char_indices().map(|(index, _)| index));
        scratch.boundaries.push(bytes.len());
        let char_count = scratch.boundaries.len() - 1;
        scratch.best.clear();
        scratch.best.resize(char_count + 1, f64::NEG_INFINITY);
        scratch.from.clear();
        scratch.from.resize(char_count + 1, 0);
        scratch.piece.clear();
        scratch.piece.resize(char_count + 1, u32::MAX);
        scratch.best[0] = 0.0;
        for start in 0..char_count {
            let base = scratch.best[start];
            if base == f64::NEG_INFINITY {
                continue;
            }
            let start_byte = scratch.boundaries[start];
            let mut has_single_character_piece = false;
            let mut hash = HASH_START;
            for end in start + 1..=char_count {
                let end_byte = scratch.boundaries[end];
                if end_byte - start_byte > self.pieces.max_piece_bytes {
                    break;
                }
                hash = extend_hash(hash, &bytes[scratch.boundaries[end - 1]..end_byte]);
                if let Some(id) = self
                    .pieces
                    .lookup_hashed(&bytes[start_byte..end_byte], hash)
                {
                    if end == start + 1 {
                        has_single_character_piece = true;
                    }
                    let score = base + self.pieces.scores[id];
                    if score > scratch.best[end] {
                        scratch.best[end] = score;
                        scratch.from[end] = start;
                        scratch.piece[end] = id as u32;
                    }
                }
            }
            if !has_single_character_piece {
                let score = base + self.unk_score;
                if score > scratch.best[start + 1] {
                    scratch.best[start + 1] = score;
                    scratch.from[start + 1] = start;
                    scratch.piece[start + 1] = self.unk_id;
                }
            }
        }
        // Backtrack, then append in order, merging runs of unknown characters.
        scratch.path.clear();
        let mut position = char_count;
        while position > 0 {
            scratch.path.push(scratch.piece[position]);
            position = scratch.from[position];
        }
        let mut previous_unknown = false;
        for id in scratch.path.iter().rev() {
            let unknown = *id == self.unk_id;
            if !(unknown && previous_unknown) {
                out.push(*id);
            }
            previous_unknown = unknown;
        }
    }
}

/// Reusable buffers of the Viterbi search.
#[derive(Default)]
struct ViterbiScratch {
    boundaries: Vec<usize>,
    best: Vec<f64>,
    from: Vec<usize>,
    piece: Vec<u32>,
    path: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(pieces: &[(&str, f64)]) -> Tokenizer {
        let mut all: Vec<(String, f64)> = vec![
            ("<s>".into(), 0.0),
            ("<pad>".into(), 0.0),
            ("</s>".into(), 0.0),
            ("<unk>".into(), 0.0),
        ];
        all.extend(
            pieces
                .iter()
                .map(|(piece, score)| (piece.to_string(), *score)),
        );
        Tokenizer::from_parts(
            TokenizerParts {
                normalizer: vec![NormalizerStep::CollapseSpaces],
                metaspace: Metaspace::default(),
                pieces: all,
                unmatchable: vec![0, 1, 2],
                unk_id: 3,
                bos_id: 0,
                eos_id: 2,
                pad_id: 1,
            },
            "test",
        )
        .unwrap()
    }

    fn check(tokenizer: &Tokenizer, text: &str, expected: &[&str]) {
        let pieces: Vec<&str> = tokenizer
            .content_ids(text)
            .iter()
            .map(|id| tokenizer.piece(*id).unwrap())
            .collect();
        assert_eq!(pieces, expected, "text {text:?}");
    }

    #[test]
    fn viterbi_prefers_the_most_probable_segmentation() {
        let tokenizer = tiny(&[
            ("▁", -2.0),
            ("▁ab", -3.0),
            ("▁a", -1.0),
            ("b", -1.0),
            ("a", -4.0),
            ("c", -5.0),
            ("▁abc", -7.0),
        ]);
        // ▁a + b = -2 beats ▁ab = -3.
        check(&tokenizer, "ab", &["▁a", "b"]);
        // A tie (▁abc = -7 = ▁a + b + c): the path reaching the end first (from the earliest
        // start) is kept, as in SentencePiece and the reference engine.
        check(&tokenizer, "abc", &["▁abc"]);
        check(&tokenizer, "bab", &["▁", "b", "a", "b"]);
        check(&tokenizer, "ab  ab", &["▁a", "b", "▁a", "b"]);
    }

    #[test]
    fn unknown_characters_merge_into_one_unknown_token() {
        let tokenizer = tiny(&[("▁", -2.0), ("▁a", -1.0), ("a", -1.0)]);
        let ids = tokenizer.content_ids("a€€a");
        assert_eq!(
            ids,
            vec![
                tokenizer.token_id("▁a").unwrap(),
                3,
                tokenizer.token_id("a").unwrap()
            ]
        );
        let ids = tokenizer.content_ids("€ €");
        // "▁€" has no piece: ▁ then <unk>; the second word likewise.
        assert_eq!(ids, vec![4, 3, 4, 3]);
    }

    #[test]
    fn special_pieces_are_never_matched_inside_text() {
        let tokenizer = tiny(&[
            ("▁", -2.0),
            ("<", -1.0),
            ("s", -1.0),
            (">", -1.0),
            ("/", -1.0),
        ]);
        check(&tokenizer, "<s>", &["▁", "<", "s", ">"]);
        assert_eq!(tokenizer.token_id("<s>"), None);
    }

    #[test]
    fn encode_frames_and_truncates() {
        let tokenizer = tiny(&[("▁a", -1.0)]).with_max_length(4);
        assert_eq!(tokenizer.encode("a a a a"), vec![0, 4, 4, 2]);
        assert_eq!(tokenizer.encode(""), vec![0, 2]);
        assert_eq!(tokenizer.max_length(), 4);
    }

    #[test]
    fn rejects_out_of_range_special_ids() {
        let result = Tokenizer::from_parts(
            TokenizerParts {
                normalizer: vec![],
                metaspace: Metaspace::default(),
                pieces: vec![("a".into(), -1.0)],
                unmatchable: vec![],
                unk_id: 5,
                bos_id: 0,
                eos_id: 0,
                pad_id: 0,
            },
            "test",
        );
        assert!(matches!(result, Err(EmbedError::InvalidTokenizer { .. })));
    }
}
