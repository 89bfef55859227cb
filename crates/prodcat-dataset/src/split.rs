//! Train / validation / test assignment: stratified by category and seeded, decided by a hash of
//! (seed, product id) so a row's split does not depend on file order or on the other rows' order.

use std::collections::BTreeMap;
use std::fmt;

use prodcat_domain::sha256_hex;

use crate::DatasetError;

/// Which part of a dataset version a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "train" => Some(Split::Train),
            "validation" => Some(Split::Validation),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shares of train, validation and test (they sum to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitRatios {
    pub train: f64,
    pub validation: f64,
    pub test: f64,
}

impl Default for SplitRatios {
    fn default() -> Self {
        Self {
            train: 0.8,
            validation: 0.1,
            test: 0.1,
        }
    }
}

impl SplitRatios {
    /// Parses `"0.8,0.1,0.1"`.
    pub fn parse(text: &str) -> Result<Self, DatasetError> {
        let parts: Vec<f64> = text
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                DatasetError::InvalidOption(format!(
                    "--split {text:?}: expected three numbers like 0.8,0.1,0.1"
                ))
            })?;
        if parts.len() != 3 || parts.iter().any(|p| !(0.0..=1.0).contains(p)) {
            return Err(DatasetError::InvalidOption(format!(
                "--split {text:?}: expected three shares between 0 and 1"
            )));
        }
        if ((parts[0] + parts[1] + parts[2]) - 1.0).abs() > 1e-6 || parts[0] <= 0.0 {
            return Err(DatasetError::InvalidOption(format!(
                "--split {text:?}: the shares must sum to 1 and train must be positive"
            )));
        }
        Ok(Self {
            train: parts[0],
            validation: parts[1],
            test: parts[2],
        })
    }

    /// Canonical text form, stored with each version.
    pub fn to_text(self) -> String {
        format!("{},{},{}", self.train, self.validation, self.test)
    }
}

/// Order key of a product within its class for a seed.
pub(crate) fn split_key(seed: u64, product_id: i64) -> String {
    sha256_hex(format!("{seed}:{product_id}").as_bytes())
}

/// Assigns splits to `(product_id, class)` rows, stratified by class. Returns one split per row
/// in input order. Every class with at least three rows gets at least one validation and one
/// test row when those shares are positive.
pub fn assign_splits(rows: &[(i64, Option<u16>)], seed: u64, ratios: SplitRatios) -> Vec<Split> {
    let mut by_class: BTreeMap<Option<u16>, Vec<(String, usize)>> = BTreeMap::new();
    for (position, (product_id, class)) in rows.iter().enumerate() {
        by_class
            .entry(*class)
            .or_default()
            .push((split_key(seed, *product_id), position));
    }
    let mut splits = vec![Split::Train; rows.len()];
    for members in by_class.values_mut() {
        members.sort();
        let n = members.len();
        let mut validation = (n as f64 * ratios.validation).round() as usize;
        let mut test = (n as f64 * ratios.test).round() as usize;
        if n >= 3 {
            if ratios.validation > 0.0 {
                validation = validation.max(1);
            }
            if ratios.test > 0.0 {
                test = test.max(1);
            }
        }
        while validation + test >= n && (validation > 0 || test > 0) {
            if test >= validation && test > 0 {
                test -= 1;
            } else {
                validation -= 1;
            }
        }
        for (rank, (_, position)) in members.iter().enumerate() {
            splits[*position] = if rank < validation {
                Split::Validation
            } else if rank < validation + test {
                Split::Test
            } else {
                Split::Train
            };
        }
    }
    splits
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_ratios() {
        assert_eq!(
            SplitRatios::parse("0.8,0.1,0.1").unwrap(),
            SplitRatios::default()
        );
        assert!(SplitRatios::parse("0.8,0.1").is_err());
        assert!(SplitRatios::parse("0.8,0.3,0.1").is_err());
        assert!(SplitRatios::parse("a,b,c").is_err());
    }

    #[test]
    fn stratifies_each_class() {
        let rows: Vec<(i64, Option<u16>)> = (0..1000)
            .map(|i| (i + 1, Some(if i % 10 == 0 { 60 } else { 2583 })))
            .collect();
        let splits = assign_splits(&rows, 3, SplitRatios::default());
        let count = |class: u16, split: Split| {
            rows.iter()
                .zip(&splits)
                .filter(|((_, c), s)| *c == Some(class) && **s == split)
                .count()
        };
        assert_eq!(count(60, Split::Validation), 10);
        assert_eq!(count(60, Split::Test), 10);
        assert_eq!(count(2583, Split::Validation), 90);
        assert_eq!(count(2583, Split::Train), 720);
    }

    proptest! {
        #[test]
        fn order_does_not_matter(ids in proptest::collection::hash_set(1i64..1_000_000, 3..200), seed in 0u64..100) {
            let rows: Vec<(i64, Option<u16>)> = ids.iter().map(|&id| (id, Some((id % 3) as u16))).collect();
            let forward = assign_splits(&rows, seed, SplitRatios::default());
            let mut reversed_rows = rows.clone();
            reversed_rows.reverse();
            let mut backward = assign_splits(&reversed_rows, seed, SplitRatios::default());
            backward.reverse();
            prop_assert_eq!(forward, backward);
        }
    }
}
