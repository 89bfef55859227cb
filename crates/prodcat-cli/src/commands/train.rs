//! `prodcat train`: train a model version on a dataset version, record the run, register the
//! version, and optionally set an alias or promote it under the policy.

use std::sync::Mutex;

use clap::{Args, ValueEnum};
use prodcat_model::{
    BranchSelection, TrainOptions, TrainingProgress, DEFAULT_CROSS_VALIDATION_SEED,
};
use prodcat_pipelines::{cross_validate_training, run_training, PlatformRescorer, TrainingRequest};
use prodcat_platform::Platform;
use prodcat_registry::{PromotionOutcome, PromotionRequest};
use prodcat_text_model::ClassWeighting;
use prodcat_vision::{BackboneChoice, HeadKind, HeadTrainingOptions};

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

fn parse_dropout(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(value) if (0.0..1.0).contains(&value) => Ok(value),
        _ => Err(format!(
            "dropout must be at least 0 and below 1, not {text:?}"
        )),
    }
}

fn parse_non_negative(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!("expected a number of at least 0, not {text:?}")),
    }
}

fn parse_positive(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        _ => Err(format!("expected a positive number, not {text:?}")),
    }
}

fn parse_scale(text: &str) -> Result<f32, String> {
    parse_positive(text).map_err(|_| {
        format!(
            "the weight must be a positive number (2 weighs the embedding as much as the n-grams), not {text:?}"
        )
    })
}

fn parse_backbone(name: &str) -> Result<BackboneChoice, String> {
    BackboneChoice::parse(name).map_err(|error| error.to_string())
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
    /// Pretrained network for the photos: mobilenet-v2, efficientnet-lite0, efficientnet-lite1
    /// or efficientnet-lite2, or two joined by + (mobilenet-v2+efficientnet-lite2: both
    /// networks' features side by side, more accurate, both networks' time per photo). Each
    /// must be installed in the model folder (scripts/setup installs them). Serving loads the
    /// one a model was trained with.
    #[arg(long, default_value = "mobilenet-v2", value_parser = parse_backbone)]
    pub backbone: BackboneChoice,
    /// Give the text branch the multilingual-e5-small embedding of each product's text beside
    /// its n-grams (its weight chosen by cross-validation on the training rows, which may
    /// leave it out). More accurate on new products; each text prediction then embeds the text,
    /// about 10 ms instead of 0.1 ms, so serving answers far fewer requests per second.
    #[arg(long, env = "PRODCAT_TRAIN_TEXT_EMBEDDINGS")]
    pub text_embeddings: bool,
    /// The weight of the sentence embedding beside the n-grams, instead of choosing it among
    /// 0, 1, 2 and 3 by cross-validation (implies --text-embeddings; faster training).
    #[arg(long, value_name = "SCALE", value_parser = parse_scale)]
    pub text_embedding_scale: Option<f32>,
    /// Average each photo's features with its mirror image's (twice the network time).
    #[arg(long)]
    pub flip_averaging: bool,
    /// Hidden units of the MLP head.
    #[arg(long, default_value_t = 512)]
    pub hidden_units: usize,
    /// Dropout of the MLP head's hidden layer during training (0 to below 1).
    #[arg(long, default_value_t = 0.5, value_parser = parse_dropout)]
    pub head_dropout: f32,
    /// L2 penalty on the image head's weights.
    #[arg(long, default_value_t = 0.1, value_parser = parse_non_negative)]
    pub head_l2: f32,
    /// Learning rate of the image head (Adam).
    #[arg(long, default_value_t = 3e-4, value_parser = parse_positive)]
    pub head_learning_rate: f32,
    /// Maximum epochs of the image head (early stopping on validation ends sooner).
    #[arg(long, default_value_t = 200)]
    pub epochs: usize,
    /// Seed of every random choice in training (same seed, same data: same model).
    #[arg(long, default_value_t = 42, env = "PRODCAT_TRAIN_SEED")]
    pub seed: u64,
    /// Precision that automatic decisions must reach on new products (the lower confidence
    /// bound of their precision on the tuning products; below: review queue).
    #[arg(long, default_value_t = 0.95)]
    pub target_precision: f64,
    /// Folds of the cross-fit of the branches on the training split, on whose out-of-fold
    /// predictions the fusion and the thresholds are tuned (0: tune on the validation split
    /// only, which is often too small for any automatic decision).
    #[arg(long, default_value_t = 5)]
    pub cross_fit_folds: usize,
    /// Keep the branches fitted on the training split alone. By default, once the settings
    /// are chosen and the fusion and thresholds tuned, the final branches are refit on the
    /// training and validation rows together (the test split stays out, and the evaluation is
    /// of the refit model).
    #[arg(long)]
    pub no_refit: bool,
    /// Instead of training one version, cross-validate the training on the dataset version's
    /// labelled rows with this many folds (each fold in turn is the test set; nothing is
    /// registered) and print each branch's figures on the held-out folds.
    #[arg(long, value_name = "FOLDS")]
    pub cross_validate: Option<usize>,
    /// Seed of the fold assignment of --cross-validate: another seed cuts the same rows into
    /// other folds, to check that a comparison holds beyond one partition.
    #[arg(long, value_name = "SEED", default_value_t = DEFAULT_CROSS_VALIDATION_SEED)]
    pub fold_seed: u64,
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
    /// The arguments `prodcat train WORDS...` would get: every flag not in `words` at its
    /// documented default, so commands that train from inside the binary (the quickstart) do
    /// not restate the defaults.
    pub fn from_words(words: &[&str]) -> anyhow::Result<Self> {
        #[derive(clap::Parser)]
        struct TrainCommand {
            #[command(flatten)]
            args: TrainArgs,
        }
        let command = <TrainCommand as clap::Parser>::try_parse_from(
            std::iter::once("train").chain(words.iter().copied()),
        )?;
        Ok(command.args)
    }

    pub fn options(&self) -> TrainOptions {
        let mut options = TrainOptions {
            branches: match self.branch {
                BranchArg::Text => BranchSelection::Text,
                BranchArg::Image => BranchSelection::Image,
                BranchArg::Fusion => BranchSelection::Fusion,
            },
            target_precision: self.target_precision,
            cross_fit_folds: self.cross_fit_folds,
            cross_validation_seed: self.fold_seed,
            text_embeddings: self.text_embeddings || self.text_embedding_scale.is_some(),
            refit: !self.no_refit,
            ..TrainOptions::default()
        };
        if let Some(scale) = self.text_embedding_scale {
            options.companion_scales = vec![scale];
        }
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
            dropout: self.head_dropout,
            l2_penalty: self.head_l2,
            learning_rate: self.head_learning_rate,
            ..HeadTrainingOptions::default()
        };
        options.image_backbone = self.backbone.with_flip_averaging(self.flip_averaging);
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
    if let Some(folds) = args.cross_validate {
        if !args.json {
            eprintln!("{folds} folds, cut with fold seed {}", args.fold_seed);
        }
        let bars = StageBars::new(args.json);
        let validation = cross_validate_training(platform, &request, folds, &bars).await?;
        drop(bars);
        let summary = crate::commands::cross_validation::summarise(&validation);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            crate::commands::cross_validation::print(&summary);
        }
        return Ok(String::new());
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
    if let Some(system) = evaluation.system() {
        println!("  per category ({}):", system.name);
        crate::commands::evaluate::print_per_class(&system.per_class);
    }
    let fusion = result.outcome.bundle.fusion.clone();
    if result.outcome.bundle.image.is_some() && result.outcome.bundle.text.is_some() {
        println!("  fusion: {}", fusion_text(&fusion));
    }
    println!(
        "  automatic decisions at {:.0}% target precision (lower confidence bound of their precision, {}): {}",
        fusion.target_precision * 100.0,
        tuned_on_text(&fusion, |tuning| tuning.text_rows, "with a text"),
        thresholds_text(
            &fusion,
            result.outcome.bundle.text.is_some(),
            result.outcome.bundle.image.is_some()
        ),
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

/// What a choice was tuned on: `rows` of the recorded tuning products, described as `what`
/// ("with a photo", "with a text").
fn tuned_on_text(
    fusion: &prodcat_model::FusionSettings,
    rows: fn(&prodcat_model::TuningSummary) -> usize,
    what: &str,
) -> String {
    match &fusion.tuning {
        Some(tuning) if tuning.folds >= 2 => format!(
            "tuned on {} products {what} ({}-fold out-of-fold training predictions and validation)",
            rows(tuning),
            tuning.folds
        ),
        Some(tuning) => format!("tuned on {} validation products {what}", rows(tuning)),
        None => "tuned on validation".to_string(),
    }
}

/// Each threshold the model uses, with the share of tuning products it decides; only the
/// branches the model has.
fn thresholds_text(fusion: &prodcat_model::FusionSettings, text: bool, image: bool) -> String {
    let one = |threshold: f32, coverage: f64| {
        format!(
            "{} (tuning coverage {})",
            threshold_text(threshold),
            output::percent((coverage * 1000.0) as i64, 1000)
        )
    };
    let mut parts = Vec::new();
    if text && image {
        parts.push(format!(
            "text and photo {}",
            one(fusion.threshold_fused, fusion.coverage_fused)
        ));
    }
    if text {
        parts.push(format!(
            "text only {}",
            one(fusion.threshold_text_only, fusion.coverage_text_only)
        ));
    }
    if image {
        parts.push(format!(
            "photo only {}",
            one(fusion.threshold_image_only, fusion.coverage_image_only)
        ));
    }
    parts.join(", ")
}

/// How the branches are combined and what that was tuned on, in one line.
pub fn fusion_text(fusion: &prodcat_model::FusionSettings) -> String {
    let tuned_on = tuned_on_text(fusion, |tuning| tuning.fused_rows, "with a photo");
    match (&fusion.stacked, &fusion.tuning) {
        (Some(stacked), Some(tuning)) if stacked.uses_image() => format!(
            "stacked: {:.2} x log p(text) + {:.2} x log p(image) + class bias (image share {:.2}; \
             held-out weighted F1 {:.4} against text {:.4}), {tuned_on}",
            stacked.text_scale,
            stacked.image_scale,
            fusion.image_weight,
            tuning.stacked_weighted_f1,
            tuning.text_weighted_f1
        ),
        (Some(_), Some(tuning)) => format!(
            "text branch alone: the photo did not help on held-out tuning rows (weighted F1 {:.4} against text {:.4}), {tuned_on}",
            tuning.stacked_weighted_f1, tuning.text_weighted_f1
        ),
        _ => format!(
            "p = {:.2} x image + {:.2} x text, {tuned_on}",
            fusion.image_weight,
            1.0 - fusion.image_weight
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use prodcat_vision::BackboneKind;

    #[test]
    fn arguments_from_words_take_the_documented_defaults() {
        let args = TrainArgs::from_words(&["--branch", "text", "--seed", "7", "--promote"])
            .expect("valid words");
        assert!(matches!(args.branch, BranchArg::Text));
        assert_eq!(args.seed, 7);
        assert!(args.promote);
        assert_eq!(args.c, 0.5);
        assert_eq!(args.backbone, BackboneChoice::default());
        assert_eq!(args.hidden_units, 512);
        // The head's flags default to the head's own defaults.
        let head = args.options().head;
        let defaults = HeadTrainingOptions::default();
        assert_eq!(
            (head.dropout, head.l2_penalty, head.learning_rate),
            (
                defaults.dropout,
                defaults.l2_penalty,
                defaults.learning_rate
            )
        );
        assert_eq!(args.fold_seed, DEFAULT_CROSS_VALIDATION_SEED);
        assert!(args.cross_validate.is_none() && args.alias.is_none() && !args.json);
        let error = TrainArgs::from_words(&["--backbone", "resnet"]).unwrap_err();
        assert!(error.to_string().contains("resnet"), "{error}");
        let pair = TrainArgs::from_words(&[
            "--backbone",
            "mobilenet-v2+efficientnet-lite2",
            "--flip-averaging",
        ])
        .unwrap()
        .options()
        .image_backbone;
        assert_eq!(
            pair,
            BackboneChoice::new(BackboneKind::MobileNetV2, true)
                .with_appended(BackboneKind::EfficientNetLite2)
        );
    }

    #[test]
    fn the_sentence_embedding_is_asked_for_with_a_chosen_or_a_fixed_weight() {
        let default = TrainArgs::from_words(&[]).unwrap().options();
        assert!(!default.text_embeddings);
        let chosen = TrainArgs::from_words(&["--text-embeddings"])
            .unwrap()
            .options();
        assert!(chosen.text_embeddings);
        assert_eq!(chosen.companion_scales, [0.0, 1.0, 2.0, 3.0]);
        let fixed = TrainArgs::from_words(&["--text-embedding-scale", "2"])
            .unwrap()
            .options();
        assert!(fixed.text_embeddings);
        assert_eq!(fixed.companion_scales, [2.0]);
        let error = TrainArgs::from_words(&["--text-embedding-scale", "0"]).unwrap_err();
        assert!(error.to_string().contains("positive"), "{error}");
    }
}
