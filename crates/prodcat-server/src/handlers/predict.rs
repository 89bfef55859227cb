//! `POST /v1/predict` and `POST /v1/predict/batch`: classify products with the model in
//! service. No database call on this path: the prediction log row goes to the background
//! writer. Short text-only requests run on the request's task (tens of microseconds); images,
//! long texts and batches run on the bounded blocking pool.

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use prodcat_catalogue::PredictionSource;
use prodcat_platform::{LogMode, ProductToClassify, Requester};

use crate::api::{BatchItemResult, BatchPredictRequest, BatchPredictResponse, PredictionBody};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::handlers::{decode_base64_image, JsonBody, ProductPayload};
use crate::state::AppState;
use prodcat_catalogue::Permission;

fn check_has_input(payload: &ProductPayload) -> Result<(), ApiError> {
    let blank = |text: &Option<String>| text.as_deref().is_none_or(|t| t.trim().is_empty());
    if blank(&payload.designation) && blank(&payload.description) && payload.image.is_none() {
        return Err(ApiError::invalid(
            "nothing to classify: the designation is missing (give a designation, a \
             description or an image)",
        ));
    }
    Ok(())
}

fn to_classify(payload: ProductPayload) -> ProductToClassify {
    ProductToClassify {
        designation: payload.designation.unwrap_or_default(),
        description: payload.description.unwrap_or_default(),
        image: payload.image,
        explain: payload.explain,
    }
}

/// Classify one product.
#[utoipa::path(
    post,
    path = "/v1/predict",
    tag = "prediction",
    request_body(content = crate::api::PredictRequest, description = "JSON, or multipart/form-data with the same fields and an `image` file part"),
    responses(
        (status = 200, description = "The category, top 5, per-branch probabilities, decision", body = PredictionBody),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Role may not predict", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Nothing to classify, wrong types, bad image", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No model in service", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn predict(
    State(state): State<AppState>,
    caller: Caller,
    payload: ProductPayload,
) -> Result<Json<PredictionBody>, ApiError> {
    let started = Instant::now();
    caller.require(Permission::Predict)?;
    check_has_input(&payload)?;
    // A client's productId is not trusted to link the prediction to a stored product: only
    // the catalogue does that (a reviewer's decision labels only those predictions).
    let requester = Requester::new(PredictionSource::Predict)
        .client(caller.name.clone())
        .claiming(payload.product_id);
    let predicted = state
        .predictor
        .predict(to_classify(payload), &requester, LogMode::Background)
        .await?;
    Ok(Json(PredictionBody::from_predicted(
        &predicted,
        started.elapsed().as_micros() as u64,
    )))
}

fn item_error(error: ApiError) -> ErrorBody {
    ErrorBody {
        error: error.message,
        error_type: error.error_type.to_string(),
    }
}

/// Classify up to 1,000 products in one call; each item answers with a prediction or an error.
#[utoipa::path(
    post,
    path = "/v1/predict/batch",
    tag = "prediction",
    request_body = BatchPredictRequest,
    responses(
        (status = 200, description = "One result per item, in order", body = BatchPredictResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Role may not predict", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Too many items, wrong types", body = ErrorBody),
        (status = 503, description = "No model in service", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn predict_batch(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<BatchPredictRequest>,
) -> Result<Json<BatchPredictResponse>, ApiError> {
    let started = Instant::now();
    caller.require(Permission::Predict)?;
    let limit = state.settings.max_batch_items;
    if request.items.is_empty() {
        return Err(ApiError::invalid("the batch has no items"));
    }
    if request.items.len() > limit {
        return Err(ApiError::invalid(format!(
            "the batch has {} items; at most {limit} are accepted in one call (use POST \
             /v1/jobs/classify for more)",
            request.items.len()
        )));
    }
    let model = state.predictor.served()?;
    // Decode and check every item first; items with a problem answer with their error.
    let mut prepared: Vec<Result<ProductToClassify, ApiError>> =
        Vec::with_capacity(request.items.len());
    for item in request.items {
        prepared.push((|| {
            let payload = ProductPayload {
                product_id: None,
                designation: item.designation,
                description: item.description,
                image: item.image.as_deref().map(decode_base64_image).transpose()?,
                explain: item.explain.unwrap_or(false),
            };
            check_has_input(&payload)?;
            let product = to_classify(payload);
            state.predictor.check(&product)?;
            Ok(product)
        })());
    }
    let positions: Vec<usize> = (0..prepared.len())
        .filter(|index| prepared[*index].is_ok())
        .collect();
    let mut results: Vec<Option<Result<PredictionBody, ApiError>>> = Vec::new();
    let mut products = Vec::with_capacity(positions.len());
    for entry in prepared {
        match entry {
            Ok(product) => {
                products.push(product);
                results.push(None);
            }
            Err(error) => results.push(Some(Err(error))),
        }
    }
    let requester = Requester::new(PredictionSource::Batch).client(caller.name.clone());
    let outcomes = state
        .predictor
        .predict_batch_with(&model, products, &[requester], LogMode::Background)
        .await;
    for (position, outcome) in positions.into_iter().zip(outcomes) {
        results[position] = Some(match outcome {
            Ok(predicted) => Ok(PredictionBody::from_predicted(
                &predicted,
                predicted.prediction.elapsed_microseconds,
            )),
            Err(error) => Err(ApiError::from(error)),
        });
    }
    let (mut succeeded, mut failed) = (0, 0);
    let results = results
        .into_iter()
        .enumerate()
        .map(|(index, result)| {
            match result.unwrap_or_else(|| Err(ApiError::invalid("the item could not be prepared")))
            {
                Ok(prediction) => {
                    succeeded += 1;
                    BatchItemResult {
                        index,
                        prediction: Some(prediction),
                        error: None,
                    }
                }
                Err(error) => {
                    failed += 1;
                    BatchItemResult {
                        index,
                        prediction: None,
                        error: Some(item_error(error)),
                    }
                }
            }
        })
        .collect();
    Ok(Json(BatchPredictResponse {
        results,
        succeeded,
        failed,
        model_version: model.version.to_string(),
        elapsed_microseconds: started.elapsed().as_micros() as u64,
    }))
}
