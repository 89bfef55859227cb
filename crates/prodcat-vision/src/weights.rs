//! Loading backbone weights from a model directory: the manifest, its checksum, the
//! safetensors file and (optionally) the ImageNet class names.
//!
//! A model directory holds:
//! - `manifest.json` with at least `weights_file` (usually `model.safetensors`) and
//!   `weights_sha256`; `class_names_file` is optional, and so is `architecture`
//!   (`mobilenet_v2`, `efficientnet_lite0`, ...: when present it must match the backbone
//!   asked for);
//! - the safetensors file with the PyTorch state-dict names of the backbone: torchvision's for
//!   MobileNetV2 (`features.0.0.weight`, `features.0.1.running_mean`, ..., `classifier.1.bias`),
//!   the EfficientNet PyTorch port's for EfficientNet-Lite (`_conv_stem.weight`, `_bn0.*`,
//!   `_blocks.N._expand_conv.weight`, ..., `_fc.bias`); convolution kernels in PyTorch's OIHW
//!   layout, batch norm not folded.
//!
//! `scripts/models/fetch-mobilenet.py` and `scripts/models/fetch-efficientnet.py` produce such
//! directories; any directory with the same tensor names and a manifest naming the weights and
//! their sha256 is accepted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::backbone::BackboneKind;
use crate::error::{Result, VisionError};

/// Name of the MobileNetV2 folder inside the model root.
pub const MOBILENET_DIRECTORY_NAME: &str = "mobilenet-v2";

/// The model root: `$PRODCAT_MODEL_DIR` when set, otherwise `models/` at the workspace root.
pub fn model_root_from_environment() -> PathBuf {
    match std::env::var_os("PRODCAT_MODEL_DIR") {
        Some(directory) if !directory.is_empty() => PathBuf::from(directory),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"),
    }
}

/// `<model root>/mobilenet-v2`, the directory `fetch-mobilenet.py` writes.
pub fn default_mobilenet_directory() -> PathBuf {
    model_root_from_environment().join(MOBILENET_DIRECTORY_NAME)
}

/// `<model root>/<backbone name>`, the directory the setup scripts write for `backbone`.
pub fn default_backbone_directory(backbone: BackboneKind) -> PathBuf {
    model_root_from_environment().join(backbone.as_str())
}

/// The fields of `manifest.json` this crate reads (others are kept by the file, ignored here).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ModelManifest {
    #[serde(default = "default_format_version")]
    pub format_version: u32,
    #[serde(default)]
    pub architecture: Option<String>,
    pub weights_file: String,
    pub weights_sha256: String,
    #[serde(default)]
    pub tensor_count: Option<usize>,
    #[serde(default)]
    pub class_names_file: Option<String>,
}

fn default_format_version() -> u32 {
    1
}

/// One float tensor, converted to f32, in its stored (PyTorch) layout.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// All tensors of a checkpoint by name, plus what the manifest said about them.
#[derive(Debug, Clone)]
pub struct BackboneWeights {
    tensors: HashMap<String, WeightTensor>,
    manifest: Option<ModelManifest>,
    class_names: Option<Vec<String>>,
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            VisionError::ModelFileMissing {
                path: path.to_path_buf(),
            }
        } else {
            VisionError::FileUnreadable {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Lower-case hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The name this type had when MobileNetV2 was the only backbone.
pub type MobileNetWeights = BackboneWeights;

impl BackboneWeights {
    /// Load a model directory: read the manifest, verify the weights' sha256, parse them.
    pub fn load_directory(directory: &Path) -> Result<Self> {
        let manifest_path = directory.join("manifest.json");
        let manifest_bytes = read_file(&manifest_path)?;
        let manifest: ModelManifest = serde_json::from_slice(&manifest_bytes).map_err(|error| {
            VisionError::ManifestInvalid {
                path: manifest_path.clone(),
                reason: error.to_string(),
            }
        })?;
        let expected = manifest.weights_sha256.trim().to_ascii_lowercase();
        if expected.len() != 64 || !expected.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(VisionError::ManifestInvalid {
                path: manifest_path,
                reason: format!("weights_sha256 {expected:?} is not a 64-digit hex sha256"),
            });
        }
        if manifest.weights_file.contains("..") || Path::new(&manifest.weights_file).is_absolute() {
            return Err(VisionError::ManifestInvalid {
                path: manifest_path,
                reason: format!(
                    "weights_file {:?} must be a relative path inside the directory",
                    manifest.weights_file
                ),
            });
        }
        let weights_path = directory.join(&manifest.weights_file);
        let weights_bytes = read_file(&weights_path)?;
        let actual = sha256_hex(&weights_bytes);
        if actual != expected {
            return Err(VisionError::ChecksumMismatch {
                path: weights_path,
                expected,
                actual,
            });
        }
        let mut weights = Self::from_safetensors_bytes(&weights_bytes, &weights_path)?;
        if let Some(count) = manifest.tensor_count {
            if count != weights.tensors.len() {
                return Err(VisionError::ManifestInvalid {
                    path: manifest_path,
                    reason: format!(
                        "tensor_count is {count} but {} holds {} float tensors",
                        weights_path.display(),
                        weights.tensors.len()
                    ),
                });
            }
        }
        if let Some(file) = &manifest.class_names_file {
            let path = directory.join(file);
            let bytes = read_file(&path)?;
            let names: Vec<String> =
                serde_json::from_slice(&bytes).map_err(|error| VisionError::ManifestInvalid {
                    path: path.clone(),
                    reason: format!("class names are not a JSON list of strings: {error}"),
                })?;
            weights.class_names = Some(names);
        }
        weights.manifest = Some(manifest);
        Ok(weights)
    }

    /// Parse safetensors bytes (no checksum check; `origin` only names the source in errors).
    pub fn from_safetensors_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let unreadable = |reason: String| VisionError::WeightsUnreadable {
            path: origin.to_path_buf(),
            reason,
        };
        let file = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|error| unreadable(error.to_string()))?;
        let mut tensors = HashMap::new();
        for (name, view) in file.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
                    .collect(),
                safetensors::Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|chunk| {
                        let mut raw = [0u8; 8];
                        raw.copy_from_slice(chunk);
                        f64::from_le_bytes(raw) as f32
                    })
                    .collect(),
                // Integer tensors are training counters (num_batches_tracked): not weights.
                safetensors::Dtype::I64 | safetensors::Dtype::I32 => continue,
                other => {
                    return Err(VisionError::TensorDtypeUnsupported {
                        name,
                        dtype: format!("{other:?}"),
                    })
                }
            };
            tensors.insert(
                name,
                WeightTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        Ok(Self {
            tensors,
            manifest: None,
            class_names: None,
        })
    }

    /// Build from tensors already in memory (tests, other converters).
    pub fn from_tensors(tensors: HashMap<String, WeightTensor>) -> Self {
        Self {
            tensors,
            manifest: None,
            class_names: None,
        }
    }

    /// The tensor called `name`, checked against the expected shape.
    pub fn tensor(&self, name: &str, expected_shape: &[usize]) -> Result<&WeightTensor> {
        let tensor = self
            .tensors
            .get(name)
            .ok_or_else(|| VisionError::TensorMissing {
                name: name.to_string(),
            })?;
        if tensor.shape != expected_shape {
            return Err(VisionError::TensorShapeMismatch {
                name: name.to_string(),
                expected: expected_shape.to_vec(),
                actual: tensor.shape.clone(),
            });
        }
        Ok(tensor)
    }

    /// Shape of a tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|tensor| tensor.shape.as_slice())
    }

    /// Number of float tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when no float tensor was loaded.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The manifest, when loaded from a directory.
    pub fn manifest(&self) -> Option<&ModelManifest> {
        self.manifest.as_ref()
    }

    /// ImageNet class names, when the directory ships them.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// The architecture the manifest declares, if it declares one.
    pub fn declared_architecture(&self) -> Option<&str> {
        self.manifest
            .as_ref()
            .and_then(|manifest| manifest.architecture.as_deref())
    }

    /// The backbone the manifest declares: `None` when it declares none, an error when it
    /// declares one this crate does not know.
    pub fn declared_backbone(&self) -> Result<Option<BackboneKind>> {
        match self.declared_architecture() {
            None => Ok(None),
            Some(architecture) => BackboneKind::from_architecture(architecture)
                .map(Some)
                .ok_or_else(|| VisionError::UnknownBackbone {
                    name: architecture.to_string(),
                    known: BackboneKind::ALL
                        .iter()
                        .map(|kind| kind.architecture())
                        .collect(),
                }),
        }
    }
}
