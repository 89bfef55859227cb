//! The JSON shapes of the public API (camelCase fields), converted by hand from the library
//! types. The token endpoint's fields follow OAuth2 (RFC 6749), which names them in snake_case.

use std::collections::BTreeMap;

use prodcat_domain::CategoryCode;
use prodcat_model::ProductPrediction;
use prodcat_platform::Predicted;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorBody;
use prodcat_catalogue::Product;

/// Reads an optional whole number the way JSON Schema counts one: `7` and `7.0` alike (a
/// fraction, or a number out of the type's range, is refused).
fn whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let out_of_range = || D::Error::custom(format!("{number} is out of range"));
    if let Some(value) = number.as_i64() {
        return T::try_from(value).map(Some).map_err(|_| out_of_range());
    }
    if let Some(value) = number.as_u64() {
        return T::try_from(value).map(Some).map_err(|_| out_of_range());
    }
    match number.as_f64() {
        Some(value) if value.fract() == 0.0 && value.abs() < 9.0e15 => T::try_from(value as i64)
            .map(Some)
            .map_err(|_| out_of_range()),
        _ => Err(D::Error::custom(format!("{number} is not a whole number"))),
    }
}

/// A category with its name.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CategoryRef {
    /// Marketplace category code (`prdtypecode`), e.g. 2583.
    pub code: u16,
    pub name: String,
}

impl CategoryRef {
    pub fn of(category: CategoryCode) -> Self {
        Self {
            code: category.value(),
            name: category.name().to_string(),
        }
    }
}

/// A category and its calibrated probability.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CategoryScore {
    pub category_code: u16,
    pub category_name: String,
    pub probability: f32,
}

/// One product to classify. Give a designation, a description, an image, or several.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PredictRequest {
    /// The marketplace's product id, if the product has one (kept in the prediction log).
    #[serde(default, deserialize_with = "whole_number")]
    pub product_id: Option<i64>,
    /// The product's title.
    pub designation: Option<String>,
    /// The product's description (HTML is fine).
    pub description: Option<String>,
    /// The photo, JPEG or PNG, base64-encoded (a `data:image/...;base64,` prefix is accepted).
    pub image: Option<String>,
    /// Add the n-grams that pushed the text decision most and, when the photo was used, the
    /// regions of the photo the decision rested on (`photoRegions`: 16 more passes of the image
    /// network, so explained photo predictions take longer).
    pub explain: Option<bool>,
}

/// An n-gram's push towards the predicted category.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplanationTerm {
    pub term: String,
    /// `word` (word n-gram) or `char` (character n-gram).
    pub analyzer: String,
    pub contribution: f32,
}

/// The answer for one product.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictionBody {
    pub category_code: u16,
    pub category_name: String,
    /// Calibrated probability of the category.
    pub confidence: f32,
    /// `automatic` when the confidence reaches the model's threshold for the branches that
    /// answered, else `review` (a person should check).
    pub decision: String,
    pub threshold: f32,
    /// The five most probable categories.
    pub top: Vec<CategoryScore>,
    /// The branches that answered: `text`, `image`, or both.
    pub branches: Vec<String>,
    /// The text branch's calibrated probabilities, when it answered.
    pub text_probabilities: Option<Vec<CategoryScore>>,
    /// The image branch's calibrated probabilities, when it answered.
    pub image_probabilities: Option<Vec<CategoryScore>>,
    /// Weight of the image branch in the fused probabilities, when both answered.
    pub fusion_weight: Option<f32>,
    pub model_version: String,
    /// This prediction's id (`GET /v1/predictions/{id}` shows what answered, and how).
    pub prediction_id: Option<String>,
    /// Time the model took.
    pub model_microseconds: u64,
    /// Time the server took for this product, decoding included.
    pub elapsed_microseconds: u64,
    pub explanation: Option<Vec<ExplanationTerm>>,
    /// With `explain` and a photo the image branch used: the occlusion-sensitivity map of the
    /// photo for the predicted category.
    pub photo_regions: Option<PhotoRegionsBody>,
}

/// Which regions of the photo the image branch relied on. The photo is divided into `grid` x
/// `grid` cells over the square the network saw; each cell is hidden in turn and the fall of the
/// image branch's probability for `categoryCode` is recorded (negative: hiding the cell made the
/// category likelier).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhotoRegionsBody {
    pub category_code: u16,
    pub grid: usize,
    /// The decoded photo's width and height in pixels.
    pub image_width: u32,
    pub image_height: u32,
    /// The square the cells divide, in the photo's pixels; it reaches past the photo's edges
    /// where the network's input was padded.
    pub square_left: f64,
    pub square_top: f64,
    pub square_side: f64,
    /// The image branch's probability of the category with nothing hidden.
    pub probability: f32,
    /// Per cell, row by row: the fall of that probability when the cell is hidden.
    pub drops: Vec<f32>,
}

fn scores(categories: &[CategoryCode], probabilities: &[f32]) -> Vec<CategoryScore> {
    categories
        .iter()
        .zip(probabilities)
        .map(|(category, probability)| CategoryScore {
            category_code: category.value(),
            category_name: category.name().to_string(),
            probability: *probability,
        })
        .collect()
}

impl PredictionBody {
    /// The answer for a prediction made through the predictor.
    pub fn from_predicted(predicted: &Predicted, elapsed_microseconds: u64) -> Self {
        let mut body = Self::from_prediction(
            &predicted.prediction,
            &predicted.categories,
            elapsed_microseconds,
        );
        body.prediction_id = Some(predicted.prediction_id.clone());
        body
    }

    pub fn from_prediction(
        prediction: &ProductPrediction,
        categories: &[CategoryCode],
        elapsed_microseconds: u64,
    ) -> Self {
        Self {
            category_code: prediction.category.value(),
            category_name: prediction.category.name().to_string(),
            confidence: prediction.confidence,
            decision: if prediction.automatic {
                "automatic".to_string()
            } else {
                "review".to_string()
            },
            threshold: prediction.threshold,
            top: prediction
                .top
                .iter()
                .map(|scored| CategoryScore {
                    category_code: scored.category.value(),
                    category_name: scored.category.name().to_string(),
                    probability: scored.probability,
                })
                .collect(),
            branches: prediction
                .branches
                .iter()
                .map(|branch| branch.as_str().to_string())
                .collect(),
            text_probabilities: prediction
                .text_probabilities
                .as_ref()
                .map(|p| scores(categories, p)),
            image_probabilities: prediction
                .image_probabilities
                .as_ref()
                .map(|p| scores(categories, p)),
            fusion_weight: prediction.fusion_weight,
            model_version: prediction.model_version.to_string(),
            prediction_id: None,
            model_microseconds: prediction.elapsed_microseconds,
            elapsed_microseconds,
            explanation: prediction.explanation.as_ref().map(|explanation| {
                explanation
                    .terms
                    .iter()
                    .map(|term| ExplanationTerm {
                        term: term.term.clone(),
                        analyzer: match term.analyzer {
                            prodcat_text_model::Analyzer::Word => "word".to_string(),
                            prodcat_text_model::Analyzer::CharWordBounded => "char".to_string(),
                        },
                        contribution: term.contribution,
                    })
                    .collect()
            }),
            photo_regions: prediction
                .photo_regions
                .as_ref()
                .map(|regions| PhotoRegionsBody {
                    category_code: regions.category.value(),
                    grid: regions.grid,
                    image_width: regions.image_width,
                    image_height: regions.image_height,
                    square_left: regions.square_left,
                    square_top: regions.square_top,
                    square_side: regions.square_side,
                    probability: regions.probability,
                    drops: regions.drops.clone(),
                }),
        }
    }
}

/// Up to the configured maximum (1,000 by default) products at once.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchPredictRequest {
    pub items: Vec<PredictRequest>,
}

/// The answer for one product of a batch: a prediction or an error.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemResult {
    /// Position in the request.
    pub index: usize,
    pub prediction: Option<PredictionBody>,
    pub error: Option<ErrorBody>,
}

/// Answers of a batch, in request order.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchPredictResponse {
    pub results: Vec<BatchItemResult>,
    pub succeeded: usize,
    pub failed: usize,
    pub model_version: String,
    pub elapsed_microseconds: u64,
}

/// OAuth2 token request (form-encoded or JSON): `grant_type=password` with `username` and
/// `password` for people, `grant_type=client_credentials` with `client_id` and `client_secret`
/// (or HTTP Basic) for services.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `password` or `client_credentials`.
    #[schema(pattern = "^(password|client_credentials)$")]
    pub grant_type: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Accepted and ignored: the role decides what the token allows.
    pub scope: Option<String>,
}

/// OAuth2 token response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// The role the token carries.
    pub role: String,
}

/// A catalogue product.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductBody {
    pub product_id: i64,
    pub designation: String,
    pub description: String,
    /// sha256 of the stored image.
    pub image_hash: Option<String>,
    /// `pending` (waiting for a model), `classified` (automatic decision), `review` (waiting for
    /// a person), `reviewed` (a person decided).
    pub status: String,
    pub predicted_category: Option<CategoryRef>,
    pub confidence: Option<f64>,
    /// The decided category (automatic or reviewed).
    pub category: Option<CategoryRef>,
    pub model_version: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub created_by: String,
    pub view_count: i64,
    /// Incremented by every change; also the `ETag` of `GET /v1/products/{id}`, to send back
    /// in `If-Match` when changing the product.
    pub revision: i64,
    /// Failed attempts to classify it while pending, and the last error.
    pub classify_attempts: i64,
    pub classify_error: Option<String>,
}

impl ProductBody {
    pub fn of(product: &Product) -> Self {
        Self {
            product_id: product.id,
            designation: product.designation.clone(),
            description: product.description.clone(),
            image_hash: product.image_hash.clone(),
            status: product.status.as_str().to_string(),
            predicted_category: product.predicted_code.map(CategoryRef::of),
            confidence: product.confidence,
            category: product.category_code.map(CategoryRef::of),
            model_version: product.model_version.clone(),
            created_at_ms: product.created_at_ms,
            updated_at_ms: product.updated_at_ms,
            created_by: product.created_by.clone(),
            view_count: product.view_count,
            revision: product.revision,
            classify_attempts: product.classify_attempts,
            classify_error: product.classify_error.clone(),
        }
    }
}

/// A product to add (JSON; `multipart/form-data` with the same fields and an `image` file part
/// is accepted too). The image is required.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProductRequest {
    /// The marketplace's product id (a positive integer); generated when absent.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_number")]
    pub product_id: Option<i64>,
    pub designation: Option<String>,
    pub description: Option<String>,
    /// The photo, JPEG or PNG, base64-encoded.
    pub image: Option<String>,
}

/// Changes to a product; the product is classified again.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateProductRequest {
    pub designation: Option<String>,
    pub description: Option<String>,
    /// A new photo, base64-encoded.
    pub image: Option<String>,
}

/// The stored product and what the model said.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductResponse {
    pub product: ProductBody,
    /// The prediction made now; absent when no model could classify the product (it is then
    /// `pending` and classified as soon as a model is available).
    pub prediction: Option<PredictionBody>,
}

/// A page of products.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductPage {
    pub items: Vec<ProductBody>,
    pub page: i64,
    pub page_size: i64,
    pub total: i64,
}

/// A reviewer's decision on a product.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewRequest {
    /// `accept` (the predicted category is right) or `correct` (give `category`).
    pub decision: String,
    /// The right category code: required with `correct`, absent with `accept`.
    #[serde(default, deserialize_with = "whole_number")]
    pub category: Option<u16>,
}

/// A classification job accepted.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobAccepted {
    pub job_id: String,
    pub status: String,
    pub item_count: i64,
    /// False when the idempotency key named an existing job.
    pub created: bool,
    /// Where to follow it.
    pub status_url: String,
}

/// One line of a JSON-lines upload.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobItemRequest {
    pub designation: Option<String>,
    pub description: Option<String>,
    /// The photo, base64-encoded.
    pub image: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    pub product_id: Option<i64>,
}

/// The classification of a job item.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobItemResultBody {
    pub category_code: u16,
    pub category_name: String,
    pub confidence: f32,
    pub decision: String,
    pub top: Vec<CategoryScore>,
    pub branches: Vec<String>,
    pub model_version: String,
}

/// A job item and its outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobItemBody {
    pub position: i64,
    /// `pending`, `leased` (in work), `done` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub product_id: Option<i64>,
    pub result: Option<JobItemResultBody>,
    pub error: Option<String>,
}

/// A job's progress and a page of its items.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobBody {
    pub job_id: String,
    pub kind: String,
    /// `queued`, `running` or `completed`.
    pub status: String,
    pub item_count: i64,
    pub done_count: i64,
    pub failed_count: i64,
    pub remaining_count: i64,
    /// Share of items finished, 0 to 1.
    pub progress: f64,
    pub created_by: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub items: Vec<JobItemBody>,
    /// Offset of the next page of items, when there is one.
    pub next_offset: Option<i64>,
}

/// A registered model version.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelVersionBody {
    pub id: String,
    pub created_at_ms: i64,
    pub dataset_version: Option<String>,
    pub aliases: Vec<String>,
    pub status: String,
    pub summary_metrics: BTreeMap<String, f64>,
    pub created_by: String,
    pub note: String,
    /// Whether this server serves it now.
    pub serving: bool,
}

/// Model versions, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelList {
    pub versions: Vec<ModelVersionBody>,
    pub serving: Option<String>,
}

/// A promotion request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromoteRequest {
    /// Why (recorded in the alias history).
    pub reason: Option<String>,
    /// Override the promotion policy (needs a reason; recorded).
    pub force: Option<bool>,
    /// The set both models are re-scored on, `<dataset version>:<split>` (default: the
    /// challenger's dataset version, test split).
    pub evaluation_set: Option<String>,
}

/// A rollback request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    /// Why (required; recorded in the alias history).
    pub reason: Option<String>,
}

/// An alias move.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AliasEventBody {
    pub alias: String,
    pub action: String,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub actor: String,
    pub reason: String,
    pub forced: bool,
    pub at_ms: i64,
}

impl AliasEventBody {
    pub fn of(event: &prodcat_registry::AliasEvent) -> Self {
        Self {
            alias: event.alias.clone(),
            action: event.action.as_str().to_string(),
            from_version: event.from_version.as_ref().map(|v| v.to_string()),
            to_version: event.to_version.as_ref().map(|v| v.to_string()),
            actor: event.actor.clone(),
            reason: event.reason.clone(),
            forced: event.forced,
            at_ms: event.at_ms,
        }
    }
}

/// What a promotion or rollback did, and the version served afterwards.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionResponse {
    /// `firstVersion`, `promoted`, `forced`, `refused` or `rolledBack`.
    pub outcome: String,
    pub moved: bool,
    /// The promotion policy's decision (scores on the same set, reasons), when one was taken.
    #[schema(value_type = Option<Object>)]
    pub decision: Option<serde_json::Value>,
    pub event: Option<AliasEventBody>,
    pub serving: Option<String>,
}

/// Liveness.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthBody {
    pub status: String,
    pub uptime_seconds: u64,
}

/// Readiness: a model is loaded and the database answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadyBody {
    pub ready: bool,
    /// The version in service.
    pub model_version: Option<String>,
    /// `ok` or `unreachable`.
    pub database: String,
    /// The last version that failed to load (the previous one keeps serving).
    pub model_load_error: Option<String>,
}

/// An audited write.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryBody {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub client_address: String,
    pub status: i64,
}

/// Audit entries, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditList {
    pub entries: Vec<AuditEntryBody>,
}

/// One search result.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchHitBody {
    pub product_id: i64,
    /// The title, normalised (HTML and entities removed).
    pub designation: String,
    /// The decided category, else the predicted one; absent while not classified.
    pub category: Option<CategoryRef>,
    /// The ranking score: BM25 (keyword), cosine similarity (meaning) or reciprocal-rank
    /// fusion (hybrid).
    pub score: f32,
    /// `keyword`, `meaning` or `both`.
    pub matched_by: String,
    /// BM25 score when the words match.
    pub keyword_score: Option<f32>,
    /// Cosine similarity to the query when close in meaning.
    pub meaning_similarity: Option<f32>,
}

impl SearchHitBody {
    pub fn of(hit: &prodcat_search::SearchHit) -> Self {
        Self {
            product_id: hit.product_id,
            designation: hit.designation.clone(),
            category: hit.category.map(CategoryRef::of),
            score: hit.score,
            matched_by: hit.matched_by.as_str().to_string(),
            keyword_score: hit.keyword.map(|ranked| ranked.score),
            meaning_similarity: hit.meaning.map(|ranked| ranked.score),
        }
    }
}

/// "Did you mean ...?"
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuggestionBody {
    /// The corrected query.
    pub query: String,
    /// Products its words find.
    pub matches: usize,
}

/// A page of search results.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchBody {
    pub query: String,
    /// `keyword`, `meaning` or `hybrid` (hybrid becomes keyword when no embedding model is
    /// installed).
    pub mode: String,
    pub hits: Vec<SearchHitBody>,
    /// Products matching in all.
    pub total: usize,
    pub keyword_matches: usize,
    pub meaning_matches: usize,
    /// Spelling suggestions, when the words found (almost) nothing.
    pub did_you_mean: Vec<SuggestionBody>,
    /// When nothing matched: the products nearest in meaning anyway.
    pub nearest_by_meaning: Vec<SearchHitBody>,
    /// False while the index is still being built at start-up (results may be incomplete).
    pub index_complete: bool,
}

/// One similar product.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimilarProductBody {
    pub product_id: i64,
    pub designation: String,
    pub category: Option<CategoryRef>,
    /// `similar` (close by text and/or image), `popularInCategory` or `popularOverall` (the
    /// fallback when too few products are close).
    pub reason: String,
    /// Combined similarity (text and image, each rescaled above the level of unrelated
    /// products).
    pub similarity: Option<f32>,
    pub text_similarity: Option<f32>,
    pub image_similarity: Option<f32>,
    pub popularity: f64,
}

impl SimilarProductBody {
    pub fn of(similar: &prodcat_search::SimilarProduct) -> Self {
        Self {
            product_id: similar.product_id,
            designation: similar.designation.clone(),
            category: similar.category.map(CategoryRef::of),
            reason: similar.reason.as_str().to_string(),
            similarity: similar.similarity,
            text_similarity: similar.text_similarity,
            image_similarity: similar.image_similarity,
            popularity: similar.popularity,
        }
    }
}

/// Products similar to one product.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimilarBody {
    pub product_id: i64,
    pub items: Vec<SimilarProductBody>,
}

/// Starts a shadow or a canary of a version.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutRequest {
    /// Share of the live traffic, above 0 and at most 1 (default: 0.25 for a shadow, 0.1 for a
    /// canary).
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub share: Option<f64>,
    /// What keeps the same traffic on the same side: `product` (default) or `client`.
    #[schema(value_type = Option<String>, pattern = "^(product|client)$")]
    pub stickiness: Option<String>,
    pub reason: Option<String>,
    /// Canary guard rails: roll back when the error rate exceeds the champion's by more than
    /// this (default 0.02).
    #[schema(minimum = 0.0)]
    pub max_error_rate_increase: Option<f64>,
    /// ...or the p99 latency exceeds the champion's by more than this factor (default 0.5).
    #[schema(minimum = 0.0)]
    pub max_p99_increase: Option<f64>,
    /// ...or the weighted F1 on reviewed products falls below the champion's by more than this
    /// (default 0.03)...
    #[schema(minimum = 0.0)]
    pub max_f1_drop: Option<f64>,
    /// ...with at least this many reviewed products each (default 50).
    #[serde(default, deserialize_with = "whole_number")]
    pub min_labels: Option<usize>,
    /// Requests each side needs before the error and latency rails apply (default 50).
    #[serde(default, deserialize_with = "whole_number")]
    pub min_requests: Option<usize>,
}

/// A rollout in force.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutBody {
    /// `shadow` or `canary`.
    pub kind: String,
    pub version: String,
    pub share: f64,
    pub stickiness: String,
    #[schema(value_type = Object)]
    pub guard_rails: serde_json::Value,
    pub started_by: String,
    pub started_at_ms: i64,
    pub reason: String,
}

impl RolloutBody {
    pub fn of(rollout: &prodcat_registry::Rollout) -> Self {
        Self {
            kind: rollout.kind.as_str().to_string(),
            version: rollout.version.to_string(),
            share: rollout.share,
            stickiness: rollout.stickiness.as_str().to_string(),
            guard_rails: serde_json::to_value(rollout.guard).unwrap_or_default(),
            started_by: rollout.started_by.clone(),
            started_at_ms: rollout.started_at_ms,
            reason: rollout.reason.clone(),
        }
    }
}

/// The rollouts in force.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutList {
    pub rollouts: Vec<RolloutBody>,
}

/// One serving version's figures over the window.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServingFiguresBody {
    pub model_version: String,
    /// `champion`, `canary` or `shadow`.
    pub role: String,
    pub requests: usize,
    pub errors: i64,
    pub error_rate: f64,
    /// Share of paired requests on which it chose the champion's category (shadows).
    pub agreement: Option<f64>,
    pub paired: usize,
    pub mean_confidence: Option<f64>,
    /// 25 %, 50 % and 75 % quantiles of the confidence.
    pub confidence_quartiles: Option<Vec<f64>>,
    pub automatic_share: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Reviewed products among its answers.
    pub labelled: usize,
    pub weighted_f1: Option<f64>,
    /// 95 % bootstrap interval of the weighted F1.
    pub weighted_f1_interval: Option<Vec<f64>>,
}

/// The live comparison of the versions serving traffic.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveBody {
    pub since_ms: i64,
    pub until_ms: i64,
    pub versions: Vec<ServingFiguresBody>,
    pub rollouts: Vec<RolloutBody>,
}

impl LiveBody {
    pub fn of(
        comparison: &prodcat_platform::live::LiveComparison,
        rollouts: &[prodcat_registry::Rollout],
    ) -> Self {
        Self {
            since_ms: comparison.since_ms,
            until_ms: comparison.until_ms,
            versions: comparison
                .versions
                .iter()
                .map(|figures| ServingFiguresBody {
                    model_version: figures.model_version.clone(),
                    role: figures.role.clone(),
                    requests: figures.requests,
                    errors: figures.errors,
                    error_rate: figures.error_rate,
                    agreement: figures.agreement,
                    paired: figures.paired,
                    mean_confidence: figures.mean_confidence,
                    confidence_quartiles: figures.confidence_quartiles.map(|q| q.to_vec()),
                    automatic_share: figures.automatic_share,
                    latency_p50_ms: figures.latency_p50_ms,
                    latency_p99_ms: figures.latency_p99_ms,
                    labelled: figures.labelled,
                    weighted_f1: figures.weighted_f1,
                    weighted_f1_interval: figures.weighted_f1_interval.map(|i| i.to_vec()),
                })
                .collect(),
            rollouts: rollouts.iter().map(RolloutBody::of).collect(),
        }
    }
}

/// Which version each alias named at a time.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AliasesAtBody {
    pub at_ms: i64,
    pub champion: Option<String>,
    pub canary: Option<String>,
    pub shadow: Option<String>,
}

/// The image profile a prediction was made on.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageProfileBody {
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub mean_brightness: Option<f64>,
    pub white_border_ratio: Option<f64>,
}

/// What answered a prediction, on what, and how.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictionRecordBody {
    pub prediction_id: String,
    pub at_ms: i64,
    pub model_version: String,
    /// `champion`, `canary` or `shadow`.
    pub serving_role: String,
    /// `predict`, `batch`, `job`, `product` or `simulation`.
    pub source: String,
    pub client: Option<String>,
    pub product_id: Option<i64>,
    /// The normalised text the model read (at most 2,000 characters are kept).
    pub text: String,
    pub description_empty: bool,
    pub image: Option<ImageProfileBody>,
    pub category: CategoryRef,
    pub confidence: f64,
    pub automatic: bool,
    pub branches: String,
    /// Each branch's top classes and the fusion weight.
    #[schema(value_type = Option<Object>)]
    pub branch_outputs: Option<serde_json::Value>,
    pub latency_us: i64,
    /// The reviewed category, once a reviewer decided.
    pub label: Option<CategoryRef>,
    /// The same request scored by the shadow version, when it was.
    #[schema(no_recursion)]
    pub shadow: Option<Box<PredictionRecordBody>>,
}
