//! The crate's error type: every failure names what was being done and with which product or file.

use std::path::PathBuf;

use prodcat_domain::ErrorKind;

/// Errors raised by the search indexes.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The keyword index (tantivy) failed.
    #[error("keyword index failed while {operation}: {source}")]
    KeywordIndex {
        operation: &'static str,
        #[source]
        source: tantivy::TantivyError,
    },
    /// A file or directory could not be read or written.
    #[error("cannot {operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The embedding cache file is not one this crate wrote, or was written for another model.
    #[error("embedding cache {path} is unusable: {detail}")]
    InvalidCache { path: PathBuf, detail: String },
    /// A document supplied by the caller breaks a rule (non-finite number, wrong dimension).
    #[error("product {product_id}: {reason}")]
    InvalidDocument { product_id: i64, reason: String },
    /// A search or similarity request is out of bounds.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Options that cannot work together.
    #[error("invalid search options: {0}")]
    InvalidOptions(String),
    /// The product is not in the index.
    #[error("product {0} is not in the search index")]
    UnknownProduct(i64),
    /// Search by meaning was asked for but no text embedder is configured.
    #[error("search by meaning is unavailable: no text embedding model is loaded")]
    SemanticUnavailable,
    /// The embedder returned something other than one vector of the announced size per text.
    #[error("text embedder {model_id} returned {detail}")]
    EmbedderOutput { model_id: String, detail: String },
    /// Loading the text embedding model failed.
    #[error("cannot load the text embedding model: {0}")]
    EmbedderLoad(#[from] prodcat_embed::EmbedError),
}

impl SearchError {
    /// Whose fault the error is. A request or document that breaks a rule is `Input`, a product
    /// not in the index `NotFound`; search by meaning without a loaded embedding model, and a
    /// keyword index whose writer lock another process holds, are `Unavailable`; index files,
    /// caches and embedder output that are wrong are `Internal`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SearchError::InvalidDocument { .. }
            | SearchError::InvalidRequest(_)
            | SearchError::InvalidOptions(_) => ErrorKind::Input,
            SearchError::UnknownProduct(_) => ErrorKind::NotFound,
            SearchError::SemanticUnavailable => ErrorKind::Unavailable,
            SearchError::KeywordIndex { source, .. } => match source {
                tantivy::TantivyError::LockFailure(..) => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            SearchError::Io { .. }
            | SearchError::InvalidCache { .. }
            | SearchError::EmbedderOutput { .. } => ErrorKind::Internal,
            SearchError::EmbedderLoad(error) => error.kind(),
        }
    }

    pub(crate) fn keyword(operation: &'static str) -> impl FnOnce(tantivy::TantivyError) -> Self {
        move |source| SearchError::KeywordIndex { operation, source }
    }

    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| SearchError::Io {
            operation,
            path,
            source,
        }
    }
}
