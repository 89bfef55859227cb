//! Training a model version from a dataset version: the text branch (TF-IDF + linear SVM,
//! temperature-calibrated on validation), the image branch (frozen backbone features from the
//! cache + a trained head, calibrated), late fusion tuned on validation, automation thresholds
//! for a target precision, a drift reference profile, the refit of the final branches on the
//! training and validation rows with the settings chosen, and the evaluation on the test split.
//!
//! Everything is deterministic for the same dataset version, options and seed, so the bundle (and
//! its version id) is identical when training is repeated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use prodcat_dataset::{load_rows, DatasetRow, Split};
use prodcat_domain::{normalize_text, product_text, CategoryCode, ContentHash, DatasetVersionId};
use prodcat_drift::features::ImageStats;
use prodcat_embed::TextEmbedder;
use prodcat_metrics::TemperatureScaling;
use prodcat_storage::{image_key, Database, ObjectStorage};
use prodcat_text_model::{DenseCompanion, TextClassifier, TextClassifierOptions};
use prodcat_vision::{BackboneChoice, HeadKind, HeadTrainingOptions, ImageHead};
use serde::Serialize;

use crate::bundle::TuningSummary;
use crate::bundle::{write_bundle, BundleManifest, FusionSettings, ImageBranch, ModelBundle};
use crate::classifier::{Combined, ProductClassifier};
use crate::evaluation::{argmax, evaluate_rows, EvaluationReport, LabelledProduct};
use crate::features::{FeatureCache, ImageBackbone};
use crate::fusion::{
    automation_threshold_bounded, choose_stacked_fusion, StackingOptions, PRECISION_BOUND_Z,
};
use crate::profile::{reference_profile, ReferenceRow};
use crate::text_embeddings::{
    choose_companion_scale, companion_vectors, CompanionVectors, COMPANION_SCALES,
    COMPANION_SCALE_FOLDS,
};
use crate::ModelError;

/// Which branches to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BranchSelection {
    Text,
    Image,
    /// Both branches and their fusion.
    Fusion,
}

impl BranchSelection {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "text" => Some(Self::Text),
            "image" => Some(Self::Image),
            "fusion" | "both" | "multimodal" => Some(Self::Fusion),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Fusion => "fusion",
        }
    }
    fn wants_text(self) -> bool {
        matches!(self, Self::Text | Self::Fusion)
    }
    fn wants_image(self) -> bool {
        matches!(self, Self::Image | Self::Fusion)
    }
}

/// Everything that controls a training run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub branches: BranchSelection,
    pub text: TextClassifierOptions,
    pub head: HeadTrainingOptions,
    /// The pretrained network (and flip averaging) whose features the image head learns from;
    /// the bundle records it and serving loads the same.
    pub image_backbone: BackboneChoice,
    /// Precision that automatic decisions must reach on new products: thresholds are chosen so
    /// that the lower confidence bound of their precision on the tuning rows reaches it.
    pub target_precision: f64,
    /// Folds of the cross-fit of the branches on the training split (0 or 1: tune on the
    /// validation split only). Every training product then has honest branch probabilities, on
    /// which the combiner (for a fusion) and the thresholds are tuned.
    pub cross_fit_folds: usize,
    /// How strongly the stacked combiner is pulled toward the text branch.
    pub stacking: StackingOptions,
    /// Give the text branch the multilingual-e5-small embedding of each text as companion
    /// features beside its n-grams, at a scale chosen by cross-validation on the training rows
    /// (which may also leave them out). Better answers on new products; each text prediction
    /// then embeds the text (about 10 ms instead of 0.1 ms).
    pub text_embeddings: bool,
    /// The scales of the companion features the cross-validation chooses from (0: none).
    pub companion_scales: Vec<f32>,
    /// Seed of the fold assignment of a cross-validation (another seed checks that a result
    /// holds on another partition of the same rows).
    pub cross_validation_seed: u64,
    /// Once the branches are fitted on the training split and everything is tuned, refit the
    /// final branches on the training and validation rows together with the settings chosen
    /// (text options and temperature, the image head's temperature and optimisation steps;
    /// combiner and thresholds unchanged). The test split stays out, so the evaluation is of
    /// the refit model on rows it never saw.
    pub refit: bool,
    /// Recorded in the manifest (git commit or crate version).
    pub code_version: String,
}

/// The fold assignment of a cross-validation unless another seed is asked for.
pub const DEFAULT_CROSS_VALIDATION_SEED: u64 = 0x5eed_cafe;

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            branches: BranchSelection::Fusion,
            text: TextClassifierOptions::default(),
            head: HeadTrainingOptions::default(),
            image_backbone: BackboneChoice::default(),
            target_precision: 0.95,
            cross_fit_folds: 5,
            stacking: StackingOptions::default(),
            text_embeddings: false,
            companion_scales: COMPANION_SCALES.to_vec(),
            cross_validation_seed: DEFAULT_CROSS_VALIDATION_SEED,
            refit: true,
            code_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Receives progress of the stages of a training run.
pub trait TrainingProgress: Send + Sync {
    fn stage(&self, _name: &str, _total: u64) {}
    fn advance(&self, _done: u64) {}
}

impl TrainingProgress for () {}

/// What a training run produced.
#[derive(Debug, Clone)]
pub struct TrainingOutcome {
    pub bundle: ModelBundle,
    pub evaluation: EvaluationReport,
    /// Named SVG pictures (confusion matrix, reliability diagrams).
    pub pictures: Vec<(String, String)>,
    /// Per-step metrics: (key, step, value), e.g. per-epoch losses of the image head.
    pub curves: Vec<(String, i64, f64)>,
    /// Flat metrics for the run record (calibration, fusion, sizes).
    pub metrics: BTreeMap<String, f64>,
    /// Seconds per stage.
    pub timings: Vec<(String, f64)>,
}

fn labelled(rows: Vec<DatasetRow>) -> Vec<(DatasetRow, CategoryCode)> {
    rows.into_iter()
        .filter_map(|row| row.category.map(|category| (row, category)))
        .collect()
}

fn text_of(row: &DatasetRow) -> String {
    product_text(&row.designation, &row.description)
}

fn head_parameters(options: &HeadTrainingOptions) -> serde_json::Value {
    let kind = match options.kind {
        HeadKind::LogisticRegression => "logistic-regression".to_string(),
        HeadKind::Mlp { hidden_units } => format!("mlp-{hidden_units}"),
    };
    serde_json::json!({
        "kind": kind,
        "learningRate": options.learning_rate,
        "batchSize": options.batch_size,
        "maxEpochs": options.max_epochs,
        "patience": options.patience,
        "l2Penalty": options.l2_penalty,
        "dropout": options.dropout,
        "balancedClassWeights": options.balanced_class_weights,
        "seed": options.seed,
    })
}

fn max_of(row: &[f32]) -> f32 {
    row.iter().copied().fold(0.0, f32::max)
}

/// What training reads from and writes to: the database holding the dataset version, the object
/// store receiving the bundle (and holding the images and the feature cache), and the
/// pretrained models (the image backbone for the image branch, the text embedder for the
/// text branch's companion features and the embedding components of the drift profile).
#[derive(Clone, Copy)]
pub struct TrainingResources<'a> {
    pub database: &'a Database,
    pub objects: &'a ObjectStorage,
    pub backbone: Option<&'a ImageBackbone>,
    pub embedder: Option<&'a Arc<TextEmbedder>>,
}

/// Trains model versions from dataset versions, one phase at a time: the rows of each split,
/// the text branch, the image features (cached by content hash), the image branch, fusion and
/// automation thresholds, the evaluation on the test split, the drift reference profile and the
/// bundle.
pub struct Trainer<'a> {
    resources: TrainingResources<'a>,
    options: &'a TrainOptions,
    progress: &'a dyn TrainingProgress,
}

/// Labelled rows of one split.
type Labelled = Vec<(DatasetRow, CategoryCode)>;

/// The labelled rows of a dataset version, by split.
struct Splits {
    train: Labelled,
    validation: Labelled,
    test: Labelled,
}

/// What the phases record about the run besides the bundle.
#[derive(Default)]
struct Record {
    metrics: BTreeMap<String, f64>,
    curves: Vec<(String, i64, f64)>,
    timings: Vec<(String, f64)>,
}

impl Record {
    fn timing(&mut self, phase: &str, clock: Instant) {
        self.timings
            .push((phase.to_string(), clock.elapsed().as_secs_f64()));
    }
}

/// The trained branches, their label set and the image features of every split.
struct Branches {
    categories: Vec<CategoryCode>,
    /// Backbone features by image content hash.
    features: BTreeMap<String, Vec<f32>>,
    /// Companion features of the texts by normalised text (empty unless asked for).
    companions: Arc<CompanionVectors>,
    text: Option<TextClassifier>,
    image: Option<ImageBranch>,
    /// Epochs of the image head's training chosen by early stopping (its refit runs as many
    /// optimisation steps).
    image_epochs: usize,
}

impl Branches {
    /// The text branch's probabilities for a normalised text, with its companion features.
    fn text_probabilities(
        &self,
        classifier: &ProductClassifier,
        text: &str,
    ) -> Result<Option<Vec<f32>>, ModelError> {
        let companion = self.companions.get(text).map(Vec::as_slice);
        classifier.text_probabilities_with(text, companion)
    }

    fn class_of(&self, code: CategoryCode) -> Option<usize> {
        self.categories.binary_search(&code).ok()
    }

    /// The features of a row's image, when it has a readable one.
    fn features_of(&self, row: &DatasetRow) -> Option<&Vec<f32>> {
        row.image_hash
            .as_ref()
            .and_then(|hash| self.features.get(hash))
    }

    /// Features and classes of the rows that have image features and a known label.
    fn image_rows(&self, rows: &[(DatasetRow, CategoryCode)]) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut vectors = Vec::new();
        let mut labels = Vec::new();
        for (row, label) in rows {
            if let (Some(hash), Some(class)) = (&row.image_hash, self.class_of(*label)) {
                if let Some(vector) = self.features.get(hash) {
                    vectors.push(vector.clone());
                    labels.push(class);
                }
            }
        }
        (vectors, labels)
    }

    /// A branch's probabilities for a row's image, when the model has an image branch and the
    /// row a readable image.
    fn image_probabilities(
        &self,
        classifier: &ProductClassifier,
        row: &DatasetRow,
    ) -> Result<Option<Vec<f32>>, ModelError> {
        match (self.image.is_some(), self.features_of(row)) {
            (true, Some(vector)) => Ok(Some(classifier.image_probabilities_from_features(vector)?)),
            _ => Ok(None),
        }
    }
}

/// Calibrated probabilities of the tuning rows with a known label, per branch: validation
/// rows scored by the final branches, and training rows scored out of fold.
#[derive(Default)]
struct TuningScores {
    text: Vec<Vec<f32>>,
    text_labels: Vec<usize>,
    image: Vec<Vec<f32>>,
    image_labels: Vec<usize>,
    /// Rows with both: text and image probabilities side by side.
    pair_text: Vec<Vec<f32>>,
    pair_image: Vec<Vec<f32>>,
    pair_labels: Vec<usize>,
}

impl TuningScores {
    /// Adds one row's branch probabilities.
    fn push(&mut self, class: usize, text: Option<Vec<f32>>, image: Option<Vec<f32>>) {
        if let Some(text) = &text {
            self.text.push(text.clone());
            self.text_labels.push(class);
        }
        if let Some(image) = &image {
            self.image.push(image.clone());
            self.image_labels.push(class);
        }
        if let (Some(text), Some(image)) = (text, image) {
            self.pair_text.push(text);
            self.pair_image.push(image);
            self.pair_labels.push(class);
        }
    }

    fn extend(&mut self, other: TuningScores) {
        self.text.extend(other.text);
        self.text_labels.extend(other.text_labels);
        self.image.extend(other.image);
        self.image_labels.extend(other.image_labels);
        self.pair_text.extend(other.pair_text);
        self.pair_image.extend(other.pair_image);
        self.pair_labels.extend(other.pair_labels);
    }
}

/// The branches of a cross-fit: for each fold, a text model and an image head fitted on the
/// other folds of the training rows (calibrated on the validation rows) score that fold.
struct CrossFit {
    /// Each training row's text, image features and class in the label set.
    train: Vec<(String, Option<Vec<f32>>, Option<usize>)>,
    train_labels: Vec<CategoryCode>,
    /// Companion features by text (used when the text options name a companion).
    companions: Arc<CompanionVectors>,
    validation_texts: Vec<(String, CategoryCode)>,
    validation_features: Vec<Vec<f32>>,
    validation_labels: Vec<usize>,
    categories: Vec<CategoryCode>,
    fold_of: Vec<usize>,
    folds: usize,
}

/// Training rows and their out-of-fold text and image probabilities.
type CrossFitOutput = (
    Vec<(String, Option<Vec<f32>>, Option<usize>)>,
    Vec<Option<Vec<f32>>>,
    Vec<Option<Vec<f32>>>,
);

impl CrossFit {
    fn run(
        self,
        text_options: &TextClassifierOptions,
        head_options: &HeadTrainingOptions,
    ) -> Result<CrossFitOutput, ModelError> {
        let CrossFit {
            train,
            train_labels,
            companions,
            validation_texts,
            validation_features,
            validation_labels,
            categories,
            fold_of,
            folds,
        } = self;
        let k = categories.len();
        let mut text_out: Vec<Option<Vec<f32>>> = vec![None; train.len()];
        let mut image_out: Vec<Option<Vec<f32>>> = vec![None; train.len()];
        for fold in 0..folds {
            let inside: Vec<usize> = (0..train.len()).filter(|&i| fold_of[i] != fold).collect();
            let outside: Vec<usize> = (0..train.len()).filter(|&i| fold_of[i] == fold).collect();
            // Text: fitted on the other folds, calibrated on validation.
            let (texts, labels): (Vec<&str>, Vec<CategoryCode>) = inside
                .iter()
                .filter(|&&i| !train[i].0.is_empty())
                .map(|&i| (train[i].0.as_str(), train_labels[i]))
                .unzip();
            let mut classifier = fit_text(&texts, &labels, &companions, text_options)?;
            let known: Vec<&(String, CategoryCode)> = validation_texts
                .iter()
                .filter(|(_, label)| classifier.class_index(*label).is_some())
                .collect();
            if !known.is_empty() {
                let texts: Vec<&str> = known.iter().map(|(text, _)| text.as_str()).collect();
                let labels: Vec<CategoryCode> = known.iter().map(|(_, label)| *label).collect();
                calibrate_text(&mut classifier, &texts, &labels, &companions)?;
            }
            let fold_categories = classifier.categories().to_vec();
            {
                use rayon::prelude::*;
                let scored: Vec<(usize, Vec<f32>)> = outside
                    .par_iter()
                    .filter(|&&i| !train[i].0.is_empty())
                    .map(|&i| {
                        let companion = companions.get(&train[i].0).map(Vec::as_slice);
                        let values =
                            classifier.decision_values_with_companion(&train[i].0, companion)?;
                        let fold_probabilities =
                            classifier.probabilities_from_decision_values(&values);
                        let mut probabilities = vec![0.0f32; k];
                        for (category, p) in fold_categories.iter().zip(fold_probabilities) {
                            if let Ok(index) = categories.binary_search(category) {
                                probabilities[index] = p;
                            }
                        }
                        Ok((i, probabilities))
                    })
                    .collect::<Result<_, ModelError>>()?;
                for (i, probabilities) in scored {
                    text_out[i] = Some(probabilities);
                }
            }
        }
        // Image: per fold, a head fitted on the other folds' photos. A head trains on one core,
        // so the folds train side by side (each is deterministic on its own).
        let image_fold = |fold: usize| -> Result<Vec<(usize, Vec<f32>)>, ModelError> {
            let (features, labels): (Vec<&[f32]>, Vec<usize>) = (0..train.len())
                .filter(|&i| fold_of[i] != fold)
                .filter_map(|i| match (&train[i].1, train[i].2) {
                    (Some(vector), Some(class)) => Some((vector.as_slice(), class)),
                    _ => None,
                })
                .unzip();
            if features.len() < 2 {
                return Ok(Vec::new());
            }
            let (head, _, calibration) = fit_image_head(
                &features,
                &labels,
                &validation_features,
                &validation_labels,
                k,
                head_options,
            )?;
            let held_out: Vec<usize> = (0..train.len())
                .filter(|&i| fold_of[i] == fold && train[i].1.is_some())
                .collect();
            let vectors: Vec<&[f32]> = held_out
                .iter()
                .filter_map(|&i| train[i].1.as_deref())
                .collect();
            let logits = head.logits_batch(&vectors)?;
            Ok(held_out
                .into_iter()
                .zip(logits)
                .map(|(i, row)| {
                    let scores: Vec<f64> = row.iter().map(|v| f64::from(*v)).collect();
                    let probabilities = calibration
                        .probabilities(&scores)
                        .into_iter()
                        .map(|p| p as f32)
                        .collect();
                    (i, probabilities)
                })
                .collect())
        };
        let scored = {
            use rayon::prelude::*;
            (0..folds)
                .into_par_iter()
                .map(image_fold)
                .collect::<Result<Vec<_>, ModelError>>()?
        };
        for (i, probabilities) in scored.into_iter().flatten() {
            image_out[i] = Some(probabilities);
        }
        Ok((train, text_out, image_out))
    }
}

/// Each of `rows`' fold among `folds`, stratified by category: within a category, rows are
/// ordered by a seeded hash of their product id and dealt round-robin.
fn stratified_folds(rows: &[(DatasetRow, CategoryCode)], folds: usize, seed: u64) -> Vec<usize> {
    let mix = |value: u64| {
        let mut z = value ^ seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (rows[i].1, mix(rows[i].0.product_id as u64), i));
    let mut fold_of = vec![0; rows.len()];
    let mut previous: Option<CategoryCode> = None;
    let mut position = 0;
    for i in order {
        if previous != Some(rows[i].1) {
            previous = Some(rows[i].1);
            position = (mix(u64::from(rows[i].1.value())) % folds as u64) as usize;
        }
        fold_of[i] = position % folds;
        position += 1;
    }
    fold_of
}

/// What a cross-validation of the training measured: one evaluation per fold, on rows that
/// neither the training nor the tuning of that fold saw.
#[derive(Debug, Clone)]
pub struct CrossValidation {
    pub folds: Vec<EvaluationReport>,
    /// Each fold's fusion settings (combiner, thresholds, tuning set sizes).
    pub fusion: Vec<FusionSettings>,
    /// Each fold's scale of the text branch's sentence-embedding features (0: left out), when
    /// they were asked for.
    pub text_companion_scales: Vec<f32>,
    pub fold_seconds: Vec<f64>,
    /// Seconds spent on image features (from the cache when they were computed before).
    pub feature_seconds: f64,
    pub total_seconds: f64,
}

impl<'a> Trainer<'a> {
    /// A trainer with `options` over `resources`, reporting no progress.
    pub fn new(resources: TrainingResources<'a>, options: &'a TrainOptions) -> Self {
        Self {
            resources,
            options,
            progress: &(),
        }
    }

    /// Reports the progress of each phase to `progress`.
    pub fn with_progress(mut self, progress: &'a dyn TrainingProgress) -> Self {
        self.progress = progress;
        self
    }

    /// Trains a model version on `dataset` and writes its bundle.
    pub async fn train(&self, dataset: &DatasetVersionId) -> Result<TrainingOutcome, ModelError> {
        let mut record = Record::default();
        let splits = self.load_splits(dataset, &mut record).await?;
        let features = self.image_features(&splits, &mut record).await?;
        let companions = self.text_companions(&splits, &mut record).await?;
        let (mut manifest, branches, fusion) = self
            .fit_and_tune(dataset, &splits, features, companions, &mut record)
            .await?;
        // The reference profile scores the validation and test rows, so it comes from the
        // branches fitted before the refit, which saw neither.
        let provisional = self.classifier(&manifest, &branches, fusion.clone())?;
        let profile = self
            .drift_profile(&provisional, &branches, &splits, &mut record)
            .await?;
        let branches = self.refit(&splits, branches, &mut record).await?;
        let classifier = self.classifier(&manifest, &branches, fusion.clone())?;
        let (mut evaluation, mut pictures) = self.evaluate(
            &format!("{dataset}:test"),
            &classifier,
            &branches,
            &splits.test,
            &mut record,
        )?;
        add_headline_metrics(&mut manifest.metrics, &evaluation);
        self.progress.stage("writing the model bundle", 1);
        let bundle = write_bundle(
            self.resources.objects,
            ModelBundle {
                manifest,
                text: branches.text,
                image: branches.image,
                fusion,
                reference_profile: Some(profile),
            },
        )
        .await?;
        self.progress.advance(1);
        evaluation.model_version = bundle.manifest.model_version.clone();
        if let Some(svg) = evaluation.confusion_svg("system") {
            pictures.insert(0, ("confusion-system.svg".to_string(), svg));
        }
        Ok(TrainingOutcome {
            bundle,
            evaluation,
            pictures,
            curves: record.curves,
            metrics: record.metrics,
            timings: record.timings,
        })
    }

    /// Cross-validates the whole training on `dataset`: its labelled rows (every split) are
    /// dealt into `folds` stratified folds; each fold in turn is the test set, and the training
    /// of [`Trainer::train`] (branches, cross-fit, fusion, thresholds) runs on the other rows,
    /// whose validation rows stay validation rows. Nothing is written; each fold's evaluation
    /// is on rows that neither training nor tuning saw.
    pub async fn cross_validate(
        &self,
        dataset: &DatasetVersionId,
        folds: usize,
    ) -> Result<CrossValidation, ModelError> {
        if folds < 2 {
            return Err(ModelError::TrainingData(format!(
                "cross-validation needs at least 2 folds (got {folds})"
            )));
        }
        let started = Instant::now();
        let mut record = Record::default();
        self.progress.stage("loading rows", 1);
        let rows = labelled(load_rows(self.resources.database, dataset, None).await?);
        self.progress.advance(1);
        let fold_of = stratified_folds(&rows, folds, self.options.cross_validation_seed);
        let all = Splits {
            train: rows.clone(),
            validation: Vec::new(),
            test: Vec::new(),
        };
        let features = self.image_features(&all, &mut record).await?;
        let companions = self.text_companions(&all, &mut record).await?;
        let mut reports = Vec::new();
        let mut fusions = Vec::new();
        let mut companion_scales = Vec::new();
        let mut fold_seconds = Vec::new();
        for fold in 0..folds {
            let clock = Instant::now();
            let mut splits = Splits {
                train: Vec::new(),
                validation: Vec::new(),
                test: Vec::new(),
            };
            for (row, fold_of_row) in rows.iter().zip(&fold_of) {
                if *fold_of_row == fold {
                    splits.test.push(row.clone());
                } else if row.0.split == Split::Validation {
                    splits.validation.push(row.clone());
                } else {
                    splits.train.push(row.clone());
                }
            }
            let mut fold_record = Record::default();
            let (manifest, branches, fusion) = self
                .fit_and_tune(
                    dataset,
                    &splits,
                    features.clone(),
                    companions.clone(),
                    &mut fold_record,
                )
                .await?;
            let branches = self.refit(&splits, branches, &mut fold_record).await?;
            let classifier = self.classifier(&manifest, &branches, fusion.clone())?;
            let (report, _) = self.evaluate(
                &format!("{dataset}:fold-{}-of-{folds}", fold + 1),
                &classifier,
                &branches,
                &splits.test,
                &mut fold_record,
            )?;
            reports.push(report);
            fusions.push(fusion);
            if self.options.text_embeddings {
                companion_scales.push(
                    branches
                        .text
                        .as_ref()
                        .and_then(TextClassifier::companion)
                        .map_or(0.0, |companion| companion.scale),
                );
            }
            fold_seconds.push(clock.elapsed().as_secs_f64());
        }
        Ok(CrossValidation {
            folds: reports,
            fusion: fusions,
            text_companion_scales: companion_scales,
            fold_seconds,
            feature_seconds: record
                .timings
                .iter()
                .filter(|(phase, _)| phase == "image_features")
                .map(|(_, seconds)| seconds)
                .sum(),
            total_seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The branches, the fusion and the thresholds trained on `splits` (the training phases
    /// shared by a real training and each fold of a cross-validation).
    async fn fit_and_tune(
        &self,
        dataset: &DatasetVersionId,
        splits: &Splits,
        features: BTreeMap<String, Vec<f32>>,
        companions: Arc<CompanionVectors>,
        record: &mut Record,
    ) -> Result<(BundleManifest, Branches, FusionSettings), ModelError> {
        let text = self.train_text(splits, &companions, record).await?;
        let mut branches = Branches {
            categories: label_set(text.as_ref(), &splits.train),
            features,
            companions,
            text,
            image: None,
            image_epochs: 0,
        };
        if let Some((image, epochs)) = self.train_image(dataset, splits, &branches, record).await? {
            branches.image = Some(image);
            branches.image_epochs = epochs;
        }
        let out_of_fold = self.cross_fit(splits, &branches, record).await?;
        let clock = Instant::now();
        self.progress.stage("fusion and thresholds", 1);
        let manifest = self.manifest(dataset, &branches)?;
        let fusion = self.tune_fusion(
            &manifest,
            &branches,
            &splits.validation,
            out_of_fold,
            record,
        )?;
        self.progress.advance(1);
        record.timing("fusion", clock);
        Ok((manifest, branches, fusion))
    }

    /// Out-of-fold branch probabilities of the training rows, when the model has a text branch
    /// and cross-fitting is on: each fold's rows are scored by a text model and an image head
    /// (when the model has an image branch) fitted on the other folds, calibrated on the
    /// validation split like the final branches. The combiner and the thresholds are tuned on
    /// them; a text-only model needs them too, since the validation split alone is too small
    /// for a threshold whose precision has a 95% lower bound (on the real sample it allowed no
    /// automatic decision at all).
    async fn cross_fit(
        &self,
        splits: &Splits,
        branches: &Branches,
        record: &mut Record,
    ) -> Result<Option<(TuningScores, usize)>, ModelError> {
        let folds = self.options.cross_fit_folds;
        let Some(text) = &branches.text else {
            return Ok(None);
        };
        if folds < 2 {
            return Ok(None);
        }
        let clock = Instant::now();
        self.progress.stage(
            if branches.image.is_some() {
                "cross-fitting the branches for fusion"
            } else {
                "cross-fitting the text branch for thresholds"
            },
            folds as u64,
        );
        let fold_of = stratified_folds(&splits.train, folds, 0x0f01_d5ed);
        let categories = branches.categories.clone();
        let train: Vec<(String, Option<Vec<f32>>, Option<usize>)> = splits
            .train
            .iter()
            .map(|(row, label)| {
                (
                    text_of(row),
                    branches.features_of(row).cloned(),
                    branches.class_of(*label),
                )
            })
            .collect();
        let train_labels: Vec<CategoryCode> = splits.train.iter().map(|(_, l)| *l).collect();
        let validation_texts: Vec<(String, CategoryCode)> = splits
            .validation
            .iter()
            .map(|(row, label)| (text_of(row), *label))
            .filter(|(text, _)| !text.is_empty())
            .collect();
        let (validation_features, validation_labels) = branches.image_rows(&splits.validation);
        // The final text branch's options: its companion scale, when it has one.
        let text_options = text.options().clone();
        let head_options = self.options.head.clone();
        let job = CrossFit {
            train,
            train_labels,
            companions: branches.companions.clone(),
            validation_texts,
            validation_features,
            validation_labels,
            categories,
            fold_of,
            folds,
        };
        let (train, mut text_out, mut image_out) =
            tokio::task::spawn_blocking(move || job.run(&text_options, &head_options))
                .await
                .map_err(|error| {
                    ModelError::TrainingData(format!("cross-fitting failed: {error}"))
                })??;
        self.progress.advance(folds as u64);
        let mut scores = TuningScores::default();
        for (index, (_, _, class)) in train.iter().enumerate() {
            if let Some(class) = class {
                scores.push(*class, text_out[index].take(), image_out[index].take());
            }
        }
        record
            .metrics
            .insert("fusion.cross_fit_folds".into(), folds as f64);
        record.timing("cross_fit", clock);
        Ok(Some((scores, folds)))
    }

    /// The final branches refit on the training and validation rows together (when asked for
    /// and there are validation rows), with the settings the first fit and the tuning chose:
    /// the text branch's options (its sentence embedding's scale included) and temperature,
    /// the image head's temperature and as many optimisation steps as early stopping chose
    /// (its epochs, scaled down for the larger set). The combiner and the thresholds, tuned on
    /// out-of-fold probabilities of the same recipe, stay as they are. The two branches refit
    /// side by side (a head trains on one core).
    async fn refit(
        &self,
        splits: &Splits,
        branches: Branches,
        record: &mut Record,
    ) -> Result<Branches, ModelError> {
        if !self.options.refit || splits.validation.is_empty() {
            return Ok(branches);
        }
        let clock = Instant::now();
        self.progress
            .stage("refitting the branches on training + validation rows", 1);
        let failed = |branch: &str, error: tokio::task::JoinError| {
            ModelError::TrainingData(format!("{branch} refit failed: {error}"))
        };
        let text_job = branches.text.as_ref().map(|first| {
            let (texts, labels): (Vec<String>, Vec<CategoryCode>) = splits
                .train
                .iter()
                .chain(&splits.validation)
                .map(|(row, label)| (text_of(row), *label))
                .filter(|(text, label)| !text.is_empty() && first.class_index(*label).is_some())
                .unzip();
            record
                .metrics
                .insert("refit.text_rows".into(), texts.len() as f64);
            let options = first.options().clone();
            let companions = branches.companions.clone();
            tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                fit_text(&refs, &labels, &companions, &options)
            })
        });
        let image_job = branches.image.as_ref().map(|_| {
            let (mut vectors, mut labels) = branches.image_rows(&splits.train);
            let first_rows = vectors.len();
            let (more_vectors, more_labels) = branches.image_rows(&splits.validation);
            vectors.extend(more_vectors);
            labels.extend(more_labels);
            // As many optimisation steps as the first fit's best epoch had.
            let epochs = (branches.image_epochs * first_rows).div_ceil(vectors.len().max(1));
            record
                .metrics
                .insert("refit.image_rows".into(), vectors.len() as f64);
            record
                .metrics
                .insert("refit.image_epochs".into(), epochs.max(1) as f64);
            let options = HeadTrainingOptions {
                max_epochs: epochs.max(1),
                ..self.options.head.clone()
            };
            let k = branches.categories.len();
            tokio::task::spawn_blocking(move || {
                ImageHead::train_epochs(&vectors, &labels, k, &options)
            })
        });
        let mut refit = branches;
        if let Some(job) = text_job {
            let first = refit
                .text
                .take()
                .expect("a text job comes from a text branch");
            let mut text = job.await.map_err(|error| failed("text", error))??;
            if text.categories() != first.categories() {
                return Err(ModelError::TrainingData(
                    "the refit text branch does not have the first fit's categories".into(),
                ));
            }
            text.set_calibration(first.calibration())?;
            refit.text = Some(text);
        }
        if let Some(job) = image_job {
            let first = refit
                .image
                .take()
                .expect("an image job comes from an image branch");
            let (head, _) = job.await.map_err(|error| failed("image", error))??;
            refit.image = Some(ImageBranch { head, ..first });
        }
        self.progress.advance(1);
        record.timing("refit", clock);
        Ok(refit)
    }

    /// The labelled rows of each split; training needs some in all three.
    async fn load_splits(
        &self,
        dataset: &DatasetVersionId,
        record: &mut Record,
    ) -> Result<Splits, ModelError> {
        let clock = Instant::now();
        let database = self.resources.database;
        self.progress.stage("loading rows", 3);
        let train = labelled(load_rows(database, dataset, Some(Split::Train)).await?);
        self.progress.advance(1);
        let validation = labelled(load_rows(database, dataset, Some(Split::Validation)).await?);
        self.progress.advance(2);
        let test = labelled(load_rows(database, dataset, Some(Split::Test)).await?);
        self.progress.advance(3);
        if train.len() < 2 || validation.is_empty() || test.is_empty() {
            return Err(ModelError::TrainingData(format!(
                "dataset {dataset} has {} labelled training, {} validation and {} test rows; \
                 training needs labelled rows in all three splits",
                train.len(),
                validation.len(),
                test.len()
            )));
        }
        record.timing("load", clock);
        Ok(Splits {
            train,
            validation,
            test,
        })
    }

    /// The companion features of every text of every split, when the text branch takes them:
    /// embedded once (and cached in the object store, so a retraining or a cross-validation
    /// embeds only new texts).
    async fn text_companions(
        &self,
        splits: &Splits,
        record: &mut Record,
    ) -> Result<Arc<CompanionVectors>, ModelError> {
        if !(self.options.text_embeddings && self.options.branches.wants_text()) {
            return Ok(Arc::default());
        }
        let embedder = self
            .resources
            .embedder
            .ok_or(ModelError::TextEmbedderUnavailable)?;
        let clock = Instant::now();
        let texts: Vec<String> = splits
            .train
            .iter()
            .chain(&splits.validation)
            .chain(&splits.test)
            .map(|(row, _)| text_of(row))
            .collect();
        self.progress
            .stage("text: sentence embeddings", texts.len() as u64);
        let vectors = companion_vectors(self.resources.objects, embedder, &texts, &|done| {
            self.progress.advance(done as u64)
        })
        .await?;
        record
            .metrics
            .insert("text.embedded_texts".into(), vectors.len() as f64);
        record.timing("text_embeddings", clock);
        Ok(Arc::new(vectors))
    }

    /// The text branch: TF-IDF + linear SVM fitted on the training rows (with the sentence
    /// embedding beside the n-grams at the scale a cross-validation on those rows chose, when
    /// asked for), its temperature calibrated on the validation rows whose category it knows.
    async fn train_text(
        &self,
        splits: &Splits,
        companions: &Arc<CompanionVectors>,
        record: &mut Record,
    ) -> Result<Option<TextClassifier>, ModelError> {
        if !self.options.branches.wants_text() {
            return Ok(None);
        }
        let clock = Instant::now();
        // Products without text (photo only) teach the text branch nothing.
        let (rows, labels): (Vec<(String, usize)>, Vec<CategoryCode>) = splits
            .train
            .iter()
            .zip(stratified_folds(
                &splits.train,
                COMPANION_SCALE_FOLDS,
                0x5ca1_ed05,
            ))
            .map(|((row, label), fold)| ((text_of(row), fold), *label))
            .filter(|((text, _), _)| !text.is_empty())
            .unzip();
        let (texts, fold_of): (Vec<String>, Vec<usize>) = rows.into_iter().unzip();
        // The companion's scale is chosen here, whatever the options held.
        let mut text_options = TextClassifierOptions {
            companion: None,
            ..self.options.text.clone()
        };
        if !companions.is_empty() {
            let scales = self.options.companion_scales.clone();
            self.progress.stage(
                "text: choosing the sentence embedding's weight",
                scales.len() as u64,
            );
            let embedder = self
                .resources
                .embedder
                .ok_or(ModelError::TextEmbedderUnavailable)?;
            let companion = DenseCompanion {
                source: embedder.model_id().to_string(),
                dimension: embedder.dimension(),
                scale: 1.0,
            };
            let base = text_options.clone();
            let companions = companions.clone();
            let texts = texts.clone();
            let labels = labels.clone();
            let (chosen, scores) = tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let vectors = companion_rows(&refs, &companions)?;
                choose_companion_scale(
                    &refs, &vectors, &labels, &fold_of, &base, &companion, &scales,
                )
            })
            .await
            .map_err(|error| {
                ModelError::TrainingData(format!("text training failed: {error}"))
            })??;
            self.progress.advance(scores.len() as u64);
            for score in &scores {
                record.metrics.insert(
                    format!("text.companion_scale_{}_weighted_f1", score.scale),
                    score.weighted_f1,
                );
            }
            record.metrics.insert(
                "text.companion_scale".into(),
                chosen
                    .companion
                    .as_ref()
                    .map_or(0.0, |c| f64::from(c.scale)),
            );
            text_options = chosen;
        }
        self.progress.stage("text: fitting TF-IDF + linear SVM", 1);
        let fit_companions = companions.clone();
        let mut classifier = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            fit_text(&refs, &labels, &fit_companions, &text_options)
        })
        .await
        .map_err(|error| ModelError::TrainingData(format!("text training failed: {error}")))??;
        self.progress.advance(1);
        let known: Vec<&(DatasetRow, CategoryCode)> = splits
            .validation
            .iter()
            .filter(|(row, label)| {
                classifier.class_index(*label).is_some() && !text_of(row).is_empty()
            })
            .collect();
        let texts: Vec<String> = known.iter().map(|(row, _)| text_of(row)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let labels: Vec<CategoryCode> = known.iter().map(|(_, label)| *label).collect();
        let calibration = calibrate_text(&mut classifier, &refs, &labels, companions)?;
        let metrics = &mut record.metrics;
        metrics.insert("text.temperature".into(), calibration.temperature);
        metrics.insert(
            "text.validation_ece_before".into(),
            calibration.expected_calibration_error_before,
        );
        metrics.insert(
            "text.validation_ece_after".into(),
            calibration.expected_calibration_error_after,
        );
        metrics.insert(
            "text.feature_count".into(),
            classifier.vectorizer().feature_count() as f64,
        );
        for (class, iterations) in classifier.svm().iterations().iter().enumerate() {
            record.curves.push((
                "text.svm_iterations_per_class".to_string(),
                class as i64,
                f64::from(*iterations),
            ));
        }
        record.timing("text", clock);
        Ok(Some(classifier))
    }

    /// Backbone features of every image of every split, from the feature cache (computed and
    /// cached when missing); an image that cannot be read is skipped with a warning.
    async fn image_features(
        &self,
        splits: &Splits,
        record: &mut Record,
    ) -> Result<BTreeMap<String, Vec<f32>>, ModelError> {
        let mut features = BTreeMap::new();
        if !self.options.branches.wants_image() {
            return Ok(features);
        }
        let backbone = self
            .resources
            .backbone
            .ok_or(ModelError::BackboneUnavailable)?;
        let clock = Instant::now();
        let mut hashes: Vec<String> = splits
            .train
            .iter()
            .chain(&splits.validation)
            .chain(&splits.test)
            .filter_map(|(row, _)| row.image_hash.clone())
            .collect();
        hashes.sort();
        hashes.dedup();
        self.progress
            .stage("image: backbone features", hashes.len() as u64);
        let cache = FeatureCache::new(self.resources.objects.clone(), backbone.clone());
        let results = cache
            .features_for(&hashes, &|done| self.progress.advance(done as u64))
            .await?;
        let mut failures = 0;
        for (hash, result) in hashes.into_iter().zip(results) {
            match result {
                Ok(vector) => {
                    features.insert(hash, vector);
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(image = %hash, %error, "image skipped");
                }
            }
        }
        record
            .metrics
            .insert("image.feature_failures".into(), f64::from(failures));
        record
            .metrics
            .insert("image.images".into(), features.len() as f64);
        record.timing("image_features", clock);
        Ok(features)
    }

    /// The image branch: a head trained on the training rows' features (with early stopping on
    /// validation when there are enough validation images), its temperature calibrated on the
    /// validation images.
    async fn train_image(
        &self,
        dataset: &DatasetVersionId,
        splits: &Splits,
        branches: &Branches,
        record: &mut Record,
    ) -> Result<Option<(ImageBranch, usize)>, ModelError> {
        if !self.options.branches.wants_image() {
            return Ok(None);
        }
        let clock = Instant::now();
        let (train_features, train_labels) = branches.image_rows(&splits.train);
        let (validation_features, validation_labels) = branches.image_rows(&splits.validation);
        if train_features.len() < 2 {
            return Err(ModelError::TrainingData(format!(
                "dataset {dataset} has {} training rows with a readable image; the image branch needs more",
                train_features.len()
            )));
        }
        self.progress.stage("image: training the head", 1);
        let head_options = self.options.head.clone();
        let k = branches.categories.len();
        let (head, report, calibration) = tokio::task::spawn_blocking(move || {
            fit_image_head(
                &train_features,
                &train_labels,
                &validation_features,
                &validation_labels,
                k,
                &head_options,
            )
        })
        .await
        .map_err(|error| ModelError::TrainingData(format!("image training failed: {error}")))??;
        self.progress.advance(1);
        for (name, losses) in [
            ("image.train_loss", &report.training_losses),
            ("image.validation_loss", &report.validation_losses),
        ] {
            for (epoch, loss) in losses.iter().enumerate() {
                record
                    .curves
                    .push((name.into(), epoch as i64 + 1, f64::from(*loss)));
            }
        }
        record
            .metrics
            .insert("image.best_epoch".into(), report.best_epoch as f64);
        record
            .metrics
            .insert("image.temperature".into(), calibration.temperature);
        record.timing("image_head", clock);
        Ok(Some((
            ImageBranch {
                head,
                calibration,
                categories: branches.categories.clone(),
            },
            report.best_epoch,
        )))
    }

    /// The manifest of the version being trained, without files, metrics or id yet.
    fn manifest(
        &self,
        dataset: &DatasetVersionId,
        branches: &Branches,
    ) -> Result<BundleManifest, ModelError> {
        let options = self.options;
        let mut manifest = BundleManifest {
            format_version: crate::bundle::BUNDLE_FORMAT_VERSION,
            model_version: "mv-0000000000000000".to_string(),
            label_set: branches.categories.iter().map(|c| c.value()).collect(),
            dataset_version: dataset.to_string(),
            code_version: options.code_version.clone(),
            branches: [
                branches.text.as_ref().map(|_| "text"),
                branches.image.as_ref().map(|_| "image"),
            ]
            .into_iter()
            .flatten()
            .map(str::to_string)
            .collect(),
            parameters: BTreeMap::new(),
            metrics: BTreeMap::new(),
            image_backbone: branches
                .image
                .as_ref()
                .and(self.resources.backbone)
                .map(|b| b.id().to_string()),
            files: Vec::new(),
        };
        let parameters = &mut manifest.parameters;
        parameters.insert(
            "branches".into(),
            serde_json::json!(options.branches.as_str()),
        );
        parameters.insert(
            "targetPrecision".into(),
            serde_json::json!(options.target_precision),
        );
        parameters.insert("refit".into(), serde_json::json!(options.refit));
        if let Some(text) = &branches.text {
            parameters.insert("text".into(), serde_json::to_value(text.options())?);
            parameters.insert(
                "textEmbeddings".into(),
                serde_json::json!(options.text_embeddings),
            );
        }
        if branches.image.is_some() {
            parameters.insert("imageHead".into(), head_parameters(&options.head));
        }
        Ok(manifest)
    }

    /// A classifier of the branches under `manifest` with `fusion`, before the bundle exists.
    fn classifier(
        &self,
        manifest: &BundleManifest,
        branches: &Branches,
        fusion: FusionSettings,
    ) -> Result<ProductClassifier, ModelError> {
        ProductClassifier::new(
            ModelBundle {
                manifest: manifest.clone(),
                text: branches.text.clone(),
                image: branches.image.clone(),
                fusion,
                reference_profile: None,
            },
            self.resources.backbone.cloned(),
        )
    }

    /// The combiner of the two branches and the automation thresholds, tuned on the
    /// out-of-fold training rows (when the branches were cross-fitted) and the validation rows.
    fn tune_fusion(
        &self,
        manifest: &BundleManifest,
        branches: &Branches,
        validation: &[(DatasetRow, CategoryCode)],
        out_of_fold: Option<(TuningScores, usize)>,
        record: &mut Record,
    ) -> Result<FusionSettings, ModelError> {
        let provisional = self.classifier(manifest, branches, FusionSettings::default())?;
        let mut scores = validation_scores(&provisional, branches, validation)?;
        let folds = match out_of_fold {
            Some((extra, folds)) => {
                scores.extend(extra);
                folds
            }
            None => 0,
        };
        let fusion = fusion_settings(
            &scores,
            branches.categories.len(),
            self.options.target_precision,
            folds,
            &self.options.stacking,
        );
        let metrics = &mut record.metrics;
        metrics.insert("fusion.image_weight".into(), f64::from(fusion.image_weight));
        metrics.insert("fusion.temperature".into(), fusion.fused_temperature);
        metrics.insert("fusion.coverage_fused".into(), fusion.coverage_fused);
        metrics.insert(
            "fusion.coverage_text_only".into(),
            fusion.coverage_text_only,
        );
        metrics.insert(
            "fusion.coverage_image_only".into(),
            fusion.coverage_image_only,
        );
        if let Some(tuning) = &fusion.tuning {
            metrics.insert("fusion.tuning_rows".into(), tuning.fused_rows as f64);
            metrics.insert("fusion.tuning_text_rows".into(), tuning.text_rows as f64);
            metrics.insert(
                "fusion.stacked_kept".into(),
                f64::from(u8::from(tuning.stacked_kept)),
            );
        }
        Ok(fusion)
    }

    /// The evaluation of the tuned classifier on the test split, with its pictures.
    fn evaluate(
        &self,
        evaluation_set: &str,
        classifier: &ProductClassifier,
        branches: &Branches,
        test: &[(DatasetRow, CategoryCode)],
        record: &mut Record,
    ) -> Result<(EvaluationReport, Vec<(String, String)>), ModelError> {
        let clock = Instant::now();
        self.progress.stage("evaluating on the test split", 1);
        let products: Vec<LabelledProduct> = test
            .iter()
            .map(|(row, label)| {
                let text = text_of(row);
                LabelledProduct {
                    text_companion: branches.companions.get(&text).cloned(),
                    text,
                    image_features: branches.features_of(row).cloned(),
                    label: *label,
                }
            })
            .collect();
        let evaluation = evaluate_rows(classifier, &products, evaluation_set)?;
        self.progress.advance(1);
        record.timing("evaluate", clock);
        Ok(evaluation)
    }

    /// The drift reference profile: validation and test rows (at most 2,000, images of the
    /// first 1,000) measured with the model's own predictions.
    async fn drift_profile(
        &self,
        classifier: &ProductClassifier,
        branches: &Branches,
        splits: &Splits,
        record: &mut Record,
    ) -> Result<String, ModelError> {
        let clock = Instant::now();
        self.progress.stage("drift reference profile", 1);
        let mut rows = Vec::new();
        for (index, (row, _)) in splits
            .validation
            .iter()
            .chain(&splits.test)
            .take(2_000)
            .enumerate()
        {
            let image = if index < 1_000 {
                self.image_stats(row).await
            } else {
                None
            };
            rows.push(reference_row(classifier, branches, row, image));
        }
        let profile = reference_profile(
            branches.text.as_ref(),
            self.resources.embedder.map(|embedder| embedder.as_ref()),
            &rows,
        )?;
        self.progress.advance(1);
        record.timing("profile", clock);
        Ok(profile)
    }

    /// Size and colour statistics of a row's stored image, when it can be read and decoded.
    async fn image_stats(&self, row: &DatasetRow) -> Option<ImageStats> {
        let hash = ContentHash::parse(row.image_hash.as_ref()?).ok()?;
        let bytes = self.resources.objects.get(&image_key(&hash)).await.ok()?;
        let picture = prodcat_vision::preprocess::decode_image(&bytes, 40_000_000).ok()?;
        ImageStats::from_rgb(picture.width, picture.height, &picture.pixels).ok()
    }
}

/// An image head trained on `features` (with early stopping on the validation images when there
/// are enough of them) and its temperature calibrated on the validation images.
fn fit_image_head<F: AsRef<[f32]>>(
    features: &[F],
    labels: &[usize],
    validation_features: &[Vec<f32>],
    validation_labels: &[usize],
    class_count: usize,
    options: &HeadTrainingOptions,
) -> Result<
    (
        ImageHead,
        prodcat_vision::TrainingReport,
        TemperatureScaling,
    ),
    ModelError,
> {
    let (head, report) =
        if !validation_features.is_empty() && validation_features.len() >= class_count.min(10) {
            ImageHead::train_with_validation(
                features,
                labels,
                validation_features,
                validation_labels,
                class_count,
                options,
            )?
        } else {
            ImageHead::train(features, labels, class_count, options)?
        };
    let calibration = if validation_features.is_empty() {
        TemperatureScaling::identity()
    } else {
        let logits = head.logits_batch(validation_features)?;
        let scores: Vec<f64> = logits.iter().flatten().map(|v| f64::from(*v)).collect();
        TemperatureScaling::fit(&scores, class_count, validation_labels)?
    };
    Ok((head, report, calibration))
}

/// Fits the text branch, with each text's companion features when `options` name a companion.
fn fit_text(
    texts: &[&str],
    labels: &[CategoryCode],
    companions: &CompanionVectors,
    options: &TextClassifierOptions,
) -> Result<TextClassifier, ModelError> {
    if options.companion.is_none() {
        return Ok(TextClassifier::fit(texts, labels, options)?);
    }
    let vectors = companion_rows(texts, companions)?;
    Ok(TextClassifier::fit_with_companion(
        texts, &vectors, labels, options,
    )?)
}

/// Calibrates the text branch's temperature, with the companion features when it takes them.
fn calibrate_text(
    classifier: &mut TextClassifier,
    texts: &[&str],
    labels: &[CategoryCode],
    companions: &CompanionVectors,
) -> Result<prodcat_text_model::CalibrationReport, ModelError> {
    if classifier.companion().is_none() {
        return Ok(classifier.calibrate(texts, labels)?);
    }
    let vectors = companion_rows(texts, companions)?;
    Ok(classifier.calibrate_with_companion(texts, Some(&vectors), labels)?)
}

/// Each text's companion features (every text must have them).
fn companion_rows<'v>(
    texts: &[&str],
    companions: &'v CompanionVectors,
) -> Result<Vec<&'v [f32]>, ModelError> {
    texts
        .iter()
        .map(|text| {
            companions.get(*text).map(Vec::as_slice).ok_or_else(|| {
                ModelError::TrainingData(format!(
                    "the text {:?} has no sentence embedding",
                    crate::profile::first_characters(text, 40)
                ))
            })
        })
        .collect()
}

/// The label set: the text model's categories, else those seen in training images.
fn label_set(
    text: Option<&TextClassifier>,
    train: &[(DatasetRow, CategoryCode)],
) -> Vec<CategoryCode> {
    let mut categories: Vec<CategoryCode> = match text {
        Some(classifier) => classifier.categories().to_vec(),
        None => train
            .iter()
            .filter(|(row, _)| row.image_hash.is_some())
            .map(|(_, label)| *label)
            .collect(),
    };
    categories.sort_unstable();
    categories.dedup();
    categories
}

/// Each branch's probabilities on the validation rows whose category the model knows.
fn validation_scores(
    classifier: &ProductClassifier,
    branches: &Branches,
    validation: &[(DatasetRow, CategoryCode)],
) -> Result<TuningScores, ModelError> {
    let mut scores = TuningScores::default();
    for (row, label) in validation {
        let Some(class) = branches.class_of(*label) else {
            continue;
        };
        let text = branches.text_probabilities(classifier, &text_of(row))?;
        let image = branches.image_probabilities(classifier, row)?;
        scores.push(class, text, image);
    }
    Ok(scores)
}

/// Fusion settings from the tuning scores: on the rows with both branches, the stacked
/// combiner (kept only when it beats the text branch on held-out tuning rows); per kind of input,
/// the confidence threshold whose automatic decisions reach `target_precision` with a lower
/// confidence bound.
fn fusion_settings(
    scores: &TuningScores,
    class_count: usize,
    target_precision: f64,
    folds: usize,
    stacking: &StackingOptions,
) -> FusionSettings {
    let mut fusion = FusionSettings {
        target_precision,
        ..FusionSettings::default()
    };
    let mut tuning = TuningSummary {
        folds,
        fused_rows: scores.pair_labels.len(),
        text_rows: scores.text_labels.len(),
        image_rows: scores.image_labels.len(),
        stacked_kept: false,
        text_weighted_f1: 0.0,
        stacked_weighted_f1: 0.0,
        precision_bound_z: PRECISION_BOUND_Z,
    };
    if !scores.pair_labels.is_empty() {
        let (text, image, labels) = (&scores.pair_text, &scores.pair_image, &scores.pair_labels);
        let choice = choose_stacked_fusion(text, image, labels, class_count, stacking);
        tuning.stacked_kept = choice.kept;
        tuning.text_weighted_f1 = choice.text_weighted_f1;
        tuning.stacked_weighted_f1 = choice.stacked_weighted_f1;
        fusion.image_weight = choice.combiner.image_share() as f32;
        let fused: Vec<Vec<f32>> = text
            .iter()
            .zip(image)
            .map(|(t, i)| choice.combiner.combine(t, i))
            .collect();
        fusion.stacked = Some(choice.combiner);
        let threshold =
            automation_threshold_bounded(&fused, labels, target_precision, PRECISION_BOUND_Z);
        fusion.threshold_fused = threshold.threshold;
        fusion.coverage_fused = threshold.coverage;
    }
    if !scores.text.is_empty() {
        let choice = automation_threshold_bounded(
            &scores.text,
            &scores.text_labels,
            target_precision,
            PRECISION_BOUND_Z,
        );
        fusion.threshold_text_only = choice.threshold;
        fusion.coverage_text_only = choice.coverage;
    }
    if !scores.image.is_empty() {
        let choice = automation_threshold_bounded(
            &scores.image,
            &scores.image_labels,
            target_precision,
            PRECISION_BOUND_Z,
        );
        fusion.threshold_image_only = choice.threshold;
        fusion.coverage_image_only = choice.coverage;
    }
    fusion.tuning = Some(tuning);
    fusion
}

/// One row of the drift reference profile, with the model's prediction on it.
fn reference_row(
    classifier: &ProductClassifier,
    branches: &Branches,
    row: &DatasetRow,
    image: Option<ImageStats>,
) -> ReferenceRow {
    let text = text_of(row);
    let text_probabilities = branches
        .text_probabilities(classifier, &text)
        .ok()
        .flatten();
    let image_probabilities = branches.image_probabilities(classifier, row).ok().flatten();
    let (predicted, confidence) = match classifier.combine(text_probabilities, image_probabilities)
    {
        Ok(Combined { probabilities, .. }) => (
            Some(branches.categories[argmax(&probabilities)].value()),
            Some(f64::from(max_of(&probabilities))),
        ),
        Err(_) => (None, None),
    };
    ReferenceRow {
        text,
        description_empty: normalize_text(&row.description).is_empty(),
        image,
        predicted,
        confidence,
    }
}

/// The headline metrics of the system (and each branch's weighted F1) for the manifest.
fn add_headline_metrics(metrics: &mut BTreeMap<String, f64>, evaluation: &EvaluationReport) {
    if let Some(system) = evaluation.system() {
        metrics.insert("weighted_f1".into(), system.weighted_f1);
        metrics.insert("macro_f1".into(), system.macro_f1);
        metrics.insert("accuracy".into(), system.accuracy);
        metrics.insert(
            "expected_calibration_error".into(),
            system.expected_calibration_error,
        );
        metrics.insert("automatic_share".into(), system.automatic_share);
        metrics.insert("automatic_precision".into(), system.automatic_precision);
    }
    for branch in &evaluation.branches {
        if branch.name != "system" {
            metrics.insert(format!("{}.weighted_f1", branch.name), branch.weighted_f1);
        }
    }
}
