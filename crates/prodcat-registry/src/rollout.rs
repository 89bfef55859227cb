//! Live rollouts of a candidate version beside the champion:
//!
//! - a **shadow** scores a share of the live predictions off the request path (the caller
//!   always gets the champion's answer); its results are logged beside the champion's;
//! - a **canary** answers a share of the live requests in the champion's place, sticky per
//!   product or per client, and is rolled back automatically when it does worse than the
//!   champion by more than its guard rails allow.
//!
//! Each is an alias (`shadow`, `canary`) whose moves land in the alias history with who, when
//! and why (an automatic rollback records its figures as the move's decision), plus a row of
//! `rollouts` with the share, the stickiness and the guard rails. Every replica reads them from
//! the database, so a rollout set through one applies on all.

use prodcat_domain::ModelVersionId;
use prodcat_storage::{now_ms, Database};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::registry::{
    alias_target, move_alias, remove_alias_with_decision, resolve, AliasEvent, MoveSpec, Target,
};
use crate::RegistryError;

/// The alias of the shadow version.
pub const SHADOW: &str = "shadow";
/// The alias of the canary version.
pub const CANARY: &str = "canary";

/// Which kind of rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutKind {
    Shadow,
    Canary,
}

impl RolloutKind {
    pub fn alias(self) -> &'static str {
        match self {
            RolloutKind::Shadow => SHADOW,
            RolloutKind::Canary => CANARY,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.alias()
    }
}

/// What keeps a product (or a client) on the same side of a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stickiness {
    /// The same product always goes to the same version (else the client decides).
    Product,
    /// The same client always goes to the same version.
    Client,
}

impl Stickiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Stickiness::Product => "product",
            Stickiness::Client => "client",
        }
    }

    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        match text {
            "product" => Ok(Stickiness::Product),
            "client" => Ok(Stickiness::Client),
            other => Err(RegistryError::InvalidPolicy(format!(
                "unknown stickiness {other:?}: expected product or client"
            ))),
        }
    }
}

/// When a canary is rolled back automatically.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardRails {
    /// Roll back when the canary's error rate exceeds the champion's by more than this
    /// (absolute, e.g. 0.02 = two points).
    pub max_error_rate_increase: f64,
    /// Roll back when the canary's p99 latency exceeds the champion's by more than this factor
    /// (e.g. 0.5 = 50 % slower).
    pub max_p99_increase: f64,
    /// Roll back when the canary's weighted F1 on reviewed products falls below the
    /// champion's by more than this...
    pub max_f1_drop: f64,
    /// ...once each has at least this many reviewed products.
    pub min_labels: usize,
    /// Requests each side needs before the error and latency rails are applied.
    pub min_requests: usize,
}

impl Default for GuardRails {
    fn default() -> Self {
        Self {
            max_error_rate_increase: 0.02,
            max_p99_increase: 0.5,
            max_f1_drop: 0.03,
            min_labels: 50,
            min_requests: 50,
        }
    }
}

impl GuardRails {
    fn check(&self) -> Result<(), RegistryError> {
        let fine = |value: f64| value.is_finite() && value >= 0.0;
        if fine(self.max_error_rate_increase)
            && fine(self.max_p99_increase)
            && fine(self.max_f1_drop)
        {
            Ok(())
        } else {
            Err(RegistryError::InvalidPolicy(
                "guard-rail margins must be finite and not negative".to_string(),
            ))
        }
    }
}

/// An active rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub kind: RolloutKind,
    pub version: ModelVersionId,
    /// Share of the live traffic, 0 to 1.
    pub share: f64,
    pub stickiness: Stickiness,
    pub guard: GuardRails,
    pub started_by: String,
    pub started_at_ms: i64,
    pub reason: String,
}

/// A rollout to start.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub kind: RolloutKind,
    /// A version reference (id, prefix, alias, `latest`).
    pub version: String,
    pub share: f64,
    pub stickiness: Stickiness,
    pub guard: GuardRails,
    pub actor: String,
    pub reason: String,
}

/// A rollout's settings as stored beside its alias.
pub(crate) struct RolloutSettings {
    share: f64,
    stickiness: Stickiness,
    /// The guard rails as JSON.
    guard: String,
    started_by: String,
    started_at_ms: i64,
    reason: String,
}

/// Stores (or replaces) the settings of the rollout on `alias`.
pub(crate) async fn store_rollout(
    connection: &mut sqlx::AnyConnection,
    alias: &str,
    settings: &RolloutSettings,
) -> Result<(), RegistryError> {
    sqlx::query(
        "INSERT INTO rollouts (alias, share, stickiness, guard, started_by, started_at_ms, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (alias) DO UPDATE SET share = $2, \
         stickiness = $3, guard = $4, started_by = $5, started_at_ms = $6, reason = $7",
    )
    .bind(alias.to_string())
    .bind(settings.share)
    .bind(settings.stickiness.as_str())
    .bind(settings.guard.clone())
    .bind(settings.started_by.clone())
    .bind(settings.started_at_ms)
    .bind(settings.reason.clone())
    .execute(connection)
    .await?;
    Ok(())
}

/// Starts (or changes) a rollout: the alias points at the version (recorded in the alias
/// history) and its settings are stored, in one transaction.
pub async fn start_rollout(
    database: &Database,
    rollout: &NewRollout,
) -> Result<Rollout, RegistryError> {
    if !(rollout.share > 0.0 && rollout.share <= 1.0) {
        return Err(RegistryError::InvalidPolicy(format!(
            "the share must be above 0 and at most 1 (100 %), not {}",
            rollout.share
        )));
    }
    rollout.guard.check()?;
    crate::validate::actor(&rollout.actor)?;
    let version = resolve(database, &rollout.version).await?;
    let alias = rollout.kind.alias();
    let now = now_ms();
    let settings = RolloutSettings {
        share: rollout.share,
        stickiness: rollout.stickiness,
        guard: serde_json::to_string(&rollout.guard).map_err(|error| RegistryError::Corrupt {
            what: "guard rails".to_string(),
            reason: error.to_string(),
        })?,
        started_by: rollout.actor.clone(),
        started_at_ms: now,
        reason: rollout.reason.clone(),
    };
    if alias_target(database, alias).await?.as_ref() != Some(&version.id) {
        // The alias moves and the settings are stored in one transaction: no reader sees the
        // alias without its rollout.
        let reason = format!(
            "{} started at {:.0} %: {}",
            alias,
            rollout.share * 100.0,
            rollout.reason
        );
        move_alias(
            database,
            MoveSpec {
                alias,
                target: Target::Version(version.id.clone()),
                actor: &rollout.actor,
                reason: &reason,
                forced: false,
                decision: None,
                expected_current: None,
                rollout: Some(&settings),
            },
        )
        .await?;
    } else {
        let mut connection = database.pool().acquire().await?;
        store_rollout(&mut connection, alias, &settings).await?;
    }
    Ok(Rollout {
        kind: rollout.kind,
        version: version.id,
        share: rollout.share,
        stickiness: rollout.stickiness,
        guard: rollout.guard,
        started_by: rollout.actor.clone(),
        started_at_ms: now,
        reason: rollout.reason.clone(),
    })
}

/// Ends a rollout: the alias is removed (recorded with the reason and, for an automatic
/// rollback, the figures behind it). Returns the recorded move, or `None` when no such rollout
/// was running (another replica may have ended it first).
pub async fn stop_rollout(
    database: &Database,
    kind: RolloutKind,
    actor: &str,
    reason: &str,
    figures: Option<serde_json::Value>,
) -> Result<Option<AliasEvent>, RegistryError> {
    let alias = kind.alias();
    // One transaction removes the alias, ends its rollout and records the move with its
    // figures: a reader that sees the rollout gone also sees why.
    let moved = remove_alias_with_decision(database, alias, actor, reason, figures.as_ref()).await;
    match moved {
        Ok(event) => Ok(Some(event)),
        Err(RegistryError::UnknownAlias(_)) => {
            // The alias is already gone (another replica ended the rollout first); clear a
            // settings row left without its alias.
            sqlx::query("DELETE FROM rollouts WHERE alias = $1")
                .bind(alias)
                .execute(database.pool())
                .await?;
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Ends the rollouts of `version` (it became the champion): the canary or shadow served its
/// purpose.
pub async fn finish_rollouts_of(
    database: &Database,
    version: &str,
    actor: &str,
) -> Result<(), RegistryError> {
    let version = resolve(database, version).await?;
    for rollout in active_rollouts(database).await? {
        if rollout.version == version.id {
            stop_rollout(
                database,
                rollout.kind,
                actor,
                &format!(
                    "{} finished: {} was promoted to champion",
                    rollout.kind.as_str(),
                    version.id
                ),
                None,
            )
            .await?;
        }
    }
    Ok(())
}

/// The rollouts running now (an alias that points at a version, with its settings).
pub async fn active_rollouts(database: &Database) -> Result<Vec<Rollout>, RegistryError> {
    let rows = sqlx::query(
        "SELECT alias, share, stickiness, guard, started_by, started_at_ms, reason FROM rollouts \
         ORDER BY alias",
    )
    .fetch_all(database.pool())
    .await?;
    let mut rollouts = Vec::new();
    for row in rows {
        let alias: String = row.try_get("alias")?;
        let kind = match alias.as_str() {
            SHADOW => RolloutKind::Shadow,
            CANARY => RolloutKind::Canary,
            _ => continue,
        };
        let Some(version) = alias_target(database, &alias).await? else {
            continue;
        };
        let stickiness: String = row.try_get("stickiness")?;
        let guard: String = row.try_get("guard")?;
        rollouts.push(Rollout {
            kind,
            version,
            share: row.try_get("share")?,
            stickiness: Stickiness::parse(&stickiness)?,
            guard: serde_json::from_str(&guard).map_err(|error| RegistryError::Corrupt {
                what: format!("guard rails of {alias}"),
                reason: error.to_string(),
            })?,
            started_by: row.try_get("started_by")?,
            started_at_ms: row.try_get("started_at_ms")?,
            reason: row.try_get("reason")?,
        });
    }
    Ok(rollouts)
}

/// The version an alias pointed at, at time `at_ms` (from its history): "which version was
/// champion at T".
pub async fn alias_at(
    database: &Database,
    alias: &str,
    at_ms: i64,
) -> Result<Option<ModelVersionId>, RegistryError> {
    let row = sqlx::query(
        "SELECT to_version FROM alias_history WHERE alias = $1 AND at_ms <= $2 \
         ORDER BY at_ms DESC, id DESC LIMIT 1",
    )
    .bind(alias.to_string())
    .bind(at_ms)
    .fetch_optional(database.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let version: Option<String> = row.try_get("to_version")?;
    Ok(version
        .map(|text| ModelVersionId::parse(&text))
        .transpose()?)
}
