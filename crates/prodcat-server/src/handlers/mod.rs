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

/// A whole-number id from the path (`/v1/products/{id}`, `/v1/review/{id}`). The OpenAPI
/// document declares it an integer, and JSON Schema counts `12854.0` or `1.2854e4` as the
/// integer 12854, so those are accepted too; anything else is a 400 that names the value.
pub struct IdPath(pub i64);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        rejection.body_text(),
                    )
                })?;
        whole_number(&raw).map(IdPath).ok_or_else(|| {
            let shown: String = raw.chars().take(40).collect();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the id in the path must be a whole number, not {shown:?}"),
            )
        })
    }
}

/// `text` as a whole number: digits, or any decimal or exponent spelling of a whole number
/// (`12854.0`, `1.2854e4`, `100e-2`), read exactly (no floating point, so `12854.5` is refused
/// however large it is).
fn whole_number(text: &str) -> Option<i64> {
    if let Ok(value) = text.parse::<i64>() {
        return Some(value);
    }
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (negative, unsigned) = match mantissa.as_bytes().first() {
        Some(b'-') => (true, &mantissa[1..]),
        Some(b'+') => (false, &mantissa[1..]),
        _ => (false, mantissa),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || exponent.abs() > 64 {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    // Where the decimal point falls in `digits` once the exponent is applied.
    let point = whole.len() as i64 + i64::from(exponent);
    let integer_digits = if point <= 0 {
        ""
    } else if point as usize >= digits.len() {
        let zeros = "0".repeat(point as usize - digits.len());
        return format!("{}{digits}{zeros}", if negative { "-" } else { "" })
            .parse()
            .ok();
    } else {
        &digits[..point as usize]
    };
    let rest = &digits[integer_digits.len()..];
    if rest.bytes().any(|byte| byte != b'0') {
        return None;
    }
    if integer_digits.is_empty() {
        return Some(0);
    }
    format!("{}{integer_digits}", if negative { "-" } else { "" })
        .parse()
        .ok()
}

/// Serde helpers for whole-number query parameters (`?page=2`): like ids in the path, every
/// value JSON Schema calls an integer is accepted (`2.0`), and anything else is refused with
/// the value named.
pub(crate) mod whole {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    /// An optional whole-number query parameter, converted to `T` (refused when out of range).
    pub(crate) fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64>,
    {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        let value = super::whole_number(&text)
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not a whole number")))?;
        T::try_from(value)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{value} is out of range")))
    }
}

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

/// A multipart body that could not be read: 413 when it passed the route's size limit, 400
/// otherwise, naming what was wrong.
pub(crate) fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
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

/// The multipart form of a request whose content type says it has one.
pub(crate) async fn multipart_form(
    request: Request,
    state: &AppState,
) -> Result<Multipart, ApiError> {
    Multipart::from_request(request, state)
        .await
        .map_err(|rejection| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_multipart",
                rejection.body_text(),
            )
        })
}

async fn multipart_payload(request: Request, state: &AppState) -> Result<ProductPayload, ApiError> {
    payload_from_multipart(multipart_form(request, state).await?).await
}

impl FromRequest<AppState> for ProductPayload {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if content_type(&request).starts_with("multipart/form-data") {
            return multipart_payload(request, state).await;
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

/// A whole-number parameter: `default` when absent, else it must lie within `min..=max` (the
/// range the OpenAPI document states; nothing is clamped silently).
pub(crate) fn in_range<T>(
    name: &str,
    value: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ApiError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let value = value.unwrap_or(default);
    if value < min || value > max {
        return Err(ApiError::invalid(format!(
            "{name} is {value}; it must be between {min} and {max}"
        )));
    }
    Ok(value)
}

/// A product to add, from JSON (the fields of [`crate::api::CreateProductRequest`], nothing
/// else) or from a multipart form.
pub struct NewProductPayload(pub ProductPayload);

impl FromRequest<AppState> for NewProductPayload {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if content_type(&request).starts_with("multipart/form-data") {
            return Ok(Self(multipart_payload(request, state).await?));
        }
        let JsonBody(request) =
            JsonBody::<crate::api::CreateProductRequest>::from_request(request, state).await?;
        let image = request
            .image
            .as_deref()
            .map(decode_base64_image)
            .transpose()?;
        Ok(Self(ProductPayload {
            product_id: request.product_id,
            designation: request.designation,
            description: request.description,
            image,
            explain: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::body::Body;
    use proptest::prelude::*;

    use super::*;

    const BOUNDARY: &str = "prodcat-boundary";

    #[test]
    fn whole_number_query_parameters_accept_any_integer_spelling() {
        #[derive(serde::Deserialize)]
        struct Paging {
            #[serde(default, deserialize_with = "whole::option")]
            page: Option<usize>,
        }
        let parse = |query: &str| {
            let uri: axum::http::Uri = format!("/x?{query}").parse().unwrap();
            axum::extract::Query::<Paging>::try_from_uri(&uri).map(|query| query.0.page)
        };
        assert_eq!(parse("page=2").unwrap(), Some(2));
        assert_eq!(parse("page=2.0").unwrap(), Some(2));
        assert_eq!(parse("other=1").unwrap(), None);
        for refused in ["page=2.5", "page=-1", "page=two"] {
            assert!(parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn ids_in_the_path_are_whole_numbers_however_written() {
        assert_eq!(whole_number("12854"), Some(12854));
        assert_eq!(whole_number("12854.0"), Some(12854));
        assert_eq!(whole_number("1.2854e4"), Some(12854));
        assert_eq!(whole_number("-3"), Some(-3));
        assert_eq!(whole_number("9223372036854775807"), Some(i64::MAX));
        assert_eq!(whole_number("-3.00"), Some(-3));
        assert_eq!(whole_number("1E3"), Some(1000));
        assert_eq!(whole_number("100e-2"), Some(1));
        assert_eq!(whole_number("0.0"), Some(0));
        assert_eq!(whole_number("0e5"), Some(0));
        assert_eq!(
            whole_number("6402816776627368.0"),
            Some(6_402_816_776_627_368)
        );
        for refused in [
            "12854.5",
            "6402816776627368.5",
            "1.28545e4",
            "1e-2",
            ".5",
            "abc",
            "",
            "-",
            "NaN",
            "inf",
            "1e300",
            "9223372036854775808",
            "9.3e18",
            "0x10",
            "1.2.3",
            "1e",
        ] {
            assert_eq!(whole_number(refused), None, "{refused}");
        }
    }

    /// Reads a multipart body the way product creation and prediction do.
    fn read_form(body: Vec<u8>) -> Result<ProductPayload, ApiError> {
        let request = Request::builder()
            .method("POST")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Body::from(body))
            .unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let multipart = Multipart::from_request(request, &())
                    .await
                    .map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
                payload_from_multipart(multipart).await
            })
    }

    /// One part: a name (sometimes unknown, sometimes missing) and arbitrary content.
    fn part() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![
                Just("designation"),
                Just("description"),
                Just("productId"),
                Just("explain"),
                Just("image"),
                Just("other"),
                Just(""),
            ],
            proptest::collection::vec(any::<u8>(), 0..512),
            any::<bool>(),
        )
            .prop_map(|(name, content, quoted)| {
                let mut out = format!("--{BOUNDARY}\r\n").into_bytes();
                if !name.is_empty() {
                    let name = if quoted {
                        format!("\"{name}\"")
                    } else {
                        name.to_string()
                    };
                    out.extend(format!("Content-Disposition: form-data; name={name}\r\n").bytes());
                }
                out.extend(b"\r\n");
                out.extend(content);
                out.extend(b"\r\n");
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes under a multipart content type: an error or a payload, never a panic.
        #[test]
        fn arbitrary_multipart_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let started = Instant::now();
            let _ = read_form(body);
            prop_assert!(started.elapsed() < Duration::from_millis(500));
        }

        /// Well-framed parts with hostile names and contents, sometimes unterminated.
        #[test]
        fn framed_parts_are_read_or_refused(parts in proptest::collection::vec(part(), 0..8), close in any::<bool>()) {
            let mut body: Vec<u8> = parts.concat();
            if close {
                body.extend(format!("--{BOUNDARY}--\r\n").bytes());
            }
            let started = Instant::now();
            match read_form(body) {
                Ok(payload) => {
                    if let Some(text) = payload.designation {
                        prop_assert!(text.len() <= 8 * 512);
                    }
                }
                Err(error) => prop_assert!(!error.message.is_empty()),
            }
            prop_assert!(started.elapsed() < Duration::from_millis(500));
        }
    }
}
