//! Every error the service answers with: a status and `{"error": "...", "errorType": "..."}`.
//!
//! Every library error says whose fault it is with its `kind()`
//! ([`prodcat_domain::ErrorKind`]); the status comes from the kind alone, so the service and
//! the job worker (which retries or fails an item by the same kind) can never disagree. A 5xx
//! answer says nothing internal: the details go to the log with an incident id the body
//! repeats.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prodcat_catalogue::CatalogueError;
use prodcat_domain::ErrorKind;
use prodcat_jobs::JobError;
use prodcat_model::ModelError;
use prodcat_pipelines::PipelineError;
use prodcat_platform::{PlatformError, PredictError};
use prodcat_registry::RegistryError;
use prodcat_storage::StorageError;
use serde::Serialize;

use crate::ServerError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
    /// Seconds to wait, for 429 and 503 answers.
    pub retry_after: Option<u64>,
}

/// The JSON body of every error.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// A stable machine-readable kind (`invalid_json`, `invalid_request`, `not_found`, ...).
    pub error_type: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub fn invalid_image(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_image", message)
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn model_unavailable(message: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_unavailable",
            message,
        );
        error.retry_after = Some(5);
        error
    }

    /// A 500 whose details are logged, not returned.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        let incident = incident_id();
        tracing::error!(incident = %incident, error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error (incident {incident}); the details are in the server log"),
        )
    }

    /// A 503 whose details are logged, not returned.
    pub fn unavailable(detail: &dyn std::fmt::Display) -> Self {
        let incident = incident_id();
        tracing::error!(incident = %incident, error = %detail, "dependency unavailable");
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "a dependency of the service is unavailable (incident {incident}); try again later"
            ),
        );
        error.retry_after = Some(5);
        error
    }
}

fn incident_id() -> String {
    let value: u64 = rand::random();
    format!("{value:016x}")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            error_type: self.error_type.to_string(),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"prodcat\""),
            );
        }
        response
    }
}

impl ApiError {
    /// The answer for an error of `kind`: the status comes from the kind alone (the same kind
    /// decides retry-or-fail in the worker), `error_type` names it for machines, and a 5xx
    /// hides the details (logged with the incident id the body repeats).
    pub fn of_kind(
        kind: ErrorKind,
        error_type: Option<&'static str>,
        error: &dyn std::fmt::Display,
    ) -> Self {
        match kind {
            ErrorKind::Input => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                error_type.unwrap_or("invalid_request"),
                error.to_string(),
            ),
            ErrorKind::NotFound => Self::new(
                StatusCode::NOT_FOUND,
                error_type.unwrap_or("not_found"),
                error.to_string(),
            ),
            ErrorKind::Conflict => Self::new(
                StatusCode::CONFLICT,
                error_type.unwrap_or("conflict"),
                error.to_string(),
            ),
            ErrorKind::Unavailable => Self::unavailable(error),
            ErrorKind::Internal => Self::internal(error),
        }
    }
}

/// A finer machine-readable type for image problems.
fn model_error_type(error: &ModelError) -> Option<&'static str> {
    match error {
        _ if error.is_image_too_large() => Some("image_too_large"),
        _ if error.is_unreadable_image() => Some("invalid_image"),
        ModelError::TooLong { .. } => Some("input_too_long"),
        ModelError::BackboneUnavailable => Some("model_unavailable"),
        _ => None,
    }
}

impl From<ModelError> for ApiError {
    fn from(error: ModelError) -> Self {
        match &error {
            ModelError::EmptyInput => ApiError::invalid(
                "nothing to classify: give a designation, a description or an image",
            ),
            ModelError::MissingBranch(branch) => ApiError::invalid(format!(
                "the model in service has no {branch} branch, so this product can not be \
                 classified from what was sent"
            )),
            ModelError::BackboneUnavailable => ApiError::model_unavailable(
                "the image branch needs the pretrained image backbone, which this server has not \
                 loaded",
            ),
            _ => ApiError::of_kind(error.kind(), model_error_type(&error), &error),
        }
    }
}

impl From<PredictError> for ApiError {
    fn from(error: PredictError) -> Self {
        match error {
            PredictError::NoModel => ApiError::model_unavailable(error.to_string()),
            PredictError::Model(model) => ApiError::from(model),
            PredictError::Task(_) => ApiError::internal(&error),
            PredictError::OverBudget(_) => {
                let mut answer = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    error.to_string(),
                );
                answer.retry_after = Some(1);
                answer
            }
        }
    }
}

macro_rules! from_kind {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for ApiError {
            fn from(error: $error) -> Self {
                ApiError::of_kind(error.kind(), None, &error)
            }
        })*
    };
}

from_kind!(
    StorageError,
    CatalogueError,
    JobError,
    PipelineError,
    PlatformError,
    ServerError
);

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        ApiError::of_kind(error.kind(), None, &error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_details() {
        let error = ApiError::from(StorageError::Io {
            path: "/secret/path/prodcat.db".to_string(),
            source: std::io::Error::other("disk on fire"),
        });
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.message.contains("/secret"));
        assert!(!error.message.contains("fire"));
    }

    #[test]
    fn input_errors_say_what_is_wrong() {
        // A PNG whose header says 20000x20000 pixels.
        let huge_png: [u8; 53] = [
            137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 78, 32, 0, 0, 78,
            32, 8, 2, 0, 0, 0, 108, 18, 209, 110, 0, 0, 0, 8, 73, 68, 65, 84, 120, 156, 3, 0, 0, 0,
            0, 1, 72, 6, 137, 210,
        ];
        let refused = prodcat_model::probe_image(&huge_png, 40_000_000).unwrap_err();
        let error = ApiError::from(refused);
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error.error_type, "image_too_large");
        assert!(error.message.contains("20000x20000"));
        let error = ApiError::from(JobError::UnknownJob("job-0123456789abcdef".to_string()));
        assert_eq!(error.status, StatusCode::NOT_FOUND);
        let error = ApiError::from(RegistryError::AlreadyPromoted {
            alias: "champion".to_string(),
            version: "mv-1".to_string(),
        });
        assert_eq!(error.status, StatusCode::CONFLICT);
        let unreadable = prodcat_model::probe_image(b"not an image", 40_000_000).unwrap_err();
        let error = ApiError::from(unreadable);
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error.error_type, "invalid_image");
    }
}
