//! The retraining pipeline folds reviewers' labels (read from the catalogue, which owns them)
//! into a derived dataset version and marks them used once, on every available SQL backend.

use prodcat_catalogue::products::{
    insert_if_absent, insert_review_decisions, unused_review_labels, RecordedDecision,
    StoredProduct,
};
use prodcat_catalogue::ProductStatus;
use prodcat_domain::CategoryCode;
use prodcat_pipelines::testing::TestPlatform;
use prodcat_pipelines::{pipeline_steps, run_pipeline, PipelineName, PipelineRequest, StartMode};
use prodcat_storage::{now_ms, testing};

async fn snapshot_output(platform: &TestPlatform, run_id: &str) -> serde_json::Value {
    pipeline_steps(&platform.platform.database, run_id)
        .await
        .unwrap()
        .into_iter()
        .find(|step| step.name == "snapshot")
        .and_then(|step| step.output)
        .expect("the snapshot step's output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retraining_folds_reviewed_labels_once() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let database = test_database.database.clone();
        let (platform, champion) = TestPlatform::with_text_champion(database.clone(), 300).await;
        let pool = CategoryCode::from_u16(2583).unwrap();
        let products: Vec<StoredProduct> = (0..12)
            .map(|index| StoredProduct {
                id: 900_000 + index,
                designation: format!("Piscine tubulaire ronde n°{index}"),
                description: String::new(),
                image_hash: None,
                status: ProductStatus::Reviewed,
                predicted_code: Some(pool),
                confidence: Some(0.9),
                model_version: Some(champion.id.to_string()),
                category_code: Some(pool),
                at_ms: now_ms(),
                created_by: "test".to_string(),
            })
            .collect();
        assert_eq!(insert_if_absent(&database, &products).await.unwrap(), 12);
        let decisions: Vec<RecordedDecision> = products
            .iter()
            .map(|product| RecordedDecision {
                product_id: product.id,
                decision: "accept".to_string(),
                category: pool,
                previous: Some(pool),
                reviewer: "rey".to_string(),
                at_ms: now_ms(),
            })
            .collect();
        insert_review_decisions(&database, &decisions)
            .await
            .unwrap();

        let request = PipelineRequest::new(PipelineName::Retrain, "test", StartMode::Fresh);
        let run = run_pipeline(&platform.platform, &request).await.unwrap();
        let snapshot = snapshot_output(&platform, &run.id).await;
        assert_eq!(snapshot["reviewedAdded"], 12, "{name}: {snapshot}");
        assert_eq!(snapshot["decisionsMarked"], 12, "{name}: {snapshot}");
        assert_eq!(snapshot["created"], true, "{name}: {snapshot}");
        let (left, _) = unused_review_labels(&database).await.unwrap();
        assert!(left.is_empty(), "{name}: the labels are used");

        // Run again: nothing new from reviews.
        let run = run_pipeline(&platform.platform, &request).await.unwrap();
        let snapshot = snapshot_output(&platform, &run.id).await;
        assert_eq!(snapshot["reviewedAdded"], 0, "{name}: {snapshot}");
        assert_eq!(snapshot["decisionsMarked"], 0, "{name}: {snapshot}");
    }
}
