//! Evaluation of a model on labelled products: per branch (text, image, the fused system, and
//! text against fusion on the products that have an image), with weighted and macro F1,
//! per-class precision / recall / F1, the confusion matrix, calibration error and the share and
//! precision of automatic decisions; plus pictures for people (confusion matrix, reliability).

use prodcat_domain::CategoryCode;
use prodcat_metrics::{
    classification_report, confusion_matrix_svg, reliability_diagram, reliability_diagram_svg,
};
use serde::{Deserialize, Serialize};

use crate::classifier::ProductClassifier;
use crate::ModelError;

/// One labelled product, prepared for evaluation.
#[derive(Debug, Clone)]
pub struct LabelledProduct {
    /// Normalised product text (may be empty).
    pub text: String,
    /// Backbone features of the product's image, when it has a readable one.
    pub image_features: Option<Vec<f32>>,
    /// The text's companion features when they were computed beforehand (else the classifier
    /// computes them when its text branch takes them).
    pub text_companion: Option<Vec<f32>>,
    pub label: CategoryCode,
}

/// Metrics of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassEvaluation {
    pub code: u16,
    pub name: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// Metrics of one branch (or of the whole system) on the rows it could answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchEvaluation {
    /// `system`, `text`, `image`, `text-on-image-rows`, `fused-on-image-rows`.
    pub name: String,
    pub rows: usize,
    pub accuracy: f64,
    pub weighted_f1: f64,
    pub macro_f1: f64,
    /// Expected calibration error of the top-1 confidence (15 bins).
    pub expected_calibration_error: f64,
    /// Share of rows decided automatically, and the precision of those decisions.
    pub automatic_share: f64,
    pub automatic_precision: f64,
    pub per_class: Vec<ClassEvaluation>,
    /// Rows: true category, columns: predicted category, in `labels` order.
    pub confusion: Vec<Vec<u64>>,
    pub labels: Vec<u16>,
}

/// A model's evaluation on one labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationReport {
    /// Identifies the rows scored (e.g. `ds-0123...:test`), so that two models are only ever
    /// compared on the same set.
    pub evaluation_set: String,
    pub model_version: String,
    pub rows: usize,
    pub rows_with_image: usize,
    pub branches: Vec<BranchEvaluation>,
}

impl EvaluationReport {
    pub fn branch(&self, name: &str) -> Option<&BranchEvaluation> {
        self.branches.iter().find(|b| b.name == name)
    }

    /// The system's metrics (what predictions return).
    pub fn system(&self) -> Option<&BranchEvaluation> {
        self.branch("system")
    }

    /// A confusion-matrix SVG for a branch.
    pub fn confusion_svg(&self, branch: &str) -> Option<String> {
        let evaluation = self.branch(branch)?;
        let k = evaluation.labels.len();
        let mut truth = Vec::new();
        let mut predicted = Vec::new();
        for (row, counts) in evaluation.confusion.iter().enumerate() {
            for (column, count) in counts.iter().enumerate() {
                for _ in 0..*count {
                    truth.push(row);
                    predicted.push(column);
                }
            }
        }
        let report = classification_report(&truth, &predicted, k).ok()?;
        let labels: Vec<String> = evaluation.labels.iter().map(|c| c.to_string()).collect();
        Some(confusion_matrix_svg(
            &report.confusion,
            &labels,
            &format!(
                "{} - {branch} (weighted F1 {:.3}, {} rows)",
                self.model_version, evaluation.weighted_f1, evaluation.rows
            ),
        ))
    }
}

/// The index of the largest value (the first of equal ones; 0 for an empty row).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (index, value) in row.iter().enumerate() {
        if *value > row[best] {
            best = index;
        }
    }
    best
}

struct Scored {
    probabilities: Vec<f32>,
    label: usize,
    automatic: bool,
}

/// The scored rows of each branch and of the whole system.
#[derive(Default)]
struct ScoredSets {
    system: Vec<Scored>,
    text: Vec<Scored>,
    image: Vec<Scored>,
    /// The text branch alone and the fused system, on the rows that have both inputs.
    text_on_image_rows: Vec<Scored>,
    fused_on_image_rows: Vec<Scored>,
    rows_with_image: usize,
}

impl ScoredSets {
    /// Adds one row's branch probabilities (and their combination) to the sets it belongs to.
    fn add(
        &mut self,
        classifier: &ProductClassifier,
        label: usize,
        text: Option<Vec<f32>>,
        image: Option<Vec<f32>>,
    ) -> Result<(), ModelError> {
        let fusion = &classifier.bundle().fusion;
        let max = |p: &[f32]| p.iter().copied().fold(0.0f32, f32::max);
        if let Some(text) = &text {
            self.text.push(Scored {
                automatic: max(text) >= fusion.threshold_text_only,
                probabilities: text.clone(),
                label,
            });
        }
        if let Some(image) = &image {
            self.image.push(Scored {
                automatic: max(image) >= fusion.threshold_image_only,
                probabilities: image.clone(),
                label,
            });
        }
        if text.is_none() && image.is_none() {
            return Ok(());
        }
        let both = text.is_some() && image.is_some();
        let text_copy = text.clone();
        let combined = classifier.combine(text, image)?;
        let (probabilities, threshold) = (combined.probabilities, combined.threshold);
        let automatic = max(&probabilities) >= threshold;
        if both {
            if let Some(text) = text_copy {
                self.text_on_image_rows.push(Scored {
                    automatic: max(&text) >= fusion.threshold_text_only,
                    probabilities: text,
                    label,
                });
            }
            self.fused_on_image_rows.push(Scored {
                probabilities: probabilities.clone(),
                label,
                automatic,
            });
        }
        self.system.push(Scored {
            probabilities,
            label,
            automatic,
        });
        Ok(())
    }
}

fn branch_evaluation(
    name: &str,
    scored: &[Scored],
    categories: &[CategoryCode],
) -> Result<Option<(BranchEvaluation, String)>, ModelError> {
    if scored.is_empty() {
        return Ok(None);
    }
    // Labels the model does not know count as errors, in an extra "other" class.
    let k = categories.len() + 1;
    let truth: Vec<usize> = scored.iter().map(|s| s.label).collect();
    let predicted: Vec<usize> = scored.iter().map(|s| argmax(&s.probabilities)).collect();
    let report = classification_report(&truth, &predicted, k)?;
    let flat: Vec<f64> = scored
        .iter()
        .flat_map(|s| {
            s.probabilities
                .iter()
                .map(|p| f64::from(*p))
                .chain(std::iter::once(0.0))
        })
        .collect();
    let reliability = reliability_diagram(&flat, k, &truth, 15)?;
    let automatic: Vec<usize> = (0..scored.len()).filter(|&i| scored[i].automatic).collect();
    let automatic_correct = automatic
        .iter()
        .filter(|&&i| truth[i] == predicted[i])
        .count();
    let known = categories.len();
    let per_class = report
        .per_class
        .iter()
        .filter(|metrics| metrics.class < known && metrics.support > 0)
        .map(|metrics| ClassEvaluation {
            code: categories[metrics.class].value(),
            name: categories[metrics.class].name().to_string(),
            precision: metrics.precision,
            recall: metrics.recall,
            f1: metrics.f1,
            support: metrics.support,
        })
        .collect();
    let confusion = (0..known)
        .map(|row| {
            (0..known)
                .map(|column| report.confusion.count(row, column))
                .collect()
        })
        .collect();
    let svg = reliability_diagram_svg(&[(name, &reliability)], &format!("Reliability - {name}"));
    Ok(Some((
        BranchEvaluation {
            name: name.to_string(),
            rows: scored.len(),
            accuracy: report.accuracy,
            weighted_f1: report.weighted_f1,
            macro_f1: report.macro_f1,
            expected_calibration_error: reliability.expected_calibration_error,
            automatic_share: automatic.len() as f64 / scored.len() as f64,
            automatic_precision: if automatic.is_empty() {
                0.0
            } else {
                automatic_correct as f64 / automatic.len() as f64
            },
            per_class,
            confusion,
            labels: categories.iter().map(|c| c.value()).collect(),
        },
        svg,
    )))
}

/// Evaluates `classifier` on `rows`. Returns the report and one reliability SVG per branch.
pub fn evaluate_rows(
    classifier: &ProductClassifier,
    rows: &[LabelledProduct],
    evaluation_set: &str,
) -> Result<(EvaluationReport, Vec<(String, String)>), ModelError> {
    use rayon::prelude::*;
    let categories = classifier.categories().to_vec();
    let unknown = categories.len();
    let label_of = |code: CategoryCode| {
        categories
            .iter()
            .position(|c| *c == code)
            .unwrap_or(unknown)
    };
    let per_row: Vec<Result<_, ModelError>> = rows
        .par_iter()
        .map(|row| {
            let text =
                classifier.text_probabilities_with(&row.text, row.text_companion.as_deref())?;
            let image = match (&row.image_features, classifier.bundle().image.is_some()) {
                (Some(features), true) => {
                    Some(classifier.image_probabilities_from_features(features)?)
                }
                _ => None,
            };
            Ok((text, image))
        })
        .collect();
    let mut sets = ScoredSets::default();
    for (row, result) in rows.iter().zip(per_row) {
        let (text, image) = result?;
        if row.image_features.is_some() {
            sets.rows_with_image += 1;
        }
        sets.add(classifier, label_of(row.label), text, image)?;
    }
    let mut branches = Vec::new();
    let mut pictures = Vec::new();
    for (name, scored) in [
        ("system", &sets.system),
        ("text", &sets.text),
        ("image", &sets.image),
        ("text-on-image-rows", &sets.text_on_image_rows),
        ("fused-on-image-rows", &sets.fused_on_image_rows),
    ] {
        if let Some((evaluation, svg)) = branch_evaluation(name, scored, &categories)? {
            branches.push(evaluation);
            pictures.push((format!("reliability-{name}.svg"), svg));
        }
    }
    if branches.is_empty() {
        return Err(ModelError::TrainingData(
            "no labelled product could be scored".to_string(),
        ));
    }
    Ok((
        EvaluationReport {
            evaluation_set: evaluation_set.to_string(),
            model_version: classifier.version().to_string(),
            rows: rows.len(),
            rows_with_image: sets.rows_with_image,
            branches,
        },
        pictures,
    ))
}
