//! The drift simulation: real products replayed as weekly traffic with a controlled drift that
//! grows linearly from none to a maximum share, served by the champion, partly labelled by
//! simulated reviewers, checked every week by the weekly-check pipeline, which retrains when it
//! finds drift. The report shows each week's weighted F1 (on the week's traffic with its true
//! labels), the share of drifted features, the retraining events and the champion, next to the F1
//! the first champion would have had on the same traffic without any retraining.
//!
//! Honesty of the design: the traffic is made of products held out from the initial training
//! data, drawn without replacement (a product is never seen twice); the true labels of the
//! traffic are used only to measure F1; retraining sees only what the simulated reviewers
//! labelled (a uniform random share of each week's traffic) plus the initial data.
//!
//! Drifted traffic, with the real sample: English-translated listings of real products (the
//! labelled translations in `text/extra/`) from a few focus categories (a new cross-border seller:
//! foreign language and a shifted category mix), and degraded French listings (title cut to a few
//! words with typos, no description). With the generated demo catalogue (when no sample is
//! available) only the degraded listings exist.

mod replay;
mod report;
mod traffic;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use prodcat_dataset::{import_dataset, ImportOptions, ImportSource};
use prodcat_drift::rng::SplitMix64;
use prodcat_model::{BranchSelection, TrainOptions};
use prodcat_platform::{Platform, Predictor};
use prodcat_registry::{promote, PromotionRequest, CHAMPION};
use serde::{Deserialize, Serialize};

use self::replay::{log_week, predict_all, WeekScores};
use self::report::{render_report, week_summary};
use self::traffic::{
    demo_pools, input_error, read_sample, write_initial_csv, ItemKind, SimProduct, TrafficPlan,
    WeekTraffic,
};
use crate::drift_check::DriftCheckOptions;
use crate::pipeline_run::RunStatus;
use crate::pipelines::{run_pipeline, PipelineName, PipelineRequest, StartMode};
use crate::rescore::PlatformRescorer;
use crate::training_run::{run_training, TrainingRequest};
use crate::weekly_check::{WeeklyCheckOutput, WeeklyCheckParameters};
use crate::window::DAY_MS;
use crate::PipelineError;

const WEEK_MS: i64 = 7 * DAY_MS;
/// Share of the drifted items that are foreign-language listings (when the sample has them).
const FOREIGN_SHARE_OF_DRIFT: f64 = 0.75;
/// Number of focus categories of the drifted traffic.
const FOCUS_CATEGORIES: usize = 5;

/// What to simulate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulationOptions {
    pub weeks: usize,
    /// Drift share of the last week (the first week has none).
    pub max_drift: f64,
    /// Weeks after the ramp, at `max_drift`, in which a retrained champion shows whether it
    /// recovers the quality.
    pub recovery_weeks: usize,
    /// The promotion policy of the retraining. The simulation's evaluation sets are small
    /// (about ten products per class), so a per-class F1 moves by 0.1 with one product: the
    /// default per-class bound is wider here than in production.
    pub policy: prodcat_registry::PromotionPolicy,
    /// The real sample's folder (`text/X_train_sample.csv`, ...); `None`: the demo catalogue.
    pub data: Option<PathBuf>,
    pub seed: u64,
    /// `text` (fast, the default) or `fusion` (needs the image backbone).
    pub branches: String,
    /// Products served per week (fewer when the held-out products do not suffice).
    pub traffic_per_week: usize,
    /// Share of each week's traffic that reviewers label.
    pub review_share: f64,
    /// Share of the French products used as the initial training data.
    pub initial_share: f64,
    /// Start of week 1 (Unix ms).
    pub start_ms: i64,
    pub drift: DriftCheckOptions,
    /// Where intermediate files and the report go.
    pub out_dir: PathBuf,
}

impl SimulationOptions {
    /// Defaults: 4 weeks, drift up to 30 %, the text branch, 300 products a week, half reviewed,
    /// week 1 starting on the Monday `weeks` weeks before now.
    pub fn new(out_dir: &Path) -> Self {
        let now = prodcat_storage::now_ms();
        // 1970-01-05 was a Monday.
        let monday = now - (now - 4 * DAY_MS).rem_euclid(WEEK_MS);
        Self {
            weeks: 4,
            max_drift: 0.3,
            recovery_weeks: 2,
            policy: prodcat_registry::PromotionPolicy {
                max_class_f1_drop: 0.25,
                ..prodcat_registry::PromotionPolicy::default()
            },
            data: None,
            seed: 42,
            branches: "text".to_string(),
            traffic_per_week: 300,
            review_share: 0.5,
            initial_share: 0.5,
            start_ms: monday - 6 * WEEK_MS,
            drift: DriftCheckOptions::default(),
            out_dir: out_dir.to_path_buf(),
        }
    }

    /// The drift share of week `index` (0-based): linear from 0 to `max_drift`.
    pub fn drift_of_week(&self, index: usize) -> f64 {
        if self.weeks <= 1 || index >= self.weeks {
            return self.max_drift;
        }
        self.max_drift * index as f64 / (self.weeks - 1) as f64
    }
}

/// Receives progress messages.
pub trait SimulationProgress: Send + Sync {
    fn message(&self, _text: &str) {}
}

impl SimulationProgress for () {}

/// One simulated week.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeekResult {
    pub week: usize,
    pub start_ms: i64,
    /// Drift injected into this week's traffic.
    pub injected_drift: f64,
    pub traffic: usize,
    pub foreign_items: usize,
    pub degraded_items: usize,
    /// The champion that served the week.
    pub champion: String,
    /// Weighted F1 of the champion on the week's traffic (true labels).
    pub weighted_f1: f64,
    pub weighted_f1_clean: Option<f64>,
    pub weighted_f1_drifted: Option<f64>,
    /// Weighted F1 the first champion has on the same traffic (no retraining).
    pub without_retraining_f1: f64,
    pub reviewed: usize,
    pub pipeline_run: String,
    pub drift_report: Option<String>,
    pub drift_report_file: Option<String>,
    pub drifted_feature_share: f64,
    pub drifted_features: Vec<String>,
    pub tested_features: usize,
    pub dataset_drift: bool,
    pub concept_f1: Option<f64>,
    pub concept_reference_f1: Option<f64>,
    pub concept_drift: Option<bool>,
    pub drift_found: bool,
    pub retrain_run: Option<String>,
    pub new_rows: Option<usize>,
    pub challenger: Option<String>,
    /// Scores of the champion and the challenger on the new dataset version's test split.
    pub champion_test_f1: Option<f64>,
    pub challenger_test_f1: Option<f64>,
    pub promoted: bool,
    /// The champion after the week's check (and retraining).
    pub champion_after: String,
}

/// The simulation's result (also written as `report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulationReport {
    pub data_source: String,
    pub options: SimulationOptions,
    pub initial_dataset: String,
    pub initial_rows: usize,
    pub initial_champion: String,
    pub initial_test_f1: Option<f64>,
    pub focus_categories: Vec<u16>,
    pub traffic_per_week: usize,
    pub weeks: Vec<WeekResult>,
    pub notifications: usize,
    pub wall_seconds: f64,
    pub report_html: String,
    pub report_json: String,
}

impl SimulationOptions {
    /// Refuses options outside their ranges; returns the branches to train.
    fn check(&self) -> Result<BranchSelection, PipelineError> {
        if self.weeks == 0 || self.weeks > 52 {
            return Err(PipelineError::Invalid(format!(
                "--weeks must be within 1..=52 (got {})",
                self.weeks
            )));
        }
        for (name, value) in [
            ("--max-drift", self.max_drift),
            ("--review-share", self.review_share),
            ("--initial-share", self.initial_share),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(PipelineError::Invalid(format!(
                    "{name} must be within 0..1 (got {value})"
                )));
            }
        }
        BranchSelection::parse(&self.branches).ok_or_else(|| {
            PipelineError::Invalid(format!(
                "unknown branch {:?}: text, image or fusion",
                self.branches
            ))
        })
    }
}

/// The first champion, trained on the initial data.
struct FirstChampion {
    dataset: String,
    version: String,
    test_f1: Option<f64>,
    predictor: Predictor,
}

/// Imports the initial data, trains the first champion on it and promotes it.
async fn train_first_champion(
    platform: &Platform,
    options: &SimulationOptions,
    branches: BranchSelection,
    initial: &[SimProduct],
    images: Option<PathBuf>,
    progress: &dyn SimulationProgress,
) -> Result<FirstChampion, PipelineError> {
    progress.message(&format!(
        "importing the initial data ({} products)",
        initial.len()
    ));
    let (texts, labels) = write_initial_csv(&options.out_dir.join("data"), initial)?;
    let source = ImportSource::explicit(texts, Some(labels), images)?;
    let imported = import_dataset(
        &platform.database,
        &platform.objects,
        &source,
        &ImportOptions {
            split_seed: options.seed,
            note: "simulation: initial data".to_string(),
            ..ImportOptions::default()
        },
        &(),
    )
    .await?;
    let dataset = imported.version().id.to_string();
    progress.message(&format!(
        "training the first champion ({} branch)",
        branches.as_str()
    ));
    let mut train_options = TrainOptions {
        branches,
        ..TrainOptions::default()
    };
    train_options.text.svm.seed = options.seed;
    train_options.head.seed = options.seed;
    let trained = run_training(
        platform,
        &TrainingRequest {
            dataset: dataset.clone(),
            options: train_options,
            name: "simulation: first champion".to_string(),
        },
        &(),
    )
    .await?;
    let rescorer = PlatformRescorer { platform };
    match promote(
        &platform.database,
        &PromotionRequest::champion(
            trained.version.id.as_str(),
            "simulation",
            "first champion of the simulation",
        ),
        &rescorer,
    )
    .await
    {
        Ok(_) | Err(prodcat_registry::RegistryError::AlreadyPromoted { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let test_f1 = trained.outcome.evaluation.system().map(|s| s.weighted_f1);
    progress.message(&format!(
        "champion {} (weighted F1 {} on its test split)",
        trained.version.id,
        test_f1
            .map(|f| format!("{f:.4}"))
            .unwrap_or_else(|| "n/a".into())
    ));
    Ok(FirstChampion {
        dataset,
        version: trained.version.id.to_string(),
        test_f1,
        predictor: Predictor::for_reference(platform, trained.version.id.as_str()).await?,
    })
}

/// Serves one week: its traffic through the champion, the reviewers' labels, the weekly
/// check (which may retrain and promote); returns the week's figures.
async fn simulate_week(
    platform: &Platform,
    options: &SimulationOptions,
    first: &FirstChampion,
    traffic: WeekTraffic,
    rng: &mut SplitMix64,
    progress: &dyn SimulationProgress,
) -> Result<WeekResult, PipelineError> {
    let champion_version = prodcat_registry::resolve(&platform.database, CHAMPION).await?;
    let champion = Predictor::for_reference(platform, champion_version.id.as_str()).await?;
    progress.message(&format!(
        "week {}: {} products, drift {:.0}% ({} foreign, {} degraded), served by {}",
        traffic.week + 1,
        traffic.items.len(),
        traffic.drift * 100.0,
        traffic.foreign_count,
        traffic.degraded_count,
        champion_version.id
    ));
    let items = &traffic.items;
    let predictions = predict_all(&champion, items).await;
    let baseline = if champion_version.id.as_str() != first.version {
        Some(predict_all(&first.predictor, items).await)
    } else {
        None
    };
    let scores = WeekScores::of(items, &predictions, baseline.as_deref());
    let mut indices: Vec<usize> = (0..items.len()).collect();
    rng.shuffle(&mut indices);
    let reviewed: HashSet<usize> = indices
        .into_iter()
        .take((items.len() as f64 * options.review_share).round() as usize)
        .collect();
    log_week(platform, items, &predictions, &reviewed, traffic.end_ms).await?;
    let (run_id, output) =
        run_weekly_check(platform, options, traffic.week, traffic.end_ms).await?;
    let report_file = write_drift_report(platform, options, traffic.week, &output).await?;
    let champion_after = prodcat_registry::resolve(&platform.database, CHAMPION)
        .await?
        .id
        .to_string();
    let retrain = output.retrain.as_ref().and_then(|r| r.result.clone());
    Ok(WeekResult {
        week: traffic.week + 1,
        start_ms: traffic.start_ms,
        injected_drift: traffic.drift,
        traffic: items.len(),
        foreign_items: items.iter().filter(|i| i.kind == ItemKind::Foreign).count(),
        degraded_items: items
            .iter()
            .filter(|i| i.kind == ItemKind::Degraded)
            .count(),
        champion: champion_version.id.to_string(),
        weighted_f1: scores.weighted_f1,
        weighted_f1_clean: scores.weighted_f1_clean,
        weighted_f1_drifted: scores.weighted_f1_drifted,
        without_retraining_f1: scores.without_retraining_f1,
        reviewed: reviewed.len(),
        pipeline_run: run_id,
        drift_report: output.drift.report_id.clone(),
        drift_report_file: report_file,
        drifted_feature_share: output.drift.share_of_drifted_features,
        drifted_features: output.drift.drifted_features.clone(),
        tested_features: output.drift.tested_features,
        dataset_drift: output.drift.dataset_drift,
        concept_f1: output.drift.concept_current_f1,
        concept_reference_f1: output.drift.concept_reference_f1,
        concept_drift: output.drift.concept_drift,
        drift_found: output.decision.drift_found,
        retrain_run: output.retrain.as_ref().map(|r| r.run_id.clone()),
        new_rows: retrain.as_ref().map(|r| r.new_rows),
        challenger: retrain.as_ref().and_then(|r| r.challenger.clone()),
        champion_test_f1: retrain.as_ref().and_then(|r| r.champion_f1),
        challenger_test_f1: retrain.as_ref().and_then(|r| r.challenger_f1),
        promoted: retrain.as_ref().map(|r| r.promoted).unwrap_or(false),
        champion_after,
    })
}

/// Runs the week's `weekly-check` pipeline (drift check, retraining when it finds drift).
async fn run_weekly_check(
    platform: &Platform,
    options: &SimulationOptions,
    week: usize,
    end_ms: i64,
) -> Result<(String, WeeklyCheckOutput), PipelineError> {
    let parameters = WeeklyCheckParameters {
        until_ms: Some(end_ms),
        drift: options.drift.clone(),
        retrain_parameters: serde_json::json!({ "policy": options.policy }),
        ..WeeklyCheckParameters::default()
    };
    let request = PipelineRequest::new(PipelineName::WeeklyCheck, "simulation", StartMode::Fresh)
        .with_parameters(serde_json::to_value(&parameters)?);
    let run = run_pipeline(platform, &request).await?;
    if run.status != RunStatus::Succeeded {
        return Err(PipelineError::Invalid(format!(
            "the weekly check of week {} (run {}) failed: {}",
            week + 1,
            run.id,
            run.error.unwrap_or_default()
        )));
    }
    let output = serde_json::from_value(run.output.clone().unwrap_or_default())?;
    Ok((run.id, output))
}

/// Writes the week's drift report page beside the simulation's report.
async fn write_drift_report(
    platform: &Platform,
    options: &SimulationOptions,
    week: usize,
    output: &WeeklyCheckOutput,
) -> Result<Option<String>, PipelineError> {
    let Some(report_id) = &output.drift.report_id else {
        return Ok(None);
    };
    let check = crate::drift_check::get_drift_report(platform, report_id).await?;
    let html = crate::drift_check::drift_report_html(platform, &check).await?;
    let name = format!("week-{}-drift-report.html", week + 1);
    let path = options.out_dir.join(&name);
    std::fs::write(&path, html).map_err(|e| input_error(&path, e))?;
    Ok(Some(name))
}

/// Runs the simulation (see the module's documentation) and writes `report.html` and
/// `report.json` into the options' folder.
pub async fn run_simulation(
    platform: &Platform,
    options: &SimulationOptions,
    progress: &dyn SimulationProgress,
) -> Result<SimulationReport, PipelineError> {
    let clock = Instant::now();
    let branches = options.check()?;
    std::fs::create_dir_all(&options.out_dir).map_err(|e| input_error(&options.out_dir, e))?;
    let mut pools = match &options.data {
        Some(dir) => read_sample(dir)?,
        None => demo_pools(options.seed),
    };
    progress.message(&format!("data: {}", pools.source));
    let mut rng = SplitMix64::new(options.seed ^ 0x5349_4d55_4c41_5445);
    let initial = pools.take_initial(options.initial_share, &mut rng);
    let plan = TrafficPlan::new(&pools, options, &mut rng)?;
    if plan.per_week < options.traffic_per_week {
        progress.message(&format!(
            "traffic reduced to {} products a week so that no product is served twice",
            plan.per_week
        ));
    }
    let first = train_first_champion(
        platform,
        options,
        branches,
        &initial,
        pools.images.clone(),
        progress,
    )
    .await?;
    let mut weeks = Vec::new();
    for week in 0..plan.total_weeks {
        let traffic = plan.week(week, options, &mut pools, &mut rng);
        let result = simulate_week(platform, options, &first, traffic, &mut rng, progress).await?;
        progress.message(&week_summary(&result));
        weeks.push(result);
    }
    let notifications: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
        .fetch_one(platform.database.pool())
        .await?;
    let report = SimulationReport {
        data_source: pools.source.clone(),
        options: options.clone(),
        initial_dataset: first.dataset,
        initial_rows: initial.len(),
        initial_champion: first.version,
        initial_test_f1: first.test_f1,
        focus_categories: plan.focus.iter().map(|c| c.value()).collect(),
        traffic_per_week: plan.per_week,
        weeks,
        notifications: notifications as usize,
        wall_seconds: clock.elapsed().as_secs_f64(),
        report_html: options.out_dir.join("report.html").display().to_string(),
        report_json: options.out_dir.join("report.json").display().to_string(),
    };
    let html_path = options.out_dir.join("report.html");
    std::fs::write(&html_path, render_report(&report)).map_err(|e| input_error(&html_path, e))?;
    let json_path = options.out_dir.join("report.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .map_err(|e| input_error(&json_path, e))?;
    Ok(report)
}
