//! Similar products: nearest neighbours of a product by text embedding and image features
//! (combined as described on [`crate::SimilarityOptions`]), then the most popular products of
//! its category, then the most popular overall, each result tagged with the rule that chose it.

use std::collections::{HashMap, HashSet};

use crate::catalogue::{CatalogueSearch, State};
use crate::error::SearchError;
use crate::options::SimilarityOptions;
use crate::types::{SimilarProduct, SimilarReason, MAX_PAGE_SIZE};

/// Cosine similarities of one candidate with the viewed product.
#[derive(Debug, Clone, Copy, Default)]
struct Similarities {
    text: Option<f32>,
    image: Option<f32>,
}

/// The combined rescaled similarity of the modalities present (see [`SimilarityOptions`]).
pub fn combined_similarity(
    options: &SimilarityOptions,
    text: Option<f32>,
    image: Option<f32>,
) -> Option<f32> {
    let rescale = |cosine: f32, floor: f32| (cosine - floor) / (1.0 - floor);
    match (text, image) {
        (Some(text), Some(image)) => {
            let total = options.text_weight + options.image_weight;
            Some(
                (options.text_weight * rescale(text, options.text_floor)
                    + options.image_weight * rescale(image, options.image_floor))
                    / total,
            )
        }
        (Some(text), None) => Some(rescale(text, options.text_floor)),
        (None, Some(image)) => Some(rescale(image, options.image_floor)),
        (None, None) => None,
    }
}

impl CatalogueSearch {
    /// Up to `k` products to show beside `product_id`: first those similar by text and image
    /// above the threshold (most similar first), then the most popular of its category, then
    /// the most popular overall; never the product itself. Blocking (two scans of the vectors,
    /// a few ms for 85,000 products); run it on a blocking thread.
    pub fn similar(&self, product_id: i64, k: usize) -> Result<Vec<SimilarProduct>, SearchError> {
        if k == 0 || k > MAX_PAGE_SIZE {
            return Err(SearchError::InvalidRequest(format!(
                "k is {k}; it must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        let options = self.options.similarity;
        let state = self.read_state();
        let entry = state
            .entries
            .get(&product_id)
            .ok_or(SearchError::UnknownProduct(product_id))?;
        let text_query = state.text_vectors.get(product_id);
        let image_query = state
            .image_vectors
            .as_ref()
            .and_then(|store| store.get(product_id));

        let similarities = |candidate: i64| Similarities {
            text: text_query
                .as_ref()
                .and_then(|query| state.text_vectors.cosine_with(candidate, query)),
            image: image_query.as_ref().and_then(|query| {
                state
                    .image_vectors
                    .as_ref()
                    .and_then(|store| store.cosine_with(candidate, query))
            }),
        };

        let pool = options.candidates_per_modality.max(k);
        let mut candidates: HashMap<i64, Similarities> = HashMap::new();
        if let Some(query) = &text_query {
            let (rows, _) =
                state
                    .text_vectors
                    .nearest(query, pool, f32::NEG_INFINITY, None, Some(product_id));
            for row in rows {
                candidates.entry(row.product_id).or_default().text = Some(row.score);
            }
        }
        if let (Some(query), Some(store)) = (&image_query, state.image_vectors.as_ref()) {
            let (rows, _) = store.nearest(query, pool, f32::NEG_INFINITY, None, Some(product_id));
            for row in rows {
                candidates.entry(row.product_id).or_default().image = Some(row.score);
            }
        }
        let mut similar: Vec<(i64, f32, Similarities)> = candidates
            .into_keys()
            .filter_map(|candidate| {
                let both = similarities(candidate);
                combined_similarity(&options, both.text, both.image)
                    .filter(|score| *score >= options.minimum_similarity)
                    .map(|score| (candidate, score, both))
            })
            .collect();
        similar.sort_by(|left, right| right.1.total_cmp(&left.1).then(left.0.cmp(&right.0)));
        similar.truncate(k);

        let mut chosen: HashSet<i64> = similar.iter().map(|(id, _, _)| *id).collect();
        chosen.insert(product_id);
        let mut output: Vec<SimilarProduct> = similar
            .into_iter()
            .filter_map(|(candidate, score, both)| {
                product(&state, candidate, SimilarReason::Similar, Some(score), both)
            })
            .collect();

        let fallbacks = [
            (SimilarReason::PopularInCategory, entry.category),
            (SimilarReason::PopularOverall, None),
        ];
        for (reason, category) in fallbacks {
            let wanted = k - output.len();
            if wanted == 0 {
                break;
            }
            if reason == SimilarReason::PopularInCategory && category.is_none() {
                continue;
            }
            for candidate in most_popular(&state, category, &chosen, wanted) {
                let both = similarities(candidate);
                let score = combined_similarity(&options, both.text, both.image);
                if let Some(item) = product(&state, candidate, reason, score, both) {
                    chosen.insert(candidate);
                    output.push(item);
                }
            }
        }
        Ok(output)
    }

    /// The `limit` most popular products (of `category` when given), most popular first
    /// (ties: smaller id). Useful on its own for a "popular products" list.
    pub fn most_popular(
        &self,
        category: Option<prodcat_domain::CategoryCode>,
        limit: usize,
    ) -> Vec<(i64, f64)> {
        let state = self.read_state();
        most_popular(&state, category, &HashSet::new(), limit)
            .into_iter()
            .filter_map(|id| state.entries.get(&id).map(|entry| (id, entry.popularity)))
            .collect()
    }
}

fn most_popular(
    state: &State,
    category: Option<prodcat_domain::CategoryCode>,
    excluded: &HashSet<i64>,
    limit: usize,
) -> Vec<i64> {
    if limit == 0 {
        return Vec::new();
    }
    let mut candidates: Vec<(f64, i64)> = state
        .entries
        .iter()
        .filter(|(id, entry)| {
            !excluded.contains(*id) && (category.is_none() || entry.category == category)
        })
        .map(|(id, entry)| (entry.popularity, *id))
        .collect();
    let order = |left: &(f64, i64), right: &(f64, i64)| {
        right.0.total_cmp(&left.0).then(left.1.cmp(&right.1))
    };
    if candidates.len() > limit {
        candidates.select_nth_unstable_by(limit - 1, order);
        candidates.truncate(limit);
    }
    candidates.sort_unstable_by(order);
    candidates.into_iter().map(|(_, id)| id).collect()
}

fn product(
    state: &State,
    product_id: i64,
    reason: SimilarReason,
    similarity: Option<f32>,
    both: Similarities,
) -> Option<SimilarProduct> {
    let entry = state.entries.get(&product_id)?;
    Some(SimilarProduct {
        product_id,
        designation: entry.designation.clone(),
        category: entry.category,
        reason,
        similarity,
        text_similarity: both.text,
        image_similarity: both.image,
        popularity: entry.popularity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_similarity_rescales_each_modality() {
        let options = SimilarityOptions {
            text_weight: 0.6,
            image_weight: 0.4,
            text_floor: 0.8,
            image_floor: 0.5,
            minimum_similarity: 0.5,
            candidates_per_modality: 10,
        };
        let text_only = combined_similarity(&options, Some(0.9), None).unwrap();
        assert!((text_only - 0.5).abs() < 1e-6);
        let image_only = combined_similarity(&options, None, Some(0.75)).unwrap();
        assert!((image_only - 0.5).abs() < 1e-6);
        let both = combined_similarity(&options, Some(1.0), Some(0.5)).unwrap();
        assert!((both - 0.6).abs() < 1e-6);
        assert!(combined_similarity(&options, None, None).is_none());
    }
}
