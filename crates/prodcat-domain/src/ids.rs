//! Validated identifiers: product and image ids from the catalogue, dataset and model versions.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// A marketplace product id (`productid`): a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProductId(i64);

/// A marketplace image id (`imageid`): a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageId(i64);

fn parse_positive(kind: &'static str, text: &str) -> Result<i64, DomainError> {
    let trimmed = text.trim();
    let invalid = |reason| DomainError::InvalidId {
        kind,
        value: trimmed.to_string(),
        reason,
    };
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let value: i64 = trimmed
        .parse()
        .map_err(|_| invalid("expected a whole number"))?;
    if value <= 0 {
        return Err(invalid("expected a positive number"));
    }
    Ok(value)
}

impl ProductId {
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        parse_positive("product id", text).map(Self)
    }
    pub fn new(value: i64) -> Result<Self, DomainError> {
        Self::parse(&value.to_string())
    }
    pub fn value(self) -> i64 {
        self.0
    }
}

impl ImageId {
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        parse_positive("image id", text).map(Self)
    }
    pub fn new(value: i64) -> Result<Self, DomainError> {
        Self::parse(&value.to_string())
    }
    pub fn value(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! string_id {
    ($name:ident, $kind:literal, $prefix:literal) => {
        #[doc = concat!("A ", $kind, " identifier (`", $prefix, "` followed by lowercase hex).")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Builds an id from a content hash (the first 16 hex digits are kept).
            pub fn from_hash(hash_hex: &str) -> Self {
                let short: String = hash_hex.chars().take(16).collect();
                Self(format!("{}{}", $prefix, short))
            }

            pub fn parse(text: &str) -> Result<Self, DomainError> {
                let trimmed = text.trim();
                let rest = trimmed
                    .strip_prefix($prefix)
                    .ok_or(DomainError::InvalidId {
                        kind: $kind,
                        value: trimmed.to_string(),
                        reason: concat!("expected it to start with \"", $prefix, "\""),
                    })?;
                if rest.len() < 4 || rest.len() > 64 || !$crate::is_lowercase_hex(rest) {
                    return Err(DomainError::InvalidId {
                        kind: $kind,
                        value: trimmed.to_string(),
                        reason: "expected 4 to 64 lowercase hex digits after the prefix",
                    });
                }
                Ok(Self(trimmed.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(DatasetVersionId, "dataset version", "ds-");
string_id!(ModelVersionId, "model version", "mv-");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_ids_must_be_positive_integers() {
        assert_eq!(ProductId::parse("3804725264").unwrap().value(), 3804725264);
        assert!(ProductId::parse("").is_err());
        assert!(ProductId::parse("-4").is_err());
        assert!(ProductId::parse("12a").is_err());
        assert!(ImageId::parse("0").is_err());
    }

    #[test]
    fn version_ids_carry_their_prefix() {
        let id = DatasetVersionId::from_hash("0123456789abcdef0123");
        assert_eq!(id.as_str(), "ds-0123456789abcdef");
        assert_eq!(DatasetVersionId::parse("ds-0123456789abcdef").unwrap(), id);
        assert!(DatasetVersionId::parse("mv-0123").is_err());
        assert!(ModelVersionId::parse("mv-XYZ1").is_err());
    }
}
