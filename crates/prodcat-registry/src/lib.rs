//! Experiment tracking and the model registry of prodcat.
//!
//! - **Runs** ([`runs`]): every training, evaluation or pipeline run is recorded with its kind,
//!   parameters, dataset version, code version ([`code_version`]), metrics (with steps, for
//!   per-epoch curves), artifacts (object-store keys with their sha256) and timings; runs are listed,
//!   shown and compared side by side ([`compare_runs`]).
//! - **Registry** ([`registry`]): immutable model versions (opaque to this crate: an id, a
//!   manifest JSON, an object-store prefix, summary metrics), aliases (`champion`, `challenger`, any
//!   user alias), the full history of every alias move (who, when, why, from which version to
//!   which, forced or not, the policy's decision), references (`mv-...` ids, unique id prefixes,
//!   aliases, `latest`) and one-step rollback.
//! - **Promotion** ([`policy`], [`promotion`]): a pure, configurable policy that lets a challenger
//!   replace the champion only when both were scored on the same evaluation set *now* and the
//!   challenger is better by a margin without hurting any class too much; `force` with a reason
//!   overrides it and is recorded.
//! - **MLflow** ([`mlflow`]): export of runs, parameters, metrics, model versions and aliases
//!   through MLflow's REST API, idempotent (runs are found again by tag), and a mirror the
//!   binary calls after each run and alias move when a tracking server is configured
//!   ([`MlflowSettings`]).
//!
//! The crate never loads a model: scoring a model on an evaluation set is the caller's job,
//! handed in through the [`Rescorer`] trait.
//!
//! # Metric key conventions
//!
//! Keys are free-form (letters, digits, `_ - . / :` and spaces, at most 250 characters), but the
//! rest of prodcat, the comparison and the promotion policy rely on these:
//!
//! | key | step | meaning |
//! |---|---|---|
//! | `weighted_f1` | 0 | F1 averaged over classes weighted by support (the challenge metric) |
//! | `macro_f1` | 0 | unweighted mean of per-class F1 |
//! | `accuracy` | 0 | share of correct top-1 predictions |
//! | `top5_accuracy` | 0 | share with the true class among the top 5 |
//! | `ece` | 0 | expected calibration error of the calibrated probabilities |
//! | `f1.class.<code>` | 0 | F1 of one category, `<code>` its marketplace code (`f1.class.2583`) |
//! | `precision.class.<code>`, `recall.class.<code>` | 0 | per-category precision and recall |
//! | `<branch>.weighted_f1` | 0 | a branch alone (`text`, `image`, `fusion`) on the same split |
//! | `epoch.<branch>.train_loss` | epoch | training loss per epoch of an iterated branch (`epoch.image.train_loss`) |
//! | `epoch.<branch>.validation_loss`, `epoch.<branch>.validation_weighted_f1` | epoch | validation curve per epoch |
//! | `timing.<phase>_seconds` | 0 | wall time of a phase (`timing.text_features_seconds`, `timing.total_seconds`) |
//! | `data.<name>` | 0 | sizes of the data used (`data.train_rows`, `data.validation_rows`) |
//!
//! Metrics of the evaluation split carry no prefix; a metric on another split is prefixed with it
//! (`validation.weighted_f1`). A value at a higher step supersedes lower steps when a run is shown
//! or compared ("latest" value); the whole curve stays stored. Values must be finite.
//!
//! Parameters are strings (`seed`, `text.c`, `image.epochs`, ...); a parameter, once logged, can
//! not change within the run, as in MLflow.
//!
//! # Evaluation sets
//!
//! An evaluation set is named by a string both the caller and the registry treat as opaque; the
//! convention is `<dataset version id>:<split>` (`ds-0123456789abcdef:test`). Two scores are only
//! ever compared when they name the same evaluation set.

pub mod code_version;
pub mod compare;
pub mod mlflow;
pub mod policy;
pub mod promotion;
pub mod registry;
pub mod rollout;
pub mod runs;
mod validate;

use prodcat_domain::ErrorKind;

pub use code_version::{code_version, set_code_version};
pub use compare::{
    compare_runs, ClassF1Comparison, MetricComparison, ParameterComparison, RunComparison,
};
pub use mlflow::{
    export_to_mlflow, mirror_to_mlflow, MlflowAuth, MlflowExportOptions, MlflowExportReport,
    MlflowSettings,
};
pub use policy::{ClassF1Delta, EvaluationSummary, PolicyDecision, PromotionPolicy};
pub use promotion::{
    force_promote, promote, promote_scored, PromotionOutcome, PromotionRequest, RescoreError,
    Rescorer, ScoreFuture,
};
pub use registry::{
    alias_history, alias_target, archive_version, get_version, list_aliases, list_versions,
    register_version, remove_alias, resolve, rollback, set_alias, AliasAction, AliasEvent,
    AliasMove, ModelAlias, ModelVersion, ModelVersionStatus, NewModelVersion, CHALLENGER, CHAMPION,
};
pub use rollout::{
    active_rollouts, alias_at, start_rollout, stop_rollout, GuardRails, NewRollout, Rollout,
    RolloutKind, Stickiness, CANARY, SHADOW,
};
pub use runs::{
    actor_or_unknown, fail_run, finish_run, get_run, list_artifacts, list_runs, log_artifact,
    log_metric, log_metrics, log_params, media_type_for, metric_history, resolve_run, start_run,
    store_artifact, Artifact, MetricPoint, NewArtifact, NewRun, Run, RunDetails, RunFilter, RunId,
    RunKind, RunStatus,
};

/// Errors from tracking, the registry, promotion and export.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("run {0:?} does not exist (see `prodcat runs list`)")]
    UnknownRun(String),
    #[error(
        "run reference {reference:?} is ambiguous: it matches {matches} runs; give more of the id"
    )]
    AmbiguousRun { reference: String, matches: usize },
    #[error("invalid run id {0:?}: expected \"run-\" followed by 16 lowercase hex digits")]
    InvalidRunId(String),
    #[error("run {run} is {status}; only a running run can be changed")]
    RunClosed { run: String, status: String },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("metric {key:?} at step {step} of run {run} is not a finite number ({value})")]
    NonFiniteMetric {
        run: String,
        key: String,
        step: i64,
        value: f64,
    },
    #[error("parameter {key:?} of run {run} is already {old:?}; a parameter can not change within a run (tried {new:?})")]
    ParameterChanged {
        run: String,
        key: String,
        old: String,
        new: String,
    },
    #[error("artifact {name:?} is already recorded for run {run} with other content")]
    ArtifactConflict { run: String, name: String },
    #[error("model reference {reference:?} does not match any model version or alias{hint}")]
    UnknownModelReference { reference: String, hint: String },
    #[error("model reference {reference:?} is ambiguous: it is a prefix of {matches} versions; give more of the id")]
    AmbiguousModelReference { reference: String, matches: usize },
    #[error("model version {0} does not exist (see `prodcat models list`)")]
    UnknownModelVersion(String),
    #[error("model version {id} is already registered with a different manifest")]
    VersionConflict { id: String },
    #[error("model version {id} is archived; it can not take an alias")]
    VersionArchived { id: String },
    #[error("model version {id} can not be archived while aliases point to it: {aliases}")]
    VersionInUse { id: String, aliases: String },
    #[error("invalid manifest for model version {id}: {reason}")]
    InvalidManifest { id: String, reason: String },
    #[error("alias {0:?} is not set")]
    UnknownAlias(String),
    #[error("alias {alias:?} moved to {actual} while the promotion to replace {expected} was being decided; decide again")]
    AliasMovedMeanwhile {
        alias: String,
        expected: String,
        actual: String,
    },
    #[error("alias {alias:?} already points to {version}")]
    AliasUnchanged { alias: String, version: String },
    #[error("alias {alias:?} has no earlier version to roll back to{detail}")]
    NothingToRollBack { alias: String, detail: String },
    #[error("a reason is required {0}")]
    ReasonRequired(&'static str),
    #[error("the two models were scored on different evaluation sets ({champion:?} for the champion, {challenger:?} for the challenger); they must be scored on the same set")]
    EvaluationSetMismatch {
        champion: String,
        challenger: String,
    },
    #[error("the {role} score is for model version {actual}, not {expected}; both models must be re-scored now")]
    ScoreForWrongVersion {
        role: &'static str,
        expected: String,
        actual: String,
    },
    #[error("invalid evaluation summary for {version}: {reason}")]
    InvalidSummary { version: String, reason: String },
    #[error("invalid promotion policy: {0}")]
    InvalidPolicy(String),
    #[error("{version} is already the {alias}")]
    AlreadyPromoted { alias: String, version: String },
    #[error("an evaluation set is required to compare the challenger {challenger} with the champion {champion} (or pass force with a reason)")]
    EvaluationSetRequired {
        champion: String,
        challenger: String,
    },
    #[error("re-scoring {version} on {evaluation_set:?} failed: {message}")]
    Rescore {
        version: String,
        evaluation_set: String,
        message: String,
    },
    #[error("stored data of {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("invalid MLflow tracking URI {uri:?}: {reason}")]
    InvalidTrackingUri { uri: String, reason: String },
    #[error("MLflow request {endpoint} failed: {message}")]
    MlflowRequest { endpoint: String, message: String },
    #[error("MLflow answered {endpoint} with something prodcat cannot use: {message}")]
    MlflowAnswer { endpoint: String, message: String },
    #[error("MLflow answered {status} to {endpoint}: {message}")]
    MlflowStatus {
        endpoint: String,
        status: u16,
        message: String,
    },
    #[error(transparent)]
    Domain(#[from] prodcat_domain::DomainError),
    #[error(transparent)]
    Storage(#[from] prodcat_storage::StorageError),
}

impl RegistryError {
    /// Whose fault the error is (the HTTP service and the pipelines read this): unknown runs,
    /// versions, references and aliases are `NotFound`; malformed names, ids, metrics,
    /// policies and comparisons the caller asked for are `Input`; a closed run, a changed
    /// parameter, an alias that moved meanwhile and every other clash with the stored state is
    /// a `Conflict`; storage keeps its own kind; an MLflow server that cannot be reached, or
    /// answers that it is overloaded or failing (429, 5xx), is `Unavailable`; the rest (stored
    /// data that does not parse, a bad tracking URI, MLflow refusing a request) is `Internal`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::UnknownRun(_)
            | RegistryError::UnknownModelReference { .. }
            | RegistryError::UnknownModelVersion(_)
            | RegistryError::UnknownAlias(_) => ErrorKind::NotFound,
            RegistryError::AmbiguousRun { .. }
            | RegistryError::InvalidRunId(_)
            | RegistryError::InvalidName { .. }
            | RegistryError::NonFiniteMetric { .. }
            | RegistryError::AmbiguousModelReference { .. }
            | RegistryError::ReasonRequired(_)
            | RegistryError::EvaluationSetMismatch { .. }
            | RegistryError::InvalidPolicy(_)
            | RegistryError::EvaluationSetRequired { .. }
            | RegistryError::Rescore { .. }
            | RegistryError::Domain(_) => ErrorKind::Input,
            RegistryError::RunClosed { .. }
            | RegistryError::ParameterChanged { .. }
            | RegistryError::ArtifactConflict { .. }
            | RegistryError::VersionConflict { .. }
            | RegistryError::VersionArchived { .. }
            | RegistryError::VersionInUse { .. }
            | RegistryError::AliasMovedMeanwhile { .. }
            | RegistryError::AliasUnchanged { .. }
            | RegistryError::NothingToRollBack { .. }
            | RegistryError::AlreadyPromoted { .. } => ErrorKind::Conflict,
            RegistryError::Storage(error) => error.kind(),
            RegistryError::MlflowRequest { .. } => ErrorKind::Unavailable,
            RegistryError::MlflowStatus { status, .. } => {
                if *status == 429 || *status >= 500 {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::Internal
                }
            }
            RegistryError::InvalidManifest { .. }
            | RegistryError::ScoreForWrongVersion { .. }
            | RegistryError::InvalidSummary { .. }
            | RegistryError::Corrupt { .. }
            | RegistryError::InvalidTrackingUri { .. }
            | RegistryError::MlflowAnswer { .. } => ErrorKind::Internal,
        }
    }
}

impl From<sqlx::Error> for RegistryError {
    fn from(error: sqlx::Error) -> Self {
        RegistryError::Storage(prodcat_storage::StorageError::Sql(error))
    }
}

/// What a backup of the registry must hold, to compare a restore with it: the champion, every
/// alias, every model version.
pub const BACKUP_CHECKS: &[prodcat_storage::backup::Check] = &[
    prodcat_storage::backup::Check {
        name: "champion",
        sql: "SELECT version_id FROM model_aliases WHERE alias = 'champion'",
    },
    prodcat_storage::backup::Check {
        name: "aliases",
        sql: "SELECT alias || ' ' || version_id FROM model_aliases ORDER BY alias",
    },
    prodcat_storage::backup::Check {
        name: "model versions",
        sql: "SELECT id FROM model_versions ORDER BY id",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_whose_fault_an_error_is() {
        assert_eq!(
            RegistryError::UnknownAlias("champion".to_string()).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            RegistryError::InvalidRunId("run-x".to_string()).kind(),
            ErrorKind::Input
        );
        assert_eq!(
            RegistryError::AlreadyPromoted {
                alias: "champion".to_string(),
                version: "mv-1".to_string(),
            }
            .kind(),
            ErrorKind::Conflict
        );
        assert_eq!(
            RegistryError::from(sqlx::Error::PoolTimedOut).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            RegistryError::from(sqlx::Error::RowNotFound).kind(),
            ErrorKind::Internal
        );
        let request = |status: u16| RegistryError::MlflowStatus {
            endpoint: "runs/create".to_string(),
            status,
            message: String::new(),
        };
        assert_eq!(request(503).kind(), ErrorKind::Unavailable);
        assert_eq!(request(429).kind(), ErrorKind::Unavailable);
        assert_eq!(request(400).kind(), ErrorKind::Internal);
        assert_eq!(
            RegistryError::MlflowRequest {
                endpoint: "runs/create".to_string(),
                message: "unreachable".to_string(),
            }
            .kind(),
            ErrorKind::Unavailable
        );
    }
}
