//! `GET /v1/search` (keyword, meaning or hybrid, with spelling suggestions) and
//! `GET /v1/products/{id}/similar` (nearest by text and image, popular products as fallback).

use axum::extract::{Query, State};
use axum::Json;
use prodcat_domain::CategoryCode;
use prodcat_search::{SearchError, SearchMode, SearchRequest};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::{SearchBody, SearchHitBody, SimilarBody, SimilarProductBody, SuggestionBody};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::handlers::{in_range, IdPath};
use crate::state::AppState;
use prodcat_catalogue::products as catalogue;
use prodcat_catalogue::Permission;

impl From<SearchError> for ApiError {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::InvalidRequest(_) | SearchError::SemanticUnavailable => {
                ApiError::invalid(error.to_string())
            }
            SearchError::UnknownProduct(_) => ApiError::not_found(error.to_string()),
            other => ApiError::internal(&other),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct SearchQuery {
    /// The words to look for (accents, case and small typos do not matter).
    #[param(required = true, max_length = 512)]
    q: Option<String>,
    /// Only this category (code).
    #[param(value_type = Option<u16>)]
    category: Option<String>,
    /// `hybrid` (default: words and meaning fused), `keyword` or `meaning`.
    mode: Option<String>,
    /// 1-based page (default 1; the results reachable end at the 10,000th).
    #[param(minimum = 1, maximum = 51)]
    #[serde(default, deserialize_with = "crate::handlers::whole::option")]
    page: Option<usize>,
    /// Results per page (default 20, at most 200).
    #[param(minimum = 1, maximum = 200)]
    #[serde(default, deserialize_with = "crate::handlers::whole::option")]
    page_size: Option<usize>,
}

/// Longest query, in characters.
const MAX_QUERY_CHARACTERS: usize = prodcat_search::MAX_QUERY_BYTES / 4;

/// The last page of search results that every page size reaches.
const MAX_SEARCH_PAGE: usize = prodcat_search::MAX_OFFSET / prodcat_search::MAX_PAGE_SIZE + 1;

/// Search the catalogue by words (BM25) and by meaning (multilingual text embeddings).
#[utoipa::path(
    get,
    path = "/v1/search",
    tag = "catalogue",
    params(SearchQuery),
    responses(
        (status = 200, body = SearchBody),
        (status = 422, description = "Missing query, unknown category or mode, page out of range", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchBody>, ApiError> {
    caller.require(Permission::Search)?;
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    // Characters, as the document counts them (512 of them are at most the 2,048 bytes the
    // index reads).
    if query
        .q
        .as_deref()
        .is_some_and(|q| q.chars().count() > MAX_QUERY_CHARACTERS)
    {
        return Err(ApiError::invalid(format!(
            "q has more than {MAX_QUERY_CHARACTERS} characters"
        )));
    }
    let text = query
        .q
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .ok_or_else(|| ApiError::invalid("give the words to look for in q, e.g. ?q=lampe"))?;
    let mode = match query.mode.as_deref() {
        None => SearchMode::Hybrid,
        Some("hybrid") => SearchMode::Hybrid,
        Some("keyword") => SearchMode::Keyword,
        Some("meaning") => SearchMode::Meaning,
        Some(name) => {
            return Err(ApiError::invalid(format!(
                "unknown search mode {name:?}: use hybrid, keyword or meaning"
            )))
        }
    };
    let page = in_range("page", query.page, 1, 1, MAX_SEARCH_PAGE)?;
    let page_size = in_range(
        "pageSize",
        query.page_size,
        20,
        1,
        prodcat_search::MAX_PAGE_SIZE,
    )?;
    if prodcat_domain::normalize_text(&text).is_empty() {
        // Markup or control characters only: no words, so nothing matches.
        return Ok(Json(SearchBody {
            query: text,
            mode: mode.as_str().to_string(),
            hits: Vec::new(),
            total: 0,
            keyword_matches: 0,
            meaning_matches: 0,
            did_you_mean: Vec::new(),
            nearest_by_meaning: Vec::new(),
            index_complete: state.search.is_built(),
        }));
    }
    let mut request = SearchRequest::new(text.clone())
        .with_mode(mode)
        .with_page((page - 1).saturating_mul(page_size), page_size);
    if let Some(category) = query.category.as_deref() {
        request = request.with_category(
            CategoryCode::parse(category).map_err(|error| ApiError::invalid(error.to_string()))?,
        );
    }
    let search = state.search.clone();
    let response = state
        .predictor
        .run_cpu(move || search.index().search(&request))
        .await??;
    Ok(Json(SearchBody {
        query: text,
        mode: response.mode.as_str().to_string(),
        hits: response.hits.iter().map(SearchHitBody::of).collect(),
        total: response.total,
        keyword_matches: response.keyword_matches,
        meaning_matches: response.meaning_matches,
        did_you_mean: response
            .did_you_mean
            .iter()
            .map(|suggestion| SuggestionBody {
                query: suggestion.query.clone(),
                matches: suggestion.keyword_matches,
            })
            .collect(),
        nearest_by_meaning: response
            .nearest_by_meaning
            .iter()
            .map(SearchHitBody::of)
            .collect(),
        index_complete: state.search.is_built(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SimilarQuery {
    /// How many products (default 10, at most 200).
    #[param(minimum = 1, maximum = 200)]
    #[serde(default, deserialize_with = "crate::handlers::whole::option")]
    k: Option<usize>,
}

/// Products similar to this one by text and image; popular products of its category (then
/// overall) complete the list when too few are close.
#[utoipa::path(
    get,
    path = "/v1/products/{id}/similar",
    tag = "catalogue",
    params(("id" = i64, Path, description = "Product id"), SimilarQuery),
    responses(
        (status = 200, body = SimilarBody),
        (status = 404, description = "Unknown product", body = ErrorBody),
        (status = 422, description = "k out of range", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn similar(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    query: Result<Query<SimilarQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SimilarBody>, ApiError> {
    caller.require(Permission::Search)?;
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let k = in_range("k", query.k, 10, 1, prodcat_search::MAX_PAGE_SIZE)?;
    // An unknown or deleted product is a 404 whatever the index holds.
    catalogue::get_product(&state.platform.database, id).await?;
    if !state.search.index().contains(id) {
        // Stored but not indexed yet (just added): index the change now.
        state.search.sync_changes(&state.platform).await?;
    }
    let search = state.search.clone();
    let items = state
        .predictor
        .run_cpu(move || search.index().similar(id, k))
        .await??;
    Ok(Json(SimilarBody {
        product_id: id,
        items: items.iter().map(SimilarProductBody::of).collect(),
    }))
}
