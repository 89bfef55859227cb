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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use prodcat_catalogue::prediction_log::write_prediction_log;
use prodcat_catalogue::products::{
    insert_if_absent, insert_review_decisions, RecordedDecision, StoredProduct,
};
use prodcat_catalogue::{PredictionLogRow, PredictionSource, ProductStatus};
use prodcat_dataset::{import_dataset, ImportOptions, ImportSource};
use prodcat_domain::{sha256_hex, CategoryCode, ContentHash};
use prodcat_drift::rng::SplitMix64;
use prodcat_drift::weighted_f1;
use prodcat_model::{BranchSelection, TrainOptions};
use prodcat_platform::{LogMode, Predictor, ProductToClassify, Requester};
use prodcat_registry::{promote, PromotionRequest, CHAMPION};
use prodcat_storage::image_key;
use serde::{Deserialize, Serialize};

use crate::drift_check::DriftCheckOptions;
use crate::pipeline_run::RunStatus;
use crate::pipelines::{run_pipeline, PipelineName, PipelineRequest, StartMode};
use crate::rescore::PlatformRescorer;
use crate::training_run::{run_training, TrainingRequest};
use crate::weekly_check::{WeeklyCheckOutput, WeeklyCheckParameters};
use crate::window::{format_ms, DAY_MS};
use crate::PipelineError;
use prodcat_platform::Platform;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Clean,
    Foreign,
    Degraded,
}

#[derive(Debug, Clone)]
struct SimProduct {
    index: i64,
    product_id: i64,
    image_id: i64,
    designation: String,
    description: String,
    category: CategoryCode,
    image: Option<PathBuf>,
}

/// The products the simulation draws from.
struct Pools {
    source: String,
    french: Vec<SimProduct>,
    foreign: Vec<SimProduct>,
    images: Option<PathBuf>,
}

fn input_error(path: &Path, message: impl std::fmt::Display) -> PipelineError {
    PipelineError::Input {
        file: path.display().to_string(),
        message: message.to_string(),
    }
}

fn read_sample(dir: &Path) -> Result<Pools, PipelineError> {
    let texts = dir.join("text").join("X_train_sample.csv");
    let labels_path = dir.join("text").join("Y_train_sample.csv");
    let foreign_path = dir
        .join("text")
        .join("extra")
        .join("shiyu_test_set_final_evaluation.csv");
    let image_dir = dir.join("images").join("image_train");
    let images = image_dir.is_dir().then_some(image_dir);
    let mut labels: HashMap<i64, CategoryCode> = HashMap::new();
    let mut reader =
        csv::Reader::from_path(&labels_path).map_err(|e| input_error(&labels_path, e))?;
    for record in reader.records() {
        let record = record.map_err(|e| input_error(&labels_path, e))?;
        let (Some(index), Some(code)) = (record.get(0), record.get(1)) else {
            continue;
        };
        if let (Ok(index), Ok(code)) = (index.trim().parse::<i64>(), CategoryCode::parse(code)) {
            labels.insert(index, code);
        }
    }
    let image_path = |image_id: i64, product_id: i64| {
        images
            .as_ref()
            .map(|dir| dir.join(format!("image_{image_id}_product_{product_id}.jpg")))
            .filter(|path| path.is_file())
    };
    let mut french = Vec::new();
    let mut reader = csv::Reader::from_path(&texts).map_err(|e| input_error(&texts, e))?;
    for record in reader.records() {
        let record = record.map_err(|e| input_error(&texts, e))?;
        let field = |i: usize| record.get(i).unwrap_or("").to_string();
        let (Ok(index), Ok(product_id), Ok(image_id)) = (
            field(0).trim().parse::<i64>(),
            field(3).trim().parse::<i64>(),
            field(4).trim().parse::<i64>(),
        ) else {
            continue;
        };
        let Some(category) = labels.get(&index).copied() else {
            continue;
        };
        french.push(SimProduct {
            index,
            product_id,
            image_id,
            designation: field(1),
            description: field(2),
            category,
            image: image_path(image_id, product_id),
        });
    }
    if french.len() < 100 {
        return Err(input_error(
            &texts,
            format!(
                "only {} labelled rows; the simulation needs more",
                french.len()
            ),
        ));
    }
    let french_products: HashSet<i64> = french.iter().map(|p| p.product_id).collect();
    let mut foreign = Vec::new();
    if foreign_path.is_file() {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b';')
            .flexible(true)
            .from_path(&foreign_path)
            .map_err(|e| input_error(&foreign_path, e))?;
        let mut seen = HashSet::new();
        for record in reader.records() {
            let record = record.map_err(|e| input_error(&foreign_path, e))?;
            let field = |i: usize| record.get(i).unwrap_or("").trim().to_string();
            let (Ok(index), Ok(category)) =
                (field(0).parse::<i64>(), CategoryCode::parse(&field(3)))
            else {
                continue;
            };
            let file = field(2);
            let Some((image_id, product_id)) = file
                .strip_prefix("image_")
                .and_then(|rest| rest.strip_suffix(".jpg"))
                .and_then(|rest| rest.split_once("_product_"))
                .and_then(|(i, p)| Some((i.parse::<i64>().ok()?, p.parse::<i64>().ok()?)))
            else {
                continue;
            };
            let text = field(1);
            if text.is_empty() || french_products.contains(&product_id) || !seen.insert(product_id)
            {
                continue;
            }
            foreign.push(SimProduct {
                index,
                product_id,
                image_id,
                designation: text,
                description: String::new(),
                category,
                image: image_path(image_id, product_id),
            });
        }
    }
    Ok(Pools {
        source: format!(
            "real sample at {} ({} labelled French rows, {} labelled English-translated rows)",
            dir.display(),
            french.len(),
            foreign.len()
        ),
        french,
        foreign,
        images,
    })
}

fn demo_pools(seed: u64) -> Pools {
    let products = 3_000;
    let plan = prodcat_dataset::generate::category_plan(products, seed);
    let french = plan
        .iter()
        .enumerate()
        .map(|(index, category)| {
            let product = prodcat_dataset::generate::generate_product(index, *category, seed);
            SimProduct {
                index: index as i64,
                product_id: product.product_id,
                image_id: product.image_id,
                designation: product.designation,
                description: product.description,
                category: product.category,
                image: None,
            }
        })
        .collect();
    Pools {
        source: format!(
            "generated demo catalogue ({products} products, seed {seed}; no sample folder was \
             given and PRODCAT_SAMPLE_DATA is not set: set it for the real-data simulation)"
        ),
        french,
        foreign: Vec::new(),
        images: None,
    }
}

/// A degraded listing: the first words of the title, with typos, and no description.
fn degrade(product: &SimProduct, rng: &mut SplitMix64) -> SimProduct {
    let words: Vec<&str> = product.designation.split_whitespace().take(4).collect();
    let letters: Vec<char> = "abcdefghijklmnopqrstuvwxyz".chars().collect();
    let mut degraded = Vec::new();
    for word in words {
        let mut chars: Vec<char> = word.to_lowercase().chars().collect();
        for c in chars.iter_mut() {
            if c.is_alphabetic() && rng.next_f64() < 0.25 {
                *c = letters[rng.next_below(letters.len() as u64) as usize];
            }
        }
        degraded.push(chars.into_iter().collect::<String>());
    }
    SimProduct {
        designation: degraded.join(" "),
        description: String::new(),
        ..product.clone()
    }
}

fn write_initial_csv(
    dir: &Path,
    products: &[SimProduct],
) -> Result<(PathBuf, PathBuf), PipelineError> {
    std::fs::create_dir_all(dir).map_err(|e| input_error(dir, e))?;
    let texts = dir.join("X_initial.csv");
    let labels = dir.join("Y_initial.csv");
    let mut writer = csv::Writer::from_path(&texts).map_err(|e| input_error(&texts, e))?;
    writer
        .write_record(["", "designation", "description", "productid", "imageid"])
        .map_err(|e| input_error(&texts, e))?;
    let mut label_writer = csv::Writer::from_path(&labels).map_err(|e| input_error(&labels, e))?;
    label_writer
        .write_record(["", "prdtypecode"])
        .map_err(|e| input_error(&labels, e))?;
    for product in products {
        writer
            .write_record([
                product.index.to_string(),
                product.designation.clone(),
                product.description.clone(),
                product.product_id.to_string(),
                product.image_id.to_string(),
            ])
            .map_err(|e| input_error(&texts, e))?;
        label_writer
            .write_record([product.index.to_string(), product.category.to_string()])
            .map_err(|e| input_error(&labels, e))?;
    }
    writer.flush().map_err(|e| input_error(&texts, e))?;
    label_writer.flush().map_err(|e| input_error(&labels, e))?;
    Ok((texts, labels))
}

/// One served product of a week.
struct Served {
    product: SimProduct,
    kind: ItemKind,
    at_ms: i64,
    image_hash: Option<String>,
    image_bytes: Option<Vec<u8>>,
}

struct Prediction {
    code: u16,
    /// The row the prediction log gets (time, source, product and label set when logged).
    log: PredictionLogRow,
}

/// Classifies the week's traffic through the predictor, as live traffic is classified.
async fn predict_all(predictor: &Predictor, items: &[Served]) -> Vec<Option<Prediction>> {
    let products: Vec<ProductToClassify> = items
        .iter()
        .map(|item| ProductToClassify {
            designation: item.product.designation.clone(),
            description: item.product.description.clone(),
            // A model without an image branch still reads the photo's statistics for the log.
            image: item.image_bytes.clone().map(Bytes::from),
            explain: false,
        })
        .collect();
    let requesters: Vec<Requester> = items
        .iter()
        .map(|item| {
            Requester::new(PredictionSource::Simulation)
                .client("simulation")
                .product(item.product.product_id)
        })
        .collect();
    match predictor
        .predict_batch(products, &requesters, LogMode::Caller)
        .await
    {
        Ok(results) => results
            .into_iter()
            .map(|result| {
                let predicted = result.ok()?;
                Some(Prediction {
                    code: predicted.prediction.category.value(),
                    log: predicted.log,
                })
            })
            .collect(),
        Err(_) => items.iter().map(|_| None).collect(),
    }
}

fn f1_of(pairs: &[(u16, u16)]) -> Option<f64> {
    weighted_f1(pairs).ok()
}

/// Writes the week's traffic to the prediction log and the catalogue, and the reviewers' labels.
async fn log_week(
    platform: &Platform,
    items: &[Served],
    predictions: &[Option<Prediction>],
    reviewed: &HashSet<usize>,
    week_end: i64,
) -> Result<(), PipelineError> {
    let database = &platform.database;
    for item in items {
        if let (Some(hash), Some(bytes)) = (&item.image_hash, &item.image_bytes) {
            let key = image_key(&ContentHash::parse(hash)?);
            platform
                .objects
                .put_if_absent(&key, Bytes::from(bytes.clone()))
                .await?;
        }
    }
    let mut log_rows = Vec::new();
    let mut products = Vec::new();
    let mut decisions = Vec::new();
    for (index, (item, prediction)) in items.iter().zip(predictions).enumerate() {
        let Some(prediction) = prediction else {
            continue;
        };
        let labelled = reviewed.contains(&index);
        let label = item.product.category;
        let labelled_at = (item.at_ms + DAY_MS).min(week_end - 1);
        let predicted = CategoryCode::from_u16(prediction.code)?;
        let mut row = prediction.log.clone();
        row.at_ms = item.at_ms;
        row.label_code = labelled.then(|| i64::from(label.value()));
        row.labelled_at_ms = labelled.then_some(labelled_at);
        products.push(StoredProduct {
            id: item.product.product_id,
            designation: item.product.designation.clone(),
            description: item.product.description.clone(),
            image_hash: item.image_hash.clone(),
            status: if labelled {
                ProductStatus::Reviewed
            } else if row.automatic {
                ProductStatus::Classified
            } else {
                ProductStatus::Review
            },
            predicted_code: Some(predicted),
            confidence: Some(row.confidence),
            model_version: Some(row.model_version.clone()),
            category_code: Some(if labelled { label } else { predicted }),
            at_ms: item.at_ms,
            created_by: "simulation".to_string(),
        });
        if labelled {
            decisions.push(RecordedDecision {
                product_id: item.product.product_id,
                decision: if label == predicted {
                    "confirmed"
                } else {
                    "corrected"
                }
                .to_string(),
                category: label,
                previous: Some(predicted),
                reviewer: "simulated-reviewer".to_string(),
                at_ms: labelled_at,
            });
        }
        log_rows.push(row);
    }
    write_prediction_log(database, &log_rows).await?;
    insert_if_absent(database, &products).await?;
    insert_review_decisions(database, &decisions).await?;
    Ok(())
}

fn image_of(path: &Option<PathBuf>) -> (Option<Vec<u8>>, Option<String>) {
    let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) else {
        return (None, None);
    };
    let hash = sha256_hex(&bytes);
    (Some(bytes), Some(hash))
}

/// Draws `count` products from `pool` (consumed from the front), keeping only those `keep` accepts.
fn draw(
    pool: &mut Vec<SimProduct>,
    count: usize,
    keep: impl Fn(&SimProduct) -> bool,
) -> Vec<SimProduct> {
    let mut taken = Vec::new();
    let mut rest = Vec::with_capacity(pool.len());
    for product in pool.drain(..) {
        if taken.len() < count && keep(&product) {
            taken.push(product);
        } else {
            rest.push(product);
        }
    }
    *pool = rest;
    taken
}

/// Runs the simulation on `platform` (a fresh data folder) and writes the report.
pub async fn run_simulation(
    platform: &Platform,
    options: &SimulationOptions,
    progress: &dyn SimulationProgress,
) -> Result<SimulationReport, PipelineError> {
    let clock = Instant::now();
    if options.weeks == 0 || options.weeks > 52 {
        return Err(PipelineError::Invalid(format!(
            "--weeks must be within 1..=52 (got {})",
            options.weeks
        )));
    }
    for (name, value) in [
        ("--max-drift", options.max_drift),
        ("--review-share", options.review_share),
        ("--initial-share", options.initial_share),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(PipelineError::Invalid(format!(
                "{name} must be within 0..1 (got {value})"
            )));
        }
    }
    let branches = BranchSelection::parse(&options.branches).ok_or_else(|| {
        PipelineError::Invalid(format!(
            "unknown branch {:?}: text, image or fusion",
            options.branches
        ))
    })?;
    std::fs::create_dir_all(&options.out_dir).map_err(|e| input_error(&options.out_dir, e))?;
    let mut pools = match &options.data {
        Some(dir) => read_sample(dir)?,
        None => demo_pools(options.seed),
    };
    progress.message(&format!("data: {}", pools.source));
    let mut rng = SplitMix64::new(options.seed ^ 0x5349_4d55_4c41_5445);
    rng.shuffle(&mut pools.french);
    rng.shuffle(&mut pools.foreign);
    let initial_count = ((pools.french.len() as f64) * options.initial_share).round() as usize;
    let initial_count = initial_count.clamp(30, pools.french.len().saturating_sub(30).max(30));
    let initial: Vec<SimProduct> = pools
        .french
        .drain(..initial_count.min(pools.french.len()))
        .collect();

    // Focus categories of the drifted traffic: those with the most foreign listings (or, without
    // them, held-out products), ties broken by the seed's order.
    let focus_source = if pools.foreign.is_empty() {
        &pools.french
    } else {
        &pools.foreign
    };
    let mut counts: BTreeMap<CategoryCode, usize> = BTreeMap::new();
    for product in focus_source {
        *counts.entry(product.category).or_default() += 1;
    }
    let mut ranked: Vec<(CategoryCode, usize)> = counts.into_iter().collect();
    let mut order: Vec<u64> = (0..ranked.len()).map(|_| rng.next_u64()).collect();
    let mut keyed: Vec<((usize, u64), (CategoryCode, usize))> = ranked
        .drain(..)
        .zip(order.drain(..))
        .map(|(entry, key)| ((usize::MAX - entry.1, key), entry))
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    let focus: Vec<CategoryCode> = keyed
        .into_iter()
        .take(FOCUS_CATEGORIES)
        .map(|(_, (code, _))| code)
        .collect();

    // Traffic size: what the held-out pools can supply without showing a product twice.
    let foreign_available = pools
        .foreign
        .iter()
        .filter(|p| focus.contains(&p.category))
        .count();
    let has_foreign = foreign_available > 0;
    let foreign_share = if has_foreign {
        FOREIGN_SHARE_OF_DRIFT
    } else {
        0.0
    };
    let total_weeks = options.weeks + options.recovery_weeks;
    let drift_total: f64 = (0..total_weeks).map(|w| options.drift_of_week(w)).sum();
    let french_per_item = total_weeks as f64 - drift_total * foreign_share;
    let mut per_week = options.traffic_per_week.max(10);
    if french_per_item > 0.0 {
        per_week = per_week.min((pools.french.len() as f64 / french_per_item).floor() as usize);
    }
    if has_foreign && drift_total > 0.0 {
        per_week = per_week
            .min((foreign_available as f64 / (drift_total * foreign_share)).floor() as usize);
    }
    if per_week < 10 {
        return Err(PipelineError::Invalid(format!(
            "the data holds too few held-out products for {total_weeks} weeks of traffic"
        )));
    }
    if per_week < options.traffic_per_week {
        progress.message(&format!(
            "traffic reduced to {per_week} products a week so that no product is served twice"
        ));
    }

    // Initial data, champion.
    progress.message(&format!(
        "importing the initial data ({} products)",
        initial.len()
    ));
    let (texts, labels) = write_initial_csv(&options.out_dir.join("data"), &initial)?;
    let source = ImportSource::explicit(texts, Some(labels), pools.images.clone())?;
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
    let initial_dataset = imported.version().id.to_string();
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
            dataset: initial_dataset.clone(),
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
    let first_champion = Predictor::for_reference(platform, trained.version.id.as_str()).await?;
    let initial_test_f1 = trained.outcome.evaluation.system().map(|s| s.weighted_f1);
    progress.message(&format!(
        "champion {} (weighted F1 {} on its test split)",
        trained.version.id,
        initial_test_f1
            .map(|f| format!("{f:.4}"))
            .unwrap_or_else(|| "n/a".into())
    ));

    let mut weeks = Vec::new();
    for week in 0..total_weeks {
        let drift = options.drift_of_week(week);
        let start = options.start_ms + week as i64 * WEEK_MS;
        let end = start + WEEK_MS;
        let drifted = (drift * per_week as f64).round() as usize;
        let foreign_count = (drifted as f64 * foreign_share).round() as usize;
        let degraded_count = drifted - foreign_count;
        let clean_count = per_week - drifted;
        let mut chosen: Vec<(SimProduct, ItemKind)> = Vec::new();
        chosen.extend(
            draw(&mut pools.french, clean_count, |_| true)
                .into_iter()
                .map(|p| (p, ItemKind::Clean)),
        );
        chosen.extend(
            draw(&mut pools.foreign, foreign_count, |p| {
                focus.contains(&p.category)
            })
            .into_iter()
            .map(|p| (p, ItemKind::Foreign)),
        );
        let degraded_pick = if has_foreign {
            draw(&mut pools.french, degraded_count, |_| true)
        } else {
            let picked = draw(&mut pools.french, degraded_count, |p| {
                focus.contains(&p.category)
            });
            if picked.len() < degraded_count {
                let missing = degraded_count - picked.len();
                let mut all = picked;
                all.extend(draw(&mut pools.french, missing, |_| true));
                all
            } else {
                picked
            }
        };
        chosen.extend(
            degraded_pick
                .into_iter()
                .map(|p| (degrade(&p, &mut rng), ItemKind::Degraded)),
        );
        rng.shuffle(&mut chosen);
        let count = chosen.len().max(1) as i64;
        let items: Vec<Served> = chosen
            .into_iter()
            .enumerate()
            .map(|(i, (product, kind))| {
                let (image_bytes, image_hash) = image_of(&product.image);
                Served {
                    at_ms: start + (i as i64 * WEEK_MS) / count + 1,
                    product,
                    kind,
                    image_hash,
                    image_bytes,
                }
            })
            .collect();

        let champion_version = prodcat_registry::resolve(&platform.database, CHAMPION).await?;
        let champion = Predictor::for_reference(platform, champion_version.id.as_str()).await?;
        progress.message(&format!(
            "week {}: {} products, drift {:.0}% ({} foreign, {} degraded), served by {}",
            week + 1,
            items.len(),
            drift * 100.0,
            foreign_count,
            degraded_count,
            champion_version.id
        ));
        let predictions = predict_all(&champion, &items).await;
        let baseline = if champion_version.id != trained.version.id {
            Some(predict_all(&first_champion, &items).await)
        } else {
            None
        };
        let pairs_of = |predictions: &[Option<Prediction>], filter: &dyn Fn(ItemKind) -> bool| {
            items
                .iter()
                .zip(predictions)
                .filter(|(item, _)| filter(item.kind))
                .filter_map(|(item, p)| Some((p.as_ref()?.code, item.product.category.value())))
                .collect::<Vec<(u16, u16)>>()
        };
        let all_pairs = pairs_of(&predictions, &|_| true);
        let weighted_f1 = f1_of(&all_pairs).unwrap_or(0.0);
        let weighted_f1_clean = f1_of(&pairs_of(&predictions, &|k| k == ItemKind::Clean));
        let weighted_f1_drifted = f1_of(&pairs_of(&predictions, &|k| k != ItemKind::Clean));
        let without_retraining_f1 = match &baseline {
            Some(baseline) => f1_of(&pairs_of(baseline, &|_| true)).unwrap_or(0.0),
            None => weighted_f1,
        };
        let mut indices: Vec<usize> = (0..items.len()).collect();
        rng.shuffle(&mut indices);
        let reviewed: HashSet<usize> = indices
            .into_iter()
            .take((items.len() as f64 * options.review_share).round() as usize)
            .collect();
        log_week(platform, &items, &predictions, &reviewed, end).await?;

        let parameters = WeeklyCheckParameters {
            until_ms: Some(end),
            drift: options.drift.clone(),
            retrain_parameters: serde_json::json!({ "policy": options.policy }),
            ..WeeklyCheckParameters::default()
        };
        let request =
            PipelineRequest::new(PipelineName::WeeklyCheck, "simulation", StartMode::Fresh)
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
        let output: WeeklyCheckOutput =
            serde_json::from_value(run.output.clone().unwrap_or_default())?;
        let mut report_file = None;
        if let Some(report_id) = &output.drift.report_id {
            let check = crate::drift_check::get_drift_report(platform, report_id).await?;
            let html = crate::drift_check::drift_report_html(platform, &check).await?;
            let name = format!("week-{}-drift-report.html", week + 1);
            let path = options.out_dir.join(&name);
            std::fs::write(&path, html).map_err(|e| input_error(&path, e))?;
            report_file = Some(name);
        }
        let retrain = output.retrain.as_ref().and_then(|r| r.result.clone());
        let champion_after = prodcat_registry::resolve(&platform.database, CHAMPION)
            .await?
            .id
            .to_string();
        let result = WeekResult {
            week: week + 1,
            start_ms: start,
            injected_drift: drift,
            traffic: items.len(),
            foreign_items: items.iter().filter(|i| i.kind == ItemKind::Foreign).count(),
            degraded_items: items
                .iter()
                .filter(|i| i.kind == ItemKind::Degraded)
                .count(),
            champion: champion_version.id.to_string(),
            weighted_f1,
            weighted_f1_clean,
            weighted_f1_drifted,
            without_retraining_f1,
            reviewed: reviewed.len(),
            pipeline_run: run.id.clone(),
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
        };
        progress.message(&format!(
            "week {}: weighted F1 {:.4} (first champion {:.4}); {:.0}% of features drifted{}; {}",
            result.week,
            result.weighted_f1,
            result.without_retraining_f1,
            result.drifted_feature_share * 100.0,
            match (result.concept_f1, result.concept_drift) {
                (Some(f1), Some(drifted)) => format!(
                    ", reviewed F1 {f1:.4}{}",
                    if drifted { " (concept drift)" } else { "" }
                ),
                _ => String::new(),
            },
            match (&result.retrain_run, &result.challenger) {
                (Some(_), Some(challenger)) => format!(
                    "retrained: {challenger} {} ({} vs {})",
                    if result.promoted {
                        "promoted"
                    } else {
                        "not promoted"
                    },
                    result
                        .challenger_test_f1
                        .map(|f| format!("{f:.4}"))
                        .unwrap_or_default(),
                    result
                        .champion_test_f1
                        .map(|f| format!("{f:.4}"))
                        .unwrap_or_default()
                ),
                (Some(_), None) => "retraining found no new data".to_string(),
                _ if result.drift_found => "drift found".to_string(),
                _ => "no drift".to_string(),
            }
        ));
        weeks.push(result);
    }

    let notifications: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
        .fetch_one(platform.database.pool())
        .await?;
    let mut report = SimulationReport {
        data_source: pools.source.clone(),
        options: options.clone(),
        initial_dataset,
        initial_rows: initial.len(),
        initial_champion: trained.version.id.to_string(),
        initial_test_f1,
        focus_categories: focus.iter().map(|c| c.value()).collect(),
        traffic_per_week: per_week,
        weeks,
        notifications: notifications as usize,
        wall_seconds: clock.elapsed().as_secs_f64(),
        report_html: options.out_dir.join("report.html").display().to_string(),
        report_json: options.out_dir.join("report.json").display().to_string(),
    };
    report.wall_seconds = clock.elapsed().as_secs_f64();
    let html = render_report(&report);
    let html_path = options.out_dir.join("report.html");
    std::fs::write(&html_path, html).map_err(|e| input_error(&html_path, e))?;
    let json_path = options.out_dir.join("report.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .map_err(|e| input_error(&json_path, e))?;
    Ok(report)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn short(version: &str) -> String {
    version.chars().take(11).collect()
}

/// The SVG chart: weekly F1 (with and without retraining), drifted-feature share, injected
/// drift, retraining events and the champion of each week.
pub(crate) fn render_chart(report: &SimulationReport) -> String {
    let (width, height) = (860.0_f64, 420.0_f64);
    let (left, right, top, bottom) = (60.0, 200.0, 30.0, 90.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let n = report.weeks.len().max(1);
    let x = |week: usize| left + plot_w * ((week as f64 - 0.5) / n as f64);
    let y = |value: f64| top + plot_h * (1.0 - value.clamp(0.0, 1.0));
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    svg.push_str(&format!(
        "<rect x=\"{left}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"#fafafa\" stroke=\"#ccc\"/>\n"
    ));
    for tick in 0..=10 {
        let value = tick as f64 / 10.0;
        svg.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{value:.1}</text>\n",
            left + plot_w,
            left - 6.0,
            y(value) + 4.0,
            y = y(value)
        ));
    }
    // Retraining events: between the week that found drift and the next week.
    for week in &report.weeks {
        if week.retrain_run.is_none() {
            continue;
        }
        let position = x(week.week) + plot_w / n as f64 / 2.0;
        let colour = if week.promoted { "#2e7d32" } else { "#9e9e9e" };
        let label = match (&week.challenger, week.promoted) {
            (Some(c), true) => format!("retrained, {} promoted", short(c)),
            (Some(_), false) => "retrained, not promoted".to_string(),
            (None, _) => "retrain: no new data".to_string(),
        };
        svg.push_str(&format!(
            "<line x1=\"{position:.1}\" x2=\"{position:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/>\n<text x=\"{:.1}\" y=\"{}\" fill=\"{colour}\" transform=\"rotate(-90 {:.1} {})\" text-anchor=\"end\">{}</text>\n",
            top + plot_h,
            position - 4.0,
            top + 6.0,
            position - 4.0,
            top + 6.0,
            escape(&label)
        ));
    }
    let series: [(&str, &str, &str, WeekValue); 4] = [
        ("weighted F1 (served champion)", "#1565c0", "", |w| {
            w.weighted_f1
        }),
        ("weighted F1 without retraining", "#757575", "6 4", |w| {
            w.without_retraining_f1
        }),
        ("share of drifted features", "#ef6c00", "", |w| {
            w.drifted_feature_share
        }),
        ("injected drift share", "#c62828", "2 3", |w| {
            w.injected_drift
        }),
    ];
    for (index, (name, colour, dash, value)) in series.iter().enumerate() {
        let points: Vec<(f64, f64)> = report
            .weeks
            .iter()
            .map(|w| (x(w.week), y(value(w))))
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        svg.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2.5\" stroke-dasharray=\"{dash}\"/>\n",
            path.join(" ")
        ));
        for (px, py) in &points {
            svg.push_str(&format!(
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"{colour}\"/>\n"
            ));
        }
        let legend_y = top + 10.0 + index as f64 * 22.0;
        let legend_x = left + plot_w + 14.0;
        svg.push_str(&format!(
            "<line x1=\"{legend_x}\" x2=\"{}\" y1=\"{legend_y}\" y2=\"{legend_y}\" stroke=\"{colour}\" stroke-width=\"2.5\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            legend_x + 24.0,
            legend_x + 30.0,
            legend_y + 4.0,
            escape(name)
        ));
    }
    let legend_y = top + 10.0 + 4.0 * 22.0;
    let legend_x = left + plot_w + 14.0;
    svg.push_str(&format!(
        "<line x1=\"{legend_x}\" x2=\"{}\" y1=\"{legend_y}\" y2=\"{legend_y}\" stroke=\"#2e7d32\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/><text x=\"{}\" y=\"{}\">retraining</text>\n",
        legend_x + 24.0,
        legend_x + 30.0,
        legend_y + 4.0
    ));
    for week in &report.weeks {
        let px = x(week.week);
        svg.push_str(&format!(
            "<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\">week {}</text>\n<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>\n<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">drift {:.0}%</text>\n",
            top + plot_h + 18.0,
            week.week,
            top + plot_h + 36.0,
            escape(&short(&week.champion)),
            top + plot_h + 54.0,
            week.injected_drift * 100.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">champion serving the week</text>\n",
        left + plot_w / 2.0,
        height - 8.0
    ));
    svg.push_str("</svg>\n");
    svg
}

/// One plotted value of a week.
type WeekValue = fn(&WeekResult) -> f64;

fn cell(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "–".to_string())
}

/// The self-contained HTML report.
pub(crate) fn render_report(report: &SimulationReport) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>prodcat drift simulation</title>\n<style>\
         body{font-family:sans-serif;margin:2rem;max-width:1100px;color:#222}\
         table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}\
         th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:right}\
         th{background:#f3f3f3}td.left,th.left{text-align:left}\
         tr.drift td{background:#fff3e0}code{font-size:.85rem}</style></head><body>\n",
    );
    html.push_str("<h1>Drift simulation</h1>\n");
    html.push_str(&format!(
        "<p>Data: {}. {} weeks, drift growing linearly from 0% to {:.0}% (then held there), {} products a week, \
         {:.0}% of them labelled by reviewers; first champion <code>{}</code> trained on {} \
         products (weighted F1 {} on its test split), branch <code>{}</code>, seed {}. \
         Drifted traffic comes from the focus categories {} (foreign-language listings) and \
         degraded listings. Wall time {:.0} s.</p>\n",
        escape(&report.data_source),
        report.weeks.len(),
        report.options.max_drift * 100.0,
        report.traffic_per_week,
        report.options.review_share * 100.0,
        report.initial_champion,
        report.initial_rows,
        cell(report.initial_test_f1),
        escape(&report.options.branches),
        report.options.seed,
        report
            .focus_categories
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        report.wall_seconds
    ));
    html.push_str(&render_chart(report));
    html.push_str(
        "<table><thead><tr><th>week</th><th>injected drift</th><th>traffic</th>\
         <th class=\"left\">champion</th><th>weighted F1</th><th>F1 clean / drifted</th>\
         <th>F1 without retraining</th><th>drifted features</th><th>reviewed F1 (reference)</th>\
         <th class=\"left\">decision</th><th class=\"left\">retraining</th><th class=\"left\">report</th></tr></thead><tbody>\n",
    );
    for week in &report.weeks {
        let retraining =
            match (&week.retrain_run, &week.challenger) {
                (Some(run), Some(challenger)) => format!(
                "<code>{}</code>: {} new rows, challenger <code>{}</code> {} vs champion {} → {}",
                escape(run),
                week.new_rows.unwrap_or(0),
                escape(&short(challenger)),
                cell(week.challenger_test_f1),
                cell(week.champion_test_f1),
                if week.promoted { "promoted" } else { "not promoted" }
            ),
                (Some(run), None) => format!("<code>{}</code>: no new data", escape(run)),
                _ => "–".to_string(),
            };
        let decision = if week.drift_found {
            let mut kinds = Vec::new();
            if week.dataset_drift {
                kinds.push("data drift");
            }
            if week.concept_drift == Some(true) {
                kinds.push("concept drift");
            }
            kinds.join(" + ")
        } else {
            "no drift".to_string()
        };
        html.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{:.0}%</td><td>{}</td><td class=\"left\"><code>{}</code></td>\
             <td>{:.4}</td><td>{} / {}</td><td>{:.4}</td><td>{}/{} ({:.0}%)</td><td>{} ({})</td>\
             <td class=\"left\">{}</td><td class=\"left\">{}</td><td class=\"left\">{}</td></tr>\n",
            if week.drift_found { "drift" } else { "" },
            week.week,
            week.injected_drift * 100.0,
            week.traffic,
            escape(&short(&week.champion)),
            week.weighted_f1,
            cell(week.weighted_f1_clean),
            cell(week.weighted_f1_drifted),
            week.without_retraining_f1,
            week.drifted_features.len(),
            week.tested_features,
            week.drifted_feature_share * 100.0,
            cell(week.concept_f1),
            cell(week.concept_reference_f1),
            decision,
            retraining,
            week.drift_report_file
                .as_ref()
                .map(|f| format!("<a href=\"{0}\">{0}</a>", escape(f)))
                .unwrap_or_else(|| "–".to_string())
        ));
    }
    html.push_str("</tbody></table>\n");
    html.push_str(
        "<p>Weighted F1 is measured on each week's whole traffic with its true labels (used for \
         measurement only). Retraining sees the initial data plus the labels the simulated \
         reviewers gave (a uniform random share of the traffic); the challenger is compared with \
         the champion on the new dataset version's test split and promoted only if the policy \
         allows it. \"Without retraining\" is the first champion scored on the same traffic.</p>\n",
    );
    for week in &report.weeks {
        if !week.drifted_features.is_empty() {
            html.push_str(&format!(
                "<p>Week {}: drifted features: {}.</p>\n",
                week.week,
                escape(&week.drifted_features.join(", "))
            ));
        }
    }
    html.push_str(&format!(
        "<p>Notifications recorded: {}. Times are UTC; week 1 starts {}.</p>\n</body></html>\n",
        report.notifications,
        format_ms(report.options.start_ms)
    ));
    html
}
