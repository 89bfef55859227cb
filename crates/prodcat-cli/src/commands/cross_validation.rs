//! The figures of a cross-validated training (`prodcat train --cross-validate N`): each
//! branch's weighted and macro F1 per held-out fold and pooled over all of them, the automatic
//! decisions' precision and coverage on the held-out folds, and the pooled per-category table.

use prodcat_domain::CategoryCode;
use prodcat_model::{BranchEvaluation, ClassEvaluation, CrossValidation};
use serde::Serialize;

use crate::output;

/// One branch over every fold.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchSummary {
    pub name: String,
    /// Rows scored over all folds.
    pub rows: usize,
    /// Mean and standard deviation over folds.
    pub weighted_f1_mean: f64,
    pub weighted_f1_std: f64,
    pub macro_f1_mean: f64,
    pub macro_f1_std: f64,
    /// From the confusion matrix summed over folds.
    pub pooled_weighted_f1: f64,
    pub pooled_macro_f1: f64,
    /// Automatic decisions over all folds: share of rows and precision.
    pub automatic_share: f64,
    pub automatic_precision: f64,
    pub automatic_decisions: usize,
    pub per_fold_weighted_f1: Vec<f64>,
    pub per_fold_macro_f1: Vec<f64>,
    pub per_class: Vec<ClassEvaluation>,
}

/// One fold's fusion.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FoldFusion {
    pub tuning_rows_with_photo: usize,
    pub tuning_rows_text: usize,
    pub stacked_kept: bool,
    pub image_share: f64,
    pub threshold_fused: f32,
    pub threshold_text_only: f32,
    pub seconds: f64,
}

/// The whole cross-validation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrossValidationSummary {
    pub folds: usize,
    pub target_precision: f64,
    pub branches: Vec<BranchSummary>,
    pub fusion: Vec<FoldFusion>,
    /// Each fold's weight of the sentence-embedding features in the text branch (0: left
    /// out), when they were asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub text_embedding_scales: Vec<f32>,
    pub feature_seconds: f64,
    pub total_seconds: f64,
}

fn mean_and_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let variance = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64
    } else {
        0.0
    };
    (mean, variance.sqrt())
}

/// Per-category figures and pooled weighted / macro F1 from a confusion matrix.
fn pooled(labels: &[u16], confusion: &[Vec<u64>]) -> (Vec<ClassEvaluation>, f64, f64) {
    let k = labels.len();
    let mut per_class = Vec::new();
    let (mut weighted, mut macro_sum, mut macro_count, mut total) = (0.0, 0.0, 0usize, 0u64);
    for (class, (counts, code)) in confusion.iter().zip(labels).enumerate().take(k) {
        let support: u64 = counts.iter().sum();
        let predicted: u64 = confusion.iter().map(|row| row[class]).sum();
        let correct = counts[class];
        if support == 0 && predicted == 0 {
            continue;
        }
        let precision = if predicted > 0 {
            correct as f64 / predicted as f64
        } else {
            0.0
        };
        let recall = if support > 0 {
            correct as f64 / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        weighted += f1 * support as f64;
        total += support;
        macro_sum += f1;
        macro_count += 1;
        if support > 0 {
            per_class.push(ClassEvaluation {
                code: *code,
                name: CategoryCode::from_u16(*code)
                    .map(|code| code.name().to_string())
                    .unwrap_or_default(),
                precision,
                recall,
                f1,
                support,
            });
        }
    }
    (
        per_class,
        if total > 0 {
            weighted / total as f64
        } else {
            0.0
        },
        if macro_count > 0 {
            macro_sum / macro_count as f64
        } else {
            0.0
        },
    )
}

fn summarise_branch(name: &str, folds: &[&BranchEvaluation]) -> BranchSummary {
    let weighted: Vec<f64> = folds.iter().map(|b| b.weighted_f1).collect();
    let macro_f1: Vec<f64> = folds.iter().map(|b| b.macro_f1).collect();
    let (weighted_f1_mean, weighted_f1_std) = mean_and_std(&weighted);
    let (macro_f1_mean, macro_f1_std) = mean_and_std(&macro_f1);
    let rows: usize = folds.iter().map(|b| b.rows).sum();
    let automatic: f64 = folds
        .iter()
        .map(|b| (b.automatic_share * b.rows as f64).round())
        .sum();
    let automatic_correct: f64 = folds
        .iter()
        .map(|b| (b.automatic_precision * (b.automatic_share * b.rows as f64).round()).round())
        .sum();
    let labels = folds.first().map(|b| b.labels.clone()).unwrap_or_default();
    let mut confusion = vec![vec![0u64; labels.len()]; labels.len()];
    for fold in folds {
        if fold.labels == labels {
            for (row, counts) in fold.confusion.iter().enumerate() {
                for (column, count) in counts.iter().enumerate() {
                    confusion[row][column] += count;
                }
            }
        }
    }
    let (per_class, pooled_weighted_f1, pooled_macro_f1) = pooled(&labels, &confusion);
    BranchSummary {
        name: name.to_string(),
        rows,
        weighted_f1_mean,
        weighted_f1_std,
        macro_f1_mean,
        macro_f1_std,
        pooled_weighted_f1,
        pooled_macro_f1,
        automatic_share: if rows > 0 {
            automatic / rows as f64
        } else {
            0.0
        },
        automatic_precision: if automatic > 0.0 {
            automatic_correct / automatic
        } else {
            0.0
        },
        automatic_decisions: automatic as usize,
        per_fold_weighted_f1: weighted,
        per_fold_macro_f1: macro_f1,
        per_class,
    }
}

/// Summarises every branch over the folds.
pub fn summarise(validation: &CrossValidation) -> CrossValidationSummary {
    let mut names: Vec<String> = Vec::new();
    for fold in &validation.folds {
        for branch in &fold.branches {
            if !names.contains(&branch.name) {
                names.push(branch.name.clone());
            }
        }
    }
    let branches = names
        .iter()
        .map(|name| {
            let folds: Vec<&BranchEvaluation> = validation
                .folds
                .iter()
                .filter_map(|fold| fold.branch(name))
                .collect();
            summarise_branch(name, &folds)
        })
        .collect();
    let fusion = validation
        .fusion
        .iter()
        .zip(&validation.fold_seconds)
        .map(|(fusion, seconds)| FoldFusion {
            tuning_rows_with_photo: fusion.tuning.as_ref().map_or(0, |t| t.fused_rows),
            tuning_rows_text: fusion.tuning.as_ref().map_or(0, |t| t.text_rows),
            stacked_kept: fusion.tuning.as_ref().is_some_and(|t| t.stacked_kept),
            image_share: f64::from(fusion.image_weight),
            threshold_fused: fusion.threshold_fused,
            threshold_text_only: fusion.threshold_text_only,
            seconds: *seconds,
        })
        .collect();
    CrossValidationSummary {
        folds: validation.folds.len(),
        target_precision: validation
            .fusion
            .first()
            .map_or(0.0, |fusion| fusion.target_precision),
        branches,
        fusion,
        text_embedding_scales: validation.text_companion_scales.clone(),
        feature_seconds: validation.feature_seconds,
        total_seconds: validation.total_seconds,
    }
}

/// Prints the summary: one line per branch, the fusion of each fold, the pooled per-category
/// table of the system.
pub fn print(summary: &CrossValidationSummary) {
    println!();
    println!(
        "Cross-validation, {} folds: every figure is on held-out folds (neither trained nor tuned on)",
        summary.folds
    );
    let mut table = output::table(&[
        "branch",
        "rows",
        "weighted F1 (mean ± sd)",
        "macro F1 (mean ± sd)",
        "pooled weighted F1",
        "pooled macro F1",
        "automatic",
        "auto precision",
    ]);
    for branch in &summary.branches {
        table.add_row(vec![
            branch.name.clone(),
            branch.rows.to_string(),
            format!(
                "{:.4} ± {:.4}",
                branch.weighted_f1_mean, branch.weighted_f1_std
            ),
            format!("{:.4} ± {:.4}", branch.macro_f1_mean, branch.macro_f1_std),
            format!("{:.4}", branch.pooled_weighted_f1),
            format!("{:.4}", branch.pooled_macro_f1),
            format!("{:.1}%", branch.automatic_share * 100.0),
            format!(
                "{:.1}% of {}",
                branch.automatic_precision * 100.0,
                branch.automatic_decisions
            ),
        ]);
    }
    println!("{table}");
    if summary
        .fusion
        .iter()
        .any(|fold| fold.tuning_rows_with_photo > 0)
    {
        let mut table = output::table(&[
            "fold",
            "tuning products with a photo",
            "tuning products with text",
            "stacked combiner kept",
            "image share",
            "threshold fused",
            "threshold text-only",
            "seconds",
        ]);
        for (index, fold) in summary.fusion.iter().enumerate() {
            table.add_row(vec![
                (index + 1).to_string(),
                fold.tuning_rows_with_photo.to_string(),
                fold.tuning_rows_text.to_string(),
                fold.stacked_kept.to_string(),
                format!("{:.2}", fold.image_share),
                format!("{:.3}", fold.threshold_fused),
                format!("{:.3}", fold.threshold_text_only),
                format!("{:.1}", fold.seconds),
            ]);
        }
        println!("{table}");
    }
    if !summary.text_embedding_scales.is_empty() {
        let scales: Vec<String> = summary
            .text_embedding_scales
            .iter()
            .map(|scale| scale.to_string())
            .collect();
        println!(
            "Weight of the sentence embedding in the text branch, per fold (chosen by \
             cross-validation on its training rows; 0 leaves it out): {}",
            scales.join(", ")
        );
    }
    if let Some(system) = summary.branches.iter().find(|b| b.name == "system") {
        println!("Per category (system, pooled over the held-out folds):");
        crate::commands::evaluate::print_per_class(&system.per_class);
    }
    println!(
        "target precision {:.0}%; image features {:.1}s; total {:.1}s",
        summary.target_precision * 100.0,
        summary.feature_seconds,
        summary.total_seconds
    );
}
