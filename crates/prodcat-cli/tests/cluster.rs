//! Scale-out as it is deployed: two `prodcat serve` replicas and two `prodcat worker`
//! processes, each with its own empty data folder, sharing only PostgreSQL, the object store
//! and the token signing keys. A job uploaded to one replica is read on the other and split
//! between the workers; a worker killed in the middle of a job leaves nothing behind; the
//! workers' `/healthz` and `/metrics` answer; a promotion and a new product made through one
//! replica reach the other; the schedule fires once per due time; one replica killed, the
//! other serves.

mod common;

use std::time::{Duration, Instant};

use common::{base64_of, free_address, get_json, sign_in, wait_for, Cluster, Process};
use prodcat_storage::testing;
use serde_json::{json, Value};

async fn job_status(client: &reqwest::Client, api: &str, token: &str, job: &str) -> Value {
    client
        .get(format!("http://{api}/v1/jobs/{job}?limit=0"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn upload_job(client: &reqwest::Client, api: &str, token: &str, items: usize) -> String {
    let lines: String = (0..items)
        .map(|i| {
            let title = [
                "Piscine tubulaire ronde",
                "Coussin en velours",
                "Jeu de société",
            ][i % 3];
            format!("{}\n", json!({"designation": format!("{title} {i}")}))
        })
        .collect();
    let response = client
        .post(format!("http://{api}/v1/jobs/classify"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(lines)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["jobId"].as_str().unwrap().to_string()
}

/// The value of an unlabelled metric, or the sum of a labelled one's series.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(client: &reqwest::Client, address: &str) -> String {
    client
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_and_two_workers_share_only_postgres_and_object_storage() {
    let Some(database) = testing::postgres_database().await else {
        return;
    };
    let Some(store) = testing::object_storages()
        .into_iter()
        .find(|store| store.kind == "s3")
    else {
        eprintln!("skipped: the scale-out test runs on S3 (PRODCAT_TEST_S3_URL)");
        return;
    };
    let cluster = Cluster {
        folder: tempfile::tempdir().unwrap(),
        database_url: database.url.clone(),
        store_url: store.url.clone(),
    };
    std::fs::write(
        cluster.folder.path().join("jwt-keys"),
        "k1 a-shared-secret-of-at-least-thirty-two-bytes\n",
    )
    .unwrap();
    // Every worker is configured with the same schedule; only one may run it.
    let config = cluster.folder.path().join("prodcat.toml");
    std::fs::write(&config, "[schedules]\nweekly-check = \"*/10 * * * * *\"\n").unwrap();

    // Set up once, from a machine of its own: a champion, a second version, an admin.
    let password = "a long enough password";
    for arguments in [
        &[
            "quickstart",
            "--no-serve",
            "--text-only",
            "--products",
            "300",
        ][..],
        &["train", "--branch", "text", "--c", "0.2"][..],
        &[
            "users",
            "add",
            "admin",
            "--role",
            "admin",
            "--password",
            password,
        ][..],
    ] {
        let (mut command, _) = cluster.command("setup", arguments);
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "prodcat {arguments:?} on PostgreSQL and S3 failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let apis = [free_address(), free_address()];
    let worker_addresses = [free_address(), free_address()];
    let mut replicas: Vec<Process> = apis
        .iter()
        .enumerate()
        .map(|(i, address)| {
            cluster.spawn(
                &format!("api-{i}"),
                &["serve"],
                &[("PRODCAT_LISTEN", address.as_str())],
            )
        })
        .collect();
    let config = config.to_str().unwrap();
    let mut workers: Vec<Process> = worker_addresses
        .iter()
        .enumerate()
        .map(|(i, address)| {
            cluster.spawn(
                &format!("worker-{i}"),
                &["worker"],
                &[
                    ("PRODCAT_WORKER_BATCH_SIZE", "100"),
                    ("PRODCAT_WORKER_LEASE_SECONDS", "3"),
                    ("PRODCAT_WORKER_LISTEN", address.as_str()),
                    ("PRODCAT_CONFIG", config),
                ],
            )
        })
        .collect();
    let client = reqwest::Client::new();
    for (address, process) in apis.iter().zip(replicas.iter_mut()) {
        wait_for(&client, &format!("http://{address}/readyz"), process).await;
    }
    for (address, process) in worker_addresses.iter().zip(workers.iter_mut()) {
        wait_for(&client, &format!("http://{address}/healthz"), process).await;
    }

    // A token signed by one replica works on the other.
    let token = sign_in(&client, &apis[0], "admin", password).await;
    let (status, _) = get_json(&client, &apis[1], "/v1/models", &token).await;
    assert_eq!(status, 200, "the other replica accepts the token");

    // 20,000 items uploaded to one replica, followed on the other, split between the workers;
    // one worker is SIGKILLed half-way and the other finishes: every item done exactly once.
    let job = upload_job(&client, &apis[0], &token, 20_000).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut per_worker = Vec::new();
    loop {
        let status = job_status(&client, &apis[1], &token, &job).await;
        if status["doneCount"].as_u64().unwrap_or(0) >= 10_000 {
            for address in &worker_addresses {
                let text = metrics(&client, address).await;
                assert_eq!(metric_sum(&text, "prodcat_database_up"), 1.0, "{text}");
                per_worker.push(metric_sum(&text, "prodcat_job_items_total"));
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "half the job was not done: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workers[0].child.kill().unwrap();
    workers[0].child.wait().unwrap();
    assert!(
        per_worker.iter().all(|items| *items > 0.0),
        "both workers took items: {per_worker:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = job_status(&client, &apis[0], &token, &job).await;
        if status["status"] == "completed" {
            assert_eq!(status["doneCount"], 20_000, "{status}");
            assert_eq!(status["failedCount"], 0, "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not complete after a worker died: {status}\n{}",
            workers[1].log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let items: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM job_items WHERE job_id = $1 GROUP BY status")
            .bind(&job)
            .fetch_all(database.database.pool())
            .await
            .unwrap();
    assert_eq!(items, vec![("done".to_string(), 20_000)], "{items:?}");

    // A promotion through one replica is served by the other within 10 s.
    let (_, models) = get_json(&client, &apis[1], "/v1/models", &token).await;
    let versions = models["versions"].as_array().expect("versions");
    let challenger = versions
        .iter()
        .find(|version| {
            !version["aliases"]
                .as_array()
                .unwrap()
                .iter()
                .any(|alias| alias == "champion")
        })
        .expect("a version that is not the champion")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let response = client
        .post(format!("http://{}/v1/models/{challenger}/promote", apis[0]))
        .bearer_auth(&token)
        .json(&json!({"force": true, "reason": "scale-out test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let promoted = Instant::now();
    loop {
        let (_, ready) = get_json(&client, &apis[1], "/readyz", &token).await;
        if ready["modelVersion"] == challenger.as_str() {
            break;
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(10),
            "the other replica still serves {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A product created through one replica is found by search on the other within 10 s.
    let photo = prodcat_dataset::generate::generate_image(
        1,
        prodcat_domain::CategoryCode::from_u16(2583).unwrap(),
        5,
    );
    let response = client
        .post(format!("http://{}/v1/products", apis[0]))
        .bearer_auth(&token)
        .json(&json!({
            "designation": "Bouée flamant rose gonflable géante",
            "image": base64_of(&photo),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let created = Instant::now();
    loop {
        let (status, found) = get_json(
            &client,
            &apis[1],
            "/v1/search?q=flamant%20gonflable",
            &token,
        )
        .await;
        if status == 200 && found.to_string().contains("flamant rose") {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(10),
            "not found on the other replica: {status} {found}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The scheduler ran the schedule on one worker only: each due time fired once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let starts = loop {
        let starts: Vec<(i64,)> = sqlx::query_as(
            "SELECT started_at_ms FROM pipeline_runs \
             WHERE triggered_by = 'schedule:weekly-check' ORDER BY started_at_ms",
        )
        .fetch_all(database.database.pool())
        .await
        .unwrap();
        if starts.len() >= 2 {
            break starts;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule did not fire twice: {starts:?}\n{}",
            workers[1].log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for pair in starts.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= 5_000,
            "two runs for one due time: {starts:?}"
        );
    }

    // One replica killed, the other keeps serving.
    replicas[0].child.kill().unwrap();
    replicas[0].child.wait().unwrap();
    for round in 0..20 {
        let response = client
            .post(format!("http://{}/v1/predict", apis[1]))
            .bearer_auth(&token)
            .json(&json!({"designation": format!("Piscine tubulaire ronde {round}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert!(answer["categoryCode"].is_u64(), "{answer}");
        assert_eq!(answer["modelVersion"], challenger.as_str(), "{answer}");
    }
    drop(store);
}
