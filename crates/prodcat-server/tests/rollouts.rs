//! Live rollouts against real servers: a canary answers its share sticky per product, a shadow
//! never changes an answer and is logged beside it, a canary that does worse than the champion
//! on reviewed products is rolled back automatically with its figures, a canary set through one
//! replica is applied by another, a canary that fails on some inputs is rolled back on its error
//! rate, and webhook deliveries are signed so a receiver can refuse a
//! replay.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{base64, product_jpeg, TestApp};
use prodcat_model::BranchSelection;
use prodcat_pipelines::testing::TestPlatform;
use prodcat_storage::testing;
use serde_json::{json, Value};

async fn predict_version(app: &TestApp, product_id: i64) -> String {
    let (status, body) = app
        .post(
            "/v1/predict",
            &app.service,
            json!({"designation": "Piscine tubulaire ronde", "productId": product_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["modelVersion"].as_str().unwrap().to_string()
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_answers_its_share_sticky_per_product_and_a_shadow_changes_nothing() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let (platform, champion) =
            TestPlatform::with_text_champion(test_database.database.clone(), 300).await;
        let candidate = platform.train(BranchSelection::Text, 0.05).await;
        assert_ne!(candidate.id, champion.id);
        let app = TestApp::start(platform, Some(champion.clone()), common::settings()).await;

        // A 50 % canary: both versions answer, each product always gets the same one.
        let (status, body) = app
            .post(
                &format!("/v1/models/{}/canary", candidate.id),
                &app.admin,
                json!({"share": 0.5, "stickiness": "product"}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        let mut seen = HashMap::new();
        for product in 0..40 {
            seen.insert(product, predict_version(&app, product).await);
        }
        let versions: HashSet<&String> = seen.values().collect();
        assert_eq!(
            versions.len(),
            2,
            "{name}: both versions answer: {versions:?}"
        );
        for product in 0..40 {
            assert_eq!(
                predict_version(&app, product).await,
                seen[&product],
                "{name}: product {product} keeps its version"
            );
        }
        let (status, _) = app
            .send(
                reqwest::Method::DELETE,
                "/v1/models/canary?reason=done",
                Some(&app.admin),
                None,
            )
            .await;
        assert_eq!(status, 200, "{name}");
        wait_for("the canary to end", Duration::from_secs(10), || async {
            let mut all_champion = true;
            for product in 0..10 {
                all_champion &= predict_version(&app, product).await == champion.id.as_str();
            }
            all_champion
        })
        .await;

        // A 100 % shadow: every answer is still the champion's; the shadow's results are
        // logged beside them under the same prediction id.
        let (status, body) = app
            .post(
                &format!("/v1/models/{}/shadow", candidate.id),
                &app.admin,
                json!({"share": 1.0}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        let mut ids = Vec::new();
        for product in 100..130 {
            let (status, body) = app
                .post(
                    "/v1/predict",
                    &app.service,
                    json!({"designation": "Coussin velours", "productId": product}),
                )
                .await;
            assert_eq!(status, 200);
            assert_eq!(body["modelVersion"], champion.id.as_str(), "{name}: {body}");
            ids.push(body["predictionId"].as_str().unwrap().to_string());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.server.state.flush_prediction_log().await;
        let mut shadowed = 0;
        for id in &ids {
            let (status, body) = app.get(&format!("/v1/predictions/{id}"), &app.admin).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["servingRole"], "champion");
            if let Some(shadow) = body["shadow"].as_object() {
                assert_eq!(shadow["servingRole"], "shadow");
                assert_eq!(shadow["modelVersion"], candidate.id.as_str());
                shadowed += 1;
            }
        }
        assert!(
            shadowed >= ids.len() / 2,
            "{name}: {shadowed} of {} shadowed",
            ids.len()
        );
        let (status, live) = app.get("/v1/models/live?window=1h", &app.admin).await;
        assert_eq!(status, 200, "{live}");
        let shadow = live["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["role"] == "shadow")
            .cloned()
            .unwrap_or(Value::Null);
        assert!(
            shadow["paired"].as_u64().unwrap_or(0) >= 1,
            "{name}: {live}"
        );
        assert!(shadow["agreement"].is_number(), "{live}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_worse_on_reviewed_products_is_rolled_back_with_its_figures() {
    for test_database in testing::databases().await {
        let (platform, champion) =
            TestPlatform::with_text_champion(test_database.database.clone(), 540).await;
        // An underfitted model: it answers one category for everything.
        let poor = platform.train(BranchSelection::Text, 1e-6).await;
        let app = TestApp::start(platform, Some(champion.clone()), common::settings()).await;
        let (status, body) = app
            .post(
                &format!("/v1/models/{}/canary", poor.id),
                &app.admin,
                json!({"share": 0.5, "minLabels": 8, "maxF1Drop": 0.05, "minRequests": 100000}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        // Products from several categories, reviewed with their true category.
        let kinds = [
            ("Jeu de société familial pour enfants", 1281),
            ("Piscine tubulaire ronde avec pompe", 2583),
            ("Coussin décoratif en velours", 1920),
            ("Croquettes pour chien adulte", 2220),
        ];
        let mut roles = HashSet::new();
        for index in 0..40 {
            let (title, code) = kinds[index % kinds.len()];
            let (status, created) = app
                .post(
                    "/v1/products",
                    &app.reviewer,
                    json!({
                        "productId": 5_000 + index as i64,
                        "designation": format!("{title} modèle {index}"),
                        "image": base64(&product_jpeg(index, code)),
                    }),
                )
                .await;
            assert_eq!(status, 201, "{created}");
            roles.insert(
                created["prediction"]["modelVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            let (status, body) = app
                .post(
                    &format!("/v1/review/{}", 5_000 + index),
                    &app.reviewer,
                    json!({"decision": "correct", "category": code}),
                )
                .await;
            assert!(status == 200 || status == 409, "{body}");
        }
        assert_eq!(
            roles.len(),
            2,
            "both versions classified products: {roles:?}"
        );
        wait_for(
            "the automatic rollback",
            Duration::from_secs(20),
            || async {
                let (_, rollouts) = app.get("/v1/models/rollouts", &app.admin).await;
                rollouts["rollouts"]
                    .as_array()
                    .is_some_and(|r| r.is_empty())
            },
        )
        .await;
        let history = prodcat_registry::alias_history(app.database(), Some("canary"))
            .await
            .unwrap();
        let last = &history[0];
        assert_eq!(last.actor, "guard-rails");
        assert!(last.reason.contains("weighted F1"), "{}", last.reason);
        let figures = last.decision.as_ref().expect("the figures are recorded");
        assert!(
            figures["canary"]["labelled"].as_u64().unwrap() >= 8,
            "{figures}"
        );
        let (_, audit) = app.get("/v1/audit?actor=guard-rails", &app.admin).await;
        assert_eq!(audit["entries"][0]["action"], "ROLLBACK canary", "{audit}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_set_through_one_replica_is_applied_by_another() {
    for test_database in testing::databases().await {
        let (platform, champion) =
            TestPlatform::with_text_champion(test_database.database.clone(), 300).await;
        let candidate = platform.train(BranchSelection::Text, 0.05).await;
        let other = prodcat_platform::Platform::new(
            platform.platform.database.clone(),
            platform.platform.objects.clone(),
            platform.platform.model_dir(),
        );
        let first = TestApp::start(platform, Some(champion.clone()), common::settings()).await;
        let second = prodcat_server::start(other, common::settings(), common::test_keys())
            .await
            .unwrap();
        let url = format!("http://{}/v1/predict", second.address);
        let token = second
            .state
            .signer
            .issue("svc", prodcat_catalogue::Role::Service);
        let (status, body) = first
            .post(
                &format!("/v1/models/{}/canary", candidate.id),
                &first.admin,
                json!({"share": 1.0}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let started = Instant::now();
        wait_for(
            "the other replica to apply the canary",
            Duration::from_secs(10),
            || async {
                let answer: Value = first
                    .client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"designation": "Piscine", "productId": 1}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                answer["modelVersion"] == candidate.id.as_str()
            },
        )
        .await;
        eprintln!("applied by the other replica after {:?}", started.elapsed());
        second.stop().await.unwrap();
        first.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_fails_on_some_inputs_is_rolled_back() {
    let model_dir = common::model_dir();
    if !model_dir.join("mobilenet-v2/manifest.json").is_file() {
        eprintln!(
            "skipped: the pretrained image backbone is not installed (scripts/setup) in {}",
            model_dir.display()
        );
        return;
    }
    for test_database in testing::databases().await {
        let name = test_database.name();
        let trained =
            TestPlatform::new(test_database.database.clone(), 200, true, &model_dir).await;
        let champion = trained.train(BranchSelection::Text, 0.5).await;
        trained.make_champion(&champion).await;
        // A photo-only model cannot answer the text-only requests the champion answers.
        let failing = trained.train(BranchSelection::Image, 0.5).await;
        let app = TestApp::start(trained, Some(champion.clone()), common::settings()).await;
        let (status, body) = app
            .post(
                &format!("/v1/models/{}/canary", failing.id),
                &app.admin,
                json!({"share": 0.5, "minRequests": 20, "maxErrorRateIncrease": 0.05}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        let mut failed = 0;
        for product_id in 0..120 {
            let (status, _) = app
                .post(
                    "/v1/predict",
                    &app.service,
                    json!({"designation": "Piscine tubulaire ronde", "productId": product_id}),
                )
                .await;
            if status != 200 {
                failed += 1;
            }
        }
        assert!(failed > 0, "{name}: the canary answered some requests");
        wait_for(
            "the automatic rollback",
            Duration::from_secs(20),
            || async {
                let (_, rollouts) = app.get("/v1/models/rollouts", &app.admin).await;
                rollouts["rollouts"]
                    .as_array()
                    .is_some_and(|r| r.is_empty())
            },
        )
        .await;
        let history = prodcat_registry::alias_history(app.database(), Some("canary"))
            .await
            .unwrap();
        assert_eq!(history[0].actor, "guard-rails", "{name}");
        assert!(
            history[0].reason.contains("error rate"),
            "{name}: {}",
            history[0].reason
        );
        // Once rolled back, every request is answered by the champion.
        for product_id in 0..40 {
            assert_eq!(
                predict_version(&app, product_id).await,
                champion.id.as_str()
            );
        }
        app.stop().await;
    }
}

/// A webhook receiver as a team would write one: checks the signature and the timestamp, and
/// refuses a delivery id it has seen before.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<HashSet<String>>>,
    accepted: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<Vec<String>>>,
}

const SECRET: &[u8] = b"a webhook secret for the tests";

async fn receive(
    axum::extract::State(receiver): axum::extract::State<Receiver>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let timestamp: i64 = header("x-prodcat-timestamp").parse().unwrap_or(0);
    let expected = prodcat_pipelines::signature(SECRET, timestamp, &body);
    let now = prodcat_storage::now_ms() / 1000;
    if header("x-prodcat-signature") != expected || (now - timestamp).abs() > 300 {
        receiver
            .refused
            .lock()
            .unwrap()
            .push("bad signature".to_string());
        return axum::http::StatusCode::UNAUTHORIZED;
    }
    if !receiver
        .seen
        .lock()
        .unwrap()
        .insert(header("x-prodcat-delivery"))
    {
        receiver.refused.lock().unwrap().push("replay".to_string());
        return axum::http::StatusCode::CONFLICT;
    }
    receiver
        .accepted
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    axum::http::StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_are_signed_and_a_replay_is_refused() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let test_database = testing::sqlite_database().await;
    let (mut platform, champion) =
        TestPlatform::with_text_champion(test_database.database.clone(), 300).await;
    let candidate = platform.train(BranchSelection::Text, 0.05).await;
    platform.platform = platform
        .platform
        .clone()
        .with_webhooks(vec![hook.clone()], Some(SECRET.to_vec()));
    let app = TestApp::start(platform, Some(champion), common::settings()).await;
    let (status, _) = app
        .post(
            &format!("/v1/models/{}/canary", candidate.id),
            &app.admin,
            json!({"share": 0.1}),
        )
        .await;
    assert_eq!(status, 200);
    wait_for("the signed delivery", Duration::from_secs(10), || async {
        !receiver.accepted.lock().unwrap().is_empty()
    })
    .await;
    let payload = receiver.accepted.lock().unwrap()[0].clone();
    assert!(
        payload["text"].as_str().unwrap().contains("canary-started"),
        "{payload}"
    );
    // The delivery is recorded with its id and attempts (once the receiver's answer is back, a
    // moment after the receiver has seen the payload).
    wait_for(
        "the delivery recorded as sent",
        Duration::from_secs(10),
        || async {
            sqlx::query("SELECT id FROM notifications WHERE status = 'sent'")
                .fetch_optional(app.database().pool())
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;
    let (event_id, attempts): (String, i64) = sqlx::query_as(
        "SELECT event_id, attempts FROM notifications WHERE status = 'sent' ORDER BY id DESC",
    )
    .fetch_one(app.database().pool())
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    // The same delivery sent again (a replay) is refused by the receiver.
    let body = serde_json::to_vec(&payload).unwrap();
    let timestamp = prodcat_storage::now_ms() / 1000;
    let replay = reqwest::Client::new()
        .post(&hook)
        .header("x-prodcat-delivery", &event_id)
        .header("x-prodcat-timestamp", timestamp.to_string())
        .header(
            "x-prodcat-signature",
            prodcat_pipelines::signature(SECRET, timestamp, &body),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 409);
    // A forged one (wrong secret) is refused too.
    let forged = reqwest::Client::new()
        .post(&hook)
        .header("x-prodcat-delivery", "evt-forged")
        .header("x-prodcat-timestamp", timestamp.to_string())
        .header(
            "x-prodcat-signature",
            prodcat_pipelines::signature(b"another secret entirely", timestamp, &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    app.stop().await;
}
