//! Searching: keyword (BM25), by meaning (cosine over e5 embeddings), hybrid (reciprocal-rank
//! fusion of both lists), and the suggestions given when little or nothing matches ("did you
//! mean" from the title vocabulary, nearest products by meaning).

use std::collections::HashMap;

use prodcat_domain::normalize_text;

use crate::analysis::{self, analyse, is_stop_word, AnalysedToken};
use crate::catalogue::{category_tag, CatalogueSearch, State};
use crate::error::SearchError;
use crate::keyword::KeywordResults;
use crate::types::{
    Correction, MatchKind, RankedScore, SearchHit, SearchMode, SearchRequest, SearchResponse,
    SpellingSuggestion, MAX_OFFSET, MAX_PAGE_SIZE, MAX_QUERY_BYTES,
};
use crate::vectors::{QuantizedVector, ScoredRow};

/// One product's place in each list before fusion.
#[derive(Debug, Clone, Copy, Default)]
struct Ranks {
    keyword: Option<RankedScore>,
    meaning: Option<RankedScore>,
}

/// Reciprocal-rank fusion: `Σ 1 / (constant + rank)` over the lists a product appears in
/// (ranks start at 1). Returns product ids with their fused score, best first (ties: better
/// keyword rank, then smaller id).
pub fn reciprocal_rank_fusion(
    keyword: &[(i64, f32)],
    meaning: &[(i64, f32)],
    constant: f32,
) -> Vec<(i64, f32, Option<RankedScore>, Option<RankedScore>)> {
    let mut ranks: HashMap<i64, Ranks> = HashMap::new();
    for (index, (product_id, score)) in keyword.iter().enumerate() {
        ranks
            .entry(*product_id)
            .or_default()
            .keyword
            .get_or_insert(RankedScore {
                score: *score,
                rank: index + 1,
            });
    }
    for (index, (product_id, score)) in meaning.iter().enumerate() {
        ranks
            .entry(*product_id)
            .or_default()
            .meaning
            .get_or_insert(RankedScore {
                score: *score,
                rank: index + 1,
            });
    }
    let mut fused: Vec<(i64, f32, Option<RankedScore>, Option<RankedScore>)> = ranks
        .into_iter()
        .map(|(product_id, ranks)| {
            let score = [ranks.keyword, ranks.meaning]
                .iter()
                .flatten()
                .map(|ranked| 1.0 / (constant + ranked.rank as f32))
                .sum();
            (product_id, score, ranks.keyword, ranks.meaning)
        })
        .collect();
    fused.sort_by(|left, right| {
        right
            .1
            .total_cmp(&left.1)
            .then_with(|| {
                let left_rank = left.2.map_or(usize::MAX, |ranked| ranked.rank);
                let right_rank = right.2.map_or(usize::MAX, |ranked| ranked.rank);
                left_rank.cmp(&right_rank)
            })
            .then(left.0.cmp(&right.0))
    });
    fused
}

/// A validated search request: the normalised query, the category tag to filter on and the
/// query's embedding (for the modes by meaning).
struct PreparedSearch<'a> {
    request: &'a SearchRequest,
    query: String,
    tag: Option<u16>,
    vector: Option<QuantizedVector>,
}

impl PreparedSearch<'_> {
    /// One past the last rank of the page asked for.
    fn page_end(&self) -> usize {
        self.request.offset + self.request.limit
    }
}

/// What search by meaning found for a hybrid search: every product's score (when the query
/// could be embedded) and how many reach the threshold.
struct MeaningScores {
    scores: Option<Vec<f32>>,
    total: usize,
}

/// Checks the request's bounds and returns its normalised, non-empty query.
fn checked_query(request: &SearchRequest) -> Result<String, SearchError> {
    if request.limit == 0 || request.limit > MAX_PAGE_SIZE {
        return Err(SearchError::InvalidRequest(format!(
            "limit is {}; it must be between 1 and {MAX_PAGE_SIZE}",
            request.limit
        )));
    }
    if request.offset > MAX_OFFSET {
        return Err(SearchError::InvalidRequest(format!(
            "offset is {}; it must be at most {MAX_OFFSET}",
            request.offset
        )));
    }
    if request.query.len() > MAX_QUERY_BYTES {
        return Err(SearchError::InvalidRequest(format!(
            "the query is {} bytes long; at most {MAX_QUERY_BYTES} are accepted",
            request.query.len()
        )));
    }
    let query = normalize_text(&request.query);
    if query.is_empty() {
        return Err(SearchError::InvalidRequest(
            "the query is empty".to_string(),
        ));
    }
    Ok(query)
}

impl CatalogueSearch {
    /// Searches the catalogue. Blocking (embedding the query takes about 4-15 ms, scanning
    /// 85,000 vectors a few ms, BM25 well under that); run it on a blocking thread.
    ///
    /// Keyword mode ranks by BM25; meaning mode by cosine similarity (products at or above
    /// [`crate::SearchOptions::minimum_meaning_similarity`]); hybrid fuses both lists (each
    /// [`crate::SearchOptions::fusion_depth`] deep) by reciprocal rank. When keyword search
    /// finds fewer than `suggest_below` products, spelling suggestions are added; when the first
    /// page is empty, the products nearest in meaning are added.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse, SearchError> {
        let query = checked_query(request)?;
        let mode = match (request.mode, self.embedder.is_some()) {
            (SearchMode::Meaning, false) => return Err(SearchError::SemanticUnavailable),
            (SearchMode::Hybrid, false) => SearchMode::Keyword,
            (mode, _) => mode,
        };
        let vector = match mode {
            SearchMode::Keyword => None,
            SearchMode::Meaning | SearchMode::Hybrid => self.query_vector(&query)?,
        };
        let search = PreparedSearch {
            request,
            tag: request
                .category
                .map(|category| category_tag(Some(category))),
            query,
            vector,
        };
        let mut response = SearchResponse {
            hits: Vec::new(),
            total: 0,
            keyword_matches: 0,
            meaning_matches: 0,
            mode,
            did_you_mean: Vec::new(),
            nearest_by_meaning: Vec::new(),
        };
        match mode {
            SearchMode::Keyword => self.keyword_page(&search, &mut response)?,
            SearchMode::Meaning => self.meaning_page(&search, &mut response)?,
            SearchMode::Hybrid => self.hybrid_page(&search, &mut response)?,
        }
        if response.keyword_matches < self.options.suggest_below {
            response.did_you_mean = self.spelling_suggestions(&search.query, request)?;
        }
        if response.hits.is_empty() && request.offset == 0 {
            response.nearest_by_meaning = self.nearest_by_meaning(&search)?;
        }
        Ok(response)
    }

    /// The page ranked by BM25.
    fn keyword_page(
        &self,
        search: &PreparedSearch<'_>,
        response: &mut SearchResponse,
    ) -> Result<(), SearchError> {
        let request = search.request;
        let results = self.keyword.search(
            &search.query,
            request.category,
            request.offset,
            request.limit,
        )?;
        response.keyword_matches = results.total;
        response.total = results.total;
        let state = self.read_state();
        response.hits = results
            .hits
            .iter()
            .enumerate()
            .filter_map(|(index, hit)| {
                let ranked = RankedScore {
                    score: hit.score,
                    rank: request.offset + index + 1,
                };
                hit_for(&state, hit.product_id, hit.score, Some(ranked), None)
            })
            .collect();
        Ok(())
    }

    /// The page ranked by cosine similarity (products at or above the threshold).
    fn meaning_page(
        &self,
        search: &PreparedSearch<'_>,
        response: &mut SearchResponse,
    ) -> Result<(), SearchError> {
        let request = search.request;
        response.keyword_matches = self
            .keyword
            .search(&search.query, request.category, 0, 0)?
            .total;
        let Some(vector) = &search.vector else {
            return Ok(());
        };
        let state = self.read_state();
        let (rows, matching) = state.text_vectors.nearest(
            vector,
            search.page_end(),
            self.options.minimum_meaning_similarity,
            search.tag,
            None,
        );
        response.meaning_matches = matching;
        response.total = matching;
        response.hits = rows
            .iter()
            .enumerate()
            .skip(request.offset)
            .filter_map(|(index, row)| {
                let ranked = RankedScore {
                    score: row.score,
                    rank: index + 1,
                };
                hit_for(&state, row.product_id, row.score, None, Some(ranked))
            })
            .collect();
        Ok(())
    }

    /// The page of both lists fused by reciprocal rank.
    fn hybrid_page(
        &self,
        search: &PreparedSearch<'_>,
        response: &mut SearchResponse,
    ) -> Result<(), SearchError> {
        let request = search.request;
        let depth = self.options.fusion_depth.max(search.page_end());
        let keyword = self
            .keyword
            .search(&search.query, request.category, 0, depth)?;
        response.keyword_matches = keyword.total;
        let state = self.read_state();
        let (meaning_rows, meaning) = match &search.vector {
            Some(vector) => {
                let scores = state.text_vectors.score_all(vector, search.tag);
                let (rows, matching) = state.text_vectors.best_of(
                    &scores,
                    depth,
                    self.options.minimum_meaning_similarity,
                    None,
                );
                let meaning = MeaningScores {
                    scores: Some(scores),
                    total: matching,
                };
                (rows, meaning)
            }
            None => (
                Vec::new(),
                MeaningScores {
                    scores: None,
                    total: 0,
                },
            ),
        };
        response.meaning_matches = meaning.total;
        response.total = self.hybrid_total(&state, search, &keyword, &meaning)?;
        let keyword_list: Vec<(i64, f32)> = keyword
            .hits
            .iter()
            .map(|hit| (hit.product_id, hit.score))
            .collect();
        let meaning_list: Vec<(i64, f32)> = meaning_rows
            .iter()
            .map(|row| (row.product_id, row.score))
            .collect();
        let fused =
            reciprocal_rank_fusion(&keyword_list, &meaning_list, self.options.fusion_constant);
        response.hits = fused
            .into_iter()
            .filter_map(|(product_id, score, keyword, meaning)| {
                hit_for(&state, product_id, score, keyword, meaning)
            })
            .skip(request.offset)
            .take(request.limit)
            .collect();
        Ok(())
    }

    /// The products nearest in meaning to the query, whatever their similarity (shown when a
    /// search finds nothing).
    fn nearest_by_meaning(
        &self,
        search: &PreparedSearch<'_>,
    ) -> Result<Vec<SearchHit>, SearchError> {
        let vector = match &search.vector {
            Some(vector) => Some(vector.clone()),
            None => self.query_vector(&search.query)?,
        };
        let Some(vector) = vector else {
            return Ok(Vec::new());
        };
        let state = self.read_state();
        let (rows, _) = state.text_vectors.nearest(
            &vector,
            search.request.limit,
            f32::NEG_INFINITY,
            search.tag,
            None,
        );
        Ok(meaning_hits(&state, &rows))
    }

    /// The query's embedding (`None` without an embedder).
    fn query_vector(&self, query: &str) -> Result<Option<QuantizedVector>, SearchError> {
        let Some(embedder) = &self.embedder else {
            return Ok(None);
        };
        let values = embedder.embed_query(query);
        if values.len() != embedder.dimension() {
            return Err(SearchError::EmbedderOutput {
                model_id: embedder.model_id().to_string(),
                detail: format!(
                    "a {}-value query vector instead of {}",
                    values.len(),
                    embedder.dimension()
                ),
            });
        }
        Ok(QuantizedVector::from_values(&values))
    }

    /// Products matching by keyword or by meaning: keyword total plus the products above the
    /// meaning threshold that do not match by keyword.
    fn hybrid_total(
        &self,
        state: &State,
        search: &PreparedSearch<'_>,
        keyword: &KeywordResults,
        meaning: &MeaningScores,
    ) -> Result<usize, SearchError> {
        if meaning.total == 0 {
            return Ok(keyword.total);
        }
        if keyword.total == 0 {
            return Ok(meaning.total);
        }
        let Some(scores) = &meaning.scores else {
            return Ok(keyword.total);
        };
        let keyword_ids = if keyword.hits.len() == keyword.total {
            keyword.hits.iter().map(|hit| hit.product_id).collect()
        } else {
            self.keyword
                .matching_ids(&search.query, search.request.category)?
        };
        let minimum = self.options.minimum_meaning_similarity;
        let overlap = keyword_ids
            .iter()
            .filter(|product_id| {
                state
                    .text_vectors
                    .row_of(**product_id)
                    .is_some_and(|row| scores[row] >= minimum)
            })
            .count();
        Ok(keyword.total + meaning.total - overlap.min(meaning.total))
    }

    /// "Did you mean" for `query`: each word unknown to the titles (or much rarer than a close
    /// title word) is replaced by the closest title words, most frequent first; only corrected
    /// queries that find products are kept.
    fn spelling_suggestions(
        &self,
        query: &str,
        request: &SearchRequest,
    ) -> Result<Vec<SpellingSuggestion>, SearchError> {
        let limit = self.options.max_spelling_suggestions;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut tokens = analyse(query);
        tokens.truncate(analysis::MAX_QUERY_TOKENS);
        let words = self.word_corrections(&tokens, limit)?;
        if words.iter().all(|word| word.alternatives.is_empty())
            && !words.iter().any(|word| word.hopeless)
        {
            return Ok(Vec::new());
        }
        // First suggestion: every word at its best replacement; then the alternatives of the
        // first corrected word.
        let mut choices: Vec<Vec<usize>> = vec![vec![0; tokens.len()]];
        if let Some(first) = words.iter().position(|word| !word.alternatives.is_empty()) {
            for alternative in 1..words[first].alternatives.len() {
                let mut choice = vec![0; tokens.len()];
                choice[first] = alternative;
                choices.push(choice);
            }
        }
        let mut suggestions: Vec<SpellingSuggestion> = Vec::new();
        for choice in choices {
            for drop_hopeless in [false, true] {
                let Some((corrected, corrections, dropped)) =
                    corrected_query(&tokens, &words, &choice, drop_hopeless)
                else {
                    continue;
                };
                if suggestions
                    .iter()
                    .any(|existing| existing.query == corrected)
                {
                    break;
                }
                let keyword_matches = self
                    .keyword
                    .search(&corrected, request.category, 0, 0)?
                    .total;
                if keyword_matches > 0 {
                    suggestions.push(SpellingSuggestion {
                        query: corrected,
                        corrections,
                        dropped,
                        keyword_matches,
                    });
                    break;
                }
            }
            if suggestions.len() == limit {
                break;
            }
        }
        Ok(suggestions)
    }

    /// For each query word, the candidate replacements (best first, at most `limit`) and
    /// whether it is hopeless (no title has it, and nothing close either).
    fn word_corrections(
        &self,
        tokens: &[AnalysedToken],
        limit: usize,
    ) -> Result<Vec<WordCorrections>, SearchError> {
        let state = self.read_state();
        let mut words = Vec::with_capacity(tokens.len());
        for token in tokens {
            let chars = token.folded.chars().count();
            let own_count = state.vocabulary.product_count(&token.folded);
            if chars < 3
                || is_stop_word(&token.folded)
                || token.folded.chars().all(|c| c.is_ascii_digit())
            {
                words.push(WordCorrections {
                    alternatives: Vec::new(),
                    hopeless: false,
                });
                continue;
            }
            let edits = analysis::allowed_edits(&token.folded).max(1);
            let mut candidates: Vec<(usize, u32, String)> = self
                .keyword
                .title_terms_within(&token.folded, edits)?
                .into_iter()
                .filter(|variant| variant.term != token.folded)
                .filter_map(|variant| {
                    let count = state.vocabulary.product_count(&variant.term);
                    // A known word is only corrected towards a far more common one.
                    let worth = if own_count == 0 {
                        count > 0
                    } else {
                        count >= own_count.saturating_mul(10).max(5)
                    };
                    worth.then_some((variant.edits, count, variant.term))
                })
                .collect();
            candidates.sort_by(|left, right| {
                left.0
                    .cmp(&right.0)
                    .then(right.1.cmp(&left.1))
                    .then_with(|| left.2.cmp(&right.2))
            });
            words.push(WordCorrections {
                hopeless: own_count == 0 && candidates.is_empty(),
                alternatives: candidates
                    .into_iter()
                    .take(limit)
                    .map(|(edits, _, term)| Correction {
                        from: token.surface.clone(),
                        to: state.vocabulary.written_form(&term),
                        edits,
                    })
                    .collect(),
            });
        }
        Ok(words)
    }
}

/// The replacements considered for one query word.
struct WordCorrections {
    /// Best first; possibly none.
    alternatives: Vec<Correction>,
    /// No title has the word, and nothing close either.
    hopeless: bool,
}

/// The query with each word replaced by its `choice`-th alternative (kept when it has none)
/// and, with `drop_hopeless`, hopeless words left out; with the corrections and the dropped
/// words. `None` when that changes nothing or leaves no word.
fn corrected_query(
    tokens: &[AnalysedToken],
    words: &[WordCorrections],
    choice: &[usize],
    drop_hopeless: bool,
) -> Option<(String, Vec<Correction>, Vec<String>)> {
    let mut kept: Vec<String> = Vec::with_capacity(tokens.len());
    let mut corrections: Vec<Correction> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        if drop_hopeless && words[index].hopeless {
            dropped.push(token.surface.clone());
            continue;
        }
        match words[index].alternatives.get(choice[index]) {
            Some(correction) => {
                kept.push(correction.to.clone());
                corrections.push(correction.clone());
            }
            None => kept.push(token.surface.clone()),
        }
    }
    if corrections.is_empty() && dropped.is_empty() || kept.is_empty() {
        return None;
    }
    Some((kept.join(" "), corrections, dropped))
}

fn hit_for(
    state: &State,
    product_id: i64,
    score: f32,
    keyword: Option<RankedScore>,
    meaning: Option<RankedScore>,
) -> Option<SearchHit> {
    // A product deleted between the keyword commit and this read is skipped.
    let entry = state.entries.get(&product_id)?;
    let matched_by = match (keyword.is_some(), meaning.is_some()) {
        (true, true) => MatchKind::Both,
        (false, true) => MatchKind::Meaning,
        _ => MatchKind::Keyword,
    };
    Some(SearchHit {
        product_id,
        designation: entry.designation.clone(),
        category: entry.category,
        score,
        matched_by,
        keyword,
        meaning,
    })
}

fn meaning_hits(state: &State, rows: &[ScoredRow]) -> Vec<SearchHit> {
    rows.iter()
        .enumerate()
        .filter_map(|(index, row)| {
            let ranked = RankedScore {
                score: row.score,
                rank: index + 1,
            };
            hit_for(state, row.product_id, row.score, None, Some(ranked))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_products_in_both_lists() {
        let keyword = [(1, 9.0), (2, 8.0), (3, 7.0)];
        let meaning = [(3, 0.9), (4, 0.85), (1, 0.8)];
        let fused = reciprocal_rank_fusion(&keyword, &meaning, 60.0);
        let order: Vec<i64> = fused.iter().map(|entry| entry.0).collect();
        assert_eq!(order, vec![1, 3, 2, 4]);
        let first = &fused[0];
        assert!((first.1 - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-6);
        assert_eq!(first.2.unwrap().rank, 1);
        assert_eq!(first.3.unwrap().rank, 3);
        assert!(fused[3].2.is_none());
    }
}
