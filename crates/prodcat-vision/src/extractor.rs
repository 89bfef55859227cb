//! End-to-end feature extraction: encoded image bytes (or files) in, network outputs out,
//! decoding, preprocessing and inference spread over the worker threads, results kept in
//! input order, one error per bad image without failing the others.

use std::path::Path;

use crate::error::Result;
use crate::network::{default_thread_count, MobileNetV2, NetworkOutput};
use crate::preprocess::{PreprocessOptions, Preprocessor};

/// The pretrained network plus the preprocessing recipe and a thread count.
#[derive(Debug)]
pub struct ImageFeatureExtractor {
    network: MobileNetV2,
    preprocessor: Preprocessor,
    threads: usize,
}

impl ImageFeatureExtractor {
    /// Wrap a network with a preprocessing recipe; uses all available cores.
    pub fn new(network: MobileNetV2, options: PreprocessOptions) -> Self {
        Self {
            network,
            preprocessor: Preprocessor::new(options),
            threads: default_thread_count(),
        }
    }

    /// Load a model directory and wrap it.
    pub fn load(model_directory: &Path, options: PreprocessOptions) -> Result<Self> {
        Ok(Self::new(MobileNetV2::load(model_directory)?, options))
    }

    /// Use `threads` worker threads (at least one).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn network(&self) -> &MobileNetV2 {
        &self.network
    }

    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// One image, on the calling thread.
    pub fn extract(&self, encoded: &[u8]) -> Result<NetworkOutput> {
        let prepared = self.preprocessor.prepare(encoded)?;
        self.network.run(&prepared)
    }

    /// Many encoded images across the worker threads; results in input order.
    pub fn extract_batch<B: AsRef<[u8]> + Sync>(&self, images: &[B]) -> Vec<Result<NetworkOutput>> {
        let preprocessor = self.preprocessor;
        self.network
            .map_parallel(images, self.threads, |state, encoded| {
                let prepared = preprocessor.prepare(encoded.as_ref())?;
                MobileNetV2::run_on_state(state, &prepared)
            })
    }

    /// Many image files across the worker threads (each worker reads its own files).
    pub fn extract_files<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Vec<Result<NetworkOutput>> {
        let preprocessor = self.preprocessor;
        self.network
            .map_parallel(paths, self.threads, |state, path| {
                let prepared = preprocessor.prepare_file(path.as_ref())?;
                MobileNetV2::run_on_state(state, &prepared)
            })
    }
}
