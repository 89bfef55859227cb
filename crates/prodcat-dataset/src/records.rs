//! Content-addressed row records: the hash that names a record, and the writing of records
//! (before the version that lists them). Imports and derivations share both.

use prodcat_domain::{sha256_hex, CategoryCode};
use prodcat_storage::SqlPlaceholders;

use crate::DatasetError;

/// One product row as a dataset stores it, named by the hash of its content.
#[derive(Debug, Clone)]
pub(crate) struct NewRecord {
    pub hash: String,
    pub product_id: i64,
    pub image_id: i64,
    pub designation: String,
    pub description: String,
    pub category: Option<CategoryCode>,
    pub image_hash: Option<String>,
}

impl NewRecord {
    /// The record of these values, with its hash.
    pub fn new(
        product_id: i64,
        image_id: i64,
        designation: String,
        description: String,
        category: Option<CategoryCode>,
        image_hash: Option<String>,
    ) -> Self {
        let hash = record_hash(
            product_id,
            image_id,
            &designation,
            &description,
            category,
            image_hash.as_deref(),
        );
        Self {
            hash,
            product_id,
            image_id,
            designation,
            description,
            category,
            image_hash,
        }
    }
}

/// Hash of a row's content: the identity of a dataset record.
fn record_hash(
    product_id: i64,
    image_id: i64,
    designation: &str,
    description: &str,
    category: Option<CategoryCode>,
    image_hash: Option<&str>,
) -> String {
    let text = format!(
        "{product_id}\u{1f}{image_id}\u{1f}{designation}\u{1f}{description}\u{1f}{}\u{1f}{}",
        category.map(|c| c.to_string()).unwrap_or_default(),
        image_hash.unwrap_or("")
    );
    sha256_hex(text.as_bytes())
}

/// Writes records (a record already stored is left as it is: same hash, same content).
pub(crate) async fn insert_records(
    connection: &mut sqlx::AnyConnection,
    records: &[NewRecord],
) -> Result<(), DatasetError> {
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
                .bind(record.category.map(|c| i64::from(c.value())))
                .bind(record.image_hash.clone());
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
}
