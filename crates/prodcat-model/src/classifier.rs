//! Prediction with a loaded bundle: the text branch, the image branch (through the shared
//! backbone), their calibrated late fusion, and the automatic-or-review decision.

use std::sync::Arc;
use std::time::Instant;

use prodcat_domain::{product_text, CategoryCode, ModelVersionId};
use prodcat_drift::features::ImageStats;
use prodcat_embed::TextEmbedder;
use prodcat_text_model::Explanation;
use serde::Serialize;

use crate::bundle::ModelBundle;
use crate::features::ImageBackbone;
use crate::ModelError;

/// Which branch produced an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Branch {
    Text,
    Image,
}

impl Branch {
    /// `text` or `image`.
    pub fn as_str(self) -> &'static str {
        match self {
            Branch::Text => "text",
            Branch::Image => "image",
        }
    }

    /// The branches that answered, as one label: `text`, `image` or `text+image`.
    pub fn label(branches: &[Branch]) -> String {
        branches
            .iter()
            .map(|branch| branch.as_str())
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// The most pixels an image may have before it is refused (a decompression-bomb guard).
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = prodcat_vision::preprocess::DEFAULT_MAX_PIXELS;

/// How much input one product may carry. Checked before any heavy work, so that the time and
/// memory one product can cost are bounded whatever it contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Bytes of the designation (titles are about 70 characters).
    pub max_designation_bytes: usize,
    /// Bytes of the description (HTML included).
    pub max_description_bytes: usize,
    /// Pixels of a decoded image.
    pub max_image_pixels: u64,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_designation_bytes: 4 << 10,
            max_description_bytes: 64 << 10,
            max_image_pixels: DEFAULT_MAX_IMAGE_PIXELS,
        }
    }
}

impl InputLimits {
    /// The checks every product passes before any heavy work, whichever way it came in: text
    /// sizes, something to classify, and for an image its header (nothing is decoded).
    pub fn check_product(&self, input: &ProductInput<'_>) -> Result<(), ModelError> {
        self.check(input)?;
        if let Some(image) = input.image {
            probe_image(image, self.max_image_pixels)?;
        }
        Ok(())
    }

    /// Checks the text fields' sizes and that there is something to classify.
    pub fn check(&self, input: &ProductInput<'_>) -> Result<(), ModelError> {
        let too_long = |field: &'static str, length: usize, limit: usize| {
            if length > limit {
                Err(ModelError::TooLong {
                    field,
                    length,
                    limit,
                })
            } else {
                Ok(())
            }
        };
        too_long(
            "designation",
            input.designation.len(),
            self.max_designation_bytes,
        )?;
        too_long(
            "description",
            input.description.len(),
            self.max_description_bytes,
        )?;
        if input.designation.trim().is_empty()
            && input.description.trim().is_empty()
            && input.image.is_none()
        {
            return Err(ModelError::EmptyInput);
        }
        Ok(())
    }
}

/// Checks an image's header (format, dimensions, pixel count) without decoding it; returns
/// its width and height.
pub fn probe_image(image: &[u8], max_pixels: u64) -> Result<(u32, u32), ModelError> {
    let (_, width, height) = prodcat_vision::preprocess::probe_image(image, max_pixels)?;
    Ok((width, height))
}

/// Decodes an image fully (a truncated or corrupt file is refused); returns its width and
/// height.
pub fn decode_image(image: &[u8], max_pixels: u64) -> Result<(u32, u32), ModelError> {
    let picture = prodcat_vision::preprocess::decode_image(image, max_pixels)?;
    Ok((picture.width, picture.height))
}

/// One product to classify.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProductInput<'a> {
    pub designation: &'a str,
    pub description: &'a str,
    /// Encoded JPEG or PNG bytes.
    pub image: Option<&'a [u8]>,
}

/// A category and its calibrated probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoredCode {
    pub category: CategoryCode,
    pub probability: f32,
}

/// The answer for one product.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductPrediction {
    pub category: CategoryCode,
    /// Calibrated probability of `category`.
    pub confidence: f32,
    /// The five most probable categories.
    pub top: Vec<ScoredCode>,
    /// Branches that answered.
    pub branches: Vec<Branch>,
    /// Each branch's calibrated probabilities (in `categories` order), when it answered.
    pub text_probabilities: Option<Vec<f32>>,
    pub image_probabilities: Option<Vec<f32>>,
    /// Weight of the image branch in the fused probabilities, when both answered.
    pub fusion_weight: Option<f32>,
    /// Whether the confidence reaches the automation threshold for these branches.
    pub automatic: bool,
    pub threshold: f32,
    pub model_version: ModelVersionId,
    /// The n-grams that pushed the text decision most, when asked for.
    pub explanation: Option<Explanation>,
    /// Which regions of the photo the image branch relied on, when asked for and a photo was
    /// used.
    pub photo_regions: Option<PhotoRegions>,
    /// Statistics of the decoded image (for monitoring), when there was one.
    #[serde(skip)]
    pub image_stats: Option<ImageStats>,
    /// Normalised product text as the model read it.
    #[serde(skip)]
    pub normalized_text: String,
    pub elapsed_microseconds: u64,
}

/// Occlusion sensitivity of the image branch: the photo is divided into `grid` x `grid` cells
/// over the square the network saw, each cell is hidden in turn, and the fall of the image
/// branch's probability for the predicted category is recorded. Large falls mark the regions
/// the decision rests on; a negative fall means hiding the cell made the category likelier.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhotoRegions {
    pub category: CategoryCode,
    pub grid: usize,
    /// The decoded photo's size in pixels.
    pub image_width: u32,
    pub image_height: u32,
    /// The square the cells divide, in the photo's pixels (it reaches past the photo's edges
    /// where the network's input was padded).
    pub square_left: f64,
    pub square_top: f64,
    pub square_side: f64,
    /// The image branch's probability of `category` with nothing hidden.
    pub probability: f32,
    /// Per cell, row by row: `probability` minus the probability with that cell hidden.
    pub drops: Vec<f32>,
}

/// Cells per side of the occlusion grid (16 cells: 17 passes of the backbone).
pub const OCCLUSION_GRID: usize = 4;

/// The final probabilities of a product and how they were obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Combined {
    /// Calibrated probabilities in label-set order.
    pub probabilities: Vec<f32>,
    pub branches: Vec<Branch>,
    /// Weight of the image branch, when both answered.
    pub fusion_weight: Option<f32>,
    /// Confidence threshold of automatic decisions for these branches.
    pub threshold: f32,
}

/// A model ready to serve: a verified bundle plus the shared image backbone (and the sentence
/// embedder when the text branch takes its companion features).
#[derive(Clone, Debug)]
pub struct ProductClassifier {
    bundle: Arc<ModelBundle>,
    backbone: Option<ImageBackbone>,
    text_embedder: Option<Arc<TextEmbedder>>,
    version: ModelVersionId,
    categories: Vec<CategoryCode>,
    limits: InputLimits,
}

impl ProductClassifier {
    pub fn new(bundle: ModelBundle, backbone: Option<ImageBackbone>) -> Result<Self, ModelError> {
        let version = bundle.version()?;
        let categories = bundle.categories();
        if categories.is_empty() {
            return Err(ModelError::InvalidBundle {
                version: version.to_string(),
                reason: "the label set is empty".to_string(),
            });
        }
        if let Some(text) = &bundle.text {
            if text.categories() != categories.as_slice() {
                return Err(ModelError::InvalidBundle {
                    version: version.to_string(),
                    reason: "the text branch's categories differ from the label set".to_string(),
                });
            }
        }
        if let Some(image) = &bundle.image {
            if image.categories != categories {
                return Err(ModelError::InvalidBundle {
                    version: version.to_string(),
                    reason: "the image branch's categories differ from the label set".to_string(),
                });
            }
            // Another backbone's features would give nonsense (or, for another feature count,
            // an error on every photo).
            let trained_on = bundle.image_backbone_choice()?;
            if let Some(given) = backbone.as_ref().map(ImageBackbone::choice) {
                if given != trained_on {
                    return Err(ModelError::InvalidBundle {
                        version: version.to_string(),
                        reason: format!(
                            "the image branch was trained on {trained_on} features, not {given}"
                        ),
                    });
                }
            }
        }
        Ok(Self {
            bundle: Arc::new(bundle),
            backbone,
            text_embedder: None,
            version,
            categories,
            limits: InputLimits::default(),
        })
    }

    /// The sentence embedder whose vectors the text branch was trained with, when it takes
    /// companion features (see [`Self::text_embedder_needed`]); an embedder of other weights
    /// is refused, since its vectors would mean nothing to the model.
    pub fn with_text_embedder(mut self, embedder: Arc<TextEmbedder>) -> Result<Self, ModelError> {
        if let Some(wanted) = self.text_embedder_needed() {
            if embedder.model_id() != wanted {
                return Err(ModelError::InvalidBundle {
                    version: self.version.to_string(),
                    reason: format!(
                        "the text branch was trained with the sentence embedding {wanted}, \
                         the installed one is {}",
                        embedder.model_id()
                    ),
                });
            }
        }
        self.text_embedder = Some(embedder);
        Ok(self)
    }

    /// The sentence embedder given to this model, if any.
    pub fn text_embedder(&self) -> Option<&Arc<TextEmbedder>> {
        self.text_embedder.as_ref()
    }

    /// The id of the sentence embedder the text branch needs, when it takes companion
    /// features.
    pub fn text_embedder_needed(&self) -> Option<&str> {
        self.bundle
            .text
            .as_ref()
            .and_then(|text| text.companion())
            .map(|companion| companion.source.as_str())
    }

    /// The same model with other input limits.
    pub fn with_limits(mut self, limits: InputLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The input limits this model enforces.
    pub fn limits(&self) -> &InputLimits {
        &self.limits
    }

    /// Checks a product before any heavy work: text sizes, something to classify, and for an
    /// image its header (format and pixel count; nothing is decoded).
    pub fn check_input(&self, input: &ProductInput<'_>) -> Result<(), ModelError> {
        self.limits.check_product(input)
    }

    pub fn version(&self) -> &ModelVersionId {
        &self.version
    }

    pub fn bundle(&self) -> &ModelBundle {
        &self.bundle
    }

    pub fn categories(&self) -> &[CategoryCode] {
        &self.categories
    }

    pub fn backbone(&self) -> Option<&ImageBackbone> {
        self.backbone.as_ref()
    }

    /// Whether an image sent with a product will be used.
    pub fn uses_images(&self) -> bool {
        self.bundle.image.is_some() && self.backbone.is_some()
    }

    /// The companion features of a normalised text, when the text branch takes them (embedded
    /// here: about 10 ms on 2 cores).
    pub fn text_companion(&self, text: &str) -> Result<Option<Vec<f32>>, ModelError> {
        if text.is_empty() || self.text_embedder_needed().is_none() {
            return Ok(None);
        }
        let embedder = self
            .text_embedder
            .as_ref()
            .ok_or(ModelError::TextEmbedderUnavailable)?;
        Ok(Some(crate::text_embeddings::companion_features(
            embedder, text,
        )))
    }

    /// Calibrated text probabilities for normalised text, if the text branch exists and the text
    /// is not empty.
    pub fn text_probabilities(&self, text: &str) -> Result<Option<Vec<f32>>, ModelError> {
        self.text_probabilities_with(text, None)
    }

    /// [`Self::text_probabilities`] with the text's companion features when they were computed
    /// beforehand (`None`: embedded here when the text branch takes them).
    pub fn text_probabilities_with(
        &self,
        text: &str,
        companion: Option<&[f32]>,
    ) -> Result<Option<Vec<f32>>, ModelError> {
        let Some(classifier) = self.bundle.text.as_ref() else {
            return Ok(None);
        };
        if text.is_empty() {
            return Ok(None);
        }
        let embedded;
        let companion = match companion {
            Some(values) => Some(values),
            None => {
                embedded = self.text_companion(text)?;
                embedded.as_deref()
            }
        };
        let decision_values = classifier.decision_values_with_companion(text, companion)?;
        Ok(Some(
            classifier.probabilities_from_decision_values(&decision_values),
        ))
    }

    /// Calibrated image probabilities from backbone features.
    pub fn image_probabilities_from_features(
        &self,
        features: &[f32],
    ) -> Result<Vec<f32>, ModelError> {
        let image = self
            .bundle
            .image
            .as_ref()
            .ok_or(ModelError::MissingBranch("image"))?;
        let logits = image.head.logits(features)?;
        let scores: Vec<f64> = logits.iter().map(|v| f64::from(*v)).collect();
        Ok(image
            .calibration
            .probabilities(&scores)
            .into_iter()
            .map(|p| p as f32)
            .collect())
    }

    /// Combines branch probabilities into the final answer (shared by every prediction path).
    pub fn combine(
        &self,
        text: Option<Vec<f32>>,
        image: Option<Vec<f32>>,
    ) -> Result<Combined, ModelError> {
        let fusion = &self.bundle.fusion;
        Ok(match (text, image) {
            (Some(text), Some(image)) => {
                let weight = fusion.image_weight;
                let probabilities = match &fusion.stacked {
                    Some(stacked) => stacked.combine(&text, &image),
                    None => crate::fusion::fuse(&text, &image, weight, fusion.fused_temperature),
                };
                Combined {
                    probabilities,
                    branches: vec![Branch::Text, Branch::Image],
                    fusion_weight: Some(weight),
                    threshold: fusion.threshold_fused,
                }
            }
            (Some(text), None) => Combined {
                probabilities: text,
                branches: vec![Branch::Text],
                fusion_weight: None,
                threshold: fusion.threshold_text_only,
            },
            (None, Some(image)) => Combined {
                probabilities: image,
                branches: vec![Branch::Image],
                fusion_weight: None,
                threshold: fusion.threshold_image_only,
            },
            (None, None) => return Err(ModelError::EmptyInput),
        })
    }

    /// Classifies one product. `explain` adds the text n-grams behind the decision.
    pub fn predict(
        &self,
        input: &ProductInput<'_>,
        explain: bool,
    ) -> Result<ProductPrediction, ModelError> {
        let started = Instant::now();
        self.check_input(input)?;
        let text = product_text(input.designation, input.description);
        if text.is_empty() && input.image.is_none() {
            return Err(ModelError::EmptyInput);
        }
        let companion = self.text_companion(&text)?;
        let text_probabilities = self.text_probabilities_with(&text, companion.as_deref())?;
        let (image_probabilities, image_stats) = match input.image {
            Some(encoded) if self.bundle.image.is_some() => {
                let backbone = self
                    .backbone
                    .as_ref()
                    .ok_or(ModelError::BackboneUnavailable)?;
                let (features, stats) = backbone.features_and_stats(encoded)?;
                (
                    Some(self.image_probabilities_from_features(&features)?),
                    Some(stats),
                )
            }
            Some(encoded) => {
                // A model that does not use images still checks that the image is one, the
                // same way whichever entry point the product came through.
                let picture = prodcat_vision::preprocess::decode_image(
                    encoded,
                    self.limits.max_image_pixels,
                )?;
                (
                    None,
                    ImageStats::from_rgb(picture.width, picture.height, &picture.pixels).ok(),
                )
            }
            None => (None, None),
        };
        if text_probabilities.is_none() && image_probabilities.is_none() {
            return Err(if self.bundle.text.is_none() {
                ModelError::MissingBranch("text")
            } else {
                ModelError::EmptyInput
            });
        }
        let Combined {
            probabilities,
            branches,
            fusion_weight,
            threshold,
        } = self.combine(text_probabilities.clone(), image_probabilities.clone())?;
        let mut ranked: Vec<ScoredCode> = self
            .categories
            .iter()
            .zip(&probabilities)
            .map(|(category, probability)| ScoredCode {
                category: *category,
                probability: *probability,
            })
            .collect();
        ranked.sort_by(|a, b| {
            b.probability
                .total_cmp(&a.probability)
                .then(a.category.cmp(&b.category))
        });
        ranked.truncate(5);
        let best = ranked[0];
        let explanation = match (&self.bundle.text, explain && !text.is_empty()) {
            (Some(classifier), true) => classifier
                .explain_with_companion(&text, companion.as_deref(), best.category, 8)
                .ok(),
            _ => None,
        };
        let photo_regions = match input.image {
            Some(encoded) if explain && image_probabilities.is_some() => {
                Some(self.photo_regions(encoded, best.category)?)
            }
            _ => None,
        };
        Ok(ProductPrediction {
            category: best.category,
            confidence: best.probability,
            top: ranked,
            branches,
            text_probabilities,
            image_probabilities,
            fusion_weight,
            automatic: best.probability >= threshold,
            threshold,
            model_version: self.version.clone(),
            explanation,
            photo_regions,
            image_stats,
            normalized_text: text,
            elapsed_microseconds: started.elapsed().as_micros() as u64,
        })
    }

    /// The occlusion-sensitivity map of the image branch for `category` (see [`PhotoRegions`]).
    pub fn photo_regions(
        &self,
        encoded: &[u8],
        category: CategoryCode,
    ) -> Result<PhotoRegions, ModelError> {
        let backbone = self
            .backbone
            .as_ref()
            .ok_or(ModelError::BackboneUnavailable)?;
        let index = self
            .categories
            .iter()
            .position(|known| *known == category)
            .ok_or_else(|| ModelError::InvalidBundle {
                version: self.version.to_string(),
                reason: format!("category {category} is not one this model predicts"),
            })?;
        let occlusion = backbone.occlusion_features(encoded, OCCLUSION_GRID)?;
        let probability = self.image_probabilities_from_features(&occlusion.whole)?[index];
        let drops = occlusion
            .cells
            .iter()
            .map(|features| {
                Ok(probability - self.image_probabilities_from_features(features)?[index])
            })
            .collect::<Result<Vec<f32>, ModelError>>()?;
        Ok(PhotoRegions {
            category,
            grid: occlusion.grid,
            image_width: occlusion.width,
            image_height: occlusion.height,
            square_left: occlusion.square.left,
            square_top: occlusion.square.top,
            square_side: occlusion.square.side,
            probability,
            drops,
        })
    }

    /// Classifies many products; text-only work runs in parallel across cores.
    pub fn predict_batch(
        &self,
        inputs: &[ProductInput<'_>],
    ) -> Vec<Result<ProductPrediction, ModelError>> {
        use rayon::prelude::*;
        inputs
            .par_iter()
            .map(|input| self.predict(input, false))
            .collect()
    }
}
