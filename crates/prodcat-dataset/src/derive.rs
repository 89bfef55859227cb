//! Deriving a dataset version from a parent version and what arrived since: the labels reviewers
//! gave to catalogue products (read by the caller from the catalogue, which owns the review
//! decisions, and marked used by it once the version exists) and the labelled rows of versions
//! imported after the parent.
//!
//! Parent rows keep their split, so a model's held-out rows never move into training; new rows
//! get the parent's seeded, stratified split; a product that is already in the parent keeps its
//! split and takes its new label. Deriving is idempotent: versions are content-addressed, so an
//! interrupted derivation, run again with the same labels, gives the same version.

use std::collections::{HashMap, HashSet};

use prodcat_domain::{CategoryCode, DatasetVersionId};
use prodcat_storage::{now_ms, Database, ObjectStorage};
use serde::Serialize;

use crate::records::{insert_records, NewRecord};
use crate::split::SplitRatios;
use crate::version::{
    create_version, load_rows, resolve_version, DatasetRow, DatasetVersion, NewVersionRow,
    VersionMetadata,
};
use crate::DatasetError;

/// A product a reviewer labelled (the latest decision about it).
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewedLabel {
    pub product_id: i64,
    pub category: CategoryCode,
    pub designation: String,
    pub description: String,
    pub image_hash: Option<String>,
}

/// Which new rows a derivation folds in.
#[derive(Debug, Clone)]
pub struct DeriveOptions {
    /// Reviewers' labels to fold in (one per product).
    pub reviewed: Vec<ReviewedLabel>,
    /// Labelled rows of versions imported after the parent was created.
    pub include_imports: bool,
    /// Free text stored with the version.
    pub note: String,
}

impl Default for DeriveOptions {
    fn default() -> Self {
        Self {
            reviewed: Vec::new(),
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
}

impl DeriveOutcome {
    /// Rows that differ from the parent (added or relabelled).
    pub fn new_rows(&self) -> usize {
        self.reviewed_added + self.reviewed_relabelled + self.imported_rows
    }
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
    let mut derivation = Derivation::new(&parent, &parent_rows);
    if options.include_imports {
        derivation.fold_imports(database, &parent).await?;
    }
    if !options.reviewed.is_empty() {
        derivation
            .fold_reviews(database, objects, &parent_rows, &options.reviewed)
            .await?;
    }
    derivation.write(database, &parent, options).await
}

/// A derivation in progress: the rows of the new version (the parent's first), the records
/// they need, and what was folded in.
struct Derivation {
    rows: Vec<NewVersionRow>,
    /// Position in `rows` of each product.
    position_of: HashMap<i64, usize>,
    /// Records of reviewed products, written before the version.
    records: Vec<NewRecord>,
    outcome: DeriveOutcome,
}

impl Derivation {
    fn new(parent: &DatasetVersion, parent_rows: &[DatasetRow]) -> Self {
        let rows: Vec<NewVersionRow> = parent_rows
            .iter()
            .map(|row| NewVersionRow {
                record_hash: row.record_hash.clone(),
                product_id: row.product_id,
                source_index: row.source_index,
                category: row.category,
                split: Some(row.split),
            })
            .collect();
        let position_of = rows
            .iter()
            .enumerate()
            .map(|(position, row)| (row.product_id, position))
            .collect();
        Self {
            rows,
            position_of,
            records: Vec::new(),
            outcome: DeriveOutcome {
                version: parent.clone(),
                parent: parent.id.clone(),
                created: false,
                reviewed_added: 0,
                reviewed_relabelled: 0,
                reviewed_unchanged: 0,
                imported_rows: 0,
                imported_versions: Vec::new(),
            },
        }
    }

    /// Gives `product_id` the record `record_hash` and label `category`: its row takes them
    /// (keeping its split) when it has one, else a new row is added (its split drawn later).
    /// Returns whether the row is new.
    fn place(
        &mut self,
        product_id: i64,
        record_hash: String,
        category: CategoryCode,
        source_index: i64,
    ) -> bool {
        match self.position_of.get(&product_id) {
            Some(&position) => {
                self.rows[position].record_hash = record_hash;
                self.rows[position].category = Some(category);
                false
            }
            None => {
                self.position_of.insert(product_id, self.rows.len());
                self.rows.push(NewVersionRow {
                    record_hash,
                    product_id,
                    source_index,
                    category: Some(category),
                    split: None,
                });
                true
            }
        }
    }

    /// Folds in the labelled rows of versions imported after the parent, oldest first.
    async fn fold_imports(
        &mut self,
        database: &Database,
        parent: &DatasetVersion,
    ) -> Result<(), DatasetError> {
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
                let unchanged = self
                    .position_of
                    .get(&row.product_id)
                    .is_some_and(|&position| self.rows[position].record_hash == row.record_hash);
                if unchanged {
                    continue;
                }
                self.place(row.product_id, row.record_hash, category, row.source_index);
                self.outcome.imported_rows += 1;
                used = true;
            }
            if used {
                self.outcome.imported_versions.push(id);
            }
        }
        Ok(())
    }

    /// Folds in reviewed products (the latest unused decision per product); a product whose
    /// label and text the parent already has is left as it is.
    async fn fold_reviews(
        &mut self,
        database: &Database,
        objects: &ObjectStorage,
        parent_rows: &[DatasetRow],
        reviewed: &[ReviewedLabel],
    ) -> Result<(), DatasetError> {
        let reviewed = reviewed.to_vec();
        let parent_by_product: HashMap<i64, &DatasetRow> = parent_rows
            .iter()
            .map(|row| (row.product_id, row))
            .collect();
        let mut known_images = known_images(database, &reviewed).await?;
        for product in reviewed {
            let existing = parent_by_product.get(&product.product_id).copied();
            if existing.is_some_and(|row| {
                row.category == Some(product.category)
                    && row.designation == product.designation
                    && row.description == product.description
            }) {
                self.outcome.reviewed_unchanged += 1;
                continue;
            }
            let image_hash = match product
                .image_hash
                .clone()
                .or_else(|| existing.and_then(|row| row.image_hash.clone()))
            {
                Some(hash) => register_image(database, objects, &hash, &mut known_images).await?,
                None => None,
            };
            let record = NewRecord::new(
                product.product_id,
                existing.map(|row| row.image_id).unwrap_or(0),
                product.designation,
                product.description,
                Some(product.category),
                image_hash,
            );
            if self.place(
                product.product_id,
                record.hash.clone(),
                product.category,
                -1,
            ) {
                self.outcome.reviewed_added += 1;
            } else {
                self.outcome.reviewed_relabelled += 1;
            }
            self.records.push(record);
        }
        Ok(())
    }

    /// Writes the records and the version (unless nothing changes the parent).
    async fn write(
        mut self,
        database: &Database,
        parent: &DatasetVersion,
        options: &DeriveOptions,
    ) -> Result<DeriveOutcome, DatasetError> {
        if self.outcome.new_rows() == 0 {
            // Nothing changes the parent: labels that only confirmed it are folded into it.
            return Ok(self.outcome);
        }
        let mut connection = database.pool().acquire().await?;
        insert_records(&mut connection, &self.records).await?;
        drop(connection);
        let split_ratios = SplitRatios::parse(&parent.split_ratios).unwrap_or_default();
        let (version, created) = create_version(
            database,
            self.rows,
            &VersionMetadata {
                parent: Some(parent.id.clone()),
                source: source_description(&self.outcome),
                note: options.note.clone(),
                split_seed: parent.split_seed as u64,
                split_ratios,
            },
        )
        .await?;
        self.outcome.version = version;
        self.outcome.created = created;
        Ok(self.outcome)
    }
}

/// The provenance line of a derived version.
fn source_description(outcome: &DeriveOutcome) -> String {
    let mut source = format!(
        "derived from {}: {} reviewed labels, {} imported rows",
        outcome.parent,
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
    source
}

/// Image hashes of `products` that the images table already knows.
async fn known_images(
    database: &Database,
    products: &[ReviewedLabel],
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
    record_image(database, hash, width, height, bytes.len()).await?;
    known.insert(hash.to_string());
    Ok(Some(hash.to_string()))
}

/// Registers a stored photo in the `images` table (once per content hash).
pub async fn record_image(
    database: &Database,
    hash: &str,
    width: u32,
    height: u32,
    byte_length: usize,
) -> Result<(), DatasetError> {
    sqlx::query(
        "INSERT INTO images (hash, width, height, byte_length, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING",
    )
    .bind(hash.to_string())
    .bind(i64::from(width))
    .bind(i64::from(height))
    .bind(byte_length as i64)
    .bind(now_ms())
    .execute(database.pool())
    .await?;
    Ok(())
}
