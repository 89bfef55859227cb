//! The product classifier as a whole: the text branch, the image branch and their late fusion,
//! packaged as immutable, hash-verified model bundles; training from a dataset version,
//! evaluation, and prediction for one product or many.
//!
//! Heavy pieces come from their own crates (`prodcat-text-model`, `prodcat-vision`,
//! `prodcat-metrics`); this crate decides how they fit together.

use prodcat_domain::ErrorKind;

mod bundle;
mod classifier;
mod evaluation;
mod features;
mod fusion;
mod profile;
mod training;

pub use bundle::{
    load_bundle, write_bundle, BundleFile, BundleManifest, FusionSettings, ImageBranch,
    ModelBundle, BUNDLE_FORMAT_VERSION,
};
pub use classifier::{
    decode_image, probe_image, Branch, Combined, InputLimits, ProductClassifier, ProductInput,
    ProductPrediction, ScoredCode, DEFAULT_MAX_IMAGE_PIXELS,
};
pub use evaluation::{evaluate_rows, BranchEvaluation, EvaluationReport, LabelledProduct};
pub use features::{FeatureCache, ImageBackbone};
pub use fusion::{
    automation_threshold, fit_fused_temperature, fuse, tune_fusion_weight, ThresholdChoice,
};
pub use prodcat_vision::{BackboneChoice, BackboneKind};
pub use profile::{
    observation_for, out_of_vocabulary_share, reference_profile, ReferenceRow, StoredProfile,
    PROFILE_COMPONENTS,
};
pub use training::{train_model, BranchSelection, TrainOptions, TrainingOutcome, TrainingProgress};

/// Errors from building, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model bundle {version}: file {file} is corrupt (sha256 {actual}, manifest says {expected})")]
    CorruptBundle {
        version: String,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("model bundle {version} is invalid: {reason}")]
    InvalidBundle { version: String, reason: String },
    #[error("model version {0} has no bundle in the object store")]
    MissingBundle(String),
    #[error("the product has no usable input: the designation and description are empty and there is no image")]
    EmptyInput,
    #[error("this model has no {0} branch")]
    MissingBranch(&'static str),
    #[error("the image branch needs the pretrained image backbone, which is not loaded (run scripts/setup)")]
    BackboneUnavailable,
    #[error("the {field} is {length} bytes long; at most {limit} bytes are accepted")]
    TooLong {
        field: &'static str,
        length: usize,
        limit: usize,
    },
    #[error("image: {0}")]
    Image(#[from] prodcat_vision::VisionError),
    #[error("text model: {0}")]
    Text(#[from] prodcat_text_model::TextModelError),
    #[error("metrics: {0}")]
    Metrics(#[from] prodcat_metrics::MetricsError),
    #[error("drift profile: {0}")]
    Profile(#[from] prodcat_drift::DriftError),
    #[error("training data: {0}")]
    TrainingData(String),
    #[error(transparent)]
    Dataset(#[from] prodcat_dataset::DatasetError),
    #[error(transparent)]
    Storage(#[from] prodcat_storage::StorageError),
    #[error("serialisation: {0}")]
    Json(#[from] serde_json::Error),
}

impl ModelError {
    /// Whose fault the error is: the product's (nothing to classify, an unusable image, a branch
    /// the model lacks), a dependency's for now (the backbone not loaded, storage unreachable),
    /// or the system's (a corrupt or missing bundle, a bug).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ModelError::EmptyInput | ModelError::MissingBranch(_) | ModelError::TooLong { .. } => {
                ErrorKind::Input
            }
            ModelError::Image(vision) => vision_error_kind(vision),
            ModelError::BackboneUnavailable => ErrorKind::Unavailable,
            ModelError::Storage(storage) => storage.kind(),
            ModelError::Dataset(prodcat_dataset::DatasetError::Storage(storage)) => storage.kind(),
            ModelError::CorruptBundle { .. }
            | ModelError::InvalidBundle { .. }
            | ModelError::MissingBundle(_)
            | ModelError::Text(_)
            | ModelError::Metrics(_)
            | ModelError::Profile(_)
            | ModelError::TrainingData(_)
            | ModelError::Dataset(_)
            | ModelError::Json(_) => ErrorKind::Internal,
        }
    }

    /// Whether this is an image refused for its size (bytes or pixels).
    pub fn is_image_too_large(&self) -> bool {
        matches!(
            self,
            ModelError::Image(
                prodcat_vision::VisionError::EncodedImageTooLarge { .. }
                    | prodcat_vision::VisionError::ImageTooLarge { .. }
            )
        )
    }

    /// Whether this is an image that cannot be read (empty, unknown format, corrupt).
    pub fn is_unreadable_image(&self) -> bool {
        matches!(self, ModelError::Image(_))
            && self.kind() == ErrorKind::Input
            && !self.is_image_too_large()
    }

    /// Whether the product itself is the problem: trying again cannot help.
    pub fn concerns_the_input(&self) -> bool {
        self.kind() == ErrorKind::Input
    }
}

/// An image that cannot be read or is too large is the input's fault; a problem with the
/// network's files or its run is the system's.
fn vision_error_kind(error: &prodcat_vision::VisionError) -> ErrorKind {
    use prodcat_vision::VisionError;
    match error {
        VisionError::EmptyImage
        | VisionError::UnrecognisedImageFormat { .. }
        | VisionError::ImageDimensionZero { .. }
        | VisionError::ImageDecode { .. }
        | VisionError::EncodedImageTooLarge { .. }
        | VisionError::ImageTooLarge { .. } => ErrorKind::Input,
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
        | VisionError::FeatureSizeMismatch { .. }
        | VisionError::UnknownBackbone { .. }
        | VisionError::BackboneMismatch { .. } => ErrorKind::Internal,
    }
}
