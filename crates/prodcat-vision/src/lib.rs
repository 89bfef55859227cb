//! prodcat's image branch.
//!
//! - [`backbone`]: the pretrained backbones by name (`mobilenet-v2`, `efficientnet-lite0/1/2`),
//!   each with its input size and pixel normalisation;
//! - [`weights`]: load a verified model directory (safetensors + manifest);
//! - [`network`]: any backbone as a tract NHWC graph giving 1280-d features and ImageNet
//!   logits, run on all cores with one single-threaded state per worker; [`efficientnet`] builds
//!   the EfficientNet-Lite graphs;
//! - [`preprocess`]: bounded JPEG/PNG decoding, white-border crop, resize, normalisation;
//! - [`extractor`]: encoded bytes or files in, features out, in parallel, in input order,
//!   optionally averaged with the mirror image;
//! - [`head`]: the trained classifier on the features (logistic regression or one-hidden-layer
//!   MLP) with class weights, early stopping and a versioned binary format.
//!
//! Model directories are written by `scripts/models/fetch-mobilenet.py` and
//! `scripts/models/fetch-efficientnet.py` (both run by `scripts/setup`).

pub mod backbone;
pub mod efficientnet;
pub mod error;
pub mod extractor;
pub mod head;
pub mod network;
pub mod preprocess;
mod random;
pub mod weights;

pub use backbone::{BackboneChoice, BackboneKind, NetworkInput, Normalization};
pub use error::{Result, VisionError};
pub use extractor::ImageFeatureExtractor;
pub use head::{HeadKind, HeadTrainingOptions, ImageHead, TrainingReport};
pub use network::{
    default_thread_count, softmax, BackboneNetwork, MobileNetV2, NetworkOutput, FEATURE_DIMENSION,
    IMAGENET_CLASS_COUNT, INPUT_SIZE,
};
pub use preprocess::{
    BorderCropOptions, PreparedImage, PreprocessOptions, Preprocessor, ResizeGeometry, RgbPicture,
    ShownSquare,
};
pub use weights::{
    default_backbone_directory, default_mobilenet_directory, model_root_from_environment,
    BackboneWeights, MobileNetWeights, ModelManifest,
};
