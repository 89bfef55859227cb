//! The pretrained image backbone (frozen features of MobileNetV2 by default, or of another
//! backbone chosen by name, optionally averaged with the mirror image's) and a feature cache
//! keyed by image content hash in the object store, so retraining never recomputes an image's
//! features.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use prodcat_drift::features::ImageStats;
use prodcat_storage::{image_key, ObjectStorage, StorageError};
use prodcat_vision::{
    preprocess::decode_image, BackboneChoice, BackboneNetwork, ImageFeatureExtractor,
    PreprocessOptions, Preprocessor, ShownSquare,
};

use crate::ModelError;

/// The frozen feature extractor shared by every model version in a process: one backbone, or
/// two whose features are concatenated (see [`BackboneChoice::appended`]).
#[derive(Clone)]
pub struct ImageBackbone {
    /// One per backbone of the choice, in feature order.
    parts: Arc<[BackbonePart]>,
    id: String,
    choice: BackboneChoice,
    model_dir: PathBuf,
}

/// One network of a backbone choice and the identifier of its own features.
#[derive(Clone)]
struct BackbonePart {
    extractor: Arc<ImageFeatureExtractor>,
    /// A prefix of the weight file's sha256.
    weights: String,
    id: String,
}

impl std::fmt::Debug for ImageBackbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageBackbone")
            .field("id", &self.id)
            .finish()
    }
}

impl ImageBackbone {
    /// Loads MobileNetV2 from `<model dir>/mobilenet-v2` (verifying its checksum).
    pub fn load(model_dir: &Path) -> Result<Self, ModelError> {
        Self::load_choice(model_dir, BackboneChoice::default())
    }

    /// Loads a backbone choice from `<model dir>/<name>` of each of its backbones (verifying
    /// their checksums).
    pub fn load_choice(model_dir: &Path, choice: BackboneChoice) -> Result<Self, ModelError> {
        let parts = choice
            .kinds()
            .map(|kind| load_part(model_dir, choice.single(kind)))
            .collect::<Result<Vec<_>, _>>()?;
        // A single backbone's id is its part's: MobileNetV2 without flip keeps the id of the
        // bundles and feature caches written before other backbones existed.
        let weights: Vec<&str> = parts.iter().map(|part| part.weights.as_str()).collect();
        let id = choice.joined_identifier(&weights);
        Ok(Self {
            parts: parts.into(),
            id,
            choice,
            model_dir: model_dir.to_path_buf(),
        })
    }

    /// Loads a choice when the files of each of its backbones are present; `None` otherwise.
    pub fn load_choice_if_present(
        model_dir: &Path,
        choice: BackboneChoice,
    ) -> Result<Option<Self>, ModelError> {
        let installed = choice.kinds().all(|kind| {
            model_dir
                .join(kind.as_str())
                .join("manifest.json")
                .is_file()
        });
        if installed {
            Self::load_choice(model_dir, choice).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The backbone and flip averaging these features come from.
    pub fn choice(&self) -> BackboneChoice {
        self.choice
    }

    /// Identifies the weights (part of the feature cache key and of model manifests); for two
    /// backbones, both identifiers joined by `+`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Each backbone of a choice of two alone (in feature order), sharing the loaded networks;
    /// `None` for a single backbone.
    fn split(&self) -> Option<Vec<ImageBackbone>> {
        (self.parts.len() > 1).then(|| {
            self.choice
                .kinds()
                .zip(self.parts.iter())
                .map(|(kind, part)| ImageBackbone {
                    parts: Arc::new([part.clone()]) as Arc<[BackbonePart]>,
                    id: part.id.clone(),
                    choice: self.choice.single(kind),
                    model_dir: self.model_dir.clone(),
                })
                .collect()
        })
    }

    /// The first backbone's preprocessing (every backbone of a choice crops the same square
    /// of the photo; only the network's input size differs).
    pub fn preprocessor(&self) -> &Preprocessor {
        self.parts[0].extractor.preprocessor()
    }

    /// Features and picture statistics of one encoded image, on the calling thread.
    pub fn features_and_stats(&self, encoded: &[u8]) -> Result<(Vec<f32>, ImageStats), ModelError> {
        let preprocessor = self.preprocessor();
        preprocessor.check_encoded_size(encoded.len() as u64)?;
        let picture = decode_image(encoded, preprocessor.options.max_pixels)?;
        let stats = ImageStats::from_rgb(picture.width, picture.height, &picture.pixels)?;
        let mut features = Vec::new();
        for part in self.parts.iter() {
            let prepared = part.extractor.preprocessor().prepare_picture(&picture)?;
            features.extend(part.extractor.extract_prepared(&prepared)?.features);
        }
        Ok((features, stats))
    }

    /// Features of a photo and of the same photo with each cell of a `grid` x `grid` division
    /// hidden in turn (row by row): what an occlusion-sensitivity map is computed from.
    pub fn occlusion_features(
        &self,
        encoded: &[u8],
        grid: usize,
    ) -> Result<OcclusionFeatures, ModelError> {
        let preprocessor = self.preprocessor();
        preprocessor.check_encoded_size(encoded.len() as u64)?;
        let picture = decode_image(encoded, preprocessor.options.max_pixels)?;
        let mut whole = Vec::new();
        let mut cells = vec![Vec::new(); grid * grid];
        for part in self.parts.iter() {
            let prepared = part.extractor.preprocessor().prepare_picture(&picture)?;
            // The whole picture first, then each cell hidden, row by row: 17 passes spread
            // over the worker threads.
            let mut variants = Vec::with_capacity(grid * grid + 1);
            for row in 0..grid {
                for column in 0..grid {
                    variants.push(prepared.occluded(row, column, grid));
                }
            }
            variants.insert(0, prepared);
            let mut outputs = part
                .extractor
                .extract_prepared_batch(&variants)
                .into_iter()
                .map(|output| output.map(|output| output.features));
            whole.extend(outputs.next().ok_or(ModelError::BackboneUnavailable)??);
            for (cell, output) in cells.iter_mut().zip(outputs) {
                cell.extend(output?);
            }
        }
        Ok(OcclusionFeatures {
            whole,
            cells,
            grid,
            square: preprocessor.shown_square(&picture),
            width: picture.width,
            height: picture.height,
        })
    }

    /// Features of many encoded images across the worker threads, in input order.
    pub fn features_batch<B: AsRef<[u8]> + Sync>(
        &self,
        images: &[B],
    ) -> Vec<Result<Vec<f32>, ModelError>> {
        let mut results: Vec<Result<Vec<f32>, ModelError>> =
            (0..images.len()).map(|_| Ok(Vec::new())).collect();
        for part in self.parts.iter() {
            for (slot, output) in results.iter_mut().zip(part.extractor.extract_batch(images)) {
                if let Ok(features) = slot {
                    match output {
                        Ok(output) => features.extend(output.features),
                        Err(error) => *slot = Err(error.into()),
                    }
                }
            }
        }
        results
    }
}

/// One backbone (`choice` names a single one), its id naming the weights.
fn load_part(model_dir: &Path, choice: BackboneChoice) -> Result<BackbonePart, ModelError> {
    let directory = model_dir.join(choice.kind.as_str());
    let network = BackboneNetwork::load_kind(&directory, choice.kind)?;
    let weights_hash = std::fs::read_to_string(directory.join("manifest.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|manifest| {
            manifest
                .get("weights_sha256")
                .and_then(|v| v.as_str())
                .map(|s| s.to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let weights = weights_hash[..weights_hash.len().min(12)].to_string();
    let extractor = ImageFeatureExtractor::new(network, PreprocessOptions::product_features())
        .with_flip_averaging(choice.flip_averaging);
    Ok(BackbonePart {
        extractor: Arc::new(extractor),
        id: choice.identifier(&weights),
        weights,
    })
}

/// Backbone features of a whole photo and of its occluded variants.
#[derive(Debug, Clone)]
pub struct OcclusionFeatures {
    pub whole: Vec<f32>,
    /// One per hidden cell, row by row.
    pub cells: Vec<Vec<f32>>,
    pub grid: usize,
    /// The square of the photo the network saw (cells divide it evenly).
    pub square: ShownSquare,
    /// The decoded photo's size in pixels.
    pub width: u32,
    pub height: u32,
}

/// Cached backbone features in the object store, one small file per image content hash.
#[derive(Clone, Debug)]
pub struct FeatureCache {
    objects: ObjectStorage,
    backbone: ImageBackbone,
}

fn encode_features(features: &[f32]) -> Bytes {
    let mut bytes = Vec::with_capacity(features.len() * 4);
    for value in features {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    Bytes::from(bytes)
}

fn decode_features(bytes: &[u8]) -> Option<Vec<f32>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect(),
    )
}

impl FeatureCache {
    pub fn new(objects: ObjectStorage, backbone: ImageBackbone) -> Self {
        Self { objects, backbone }
    }

    pub fn backbone(&self) -> &ImageBackbone {
        &self.backbone
    }

    fn key(&self, image_hash: &str) -> String {
        let prefix = &image_hash[..image_hash.len().min(2)];
        format!("features/{}/{prefix}/{image_hash}.f32", self.backbone.id())
    }

    /// Features for stored images (by content hash), computing and caching the missing ones.
    /// `progress` is called with the number of images done. Results are in input order; an
    /// image that cannot be read or decoded gives an error in its slot.
    /// With two backbones, each one's features are cached under its own id (so a cache
    /// written for either backbone alone is reused) and joined here.
    pub async fn features_for(
        &self,
        image_hashes: &[String],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Result<Vec<f32>, ModelError>>, ModelError> {
        let Some(parts) = self.backbone.split() else {
            return self.features_of_one_backbone(image_hashes, progress).await;
        };
        let count = parts.len();
        let mut joined: Vec<Result<Vec<f32>, ModelError>> =
            (0..image_hashes.len()).map(|_| Ok(Vec::new())).collect();
        for (index, part) in parts.into_iter().enumerate() {
            let cache = FeatureCache::new(self.objects.clone(), part);
            let part_progress = |done: usize| progress((index * image_hashes.len() + done) / count);
            let found = cache
                .features_of_one_backbone(image_hashes, &part_progress)
                .await?;
            for (slot, features) in joined.iter_mut().zip(found) {
                if let Ok(joined_features) = slot {
                    match features {
                        Ok(features) => joined_features.extend(features),
                        Err(error) => *slot = Err(error),
                    }
                }
            }
        }
        Ok(joined)
    }

    async fn features_of_one_backbone(
        &self,
        image_hashes: &[String],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Result<Vec<f32>, ModelError>>, ModelError> {
        let mut results: Vec<Option<Result<Vec<f32>, ModelError>>> =
            (0..image_hashes.len()).map(|_| None).collect();
        let mut missing: Vec<usize> = Vec::new();
        for (chunk_index, chunk) in image_hashes.chunks(64).enumerate() {
            let lookups: Vec<_> = chunk
                .iter()
                .map(|hash| read_cached(self.objects.clone(), self.key(hash)))
                .collect();
            for (offset, found) in futures::future::join_all(lookups)
                .await
                .into_iter()
                .enumerate()
            {
                let position = chunk_index * 64 + offset;
                match found {
                    Some(features) => results[position] = Some(Ok(features)),
                    None => missing.push(position),
                }
            }
        }
        let mut done = image_hashes.len() - missing.len();
        progress(done);
        for batch in missing.chunks(64) {
            let reads: Vec<_> = batch
                .iter()
                .map(|&position| read_image(self.objects.clone(), image_hashes[position].clone()))
                .collect();
            let mut readable: Vec<(usize, Bytes)> = Vec::new();
            for (&position, bytes) in batch.iter().zip(futures::future::join_all(reads).await) {
                match bytes {
                    Ok(bytes) => readable.push((position, bytes)),
                    Err(error) => results[position] = Some(Err(error.into())),
                }
            }
            let backbone = self.backbone.clone();
            let images: Vec<Bytes> = readable.iter().map(|(_, b)| b.clone()).collect();
            let computed = tokio::task::spawn_blocking(move || backbone.features_batch(&images))
                .await
                .map_err(|error| {
                    ModelError::TrainingData(format!("feature worker failed: {error}"))
                })?;
            for ((position, _), features) in readable.iter().zip(computed) {
                if let Ok(features) = &features {
                    self.objects
                        .put(
                            &self.key(&image_hashes[*position]),
                            encode_features(features),
                        )
                        .await?;
                }
                results[*position] = Some(features);
            }
            done += batch.len();
            progress(done);
        }
        Ok(results
            .into_iter()
            .map(|slot| slot.unwrap_or_else(|| Err(ModelError::TrainingData("no result".into()))))
            .collect())
    }
}

async fn read_cached(objects: ObjectStorage, key: String) -> Option<Vec<f32>> {
    match objects.get(&key).await {
        Ok(bytes) => decode_features(&bytes),
        Err(_) => None,
    }
}

async fn read_image(objects: ObjectStorage, hash: String) -> Result<Bytes, StorageError> {
    let key = match prodcat_domain::ContentHash::parse(&hash) {
        Ok(parsed) => image_key(&parsed),
        Err(_) => format!("images/invalid/{hash}"),
    };
    objects.get(&key).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_round_trip_through_bytes() {
        let features = vec![0.5f32, -1.25, 3.0e-8, f32::MAX];
        assert_eq!(
            decode_features(&encode_features(&features)).unwrap(),
            features
        );
        assert!(decode_features(&[1, 2, 3]).is_none());
    }
}
