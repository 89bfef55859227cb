//! `prodcat train`: train a model version on a dataset version, record the run, register the
//! version, and optionally set an alias or promote it under the policy.

use std::sync::Mutex;

use clap::{Args, ValueEnum};
use prodcat_model::{BranchSelection, TrainOptions, TrainingProgress};
use prodcat_pipelines::{run_training, PlatformRescorer, TrainingRequest};
use prodcat_platform::Platform;
use prodcat_registry::{PromotionOutcome, PromotionRequest};
use prodcat_text_model::ClassWeighting;
use prodcat_vision::{HeadKind, HeadTrainingOptions};

use crate::output::{self, Progress};
use crate::settings::Settings;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BranchArg {
    /// TF-IDF word + char n-grams and a linear SVM.
    Text,
    /// Pretrained MobileNetV2 features and a trained head.
    Image,
    /// Both branches and their late fusion.
    Fusion,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClassWeightArg {
    None,
    Balanced,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum HeadArg {
    Mlp,
    Logistic,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset version to train on (id, unique prefix, or latest).
    #[arg(long, default_value = "latest", env = "PRODCAT_TRAIN_DATASET")]
    pub dataset: String,
    /// Which branches to train.
    #[arg(
        long,
        value_enum,
        default_value = "fusion",
        env = "PRODCAT_TRAIN_BRANCH"
    )]
    pub branch: BranchArg,
    /// Regularisation strength C of the text SVM (smaller = stronger regularisation).
    #[arg(long, default_value_t = 0.5)]
    pub c: f64,
    /// Class weights of the text SVM.
    #[arg(long, value_enum, default_value = "none")]
    pub class_weight: ClassWeightArg,
    /// Image head: a one-hidden-layer MLP or multinomial logistic regression.
    #[arg(long, value_enum, default_value = "mlp")]
    pub head: HeadArg,
    /// Hidden units of the MLP head.
    #[arg(long, default_value_t = 512)]
    pub hidden_units: usize,
    /// Maximum epochs of the image head (early stopping on validation ends sooner).
    #[arg(long, default_value_t = 200)]
    pub epochs: usize,
    /// Seed of every random choice in training (same seed, same data: same model).
    #[arg(long, default_value_t = 42, env = "PRODCAT_TRAIN_SEED")]
    pub seed: u64,
    /// Precision that automatic decisions must reach on validation (below: review queue).
    #[arg(long, default_value_t = 0.95)]
    pub target_precision: f64,
    /// A name for the run.
    #[arg(long)]
    pub name: Option<String>,
    /// Point this alias (e.g. challenger) at the new version.
    #[arg(long)]
    pub alias: Option<String>,
    /// Promote the new version to champion if the promotion policy allows it (the first
    /// version always becomes champion).
    #[arg(long)]
    pub promote: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl TrainArgs {
    pub fn options(&self) -> TrainOptions {
        let mut options = TrainOptions {
            branches: match self.branch {
                BranchArg::Text => BranchSelection::Text,
                BranchArg::Image => BranchSelection::Image,
                BranchArg::Fusion => BranchSelection::Fusion,
            },
            target_precision: self.target_precision,
            ..TrainOptions::default()
        };
        options.text.svm.c = self.c;
        options.text.svm.seed = self.seed;
        options.text.svm.class_weighting = match self.class_weight {
            ClassWeightArg::None => ClassWeighting::Uniform,
            ClassWeightArg::Balanced => ClassWeighting::Balanced,
        };
        options.head = HeadTrainingOptions {
            kind: match self.head {
                HeadArg::Mlp => HeadKind::Mlp {
                    hidden_units: self.hidden_units,
                },
                HeadArg::Logistic => HeadKind::LogisticRegression,
            },
            max_epochs: self.epochs,
            seed: self.seed,
            ..HeadTrainingOptions::default()
        };
        options
    }
}

/// Progress bars for the training stages.
pub struct StageBars {
    current: Mutex<Option<Progress>>,
    quiet: bool,
}

impl StageBars {
    pub fn new(quiet: bool) -> Self {
        Self {
            current: Mutex::new(None),
            quiet,
        }
    }
}

impl TrainingProgress for StageBars {
    fn stage(&self, name: &str, total: u64) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = current.take() {
            bar.finish();
        }
        if !self.quiet {
            eprintln!("  - {name}");
            *current = Some(Progress::new(name, total, "items"));
        }
    }
    fn advance(&self, done: u64) {
        if let Some(bar) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            bar.set(done, "");
        }
    }
}

impl Drop for StageBars {
    fn drop(&mut self) {
        if let Some(bar) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            bar.finish();
        }
    }
}

pub async fn run(settings: &Settings, args: TrainArgs) -> anyhow::Result<()> {
    let platform = Platform::from_settings(settings).await?;
    train(&platform, &args).await.map(|_| ())
}

/// Trains, prints the evaluation, sets the alias or promotes. Returns the new version id.
pub async fn train(platform: &Platform, args: &TrainArgs) -> anyhow::Result<String> {
    let options = args.options();
    let request = TrainingRequest {
        dataset: args.dataset.clone(),
        name: args
            .name
            .clone()
            .unwrap_or_else(|| format!("train {}", options.branches.as_str())),
        options,
    };
    if !args.json {
        eprintln!(
            "Training a {} model on dataset {}",
            request.options.branches.as_str(),
            request.dataset
        );
    }
    let bars = StageBars::new(args.json);
    let result = run_training(platform, &request, &bars).await?;
    drop(bars);
    let version = result.version.id.to_string();
    if let Some(alias) = &args.alias {
        prodcat_registry::set_alias(
            &platform.database,
            &prodcat_registry::AliasMove {
                alias: alias.clone(),
                version: result.version.id.clone(),
                actor: crate::settings::actor(),
                reason: format!("set by prodcat train (run {})", result.run.id),
                forced: false,
                decision: None,
            },
        )
        .await?;
    }
    let promotion = if args.promote {
        let dataset = result
            .version
            .dataset_version
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        let mut request = PromotionRequest::champion(
            &version,
            &crate::settings::actor(),
            &format!("trained by prodcat train (run {})", result.run.id),
        );
        request.evaluation_set = Some(format!("{dataset}:test"));
        Some(
            prodcat_registry::promote(&platform.database, &request, &PlatformRescorer { platform })
                .await?,
        )
    } else {
        None
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "run": result.run,
                "version": result.version,
                "created": result.created,
                "evaluation": result.outcome.evaluation,
                "metrics": result.outcome.metrics,
                "promotion": promotion,
            }))?
        );
        return Ok(version);
    }
    print_training_summary(&result);
    if let Some(outcome) = &promotion {
        print_promotion(outcome);
    }
    Ok(version)
}

pub fn print_training_summary(result: &prodcat_pipelines::TrainingRunResult) {
    let evaluation = &result.outcome.evaluation;
    println!();
    if result.created {
        println!(
            "Model version {} (run {})",
            result.version.id, result.run.id
        );
    } else {
        println!(
            "Model version {} (run {}): identical to the version trained before from the same data and parameters",
            result.version.id, result.run.id
        );
    }
    println!(
        "  evaluated on {} ({} products, {} with an image)",
        evaluation.evaluation_set, evaluation.rows, evaluation.rows_with_image
    );
    crate::commands::evaluate::print_branches(evaluation);
    let fusion = result.outcome.bundle.fusion.clone();
    if result.outcome.bundle.image.is_some() && result.outcome.bundle.text.is_some() {
        println!(
            "  fusion: p = {:.2} x image + {:.2} x text (weight tuned on validation)",
            fusion.image_weight,
            1.0 - fusion.image_weight
        );
    }
    println!(
        "  automatic decisions at {:.0}% target precision: threshold {} (validation coverage {}), text-only {} ({})",
        fusion.target_precision * 100.0,
        threshold_text(fusion.threshold_fused),
        output::percent((fusion.coverage_fused * 1000.0) as i64, 1000),
        threshold_text(fusion.threshold_text_only),
        output::percent((fusion.coverage_text_only * 1000.0) as i64, 1000),
    );
    let total: f64 = result.outcome.timings.iter().map(|(_, s)| s).sum();
    println!(
        "  time {} ({})",
        output::duration(std::time::Duration::from_secs_f64(total)),
        result
            .outcome
            .timings
            .iter()
            .map(|(stage, seconds)| format!("{stage} {seconds:.1}s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  pictures and the full report: prodcat runs show {}",
        result.run.id
    );
}

fn threshold_text(threshold: f32) -> String {
    if threshold > 1.0 {
        "never (target not reachable)".to_string()
    } else {
        format!("{threshold:.3}")
    }
}

pub fn print_promotion(outcome: &PromotionOutcome) {
    match outcome {
        PromotionOutcome::FirstVersion { event } => {
            println!(
                "  {} is now the champion (first version)",
                version_text(&event.to_version)
            )
        }
        PromotionOutcome::Promoted { event, decision } => println!(
            "  {} is now the champion: weighted F1 +{:.4} on the same test set",
            version_text(&event.to_version),
            decision.weighted_f1_gain
        ),
        PromotionOutcome::Forced { event, .. } => {
            println!(
                "  {} is now the champion (forced)",
                version_text(&event.to_version)
            )
        }
        PromotionOutcome::Refused { decision } => {
            println!("  not promoted: {}", decision.reasons.join("; "))
        }
    }
}

fn version_text(version: &Option<prodcat_domain::ModelVersionId>) -> String {
    version
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".to_string())
}
