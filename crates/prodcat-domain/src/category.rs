//! The marketplace's 27 product-type codes and their human names.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Every category of the reference catalogue: (code, name), in ascending code order.
///
/// The challenge never published official names; these are descriptive names chosen by the
/// project and stable across versions.
pub const CATEGORIES: [(u16, &str); 27] = [
    (10, "used books"),
    (40, "video games"),
    (50, "video game accessories"),
    (60, "game consoles"),
    (1140, "figurines, collectibles"),
    (1160, "collectible cards"),
    (1180, "figurines, role-play games"),
    (1280, "children's toys"),
    (1281, "board games"),
    (1300, "model making / drones"),
    (1301, "children's hobbies / socks"),
    (1302, "outdoor toys / party"),
    (1320, "childcare, baby gear"),
    (1560, "indoor furniture"),
    (1920, "bed linen, cushions"),
    (1940, "groceries"),
    (2060, "home decoration"),
    (2220, "pet supplies"),
    (2280, "magazines"),
    (2403, "books, comics, magazines (lots)"),
    (2462, "video games (used, lots)"),
    (2522, "stationery"),
    (2582, "garden furniture"),
    (2583, "pools and accessories"),
    (2585, "DIY, tools, garden care"),
    (2705, "new books"),
    (2905, "PC video games (download)"),
];

/// A validated marketplace category code (`prdtypecode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct CategoryCode(u16);

impl CategoryCode {
    /// Parses a code as written in the label files (`"2583"`, with optional surrounding spaces).
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let trimmed = text.trim();
        let value: u16 = trimmed
            .parse()
            .map_err(|_| DomainError::UnknownCategory(trimmed.to_string()))?;
        Self::from_u16(value)
    }

    /// Validates a numeric code.
    pub fn from_u16(value: u16) -> Result<Self, DomainError> {
        if CATEGORIES.iter().any(|(code, _)| *code == value) {
            Ok(Self(value))
        } else {
            Err(DomainError::UnknownCategory(value.to_string()))
        }
    }

    /// The numeric code.
    pub fn value(self) -> u16 {
        self.0
    }

    /// The human-readable name of the category.
    pub fn name(self) -> &'static str {
        CATEGORIES
            .iter()
            .find(|(code, _)| *code == self.0)
            .map(|(_, name)| *name)
            .unwrap_or("unknown")
    }

    /// Position of this code in [`CATEGORIES`] (0..27), used as a dense class index.
    pub fn index(self) -> usize {
        CATEGORIES
            .iter()
            .position(|(code, _)| *code == self.0)
            .unwrap_or(0)
    }

    /// The code at a dense class index, if the index is in range.
    pub fn from_index(index: usize) -> Option<Self> {
        CATEGORIES.get(index).map(|(code, _)| Self(*code))
    }

    /// All 27 codes in ascending order.
    pub fn all() -> impl Iterator<Item = CategoryCode> {
        CATEGORIES.iter().map(|(code, _)| CategoryCode(*code))
    }
}

impl TryFrom<u16> for CategoryCode {
    type Error = DomainError;
    fn try_from(value: u16) -> Result<Self, Self::Error> {
        Self::from_u16(value)
    }
}

impl From<CategoryCode> for u16 {
    fn from(code: CategoryCode) -> u16 {
        code.0
    }
}

impl fmt::Display for CategoryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_codes_and_refuses_others() {
        assert_eq!(CategoryCode::parse(" 2583 ").unwrap().value(), 2583);
        assert_eq!(CategoryCode::parse("10").unwrap().name(), "used books");
        assert!(CategoryCode::parse("11").is_err());
        assert!(CategoryCode::parse("abc").is_err());
        assert!(CategoryCode::parse("").is_err());
    }

    #[test]
    fn index_round_trips() {
        for (index, code) in CategoryCode::all().enumerate() {
            assert_eq!(code.index(), index);
            assert_eq!(CategoryCode::from_index(index), Some(code));
        }
        assert_eq!(CategoryCode::from_index(27), None);
    }
}
