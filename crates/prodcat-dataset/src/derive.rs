//! Deriving a dataset version from a parent version and what arrived since: the labels reviewers
//! gave to catalogue products (review decisions not yet folded into a version) and the labelled
//! rows of versions imported after the parent.
//!
//! Parent rows keep their split, so a model's held-out rows never move into training; new rows
//! get the parent's seeded, stratified split; a product that is already in the parent keeps its
//! split and takes its new label. Deriving is idempotent: versions are content-addressed, and the
//! review decisions used are marked with the version id only after it exists, so an interrupted
//! derivation, run again, gives the same version.

use std::collections::{BTreeMap, HashMap, HashSet};

use prodcat_domain::{CategoryCode, DatasetVersionId};
use prodcat_storage::{now_ms, Database, ObjectStorage, SqlPlaceholders};
use serde::Serialize;
use sqlx::Row;

use crate::import::record_hash;
use crate::split::SplitRatios;
use crate::version::{
    create_version, load_rows, resolve_version, DatasetVersion, NewVersionRow, VersionMetadata,
};
use crate::DatasetError;

/// Which new rows a derivation folds in.
#[derive(Debug, Clone)]
pub struct DeriveOptions {
    /// Labels from review decisions not yet used by a version.
    pub include_reviewed: bool,
    /// Labelled rows of versions imported after the parent was created.
    pub include_imports: bool,
    /// Free text stored with the version.
    pub note: String,
}

impl Default for DeriveOptions {
    fn default() -> Self {
        Self {
            include_reviewed: true,
            include_imports: true,
            note: String::new(),
        }
    }
}

/// What a derivation did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeriveOutcome {
    /// The new version, or the parent itself when nothing new arrived.
    pub version: DatasetVersion,
    pub parent: DatasetVersionId,
    /// False when nothing new arrived (the parent is returned) or an identical version existed.
    pub created: bool,
    /// Reviewed products added as new rows.
    pub reviewed_added: usize,
    /// Reviewed products already in the parent whose label changed (they keep their split).
    pub reviewed_relabelled: usize,
    /// Reviewed products already in the parent with the same label and text (left as they were).
    pub reviewed_unchanged: usize,
    /// Labelled rows taken from later imports (new products or replacements).
    pub imported_rows: usize,
    /// Versions whose rows were folded in.
    pub imported_versions: Vec<DatasetVersionId>,
    /// Review decisions marked as used by this version.
    pub decisions_marked: usize,
}

impl DeriveOutcome {
    /// Rows that differ from the parent (added or relabelled).
    pub fn new_rows(&self) -> usize {
        self.reviewed_added + self.reviewed_relabelled + self.imported_rows
    }
}

/// One reviewed product: the latest decision about it wins.
struct ReviewedProduct {
    product_id: i64,
    category: CategoryCode,
    designation: String,
    description: String,
    image_hash: Option<String>,
}

/// A record to write before the version that uses it.
struct NewRecord {
    hash: String,
    product_id: i64,
    image_id: i64,
    designation: String,
    description: String,
    category: CategoryCode,
    image_hash: Option<String>,
}

/// Derives a version from `parent` (a reference: id, prefix or `latest`) plus what arrived since.
/// With nothing new, returns the parent unchanged (`created: false`, no new rows).
pub async fn derive_version(
    database: &Database,
    objects: &ObjectStorage,
    parent: &str,
    options: &DeriveOptions,
) -> Result<DeriveOutcome, DatasetError> {
    let parent = resolve_version(database, parent).await?;
    let parent_rows = load_rows(database, &parent.id, None).await?;
    let mut rows: Vec<NewVersionRow> = parent_rows
        .iter()
        .map(|row| NewVersionRow {
            record_hash: row.record_hash.clone(),
            product_id: row.product_id,
            source_index: row.source_index,
            category: row.category,
            split: Some(row.split),
        })
        .collect();
    let mut position_of: HashMap<i64, usize> = rows
        .iter()
        .enumerate()
        .map(|(position, row)| (row.product_id, position))
        .collect();
    let mut outcome = DeriveOutcome {
        version: parent.clone(),
        parent: parent.id.clone(),
        created: false,
        reviewed_added: 0,
        reviewed_relabelled: 0,
        reviewed_unchanged: 0,
        imported_rows: 0,
        imported_versions: Vec::new(),
        decisions_marked: 0,
    };

    // Labelled rows of versions imported after the parent, oldest first.
    if options.include_imports {
        let later: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM dataset_versions WHERE parent_id IS NULL AND created_at_ms > $1 \
             ORDER BY created_at_ms, id",
        )
        .bind(parent.created_at_ms)
        .fetch_all(database.pool())
        .await?;
        for id in later {
            let id = DatasetVersionId::parse(&id)?;
            let mut used = false;
            for row in load_rows(database, &id, None).await? {
                let Some(category) = row.category else {
                    continue;
                };
                match position_of.get(&row.product_id) {
                    Some(&position) if rows[position].record_hash == row.record_hash => {}
                    Some(&position) => {
                        rows[position].record_hash = row.record_hash.clone();
                        rows[position].category = Some(category);
                        outcome.imported_rows += 1;
                        used = true;
                    }
                    None => {
                        position_of.insert(row.product_id, rows.len());
                        rows.push(NewVersionRow {
                            record_hash: row.record_hash.clone(),
                            product_id: row.product_id,
                            source_index: row.source_index,
                            category: Some(category),
                            split: None,
                        });
                        outcome.imported_rows += 1;
                        used = true;
                    }
                }
            }
            if used {
                outcome.imported_versions.push(id);
            }
        }
    }

    // Reviewed products: the latest unused decision per product.
    let mut decision_ids: Vec<i64> = Vec::new();
    let mut records: Vec<NewRecord> = Vec::new();
    if options.include_reviewed {
        let (reviewed, ids) = reviewed_products(database).await?;
        decision_ids = ids;
        let parent_by_product: HashMap<i64, &crate::version::DatasetRow> = parent_rows
            .iter()
            .map(|row| (row.product_id, row))
            .collect();
        let mut known_images = known_images(database, &reviewed).await?;
        for product in reviewed {
            let existing = parent_by_product.get(&product.product_id);
            if let Some(existing) = existing {
                if existing.category == Some(product.category)
                    && existing.designation == product.designation
                    && existing.description == product.description
                {
                    outcome.reviewed_unchanged += 1;
                    continue;
                }
            }
            let image_hash = match product
                .image_hash
                .clone()
                .or_else(|| existing.and_then(|row| row.image_hash.clone()))
            {
                Some(hash) => register_image(database, objects, &hash, &mut known_images).await?,
                None => None,
            };
            let image_id = existing.map(|row| row.image_id).unwrap_or(0);
            let hash = record_hash(
                product.product_id,
                image_id,
                &product.designation,
                &product.description,
                Some(product.category),
                image_hash.as_deref(),
            );
            match position_of.get(&product.product_id) {
                Some(&position) => {
                    rows[position].record_hash = hash.clone();
                    rows[position].category = Some(product.category);
                    outcome.reviewed_relabelled += 1;
                }
                None => {
                    position_of.insert(product.product_id, rows.len());
                    rows.push(NewVersionRow {
                        record_hash: hash.clone(),
                        product_id: product.product_id,
                        source_index: -1,
                        category: Some(product.category),
                        split: None,
                    });
                    outcome.reviewed_added += 1;
                }
            }
            records.push(NewRecord {
                hash,
                product_id: product.product_id,
                image_id,
                designation: product.designation,
                description: product.description,
                category: product.category,
                image_hash,
            });
        }
    }

    if outcome.new_rows() == 0 {
        // Nothing changes the parent; decisions that only confirmed it are folded into it.
        outcome.decisions_marked = mark_decisions(database, &decision_ids, &parent.id).await?;
        return Ok(outcome);
    }
    write_records(database, &records).await?;
    let split_ratios = SplitRatios::parse(&parent.split_ratios).unwrap_or_default();
    let mut source = format!(
        "derived from {}: {} reviewed labels, {} imported rows",
        parent.id,
        outcome.reviewed_added + outcome.reviewed_relabelled,
        outcome.imported_rows
    );
    if !outcome.imported_versions.is_empty() {
        let names: Vec<&str> = outcome
            .imported_versions
            .iter()
            .map(|id| id.as_str())
            .collect();
        source.push_str(&format!(" (from {})", names.join(", ")));
    }
    let (version, created) = create_version(
        database,
        rows,
        &VersionMetadata {
            parent: Some(parent.id.clone()),
            source,
            note: options.note.clone(),
            split_seed: parent.split_seed as u64,
            split_ratios,
        },
    )
    .await?;
    outcome.decisions_marked = mark_decisions(database, &decision_ids, &version.id).await?;
    outcome.version = version;
    outcome.created = created;
    Ok(outcome)
}

/// Unused review decisions joined with their (not deleted) products; returns the latest decision
/// per product, ordered by product id, and the ids of every decision considered.
async fn reviewed_products(
    database: &Database,
) -> Result<(Vec<ReviewedProduct>, Vec<i64>), DatasetError> {
    let rows = sqlx::query(
        "SELECT d.id AS decision_id, d.product_id AS product_id, d.category_code AS code, \
         p.designation AS designation, p.description AS description, p.image_hash AS image_hash \
         FROM review_decisions d JOIN products p ON p.id = d.product_id \
         WHERE d.used_in_dataset IS NULL AND p.deleted_at_ms IS NULL \
         ORDER BY d.at_ms, d.id",
    )
    .fetch_all(database.pool())
    .await?;
    let mut latest: BTreeMap<i64, ReviewedProduct> = BTreeMap::new();
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        let decision_id: i64 = row.try_get("decision_id")?;
        let product_id: i64 = row.try_get("product_id")?;
        let code: i64 = row.try_get("code")?;
        let Ok(category) = u16::try_from(code)
            .map_err(|_| ())
            .and_then(|code| CategoryCode::from_u16(code).map_err(|_| ()))
        else {
            tracing::warn!(
                decision = decision_id,
                code,
                "review decision with an unknown category code skipped"
            );
            continue;
        };
        ids.push(decision_id);
        latest.insert(
            product_id,
            ReviewedProduct {
                product_id,
                category,
                designation: row.try_get("designation")?,
                description: row.try_get("description")?,
                image_hash: row.try_get("image_hash")?,
            },
        );
    }
    Ok((latest.into_values().collect(), ids))
}

/// Image hashes of `products` that the images table already knows.
async fn known_images(
    database: &Database,
    products: &[ReviewedProduct],
) -> Result<HashSet<String>, DatasetError> {
    let hashes: Vec<String> = products
        .iter()
        .filter_map(|p| p.image_hash.clone())
        .collect();
    let mut known = HashSet::new();
    for batch in hashes.chunks(64) {
        let sql = format!(
            "SELECT hash FROM images WHERE hash IN ({})",
            (1..=batch.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for hash in batch {
            query = query.bind(hash.clone());
        }
        known.extend(query.fetch_all(database.pool()).await?);
    }
    Ok(known)
}

/// Makes sure an image hash is in the images table (records reference it). An image only in the
/// object store is measured and registered; one that is nowhere is dropped from the row.
async fn register_image(
    database: &Database,
    objects: &ObjectStorage,
    hash: &str,
    known: &mut HashSet<String>,
) -> Result<Option<String>, DatasetError> {
    if known.contains(hash) {
        return Ok(Some(hash.to_string()));
    }
    let Ok(parsed) = prodcat_domain::ContentHash::parse(hash) else {
        return Ok(None);
    };
    let bytes = match objects.get(&prodcat_storage::image_key(&parsed)).await {
        Ok(bytes) => bytes,
        Err(prodcat_storage::StorageError::ObjectNotFound { .. }) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let dimensions = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .ok()
        .and_then(|reader| reader.into_dimensions().ok());
    let Some((width, height)) = dimensions else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO images (hash, width, height, byte_length, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING",
    )
    .bind(hash.to_string())
    .bind(i64::from(width))
    .bind(i64::from(height))
    .bind(bytes.len() as i64)
    .bind(now_ms())
    .execute(database.pool())
    .await?;
    known.insert(hash.to_string());
    Ok(Some(hash.to_string()))
}

async fn write_records(database: &Database, records: &[NewRecord]) -> Result<(), DatasetError> {
    for batch in records.chunks(64) {
        let sql = format!(
            "INSERT INTO dataset_records (record_hash, product_id, image_id, designation, \
             description, category_code, image_hash) VALUES {} ON CONFLICT (record_hash) DO NOTHING",
            SqlPlaceholders::values(batch.len(), 7)
        );
        let mut query = sqlx::query(&sql);
        for record in batch {
            query = query
                .bind(record.hash.clone())
                .bind(record.product_id)
                .bind(record.image_id)
                .bind(record.designation.clone())
                .bind(record.description.clone())
                .bind(i64::from(record.category.value()))
                .bind(record.image_hash.clone());
        }
        query.execute(database.pool()).await?;
    }
    Ok(())
}

async fn mark_decisions(
    database: &Database,
    ids: &[i64],
    version: &DatasetVersionId,
) -> Result<usize, DatasetError> {
    let mut marked = 0;
    for batch in ids.chunks(64) {
        let sql = format!(
            "UPDATE review_decisions SET used_in_dataset = $1 \
             WHERE used_in_dataset IS NULL AND id IN ({})",
            (2..batch.len() + 2)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut query = sqlx::query(&sql).bind(version.as_str().to_string());
        for id in batch {
            query = query.bind(*id);
        }
        marked += query.execute(database.pool()).await?.rows_affected() as usize;
    }
    Ok(marked)
}
