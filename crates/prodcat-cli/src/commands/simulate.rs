//! `prodcat simulate`: replay real products as weekly traffic with drift growing to a maximum,
//! let the weekly check detect it and the retraining recover, and write a report with a chart.
//! It runs on its own fresh data folder inside --out, never on the configured database.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use prodcat_pipelines::{format_ms, run_simulation, SimulationOptions, SimulationProgress};

use crate::settings::Settings;
use prodcat_platform::Platform;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SimulationBranch {
    /// The text model (fast).
    Text,
    /// Text and image fused (needs the image backbone from scripts/setup).
    Fusion,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Weeks of traffic.
    #[arg(long, default_value_t = 4)]
    pub weeks: usize,
    /// Drift share of the last week; it grows linearly from 0 in the first week.
    #[arg(long, default_value_t = 0.3)]
    pub max_drift: f64,
    /// Weeks after the ramp, at the maximum drift, that show whether retraining recovers.
    #[arg(long, default_value_t = 2)]
    pub recovery_weeks: usize,
    /// Promotion policy of the retraining: largest per-class F1 drop allowed. Wider than the
    /// production default (0.05) because the simulation's evaluation sets hold about ten
    /// products per class, where one product moves a class's F1 by 0.1.
    #[arg(long, default_value_t = 0.25)]
    pub max_class_drop: f64,
    /// The real data sample (text/X_train_sample.csv, text/extra/, images/); without it the
    /// generated demo catalogue is used.
    #[arg(long, env = "PRODCAT_SAMPLE_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Folder for the report, the weekly drift reports and the simulation's own data.
    #[arg(long, default_value = "simulation", value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of every random choice (same seed, same simulation).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Model branches to train.
    #[arg(long, value_enum, default_value = "text")]
    pub branch: SimulationBranch,
    /// Products served per week (fewer if the held-out products do not suffice).
    #[arg(long, default_value_t = 300)]
    pub traffic: usize,
    /// Share of each week's traffic labelled by the simulated reviewers.
    #[arg(long, default_value_t = 0.5)]
    pub review_share: f64,
    /// Share of the labelled products used to train the first champion.
    #[arg(long, default_value_t = 0.5)]
    pub initial_share: f64,
    /// Largest number of texts embedded per weekly drift check.
    #[arg(long, default_value_t = 300)]
    pub max_embedded: usize,
    /// Send the notifications to the configured webhook (by default they are only recorded).
    #[arg(long)]
    pub notify: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

struct Printer;

impl SimulationProgress for Printer {
    fn message(&self, text: &str) {
        eprintln!("  {text}");
    }
}

const MARKER: &str = "SIMULATION-DATA.txt";

/// A fresh platform of its own for the simulation, in `data_dir` (replacing a previous
/// simulation's folder, and refusing any other folder).
async fn simulation_platform(
    settings: &Settings,
    data_dir: &std::path::Path,
    notify: bool,
) -> anyhow::Result<Platform> {
    if data_dir.exists() {
        if !data_dir.join(MARKER).is_file() {
            anyhow::bail!(
                "{} exists and was not made by a simulation; choose another --out",
                data_dir.display()
            );
        }
        std::fs::remove_dir_all(data_dir)
            .with_context(|| format!("cannot clear {}", data_dir.display()))?;
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    std::fs::write(
        data_dir.join(MARKER),
        "Data of a `prodcat simulate` run; the next simulation into this folder replaces it.\n",
    )?;
    // The simulation runs on a platform of its own, in its own folder.
    let mut simulation_settings = settings.clone();
    simulation_settings.database_url =
        format!("sqlite://{}", data_dir.join("prodcat.db").display());
    simulation_settings.object_store_url = data_dir.join("objects").display().to_string();
    simulation_settings.data_dir = data_dir.to_path_buf();
    if !notify {
        simulation_settings.webhook_urls.clear();
    }
    Platform::from_settings(&simulation_settings)
        .await
        .context("failed to create the simulation's database and object store")
}

/// The weeks as a table.
fn print_weeks(report: &prodcat_pipelines::SimulationReport) {
    let mut table = crate::output::table(&[
        "week",
        "drift",
        "champion",
        "weighted F1",
        "without retraining",
        "drifted features",
        "reviewed F1",
        "decision",
        "retraining",
    ]);
    for week in &report.weeks {
        table.add_row(vec![
            week.week.to_string(),
            format!("{:.0}%", week.injected_drift * 100.0),
            week.champion.clone(),
            format!("{:.4}", week.weighted_f1),
            format!("{:.4}", week.without_retraining_f1),
            format!(
                "{}/{} ({:.0}%)",
                week.drifted_features.len(),
                week.tested_features,
                week.drifted_feature_share * 100.0
            ),
            week.concept_f1
                .map(|f| format!("{f:.4}"))
                .unwrap_or_else(|| "–".to_string()),
            if week.drift_found {
                match (week.dataset_drift, week.concept_drift == Some(true)) {
                    (true, true) => "data + concept drift",
                    (true, false) => "data drift",
                    _ => "concept drift",
                }
            } else {
                "no drift"
            }
            .to_string(),
            match (&week.challenger, week.retrain_run.is_some()) {
                (Some(challenger), _) => format!(
                    "{challenger} {} ({} vs {})",
                    if week.promoted {
                        "promoted"
                    } else {
                        "not promoted"
                    },
                    week.challenger_test_f1
                        .map(|f| format!("{f:.4}"))
                        .unwrap_or_default(),
                    week.champion_test_f1
                        .map(|f| format!("{f:.4}"))
                        .unwrap_or_default()
                ),
                (None, true) => "no new data".to_string(),
                (None, false) => "–".to_string(),
            },
        ]);
    }
    println!("{table}");
}

pub async fn run(settings: &Settings, args: SimulateArgs) -> anyhow::Result<()> {
    let data_dir = args.out.join("prodcat-data");
    let platform = simulation_platform(settings, &data_dir, args.notify).await?;
    let data = args.data.clone().filter(|dir| {
        let found = dir.join("text").join("X_train_sample.csv").is_file();
        if !found {
            eprintln!(
                "note: {} has no text/X_train_sample.csv; using the generated demo catalogue",
                dir.display()
            );
        }
        found
    });
    if data.is_none() {
        eprintln!(
            "note: no real data sample (set PRODCAT_SAMPLE_DATA or --data); the generated demo \
             catalogue stands in, with degraded listings as the only drift"
        );
    }
    let mut options = SimulationOptions::new(&args.out);
    options.weeks = args.weeks;
    options.max_drift = args.max_drift;
    options.recovery_weeks = args.recovery_weeks;
    options.policy.max_class_f1_drop = args.max_class_drop;
    options.data = data;
    options.seed = args.seed;
    options.branches = match args.branch {
        SimulationBranch::Text => "text".to_string(),
        SimulationBranch::Fusion => "fusion".to_string(),
    };
    options.traffic_per_week = args.traffic;
    options.review_share = args.review_share;
    options.initial_share = args.initial_share;
    options.drift.max_embedded_rows = args.max_embedded;
    eprintln!(
        "Simulating {} weeks from {} with drift growing to {:.0}%, then {} at that level (data in {})",
        options.weeks,
        format_ms(options.start_ms),
        options.max_drift * 100.0,
        options.recovery_weeks,
        data_dir.display()
    );
    let report = run_simulation(&platform, &options, &Printer).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_weeks(&report);
    println!(
        "Report with the chart: {} ({} s); weekly drift reports beside it; data: {}",
        report.report_html,
        report.wall_seconds.round(),
        report.data_source
    );
    Ok(())
}
