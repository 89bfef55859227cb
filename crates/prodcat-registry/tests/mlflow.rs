//! MLflow export against a real `mlflow server` (start one with `bench/start-mlflow.sh` and set
//! `PRODCAT_TEST_MLFLOW_URL`): exports runs, versions and aliases, reads them back through
//! MLflow's own REST API, and checks that exporting again changes nothing.

use std::collections::BTreeMap;

use bytes::Bytes;
use prodcat_domain::{DatasetVersionId, ModelVersionId};
use prodcat_registry::{
    export_to_mlflow, fail_run, finish_run, log_metric, log_metrics, mirror_to_mlflow,
    register_version, remove_alias, rollback, set_alias, start_run, store_artifact, AliasMove,
    MlflowExportOptions, MlflowSettings, NewModelVersion, NewRun, RegistryError, RunKind,
    CHALLENGER, CHAMPION,
};
use prodcat_storage::{testing, ObjectStorage};
use serde_json::{json, Value};

struct Mlflow {
    http: reqwest::Client,
    base: String,
}

impl Mlflow {
    async fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/api/2.0/mlflow/{endpoint}", self.base))
            .query(query)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, endpoint: &str, body: &Value) -> Value {
        let response = self
            .http
            .post(format!("{}/api/2.0/mlflow/{endpoint}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{endpoint}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn runs_tagged(&self, experiment_id: &str, run_id: &str) -> Vec<Value> {
        let found = self
            .post(
                "runs/search",
                &json!({
                    "experiment_ids": [experiment_id],
                    "filter": format!("tags.`prodcat.run_id` = '{run_id}'"),
                }),
            )
            .await;
        found["runs"].as_array().cloned().unwrap_or_default()
    }

    async fn alias(&self, model: &str, alias: &str) -> (u16, Value) {
        self.get(
            "registered-models/alias",
            &[("name", model), ("alias", alias)],
        )
        .await
    }
}

fn pairs(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            (
                item["key"].as_str().unwrap().to_string(),
                item["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_round_trips_through_mlflow() {
    let Ok(url) = std::env::var("PRODCAT_TEST_MLFLOW_URL") else {
        eprintln!(
            "skipped: PRODCAT_TEST_MLFLOW_URL is not set (start a server with crates/prodcat-registry/bench/start-mlflow.sh)"
        );
        return;
    };
    let mlflow = Mlflow {
        http: reqwest::Client::new(),
        base: url.trim_end_matches('/').to_string(),
    };
    let test_database = testing::sqlite_database().await;
    let database = &test_database.database;
    let objects_folder = tempfile::tempdir().unwrap();
    let objects = ObjectStorage::open(objects_folder.path().to_str().unwrap()).unwrap();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let settings = MlflowSettings {
        experiment_name: format!("prodcat-test-{unique}"),
        registered_model_name: format!("prodcat-test-model-{unique}"),
        ..MlflowSettings::new(&url)
    };
    let options = MlflowExportOptions {
        objects: Some(objects.clone()),
        ..MlflowExportOptions::default()
    };
    let model_name = settings.registered_model_name.clone();

    // A finished training run with a curve, per-class F1 and an artifact; a failed evaluation;
    // a run still going.
    let dataset = DatasetVersionId::parse("ds-0123456789abcdef").unwrap();
    let mut train = NewRun::new(RunKind::Train, "train text+image", "alice");
    train.dataset_version = Some(dataset.clone());
    train.code_version = "0123456789abcdef0123456789abcdef01234567".to_string();
    train.parameters = BTreeMap::from([
        ("seed".to_string(), "42".to_string()),
        ("text.c".to_string(), "0.5".to_string()),
    ]);
    let train = start_run(database, &train).await.unwrap();
    for epoch in 0..4 {
        log_metric(
            database,
            &train.id,
            "epoch.image.train_loss",
            epoch,
            1.0 / (epoch + 1) as f64,
        )
        .await
        .unwrap();
    }
    log_metrics(
        database,
        &train.id,
        [("weighted_f1", 0, 0.83), ("f1.class.10", 0, 0.71)],
    )
    .await
    .unwrap();
    store_artifact(
        database,
        &objects,
        &train.id,
        "reports/evaluation.json",
        Bytes::from_static(br#"{"weightedF1":0.83}"#),
        "",
    )
    .await
    .unwrap();
    finish_run(database, &train.id).await.unwrap();
    let evaluate = start_run(
        database,
        &NewRun::new(RunKind::Evaluate, "evaluate", "alice"),
    )
    .await
    .unwrap();
    fail_run(database, &evaluate.id, "image folder missing")
        .await
        .unwrap();
    let pipeline = start_run(
        database,
        &NewRun::new(RunKind::Pipeline, "retrain", "alice"),
    )
    .await
    .unwrap();
    log_metric(database, &pipeline.id, "data.train_rows", 0, 1000.0)
        .await
        .unwrap();

    let first = ModelVersionId::parse("mv-1111000000000001").unwrap();
    let second = ModelVersionId::parse("mv-2222000000000002").unwrap();
    for (id, run) in [(&first, None), (&second, Some(train.id.clone()))] {
        register_version(
            database,
            &NewModelVersion {
                id: id.clone(),
                run_id: run,
                dataset_version: Some(dataset.clone()),
                manifest_json: format!(r#"{{"id":"{id}"}}"#),
                object_prefix: format!("models/{id}"),
                summary_metrics: BTreeMap::from([("weighted_f1".to_string(), 0.83)]),
                created_by: "alice".to_string(),
                note: "test".to_string(),
            },
        )
        .await
        .unwrap();
    }
    let alias_move = |alias: &str, version: &ModelVersionId| AliasMove {
        alias: alias.to_string(),
        version: version.clone(),
        actor: "alice".to_string(),
        reason: "test".to_string(),
        forced: false,
        decision: None,
    };
    set_alias(database, &alias_move(CHAMPION, &first))
        .await
        .unwrap();
    set_alias(database, &alias_move(CHAMPION, &second))
        .await
        .unwrap();
    set_alias(database, &alias_move(CHALLENGER, &first))
        .await
        .unwrap();

    let report = export_to_mlflow(database, &settings, &options)
        .await
        .unwrap();
    assert_eq!(report.runs_created, 3, "{report:?}");
    assert_eq!(report.versions_created, 2);
    assert_eq!(report.aliases_set, 2);
    assert_eq!(report.artifacts_uploaded, 1);
    assert_eq!(report.metrics_logged, 4 + 2 + 1);
    let experiment = report.experiment_id.clone();

    // Runs: found by tag, with params, tags, status and metric history.
    let found = mlflow.runs_tagged(&experiment, train.id.as_str()).await;
    assert_eq!(found.len(), 1);
    let mlflow_train = found[0]["info"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(report.run_ids[train.id.as_str()], mlflow_train);
    let (status, fetched) = mlflow.get("runs/get", &[("run_id", &mlflow_train)]).await;
    assert_eq!(status, 200);
    let run = &fetched["run"];
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(
        run["info"]["start_time"].as_i64(),
        Some(train.started_at_ms)
    );
    let params = pairs(&run["data"]["params"]);
    assert_eq!(params["seed"], "42");
    assert_eq!(params["text.c"], "0.5");
    let tags = pairs(&run["data"]["tags"]);
    assert_eq!(tags["prodcat.kind"], "train");
    assert_eq!(tags["prodcat.dataset_version"], dataset.as_str());
    assert_eq!(tags["prodcat.model_version"], second.as_str());
    assert_eq!(
        tags["mlflow.source.git.commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(tags["mlflow.user"], "alice");
    let latest: BTreeMap<String, f64> = run["data"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["key"].as_str().unwrap().to_string(),
                m["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(latest["weighted_f1"], 0.83);
    assert_eq!(latest["f1.class.10"], 0.71);
    let (_, history) = mlflow
        .get(
            "metrics/get-history",
            &[
                ("run_id", &mlflow_train),
                ("metric_key", "epoch.image.train_loss"),
            ],
        )
        .await;
    let mut curve: Vec<(i64, f64)> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["step"].as_i64().unwrap_or(0),
                m["value"].as_f64().unwrap(),
            )
        })
        .collect();
    curve.sort_by_key(|point| point.0);
    assert_eq!(curve, vec![(0, 1.0), (1, 0.5), (2, 1.0 / 3.0), (3, 0.25)]);
    let (_, listing) = mlflow
        .get(
            "artifacts/list",
            &[("run_id", &mlflow_train), ("path", "reports")],
        )
        .await;
    let files: Vec<&str> = listing["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|file| file["path"].as_str())
        .collect();
    assert_eq!(files, vec!["reports/evaluation.json"], "{listing}");
    let failed = mlflow.runs_tagged(&experiment, evaluate.id.as_str()).await;
    assert_eq!(failed[0]["info"]["status"], "FAILED");
    assert_eq!(
        pairs(&failed[0]["data"]["tags"])["prodcat.error"],
        "image folder missing"
    );
    let running = mlflow.runs_tagged(&experiment, pipeline.id.as_str()).await;
    assert_eq!(running[0]["info"]["status"], "RUNNING");

    // Model versions and aliases, read back by alias.
    let (status, champion) = mlflow.alias(&model_name, CHAMPION).await;
    assert_eq!(status, 200, "{champion}");
    let champion = &champion["model_version"];
    assert_eq!(
        pairs(&champion["tags"])["prodcat.model_version"],
        second.as_str()
    );
    assert_eq!(champion["run_id"], mlflow_train.as_str());
    assert_eq!(champion["source"], format!("runs:/{mlflow_train}/model"));
    let (_, challenger) = mlflow.alias(&model_name, CHALLENGER).await;
    assert_eq!(
        pairs(&challenger["model_version"]["tags"])["prodcat.model_version"],
        first.as_str()
    );
    let (_, registered) = mlflow
        .get("registered-models/get", &[("name", &model_name)])
        .await;
    let model_tags = pairs(&registered["registered_model"]["tags"]);
    assert!(model_tags["prodcat.alias_history"].contains("\"actor\":\"alice\""));

    // Exporting again duplicates nothing; the finished pipeline replaces its running copy.
    let again = export_to_mlflow(database, &settings, &options)
        .await
        .unwrap();
    assert_eq!(
        (
            again.runs_created,
            again.runs_replaced,
            again.runs_unchanged
        ),
        (0, 1, 2),
        "{again:?}"
    );
    assert_eq!((again.versions_created, again.aliases_set), (0, 0));
    finish_run(database, &pipeline.id).await.unwrap();
    let third = export_to_mlflow(database, &settings, &options)
        .await
        .unwrap();
    assert_eq!(
        (third.runs_replaced, third.runs_unchanged),
        (1, 2),
        "{third:?}"
    );
    let pipelines = mlflow.runs_tagged(&experiment, pipeline.id.as_str()).await;
    assert_eq!(pipelines.len(), 1, "one active MLflow run per prodcat run");
    assert_eq!(pipelines[0]["info"]["status"], "FINISHED");
    let fourth = export_to_mlflow(database, &settings, &options)
        .await
        .unwrap();
    assert_eq!(
        (
            fourth.runs_created,
            fourth.runs_replaced,
            fourth.runs_unchanged
        ),
        (0, 0, 3)
    );

    // A rollback and a removed alias reach MLflow on the next export.
    rollback(database, CHAMPION, "ops", "regression")
        .await
        .unwrap();
    remove_alias(database, CHALLENGER, "ops", "done")
        .await
        .unwrap();
    let after = export_to_mlflow(database, &settings, &options)
        .await
        .unwrap();
    assert_eq!(
        (after.aliases_set, after.aliases_removed),
        (1, 1),
        "{after:?}"
    );
    let (_, champion) = mlflow.alias(&model_name, CHAMPION).await;
    assert_eq!(
        pairs(&champion["model_version"]["tags"])["prodcat.model_version"],
        first.as_str()
    );
    // MLflow answers a missing alias with 400 INVALID_PARAMETER_VALUE "... alias ... not found".
    let (status, missing) = mlflow.alias(&model_name, CHALLENGER).await;
    assert!(
        status >= 400,
        "the removed alias is gone from MLflow: {missing}"
    );
    assert!(
        missing["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not found"),
        "{missing}"
    );

    // The automatic mirror follows MLFLOW_TRACKING_URI and the name variables, as the binary
    // hands them over.
    assert!(MlflowSettings::from_variables(|_| None).is_none());
    let mirror_name = format!("prodcat-mirror-{unique}");
    let mirror = MlflowSettings::from_variables(|name| match name {
        "MLFLOW_TRACKING_URI" => Some(url.clone()),
        "PRODCAT_MLFLOW_EXPERIMENT" | "PRODCAT_MLFLOW_MODEL_NAME" => Some(mirror_name.clone()),
        _ => None,
    })
    .expect("MLFLOW_TRACKING_URI is given");
    let mirrored = mirror_to_mlflow(database, &mirror, std::slice::from_ref(&train.id), None)
        .await
        .unwrap();
    assert_eq!((mirrored.runs_created, mirrored.versions_created), (1, 2));
    assert_eq!(mirrored.artifacts_uploaded, 0, "no object store given");
    let (_, champion) = mlflow.alias(&mirror_name, CHAMPION).await;
    assert_eq!(
        pairs(&champion["model_version"]["tags"])["prodcat.model_version"],
        first.as_str()
    );

    // A bad URI and an unreachable server give clear errors.
    assert!(matches!(
        export_to_mlflow(
            database,
            &MlflowSettings::new("file:///tmp/mlruns"),
            &options
        )
        .await,
        Err(RegistryError::InvalidTrackingUri { .. })
    ));
    let unreachable = export_to_mlflow(
        database,
        &MlflowSettings::new("http://127.0.0.1:9"),
        &options,
    )
    .await
    .unwrap_err();
    assert!(
        unreachable.to_string().contains("unreachable"),
        "{unreachable}"
    );
}
