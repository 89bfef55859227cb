//! Text drift by a domain classifier, as Evidently's `text_content_drift` tests do it:
//! label reference texts 0 and current texts 1, shuffle and split them in halves, fit a
//! TF-IDF vectoriser (word tokens of two or more characters, lower case, English stop words
//! removed, terms in more than half the training documents dropped, sublinear tf, smoothed
//! idf, l2 rows) and a linear classifier on one half, and measure ROC AUC on the other.
//! Drift is an AUC above a fixed threshold (large references) or above the 95th percentile of
//! the AUCs of random scorers on the same held-out labels (small references).
//!
//! The classifier here is an l2-regularised logistic regression trained by accelerated
//! gradient descent; Evidently uses scikit-learn's `SGDClassifier` (modified Huber loss,
//! l1 penalty). Both are linear models on the same features, so the AUCs are close but not
//! identical.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{DriftError, Result};
use crate::rng::SplitMix64;

/// Seed of the train/test split and of the random-classifier baseline.
pub const TEXT_DRIFT_SEED: u64 = 42;
/// Number of random classifiers in the percentile baseline.
pub const RANDOM_BASELINE_ITERATIONS: usize = 1000;

/// How the domain classifier's ROC AUC is turned into a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum TextDriftMode {
    /// Drift when the AUC exceeds the `confidence` percentile of random classifiers' AUCs.
    Percentile { confidence: f64 },
    /// Drift when the AUC exceeds `threshold`.
    Absolute { threshold: f64 },
}

/// Outcome of the domain-classifier test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextDriftOutcome {
    /// ROC AUC of the domain classifier on the held-out half.
    pub roc_auc: f64,
    /// The value the AUC was compared with (fixed threshold or random-classifier percentile).
    pub decision_threshold: f64,
    pub drifted: bool,
    /// Terms that most point to the current data.
    pub typical_current_words: Vec<String>,
    /// Terms that most point to the reference data.
    pub typical_reference_words: Vec<String>,
}

/// Runs the domain-classifier drift test on two text samples.
pub fn domain_classifier_drift(
    reference: &[String],
    current: &[String],
    mode: TextDriftMode,
) -> Result<TextDriftOutcome> {
    if reference.len() < 2 || current.len() < 2 {
        return Err(DriftError::InvalidInput(format!(
            "text drift needs at least two texts on each side (reference {}, current {})",
            reference.len(),
            current.len()
        )));
    }
    let mut documents: Vec<(&str, bool)> = reference
        .iter()
        .map(|text| (text.as_str(), false))
        .chain(current.iter().map(|text| (text.as_str(), true)))
        .collect();
    let mut rng = SplitMix64::new(TEXT_DRIFT_SEED);
    rng.shuffle(&mut documents);
    let test_size = documents.len().div_ceil(2);
    let (test, train) = documents.split_at(test_size);
    let test_labels: Vec<bool> = test.iter().map(|(_, label)| *label).collect();
    let train_labels: Vec<bool> = train.iter().map(|(_, label)| *label).collect();
    if !test_labels.iter().any(|l| *l) || test_labels.iter().all(|l| *l) {
        return Err(DriftError::InvalidInput(
            "the held-out half of the text data holds only one dataset; more texts are needed"
                .into(),
        ));
    }

    let vectoriser = TfidfVectoriser::fit(train.iter().map(|(text, _)| *text), 0.5);
    let train_rows: Vec<SparseRow> = train.iter().map(|(t, _)| vectoriser.transform(t)).collect();
    let test_rows: Vec<SparseRow> = test.iter().map(|(t, _)| vectoriser.transform(t)).collect();
    let model = LogisticRegression::fit(&train_rows, &train_labels, vectoriser.len(), 1e-4, 300);
    let scores: Vec<f64> = test_rows.iter().map(|row| model.decision(row)).collect();
    let roc_auc = roc_auc(&test_labels, &scores)?;

    let decision_threshold = match mode {
        TextDriftMode::Absolute { threshold } => threshold,
        TextDriftMode::Percentile { confidence } => {
            random_classifier_percentile(&test_labels, confidence, RANDOM_BASELINE_ITERATIONS)?
        }
    };
    let (typical_current_words, typical_reference_words) = model.typical_terms(&vectoriser, 10);
    Ok(TextDriftOutcome {
        roc_auc,
        decision_threshold,
        drifted: roc_auc > decision_threshold,
        typical_current_words,
        typical_reference_words,
    })
}

/// Common English function words, removed before vectorising (as `stop_words="english"`).
const ENGLISH_STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "almost",
    "also",
    "am",
    "among",
    "an",
    "and",
    "another",
    "any",
    "are",
    "around",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "cannot",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "either",
    "else",
    "enough",
    "etc",
    "even",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "however",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "least",
    "less",
    "many",
    "may",
    "me",
    "might",
    "more",
    "most",
    "much",
    "must",
    "my",
    "myself",
    "neither",
    "never",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "often",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "others",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "per",
    "perhaps",
    "rather",
    "same",
    "several",
    "she",
    "should",
    "since",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "though",
    "through",
    "thus",
    "to",
    "too",
    "under",
    "until",
    "up",
    "upon",
    "us",
    "very",
    "via",
    "was",
    "we",
    "well",
    "were",
    "what",
    "whatever",
    "when",
    "where",
    "whether",
    "which",
    "while",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "within",
    "without",
    "would",
    "yet",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Lower-cased word tokens of at least two letters, digits or underscores.
pub fn word_tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|token| token.chars().count() >= 2)
        .map(str::to_owned)
        .collect()
}

/// A sparse document vector: (term index, weight), sorted by index.
pub type SparseRow = Vec<(u32, f64)>;

/// TF-IDF with sublinear tf, smoothed idf and l2-normalised rows.
#[derive(Debug, Clone)]
pub struct TfidfVectoriser {
    vocabulary: HashMap<String, u32>,
    terms: Vec<String>,
    inverse_document_frequency: Vec<f64>,
}

impl TfidfVectoriser {
    /// Learns the vocabulary and idf weights; terms found in more than `max_document_share`
    /// of the documents and English stop words are left out.
    pub fn fit<'a>(documents: impl Iterator<Item = &'a str>, max_document_share: f64) -> Self {
        let stop: std::collections::HashSet<&str> = ENGLISH_STOP_WORDS.iter().copied().collect();
        let mut document_frequency: HashMap<String, usize> = HashMap::new();
        let mut document_count = 0usize;
        for document in documents {
            document_count += 1;
            let mut tokens = word_tokens(document);
            tokens.sort();
            tokens.dedup();
            for token in tokens {
                if !stop.contains(token.as_str()) {
                    *document_frequency.entry(token).or_default() += 1;
                }
            }
        }
        let max_count = max_document_share * document_count as f64;
        let mut kept: Vec<(String, usize)> = document_frequency
            .into_iter()
            .filter(|(_, frequency)| (*frequency as f64) <= max_count)
            .collect();
        kept.sort();
        let n = document_count as f64;
        let mut vocabulary = HashMap::with_capacity(kept.len());
        let mut terms = Vec::with_capacity(kept.len());
        let mut inverse_document_frequency = Vec::with_capacity(kept.len());
        for (index, (term, frequency)) in kept.into_iter().enumerate() {
            vocabulary.insert(term.clone(), index as u32);
            terms.push(term);
            inverse_document_frequency.push(((1.0 + n) / (1.0 + frequency as f64)).ln() + 1.0);
        }
        Self {
            vocabulary,
            terms,
            inverse_document_frequency,
        }
    }

    /// Number of terms in the vocabulary.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether no term survived.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The term behind an index.
    pub fn term(&self, index: usize) -> Option<&str> {
        self.terms.get(index).map(String::as_str)
    }

    /// Vectorises one document.
    pub fn transform(&self, document: &str) -> SparseRow {
        let mut counts: HashMap<u32, f64> = HashMap::new();
        for token in word_tokens(document) {
            if let Some(&index) = self.vocabulary.get(&token) {
                *counts.entry(index).or_default() += 1.0;
            }
        }
        let mut row: SparseRow = counts
            .into_iter()
            .map(|(index, count)| {
                (
                    index,
                    (1.0 + count.ln()) * self.inverse_document_frequency[index as usize],
                )
            })
            .collect();
        row.sort_by_key(|(index, _)| *index);
        let norm = row.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (_, weight) in &mut row {
                *weight /= norm;
            }
        }
        row
    }
}

/// Binary logistic regression with an unpenalised intercept.
#[derive(Debug, Clone)]
pub struct LogisticRegression {
    weights: Vec<f64>,
    intercept: f64,
}

impl LogisticRegression {
    /// Minimises mean log-loss + (l2 / 2)·|w|² by Nesterov-accelerated gradient descent.
    /// Rows are l2-normalised, so a step of 1 / (0.25 + l2) is always stable.
    pub fn fit(
        rows: &[SparseRow],
        labels: &[bool],
        dimension: usize,
        l2: f64,
        iterations: usize,
    ) -> Self {
        let n = rows.len().max(1) as f64;
        let step = 1.0 / (0.25 + l2);
        let mut weights = vec![0.0; dimension];
        let mut intercept = 0.0;
        let mut previous_weights = weights.clone();
        let mut previous_intercept = intercept;
        let mut gradient = vec![0.0; dimension];
        for iteration in 0..iterations {
            let momentum = iteration as f64 / (iteration as f64 + 3.0);
            let look_weights: Vec<f64> = weights
                .iter()
                .zip(&previous_weights)
                .map(|(w, p)| w + momentum * (w - p))
                .collect();
            let look_intercept = intercept + momentum * (intercept - previous_intercept);
            gradient.iter_mut().for_each(|g| *g = 0.0);
            let mut intercept_gradient = 0.0;
            for (row, &label) in rows.iter().zip(labels) {
                let margin = look_intercept
                    + row
                        .iter()
                        .map(|(i, v)| look_weights[*i as usize] * v)
                        .sum::<f64>();
                let residual = sigmoid(margin) - if label { 1.0 } else { 0.0 };
                for (index, value) in row {
                    gradient[*index as usize] += residual * value;
                }
                intercept_gradient += residual;
            }
            previous_weights = std::mem::take(&mut weights);
            previous_intercept = intercept;
            weights = look_weights
                .iter()
                .zip(&gradient)
                .map(|(w, g)| w - step * (g / n + l2 * w))
                .collect();
            intercept = look_intercept - step * intercept_gradient / n;
        }
        Self { weights, intercept }
    }

    /// The linear decision value (log-odds of "current").
    pub fn decision(&self, row: &SparseRow) -> f64 {
        self.intercept
            + row
                .iter()
                .map(|(index, value)| {
                    self.weights.get(*index as usize).copied().unwrap_or(0.0) * value
                })
                .sum::<f64>()
    }

    /// Probability that a row belongs to the current data.
    pub fn probability(&self, row: &SparseRow) -> f64 {
        sigmoid(self.decision(row))
    }

    /// The `count` terms with the largest positive and negative weights.
    fn typical_terms(
        &self,
        vectoriser: &TfidfVectoriser,
        count: usize,
    ) -> (Vec<String>, Vec<String>) {
        let mut order: Vec<usize> = (0..self.weights.len()).collect();
        order.sort_by(|a, b| self.weights[*b].total_cmp(&self.weights[*a]).then(a.cmp(b)));
        let name = |index: &usize| vectoriser.term(*index).unwrap_or_default().to_owned();
        let current = order
            .iter()
            .filter(|i| self.weights[**i] > 0.0)
            .take(count)
            .map(name)
            .collect();
        let reference = order
            .iter()
            .rev()
            .filter(|i| self.weights[**i] < 0.0)
            .take(count)
            .map(name)
            .collect();
        (current, reference)
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Area under the ROC curve (ties count one half), via the Mann-Whitney rank sum.
pub fn roc_auc(labels: &[bool], scores: &[f64]) -> Result<f64> {
    if labels.len() != scores.len() {
        return Err(DriftError::InvalidInput(format!(
            "{} labels but {} scores",
            labels.len(),
            scores.len()
        )));
    }
    let positives = labels.iter().filter(|l| **l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(DriftError::InvalidInput(
            "ROC AUC needs both classes among the labels".into(),
        ));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut rank_sum_positive = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let average_rank = (start + end + 1) as f64 / 2.0;
        for &index in &order[start..end] {
            if labels[index] {
                rank_sum_positive += average_rank;
            }
        }
        start = end;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Ok((rank_sum_positive - p * (p + 1.0) / 2.0) / (p * n))
}

/// The `confidence` percentile (linear interpolation) of the ROC AUCs of `iterations`
/// scorers that assign uniform random scores to the given labels.
pub fn random_classifier_percentile(
    labels: &[bool],
    confidence: f64,
    iterations: usize,
) -> Result<f64> {
    if !(0.0..=1.0).contains(&confidence) {
        return Err(DriftError::InvalidSetting {
            setting: "text drift confidence",
            reason: format!("{confidence} is not within [0, 1]"),
        });
    }
    let mut rng = SplitMix64::new(TEXT_DRIFT_SEED);
    let mut aucs = Vec::with_capacity(iterations.max(1));
    let mut scores = vec![0.0; labels.len()];
    for _ in 0..iterations.max(1) {
        for score in scores.iter_mut() {
            *score = rng.next_f64();
        }
        aucs.push(roc_auc(labels, &scores)?);
    }
    Ok(percentile(&mut aucs, confidence))
}

/// Linear-interpolation percentile (numpy's default), `fraction` in [0, 1].
pub fn percentile(values: &mut [f64], fraction: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let position = fraction.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let low = position.floor() as usize;
    let high = position.ceil() as usize;
    values[low] + (values[high] - values[low]) * (position - low as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_auc_matches_scikit_learn_with_ties() {
        // sklearn.metrics.roc_auc_score([0, 0, 1, 1, 1], [0.1, 0.4, 0.4, 0.8, 0.2]) == 0.75
        let labels = [false, false, true, true, true];
        let scores = [0.1, 0.4, 0.4, 0.8, 0.2];
        assert!((roc_auc(&labels, &scores).unwrap() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn tokens_are_lowercase_words_of_two_or_more_characters() {
        assert_eq!(word_tokens("Le Vélo, a b2 x!"), vec!["le", "vélo", "b2"]);
    }
}
