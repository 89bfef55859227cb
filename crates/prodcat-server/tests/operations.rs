//! Jobs, models and operations over HTTP: classification jobs (JSON lines, CSV, idempotency)
//! processed by an in-process worker, promotion and rollback with the hot swap under load
//! without a failed request, a failed load that keeps the previous model serving, graceful
//! shutdown finishing an in-flight request, metrics, health, OpenAPI and the docs page.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_error, eventually, TestApp};
use prodcat_jobs::{run_worker, WorkerOptions};
use prodcat_storage::testing;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

async fn upload(app: &TestApp, body: &str, content_type: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url("/v1/jobs/classify"))
        .bearer_auth(&app.service)
        .header("content-type", content_type)
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classification_jobs_over_http() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let app = TestApp::with_text_model(test_database.database.clone()).await;
        let lines: String = (0..250)
            .map(|i| {
                let title = if i % 2 == 0 {
                    "Piscine tubulaire ronde"
                } else {
                    "Coussin en velours"
                };
                format!(
                    "{}\n",
                    json!({"designation": format!("{title} {i}"), "productId": 5000 + i})
                )
            })
            .collect();
        let (status, accepted) =
            upload(&app, &lines, "application/x-ndjson", Some("batch-1")).await;
        assert_eq!(status, 202, "{name}: {accepted}");
        assert_eq!(accepted["itemCount"], 250);
        assert_eq!(accepted["created"], true);
        let job = accepted["jobId"].as_str().unwrap().to_string();
        // The same key answers with the same job.
        let (status, again) = upload(&app, &lines, "application/x-ndjson", Some("batch-1")).await;
        assert_eq!(status, 200);
        assert_eq!(again["jobId"], job.as_str());
        assert_eq!(again["created"], false);
        let (status, body) = upload(
            &app,
            "{\"designation\": \"other\"}\n",
            "application/x-ndjson",
            Some("batch-1"),
        )
        .await;
        assert_error(status, &body, 409, "key reused with other items");

        // CSV too.
        let csv = "designation,description,productid\nPiscine ronde,\"<b>3m</b>, pompe\",1\nManette sans fil,,2\n";
        let (status, csv_job) = upload(&app, csv, "text/csv", None).await;
        assert_eq!(status, 202, "{csv_job}");
        assert_eq!(csv_job["itemCount"], 2);

        // Bad uploads store nothing.
        let jobs_before = count_jobs(&app).await;
        let (status, body) = upload(
            &app,
            "{\"designation\": \"ok\"}\n{not json\n",
            "application/x-ndjson",
            None,
        )
        .await;
        assert_error(status, &body, 400, "malformed line");
        assert!(
            body["error"].as_str().unwrap().starts_with("line 2"),
            "{body}"
        );
        let (status, body) = upload(
            &app,
            "{\"designation\": \"\"}\n",
            "application/x-ndjson",
            None,
        )
        .await;
        assert_error(status, &body, 422, "item without input");
        let (status, body) = upload(&app, "", "application/x-ndjson", None).await;
        assert_error(status, &body, 422, "empty upload");
        let (status, body) = upload(&app, "title\nx\n", "text/csv", None).await;
        assert_error(status, &body, 422, "CSV without designation");
        let (status, body) = upload(&app, "x", "image/png", None).await;
        assert_error(status, &body, 415, "unknown format");
        assert_eq!(count_jobs(&app).await, jobs_before, "{name}");

        // Progress before any worker.
        let (status, body) = app
            .get(&format!("/v1/jobs/{job}?limit=0"), &app.service)
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "queued");
        assert_eq!(body["remainingCount"], 250);
        assert_eq!(body["progress"], 0.0);

        // A worker runs them.
        let shutdown = CancellationToken::new();
        let worker = {
            let predictor = app.platform.predictor();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let options = WorkerOptions {
                    batch_size: 64,
                    idle_wait: Duration::from_millis(50),
                    ..WorkerOptions::default()
                };
                run_worker(&predictor, &options, shutdown).await
            })
        };
        eventually(Duration::from_secs(60), "the job to complete", || async {
            let (_, body) = app
                .get(&format!("/v1/jobs/{job}?limit=0"), &app.service)
                .await;
            body["status"] == "completed"
        })
        .await;
        shutdown.cancel();
        worker.await.unwrap().unwrap();
        let (_, body) = app
            .get(&format!("/v1/jobs/{job}?offset=0&limit=100"), &app.service)
            .await;
        assert_eq!(body["doneCount"], 250);
        assert_eq!(body["progress"], 1.0);
        assert_eq!(body["nextOffset"], 100);
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 100);
        assert_eq!(items[0]["result"]["categoryCode"], 2583, "{}", items[0]);
        assert_eq!(items[1]["result"]["categoryCode"], 1920, "{}", items[1]);
        assert_eq!(items[0]["productId"], 5000);
        assert_eq!(items[0]["attempts"], 1);
        let (_, last) = app
            .get(
                &format!("/v1/jobs/{job}?offset=200&limit=100"),
                &app.service,
            )
            .await;
        assert_eq!(last["items"].as_array().unwrap().len(), 50);
        assert!(last["nextOffset"].is_null());
        let (status, body) = app.get("/v1/jobs/job-0000000000000000", &app.service).await;
        assert_error(status, &body, 404, "unknown job");
        let (status, body) = app.get("/v1/jobs/1;DROP", &app.service).await;
        assert_error(status, &body, 422, "invalid job id");
        app.stop().await;
    }
}

async fn count_jobs(app: &TestApp) -> i64 {
    sqlx::query("SELECT COUNT(*) AS count FROM jobs")
        .fetch_one(app.database().pool())
        .await
        .unwrap()
        .try_get("count")
        .unwrap()
}

/// Sends predictions continuously from a few tasks; counts the versions seen and any failure.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
    failures: Arc<AtomicUsize>,
}

impl Load {
    fn start(app: &TestApp) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let tasks = (0..4)
            .map(|_| {
                let client = app.client.clone();
                let url = app.url("/v1/predict");
                let token = app.service.clone();
                let stop = stop.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    let mut done = 0;
                    let mut versions = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let response = client
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&json!({"designation": "Piscine tubulaire ronde"}))
                            .send()
                            .await;
                        match response {
                            Ok(response) if response.status() == 200 => {
                                let body: Value = response.json().await.unwrap();
                                let version = body["modelVersion"].as_str().unwrap().to_string();
                                if versions.last() != Some(&version) {
                                    versions.push(version);
                                }
                                done += 1;
                            }
                            _ => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    (done, versions)
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            failures,
        }
    }

    async fn finish(self) -> (usize, Vec<Vec<String>>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        let mut sequences = Vec::new();
        for task in self.tasks {
            let (done, versions) = task.await.unwrap();
            total += done;
            sequences.push(versions);
        }
        (total, sequences, self.failures.load(Ordering::Relaxed))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_and_a_failed_load_keeps_serving() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let app = TestApp::with_text_model(test_database.database.clone()).await;
        let first = app.version.as_ref().unwrap().id.to_string();
        let second = app
            .platform
            .train(prodcat_model::BranchSelection::Text, 2.0)
            .await;
        assert_ne!(second.id.to_string(), first);

        let (status, body) = app.get("/v1/models", &app.admin).await;
        assert_eq!(status, 200);
        assert_eq!(body["serving"], first.as_str());
        assert_eq!(body["versions"].as_array().unwrap().len(), 2);

        // Promotion through the API under load: every request answers, and each client sees the
        // old version, then the new one, never back.
        let load = Load::start(&app);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) = app
            .post(
                &format!("/v1/models/{}/promote", second.id),
                &app.admin,
                json!({"force": true, "reason": "hot swap test"}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["moved"], true);
        assert_eq!(body["serving"], second.id.to_string());
        assert_eq!(body["event"]["actor"], "ada");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (served, sequences, failures) = load.finish().await;
        assert_eq!(failures, 0, "{name}: requests failed during the swap");
        assert!(served > 20, "{name}: only {served} requests");
        let old_then_new = vec![first.clone(), second.id.to_string()];
        let only_new = vec![second.id.to_string()];
        for sequence in &sequences {
            assert!(
                sequence == &old_then_new || sequence == &only_new,
                "{name}: versions seen by a client: {sequences:?}"
            );
        }

        // A promotion without force and without a better score is refused by the policy, or
        // compared on the same set: either way the answer says what happened.
        let (status, body) = app
            .post(
                &format!("/v1/models/{first}/promote"),
                &app.admin,
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            ["promoted", "refused"].contains(&body["outcome"].as_str().unwrap()),
            "{body}"
        );
        if body["outcome"] == "refused" {
            assert_eq!(body["serving"], second.id.to_string());
            assert!(body["decision"].is_object());
        }
        let (status, body) = app
            .post(
                &format!(
                    "/v1/models/{}/promote",
                    app.server.state.model_service().current().unwrap().version
                ),
                &app.admin,
                json!({}),
            )
            .await;
        assert_error(status, &body, 409, "already champion");
        let (status, body) = app
            .post(
                "/v1/models/mv-ffffffffffffffff/promote",
                &app.admin,
                json!({}),
            )
            .await;
        assert_error(status, &body, 404, "unknown version");
        let (status, body) = app
            .post(
                &format!("/v1/models/{first}/promote"),
                &app.admin,
                json!({"force": true}),
            )
            .await;
        assert_error(status, &body, 422, "force without a reason");

        // Rollback swaps back at once.
        let serving_before = app
            .server
            .state
            .model_service()
            .current()
            .unwrap()
            .version
            .to_string();
        let (status, body) = app
            .post(
                "/v1/models/rollback",
                &app.admin,
                json!({"reason": "test rollback"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outcome"], "rolledBack");
        assert_ne!(body["serving"], serving_before.as_str());
        let (status, body) = app.post("/v1/models/rollback", &app.admin, json!({})).await;
        assert_error(status, &body, 422, "rollback without a reason");

        // A version whose bundle is damaged: promoted in the registry, it fails to load, the
        // previous model keeps serving, /readyz and /metrics say so, and it is retried.
        let serving = app
            .server
            .state
            .model_service()
            .current()
            .unwrap()
            .version
            .to_string();
        let broken = app
            .platform
            .train(prodcat_model::BranchSelection::Text, 0.05)
            .await;
        let keys = app
            .platform
            .platform
            .objects
            .list(&broken.object_prefix)
            .await
            .unwrap();
        let victim = keys.iter().find(|k| !k.ends_with("manifest.json")).unwrap();
        app.platform
            .platform
            .objects
            .put(victim, bytes::Bytes::from_static(b"damaged"))
            .await
            .unwrap();
        let load = Load::start(&app);
        prodcat_registry::force_promote(
            app.database(),
            "champion",
            broken.id.as_str(),
            "ops",
            "deploy a damaged bundle",
        )
        .await
        .unwrap();
        eventually(
            Duration::from_secs(20),
            "the failed load to be reported",
            || async {
                let (_, body) = app.send(Method::GET, "/readyz", None, None).await;
                body["modelLoadError"]
                    .as_str()
                    .is_some_and(|e| e.contains(broken.id.as_str()))
            },
        )
        .await;
        let (_, sequences, failures) = load.finish().await;
        assert_eq!(failures, 0, "{name}");
        assert!(
            sequences.iter().all(|s| s == &vec![serving.clone()]),
            "{sequences:?}"
        );
        let (status, body) = app.send(Method::GET, "/readyz", None, None).await;
        assert_eq!(status, 200);
        assert_eq!(body["modelVersion"], serving.as_str());
        let metrics = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("prodcat_model_load_failures_total"),
            "{metrics}"
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let test_database = testing::sqlite_database().await;
    let app = TestApp::with_text_model(test_database.database.clone()).await;
    // A batch that takes a while: 1,000 products with long descriptions.
    let description =
        "Piscine hors-sol en acier galvanisé, liner renforcé, pompe de filtration. ".repeat(60);
    let items: Vec<Value> = (0..1000)
        .map(|i| json!({"designation": format!("Piscine {i}"), "description": description}))
        .collect();
    let client = app.client.clone();
    let url = app.url("/v1/predict/batch");
    let token = app.service.clone();
    let in_flight = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let response = client
            .post(url)
            .bearer_auth(token)
            .json(&json!({ "items": items }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (status, body, started.elapsed())
    });
    // Wait until the server is working on it, then ask it to stop.
    let log = app.server.state.predictor().clone();
    let address = app.server.address;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stopping = tokio::spawn(async move { app.stop().await });
    let (status, body, elapsed) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request finished: {body}");
    assert_eq!(body["succeeded"], 1000);
    assert!(elapsed > Duration::from_millis(150), "{elapsed:?}");
    stopping.await.unwrap();
    drop(log);
    // Stopped: new connections are refused.
    let refused = reqwest::Client::new()
        .get(format!("http://{address}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "the server still answers after stopping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_openapi_and_docs() {
    let test_database = testing::sqlite_database().await;
    let app = TestApp::with_text_model(test_database.database.clone()).await;
    let (status, _) = app
        .post(
            "/v1/predict",
            &app.service,
            json!({"designation": "Piscine ronde"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.post("/v1/predict", &app.service, json!({})).await;
    assert_eq!(status, 422);
    let (status, body) = app.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    let (status, body) = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["ready"], true);
    assert_eq!(
        body["modelVersion"],
        app.version.as_ref().unwrap().id.to_string()
    );

    eventually(Duration::from_secs(10), "the gauges", || async {
        let text = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains("prodcat_review_queue_size")
    })
    .await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for expected in [
        "prodcat_http_requests_total{route=\"/v1/predict\",method=\"POST\",status=\"200\"}",
        "prodcat_http_requests_total{route=\"/v1/predict\",method=\"POST\",status=\"422\"}",
        "prodcat_http_request_duration_seconds_bucket{route=\"/v1/predict\"",
        "prodcat_predictions_total{category=\"2583\",source=\"predict\"}",
        "prodcat_prediction_confidence_bucket",
        "prodcat_review_queue_size",
        "prodcat_job_queue_depth{status=\"pending\"}",
        "prodcat_job_items_failed",
        "prodcat_model_info{version=",
        "prodcat_build_info{",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }

    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/predict",
        "/v1/predict/batch",
        "/v1/jobs/classify",
        "/v1/jobs/{id}",
        "/v1/products",
        "/v1/products/{id}",
        "/v1/review",
        "/v1/review/{productId}",
        "/v1/models",
        "/v1/models/{version}/promote",
        "/v1/models/rollback",
        "/v1/auth/token",
        "/v1/audit",
    ] {
        assert!(
            document["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(
        document["components"]["schemas"]["PredictionBody"]["properties"]["categoryCode"]
            .is_object()
    );
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());

    let response = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    if app.server.state.swagger.available() {
        assert!(page.contains("SwaggerUIBundle"));
        let asset = app
            .client
            .get(app.url("/docs/swagger-ui-bundle.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200);
        assert!(asset.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript"));
    } else {
        eprintln!("note: swagger-ui-dist is not installed; checking the fallback page");
        assert!(page.contains("scripts/setup") && page.contains("/openapi.json"));
    }
    let (status, body) = app
        .send(Method::GET, "/docs/..%2F..%2Fetc%2Fpasswd", None, None)
        .await;
    assert_error(status, &body, 404, "only known documentation files");
    let landing = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(landing.contains("/docs") && landing.contains("/metrics"));
    app.stop().await;
}
