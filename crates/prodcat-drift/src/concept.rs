//! Concept drift: when reviewed labels arrive, compare the weighted F1 of recent predictions
//! with the F1 the model had on its reference (validation) data.

use std::collections::BTreeMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::error::{DriftError, Result};

/// Weighted F1 over (predicted, actual) pairs: per-class F1 averaged with the classes'
/// support (their count among actual labels) as weights, as scikit-learn's
/// `f1_score(average="weighted")`. Classes predicted but never actual get weight 0.
pub fn weighted_f1<L: Ord + Clone + Hash>(pairs: &[(L, L)]) -> Result<f64> {
    if pairs.is_empty() {
        return Err(DriftError::InvalidInput(
            "weighted F1 needs at least one labelled prediction".into(),
        ));
    }
    #[derive(Default)]
    struct Tally {
        true_positive: f64,
        predicted: f64,
        actual: f64,
    }
    let mut tallies: BTreeMap<&L, Tally> = BTreeMap::new();
    for (predicted, actual) in pairs {
        tallies.entry(predicted).or_default().predicted += 1.0;
        let tally = tallies.entry(actual).or_default();
        tally.actual += 1.0;
        if predicted == actual {
            tally.true_positive += 1.0;
        }
    }
    let total = pairs.len() as f64;
    let mut score = 0.0;
    for tally in tallies.values() {
        if tally.actual == 0.0 {
            continue;
        }
        let denominator = tally.predicted + tally.actual;
        let f1 = if denominator == 0.0 {
            0.0
        } else {
            2.0 * tally.true_positive / denominator
        };
        score += f1 * tally.actual / total;
    }
    Ok(score)
}

/// Outcome of the concept-drift check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConceptDriftResult {
    pub reference_f1: f64,
    pub current_f1: f64,
    /// reference_f1 - current_f1 (positive when quality dropped).
    pub drop: f64,
    /// Largest tolerated drop.
    pub margin: f64,
    pub labelled_predictions: usize,
    pub drifted: bool,
}

/// Concept drift when the weighted F1 of `recent` (predicted, actual) pairs is lower than
/// `reference_f1` by more than `margin`.
pub fn concept_drift<L: Ord + Clone + Hash>(
    reference_f1: f64,
    recent: &[(L, L)],
    margin: f64,
) -> Result<ConceptDriftResult> {
    if !(0.0..=1.0).contains(&reference_f1) {
        return Err(DriftError::InvalidSetting {
            setting: "reference_f1",
            reason: format!("{reference_f1} is not within [0, 1]"),
        });
    }
    if !(margin >= 0.0 && margin.is_finite()) {
        return Err(DriftError::InvalidSetting {
            setting: "margin",
            reason: format!("{margin} must be a finite non-negative number"),
        });
    }
    let current_f1 = weighted_f1(recent)?;
    let drop = reference_f1 - current_f1;
    Ok(ConceptDriftResult {
        reference_f1,
        current_f1,
        drop,
        margin,
        labelled_predictions: recent.len(),
        drifted: drop > margin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_f1_matches_scikit_learn() {
        // sklearn.metrics.f1_score([0,0,1,1,2,2,2], [0,1,1,1,2,0,2], average="weighted")
        // = 0.7142857142857143
        let actual = [0, 0, 1, 1, 2, 2, 2];
        let predicted = [0, 1, 1, 1, 2, 0, 2];
        let pairs: Vec<(i32, i32)> = predicted.into_iter().zip(actual).collect();
        assert!((weighted_f1(&pairs).unwrap() - 0.7142857142857143).abs() < 1e-12);
    }

    #[test]
    fn drop_beyond_margin_is_drift() {
        let good: Vec<(u8, u8)> = (0..100).map(|i| (i % 4, i % 4)).collect();
        let result = concept_drift(0.9, &good, 0.05).unwrap();
        assert!(!result.drifted && (result.current_f1 - 1.0).abs() < 1e-12);
        let bad: Vec<(u8, u8)> = (0..100)
            .map(|i| ((i % 4 + u8::from(i % 3 == 0)) % 4, i % 4))
            .collect();
        let result = concept_drift(0.9, &bad, 0.05).unwrap();
        assert!(result.drifted, "{result:?}");
    }
}
