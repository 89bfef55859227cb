//! The drift report: per-column verdicts with the data behind them (summaries and histogram
//! bins for charts), the dataset-level verdict, JSON output and Prometheus-ready scores.

use serde::{Deserialize, Serialize};

use crate::concept::ConceptDriftResult;
use crate::error::{DriftError, Result};
use crate::kolmogorov::KolmogorovMethod;
use crate::profile::ColumnKind;
use crate::stattest::{ScoreKind, StatTestKind};

/// Summary statistics of one side of a column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum ColumnSummary {
    Numeric {
        count: usize,
        missing: usize,
        mean: f64,
        std: f64,
        min: f64,
        median: f64,
        max: f64,
    },
    Categorical {
        count: usize,
        missing: usize,
        distinct: usize,
        most_common: String,
        most_common_share: f64,
    },
    Text {
        count: usize,
        missing: usize,
        distinct: usize,
        mean_characters: f64,
        mean_words: f64,
    },
}

/// Bins shared by the reference and current sides, as shares of each side's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Histogram {
    /// What the bins measure ("value", "category", "characters per text").
    pub measure: String,
    pub labels: Vec<String>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// Extra details of the domain-classifier text test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextDriftDetails {
    pub typical_current_words: Vec<String>,
    pub typical_reference_words: Vec<String>,
}

/// Drift verdict for one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnDrift {
    pub name: String,
    pub kind: ColumnKind,
    pub test: StatTestKind,
    /// Evidently's name of the same test.
    pub test_name: String,
    /// The drift score: a p-value, a distance or a ROC AUC (see `score_kind`).
    pub score: f64,
    pub score_kind: ScoreKind,
    /// The test statistic behind a p-value (K-S D, chi-square, z), when there is one.
    pub statistic: Option<f64>,
    /// Exact or asymptotic K-S distribution, for the K-S test.
    pub ks_method: Option<KolmogorovMethod>,
    /// The configured threshold (p-value level, distance, AUC or confidence level).
    pub threshold: f64,
    /// The value the score was compared with (differs from `threshold` only for the
    /// percentile text test, where it is the random-classifier AUC percentile).
    pub decision_threshold: f64,
    pub drifted: bool,
    /// Number of distinct values over both sides, which guided the test choice.
    pub distinct_values: usize,
    pub reference: ColumnSummary,
    pub current: ColumnSummary,
    pub histogram: Histogram,
    pub text_details: Option<TextDriftDetails>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    pub title: String,
    pub reference_rows: usize,
    pub current_rows: usize,
    pub columns: Vec<ColumnDrift>,
    pub drifted_columns: usize,
    pub share_of_drifted_columns: f64,
    /// Dataset drift is declared when the drifted share reaches this value.
    pub drift_share: f64,
    pub dataset_drift: bool,
    /// Quality on recent labelled data against the reference, when labels exist.
    pub concept_drift: Option<ConceptDriftResult>,
}

impl DriftReport {
    /// Pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|error| DriftError::Serialisation {
            what: "drift report",
            reason: error.to_string(),
        })
    }

    /// Reads a report written by [`DriftReport::to_json`].
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|error| DriftError::Serialisation {
            what: "drift report",
            reason: error.to_string(),
        })
    }

    /// The column verdict with this name.
    pub fn column(&self, name: &str) -> Option<&ColumnDrift> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Per-column drift scores as (column name, score) pairs, for gauges such as
    /// `prodcat_drift_score{column="..."}`; non-finite scores are left out.
    pub fn drift_scores(&self) -> Vec<(String, f64)> {
        self.columns
            .iter()
            .filter(|c| c.score.is_finite())
            .map(|c| (c.name.clone(), c.score))
            .collect()
    }

    /// Per-column verdicts as (column name, 1.0 when drifted else 0.0).
    pub fn drift_flags(&self) -> Vec<(String, f64)> {
        self.columns
            .iter()
            .map(|c| (c.name.clone(), if c.drifted { 1.0 } else { 0.0 }))
            .collect()
    }

    /// Attaches a concept-drift result.
    pub fn with_concept_drift(mut self, result: ConceptDriftResult) -> Self {
        self.concept_drift = Some(result);
        self
    }

    /// The self-contained HTML page (see [`crate::html::render_html`]).
    pub fn to_html(&self) -> String {
        crate::html::render_html(self)
    }
}
