//! Side-by-side comparison of two runs: parameters (differences flagged), latest metric values
//! with deltas, and per-class F1 deltas (from `f1.class.<code>` metrics).

use std::collections::{BTreeMap, BTreeSet};

use prodcat_domain::CategoryCode;
use prodcat_storage::Database;
use serde::Serialize;

use crate::runs::{get_run, Run};
use crate::RegistryError;

/// Prefix of per-class F1 metric keys.
pub const CLASS_F1_PREFIX: &str = "f1.class.";

/// One parameter in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterComparison {
    pub key: String,
    pub a: Option<String>,
    pub b: Option<String>,
    pub differs: bool,
}

/// One metric (latest value) in both runs; `delta` is `b - a` when both have it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricComparison {
    pub key: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub delta: Option<f64>,
}

/// One class's F1 in both runs; `delta` is `b - a`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassF1Comparison {
    pub code: u16,
    /// The category's name when the code is one of the marketplace's.
    pub name: Option<&'static str>,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub delta: Option<f64>,
}

/// Two runs side by side.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunComparison {
    pub a: Run,
    pub b: Run,
    /// Every parameter of either run, by key.
    pub parameters: Vec<ParameterComparison>,
    /// Every metric of either run, by key; the per-class F1 values are left out when they are
    /// compared in `per_class_f1`.
    pub metrics: Vec<MetricComparison>,
    /// Per-class F1, by code: filled only when both runs logged `f1.class.<code>` metrics.
    pub per_class_f1: Vec<ClassF1Comparison>,
}

impl RunComparison {
    /// Parameters whose values differ.
    pub fn differing_parameters(&self) -> impl Iterator<Item = &ParameterComparison> {
        self.parameters.iter().filter(|p| p.differs)
    }
}

/// The class code of a `f1.class.<code>` key.
pub fn class_code_of_key(key: &str) -> Option<u16> {
    key.strip_prefix(CLASS_F1_PREFIX)?.parse().ok()
}

/// Per-class F1 values found among metrics.
pub fn class_f1_values(metrics: &BTreeMap<String, f64>) -> BTreeMap<u16, f64> {
    metrics
        .iter()
        .filter_map(|(key, value)| class_code_of_key(key).map(|code| (code, *value)))
        .collect()
}

/// Compares two runs (ids or unique prefixes).
pub async fn compare_runs(
    database: &Database,
    a: &str,
    b: &str,
) -> Result<RunComparison, RegistryError> {
    let a = get_run(database, a).await?;
    let b = get_run(database, b).await?;
    Ok(compare_details(a.run, &a.metrics, b.run, &b.metrics))
}

/// The comparison of two runs from their latest metric values (no I/O).
pub fn compare_details(
    a: Run,
    a_metrics: &BTreeMap<String, f64>,
    b: Run,
    b_metrics: &BTreeMap<String, f64>,
) -> RunComparison {
    let parameter_keys: BTreeSet<&String> =
        a.parameters.keys().chain(b.parameters.keys()).collect();
    let parameters = parameter_keys
        .into_iter()
        .map(|key| {
            let left = a.parameters.get(key).cloned();
            let right = b.parameters.get(key).cloned();
            ParameterComparison {
                key: key.clone(),
                differs: left != right,
                a: left,
                b: right,
            }
        })
        .collect();
    let a_classes = class_f1_values(a_metrics);
    let b_classes = class_f1_values(b_metrics);
    let both_have_classes = !a_classes.is_empty() && !b_classes.is_empty();
    let metric_keys: BTreeSet<&String> = a_metrics
        .keys()
        .chain(b_metrics.keys())
        .filter(|key| !both_have_classes || class_code_of_key(key).is_none())
        .collect();
    let metrics = metric_keys
        .into_iter()
        .map(|key| {
            let left = a_metrics.get(key).copied();
            let right = b_metrics.get(key).copied();
            MetricComparison {
                key: key.clone(),
                a: left,
                b: right,
                delta: left.zip(right).map(|(l, r)| r - l),
            }
        })
        .collect();
    let per_class_f1 = if !both_have_classes {
        Vec::new()
    } else {
        let codes: BTreeSet<u16> = a_classes.keys().chain(b_classes.keys()).copied().collect();
        codes
            .into_iter()
            .map(|code| {
                let left = a_classes.get(&code).copied();
                let right = b_classes.get(&code).copied();
                ClassF1Comparison {
                    code,
                    name: CategoryCode::from_u16(code).ok().map(|c| c.name()),
                    a: left,
                    b: right,
                    delta: left.zip(right).map(|(l, r)| r - l),
                }
            })
            .collect()
    };
    RunComparison {
        a,
        b,
        parameters,
        metrics,
        per_class_f1,
    }
}
