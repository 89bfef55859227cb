//! Immutable dataset versions: creation from rows (import or derivation), listing, inspection,
//! comparison and loading rows for training.
//!
//! A version's id is a hash over its records' content hashes and each row's split, so the same
//! data and split settings always give the same version, whatever the order of the rows.

use std::collections::BTreeMap;

use prodcat_domain::{sha256_hex, CategoryCode, DatasetVersionId};
use prodcat_storage::{now_ms, Database, SqlPlaceholders};
use serde::Serialize;
use sqlx::Row;

use crate::split::{assign_splits, Split, SplitRatios};
use crate::DatasetError;

/// A row to put in a new version.
#[derive(Debug, Clone)]
pub struct NewVersionRow {
    pub record_hash: String,
    pub product_id: i64,
    pub source_index: i64,
    pub category: Option<CategoryCode>,
    /// `None`: assign by the version's seeded, stratified split.
    pub split: Option<Split>,
}

/// Descriptive fields of a new version.
#[derive(Debug, Clone)]
pub struct VersionMetadata {
    pub parent: Option<DatasetVersionId>,
    pub source: String,
    pub note: String,
    pub split_seed: u64,
    pub split_ratios: SplitRatios,
}

/// A stored dataset version.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetVersion {
    pub id: DatasetVersionId,
    pub content_hash: String,
    pub parent: Option<DatasetVersionId>,
    pub created_at_ms: i64,
    pub source: String,
    pub note: String,
    pub row_count: i64,
    pub labelled_count: i64,
    pub image_count: i64,
    pub missing_image_count: i64,
    pub empty_description_count: i64,
    pub split_seed: i64,
    pub split_ratios: String,
}

/// A version with its class distribution per split.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionDetails {
    pub version: DatasetVersion,
    /// (category code or None for unlabelled, train, validation, test).
    pub class_distribution: Vec<(Option<CategoryCode>, i64, i64, i64)>,
    pub split_sizes: (i64, i64, i64),
}

/// One row of a version, ready for training or evaluation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetRow {
    pub position: i64,
    pub product_id: i64,
    pub image_id: i64,
    pub source_index: i64,
    pub designation: String,
    pub description: String,
    pub category: Option<CategoryCode>,
    pub image_hash: Option<String>,
    pub split: Split,
    pub record_hash: String,
}

/// What changed between two versions, keyed by product id.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionDiff {
    pub from: DatasetVersionId,
    pub to: DatasetVersionId,
    pub added: i64,
    pub removed: i64,
    pub relabelled: i64,
    pub content_changed: i64,
    pub unchanged: i64,
    /// (product id, old code, new code) for the first relabelled rows.
    pub relabelled_examples: Vec<(i64, Option<u16>, Option<u16>)>,
    pub added_examples: Vec<i64>,
    pub removed_examples: Vec<i64>,
}

const VERSION_COLUMNS: &str = "id, content_hash, parent_id, created_at_ms, source, note, row_count, \
    labelled_count, image_count, missing_image_count, empty_description_count, split_seed, split_ratios";

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<DatasetVersion, DatasetError> {
    let id: String = row.try_get("id")?;
    let parent: Option<String> = row.try_get("parent_id")?;
    Ok(DatasetVersion {
        id: DatasetVersionId::parse(&id)?,
        content_hash: row.try_get("content_hash")?,
        parent: parent.map(|p| DatasetVersionId::parse(&p)).transpose()?,
        created_at_ms: row.try_get("created_at_ms")?,
        source: row.try_get("source")?,
        note: row.try_get("note")?,
        row_count: row.try_get("row_count")?,
        labelled_count: row.try_get("labelled_count")?,
        image_count: row.try_get("image_count")?,
        missing_image_count: row.try_get("missing_image_count")?,
        empty_description_count: row.try_get("empty_description_count")?,
        split_seed: row.try_get("split_seed")?,
        split_ratios: row.try_get("split_ratios")?,
    })
}

async fn find_version(
    database: &Database,
    id: &str,
) -> Result<Option<DatasetVersion>, DatasetError> {
    let row = sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM dataset_versions WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(database.pool())
    .await?;
    row.map(|row| version_from_row(&row)).transpose()
}

/// Resolves `latest` or a version id (a unique prefix of the id is accepted too).
pub async fn resolve_version(
    database: &Database,
    reference: &str,
) -> Result<DatasetVersion, DatasetError> {
    let reference = reference.trim();
    if reference == "latest" {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM dataset_versions ORDER BY created_at_ms DESC, id DESC LIMIT 1"
        ))
        .fetch_optional(database.pool())
        .await?;
        return match row {
            Some(row) => version_from_row(&row),
            None => Err(DatasetError::UnknownVersion(
                "latest (no dataset has been imported yet)".to_string(),
            )),
        };
    }
    if let Some(version) = find_version(database, reference).await? {
        return Ok(version);
    }
    if reference.len() >= 5 {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM dataset_versions WHERE id LIKE $1 LIMIT 2"
        ))
        .bind(format!("{reference}%"))
        .fetch_all(database.pool())
        .await?;
        if rows.len() == 1 {
            return version_from_row(&rows[0]);
        }
    }
    Err(DatasetError::UnknownVersion(reference.to_string()))
}

/// Creates a version from rows unless an identical one exists. Returns the version and whether it
/// was created. The version and all its rows are written in one transaction.
pub async fn create_version(
    database: &Database,
    mut rows: Vec<NewVersionRow>,
    metadata: &VersionMetadata,
) -> Result<(DatasetVersion, bool), DatasetError> {
    if rows.is_empty() {
        return Err(DatasetError::NothingToImport { problems: 0 });
    }
    let unassigned: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].split.is_none())
        .collect();
    let keys: Vec<(i64, Option<u16>)> = unassigned
        .iter()
        .map(|&i| (rows[i].product_id, rows[i].category.map(|c| c.value())))
        .collect();
    let splits = assign_splits(&keys, metadata.split_seed, metadata.split_ratios);
    for (&position, split) in unassigned.iter().zip(splits) {
        rows[position].split = Some(split);
    }
    let mut lines: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "{} {}",
                row.record_hash,
                row.split.unwrap_or(Split::Train).as_str()
            )
        })
        .collect();
    lines.sort();
    let content_hash = sha256_hex(
        format!(
            "prodcat-dataset-version-1\nseed {}\nratios {}\n{}",
            metadata.split_seed,
            metadata.split_ratios.to_text(),
            lines.join("\n")
        )
        .as_bytes(),
    );
    let id = DatasetVersionId::from_hash(&content_hash);
    if let Some(existing) = find_version(database, id.as_str()).await? {
        return Ok((existing, false));
    }

    let mut transaction = database.begin_write().await?;
    sqlx::query(
        "INSERT INTO dataset_versions (id, content_hash, parent_id, created_at_ms, source, note, \
         row_count, labelled_count, image_count, missing_image_count, empty_description_count, \
         split_seed, split_ratios) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0, 0, 0, $7, $8)",
    )
    .bind(id.as_str().to_string())
    .bind(content_hash.clone())
    .bind(metadata.parent.as_ref().map(|p| p.as_str().to_string()))
    .bind(now_ms())
    .bind(metadata.source.clone())
    .bind(metadata.note.clone())
    .bind(metadata.split_seed as i64)
    .bind(metadata.split_ratios.to_text())
    .execute(&mut *transaction)
    .await?;
    // Small statements: SQLite's cost of binding named parameters grows with their square.
    const ROWS_PER_STATEMENT: usize = 64;
    for (batch_number, batch) in rows.chunks(ROWS_PER_STATEMENT).enumerate() {
        let sql = format!(
            "INSERT INTO dataset_version_rows (version_id, position, record_hash, product_id, \
             source_index, split) VALUES {}",
            SqlPlaceholders::values(batch.len(), 6)
        );
        let mut query = sqlx::query(&sql);
        for (offset, row) in batch.iter().enumerate() {
            query = query
                .bind(id.as_str().to_string())
                .bind((batch_number * ROWS_PER_STATEMENT + offset) as i64)
                .bind(row.record_hash.clone())
                .bind(row.product_id)
                .bind(row.source_index)
                .bind(row.split.unwrap_or(Split::Train).as_str().to_string());
        }
        query.execute(&mut *transaction).await?;
    }
    sqlx::query(
        "UPDATE dataset_versions SET \
         row_count = (SELECT COUNT(*) FROM dataset_version_rows m WHERE m.version_id = $1), \
         labelled_count = (SELECT COUNT(r.category_code) FROM dataset_version_rows m \
            JOIN dataset_records r ON r.record_hash = m.record_hash WHERE m.version_id = $1), \
         image_count = (SELECT COUNT(r.image_hash) FROM dataset_version_rows m \
            JOIN dataset_records r ON r.record_hash = m.record_hash WHERE m.version_id = $1), \
         missing_image_count = (SELECT COUNT(*) FROM dataset_version_rows m \
            JOIN dataset_records r ON r.record_hash = m.record_hash \
            WHERE m.version_id = $1 AND r.image_hash IS NULL), \
         empty_description_count = (SELECT COUNT(*) FROM dataset_version_rows m \
            JOIN dataset_records r ON r.record_hash = m.record_hash \
            WHERE m.version_id = $1 AND TRIM(r.description) = '') \
         WHERE id = $1",
    )
    .bind(id.as_str().to_string())
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    let version = find_version(database, id.as_str())
        .await?
        .ok_or_else(|| DatasetError::UnknownVersion(id.to_string()))?;
    Ok((version, true))
}

/// All versions, newest first.
pub async fn list_versions(database: &Database) -> Result<Vec<DatasetVersion>, DatasetError> {
    let rows = sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM dataset_versions ORDER BY created_at_ms DESC, id DESC"
    ))
    .fetch_all(database.pool())
    .await?;
    rows.iter().map(version_from_row).collect()
}

/// A version with its class distribution per split.
pub async fn show_version(
    database: &Database,
    reference: &str,
) -> Result<VersionDetails, DatasetError> {
    let version = resolve_version(database, reference).await?;
    let rows = sqlx::query(
        "SELECT r.category_code AS code, m.split AS split, COUNT(*) AS n \
         FROM dataset_version_rows m JOIN dataset_records r ON r.record_hash = m.record_hash \
         WHERE m.version_id = $1 GROUP BY r.category_code, m.split",
    )
    .bind(version.id.as_str().to_string())
    .fetch_all(database.pool())
    .await?;
    let mut distribution: BTreeMap<Option<u16>, (i64, i64, i64)> = BTreeMap::new();
    let mut sizes = (0, 0, 0);
    for row in rows {
        let code: Option<i64> = row.try_get("code")?;
        let split: String = row.try_get("split")?;
        let count: i64 = row.try_get("n")?;
        let entry = distribution.entry(code.map(|c| c as u16)).or_default();
        match Split::parse(&split) {
            Some(Split::Train) => {
                entry.0 += count;
                sizes.0 += count;
            }
            Some(Split::Validation) => {
                entry.1 += count;
                sizes.1 += count;
            }
            Some(Split::Test) => {
                entry.2 += count;
                sizes.2 += count;
            }
            None => {}
        }
    }
    let class_distribution = distribution
        .into_iter()
        .map(|(code, (train, validation, test))| {
            let code = code.and_then(|c| CategoryCode::from_u16(c).ok());
            (code, train, validation, test)
        })
        .collect();
    Ok(VersionDetails {
        version,
        class_distribution,
        split_sizes: sizes,
    })
}

/// The columns of a version's rows, joined with their records.
const ROW_SELECT: &str =
    "SELECT m.position, m.product_id, m.source_index, m.split, m.record_hash, \
     r.image_id, r.designation, r.description, r.category_code, r.image_hash \
     FROM dataset_version_rows m JOIN dataset_records r ON r.record_hash = m.record_hash \
     WHERE m.version_id = $1";

fn row_from(row: &sqlx::any::AnyRow) -> Result<DatasetRow, DatasetError> {
    let split: String = row.try_get("split")?;
    let code: Option<i64> = row.try_get("category_code")?;
    Ok(DatasetRow {
        position: row.try_get("position")?,
        product_id: row.try_get("product_id")?,
        image_id: row.try_get("image_id")?,
        source_index: row.try_get("source_index")?,
        designation: row.try_get("designation")?,
        description: row.try_get("description")?,
        category: code.map(|c| CategoryCode::from_u16(c as u16)).transpose()?,
        image_hash: row.try_get("image_hash")?,
        split: Split::parse(&split).unwrap_or(Split::Train),
        record_hash: row.try_get("record_hash")?,
    })
}

/// Rows of a version in their stored order, optionally only one split.
pub async fn load_rows(
    database: &Database,
    version: &DatasetVersionId,
    split: Option<Split>,
) -> Result<Vec<DatasetRow>, DatasetError> {
    let mut sql = String::from(ROW_SELECT);
    if split.is_some() {
        sql.push_str(" AND m.split = $2");
    }
    sql.push_str(" ORDER BY m.position");
    let mut query = sqlx::query(&sql).bind(version.as_str().to_string());
    if let Some(split) = split {
        query = query.bind(split.as_str().to_string());
    }
    let rows = query.fetch_all(database.pool()).await?;
    rows.iter().map(row_from).collect()
}

/// Up to `limit` rows of a version labelled `category`, in their stored order (samples of a
/// class to look at).
pub async fn class_rows(
    database: &Database,
    version: &DatasetVersionId,
    category: CategoryCode,
    limit: usize,
) -> Result<Vec<DatasetRow>, DatasetError> {
    let sql = format!("{ROW_SELECT} AND r.category_code = $2 ORDER BY m.position LIMIT $3");
    let rows = sqlx::query(&sql)
        .bind(version.as_str().to_string())
        .bind(i64::from(category.value()))
        .bind(limit as i64)
        .fetch_all(database.pool())
        .await?;
    rows.iter().map(row_from).collect()
}

/// Compares two versions row by row (by product id).
pub async fn diff_versions(
    database: &Database,
    from: &str,
    to: &str,
) -> Result<VersionDiff, DatasetError> {
    let from = resolve_version(database, from).await?;
    let to = resolve_version(database, to).await?;
    let pool = database.pool();
    let from_id = from.id.as_str().to_string();
    let to_id = to.id.as_str().to_string();
    let only_in = |a: &str, b: &str| {
        format!(
            "SELECT x.product_id FROM dataset_version_rows x WHERE x.version_id = '{a}' AND NOT EXISTS \
             (SELECT 1 FROM dataset_version_rows y WHERE y.version_id = '{b}' AND y.product_id = x.product_id) \
             ORDER BY x.product_id"
        )
    };
    // Version ids are validated (prefix + hex), so inlining them is safe.
    let added: Vec<i64> = sqlx::query_scalar(&only_in(&to_id, &from_id))
        .fetch_all(pool)
        .await?;
    let removed: Vec<i64> = sqlx::query_scalar(&only_in(&from_id, &to_id))
        .fetch_all(pool)
        .await?;
    let pairs = sqlx::query(
        "SELECT a.product_id AS product_id, ra.category_code AS old_code, rb.category_code AS new_code, \
         a.record_hash AS old_hash, b.record_hash AS new_hash \
         FROM dataset_version_rows a \
         JOIN dataset_version_rows b ON b.product_id = a.product_id AND b.version_id = $2 \
         JOIN dataset_records ra ON ra.record_hash = a.record_hash \
         JOIN dataset_records rb ON rb.record_hash = b.record_hash \
         WHERE a.version_id = $1 ORDER BY a.product_id",
    )
    .bind(from_id)
    .bind(to_id)
    .fetch_all(pool)
    .await?;
    let mut diff = VersionDiff {
        from: from.id.clone(),
        to: to.id.clone(),
        added: added.len() as i64,
        removed: removed.len() as i64,
        relabelled: 0,
        content_changed: 0,
        unchanged: 0,
        relabelled_examples: Vec::new(),
        added_examples: added.into_iter().take(10).collect(),
        removed_examples: removed.into_iter().take(10).collect(),
    };
    for row in pairs {
        let old_code: Option<i64> = row.try_get("old_code")?;
        let new_code: Option<i64> = row.try_get("new_code")?;
        let old_hash: String = row.try_get("old_hash")?;
        let new_hash: String = row.try_get("new_hash")?;
        if old_code != new_code {
            diff.relabelled += 1;
            if diff.relabelled_examples.len() < 10 {
                diff.relabelled_examples.push((
                    row.try_get("product_id")?,
                    old_code.map(|c| c as u16),
                    new_code.map(|c| c as u16),
                ));
            }
        } else if old_hash != new_hash {
            diff.content_changed += 1;
        } else {
            diff.unchanged += 1;
        }
    }
    Ok(diff)
}
