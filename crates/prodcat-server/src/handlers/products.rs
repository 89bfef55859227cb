//! The catalogue routes: add a product (stored and classified at once; a low-confidence result
//! enters the review queue; without a usable model it is stored `pending` and classified later),
//! read, list, change, delete, its image, the review queue and reviewers' decisions.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prodcat_catalogue::products as catalogue;
use prodcat_catalogue::{
    Classification, ImageUpload, NewProduct, Permission, PredictionSource, ProductChanges,
    ProductFilter, ProductStatus, ReviewDecision,
};
use prodcat_domain::{CategoryCode, ContentHash};
use prodcat_platform::{LogMode, PredictError, Predicted, ProductToClassify, Requester};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::{PredictionBody, ProductBody, ProductPage, ProductResponse, ReviewRequest};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::handlers::{decode_base64_image, in_range, IdPath, JsonBody, NewProductPayload};
use crate::middleware::AuditNote;
use crate::state::AppState;

/// Decodes the whole image (a truncated or corrupt file is refused before anything is stored).
async fn checked_image(state: &AppState, bytes: Bytes) -> Result<ImageUpload, ApiError> {
    let (width, height) = state.predictor.check_image(bytes.clone()).await?;
    Ok(ImageUpload {
        hash: ContentHash::of(&bytes),
        width,
        height,
        bytes,
    })
}

/// Classifies a product with the model in service; `Ok(None)` when no model can classify it
/// now (none in service, or one that cannot look at the photo yet): the product is then
/// stored `pending` and classified later. Only a problem with the product itself is an error.
async fn try_classify(
    state: &AppState,
    designation: &str,
    description: &str,
    image: &Bytes,
    product_id: Option<i64>,
    explain: bool,
    caller: &Caller,
) -> Result<Option<Predicted>, ApiError> {
    let mut requester = Requester::new(PredictionSource::Product).client(caller.name.clone());
    requester.product_id = product_id;
    let outcome = state
        .predictor
        .predict(
            ProductToClassify {
                designation: designation.to_string(),
                description: description.to_string(),
                image: Some(image.clone()),
                explain,
            },
            &requester,
            LogMode::Caller,
        )
        .await;
    match outcome {
        Ok(predicted) => Ok(Some(predicted)),
        Err(error) if !error.kind().concerns_the_input() => {
            if !matches!(error, PredictError::NoModel) {
                tracing::warn!(%error, "the product can not be classified now; it is stored pending");
            }
            Ok(None)
        }
        Err(error) => Err(ApiError::from(error)),
    }
}

/// Logs the classification of a stored product (with its id) and turns it into the answer.
fn answer(
    state: &AppState,
    classified: Option<Predicted>,
    product_id: i64,
    started: Instant,
) -> Option<PredictionBody> {
    classified.map(|mut predicted| {
        predicted.log.product_id = Some(product_id);
        if let Some(writer) = state.predictor.log_writer() {
            writer.record(predicted.log.clone());
        }
        PredictionBody::from_predicted(&predicted, started.elapsed().as_micros() as u64)
    })
}

fn with_note(mut response: Response, detail: String) -> Response {
    response.extensions_mut().insert(AuditNote {
        actor: None,
        detail,
    });
    response
}

/// Add a product: stored, classified at once, queued for review when the model is unsure.
#[utoipa::path(
    post,
    path = "/v1/products",
    tag = "catalogue",
    request_body(content = crate::api::CreateProductRequest, description = "JSON with a base64 image, or multipart/form-data with an `image` file part"),
    responses(
        (status = 201, description = "Stored (and classified, unless no model is available: then pending)", body = ProductResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 403, description = "Role may not change products", body = ErrorBody),
        (status = 409, description = "The product id exists", body = ErrorBody),
        (status = 422, description = "Missing designation or image, bad image", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create_product(
    State(state): State<AppState>,
    caller: Caller,
    NewProductPayload(payload): NewProductPayload,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    caller.require(Permission::ProductsWrite)?;
    let designation = payload
        .designation
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| {
            ApiError::invalid("the designation (the product's title) is missing or empty")
        })?;
    let description = payload.description.unwrap_or_default();
    prodcat_model::InputLimits::default()
        .check(&prodcat_model::ProductInput {
            designation: &designation,
            description: &description,
            image: None,
        })
        .map_err(ApiError::from)?;
    let image = payload.image.ok_or_else(|| {
        ApiError::invalid(
            "the image is missing: a product needs its photo (JPEG or PNG), as base64 in \
             \"image\" or as an \"image\" file part of a multipart form",
        )
    })?;
    let image = checked_image(&state, image).await?;
    let classified = try_classify(
        &state,
        &designation,
        &description,
        &image.bytes,
        payload.product_id,
        payload.explain,
        &caller,
    )
    .await?;
    let product = catalogue::insert_product(
        &state.platform.database,
        &state.platform.objects,
        &NewProduct {
            id: payload.product_id,
            designation,
            description: description.clone(),
            image,
            created_by: caller.name.clone(),
        },
        classified
            .as_ref()
            .map(|predicted| Classification::of(&predicted.prediction))
            .as_ref(),
    )
    .await?;
    let prediction = answer(&state, classified, product.id, started);
    if product.status == ProductStatus::Pending {
        state.pending_wakeup.notify_one();
    }
    state.search.notify_change();
    let detail = format!("product {} {}", product.id, product.status.as_str());
    let response = (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/products/{}", product.id))],
        Json(ProductResponse {
            product: ProductBody::of(&product),
            prediction,
        }),
    )
        .into_response();
    Ok(with_note(response, detail))
}

/// A product by id.
#[utoipa::path(
    get,
    path = "/v1/products/{id}",
    tag = "catalogue",
    params(("id" = i64, Path, description = "Product id")),
    responses(
        (status = 200, body = ProductBody),
        (status = 404, description = "Unknown or deleted product", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get_product(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    caller.require(Permission::ProductsRead)?;
    let product = catalogue::get_product(&state.platform.database, id).await?;
    catalogue::count_view(&state.platform.database, id).await?;
    Ok((
        [(header::ETAG, etag(product.revision))],
        Json(ProductBody::of(&product)),
    )
        .into_response())
}

/// The ETag of a product revision.
fn etag(revision: i64) -> String {
    format!("\"{revision}\"")
}

/// The revision an `If-Match` header names: `"7"` or `W/"7"` (1 to 18 digits), as the
/// document states.
fn if_match(headers: &axum::http::HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    let digits = text
        .strip_prefix("W/")
        .unwrap_or(text)
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .filter(|digits| (1..=18).contains(&digits.len()))
        .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()));
    match digits.and_then(|digits| digits.parse().ok()) {
        Some(revision) => Ok(Some(revision)),
        None => Err(ApiError::invalid(format!(
            "If-Match {text:?} is not a product ETag (send back the ETag of GET \
             /v1/products/{{id}}, like \"7\")"
        ))),
    }
}

/// A product's photo.
#[utoipa::path(
    get,
    path = "/v1/products/{id}/image",
    tag = "catalogue",
    params(("id" = i64, Path, description = "Product id")),
    responses(
        (status = 200, description = "The stored photo", content_type = "image/jpeg"),
        (status = 404, description = "Unknown product", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get_product_image(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    caller.require(Permission::ProductsRead)?;
    let product = catalogue::get_product(&state.platform.database, id).await?;
    let Some(bytes) = catalogue::product_image(&state.platform.objects, &product).await? else {
        return Err(ApiError::not_found(format!("product {id} has no image")));
    };
    let kind = if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        "image/png"
    } else {
        "image/jpeg"
    };
    Ok(([(header::CONTENT_TYPE, kind)], bytes).into_response())
}

/// Query of the product listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ProductQuery {
    /// Category code (the decided one, else the predicted one).
    #[param(value_type = Option<u16>)]
    category: Option<String>,
    /// pending, classified, review or reviewed.
    #[param(value_type = Option<String>)]
    status: Option<String>,
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    #[serde(default, deserialize_with = "crate::handlers::whole::option")]
    page: Option<i64>,
    /// Items per page (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::handlers::whole::option")]
    page_size: Option<i64>,
}

/// Most products one page of the catalogue or the review queue holds.
const MAX_PAGE_SIZE: i64 = 500;

fn parse_category(text: &str) -> Result<CategoryCode, ApiError> {
    CategoryCode::parse(text).map_err(|error| ApiError::invalid(error.to_string()))
}

/// Products, newest first, filtered by category and status, one page at a time.
#[utoipa::path(
    get,
    path = "/v1/products",
    tag = "catalogue",
    params(ProductQuery),
    responses(
        (status = 200, body = ProductPage),
        (status = 422, description = "Unknown category or status", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list_products(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ProductQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ProductPage>, ApiError> {
    caller.require(Permission::ProductsRead)?;
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let filter = ProductFilter {
        category: query.category.as_deref().map(parse_category).transpose()?,
        status: query
            .status
            .as_deref()
            .map(ProductStatus::parse)
            .transpose()?,
        page: in_range("page", query.page, 1, 1, i64::MAX)?,
        page_size: in_range("pageSize", query.page_size, 50, 1, MAX_PAGE_SIZE)?,
    };
    let (products, total) = catalogue::list_products(&state.platform.database, &filter).await?;
    Ok(Json(ProductPage {
        items: products.iter().map(ProductBody::of).collect(),
        page: filter.page,
        page_size: filter.page_size,
        total,
    }))
}

/// Change a product's text or photo; it is classified again.
#[utoipa::path(
    patch,
    path = "/v1/products/{id}",
    tag = "catalogue",
    params(
        ("id" = i64, Path, description = "Product id"),
        ("If-Match" = Option<String>, Header, description = "The product's ETag (revision) the change is based on; a stale one is refused with 412", pattern = "^(W/)?\"[0-9]{1,18}\"$"),
    ),
    request_body = crate::api::UpdateProductRequest,
    responses(
        (status = 200, body = ProductResponse),
        (status = 404, description = "Unknown product", body = ErrorBody),
        (status = 409, description = "The product changed while this change was made", body = ErrorBody),
        (status = 412, description = "If-Match names a revision that is no longer current", body = ErrorBody),
        (status = 422, description = "Nothing to change, bad image", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn update_product(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    headers: axum::http::HeaderMap,
    JsonBody(request): JsonBody<crate::api::UpdateProductRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    caller.require(Permission::ProductsWrite)?;
    let if_match = if_match(&headers)?;
    if request.designation.is_none() && request.description.is_none() && request.image.is_none() {
        return Err(ApiError::invalid(
            "nothing to change: give designation, description or image",
        ));
    }
    if request
        .designation
        .as_deref()
        .is_some_and(|text| text.trim().is_empty())
    {
        return Err(ApiError::invalid("the designation can not be empty"));
    }
    let current = catalogue::get_product(&state.platform.database, id).await?;
    let image = match request.image.as_deref() {
        Some(text) => Some(checked_image(&state, decode_base64_image(text)?).await?),
        None => None,
    };
    let changes = ProductChanges {
        designation: request.designation,
        description: request.description,
        image,
        expected_revision: if_match,
    };
    let designation = changes
        .designation
        .clone()
        .unwrap_or(current.designation.clone());
    let description = changes
        .description
        .clone()
        .unwrap_or(current.description.clone());
    let image_bytes = match &changes.image {
        Some(image) => Some(image.bytes.clone()),
        None => catalogue::product_image(&state.platform.objects, &current).await?,
    };
    prodcat_model::InputLimits::default()
        .check(&prodcat_model::ProductInput {
            designation: &designation,
            description: &description,
            image: None,
        })
        .map_err(ApiError::from)?;
    let classified = match &image_bytes {
        Some(bytes) => {
            try_classify(
                &state,
                &designation,
                &description,
                bytes,
                Some(id),
                false,
                &caller,
            )
            .await?
        }
        None => None,
    };
    let product = match catalogue::update_product(
        &state.platform.database,
        &state.platform.objects,
        id,
        &changes,
        classified
            .as_ref()
            .map(|predicted| Classification::of(&predicted.prediction))
            .as_ref(),
    )
    .await
    {
        Ok(product) => product,
        Err(error @ prodcat_catalogue::CatalogueError::RevisionMismatch { .. })
            if if_match.is_some() =>
        {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                error.to_string(),
            ))
        }
        Err(error) => return Err(error.into()),
    };
    state.search.notify_change();
    let prediction = answer(&state, classified, product.id, started);
    let detail = format!("product {} {}", product.id, product.status.as_str());
    let etag_value = etag(product.revision);
    let mut response = with_note(
        Json(ProductResponse {
            product: ProductBody::of(&product),
            prediction,
        })
        .into_response(),
        detail,
    );
    if let Ok(value) = axum::http::HeaderValue::from_str(&etag_value) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// Delete a product.
#[utoipa::path(
    delete,
    path = "/v1/products/{id}",
    tag = "catalogue",
    params(("id" = i64, Path, description = "Product id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown product", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn delete_product(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    caller.require(Permission::ProductsWrite)?;
    catalogue::delete_product(&state.platform.database, id).await?;
    state.search.notify_change();
    Ok(with_note(
        StatusCode::NO_CONTENT.into_response(),
        format!("product {id} deleted"),
    ))
}

/// Query of the review queue.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct PageQuery {
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    #[serde(default, deserialize_with = "crate::handlers::whole::option")]
    page: Option<i64>,
    /// Items per page (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::handlers::whole::option")]
    page_size: Option<i64>,
}

/// The review queue: products the model was unsure about, lowest confidence first.
#[utoipa::path(
    get,
    path = "/v1/review",
    tag = "review",
    params(PageQuery),
    responses((status = 200, body = ProductPage)),
    security(("bearer" = [])),
)]
pub async fn review_queue(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ProductPage>, ApiError> {
    caller.require(Permission::Review)?;
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let page = in_range("page", query.page, 1, 1, i64::MAX)?;
    let page_size = in_range("pageSize", query.page_size, 50, 1, MAX_PAGE_SIZE)?;
    let (products, total) =
        catalogue::review_queue(&state.platform.database, page, page_size).await?;
    Ok(Json(ProductPage {
        items: products.iter().map(ProductBody::of).collect(),
        page,
        page_size,
        total,
    }))
}

/// Record a reviewer's decision: accept the predicted category or correct it. The label is
/// stored with who and when, and feeds retraining and monitoring.
#[utoipa::path(
    post,
    path = "/v1/review/{productId}",
    tag = "review",
    params(("productId" = i64, Path, description = "Product id")),
    request_body = ReviewRequest,
    responses(
        (status = 200, body = ProductBody),
        (status = 404, description = "Unknown product", body = ErrorBody),
        (status = 409, description = "Not classified yet", body = ErrorBody),
        (status = 422, description = "Unknown decision or category", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn review_decision(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    JsonBody(request): JsonBody<ReviewRequest>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Review)?;
    let decision = match request.decision.as_str() {
        "accept" => {
            if request.category.is_some() {
                return Err(ApiError::invalid(
                    "accept confirms the predicted category and takes no category; to choose \
                     another one use decision \"correct\"",
                ));
            }
            ReviewDecision::Accept
        }
        "correct" => {
            let Some(category) = request.category else {
                return Err(ApiError::invalid(
                    "decision \"correct\" needs the right category code in \"category\"",
                ));
            };
            ReviewDecision::Correct(
                CategoryCode::from_u16(category)
                    .map_err(|error| ApiError::invalid(error.to_string()))?,
            )
        }
        other => {
            return Err(ApiError::invalid(format!(
                "unknown decision {other:?}: expected \"accept\" or \"correct\""
            )))
        }
    };
    // Rows of this product still queued for the prediction log get their label too.
    if let Some(writer) = state.predictor.log_writer() {
        writer.flush().await;
    }
    let product =
        catalogue::record_review(&state.platform.database, id, decision, &caller.name).await?;
    state.search.notify_change();
    let detail = format!(
        "product {id} {} as {}",
        request.decision,
        product.category_code.map(|c| c.value()).unwrap_or_default()
    );
    Ok(with_note(
        Json(ProductBody::of(&product)).into_response(),
        detail,
    ))
}

/// Take back your own review decision (an undo): the product returns to the review queue and
/// its label is withdrawn, unless a dataset version already used it.
#[utoipa::path(
    delete,
    path = "/v1/review/{productId}",
    tag = "review",
    params(("productId" = i64, Path, description = "Product id")),
    responses(
        (status = 200, body = ProductBody),
        (status = 404, description = "Unknown product", body = ErrorBody),
        (status = 409, description = "No decision of yours to take back, or its label was used", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn undo_review_decision(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    caller.require(Permission::Review)?;
    let product = catalogue::undo_review(&state.platform.database, id, &caller.name).await?;
    state.search.notify_change();
    Ok(with_note(
        Json(ProductBody::of(&product)).into_response(),
        format!("product {id} review taken back"),
    ))
}
