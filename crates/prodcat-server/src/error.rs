//! Every error the service answers with: a status and `{"error": "...", "errorType": "..."}`.
//!
//! Library errors are mapped variant by variant with exhaustive matches (a new variant does not
//! compile until it is given a status). A 5xx answer says nothing internal: the details go to
//! the log with an incident id the body repeats.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prodcat_jobs::JobError;
use prodcat_model::ModelError;
use prodcat_pipelines::PipelineError;
use prodcat_registry::RegistryError;
use prodcat_storage::StorageError;
use prodcat_vision::VisionError;
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

    fn unavailable(detail: &dyn std::fmt::Display) -> Self {
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

impl From<VisionError> for ApiError {
    fn from(error: VisionError) -> Self {
        match &error {
            VisionError::EmptyImage
            | VisionError::UnrecognisedImageFormat { .. }
            | VisionError::ImageDimensionZero { .. }
            | VisionError::ImageDecode { .. } => ApiError::invalid_image(error.to_string()),
            VisionError::EncodedImageTooLarge { .. } | VisionError::ImageTooLarge { .. } => {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "image_too_large",
                    error.to_string(),
                )
            }
            VisionError::ModelFileMissing { .. }
            | VisionError::FileUnreadable { .. }
            | VisionError::ManifestInvalid { .. }
            | VisionError::ChecksumMismatch { .. }
            | VisionError::WeightsUnreadable { .. }
            | VisionError::TensorMissing { .. }
            | VisionError::TensorShapeMismatch { .. }
            | VisionError::TensorDtypeUnsupported { .. }
            | VisionError::GraphConstruction { .. }
            | VisionError::Inference { .. }
            | VisionError::InputSizeMismatch { .. }
            | VisionError::Resize { .. }
            | VisionError::HeadTrainingData { .. }
            | VisionError::HeadParameters { .. }
            | VisionError::HeadFormat { .. }
            | VisionError::HeadVersionUnsupported { .. }
            | VisionError::FeatureSizeMismatch { .. } => ApiError::internal(&error),
        }
    }
}

impl From<ModelError> for ApiError {
    fn from(error: ModelError) -> Self {
        match error {
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
            ModelError::Image(vision) => ApiError::from(vision),
            ModelError::Storage(storage) => ApiError::from(storage),
            error @ (ModelError::CorruptBundle { .. }
            | ModelError::InvalidBundle { .. }
            | ModelError::MissingBundle(_)
            | ModelError::Text(_)
            | ModelError::Metrics(_)
            | ModelError::Profile(_)
            | ModelError::TrainingData(_)
            | ModelError::Dataset(_)
            | ModelError::Json(_)) => ApiError::internal(&error),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match &error {
            StorageError::Connect { .. } => ApiError::unavailable(&error),
            StorageError::InvalidDatabaseUrl { .. }
            | StorageError::Migrate(_)
            | StorageError::Sql(_)
            | StorageError::InvalidObjectStore { .. }
            | StorageError::ObjectNotFound { .. }
            | StorageError::Object { .. }
            | StorageError::Io { .. } => ApiError::internal(&error),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::from(StorageError::Sql(error))
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::UnknownRun(_)
            | RegistryError::UnknownModelReference { .. }
            | RegistryError::UnknownModelVersion(_)
            | RegistryError::UnknownAlias(_) => ApiError::not_found(error.to_string()),
            RegistryError::AmbiguousRun { .. }
            | RegistryError::InvalidRunId(_)
            | RegistryError::InvalidName { .. }
            | RegistryError::NonFiniteMetric { .. }
            | RegistryError::AmbiguousModelReference { .. }
            | RegistryError::ReasonRequired(_)
            | RegistryError::EvaluationSetMismatch { .. }
            | RegistryError::InvalidPolicy(_)
            | RegistryError::EvaluationSetRequired { .. }
            | RegistryError::Rescore { .. }
            | RegistryError::Domain(_) => ApiError::invalid(error.to_string()),
            RegistryError::RunClosed { .. }
            | RegistryError::ParameterChanged { .. }
            | RegistryError::ArtifactConflict { .. }
            | RegistryError::VersionConflict { .. }
            | RegistryError::VersionArchived { .. }
            | RegistryError::VersionInUse { .. }
            | RegistryError::AliasMovedMeanwhile { .. }
            | RegistryError::AliasUnchanged { .. }
            | RegistryError::NothingToRollBack { .. }
            | RegistryError::AlreadyPromoted { .. } => ApiError::conflict(error.to_string()),
            RegistryError::Storage(storage) => ApiError::from(storage),
            error @ (RegistryError::InvalidManifest { .. }
            | RegistryError::ScoreForWrongVersion { .. }
            | RegistryError::InvalidSummary { .. }
            | RegistryError::Corrupt { .. }
            | RegistryError::InvalidTrackingUri { .. }
            | RegistryError::MlflowRequest { .. }
            | RegistryError::MlflowStatus { .. }) => ApiError::internal(&error),
        }
    }
}

impl From<PipelineError> for ApiError {
    fn from(error: PipelineError) -> Self {
        match error {
            PipelineError::Model(model) => ApiError::from(model),
            PipelineError::Registry(registry) => ApiError::from(registry),
            PipelineError::Storage(storage) => ApiError::from(storage),
            PipelineError::Domain(domain) => ApiError::invalid(domain.to_string()),
            PipelineError::Invalid(message) => ApiError::invalid(message),
            PipelineError::Input { file, message } => {
                ApiError::invalid(format!("{file}: {message}"))
            }
            PipelineError::UnknownPipeline(_) | PipelineError::UnknownPipelineRun(_) => {
                ApiError::not_found(error.to_string())
            }
            PipelineError::NoTraffic { .. } | PipelineError::Schedule { .. } => {
                ApiError::invalid(error.to_string())
            }
            error @ (PipelineError::Dataset(_)
            | PipelineError::Embed(_)
            | PipelineError::Drift(_)
            | PipelineError::StepFailed { .. }
            | PipelineError::Json(_)) => ApiError::internal(&error),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        match error {
            JobError::UnknownJob(_) => ApiError::not_found(error.to_string()),
            JobError::InvalidJobId(_)
            | JobError::EmptyJob
            | JobError::InvalidIdempotencyKey { .. } => ApiError::invalid(error.to_string()),
            JobError::IdempotencyConflict { .. } => ApiError::conflict(error.to_string()),
            JobError::Storage(storage) => ApiError::from(storage),
            error @ (JobError::InvalidOption { .. }
            | JobError::Corrupt { .. }
            | JobError::Json(_)) => ApiError::internal(&error),
        }
    }
}

impl From<ServerError> for ApiError {
    fn from(error: ServerError) -> Self {
        match error {
            ServerError::UnknownProduct(_) | ServerError::UnknownUser(_) => {
                ApiError::not_found(error.to_string())
            }
            ServerError::ProductExists(_)
            | ServerError::NotClassifiedYet(_)
            | ServerError::UserExists(_) => ApiError::conflict(error.to_string()),
            ServerError::InvalidInput(message) => ApiError::invalid(message),
            ServerError::Model(model) => ApiError::from(model),
            ServerError::Pipeline(pipeline) => ApiError::from(pipeline),
            ServerError::Registry(registry) => ApiError::from(registry),
            ServerError::Jobs(jobs) => ApiError::from(jobs),
            ServerError::Storage(storage) => ApiError::from(storage),
            error @ (ServerError::InvalidSetting { .. }
            | ServerError::Listen { .. }
            | ServerError::Io { .. }
            | ServerError::PasswordHash(_)
            | ServerError::Corrupt { .. }) => ApiError::internal(&error),
        }
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
        let error = ApiError::from(ModelError::Image(VisionError::ImageTooLarge {
            width: 20_000,
            height: 20_000,
            pixels: 400_000_000,
            limit: 40_000_000,
        }));
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
    }
}
