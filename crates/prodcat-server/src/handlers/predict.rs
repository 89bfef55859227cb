//! `POST /v1/predict` and `POST /v1/predict/batch`: classify products with the model in
//! service. No database call on this path: the prediction log row goes to the background
//! writer. Short text-only requests run on the request's task (tens of microseconds); images,
//! long texts and batches run on the bounded blocking pool.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use prodcat_jobs::{PredictionLogRow, PredictionSource};
use prodcat_model::{ModelError, ProductClassifier, ProductInput, ProductPrediction};

use crate::api::{BatchItemResult, BatchPredictRequest, BatchPredictResponse, PredictionBody};
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ErrorBody};
use crate::handlers::{decode_base64_image, run_cpu, served_model, JsonBody, ProductPayload};
use crate::state::AppState;

/// Checks an image's header against the pixel limit (cheap: nothing is decoded).
pub(crate) fn probe(image: &[u8], max_pixels: u64) -> Result<(), ApiError> {
    prodcat_vision::preprocess::probe_image(image, max_pixels)
        .map(|_| ())
        .map_err(ApiError::from)
}

/// Classifies one product on the current thread. When the model can not look at images, the
/// image is still decoded to make sure it is one.
pub(crate) fn classify(
    classifier: &ProductClassifier,
    designation: &str,
    description: &str,
    image: Option<&[u8]>,
    explain: bool,
    max_pixels: u64,
) -> Result<ProductPrediction, ModelError> {
    if let (Some(bytes), None) = (image, classifier.backbone()) {
        prodcat_vision::preprocess::decode_image(bytes, max_pixels)?;
    }
    classifier.predict(
        &ProductInput {
            designation,
            description,
            image,
        },
        explain,
    )
}

/// Counts and logs a served prediction (never waits).
pub(crate) fn record_prediction(
    state: &AppState,
    prediction: &ProductPrediction,
    source: PredictionSource,
    product_id: Option<i64>,
    description: &str,
) {
    metrics::counter!(
        "prodcat_predictions_total",
        "category" => prediction.category.value().to_string(),
        "source" => source.as_str()
    )
    .increment(1);
    metrics::histogram!("prodcat_prediction_confidence").record(f64::from(prediction.confidence));
    state.log.record(PredictionLogRow::from_prediction(
        prediction,
        source,
        product_id,
        description,
    ));
}

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
    let model = served_model(&state)?;
    let max_pixels = state.settings.max_image_pixels;
    if let Some(image) = &payload.image {
        probe(image, max_pixels)?;
    }
    let designation = payload.designation.clone().unwrap_or_default();
    let description = payload.description.clone().unwrap_or_default();
    let inline = payload.image.is_none()
        && designation.len() + description.len() <= state.settings.inline_text_bytes;
    let prediction = if inline {
        classify(
            &model.classifier,
            &designation,
            &description,
            None,
            payload.explain,
            max_pixels,
        )
    } else {
        let worker_model = model.clone();
        let image = payload.image.clone();
        let explain = payload.explain;
        let (designation, description) = (designation.clone(), description.clone());
        run_cpu(&state, move || {
            classify(
                &worker_model.classifier,
                &designation,
                &description,
                image.as_deref(),
                explain,
                max_pixels,
            )
        })
        .await?
    }?;
    record_prediction(
        &state,
        &prediction,
        PredictionSource::Predict,
        payload.product_id,
        &description,
    );
    Ok(Json(PredictionBody::from_prediction(
        &prediction,
        model.classifier.categories(),
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
    /// Designation, description, image and whether to explain, checked.
    type BatchItem = (String, String, Option<Bytes>, bool);
    let model = served_model(&state)?;
    let max_pixels = state.settings.max_image_pixels;
    // Decode and check every item first; items with a problem answer with their error.
    let mut prepared: Vec<Result<BatchItem, ApiError>> = Vec::with_capacity(request.items.len());
    for item in &request.items {
        prepared.push((|| {
            let image = item.image.as_deref().map(decode_base64_image).transpose()?;
            if let Some(image) = &image {
                probe(image, max_pixels)?;
            }
            let payload = ProductPayload {
                product_id: item.product_id,
                designation: item.designation.clone(),
                description: item.description.clone(),
                image: image.clone(),
                explain: false,
            };
            check_has_input(&payload)?;
            Ok((
                item.designation.clone().unwrap_or_default(),
                item.description.clone().unwrap_or_default(),
                image,
                item.explain.unwrap_or(false),
            ))
        })());
    }
    let shared = Arc::new(prepared);
    let work = shared.clone();
    let worker_model = model.clone();
    let outcomes: Vec<Option<Result<ProductPrediction, ModelError>>> = run_cpu(&state, move || {
        use rayon::prelude::*;
        work.par_iter()
            .map(|entry| {
                entry
                    .as_ref()
                    .ok()
                    .map(|(designation, description, image, explain)| {
                        classify(
                            &worker_model.classifier,
                            designation,
                            description,
                            image.as_deref(),
                            *explain,
                            max_pixels,
                        )
                    })
            })
            .collect()
    })
    .await?;
    let mut results = Vec::with_capacity(outcomes.len());
    let (mut succeeded, mut failed) = (0, 0);
    for (index, (entry, outcome)) in shared.iter().zip(outcomes).enumerate() {
        let result = match (entry, outcome) {
            (Err(error), _) => Err(error.clone()),
            (Ok(_), None) => Err(ApiError::invalid("the item could not be prepared")),
            (Ok(_), Some(Err(error))) => Err(ApiError::from(error)),
            (Ok((_, description, _, _)), Some(Ok(prediction))) => {
                record_prediction(
                    &state,
                    &prediction,
                    PredictionSource::Batch,
                    request.items[index].product_id,
                    description,
                );
                Ok(PredictionBody::from_prediction(
                    &prediction,
                    model.classifier.categories(),
                    prediction.elapsed_microseconds,
                ))
            }
        };
        match result {
            Ok(prediction) => {
                succeeded += 1;
                results.push(BatchItemResult {
                    index,
                    prediction: Some(prediction),
                    error: None,
                });
            }
            Err(error) => {
                failed += 1;
                results.push(BatchItemResult {
                    index,
                    prediction: None,
                    error: Some(item_error(error)),
                });
            }
        }
    }
    Ok(Json(BatchPredictResponse {
        results,
        succeeded,
        failed,
        model_version: model.version.to_string(),
        elapsed_microseconds: started.elapsed().as_micros() as u64,
    }))
}
