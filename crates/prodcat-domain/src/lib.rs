//! Domain types shared by every prodcat crate: category codes, identifiers, content hashes and
//! the text normalisation that every downstream consumer (import, models, search, drift) uses.
//!
//! This crate does no I/O. Identifiers are validated newtypes: once you hold a `CategoryCode` or a
//! `ProductId`, it is known to be well formed.

mod category;
mod error_kind;
mod format;
mod hash;
mod ids;
mod random;
mod text;

pub use category::{CategoryCode, CATEGORIES};
pub use error_kind::ErrorKind;
pub use format::{
    escape_html, format_rfc3339, format_utc_minutes, is_lowercase_hex, is_prefixed_hex,
};
pub use hash::{sha256_hex, unique_hex16, ContentHash};
pub use ids::{DatasetVersionId, ImageId, ModelVersionId, ProductId};
pub use random::SplitMix64;
pub use text::{normalize_text, product_text};

/// Errors raised when a value does not satisfy a domain rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("unknown category code {0:?}: expected one of the 27 marketplace codes (10, 40, 50, ... 2905)")]
    UnknownCategory(String),
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidId {
        kind: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid content hash {0:?}: expected 64 lowercase hex digits")]
    InvalidHash(String),
}

impl DomainError {
    /// Every domain error is a problem with the value given.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DomainError::UnknownCategory(_)
            | DomainError::InvalidId { .. }
            | DomainError::InvalidHash(_) => ErrorKind::Input,
        }
    }
}
