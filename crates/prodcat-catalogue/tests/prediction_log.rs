//! The prediction log on every available SQL backend: a batch written again (a retry after an
//! uncertain commit) adds nothing, and on PostgreSQL a writer whose connections are killed in
//! the middle of its batches ends with every row once or counted as dropped, never twice.

use std::time::Duration;

use prodcat_catalogue::prediction_log::{
    new_prediction_id, write_prediction_log, PredictionLogRow, PredictionLogWriter,
    PredictionSource, ServingRole,
};
use prodcat_storage::{testing, Backend, Database};

fn row(index: usize) -> PredictionLogRow {
    PredictionLogRow {
        prediction_id: new_prediction_id(),
        at_ms: 1_800_000_000_000 + index as i64,
        model_version: "mv-0123456789abcdef".to_string(),
        source: PredictionSource::Predict,
        serving_role: ServingRole::Champion,
        client: Some("tester".to_string()),
        product_id: None,
        text: format!("piscine tubulaire {index}"),
        description_empty: index.is_multiple_of(2),
        image_width: None,
        image_height: None,
        image_brightness: None,
        image_border_ratio: None,
        predicted_code: 2583,
        confidence: 0.9,
        automatic: true,
        branches: "text".to_string(),
        branch_outputs: None,
        latency_us: 70,
        label_code: None,
        labelled_at_ms: None,
    }
}

async fn counts(database: &Database) -> (i64, i64) {
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM prediction_log")
        .fetch_one(database.pool())
        .await
        .unwrap();
    let distinct: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT prediction_id) FROM prediction_log")
            .fetch_one(database.pool())
            .await
            .unwrap();
    (total, distinct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_adds_no_duplicate() {
    for test_database in testing::databases().await {
        let database = &test_database.database;
        let name = test_database.name();
        let batch: Vec<PredictionLogRow> = (0..100).map(row).collect();
        write_prediction_log(database, &batch).await.unwrap();
        // The same batch again, as a writer does when it did not hear back from a commit.
        write_prediction_log(database, &batch).await.unwrap();
        let mut overlapping: Vec<PredictionLogRow> = batch[50..].to_vec();
        overlapping.extend((100..150).map(row));
        write_prediction_log(database, &overlapping).await.unwrap();
        assert_eq!(counts(database).await, (150, 150), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_writers_connections_mid_batch_leaves_no_duplicate() {
    let Some(test_database) = testing::postgres_database().await else {
        eprintln!("skipped: PRODCAT_TEST_POSTGRES_URL is not set (connection-kill test)");
        return;
    };
    let database = test_database.database.clone();
    assert_eq!(database.backend(), Backend::Postgres);
    let (writer, task) = PredictionLogWriter::start(database.clone());
    let total = 30_000;
    let killer_database = database.clone();
    let killer = tokio::spawn(async move {
        let mut killed = 0i64;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            // Every other session of this database: the writer's, in the middle of its work.
            let ended: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND state <> 'idle'",
            )
            .fetch_all(killer_database.pool())
            .await
            .unwrap_or_default();
            killed += ended.iter().filter(|ended| **ended).count() as i64;
        }
        killed
    });
    let mut accepted = 0;
    for index in 0..total {
        if writer.record(row(index)) {
            accepted += 1;
        }
        if index % 2_000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let killed = killer.await.unwrap();
    writer.flush().await;
    drop(writer);
    let _ = task.await;
    let (rows, distinct) = counts(&database).await;
    assert_eq!(rows, distinct, "no prediction is logged twice");
    assert!(rows <= accepted as i64);
    assert!(
        rows > 0,
        "the writer kept writing between the kills ({killed} sessions ended)"
    );
    eprintln!("{killed} sessions killed; {rows} of {accepted} rows written, none twice");
}
