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
mod training;

pub use bundle::{
    load_bundle, write_bundle, BundleFile, BundleManifest, FusionSettings, ImageBranch,
    ModelBundle, BUNDLE_FORMAT_VERSION,
};
pub use classifier::{
    Branch, Combined, ProductClassifier, ProductInput, ProductPrediction, ScoredCode,
};
pub use evaluation::{evaluate_rows, BranchEvaluation, EvaluationReport, LabelledProduct};
pub use features::{FeatureCache, ImageBackbone};
pub use fusion::{
    automation_threshold, fit_fused_temperature, fuse, tune_fusion_weight, ThresholdChoice,
};
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
    /// Whether the product itself is the problem (nothing to classify, an unusable image, a
    /// branch the model lacks): trying again cannot help. Every other error is about the model
    /// or the storage behind it and may pass (a bundle being replaced, a store that is back).
    pub fn concerns_the_input(&self) -> bool {
        match self {
            ModelError::EmptyInput | ModelError::MissingBranch(_) | ModelError::Image(_) => true,
            ModelError::BackboneUnavailable
            | ModelError::CorruptBundle { .. }
            | ModelError::InvalidBundle { .. }
            | ModelError::MissingBundle(_)
            | ModelError::Text(_)
            | ModelError::Metrics(_)
            | ModelError::Profile(_)
            | ModelError::TrainingData(_)
            | ModelError::Dataset(_)
            | ModelError::Storage(_)
            | ModelError::Json(_) => false,
        }
    }
}
