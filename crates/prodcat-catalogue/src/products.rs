//! The live catalogue (no HTTP here): products added through the API, their classification
//! (at once, or later when no model could classify them), the review queue and reviewers'
//! decisions (which label the product's prediction log rows for retraining and monitoring).
//!
//! Product status: `pending` (not classified yet), `classified` (automatic decision), `review`
//! (waiting for a person), `reviewed` (a person accepted or corrected the category). Deleting a
//! product marks it deleted; it disappears from every listing.

use std::collections::BTreeMap;

use bytes::Bytes;
use prodcat_domain::{CategoryCode, ContentHash};
use prodcat_model::ProductPrediction;
use prodcat_storage::{image_key, now_ms, Database, ObjectStorage, SqlPlaceholders};
use sqlx::Row;

use crate::prediction_log::{insert_prediction_log, PredictionLogRow};
use crate::CatalogueError;

/// Where a product is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProductStatus {
    Pending,
    Classified,
    Review,
    Reviewed,
}

impl ProductStatus {
    pub const ALL: [ProductStatus; 4] = [
        ProductStatus::Pending,
        ProductStatus::Classified,
        ProductStatus::Review,
        ProductStatus::Reviewed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProductStatus::Pending => "pending",
            ProductStatus::Classified => "classified",
            ProductStatus::Review => "review",
            ProductStatus::Reviewed => "reviewed",
        }
    }

    pub fn parse(text: &str) -> Result<Self, CatalogueError> {
        match text {
            "pending" => Ok(ProductStatus::Pending),
            "classified" => Ok(ProductStatus::Classified),
            "review" => Ok(ProductStatus::Review),
            "reviewed" => Ok(ProductStatus::Reviewed),
            other => Err(CatalogueError::Invalid(format!(
                "unknown product status {other:?}: expected pending, classified, review or reviewed"
            ))),
        }
    }
}

/// A stored product.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: i64,
    pub designation: String,
    pub description: String,
    pub image_hash: Option<String>,
    pub status: ProductStatus,
    pub predicted_code: Option<CategoryCode>,
    pub confidence: Option<f64>,
    pub model_version: Option<String>,
    /// The decided category: the automatic decision, or the reviewer's.
    pub category_code: Option<CategoryCode>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub created_by: String,
    pub view_count: i64,
    /// Failed attempts to classify it while pending, and the last error.
    pub classify_attempts: i64,
    pub classify_error: Option<String>,
    /// Incremented by every change (the product's ETag).
    pub revision: i64,
}

/// What a model decided for a product.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub predicted: CategoryCode,
    pub confidence: f32,
    pub automatic: bool,
    pub model_version: String,
}

impl Classification {
    pub fn of(prediction: &ProductPrediction) -> Self {
        Self {
            predicted: prediction.category,
            confidence: prediction.confidence,
            automatic: prediction.automatic,
            model_version: prediction.model_version.to_string(),
        }
    }

    fn status(&self) -> ProductStatus {
        if self.automatic {
            ProductStatus::Classified
        } else {
            ProductStatus::Review
        }
    }

    fn decided(&self) -> Option<i64> {
        self.automatic.then(|| i64::from(self.predicted.value()))
    }
}

/// A checked image ready to store.
#[derive(Debug, Clone)]
pub struct ImageUpload {
    pub bytes: Bytes,
    pub hash: ContentHash,
    pub width: u32,
    pub height: u32,
}

/// A product to add.
#[derive(Debug, Clone)]
pub struct NewProduct {
    /// Chosen by the caller, or generated when `None`.
    pub id: Option<i64>,
    pub designation: String,
    pub description: String,
    pub image: ImageUpload,
    pub created_by: String,
}

/// Changes to a product (absent fields stay).
#[derive(Debug, Clone, Default)]
pub struct ProductChanges {
    pub designation: Option<String>,
    pub description: Option<String>,
    pub image: Option<ImageUpload>,
    /// The revision the changes were made against (`If-Match`); `None`: the current one.
    pub expected_revision: Option<i64>,
}

/// Filters of the product listing.
#[derive(Debug, Clone, Default)]
pub struct ProductFilter {
    /// The decided category, or the predicted one while undecided.
    pub category: Option<CategoryCode>,
    pub status: Option<ProductStatus>,
    /// 1-based.
    pub page: i64,
    pub page_size: i64,
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewDecision {
    /// The predicted category is right.
    Accept,
    /// The right category is this one.
    Correct(CategoryCode),
}

const PRODUCT_COLUMNS: &str = "id, designation, description, image_hash, status, predicted_code, \
    confidence, model_version, category_code, created_at_ms, updated_at_ms, created_by, view_count, \
    classify_attempts, classify_error, revision";

fn code(value: Option<i64>, what: &str) -> Result<Option<CategoryCode>, CatalogueError> {
    value
        .map(|value| {
            u16::try_from(value)
                .ok()
                .and_then(|value| CategoryCode::from_u16(value).ok())
                .ok_or_else(|| CatalogueError::Corrupt {
                    what: what.to_string(),
                    reason: format!("{value} is not a category code"),
                })
        })
        .transpose()
}

fn product_from_row(row: &sqlx::any::AnyRow) -> Result<Product, CatalogueError> {
    let status: String = row.try_get("status")?;
    Ok(Product {
        id: row.try_get("id")?,
        designation: row.try_get("designation")?,
        description: row.try_get("description")?,
        image_hash: row.try_get("image_hash")?,
        status: ProductStatus::parse(&status).map_err(|_| CatalogueError::Corrupt {
            what: "product status".to_string(),
            reason: format!("unknown status {status:?}"),
        })?,
        predicted_code: code(row.try_get("predicted_code")?, "predicted code")?,
        confidence: row.try_get("confidence")?,
        model_version: row.try_get("model_version")?,
        category_code: code(row.try_get("category_code")?, "category code")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        created_by: row.try_get("created_by")?,
        view_count: row.try_get("view_count")?,
        classify_attempts: row.try_get("classify_attempts")?,
        classify_error: row.try_get("classify_error")?,
        revision: row.try_get("revision")?,
    })
}

/// Stores an image once per content hash (object store, then the `images` row).
pub async fn store_image(
    database: &Database,
    objects: &ObjectStorage,
    image: &ImageUpload,
) -> Result<(), CatalogueError> {
    objects
        .put_if_absent(&image_key(&image.hash), image.bytes.clone())
        .await?;
    // The dataset crate owns the images table.
    prodcat_dataset::record_image(
        database,
        image.hash.as_str(),
        image.width,
        image.height,
        image.bytes.len(),
    )
    .await?;
    Ok(())
}

fn generated_id() -> i64 {
    // Positive and below 2^53, so JavaScript clients read it exactly.
    (rand::random::<u64>() % ((1u64 << 53) - 1)) as i64 + 1
}

async fn exists(database: &Database, id: i64) -> Result<bool, CatalogueError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM products WHERE id = $1")
        .bind(id)
        .fetch_optional(database.pool())
        .await?;
    Ok(found.is_some())
}

/// Adds a product with its classification (`None`: stored `pending`, classified later).
pub async fn insert_product(
    database: &Database,
    objects: &ObjectStorage,
    product: &NewProduct,
    classification: Option<&Classification>,
) -> Result<Product, CatalogueError> {
    let id = match product.id {
        Some(id) if id <= 0 => {
            return Err(CatalogueError::Invalid(format!(
                "product id {id} is not valid: it must be a positive integer"
            )))
        }
        Some(id) => {
            if exists(database, id).await? {
                return Err(CatalogueError::ProductExists(id));
            }
            id
        }
        None => generated_id(),
    };
    store_image(database, objects, &product.image).await?;
    let now = now_ms();
    let status = classification
        .map(Classification::status)
        .unwrap_or(ProductStatus::Pending);
    let inserted = sqlx::query(
        "INSERT INTO products (id, designation, description, image_hash, status, predicted_code, \
         confidence, model_version, category_code, created_at_ms, updated_at_ms, created_by, \
         view_count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, 0)",
    )
    .bind(id)
    .bind(product.designation.clone())
    .bind(product.description.clone())
    .bind(product.image.hash.as_str().to_string())
    .bind(status.as_str())
    .bind(classification.map(|c| i64::from(c.predicted.value())))
    .bind(classification.map(|c| f64::from(c.confidence)))
    .bind(classification.map(|c| c.model_version.clone()))
    .bind(classification.and_then(Classification::decided))
    .bind(now)
    .bind(product.created_by.clone())
    .execute(database.pool())
    .await;
    if let Err(error) = inserted {
        if exists(database, id).await? {
            return Err(CatalogueError::ProductExists(id));
        }
        return Err(error.into());
    }
    get_product(database, id).await
}

/// A product that is not deleted.
pub async fn get_product(database: &Database, id: i64) -> Result<Product, CatalogueError> {
    let row = sqlx::query(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1 AND deleted_at_ms IS NULL"
    ))
    .bind(id)
    .fetch_optional(database.pool())
    .await?;
    match row {
        Some(row) => product_from_row(&row),
        None => Err(CatalogueError::UnknownProduct(id)),
    }
}

/// Counts a view of a product (popularity for recommendations).
pub async fn count_view(database: &Database, id: i64) -> Result<(), CatalogueError> {
    sqlx::query("UPDATE products SET view_count = view_count + 1 WHERE id = $1")
        .bind(id)
        .execute(database.pool())
        .await?;
    Ok(())
}

fn page_bounds(page: i64, page_size: i64) -> (i64, i64) {
    let size = page_size.clamp(1, 500);
    (size, (page.max(1) - 1).saturating_mul(size))
}

/// Products matching the filter, newest first, and how many match in all.
pub async fn list_products(
    database: &Database,
    filter: &ProductFilter,
) -> Result<(Vec<Product>, i64), CatalogueError> {
    let mut conditions = vec!["deleted_at_ms IS NULL".to_string()];
    let mut next = 1;
    if filter.category.is_some() {
        conditions.push(format!("COALESCE(category_code, predicted_code) = ${next}"));
        next += 1;
    }
    if filter.status.is_some() {
        conditions.push(format!("status = ${next}"));
        next += 1;
    }
    let condition = conditions.join(" AND ");
    let (limit, offset) = page_bounds(filter.page, filter.page_size);
    let count_sql = format!("SELECT COUNT(*) AS count FROM products WHERE {condition}");
    let list_sql = format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE {condition} \
         ORDER BY created_at_ms DESC, id DESC LIMIT ${next} OFFSET ${}",
        next + 1
    );
    let mut count_query = sqlx::query(&count_sql);
    let mut list_query = sqlx::query(&list_sql);
    if let Some(category) = filter.category {
        count_query = count_query.bind(i64::from(category.value()));
        list_query = list_query.bind(i64::from(category.value()));
    }
    if let Some(status) = filter.status {
        count_query = count_query.bind(status.as_str());
        list_query = list_query.bind(status.as_str());
    }
    let total: i64 = count_query
        .fetch_one(database.pool())
        .await?
        .try_get("count")?;
    let rows = list_query
        .bind(limit)
        .bind(offset)
        .fetch_all(database.pool())
        .await?;
    let products = rows
        .iter()
        .map(product_from_row)
        .collect::<Result<_, _>>()?;
    Ok((products, total))
}

/// Changes a product's text or image and stores its new classification (`None`: back to
/// `pending`).
pub async fn update_product(
    database: &Database,
    objects: &ObjectStorage,
    id: i64,
    changes: &ProductChanges,
    classification: Option<&Classification>,
) -> Result<Product, CatalogueError> {
    let current = get_product(database, id).await?;
    let expected = changes.expected_revision.unwrap_or(current.revision);
    if expected != current.revision {
        return Err(CatalogueError::RevisionMismatch {
            id,
            expected,
            current: current.revision,
        });
    }
    if let Some(image) = &changes.image {
        store_image(database, objects, image).await?;
    }
    let status = classification
        .map(Classification::status)
        .unwrap_or(ProductStatus::Pending);
    // Guarded by the revision read above: a change made meanwhile is not overwritten.
    let result = sqlx::query(
        "UPDATE products SET designation = $1, description = $2, image_hash = $3, status = $4, \
         predicted_code = $5, confidence = $6, model_version = $7, category_code = $8, \
         updated_at_ms = $9, classify_attempts = 0, next_classify_at_ms = NULL, \
         classify_error = NULL, classify_given_up = 0, revision = revision + 1 \
         WHERE id = $10 AND deleted_at_ms IS NULL AND revision = $11",
    )
    .bind(
        changes
            .designation
            .clone()
            .unwrap_or(current.designation.clone()),
    )
    .bind(
        changes
            .description
            .clone()
            .unwrap_or(current.description.clone()),
    )
    .bind(
        changes
            .image
            .as_ref()
            .map(|image| image.hash.as_str().to_string())
            .or(current.image_hash.clone()),
    )
    .bind(status.as_str())
    .bind(classification.map(|c| i64::from(c.predicted.value())))
    .bind(classification.map(|c| f64::from(c.confidence)))
    .bind(classification.map(|c| c.model_version.clone()))
    .bind(classification.and_then(Classification::decided))
    .bind(now_ms())
    .bind(id)
    .bind(expected)
    .execute(database.pool())
    .await?;
    if result.rows_affected() == 0 {
        let now = get_product(database, id).await?;
        return Err(CatalogueError::RevisionMismatch {
            id,
            expected,
            current: now.revision,
        });
    }
    get_product(database, id).await
}

/// Marks a product deleted.
pub async fn delete_product(database: &Database, id: i64) -> Result<(), CatalogueError> {
    let now = now_ms();
    let result = sqlx::query(
        "UPDATE products SET deleted_at_ms = $1, updated_at_ms = $1, revision = revision + 1 \
         WHERE id = $2 AND deleted_at_ms IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(database.pool())
    .await?;
    if result.rows_affected() == 0 {
        return Err(CatalogueError::UnknownProduct(id));
    }
    Ok(())
}

/// Products waiting for a person, lowest confidence first, and how many there are.
pub async fn review_queue(
    database: &Database,
    page: i64,
    page_size: i64,
) -> Result<(Vec<Product>, i64), CatalogueError> {
    let (limit, offset) = page_bounds(page, page_size);
    let total: i64 = sqlx::query(
        "SELECT COUNT(*) AS count FROM products WHERE status = 'review' AND deleted_at_ms IS NULL",
    )
    .fetch_one(database.pool())
    .await?
    .try_get("count")?;
    let rows = sqlx::query(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE status = 'review' AND deleted_at_ms IS NULL \
         ORDER BY confidence ASC, id ASC LIMIT $1 OFFSET $2"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(database.pool())
    .await?;
    let products = rows
        .iter()
        .map(product_from_row)
        .collect::<Result<_, _>>()?;
    Ok((products, total))
}

/// Stores a reviewer's decision: the decision row (who, when, what was predicted), the product's
/// category and status, and the label on the product's prediction log rows, in one transaction.
pub async fn record_review(
    database: &Database,
    id: i64,
    decision: ReviewDecision,
    reviewer: &str,
) -> Result<Product, CatalogueError> {
    let product = get_product(database, id).await?;
    let Some(predicted) = product.predicted_code else {
        return Err(CatalogueError::NotClassifiedYet(id));
    };
    let (name, category) = match decision {
        ReviewDecision::Accept => ("accept", predicted),
        ReviewDecision::Correct(category) => ("correct", category),
    };
    let now = now_ms();
    let mut transaction = database.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE products SET status = 'reviewed', category_code = $1, updated_at_ms = $2, \
         revision = revision + 1 \
         WHERE id = $3 AND deleted_at_ms IS NULL AND predicted_code IS NOT NULL",
    )
    .bind(i64::from(category.value()))
    .bind(now)
    .bind(id)
    .execute(&mut *transaction)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(CatalogueError::UnknownProduct(id));
    }
    sqlx::query(
        "INSERT INTO review_decisions (product_id, decision, category_code, previous_code, \
         reviewer, at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(name)
    .bind(i64::from(category.value()))
    .bind(i64::from(predicted.value()))
    .bind(reviewer.to_string())
    .bind(now)
    .execute(&mut *transaction)
    .await?;
    sqlx::query(
        "UPDATE prediction_log SET label_code = $1, labelled_at_ms = $2 WHERE product_id = $3",
    )
    .bind(i64::from(category.value()))
    .bind(now)
    .bind(id)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    get_product(database, id).await
}

/// Takes back `reviewer`'s decision on a product (a reviewer's undo): allowed while it is the
/// product's only decision and no dataset version has used it as a label. The decision row is
/// removed, the product returns to the review queue without a category, and its prediction-log
/// rows lose the label, in one transaction.
pub async fn undo_review(
    database: &Database,
    id: i64,
    reviewer: &str,
) -> Result<Product, CatalogueError> {
    let refuse = |reason: &str| CatalogueError::CannotUndoReview {
        id,
        reason: reason.to_string(),
    };
    let mut transaction = database.begin_write().await?;
    let rows = sqlx::query(
        "SELECT id, reviewer, used_in_dataset FROM review_decisions WHERE product_id = $1 \
         ORDER BY id DESC",
    )
    .bind(id)
    .fetch_all(&mut *transaction)
    .await?;
    let Some(latest) = rows.first() else {
        return Err(refuse("it has no review decision"));
    };
    if rows.len() > 1 {
        return Err(refuse("it was reviewed more than once"));
    }
    let decision_id: i64 = latest.try_get("id")?;
    let decided_by: String = latest.try_get("reviewer")?;
    let used: Option<String> = latest.try_get("used_in_dataset")?;
    if decided_by != reviewer {
        return Err(refuse("another reviewer decided it"));
    }
    if used.is_some() {
        return Err(refuse("a dataset version already uses its label"));
    }
    sqlx::query("DELETE FROM review_decisions WHERE id = $1")
        .bind(decision_id)
        .execute(&mut *transaction)
        .await?;
    let updated = sqlx::query(
        "UPDATE products SET status = 'review', category_code = NULL, updated_at_ms = $1, \
         revision = revision + 1 WHERE id = $2 AND deleted_at_ms IS NULL AND status = 'reviewed'",
    )
    .bind(now_ms())
    .bind(id)
    .execute(&mut *transaction)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(refuse("it is no longer a reviewed product"));
    }
    sqlx::query(
        "UPDATE prediction_log SET label_code = NULL, labelled_at_ms = NULL WHERE product_id = $1",
    )
    .bind(id)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    get_product(database, id).await
}

/// Products waiting for a model, oldest first.
pub async fn pending_products(
    database: &Database,
    limit: i64,
) -> Result<Vec<Product>, CatalogueError> {
    // Products due for an attempt: never tried first (oldest first), then those whose backoff
    // has passed, earliest due first; products given up on wait for a new model or a change.
    let rows = sqlx::query(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE status = 'pending' AND deleted_at_ms IS NULL \
         AND classify_given_up = 0 AND (next_classify_at_ms IS NULL OR next_classify_at_ms <= $1) \
         ORDER BY COALESCE(next_classify_at_ms, 0) ASC, created_at_ms ASC, id ASC LIMIT $2"
    ))
    .bind(now_ms())
    .bind(limit.max(1))
    .fetch_all(database.pool())
    .await?;
    rows.iter().map(product_from_row).collect()
}

/// Product counts by status (deleted products excluded).
pub async fn count_by_status(
    database: &Database,
) -> Result<BTreeMap<ProductStatus, i64>, CatalogueError> {
    let rows = sqlx::query(
        "SELECT status, COUNT(*) AS count FROM products WHERE deleted_at_ms IS NULL GROUP BY status",
    )
    .fetch_all(database.pool())
    .await?;
    let mut counts = BTreeMap::new();
    for row in rows {
        let status: String = row.try_get("status")?;
        counts.insert(ProductStatus::parse(&status)?, row.try_get("count")?);
    }
    Ok(counts)
}

/// Reads a stored product image.
pub async fn product_image(
    objects: &ObjectStorage,
    product: &Product,
) -> Result<Option<Bytes>, CatalogueError> {
    match &product.image_hash {
        None => Ok(None),
        Some(hash) => {
            let hash = ContentHash::parse(hash).map_err(|error| CatalogueError::Corrupt {
                what: format!("image hash of product {}", product.id),
                reason: error.to_string(),
            })?;
            Ok(Some(objects.get(&image_key(&hash)).await?))
        }
    }
}

/// Stores the classification of a product that is still `pending`, with its prediction log
/// row, in one transaction that applies only while the product is pending (so a server and a
/// worker classifying at once classify each product once). Returns whether it applied.
pub async fn apply_pending_classification(
    database: &Database,
    product_id: i64,
    classification: &Classification,
    log: &PredictionLogRow,
) -> Result<bool, CatalogueError> {
    let mut transaction = database.begin_write().await?;
    let applied = sqlx::query(
        "UPDATE products SET status = $1, predicted_code = $2, confidence = $3, \
         model_version = $4, category_code = $5, updated_at_ms = $6, classify_attempts = 0, \
         next_classify_at_ms = NULL, classify_error = NULL, revision = revision + 1 \
         WHERE id = $7 AND status = 'pending' AND deleted_at_ms IS NULL",
    )
    .bind(classification.status().as_str())
    .bind(i64::from(classification.predicted.value()))
    .bind(f64::from(classification.confidence))
    .bind(classification.model_version.clone())
    .bind(classification.decided())
    .bind(now_ms())
    .bind(product_id)
    .execute(&mut *transaction)
    .await?
    .rows_affected()
        == 1;
    if applied {
        insert_prediction_log(&mut transaction, std::slice::from_ref(log)).await?;
        transaction.commit().await?;
    } else {
        transaction.rollback().await?;
    }
    Ok(applied)
}

/// Records a failed attempt to classify a pending product: the error, and when to try again
/// (`None`: not automatically any more; a change of the product or a new model resets it).
pub async fn record_classify_failure(
    database: &Database,
    product_id: i64,
    error: &str,
    next_attempt_at_ms: Option<i64>,
) -> Result<(), CatalogueError> {
    let message: String = error.chars().take(500).collect();
    sqlx::query(
        "UPDATE products SET classify_attempts = classify_attempts + 1, \
         next_classify_at_ms = $1, classify_error = $2, classify_given_up = $3 \
         WHERE id = $4 AND status = 'pending'",
    )
    .bind(next_attempt_at_ms)
    .bind(message)
    .bind(i64::from(next_attempt_at_ms.is_none()))
    .bind(product_id)
    .execute(database.pool())
    .await?;
    Ok(())
}

/// Makes every pending product that was given up on eligible again (after a new model is in
/// service, which may classify what the previous one could not).
pub async fn retry_given_up_products(database: &Database) -> Result<u64, CatalogueError> {
    let result = sqlx::query(
        "UPDATE products SET classify_attempts = 0, next_classify_at_ms = NULL, \
         classify_given_up = 0 WHERE status = 'pending' AND classify_given_up = 1",
    )
    .execute(database.pool())
    .await?;
    Ok(result.rows_affected())
}

/// A product written as it is, with its status and timestamps (a loaded dataset, replayed
/// traffic): no classification happens.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredProduct {
    pub id: i64,
    pub designation: String,
    pub description: String,
    pub image_hash: Option<String>,
    pub status: ProductStatus,
    pub predicted_code: Option<CategoryCode>,
    pub confidence: Option<f64>,
    pub model_version: Option<String>,
    pub category_code: Option<CategoryCode>,
    pub at_ms: i64,
    pub created_by: String,
}

/// Inserts products whose id is not in the catalogue yet (even deleted ones are kept as they
/// are), in small transactions; returns how many were added.
pub async fn insert_if_absent(
    database: &Database,
    products: &[StoredProduct],
) -> Result<usize, CatalogueError> {
    const COLUMNS: usize = 12;
    let mut added = 0;
    for chunk in products.chunks(64) {
        let sql = format!(
            "INSERT INTO products (id, designation, description, image_hash, status, \
             predicted_code, confidence, model_version, category_code, created_at_ms, \
             updated_at_ms, created_by) VALUES {} ON CONFLICT (id) DO NOTHING",
            SqlPlaceholders::values(chunk.len(), COLUMNS)
        );
        let mut query = sqlx::query(&sql);
        for product in chunk {
            query = query
                .bind(product.id)
                .bind(product.designation.clone())
                .bind(product.description.clone())
                .bind(product.image_hash.clone())
                .bind(product.status.as_str())
                .bind(product.predicted_code.map(|code| i64::from(code.value())))
                .bind(product.confidence)
                .bind(product.model_version.clone())
                .bind(product.category_code.map(|code| i64::from(code.value())))
                .bind(product.at_ms)
                .bind(product.at_ms)
                .bind(product.created_by.clone());
        }
        added += query.execute(database.pool()).await?.rows_affected() as usize;
    }
    Ok(added)
}

/// Loads the products of a dataset version into the live catalogue, so that search, similar
/// products and the review workflow have a catalogue to work on: a labelled product keeps its
/// label as a decided category (status `reviewed`), an unlabelled one waits for the model
/// (`pending`). Products already in the catalogue (same id, even deleted) are left as they are,
/// so loading again adds nothing. Rows without a title (kept in a dataset for their photo alone)
/// are not catalogue products and are left out. Returns how many products were added.
pub async fn load_dataset(
    database: &Database,
    version: &prodcat_domain::DatasetVersionId,
    created_by: &str,
) -> Result<usize, CatalogueError> {
    let rows = prodcat_dataset::load_rows(database, version, None).await?;
    let now = now_ms();
    let products: Vec<StoredProduct> = rows
        .into_iter()
        .filter(|row| !row.designation.trim().is_empty())
        .map(|row| StoredProduct {
            id: row.product_id,
            status: if row.category.is_some() {
                ProductStatus::Reviewed
            } else {
                ProductStatus::Pending
            },
            designation: row.designation,
            description: row.description,
            image_hash: row.image_hash,
            predicted_code: None,
            confidence: None,
            model_version: None,
            category_code: row.category,
            at_ms: now,
            created_by: created_by.to_string(),
        })
        .collect();
    insert_if_absent(database, &products).await
}

/// A reviewer's decision as it is stored (replayed traffic records its own).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedDecision {
    pub product_id: i64,
    /// `accept`/`correct`, or another word the writer chose (`confirmed`, `corrected`).
    pub decision: String,
    pub category: CategoryCode,
    pub previous: Option<CategoryCode>,
    pub reviewer: String,
    pub at_ms: i64,
}

/// Appends review decisions as they are (no product is changed).
pub async fn insert_review_decisions(
    database: &Database,
    decisions: &[RecordedDecision],
) -> Result<(), CatalogueError> {
    for chunk in decisions.chunks(64) {
        let sql = format!(
            "INSERT INTO review_decisions (product_id, decision, category_code, previous_code, \
             reviewer, at_ms) VALUES {}",
            SqlPlaceholders::values(chunk.len(), 6)
        );
        let mut query = sqlx::query(&sql);
        for decision in chunk {
            query = query
                .bind(decision.product_id)
                .bind(decision.decision.clone())
                .bind(i64::from(decision.category.value()))
                .bind(decision.previous.map(|code| i64::from(code.value())))
                .bind(decision.reviewer.clone())
                .bind(decision.at_ms);
        }
        query.execute(database.pool()).await?;
    }
    Ok(())
}

/// A product as the search indexes need it (deleted ones too, so they can be removed).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedProduct {
    pub id: i64,
    pub designation: String,
    pub description: String,
    pub image_hash: Option<String>,
    /// The decided category, else the predicted one.
    pub category: Option<CategoryCode>,
    pub view_count: i64,
    pub updated_at_ms: i64,
    pub deleted: bool,
}

/// Every live product (`since_ms` `None`), or every product changed at or after `since_ms`
/// (deleted ones included), for the search indexes.
pub async fn products_for_index(
    database: &Database,
    since_ms: Option<i64>,
) -> Result<Vec<IndexedProduct>, CatalogueError> {
    let columns = "id, designation, description, image_hash, category_code, predicted_code, \
                   view_count, updated_at_ms, deleted_at_ms";
    let rows = match since_ms {
        None => {
            sqlx::query(&format!(
                "SELECT {columns} FROM products WHERE deleted_at_ms IS NULL"
            ))
            .fetch_all(database.pool())
            .await?
        }
        Some(since) => {
            sqlx::query(&format!(
                "SELECT {columns} FROM products WHERE updated_at_ms >= $1"
            ))
            .bind(since)
            .fetch_all(database.pool())
            .await?
        }
    };
    rows.iter()
        .map(|row| {
            let decided = code(row.try_get("category_code")?, "category code")?;
            let predicted = code(row.try_get("predicted_code")?, "predicted code")?;
            Ok(IndexedProduct {
                id: row.try_get("id")?,
                designation: row.try_get("designation")?,
                description: row.try_get("description")?,
                image_hash: row.try_get("image_hash")?,
                category: decided.or(predicted),
                view_count: row.try_get("view_count")?,
                updated_at_ms: row.try_get("updated_at_ms")?,
                deleted: row.try_get::<Option<i64>, _>("deleted_at_ms")?.is_some(),
            })
        })
        .collect()
}

pub use prodcat_dataset::ReviewedLabel;

/// Unused review decisions joined with their (not deleted) products: the latest decision per
/// product, by product id, and the ids of every decision considered.
pub async fn unused_review_labels(
    database: &Database,
) -> Result<(Vec<ReviewedLabel>, Vec<i64>), CatalogueError> {
    let rows = sqlx::query(
        "SELECT d.id AS decision_id, d.product_id AS product_id, d.category_code AS code, \
         p.designation AS designation, p.description AS description, p.image_hash AS image_hash \
         FROM review_decisions d JOIN products p ON p.id = d.product_id \
         WHERE d.used_in_dataset IS NULL AND p.deleted_at_ms IS NULL \
         ORDER BY d.at_ms, d.id",
    )
    .fetch_all(database.pool())
    .await?;
    let mut latest: BTreeMap<i64, ReviewedLabel> = BTreeMap::new();
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        let decision_id: i64 = row.try_get("decision_id")?;
        let product_id: i64 = row.try_get("product_id")?;
        let Ok(Some(category)) = code(Some(row.try_get("code")?), "review decision") else {
            tracing::warn!(
                decision = decision_id,
                "review decision with an unknown category code skipped"
            );
            continue;
        };
        ids.push(decision_id);
        latest.insert(
            product_id,
            ReviewedLabel {
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

/// How many review decisions a dataset version used.
pub async fn reviews_used_by(
    database: &Database,
    dataset_version: &str,
) -> Result<i64, CatalogueError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM review_decisions WHERE used_in_dataset = $1")
            .bind(dataset_version.to_string())
            .fetch_one(database.pool())
            .await?,
    )
}

/// Marks review decisions as used by a dataset version; returns how many were marked.
pub async fn mark_reviews_used(
    database: &Database,
    decision_ids: &[i64],
    dataset_version: &str,
) -> Result<usize, CatalogueError> {
    let mut marked = 0;
    for chunk in decision_ids.chunks(64) {
        let sql = format!(
            "UPDATE review_decisions SET used_in_dataset = $1 WHERE id IN ({}) \
             AND used_in_dataset IS NULL",
            (2..chunk.len() + 2)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut query = sqlx::query(&sql).bind(dataset_version.to_string());
        for id in chunk {
            query = query.bind(*id);
        }
        marked += query.execute(database.pool()).await?.rows_affected() as usize;
    }
    Ok(marked)
}
