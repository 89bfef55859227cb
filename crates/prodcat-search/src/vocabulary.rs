//! The title vocabulary behind "did you mean": for every folded title word, how many products
//! have it in their title and how people wrote it (`été` rather than the indexed `ete`), kept up
//! to date on every add, update and delete.

use std::collections::HashMap;

use crate::analysis::AnalysedToken;

#[derive(Debug, Clone, Default)]
struct WordCounts {
    products: u32,
    /// Written forms and how many titles use each.
    written: Vec<(String, u32)>,
}

/// Folded title words with product counts and written forms.
#[derive(Debug, Clone, Default)]
pub struct TitleVocabulary {
    words: HashMap<String, WordCounts>,
}

impl TitleVocabulary {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one product's title words (each distinct word once).
    pub fn add_title(&mut self, tokens: &[AnalysedToken]) {
        for token in distinct(tokens) {
            let counts = self.words.entry(token.folded.clone()).or_default();
            counts.products += 1;
            match counts
                .written
                .iter_mut()
                .find(|(written, _)| *written == token.surface)
            {
                Some((_, count)) => *count += 1,
                None => counts.written.push((token.surface.clone(), 1)),
            }
        }
    }

    /// Uncounts one product's title words (the tokens it was added with).
    pub fn remove_title(&mut self, tokens: &[AnalysedToken]) {
        for token in distinct(tokens) {
            let Some(counts) = self.words.get_mut(&token.folded) else {
                continue;
            };
            counts.products = counts.products.saturating_sub(1);
            if let Some(position) = counts
                .written
                .iter()
                .position(|(written, _)| *written == token.surface)
            {
                counts.written[position].1 -= 1;
                if counts.written[position].1 == 0 {
                    counts.written.swap_remove(position);
                }
            }
            if counts.products == 0 {
                self.words.remove(&token.folded);
            }
        }
    }

    /// Products whose title has the folded word.
    pub fn product_count(&self, folded: &str) -> u32 {
        self.words.get(folded).map_or(0, |counts| counts.products)
    }

    /// The most common written form of a folded word (on a tie, one with accents: titles typed
    /// in capitals lose them); the word itself when unknown.
    pub fn written_form(&self, folded: &str) -> String {
        self.words
            .get(folded)
            .and_then(|counts| {
                counts
                    .written
                    .iter()
                    .max_by(|left, right| {
                        left.1
                            .cmp(&right.1)
                            .then_with(|| (!left.0.is_ascii()).cmp(&!right.0.is_ascii()))
                            .then_with(|| right.0.cmp(&left.0))
                    })
                    .map(|(written, _)| written.clone())
            })
            .unwrap_or_else(|| folded.to_string())
    }

    /// Distinct folded words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Approximate bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.words
            .iter()
            .map(|(word, counts)| {
                word.capacity()
                    + 48
                    + counts
                        .written
                        .iter()
                        .map(|(written, _)| written.capacity() + 32)
                        .sum::<usize>()
            })
            .sum()
    }
}

fn distinct(tokens: &[AnalysedToken]) -> Vec<&AnalysedToken> {
    let mut seen: Vec<&AnalysedToken> = Vec::with_capacity(tokens.len());
    for token in tokens {
        if !seen.iter().any(|other| other.folded == token.folded) {
            seen.push(token);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::analyse;

    #[test]
    fn counts_follow_adds_and_removes() {
        let mut vocabulary = TitleVocabulary::new();
        let first = analyse("Robe d'été été");
        let second = analyse("Chapeau ETE");
        vocabulary.add_title(&first);
        vocabulary.add_title(&second);
        assert_eq!(vocabulary.product_count("ete"), 2);
        assert_eq!(vocabulary.written_form("ete"), "été");
        vocabulary.remove_title(&first);
        assert_eq!(vocabulary.product_count("ete"), 1);
        assert_eq!(vocabulary.written_form("ete"), "ete");
        assert_eq!(vocabulary.product_count("robe"), 0);
        vocabulary.remove_title(&second);
        assert!(vocabulary.is_empty());
    }
}
