//! `prodcat evaluate`: score a model on a dataset version's split or on any labelled CSV pair,
//! record the run, print the metrics per branch and per class, and save the pictures.

use std::path::PathBuf;

use clap::Args;
use prodcat_dataset::Split;
use prodcat_model::EvaluationReport;
use prodcat_pipelines::{record_evaluation_run, EvaluationInput};

use crate::output;
use crate::settings::Settings;
use prodcat_platform::Platform;

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Model: version id, unique prefix, alias (champion, challenger) or latest.
    #[arg(long, default_value = "champion", env = "PRODCAT_MODEL")]
    pub model: String,
    /// Dataset version whose split to score (default: the model's own dataset version).
    #[arg(long, conflicts_with = "texts")]
    pub dataset: Option<String>,
    /// The split to score.
    #[arg(long, default_value = "test", value_parser = ["train", "validation", "test"])]
    pub split: String,
    /// A labelled texts CSV in the challenge format, instead of a dataset version.
    #[arg(long, requires = "labels")]
    pub texts: Option<PathBuf>,
    /// The labels CSV of --texts.
    #[arg(long, requires = "texts")]
    pub labels: Option<PathBuf>,
    /// The images folder of --texts (image_<imageid>_product_<productid>.jpg).
    #[arg(long, requires = "texts")]
    pub images: Option<PathBuf>,
    /// Write evaluation.json and the SVG pictures into this folder too.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(settings: &Settings, args: EvaluateArgs) -> anyhow::Result<()> {
    let platform = Platform::from_settings(settings).await?;
    let input = match (&args.texts, &args.labels) {
        (Some(texts), Some(labels)) => EvaluationInput::Files {
            texts: texts.clone(),
            labels: labels.clone(),
            images: args.images.clone(),
        },
        _ => {
            let dataset = match &args.dataset {
                Some(dataset) => dataset.clone(),
                None => {
                    let version =
                        prodcat_registry::resolve(&platform.database, &args.model).await?;
                    version
                        .dataset_version
                        .map(|d| d.to_string())
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "model {} has no dataset version; pass --dataset",
                                version.id
                            )
                        })?
                }
            };
            EvaluationInput::Split {
                dataset,
                split: Split::parse(&args.split).unwrap_or(Split::Test),
            }
        }
    };
    let evaluation = record_evaluation_run(&platform, &args.model, &input).await?;
    if let Some(folder) = &args.out {
        std::fs::create_dir_all(folder)?;
        std::fs::write(
            folder.join("evaluation.json"),
            serde_json::to_vec_pretty(&evaluation.report)?,
        )?;
        for (name, svg) in &evaluation.pictures {
            std::fs::write(folder.join(name), svg)?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation.report)?);
        return Ok(());
    }
    let report = &evaluation.report;
    println!(
        "Model {} on {} ({} products, {} with an image) - run {}",
        report.model_version,
        report.evaluation_set,
        report.rows,
        report.rows_with_image,
        evaluation.run.id
    );
    print_branches(report);
    if let Some(system) = report.system() {
        print_per_class(&system.per_class);
    }
    match &args.out {
        Some(folder) => println!(
            "Confusion matrix and reliability diagrams written to {}",
            folder.display()
        ),
        None => println!(
            "Confusion matrix and reliability diagrams: prodcat runs show {} (or --out DIR)",
            evaluation.run.id
        ),
    }
    Ok(())
}

/// One line per category: precision, recall, F1 and support.
pub fn print_per_class(per_class: &[prodcat_model::ClassEvaluation]) {
    let mut table = output::table(&["code", "category", "precision", "recall", "F1", "support"]);
    for class in per_class {
        table.add_row(vec![
            class.code.to_string(),
            class.name.clone(),
            format!("{:.3}", class.precision),
            format!("{:.3}", class.recall),
            format!("{:.3}", class.f1),
            class.support.to_string(),
        ]);
    }
    println!("{table}");
}

/// One line per branch: rows, weighted / macro F1, accuracy, ECE, automatic share and precision.
pub fn print_branches(report: &EvaluationReport) {
    let mut table = output::table(&[
        "branch",
        "rows",
        "weighted F1",
        "macro F1",
        "accuracy",
        "ECE",
        "automatic",
        "auto precision",
    ]);
    for branch in &report.branches {
        table.add_row(vec![
            branch.name.clone(),
            branch.rows.to_string(),
            format!("{:.4}", branch.weighted_f1),
            format!("{:.4}", branch.macro_f1),
            format!("{:.4}", branch.accuracy),
            format!("{:.4}", branch.expected_calibration_error),
            format!("{:.1}%", branch.automatic_share * 100.0),
            format!("{:.1}%", branch.automatic_precision * 100.0),
        ]);
    }
    println!("{table}");
}
