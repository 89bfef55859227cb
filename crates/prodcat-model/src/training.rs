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
use prodcat_domain::{normalize_text, product_text, CategoryCode, DatasetVersionId};
use prodcat_embed::TextEmbedder;
use prodcat_metrics::TemperatureScaling;
use prodcat_storage::{image_key, Database, ObjectStorage};
use prodcat_text_model::{TextClassifier, TextClassifierOptions};
use prodcat_vision::{HeadKind, HeadTrainingOptions, ImageHead};
use serde::Serialize;

use crate::bundle::{write_bundle, BundleManifest, FusionSettings, ImageBranch, ModelBundle};
use crate::classifier::ProductClassifier;
use crate::evaluation::{evaluate_rows, EvaluationReport, LabelledProduct};
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

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (index, value) in row.iter().enumerate() {
        if *value > row[best] {
            best = index;
        }
    }
    best
}

/// Trains a model version on `dataset` and writes its bundle.
#[allow(clippy::too_many_arguments)]
pub async fn train_model(
    database: &Database,
    objects: &ObjectStorage,
    backbone: Option<&ImageBackbone>,
    embedder: Option<&TextEmbedder>,
    dataset: &DatasetVersionId,
    options: &TrainOptions,
    progress: &dyn TrainingProgress,
) -> Result<TrainingOutcome, ModelError> {
    let mut timings = Vec::new();
    let mut metrics = BTreeMap::new();
    let mut curves = Vec::new();
    let clock = Instant::now();
    progress.stage("loading rows", 3);
    let train = labelled(load_rows(database, dataset, Some(Split::Train)).await?);
    progress.advance(1);
    let validation = labelled(load_rows(database, dataset, Some(Split::Validation)).await?);
    progress.advance(2);
    let test = labelled(load_rows(database, dataset, Some(Split::Test)).await?);
    progress.advance(3);
    if train.len() < 2 || validation.is_empty() || test.is_empty() {
        return Err(ModelError::TrainingData(format!(
            "dataset {dataset} has {} labelled training, {} validation and {} test rows; \
             training needs labelled rows in all three splits",
            train.len(),
            validation.len(),
            test.len()
        )));
    }
    timings.push(("load".to_string(), clock.elapsed().as_secs_f64()));
    let text_of = |row: &DatasetRow| product_text(&row.designation, &row.description);

    // Text branch.
    let mut text_classifier: Option<TextClassifier> = None;
    if options.branches.wants_text() {
        let clock = Instant::now();
        progress.stage("text: fitting TF-IDF + linear SVM", 1);
        let texts: Vec<String> = train.iter().map(|(row, _)| text_of(row)).collect();
        let labels: Vec<CategoryCode> = train.iter().map(|(_, label)| *label).collect();
        let text_options = options.text.clone();
        let mut classifier = tokio::task::spawn_blocking(move || {
            TextClassifier::fit(&texts, &labels, &text_options)
        })
        .await
        .map_err(|error| ModelError::TrainingData(format!("text training failed: {error}")))??;
        progress.advance(1);
        let known: Vec<&(DatasetRow, CategoryCode)> = validation
            .iter()
            .filter(|(_, label)| classifier.class_index(*label).is_some())
            .collect();
        let texts: Vec<String> = known.iter().map(|(row, _)| text_of(row)).collect();
        let labels: Vec<CategoryCode> = known.iter().map(|(_, label)| *label).collect();
        let calibration = classifier.calibrate(&texts, &labels)?;
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
            curves.push((
                "text.svm_iterations_per_class".to_string(),
                class as i64,
                f64::from(*iterations),
            ));
        }
        text_classifier = Some(classifier);
        timings.push(("text".to_string(), clock.elapsed().as_secs_f64()));
    }

    // The label set: the text model's categories, else those seen in training images.
    let mut categories: Vec<CategoryCode> = match &text_classifier {
        Some(classifier) => classifier.categories().to_vec(),
        None => train
            .iter()
            .filter(|(row, _)| row.image_hash.is_some())
            .map(|(_, label)| *label)
            .collect(),
    };
    categories.sort_unstable();
    categories.dedup();
    let class_of = |code: CategoryCode| categories.binary_search(&code).ok();

    // Image features for every split (cached by content hash).
    let mut features: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    if options.branches.wants_image() {
        let backbone = backbone.ok_or(ModelError::BackboneUnavailable)?;
        let clock = Instant::now();
        let mut hashes: Vec<String> = train
            .iter()
            .chain(&validation)
            .chain(&test)
            .filter_map(|(row, _)| row.image_hash.clone())
            .collect();
        hashes.sort();
        hashes.dedup();
        progress.stage("image: backbone features", hashes.len() as u64);
        let cache = FeatureCache::new(objects.clone(), backbone.clone());
        let results = cache
            .features_for(&hashes, &|done| progress.advance(done as u64))
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
        metrics.insert("image.feature_failures".into(), f64::from(failures));
        metrics.insert("image.images".into(), features.len() as f64);
        timings.push(("image_features".to_string(), clock.elapsed().as_secs_f64()));
    }
    let image_rows = |rows: &[(DatasetRow, CategoryCode)]| -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut vectors = Vec::new();
        let mut labels = Vec::new();
        for (row, label) in rows {
            if let (Some(hash), Some(class)) = (&row.image_hash, class_of(*label)) {
                if let Some(vector) = features.get(hash) {
                    vectors.push(vector.clone());
                    labels.push(class);
                }
            }
        }
        (vectors, labels)
    };

    // Image branch.
    let mut image_branch: Option<ImageBranch> = None;
    if options.branches.wants_image() {
        let clock = Instant::now();
        let (train_features, train_labels) = image_rows(&train);
        let (validation_features, validation_labels) = image_rows(&validation);
        if train_features.len() < 2 {
            return Err(ModelError::TrainingData(format!(
                "dataset {dataset} has {} training rows with a readable image; the image branch needs more",
                train_features.len()
            )));
        }
        progress.stage("image: training the head", 1);
        let head_options = HeadTrainingOptions {
            seed: options.head.seed,
            ..options.head.clone()
        };
        let k = categories.len();
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
        progress.advance(1);
        for (epoch, loss) in report.training_losses.iter().enumerate() {
            curves.push((
                "image.train_loss".into(),
                epoch as i64 + 1,
                f64::from(*loss),
            ));
        }
        for (epoch, loss) in report.validation_losses.iter().enumerate() {
            curves.push((
                "image.validation_loss".into(),
                epoch as i64 + 1,
                f64::from(*loss),
            ));
        }
        metrics.insert("image.best_epoch".into(), report.best_epoch as f64);
        // Calibrate on validation rows with images.
        let (validation_features, validation_labels) = image_rows(&validation);
        let calibration = if validation_features.is_empty() {
            TemperatureScaling::identity()
        } else {
            let logits = head.logits_batch(&validation_features)?;
            let scores: Vec<f64> = logits.iter().flatten().map(|v| f64::from(*v)).collect();
            TemperatureScaling::fit(&scores, k, &validation_labels)?
        };
        metrics.insert("image.temperature".into(), calibration.temperature);
        image_branch = Some(ImageBranch {
            head,
            calibration,
            categories: categories.clone(),
        });
        timings.push(("image_head".to_string(), clock.elapsed().as_secs_f64()));
    }

    // A provisional classifier to tune fusion and thresholds on validation data.
    let clock = Instant::now();
    progress.stage("fusion and thresholds", 1);
    let mut manifest = BundleManifest {
        format_version: crate::bundle::BUNDLE_FORMAT_VERSION,
        model_version: "mv-0000000000000000".to_string(),
        label_set: categories.iter().map(|c| c.value()).collect(),
        dataset_version: dataset.to_string(),
        code_version: options.code_version.clone(),
        branches: [
            text_classifier.as_ref().map(|_| "text"),
            image_branch.as_ref().map(|_| "image"),
        ]
        .into_iter()
        .flatten()
        .map(str::to_string)
        .collect(),
        parameters: BTreeMap::new(),
        metrics: BTreeMap::new(),
        image_backbone: image_branch
            .as_ref()
            .and(backbone)
            .map(|b| b.id().to_string()),
        files: Vec::new(),
    };
    manifest.parameters.insert(
        "branches".into(),
        serde_json::json!(options.branches.as_str()),
    );
    manifest.parameters.insert(
        "targetPrecision".into(),
        serde_json::json!(options.target_precision),
    );
    if text_classifier.is_some() {
        manifest
            .parameters
            .insert("text".into(), serde_json::to_value(&options.text)?);
    }
    if image_branch.is_some() {
        manifest
            .parameters
            .insert("imageHead".into(), head_parameters(&options.head));
    }
    let provisional = ProductClassifier::new(
        ModelBundle {
            manifest: manifest.clone(),
            text: text_classifier.clone(),
            image: image_branch.clone(),
            fusion: FusionSettings::default(),
            reference_profile: None,
        },
        backbone.cloned(),
    )?;
    let mut text_validation = Vec::new();
    let mut text_validation_labels = Vec::new();
    let mut pair_text = Vec::new();
    let mut pair_image = Vec::new();
    let mut pair_labels = Vec::new();
    let mut image_only = Vec::new();
    let mut image_only_labels = Vec::new();
    for (row, label) in &validation {
        let Some(class) = class_of(*label) else {
            continue;
        };
        let text = provisional.text_probabilities(&text_of(row));
        let image = match (&row.image_hash, &image_branch) {
            (Some(hash), Some(_)) => match features.get(hash) {
                Some(vector) => Some(provisional.image_probabilities_from_features(vector)?),
                None => None,
            },
            _ => None,
        };
        if let Some(text) = &text {
            text_validation.push(text.clone());
            text_validation_labels.push(class);
        }
        if let Some(image) = &image {
            image_only.push(image.clone());
            image_only_labels.push(class);
        }
        if let (Some(text), Some(image)) = (text, image) {
            pair_text.push(text);
            pair_image.push(image);
            pair_labels.push(class);
        }
    }
    let k = categories.len();
    let mut fusion = FusionSettings {
        target_precision: options.target_precision,
        ..FusionSettings::default()
    };
    if !pair_labels.is_empty() {
        fusion.image_weight = tune_fusion_weight(&pair_text, &pair_image, &pair_labels, k);
        fusion.fused_temperature = fit_fused_temperature(
            &pair_text,
            &pair_image,
            &pair_labels,
            fusion.image_weight,
            k,
        );
        let fused: Vec<Vec<f32>> = pair_text
            .iter()
            .zip(&pair_image)
            .map(|(t, i)| fuse(t, i, fusion.image_weight, fusion.fused_temperature))
            .collect();
        let choice = automation_threshold(&fused, &pair_labels, options.target_precision);
        fusion.threshold_fused = choice.threshold;
        fusion.coverage_fused = choice.coverage;
    }
    if !text_validation.is_empty() {
        let choice = automation_threshold(
            &text_validation,
            &text_validation_labels,
            options.target_precision,
        );
        fusion.threshold_text_only = choice.threshold;
        fusion.coverage_text_only = choice.coverage;
    }
    if !image_only.is_empty() {
        let choice =
            automation_threshold(&image_only, &image_only_labels, options.target_precision);
        fusion.threshold_image_only = choice.threshold;
        fusion.coverage_image_only = choice.coverage;
    }
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
    progress.advance(1);
    timings.push(("fusion".to_string(), clock.elapsed().as_secs_f64()));

    let provisional = ProductClassifier::new(
        ModelBundle {
            manifest: manifest.clone(),
            text: text_classifier.clone(),
            image: image_branch.clone(),
            fusion: fusion.clone(),
            reference_profile: None,
        },
        backbone.cloned(),
    )?;

    // Evaluation on the test split.
    let clock = Instant::now();
    progress.stage("evaluating on the test split", 1);
    let test_products: Vec<LabelledProduct> = test
        .iter()
        .map(|(row, label)| LabelledProduct {
            text: text_of(row),
            image_features: row
                .image_hash
                .as_ref()
                .and_then(|h| features.get(h).cloned()),
            label: *label,
        })
        .collect();
    let (mut evaluation, mut pictures) =
        evaluate_rows(&provisional, &test_products, &format!("{dataset}:test"))?;
    progress.advance(1);
    timings.push(("evaluate".to_string(), clock.elapsed().as_secs_f64()));

    // Reference profile from validation and test rows, with the model's own predictions.
    let clock = Instant::now();
    progress.stage("drift reference profile", 1);
    let mut reference_rows = Vec::new();
    for (row, _) in validation.iter().chain(&test).take(2_000) {
        let text = text_of(row);
        let image_bytes = match &row.image_hash {
            Some(hash) if reference_rows.len() < 1_000 => {
                match prodcat_domain::ContentHash::parse(hash) {
                    Ok(parsed) => objects.get(&image_key(&parsed)).await.ok(),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let image_stats = image_bytes.and_then(|bytes| {
            let picture = prodcat_vision::preprocess::decode_image(&bytes, 40_000_000).ok()?;
            prodcat_drift::features::ImageStats::from_rgb(
                picture.width,
                picture.height,
                &picture.pixels,
            )
            .ok()
        });
        let text_probabilities = provisional.text_probabilities(&text);
        let image_probabilities = match (&row.image_hash, &image_branch) {
            (Some(hash), Some(_)) => features
                .get(hash)
                .and_then(|vector| provisional.image_probabilities_from_features(vector).ok()),
            _ => None,
        };
        let (predicted, confidence) =
            match provisional.combine(text_probabilities, image_probabilities) {
                Ok(crate::classifier::Combined { probabilities, .. }) => (
                    Some(categories[argmax(&probabilities)].value()),
                    Some(f64::from(max_of(&probabilities))),
                ),
                Err(_) => (None, None),
            };
        reference_rows.push(ReferenceRow {
            text,
            description_empty: normalize_text(&row.description).is_empty(),
            image: image_stats,
            predicted,
            confidence,
        });
    }
    let profile = reference_profile(text_classifier.as_ref(), embedder, &reference_rows)?;
    progress.advance(1);
    timings.push(("profile".to_string(), clock.elapsed().as_secs_f64()));

    // Headline metrics go into the manifest; then the bundle is written.
    if let Some(system) = evaluation.system() {
        manifest
            .metrics
            .insert("weighted_f1".into(), system.weighted_f1);
        manifest.metrics.insert("macro_f1".into(), system.macro_f1);
        manifest.metrics.insert("accuracy".into(), system.accuracy);
        manifest.metrics.insert(
            "expected_calibration_error".into(),
            system.expected_calibration_error,
        );
        manifest
            .metrics
            .insert("automatic_share".into(), system.automatic_share);
        manifest
            .metrics
            .insert("automatic_precision".into(), system.automatic_precision);
    }
    for branch in &evaluation.branches {
        if branch.name != "system" {
            manifest
                .metrics
                .insert(format!("{}.weighted_f1", branch.name), branch.weighted_f1);
        }
    }
    progress.stage("writing the model bundle", 1);
    let bundle = write_bundle(
        objects,
        ModelBundle {
            manifest,
            text: text_classifier,
            image: image_branch,
            fusion,
            reference_profile: Some(profile),
        },
    )
    .await?;
    progress.advance(1);
    evaluation.model_version = bundle.manifest.model_version.clone();
    if let Some(svg) = evaluation.confusion_svg("system") {
        pictures.insert(0, ("confusion-system.svg".to_string(), svg));
    }
    Ok(TrainingOutcome {
        bundle,
        evaluation,
        pictures,
        curves,
        metrics,
        timings,
    })
}
