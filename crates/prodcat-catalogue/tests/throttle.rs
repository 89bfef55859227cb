//! Sign-in throttling on every available SQL backend: failures recorded at the same moment
//! for the same account (several replicas, or one under a burst) are all counted.

use prodcat_catalogue::throttle::{blocked_for_ms, record_failure, ThrottlePolicy};
use prodcat_storage::testing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_failures_are_all_counted() {
    for test_database in testing::databases().await {
        let database = test_database.database.clone();
        let name = test_database.name();
        let policy = ThrottlePolicy::default();
        let key = "account:admin".to_string();
        let attempts = 24;
        let tasks: Vec<_> = (0..attempts)
            .map(|_| {
                let database = database.clone();
                let key = key.clone();
                tokio::spawn(async move { record_failure(&database, &[key], &policy).await })
            })
            .collect();
        for task in tasks {
            task.await
                .unwrap()
                .unwrap_or_else(|error| panic!("{name}: a failure was not recorded: {error}"));
        }
        let failures: i64 =
            sqlx::query_scalar("SELECT failures FROM login_throttle WHERE throttle_key = $1")
                .bind(key.clone())
                .fetch_one(database.pool())
                .await
                .unwrap();
        assert_eq!(failures, attempts, "{name}: every failure counts");
        assert!(
            blocked_for_ms(&database, &key).await.unwrap() > 0,
            "{name}: the account is blocked after {attempts} failures"
        );
    }
}
