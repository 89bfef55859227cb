//! The product classifier as a whole: the text branch, the image branch and their late fusion,
//! packaged as immutable, hash-verified model bundles; training from a dataset version,
//! evaluation, and prediction for one product or many.
//!
//! Heavy pieces come from their own crates (`prodcat-text-model`, `prodcat-vision`,
//! `prodcat-metrics`); this crate decides how they fit together.

mod bundle;
mod classifier;
mod evaluation;
mod features;
mod fusion;
mod profile;
mod text_embeddings;
mod training;

use prodcat_domain::ErrorKind;
use prodcat_vision::VisionError;

pub use bundle::{
    load_bundle, write_bundle, BundleFile, BundleManifest, FusionSettings, ImageBranch,
    ModelBundle, TuningSummary, BUNDLE_FORMAT_VERSION, OLDEST_BUNDLE_FORMAT_VERSION,
};
pub use classifier::{
    decode_image, probe_image, Branch, Combined, InputLimits, PhotoRegions, ProductClassifier,
    ProductInput, ProductPrediction, ScoredCode, DEFAULT_MAX_IMAGE_PIXELS, OCCLUSION_GRID,
};
pub use evaluation::{
    evaluate_rows, BranchEvaluation, ClassEvaluation, EvaluationReport, LabelledProduct,
};
pub use features::{FeatureCache, ImageBackbone, OcclusionFeatures};
pub use fusion::{
    automation_threshold, automation_threshold_bounded, choose_stacked_fusion,
    fit_fused_temperature, fuse, tune_fusion_weight, wilson_lower_bound, StackedFusion,
    StackingChoice, StackingOptions, ThresholdChoice, PRECISION_BOUND_Z,
};
pub use prodcat_vision::{BackboneChoice, BackboneKind};
pub use profile::{
    embedding_text, observation_for, out_of_vocabulary_share, reference_profile, stratified_sample,
    ObservationBasis, ObservedProduct, ReferenceRow, StoredProfile, EMBEDDED_TEXT_CHARACTERS,
    MAX_EMBEDDED_TEXTS, PROFILE_COMPONENTS,
};
pub use text_embeddings::{
    choose_companion_scale, companion_features, companion_text, companion_vectors,
    CompanionVectors, ScaleScore, COMPANION_SCALES, COMPANION_SCALE_FOLDS,
    COMPANION_TEXT_CHARACTERS,
};
pub use training::{
    BranchSelection, CrossValidation, TrainOptions, Trainer, TrainingOutcome, TrainingProgress,
    TrainingResources, DEFAULT_CROSS_VALIDATION_SEED,
};

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
    #[error("the text branch takes sentence-embedding features, and the multilingual-e5-small model is not loaded (run scripts/setup)")]
    TextEmbedderUnavailable,
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
    /// Whose fault the error is.
    ///
    /// - `Input`: nothing to classify, a branch the model lacks, a text over its length limit,
    ///   an image that cannot be decoded or is too large.
    /// - `Unavailable`: the image backbone is not loaded; storage that cannot be reached now.
    /// - `Internal`: everything about the model itself. A bundle (or a file of one) missing from
    ///   the object store is not the caller's `NotFound`: the registry named a version whose
    ///   files the system should hold, so the system is inconsistent, and waiting does not fix
    ///   it (bundles are written before they are registered, manifest last). Model-file
    ///   problems of the image branch are internal for the same reason.
    /// - A dataset error (loading the rows to train on) keeps its own kind, so a database that
    ///   times out while rows load is `Unavailable` and the training can be retried.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ModelError::EmptyInput | ModelError::MissingBranch(_) | ModelError::TooLong { .. } => {
                ErrorKind::Input
            }
            ModelError::BackboneUnavailable | ModelError::TextEmbedderUnavailable => {
                ErrorKind::Unavailable
            }
            ModelError::Image(error) => vision_error_kind(error),
            ModelError::Storage(error) => match error.kind() {
                ErrorKind::NotFound => ErrorKind::Internal,
                kind @ (ErrorKind::Input
                | ErrorKind::Conflict
                | ErrorKind::Unavailable
                | ErrorKind::Internal) => kind,
            },
            ModelError::Dataset(error) => error.kind(),
            ModelError::CorruptBundle { .. }
            | ModelError::InvalidBundle { .. }
            | ModelError::MissingBundle(_)
            | ModelError::Text(_)
            | ModelError::Metrics(_)
            | ModelError::Profile(_)
            | ModelError::TrainingData(_)
            | ModelError::Json(_) => ErrorKind::Internal,
        }
    }

    /// Whether this is an image refused for its size (bytes or pixels).
    pub fn is_image_too_large(&self) -> bool {
        matches!(
            self,
            ModelError::Image(
                VisionError::EncodedImageTooLarge { .. } | VisionError::ImageTooLarge { .. }
            )
        )
    }

    /// Whether this is an image that cannot be read (empty, unknown format, corrupt).
    pub fn is_unreadable_image(&self) -> bool {
        matches!(self, ModelError::Image(_))
            && self.kind() == ErrorKind::Input
            && !self.is_image_too_large()
    }

    /// Whether the product itself is the problem (nothing to classify, an unusable image, a
    /// branch the model lacks): trying again cannot help. Every other error is about the model
    /// or the storage behind it and may pass (a bundle being replaced, a store that is back).
    pub fn concerns_the_input(&self) -> bool {
        self.kind().concerns_the_input()
    }
}

/// An image that cannot be decoded or is too large is the caller's; a problem with the
/// backbone's or the head's files or with running them is the system's.
fn vision_error_kind(error: &VisionError) -> ErrorKind {
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

#[cfg(test)]
mod tests {
    use prodcat_storage::StorageError;

    use super::*;

    #[test]
    fn kinds_say_whose_fault_an_error_is() {
        assert_eq!(ModelError::EmptyInput.kind(), ErrorKind::Input);
        assert!(ModelError::MissingBranch("image").concerns_the_input());
        assert_eq!(
            ModelError::BackboneUnavailable.kind(),
            ErrorKind::Unavailable
        );
        let too_large = ModelError::Image(VisionError::ImageTooLarge {
            width: 20_000,
            height: 20_000,
            pixels: 400_000_000,
            limit: 40_000_000,
        });
        assert_eq!(too_large.kind(), ErrorKind::Input);
        let missing_weights = ModelError::Image(VisionError::ModelFileMissing {
            path: "models/mobilenet_v2".into(),
        });
        assert_eq!(missing_weights.kind(), ErrorKind::Internal);
        assert!(!missing_weights.concerns_the_input());
        assert_eq!(
            ModelError::MissingBundle("mv-0123456789abcdef".to_string()).kind(),
            ErrorKind::Internal
        );
        let missing_file = ModelError::Storage(StorageError::ObjectNotFound {
            key: "models/mv-0123456789abcdef/text.bin".to_string(),
        });
        assert_eq!(missing_file.kind(), ErrorKind::Internal);
    }
}
