//! Re-scoring for promotions: the registry asks, this answers by loading both models and scoring
//! them now on the same split, so a champion is never compared with an old number.

use std::collections::BTreeMap;

use prodcat_dataset::Split;
use prodcat_registry::{EvaluationSummary, ModelVersion, RescoreError, Rescorer, ScoreFuture};

use crate::evaluation_run::evaluate_on_split;
use crate::PipelineError;
use prodcat_platform::Platform;

/// A [`Rescorer`] over the platform's models and datasets.
pub struct PlatformRescorer<'a> {
    pub platform: &'a Platform,
}

fn parse_set(evaluation_set: &str) -> Result<(String, Split), PipelineError> {
    let Some((dataset, split)) = evaluation_set.split_once(':') else {
        return Err(PipelineError::Invalid(format!(
            "evaluation set {evaluation_set:?} is not of the form <dataset version>:<split>"
        )));
    };
    match Split::parse(split) {
        Some(split) => Ok((dataset.to_string(), split)),
        None => Err(PipelineError::Invalid(format!(
            "unknown split {split:?} in {evaluation_set:?}"
        ))),
    }
}

async fn score(
    platform: &Platform,
    version: ModelVersion,
    evaluation_set: String,
) -> Result<EvaluationSummary, PipelineError> {
    let (dataset, split) = parse_set(&evaluation_set)?;
    let classifier = platform.classifier_for(&version).await?;
    let (report, _) = evaluate_on_split(platform, &classifier, &dataset, split).await?;
    let Some(system) = report.system() else {
        return Err(PipelineError::Invalid("no system evaluation".to_string()));
    };
    let per_class_f1: BTreeMap<u16, f64> =
        system.per_class.iter().map(|c| (c.code, c.f1)).collect();
    Ok(EvaluationSummary {
        model_version: version.id.clone(),
        evaluation_set,
        weighted_f1: system.weighted_f1,
        per_class_f1,
    })
}

impl Rescorer for PlatformRescorer<'_> {
    fn score<'a>(&'a self, version: &'a ModelVersion, evaluation_set: &'a str) -> ScoreFuture<'a> {
        let platform = self.platform.clone();
        let version = version.clone();
        let evaluation_set = evaluation_set.to_string();
        Box::pin(async move {
            score(&platform, version, evaluation_set)
                .await
                .map_err(|error| Box::new(error) as RescoreError)
        })
    }
}
