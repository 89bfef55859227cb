//! Model bundles: an immutable set of files (text classifier, image head, fusion settings,
//! reference profile, evaluation) described by a manifest holding the sha256 of every file.
//!
//! The version id is derived from the manifest's content, so training the same data with the same
//! parameters gives the same id. Loading verifies every hash and refuses a corrupt bundle; the
//! manifest is written last, so a bundle interrupted while being written is never loadable.

use std::collections::BTreeMap;

use bytes::Bytes;
use prodcat_domain::{sha256_hex, CategoryCode, DatasetVersionId, ModelVersionId};
use prodcat_metrics::TemperatureScaling;
use prodcat_storage::ObjectStorage;
use prodcat_text_model::TextClassifier;
use prodcat_vision::{BackboneChoice, ImageHead};
use serde::{Deserialize, Serialize};

use crate::fusion::StackedFusion;
use crate::ModelError;

/// Version of the bundle layout. 2: the fusion settings may hold a stacked combiner (a build
/// that only knows 1 would ignore it and fuse wrongly, so it refuses these bundles); bundles of
/// format 1 still load.
pub const BUNDLE_FORMAT_VERSION: u32 = 2;

/// The oldest bundle layout this build still reads.
pub const OLDEST_BUNDLE_FORMAT_VERSION: u32 = 1;

const TEXT_FILE: &str = "text-classifier.bin";
const IMAGE_FILE: &str = "image-head.bin";
const FUSION_FILE: &str = "fusion.json";
const PROFILE_FILE: &str = "reference-profile.json";
const MANIFEST_FILE: &str = "manifest.json";

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleFile {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// What a bundle is: the manifest stored as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleManifest {
    pub format_version: u32,
    /// Empty while the id is being computed.
    pub model_version: String,
    pub label_set: Vec<u16>,
    pub dataset_version: String,
    pub code_version: String,
    pub branches: Vec<String>,
    /// Training parameters, sorted by key.
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Headline metrics on the dataset version's test split.
    pub metrics: BTreeMap<String, f64>,
    /// The pretrained image backbone the image head was trained on, if any: its features'
    /// identifier (`<name>[-flip]-<weights>`, see [`BackboneChoice::identifier`]).
    pub image_backbone: Option<String>,
    pub files: Vec<BundleFile>,
}

/// How the two branches are combined and when a decision is automatic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FusionSettings {
    /// `p = w * p_image + (1 - w) * p_text` when both branches answer.
    pub image_weight: f32,
    /// Temperature applied to the log of the fused probabilities, fitted on validation: an
    /// average of two calibrated distributions is under-confident, this restores calibration.
    #[serde(default = "unit_temperature")]
    pub fused_temperature: f64,
    /// Precision of automatic decisions the thresholds were chosen for.
    pub target_precision: f64,
    /// Confidence at or above which a prediction is automatic, per set of answering branches.
    pub threshold_fused: f32,
    pub threshold_text_only: f32,
    pub threshold_image_only: f32,
    /// Share of validation products decided automatically at those thresholds.
    pub coverage_fused: f64,
    pub coverage_text_only: f64,
    pub coverage_image_only: f64,
    /// The stacked combiner used when both branches answer (instead of `image_weight` and
    /// `fused_temperature`, which then only describe it); absent in format 1 bundles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacked: Option<StackedFusion>,
    /// How many products each choice was tuned on (out-of-fold training products and
    /// validation products), and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<TuningSummary>,
}

/// What the fusion and the thresholds were tuned on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TuningSummary {
    /// Folds of the cross-fit of the branches on the training split (0: none, validation only).
    pub folds: usize,
    /// Products with both branches' probabilities (the combiner and the fused threshold).
    pub fused_rows: usize,
    /// Products with text probabilities (the text-only threshold) and with image ones.
    pub text_rows: usize,
    pub image_rows: usize,
    /// Whether the stacked combiner beat the text branch on held-out tuning rows.
    pub stacked_kept: bool,
    /// Cross-validated weighted F1 on the tuning rows: text branch, stacked combiner.
    pub text_weighted_f1: f64,
    pub stacked_weighted_f1: f64,
    /// One-sided z of the lower confidence bound the thresholds were chosen with.
    pub precision_bound_z: f64,
}

fn unit_temperature() -> f64 {
    1.0
}

impl Default for FusionSettings {
    fn default() -> Self {
        Self {
            image_weight: 0.0,
            fused_temperature: 1.0,
            target_precision: 0.95,
            threshold_fused: 1.0,
            threshold_text_only: 1.0,
            threshold_image_only: 1.0,
            coverage_fused: 0.0,
            coverage_text_only: 0.0,
            coverage_image_only: 0.0,
            stacked: None,
            tuning: None,
        }
    }
}

/// The image branch: a trained head over backbone features and its calibration.
#[derive(Debug, Clone)]
pub struct ImageBranch {
    pub head: ImageHead,
    pub calibration: TemperatureScaling,
    /// Category of each head output.
    pub categories: Vec<CategoryCode>,
}

/// A loaded (or freshly trained) model.
#[derive(Debug, Clone)]
pub struct ModelBundle {
    pub manifest: BundleManifest,
    pub text: Option<TextClassifier>,
    pub image: Option<ImageBranch>,
    pub fusion: FusionSettings,
    /// The drift reference profile, as stored (JSON).
    pub reference_profile: Option<String>,
}

impl ModelBundle {
    pub fn version(&self) -> Result<ModelVersionId, ModelError> {
        ModelVersionId::parse(&self.manifest.model_version).map_err(|_| ModelError::InvalidBundle {
            version: self.manifest.model_version.clone(),
            reason: "the manifest has no valid model version".to_string(),
        })
    }

    pub fn dataset_version(&self) -> Option<DatasetVersionId> {
        DatasetVersionId::parse(&self.manifest.dataset_version).ok()
    }

    /// The categories the model answers with, in output order.
    pub fn categories(&self) -> Vec<CategoryCode> {
        self.manifest
            .label_set
            .iter()
            .filter_map(|code| CategoryCode::from_u16(*code).ok())
            .collect()
    }

    /// The backbone and flip averaging the image branch was trained with, which serving must
    /// use too. Bundles that name no backbone (or were written before other backbones existed)
    /// mean MobileNetV2 without flip averaging.
    pub fn image_backbone_choice(&self) -> Result<BackboneChoice, ModelError> {
        backbone_choice_of(&self.manifest)
    }
}

fn backbone_choice_of(manifest: &BundleManifest) -> Result<BackboneChoice, ModelError> {
    match &manifest.image_backbone {
        None => Ok(BackboneChoice::default()),
        Some(identifier) => {
            BackboneChoice::from_identifier(identifier).ok_or_else(|| ModelError::InvalidBundle {
                version: manifest.model_version.clone(),
                reason: format!("the image backbone {identifier:?} is not one this build knows"),
            })
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageBranchFile {
    temperature: f64,
    categories: Vec<u16>,
    /// The backbone (or two joined by `+`) the head was trained on; absent means MobileNetV2
    /// (older bundles, and MobileNetV2 bundles keep their bytes and so their version ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backbone: Option<String>,
    /// Whether the features were averaged with the mirror image's; absent means no.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    flip_averaging: bool,
}

impl ImageBranchFile {
    fn choice(&self, version: &str) -> Result<BackboneChoice, ModelError> {
        let choice = match &self.backbone {
            None => BackboneChoice::default(),
            Some(name) => {
                BackboneChoice::parse(name).map_err(|error| ModelError::InvalidBundle {
                    version: version.to_string(),
                    reason: error.to_string(),
                })?
            }
        };
        Ok(choice.with_flip_averaging(self.flip_averaging))
    }
}

fn bundle_prefix(version: &str) -> String {
    format!("models/{version}")
}

/// Serialises the bundle's parts, computes the version id and writes everything (manifest last).
/// Returns the bundle with its manifest completed.
pub async fn write_bundle(
    objects: &ObjectStorage,
    mut bundle: ModelBundle,
) -> Result<ModelBundle, ModelError> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    if let Some(text) = &bundle.text {
        files.insert(TEXT_FILE.to_string(), text.to_bytes());
    }
    if let Some(image) = &bundle.image {
        let mut bytes = image.head.to_bytes();
        // The head file is followed by a small JSON trailer with the calibration and the
        // backbone choice, length-prefixed.
        let choice = backbone_choice_of(&bundle.manifest)?;
        let trailer = serde_json::to_vec(&ImageBranchFile {
            temperature: image.calibration.temperature,
            categories: image.categories.iter().map(|c| c.value()).collect(),
            backbone: (choice.kind != prodcat_vision::BackboneKind::default()
                || choice.appended.is_some())
            .then(|| choice.name()),
            flip_averaging: choice.flip_averaging,
        })?;
        bytes.extend_from_slice(&trailer);
        bytes.extend_from_slice(&(trailer.len() as u64).to_le_bytes());
        files.insert(IMAGE_FILE.to_string(), bytes);
    }
    files.insert(
        FUSION_FILE.to_string(),
        serde_json::to_vec_pretty(&bundle.fusion)?,
    );
    if let Some(profile) = &bundle.reference_profile {
        files.insert(PROFILE_FILE.to_string(), profile.as_bytes().to_vec());
    }
    // Only a bundle with a stacked combiner needs the new layout; others stay readable by
    // builds that know format 1 only.
    bundle.manifest.format_version = if bundle.fusion.stacked.is_some() {
        BUNDLE_FORMAT_VERSION
    } else {
        OLDEST_BUNDLE_FORMAT_VERSION
    };
    bundle.manifest.files = files
        .iter()
        .map(|(name, bytes)| BundleFile {
            name: name.clone(),
            sha256: sha256_hex(bytes),
            bytes: bytes.len() as u64,
        })
        .collect();
    bundle.manifest.model_version = String::new();
    let unsigned = serde_json::to_vec(&bundle.manifest)?;
    let version = ModelVersionId::from_hash(&sha256_hex(&unsigned));
    bundle.manifest.model_version = version.to_string();
    let prefix = bundle_prefix(version.as_str());
    for (name, bytes) in files {
        objects
            .put(&format!("{prefix}/{name}"), Bytes::from(bytes))
            .await?;
    }
    objects
        .put(
            &format!("{prefix}/{MANIFEST_FILE}"),
            Bytes::from(serde_json::to_vec_pretty(&bundle.manifest)?),
        )
        .await?;
    Ok(bundle)
}

/// Loads and verifies a bundle. Any file whose hash differs from the manifest is refused.
pub async fn load_bundle(
    objects: &ObjectStorage,
    version: &ModelVersionId,
) -> Result<ModelBundle, ModelError> {
    let prefix = bundle_prefix(version.as_str());
    let manifest_bytes = match objects.get(&format!("{prefix}/{MANIFEST_FILE}")).await {
        Ok(bytes) => bytes,
        Err(prodcat_storage::StorageError::ObjectNotFound { .. }) => {
            return Err(ModelError::MissingBundle(version.to_string()))
        }
        Err(error) => return Err(error.into()),
    };
    let invalid = |reason: String| ModelError::InvalidBundle {
        version: version.to_string(),
        reason,
    };
    let manifest: BundleManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|error| invalid(format!("manifest.json is not readable: {error}")))?;
    if !(OLDEST_BUNDLE_FORMAT_VERSION..=BUNDLE_FORMAT_VERSION).contains(&manifest.format_version) {
        return Err(invalid(format!(
            "format version {} is not supported (this build reads {OLDEST_BUNDLE_FORMAT_VERSION} to {BUNDLE_FORMAT_VERSION})",
            manifest.format_version
        )));
    }
    let mut unsigned = manifest.clone();
    unsigned.model_version = String::new();
    let expected_id = ModelVersionId::from_hash(&sha256_hex(&serde_json::to_vec(&unsigned)?));
    if expected_id != *version || manifest.model_version != version.as_str() {
        return Err(invalid(
            "the manifest does not match its version id (it was modified)".to_string(),
        ));
    }
    let mut files: BTreeMap<String, Bytes> = BTreeMap::new();
    for file in &manifest.files {
        let bytes = objects.get(&format!("{prefix}/{}", file.name)).await?;
        let actual = sha256_hex(&bytes);
        if actual != file.sha256 {
            return Err(ModelError::CorruptBundle {
                version: version.to_string(),
                file: file.name.clone(),
                expected: file.sha256.clone(),
                actual,
            });
        }
        files.insert(file.name.clone(), bytes);
    }
    let text = files
        .get(TEXT_FILE)
        .map(|bytes| TextClassifier::from_bytes(bytes))
        .transpose()?;
    let image = match files.get(IMAGE_FILE) {
        None => None,
        Some(bytes) => {
            if bytes.len() < 8 {
                return Err(invalid("the image head file is truncated".to_string()));
            }
            let trailer_length =
                u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().unwrap_or([0; 8])) as usize;
            if trailer_length + 8 > bytes.len() {
                return Err(invalid("the image head file is truncated".to_string()));
            }
            let head_end = bytes.len() - 8 - trailer_length;
            let trailer: ImageBranchFile =
                serde_json::from_slice(&bytes[head_end..bytes.len() - 8])?;
            let recorded = trailer.choice(version.as_str())?;
            let declared = backbone_choice_of(&manifest)?;
            if recorded != declared {
                return Err(invalid(format!(
                    "the image branch was trained on {recorded} but the manifest names {declared}"
                )));
            }
            let categories = trailer
                .categories
                .iter()
                .map(|code| CategoryCode::from_u16(*code))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| invalid(error.to_string()))?;
            Some(ImageBranch {
                head: ImageHead::from_bytes(&bytes[..head_end])?,
                calibration: TemperatureScaling {
                    temperature: trailer.temperature,
                },
                categories,
            })
        }
    };
    let fusion: FusionSettings = match files.get(FUSION_FILE) {
        Some(bytes) => serde_json::from_slice(bytes)?,
        None => FusionSettings::default(),
    };
    let as_text = |name: &str| {
        files
            .get(name)
            .map(|bytes| String::from_utf8_lossy(bytes).to_string())
    };
    if text.is_none() && image.is_none() {
        return Err(invalid(
            "the bundle has neither a text nor an image branch".to_string(),
        ));
    }
    Ok(ModelBundle {
        reference_profile: as_text(PROFILE_FILE),
        manifest,
        text,
        image,
        fusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prodcat_vision::{BackboneKind, HeadKind, HeadTrainingOptions};

    fn image_bundle(image_backbone: Option<&str>) -> ModelBundle {
        let categories: Vec<CategoryCode> = CategoryCode::all().take(2).collect();
        let features: Vec<Vec<f32>> = (0..40)
            .map(|index| vec![(index % 2) as f32, 1.0 - (index % 2) as f32, 0.5])
            .collect();
        let labels: Vec<usize> = (0..40).map(|index| index % 2).collect();
        let options = HeadTrainingOptions {
            kind: HeadKind::LogisticRegression,
            max_epochs: 3,
            ..HeadTrainingOptions::default()
        };
        let (head, _) = ImageHead::train(&features, &labels, 2, &options).expect("head");
        ModelBundle {
            manifest: BundleManifest {
                format_version: BUNDLE_FORMAT_VERSION,
                model_version: String::new(),
                label_set: categories.iter().map(|c| c.value()).collect(),
                dataset_version: "dv-0000000000000000".to_string(),
                code_version: "test".to_string(),
                branches: vec!["image".to_string()],
                parameters: BTreeMap::new(),
                metrics: BTreeMap::new(),
                image_backbone: image_backbone.map(str::to_string),
                files: Vec::new(),
            },
            text: None,
            image: Some(ImageBranch {
                head,
                calibration: TemperatureScaling::identity(),
                categories,
            }),
            fusion: FusionSettings::default(),
            reference_profile: None,
        }
    }

    fn trailer_of(bytes: &[u8]) -> serde_json::Value {
        let length = u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().expect("8 bytes"));
        let start = bytes.len() - 8 - length as usize;
        serde_json::from_slice(&bytes[start..bytes.len() - 8]).expect("trailer")
    }

    #[tokio::test]
    async fn the_image_branch_records_its_backbone_choice() {
        let folder =
            std::env::temp_dir().join(format!("prodcat-bundle-backbone-{}", std::process::id()));
        let objects = ObjectStorage::open(folder.to_str().expect("utf-8")).expect("objects");
        let check = |identifier: Option<&'static str>, expected: BackboneChoice| {
            let objects = objects.clone();
            async move {
                let written = write_bundle(&objects, image_bundle(identifier))
                    .await
                    .expect("write");
                let version = written.version().expect("version");
                let loaded = load_bundle(&objects, &version).await.expect("load");
                assert_eq!(loaded.image_backbone_choice().expect("choice"), expected);
                let bytes = objects
                    .get(&format!("models/{version}/{IMAGE_FILE}"))
                    .await
                    .expect("image file");
                trailer_of(&bytes)
            }
        };
        // Bundles that name no backbone, and MobileNetV2 ones, mean MobileNetV2 without flip and
        // keep the trailer they always had.
        for identifier in [None, Some("mobilenet-v2-a9ecad95f7d4")] {
            let trailer = check(identifier, BackboneChoice::default()).await;
            assert!(trailer.get("backbone").is_none(), "{trailer}");
            assert!(trailer.get("flipAveraging").is_none(), "{trailer}");
        }
        let trailer = check(
            Some("efficientnet-lite1-flip-596a05ee7b95"),
            BackboneChoice::new(BackboneKind::EfficientNetLite1, true),
        )
        .await;
        assert_eq!(trailer["backbone"], "efficientnet-lite1");
        assert_eq!(trailer["flipAveraging"], true);

        // A backbone this build does not know is refused rather than served with the wrong one.
        let error = write_bundle(&objects, image_bundle(Some("resnet-50-0123")))
            .await
            .expect_err("unknown backbone");
        assert!(matches!(error, ModelError::InvalidBundle { .. }), "{error}");
        let _ = std::fs::remove_dir_all(&folder);
    }
}
