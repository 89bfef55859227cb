//! Text normalisation and pre-tokenisation before the unigram model: the character map
//! (precompiled SentencePiece rules or a per-codepoint table), literal replacements, collapsing
//! runs of spaces, and the metaspace step that marks word starts with "▁".

use unicode_normalization::UnicodeNormalization;

use super::charsmap::PrecompiledCharsMap;

/// A Unicode normalisation form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnicodeForm {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
}

/// One normalisation step, applied in order.
#[derive(Debug, Clone)]
pub enum NormalizerStep {
    /// SentencePiece's precompiled rules (longest match at each position).
    Precompiled(PrecompiledCharsMap),
    /// A per-codepoint replacement table, sorted by codepoint (the E5S1 file's form).
    CodepointMap(Vec<(u32, Vec<u32>)>),
    /// Replace every occurrence of a literal string.
    ReplaceLiteral { pattern: String, content: String },
    /// Replace every run of two or more spaces by one (tokenizer.json's `" {2,}"` rule).
    CollapseSpaces,
    /// A Unicode normalisation form over the whole text.
    Unicode(UnicodeForm),
}

impl NormalizerStep {
    fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 8);
        match self {
            NormalizerStep::Precompiled(map) => map.normalize(text, &mut out),
            NormalizerStep::CodepointMap(table) => {
                for character in text.chars() {
                    match table
                        .binary_search_by_key(&(character as u32), |(codepoint, _)| *codepoint)
                    {
                        Ok(index) => out.extend(
                            table[index]
                                .1
                                .iter()
                                .map(|codepoint| char::from_u32(*codepoint).unwrap_or('\u{fffd}')),
                        ),
                        Err(_) => out.push(character),
                    }
                }
            }
            NormalizerStep::ReplaceLiteral { pattern, content } => {
                if pattern.is_empty() {
                    out.push_str(text);
                } else {
                    out = text.replace(pattern.as_str(), content);
                }
            }
            NormalizerStep::Unicode(form) => match form {
                UnicodeForm::Nfc => out.extend(text.nfc()),
                UnicodeForm::Nfd => out.extend(text.nfd()),
                UnicodeForm::Nfkc => out.extend(text.nfkc()),
                UnicodeForm::Nfkd => out.extend(text.nfkd()),
            },
            NormalizerStep::CollapseSpaces => {
                let mut previous_space = false;
                for character in text.chars() {
                    if character == ' ' {
                        if !previous_space {
                            out.push(' ');
                        }
                        previous_space = true;
                    } else {
                        out.push(character);
                        previous_space = false;
                    }
                }
            }
        }
        out
    }
}

/// Applies every step in order.
pub(crate) fn normalize(steps: &[NormalizerStep], text: &str) -> String {
    let mut current = text.to_string();
    for step in steps {
        current = step.apply(&current);
    }
    current
}

/// The metaspace pre-tokeniser: spaces become the replacement character (normally "▁"), a
/// replacement is prepended when the text does not start with one, and the text is split into
/// words, each starting at a replacement character.
#[derive(Debug, Clone)]
pub struct Metaspace {
    pub replacement: char,
    pub prepend: bool,
    pub split: bool,
}

impl Default for Metaspace {
    fn default() -> Self {
        Self {
            replacement: '\u{2581}',
            prepend: true,
            split: true,
        }
    }
}

impl Metaspace {
    /// Returns the text with spaces replaced, and the byte ranges of its words.
    pub(crate) fn apply(&self, normalized: &str) -> (String, Vec<std::ops::Range<usize>>) {
        let mut text = String::with_capacity(normalized.len() + 3 * 4);
        if normalized.is_empty() {
            return (text, Vec::new());
        }
        if self.prepend && !normalized.starts_with(' ') && !normalized.starts_with(self.replacement)
        {
            text.push(self.replacement);
        }
        for character in normalized.chars() {
            text.push(if character == ' ' {
                self.replacement
            } else {
                character
            });
        }
        let mut words = Vec::new();
        if !self.split {
            if !text.is_empty() {
                words.push(0..text.len());
            }
            return (text, words);
        }
        let mut start = 0;
        for (index, character) in text.char_indices() {
            if character == self.replacement && index > start {
                words.push(start..index);
                start = index;
            }
        }
        if start < text.len() {
            words.push(start..text.len());
        }
        (text, words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_spaces_keeps_single_spaces() {
        assert_eq!(
            NormalizerStep::CollapseSpaces.apply("a  b   c d "),
            "a b c d "
        );
    }

    #[test]
    fn codepoint_map_replaces_and_deletes() {
        let step = NormalizerStep::CodepointMap(vec![(0x1, vec![]), (0xfb01, vec![0x66, 0x69])]);
        assert_eq!(step.apply("\u{1}ﬁn"), "fin");
    }

    #[test]
    fn metaspace_prepends_and_splits_words() {
        let metaspace = Metaspace::default();
        let (text, words) = metaspace.apply("ab cd ");
        assert_eq!(text, "▁ab▁cd▁");
        let words: Vec<&str> = words.iter().map(|range| &text[range.clone()]).collect();
        assert_eq!(words, vec!["▁ab", "▁cd", "▁"]);
        let (text, words) = metaspace.apply(" x");
        assert_eq!(text, "▁x");
        assert_eq!(words.len(), 1);
        let (text, words) = metaspace.apply("");
        assert_eq!(text, "");
        assert!(words.is_empty());
    }
}
