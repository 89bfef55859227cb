//! Drift reference profiles: what the inputs and outputs of a model looked like at training time,
//! stored with the model version, and the same measurements for a served prediction.
//!
//! Stored as JSON `{ "profile": <drift profile>, "pca": <projection or null> }`: the principal
//! components of the text embeddings are fitted on the reference texts and reused to project
//! current texts, so both sides are measured on the same axes.

use prodcat_drift::features::{product_row, product_schema, ImageStats, Pca, ProductObservation};
use prodcat_drift::{Profile, ProfileBuilder, DEFAULT_PROFILE_ROWS};
use prodcat_embed::TextEmbedder;
use prodcat_text_model::{word_ngrams, TextClassifier};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Number of embedding principal components in a profile.
pub const PROFILE_COMPONENTS: usize = 3;

/// At most this many texts are embedded to fit the reference components: a stratified sample
/// (by predicted category) of the reference rows, so a profile costs seconds whatever the size
/// of the training data.
pub const MAX_EMBEDDED_TEXTS: usize = 256;

/// Only the start of each text is embedded for the profile (titles come first): the principal
/// components describe what the products are, and a bounded text keeps the cost per row
/// bounded. The current side of a drift check embeds the same prefix.
pub const EMBEDDED_TEXT_CHARACTERS: usize = 120;

/// The part of a product text that drift profiles embed (its first
/// [`EMBEDDED_TEXT_CHARACTERS`] characters).
pub fn embedding_text(text: &str) -> &str {
    first_characters(text, EMBEDDED_TEXT_CHARACTERS)
}

/// The first `count` characters of `text` (all of it when shorter).
pub(crate) fn first_characters(text: &str, count: usize) -> &str {
    match text.char_indices().nth(count) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// At most `limit` of `strata.len()` rows, chosen per stratum in proportion to its size (every
/// stratum keeps at least one row while the limit allows), evenly spaced within each stratum.
/// Deterministic; the positions come back in ascending order.
pub fn stratified_sample<K: Ord + Clone>(strata: &[K], limit: usize) -> Vec<usize> {
    if strata.len() <= limit {
        return (0..strata.len()).collect();
    }
    let mut groups: std::collections::BTreeMap<K, Vec<usize>> = Default::default();
    for (index, key) in strata.iter().enumerate() {
        groups.entry(key.clone()).or_default().push(index);
    }
    let total = strata.len();
    let mut quotas: Vec<usize> = groups
        .values()
        .map(|members| (members.len() * limit / total).max(1).min(members.len()))
        .collect();
    // Hand out what rounding left to the largest groups, take back any excess from them.
    let mut order: Vec<usize> = (0..quotas.len()).collect();
    let sizes: Vec<usize> = groups.values().map(Vec::len).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut assigned: usize = quotas.iter().sum();
    for &group in order.iter().cycle().take(order.len() * 4) {
        if assigned < limit && quotas[group] < sizes[group] {
            quotas[group] += 1;
            assigned += 1;
        } else if assigned > limit && quotas[group] > 1 {
            quotas[group] -= 1;
            assigned -= 1;
        }
    }
    let mut chosen: Vec<usize> = groups
        .values()
        .zip(&quotas)
        .flat_map(|(members, &quota)| {
            (0..quota).map(move |i| members[i * members.len() / quota.max(1)])
        })
        .collect();
    chosen.sort_unstable();
    chosen.truncate(limit.max(1));
    chosen
}

/// A stored reference profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredProfile {
    pub profile: Profile,
    pub pca: Option<Pca>,
}

/// Share of the text's word n-grams that the text model's vocabulary does not know.
pub fn out_of_vocabulary_share(classifier: &TextClassifier, text: &str) -> Option<f64> {
    let range = classifier.vectorizer().word().options().ngram_range;
    let grams = word_ngrams(text, range);
    if grams.is_empty() {
        return None;
    }
    let word = classifier.vectorizer().word();
    let unknown = grams
        .iter()
        .filter(|gram| word.column(gram).is_none())
        .count();
    Some(unknown as f64 / grams.len() as f64)
}

/// The parts of a model that an observation needs: its text branch (for the share of unknown
/// n-grams) and the principal components fitted on the reference embeddings.
#[derive(Clone, Copy, Default)]
pub struct ObservationBasis<'a> {
    pub classifier: Option<&'a TextClassifier>,
    pub pca: Option<&'a Pca>,
}

/// One product as the drift profile sees it: its text, whether it came without a description,
/// its image's statistics and the model's answer.
#[derive(Debug, Clone, Copy)]
pub struct ObservedProduct<'a> {
    pub text: &'a str,
    pub description_empty: bool,
    pub image: Option<ImageStats>,
    /// The predicted category code.
    pub predicted: Option<u16>,
    pub confidence: Option<f64>,
}

/// The observation for one product as the drift profile measures it; `embedding` is the text's
/// embedding, when it was computed.
pub fn observation_for(
    basis: ObservationBasis<'_>,
    embedding: Option<&[f32]>,
    product: ObservedProduct<'_>,
) -> ProductObservation {
    let embedding_components = match (basis.pca, embedding) {
        (Some(pca), Some(embedding)) => {
            let row: Vec<f64> = embedding.iter().map(|v| f64::from(*v)).collect();
            pca.project(&row).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    ProductObservation {
        text: product.text.to_string(),
        description_empty: product.description_empty,
        out_of_vocabulary_share: basis
            .classifier
            .and_then(|c| out_of_vocabulary_share(c, product.text)),
        image: product.image,
        embedding_components,
        predicted_class: product.predicted.map(|code| code.to_string()),
        confidence: product.confidence,
    }
}

/// One row of reference data.
pub struct ReferenceRow {
    pub text: String,
    pub description_empty: bool,
    pub image: Option<ImageStats>,
    pub predicted: Option<u16>,
    pub confidence: Option<f64>,
}

impl ReferenceRow {
    /// The row as an observed product.
    pub fn observed(&self) -> ObservedProduct<'_> {
        ObservedProduct {
            text: &self.text,
            description_empty: self.description_empty,
            image: self.image,
            predicted: self.predicted,
            confidence: self.confidence,
        }
    }
}

/// Builds the reference profile from held-out rows (with the model's own predictions on them).
pub fn reference_profile(
    classifier: Option<&TextClassifier>,
    embedder: Option<&TextEmbedder>,
    rows: &[ReferenceRow],
) -> Result<String, ModelError> {
    let pca = match embedder {
        Some(embedder) if rows.len() >= 2 => {
            let strata: Vec<Option<u16>> = rows.iter().map(|row| row.predicted).collect();
            let chosen = stratified_sample(&strata, MAX_EMBEDDED_TEXTS);
            let texts: Vec<&str> = chosen
                .iter()
                .map(|&index| embedding_text(&rows[index].text))
                .collect();
            let embeddings: Vec<Vec<f64>> = embedder
                .embed_passages(&texts)
                .into_iter()
                .map(|e| e.into_iter().map(f64::from).collect())
                .collect();
            let pca = Pca::fit(&embeddings, PROFILE_COMPONENTS)?;
            let by_row: std::collections::HashMap<usize, Vec<f64>> =
                chosen.into_iter().zip(embeddings).collect();
            Some((pca, by_row))
        }
        _ => None,
    };
    let mut builder =
        ProfileBuilder::new(product_schema(PROFILE_COMPONENTS), DEFAULT_PROFILE_ROWS)?;
    for (index, row) in rows.iter().enumerate() {
        let embedding: Option<Vec<f32>> = pca
            .as_ref()
            .and_then(|(_, embeddings)| embeddings.get(&index))
            .map(|e| e.iter().map(|v| *v as f32).collect());
        let basis = ObservationBasis {
            classifier,
            pca: pca.as_ref().map(|(pca, _)| pca),
        };
        let observation = observation_for(basis, embedding.as_deref(), row.observed());
        builder.push_row(product_row(&observation, PROFILE_COMPONENTS))?;
    }
    let stored = StoredProfile {
        profile: builder.build(),
        pca: pca.map(|(pca, _)| pca),
    };
    Ok(serde_json::to_string(&stored)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_sample_keeps_every_stratum_and_the_bound() {
        // 900 rows of class 1, 90 of class 2, 10 of class 3.
        let strata: Vec<u16> = (0..1000)
            .map(|i| match i % 100 {
                0..=89 => 1,
                90..=98 => 2,
                _ => 3,
            })
            .collect();
        let chosen = stratified_sample(&strata, 100);
        assert_eq!(chosen.len(), 100);
        assert!(chosen.windows(2).all(|w| w[0] < w[1]));
        let count = |class: u16| chosen.iter().filter(|&&i| strata[i] == class).count();
        assert_eq!((count(1), count(2), count(3)), (90, 9, 1));
        assert_eq!(stratified_sample(&strata[..50], 100).len(), 50);
        // More strata than the bound: never more than the bound.
        let many: Vec<usize> = (0..500).collect();
        assert_eq!(stratified_sample(&many, 100).len(), 100);
    }

    #[test]
    fn embedding_text_is_a_bounded_prefix() {
        let long = "é".repeat(500);
        assert_eq!(
            embedding_text(&long).chars().count(),
            EMBEDDED_TEXT_CHARACTERS
        );
        assert_eq!(embedding_text("short"), "short");
    }
}
