//! Durable classification jobs: `POST /v1/jobs/classify` accepts any number of products (JSON
//! lines or CSV, as the body or as a multipart file) under an optional `Idempotency-Key`; the
//! items are stored before the answer, and `prodcat worker` processes classify them.
//! `GET /v1/jobs/{id}` gives progress and a page of results.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prodcat_domain::{CategoryCode, ContentHash};
use prodcat_jobs::{ItemInput, ItemStatus, JobKind, JobStatus, NewJob};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::{
    CategoryScore, JobAccepted, JobBody, JobItemBody, JobItemRequest, JobItemResultBody,
};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::handlers::{bytes_rejection, decode_base64_image, parse_json};
use crate::middleware::AuditNote;
use crate::state::AppState;
use prodcat_catalogue::products::store_image;
use prodcat_catalogue::ImageUpload;
use prodcat_catalogue::Permission;

/// The upload formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadFormat {
    JsonLines,
    Csv,
}

fn format_of(content_type: &str, file_name: Option<&str>) -> Option<UploadFormat> {
    let content_type = content_type.to_ascii_lowercase();
    if content_type.starts_with("text/csv") || file_name.is_some_and(|n| n.ends_with(".csv")) {
        return Some(UploadFormat::Csv);
    }
    let json_types = [
        "application/x-ndjson",
        "application/jsonl",
        "application/json-lines",
        "application/jsonlines",
        "application/json",
    ];
    if json_types.iter().any(|t| content_type.starts_with(t))
        || file_name.is_some_and(|n| n.ends_with(".jsonl") || n.ends_with(".ndjson"))
    {
        return Some(UploadFormat::JsonLines);
    }
    None
}

/// A product read from an upload, before its image is stored.
struct UploadedItem {
    designation: String,
    description: String,
    image: Option<Bytes>,
    product_id: Option<i64>,
}

fn check_item(line: usize, item: &UploadedItem) -> Result<(), ApiError> {
    if item.designation.trim().is_empty()
        && item.description.trim().is_empty()
        && item.image.is_none()
    {
        return Err(ApiError::invalid(format!(
            "line {line}: the designation is missing (give a designation, a description or an image)"
        )));
    }
    Ok(())
}

fn parse_json_lines(bytes: &[u8]) -> Result<Vec<UploadedItem>, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|error| ApiError::malformed_json(format!("the upload is not UTF-8: {error}")))?;
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let request: JobItemRequest = parse_json(line.as_bytes()).map_err(|error| ApiError {
            message: format!("line {number}: {}", error.message),
            ..error
        })?;
        let image = request
            .image
            .as_deref()
            .map(decode_base64_image)
            .transpose()
            .map_err(|error| ApiError {
                message: format!("line {number}: {}", error.message),
                ..error
            })?;
        let item = UploadedItem {
            designation: request.designation.unwrap_or_default(),
            description: request.description.unwrap_or_default(),
            image,
            product_id: request.product_id,
        };
        check_item(number, &item)?;
        items.push(item);
    }
    Ok(items)
}

fn parse_csv(bytes: &[u8]) -> Result<Vec<UploadedItem>, ApiError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|error| ApiError::invalid(format!("the CSV header can not be read: {error}")))?
        .clone();
    let column = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
    };
    let Some(designation_column) = column(&["designation"]) else {
        return Err(ApiError::invalid(
            "the CSV has no designation column (expected a header such as \
             designation,description,productid)",
        ));
    };
    let description_column = column(&["description"]);
    let product_column = column(&["productid", "product_id", "productId"]);
    let mut items = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = record.map_err(|error| {
            ApiError::invalid(format!("line {line}: unreadable CSV row: {error}"))
        })?;
        let field =
            |column: Option<usize>| column.and_then(|c| record.get(c)).unwrap_or("").to_string();
        let product_id = match field(product_column).trim() {
            "" => None,
            text => Some(text.parse::<i64>().map_err(|_| {
                ApiError::invalid(format!("line {line}: productid {text:?} is not an integer"))
            })?),
        };
        let item = UploadedItem {
            designation: field(Some(designation_column)),
            description: field(description_column),
            image: None,
            product_id,
        };
        check_item(line, &item)?;
        items.push(item);
    }
    Ok(items)
}

async fn read_upload(request: Request, state: &AppState) -> Result<Vec<UploadedItem>, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/x-ndjson")
        .to_string();
    if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let mut multipart = Multipart::from_request(request, state)
            .await
            .map_err(|rejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_multipart",
                    rejection.body_text(),
                )
            })?;
        while let Some(field) = multipart.next_field().await.map_err(|error| {
            if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("the upload is larger than the limit")
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_multipart",
                    error.body_text(),
                )
            }
        })? {
            if field.name() != Some("file") {
                continue;
            }
            let format = format_of(field.content_type().unwrap_or(""), field.file_name())
                .unwrap_or(UploadFormat::JsonLines);
            let bytes = field.bytes().await.map_err(|error| {
                if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large("the upload is larger than the limit")
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_multipart",
                        error.body_text(),
                    )
                }
            })?;
            return parse_upload(format, bytes).await;
        }
        return Err(ApiError::invalid(
            "the multipart form has no \"file\" part with the products",
        ));
    }
    let Some(format) = format_of(&content_type, None) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "expected JSON lines (application/x-ndjson), CSV (text/csv) or a multipart form, \
                 got {content_type:?}"
            ),
        ));
    };
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(bytes_rejection)?;
    parse_upload(format, bytes).await
}

async fn parse_upload(format: UploadFormat, bytes: Bytes) -> Result<Vec<UploadedItem>, ApiError> {
    // Large uploads are parsed off the async runtime.
    tokio::task::spawn_blocking(move || match format {
        UploadFormat::JsonLines => parse_json_lines(&bytes),
        UploadFormat::Csv => parse_csv(&bytes),
    })
    .await
    .map_err(|error| ApiError::internal(&error))?
}

/// Accept products for classification as a durable job.
#[utoipa::path(
    post,
    path = "/v1/jobs/classify",
    tag = "jobs",
    request_body(content = JobItemRequest, description = "JSON lines (application/x-ndjson, one product per line), CSV (text/csv with a designation column, optional description and productid), or multipart/form-data with a `file` part", content_type = "application/x-ndjson"),
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key returns the job created with it")),
    responses(
        (status = 202, description = "Accepted; follow statusUrl", body = JobAccepted),
        (status = 200, description = "The idempotency key named an existing job", body = JobAccepted),
        (status = 400, description = "Malformed line", body = ErrorBody),
        (status = 409, description = "The idempotency key was used with other items", body = ErrorBody),
        (status = 413, description = "Upload too large", body = ErrorBody),
        (status = 415, description = "Unknown upload format", body = ErrorBody),
        (status = 422, description = "Empty upload or an item without input", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create_job(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(Permission::Jobs)?;
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|value| {
            value
                .to_str()
                .map(|text| text.trim().to_string())
                .map_err(|_| ApiError::invalid("the Idempotency-Key header is not text"))
        })
        .transpose()?;
    let uploaded = read_upload(request, &state).await?;
    if uploaded.is_empty() {
        return Err(ApiError::invalid("the upload has no products"));
    }
    let limits = prodcat_model::InputLimits {
        max_image_pixels: state.settings.max_image_pixels,
        ..prodcat_model::InputLimits::default()
    };
    let mut items = Vec::with_capacity(uploaded.len());
    for (index, item) in uploaded.into_iter().enumerate() {
        // The same checks as every other way in (text sizes, the image's header).
        limits
            .check_product(&prodcat_model::ProductInput {
                designation: &item.designation,
                description: &item.description,
                image: item.image.as_deref(),
            })
            .map_err(|error| {
                let error = ApiError::from(error);
                ApiError {
                    message: format!("item {}: {}", index + 1, error.message),
                    ..error
                }
            })?;
        let image_hash = match item.image {
            Some(bytes) => {
                let (width, height) = prodcat_model::probe_image(&bytes, limits.max_image_pixels)?;
                let upload = ImageUpload {
                    hash: ContentHash::of(&bytes),
                    width,
                    height,
                    bytes,
                };
                store_image(&state.platform.database, &state.platform.objects, &upload).await?;
                Some(upload.hash.as_str().to_string())
            }
            None => None,
        };
        items.push(ItemInput {
            designation: item.designation,
            description: item.description,
            image_hash,
            product_id: item.product_id,
        });
    }
    let (job, created) = prodcat_jobs::create_job(
        &state.platform.database,
        &NewJob {
            kind: JobKind::Classify,
            idempotency_key,
            created_by: caller.name.clone(),
            items,
        },
    )
    .await?;
    let body = JobAccepted {
        job_id: job.id.to_string(),
        status: job.status.as_str().to_string(),
        item_count: job.item_count,
        created,
        status_url: format!("/v1/jobs/{}", job.id),
    };
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut response = (
        status,
        [(header::LOCATION, body.status_url.clone())],
        Json(body),
    )
        .into_response();
    response.extensions_mut().insert(AuditNote {
        actor: None,
        detail: format!(
            "job {} with {} items{}",
            job.id,
            job.item_count,
            if created { "" } else { " (existing)" }
        ),
    });
    Ok(response)
}

/// Query of a job's items.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct JobQuery {
    /// First item position (default 0).
    offset: Option<i64>,
    /// Items to include (default 100, at most 1000; 0 for none).
    limit: Option<i64>,
}

fn result_body(result: &prodcat_jobs::ItemResult) -> JobItemResultBody {
    let name = |code: u16| {
        CategoryCode::from_u16(code)
            .map(|c| c.name().to_string())
            .unwrap_or_default()
    };
    JobItemResultBody {
        category_code: result.category,
        category_name: name(result.category),
        confidence: result.confidence,
        decision: if result.automatic {
            "automatic".to_string()
        } else {
            "review".to_string()
        },
        top: result
            .top
            .iter()
            .map(|scored| CategoryScore {
                category_code: scored.category,
                category_name: name(scored.category),
                probability: scored.probability,
            })
            .collect(),
        branches: result.branches.clone(),
        model_version: result.model_version.clone(),
    }
}

/// A job's progress and a page of its items with their results or errors.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id"), JobQuery),
    responses(
        (status = 200, body = JobBody),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 422, description = "Invalid job id", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobBody>, ApiError> {
    caller.require(Permission::Jobs)?;
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let job = prodcat_jobs::get_job(&state.platform.database, &id).await?;
    let offset = query.offset.unwrap_or(0).max(0);
    let limit = query.limit.unwrap_or(100).clamp(0, 1000);
    let items = if limit > 0 {
        prodcat_jobs::job_items(&state.platform.database, &id, offset, limit).await?
    } else {
        Vec::new()
    };
    let next_offset = items
        .last()
        .map(|item| item.position + 1)
        .filter(|next| *next < job.item_count && limit > 0);
    let finished = job.done_count + job.failed_count;
    Ok(Json(JobBody {
        job_id: job.id.to_string(),
        kind: job.kind.as_str().to_string(),
        status: job.status.as_str().to_string(),
        item_count: job.item_count,
        done_count: job.done_count,
        failed_count: job.failed_count,
        remaining_count: job.remaining(),
        progress: if job.item_count > 0 {
            finished as f64 / job.item_count as f64
        } else {
            1.0
        },
        created_by: job.created_by.clone(),
        created_at_ms: job.created_at_ms,
        updated_at_ms: job.updated_at_ms,
        finished_at_ms: job.finished_at_ms,
        items: items
            .iter()
            .map(|item| JobItemBody {
                position: item.position,
                status: item.status.as_str().to_string(),
                attempts: item.attempts,
                product_id: item.input.product_id,
                result: item.result.as_ref().map(result_body),
                error: match item.status {
                    ItemStatus::Failed | ItemStatus::Pending => item.error.clone(),
                    ItemStatus::Leased | ItemStatus::Done => None,
                },
            })
            .collect(),
        next_offset: if job.status == JobStatus::Completed || items.is_empty() {
            next_offset
        } else {
            next_offset.or(Some(offset + limit))
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_parsed_with_line_numbers() {
        let lines =
            b"{\"designation\": \"Piscine\"}\n\n{\"designation\": \"Jeu\", \"productId\": 7}\n";
        let items = parse_json_lines(lines).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].product_id, Some(7));
        let error = parse_json_lines(b"{\"designation\": \"ok\"}\n{broken\n")
            .err()
            .unwrap();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(error.message.starts_with("line 2:"), "{}", error.message);
        let error = parse_json_lines(b"{\"description\": \"\"}\n")
            .err()
            .unwrap();
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        let csv = b"designation,description,productid\nPiscine,\"<b>ronde</b>, 3m\",12\nJeu,,\n";
        let items = parse_csv(csv).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].description, "<b>ronde</b>, 3m");
        assert_eq!(items[0].product_id, Some(12));
        assert!(parse_csv(b"title\nx\n").is_err());
        assert_eq!(
            format_of("text/csv; charset=utf-8", None),
            Some(UploadFormat::Csv)
        );
        assert_eq!(
            format_of("", Some("a.jsonl")),
            Some(UploadFormat::JsonLines)
        );
        assert_eq!(format_of("image/png", None), None);
    }
}
