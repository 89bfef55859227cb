//! `prodcat backup` taken while a real server takes writes, restored with `prodcat restore`
//! into an empty database and an empty object store: the restored platform serves the same
//! champion and the same catalogue as the snapshot, on SQLite and on PostgreSQL; a restore
//! into a database that holds data is refused and changes nothing.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{base64_of, free_address, get_json, sign_in, wait_for, Cluster};
use prodcat_storage::testing;
use serde_json::{json, Value};

use common::PASSWORD;

fn run(cluster: &Cluster, name: &str, arguments: &[&str]) -> std::process::Output {
    let (mut command, _) = cluster.command(name, arguments);
    command.output().unwrap()
}

fn succeed(cluster: &Cluster, name: &str, arguments: &[&str]) -> String {
    let output = run(cluster, name, arguments);
    assert!(
        output.status.success(),
        "prodcat {arguments:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Creates products through the API until `stop`; counts them.
fn writer(
    client: reqwest::Client,
    api: String,
    token: String,
    stop: Arc<AtomicBool>,
    created: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let photo = base64_of(&prodcat_dataset::generate::generate_image(
            2,
            prodcat_domain::CategoryCode::from_u16(2583).unwrap(),
            3,
        ));
        let mut index = 0;
        while !stop.load(Ordering::SeqCst) {
            index += 1;
            let response = client
                .post(format!("http://{api}/v1/products"))
                .bearer_auth(&token)
                .json(&json!({
                    "designation": format!("Piscine tubulaire ronde n°{index}"),
                    "image": photo,
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            created.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// Every product of a catalogue, as (id, revision, status, designation).
async fn catalogue(client: &reqwest::Client, api: &str, token: &str) -> Vec<String> {
    let mut rows = Vec::new();
    for page in 1.. {
        let (status, body) = get_json(
            client,
            api,
            &format!("/v1/products?page={page}&pageSize=500"),
            token,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let products = body["items"].as_array().unwrap().clone();
        for product in &products {
            rows.push(format!(
                "{} {} {} {}",
                product["productId"],
                product["revision"],
                product["status"],
                product["designation"]
            ));
        }
        if products.len() < 500 {
            break;
        }
    }
    rows
}

async fn backup_under_load_then_restore(original: Cluster, restored: Cluster, backend: &str) {
    succeed(
        &original,
        "setup",
        &[
            "quickstart",
            "--no-serve",
            "--text-only",
            "--products",
            "300",
        ],
    );
    succeed(
        &original,
        "setup",
        &[
            "users",
            "add",
            "admin",
            "--role",
            "admin",
            "--password",
            PASSWORD,
        ],
    );
    let api = free_address();
    let mut server = original.spawn("api", &["serve"], &[("PRODCAT_LISTEN", api.as_str())]);
    let client = reqwest::Client::new();
    wait_for(&client, &format!("http://{api}/readyz"), &mut server).await;
    let token = sign_in(&client, &api, "admin", PASSWORD).await;

    // Writes go on during the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicU64::new(0));
    let load = writer(
        client.clone(),
        api.clone(),
        token.clone(),
        stop.clone(),
        created.clone(),
    );
    while created.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let folder = original.folder.path().join("backup");
    let folder_text = folder.to_str().unwrap().to_string();
    let (mut command, _) = original.command("backup", &["backup", "--out", &folder_text, "--json"]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let during = created.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let manifest: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(manifest["backend"], backend);
    let products_in_backup = manifest["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == "products")
        .unwrap()["rows"]
        .as_u64()
        .unwrap();
    let total = created.load(Ordering::SeqCst);
    assert!(
        total > during && products_in_backup < 300 + total,
        "the load went on after the snapshot: {products_in_backup} in the backup, {total} \
         created"
    );
    let champion = manifest["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == "champion")
        .unwrap()["first"]
        .as_str()
        .unwrap()
        .to_string();

    // A database that holds data is refused, and stays as it was.
    let output = run(&original, "restore", &["restore", "--from", &folder_text]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("already") && message.contains("empty"),
        "{message}"
    );
    let (status, _) = get_json(&client, &api, "/v1/models", &token).await;
    assert_eq!(status, 200);

    // Into an empty database and an empty object store.
    let report = succeed(&restored, "restore", &["restore", "--from", &folder_text]);
    assert!(report.contains("every check matches"), "{report}");
    let second_api = free_address();
    let mut second = restored.spawn(
        "api",
        &["serve"],
        &[("PRODCAT_LISTEN", second_api.as_str())],
    );
    wait_for(&client, &format!("http://{second_api}/readyz"), &mut second).await;
    let (_, ready) = get_json(&client, &second_api, "/readyz", "").await;
    assert_eq!(ready["modelVersion"], champion.as_str(), "{ready}");
    let second_token = sign_in(&client, &second_api, "admin", PASSWORD).await;
    let restored_catalogue = catalogue(&client, &second_api, &second_token).await;
    assert_eq!(restored_catalogue.len() as u64, products_in_backup);
    let original_catalogue = catalogue(&client, &api, &token).await;
    for product in &restored_catalogue {
        assert!(
            original_catalogue.contains(product),
            "{product} is not in the original"
        );
    }
    // The restored objects hold the model: it answers.
    let response = client
        .post(format!("http://{second_api}/v1/predict"))
        .bearer_auth(&second_token)
        .json(&json!({"designation": "Piscine tubulaire ronde avec pompe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["modelVersion"], champion.as_str(), "{answer}");
}

fn local_cluster(database_url: String) -> Cluster {
    let folder = tempfile::tempdir().unwrap();
    let store_url = folder.path().join("objects").to_str().unwrap().to_string();
    std::fs::write(
        folder.path().join("jwt-keys"),
        "k1 a-secret-of-at-least-thirty-two-bytes-for-the-test\n",
    )
    .unwrap();
    Cluster {
        folder,
        database_url,
        store_url,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backup_under_load_restores_the_same_platform() {
    let original = tempfile::tempdir().unwrap();
    let original_url = original.path().join("prodcat.db");
    let restored = tempfile::tempdir().unwrap();
    let restored_url = restored.path().join("prodcat.db");
    backup_under_load_then_restore(
        local_cluster(original_url.to_str().unwrap().to_string()),
        local_cluster(restored_url.to_str().unwrap().to_string()),
        "sqlite",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backup_under_load_restores_the_same_platform() {
    let Some(original) = testing::empty_postgres().await else {
        return;
    };
    let Some(restored) = testing::empty_postgres().await else {
        return;
    };
    // On S3 when a bucket is configured, so the object copy reads and writes a real store.
    let stores: Vec<_> = testing::object_storages()
        .into_iter()
        .filter(|store| store.kind == "s3")
        .collect();
    let mut original_cluster = local_cluster(original.url.clone());
    let restored_cluster = local_cluster(restored.url.clone());
    if let Some(store) = stores.first() {
        original_cluster.store_url = store.url.clone();
    }
    backup_under_load_then_restore(original_cluster, restored_cluster, "postgres").await;
    drop(stores);
}
