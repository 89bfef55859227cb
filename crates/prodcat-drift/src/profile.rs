//! Column model and reference profiles: named columns with their kind and values, built
//! from rows, kept to a bounded deterministic sample so a profile stored with a model version
//! stays small, and serialisable with serde.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{DriftError, Result};
use crate::rng::SplitMix64;

/// Default largest number of rows a profile keeps.
pub const DEFAULT_PROFILE_ROWS: usize = 5_000;
/// Seed of the reservoir sample.
const SAMPLE_SEED: u64 = 0x0050_524F_4443_4154;

/// What kind of values a column holds; decides which drift test applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ColumnKind {
    /// Real numbers (lengths, counts, brightness, confidences, principal components).
    Numeric,
    /// Labels from a finite set (language, predicted class).
    Categorical,
    /// Yes/no flags (empty description).
    Binary,
    /// Free text, tested by a domain classifier.
    Text,
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnKind::Numeric => "numeric",
            ColumnKind::Categorical => "categorical",
            ColumnKind::Binary => "binary",
            ColumnKind::Text => "text",
        })
    }
}

/// A column's name and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnSpec {
    pub name: String,
    pub kind: ColumnKind,
}

impl ColumnSpec {
    pub fn new(name: impl Into<String>, kind: ColumnKind) -> Self {
        Self {
            name: name.into(),
            kind,
        }
    }
}

/// One cell of a row handed to the profile builder.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Category(String),
    Flag(bool),
    Text(String),
    /// Absent value; counted, then left out of the tests (as Evidently drops NaN).
    Missing,
}

impl Value {
    fn kind_name(&self) -> &'static str {
        match self {
            Value::Number(_) => "number",
            Value::Category(_) => "category",
            Value::Flag(_) => "flag",
            Value::Text(_) => "text",
            Value::Missing => "missing",
        }
    }
}

/// The present values of a column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "values")]
pub enum ColumnValues {
    Numeric(Vec<f64>),
    Categorical(Vec<String>),
    Binary(Vec<bool>),
    Text(Vec<String>),
}

impl ColumnValues {
    /// An empty value list of the given kind.
    pub fn empty(kind: ColumnKind) -> Self {
        match kind {
            ColumnKind::Numeric => ColumnValues::Numeric(Vec::new()),
            ColumnKind::Categorical => ColumnValues::Categorical(Vec::new()),
            ColumnKind::Binary => ColumnValues::Binary(Vec::new()),
            ColumnKind::Text => ColumnValues::Text(Vec::new()),
        }
    }

    pub fn kind(&self) -> ColumnKind {
        match self {
            ColumnValues::Numeric(_) => ColumnKind::Numeric,
            ColumnValues::Categorical(_) => ColumnKind::Categorical,
            ColumnValues::Binary(_) => ColumnKind::Binary,
            ColumnValues::Text(_) => ColumnKind::Text,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ColumnValues::Numeric(v) => v.len(),
            ColumnValues::Categorical(v) => v.len(),
            ColumnValues::Binary(v) => v.len(),
            ColumnValues::Text(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One profiled column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileColumn {
    pub name: String,
    /// Present values of the sampled rows (NaN and infinities count as missing).
    pub values: ColumnValues,
    /// Sampled rows where the value was missing.
    pub missing_count: usize,
}

impl ProfileColumn {
    /// A column from its present values.
    pub fn new(name: impl Into<String>, values: ColumnValues) -> Self {
        let mut column = Self {
            name: name.into(),
            values,
            missing_count: 0,
        };
        if let ColumnValues::Numeric(values) = &mut column.values {
            let before = values.len();
            values.retain(|v| v.is_finite());
            column.missing_count = before - values.len();
        }
        column
    }

    pub fn kind(&self) -> ColumnKind {
        self.values.kind()
    }
}

/// A profile: the columns of a dataset (or a bounded sample of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub columns: Vec<ProfileColumn>,
    /// Rows seen while building.
    pub total_rows: usize,
    /// Rows kept in the sample.
    pub sampled_rows: usize,
}

impl Profile {
    /// A profile from columns given directly; names must be unique.
    pub fn from_columns(columns: Vec<ProfileColumn>) -> Result<Self> {
        let mut seen = HashSet::new();
        for column in &columns {
            if !seen.insert(column.name.clone()) {
                return Err(DriftError::DuplicateColumn {
                    column: column.name.clone(),
                });
            }
        }
        let rows = columns
            .iter()
            .map(|c| c.values.len() + c.missing_count)
            .max()
            .unwrap_or(0);
        Ok(Self {
            columns,
            total_rows: rows,
            sampled_rows: rows,
        })
    }

    /// The column with this name.
    pub fn column(&self, name: &str) -> Option<&ProfileColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Serialises the profile as JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|error| DriftError::Serialisation {
            what: "profile",
            reason: error.to_string(),
        })
    }

    /// Reads a profile written by [`Profile::to_json`].
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|error| DriftError::Serialisation {
            what: "profile",
            reason: error.to_string(),
        })
    }
}

/// Builds a profile from rows, keeping a uniform reservoir sample of at most `max_rows`
/// rows (deterministic: the same rows in the same order give the same sample).
#[derive(Debug, Clone)]
pub struct ProfileBuilder {
    schema: Vec<ColumnSpec>,
    max_rows: usize,
    kept: Vec<(usize, Vec<Value>)>,
    seen: usize,
    rng: SplitMix64,
}

impl ProfileBuilder {
    /// A builder for the given columns, keeping at most `max_rows` rows (at least one).
    pub fn new(schema: Vec<ColumnSpec>, max_rows: usize) -> Result<Self> {
        let mut names = HashSet::new();
        for spec in &schema {
            if !names.insert(spec.name.clone()) {
                return Err(DriftError::DuplicateColumn {
                    column: spec.name.clone(),
                });
            }
        }
        if max_rows == 0 {
            return Err(DriftError::InvalidSetting {
                setting: "max_rows",
                reason: "a profile must keep at least one row".into(),
            });
        }
        Ok(Self {
            schema,
            max_rows,
            kept: Vec::new(),
            seen: 0,
            rng: SplitMix64::new(SAMPLE_SEED),
        })
    }

    /// The columns this builder expects, in row order.
    pub fn schema(&self) -> &[ColumnSpec] {
        &self.schema
    }

    /// Adds one row; its values follow the schema's order and kinds.
    pub fn push_row(&mut self, row: Vec<Value>) -> Result<()> {
        let index = self.seen;
        if row.len() != self.schema.len() {
            return Err(DriftError::RowLength {
                row: index,
                expected: self.schema.len(),
                found: row.len(),
            });
        }
        for (spec, value) in self.schema.iter().zip(&row) {
            let fits = matches!(
                (spec.kind, value),
                (_, Value::Missing)
                    | (ColumnKind::Numeric, Value::Number(_))
                    | (ColumnKind::Categorical, Value::Category(_))
                    | (ColumnKind::Binary, Value::Flag(_))
                    | (ColumnKind::Text, Value::Text(_))
            );
            if !fits {
                return Err(DriftError::ValueKind {
                    row: index,
                    column: spec.name.clone(),
                    expected: match spec.kind {
                        ColumnKind::Numeric => "number",
                        ColumnKind::Categorical => "category",
                        ColumnKind::Binary => "flag",
                        ColumnKind::Text => "text",
                    },
                    found: value.kind_name(),
                });
            }
        }
        self.seen += 1;
        if self.kept.len() < self.max_rows {
            self.kept.push((index, row));
        } else {
            let slot = self.rng.next_below(self.seen as u64) as usize;
            if slot < self.max_rows {
                self.kept[slot] = (index, row);
            }
        }
        Ok(())
    }

    /// Finishes the profile (sampled rows in their original order).
    pub fn build(mut self) -> Profile {
        self.kept.sort_by_key(|(index, _)| *index);
        let mut columns: Vec<ProfileColumn> = self
            .schema
            .iter()
            .map(|spec| ProfileColumn {
                name: spec.name.clone(),
                values: ColumnValues::empty(spec.kind),
                missing_count: 0,
            })
            .collect();
        for (_, row) in &self.kept {
            for (column, value) in columns.iter_mut().zip(row) {
                match (&mut column.values, value) {
                    (ColumnValues::Numeric(values), Value::Number(number))
                        if number.is_finite() =>
                    {
                        values.push(*number)
                    }
                    (ColumnValues::Categorical(values), Value::Category(category)) => {
                        values.push(category.clone())
                    }
                    (ColumnValues::Binary(values), Value::Flag(flag)) => values.push(*flag),
                    (ColumnValues::Text(values), Value::Text(text)) => values.push(text.clone()),
                    _ => column.missing_count += 1,
                }
            }
        }
        Profile {
            columns,
            total_rows: self.seen,
            sampled_rows: self.kept.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Vec<ColumnSpec> {
        vec![
            ColumnSpec::new("length", ColumnKind::Numeric),
            ColumnSpec::new("empty", ColumnKind::Binary),
        ]
    }

    #[test]
    fn sample_is_bounded_and_deterministic() {
        let build = || {
            let mut builder = ProfileBuilder::new(schema(), 100).unwrap();
            for i in 0..10_000 {
                builder
                    .push_row(vec![Value::Number(i as f64), Value::Flag(i % 3 == 0)])
                    .unwrap();
            }
            builder.build()
        };
        let first = build();
        assert_eq!(first.sampled_rows, 100);
        assert_eq!(first.total_rows, 10_000);
        assert_eq!(first, build());
        let ColumnValues::Numeric(values) = &first.columns[0].values else {
            panic!("numeric column expected")
        };
        // Sorted by original index and spread over the whole input, not just its head.
        assert!(values.windows(2).all(|w| w[0] < w[1]));
        assert!(values.iter().any(|v| *v > 5_000.0));
    }

    #[test]
    fn wrong_kinds_and_lengths_are_named() {
        let mut builder = ProfileBuilder::new(schema(), 10).unwrap();
        let error = builder
            .push_row(vec![Value::Category("x".into()), Value::Flag(true)])
            .unwrap_err();
        assert!(error.to_string().contains("`length`"), "{error}");
        let error = builder.push_row(vec![Value::Missing]).unwrap_err();
        assert!(matches!(
            error,
            DriftError::RowLength {
                expected: 2,
                found: 1,
                ..
            }
        ));
    }

    #[test]
    fn missing_and_non_finite_values_are_counted() {
        let mut builder = ProfileBuilder::new(schema(), 10).unwrap();
        builder
            .push_row(vec![Value::Number(f64::NAN), Value::Missing])
            .unwrap();
        builder
            .push_row(vec![Value::Number(2.0), Value::Flag(false)])
            .unwrap();
        let profile = builder.build();
        assert_eq!(profile.columns[0].missing_count, 1);
        assert_eq!(profile.columns[1].missing_count, 1);
        let json = profile.to_json().unwrap();
        assert_eq!(Profile::from_json(&json).unwrap(), profile);
    }
}
