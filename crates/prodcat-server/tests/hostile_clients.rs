//! A hostile client gets nowhere: bounded work per request, capped text, jobs that belong to
//! their creator, throttled sign-ins, revocable tokens, closed metric labels, quick 503s when
//! the database is away, HTTP hygiene and optimistic concurrency. Each case speaks HTTP to the
//! real server, on SQLite and (when configured) PostgreSQL where a database is involved.

mod common;

use std::time::{Duration, Instant};

use common::{base64, product_jpeg, TestApp, PASSWORD};
use prodcat_catalogue::users::{set_disabled, set_password, set_role};
use prodcat_catalogue::Role;
use prodcat_storage::testing;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn sign_in(app: &TestApp, name: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", name),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_capped_and_linear() {
    let test_database = testing::sqlite_database().await;
    let app = TestApp::with_text_model(test_database.database.clone()).await;
    // Beyond the cap: a clear 422 before any work, whatever the text holds.
    for (field, size) in [("description", 400_000), ("designation", 5_000)] {
        let started = Instant::now();
        let (status, body) = app
            .post(
                "/v1/predict",
                &app.service,
                json!({"designation": "x", field: "<".repeat(size)}),
            )
            .await;
        assert_eq!(status, 422, "{field}: {body}");
        assert_eq!(body["errorType"], "input_too_long", "{body}");
        assert!(body["error"].as_str().unwrap().contains(field), "{body}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // The worst texts within the caps, for every stage of the text pipeline: tags that never
    // close, entities, one endless word, characters from every script.
    let cap = 64 << 10;
    let worst = [
        "<".repeat(cap),
        "<a".repeat(cap / 2),
        "&amp;".repeat(cap / 5),
        "&#".repeat(cap / 2),
        "x".repeat(cap),
        "é𝄞中".repeat(cap / 10),
        "<!--".repeat(cap / 4),
        "a ".repeat(cap / 2),
    ];
    for description in worst {
        let started = Instant::now();
        let (status, body) = app
            .post(
                "/v1/predict",
                &app.service,
                json!({"designation": "Piscine", "description": description, "explain": true}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?} for {}...",
            started.elapsed(),
            &description.chars().take(8).collect::<String>()
        );
    }
    // A full batch of the longest allowed texts is bounded too.
    let items: Vec<Value> = (0..200)
        .map(|_| json!({"designation": "Piscine", "description": "<a".repeat(cap / 2 - 8)}))
        .collect();
    let started = Instant::now();
    let (status, body) = app
        .post("/v1/predict/batch", &app.service, json!({ "items": items }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
}

async fn upload(app: &TestApp, token: &str, body: String, key: Option<&str>) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url("/v1/jobs/classify"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn lines(count: usize) -> String {
    (0..count)
        .map(|i| format!("{{\"designation\": \"Piscine tubulaire n°{i}\"}}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_have_limits_and_belong_to_their_creator() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let mut settings = common::settings();
        settings.max_job_items = 1_000;
        settings.upload_limit_bytes = 200 << 10;
        let (platform, version) = prodcat_pipelines::testing::TestPlatform::with_text_champion(
            test_database.database.clone(),
            300,
        )
        .await;
        let app = TestApp::start(platform, Some(version), settings).await;
        // Too many items: 422 naming the limit; nothing stays behind.
        let (status, body) = upload(&app, &app.service, lines(1_200), None).await;
        assert_eq!(status, 422, "{name}: {body}");
        assert!(body["error"].as_str().unwrap().contains("1000"), "{body}");
        // Too many bytes (the upload also has too many items): 413 before anything is read
        // when the length is declared, naming the limit.
        let (status, body) = upload(&app, &app.service, lines(5_000), None).await;
        assert_eq!(status, 413, "{name}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("200.0 KiB"),
            "{name}: {body}"
        );
        // Too many bytes with no length announced: the reading stops at the limit. Blank lines
        // carry no item, so only the size limit can refuse this one.
        let (status, body) = common::post_oversized(
            app.server.address,
            "/v1/jobs/classify",
            &app.service,
            "application/x-ndjson",
            vec![b'\n'; 300 << 10],
            common::Framing::Chunked,
        )
        .await;
        assert_eq!(status, 413, "{name}: {body}");
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(app.database().pool())
            .await
            .unwrap();
        let items: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_items")
            .fetch_one(app.database().pool())
            .await
            .unwrap();
        assert_eq!(
            (jobs, items),
            (0, 0),
            "{name}: refused uploads leave nothing"
        );
        // A bad line half-way: 422 naming it, nothing stays.
        let mut bad = lines(700);
        bad.push_str("{not json\n");
        let (status, body) = upload(&app, &app.service, bad, None).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("line 701"),
            "{body}"
        );

        // Jobs and idempotency keys belong to their creator.
        let (status, mine) = upload(&app, &app.service, lines(10), Some("nightly")).await;
        assert_eq!(status, 202, "{name}: {mine}");
        let job = mine["jobId"].as_str().unwrap().to_string();
        prodcat_catalogue::users::add_user(
            app.database(),
            &prodcat_catalogue::NewUser {
                name: "other-client".to_string(),
                role: Role::Service,
                kind: prodcat_catalogue::UserKind::Service,
                secret: PASSWORD.to_string(),
            },
        )
        .await
        .unwrap();
        let other = app.server.state.signer.issue("other-client", Role::Service);
        let (status, _) = app.get(&format!("/v1/jobs/{job}"), &other).await;
        assert_eq!(
            status, 404,
            "{name}: another client's job does not exist for it"
        );
        let (status, body) = upload(&app, &other, lines(3), Some("nightly")).await;
        assert_eq!(status, 202, "{name}: its own key space: {body}");
        assert_ne!(body["jobId"], mine["jobId"]);
        let (status, again) = upload(&app, &app.service, lines(10), Some("nightly")).await;
        assert_eq!(
            status, 200,
            "{name}: the same upload under the same key: {again}"
        );
        assert_eq!(again["jobId"], mine["jobId"]);
        let (status, _) = app.get(&format!("/v1/jobs/{job}"), &app.admin).await;
        assert_eq!(status, 200, "{name}: admins see every job");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_are_throttled_and_tokens_revoked() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let app = TestApp::with_text_model(test_database.database.clone()).await;
        app.add_person("mallory-target", Role::Viewer).await;
        let mut statuses = Vec::new();
        let mut retry_after = None;
        for _ in 0..8 {
            let response = sign_in(&app, "mallory-target", "wrong password!").await;
            statuses.push(response.status().as_u16());
            if response.status() == 429 {
                retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
            }
        }
        assert_eq!(&statuses[..5], &[401; 5], "{name}: {statuses:?}");
        assert!(
            statuses[5..].iter().all(|s| *s == 429),
            "{name}: {statuses:?}"
        );
        assert!(retry_after.is_some_and(|s| s >= 1), "{name}");
        // Even the right password waits for the block to end.
        let response = sign_in(&app, "mallory-target", PASSWORD).await;
        assert_eq!(response.status(), 429, "{name}");
        // Names and passwords are checked before any hashing or auditing.
        let started = Instant::now();
        let response = sign_in(&app, &"n".repeat(10_000), &"p".repeat(100_000)).await;
        assert_eq!(response.status(), 401);
        assert!(started.elapsed() < Duration::from_millis(500));
        let (_, audit) = app.get("/v1/audit?limit=50", &app.admin).await;
        for entry in audit["entries"].as_array().unwrap() {
            assert!(entry["actor"].as_str().unwrap().len() <= 64, "{entry}");
        }

        // Revocation: disabling, a new role, a new password all end a token within seconds.
        app.add_person("revocable", Role::Viewer).await;
        for change in ["disable", "role", "password"] {
            let response = sign_in(&app, "revocable", PASSWORD).await;
            assert_eq!(response.status(), 200, "{name} {change}");
            let token: Value = response.json().await.unwrap();
            let token = token["access_token"].as_str().unwrap().to_string();
            let (status, _) = app.get("/v1/products", &token).await;
            assert_eq!(status, 200, "{name} {change}");
            match change {
                "disable" => set_disabled(app.database(), "revocable", true)
                    .await
                    .unwrap(),
                "role" => set_role(app.database(), "revocable", Role::Reviewer)
                    .await
                    .unwrap(),
                _ => set_password(app.database(), "revocable", "another long password")
                    .await
                    .unwrap(),
            }
            let started = Instant::now();
            loop {
                let (status, body) = app.get("/v1/products", &token).await;
                if status == 401 {
                    assert!(
                        body["error"].as_str().unwrap().contains("revoked"),
                        "{body}"
                    );
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{name} {change}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Back to a usable account for the next change.
            set_disabled(app.database(), "revocable", false)
                .await
                .unwrap();
            set_role(app.database(), "revocable", Role::Viewer)
                .await
                .unwrap();
            set_password(app.database(), "revocable", PASSWORD)
                .await
                .unwrap();
        }
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_labels_come_from_closed_sets_and_operations_details_are_private() {
    let test_database = testing::sqlite_database().await;
    let mut settings = common::settings();
    // As seen from outside the private networks.
    settings.private_networks = Vec::new();
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "scraper token of some length").unwrap();
    settings.metrics_token_file = Some(token_file.path().to_path_buf());
    let (platform, version) = prodcat_pipelines::testing::TestPlatform::with_text_champion(
        test_database.database.clone(),
        300,
    )
    .await;
    let app = TestApp::start(platform, Some(version), settings).await;
    for index in 0..20 {
        let method = reqwest::Method::from_bytes(format!("ZZ{index}").as_bytes()).unwrap();
        let _ = app
            .client
            .request(method, app.url(&format!("/made/up/{index}")))
            .send()
            .await
            .unwrap();
    }
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 403, "no token from outside");
    let text = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scraper token of some length")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("ZZ"), "invented methods add no series");
    assert!(!text.contains("/made/up"), "invented paths add no series");
    assert!(text.contains("method=\"other\""), "they count as other");
    let (status, body) = app.get("/metrics", &app.admin).await;
    assert_eq!(status, 200, "admins may read metrics: {body}");
    // Readiness says ready or not to anybody, the details only to the trusted.
    let public: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(public["modelVersion"].is_null(), "{public}");
    let (_, detailed) = app.get("/readyz", &app.admin).await;
    assert!(detailed["modelVersion"].is_string(), "{detailed}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_hygiene_and_optimistic_concurrency() {
    let test_database = testing::sqlite_database().await;
    let mut settings = common::settings();
    settings.header_read_timeout = Duration::from_millis(500);
    settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let (platform, version) = prodcat_pipelines::testing::TestPlatform::with_text_champion(
        test_database.database.clone(),
        300,
    )
    .await;
    let app = TestApp::start(platform, Some(version), settings).await;

    // A client that never finishes its headers is disconnected.
    let mut stream = tokio::net::TcpStream::connect(app.server.address)
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
    assert!(read.is_ok(), "the connection was closed by the server");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Images are served with nosniff.
    let (status, created) = app
        .post(
            "/v1/products",
            &app.reviewer,
            json!({"designation": "Piscine ronde", "image": base64(&product_jpeg(1, 2583))}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["product"]["productId"].as_i64().unwrap();
    let image = app
        .client
        .get(app.url(&format!("/v1/products/{id}/image")))
        .bearer_auth(&app.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(image.headers()["x-content-type-options"], "nosniff");

    // The client address comes from X-Forwarded-For only through a trusted proxy (here the
    // loopback); the audit log shows it.
    let response = app
        .client
        .delete(app.url("/v1/products/999999"))
        .bearer_auth(&app.reviewer)
        .header("x-forwarded-for", "198.51.100.7, 127.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let (_, audit) = app.get("/v1/audit?limit=1", &app.admin).await;
    assert_eq!(
        audit["entries"][0]["clientAddress"], "198.51.100.7",
        "{audit}"
    );

    // Optimistic concurrency: a change against an old revision is refused with 412.
    let response = app
        .client
        .get(app.url(&format!("/v1/products/{id}")))
        .bearer_auth(&app.reviewer)
        .send()
        .await
        .unwrap();
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    let patch = |etag: String, title: &'static str| {
        app.client
            .patch(app.url(&format!("/v1/products/{id}")))
            .bearer_auth(&app.reviewer)
            .header("if-match", etag)
            .json(&json!({ "designation": title }))
            .send()
    };
    let first = patch(etag.clone(), "Piscine ronde 3 m").await.unwrap();
    assert_eq!(first.status(), 200);
    assert_ne!(first.headers()["etag"].to_str().unwrap(), etag);
    let stale = patch(etag, "Piscine ronde 4 m").await.unwrap();
    assert_eq!(stale.status(), 412);
    let body: Value = stale.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("changed"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_a_quick_503_and_predictions_keep_answering() {
    let test_database = testing::sqlite_database().await;
    let (mut platform, version) = prodcat_pipelines::testing::TestPlatform::with_text_champion(
        test_database.database.clone(),
        300,
    )
    .await;
    // The service's own connections wait about a second, as `prodcat serve` configures them.
    let service_database = prodcat_storage::Database::connect_with(
        test_database.database.display_url(),
        &prodcat_storage::ConnectOptions::interactive(Duration::from_millis(1_000)),
    )
    .await
    .unwrap();
    platform.platform = prodcat_platform::Platform::new(
        service_database,
        platform.platform.objects.clone(),
        platform.platform.model_dir(),
    );
    let app = TestApp::start(platform, Some(version), common::settings()).await;
    // Warm the token cache, then take SQLite's write lock from another connection.
    let (status, _) = app
        .post(
            "/v1/predict",
            &app.service,
            json!({"designation": "Piscine"}),
        )
        .await;
    assert_eq!(status, 200);
    let mut holder = app.database().pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let started = Instant::now();
    let response = app
        .client
        .post(app.url("/v1/products"))
        .bearer_auth(&app.reviewer)
        .json(&json!({"designation": "Piscine", "image": base64(&product_jpeg(2, 2583))}))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    // Predictions need no database.
    let (status, body) = app
        .post(
            "/v1/predict",
            &app.service,
            json!({"designation": "Piscine"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    sqlx::query("ROLLBACK").execute(&mut *holder).await.unwrap();
    drop(holder);
    app.stop().await;
}
