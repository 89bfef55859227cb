//! Route handlers, one module per area, and what they share: body extraction with clear errors
//! (JSON or multipart), base64 images checked before use, and the bounded pool for model work.

pub mod auth;
pub mod job_upload;
pub mod jobs;
pub mod models;
pub mod operations;
pub mod predict;
pub mod products;
pub mod rollouts;
pub mod search;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use base64::Engine;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body whose problems are answered clearly: malformed JSON is a 400 naming the line
/// and column, a wrong type or a missing field a 422 naming the field, a body over the limit a
/// 413.
pub struct JsonBody<T>(pub T);

pub(crate) fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large("the request body is larger than the limit of this route")
    } else {
        ApiError::new(
            rejection.status(),
            "bad_request",
            format!(
                "the request body could not be read: {}",
                rejection.body_text()
            ),
        )
    }
}

/// Parses JSON with the error classes above.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ApiError::invalid(format!(
            "the JSON body does not have the expected shape: {error}"
        )),
        serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof
        | serde_json::error::Category::Io => {
            ApiError::malformed_json(format!("the request body is not valid JSON: {error}"))
        }
    })
}

fn content_type(request: &Request) -> String {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let kind = content_type(&request);
        if !kind.is_empty() && !kind.starts_with("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("expected Content-Type: application/json, got {kind:?}"),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(bytes_rejection)?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

/// A product as sent by a client, from JSON or from a multipart form.
#[derive(Debug, Clone, Default)]
pub struct ProductPayload {
    pub product_id: Option<i64>,
    pub designation: Option<String>,
    pub description: Option<String>,
    /// Decoded image bytes (from base64 or a file part).
    pub image: Option<Bytes>,
    pub explain: bool,
}

/// Decodes a base64 image (standard or URL-safe alphabet, optional `data:` prefix).
pub(crate) fn decode_base64_image(text: &str) -> Result<Bytes, ApiError> {
    let trimmed = text.trim();
    let data = match trimmed.strip_prefix("data:") {
        Some(rest) => match rest.split_once(',') {
            Some((_, data)) => data,
            None => {
                return Err(ApiError::invalid_image(
                    "the image data URL has no ',' before its data",
                ))
            }
        },
        None => trimmed,
    };
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(ApiError::invalid_image("the image is empty"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&compact))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&compact))
        .map(Bytes::from)
        .map_err(|error| ApiError::invalid_image(format!("the image is not valid base64: {error}")))
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large("the request body is larger than the limit of this route")
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_multipart",
            format!(
                "the multipart body could not be read: {}",
                error.body_text()
            ),
        )
    }
}

async fn payload_from_multipart(mut multipart: Multipart) -> Result<ProductPayload, ApiError> {
    let mut payload = ProductPayload::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "image" => {
                let bytes = field.bytes().await.map_err(multipart_error)?;
                payload.image = Some(bytes);
            }
            "designation" | "description" | "productId" | "explain" => {
                let text = field.text().await.map_err(multipart_error)?;
                match name.as_str() {
                    "designation" => payload.designation = Some(text),
                    "description" => payload.description = Some(text),
                    "productId" => {
                        payload.product_id = Some(text.trim().parse().map_err(|_| {
                            ApiError::invalid(format!("productId {text:?} is not an integer"))
                        })?)
                    }
                    _ => payload.explain = matches!(text.trim(), "true" | "1" | "yes"),
                }
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown form field {other:?}: expected designation, description, productId, \
                     explain or image"
                )))
            }
        }
    }
    Ok(payload)
}

impl FromRequest<AppState> for ProductPayload {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if content_type(&request).starts_with("multipart/form-data") {
            let multipart = Multipart::from_request(request, state)
                .await
                .map_err(|rejection| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_multipart",
                        rejection.body_text(),
                    )
                })?;
            return payload_from_multipart(multipart).await;
        }
        let JsonBody(request) =
            JsonBody::<crate::api::PredictRequest>::from_request(request, state).await?;
        let image = request
            .image
            .as_deref()
            .map(decode_base64_image)
            .transpose()?;
        Ok(ProductPayload {
            product_id: request.product_id,
            designation: request.designation,
            description: request.description,
            image,
            explain: request.explain.unwrap_or(false),
        })
    }
}
