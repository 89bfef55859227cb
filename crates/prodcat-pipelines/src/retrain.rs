//! The retrain pipeline: snapshot a dataset version from the previous one plus the labels
//! reviewers gave and new imports, train a challenger with the champion's parameters, evaluate
//! champion and challenger on the same held-out set (the new version's test split), promote by
//! policy, and notify. Every step is recorded; each one is idempotent so a resumed run is safe
//! (versions are content-addressed, an identical training gives the identical model version, a
//! promotion that already happened is recognised).

use prodcat_dataset::{derive_version, DeriveOptions, Split};
use prodcat_model::{BranchSelection, BundleManifest, TrainOptions};
use prodcat_registry::{
    promote, set_alias, AliasMove, PromotionOutcome, PromotionPolicy, PromotionRequest,
    RegistryError, CHALLENGER, CHAMPION,
};
use prodcat_text_model::TextClassifierOptions;
use prodcat_vision::{HeadKind, HeadTrainingOptions};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::evaluation_run::{record_evaluation_run, EvaluationInput};
use crate::notify::{Delivery, Notification};
use crate::pipeline_run::{PipelineExecution, RetryPolicy};
use prodcat_platform::Platform;

use crate::notify::Notifier;
use crate::rescore::PlatformRescorer;
use crate::training_run::{run_training, TrainingRequest};
use crate::PipelineError;

/// Parameters of a retrain run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RetrainParameters {
    /// Promote the challenger even when the policy refuses (recorded as a forced move).
    pub force_promote: bool,
    /// Train a challenger even when no new labelled rows arrived since the last snapshot.
    pub train_without_new_data: bool,
    /// The promotion policy's thresholds.
    pub policy: PromotionPolicy,
    /// Why the retraining runs (a drift report id, "manual"), kept in the alias history.
    pub reason: String,
}

/// Output of the snapshot step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotOutput {
    pub champion: String,
    pub parent: String,
    pub dataset: String,
    pub created: bool,
    pub new_rows: usize,
    pub reviewed_added: usize,
    pub reviewed_relabelled: usize,
    pub imported_rows: usize,
    pub decisions_marked: usize,
}

/// Output of the train-challenger step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengerOutput {
    pub version: String,
    pub training_run: String,
    /// False when an identical version existed already.
    pub created: bool,
    /// Weighted F1 on the new version's test split, from training.
    pub test_weighted_f1: Option<f64>,
}

/// Output of the evaluate step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationOutput {
    pub evaluation_set: String,
    pub champion_f1: f64,
    pub challenger_f1: f64,
    pub champion_run: String,
    pub challenger_run: String,
}

/// Output of the promote step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotionOutput {
    pub promoted: bool,
    /// `promoted`, `forced`, `refused`, `already-champion`, `first-version`.
    pub outcome: String,
    pub reasons: Vec<String>,
    pub champion_after: String,
}

/// What a retrain run produced (the run's output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrainOutput {
    pub champion_before: String,
    pub champion_after: String,
    pub dataset: String,
    pub new_rows: usize,
    pub challenger: Option<String>,
    pub evaluation_set: Option<String>,
    pub champion_f1: Option<f64>,
    pub challenger_f1: Option<f64>,
    pub promoted: bool,
    /// Why no challenger was trained, when none was.
    pub skipped: Option<String>,
    pub reasons: Vec<String>,
    pub notification: Option<Delivery>,
    /// Numbers recorded as the registry run's metrics.
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

fn head_options(value: &serde_json::Value) -> HeadTrainingOptions {
    let mut options = HeadTrainingOptions::default();
    let number = |key: &str| value.get(key).and_then(|v| v.as_f64());
    if let Some(kind) = value.get("kind").and_then(|v| v.as_str()) {
        if kind == "logistic-regression" {
            options.kind = HeadKind::LogisticRegression;
        } else if let Some(units) = kind
            .strip_prefix("mlp-")
            .and_then(|u| u.parse::<usize>().ok())
        {
            options.kind = HeadKind::Mlp {
                hidden_units: units,
            };
        }
    }
    if let Some(v) = number("learningRate") {
        options.learning_rate = v as f32;
    }
    if let Some(v) = number("batchSize") {
        options.batch_size = v as usize;
    }
    if let Some(v) = number("maxEpochs") {
        options.max_epochs = v as usize;
    }
    if let Some(v) = number("patience") {
        options.patience = v as usize;
    }
    if let Some(v) = number("l2Penalty") {
        options.l2_penalty = v as f32;
    }
    if let Some(v) = number("dropout") {
        options.dropout = v as f32;
    }
    if let Some(v) = value.get("balancedClassWeights").and_then(|v| v.as_bool()) {
        options.balanced_class_weights = v;
    }
    if let Some(v) = value.get("seed").and_then(|v| v.as_u64()) {
        options.seed = v;
    }
    options
}

/// The training options a model version was trained with, read back from its manifest.
pub fn training_options_from_manifest(
    manifest: &BundleManifest,
) -> Result<TrainOptions, PipelineError> {
    let parameters = &manifest.parameters;
    let mut options = TrainOptions::default();
    if let Some(branches) = parameters.get("branches").and_then(|v| v.as_str()) {
        options.branches = BranchSelection::parse(branches).ok_or_else(|| {
            PipelineError::Invalid(format!(
                "model {}: unknown branches {branches:?} in its parameters",
                manifest.model_version
            ))
        })?;
    }
    if let Some(precision) = parameters.get("targetPrecision").and_then(|v| v.as_f64()) {
        options.target_precision = precision;
    }
    if let Some(text) = parameters.get("text") {
        options.text =
            serde_json::from_value::<TextClassifierOptions>(text.clone()).map_err(|error| {
                PipelineError::Invalid(format!(
                    "model {}: its text parameters can not be read: {error}",
                    manifest.model_version
                ))
            })?;
    }
    // The challenger takes the sentence embedding when the champion did (its scale is chosen
    // again on the new training rows).
    options.text.companion = None;
    options.text_embeddings = parameters
        .get("textEmbeddings")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if let Some(head) = parameters.get("imageHead") {
        options.head = head_options(head);
    }
    // The challenger sees photos through the champion's backbone.
    if let Some(choice) = manifest
        .image_backbone
        .as_deref()
        .and_then(prodcat_vision::BackboneChoice::from_identifier)
    {
        options.image_backbone = choice;
    }
    Ok(options)
}

/// The dataset version a retraining derives from: the newest of the champion's dataset version
/// and the versions earlier retrainings derived (labels folded into a challenger that was not
/// promoted are not lost).
async fn snapshot_parent(
    platform: &Platform,
    champion_dataset: &str,
) -> Result<String, PipelineError> {
    let champion = prodcat_dataset::resolve_version(&platform.database, champion_dataset).await?;
    let newest_derived = sqlx::query(
        "SELECT id, created_at_ms FROM dataset_versions WHERE parent_id IS NOT NULL \
         ORDER BY created_at_ms DESC, id DESC LIMIT 1",
    )
    .fetch_optional(platform.database.pool())
    .await?;
    if let Some(row) = newest_derived {
        let created: i64 = row.try_get("created_at_ms")?;
        if created > champion.created_at_ms {
            return Ok(row.try_get("id")?);
        }
    }
    Ok(champion.id.to_string())
}

async fn snapshot(platform: &Platform, run_id: &str) -> Result<SnapshotOutput, PipelineError> {
    let champion = prodcat_registry::resolve(&platform.database, CHAMPION)
        .await
        .map_err(|error| match error {
            RegistryError::UnknownModelReference { .. } => PipelineError::Invalid(
                "there is no champion to retrain; train a model and promote it first".to_string(),
            ),
            other => other.into(),
        })?;
    let classifier = platform.classifier_for(&champion).await?;
    let champion_dataset = classifier.bundle().manifest.dataset_version.clone();
    let parent = snapshot_parent(platform, &champion_dataset).await?;
    let note = format!("retrain pipeline run {run_id}");
    // An earlier attempt of this run may have created the version and marked the decisions.
    let earlier: Option<String> = sqlx::query_scalar(
        "SELECT id FROM dataset_versions WHERE parent_id = $1 AND note = $2 LIMIT 1",
    )
    .bind(parent.clone())
    .bind(note.clone())
    .fetch_optional(platform.database.pool())
    .await?;
    if let Some(dataset) = earlier {
        let marked =
            prodcat_catalogue::products::reviews_used_by(&platform.database, &dataset).await?;
        let diff = prodcat_dataset::diff_versions(&platform.database, &parent, &dataset).await?;
        let new_rows = (diff.added + diff.relabelled + diff.content_changed) as usize;
        return Ok(SnapshotOutput {
            champion: champion.id.to_string(),
            parent,
            dataset,
            created: false,
            new_rows,
            reviewed_added: 0,
            reviewed_relabelled: 0,
            imported_rows: 0,
            decisions_marked: marked as usize,
        });
    }
    // The catalogue owns the review decisions: it gives the labels, and marks them used by the
    // version once that exists (the parent itself when they only confirmed it).
    let (reviewed, decision_ids) =
        prodcat_catalogue::products::unused_review_labels(&platform.database).await?;
    let outcome = derive_version(
        &platform.database,
        &platform.objects,
        &parent,
        &DeriveOptions {
            note,
            reviewed,
            ..DeriveOptions::default()
        },
    )
    .await?;
    let decisions_marked = prodcat_catalogue::products::mark_reviews_used(
        &platform.database,
        &decision_ids,
        outcome.version.id.as_str(),
    )
    .await?;
    Ok(SnapshotOutput {
        champion: champion.id.to_string(),
        parent,
        dataset: outcome.version.id.to_string(),
        created: outcome.created,
        new_rows: outcome.new_rows(),
        reviewed_added: outcome.reviewed_added,
        reviewed_relabelled: outcome.reviewed_relabelled,
        imported_rows: outcome.imported_rows,
        decisions_marked,
    })
}

async fn train_challenger(
    platform: &Platform,
    run_id: &str,
    snapshot: &SnapshotOutput,
) -> Result<ChallengerOutput, PipelineError> {
    let champion = prodcat_registry::resolve(&platform.database, &snapshot.champion).await?;
    let classifier = platform.classifier_for(&champion).await?;
    let options = training_options_from_manifest(&classifier.bundle().manifest)?;
    let result = run_training(
        platform,
        &TrainingRequest {
            dataset: snapshot.dataset.clone(),
            options,
            name: format!("retrain challenger (pipeline run {run_id})"),
        },
        &(),
    )
    .await?;
    if result.version.id.to_string() != snapshot.champion {
        let moved = set_alias(
            &platform.database,
            &AliasMove {
                alias: CHALLENGER.to_string(),
                version: result.version.id.clone(),
                actor: "pipeline-retrain".to_string(),
                reason: format!("trained by pipeline run {run_id} on {}", snapshot.dataset),
                forced: false,
                decision: None,
            },
        )
        .await;
        match moved {
            Ok(_) | Err(RegistryError::AliasUnchanged { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(ChallengerOutput {
        version: result.version.id.to_string(),
        training_run: result.run.id.to_string(),
        created: result.created,
        test_weighted_f1: result.outcome.evaluation.system().map(|s| s.weighted_f1),
    })
}

async fn evaluate_both(
    platform: &Platform,
    snapshot: &SnapshotOutput,
    challenger: &ChallengerOutput,
) -> Result<EvaluationOutput, PipelineError> {
    let input = EvaluationInput::Split {
        dataset: snapshot.dataset.clone(),
        split: Split::Test,
    };
    let champion = record_evaluation_run(platform, &snapshot.champion, &input).await?;
    let challenger_run = record_evaluation_run(platform, &challenger.version, &input).await?;
    let f1 = |report: &prodcat_model::EvaluationReport| {
        report.system().map(|s| s.weighted_f1).unwrap_or(0.0)
    };
    Ok(EvaluationOutput {
        evaluation_set: format!("{}:{}", snapshot.dataset, Split::Test),
        champion_f1: f1(&champion.report),
        challenger_f1: f1(&challenger_run.report),
        champion_run: champion.run.id.to_string(),
        challenger_run: challenger_run.run.id.to_string(),
    })
}

async fn promote_challenger(
    platform: &Platform,
    run_id: &str,
    parameters: &RetrainParameters,
    challenger: &ChallengerOutput,
    evaluation: &EvaluationOutput,
) -> Result<PromotionOutput, PipelineError> {
    let mut reason = format!(
        "retrain pipeline run {run_id}: weighted F1 {:.4} vs {:.4} on {}",
        evaluation.challenger_f1, evaluation.champion_f1, evaluation.evaluation_set
    );
    if !parameters.reason.trim().is_empty() {
        reason.push_str(&format!("; {}", parameters.reason.trim()));
    }
    let request = PromotionRequest {
        alias: CHAMPION.to_string(),
        version: challenger.version.clone(),
        actor: "pipeline-retrain".to_string(),
        reason,
        force: parameters.force_promote,
        evaluation_set: Some(evaluation.evaluation_set.clone()),
        policy: parameters.policy,
    };
    let rescorer = PlatformRescorer { platform };
    let outcome = match promote(&platform.database, &request, &rescorer).await {
        Ok(outcome) => outcome,
        Err(RegistryError::AlreadyPromoted { version, .. }) => {
            // An earlier attempt of this step promoted it.
            return Ok(PromotionOutput {
                promoted: true,
                outcome: "already-champion".to_string(),
                reasons: vec![format!("{version} is already the champion")],
                champion_after: version,
            });
        }
        Err(error) => return Err(error.into()),
    };
    let reasons = outcome
        .decision()
        .map(|d| d.reasons.clone())
        .unwrap_or_default();
    let kind = match &outcome {
        PromotionOutcome::FirstVersion { .. } => "first-version",
        PromotionOutcome::Promoted { .. } => "promoted",
        PromotionOutcome::Forced { .. } => "forced",
        PromotionOutcome::Refused { .. } => "refused",
    };
    let champion_after = prodcat_registry::resolve(&platform.database, CHAMPION)
        .await?
        .id
        .to_string();
    Ok(PromotionOutput {
        promoted: outcome.moved(),
        outcome: kind.to_string(),
        reasons,
        champion_after,
    })
}

fn metrics(output: &RetrainOutput) -> serde_json::Map<String, serde_json::Value> {
    let mut metrics = serde_json::Map::new();
    metrics.insert("new_rows".into(), (output.new_rows as f64).into());
    metrics.insert(
        "promoted".into(),
        (if output.promoted { 1.0 } else { 0.0 }).into(),
    );
    if let Some(f1) = output.champion_f1 {
        metrics.insert("champion_weighted_f1".into(), f1.into());
    }
    if let Some(f1) = output.challenger_f1 {
        metrics.insert("challenger_weighted_f1".into(), f1.into());
    }
    metrics
}

/// Runs the retrain pipeline's steps on `execution`; returns the run's output.
pub async fn run_retrain(
    platform: &Platform,
    execution: &mut PipelineExecution,
    parameters: &RetrainParameters,
) -> Result<serde_json::Value, PipelineError> {
    let run_id = execution.id().to_string();
    let snapshot_output: SnapshotOutput = execution
        .step("snapshot", |_| snapshot(platform, &run_id))
        .await?;
    let mut output = RetrainOutput {
        champion_before: snapshot_output.champion.clone(),
        champion_after: snapshot_output.champion.clone(),
        dataset: snapshot_output.dataset.clone(),
        new_rows: snapshot_output.new_rows,
        challenger: None,
        evaluation_set: None,
        champion_f1: None,
        challenger_f1: None,
        promoted: false,
        skipped: None,
        reasons: Vec::new(),
        notification: None,
        metrics: serde_json::Map::new(),
    };
    if snapshot_output.new_rows == 0 && !parameters.train_without_new_data {
        output.skipped = Some(format!(
            "no new labelled data since dataset version {}; nothing to retrain",
            snapshot_output.parent
        ));
        output
            .reasons
            .push(output.skipped.clone().unwrap_or_default());
    } else {
        let challenger: ChallengerOutput = execution
            .step("train-challenger", |_| {
                train_challenger(platform, &run_id, &snapshot_output)
            })
            .await?;
        output.challenger = Some(challenger.version.clone());
        if challenger.version == snapshot_output.champion {
            output.skipped = Some(
                "the challenger is identical to the champion (same data, same parameters)"
                    .to_string(),
            );
            output
                .reasons
                .push(output.skipped.clone().unwrap_or_default());
        } else {
            let evaluation: EvaluationOutput = execution
                .step("evaluate", |_| {
                    evaluate_both(platform, &snapshot_output, &challenger)
                })
                .await?;
            output.evaluation_set = Some(evaluation.evaluation_set.clone());
            output.champion_f1 = Some(evaluation.champion_f1);
            output.challenger_f1 = Some(evaluation.challenger_f1);
            let promotion: PromotionOutput = execution
                .step("promote", |_| {
                    promote_challenger(platform, &run_id, parameters, &challenger, &evaluation)
                })
                .await?;
            output.promoted = promotion.promoted;
            output.champion_after = promotion.champion_after.clone();
            output.reasons = promotion.reasons.clone();
            if promotion.reasons.is_empty() {
                output
                    .reasons
                    .push(format!("promotion: {}", promotion.outcome));
            }
        }
    }
    let notification = Notification::RetrainingEnded {
        pipeline_run: run_id.clone(),
        dataset_version: output.dataset.clone(),
        new_rows: output.new_rows,
        champion: output.champion_before.clone(),
        challenger: output.challenger.clone(),
        evaluation_set: output.evaluation_set.clone(),
        champion_f1: output.champion_f1,
        challenger_f1: output.challenger_f1,
        promoted: output.promoted,
        reasons: output.reasons.clone(),
    };
    let notifier = Notifier::for_platform(platform);
    let delivery: Delivery = execution
        .step_with("notify", RetryPolicy::once(), |_| {
            let notifier = notifier.clone();
            let notification = notification.clone();
            let run_id = run_id.clone();
            async move {
                Ok(notifier
                    .notify(&platform.database, &notification, Some(&run_id))
                    .await)
            }
        })
        .await?;
    output.notification = Some(delivery);
    output.metrics = metrics(&output);
    Ok(serde_json::to_value(&output)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prodcat_vision::{BackboneChoice, BackboneKind};

    fn manifest(image_backbone: Option<&str>) -> BundleManifest {
        BundleManifest {
            format_version: 2,
            model_version: "mv-test".to_string(),
            label_set: vec![10, 40],
            dataset_version: "ds-test".to_string(),
            code_version: "test".to_string(),
            branches: vec!["text".to_string(), "image".to_string()],
            parameters: std::collections::BTreeMap::new(),
            metrics: std::collections::BTreeMap::new(),
            image_backbone: image_backbone.map(str::to_string),
            files: Vec::new(),
        }
    }

    #[test]
    fn a_challenger_sees_photos_through_the_champions_backbone() {
        let options =
            training_options_from_manifest(&manifest(Some("efficientnet-lite1-flip-4c409c45acee")))
                .unwrap();
        assert_eq!(
            options.image_backbone,
            BackboneChoice::new(BackboneKind::EfficientNetLite1, true)
        );
        let options =
            training_options_from_manifest(&manifest(Some("mobilenet-v2-a9ecad95f7d4"))).unwrap();
        assert_eq!(options.image_backbone, BackboneChoice::default());
        // Two backbones side by side stay two.
        let options = training_options_from_manifest(&manifest(Some(
            "mobilenet-v2-a9ecad95f7d4+efficientnet-lite2-4c409c45acee",
        )))
        .unwrap();
        assert_eq!(
            options.image_backbone,
            BackboneChoice::default().with_appended(BackboneKind::EfficientNetLite2)
        );
        // A text-only champion: the default backbone.
        let options = training_options_from_manifest(&manifest(None)).unwrap();
        assert_eq!(options.image_backbone, BackboneChoice::default());
    }
}
