//! The crate's error type: every failure names the file, tensor or image property at fault.

use std::path::PathBuf;

/// Everything that can go wrong while loading the network, preparing images, extracting
/// features or training and loading the image head.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("model file {path} is missing (run `scripts/setup` or point PRODCAT_MODEL_DIR at a directory holding it)")]
    ModelFileMissing { path: PathBuf },

    #[error("cannot read {path}: {source}")]
    FileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("manifest {path} is invalid: {reason}")]
    ManifestInvalid { path: PathBuf, reason: String },

    #[error("checksum mismatch for {path}: manifest says sha256 {expected}, file has {actual}")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("weights file {path} is not valid safetensors: {reason}")]
    WeightsUnreadable { path: PathBuf, reason: String },

    #[error("weights lack tensor {name}")]
    TensorMissing { name: String },

    #[error("tensor {name} has shape {actual:?}, expected {expected:?}")]
    TensorShapeMismatch {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    #[error("tensor {name} has dtype {dtype}; only F32 and F64 weights are supported")]
    TensorDtypeUnsupported { name: String, dtype: String },

    #[error("unknown image backbone {name:?} (known: {})", known.join(", "))]
    UnknownBackbone {
        name: String,
        known: Vec<&'static str>,
    },

    #[error("model directory {path} holds {found}, not {expected}")]
    BackboneMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },

    #[error("cannot build the network graph: {reason}")]
    GraphConstruction { reason: String },

    #[error("network inference failed: {reason}")]
    Inference { reason: String },

    #[error("input tensor has {actual} values, expected {expected} (side x side x 3, NHWC)")]
    InputSizeMismatch { expected: usize, actual: usize },

    #[error("image is empty (0 bytes)")]
    EmptyImage,

    #[error("encoded image is {bytes} bytes, above the limit of {limit} bytes")]
    EncodedImageTooLarge { bytes: u64, limit: u64 },

    #[error("bytes are not a supported image (JPEG or PNG expected; first bytes {leading_bytes})")]
    UnrecognisedImageFormat { leading_bytes: String },

    #[error("image is {width}x{height} = {pixels} pixels, above the limit of {limit} pixels")]
    ImageTooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },

    #[error("image has a zero dimension ({width}x{height})")]
    ImageDimensionZero { width: u32, height: u32 },

    #[error("cannot decode {format} image: {reason}")]
    ImageDecode { format: String, reason: String },

    #[error("cannot resize image: {reason}")]
    Resize { reason: String },

    #[error("invalid training data for the image head: {reason}")]
    HeadTrainingData { reason: String },

    #[error("invalid image head parameters: {reason}")]
    HeadParameters { reason: String },

    #[error("image head file is invalid: {reason}")]
    HeadFormat { reason: String },

    #[error(
        "image head format version {found} is not supported (this build reads version {supported})"
    )]
    HeadVersionUnsupported { found: u32, supported: u32 },

    #[error("feature vector has {actual} values, the head expects {expected}")]
    FeatureSizeMismatch { expected: usize, actual: usize },
}

/// Result alias used across the crate.
pub type Result<T, E = VisionError> = std::result::Result<T, E>;
