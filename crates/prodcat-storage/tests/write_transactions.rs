//! Write transactions under concurrent writers: on SQLite a transaction that reads and then
//! writes, begun with `Database::begin_write`, waits for the write lock instead of failing
//! half-way when another connection committed between its read and its write; and write
//! transactions cancelled at any point leave no lock behind, on every backend.

use prodcat_storage::{testing, Database};

async fn read_then_increment(database: &Database) -> Result<(), sqlx::Error> {
    let mut transaction = database.begin_write().await?;
    let failures: i64 =
        sqlx::query_scalar("SELECT failures FROM login_throttle WHERE throttle_key = 'counter'")
            .fetch_one(&mut *transaction)
            .await?;
    // A pause between the read and the write, so that the writers really interleave.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    sqlx::query("UPDATE login_throttle SET failures = $1 WHERE throttle_key = 'counter'")
        .bind(failures + 1)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await
}

/// The row `read_then_increment` counts in, at zero.
async fn add_counter(database: &Database) {
    sqlx::query(
        "INSERT INTO login_throttle (throttle_key, failures, blocked_until_ms, updated_at_ms) \
         VALUES ('counter', 0, 0, 0)",
    )
    .execute(database.pool())
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_then_write_transactions_all_commit_on_sqlite() {
    let test_database = testing::sqlite_database().await;
    let database = test_database.database.clone();
    add_counter(&database).await;
    let writers = 8;
    let rounds = 25;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let database = database.clone();
            tokio::spawn(async move {
                for _ in 0..rounds {
                    read_then_increment(&database).await?;
                }
                Ok::<(), sqlx::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .unwrap()
            .expect("no write transaction fails under concurrent writers");
    }
    let failures: i64 =
        sqlx::query_scalar("SELECT failures FROM login_throttle WHERE throttle_key = 'counter'")
            .fetch_one(database.pool())
            .await
            .unwrap();
    assert_eq!(failures, writers * rounds, "every increment is kept");
}

/// A write transaction whose task is dropped at any point (a killed worker loop, a client that
/// went away) must leave nothing locked: afterwards every other writer still commits. Starting a
/// transaction is the delicate point, since a begin dropped half-way could leave its connection
/// inside a transaction that nothing rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_write_transactions_never_wedge_the_database() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let database = test_database.database.clone();
        add_counter(&database).await;
        for round in 0..400u64 {
            let task = {
                let database = database.clone();
                tokio::spawn(async move { read_then_increment(&database).await })
            };
            // Spread the cancellations over the whole transaction, begin included.
            let delay = std::time::Duration::from_micros((round * 7_919) % 3_000);
            tokio::time::sleep(delay).await;
            task.abort();
            let _ = task.await;
        }
        let checked = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            for _ in 0..20 {
                read_then_increment(&database).await?;
            }
            Ok::<(), sqlx::Error>(())
        })
        .await;
        assert!(
            matches!(checked, Ok(Ok(()))),
            "{name}: writers after cancelled transactions: {checked:?}"
        );
    }
}
