//! Products waiting for a model, on every available SQL backend: a product that keeps failing
//! (its image object is gone) is retried with backoff and never holds back the others.

use std::time::Duration;

use prodcat_catalogue::products::{insert_if_absent, StoredProduct};
use prodcat_catalogue::ProductStatus;
use prodcat_jobs::{classify_pending, PendingPolicy};
use prodcat_pipelines::testing::TestPlatform;
use prodcat_storage::testing;
use sqlx::Row;

fn pending(id: i64, image_hash: Option<String>, at_ms: i64) -> StoredProduct {
    StoredProduct {
        id,
        designation: format!("Piscine tubulaire ronde avec pompe n°{id}"),
        description: "<p>Filtration à cartouche</p>".to_string(),
        image_hash,
        status: ProductStatus::Pending,
        predicted_code: None,
        confidence: None,
        model_version: None,
        category_code: None,
        at_ms,
        created_by: "test".to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pending_products_never_block_the_others() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let (platform, _version) =
            TestPlatform::with_text_champion(test_database.database.clone(), 300).await;
        let database = &platform.platform.database;
        // 70 products, the oldest, whose photo is missing from the object store (they can
        // never be classified), then 30 that can.
        let mut products = Vec::new();
        for index in 0..70 {
            let missing = format!("{:064x}", index + 1);
            products.push(pending(10_000 + index, Some(missing), 1_000 + index));
        }
        for index in 0..30 {
            products.push(pending(20_000 + index, None, 5_000 + index));
        }
        assert_eq!(insert_if_absent(database, &products).await.unwrap(), 100);

        let predictor = platform.predictor();
        predictor.models().refresh().await.unwrap();
        let policy = PendingPolicy {
            batch_size: 64,
            max_attempts: 3,
            first_backoff: Duration::from_secs(3_600),
            max_backoff: Duration::from_secs(3_600),
        };
        let mut classified = 0;
        let mut failed = 0;
        for _ in 0..5 {
            let report = classify_pending(&predictor, &policy).await.unwrap();
            classified += report.classified;
            failed += report.failed;
            if report.seen == 0 {
                break;
            }
        }
        assert_eq!(
            classified, 30,
            "{name}: every classifiable product was classified"
        );
        assert_eq!(
            failed, 70,
            "{name}: each failing product was tried once, then waits"
        );
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS count, MIN(classify_attempts) AS least, \
             MAX(classify_attempts) AS most, COUNT(classify_error) AS errors \
             FROM products GROUP BY status ORDER BY status",
        )
        .fetch_all(database.pool())
        .await
        .unwrap();
        let by_status: Vec<(String, i64, i64, i64, i64)> = rows
            .iter()
            .map(|row| {
                (
                    row.get("status"),
                    row.get("count"),
                    row.get("least"),
                    row.get("most"),
                    row.get("errors"),
                )
            })
            .collect();
        let pending_row = by_status
            .iter()
            .find(|row| row.0 == "pending")
            .expect("pending products");
        assert_eq!(pending_row.1, 70, "{name}: {by_status:?}");
        assert_eq!(
            (pending_row.2, pending_row.3),
            (1, 1),
            "{name}: one attempt each"
        );
        assert_eq!(pending_row.4, 70, "{name}: each failure says why");
        let decided: i64 = by_status
            .iter()
            .filter(|row| row.0 != "pending")
            .map(|row| row.1)
            .sum();
        assert_eq!(decided, 30, "{name}: {by_status:?}");
        // Their log rows were written with the classification, once each.
        let logged: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM prediction_log WHERE product_id >= 20000 AND source = 'product'",
        )
        .fetch_one(database.pool())
        .await
        .unwrap();
        assert_eq!(logged, 30, "{name}");
        let error: String =
            sqlx::query_scalar("SELECT classify_error FROM products WHERE id = 10000")
                .fetch_one(database.pool())
                .await
                .unwrap();
        assert!(error.contains("image"), "{name}: {error}");
    }
}
