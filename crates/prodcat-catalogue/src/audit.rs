//! The audit log: every write through the API (who, with which role, what, on which target,
//! when, from which address, and the answer's status), queryable by admins.

use prodcat_storage::{now_ms, Database};
use sqlx::Row;

use crate::CatalogueError;

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub role: String,
    /// Method and route, e.g. `POST /v1/products`.
    pub action: String,
    /// The request path (the object acted on).
    pub target: String,
    /// A short summary the handler adds (a product id, a job id, a model version).
    pub detail: String,
    pub client_address: String,
    pub status: i64,
}

/// Filters of the audit listing.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub actor: Option<String>,
    pub limit: i64,
}

/// Appends an entry (its `id` and, when 0, its time are filled in).
pub async fn record(database: &Database, entry: &AuditEntry) -> Result<(), CatalogueError> {
    sqlx::query(
        "INSERT INTO audit_log (at_ms, actor, role, action, target, detail, client_address, \
         status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(if entry.at_ms == 0 {
        now_ms()
    } else {
        entry.at_ms
    })
    .bind(entry.actor.clone())
    .bind(entry.role.clone())
    .bind(entry.action.clone())
    .bind(entry.target.clone())
    .bind(entry.detail.clone())
    .bind(entry.client_address.clone())
    .bind(entry.status)
    .execute(database.pool())
    .await?;
    Ok(())
}

/// Entries matching the filter, newest first.
pub async fn list(
    database: &Database,
    filter: &AuditFilter,
) -> Result<Vec<AuditEntry>, CatalogueError> {
    let mut conditions = Vec::new();
    let mut next = 1;
    if filter.since_ms.is_some() {
        conditions.push(format!("at_ms >= ${next}"));
        next += 1;
    }
    if filter.actor.is_some() {
        conditions.push(format!("actor = ${next}"));
        next += 1;
    }
    let condition = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT id, at_ms, actor, role, action, target, detail, client_address, status \
         FROM audit_log {condition} ORDER BY id DESC LIMIT ${next}"
    );
    let mut query = sqlx::query(&sql);
    if let Some(since) = filter.since_ms {
        query = query.bind(since);
    }
    if let Some(actor) = &filter.actor {
        query = query.bind(actor.clone());
    }
    let rows = query
        .bind(filter.limit.clamp(1, 10_000))
        .fetch_all(database.pool())
        .await?;
    rows.iter()
        .map(|row| {
            Ok(AuditEntry {
                id: row.try_get("id")?,
                at_ms: row.try_get("at_ms")?,
                actor: row.try_get("actor")?,
                role: row.try_get("role")?,
                action: row.try_get("action")?,
                target: row.try_get("target")?,
                detail: row.try_get("detail")?,
                client_address: row.try_get("client_address")?,
                status: row.try_get("status")?,
            })
        })
        .collect()
}
