//! Training a model version from a dataset version: the text branch (TF-IDF + linear SVM,
//! temperature-calibrated on validation), the image branch (frozen backbone features from the
//! cache + a trained head, calibrated), late fusion tuned on validation, automation thresholds
//! for a target precision, a drift reference profile, and the evaluation on the test split.
//!
//! Everything is deterministic for the same dataset version, options and seed, so the bundle (and
//! its version id) is identical when training is repeated.

use std::collections::BTreeMap;
use std::time::Instant;

use prodcat_dataset::{load_rows, DatasetRow, Split};
use prodcat_domain::{normalize_text, product_text, CategoryCode, ContentHash, DatasetVersionId};
use prodcat_drift::features::ImageStats;
use prodcat_embed::TextEmbedder;
use prodcat_metrics::TemperatureScaling;
use prodcat_storage::{image_key, Database, ObjectStorage};
use prodcat_text_model::{TextClassifier, TextClassifierOptions};
use prodcat_vision::{HeadKind, HeadTrainingOptions, ImageHead};
use serde::Serialize;

use crate::bundle::{write_bundle, BundleManifest, FusionSettings, ImageBranch, ModelBundle};
use crate::classifier::{Combined, ProductClassifier};
use crate::evaluation::{argmax, evaluate_rows, EvaluationReport, LabelledProduct};
use crate::features::{FeatureCache, ImageBackbone};
use crate::fusion::{automation_threshold, fit_fused_temperature, fuse, tune_fusion_weight};
use crate::profile::{reference_profile, ReferenceRow};
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
    /// Precision that automatic decisions must reach on validation data.
    pub target_precision: f64,
    /// Recorded in the manifest (git commit or crate version).
    pub code_version: String,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            branches: BranchSelection::Fusion,
            text: TextClassifierOptions::default(),
            head: HeadTrainingOptions::default(),
            target_precision: 0.95,
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
/// embedding components of the drift profile).
#[derive(Clone, Copy)]
pub struct TrainingResources<'a> {
    pub database: &'a Database,
    pub objects: &'a ObjectStorage,
    pub backbone: Option<&'a ImageBackbone>,
    pub embedder: Option<&'a TextEmbedder>,
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
    text: Option<TextClassifier>,
    image: Option<ImageBranch>,
}

impl Branches {
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

/// Calibrated probabilities of the validation rows with a known label, per branch.
#[derive(Default)]
struct ValidationScores {
    text: Vec<Vec<f32>>,
    text_labels: Vec<usize>,
    image: Vec<Vec<f32>>,
    image_labels: Vec<usize>,
    /// Rows with both: text and image probabilities side by side.
    pair_text: Vec<Vec<f32>>,
    pair_image: Vec<Vec<f32>>,
    pair_labels: Vec<usize>,
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
        let text = self.train_text(&splits, &mut record).await?;
        let mut branches = Branches {
            categories: label_set(text.as_ref(), &splits.train),
            features: BTreeMap::new(),
            text,
            image: None,
        };
        branches.features = self.image_features(&splits, &mut record).await?;
        branches.image = self
            .train_image(dataset, &splits, &branches, &mut record)
            .await?;
        let clock = Instant::now();
        self.progress.stage("fusion and thresholds", 1);
        let mut manifest = self.manifest(dataset, &branches)?;
        let fusion = self.tune_fusion(&manifest, &branches, &splits.validation, &mut record)?;
        self.progress.advance(1);
        record.timing("fusion", clock);
        let provisional = self.classifier(&manifest, &branches, fusion.clone())?;
        let (mut evaluation, mut pictures) =
            self.evaluate(dataset, &provisional, &branches, &splits.test, &mut record)?;
        let profile = self
            .drift_profile(&provisional, &branches, &splits, &mut record)
            .await?;
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

    /// The text branch: TF-IDF + linear SVM fitted on the training rows, its temperature
    /// calibrated on the validation rows whose category it knows.
    async fn train_text(
        &self,
        splits: &Splits,
        record: &mut Record,
    ) -> Result<Option<TextClassifier>, ModelError> {
        if !self.options.branches.wants_text() {
            return Ok(None);
        }
        let clock = Instant::now();
        self.progress.stage("text: fitting TF-IDF + linear SVM", 1);
        let texts: Vec<String> = splits.train.iter().map(|(row, _)| text_of(row)).collect();
        let labels: Vec<CategoryCode> = splits.train.iter().map(|(_, label)| *label).collect();
        let text_options = self.options.text.clone();
        let mut classifier = tokio::task::spawn_blocking(move || {
            TextClassifier::fit(&texts, &labels, &text_options)
        })
        .await
        .map_err(|error| ModelError::TrainingData(format!("text training failed: {error}")))??;
        self.progress.advance(1);
        let known: Vec<&(DatasetRow, CategoryCode)> = splits
            .validation
            .iter()
            .filter(|(_, label)| classifier.class_index(*label).is_some())
            .collect();
        let texts: Vec<String> = known.iter().map(|(row, _)| text_of(row)).collect();
        let labels: Vec<CategoryCode> = known.iter().map(|(_, label)| *label).collect();
        let calibration = classifier.calibrate(&texts, &labels)?;
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
    ) -> Result<Option<ImageBranch>, ModelError> {
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
        let (head, report) = tokio::task::spawn_blocking(move || {
            if validation_features.len() >= k.min(10) && !validation_features.is_empty() {
                ImageHead::train_with_validation(
                    &train_features,
                    &train_labels,
                    &validation_features,
                    &validation_labels,
                    k,
                    &head_options,
                )
            } else {
                ImageHead::train(&train_features, &train_labels, k, &head_options)
            }
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
        let (validation_features, validation_labels) = branches.image_rows(&splits.validation);
        let calibration = if validation_features.is_empty() {
            TemperatureScaling::identity()
        } else {
            let logits = head.logits_batch(&validation_features)?;
            let scores: Vec<f64> = logits.iter().flatten().map(|v| f64::from(*v)).collect();
            TemperatureScaling::fit(&scores, k, &validation_labels)?
        };
        record
            .metrics
            .insert("image.temperature".into(), calibration.temperature);
        record.timing("image_head", clock);
        Ok(Some(ImageBranch {
            head,
            calibration,
            categories: branches.categories.clone(),
        }))
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
        if branches.text.is_some() {
            parameters.insert("text".into(), serde_json::to_value(&options.text)?);
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

    /// The image weight, the fused temperature and the automation thresholds, tuned on the
    /// validation rows.
    fn tune_fusion(
        &self,
        manifest: &BundleManifest,
        branches: &Branches,
        validation: &[(DatasetRow, CategoryCode)],
        record: &mut Record,
    ) -> Result<FusionSettings, ModelError> {
        let provisional = self.classifier(manifest, branches, FusionSettings::default())?;
        let scores = validation_scores(&provisional, branches, validation)?;
        let fusion = fusion_settings(
            &scores,
            branches.categories.len(),
            self.options.target_precision,
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
        Ok(fusion)
    }

    /// The evaluation of the tuned classifier on the test split, with its pictures.
    fn evaluate(
        &self,
        dataset: &DatasetVersionId,
        classifier: &ProductClassifier,
        branches: &Branches,
        test: &[(DatasetRow, CategoryCode)],
        record: &mut Record,
    ) -> Result<(EvaluationReport, Vec<(String, String)>), ModelError> {
        let clock = Instant::now();
        self.progress.stage("evaluating on the test split", 1);
        let products: Vec<LabelledProduct> = test
            .iter()
            .map(|(row, label)| LabelledProduct {
                text: text_of(row),
                image_features: branches.features_of(row).cloned(),
                label: *label,
            })
            .collect();
        let evaluation = evaluate_rows(classifier, &products, &format!("{dataset}:test"))?;
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
        let profile = reference_profile(branches.text.as_ref(), self.resources.embedder, &rows)?;
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
) -> Result<ValidationScores, ModelError> {
    let mut scores = ValidationScores::default();
    for (row, label) in validation {
        let Some(class) = branches.class_of(*label) else {
            continue;
        };
        let text = classifier.text_probabilities(&text_of(row));
        let image = branches.image_probabilities(classifier, row)?;
        if let Some(text) = &text {
            scores.text.push(text.clone());
            scores.text_labels.push(class);
        }
        if let Some(image) = &image {
            scores.image.push(image.clone());
            scores.image_labels.push(class);
        }
        if let (Some(text), Some(image)) = (text, image) {
            scores.pair_text.push(text);
            scores.pair_image.push(image);
            scores.pair_labels.push(class);
        }
    }
    Ok(scores)
}

/// Fusion settings from validation scores: the image weight and fused temperature on the rows
/// with both branches, and per kind of input the confidence threshold that keeps automatic
/// decisions at `target_precision`.
fn fusion_settings(
    scores: &ValidationScores,
    class_count: usize,
    target_precision: f64,
) -> FusionSettings {
    let mut fusion = FusionSettings {
        target_precision,
        ..FusionSettings::default()
    };
    if !scores.pair_labels.is_empty() {
        let (text, image, labels) = (&scores.pair_text, &scores.pair_image, &scores.pair_labels);
        fusion.image_weight = tune_fusion_weight(text, image, labels, class_count);
        fusion.fused_temperature =
            fit_fused_temperature(text, image, labels, fusion.image_weight, class_count);
        let fused: Vec<Vec<f32>> = text
            .iter()
            .zip(image)
            .map(|(t, i)| fuse(t, i, fusion.image_weight, fusion.fused_temperature))
            .collect();
        let choice = automation_threshold(&fused, labels, target_precision);
        fusion.threshold_fused = choice.threshold;
        fusion.coverage_fused = choice.coverage;
    }
    if !scores.text.is_empty() {
        let choice = automation_threshold(&scores.text, &scores.text_labels, target_precision);
        fusion.threshold_text_only = choice.threshold;
        fusion.coverage_text_only = choice.coverage;
    }
    if !scores.image.is_empty() {
        let choice = automation_threshold(&scores.image, &scores.image_labels, target_precision);
        fusion.threshold_image_only = choice.threshold;
        fusion.coverage_image_only = choice.coverage;
    }
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
    let text_probabilities = classifier.text_probabilities(&text);
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
