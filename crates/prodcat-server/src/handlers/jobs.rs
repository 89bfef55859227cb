//! Durable classification jobs: `POST /v1/jobs/classify` accepts any number of products (JSON
//! lines or CSV, as the body or as a multipart file) under an optional `Idempotency-Key`; the
//! items are stored before the answer, and `prodcat worker` processes classify them.
//! `GET /v1/jobs/{id}` gives progress and a page of results.

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prodcat_domain::{CategoryCode, ContentHash};
use prodcat_jobs::{ItemInput, ItemStatus, JobKind, JobStatus, JobUpload};
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use crate::api::{
    CategoryScore, JobAccepted, JobBody, JobItemBody, JobItemRequest, JobItemResultBody,
};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::handlers::job_upload::{parse_upload, ChannelReader, UploadFormat, UploadedItem};
use crate::middleware::AuditNote;
use crate::state::AppState;
use prodcat_catalogue::products::store_image;
use prodcat_catalogue::ImageUpload;
use prodcat_catalogue::Permission;

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

/// Where an upload's bytes come from: the body, or the "file" part of a multipart form.
enum UploadSource<'a> {
    Body(axum::body::BodyDataStream),
    Field(Box<axum::extract::multipart::Field<'a>>),
}

impl UploadSource<'_> {
    /// The next piece of the upload (`None` at its end).
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        use futures::StreamExt;
        match self {
            UploadSource::Body(stream) => match stream.next().await {
                None => Ok(None),
                Some(Ok(bytes)) => Ok(Some(bytes)),
                Some(Err(error)) => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the upload could not be read: {error}"),
                )),
            },
            UploadSource::Field(field) => field.chunk().await.map_err(super::multipart_error),
        }
    }
}

/// The refusal of an upload over the size limit, with the limit in a readable unit.
fn upload_too_large(limit_bytes: usize) -> ApiError {
    let limit = if limit_bytes >= 1 << 20 {
        format!("{:.1} MiB", limit_bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", limit_bytes as f64 / 1024.0)
    };
    ApiError::too_large(format!(
        "the upload is larger than the limit of {limit}; split it into several jobs"
    ))
}

/// Refuses an upload whose declared length is over the limit before reading any of it, so
/// the answer does not depend on which limit the streamed reading meets first.
fn check_declared_length(headers: &HeaderMap, limit_bytes: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > limit_bytes as u64 => Err(upload_too_large(limit_bytes)),
        _ => Ok(()),
    }
}

fn is_multipart(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

/// The format of a body upload, from its content type.
fn body_format(request: &Request) -> Result<UploadFormat, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/x-ndjson");
    format_of(content_type, None).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "expected JSON lines (application/x-ndjson), CSV (text/csv) or a multipart form, \
                 got {content_type:?}"
            ),
        )
    })
}

/// Stores a chunk of parsed items (their photos first) as the job's next items.
async fn store_items(
    state: &AppState,
    upload: &mut JobUpload,
    items: Vec<UploadedItem>,
    max_pixels: u64,
) -> Result<(), ApiError> {
    let mut inputs = Vec::with_capacity(items.len());
    for item in items {
        let image_hash = match item.image {
            Some(bytes) => {
                let (width, height) = prodcat_model::probe_image(&bytes, max_pixels)?;
                let image = ImageUpload {
                    hash: ContentHash::of(&bytes),
                    width,
                    height,
                    bytes,
                };
                store_image(&state.platform.database, &state.platform.objects, &image).await?;
                Some(image.hash.as_str().to_string())
            }
            None => None,
        };
        inputs.push(ItemInput {
            designation: item.designation,
            description: item.description,
            image_hash,
            product_id: item.product_id,
        });
    }
    upload.add(&state.platform.database, &inputs).await?;
    Ok(())
}

/// Moves the upload's bytes to the parser and the parsed items into the job, until the
/// parser has read everything; enforces the size and item limits.
async fn pump(
    state: &AppState,
    mut source: UploadSource<'_>,
    bytes_out: mpsc::Sender<Bytes>,
    items_in: &mut mpsc::Receiver<Vec<UploadedItem>>,
    upload: &mut JobUpload,
) -> Result<(), ApiError> {
    let settings = &state.settings;
    let mut bytes_out = Some(bytes_out);
    let mut pending: Option<Bytes> = None;
    let mut received = 0usize;
    loop {
        let reserve = bytes_out.clone().map(mpsc::Sender::reserve_owned);
        tokio::select! {
            permit = async { reserve?.await.ok() }, if pending.is_some() => {
                if let (Some(permit), Some(bytes)) = (permit, pending.take()) {
                    permit.send(bytes);
                }
            }
            chunk = source.next_chunk(), if pending.is_none() && bytes_out.is_some() => {
                match chunk? {
                    Some(bytes) => {
                        received += bytes.len();
                        if received > settings.upload_limit_bytes {
                            return Err(upload_too_large(settings.upload_limit_bytes));
                        }
                        pending = Some(bytes);
                    }
                    // The end of the upload: the parser sees the end of its input.
                    None => bytes_out = None,
                }
            }
            items = items_in.recv() => match items {
                Some(items) => {
                    store_items(state, upload, items, settings.max_image_pixels).await?;
                    if upload.count() > settings.max_job_items as i64 {
                        return Err(ApiError::invalid(format!(
                            "the job has more than {} items, the most one job may have; split \
                             it into several jobs",
                            settings.max_job_items
                        )));
                    }
                }
                None => return Ok(()),
            },
        }
    }
}

/// Reads an upload into a new job (or finds the job its idempotency key names).
async fn receive_job(
    state: &AppState,
    caller: &Caller,
    idempotency_key: Option<&str>,
    format: UploadFormat,
    source: UploadSource<'_>,
) -> Result<(prodcat_jobs::Job, bool), ApiError> {
    let mut upload = JobUpload::begin(
        &state.platform.database,
        JobKind::Classify,
        &caller.name,
        idempotency_key,
    )
    .await?;
    // The parser runs on the blocking pool; bytes go in and chunks of items come out through
    // small channels, so memory stays flat.
    let (bytes_out, bytes_in) = mpsc::channel::<Bytes>(8);
    let (items_out, mut items_in) = mpsc::channel::<Vec<UploadedItem>>(2);
    let limits = state.settings.input_limits;
    let parser = tokio::task::spawn_blocking(move || {
        parse_upload(
            format,
            ChannelReader::new(bytes_in),
            &limits,
            500,
            &mut |chunk| items_out.blocking_send(chunk).is_ok(),
        )
    });
    let pumped = pump(state, source, bytes_out, &mut items_in, &mut upload).await;
    drop(items_in);
    let parsed = parser
        .await
        .map_err(|error| ApiError::internal(&error))
        .and_then(|parsed| parsed);
    // The pump's errors (a limit, the connection, storage) come first: when the pump stops,
    // the parser's input ends mid-way and its own error would only be a consequence. The
    // parser's error names the line of a malformed upload.
    let outcome = match (parsed, pumped) {
        (_, Err(error)) | (Err(error), Ok(())) => Err(error),
        (Ok(_), Ok(())) => Ok(()),
    };
    if let Err(error) = outcome {
        if let Err(cleanup) = upload.abandon(&state.platform.database).await {
            tracing::warn!(error = %cleanup, "removing a refused upload failed");
        }
        return Err(error);
    }
    match upload.finish(&state.platform.database).await {
        Ok(finished) => Ok(finished),
        Err(prodcat_jobs::JobError::EmptyJob) => {
            Err(ApiError::invalid("the upload has no products"))
        }
        Err(error) => Err(error.into()),
    }
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
    check_declared_length(&headers, state.settings.upload_limit_bytes)?;
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|value| {
            value
                .to_str()
                .map(|text| text.trim().to_string())
                .map_err(|_| ApiError::invalid("the Idempotency-Key header is not text"))
        })
        .transpose()?;
    let (job, created) = if is_multipart(&request) {
        let mut form = super::multipart_form(request, &state).await?;
        // The "file" part holds the products; its format comes from its type or name.
        loop {
            let Some(field) = form.next_field().await.map_err(super::multipart_error)? else {
                return Err(ApiError::invalid(
                    "the multipart form has no \"file\" part with the products",
                ));
            };
            if field.name() != Some("file") {
                continue;
            }
            let format = format_of(field.content_type().unwrap_or(""), field.file_name())
                .unwrap_or(UploadFormat::JsonLines);
            break receive_job(
                &state,
                &caller,
                idempotency_key.as_deref(),
                format,
                UploadSource::Field(Box::new(field)),
            )
            .await?;
        }
    } else {
        let format = body_format(&request)?;
        let source = UploadSource::Body(request.into_body().into_data_stream());
        receive_job(&state, &caller, idempotency_key.as_deref(), format, source).await?
    };
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
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct JobQuery {
    /// First item position (default 0).
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "crate::handlers::whole::option")]
    offset: Option<i64>,
    /// Items to include (default 100, at most 1000; 0 for none).
    #[param(minimum = 0, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::handlers::whole::option")]
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
    params(("id" = String, Path, description = "Job id", pattern = "^job-[0-9a-f]{16}$"), JobQuery),
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
    if !prodcat_domain::is_prefixed_hex(&id, prodcat_jobs::queue::JobId::PREFIX, 16) {
        return Err(ApiError::invalid(format!(
            "{id:?} is not a job id (job- and 16 hex digits)"
        )));
    }
    let offset = crate::handlers::in_range("offset", query.offset, 0, 0, i64::MAX)?;
    let limit = crate::handlers::in_range("limit", query.limit, 100, 0, 1000)?;
    let job = prodcat_jobs::get_job(&state.platform.database, &id).await?;
    // A job belongs to the client that created it: to anybody else (admins aside) it does not
    // exist.
    if job.created_by != caller.name && caller.role != prodcat_catalogue::Role::Admin {
        return Err(ApiError::from(prodcat_jobs::JobError::UnknownJob(id)));
    }
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
    fn upload_formats_come_from_the_type_or_the_file_name() {
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
