//! Run tracking tests, on every available SQL backend: lifecycle, parameters, metrics with steps,
//! artifacts, listing with filters, and comparison with per-class F1 deltas.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use prodcat_domain::{sha256_hex, DatasetVersionId};
use prodcat_registry::{
    compare_runs, fail_run, finish_run, get_run, list_runs, log_artifact, log_metric, log_metrics,
    log_params, start_run, store_artifact, NewArtifact, NewRun, RegistryError, RunFilter, RunKind,
    RunStatus,
};
use prodcat_storage::{testing, ObjectStorage};

fn dataset(hex: &str) -> DatasetVersionId {
    DatasetVersionId::parse(&format!("ds-{hex}")).unwrap()
}

fn new_run(kind: RunKind, name: &str, dataset_hex: &str) -> NewRun {
    let mut run = NewRun::new(kind, name, "tester");
    run.dataset_version = Some(dataset(dataset_hex));
    run.parameters = BTreeMap::from([
        ("seed".to_string(), "42".to_string()),
        ("text.c".to_string(), "0.5".to_string()),
    ]);
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_lifecycle_with_params_metrics_and_artifacts() {
    let objects_folder = tempfile::tempdir().unwrap();
    let objects = ObjectStorage::open(objects_folder.path().to_str().unwrap()).unwrap();
    for test_database in testing::databases().await {
        let backend = test_database.name();
        let database = &test_database.database;
        let run = start_run(
            database,
            &new_run(RunKind::Train, "train text", "0123456789abcdef"),
        )
        .await
        .unwrap();
        assert_eq!(run.status, RunStatus::Running, "{backend}");
        assert!(run.id.as_str().starts_with("run-"));
        assert!(!run.code_version.is_empty());
        assert_eq!(run.parameters["seed"], "42");
        assert!(run.ended_at_ms.is_none());

        // Parameters: added, repeated with the same value, refused with another.
        log_params(database, &run.id, [("image.epochs", "30"), ("seed", "42")])
            .await
            .unwrap();
        let changed = log_params(database, &run.id, [("seed", "7")]).await;
        assert!(
            matches!(changed, Err(RegistryError::ParameterChanged { ref key, .. }) if key == "seed"),
            "{backend}: {changed:?}"
        );
        assert!(log_params(database, &run.id, [("bad key!", "1")])
            .await
            .is_err());

        // A per-epoch curve, single values, and a replaced step.
        for epoch in 0..5i64 {
            log_metric(
                database,
                &run.id,
                "epoch.image.train_loss",
                epoch,
                1.0 / (epoch + 1) as f64,
            )
            .await
            .unwrap();
        }
        log_metrics(
            database,
            &run.id,
            [
                ("weighted_f1", 0, 0.81),
                ("accuracy", 0, 0.8),
                ("f1.class.10", 0, 0.7),
                ("f1.class.2583", 0, 0.95),
                ("epoch.image.train_loss", 4, 0.15),
            ],
        )
        .await
        .unwrap();
        let nan = log_metric(database, &run.id, "weighted_f1", 0, f64::NAN).await;
        assert!(
            matches!(nan, Err(RegistryError::NonFiniteMetric { .. })),
            "{nan:?}"
        );

        // Artifacts: stored through the object store, or recorded by the caller.
        let report = Bytes::from_static(b"<html>report</html>");
        let stored = store_artifact(
            database,
            &objects,
            &run.id,
            "reports/evaluation.html",
            report.clone(),
            "",
        )
        .await
        .unwrap();
        assert_eq!(stored.media_type, "text/html");
        assert_eq!(stored.sha256, sha256_hex(&report));
        assert_eq!(stored.byte_length, report.len() as i64);
        assert_eq!(objects.get(&stored.object_key).await.unwrap(), report);
        // Storing the same content again is a no-op; other content under the same name is refused.
        store_artifact(
            database,
            &objects,
            &run.id,
            "reports/evaluation.html",
            report.clone(),
            "",
        )
        .await
        .unwrap();
        let conflict = store_artifact(
            database,
            &objects,
            &run.id,
            "reports/evaluation.html",
            Bytes::from_static(b"other"),
            "",
        )
        .await;
        assert!(matches!(
            conflict,
            Err(RegistryError::ArtifactConflict { .. })
        ));
        let manifest = NewArtifact {
            name: "model/manifest.json".to_string(),
            object_key: "models/mv-0123456789abcdef/manifest.json".to_string(),
            sha256: sha256_hex(b"{}"),
            byte_length: 2,
            media_type: String::new(),
        };
        let logged = log_artifact(database, &run.id, &manifest).await.unwrap();
        assert_eq!(logged.media_type, "application/json");
        let traversal = NewArtifact {
            name: "../escape".to_string(),
            ..manifest.clone()
        };
        assert!(log_artifact(database, &run.id, &traversal).await.is_err());

        let finished = finish_run(database, &run.id).await.unwrap();
        assert_eq!(finished.status, RunStatus::Finished);
        assert!(finished.duration_ms().unwrap() >= 0);
        // A closed run takes nothing more.
        let late = log_metric(database, &run.id, "accuracy", 1, 0.9).await;
        assert!(
            matches!(late, Err(RegistryError::RunClosed { .. })),
            "{late:?}"
        );
        assert!(log_params(database, &run.id, [("x", "1")]).await.is_err());
        assert!(matches!(
            finish_run(database, &run.id).await,
            Err(RegistryError::RunClosed { .. })
        ));

        // Read back by a prefix of the id.
        let details = get_run(database, &run.id.as_str()[..10]).await.unwrap();
        assert_eq!(details.run.id, run.id);
        assert_eq!(details.run.parameters.len(), 3);
        assert_eq!(details.run.parameters["image.epochs"], "30");
        let curve = &details.metric_history["epoch.image.train_loss"];
        assert_eq!(
            curve.iter().map(|p| p.step).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(
            curve[4].value, 0.15,
            "the later value for step 4 replaced the first"
        );
        assert_eq!(details.metrics["epoch.image.train_loss"], 0.15);
        assert_eq!(details.metrics["weighted_f1"], 0.81);
        assert_eq!(details.metrics["f1.class.2583"], 0.95);
        assert_eq!(details.artifacts.len(), 2);
        assert_eq!(details.artifacts[0].name, "model/manifest.json");

        // Failing a run keeps its message.
        let other = start_run(
            database,
            &new_run(RunKind::Evaluate, "evaluate", "0123456789abcdef"),
        )
        .await
        .unwrap();
        let failed = fail_run(database, &other.id, "out of memory")
            .await
            .unwrap();
        assert_eq!(failed.status, RunStatus::Failed);
        assert_eq!(failed.error.as_deref(), Some("out of memory"));

        // Unknown references are named in the error.
        let unknown = get_run(database, "run-ffffffffffffffff").await.unwrap_err();
        assert!(
            unknown.to_string().contains("run-ffffffffffffffff"),
            "{unknown}"
        );
        assert!(get_run(database, "nonsense").await.is_err());
        assert!(get_run(database, "run-").await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_newest_first_with_filters() {
    for test_database in testing::databases().await {
        let backend = test_database.name();
        let database = &test_database.database;
        let mut ids = Vec::new();
        for (index, (kind, dataset_hex)) in [
            (RunKind::Train, "aaaaaaaaaaaaaaaa"),
            (RunKind::Evaluate, "aaaaaaaaaaaaaaaa"),
            (RunKind::Train, "bbbbbbbbbbbbbbbb"),
            (RunKind::Pipeline, "bbbbbbbbbbbbbbbb"),
        ]
        .into_iter()
        .enumerate()
        {
            let run = start_run(
                database,
                &new_run(kind, &format!("run {index}"), dataset_hex),
            )
            .await
            .unwrap();
            ids.push(run.id);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        finish_run(database, &ids[0]).await.unwrap();
        fail_run(database, &ids[2], "diverged").await.unwrap();

        let all = list_runs(database, &RunFilter::default()).await.unwrap();
        let listed: Vec<_> = all.iter().map(|run| run.id.clone()).collect();
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(listed, newest_first, "{backend}");

        let trains = list_runs(
            database,
            &RunFilter {
                kind: Some(RunKind::Train),
                ..RunFilter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(trains.len(), 2);
        let on_b = list_runs(
            database,
            &RunFilter {
                dataset_version: Some(dataset("bbbbbbbbbbbbbbbb")),
                status: Some(RunStatus::Running),
                ..RunFilter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(on_b.len(), 1);
        assert_eq!(on_b[0].id, ids[3]);
        let failed = list_runs(
            database,
            &RunFilter {
                status: Some(RunStatus::Failed),
                ..RunFilter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].id, ids[2]);
        let limited = list_runs(
            database,
            &RunFilter {
                limit: Some(2),
                ..RunFilter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(limited.len(), 2);
        assert_eq!(limited[0].id, ids[3]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_compared_side_by_side() {
    for test_database in testing::databases().await {
        let database = &test_database.database;
        let a = start_run(database, &new_run(RunKind::Train, "a", "0123456789abcdef"))
            .await
            .unwrap();
        let mut second = new_run(RunKind::Train, "b", "0123456789abcdef");
        second
            .parameters
            .insert("text.c".to_string(), "1.0".to_string());
        second
            .parameters
            .insert("image.head".to_string(), "mlp".to_string());
        let b = start_run(database, &second).await.unwrap();
        log_metrics(
            database,
            &a.id,
            [
                ("weighted_f1", 0, 0.80),
                ("macro_f1", 0, 0.75),
                ("f1.class.10", 0, 0.60),
                ("f1.class.40", 0, 0.90),
                ("epoch.image.train_loss", 0, 1.0),
                ("epoch.image.train_loss", 1, 0.5),
            ],
        )
        .await
        .unwrap();
        log_metrics(
            database,
            &b.id,
            [
                ("weighted_f1", 0, 0.83),
                ("accuracy", 0, 0.82),
                ("f1.class.10", 0, 0.70),
                ("f1.class.40", 0, 0.85),
                ("f1.class.50", 0, 0.40),
                ("epoch.image.train_loss", 0, 0.9),
            ],
        )
        .await
        .unwrap();
        let comparison = compare_runs(database, a.id.as_str(), b.id.as_str())
            .await
            .unwrap();
        let parameter = |key: &str| {
            comparison
                .parameters
                .iter()
                .find(|p| p.key == key)
                .unwrap()
                .clone()
        };
        assert!(!parameter("seed").differs);
        assert!(parameter("text.c").differs);
        assert_eq!(parameter("text.c").a.as_deref(), Some("0.5"));
        assert_eq!(parameter("text.c").b.as_deref(), Some("1.0"));
        assert!(parameter("image.head").differs);
        assert_eq!(parameter("image.head").a, None);
        assert_eq!(comparison.differing_parameters().count(), 2);

        let metric = |key: &str| {
            comparison
                .metrics
                .iter()
                .find(|m| m.key == key)
                .unwrap_or_else(|| panic!("metric {key} missing"))
                .clone()
        };
        assert!((metric("weighted_f1").delta.unwrap() - 0.03).abs() < 1e-12);
        assert_eq!(metric("macro_f1").b, None);
        assert_eq!(metric("macro_f1").delta, None);
        assert_eq!(metric("accuracy").a, None);
        // Latest step of a curve: 0.5 (epoch 1) against 0.9 (epoch 0).
        assert!((metric("epoch.image.train_loss").delta.unwrap() - 0.4).abs() < 1e-12);
        assert!(comparison
            .metrics
            .iter()
            .all(|m| !m.key.starts_with("f1.class.")));

        let classes: Vec<(u16, Option<f64>)> = comparison
            .per_class_f1
            .iter()
            .map(|class| (class.code, class.delta))
            .collect();
        assert_eq!(classes.len(), 3);
        assert_eq!(classes[0].0, 10);
        assert!((classes[0].1.unwrap() - 0.10).abs() < 1e-12);
        assert!((classes[1].1.unwrap() + 0.05).abs() < 1e-12);
        assert_eq!(classes[2], (50, None));
        assert_eq!(comparison.per_class_f1[0].name, Some("used books"));

        // Without per-class values on one side, those values stay among the plain metrics.
        let c = start_run(
            database,
            &new_run(RunKind::Evaluate, "c", "0123456789abcdef"),
        )
        .await
        .unwrap();
        log_metric(database, &c.id, "weighted_f1", 0, 0.5)
            .await
            .unwrap();
        let partial = compare_runs(database, a.id.as_str(), c.id.as_str())
            .await
            .unwrap();
        assert!(partial.per_class_f1.is_empty());
        assert!(partial.metrics.iter().any(|m| m.key == "f1.class.10"));
    }
}
