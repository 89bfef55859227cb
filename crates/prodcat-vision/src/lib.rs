//! prodcat's image branch.
//!
//! - [`weights`]: load a verified MobileNetV2 model directory (safetensors + manifest);
//! - [`network`]: the pretrained MobileNetV2 as a tract NHWC graph giving 1280-d features and
//!   ImageNet logits, run on all cores with one single-threaded state per worker;
//! - [`preprocess`]: bounded JPEG/PNG decoding, white-border crop, resize, normalisation;
//! - [`extractor`]: encoded bytes or files in, features out, in parallel, in input order;
//! - [`head`]: the trained classifier on the features (logistic regression or one-hidden-layer
//!   MLP) with class weights, early stopping and a versioned binary format.
//!
//! The model directory is written by `scripts/models/fetch-mobilenet.py`.

pub mod error;
pub mod extractor;
pub mod head;
pub mod network;
pub mod preprocess;
mod random;
pub mod weights;

pub use error::{Result, VisionError};
pub use extractor::ImageFeatureExtractor;
pub use head::{HeadKind, HeadTrainingOptions, ImageHead, TrainingReport};
pub use network::{
    default_thread_count, softmax, MobileNetV2, NetworkOutput, FEATURE_DIMENSION,
    IMAGENET_CLASS_COUNT, INPUT_SIZE,
};
pub use preprocess::{
    BorderCropOptions, PreparedImage, PreprocessOptions, Preprocessor, ResizeGeometry, RgbPicture,
};
pub use weights::{
    default_mobilenet_directory, model_root_from_environment, MobileNetWeights, ModelManifest,
};
