//! The job queue on every available SQL backend: enqueue and process, idempotency, expired
//! leases retaken, late completions refused, retries then a recorded failure, and concurrent
//! workers (including one that is killed) processing every item exactly once.

use std::collections::HashSet;
use std::time::Duration;

use prodcat_jobs::{
    complete_items, create_job, get_job, item_status_counts, job_items, lease_items, queue_depth,
    reclaim_expired, renew_leases, run_worker, ItemInput, ItemOutcome, ItemResult, ItemStatus,
    JobError, JobKind, JobStatus, NewJob, RetryPolicy, WorkerOptions,
};
use prodcat_pipelines::testing::TestPlatform;
use prodcat_storage::{testing, Database};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

fn items(count: usize) -> Vec<ItemInput> {
    let titles = [
        "Piscine tubulaire ronde 3m avec pompe de filtration",
        "Jeu de société familial pour 2 à 6 joueurs",
        "Coussin décoratif en velours 45x45 cm",
        "Manette sans fil pour console de salon",
        "Croquettes pour chien adulte 15 kg",
    ];
    (0..count)
        .map(|i| ItemInput {
            designation: format!("{} n°{i}", titles[i % titles.len()]),
            description: if i % 3 == 0 {
                String::new()
            } else {
                "<p>Très bon état &amp; livraison rapide</p>".to_string()
            },
            image_hash: None,
            product_id: Some(1_000 + i as i64),
        })
        .collect()
}

fn new_job(count: usize, key: Option<&str>) -> NewJob {
    NewJob {
        kind: JobKind::Classify,
        idempotency_key: key.map(str::to_string),
        created_by: "tester".to_string(),
        items: items(count),
    }
}

fn done_outcome() -> ItemOutcome {
    ItemOutcome::Done {
        result: ItemResult {
            category: 2583,
            confidence: 0.9,
            automatic: true,
            top: Vec::new(),
            branches: vec!["text".to_string()],
            model_version: "mv-0000000000000000".to_string(),
        },
        log: None,
    }
}

async fn log_rows(database: &Database, source: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) AS count FROM prediction_log WHERE source = $1")
        .bind(source.to_string())
        .fetch_one(database.pool())
        .await
        .unwrap()
        .try_get("count")
        .unwrap()
}

async fn wait_for_completion(database: &Database, job: &str, limit: Duration) {
    let started = std::time::Instant::now();
    loop {
        let current = get_job(database, job).await.unwrap();
        if current.status == JobStatus::Completed {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "job {job} did not complete in {limit:?}: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_and_process_with_the_champion() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let (platform, version) =
            TestPlatform::with_text_champion(test_database.database.clone(), 540).await;
        let database = &platform.platform.database;
        let mut job = new_job(120, None);
        // A product with no text and no image can not be classified: a permanent error.
        job.items[7].designation = "   ".to_string();
        job.items[7].description = String::new();
        let (created, fresh) = create_job(database, &job).await.unwrap();
        assert!(fresh);
        assert_eq!(created.status, JobStatus::Queued);
        assert_eq!(created.item_count, 120);
        let depth = queue_depth(database).await.unwrap();
        assert_eq!(depth.pending, 120, "{name}");

        let shutdown = CancellationToken::new();
        let options = WorkerOptions {
            batch_size: 32,
            concurrency: 2,
            idle_wait: Duration::from_millis(50),
            ..WorkerOptions::default()
        };
        let worker = {
            let predictor = platform.predictor();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { run_worker(&predictor, &options, shutdown).await })
        };
        wait_for_completion(database, created.id.as_str(), Duration::from_secs(60)).await;
        shutdown.cancel();
        let stats = worker.await.unwrap().unwrap();
        assert_eq!(stats.done, 119, "{name}");
        assert_eq!(stats.failed, 1, "{name}");
        assert_eq!(stats.refused, 0, "{name}");

        let finished = get_job(database, created.id.as_str()).await.unwrap();
        assert_eq!(
            (finished.done_count, finished.failed_count),
            (119, 1),
            "{name}"
        );
        assert!(finished.finished_at_ms.is_some());
        let rows = job_items(database, created.id.as_str(), 0, 1000)
            .await
            .unwrap();
        assert_eq!(rows.len(), 120);
        for row in &rows {
            if row.position == 7 {
                assert_eq!(row.status, ItemStatus::Failed);
                assert!(
                    row.error
                        .as_deref()
                        .unwrap_or("")
                        .contains("no usable input"),
                    "{:?}",
                    row.error
                );
                assert_eq!(row.attempts, 1, "bad input is not retried");
                continue;
            }
            assert_eq!(row.status, ItemStatus::Done, "{name}: {row:?}");
            let result = row.result.as_ref().unwrap();
            assert_eq!(result.model_version, version.id.to_string());
            assert_eq!(result.top.len(), 5);
            assert_eq!(result.branches, vec!["text".to_string()]);
            assert_eq!(row.attempts, 1);
        }
        // Pools are recognised (the generated catalogue is easy for the text model).
        let pools = rows
            .iter()
            .filter(|row| row.position % 5 == 0)
            .filter(|row| row.result.as_ref().is_some_and(|r| r.category == 2583))
            .count();
        assert!(pools >= 20, "{name}: only {pools} of 24 pools recognised");
        // One prediction log row per classified item, with the text profile; a job item's
        // product id is the client's claim, so it links no log row to a stored product.
        assert_eq!(log_rows(database, "job").await, 119, "{name}");
        let row = sqlx::query(
            "SELECT product_id, text, description_empty, branches FROM prediction_log \
             WHERE source = 'job' AND text = $1",
        )
        .bind("Manette sans fil pour console de salon n°3")
        .fetch_one(database.pool())
        .await
        .unwrap();
        let text: String = row.try_get("text").unwrap();
        assert!(text.starts_with("Manette sans fil"), "{text}");
        assert_eq!(row.try_get::<i64, _>("description_empty").unwrap(), 1);
        assert_eq!(row.try_get::<Option<i64>, _>("product_id").unwrap(), None);
        assert_eq!(queue_depth(database).await.unwrap().pending, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_existing_job() {
    for test_database in testing::databases().await {
        let database = &test_database.database;
        let (first, created) = create_job(database, &new_job(10, Some("order-17")))
            .await
            .unwrap();
        assert!(created);
        let (again, created_again) = create_job(database, &new_job(10, Some("order-17")))
            .await
            .unwrap();
        assert!(!created_again);
        assert_eq!(again.id, first.id);
        let counts = item_status_counts(database, first.id.as_str())
            .await
            .unwrap();
        assert_eq!(
            counts.get(&ItemStatus::Pending),
            Some(&10),
            "items stored once"
        );
        // The same key with other items is a conflict, not a silent success.
        let error = create_job(database, &new_job(11, Some("order-17")))
            .await
            .unwrap_err();
        assert!(
            matches!(error, JobError::IdempotencyConflict { .. }),
            "{error}"
        );
        // Without a key every call is a new job; an empty job is refused.
        let (other, _) = create_job(database, &new_job(10, None)).await.unwrap();
        assert_ne!(other.id, first.id);
        assert!(matches!(
            create_job(database, &new_job(0, None)).await,
            Err(JobError::EmptyJob)
        ));
        assert!(matches!(
            get_job(database, "job-0000000000000000").await,
            Err(JobError::UnknownJob(_))
        ));
        assert!(matches!(
            get_job(database, "x'; DROP TABLE jobs; --").await,
            Err(JobError::InvalidJobId(_))
        ));
        // Concurrent creations with one key make one job.
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let database = database.clone();
            tasks.push(tokio::spawn(async move {
                create_job(&database, &new_job(25, Some("burst"))).await
            }));
        }
        let mut ids = HashSet::new();
        for task in tasks {
            let (job, _) = task.await.unwrap().unwrap();
            ids.insert(job.id);
        }
        assert_eq!(ids.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_is_retaken_and_the_late_completion_refused() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let database = &test_database.database;
        let policy = RetryPolicy::default();
        let (job, _) = create_job(database, &new_job(6, None)).await.unwrap();
        let lease = Duration::from_millis(300);
        let first = lease_items(database, "worker-a", 4, lease).await.unwrap();
        assert_eq!(first.len(), 4);
        assert!(first.iter().all(|item| item.attempt == 1));
        assert_eq!(
            get_job(database, job.id.as_str()).await.unwrap().status,
            JobStatus::Running
        );
        // Another worker only gets what is left.
        let second = lease_items(database, "worker-b", 10, lease).await.unwrap();
        assert_eq!(second.len(), 2);
        let taken: HashSet<i64> = first.iter().chain(&second).map(|i| i.id).collect();
        assert_eq!(taken.len(), 6);
        complete_items(
            database,
            &second
                .iter()
                .map(|item| (item.clone(), done_outcome()))
                .collect::<Vec<_>>(),
            &policy,
        )
        .await
        .unwrap();

        // Worker A stops answering; its leases expire.
        tokio::time::sleep(Duration::from_millis(450)).await;
        // Expired but not yet retaken: a late completion is already refused.
        let late = complete_items(database, &[(first[0].clone(), done_outcome())], &policy)
            .await
            .unwrap();
        assert_eq!(late.refused, 1, "{name}");
        let (returned, failed) = reclaim_expired(database, &policy).await.unwrap();
        assert_eq!((returned, failed), (4, 0), "{name}");
        let retaken = lease_items(database, "worker-c", 10, lease).await.unwrap();
        assert_eq!(retaken.len(), 4);
        assert!(retaken.iter().all(|item| item.attempt == 2));
        // A's renewal and completion are refused: C holds the items now.
        let mut stale = first.clone();
        assert_eq!(renew_leases(database, &mut stale, lease).await.unwrap(), 0);
        let refused = complete_items(
            database,
            &first
                .iter()
                .map(|item| (item.clone(), done_outcome()))
                .collect::<Vec<_>>(),
            &policy,
        )
        .await
        .unwrap();
        assert_eq!(refused.refused, 4, "{name}");
        assert_eq!(refused.done, 0);
        // C renews, then completes.
        let mut held = retaken.clone();
        assert_eq!(renew_leases(database, &mut held, lease).await.unwrap(), 4);
        let accepted = complete_items(
            database,
            &retaken
                .iter()
                .map(|item| (item.clone(), done_outcome()))
                .collect::<Vec<_>>(),
            &policy,
        )
        .await
        .unwrap();
        assert_eq!(accepted.done, 4, "{name}");
        let finished = get_job(database, job.id.as_str()).await.unwrap();
        assert_eq!(finished.status, JobStatus::Completed);
        assert_eq!((finished.done_count, finished.failed_count), (6, 0));
        // Completing a finished item again changes nothing.
        let again = complete_items(database, &[(retaken[0].clone(), done_outcome())], &policy)
            .await
            .unwrap();
        assert_eq!(again.refused, 1);
        assert_eq!(
            get_job(database, job.id.as_str()).await.unwrap().done_count,
            6
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_then_a_recorded_failure() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let database = &test_database.database;
        let policy = RetryPolicy {
            max_attempts: 3,
            backoff_base: Duration::from_millis(150),
            backoff_max: Duration::from_secs(10),
        };
        let (job, _) = create_job(database, &new_job(1, None)).await.unwrap();
        let lease = Duration::from_secs(5);
        let mut waits = Vec::new();
        // Waits are measured from before each failure is recorded: the backoff starts inside
        // `complete_items`, not once it has returned.
        let mut failed_at = None;
        for attempt in 1..=3 {
            let started = failed_at.unwrap_or_else(std::time::Instant::now);
            let leased = loop {
                let leased = lease_items(database, "worker", 1, lease).await.unwrap();
                if !leased.is_empty() {
                    break leased;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            waits.push(started.elapsed());
            assert_eq!(leased[0].attempt, attempt, "{name}");
            failed_at = Some(std::time::Instant::now());
            let report = complete_items(
                database,
                &[(
                    leased[0].clone(),
                    ItemOutcome::Failed {
                        error: "object store unreachable".to_string(),
                        retryable: true,
                    },
                )],
                &policy,
            )
            .await
            .unwrap();
            if attempt < 3 {
                assert_eq!(report.retried, 1);
                let item = &job_items(database, job.id.as_str(), 0, 1).await.unwrap()[0];
                assert_eq!(item.status, ItemStatus::Pending);
                assert_eq!(item.error.as_deref(), Some("object store unreachable"));
            } else {
                assert_eq!(report.failed, 1);
            }
        }
        // The second and third attempts waited for the backoff (150 ms, then 300 ms).
        assert!(waits[1] >= Duration::from_millis(140), "{name}: {waits:?}");
        assert!(waits[2] >= Duration::from_millis(290), "{name}: {waits:?}");
        let item = &job_items(database, job.id.as_str(), 0, 1).await.unwrap()[0];
        assert_eq!(item.status, ItemStatus::Failed);
        assert_eq!(item.attempts, 3);
        assert!(
            item.error
                .as_deref()
                .unwrap()
                .contains("gave up after 3 attempts"),
            "{:?}",
            item.error
        );
        let finished = get_job(database, job.id.as_str()).await.unwrap();
        assert_eq!(finished.status, JobStatus::Completed);
        assert_eq!(finished.failed_count, 1);
        assert!(lease_items(database, "worker", 1, lease)
            .await
            .unwrap()
            .is_empty());

        // A lease that expires on its last attempt is failed by the reclaim, with a reason.
        let (job, _) = create_job(database, &new_job(1, None)).await.unwrap();
        let short = Duration::from_millis(100);
        let single = RetryPolicy {
            max_attempts: 1,
            ..policy
        };
        assert_eq!(
            lease_items(database, "dies", 1, short).await.unwrap().len(),
            1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(reclaim_expired(database, &single).await.unwrap(), (0, 1));
        let item = &job_items(database, job.id.as_str(), 0, 1).await.unwrap()[0];
        assert_eq!(item.status, ItemStatus::Failed);
        assert!(item
            .error
            .as_deref()
            .unwrap()
            .contains("stopped responding"));
        assert_eq!(
            get_job(database, job.id.as_str()).await.unwrap().status,
            JobStatus::Completed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_never_take_an_item_twice() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let database = &test_database.database;
        let (job, _) = create_job(database, &new_job(1500, None)).await.unwrap();
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let database = database.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("worker-{worker}");
                let mut seen = Vec::new();
                loop {
                    let leased = lease_items(&database, &owner, 37, Duration::from_secs(30))
                        .await
                        .unwrap();
                    if leased.is_empty() {
                        break;
                    }
                    seen.extend(leased.iter().map(|item| item.id));
                    let outcomes: Vec<_> = leased
                        .into_iter()
                        .map(|item| (item, done_outcome()))
                        .collect();
                    let report = complete_items(&database, &outcomes, &RetryPolicy::default())
                        .await
                        .unwrap();
                    assert_eq!(report.done, outcomes.len());
                }
                seen
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let distinct: HashSet<i64> = all.iter().copied().collect();
        assert_eq!(all.len(), 1500, "{name}: an item was leased twice");
        assert_eq!(distinct.len(), 1500, "{name}");
        let finished = get_job(database, job.id.as_str()).await.unwrap();
        assert_eq!(finished.done_count, 1500);
        assert_eq!(finished.status, JobStatus::Completed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loop_leaves_every_item_classified_exactly_once() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let (platform, _) =
            TestPlatform::with_text_champion(test_database.database.clone(), 540).await;
        let database = &platform.platform.database;
        let (job, _) = create_job(database, &new_job(3000, None)).await.unwrap();
        let options = |owner: &str| WorkerOptions {
            owner: owner.to_string(),
            batch_size: 50,
            concurrency: 1,
            lease_duration: Duration::from_millis(1500),
            idle_wait: Duration::from_millis(50),
            ..WorkerOptions::default()
        };
        let doomed_token = CancellationToken::new();
        let doomed = {
            let predictor = platform.predictor();
            let options = options("doomed");
            tokio::spawn(async move { run_worker(&predictor, &options, doomed_token).await })
        };
        // Wait until the doomed worker has finished some items and holds a lease, then kill it
        // (the task is dropped at its next await point, as a killed process would stop).
        loop {
            let held: i64 =
                sqlx::query("SELECT COUNT(*) AS count FROM job_items WHERE lease_owner = 'doomed'")
                    .fetch_one(database.pool())
                    .await
                    .unwrap()
                    .try_get("count")
                    .unwrap();
            let done = get_job(database, job.id.as_str()).await.unwrap().done_count;
            if held > 0 && done > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        doomed.abort();
        let _ = doomed.await;
        // A statement the worker had already sent still runs to its end on the database side
        // (as it would for a killed process), and a completion clears its leases: count the
        // orphans only once the item states have stopped moving.
        let count_orphaned = || async {
            sqlx::query("SELECT COUNT(*) AS count FROM job_items WHERE lease_owner = 'doomed' AND status = 'leased'")
                .fetch_one(database.pool())
                .await
                .unwrap()
                .try_get::<i64, _>("count")
                .unwrap()
        };
        let snapshot = || async {
            let done = get_job(database, job.id.as_str()).await.unwrap().done_count;
            (count_orphaned().await, done)
        };
        let mut last = snapshot().await;
        let mut stable_reads = 0;
        while stable_reads < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = snapshot().await;
            stable_reads = if now == last { stable_reads + 1 } else { 0 };
            last = now;
        }
        if count_orphaned().await == 0 {
            // The worker was stopped between two batches (it had just completed one): a process
            // killed at that moment leaves nothing behind, so make it die holding a batch, as a
            // process killed mid-batch would.
            let taken = lease_items(database, "doomed", 50, Duration::from_millis(1500))
                .await
                .unwrap();
            assert!(!taken.is_empty(), "{name}: items are left to lease");
        }
        let orphaned = count_orphaned().await;
        assert!(orphaned > 0, "{name}: the killed worker should hold leases");

        let shutdown = CancellationToken::new();
        let survivor = {
            let predictor = platform.predictor();
            let options = options("survivor");
            let shutdown = shutdown.clone();
            tokio::spawn(async move { run_worker(&predictor, &options, shutdown).await })
        };
        wait_for_completion(database, job.id.as_str(), Duration::from_secs(120)).await;
        shutdown.cancel();
        survivor.await.unwrap().unwrap();

        let counts = item_status_counts(database, job.id.as_str()).await.unwrap();
        assert_eq!(
            counts.get(&ItemStatus::Done),
            Some(&3000),
            "{name}: {counts:?}"
        );
        assert_eq!(counts.len(), 1, "{name}: {counts:?}");
        // Exactly once: one log row per item, and the orphaned items were retaken.
        assert_eq!(log_rows(database, "job").await, 3000, "{name}");
        let distinct: i64 = sqlx::query(
            "SELECT COUNT(DISTINCT prediction_id) AS count FROM prediction_log WHERE source = 'job'",
        )
        .fetch_one(database.pool())
        .await
        .unwrap()
        .try_get("count")
        .unwrap();
        assert_eq!(distinct, 3000);
        let retaken: i64 = sqlx::query(
            "SELECT COUNT(*) AS count FROM job_items WHERE job_id = $1 AND attempts = 2",
        )
        .bind(job.id.as_str().to_string())
        .fetch_one(database.pool())
        .await
        .unwrap()
        .try_get("count")
        .unwrap();
        assert_eq!(retaken, orphaned, "{name}");
    }
}
