//! End-to-end feature extraction: encoded image bytes (or files) in, network outputs out,
//! decoding, preprocessing and inference spread over the worker threads, results kept in
//! input order, one error per bad image without failing the others.
//!
//! With flip averaging on, every image's output is the mean of the outputs of the prepared
//! picture and its left-right mirror (test-time augmentation: twice the network time, features
//! that do not depend on which way the product faces).

use std::path::Path;

use crate::backbone::BackboneKind;
use crate::error::Result;
use crate::network::{default_thread_count, BackboneNetwork, NetworkOutput};
use crate::preprocess::{PreparedImage, PreprocessOptions, Preprocessor};

/// The pretrained network plus the preprocessing recipe, a thread count and whether outputs
/// are averaged with the mirror image's.
#[derive(Debug)]
pub struct ImageFeatureExtractor {
    network: BackboneNetwork,
    preprocessor: Preprocessor,
    threads: usize,
    flip_averaging: bool,
}

impl ImageFeatureExtractor {
    /// Wrap a network with a preprocessing recipe (brought to the network's input size and
    /// normalisation); uses all available cores, no flip averaging.
    pub fn new(network: BackboneNetwork, options: PreprocessOptions) -> Self {
        let preprocessor = Preprocessor::with_input(options, network.input());
        Self {
            network,
            preprocessor,
            threads: default_thread_count(),
            flip_averaging: false,
        }
    }

    /// Load a model directory (the backbone its manifest declares, MobileNetV2 when it
    /// declares none) and wrap it.
    pub fn load(model_directory: &Path, options: PreprocessOptions) -> Result<Self> {
        Ok(Self::new(BackboneNetwork::load(model_directory)?, options))
    }

    /// Load `backbone` from a model directory and wrap it.
    pub fn load_backbone(
        model_directory: &Path,
        backbone: BackboneKind,
        options: PreprocessOptions,
    ) -> Result<Self> {
        Ok(Self::new(
            BackboneNetwork::load_kind(model_directory, backbone)?,
            options,
        ))
    }

    /// Use `threads` worker threads (at least one).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Average every output with the output of the mirror image.
    pub fn with_flip_averaging(mut self, flip_averaging: bool) -> Self {
        self.flip_averaging = flip_averaging;
        self
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn flip_averaging(&self) -> bool {
        self.flip_averaging
    }

    pub fn network(&self) -> &BackboneNetwork {
        &self.network
    }

    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// One image, on the calling thread.
    pub fn extract(&self, encoded: &[u8]) -> Result<NetworkOutput> {
        let prepared = self.preprocessor.prepare(encoded)?;
        self.extract_prepared(&prepared)
    }

    /// One already prepared image, on the calling thread (flip averaging applies).
    pub fn extract_prepared(&self, prepared: &PreparedImage) -> Result<NetworkOutput> {
        self.network.run_with_flip(prepared, self.flip_averaging)
    }

    /// Many already prepared images across the worker threads (flip averaging applies);
    /// results in input order.
    pub fn extract_prepared_batch(&self, prepared: &[PreparedImage]) -> Vec<Result<NetworkOutput>> {
        let flip_averaging = self.flip_averaging;
        self.network
            .map_parallel(prepared, self.threads, |state, image| {
                self.network
                    .run_on_state_with_flip(state, image, flip_averaging)
            })
    }

    /// Many encoded images across the worker threads; results in input order.
    pub fn extract_batch<B: AsRef<[u8]> + Sync>(&self, images: &[B]) -> Vec<Result<NetworkOutput>> {
        let preprocessor = self.preprocessor;
        let flip_averaging = self.flip_averaging;
        self.network
            .map_parallel(images, self.threads, |state, encoded| {
                let prepared = preprocessor.prepare(encoded.as_ref())?;
                self.network
                    .run_on_state_with_flip(state, &prepared, flip_averaging)
            })
    }

    /// Many image files across the worker threads (each worker reads its own files).
    pub fn extract_files<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Vec<Result<NetworkOutput>> {
        let preprocessor = self.preprocessor;
        let flip_averaging = self.flip_averaging;
        self.network
            .map_parallel(paths, self.threads, |state, path| {
                let prepared = preprocessor.prepare_file(path.as_ref())?;
                self.network
                    .run_on_state_with_flip(state, &prepared, flip_averaging)
            })
    }
}
