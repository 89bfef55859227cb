//! Drift checks of a model version: the current profile is built from the prediction log over a
//! time window (or by running the model over a CSV file), compared column by column with the
//! reference profile stored in the model's bundle, completed with concept drift when reviewers'
//! labels exist, and stored (JSON and HTML in the object store, a summary row in SQL). The latest
//! report also feeds the Prometheus gauges of the server.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use prodcat_domain::{escape_html, normalize_text, sha256_hex, CategoryCode, ModelVersionId};
use prodcat_drift::features::{product_drift_options, product_row, product_schema, ImageStats};
use prodcat_drift::{
    concept_drift, test_column, ColumnDrift, DriftReport, Profile, ProfileBuilder,
    DEFAULT_PROFILE_ROWS,
};
use prodcat_model::{
    embedding_text, observation_for, reference_profile, stratified_sample, ObservationBasis,
    ObservedProduct, ProductClassifier, ReferenceRow, StoredProfile, PROFILE_COMPONENTS,
};
use prodcat_storage::{now_ms, Database};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::window::{format_ms, DriftWindow};
use crate::PipelineError;
use prodcat_catalogue::PredictionSource;
use prodcat_platform::{LogMode, Platform, Predictor, ProductToClassify, Requester};

/// Settings of a drift check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftCheckOptions {
    /// Dataset drift when at least this share of the tested features drifted.
    pub drift_share: f64,
    /// Concept drift when the weighted F1 on reviewed products is lower than the model's test F1
    /// by more than this.
    pub concept_margin: f64,
    /// Fewest reviewed predictions in the window to judge concept drift.
    pub min_labelled: usize,
    /// Largest number of window rows profiled (evenly spaced over the window when there are more).
    pub max_rows: usize,
    /// Largest number of window texts embedded for the embedding components, a sample
    /// stratified by predicted category (embedding is the slowest part of a check; the
    /// components of other rows count as missing). The reference side has the same bound.
    pub max_embedded_rows: usize,
}

impl Default for DriftCheckOptions {
    fn default() -> Self {
        Self {
            drift_share: 0.5,
            concept_margin: 0.05,
            min_labelled: 30,
            max_rows: DEFAULT_PROFILE_ROWS,
            max_embedded_rows: prodcat_model::MAX_EMBEDDED_TEXTS,
        }
    }
}

/// A column left out of a comparison, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedColumn {
    pub name: String,
    pub reason: String,
}

/// A stored drift check: the report and what it was computed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftCheck {
    pub id: String,
    pub model_version: String,
    /// `prediction-log` or `files`.
    pub source: String,
    pub window: Option<DriftWindow>,
    pub created_at_ms: i64,
    /// Predictions in the window (before sampling).
    pub window_rows: usize,
    /// Reviewed predictions in the window.
    pub labelled_rows: usize,
    pub skipped_columns: Vec<SkippedColumn>,
    pub report: DriftReport,
    pub json_key: String,
    pub html_key: String,
}

impl DriftCheck {
    /// Whether data or concept drift was found.
    pub fn drift_found(&self) -> bool {
        self.report.dataset_drift || self.concept_drifted()
    }

    pub fn concept_drifted(&self) -> bool {
        self.report
            .concept_drift
            .as_ref()
            .map(|c| c.drifted)
            .unwrap_or(false)
    }

    /// Names of the drifted features.
    pub fn drifted_features(&self) -> Vec<String> {
        self.report
            .columns
            .iter()
            .filter(|c| c.drifted)
            .map(|c| c.name.clone())
            .collect()
    }

    /// A short description of the window.
    pub fn window_text(&self) -> String {
        match &self.window {
            Some(window) => format!(
                "{} to {}",
                format_ms(window.start_ms),
                format_ms(window.end_ms)
            ),
            None => "the given files".to_string(),
        }
    }
}

/// One served prediction as the drift check reads it.
#[derive(Debug, Clone)]
struct LoggedPrediction {
    text: String,
    description_empty: bool,
    image: Option<ImageStats>,
    predicted: Option<u16>,
    confidence: f64,
    label: Option<u16>,
}

/// The stored reference profile of a model.
fn stored_profile(classifier: &ProductClassifier) -> Result<StoredProfile, PipelineError> {
    let Some(json) = &classifier.bundle().reference_profile else {
        return Err(PipelineError::Invalid(format!(
            "model version {} has no reference profile; retrain it to monitor drift",
            classifier.version()
        )));
    };
    serde_json::from_str(json).map_err(|error| {
        PipelineError::Invalid(format!(
            "the reference profile of {} can not be read: {error}",
            classifier.version()
        ))
    })
}

/// Evenly spaced positions: at most `limit` of `0..count`.
fn spread(count: usize, limit: usize) -> Vec<usize> {
    if count <= limit {
        return (0..count).collect();
    }
    (0..limit).map(|i| i * count / limit).collect()
}

async fn embed_some(
    platform: &Platform,
    texts: Vec<String>,
) -> Result<Option<Vec<Vec<f32>>>, PipelineError> {
    let Some(embedder) = platform.embedder()? else {
        return Ok(None);
    };
    if texts.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let embeddings = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder.embed_passages(&refs)
    })
    .await
    .map_err(|error| PipelineError::Invalid(format!("embedding failed: {error}")))?;
    Ok(Some(embeddings))
}

/// Builds the current profile of `rows` the way the reference profile was built.
async fn current_profile(
    platform: &Platform,
    classifier: &ProductClassifier,
    stored: &StoredProfile,
    rows: &[LoggedPrediction],
    options: &DriftCheckOptions,
) -> Result<Profile, PipelineError> {
    let mut embeddings: HashMap<usize, Vec<f32>> = HashMap::new();
    if stored.pca.is_some() && options.max_embedded_rows > 0 {
        let strata: Vec<Option<u16>> = rows.iter().map(|row| row.predicted).collect();
        let chosen = stratified_sample(&strata, options.max_embedded_rows);
        let texts: Vec<String> = chosen
            .iter()
            .map(|&i| embedding_text(&rows[i].text).to_string())
            .collect();
        if let Some(vectors) = embed_some(platform, texts).await? {
            embeddings.extend(chosen.into_iter().zip(vectors));
        }
    }
    let mut builder =
        ProfileBuilder::new(product_schema(PROFILE_COMPONENTS), options.max_rows.max(1))?;
    let text_branch = classifier.bundle().text.as_ref();
    for (index, row) in rows.iter().enumerate() {
        let observation = observation_for(
            ObservationBasis {
                classifier: text_branch,
                pca: stored.pca.as_ref(),
            },
            embeddings.get(&index).map(Vec::as_slice),
            ObservedProduct {
                text: &row.text,
                description_empty: row.description_empty,
                image: row.image,
                predicted: row.predicted,
                confidence: Some(row.confidence),
            },
        );
        builder.push_row(product_row(&observation, PROFILE_COMPONENTS))?;
    }
    Ok(builder.build())
}

/// Compares two profiles column by column, leaving out (with the reason) columns that can not be
/// tested: no values on a side, too few values, or a test that can not run on them.
pub fn compare_profiles(
    reference: &Profile,
    current: &Profile,
    drift_share: f64,
    title: &str,
) -> Result<(DriftReport, Vec<SkippedColumn>), PipelineError> {
    if !(0.0..=1.0).contains(&drift_share) {
        return Err(PipelineError::Invalid(format!(
            "the drift share must be within 0..1 (got {drift_share})"
        )));
    }
    let mut options = product_drift_options();
    options.drift_share = drift_share;
    options.title = title.to_string();
    let mut columns: Vec<ColumnDrift> = Vec::new();
    let mut skipped = Vec::new();
    for reference_column in &reference.columns {
        let name = reference_column.name.clone();
        let Some(current_column) = current.column(&name) else {
            skipped.push(SkippedColumn {
                name,
                reason: "not in the current data".to_string(),
            });
            continue;
        };
        let (reference_values, current_values) =
            (reference_column.values.len(), current_column.values.len());
        if reference_values < 2 || current_values < 2 {
            skipped.push(SkippedColumn {
                name,
                reason: format!(
                    "too few values ({reference_values} in the reference, {current_values} in the current data)"
                ),
            });
            continue;
        }
        match test_column(reference_column, current_column, &options) {
            Ok(column) => columns.push(column),
            Err(error) => skipped.push(SkippedColumn {
                name,
                reason: error.to_string(),
            }),
        }
    }
    let drifted_columns = columns.iter().filter(|c| c.drifted).count();
    let share = if columns.is_empty() {
        0.0
    } else {
        drifted_columns as f64 / columns.len() as f64
    };
    Ok((
        DriftReport {
            title: title.to_string(),
            reference_rows: reference.sampled_rows,
            current_rows: current.sampled_rows,
            dataset_drift: !columns.is_empty() && share >= drift_share,
            columns,
            drifted_columns,
            share_of_drifted_columns: share,
            drift_share,
            concept_drift: None,
        },
        skipped,
    ))
}

/// Reads the predictions a model served in a window (reviewed labels included).
async fn logged_predictions(
    database: &Database,
    model: &ModelVersionId,
    window: &DriftWindow,
) -> Result<Vec<LoggedPrediction>, PipelineError> {
    let rows = prodcat_catalogue::prediction_log::served_predictions(
        database,
        model.as_str(),
        window.start_ms,
        window.end_ms,
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let image = match (
                row.image_width,
                row.image_height,
                row.image_brightness,
                row.image_border_ratio,
            ) {
                (Some(width), Some(height), Some(brightness), Some(border)) => Some(ImageStats {
                    width: u32::try_from(width).unwrap_or(0),
                    height: u32::try_from(height).unwrap_or(0),
                    mean_brightness: brightness,
                    white_border_ratio: border,
                }),
                _ => None,
            };
            LoggedPrediction {
                text: normalize_text(&row.text),
                description_empty: row.description_empty,
                image,
                predicted: u16::try_from(row.predicted_code).ok(),
                confidence: row.confidence,
                label: row.label_code.and_then(|l| u16::try_from(l).ok()),
            }
        })
        .collect())
}

fn reference_f1(classifier: &ProductClassifier) -> Option<f64> {
    classifier
        .bundle()
        .manifest
        .metrics
        .get("weighted_f1")
        .copied()
        .filter(|f1| (0.0..=1.0).contains(f1))
}

/// Adds concept drift from the (predicted, reviewed) pairs when there are enough of them.
fn with_concept(
    report: DriftReport,
    classifier: &ProductClassifier,
    pairs: &[(u16, u16)],
    options: &DriftCheckOptions,
) -> Result<DriftReport, PipelineError> {
    match reference_f1(classifier) {
        Some(reference) if pairs.len() >= options.min_labelled.max(1) => {
            Ok(report.with_concept_drift(concept_drift(reference, pairs, options.concept_margin)?))
        }
        _ => Ok(report),
    }
}

fn new_report_id(model: &str, created: i64) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = format!(
        "{model} {created} {} {}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    format!("dr-{}", &sha256_hex(seed.as_bytes())[..16])
}

/// A short HTML note on what the report covers, placed under its heading.
fn context_note(check: &DriftCheck) -> String {
    let mut note = format!(
        "<p class=\"context\">Model <code>{}</code>; current data: {} ({} predictions, {} reviewed); report <code>{}</code>.",
        check.model_version,
        escape_html(&check.window_text()),
        check.window_rows,
        check.labelled_rows,
        check.id
    );
    if !check.skipped_columns.is_empty() {
        let skipped: Vec<String> = check
            .skipped_columns
            .iter()
            .map(|s| format!("{} ({})", escape_html(&s.name), escape_html(&s.reason)))
            .collect();
        note.push_str(&format!(" Not tested: {}.", skipped.join("; ")));
    }
    note.push_str("</p>\n");
    note
}

/// Writes the JSON and HTML to the object store and the summary row to SQL.
async fn store(platform: &Platform, check: &DriftCheck) -> Result<(), PipelineError> {
    let json = serde_json::to_vec_pretty(check)?;
    let mut html = check.report.to_html();
    if let Some(position) = html.find("</h1>") {
        html.insert_str(
            position + "</h1>".len(),
            &format!("\n{}", context_note(check)),
        );
    }
    platform
        .objects
        .put(&check.json_key, Bytes::from(json))
        .await?;
    platform
        .objects
        .put(&check.html_key, Bytes::from(html))
        .await?;
    let scores: Vec<serde_json::Value> = check
        .report
        .columns
        .iter()
        .map(|c| {
            serde_json::json!({
                "feature": c.name,
                "test": c.test_name,
                "score": if c.score.is_finite() { Some(c.score) } else { None },
                "threshold": c.decision_threshold,
                "drifted": c.drifted,
            })
        })
        .collect();
    let concept = check.report.concept_drift.as_ref();
    sqlx::query(
        "INSERT INTO drift_reports (id, model_version, source, window_start_ms, window_end_ms, \
         created_at_ms, reference_rows, current_rows, dataset_drift, drift_share, drifted_features, \
         tested_features, concept_drift, concept_reference_f1, concept_current_f1, labelled_rows, \
         json_key, html_key, feature_scores) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
         $12, $13, $14, $15, $16, $17, $18, $19)",
    )
    .bind(check.id.clone())
    .bind(check.model_version.clone())
    .bind(check.source.clone())
    .bind(check.window.map(|w| w.start_ms))
    .bind(check.window.map(|w| w.end_ms))
    .bind(check.created_at_ms)
    .bind(check.report.reference_rows as i64)
    .bind(check.report.current_rows as i64)
    .bind(i64::from(check.report.dataset_drift))
    .bind(check.report.share_of_drifted_columns)
    .bind(check.report.drifted_columns as i64)
    .bind(check.report.columns.len() as i64)
    .bind(concept.map(|c| i64::from(c.drifted)))
    .bind(concept.map(|c| c.reference_f1))
    .bind(concept.map(|c| c.current_f1))
    .bind(check.labelled_rows as i64)
    .bind(check.json_key.clone())
    .bind(check.html_key.clone())
    .bind(serde_json::Value::Array(scores).to_string())
    .execute(platform.database.pool())
    .await?;
    Ok(())
}

fn report_keys(id: &str) -> (String, String) {
    (
        format!("drift-reports/{id}/report.json"),
        format!("drift-reports/{id}/report.html"),
    )
}

/// Checks a model (id, prefix, alias) for drift over a window of its prediction log, and stores
/// the report.
pub async fn check_prediction_log(
    platform: &Platform,
    model: &str,
    window: DriftWindow,
    options: &DriftCheckOptions,
) -> Result<DriftCheck, PipelineError> {
    if window.end_ms <= window.start_ms {
        return Err(PipelineError::Invalid(format!(
            "the window ends ({}) before it starts ({})",
            format_ms(window.end_ms),
            format_ms(window.start_ms)
        )));
    }
    let version = prodcat_registry::resolve(&platform.database, model).await?;
    let classifier = platform.classifier_for(&version).await?;
    let stored = stored_profile(&classifier)?;
    let all_rows = logged_predictions(&platform.database, &version.id, &window).await?;
    if all_rows.is_empty() {
        return Err(PipelineError::NoTraffic {
            model: version.id.to_string(),
            window: format!(
                "{} to {}",
                format_ms(window.start_ms),
                format_ms(window.end_ms)
            ),
        });
    }
    let pairs: Vec<(u16, u16)> = all_rows
        .iter()
        .filter_map(|row| Some((row.predicted?, row.label?)))
        .collect();
    let rows: Vec<LoggedPrediction> = spread(all_rows.len(), options.max_rows.max(1))
        .into_iter()
        .map(|i| all_rows[i].clone())
        .collect();
    let current = current_profile(platform, &classifier, &stored, &rows, options).await?;
    let created_at_ms = now_ms();
    let id = new_report_id(version.id.as_str(), created_at_ms);
    let title = format!(
        "Drift report: {} over {} to {}",
        version.id,
        format_ms(window.start_ms),
        format_ms(window.end_ms)
    );
    let reference = stored.profile.clone();
    let drift_share = options.drift_share;
    let (report, skipped_columns) = tokio::task::spawn_blocking(move || {
        compare_profiles(&reference, &current, drift_share, &title)
    })
    .await
    .map_err(|error| PipelineError::Invalid(format!("drift tests failed: {error}")))??;
    let report = with_concept(report, &classifier, &pairs, options)?;
    let (json_key, html_key) = report_keys(&id);
    let check = DriftCheck {
        id,
        model_version: version.id.to_string(),
        source: "prediction-log".to_string(),
        window: Some(window),
        created_at_ms,
        window_rows: all_rows.len(),
        labelled_rows: pairs.len(),
        skipped_columns,
        report,
        json_key,
        html_key,
    };
    store(platform, &check).await?;
    Ok(check)
}

/// One product read from a challenge-format CSV.
struct FileProduct {
    index: String,
    designation: String,
    description: String,
    image: Option<Vec<u8>>,
}

fn read_products(path: &Path, images: Option<&Path>) -> Result<Vec<FileProduct>, PipelineError> {
    let input = |message: String| PipelineError::Input {
        file: path.display().to_string(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|error| input(error.to_string()))?;
    let headers = reader
        .byte_headers()
        .map_err(|error| input(error.to_string()))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h == name.as_bytes());
    let designation = column("designation").ok_or_else(|| {
        input(
            "no designation column (expected ,designation,description,productid,imageid)"
                .to_string(),
        )
    })?;
    let description = column("description");
    let (product, image) = (column("productid"), column("imageid"));
    let mut products = Vec::new();
    for record in reader.byte_records() {
        let record = record.map_err(|error| input(error.to_string()))?;
        let text = |index: Option<usize>| -> String {
            index
                .and_then(|i| record.get(i))
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default()
        };
        let image_bytes = match (images, product, image) {
            (Some(folder), Some(_), Some(_)) => std::fs::read(folder.join(format!(
                "image_{}_product_{}.jpg",
                text(image).trim(),
                text(product).trim()
            )))
            .ok(),
            _ => None,
        };
        products.push(FileProduct {
            index: text(Some(0)).trim().to_string(),
            designation: text(Some(designation)),
            description: text(description),
            image: image_bytes,
        });
    }
    if products.is_empty() {
        return Err(input("no rows".to_string()));
    }
    Ok(products)
}

fn read_labels(path: &Path) -> Result<HashMap<String, u16>, PipelineError> {
    let input = |message: String| PipelineError::Input {
        file: path.display().to_string(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|error| input(error.to_string()))?;
    let headers = reader
        .headers()
        .map_err(|error| input(error.to_string()))?
        .clone();
    let code_column = headers
        .iter()
        .position(|h| h == "prdtypecode")
        .ok_or_else(|| input("no prdtypecode column".to_string()))?;
    let mut labels = HashMap::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|error| input(error.to_string()))?;
        let code = record.get(code_column).unwrap_or("").trim();
        let code = CategoryCode::parse(code)
            .map_err(|error| input(format!("line {}: {error}", line + 2)))?;
        labels.insert(record.get(0).unwrap_or("").trim().to_string(), code.value());
    }
    Ok(labels)
}

/// Runs the model over products (through the predictor, as every prediction is made) and
/// measures them the way the prediction log records them.
async fn predict_products(
    predictor: &Predictor,
    products: Vec<FileProduct>,
) -> Result<Vec<(String, LoggedPrediction)>, PipelineError> {
    let indexes: Vec<String> = products.iter().map(|p| p.index.clone()).collect();
    let descriptions_empty: Vec<bool> = products
        .iter()
        .map(|p| normalize_text(&p.description).is_empty())
        .collect();
    let inputs: Vec<ProductToClassify> = products
        .into_iter()
        .map(|p| ProductToClassify {
            designation: p.designation,
            description: p.description,
            image: p.image.map(bytes::Bytes::from),
            explain: false,
        })
        .collect();
    let predictions = predictor
        .predict_batch(
            inputs,
            &[Requester::new(PredictionSource::Batch)],
            LogMode::Caller,
        )
        .await?;
    Ok(indexes
        .into_iter()
        .zip(descriptions_empty)
        .zip(predictions)
        .filter_map(|((index, description_empty), predicted)| {
            let prediction = predicted.ok()?.prediction;
            Some((
                index,
                LoggedPrediction {
                    text: prediction.normalized_text.clone(),
                    description_empty,
                    image: prediction.image_stats,
                    predicted: Some(prediction.category.value()),
                    confidence: f64::from(prediction.confidence),
                    label: None,
                },
            ))
        })
        .collect())
}

/// Checks drift between two CSV files in the challenge format: the model is run over both (with
/// their images when a folder is given), the reference profile is built from the first the way
/// training builds it, and concept drift is added when labels of the current file are given.
pub async fn check_files(
    platform: &Platform,
    model: &str,
    reference_file: &Path,
    current_file: &Path,
    images: Option<&Path>,
    current_labels: Option<&Path>,
    options: &DriftCheckOptions,
) -> Result<DriftCheck, PipelineError> {
    let version = prodcat_registry::resolve(&platform.database, model).await?;
    let predictor = Predictor::for_reference(platform, version.id.as_str()).await?;
    let classifier = predictor.served()?.classifier.clone();
    let reference_products = read_products(reference_file, images)?;
    let current_products = read_products(current_file, images)?;
    let labels = current_labels.map(read_labels).transpose()?;
    let reference = predict_products(&predictor, reference_products).await?;
    let mut current = predict_products(&predictor, current_products).await?;
    if reference.len() < 2 || current.len() < 2 {
        return Err(PipelineError::Invalid(format!(
            "too few classifiable rows to compare ({} in the reference file, {} in the current file)",
            reference.len(),
            current.len()
        )));
    }
    if let Some(labels) = &labels {
        for (index, row) in &mut current {
            row.label = labels.get(index).copied();
        }
    }
    let reference_rows: Vec<ReferenceRow> = reference
        .iter()
        .map(|(_, row)| ReferenceRow {
            text: row.text.clone(),
            description_empty: row.description_empty,
            image: row.image,
            predicted: row.predicted,
            confidence: Some(row.confidence),
        })
        .collect();
    let embedder = platform.embedder()?;
    let text_branch = classifier.bundle().text.clone();
    let stored_json = tokio::task::spawn_blocking(move || {
        reference_profile(text_branch.as_ref(), embedder.as_deref(), &reference_rows)
    })
    .await
    .map_err(|error| PipelineError::Invalid(format!("reference profile failed: {error}")))??;
    let stored: StoredProfile = serde_json::from_str(&stored_json)?;
    let current_rows: Vec<LoggedPrediction> = current.iter().map(|(_, row)| row.clone()).collect();
    let pairs: Vec<(u16, u16)> = current_rows
        .iter()
        .filter_map(|row| Some((row.predicted?, row.label?)))
        .collect();
    let current_profile =
        current_profile(platform, &classifier, &stored, &current_rows, options).await?;
    let created_at_ms = now_ms();
    let id = new_report_id(version.id.as_str(), created_at_ms);
    let title = format!(
        "Drift report: {} on {} against {}",
        version.id,
        current_file.display(),
        reference_file.display()
    );
    let reference_profile = stored.profile.clone();
    let drift_share = options.drift_share;
    let (report, skipped_columns) = tokio::task::spawn_blocking(move || {
        compare_profiles(&reference_profile, &current_profile, drift_share, &title)
    })
    .await
    .map_err(|error| PipelineError::Invalid(format!("drift tests failed: {error}")))??;
    let report = with_concept(report, &classifier, &pairs, options)?;
    let (json_key, html_key) = report_keys(&id);
    let check = DriftCheck {
        id,
        model_version: version.id.to_string(),
        source: "files".to_string(),
        window: None,
        created_at_ms,
        window_rows: current_rows.len(),
        labelled_rows: pairs.len(),
        skipped_columns,
        report,
        json_key,
        html_key,
    };
    store(platform, &check).await?;
    Ok(check)
}

/// The SQL summary of a stored drift report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftReportSummary {
    pub id: String,
    pub model_version: String,
    pub source: String,
    pub window: Option<DriftWindow>,
    pub created_at_ms: i64,
    pub reference_rows: i64,
    pub current_rows: i64,
    pub dataset_drift: bool,
    /// Share of the tested features that drifted.
    pub drift_share: f64,
    pub drifted_features: i64,
    pub tested_features: i64,
    /// `None` when there were too few reviewed labels to judge.
    pub concept_drift: Option<bool>,
    pub concept_reference_f1: Option<f64>,
    pub concept_current_f1: Option<f64>,
    pub labelled_rows: i64,
    pub json_key: String,
    pub html_key: String,
    /// Per feature: `feature`, `test`, `score`, `threshold`, `drifted`.
    pub feature_scores: serde_json::Value,
}

const SUMMARY_COLUMNS: &str = "id, model_version, source, window_start_ms, window_end_ms, \
    created_at_ms, reference_rows, current_rows, dataset_drift, drift_share, drifted_features, \
    tested_features, concept_drift, concept_reference_f1, concept_current_f1, labelled_rows, \
    json_key, html_key, feature_scores";

fn summary_from_row(row: &sqlx::any::AnyRow) -> Result<DriftReportSummary, PipelineError> {
    let start: Option<i64> = row.try_get("window_start_ms")?;
    let end: Option<i64> = row.try_get("window_end_ms")?;
    let dataset_drift: i64 = row.try_get("dataset_drift")?;
    let concept: Option<i64> = row.try_get("concept_drift")?;
    let scores: String = row.try_get("feature_scores")?;
    Ok(DriftReportSummary {
        id: row.try_get("id")?,
        model_version: row.try_get("model_version")?,
        source: row.try_get("source")?,
        window: match (start, end) {
            (Some(start_ms), Some(end_ms)) => Some(DriftWindow { start_ms, end_ms }),
            _ => None,
        },
        created_at_ms: row.try_get("created_at_ms")?,
        reference_rows: row.try_get("reference_rows")?,
        current_rows: row.try_get("current_rows")?,
        dataset_drift: dataset_drift != 0,
        drift_share: row.try_get("drift_share")?,
        drifted_features: row.try_get("drifted_features")?,
        tested_features: row.try_get("tested_features")?,
        concept_drift: concept.map(|c| c != 0),
        concept_reference_f1: row.try_get("concept_reference_f1")?,
        concept_current_f1: row.try_get("concept_current_f1")?,
        labelled_rows: row.try_get("labelled_rows")?,
        json_key: row.try_get("json_key")?,
        html_key: row.try_get("html_key")?,
        feature_scores: serde_json::from_str(&scores).unwrap_or(serde_json::Value::Null),
    })
}

/// Stored reports, newest first, optionally of one model version.
pub async fn list_drift_reports(
    database: &Database,
    model_version: Option<&str>,
    limit: usize,
) -> Result<Vec<DriftReportSummary>, PipelineError> {
    let rows = match model_version {
        Some(model) => {
            sqlx::query(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM drift_reports WHERE model_version = $1 \
                 ORDER BY created_at_ms DESC, id DESC LIMIT $2"
            ))
            .bind(model.to_string())
            .bind(limit as i64)
            .fetch_all(database.pool())
            .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM drift_reports ORDER BY created_at_ms DESC, id DESC LIMIT $1"
            ))
            .bind(limit as i64)
            .fetch_all(database.pool())
            .await?
        }
    };
    rows.iter().map(summary_from_row).collect()
}

/// A stored report by id (or unique prefix), with its full JSON from the object store.
pub async fn get_drift_report(
    platform: &Platform,
    reference: &str,
) -> Result<DriftCheck, PipelineError> {
    let reference = reference.trim();
    let rows = sqlx::query(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM drift_reports WHERE id = $1 OR id LIKE $2 LIMIT 2"
    ))
    .bind(reference.to_string())
    .bind(format!("{reference}%"))
    .fetch_all(platform.database.pool())
    .await?;
    let summaries: Vec<DriftReportSummary> = rows
        .iter()
        .map(summary_from_row)
        .collect::<Result<_, _>>()?;
    let summary = match summaries.as_slice() {
        [only] if only.id == reference || reference.len() >= 5 => only.clone(),
        _ => {
            if let Some(exact) = summaries.iter().find(|s| s.id == reference) {
                exact.clone()
            } else {
                return Err(PipelineError::Invalid(format!(
                    "drift report {reference:?} does not exist or is ambiguous (see `prodcat drift list`)"
                )));
            }
        }
    };
    let bytes = platform.objects.get(&summary.json_key).await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The HTML page of a stored report.
pub async fn drift_report_html(
    platform: &Platform,
    check: &DriftCheck,
) -> Result<String, PipelineError> {
    let bytes = platform.objects.get(&check.html_key).await?;
    Ok(String::from_utf8_lossy(&bytes).to_string())
}

/// The Prometheus series of the latest drift report, as (series with labels, value):
/// `prodcat_drift_score{model_version="...",feature="..."}` (the test's score: a p-value, a
/// distance or a ROC AUC), `prodcat_drift_detected{...,feature="..."}` (0 or 1),
/// `prodcat_drift_share{model_version="..."}` (share of drifted features),
/// `prodcat_dataset_drift`, `prodcat_concept_drift_weighted_f1`,
/// `prodcat_concept_drift_reference_f1`, `prodcat_concept_drift` (when labels allowed a verdict)
/// and `prodcat_drift_report_timestamp_seconds`. An error is logged and gives no series.
pub async fn latest_drift_gauges(database: &Database) -> Vec<(String, f64)> {
    match try_latest_drift_gauges(database).await {
        Ok(gauges) => gauges,
        Err(error) => {
            tracing::warn!(%error, "drift gauges unavailable");
            Vec::new()
        }
    }
}

fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// [`latest_drift_gauges`] with its error.
pub async fn try_latest_drift_gauges(
    database: &Database,
) -> Result<Vec<(String, f64)>, PipelineError> {
    let Some(latest) = list_drift_reports(database, None, 1)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(Vec::new());
    };
    let model = label_value(&latest.model_version);
    let mut gauges = Vec::new();
    if let serde_json::Value::Array(features) = &latest.feature_scores {
        for feature in features {
            let name = feature
                .get("feature")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let labels = format!(
                "model_version=\"{model}\",feature=\"{}\"",
                label_value(name)
            );
            if let Some(score) = feature.get("score").and_then(|v| v.as_f64()) {
                gauges.push((format!("prodcat_drift_score{{{labels}}}"), score));
            }
            let drifted = feature
                .get("drifted")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            gauges.push((
                format!("prodcat_drift_detected{{{labels}}}"),
                if drifted { 1.0 } else { 0.0 },
            ));
        }
    }
    let labels = format!("model_version=\"{model}\"");
    gauges.push((
        format!("prodcat_drift_share{{{labels}}}"),
        latest.drift_share,
    ));
    gauges.push((
        format!("prodcat_dataset_drift{{{labels}}}"),
        if latest.dataset_drift { 1.0 } else { 0.0 },
    ));
    if let Some(f1) = latest.concept_current_f1 {
        gauges.push((format!("prodcat_concept_drift_weighted_f1{{{labels}}}"), f1));
    }
    if let Some(f1) = latest.concept_reference_f1 {
        gauges.push((
            format!("prodcat_concept_drift_reference_f1{{{labels}}}"),
            f1,
        ));
    }
    if let Some(drifted) = latest.concept_drift {
        gauges.push((
            format!("prodcat_concept_drift{{{labels}}}"),
            if drifted { 1.0 } else { 0.0 },
        ));
    }
    gauges.push((
        format!("prodcat_drift_report_timestamp_seconds{{{labels}}}"),
        latest.created_at_ms as f64 / 1000.0,
    ));
    Ok(gauges)
}
