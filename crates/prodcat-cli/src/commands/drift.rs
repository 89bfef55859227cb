//! `prodcat drift`: check a model for data and concept drift over a window of its prediction log
//! (or between two CSV files), store the JSON and HTML report, print a summary; list and show
//! stored reports.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use prodcat_pipelines::{
    check_files, check_prediction_log, drift_report_html, format_ms, get_drift_report,
    list_drift_reports, parse_time_ms, DriftCheck, DriftCheckOptions, DriftWindow, Notification,
};

use crate::output;
use crate::settings::Settings;
use prodcat_platform::Platform;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DriftArgs {
    #[command(subcommand)]
    pub command: Option<DriftCommand>,
    #[command(flatten)]
    pub check: CheckArgs,
}

#[derive(Debug, Subcommand)]
pub enum DriftCommand {
    /// Stored drift reports, newest first.
    List {
        /// Only reports of this model version.
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One stored report: its summary, or its JSON or HTML.
    Show {
        /// Report id (or a unique prefix).
        report: String,
        /// Print the full JSON.
        #[arg(long)]
        json: bool,
        /// Write the HTML page to this file.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Model: version id, unique prefix, alias (champion, challenger) or latest.
    #[arg(long, default_value = "champion", env = "PRODCAT_MODEL")]
    pub model: String,
    /// Start of the window: a duration back from now (7d, 36h), a date (2026-11-01), an RFC 3339
    /// time or Unix milliseconds.
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// End of the window (same forms as --since; default: now).
    #[arg(long, default_value = "now")]
    pub until: String,
    /// Reference CSV in the challenge format; with --current, compare two files instead of the
    /// prediction log (the model is run over both).
    #[arg(long, requires = "current", value_name = "CSV")]
    pub reference: Option<PathBuf>,
    /// Current CSV in the challenge format (with --reference).
    #[arg(long, requires = "reference", value_name = "CSV")]
    pub current: Option<PathBuf>,
    /// Images folder for --reference and --current (image_<imageid>_product_<productid>.jpg).
    #[arg(long, requires = "reference", value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Labels of --current (`,prdtypecode`), for concept drift.
    #[arg(long, requires = "current", value_name = "CSV")]
    pub current_labels: Option<PathBuf>,
    /// Dataset drift when at least this share of the features drifted.
    #[arg(long, default_value_t = 0.5)]
    pub drift_share: f64,
    /// Concept drift when the weighted F1 on reviewed predictions is lower than the model's test
    /// F1 by more than this.
    #[arg(long, default_value_t = 0.05)]
    pub concept_margin: f64,
    /// Fewest reviewed predictions to judge concept drift.
    #[arg(long, default_value_t = 30)]
    pub min_labelled: usize,
    /// Largest number of texts embedded for the embedding components (a sample stratified by
    /// predicted category; the reference profile has the same bound).
    #[arg(long, default_value_t = prodcat_model::MAX_EMBEDDED_TEXTS)]
    pub max_embedded: usize,
    /// Also write report.json and report.html into this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Send the drift notification (webhook) when drift is found.
    #[arg(long)]
    pub notify: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(settings: &Settings, args: DriftArgs) -> anyhow::Result<()> {
    let platform = Platform::from_settings(settings).await?;
    match args.command {
        Some(DriftCommand::List { model, limit, json }) => {
            let model = match model {
                Some(reference) => Some(
                    prodcat_registry::resolve(&platform.database, &reference)
                        .await?
                        .id
                        .to_string(),
                ),
                None => None,
            };
            let reports = list_drift_reports(&platform.database, model.as_deref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
                return Ok(());
            }
            if reports.is_empty() {
                println!("No drift report yet (run `prodcat drift --model champion --since 7d`).");
                return Ok(());
            }
            let mut table = output::table(&[
                "report",
                "model",
                "window",
                "rows",
                "drifted features",
                "dataset drift",
                "reviewed F1 (reference)",
                "created",
            ]);
            for report in reports {
                table.add_row(vec![
                    report.id.clone(),
                    report.model_version.clone(),
                    report
                        .window
                        .map(|w| format!("{} to {}", format_ms(w.start_ms), format_ms(w.end_ms)))
                        .unwrap_or_else(|| report.source.clone()),
                    report.current_rows.to_string(),
                    format!(
                        "{}/{} ({:.0}%)",
                        report.drifted_features,
                        report.tested_features,
                        report.drift_share * 100.0
                    ),
                    if report.dataset_drift { "yes" } else { "no" }.to_string(),
                    match (report.concept_current_f1, report.concept_reference_f1) {
                        (Some(current), Some(reference)) => format!(
                            "{current:.4} ({reference:.4}){}",
                            if report.concept_drift == Some(true) {
                                " drift"
                            } else {
                                ""
                            }
                        ),
                        _ => format!("{} reviewed", report.labelled_rows),
                    },
                    format_ms(report.created_at_ms),
                ]);
            }
            println!("{table}");
            Ok(())
        }
        Some(DriftCommand::Show { report, json, html }) => {
            let check = get_drift_report(&platform, &report).await?;
            if let Some(path) = html {
                let page = drift_report_html(&platform, &check).await?;
                std::fs::write(&path, page)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("Wrote {}", path.display());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&check)?);
            } else {
                print_summary(&check);
            }
            Ok(())
        }
        None => check(&platform, args.check).await,
    }
}

async fn check(platform: &prodcat_platform::Platform, args: CheckArgs) -> anyhow::Result<()> {
    let options = DriftCheckOptions {
        drift_share: args.drift_share,
        concept_margin: args.concept_margin,
        min_labelled: args.min_labelled,
        max_embedded_rows: args.max_embedded,
        ..DriftCheckOptions::default()
    };
    let result = match (&args.reference, &args.current) {
        (Some(reference), Some(current)) => {
            check_files(
                platform,
                &args.model,
                reference,
                current,
                args.images.as_deref(),
                args.current_labels.as_deref(),
                &options,
            )
            .await?
        }
        _ => {
            let now = prodcat_storage::now_ms();
            let window = DriftWindow {
                start_ms: parse_time_ms(&args.since, now)?,
                end_ms: parse_time_ms(&args.until, now)?,
            };
            check_prediction_log(platform, &args.model, window, &options).await?
        }
    };
    if let Some(dir) = &args.out {
        write_files(platform, &result, dir).await?;
    }
    if args.notify && result.drift_found() {
        let concept = result.report.concept_drift.as_ref();
        let delivery = prodcat_pipelines::Notifier::for_platform(platform)
            .notify(
                &platform.database,
                &Notification::DriftFound {
                    model_version: result.model_version.clone(),
                    report_id: result.id.clone(),
                    window: result.window_text(),
                    dataset_drift: result.report.dataset_drift,
                    drifted_features: result.drifted_features(),
                    share_of_drifted_features: result.report.share_of_drifted_columns,
                    concept_current_f1: concept.map(|c| c.current_f1),
                    concept_reference_f1: concept.map(|c| c.reference_f1),
                    concept_drift: result.concept_drifted(),
                    action: "found by prodcat drift; no retraining started".to_string(),
                },
                None,
            )
            .await;
        eprintln!(
            "notification: {} ({})",
            delivery.status.as_str(),
            delivery.error.unwrap_or(delivery.destination)
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print_summary(&result);
    }
    Ok(())
}

async fn write_files(
    platform: &prodcat_platform::Platform,
    check: &DriftCheck,
    dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = dir.join("report.json");
    std::fs::write(&json, serde_json::to_vec_pretty(check)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let html = dir.join("report.html");
    std::fs::write(&html, drift_report_html(platform, check).await?)
        .with_context(|| format!("cannot write {}", html.display()))?;
    eprintln!("Wrote {} and {}", json.display(), html.display());
    Ok(())
}

fn print_summary(check: &DriftCheck) {
    let report = &check.report;
    println!(
        "Drift report {} for {} over {} ({} predictions, {} reviewed; reference {} rows)",
        check.id,
        check.model_version,
        check.window_text(),
        check.window_rows,
        check.labelled_rows,
        report.reference_rows
    );
    let mut table = output::table(&["feature", "kind", "test", "score", "threshold", "drift"]);
    for column in &report.columns {
        table.add_row(vec![
            column.name.clone(),
            column.kind.to_string(),
            column.test_name.clone(),
            format!("{:.4}", column.score),
            format!("{:.4}", column.decision_threshold),
            if column.drifted { "DRIFT" } else { "" }.to_string(),
        ]);
    }
    println!("{table}");
    for skipped in &check.skipped_columns {
        println!("  not tested: {} ({})", skipped.name, skipped.reason);
    }
    println!(
        "Data drift: {} ({} of {} features drifted, {:.0}%; threshold {:.0}%)",
        if report.dataset_drift { "YES" } else { "no" },
        report.drifted_columns,
        report.columns.len(),
        report.share_of_drifted_columns * 100.0,
        report.drift_share * 100.0
    );
    match &report.concept_drift {
        Some(concept) => println!(
            "Concept drift: {} (weighted F1 {:.4} on {} reviewed predictions vs {:.4} at training, margin {:.2})",
            if concept.drifted { "YES" } else { "no" },
            concept.current_f1,
            concept.labelled_predictions,
            concept.reference_f1,
            concept.margin
        ),
        None => println!(
            "Concept drift: not judged ({} reviewed predictions in the window)",
            check.labelled_rows
        ),
    }
    println!(
        "Stored as {} and {} (prodcat drift show {} --html FILE)",
        check.json_key, check.html_key, check.id
    );
}
