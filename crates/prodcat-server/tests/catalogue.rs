//! The catalogue over HTTP on every available backend: add (JSON and multipart; a missing
//! image is refused), read, list, change, delete, the review queue and decisions (labels reach
//! the prediction log), text stored verbatim, and products kept pending until a model exists.

mod common;

use std::time::Duration;

use common::{assert_error, base64, eventually, product_jpeg, TestApp};
use prodcat_storage::testing;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Row;

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(app.database().pool())
        .await
        .unwrap()
        .try_get("count")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_review_and_labels() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let app = TestApp::with_text_model(test_database.database.clone()).await;
        let photo = product_jpeg(1, 2583);

        // A missing image is a 422 that says so; nothing is stored.
        let (status, body) = app
            .post(
                "/v1/products",
                &app.reviewer,
                json!({"designation": "Piscine ronde"}),
            )
            .await;
        assert_error(status, &body, 422, "no image");
        assert!(
            body["error"].as_str().unwrap().contains("image is missing"),
            "{body}"
        );
        let (status, body) = app
            .post(
                "/v1/products",
                &app.reviewer,
                json!({"image": base64(&photo)}),
            )
            .await;
        assert_error(status, &body, 422, "no designation");
        assert_eq!(
            count(&app, "SELECT COUNT(*) AS count FROM products").await,
            0
        );

        // Added and classified at once.
        let (status, body) = app
            .post(
                "/v1/products",
                &app.reviewer,
                json!({
                    "productId": 1001,
                    "designation": "Piscine tubulaire ronde 3m avec pompe de filtration",
                    "description": "Piscine hors-sol familiale",
                    "image": base64(&photo)
                }),
            )
            .await;
        assert_eq!(status, 201, "{name}: {body}");
        let product = &body["product"];
        assert_eq!(product["productId"], 1001);
        assert_eq!(product["predictedCategory"]["code"], 2583);
        assert!(["classified", "review"].contains(&product["status"].as_str().unwrap()));
        assert_eq!(product["createdBy"], "rey");
        assert_eq!(body["prediction"]["categoryCode"], 2583);
        assert_eq!(
            product["imageHash"].as_str().unwrap(),
            prodcat_domain::sha256_hex(&photo)
        );
        // The same id again is a conflict.
        let (status, body) = app
            .post(
                "/v1/products",
                &app.reviewer,
                json!({"productId": 1001, "designation": "x", "image": base64(&photo)}),
            )
            .await;
        assert_error(status, &body, 409, "duplicate id");

        // Multipart with the photo as a file; SQL and HTML stored and returned verbatim.
        let sql_text = "Robert'); DROP TABLE products; --";
        let html_text = "<script>alert('x')</script><b>Coussin</b> &amp; velours";
        let form = reqwest::multipart::Form::new()
            .text("designation", sql_text)
            .text("description", html_text)
            .part(
                "image",
                reqwest::multipart::Part::bytes(product_jpeg(2, 1920))
                    .file_name("coussin.jpg")
                    .mime_str("image/jpeg")
                    .unwrap(),
            );
        let response = app
            .client
            .post(app.url("/v1/products"))
            .bearer_auth(&app.admin)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        let second = body["product"]["productId"].as_i64().unwrap();
        assert!(second > 0);
        let (status, body) = app
            .get(&format!("/v1/products/{second}"), &app.viewer)
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["designation"], sql_text);
        assert_eq!(body["description"], html_text);
        // The id is an integer in the OpenAPI document, and JSON Schema counts 12.0 as 12.
        let (status, same) = app
            .get(&format!("/v1/products/{second}.0"), &app.viewer)
            .await;
        assert_eq!(status, 200, "{same}");
        assert_eq!(same["productId"], second);
        let (status, refused) = app
            .get(&format!("/v1/products/{second}.5"), &app.viewer)
            .await;
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused["error"]
                .as_str()
                .is_some_and(|m| m.contains("whole number")),
            "{refused}"
        );
        assert_eq!(
            count(&app, "SELECT COUNT(*) AS count FROM products").await,
            2
        );

        // The stored image comes back byte for byte.
        let response = app
            .client
            .get(app.url("/v1/products/1001/image"))
            .bearer_auth(&app.viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-type"], "image/jpeg");
        assert_eq!(response.bytes().await.unwrap().as_ref(), photo.as_slice());

        // A low-confidence product goes to the review queue: text the model has not seen.
        let mut queued = Vec::new();
        for (index, text) in ["zzkq wibble", "lorem ipsum dolor", "objet divers sans nom"]
            .iter()
            .enumerate()
        {
            let (status, body) = app
                .post(
                    "/v1/products",
                    &app.reviewer,
                    json!({"productId": 2000 + index, "designation": text, "image": base64(&photo)}),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            if body["product"]["status"] == "review" {
                queued.push((
                    2000 + index as i64,
                    body["product"]["confidence"].as_f64().unwrap(),
                ));
            }
        }
        assert!(
            !queued.is_empty(),
            "{name}: uncertain products should need review"
        );
        let (status, body) = app.get("/v1/review", &app.reviewer).await;
        assert_eq!(status, 200);
        let confidences: Vec<f64> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["confidence"].as_f64().unwrap())
            .collect();
        assert!(
            confidences.windows(2).all(|w| w[0] <= w[1]),
            "lowest first: {confidences:?}"
        );
        assert_eq!(body["total"].as_i64().unwrap() as usize, confidences.len());

        // Listing with filters; bad filters are 422.
        let (status, body) = app.get("/v1/products?status=review", &app.viewer).await;
        assert_eq!(status, 200);
        assert!(body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "review"));
        let (_, body) = app
            .get("/v1/products?category=2583&pageSize=1&page=1", &app.viewer)
            .await;
        assert_eq!(body["items"].as_array().unwrap().len(), 1);
        assert!(body["total"].as_i64().unwrap() >= 1);
        let (status, body) = app.get("/v1/products?category=9999", &app.viewer).await;
        assert_error(status, &body, 422, "unknown category");
        let (status, body) = app.get("/v1/products?status=lost", &app.viewer).await;
        assert_error(status, &body, 422, "unknown status");
        let (status, body) = app.get("/v1/products?page=abc", &app.viewer).await;
        assert_error(status, &body, 422, "page not a number");

        // Review decisions: correct one, accept another; the label reaches the prediction log.
        let (reviewed, _) = queued[0];
        app.server.state.flush_prediction_log().await;
        let (status, body) = app
            .post(
                &format!("/v1/review/{reviewed}"),
                &app.reviewer,
                json!({"decision": "correct", "category": 1920}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "reviewed");
        assert_eq!(body["category"]["code"], 1920);
        let row = sqlx::query(
            "SELECT decision, category_code, previous_code, reviewer FROM review_decisions \
             WHERE product_id = $1",
        )
        .bind(reviewed)
        .fetch_one(app.database().pool())
        .await
        .unwrap();
        assert_eq!(row.try_get::<String, _>("decision").unwrap(), "correct");
        assert_eq!(row.try_get::<i64, _>("category_code").unwrap(), 1920);
        assert_eq!(row.try_get::<String, _>("reviewer").unwrap(), "rey");
        let labelled = count(
            &app,
            &format!(
                "SELECT COUNT(*) AS count FROM prediction_log WHERE product_id = {reviewed} \
                 AND label_code = 1920 AND labelled_at_ms IS NOT NULL"
            ),
        )
        .await;
        assert_eq!(labelled, 1, "{name}");
        let (status, body) = app
            .post(
                "/v1/review/1001",
                &app.reviewer,
                json!({"decision": "accept"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["category"]["code"], 2583);
        let (status, body) = app
            .post(
                "/v1/review/1001",
                &app.reviewer,
                json!({"decision": "accept", "category": 10}),
            )
            .await;
        assert_error(status, &body, 422, "accept with another category");
        let (status, body) = app
            .post(
                "/v1/review/1001",
                &app.reviewer,
                json!({"decision": "correct"}),
            )
            .await;
        assert_error(status, &body, 422, "correct without a category");
        let (status, body) = app
            .post(
                "/v1/review/1001",
                &app.reviewer,
                json!({"decision": "maybe"}),
            )
            .await;
        assert_error(status, &body, 422, "unknown decision");
        let (status, body) = app
            .post(
                "/v1/review/1001",
                &app.reviewer,
                json!({"decision": "correct", "category": 7}),
            )
            .await;
        assert_error(status, &body, 422, "unknown category code");
        let (status, body) = app
            .post(
                "/v1/review/424242",
                &app.reviewer,
                json!({"decision": "accept"}),
            )
            .await;
        assert_error(status, &body, 404, "unknown product");

        // Change: classified again.
        let (status, body) = app
            .send(
                Method::PATCH,
                &format!("/v1/products/{second}"),
                Some(&app.reviewer),
                Some(json!({"designation": "Coussin décoratif en velours 45x45"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["product"]["designation"],
            "Coussin décoratif en velours 45x45"
        );
        assert_eq!(body["product"]["description"], html_text);
        assert!(body["prediction"].is_object());
        let (status, body) = app
            .send(
                Method::PATCH,
                &format!("/v1/products/{second}"),
                Some(&app.reviewer),
                Some(json!({})),
            )
            .await;
        assert_error(status, &body, 422, "empty patch");
        let (status, body) = app
            .send(
                Method::PATCH,
                "/v1/products/999999",
                Some(&app.reviewer),
                Some(json!({"designation": "x"})),
            )
            .await;
        assert_error(status, &body, 404, "patch unknown");

        // Delete; gone afterwards.
        let (status, _) = app
            .send(
                Method::DELETE,
                &format!("/v1/products/{second}"),
                Some(&app.reviewer),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, body) = app
            .get(&format!("/v1/products/{second}"), &app.viewer)
            .await;
        assert_error(status, &body, 404, "deleted product");
        let (status, body) = app
            .send(
                Method::DELETE,
                &format!("/v1/products/{second}"),
                Some(&app.reviewer),
                None,
            )
            .await;
        assert_error(status, &body, 404, "deleted twice");
        let (status, body) = app.get("/v1/products/not-a-number", &app.viewer).await;
        assert!(status == 400 || status == 422, "{status} {body}");
        assert!(body["errorType"].is_string(), "{body}");

        // Every write is in the audit log with who, what and from where.
        let (status, body) = app.get("/v1/audit?limit=1000", &app.admin).await;
        assert_eq!(status, 200);
        let entries = body["entries"].as_array().unwrap();
        let created = entries
            .iter()
            .find(|e| e["action"] == "POST /v1/products" && e["status"] == 201)
            .unwrap();
        assert_eq!(created["actor"], "rey");
        assert_eq!(created["role"], "reviewer");
        assert_eq!(created["clientAddress"], "127.0.0.1");
        assert!(created["atMs"].as_i64().unwrap() > 0);
        assert!(entries
            .iter()
            .any(|e| e["action"] == "DELETE /v1/products/{id}" && e["status"] == 204));
        assert!(entries
            .iter()
            .any(|e| e["action"] == "POST /v1/review/{product_id}"
                && e["detail"].as_str().unwrap().contains("correct")));
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_wait_for_a_model_and_are_classified_later() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let app = TestApp::without_model(test_database.database.clone()).await;
        let (status, body) = app.send(Method::GET, "/readyz", None, None).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["ready"], false);
        assert_eq!(body["database"], "ok");
        let (status, body) = app
            .post(
                "/v1/predict",
                &app.service,
                json!({"designation": "Piscine"}),
            )
            .await;
        assert_error(status, &body, 503, "predict without a model");
        assert_eq!(body["errorType"], "model_unavailable");

        // Stored pending, not lost.
        let (status, body) = app
            .post(
                "/v1/products",
                &app.reviewer,
                json!({"productId": 77, "designation": "Piscine tubulaire ronde avec pompe", "image": base64(&product_jpeg(4, 2583))}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["product"]["status"], "pending");
        assert!(body["prediction"].is_null());
        let (status, body) = app
            .post(
                "/v1/review/77",
                &app.reviewer,
                json!({"decision": "accept"}),
            )
            .await;
        assert_error(status, &body, 409, "reviewing a pending product");

        // A model is trained and promoted: the server swaps to it and classifies the product.
        let version = app
            .platform
            .train(prodcat_model::BranchSelection::Text, 0.5)
            .await;
        app.platform.make_champion(&version).await;
        eventually(
            Duration::from_secs(30),
            "the pending product to be classified",
            || async {
                let (_, body) = app.get("/v1/products/77", &app.viewer).await;
                body["status"] != "pending"
            },
        )
        .await;
        let (_, body) = app.get("/v1/products/77", &app.viewer).await;
        assert_eq!(body["predictedCategory"]["code"], 2583, "{name}: {body}");
        assert_eq!(body["modelVersion"], version.id.to_string());
        let (status, body) = app.send(Method::GET, "/readyz", None, None).await;
        assert_eq!(status, 200);
        assert_eq!(body["modelVersion"], version.id.to_string());
        let logged = count(
            &app,
            "SELECT COUNT(*) AS count FROM prediction_log WHERE product_id = 77 AND source = 'product'",
        )
        .await;
        assert_eq!(logged, 1, "{name}: classified once");
        app.stop().await;
    }
}
