//! Text features of a product: length, word count, empty-description flag and the share of
//! out-of-vocabulary n-grams against a vocabulary the caller knows.

use serde::{Deserialize, Serialize};

/// Simple size features of one text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextFeatures {
    /// Unicode scalar values in the text.
    pub characters: usize,
    /// Whitespace-separated words.
    pub words: usize,
    /// Whether the text is empty or only whitespace.
    pub is_empty: bool,
}

/// Length, word count and emptiness of `text`.
pub fn text_features(text: &str) -> TextFeatures {
    TextFeatures {
        characters: text.chars().count(),
        words: text.split_whitespace().count(),
        is_empty: text.trim().is_empty(),
    }
}

/// Lower-case word tokens: runs of letters and digits (apostrophes and punctuation split).
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Word n-grams of `text` for every n in `min_n..=max_n`, words joined by one space.
pub fn word_ngrams(text: &str, min_n: usize, max_n: usize) -> Vec<String> {
    let tokens = words(text);
    let mut grams = Vec::new();
    for n in min_n.max(1)..=max_n {
        if n > tokens.len() {
            break;
        }
        for window in tokens.windows(n) {
            grams.push(window.join(" "));
        }
    }
    grams
}

/// Share of the word n-grams (`min_n..=max_n`) of `text` that `is_known` rejects; `None`
/// when the text has no n-gram at all (an empty text has no vocabulary to miss).
pub fn out_of_vocabulary_share(
    text: &str,
    min_n: usize,
    max_n: usize,
    is_known: impl Fn(&str) -> bool,
) -> Option<f64> {
    let grams = word_ngrams(text, min_n, max_n);
    if grams.is_empty() {
        return None;
    }
    let unknown = grams.iter().filter(|gram| !is_known(gram)).count();
    Some(unknown as f64 / grams.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_characters_words_and_emptiness() {
        let features = text_features("Coussin  déco 40x40");
        assert_eq!(features.characters, 19);
        assert_eq!(features.words, 3);
        assert!(!features.is_empty);
        assert!(text_features(" \n ").is_empty);
    }

    #[test]
    fn out_of_vocabulary_share_uses_the_closure() {
        let known = ["lampe", "de", "chevet", "lampe de"];
        let share =
            out_of_vocabulary_share("Lampe de chevet LED", 1, 2, |g| known.contains(&g)).unwrap();
        // unigrams: lampe, de, chevet, led (1 unknown); bigrams: lampe de (known),
        // de chevet, chevet led (2 unknown) -> 3 / 7.
        assert!((share - 3.0 / 7.0).abs() < 1e-12);
        assert_eq!(out_of_vocabulary_share("", 1, 2, |_| true), None);
    }
}
