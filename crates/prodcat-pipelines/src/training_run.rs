//! A training run: train a model version on a dataset version and record everything in the
//! registry (parameters, metrics and curves, pictures and reports, the version itself).

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use prodcat_model::{TrainOptions, Trainer, TrainingOutcome, TrainingProgress, TrainingResources};
use prodcat_registry::{
    fail_run, finish_run, log_metrics, log_params, register_version, start_run, store_artifact,
    ModelVersion, NewModelVersion, NewRun, Run, RunKind,
};

use crate::evaluation_run::evaluation_metrics;
use crate::PipelineError;
use prodcat_platform::Platform;

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainingRequest {
    /// Dataset version reference (`latest`, an id or a unique prefix).
    pub dataset: String,
    pub options: TrainOptions,
    /// Human name of the run.
    pub name: String,
}

/// What a training run produced.
#[derive(Debug, Clone)]
pub struct TrainingRunResult {
    pub run: Run,
    pub version: ModelVersion,
    /// False when an identical version existed already (bit-identical retraining).
    pub created: bool,
    pub outcome: TrainingOutcome,
}

fn flatten_parameters(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten_parameters(&name, inner, out);
            }
        }
        serde_json::Value::String(text) => {
            out.insert(prefix.to_string(), text.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Cross-validates the training of `request` on its dataset version with `folds` folds (the
/// training command's own phases on every fold; nothing is registered or written).
pub async fn cross_validate_training(
    platform: &Platform,
    request: &TrainingRequest,
    folds: usize,
    progress: &dyn TrainingProgress,
) -> Result<prodcat_model::CrossValidation, PipelineError> {
    let dataset = prodcat_dataset::resolve_version(&platform.database, &request.dataset).await?;
    let wants_image = !matches!(
        request.options.branches,
        prodcat_model::BranchSelection::Text
    );
    let backbone = if wants_image {
        platform.backbone_for(request.options.image_backbone)?
    } else {
        None
    };
    // The sentence embedder only when the text branch takes it (the cross-validation writes
    // no drift profile).
    let embedder = if request.options.text_embeddings {
        platform.embedder()?
    } else {
        None
    };
    Ok(Trainer::new(
        TrainingResources {
            database: &platform.database,
            objects: &platform.objects,
            backbone: backbone.as_ref(),
            embedder: embedder.as_ref(),
        },
        &request.options,
    )
    .with_progress(progress)
    .cross_validate(&dataset.id, folds)
    .await?)
}

/// Trains and records. A failure marks the run failed with the error, then returns it.
pub async fn run_training(
    platform: &Platform,
    request: &TrainingRequest,
    progress: &dyn TrainingProgress,
) -> Result<TrainingRunResult, PipelineError> {
    let dataset = prodcat_dataset::resolve_version(&platform.database, &request.dataset).await?;
    let mut new_run = NewRun::new(RunKind::Train, &request.name, platform.actor());
    new_run.dataset_version = Some(dataset.id.clone());
    let mut options = request.options.clone();
    options.code_version = new_run.code_version.clone();
    let run = start_run(&platform.database, &new_run).await?;
    let result = train_and_record(platform, &run, &dataset.id, &options, progress).await;
    match result {
        Ok((version, created, outcome)) => {
            let run = finish_run(&platform.database, &run.id).await?;
            Ok(TrainingRunResult {
                run,
                version,
                created,
                outcome,
            })
        }
        Err(error) => {
            let _ = fail_run(&platform.database, &run.id, &error.to_string()).await;
            Err(error)
        }
    }
}

async fn train_and_record(
    platform: &Platform,
    run: &Run,
    dataset: &prodcat_domain::DatasetVersionId,
    options: &TrainOptions,
    progress: &dyn TrainingProgress,
) -> Result<(ModelVersion, bool, TrainingOutcome), PipelineError> {
    let started = Instant::now();
    let wants_image = !matches!(options.branches, prodcat_model::BranchSelection::Text);
    let backbone = if wants_image {
        platform.backbone_for(options.image_backbone)?
    } else {
        None
    };
    let embedder = platform.embedder()?;
    let outcome = Trainer::new(
        TrainingResources {
            database: &platform.database,
            objects: &platform.objects,
            backbone: backbone.as_ref(),
            embedder: embedder.as_ref(),
        },
        options,
    )
    .with_progress(progress)
    .train(dataset)
    .await?;
    let manifest = &outcome.bundle.manifest;
    let mut parameters = BTreeMap::new();
    flatten_parameters(
        "",
        &serde_json::to_value(&manifest.parameters)?,
        &mut parameters,
    );
    if let Some(backbone) = &manifest.image_backbone {
        parameters.insert("imageBackbone".to_string(), backbone.clone());
    }
    log_params(&platform.database, &run.id, parameters).await?;
    let mut values: Vec<(String, i64, f64)> = evaluation_metrics(&outcome.evaluation);
    for (key, value) in &outcome.metrics {
        values.push((key.clone(), 0, *value));
    }
    for (key, step, value) in &outcome.curves {
        let key = match key.as_str() {
            "image.train_loss" => "epoch.image.train_loss".to_string(),
            "image.validation_loss" => "epoch.image.validation_loss".to_string(),
            other => other.to_string(),
        };
        values.push((key, *step, *value));
    }
    for (phase, seconds) in &outcome.timings {
        values.push((format!("timing.{phase}_seconds"), 0, *seconds));
    }
    values.push((
        "timing.total_seconds".to_string(),
        0,
        started.elapsed().as_secs_f64(),
    ));
    values.retain(|(_, _, value)| value.is_finite());
    log_metrics(&platform.database, &run.id, values).await?;
    store_artifact(
        &platform.database,
        &platform.objects,
        &run.id,
        "evaluation.json",
        Bytes::from(serde_json::to_vec_pretty(&outcome.evaluation)?),
        "application/json",
    )
    .await?;
    for (name, svg) in &outcome.pictures {
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
    let version_id = outcome.bundle.version()?;
    let (version, created) = register_version(
        &platform.database,
        &NewModelVersion {
            id: version_id.clone(),
            run_id: Some(run.id.clone()),
            dataset_version: Some(dataset.clone()),
            manifest_json: serde_json::to_string(manifest)?,
            object_prefix: format!("models/{version_id}"),
            summary_metrics: manifest.metrics.clone(),
            created_by: run.created_by.clone(),
            note: run.name.clone(),
        },
    )
    .await?;
    Ok((version, created, outcome))
}
