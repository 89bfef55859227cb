//! The promotion policy, pure and without I/O: a challenger replaces the champion only when both
//! were scored on the same evaluation set, the challenger's weighted F1 is higher by at least a
//! margin, and no class's F1 drops by more than a bound.
//!
//! The decision is a plain value, serialised into the alias history with the move it allowed
//! (or that overrode it).

use std::collections::{BTreeMap, BTreeSet};

use prodcat_domain::ModelVersionId;
use serde::{Deserialize, Serialize};

use crate::RegistryError;

/// Float slack in the comparisons, so a gain of exactly the margin passes despite rounding.
const TOLERANCE: f64 = 1e-9;

/// The thresholds of the promotion policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotionPolicy {
    /// The challenger's weighted F1 must exceed the champion's by at least this much.
    pub min_weighted_f1_gain: f64,
    /// No class's F1 may drop by more than this.
    pub max_class_f1_drop: f64,
}

impl Default for PromotionPolicy {
    fn default() -> Self {
        Self {
            min_weighted_f1_gain: 0.005,
            max_class_f1_drop: 0.05,
        }
    }
}

/// One model scored on one evaluation set, just now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationSummary {
    /// The version that was scored.
    pub model_version: ModelVersionId,
    /// The set it was scored on (`<dataset version>:<split>` by convention).
    pub evaluation_set: String,
    pub weighted_f1: f64,
    /// F1 per category code.
    pub per_class_f1: BTreeMap<u16, f64>,
}

impl EvaluationSummary {
    fn check(&self) -> Result<(), RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidSummary {
            version: self.model_version.to_string(),
            reason,
        };
        if self.evaluation_set.trim().is_empty() {
            return Err(invalid("the evaluation set is not named".to_string()));
        }
        if !(0.0..=1.0).contains(&self.weighted_f1) {
            return Err(invalid(format!(
                "weighted F1 {} is not within 0..1",
                self.weighted_f1
            )));
        }
        if let Some((code, value)) = self
            .per_class_f1
            .iter()
            .find(|(_, value)| !(0.0..=1.0).contains(*value))
        {
            return Err(invalid(format!(
                "F1 of class {code} ({value}) is not within 0..1"
            )));
        }
        Ok(())
    }
}

/// One class's F1 for the champion and the challenger. A class one side did not report counts as
/// F1 0 on that side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassF1Delta {
    pub code: u16,
    pub champion: f64,
    pub challenger: f64,
    /// `challenger - champion`.
    pub delta: f64,
}

/// What the policy decided, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDecision {
    pub promote: bool,
    /// Plain sentences: each check and how it went.
    pub reasons: Vec<String>,
    pub policy: PromotionPolicy,
    pub evaluation_set: String,
    pub champion: ModelVersionId,
    pub challenger: ModelVersionId,
    pub champion_weighted_f1: f64,
    pub challenger_weighted_f1: f64,
    /// `challenger - champion` weighted F1.
    pub weighted_f1_gain: f64,
    /// The class whose F1 dropped most, with the size of the drop (positive), if any dropped.
    pub worst_class: Option<(u16, f64)>,
    pub class_deltas: Vec<ClassF1Delta>,
}

impl PromotionPolicy {
    /// Checks the thresholds are sensible: finite, the gain margin >= 0, the drop bound in 0..=1.
    pub fn validate(&self) -> Result<(), RegistryError> {
        if !self.min_weighted_f1_gain.is_finite()
            || !(0.0..=1.0).contains(&self.min_weighted_f1_gain)
        {
            return Err(RegistryError::InvalidPolicy(format!(
                "the weighted F1 margin must be within 0..1 (got {})",
                self.min_weighted_f1_gain
            )));
        }
        if !self.max_class_f1_drop.is_finite() || !(0.0..=1.0).contains(&self.max_class_f1_drop) {
            return Err(RegistryError::InvalidPolicy(format!(
                "the per-class F1 drop bound must be within 0..1 (got {})",
                self.max_class_f1_drop
            )));
        }
        Ok(())
    }

    /// Decides whether `challenger` may replace `champion`. Both must have been scored on the same
    /// evaluation set, else the comparison is refused with an error.
    pub fn decide(
        &self,
        champion: &EvaluationSummary,
        challenger: &EvaluationSummary,
    ) -> Result<PolicyDecision, RegistryError> {
        self.validate()?;
        champion.check()?;
        challenger.check()?;
        if champion.evaluation_set != challenger.evaluation_set {
            return Err(RegistryError::EvaluationSetMismatch {
                champion: champion.evaluation_set.clone(),
                challenger: challenger.evaluation_set.clone(),
            });
        }
        let mut reasons = Vec::new();
        let gain = challenger.weighted_f1 - champion.weighted_f1;
        let gain_ok = gain + TOLERANCE >= self.min_weighted_f1_gain;
        reasons.push(format!(
            "weighted F1 {:.4} -> {:.4} ({:+.4}): {} the required gain of {:.4}",
            champion.weighted_f1,
            challenger.weighted_f1,
            gain,
            if gain_ok { "meets" } else { "below" },
            self.min_weighted_f1_gain
        ));

        let codes: BTreeSet<u16> = champion
            .per_class_f1
            .keys()
            .chain(challenger.per_class_f1.keys())
            .copied()
            .collect();
        let class_deltas: Vec<ClassF1Delta> = codes
            .into_iter()
            .map(|code| {
                let before = champion.per_class_f1.get(&code).copied().unwrap_or(0.0);
                let after = challenger.per_class_f1.get(&code).copied().unwrap_or(0.0);
                ClassF1Delta {
                    code,
                    champion: before,
                    challenger: after,
                    delta: after - before,
                }
            })
            .collect();
        for code in champion.per_class_f1.keys() {
            if !challenger.per_class_f1.contains_key(code) {
                reasons.push(format!(
                    "class {code} has no F1 for the challenger: counted as 0"
                ));
            }
        }
        let worst_class = class_deltas
            .iter()
            .filter(|delta| delta.delta < 0.0)
            .min_by(|a, b| a.delta.total_cmp(&b.delta))
            .map(|delta| (delta.code, -delta.delta));
        let too_large: Vec<&ClassF1Delta> = class_deltas
            .iter()
            .filter(|delta| -delta.delta > self.max_class_f1_drop + TOLERANCE)
            .collect();
        let classes_ok = too_large.is_empty();
        if classes_ok {
            reasons.push(match worst_class {
                Some((code, drop)) => format!(
                    "largest per-class F1 drop {drop:.4} (class {code}) is within the bound of {:.4}",
                    self.max_class_f1_drop
                ),
                None => "no class's F1 dropped".to_string(),
            });
        } else {
            reasons.push(format!(
                "per-class F1 drops beyond the bound of {:.4}: {}",
                self.max_class_f1_drop,
                too_large
                    .iter()
                    .map(|delta| format!(
                        "class {} {:.4} -> {:.4} ({:+.4})",
                        delta.code, delta.champion, delta.challenger, delta.delta
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(PolicyDecision {
            promote: gain_ok && classes_ok,
            reasons,
            policy: *self,
            evaluation_set: champion.evaluation_set.clone(),
            champion: champion.model_version.clone(),
            challenger: challenger.model_version.clone(),
            champion_weighted_f1: champion.weighted_f1,
            challenger_weighted_f1: challenger.weighted_f1,
            weighted_f1_gain: gain,
            worst_class,
            class_deltas,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(
        version: &str,
        set: &str,
        weighted: f64,
        classes: &[(u16, f64)],
    ) -> EvaluationSummary {
        EvaluationSummary {
            model_version: ModelVersionId::parse(version).unwrap(),
            evaluation_set: set.to_string(),
            weighted_f1: weighted,
            per_class_f1: classes.iter().copied().collect(),
        }
    }

    fn check(champion: f64, challenger: f64, classes: &[(f64, f64)], expected: bool) {
        let champion_classes: Vec<(u16, f64)> = classes
            .iter()
            .enumerate()
            .map(|(i, (before, _))| (10 + i as u16, *before))
            .collect();
        let challenger_classes: Vec<(u16, f64)> = classes
            .iter()
            .enumerate()
            .map(|(i, (_, after))| (10 + i as u16, *after))
            .collect();
        let decision = PromotionPolicy::default()
            .decide(
                &summary("mv-aaaa", "ds-0001:test", champion, &champion_classes),
                &summary("mv-bbbb", "ds-0001:test", challenger, &challenger_classes),
            )
            .unwrap();
        assert_eq!(
            decision.promote, expected,
            "{champion} -> {challenger} {classes:?}: {:?}",
            decision.reasons
        );
    }

    #[test]
    fn margin_on_weighted_f1() {
        check(0.80, 0.8051, &[], true);
        check(0.80, 0.8049, &[], false);
        check(0.80, 0.805, &[], true); // exactly the margin
        check(0.80, 0.80, &[], false);
        check(0.80, 0.70, &[], false);
    }

    #[test]
    fn bound_on_per_class_drop() {
        check(0.80, 0.82, &[(0.9, 0.86), (0.5, 0.6)], true);
        check(0.80, 0.82, &[(0.9, 0.85), (0.5, 0.6)], true); // exactly the bound
        check(0.80, 0.82, &[(0.9, 0.849), (0.5, 0.6)], false);
        check(0.80, 0.90, &[(0.3, 0.0)], false);
    }

    #[test]
    fn decision_explains_itself() {
        let decision = PromotionPolicy::default()
            .decide(
                &summary("mv-aaaa", "s", 0.8, &[(10, 0.9), (40, 0.7)]),
                &summary("mv-bbbb", "s", 0.81, &[(10, 0.8), (50, 0.6)]),
            )
            .unwrap();
        assert!(!decision.promote);
        let (code, drop) = decision.worst_class.unwrap();
        assert_eq!(code, 40); // 0.7 -> 0 (missing) is the worst
        assert!((drop - 0.7).abs() < 1e-12);
        assert_eq!(decision.class_deltas.len(), 3);
        assert!(decision.reasons.iter().any(|r| r.contains("class 40")));
        assert!((decision.weighted_f1_gain - 0.01).abs() < 1e-12);
    }

    #[test]
    fn different_evaluation_sets_are_refused() {
        let error = PromotionPolicy::default()
            .decide(
                &summary("mv-aaaa", "ds-0001:test", 0.8, &[]),
                &summary("mv-bbbb", "ds-0002:test", 0.9, &[]),
            )
            .unwrap_err();
        assert!(matches!(error, RegistryError::EvaluationSetMismatch { .. }));
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let policy = PromotionPolicy::default();
        assert!(policy
            .decide(
                &summary("mv-aaaa", "s", f64::NAN, &[]),
                &summary("mv-bbbb", "s", 0.9, &[])
            )
            .is_err());
        assert!(policy
            .decide(
                &summary("mv-aaaa", "s", 0.5, &[(10, 1.5)]),
                &summary("mv-bbbb", "s", 0.9, &[])
            )
            .is_err());
        let bad = PromotionPolicy {
            min_weighted_f1_gain: -0.1,
            max_class_f1_drop: 0.05,
        };
        assert!(bad
            .decide(
                &summary("mv-aaaa", "s", 0.5, &[]),
                &summary("mv-bbbb", "s", 0.9, &[])
            )
            .is_err());
    }
}
