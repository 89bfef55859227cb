//! Security over HTTP: the OAuth2 token endpoint (both grants), expired and forged tokens,
//! every route's role refusals, the audit log, and the rate limit.

mod common;

use std::time::Duration;

use common::{assert_error, TestApp, PASSWORD};
use prodcat_catalogue::users::{add_user, set_disabled};
use prodcat_catalogue::{NewUser, Role, UserKind};
use prodcat_server::{SigningKeys, TokenClaims, TokenSigner};
use prodcat_storage::testing;
use reqwest::Method;
use serde_json::{json, Value};

async fn token_request(app: &TestApp, form: &[(&str, &str)]) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/v1/auth/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_issued_checked_and_refused() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let app = TestApp::with_text_model(test_database.database.clone()).await;
        app.add_person("alice", Role::Reviewer).await;
        add_user(
            app.database(),
            &NewUser {
                name: "shop-backend".to_string(),
                role: Role::Service,
                kind: UserKind::Service,
                secret: "client secret value".to_string(),
            },
        )
        .await
        .unwrap();

        // Password grant.
        let (status, body) = token_request(
            &app,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["role"], "reviewer");
        assert_eq!(body["expires_in"], 3600);
        let token = body["access_token"].as_str().unwrap().to_string();
        let (status, _) = app.get("/v1/review", &token).await;
        assert_eq!(status, 200, "the issued token works");
        let (status, body) = app.get("/v1/models", &token).await;
        assert_error(status, &body, 403, "reviewer on models");

        // Client credentials, in the form and as HTTP Basic.
        let (status, body) = token_request(
            &app,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "shop-backend"),
                ("client_secret", "client secret value"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["role"], "service");
        let response = app
            .client
            .post(app.url("/v1/auth/token"))
            .basic_auth("shop-backend", Some("client secret value"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // JSON bodies are accepted too.
        let (status, _) = app
            .send(
                Method::POST,
                "/v1/auth/token",
                None,
                Some(json!({"grant_type": "password", "username": "alice", "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, 200);

        // Refusals: form fields, expected status, what is tested.
        type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", "wrong password"),
                ],
                401,
                "invalid_grant",
            ),
            (
                vec![
                    ("grant_type", "password"),
                    ("username", "nobody"),
                    ("password", PASSWORD),
                ],
                401,
                "invalid_grant",
            ),
            (
                vec![("grant_type", "password"), ("username", "alice")],
                400,
                "invalid_request",
            ),
            (
                vec![("grant_type", "implicit")],
                400,
                "unsupported_grant_type",
            ),
            (
                vec![("username", "alice"), ("password", PASSWORD)],
                400,
                "invalid_request",
            ),
            (
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", "alice"),
                    ("client_secret", PASSWORD),
                ],
                400,
                "unauthorized_client",
            ),
        ];
        for (form, expected, error_type) in cases {
            let (status, body) = token_request(&app, &form).await;
            assert_error(status, &body, expected, &format!("{form:?}"));
            assert_eq!(body["errorType"], error_type, "{form:?}");
        }
        set_disabled(app.database(), "alice", true).await.unwrap();
        let (status, body) = token_request(
            &app,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
        assert_error(status, &body, 401, "disabled account");

        // No token, a forged token, an expired token, a token signed with another key.
        let (status, body) = app.send(Method::GET, "/v1/products", None, None).await;
        assert_error(status, &body, 401, "no token");
        let parts: Vec<&str> = app.admin.split('.').collect();
        let forged_claims = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"sub":"vic","role":"admin","iss":"prodcat","iat":0,"exp":99999999999}"#,
        );
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        let (status, body) = app.get("/v1/models", &forged).await;
        assert_error(status, &body, 401, "forged token");
        let signer = TokenSigner::new(common::test_keys(), Duration::from_secs(60));
        let expired = signer.issue_claims(&TokenClaims {
            sub: "ada".to_string(),
            role: Role::Admin,
            iss: "prodcat".to_string(),
            iat: 1,
            exp: 2,
            ver: 0,
        });
        let (status, body) = app.get("/v1/models", &expired).await;
        assert_error(status, &body, 401, "expired token");
        assert!(body["error"].as_str().unwrap().contains("expired"));
        let stranger = TokenSigner::new(
            SigningKeys::single(&[9u8; 40]).unwrap(),
            Duration::from_secs(60),
        )
        .issue("ada", Role::Admin);
        let (status, body) = app.get("/v1/models", &stranger).await;
        assert_error(status, &body, 401, "other key");
        let (status, body) = app.get("/v1/models", "not-a-jwt").await;
        assert_error(status, &body, 401, "garbage token");

        // Token requests are audited under the name tried.
        let (status, body) = app.get("/v1/audit?actor=alice", &app.admin).await;
        assert_eq!(status, 200);
        let entries = body["entries"].as_array().unwrap();
        assert!(entries
            .iter()
            .any(|e| e["detail"] == "token issued (reviewer)"));
        assert!(entries
            .iter()
            .any(|e| e["detail"] == "wrong credentials" && e["status"] == 401));
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_the_roles_it_does_not_allow() {
    let test_database = testing::sqlite_database().await;
    let app = TestApp::with_text_model(test_database.database.clone()).await;
    // (method, path, body, roles allowed besides admin)
    let routes: Vec<(Method, &str, Option<Value>, Vec<Role>)> = vec![
        (
            Method::POST,
            "/v1/predict",
            Some(json!({"designation": "x"})),
            vec![Role::Service],
        ),
        (
            Method::POST,
            "/v1/predict/batch",
            Some(json!({"items": [{"designation": "x"}]})),
            vec![Role::Service],
        ),
        (Method::POST, "/v1/jobs/classify", None, vec![Role::Service]),
        (
            Method::GET,
            "/v1/jobs/job-0000000000000000",
            None,
            vec![Role::Service],
        ),
        (
            Method::POST,
            "/v1/products",
            Some(json!({"designation": "x"})),
            vec![Role::Reviewer],
        ),
        (
            Method::GET,
            "/v1/products",
            None,
            vec![Role::Reviewer, Role::Viewer],
        ),
        (
            Method::GET,
            "/v1/products/1",
            None,
            vec![Role::Reviewer, Role::Viewer],
        ),
        (
            Method::GET,
            "/v1/products/1/image",
            None,
            vec![Role::Reviewer, Role::Viewer],
        ),
        (
            Method::PATCH,
            "/v1/products/1",
            Some(json!({"designation": "y"})),
            vec![Role::Reviewer],
        ),
        (Method::DELETE, "/v1/products/1", None, vec![Role::Reviewer]),
        (Method::GET, "/v1/review", None, vec![Role::Reviewer]),
        (
            Method::POST,
            "/v1/review/1",
            Some(json!({"decision": "accept"})),
            vec![Role::Reviewer],
        ),
        (Method::GET, "/v1/models", None, vec![]),
        (
            Method::POST,
            "/v1/models/latest/promote",
            Some(json!({})),
            vec![],
        ),
        (
            Method::POST,
            "/v1/models/rollback",
            Some(json!({"reason": "x"})),
            vec![],
        ),
        (Method::GET, "/v1/audit", None, vec![]),
    ];
    for (method, path, body, allowed) in &routes {
        let (status, response) = app.send(method.clone(), path, None, body.clone()).await;
        assert_error(
            status,
            &response,
            401,
            &format!("{method} {path} without a token"),
        );
        for role in Role::ALL {
            let (status, response) = app
                .send(method.clone(), path, Some(app.token(role)), body.clone())
                .await;
            if role == Role::Admin || allowed.contains(&role) {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {role:?} should be allowed: {status} {response}"
                );
            } else {
                assert_error(
                    status,
                    &response,
                    403,
                    &format!("{method} {path} as {role:?}"),
                );
                assert_eq!(response["errorType"], "forbidden");
            }
        }
    }
    // Refused writes are audited with the caller and the status.
    let (_, body) = app.get("/v1/audit?actor=vic&limit=1000", &app.admin).await;
    let entries = body["entries"].as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["action"] == "DELETE /v1/products/{id}"
            && e["status"] == 403
            && e["role"] == "viewer"));
    assert!(entries.iter().all(|e| e["clientAddress"] == "127.0.0.1"));
    // Reads and predictions are not audited.
    assert!(entries.iter().all(|e| e["action"] != "GET /v1/products"));
    let (_, body) = app.get("/v1/audit?actor=svc&limit=1000", &app.admin).await;
    assert!(body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"] != "POST /v1/predict"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let test_database = testing::sqlite_database().await;
    let (platform, version) = prodcat_pipelines::testing::TestPlatform::with_text_champion(
        test_database.database.clone(),
        540,
    )
    .await;
    let mut settings = common::settings();
    settings.rate_limit_per_second = 2.0;
    settings.rate_limit_burst = 5.0;
    let app = TestApp::start(platform, Some(version), settings).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..8 {
        let response = app
            .client
            .post(app.url("/v1/predict"))
            .bearer_auth(&app.service)
            .json(&json!({"designation": "Piscine"}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["errorType"], "rate_limited");
        }
    }
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Another client has its own budget.
    let (status, _) = app
        .post("/v1/predict", &app.admin, json!({"designation": "Piscine"}))
        .await;
    assert_eq!(status, 200);
    // The budget refills.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = app
        .post(
            "/v1/predict",
            &app.service,
            json!({"designation": "Piscine"}),
        )
        .await;
    assert_eq!(status, 200);
    app.stop().await;
}
