//! One meaning per error, whichever way a product came in: the same unreadable photo is a 422
//! on `POST /v1/predict` and a failed (not retried) item in a job; a model that cannot look at
//! photos right now (its image backbone is not loaded) leaves a new product stored `pending`
//! instead of failing the request.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{base64, eventually, product_jpeg, TestApp};
use prodcat_jobs::{run_worker, WorkerOptions};
use prodcat_model::BranchSelection;
use prodcat_pipelines::testing::TestPlatform;
use prodcat_platform::Platform;
use prodcat_storage::testing;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A JPEG whose header is intact (so it passes the cheap header check at upload) but whose
/// data stops half-way.
fn truncated_jpeg() -> Vec<u8> {
    let mut bytes = product_jpeg(3, 2583);
    bytes.truncate(bytes.len() / 3);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_photo_is_the_products_fault_everywhere() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let app = TestApp::with_text_model(test_database.database.clone()).await;
        let image = base64(&truncated_jpeg());

        let (status, body) = app
            .post(
                "/v1/predict",
                &app.service,
                json!({"designation": "Piscine tubulaire", "image": image}),
            )
            .await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(body["errorType"], "invalid_image", "{name}: {body}");

        let line = json!({"designation": "Piscine tubulaire", "image": image}).to_string();
        let response = app
            .client
            .post(app.url("/v1/jobs/classify"))
            .bearer_auth(&app.service)
            .header("content-type", "application/x-ndjson")
            .body(format!("{line}\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            202,
            "{name}: the upload only reads the header"
        );
        let accepted: serde_json::Value = response.json().await.unwrap();
        let job = accepted["jobId"].as_str().unwrap().to_string();
        let shutdown = CancellationToken::new();
        let worker = {
            let predictor = app.platform.predictor();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let options = WorkerOptions {
                    idle_wait: Duration::from_millis(50),
                    ..WorkerOptions::default()
                };
                run_worker(&predictor, &options, shutdown).await
            })
        };
        eventually(Duration::from_secs(60), "the job to finish", || async {
            let (_, body) = app.get(&format!("/v1/jobs/{job}"), &app.service).await;
            body["status"] == "completed" || body["status"] == "failed"
        })
        .await;
        shutdown.cancel();
        worker.await.unwrap().unwrap();
        let (_, body) = app.get(&format!("/v1/jobs/{job}"), &app.service).await;
        assert_eq!(body["failedCount"], 1, "{name}: {body}");
        let item = &body["items"][0];
        assert_eq!(item["status"], "failed", "{name}: {body}");
        assert_eq!(item["attempts"], 1, "{name}: not retried: {body}");
        assert!(
            item["error"].as_str().unwrap_or("").contains("image"),
            "{name}: {body}"
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backbone_failure_stores_the_product_pending() {
    let model_dir = common::model_dir();
    if !model_dir.join("mobilenet-v2/manifest.json").is_file() {
        eprintln!(
            "skipped: the pretrained image backbone is not installed (scripts/setup) in {}",
            model_dir.display()
        );
        return;
    }
    let test_database = testing::sqlite_database().await;
    let trained = TestPlatform::new(test_database.database.clone(), 200, true, &model_dir).await;
    let version = trained.train(BranchSelection::Fusion, 0.5).await;
    trained.make_champion(&version).await;
    // The same database and objects, served by a process whose model folder lacks the backbone.
    let platform = Platform::new(
        trained.platform.database.clone(),
        trained.platform.objects.clone(),
        Path::new("/nonexistent"),
    );
    let server = prodcat_server::start(platform, common::settings(), common::test_keys())
        .await
        .unwrap();
    prodcat_catalogue::users::add_user(
        &trained.platform.database,
        &prodcat_catalogue::NewUser {
            name: "rey".to_string(),
            role: prodcat_catalogue::Role::Reviewer,
            kind: prodcat_catalogue::UserKind::Person,
            secret: common::PASSWORD.to_string(),
        },
    )
    .await
    .unwrap();
    let signer = server.state.signer.clone();
    let token = signer.issue("rey", prodcat_catalogue::Role::Reviewer);
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/products", server.address))
        .bearer_auth(&token)
        .json(&json!({
            "designation": "Piscine tubulaire ronde",
            "image": base64(&product_jpeg(1, 2583)),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["product"]["status"], "pending", "{body}");
    assert!(body["prediction"].is_null(), "{body}");
    server.stop().await.unwrap();
}
