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

/// At most this many texts are embedded to fit the reference components.
const MAX_EMBEDDED_TEXTS: usize = 1_000;

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
            let texts: Vec<&str> = rows
                .iter()
                .take(MAX_EMBEDDED_TEXTS)
                .map(|row| row.text.as_str())
                .collect();
            let embeddings: Vec<Vec<f64>> = embedder
                .embed_passages(&texts)
                .into_iter()
                .map(|e| e.into_iter().map(f64::from).collect())
                .collect();
            Some((Pca::fit(&embeddings, PROFILE_COMPONENTS)?, embeddings))
        }
        _ => None,
    };
    let mut builder =
        ProfileBuilder::new(product_schema(PROFILE_COMPONENTS), DEFAULT_PROFILE_ROWS)?;
    for (index, row) in rows.iter().enumerate() {
        let embedding: Option<Vec<f32>> = pca
            .as_ref()
            .and_then(|(_, embeddings)| embeddings.get(index))
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
