//! The model registry: immutable model versions, aliases pointing at them, and the history of
//! every alias move.
//!
//! Model versions are opaque here: an id (`mv-...`), a manifest (JSON), an object-store prefix
//! where the bundle lives, and summary metrics. Every alias move (set, rollback, removal) is
//! written together with its history row in one transaction, so the history is never missing a
//! move. Moves of aliases are serialised (a table lock on PostgreSQL, the single writer on SQLite).

use std::collections::BTreeMap;
use std::fmt;

use prodcat_domain::{DatasetVersionId, ModelVersionId};
use prodcat_storage::{now_ms, Backend, Database};
use serde::Serialize;
use sqlx::Row;

use crate::runs::{set_run_model_version, RunId};
use crate::{validate, RegistryError};

/// The alias of the version in service.
pub const CHAMPION: &str = "champion";
/// The alias of the version competing to replace the champion.
pub const CHALLENGER: &str = "challenger";

/// Whether a version may take aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelVersionStatus {
    Ready,
    Archived,
}

impl ModelVersionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelVersionStatus::Ready => "ready",
            ModelVersionStatus::Archived => "archived",
        }
    }

    fn parse(text: &str) -> Result<Self, RegistryError> {
        match text {
            "ready" => Ok(ModelVersionStatus::Ready),
            "archived" => Ok(ModelVersionStatus::Archived),
            other => Err(RegistryError::Corrupt {
                what: "model version status".to_string(),
                reason: format!("unknown status {other:?}"),
            }),
        }
    }
}

impl fmt::Display for ModelVersionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version to register.
#[derive(Debug, Clone)]
pub struct NewModelVersion {
    pub id: ModelVersionId,
    /// The training run that produced it (its `model_version` is set on registration).
    pub run_id: Option<RunId>,
    pub dataset_version: Option<DatasetVersionId>,
    /// The bundle's manifest: a JSON object.
    pub manifest_json: String,
    /// Object-store prefix holding the bundle's files.
    pub object_prefix: String,
    /// Headline metrics (`weighted_f1`, ...) on the training run's evaluation split.
    pub summary_metrics: BTreeMap<String, f64>,
    pub created_by: String,
    pub note: String,
}

/// A registered version with the aliases pointing at it now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelVersion {
    pub id: ModelVersionId,
    pub run_id: Option<RunId>,
    pub created_at_ms: i64,
    pub dataset_version: Option<DatasetVersionId>,
    pub manifest: serde_json::Value,
    pub object_prefix: String,
    pub summary_metrics: BTreeMap<String, f64>,
    pub status: ModelVersionStatus,
    pub created_by: String,
    pub note: String,
    /// Aliases pointing at this version, sorted.
    pub aliases: Vec<String>,
}

/// Where an alias points now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelAlias {
    pub alias: String,
    pub version: ModelVersionId,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

/// What an alias move was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AliasAction {
    /// Pointed at a version (a promotion or a manual move).
    Set,
    /// Moved back to the version before an earlier move.
    Rollback,
    /// Removed.
    Remove,
}

impl AliasAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AliasAction::Set => "set",
            AliasAction::Rollback => "rollback",
            AliasAction::Remove => "remove",
        }
    }

    fn parse(text: &str) -> Result<Self, RegistryError> {
        match text {
            "set" => Ok(AliasAction::Set),
            "rollback" => Ok(AliasAction::Rollback),
            "remove" => Ok(AliasAction::Remove),
            other => Err(RegistryError::Corrupt {
                what: "alias history".to_string(),
                reason: format!("unknown action {other:?}"),
            }),
        }
    }
}

impl fmt::Display for AliasAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded alias move.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AliasEvent {
    /// Increases with every move (of any alias).
    pub id: i64,
    pub alias: String,
    pub action: AliasAction,
    pub from_version: Option<ModelVersionId>,
    pub to_version: Option<ModelVersionId>,
    pub actor: String,
    pub reason: String,
    /// The promotion policy was overridden.
    pub forced: bool,
    /// The promotion policy's decision, when one was taken.
    pub decision: Option<serde_json::Value>,
    pub at_ms: i64,
}

/// A request to point an alias at a version.
#[derive(Debug, Clone)]
pub struct AliasMove {
    pub alias: String,
    pub version: ModelVersionId,
    pub actor: String,
    pub reason: String,
    pub forced: bool,
    pub decision: Option<serde_json::Value>,
}

const VERSION_COLUMNS: &str = "id, run_id, created_at_ms, dataset_version, manifest, \
    object_prefix, summary_metrics, status, created_by, note";

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<ModelVersion, RegistryError> {
    let id: String = row.try_get("id")?;
    let corrupt = |reason: String| RegistryError::Corrupt {
        what: format!("model version {id}"),
        reason,
    };
    let run_id: Option<String> = row.try_get("run_id")?;
    let dataset_version: Option<String> = row.try_get("dataset_version")?;
    let manifest: String = row.try_get("manifest")?;
    let summary: String = row.try_get("summary_metrics")?;
    let status: String = row.try_get("status")?;
    Ok(ModelVersion {
        id: ModelVersionId::parse(&id)?,
        run_id: run_id.map(|value| RunId::parse(&value)).transpose()?,
        created_at_ms: row.try_get("created_at_ms")?,
        dataset_version: dataset_version
            .map(|value| DatasetVersionId::parse(&value))
            .transpose()?,
        manifest: serde_json::from_str(&manifest)
            .map_err(|error| corrupt(format!("manifest is not JSON: {error}")))?,
        object_prefix: row.try_get("object_prefix")?,
        summary_metrics: serde_json::from_str(&summary)
            .map_err(|error| corrupt(format!("summary metrics are not JSON: {error}")))?,
        status: ModelVersionStatus::parse(&status)?,
        created_by: row.try_get("created_by")?,
        note: row.try_get("note")?,
        aliases: Vec::new(),
    })
}

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<AliasEvent, RegistryError> {
    let action: String = row.try_get("action")?;
    let from_version: Option<String> = row.try_get("from_version")?;
    let to_version: Option<String> = row.try_get("to_version")?;
    let decision: Option<String> = row.try_get("decision")?;
    let forced: i64 = row.try_get("forced")?;
    Ok(AliasEvent {
        id: row.try_get("id")?,
        alias: row.try_get("alias")?,
        action: AliasAction::parse(&action)?,
        from_version: from_version
            .map(|value| ModelVersionId::parse(&value))
            .transpose()?,
        to_version: to_version
            .map(|value| ModelVersionId::parse(&value))
            .transpose()?,
        actor: row.try_get("actor")?,
        reason: row.try_get("reason")?,
        forced: forced != 0,
        decision: decision
            .map(|text| {
                serde_json::from_str(&text).map_err(|error| RegistryError::Corrupt {
                    what: "alias history".to_string(),
                    reason: format!("decision is not JSON: {error}"),
                })
            })
            .transpose()?,
        at_ms: row.try_get("at_ms")?,
    })
}

/// Every alias, by name.
pub async fn list_aliases(database: &Database) -> Result<Vec<ModelAlias>, RegistryError> {
    let rows = sqlx::query(
        "SELECT alias, version_id, updated_at_ms, updated_by FROM model_aliases ORDER BY alias",
    )
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let version: String = row.try_get("version_id")?;
            Ok(ModelAlias {
                alias: row.try_get("alias")?,
                version: ModelVersionId::parse(&version)?,
                updated_at_ms: row.try_get("updated_at_ms")?,
                updated_by: row.try_get("updated_by")?,
            })
        })
        .collect()
}

/// The version an alias points at, if it is set.
pub async fn alias_target(
    database: &Database,
    alias: &str,
) -> Result<Option<ModelVersionId>, RegistryError> {
    let version: Option<String> =
        sqlx::query_scalar("SELECT version_id FROM model_aliases WHERE alias = $1")
            .bind(alias.to_string())
            .fetch_optional(database.pool())
            .await?;
    version
        .map(|value| ModelVersionId::parse(&value).map_err(RegistryError::from))
        .transpose()
}

async fn attach_aliases(
    database: &Database,
    mut versions: Vec<ModelVersion>,
) -> Result<Vec<ModelVersion>, RegistryError> {
    let aliases = list_aliases(database).await?;
    for version in &mut versions {
        version.aliases = aliases
            .iter()
            .filter(|alias| alias.version == version.id)
            .map(|alias| alias.alias.clone())
            .collect();
    }
    Ok(versions)
}

async fn find_version(
    database: &Database,
    id: &str,
) -> Result<Option<ModelVersion>, RegistryError> {
    let row = sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM model_versions WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(database.pool())
    .await?;
    match row {
        Some(row) => {
            let version = version_from_row(&row)?;
            Ok(attach_aliases(database, vec![version]).await?.pop())
        }
        None => Ok(None),
    }
}

/// Registers a version. Registering the same id with the same manifest again returns the stored
/// version and `false` (a bit-identical retraining gives the same id); with another manifest it is
/// refused. Sets the producing run's model version in the same transaction.
pub async fn register_version(
    database: &Database,
    new_version: &NewModelVersion,
) -> Result<(ModelVersion, bool), RegistryError> {
    let id = new_version.id.as_str().to_string();
    let manifest: serde_json::Value =
        serde_json::from_str(&new_version.manifest_json).map_err(|error| {
            RegistryError::InvalidManifest {
                id: id.clone(),
                reason: format!("not JSON: {error}"),
            }
        })?;
    if !manifest.is_object() {
        return Err(RegistryError::InvalidManifest {
            id,
            reason: "expected a JSON object".to_string(),
        });
    }
    if new_version.object_prefix.trim().is_empty() {
        return Err(RegistryError::InvalidManifest {
            id,
            reason: "the object prefix is empty".to_string(),
        });
    }
    for (key, value) in &new_version.summary_metrics {
        validate::key("metric key", key)?;
        if !value.is_finite() {
            return Err(RegistryError::InvalidManifest {
                id,
                reason: format!("summary metric {key:?} is not a finite number ({value})"),
            });
        }
    }
    validate::actor(&new_version.created_by)?;
    if let Some(existing) = find_version(database, &id).await? {
        return if existing.manifest == manifest {
            Ok((existing, false))
        } else {
            Err(RegistryError::VersionConflict { id })
        };
    }
    let summary = serde_json::to_string(&new_version.summary_metrics).map_err(|error| {
        RegistryError::InvalidManifest {
            id: id.clone(),
            reason: error.to_string(),
        }
    })?;
    let mut transaction = database.begin_write().await?;
    sqlx::query(
        "INSERT INTO model_versions (id, run_id, created_at_ms, dataset_version, manifest, \
         object_prefix, summary_metrics, status, created_by, note) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id.clone())
    .bind(
        new_version
            .run_id
            .as_ref()
            .map(|run| run.as_str().to_string()),
    )
    .bind(now_ms())
    .bind(
        new_version
            .dataset_version
            .as_ref()
            .map(|dataset| dataset.as_str().to_string()),
    )
    .bind(new_version.manifest_json.clone())
    .bind(new_version.object_prefix.trim().to_string())
    .bind(summary)
    .bind(ModelVersionStatus::Ready.as_str())
    .bind(new_version.created_by.clone())
    .bind(new_version.note.clone())
    .execute(&mut *transaction)
    .await?;
    if let Some(run) = &new_version.run_id {
        set_run_model_version(&mut *transaction, run, &new_version.id).await?;
    }
    transaction.commit().await?;
    tracing::info!(model_version = %id, "model version registered");
    let version = find_version(database, &id)
        .await?
        .ok_or_else(|| RegistryError::UnknownModelVersion(id.clone()))?;
    Ok((version, true))
}

/// A version by its exact id.
pub async fn get_version(
    database: &Database,
    id: &ModelVersionId,
) -> Result<ModelVersion, RegistryError> {
    find_version(database, id.as_str())
        .await?
        .ok_or_else(|| RegistryError::UnknownModelVersion(id.to_string()))
}

/// Every version, newest first.
pub async fn list_versions(database: &Database) -> Result<Vec<ModelVersion>, RegistryError> {
    let rows = sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM model_versions ORDER BY created_at_ms DESC, id DESC"
    ))
    .fetch_all(database.pool())
    .await?;
    let versions = rows
        .iter()
        .map(version_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    attach_aliases(database, versions).await
}

/// Resolves a reference: `latest` (the newest ready version), a version id, a unique prefix of
/// one (`mv-` and at least 4 hex digits), or an alias.
pub async fn resolve(database: &Database, reference: &str) -> Result<ModelVersion, RegistryError> {
    let reference = reference.trim();
    let unknown = |hint: String| RegistryError::UnknownModelReference {
        reference: reference.to_string(),
        hint,
    };
    if reference == "latest" {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE status = $1 \
             ORDER BY created_at_ms DESC, id DESC LIMIT 1"
        ))
        .bind(ModelVersionStatus::Ready.as_str())
        .fetch_optional(database.pool())
        .await?;
        return match row {
            Some(row) => Ok(attach_aliases(database, vec![version_from_row(&row)?])
                .await?
                .remove(0)),
            None => Err(unknown(
                " (no model version has been registered yet)".to_string(),
            )),
        };
    }
    if ModelVersionId::parse(reference).is_ok() {
        if let Some(version) = find_version(database, reference).await? {
            return Ok(version);
        }
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE id LIKE $1 ORDER BY id LIMIT 3"
        ))
        .bind(format!("{reference}%"))
        .fetch_all(database.pool())
        .await?;
        return match rows.len() {
            0 => Err(unknown(" (see `prodcat models list`)".to_string())),
            1 => Ok(attach_aliases(database, vec![version_from_row(&rows[0])?])
                .await?
                .remove(0)),
            matches => Err(RegistryError::AmbiguousModelReference {
                reference: reference.to_string(),
                matches,
            }),
        };
    }
    if validate::alias(reference).is_ok() {
        if let Some(target) = alias_target(database, reference).await? {
            return get_version(database, &target).await;
        }
    }
    let aliases = list_aliases(database).await?;
    let hint = if aliases.is_empty() {
        " (no alias is set; use a version id, a unique prefix of one, or latest)".to_string()
    } else {
        format!(
            " (aliases: {}; or a version id, a unique prefix of one, or latest)",
            aliases
                .iter()
                .map(|alias| alias.alias.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(unknown(hint))
}

/// Marks a version archived: it keeps its record but can no longer take an alias. Refused while
/// an alias points to it.
pub async fn archive_version(
    database: &Database,
    id: &ModelVersionId,
) -> Result<ModelVersion, RegistryError> {
    let version = get_version(database, id).await?;
    if !version.aliases.is_empty() {
        return Err(RegistryError::VersionInUse {
            id: id.to_string(),
            aliases: version.aliases.join(", "),
        });
    }
    sqlx::query("UPDATE model_versions SET status = $1 WHERE id = $2")
        .bind(ModelVersionStatus::Archived.as_str())
        .bind(id.as_str().to_string())
        .execute(database.pool())
        .await?;
    get_version(database, id).await
}

/// Every move of an alias (or of all aliases with `None`), newest first.
pub async fn alias_history(
    database: &Database,
    alias: Option<&str>,
) -> Result<Vec<AliasEvent>, RegistryError> {
    const COLUMNS: &str =
        "id, alias, action, from_version, to_version, actor, reason, forced, decision, at_ms";
    let rows = match alias {
        Some(alias) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM alias_history WHERE alias = $1 ORDER BY id DESC"
            ))
            .bind(alias.to_string())
            .fetch_all(database.pool())
            .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM alias_history ORDER BY id DESC"
            ))
            .fetch_all(database.pool())
            .await?
        }
    };
    rows.iter().map(event_from_row).collect()
}

/// Points an alias at a version, recording the move (who, why, forced, decision) in the same
/// transaction. Refused when the alias already points there or the version is archived.
pub async fn set_alias(
    database: &Database,
    request: &AliasMove,
) -> Result<AliasEvent, RegistryError> {
    validate::alias(&request.alias)?;
    validate::actor(&request.actor)?;
    if request.forced && request.reason.trim().is_empty() {
        return Err(RegistryError::ReasonRequired(
            "to override the promotion policy (force)",
        ));
    }
    move_alias(
        database,
        MoveSpec {
            alias: &request.alias,
            target: Target::Version(request.version.clone()),
            actor: &request.actor,
            reason: &request.reason,
            forced: request.forced,
            decision: request.decision.as_ref(),
            expected_current: None,
            rollout: None,
        },
    )
    .await
}

/// Moves an alias back to the version it pointed to before its last move, and records that as a
/// move too. Repeated rollbacks walk further back (each undoes the latest move not yet undone).
pub async fn rollback(
    database: &Database,
    alias: &str,
    actor: &str,
    reason: &str,
) -> Result<AliasEvent, RegistryError> {
    validate::alias(alias)?;
    validate::actor(actor)?;
    if reason.trim().is_empty() {
        return Err(RegistryError::ReasonRequired("to roll back"));
    }
    move_alias(
        database,
        MoveSpec {
            alias,
            target: Target::Rollback,
            actor,
            reason,
            forced: false,
            decision: None,
            expected_current: None,
            rollout: None,
        },
    )
    .await
}

/// Removes an alias, recording the move.
pub async fn remove_alias(
    database: &Database,
    alias: &str,
    actor: &str,
    reason: &str,
) -> Result<AliasEvent, RegistryError> {
    remove_alias_with_decision(database, alias, actor, reason, None).await
}

/// Removes an alias, recording the move with the figures behind it (an automatic rollback's);
/// a rollout on the alias ends in the same transaction.
pub(crate) async fn remove_alias_with_decision(
    database: &Database,
    alias: &str,
    actor: &str,
    reason: &str,
    decision: Option<&serde_json::Value>,
) -> Result<AliasEvent, RegistryError> {
    validate::alias(alias)?;
    validate::actor(actor)?;
    move_alias(
        database,
        MoveSpec {
            alias,
            target: Target::Remove,
            actor,
            reason,
            forced: false,
            decision,
            expected_current: None,
            rollout: None,
        },
    )
    .await
}

/// Where a move takes an alias.
pub(crate) enum Target {
    Version(ModelVersionId),
    Rollback,
    Remove,
}

/// The version a rollback of `alias` returns to, from its history (oldest first): each move
/// pushes the version it left, each rollback pops one.
fn rollback_target(
    alias: &str,
    history: &[(AliasAction, Option<String>)],
) -> Result<String, RegistryError> {
    let mut left_behind: Vec<Option<String>> = Vec::new();
    for (action, from_version) in history {
        match action {
            AliasAction::Set | AliasAction::Remove => left_behind.push(from_version.clone()),
            AliasAction::Rollback => {
                left_behind.pop();
            }
        }
    }
    match left_behind.pop() {
        Some(Some(version)) => Ok(version),
        Some(None) => Err(RegistryError::NothingToRollBack {
            alias: alias.to_string(),
            detail: ": it was not set before its last move".to_string(),
        }),
        None if history.is_empty() => Err(RegistryError::NothingToRollBack {
            alias: alias.to_string(),
            detail: ": it has never moved".to_string(),
        }),
        None => Err(RegistryError::NothingToRollBack {
            alias: alias.to_string(),
            detail: ": every earlier move has already been rolled back".to_string(),
        }),
    }
}

/// One move of an alias: to a version, back (rollback) or away (removal).
pub(crate) struct MoveSpec<'a> {
    pub(crate) alias: &'a str,
    pub(crate) target: Target,
    pub(crate) actor: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) forced: bool,
    pub(crate) decision: Option<&'a serde_json::Value>,
    /// `Some(expected)`: move only if the alias still points there (`Some(None)`: is unset), so
    /// a decision taken on a champion is never applied after someone else moved the alias.
    pub(crate) expected_current: Option<Option<&'a ModelVersionId>>,
    /// Settings of the rollout the move starts, stored in the same transaction.
    pub(crate) rollout: Option<&'a crate::rollout::RolloutSettings>,
}

/// Applies a move and records it in the alias history, in one transaction.
pub(crate) async fn move_alias(
    database: &Database,
    spec: MoveSpec<'_>,
) -> Result<AliasEvent, RegistryError> {
    // Alias moves are serialised before anything is read: SQLite's single write lock is held
    // from the start (`begin_write`); PostgreSQL takes a table lock.
    let mut transaction = database.begin_write().await?;
    if database.backend() == Backend::Postgres {
        sqlx::query("LOCK TABLE model_aliases IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *transaction)
            .await?;
    }
    let current: Option<String> =
        sqlx::query_scalar("SELECT version_id FROM model_aliases WHERE alias = $1")
            .bind(spec.alias.to_string())
            .fetch_optional(&mut *transaction)
            .await?;
    if let Some(expected) = spec.expected_current {
        if current.as_deref() != expected.map(ModelVersionId::as_str) {
            return Err(RegistryError::AliasMovedMeanwhile {
                alias: spec.alias.to_string(),
                expected: expected.map_or_else(|| "(unset)".to_string(), ToString::to_string),
                actual: current.unwrap_or_else(|| "(unset)".to_string()),
            });
        }
    }
    let (action, to_version) = match &spec.target {
        Target::Version(version) => (AliasAction::Set, Some(version.as_str().to_string())),
        Target::Rollback => (
            AliasAction::Rollback,
            Some(stored_rollback_target(&mut transaction, spec.alias).await?),
        ),
        Target::Remove if current.is_none() => {
            return Err(RegistryError::UnknownAlias(spec.alias.to_string()))
        }
        Target::Remove => (AliasAction::Remove, None),
    };
    if let Some(version) = &to_version {
        check_new_target(&mut transaction, spec.alias, version, current.as_deref()).await?;
    }
    let at = now_ms();
    write_alias(&mut transaction, &spec, to_version.as_deref(), at).await?;
    let event = record_move(
        &mut transaction,
        &spec,
        action,
        (current.as_deref(), to_version.as_deref()),
        at,
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(
        alias = spec.alias,
        action = action.as_str(),
        from = current.as_deref().unwrap_or("-"),
        to = to_version.as_deref().unwrap_or("-"),
        actor = spec.actor,
        forced = spec.forced,
        "alias moved"
    );
    Ok(event)
}

/// The version a rollback of `alias` returns to, from its stored history.
async fn stored_rollback_target(
    connection: &mut sqlx::AnyConnection,
    alias: &str,
) -> Result<String, RegistryError> {
    let rows =
        sqlx::query("SELECT action, from_version FROM alias_history WHERE alias = $1 ORDER BY id")
            .bind(alias.to_string())
            .fetch_all(connection)
            .await?;
    let history = rows
        .iter()
        .map(|row| {
            let action: String = row.try_get("action")?;
            let from_version: Option<String> = row.try_get("from_version")?;
            Ok((AliasAction::parse(&action)?, from_version))
        })
        .collect::<Result<Vec<_>, RegistryError>>()?;
    rollback_target(alias, &history)
}

/// Refuses a target version that does not exist, is archived, or is where the alias points.
async fn check_new_target(
    connection: &mut sqlx::AnyConnection,
    alias: &str,
    version: &str,
    current: Option<&str>,
) -> Result<(), RegistryError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM model_versions WHERE id = $1")
            .bind(version.to_string())
            .fetch_optional(connection)
            .await?;
    match status.as_deref() {
        None => return Err(RegistryError::UnknownModelVersion(version.to_string())),
        Some("ready") => {}
        Some(_) => {
            return Err(RegistryError::VersionArchived {
                id: version.to_string(),
            })
        }
    }
    if current == Some(version) {
        return Err(RegistryError::AliasUnchanged {
            alias: alias.to_string(),
            version: version.to_string(),
        });
    }
    Ok(())
}

/// Points the alias at `to_version`, or deletes it (`None`).
async fn write_alias(
    connection: &mut sqlx::AnyConnection,
    spec: &MoveSpec<'_>,
    to_version: Option<&str>,
    at: i64,
) -> Result<(), RegistryError> {
    match to_version {
        Some(version) => {
            sqlx::query(
                "INSERT INTO model_aliases (alias, version_id, updated_at_ms, updated_by) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (alias) DO UPDATE SET \
                 version_id = excluded.version_id, updated_at_ms = excluded.updated_at_ms, \
                 updated_by = excluded.updated_by",
            )
            .bind(spec.alias.to_string())
            .bind(version.to_string())
            .bind(at)
            .bind(spec.actor.to_string())
            .execute(&mut *connection)
            .await?;
            if let Some(rollout) = spec.rollout {
                crate::rollout::store_rollout(connection, spec.alias, rollout).await?;
            }
        }
        None => {
            sqlx::query("DELETE FROM model_aliases WHERE alias = $1")
                .bind(spec.alias.to_string())
                .execute(&mut *connection)
                .await?;
            // A rollout lives on its alias: removing the alias ends the rollout in the same
            // transaction, so no reader sees one without the other.
            sqlx::query("DELETE FROM rollouts WHERE alias = $1")
                .bind(spec.alias.to_string())
                .execute(connection)
                .await?;
        }
    }
    Ok(())
}

/// Writes the history row of a move (`versions`: from, to) and returns it as an event.
async fn record_move(
    connection: &mut sqlx::AnyConnection,
    spec: &MoveSpec<'_>,
    action: AliasAction,
    versions: (Option<&str>, Option<&str>),
    at: i64,
) -> Result<AliasEvent, RegistryError> {
    let (from_version, to_version) = versions;
    let row = sqlx::query(
        "INSERT INTO alias_history (alias, action, from_version, to_version, actor, reason, \
         forced, decision, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         RETURNING id, alias, action, from_version, to_version, actor, reason, forced, decision, at_ms",
    )
    .bind(spec.alias.to_string())
    .bind(action.as_str())
    .bind(from_version.map(str::to_string))
    .bind(to_version.map(str::to_string))
    .bind(spec.actor.to_string())
    .bind(spec.reason.trim().to_string())
    .bind(i64::from(spec.forced))
    .bind(spec.decision.map(|value| value.to_string()))
    .bind(at)
    .fetch_one(connection)
    .await?;
    event_from_row(&row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(moves: &[(AliasAction, Option<&str>)]) -> Vec<(AliasAction, Option<String>)> {
        moves
            .iter()
            .map(|(action, from)| (*action, from.map(str::to_string)))
            .collect()
    }

    #[test]
    fn rollback_walks_back_through_moves() {
        use AliasAction::*;
        // a, then b, then c: rollback goes to b, then a, then nothing.
        let mut moves = vec![(Set, None), (Set, Some("a")), (Set, Some("b"))];
        assert_eq!(rollback_target("x", &history(&moves)).unwrap(), "b");
        moves.push((Rollback, Some("c")));
        assert_eq!(rollback_target("x", &history(&moves)).unwrap(), "a");
        moves.push((Rollback, Some("b")));
        let error = rollback_target("x", &history(&moves)).unwrap_err();
        assert!(error.to_string().contains("not set before"), "{error}");
        // A removal is undone by a rollback.
        let moves = vec![(Set, None), (Remove, Some("a"))];
        assert_eq!(rollback_target("x", &history(&moves)).unwrap(), "a");
        assert!(rollback_target("x", &[]).is_err());
    }
}
