//! Promotion: moving an alias (usually `champion`) to a challenger under the promotion policy.
//!
//! The policy never sees a stored number. [`promote`] asks a [`Rescorer`] (the caller's model
//! code) to score the current champion and the challenger on the same evaluation set *now*;
//! [`promote_scored`] accepts two fresh summaries but checks that they name the version the alias
//! points to at this moment, the challenger, and one and the same evaluation set; and the alias
//! is moved only if it still points to the champion that was scored. `force` with a reason
//! overrides a refusal; the decision that was overridden is recorded with the move.

use std::future::Future;
use std::pin::Pin;

use prodcat_domain::ModelVersionId;
use prodcat_storage::Database;
use serde::Serialize;

use crate::policy::{EvaluationSummary, PolicyDecision, PromotionPolicy};
use crate::registry::{alias_target, get_version, resolve, AliasEvent, ModelVersion};
use crate::registry::{move_alias, ModelVersionStatus, MoveSpec, Target};
use crate::{validate, RegistryError};

/// The error a [`Rescorer`] may return.
pub type RescoreError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`Rescorer`] returns.
pub type ScoreFuture<'a> =
    Pin<Box<dyn Future<Output = Result<EvaluationSummary, RescoreError>> + Send + 'a>>;

/// Scores a model version on an evaluation set, now. Implemented by the code that can load models
/// (the CLI, the pipelines); the registry never loads one.
pub trait Rescorer: Send + Sync {
    /// The summary must name `version.id` and `evaluation_set`.
    fn score<'a>(&'a self, version: &'a ModelVersion, evaluation_set: &'a str) -> ScoreFuture<'a>;
}

/// A request to move `alias` to the version `version` refers to.
#[derive(Debug, Clone)]
pub struct PromotionRequest {
    /// Usually [`crate::CHAMPION`].
    pub alias: String,
    /// A reference to the challenger (id, unique prefix, alias or `latest`).
    pub version: String,
    pub actor: String,
    pub reason: String,
    /// Override the policy (requires a reason).
    pub force: bool,
    /// The set both models are scored on (`<dataset version>:<split>`).
    pub evaluation_set: Option<String>,
    pub policy: PromotionPolicy,
}

impl PromotionRequest {
    /// A request to make `version` the champion under the default policy.
    pub fn champion(version: &str, actor: &str, reason: &str) -> Self {
        Self {
            alias: crate::CHAMPION.to_string(),
            version: version.to_string(),
            actor: actor.to_string(),
            reason: reason.to_string(),
            force: false,
            evaluation_set: None,
            policy: PromotionPolicy::default(),
        }
    }
}

/// What a promotion did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum PromotionOutcome {
    /// The alias was not set yet: the version took it without a comparison.
    FirstVersion { event: AliasEvent },
    /// The policy allowed the move.
    Promoted {
        event: AliasEvent,
        decision: PolicyDecision,
    },
    /// Moved by force; the decision (when the models could be compared) was overridden.
    Forced {
        event: AliasEvent,
        decision: Option<PolicyDecision>,
    },
    /// The policy refused; nothing moved.
    Refused { decision: PolicyDecision },
}

impl PromotionOutcome {
    /// Whether the alias moved.
    pub fn moved(&self) -> bool {
        !matches!(self, PromotionOutcome::Refused { .. })
    }

    /// The recorded move, when the alias moved.
    pub fn event(&self) -> Option<&AliasEvent> {
        match self {
            PromotionOutcome::FirstVersion { event }
            | PromotionOutcome::Promoted { event, .. }
            | PromotionOutcome::Forced { event, .. } => Some(event),
            PromotionOutcome::Refused { .. } => None,
        }
    }

    /// The policy's decision, when one was taken.
    pub fn decision(&self) -> Option<&PolicyDecision> {
        match self {
            PromotionOutcome::Promoted { decision, .. }
            | PromotionOutcome::Refused { decision } => Some(decision),
            PromotionOutcome::Forced { decision, .. } => decision.as_ref(),
            PromotionOutcome::FirstVersion { .. } => None,
        }
    }
}

fn check_request(request: &PromotionRequest) -> Result<(), RegistryError> {
    validate::alias(&request.alias)?;
    validate::actor(&request.actor)?;
    request.policy.validate()?;
    if request.force && request.reason.trim().is_empty() {
        return Err(RegistryError::ReasonRequired(
            "to override the promotion policy (force)",
        ));
    }
    Ok(())
}

/// The challenger and the current holder of the alias (if any), checked for a promotion.
async fn participants(
    database: &Database,
    request: &PromotionRequest,
) -> Result<(ModelVersion, Option<ModelVersion>), RegistryError> {
    let challenger = resolve(database, &request.version).await?;
    if challenger.status == ModelVersionStatus::Archived {
        return Err(RegistryError::VersionArchived {
            id: challenger.id.to_string(),
        });
    }
    let champion = match alias_target(database, &request.alias).await? {
        Some(current) if current == challenger.id => {
            return Err(RegistryError::AlreadyPromoted {
                alias: request.alias.clone(),
                version: current.to_string(),
            })
        }
        Some(current) => Some(get_version(database, &current).await?),
        None => None,
    };
    Ok((challenger, champion))
}

/// Moves the request's alias to the challenger, provided the alias still points to `champion`
/// (`None`: is still unset) as when the promotion was decided.
async fn move_to_challenger(
    database: &Database,
    request: &PromotionRequest,
    challenger: &ModelVersion,
    champion: Option<&ModelVersionId>,
    forced: bool,
    decision: Option<&serde_json::Value>,
) -> Result<AliasEvent, RegistryError> {
    move_alias(
        database,
        MoveSpec {
            alias: &request.alias,
            target: Target::Version(challenger.id.clone()),
            actor: &request.actor,
            reason: &request.reason,
            forced,
            decision,
            expected_current: Some(champion),
            rollout: None,
        },
    )
    .await
}

async fn first_version(
    database: &Database,
    request: &PromotionRequest,
    challenger: &ModelVersion,
) -> Result<PromotionOutcome, RegistryError> {
    let event = move_to_challenger(database, request, challenger, None, false, None).await?;
    Ok(PromotionOutcome::FirstVersion { event })
}

/// Promotes under the policy, re-scoring the current champion and the challenger on
/// `request.evaluation_set` with `rescorer`. Without a champion the version takes the alias
/// directly. With `force`, a comparison that can not be made (no evaluation set, a scoring error)
/// does not stop the move; the error is recorded in place of the decision.
pub async fn promote(
    database: &Database,
    request: &PromotionRequest,
    rescorer: &dyn Rescorer,
) -> Result<PromotionOutcome, RegistryError> {
    let outcome = promote_under_policy(database, request, rescorer).await?;
    if outcome.moved() && request.alias == crate::CHAMPION {
        // A canary or shadow of the new champion has done its job.
        crate::rollout::finish_rollouts_of(database, &request.version, &request.actor).await?;
    }
    Ok(outcome)
}

async fn promote_under_policy(
    database: &Database,
    request: &PromotionRequest,
    rescorer: &dyn Rescorer,
) -> Result<PromotionOutcome, RegistryError> {
    check_request(request)?;
    let (challenger, champion) = participants(database, request).await?;
    let Some(champion) = champion else {
        return first_version(database, request, &challenger).await;
    };
    let Some(evaluation_set) = request
        .evaluation_set
        .as_deref()
        .map(str::trim)
        .filter(|set| !set.is_empty())
    else {
        if request.force {
            return forced_without_decision(database, request, &challenger, &champion, None).await;
        }
        return Err(RegistryError::EvaluationSetRequired {
            champion: champion.id.to_string(),
            challenger: challenger.id.to_string(),
        });
    };
    let scores = async {
        let champion_summary = score(rescorer, &champion, evaluation_set).await?;
        let challenger_summary = score(rescorer, &challenger, evaluation_set).await?;
        Ok::<_, RegistryError>((champion_summary, challenger_summary))
    }
    .await;
    match scores {
        Ok((champion_summary, challenger_summary)) => {
            decide_and_move(
                database,
                request,
                &challenger,
                &champion,
                &champion_summary,
                &challenger_summary,
            )
            .await
        }
        Err(error) if request.force => {
            forced_without_decision(
                database,
                request,
                &challenger,
                &champion,
                Some(error.to_string()),
            )
            .await
        }
        Err(error) => Err(error),
    }
}

async fn score(
    rescorer: &dyn Rescorer,
    version: &ModelVersion,
    evaluation_set: &str,
) -> Result<EvaluationSummary, RegistryError> {
    rescorer
        .score(version, evaluation_set)
        .await
        .map_err(|error| RegistryError::Rescore {
            version: version.id.to_string(),
            evaluation_set: evaluation_set.to_string(),
            message: error.to_string(),
        })
}

/// Promotes under the policy from two summaries scored just now by the caller. They must name
/// the version the alias points to now, the challenger, and the same evaluation set (the request's
/// when it names one). Without a champion the version takes the alias directly.
pub async fn promote_scored(
    database: &Database,
    request: &PromotionRequest,
    champion_summary: &EvaluationSummary,
    challenger_summary: &EvaluationSummary,
) -> Result<PromotionOutcome, RegistryError> {
    check_request(request)?;
    let (challenger, champion) = participants(database, request).await?;
    let Some(champion) = champion else {
        return first_version(database, request, &challenger).await;
    };
    decide_and_move(
        database,
        request,
        &challenger,
        &champion,
        champion_summary,
        challenger_summary,
    )
    .await
}

/// Moves the alias by force without comparing (requires a reason). Without a champion the
/// version takes the alias directly and the move is not marked forced.
pub async fn force_promote(
    database: &Database,
    alias: &str,
    version: &str,
    actor: &str,
    reason: &str,
) -> Result<PromotionOutcome, RegistryError> {
    let request = PromotionRequest {
        alias: alias.to_string(),
        version: version.to_string(),
        actor: actor.to_string(),
        reason: reason.to_string(),
        force: true,
        evaluation_set: None,
        policy: PromotionPolicy::default(),
    };
    check_request(&request)?;
    let (challenger, champion) = participants(database, &request).await?;
    match champion {
        None => first_version(database, &request, &challenger).await,
        Some(champion) => {
            forced_without_decision(database, &request, &challenger, &champion, None).await
        }
    }
}

async fn forced_without_decision(
    database: &Database,
    request: &PromotionRequest,
    challenger: &ModelVersion,
    champion: &ModelVersion,
    comparison_error: Option<String>,
) -> Result<PromotionOutcome, RegistryError> {
    let note = serde_json::json!({
        "compared": false,
        "error": comparison_error,
    });
    let event = move_to_challenger(
        database,
        request,
        challenger,
        Some(&champion.id),
        true,
        Some(&note),
    )
    .await?;
    Ok(PromotionOutcome::Forced {
        event,
        decision: None,
    })
}

fn check_summary(
    role: &'static str,
    summary: &EvaluationSummary,
    expected: &ModelVersionId,
) -> Result<(), RegistryError> {
    if summary.model_version != *expected {
        return Err(RegistryError::ScoreForWrongVersion {
            role,
            expected: expected.to_string(),
            actual: summary.model_version.to_string(),
        });
    }
    Ok(())
}

async fn decide_and_move(
    database: &Database,
    request: &PromotionRequest,
    challenger: &ModelVersion,
    champion: &ModelVersion,
    champion_summary: &EvaluationSummary,
    challenger_summary: &EvaluationSummary,
) -> Result<PromotionOutcome, RegistryError> {
    check_summary("champion", champion_summary, &champion.id)?;
    check_summary("challenger", challenger_summary, &challenger.id)?;
    if let Some(set) = request
        .evaluation_set
        .as_deref()
        .map(str::trim)
        .filter(|set| !set.is_empty())
    {
        for summary in [champion_summary, challenger_summary] {
            if summary.evaluation_set != set {
                return Err(RegistryError::EvaluationSetMismatch {
                    champion: set.to_string(),
                    challenger: summary.evaluation_set.clone(),
                });
            }
        }
    }
    let decision = request
        .policy
        .decide(champion_summary, challenger_summary)?;
    if !decision.promote && !request.force {
        tracing::info!(
            alias = %request.alias,
            challenger = %challenger.id,
            champion = %champion.id,
            "promotion refused by the policy"
        );
        return Ok(PromotionOutcome::Refused { decision });
    }
    let forced = !decision.promote;
    let decision_json =
        serde_json::to_value(&decision).map_err(|error| RegistryError::Corrupt {
            what: "policy decision".to_string(),
            reason: error.to_string(),
        })?;
    let event = move_to_challenger(
        database,
        request,
        challenger,
        Some(&champion.id),
        forced,
        Some(&decision_json),
    )
    .await?;
    Ok(if forced {
        PromotionOutcome::Forced {
            event,
            decision: Some(decision),
        }
    } else {
        PromotionOutcome::Promoted { event, decision }
    })
}
