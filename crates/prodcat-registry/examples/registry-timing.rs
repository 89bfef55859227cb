//! Times the registry's operations on a real database and prints a table: starting runs, logging
//! metric curves (one call per value and in batches), listing, showing and comparing runs,
//! registering versions, moving aliases, rollback, resolving references, and (when
//! `PRODCAT_TEST_MLFLOW_URL` names a running `mlflow server`) exporting to MLflow.
//!
//! ```text
//! cargo run --release -p prodcat-registry --example registry-timing -- [DATABASE_URL]
//! ```
//!
//! Without an argument it uses a fresh SQLite file in a temporary folder; pass
//! `postgres://...` (an empty database) to time PostgreSQL. With `--keep DIR` the SQLite file is
//! written to `DIR/prodcat.db` and kept, which gives `prodcat runs` / `prodcat models` something
//! to show.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use prodcat_domain::{sha256_hex, DatasetVersionId, ModelVersionId};
use prodcat_registry::{
    compare_runs, finish_run, get_run, list_runs, log_metric, log_metrics, register_version,
    resolve, rollback, set_alias, start_run, AliasMove, MlflowExportOptions, MlflowSettings,
    NewModelVersion, NewRun, RunFilter, RunKind,
};
use prodcat_storage::Database;

const RUNS: usize = 20;
const EPOCHS: i64 = 50;
const CLASSES: [u16; 27] = [
    10, 40, 50, 60, 1140, 1160, 1180, 1280, 1281, 1300, 1301, 1302, 1320, 1560, 1920, 1940, 2060,
    2220, 2280, 2403, 2462, 2522, 2582, 2583, 2585, 2705, 2905,
];

struct Timings(Vec<(String, usize, Duration)>);

impl Timings {
    fn add(&mut self, what: &str, count: usize, elapsed: Duration) {
        self.0.push((what.to_string(), count, elapsed));
    }

    fn print(&self, backend: &str) {
        println!("| operation ({backend}) | count | total ms | per operation ms |");
        println!("|---|---:|---:|---:|");
        for (what, count, elapsed) in &self.0 {
            let total = elapsed.as_secs_f64() * 1000.0;
            println!(
                "| {what} | {count} | {total:.1} | {:.3} |",
                total / (*count).max(1) as f64
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let folder = tempfile::tempdir()?;
    let mut url = folder.path().join("prodcat.db").display().to_string();
    let mut index = 0;
    while index < arguments.len() {
        match arguments[index].as_str() {
            "--keep" => {
                let keep = arguments.get(index + 1).context("--keep needs a folder")?;
                std::fs::create_dir_all(keep)?;
                url = format!("{keep}/prodcat.db");
                index += 2;
            }
            other => {
                url = other.to_string();
                index += 1;
            }
        }
    }
    let database = Database::connect(&url).await?;
    let backend = database.backend().name();
    let mut timings = Timings(Vec::new());
    let dataset = DatasetVersionId::parse("ds-0123456789abcdef")?;

    let mut run_ids = Vec::new();
    let started = Instant::now();
    for number in 0..RUNS {
        let mut run = NewRun::new(RunKind::Train, &format!("train {number}"), "timing");
        run.dataset_version = Some(dataset.clone());
        run.parameters = BTreeMap::from([
            ("seed".to_string(), number.to_string()),
            ("text.c".to_string(), "0.5".to_string()),
            ("image.epochs".to_string(), EPOCHS.to_string()),
        ]);
        run_ids.push(start_run(&database, &run).await?.id);
    }
    timings.add("start_run", RUNS, started.elapsed());

    // One call per value: a training loop logging its loss each epoch.
    let started = Instant::now();
    for epoch in 0..EPOCHS {
        log_metric(
            &database,
            &run_ids[0],
            "epoch.image.train_loss",
            epoch,
            1.0 / (epoch + 1) as f64,
        )
        .await?;
    }
    timings.add(
        "log_metric (one value per call)",
        EPOCHS as usize,
        started.elapsed(),
    );

    // Batches: per-epoch curves of three keys plus the final per-class F1 for every other run.
    let started = Instant::now();
    let mut values = 0;
    for (number, run) in run_ids.iter().enumerate().skip(1) {
        let mut batch: Vec<(String, i64, f64)> = Vec::new();
        for epoch in 0..EPOCHS {
            let progress = (epoch + 1) as f64 / EPOCHS as f64;
            batch.push(("epoch.image.train_loss".into(), epoch, 1.0 - 0.9 * progress));
            batch.push((
                "epoch.image.validation_loss".into(),
                epoch,
                1.1 - 0.8 * progress,
            ));
            batch.push((
                "epoch.image.validation_weighted_f1".into(),
                epoch,
                0.5 + 0.3 * progress,
            ));
        }
        let weighted = 0.78 + number as f64 * 0.002;
        batch.push(("weighted_f1".into(), 0, weighted));
        for (class, code) in CLASSES.iter().enumerate() {
            let f1 = (weighted + (class as f64 - 13.0) * 0.01).clamp(0.0, 1.0);
            batch.push((format!("f1.class.{code}"), 0, f1));
        }
        values += batch.len();
        log_metrics(&database, run, batch).await?;
    }
    timings.add(
        "log_metrics (values, in one batch per run)",
        values,
        started.elapsed(),
    );
    for run in &run_ids {
        finish_run(&database, run).await?;
    }

    let started = Instant::now();
    for _ in 0..20 {
        list_runs(&database, &RunFilter::default()).await?;
    }
    timings.add("list_runs (20 runs)", 20, started.elapsed());
    let started = Instant::now();
    for run in &run_ids {
        get_run(&database, run.as_str()).await?;
    }
    timings.add("get_run (178 values each)", RUNS, started.elapsed());
    let started = Instant::now();
    for pair in run_ids.windows(2) {
        compare_runs(&database, pair[0].as_str(), pair[1].as_str()).await?;
    }
    timings.add("compare_runs", RUNS - 1, started.elapsed());

    let mut versions = Vec::new();
    let started = Instant::now();
    for (number, run) in run_ids.iter().enumerate() {
        let id = ModelVersionId::from_hash(&sha256_hex(format!("timing {number}").as_bytes()));
        register_version(
            &database,
            &NewModelVersion {
                id: id.clone(),
                run_id: Some(run.clone()),
                dataset_version: Some(dataset.clone()),
                manifest_json: format!(r#"{{"formatVersion":1,"id":"{id}"}}"#),
                object_prefix: format!("models/{id}"),
                summary_metrics: BTreeMap::from([(
                    "weighted_f1".to_string(),
                    0.78 + number as f64 * 0.002,
                )]),
                created_by: "timing".to_string(),
                note: String::new(),
            },
        )
        .await?;
        versions.push(id);
    }
    timings.add("register_version", RUNS, started.elapsed());

    let started = Instant::now();
    for version in &versions {
        set_alias(
            &database,
            &AliasMove {
                alias: "champion".to_string(),
                version: version.clone(),
                actor: "timing".to_string(),
                reason: "timing".to_string(),
                forced: false,
                decision: None,
            },
        )
        .await?;
    }
    timings.add("set_alias (with history row)", RUNS, started.elapsed());
    let started = Instant::now();
    for _ in 0..5 {
        rollback(&database, "champion", "timing", "timing").await?;
    }
    timings.add("rollback", 5, started.elapsed());
    let started = Instant::now();
    let prefix = &versions[5].as_str()[..9];
    for reference in ["champion", "latest", versions[3].as_str(), prefix] {
        for _ in 0..25 {
            resolve(&database, reference).await?;
        }
    }
    timings.add(
        "resolve (alias, latest, id, prefix)",
        100,
        started.elapsed(),
    );

    if let Ok(mlflow) = std::env::var("PRODCAT_TEST_MLFLOW_URL") {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis();
        let settings = MlflowSettings {
            experiment_name: format!("prodcat-timing-{unique}"),
            registered_model_name: format!("prodcat-timing-{unique}"),
            ..MlflowSettings::new(&mlflow)
        };
        let options = MlflowExportOptions::default();
        let started = Instant::now();
        let report = prodcat_registry::export_to_mlflow(&database, &settings, &options).await?;
        timings.add(
            &format!(
                "MLflow export, first ({} runs, {} values, {} versions)",
                report.runs_created, report.metrics_logged, report.versions_created
            ),
            1,
            started.elapsed(),
        );
        let started = Instant::now();
        let again = prodcat_registry::export_to_mlflow(&database, &settings, &options).await?;
        timings.add(
            &format!(
                "MLflow export, again ({} unchanged runs)",
                again.runs_unchanged
            ),
            1,
            started.elapsed(),
        );
    } else {
        println!("(MLflow export not timed: PRODCAT_TEST_MLFLOW_URL is not set)");
    }
    timings.print(backend);
    Ok(())
}
