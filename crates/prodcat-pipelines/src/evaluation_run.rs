//! Evaluation runs: score a model version on a dataset version's split or on any labelled CSV
//! pair (with an optional images folder), and record the run with its metrics and pictures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prodcat_dataset::{load_rows, Split};
use prodcat_domain::{product_text, CategoryCode};
use prodcat_model::{
    evaluate_rows, EvaluationReport, FeatureCache, LabelledProduct, ProductClassifier,
};
use prodcat_registry::{
    fail_run, finish_run, log_metrics, log_params, start_run, store_artifact, NewRun, Run, RunKind,
};

use crate::PipelineError;
use prodcat_platform::Platform;

/// What to evaluate on.
#[derive(Debug, Clone)]
pub enum EvaluationInput {
    /// A split of a dataset version (`latest`, id or prefix).
    Split { dataset: String, split: Split },
    /// A challenge-format CSV pair and optionally its images folder.
    Files {
        texts: PathBuf,
        labels: PathBuf,
        images: Option<PathBuf>,
    },
}

/// A recorded evaluation.
#[derive(Debug, Clone)]
pub struct EvaluationRun {
    pub run: Run,
    pub report: EvaluationReport,
    pub pictures: Vec<(String, String)>,
}

/// The registry metrics of an evaluation: the system's metrics unprefixed, each branch's
/// weighted F1 prefixed, per-class F1 / precision / recall of the system.
pub fn evaluation_metrics(report: &EvaluationReport) -> Vec<(String, i64, f64)> {
    let mut values = Vec::new();
    if let Some(system) = report.system() {
        values.push(("weighted_f1".to_string(), 0, system.weighted_f1));
        values.push(("macro_f1".to_string(), 0, system.macro_f1));
        values.push(("accuracy".to_string(), 0, system.accuracy));
        values.push(("ece".to_string(), 0, system.expected_calibration_error));
        values.push(("automatic_share".to_string(), 0, system.automatic_share));
        values.push((
            "automatic_precision".to_string(),
            0,
            system.automatic_precision,
        ));
        for class in &system.per_class {
            values.push((format!("f1.class.{}", class.code), 0, class.f1));
            values.push((
                format!("precision.class.{}", class.code),
                0,
                class.precision,
            ));
            values.push((format!("recall.class.{}", class.code), 0, class.recall));
        }
    }
    for branch in &report.branches {
        if branch.name != "system" {
            values.push((
                format!("{}.weighted_f1", branch.name),
                0,
                branch.weighted_f1,
            ));
            values.push((
                format!("{}.ece", branch.name),
                0,
                branch.expected_calibration_error,
            ));
        }
    }
    values.push(("data.evaluation_rows".to_string(), 0, report.rows as f64));
    values.push((
        "data.evaluation_rows_with_image".to_string(),
        0,
        report.rows_with_image as f64,
    ));
    values
}

/// Scores `classifier` on a split of a dataset version (image features from the cache).
pub async fn evaluate_on_split(
    platform: &Platform,
    classifier: &ProductClassifier,
    dataset: &str,
    split: Split,
) -> Result<(EvaluationReport, Vec<(String, String)>), PipelineError> {
    let version = prodcat_dataset::resolve_version(&platform.database, dataset).await?;
    let rows: Vec<_> = load_rows(&platform.database, &version.id, Some(split))
        .await?
        .into_iter()
        .filter(|row| row.category.is_some())
        .collect();
    if rows.is_empty() {
        return Err(PipelineError::Invalid(format!(
            "dataset {} has no labelled {split} rows",
            version.id
        )));
    }
    let mut features: HashMap<String, Vec<f32>> = HashMap::new();
    if classifier.uses_images() {
        if let Some(backbone) = classifier.backbone() {
            let mut hashes: Vec<String> =
                rows.iter().filter_map(|r| r.image_hash.clone()).collect();
            hashes.sort();
            hashes.dedup();
            let cache = FeatureCache::new(platform.objects.clone(), backbone.clone());
            let results = cache.features_for(&hashes, &|_| {}).await?;
            for (hash, result) in hashes.into_iter().zip(results) {
                if let Ok(vector) = result {
                    features.insert(hash, vector);
                }
            }
        }
    }
    let texts: Vec<String> = rows
        .iter()
        .map(|row| product_text(&row.designation, &row.description))
        .collect();
    // The text branch's companion features, embedded in batches (and cached) up front.
    let companions = match classifier.text_embedder() {
        Some(embedder) if classifier.text_embedder_needed().is_some() => {
            prodcat_model::companion_vectors(&platform.objects, embedder, &texts, &|_| {}).await?
        }
        _ => Default::default(),
    };
    let products: Vec<LabelledProduct> = rows
        .iter()
        .zip(texts)
        .filter_map(|(row, text)| {
            Some(LabelledProduct {
                text_companion: companions.get(&text).cloned(),
                text,
                image_features: row
                    .image_hash
                    .as_ref()
                    .and_then(|h| features.get(h).cloned()),
                label: row.category?,
            })
        })
        .collect();
    let set = format!("{}:{split}", version.id);
    let classifier = classifier.clone();
    tokio::task::spawn_blocking(move || evaluate_rows(&classifier, &products, &set))
        .await
        .map_err(|error| PipelineError::Invalid(format!("evaluation failed: {error}")))?
        .map_err(PipelineError::from)
}

fn input_error(path: &Path, line: u64, message: impl Into<String>) -> PipelineError {
    PipelineError::Input {
        file: path.display().to_string(),
        message: format!("line {line}: {}", message.into()),
    }
}

fn read_csv(path: &Path) -> Result<(csv::ByteRecord, Vec<csv::ByteRecord>), PipelineError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|error| PipelineError::Input {
            file: path.display().to_string(),
            message: error.to_string(),
        })?;
    let headers = reader
        .byte_headers()
        .map_err(|error| PipelineError::Input {
            file: path.display().to_string(),
            message: error.to_string(),
        })?
        .clone();
    let mut records = Vec::new();
    for record in reader.byte_records() {
        let record = record.map_err(|error| PipelineError::Input {
            file: path.display().to_string(),
            message: error.to_string(),
        })?;
        records.push(record);
    }
    Ok((headers, records))
}

fn field<'a>(
    path: &Path,
    record: &'a csv::ByteRecord,
    index: usize,
    name: &str,
) -> Result<&'a str, PipelineError> {
    let line = record.position().map(|p| p.line()).unwrap_or(0);
    let raw = record
        .get(index)
        .ok_or_else(|| input_error(path, line, format!("the {name} field is missing")))?;
    std::str::from_utf8(raw).map_err(|error| {
        input_error(
            path,
            line,
            format!(
                "the {name} field is not valid UTF-8 (invalid byte at offset {})",
                error.valid_up_to()
            ),
        )
    })
}

/// Scores `classifier` on a labelled CSV pair in the challenge format.
pub async fn evaluate_on_files(
    classifier: &ProductClassifier,
    texts: &Path,
    labels: &Path,
    images: Option<&Path>,
) -> Result<(EvaluationReport, Vec<(String, String)>), PipelineError> {
    let (label_headers, label_records) = read_csv(labels)?;
    let code_column = label_headers
        .iter()
        .position(|h| h == b"prdtypecode")
        .ok_or_else(|| input_error(labels, 1, "no prdtypecode column"))?;
    let mut codes: HashMap<String, CategoryCode> = HashMap::new();
    for record in &label_records {
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let index = field(labels, record, 0, "index")?.trim().to_string();
        let code = field(labels, record, code_column, "prdtypecode")?;
        let code =
            CategoryCode::parse(code).map_err(|e| input_error(labels, line, e.to_string()))?;
        codes.insert(index, code);
    }
    let (headers, records) = read_csv(texts)?;
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name.as_bytes())
            .ok_or_else(|| input_error(texts, 1, format!("no {name} column")))
    };
    let (designation, description) = (column("designation")?, column("description")?);
    let (product, image) = (column("productid")?, column("imageid")?);
    let mut products = Vec::new();
    let mut image_bytes = Vec::new();
    for record in &records {
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let index = field(texts, record, 0, "index")?.trim().to_string();
        let label = *codes
            .get(&index)
            .ok_or_else(|| input_error(texts, line, format!("no label for row index {index}")))?;
        let text = product_text(
            field(texts, record, designation, "designation")?,
            field(texts, record, description, "description")?,
        );
        let bytes = match images {
            Some(folder) => {
                let name = format!(
                    "image_{}_product_{}.jpg",
                    field(texts, record, image, "imageid")?.trim(),
                    field(texts, record, product, "productid")?.trim()
                );
                std::fs::read(folder.join(name)).ok()
            }
            None => None,
        };
        image_bytes.push(bytes);
        products.push(LabelledProduct {
            text,
            image_features: None,
            text_companion: None,
            label,
        });
    }
    if products.is_empty() {
        return Err(input_error(texts, 1, "no rows"));
    }
    if let (true, Some(backbone)) = (classifier.uses_images(), classifier.backbone()) {
        let present: Vec<(usize, Vec<u8>)> = image_bytes
            .into_iter()
            .enumerate()
            .filter_map(|(i, b)| b.map(|b| (i, b)))
            .collect();
        let backbone = backbone.clone();
        let encoded: Vec<Vec<u8>> = present.iter().map(|(_, b)| b.clone()).collect();
        let computed = tokio::task::spawn_blocking(move || backbone.features_batch(&encoded))
            .await
            .map_err(|error| {
                PipelineError::Invalid(format!("feature extraction failed: {error}"))
            })?;
        for ((position, _), features) in present.iter().zip(computed) {
            products[*position].image_features = features.ok();
        }
    }
    let set = format!("file:{}", texts.display());
    let classifier = classifier.clone();
    tokio::task::spawn_blocking(move || evaluate_rows(&classifier, &products, &set))
        .await
        .map_err(|error| PipelineError::Invalid(format!("evaluation failed: {error}")))?
        .map_err(PipelineError::from)
}

/// Evaluates a model reference on an input and records an evaluation run.
pub async fn record_evaluation_run(
    platform: &Platform,
    model: &str,
    input: &EvaluationInput,
) -> Result<EvaluationRun, PipelineError> {
    let version = prodcat_registry::resolve(&platform.database, model).await?;
    let classifier = platform.classifier_for(&version).await?;
    let mut new_run = NewRun::new(
        RunKind::Evaluate,
        &format!("evaluate {}", version.id),
        platform.actor(),
    );
    new_run.model_version = Some(version.id.clone());
    if let EvaluationInput::Split { dataset, .. } = input {
        new_run.dataset_version = Some(
            prodcat_dataset::resolve_version(&platform.database, dataset)
                .await?
                .id,
        );
    }
    let run = start_run(&platform.database, &new_run).await?;
    let result = async {
        let (report, pictures) = match input {
            EvaluationInput::Split { dataset, split } => {
                evaluate_on_split(platform, &classifier, dataset, *split).await?
            }
            EvaluationInput::Files {
                texts,
                labels,
                images,
            } => evaluate_on_files(&classifier, texts, labels, images.as_deref()).await?,
        };
        log_params(
            &platform.database,
            &run.id,
            [("evaluationSet".to_string(), report.evaluation_set.clone())],
        )
        .await?;
        log_metrics(&platform.database, &run.id, evaluation_metrics(&report)).await?;
        store_artifact(
            &platform.database,
            &platform.objects,
            &run.id,
            "evaluation.json",
            Bytes::from(serde_json::to_vec_pretty(&report)?),
            "application/json",
        )
        .await?;
        let mut pictures = pictures;
        if let Some(svg) = report.confusion_svg("system") {
            pictures.insert(0, ("confusion-system.svg".to_string(), svg));
        }
        for (name, svg) in &pictures {
            store_artifact(
                &platform.database,
                &platform.objects,
                &run.id,
                name,
                Bytes::from(svg.clone()),
                "image/svg+xml",
            )
            .await?;
        }
        Ok::<_, PipelineError>((report, pictures))
    }
    .await;
    match result {
        Ok((report, pictures)) => Ok(EvaluationRun {
            run: finish_run(&platform.database, &run.id).await?,
            report,
            pictures,
        }),
        Err(error) => {
            let _ = fail_run(&platform.database, &run.id, &error.to_string()).await;
            Err(error)
        }
    }
}
