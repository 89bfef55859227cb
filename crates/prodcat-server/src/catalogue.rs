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
use prodcat_jobs::{insert_prediction_log, PredictionLogRow, PredictionSource};
use prodcat_model::{ProductClassifier, ProductInput, ProductPrediction};
use prodcat_pipelines::Platform;
use prodcat_storage::{image_key, now_ms, Database, ObjectStorage};
use sqlx::Row;

use crate::ServerError;

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

    pub fn parse(text: &str) -> Result<Self, ServerError> {
        match text {
            "pending" => Ok(ProductStatus::Pending),
            "classified" => Ok(ProductStatus::Classified),
            "review" => Ok(ProductStatus::Review),
            "reviewed" => Ok(ProductStatus::Reviewed),
            other => Err(ServerError::InvalidInput(format!(
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
    confidence, model_version, category_code, created_at_ms, updated_at_ms, created_by, view_count";

fn code(value: Option<i64>, what: &str) -> Result<Option<CategoryCode>, ServerError> {
    value
        .map(|value| {
            u16::try_from(value)
                .ok()
                .and_then(|value| CategoryCode::from_u16(value).ok())
                .ok_or_else(|| ServerError::Corrupt {
                    what: what.to_string(),
                    reason: format!("{value} is not a category code"),
                })
        })
        .transpose()
}

fn product_from_row(row: &sqlx::any::AnyRow) -> Result<Product, ServerError> {
    let status: String = row.try_get("status")?;
    Ok(Product {
        id: row.try_get("id")?,
        designation: row.try_get("designation")?,
        description: row.try_get("description")?,
        image_hash: row.try_get("image_hash")?,
        status: ProductStatus::parse(&status).map_err(|_| ServerError::Corrupt {
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
    })
}

/// Stores an image once per content hash (object store, then the `images` row).
pub async fn store_image(
    database: &Database,
    objects: &ObjectStorage,
    image: &ImageUpload,
) -> Result<(), ServerError> {
    objects
        .put_if_absent(&image_key(&image.hash), image.bytes.clone())
        .await?;
    sqlx::query(
        "INSERT INTO images (hash, width, height, byte_length, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING",
    )
    .bind(image.hash.as_str().to_string())
    .bind(i64::from(image.width))
    .bind(i64::from(image.height))
    .bind(image.bytes.len() as i64)
    .bind(now_ms())
    .execute(database.pool())
    .await?;
    Ok(())
}

fn generated_id() -> i64 {
    // Positive and below 2^53, so JavaScript clients read it exactly.
    (rand::random::<u64>() % ((1u64 << 53) - 1)) as i64 + 1
}

async fn exists(database: &Database, id: i64) -> Result<bool, ServerError> {
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
) -> Result<Product, ServerError> {
    let id = match product.id {
        Some(id) if id <= 0 => {
            return Err(ServerError::InvalidInput(format!(
                "product id {id} is not valid: it must be a positive integer"
            )))
        }
        Some(id) => {
            if exists(database, id).await? {
                return Err(ServerError::ProductExists(id));
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
            return Err(ServerError::ProductExists(id));
        }
        return Err(error.into());
    }
    get_product(database, id).await
}

/// A product that is not deleted.
pub async fn get_product(database: &Database, id: i64) -> Result<Product, ServerError> {
    let row = sqlx::query(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1 AND deleted_at_ms IS NULL"
    ))
    .bind(id)
    .fetch_optional(database.pool())
    .await?;
    match row {
        Some(row) => product_from_row(&row),
        None => Err(ServerError::UnknownProduct(id)),
    }
}

/// Counts a view of a product (popularity for recommendations).
pub async fn count_view(database: &Database, id: i64) -> Result<(), ServerError> {
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
) -> Result<(Vec<Product>, i64), ServerError> {
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
) -> Result<Product, ServerError> {
    let current = get_product(database, id).await?;
    if let Some(image) = &changes.image {
        store_image(database, objects, image).await?;
    }
    let status = classification
        .map(Classification::status)
        .unwrap_or(ProductStatus::Pending);
    let result = sqlx::query(
        "UPDATE products SET designation = $1, description = $2, image_hash = $3, status = $4, \
         predicted_code = $5, confidence = $6, model_version = $7, category_code = $8, \
         updated_at_ms = $9 WHERE id = $10 AND deleted_at_ms IS NULL",
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
    .execute(database.pool())
    .await?;
    if result.rows_affected() == 0 {
        return Err(ServerError::UnknownProduct(id));
    }
    get_product(database, id).await
}

/// Marks a product deleted.
pub async fn delete_product(database: &Database, id: i64) -> Result<(), ServerError> {
    let now = now_ms();
    let result = sqlx::query(
        "UPDATE products SET deleted_at_ms = $1, updated_at_ms = $1 \
         WHERE id = $2 AND deleted_at_ms IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(database.pool())
    .await?;
    if result.rows_affected() == 0 {
        return Err(ServerError::UnknownProduct(id));
    }
    Ok(())
}

/// Products waiting for a person, lowest confidence first, and how many there are.
pub async fn review_queue(
    database: &Database,
    page: i64,
    page_size: i64,
) -> Result<(Vec<Product>, i64), ServerError> {
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
) -> Result<Product, ServerError> {
    let product = get_product(database, id).await?;
    let Some(predicted) = product.predicted_code else {
        return Err(ServerError::NotClassifiedYet(id));
    };
    let (name, category) = match decision {
        ReviewDecision::Accept => ("accept", predicted),
        ReviewDecision::Correct(category) => ("correct", category),
    };
    let now = now_ms();
    let mut transaction = database.pool().begin().await?;
    let updated = sqlx::query(
        "UPDATE products SET status = 'reviewed', category_code = $1, updated_at_ms = $2 \
         WHERE id = $3 AND deleted_at_ms IS NULL AND predicted_code IS NOT NULL",
    )
    .bind(i64::from(category.value()))
    .bind(now)
    .bind(id)
    .execute(&mut *transaction)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ServerError::UnknownProduct(id));
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

/// Products waiting for a model, oldest first.
pub async fn pending_products(
    database: &Database,
    limit: i64,
) -> Result<Vec<Product>, ServerError> {
    let rows = sqlx::query(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE status = 'pending' AND deleted_at_ms IS NULL \
         ORDER BY created_at_ms ASC, id ASC LIMIT $1"
    ))
    .bind(limit.max(1))
    .fetch_all(database.pool())
    .await?;
    rows.iter().map(product_from_row).collect()
}

/// Product counts by status (deleted products excluded).
pub async fn count_by_status(
    database: &Database,
) -> Result<BTreeMap<ProductStatus, i64>, ServerError> {
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
) -> Result<Option<Bytes>, ServerError> {
    match &product.image_hash {
        None => Ok(None),
        Some(hash) => {
            let hash = ContentHash::parse(hash).map_err(|error| ServerError::Corrupt {
                what: format!("image hash of product {}", product.id),
                reason: error.to_string(),
            })?;
            Ok(Some(objects.get(&image_key(&hash)).await?))
        }
    }
}

/// Classifies up to `limit` pending products with `classifier`. Each product's new status and
/// its prediction log row are written in one transaction that only applies while the product is
/// still pending, so a server and a worker doing this at once classify each product once.
/// Returns how many products this call classified.
pub async fn classify_pending(
    platform: &Platform,
    classifier: &ProductClassifier,
    limit: i64,
) -> Result<usize, ServerError> {
    let products = pending_products(&platform.database, limit).await?;
    if products.is_empty() {
        return Ok(0);
    }
    let mut images = Vec::with_capacity(products.len());
    for product in &products {
        images.push(product_image(&platform.objects, product).await?);
    }
    let classifier = classifier.clone();
    let inputs: Vec<(String, String, Option<Bytes>)> = products
        .iter()
        .zip(images)
        .map(|(p, image)| (p.designation.clone(), p.description.clone(), image))
        .collect();
    let predictions = tokio::task::spawn_blocking(move || {
        let borrowed: Vec<ProductInput<'_>> = inputs
            .iter()
            .map(|(designation, description, image)| ProductInput {
                designation,
                description,
                image: image.as_deref(),
            })
            .collect();
        classifier.predict_batch(&borrowed)
    })
    .await
    .map_err(|error| ServerError::Corrupt {
        what: "classification task".to_string(),
        reason: error.to_string(),
    })?;
    let mut classified = 0;
    for (product, prediction) in products.iter().zip(predictions) {
        let prediction = match prediction {
            Ok(prediction) => prediction,
            Err(error) => {
                tracing::warn!(product = product.id, %error, "a pending product could not be classified; it stays pending");
                continue;
            }
        };
        let classification = Classification::of(&prediction);
        let log = PredictionLogRow::from_prediction(
            &prediction,
            PredictionSource::Product,
            Some(product.id),
            &product.description,
        );
        let mut transaction = platform.database.pool().begin().await?;
        let applied = sqlx::query(
            "UPDATE products SET status = $1, predicted_code = $2, confidence = $3, \
             model_version = $4, category_code = $5, updated_at_ms = $6 \
             WHERE id = $7 AND status = 'pending' AND deleted_at_ms IS NULL",
        )
        .bind(classification.status().as_str())
        .bind(i64::from(classification.predicted.value()))
        .bind(f64::from(classification.confidence))
        .bind(classification.model_version.clone())
        .bind(classification.decided())
        .bind(now_ms())
        .bind(product.id)
        .execute(&mut *transaction)
        .await?
        .rows_affected()
            == 1;
        if applied {
            insert_prediction_log(&mut transaction, &[log]).await?;
            transaction.commit().await?;
            classified += 1;
            metrics::counter!(
                "prodcat_predictions_total",
                "category" => classification.predicted.value().to_string(),
                "source" => "product"
            )
            .increment(1);
        } else {
            transaction.rollback().await?;
        }
    }
    if classified > 0 {
        tracing::info!(classified, "pending products classified");
    }
    Ok(classified)
}

/// Loads the products of a dataset version into the live catalogue, so that search, similar
/// products and the review workflow have a catalogue to work on: a labelled product keeps its
/// label as a decided category (status `reviewed`), an unlabelled one waits for the model
/// (`pending`). Products already in the catalogue (same id, even deleted) are left as they are,
/// so loading again adds nothing. Returns how many products were added.
pub async fn load_dataset(
    database: &Database,
    version: &prodcat_domain::DatasetVersionId,
    created_by: &str,
) -> Result<usize, ServerError> {
    let rows = prodcat_dataset::load_rows(database, version, None)
        .await
        .map_err(|error| ServerError::InvalidInput(error.to_string()))?;
    let now = now_ms();
    let mut added = 0;
    for chunk in rows.chunks(64) {
        let mut transaction = database.pool().begin().await?;
        for row in chunk {
            let status = if row.category.is_some() {
                ProductStatus::Reviewed
            } else {
                ProductStatus::Pending
            };
            added += sqlx::query(
                "INSERT INTO products (id, designation, description, image_hash, status, \
                 category_code, created_at_ms, updated_at_ms, created_by, view_count) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, 0) ON CONFLICT (id) DO NOTHING",
            )
            .bind(row.product_id)
            .bind(row.designation.clone())
            .bind(row.description.clone())
            .bind(row.image_hash.clone())
            .bind(status.as_str())
            .bind(row.category.map(|code| i64::from(code.value())))
            .bind(now)
            .bind(created_by.to_string())
            .execute(&mut *transaction)
            .await?
            .rows_affected() as usize;
        }
        transaction.commit().await?;
    }
    Ok(added)
}
