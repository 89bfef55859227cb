//! Prediction over HTTP on every available backend: single (JSON and multipart), batch, and
//! every kind of bad input the service must refuse with a clear 4xx and a JSON error body.

mod common;

use common::{assert_error, base64, jpeg_claiming, product_jpeg, TestApp};
use prodcat_storage::testing;
use serde_json::{json, Value};
use sqlx::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_single_batch_and_multipart() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let app = TestApp::with_text_model(test_database.database.clone()).await;
        let version = app.version.as_ref().unwrap().id.to_string();

        let (status, body) = app
            .post(
                "/v1/predict",
                &app.service,
                json!({
                    "designation": "Piscine tubulaire ronde avec pompe de filtration et échelle",
                    "description": "<p>Piscine hors-sol &amp; bâche</p>",
                    "productId": 42,
                    "explain": true
                }),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["categoryCode"], 2583, "{name}: {body}");
        assert_eq!(body["categoryName"], "pools and accessories");
        assert_eq!(body["modelVersion"], version.as_str());
        assert_eq!(body["branches"], json!(["text"]));
        assert_eq!(body["top"].as_array().unwrap().len(), 5);
        let top_sum: f64 = body["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["probability"].as_f64().unwrap())
            .sum();
        assert!(top_sum <= 1.0001);
        assert_eq!(body["textProbabilities"].as_array().unwrap().len(), 27);
        assert!(body["imageProbabilities"].is_null());
        assert!(body["fusionWeight"].is_null());
        assert!(["automatic", "review"].contains(&body["decision"].as_str().unwrap()));
        assert!(body["explanation"]
            .as_array()
            .is_some_and(|e| !e.is_empty()));
        assert!(body["elapsedMicroseconds"].as_u64().unwrap() > 0);
        assert!(body["confidence"].as_f64().unwrap() > 0.0);

        // Multipart with text fields only.
        let form = reqwest::multipart::Form::new()
            .text("designation", "Manette sans fil pour console de jeux")
            .text("description", "");
        let response = app
            .client
            .post(app.url("/v1/predict"))
            .bearer_auth(&app.service)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["branches"], json!(["text"]));

        // A batch with good and bad items answers per item, in order.
        let (status, body) = app
            .post(
                "/v1/predict/batch",
                &app.service,
                json!({"items": [
                    {"designation": "Coussin décoratif en velours"},
                    {"designation": ""},
                    {"designation": "Jeu", "image": "not base64 at all!"},
                    {"designation": "Croquettes pour chien adulte", "productId": 9}
                ]}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["succeeded"], 2);
        assert_eq!(body["failed"], 2);
        let results = body["results"].as_array().unwrap();
        assert_eq!(results[0]["index"], 0);
        assert!(results[0]["prediction"]["categoryCode"].is_u64());
        assert_eq!(results[1]["error"]["errorType"], "invalid_request");
        assert_eq!(results[2]["error"]["errorType"], "invalid_image");
        assert!(results[3]["prediction"].is_object());

        // Too many items for one call.
        let items: Vec<Value> = (0..1001).map(|_| json!({"designation": "x"})).collect();
        let (status, body) = app
            .post("/v1/predict/batch", &app.service, json!({ "items": items }))
            .await;
        assert_error(status, &body, 422, "1001 items");

        // Served predictions reach the prediction log (written off the request path).
        app.server.state.flush_prediction_log().await;
        let counts = sqlx::query(
            "SELECT source, COUNT(*) AS count FROM prediction_log GROUP BY source ORDER BY source",
        )
        .fetch_all(app.database().pool())
        .await
        .unwrap();
        let counts: Vec<(String, i64)> = counts
            .iter()
            .map(|row| {
                (
                    row.try_get("source").unwrap(),
                    row.try_get("count").unwrap(),
                )
            })
            .collect();
        assert_eq!(
            counts,
            vec![("batch".to_string(), 2), ("predict".to_string(), 2)],
            "{name}"
        );
        // A client's productId links no log row to a stored product (only the catalogue does).
        let linked: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM prediction_log WHERE product_id IS NOT NULL")
                .fetch_one(app.database().pool())
                .await
                .unwrap();
        assert_eq!(linked, 0, "{name}");
        let row = sqlx::query(
            "SELECT text, description_empty, model_version, branches FROM prediction_log \
             WHERE text LIKE '%Piscine hors-sol%' AND source = 'predict'",
        )
        .fetch_one(app.database().pool())
        .await
        .unwrap();
        let text: String = row.try_get("text").unwrap();
        assert!(
            text.contains("Piscine hors-sol & bâche"),
            "normalised: {text}"
        );
        assert_eq!(row.try_get::<i64, _>("description_empty").unwrap(), 0);
        assert_eq!(row.try_get::<String, _>("model_version").unwrap(), version);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly() {
    for test_database in testing::databases().await {
        let name = test_database.name();
        let app = TestApp::with_text_model(test_database.database.clone()).await;
        let post_raw = |body: Vec<u8>, content_type: &'static str| {
            app.client
                .post(app.url("/v1/predict"))
                .bearer_auth(&app.service)
                .header("content-type", content_type)
                .body(body)
                .send()
        };
        let read = |response: reqwest::Response| async move {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        };

        // Malformed JSON: 400 naming where.
        let (status, body) = read(
            post_raw(b"{\"designation\": ".to_vec(), "application/json")
                .await
                .unwrap(),
        )
        .await;
        assert_error(status, &body, 400, "malformed JSON");
        assert_eq!(body["errorType"], "invalid_json");
        assert!(body["error"].as_str().unwrap().contains("line 1"), "{body}");

        // Wrong types and unknown fields: 422 naming the field.
        let (status, body) = app
            .post("/v1/predict", &app.service, json!({"designation": 12}))
            .await;
        assert_error(status, &body, 422, "wrong type");
        let (status, body) = app
            .post("/v1/predict", &app.service, json!({"title": "Piscine"}))
            .await;
        assert_error(status, &body, 422, "unknown field");
        assert!(body["error"].as_str().unwrap().contains("title"), "{body}");

        // Missing designation (and nothing else to classify).
        let (status, body) = app.post("/v1/predict", &app.service, json!({})).await;
        assert_error(status, &body, 422, "missing designation");
        assert!(body["error"].as_str().unwrap().contains("designation"));

        // A 20 MB body.
        let huge = format!("{{\"designation\": \"{}\"}}", "a".repeat(20 << 20));
        let (status, body) = common::post_oversized(
            app.server.address,
            "/v1/predict",
            &app.service,
            "application/json",
            huge.into_bytes(),
            common::Framing::Declared,
        )
        .await;
        assert_error(status, &body, 413, "20 MB body");

        // Base64 that is not an image, and text that is not base64.
        let (status, body) = app
            .post(
                "/v1/predict",
                &app.service,
                json!({"designation": "x", "image": base64(b"GIF89a definitely not a photo")}),
            )
            .await;
        assert_error(status, &body, 422, "not an image");
        assert_eq!(body["errorType"], "invalid_image");
        let (status, body) = app
            .post(
                "/v1/predict",
                &app.service,
                json!({"image": "%%% not base64 %%%"}),
            )
            .await;
        assert_error(status, &body, 422, "not base64");

        // An image of 20,000 x 20,000 pixels is refused from its header.
        let (status, body) = app
            .post(
                "/v1/predict",
                &app.service,
                json!({"designation": "x", "image": base64(&jpeg_claiming(20_000, 20_000))}),
            )
            .await;
        assert_error(status, &body, 422, "huge image");
        assert_eq!(body["errorType"], "image_too_large");
        assert!(
            body["error"].as_str().unwrap().contains("20000x20000"),
            "{body}"
        );

        // A truncated JPEG.
        let photo = product_jpeg(3, 1560);
        let truncated = &photo[..photo.len() / 2];
        let (status, body) = app
            .post(
                "/v1/predict",
                &app.service,
                json!({"designation": "x", "image": base64(truncated)}),
            )
            .await;
        assert_error(status, &body, 422, "truncated JPEG");
        assert_eq!(body["errorType"], "invalid_image", "{name}");

        // Wrong content type, wrong method, unknown route: JSON errors too.
        let (status, body) = read(
            post_raw(b"designation=x".to_vec(), "text/plain")
                .await
                .unwrap(),
        )
        .await;
        assert_error(status, &body, 415, "text/plain");
        let (status, body) = app
            .send(
                reqwest::Method::PUT,
                "/v1/predict",
                Some(&app.service),
                None,
            )
            .await;
        assert_error(status, &body, 405, "PUT");
        let (status, body) = app.get("/v1/nothing-here", &app.service).await;
        assert_error(status, &body, 404, "unknown route");

        // Nothing of the refused requests reached the prediction log.
        app.server.state.flush_prediction_log().await;
        let logged: i64 = sqlx::query("SELECT COUNT(*) AS count FROM prediction_log")
            .fetch_one(app.database().pool())
            .await
            .unwrap()
            .try_get("count")
            .unwrap();
        assert_eq!(logged, 0, "{name}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_classified_when_the_backbone_is_installed() {
    let model_dir = common::model_dir();
    if !model_dir
        .join("mobilenet-v2")
        .join("manifest.json")
        .is_file()
    {
        eprintln!(
            "skipped: the image backbone is not in {} (run scripts/setup or set PRODCAT_MODEL_DIR)",
            model_dir.display()
        );
        return;
    }
    let test_database = testing::sqlite_database().await;
    let platform = prodcat_pipelines::testing::TestPlatform::new(
        test_database.database.clone(),
        324,
        true,
        &model_dir,
    )
    .await;
    let version = platform
        .train(prodcat_model::BranchSelection::Fusion, 0.5)
        .await;
    platform.make_champion(&version).await;
    let app = TestApp::start(platform, Some(version), common::settings()).await;
    let photo = product_jpeg(5, 2583);

    // Image only.
    let (status, body) = app
        .post(
            "/v1/predict",
            &app.service,
            json!({"image": base64(&photo)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["branches"], json!(["image"]));
    assert!(body["textProbabilities"].is_null());
    assert_eq!(body["imageProbabilities"].as_array().unwrap().len(), 27);

    // Text and image: both branches and the fusion weight.
    let (status, body) = app
        .post(
            "/v1/predict",
            &app.service,
            json!({"designation": "Piscine ronde", "image": format!("data:image/jpeg;base64,{}", base64(&photo))}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["branches"], json!(["text", "image"]));
    assert!(body["fusionWeight"].is_number());
    assert!(
        body["photoRegions"].is_null(),
        "regions only when asked for"
    );

    // With explain: the occlusion map of the photo for the predicted category.
    let (status, body) = app
        .post(
            "/v1/predict",
            &app.service,
            json!({"designation": "Piscine ronde", "image": base64(&photo), "explain": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let regions = &body["photoRegions"];
    assert_eq!(regions["categoryCode"], body["categoryCode"], "{regions}");
    assert_eq!(regions["grid"], 4);
    assert_eq!(regions["imageWidth"], 500);
    let drops: Vec<f64> = regions["drops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|drop| drop.as_f64().unwrap())
        .collect();
    assert_eq!(drops.len(), 16);
    let probability = regions["probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&probability), "{regions}");
    // Each drop is the whole photo's probability minus a probability.
    assert!(drops.iter().all(|drop| drop.is_finite()
        && *drop <= probability + 1e-6
        && *drop >= probability - 1.0 - 1e-6));
    assert!(
        drops.iter().any(|drop| drop.abs() > 1e-6),
        "hiding a sixteenth of the photo changed nothing: {regions}"
    );
    assert!(regions["squareSide"].as_f64().unwrap() > 0.0);
    // A text-only explanation has no regions.
    let (status, body) = app
        .post(
            "/v1/predict",
            &app.service,
            json!({"designation": "Piscine ronde", "explain": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["photoRegions"].is_null());

    // Multipart with the photo as a file.
    let form = reqwest::multipart::Form::new()
        .text("designation", "Piscine ronde")
        .part(
            "image",
            reqwest::multipart::Part::bytes(photo.clone())
                .file_name("photo.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        );
    let response = app
        .client
        .post(app.url("/v1/predict"))
        .bearer_auth(&app.service)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["branches"], json!(["text", "image"]));

    // The image's statistics (never the image) reach the prediction log.
    app.server.state.flush_prediction_log().await;
    let row = sqlx::query(
        "SELECT image_width, image_height, image_brightness, branches FROM prediction_log \
         WHERE branches = 'image'",
    )
    .fetch_one(app.database().pool())
    .await
    .unwrap();
    assert_eq!(
        row.try_get::<Option<i64>, _>("image_width").unwrap(),
        Some(500)
    );
    assert!(row
        .try_get::<Option<f64>, _>("image_brightness")
        .unwrap()
        .is_some_and(|b| b > 0.0 && b <= 255.0));

    // A truncated photo is refused by the image branch too.
    let (status, body) = app
        .post(
            "/v1/predict",
            &app.service,
            json!({"image": base64(&photo[..photo.len() / 3])}),
        )
        .await;
    assert_error(status, &body, 422, "truncated JPEG with the backbone");
    app.stop().await;
}
