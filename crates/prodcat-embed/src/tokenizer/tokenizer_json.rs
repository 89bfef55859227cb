//! Reader for the `tokenizer.json` format: the unigram model, its normaliser sequence, the
//! metaspace pre-tokeniser and the special tokens of the post-processor. Components this
//! tokenizer does not implement are rejected with an error naming them.

use serde::Deserialize;
use serde_json::Value;

use super::charsmap::PrecompiledCharsMap;
use super::normalizer::{Metaspace, NormalizerStep, UnicodeForm};
use super::TokenizerParts;
use crate::error::EmbedError;

#[derive(Deserialize)]
struct TokenizerFile {
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
    #[serde(default)]
    normalizer: Option<Value>,
    #[serde(default)]
    pre_tokenizer: Option<Value>,
    #[serde(default)]
    post_processor: Option<Value>,
    model: ModelSection,
}

#[derive(Deserialize)]
struct AddedToken {
    id: u32,
    content: String,
    #[serde(default)]
    special: bool,
}

#[derive(Deserialize)]
struct ModelSection {
    #[serde(rename = "type")]
    kind: Option<String>,
    unk_id: Option<u32>,
    #[serde(default)]
    byte_fallback: bool,
    vocab: Vec<(String, f64)>,
}

pub(crate) fn parse(json: &str, source_name: &str) -> Result<TokenizerParts, EmbedError> {
    let invalid = |detail: String| EmbedError::InvalidTokenizer {
        source_name: source_name.to_string(),
        detail,
    };
    let file: TokenizerFile = serde_json::from_str(json)
        .map_err(|error| invalid(format!("not a tokenizer.json: {error}")))?;
    match file.model.kind.as_deref() {
        Some("Unigram") | None => {}
        Some(other) => {
            return Err(invalid(format!(
                "model type {other} is not supported (only Unigram)"
            )))
        }
    }
    if file.model.byte_fallback {
        return Err(invalid("byte fallback is not supported".to_string()));
    }
    let pieces = file.model.vocab;
    let find = |piece: &str| {
        pieces
            .iter()
            .position(|(text, _)| text == piece)
            .map(|id| id as u32)
    };
    let unk_id = file
        .model
        .unk_id
        .or_else(|| find("<unk>"))
        .ok_or_else(|| invalid("no unk_id and no <unk> piece".to_string()))?;

    let normalizer = match &file.normalizer {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => {
            let mut steps = Vec::new();
            normalizer_steps(value, &mut steps).map_err(invalid)?;
            steps
        }
    };
    let metaspace = match &file.pre_tokenizer {
        None | Some(Value::Null) => {
            return Err(invalid("no pre_tokenizer (Metaspace expected)".to_string()))
        }
        Some(value) => metaspace(value).map_err(invalid)?,
    };

    let (bos_id, eos_id) = match file.post_processor.as_ref().map(special_ids).transpose() {
        Ok(Some(Some(ids))) => ids,
        Ok(_) => (
            find("<s>").ok_or_else(|| invalid("no <s> token".to_string()))?,
            find("</s>").ok_or_else(|| invalid("no </s> token".to_string()))?,
        ),
        Err(detail) => return Err(invalid(detail)),
    };
    let pad_id = find("<pad>").unwrap_or(unk_id);
    let unmatchable = file
        .added_tokens
        .iter()
        .filter(|token| token.special)
        .map(|token| token.id)
        .collect();
    // Added tokens must agree with the vocabulary they name.
    for token in &file.added_tokens {
        match pieces.get(token.id as usize) {
            Some((piece, _)) if *piece == token.content => {}
            _ => {
                return Err(invalid(format!(
                    "added token {:?} with id {} is not that vocabulary entry",
                    token.content, token.id
                )))
            }
        }
    }
    Ok(TokenizerParts {
        normalizer,
        metaspace,
        pieces,
        unmatchable,
        unk_id,
        bos_id,
        eos_id,
        pad_id,
    })
}

fn kind(value: &Value) -> Result<&str, String> {
    value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("component without a type: {}", abbreviate(value)))
}

fn abbreviate(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((index, _)) => format!("{}...", &text[..index]),
        None => text,
    }
}

fn normalizer_steps(value: &Value, steps: &mut Vec<NormalizerStep>) -> Result<(), String> {
    match kind(value)? {
        "Sequence" => {
            let inner = value
                .get("normalizers")
                .and_then(Value::as_array)
                .ok_or("normalizer Sequence without a normalizers list")?;
            for item in inner {
                normalizer_steps(item, steps)?;
            }
        }
        "Precompiled" => {
            let encoded = value
                .get("precompiled_charsmap")
                .and_then(Value::as_str)
                .ok_or("Precompiled normalizer without precompiled_charsmap")?;
            if !encoded.is_empty() {
                let blob = decode_base64(encoded)?;
                steps.push(NormalizerStep::Precompiled(PrecompiledCharsMap::parse(
                    &blob,
                )?));
            }
        }
        "Replace" => {
            let pattern = value
                .get("pattern")
                .ok_or("Replace normalizer without a pattern")?;
            let content = value
                .get("content")
                .and_then(Value::as_str)
                .ok_or("Replace normalizer without content")?
                .to_string();
            if let Some(literal) = pattern.get("String").and_then(Value::as_str) {
                steps.push(NormalizerStep::ReplaceLiteral {
                    pattern: literal.to_string(),
                    content,
                });
            } else if pattern.get("Regex").and_then(Value::as_str) == Some(" {2,}")
                && content == " "
            {
                steps.push(NormalizerStep::CollapseSpaces);
            } else {
                return Err(format!(
                    "Replace pattern {} is not supported (a literal string or \" {{2,}}\" -> \" \")",
                    abbreviate(pattern)
                ));
            }
        }
        "NFC" => steps.push(NormalizerStep::Unicode(UnicodeForm::Nfc)),
        "NFD" => steps.push(NormalizerStep::Unicode(UnicodeForm::Nfd)),
        "NFKC" => steps.push(NormalizerStep::Unicode(UnicodeForm::Nfkc)),
        "NFKD" => steps.push(NormalizerStep::Unicode(UnicodeForm::Nfkd)),
        other => return Err(format!("normalizer {other} is not supported")),
    }
    Ok(())
}

fn metaspace(value: &Value) -> Result<Metaspace, String> {
    match kind(value)? {
        "Metaspace" => {
            let replacement = value
                .get("replacement")
                .and_then(Value::as_str)
                .and_then(|text| {
                    let mut characters = text.chars();
                    let first = characters.next()?;
                    characters.next().is_none().then_some(first)
                })
                .ok_or("Metaspace replacement must be one character")?;
            let prepend = match value.get("prepend_scheme").and_then(Value::as_str) {
                Some("always") | Some("first") => true,
                Some("never") => false,
                Some(other) => {
                    return Err(format!("Metaspace prepend_scheme {other} is not supported"))
                }
                None => value
                    .get("add_prefix_space")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            };
            let split = value.get("split").and_then(Value::as_bool).unwrap_or(true);
            Ok(Metaspace {
                replacement,
                prepend,
                split,
            })
        }
        "Sequence" => {
            let inner = value
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or("pre_tokenizer Sequence without a pretokenizers list")?;
            match inner.as_slice() {
                [single] => metaspace(single),
                _ => Err("a pre_tokenizer Sequence must hold exactly one Metaspace".to_string()),
            }
        }
        other => Err(format!(
            "pre_tokenizer {other} is not supported (Metaspace expected)"
        )),
    }
}

/// (`<s>`, `</s>`) ids from a post-processor, when it names them.
fn special_ids(value: &Value) -> Result<Option<(u32, u32)>, String> {
    let id_of = |pair: Option<&Value>| -> Option<u32> {
        pair?.as_array()?.get(1)?.as_u64().map(|id| id as u32)
    };
    match kind(value)? {
        "TemplateProcessing" => {
            let single = value
                .get("single")
                .and_then(Value::as_array)
                .ok_or("TemplateProcessing without a single template")?;
            let special_tokens = value.get("special_tokens");
            let lookup = |item: &Value| -> Option<u32> {
                let name = item.get("SpecialToken")?.get("id")?.as_str()?;
                special_tokens?
                    .get(name)?
                    .get("ids")?
                    .as_array()?
                    .first()?
                    .as_u64()
                    .map(|id| id as u32)
            };
            let first = single.first().and_then(lookup);
            let last = single.last().and_then(lookup);
            Ok(first.zip(last))
        }
        "RobertaProcessing" | "BertProcessing" => {
            Ok(id_of(value.get("cls")).zip(id_of(value.get("sep"))))
        }
        other => Err(format!("post_processor {other} is not supported")),
    }
}

/// Standard base64 (with or without padding).
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    fn sextet(byte: u8) -> Option<u32> {
        match byte {
            b'A'..=b'Z' => Some((byte - b'A') as u32),
            b'a'..=b'z' => Some((byte - b'a') as u32 + 26),
            b'0'..=b'9' => Some((byte - b'0') as u32 + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let trimmed = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut accumulator = 0u32;
    let mut bits = 0;
    for byte in trimmed.bytes() {
        let value = sextet(byte).ok_or_else(|| format!("invalid base64 byte {byte:#04x}"))?;
        accumulator = (accumulator << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((accumulator >> bits) as u8);
            accumulator &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::charsmap::tests::build_blob;
    use super::super::Tokenizer;
    use super::*;

    fn encode_base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let value = (chunk[0] as u32) << 16
                | (*chunk.get(1).unwrap_or(&0) as u32) << 8
                | *chunk.get(2).unwrap_or(&0) as u32;
            for index in 0..4 {
                if index <= chunk.len() {
                    out.push(ALPHABET[(value >> (18 - 6 * index)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn base64_round_trip() {
        for length in 0..10 {
            let bytes: Vec<u8> = (0..length).map(|index| (index * 37 + 11) as u8).collect();
            assert_eq!(decode_base64(&encode_base64(&bytes)).unwrap(), bytes);
        }
        assert!(decode_base64("ab$c").is_err());
    }

    fn tokenizer_json(normalizer: &str, pre_tokenizer: &str) -> String {
        format!(
            r#"{{
  "added_tokens": [
    {{"id": 0, "content": "<s>", "special": true}},
    {{"id": 2, "content": "</s>", "special": true}}
  ],
  "normalizer": {normalizer},
  "pre_tokenizer": {pre_tokenizer},
  "post_processor": {{"type": "TemplateProcessing",
    "single": [{{"SpecialToken": {{"id": "<s>", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "</s>", "type_id": 0}}}}],
    "special_tokens": {{"<s>": {{"id": "<s>", "ids": [0], "tokens": ["<s>"]}}, "</s>": {{"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}}}},
  "model": {{"type": "Unigram", "unk_id": 3, "vocab": [
    ["<s>", 0.0], ["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0],
    ["▁", -2.0], ["▁fin", -1.0], ["fi", -3.0], ["n", -3.0], ["▁é", -1.5], ["t", -2.0], ["é", -2.5]
  ]}}
}}"#
        )
    }

    #[test]
    fn loads_a_unigram_tokenizer_with_precompiled_rules() {
        // ﬁ -> fi, and "e" + combining acute -> é (a two-codepoint rule).
        let blob = build_blob(&[("ﬁ", "fi"), ("e\u{301}", "é")]);
        let normalizer = format!(
            r#"{{"type": "Sequence", "normalizers": [
                {{"type": "Precompiled", "precompiled_charsmap": "{}"}},
                {{"type": "Replace", "pattern": {{"Regex": " {{2,}}"}}, "content": " "}}]}}"#,
            encode_base64(&blob)
        );
        let json = tokenizer_json(
            &normalizer,
            r#"{"type": "Metaspace", "replacement": "▁", "add_prefix_space": true}"#,
        );
        let tokenizer = Tokenizer::from_tokenizer_json(&json, "test").unwrap();
        assert_eq!(tokenizer.bos_id(), 0);
        assert_eq!(tokenizer.eos_id(), 2);
        assert_eq!(tokenizer.normalize("ﬁn   e\u{301}t"), "fin ét");
        assert_eq!(tokenizer.encode("ﬁn   e\u{301}t"), vec![0, 5, 8, 9, 2]);
    }

    #[test]
    fn rejects_unsupported_components() {
        let json = tokenizer_json("null", r#"{"type": "ByteLevel"}"#);
        let error = Tokenizer::from_tokenizer_json(&json, "test").unwrap_err();
        assert!(error.to_string().contains("ByteLevel"), "{error}");
        let json = tokenizer_json(
            r#"{"type": "Replace", "pattern": {"Regex": "[a-z]+"}, "content": ""}"#,
            r#"{"type": "Metaspace", "replacement": "▁"}"#,
        );
        let error = Tokenizer::from_tokenizer_json(&json, "test").unwrap_err();
        assert!(error.to_string().contains("not supported"), "{error}");
        let error = Tokenizer::from_tokenizer_json("{\"model\": 3}", "test").unwrap_err();
        assert!(matches!(error, EmbedError::InvalidTokenizer { .. }));
    }
}
