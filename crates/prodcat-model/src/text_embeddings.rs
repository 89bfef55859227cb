//! The sentence embedding as companion features of the text branch: what part of a product's
//! text is embedded and how, the cache of those vectors in the object store (keyed by embedder
//! and text hash, so retraining and cross-validation embed each text once), and the choice of
//! the companion's scale by cross-validation on the training rows.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use prodcat_domain::CategoryCode;
use prodcat_embed::TextEmbedder;
use prodcat_metrics::classification_report;
use prodcat_storage::ObjectStorage;
use prodcat_text_model::{DenseCompanion, TextClassifier, TextClassifierOptions};

use crate::profile::first_characters;
use crate::ModelError;

/// Characters of the normalised product text (title first) that are embedded: the title and
/// the start of the description carry the category; more text does not help (measured: 160
/// and 400 characters score the same) and costs time.
pub const COMPANION_TEXT_CHARACTERS: usize = 160;

/// Scales of the companion features tried when training (0: the n-grams alone). Chosen by
/// cross-validation on the training rows, so the training can also decide to leave the
/// embedding out.
pub const COMPANION_SCALES: [f32; 4] = [0.0, 1.0, 2.0, 3.0];

/// Folds of the cross-validation that chooses the scale.
pub const COMPANION_SCALE_FOLDS: usize = 3;

/// The part of a normalised product text that is embedded.
pub fn companion_text(text: &str) -> &str {
    first_characters(text, COMPANION_TEXT_CHARACTERS)
}

/// The companion features of one normalised product text (embedded as an e5 query).
pub fn companion_features(embedder: &TextEmbedder, text: &str) -> Vec<f32> {
    embedder.embed_query(companion_text(text))
}

/// Companion vectors by normalised product text.
pub type CompanionVectors = HashMap<String, Vec<f32>>;

/// Embeds the distinct non-empty `texts`, reading vectors cached in the object store first and
/// caching the ones it computes. `progress` is called with the number of texts done.
pub async fn companion_vectors(
    objects: &ObjectStorage,
    embedder: &Arc<TextEmbedder>,
    texts: &[String],
    progress: &(dyn Fn(usize) + Sync),
) -> Result<CompanionVectors, ModelError> {
    let mut distinct: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|text| !text.is_empty())
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    let key = |text: &str| {
        let hash = prodcat_domain::sha256_hex(companion_text(text).as_bytes());
        format!(
            "text-embeddings/{}/{}/{hash}.f32",
            embedder.model_id(),
            &hash[..2]
        )
    };
    let mut vectors = CompanionVectors::new();
    let mut missing: Vec<&str> = Vec::new();
    for chunk in distinct.chunks(64) {
        let reads = chunk.iter().map(|text| {
            let objects = objects.clone();
            let key = key(text);
            async move { objects.get(&key).await.ok() }
        });
        for (text, found) in chunk.iter().zip(futures::future::join_all(reads).await) {
            match found.and_then(|bytes| decode_vector(&bytes, embedder.dimension())) {
                Some(vector) => {
                    vectors.insert(text.to_string(), vector);
                }
                None => missing.push(text),
            }
        }
    }
    let mut done = vectors.len();
    progress(done);
    for batch in missing.chunks(64) {
        let embedder = embedder.clone();
        let prefixes: Vec<String> = batch
            .iter()
            .map(|text| companion_text(text).to_string())
            .collect();
        let computed = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
            embedder.embed_queries(&refs)
        })
        .await
        .map_err(|error| ModelError::TrainingData(format!("embedding worker failed: {error}")))?;
        for (text, vector) in batch.iter().zip(computed) {
            objects.put(&key(text), encode_vector(&vector)).await?;
            vectors.insert(text.to_string(), vector);
        }
        done += batch.len();
        progress(done);
    }
    Ok(vectors)
}

fn encode_vector(vector: &[f32]) -> Bytes {
    Bytes::from(
        vector
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
}

fn decode_vector(bytes: &[u8], dimension: usize) -> Option<Vec<f32>> {
    if bytes.len() != dimension * 4 {
        return None;
    }
    let vector: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect();
    vector
        .iter()
        .all(|value| value.is_finite())
        .then_some(vector)
}

/// One candidate scale of the companion features and its cross-validated weighted F1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleScore {
    pub scale: f32,
    pub weighted_f1: f64,
}

/// The text options with the companion scale chosen by cross-validation (`fold_of`) on the
/// training texts: every scale of `scales` (0: no companion) is fitted on the other folds and
/// scored on each held-out fold; the best weighted F1 over all held-out predictions wins, ties
/// going to the smaller scale. Returns the options to train with and every candidate's score
/// (none when there is a single candidate, which is taken as it is).
pub fn choose_companion_scale(
    texts: &[&str],
    vectors: &[&[f32]],
    labels: &[CategoryCode],
    fold_of: &[usize],
    base: &TextClassifierOptions,
    companion: &DenseCompanion,
    scales: &[f32],
) -> Result<(TextClassifierOptions, Vec<ScaleScore>), ModelError> {
    if let [only] = scales {
        return Ok((with_scale(base, companion, *only), Vec::new()));
    }
    let mut categories = labels.to_vec();
    categories.sort_unstable();
    categories.dedup();
    let truth: Vec<usize> = labels
        .iter()
        .map(|label| categories.binary_search(label).unwrap_or(0))
        .collect();
    let folds = fold_of.iter().max().map_or(0, |last| last + 1);
    let mut scores = Vec::new();
    let mut best: Option<ScaleScore> = None;
    for &scale in scales {
        let options = with_scale(base, companion, scale);
        let mut predicted = vec![usize::MAX; texts.len()];
        for fold in 0..folds {
            let inside: Vec<usize> = (0..texts.len()).filter(|&i| fold_of[i] != fold).collect();
            let outside: Vec<usize> = (0..texts.len()).filter(|&i| fold_of[i] == fold).collect();
            if inside.is_empty() || outside.is_empty() {
                continue;
            }
            let pick_texts = |rows: &[usize]| rows.iter().map(|&i| texts[i]).collect::<Vec<_>>();
            let pick_vectors =
                |rows: &[usize]| rows.iter().map(|&i| vectors[i]).collect::<Vec<_>>();
            let inside_labels: Vec<CategoryCode> = inside.iter().map(|&i| labels[i]).collect();
            let model = if options.companion.is_some() {
                TextClassifier::fit_with_companion(
                    &pick_texts(&inside),
                    &pick_vectors(&inside),
                    &inside_labels,
                    &options,
                )?
            } else {
                TextClassifier::fit(&pick_texts(&inside), &inside_labels, &options)?
            };
            let held_out_vectors = pick_vectors(&outside);
            let matrix = model.decision_matrix_with_companion(
                &pick_texts(&outside),
                options
                    .companion
                    .as_ref()
                    .map(|_| held_out_vectors.as_slice()),
            )?;
            let k = model.categories().len();
            for (&row, values) in outside.iter().zip(matrix.chunks_exact(k)) {
                let class = crate::evaluation::argmax(values);
                predicted[row] = categories
                    .binary_search(&model.categories()[class])
                    .unwrap_or(0);
            }
        }
        let scored: Vec<usize> = (0..texts.len())
            .filter(|&i| predicted[i] != usize::MAX)
            .collect();
        let report = classification_report(
            &scored.iter().map(|&i| truth[i]).collect::<Vec<_>>(),
            &scored.iter().map(|&i| predicted[i]).collect::<Vec<_>>(),
            categories.len(),
        )?;
        let score = ScaleScore {
            scale,
            weighted_f1: report.weighted_f1,
        };
        if best.is_none_or(|best| score.weighted_f1 > best.weighted_f1) {
            best = Some(score);
        }
        scores.push(score);
    }
    let chosen = best.map_or(0.0, |best| best.scale);
    Ok((with_scale(base, companion, chosen), scores))
}

/// `base` with the companion at `scale` (none at 0).
fn with_scale(
    base: &TextClassifierOptions,
    companion: &DenseCompanion,
    scale: f32,
) -> TextClassifierOptions {
    let mut options = base.clone();
    options.companion = (scale > 0.0).then(|| DenseCompanion {
        scale,
        ..companion.clone()
    });
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_bytes_and_damage_is_a_miss() {
        let vector = vec![0.25f32, -1.5, 3.0e-6];
        assert_eq!(decode_vector(&encode_vector(&vector), 3).unwrap(), vector);
        assert!(decode_vector(&encode_vector(&vector), 4).is_none());
        assert!(decode_vector(&encode_vector(&[f32::NAN, 0.0, 0.0]), 3).is_none());
    }

    #[test]
    fn the_embedded_text_is_the_first_characters() {
        let long = "é".repeat(COMPANION_TEXT_CHARACTERS + 40);
        assert_eq!(
            companion_text(&long).chars().count(),
            COMPANION_TEXT_CHARACTERS
        );
        assert_eq!(companion_text("court"), "court");
    }
}
