//! `prodcat runs ...`: list, show and compare tracked runs, and export them (with model versions
//! and aliases) to an MLflow tracking server.

use anyhow::Context;
use clap::{Args, Subcommand};
use prodcat_domain::{CategoryCode, DatasetVersionId, ModelVersionId};
use prodcat_registry::runs::{MetricPoint, RunDetails};
use prodcat_registry::{MlflowExportOptions, RunComparison, RunFilter, RunId, RunKind, RunStatus};

use crate::commands::data::format_time;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List tracked runs (training, evaluation, pipelines), newest first.
    List(ListArgs),
    /// Show a run: parameters, metrics and their curves, artifacts, timings.
    Show(ShowArgs),
    /// Compare two runs: parameters and metrics side by side, per-class F1 deltas.
    Compare(CompareArgs),
    /// Export runs, model versions and aliases to an MLflow tracking server (idempotent).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only runs of this kind: train, evaluate or pipeline.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only runs with this status: running, finished or failed.
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs on this dataset version (full id).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Only runs of this model version (full id).
    #[arg(long)]
    pub model: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Run id (or a unique prefix of it).
    pub run: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The first run (the baseline).
    pub a: String,
    /// The second run; deltas are second minus first.
    pub b: String,
    /// Also list the parameters both runs share with the same value.
    #[arg(long)]
    pub all: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// MLflow tracking server, e.g. http://127.0.0.1:5000 (credentials from
    /// MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN).
    #[arg(long, env = "MLFLOW_TRACKING_URI", value_name = "URI")]
    pub mlflow: String,
    /// MLflow experiment receiving the runs (created when missing).
    #[arg(long, default_value = "prodcat", env = "PRODCAT_MLFLOW_EXPERIMENT")]
    pub experiment: String,
    /// MLflow registered model receiving the model versions and aliases.
    #[arg(
        long,
        default_value = "prodcat-classifier",
        env = "PRODCAT_MLFLOW_MODEL_NAME"
    )]
    pub model_name: String,
    /// Export only this run (repeatable; ids or unique prefixes). Default: every run.
    #[arg(long = "run", value_name = "RUN")]
    pub runs: Vec<String>,
    /// Do not export model versions and aliases.
    #[arg(long)]
    pub no_models: bool,
    /// Do not upload artifact files (they are still listed in a run tag).
    #[arg(long)]
    pub no_artifacts: bool,
    /// Seconds to wait for each request.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(settings: &Settings, command: RunsCommand) -> anyhow::Result<()> {
    match command {
        RunsCommand::List(args) => list(settings, args).await,
        RunsCommand::Show(args) => show(settings, &args.run, args.json).await,
        RunsCommand::Compare(args) => compare(settings, args).await,
        RunsCommand::Export(args) => export(settings, args).await,
    }
}

async fn list(settings: &Settings, args: ListArgs) -> anyhow::Result<()> {
    let filter = RunFilter {
        kind: args.kind.as_deref().map(RunKind::parse).transpose()?,
        status: args.status.as_deref().map(RunStatus::parse).transpose()?,
        dataset_version: args
            .dataset
            .as_deref()
            .map(DatasetVersionId::parse)
            .transpose()?,
        model_version: args
            .model
            .as_deref()
            .map(ModelVersionId::parse)
            .transpose()?,
        limit: Some(args.limit),
    };
    let database = settings.open_database().await?;
    let runs = prodcat_registry::list_runs(&database, &filter).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(());
    }
    if runs.is_empty() {
        println!("No runs recorded yet. Every `prodcat train` and `prodcat evaluate` records one.");
        return Ok(());
    }
    let mut table = output::table(&[
        "run", "kind", "status", "name", "started", "duration", "dataset", "model",
    ]);
    for run in runs {
        table.add_row(vec![
            run.id.to_string(),
            run.kind.to_string(),
            run.status.to_string(),
            run.name.clone(),
            format_time(run.started_at_ms),
            run.duration_ms()
                .map(|ms| output::duration(std::time::Duration::from_millis(ms.max(0) as u64)))
                .unwrap_or_else(|| "-".to_string()),
            run.dataset_version
                .map(|id| id.to_string())
                .unwrap_or_else(|| "-".to_string()),
            run.model_version
                .map(|id| id.to_string())
                .unwrap_or_else(|| "-".to_string()),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// A one-line picture of a metric curve.
fn sparkline(points: &[MetricPoint]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let low = points.iter().map(|p| p.value).fold(f64::INFINITY, f64::min);
    let high = points
        .iter()
        .map(|p| p.value)
        .fold(f64::NEG_INFINITY, f64::max);
    let step = if points.len() > 40 {
        points.len().div_ceil(40)
    } else {
        1
    };
    points
        .iter()
        .step_by(step)
        .map(|point| {
            if high > low {
                BARS[(((point.value - low) / (high - low)) * 7.0).round() as usize]
            } else {
                BARS[3]
            }
        })
        .collect()
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e12 {
        format!("{value:.0}")
    } else {
        format!("{value:.4}")
    }
}

fn print_details(details: &RunDetails) {
    let run = &details.run;
    println!("Run {} ({})", run.id, run.name);
    println!("  kind         {}", run.kind);
    println!("  status       {}", run.status);
    if let Some(error) = &run.error {
        println!("  error        {error}");
    }
    println!("  started      {}", format_time(run.started_at_ms));
    if let Some(ended) = run.ended_at_ms {
        println!(
            "  ended        {} ({})",
            format_time(ended),
            output::duration(std::time::Duration::from_millis(
                (ended - run.started_at_ms).max(0) as u64
            ))
        );
    }
    println!("  by           {}", run.created_by);
    println!("  code         {}", run.code_version);
    if let Some(dataset) = &run.dataset_version {
        println!("  dataset      {dataset}");
    }
    if let Some(model) = &run.model_version {
        println!("  model        {model}");
    }
    if !run.parameters.is_empty() {
        let mut table = output::table(&["parameter", "value"]);
        for (key, value) in &run.parameters {
            table.add_row(vec![key.clone(), value.clone()]);
        }
        println!("{table}");
    }
    let plain: Vec<(&String, &Vec<MetricPoint>)> = details
        .metric_history
        .iter()
        .filter(|(key, _)| !key.starts_with("f1.class."))
        .collect();
    if !plain.is_empty() {
        let mut table = output::table(&["metric", "latest", "steps", "curve"]);
        for (key, points) in plain {
            let latest = details.metrics.get(key).copied().unwrap_or(f64::NAN);
            table.add_row(vec![
                key.clone(),
                format_value(latest),
                if points.len() > 1 {
                    format!(
                        "{}..{}",
                        points.first().map_or(0, |p| p.step),
                        points.last().map_or(0, |p| p.step)
                    )
                } else {
                    points.first().map_or(0, |p| p.step).to_string()
                },
                if points.len() > 1 {
                    sparkline(points)
                } else {
                    String::new()
                },
            ]);
        }
        println!("{table}");
    }
    let classes = prodcat_registry::compare::class_f1_values(&details.metrics);
    if !classes.is_empty() {
        let mut table = output::table(&["code", "category", "F1"]);
        for (code, value) in classes {
            table.add_row(vec![
                code.to_string(),
                category_name(code),
                format!("{value:.4}"),
            ]);
        }
        println!("{table}");
    }
    if !details.artifacts.is_empty() {
        let mut table = output::table(&["artifact", "type", "bytes", "sha256", "object key"]);
        for artifact in &details.artifacts {
            table.add_row(vec![
                artifact.name.clone(),
                artifact.media_type.clone(),
                artifact.byte_length.to_string(),
                artifact.sha256[..12].to_string(),
                artifact.object_key.clone(),
            ]);
        }
        println!("{table}");
    }
}

fn category_name(code: u16) -> String {
    CategoryCode::from_u16(code)
        .map(|category| category.name().to_string())
        .unwrap_or_else(|_| "(unknown code)".to_string())
}

async fn show(settings: &Settings, reference: &str, json: bool) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let details = prodcat_registry::get_run(&database, reference).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&details)?);
    } else {
        print_details(&details);
    }
    Ok(())
}

fn optional(value: Option<f64>) -> String {
    value.map(format_value).unwrap_or_else(|| "-".to_string())
}

fn signed(value: Option<f64>) -> String {
    value
        .map(|delta| format!("{delta:+.4}"))
        .unwrap_or_else(|| "-".to_string())
}

fn print_comparison(comparison: &RunComparison, all: bool) {
    println!(
        "Comparing {} ({}) with {} ({}); deltas are second minus first",
        comparison.a.id, comparison.a.name, comparison.b.id, comparison.b.name
    );
    for (label, a, b) in [
        (
            "dataset",
            comparison.a.dataset_version.as_ref().map(|v| v.to_string()),
            comparison.b.dataset_version.as_ref().map(|v| v.to_string()),
        ),
        (
            "code",
            Some(comparison.a.code_version.clone()),
            Some(comparison.b.code_version.clone()),
        ),
    ] {
        let a = a.unwrap_or_else(|| "-".to_string());
        let b = b.unwrap_or_else(|| "-".to_string());
        let marker = if a == b { "" } else { "  (differs)" };
        println!("  {label:<8} {a} | {b}{marker}");
    }
    let parameters: Vec<_> = comparison
        .parameters
        .iter()
        .filter(|parameter| all || parameter.differs)
        .collect();
    if parameters.is_empty() {
        println!(
            "  parameters: all {} identical",
            comparison.parameters.len()
        );
    } else {
        let mut table = output::table(&["parameter", "first", "second", ""]);
        for parameter in parameters {
            table.add_row(vec![
                parameter.key.clone(),
                parameter.a.clone().unwrap_or_else(|| "-".to_string()),
                parameter.b.clone().unwrap_or_else(|| "-".to_string()),
                if parameter.differs { "≠" } else { "" }.to_string(),
            ]);
        }
        println!("{table}");
    }
    if !comparison.metrics.is_empty() {
        let mut table = output::table(&["metric", "first", "second", "delta"]);
        for metric in &comparison.metrics {
            table.add_row(vec![
                metric.key.clone(),
                optional(metric.a),
                optional(metric.b),
                signed(metric.delta),
            ]);
        }
        println!("{table}");
    }
    if !comparison.per_class_f1.is_empty() {
        let mut table = output::table(&["code", "category", "F1 first", "F1 second", "delta"]);
        for class in &comparison.per_class_f1 {
            table.add_row(vec![
                class.code.to_string(),
                class.name.unwrap_or("(unknown code)").to_string(),
                optional(class.a),
                optional(class.b),
                signed(class.delta),
            ]);
        }
        println!("{table}");
    }
}

async fn compare(settings: &Settings, args: CompareArgs) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let comparison = prodcat_registry::compare_runs(&database, &args.a, &args.b).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print_comparison(&comparison, args.all);
    }
    Ok(())
}

async fn export(settings: &Settings, args: ExportArgs) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let runs = if args.runs.is_empty() {
        None
    } else {
        let mut ids: Vec<RunId> = Vec::new();
        for reference in &args.runs {
            ids.push(
                prodcat_registry::resolve_run(&database, reference)
                    .await?
                    .id,
            );
        }
        Some(ids)
    };
    let objects = if args.no_artifacts {
        None
    } else {
        Some(settings.open_objects()?)
    };
    let mlflow = prodcat_registry::MlflowSettings {
        experiment_name: args.experiment.clone(),
        registered_model_name: args.model_name.clone(),
        auth: prodcat_registry::MlflowAuth::from_variables(|name| std::env::var(name).ok()),
        timeout: std::time::Duration::from_secs(args.timeout.max(1)),
        ..prodcat_registry::MlflowSettings::new(&args.mlflow)
    };
    let options = MlflowExportOptions {
        runs,
        include_models: !args.no_models,
        objects,
    };
    let report = prodcat_registry::export_to_mlflow(&database, &mlflow, &options)
        .await
        .context("export to MLflow failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "Exported to MLflow at {} (experiment {:?}, id {})",
        report.tracking_uri, mlflow.experiment_name, report.experiment_id
    );
    println!(
        "  runs       {} new, {} rewritten (were running), {} already there",
        report.runs_created, report.runs_replaced, report.runs_unchanged
    );
    println!(
        "  logged     {} parameters, {} metric values, {} artifact files",
        report.params_logged, report.metrics_logged, report.artifacts_uploaded
    );
    if options.include_models {
        println!(
            "  model {:?}: {} new versions, {} already there; {} aliases set, {} removed",
            mlflow.registered_model_name,
            report.versions_created,
            report.versions_unchanged,
            report.aliases_set,
            report.aliases_removed
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_follow_the_curve() {
        let points: Vec<MetricPoint> = [1.0, 0.5, 0.25, 0.0]
            .iter()
            .enumerate()
            .map(|(step, value)| MetricPoint {
                step: step as i64,
                value: *value,
                timestamp_ms: 0,
            })
            .collect();
        assert_eq!(sparkline(&points), "█▅▃▁");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.81234), "0.8123");
    }
}
