//! The crate's single error type: every way loading a model directory or embedding text can fail.

use std::path::PathBuf;

use prodcat_domain::ErrorKind;

/// Errors from loading the embedding model and tokenizer, or from embedding text.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A file of the model directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The model directory holds no usable model file.
    #[error("no E5S1 model file in {directory} (expected {expected})")]
    ModelFileMissing {
        directory: PathBuf,
        expected: String,
    },

    /// The model file does not start with the E5S1 magic bytes.
    #[error("{path} is not an E5S1 model file (magic bytes {found:?})")]
    BadMagic { path: PathBuf, found: [u8; 4] },

    /// The model file has a format version this crate does not read.
    #[error("{path} has E5S1 format version {version}; this crate reads version 1")]
    UnsupportedVersion { path: PathBuf, version: u32 },

    /// The model file ends before a section it declares.
    #[error("{path} is truncated: {section} needs bytes {start}..{end} but the file has {length}")]
    Truncated {
        path: PathBuf,
        section: String,
        start: u64,
        end: u64,
        length: u64,
    },

    /// A header value, tensor size or tensor type contradicts the architecture.
    #[error("{path}: {detail}")]
    InvalidModel { path: PathBuf, detail: String },

    /// A tensor the encoder needs is absent from the model file.
    #[error("{path} has no tensor named {name}")]
    MissingTensor { path: PathBuf, name: String },

    /// The tokenizer description could not be parsed or uses an unsupported component.
    #[error("tokenizer {source_name}: {detail}")]
    InvalidTokenizer { source_name: String, detail: String },

    /// The tokenizer and the model disagree (vocabulary size, special tokens).
    #[error("tokenizer and model disagree: {detail}")]
    TokenizerModelMismatch { detail: String },

    /// A file's sha256 differs from the one its manifest records.
    #[error("{path} has sha256 {actual}, but manifest.json records {expected}")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// manifest.json exists but cannot be understood.
    #[error("invalid manifest {path}: {detail}")]
    InvalidManifest { path: PathBuf, detail: String },

    /// The worker thread pool could not be created.
    #[error("cannot start {threads} embedding threads: {detail}")]
    ThreadPool { threads: usize, detail: String },
}

impl EmbedError {
    /// Every embedding error concerns the model directory, its files or the threads that run
    /// it, never the text embedded: `Internal`, as for the other model files of prodcat.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EmbedError::Io { .. }
            | EmbedError::ModelFileMissing { .. }
            | EmbedError::BadMagic { .. }
            | EmbedError::UnsupportedVersion { .. }
            | EmbedError::Truncated { .. }
            | EmbedError::InvalidModel { .. }
            | EmbedError::MissingTensor { .. }
            | EmbedError::InvalidTokenizer { .. }
            | EmbedError::TokenizerModelMismatch { .. }
            | EmbedError::ChecksumMismatch { .. }
            | EmbedError::InvalidManifest { .. }
            | EmbedError::ThreadPool { .. } => ErrorKind::Internal,
        }
    }
}
