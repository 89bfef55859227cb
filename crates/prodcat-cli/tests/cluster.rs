//! Scale-out as it is deployed: two `prodcat serve` replicas and two `prodcat worker`
//! processes, each with its own empty data folder, sharing only PostgreSQL, the object store
//! and the token signing keys. A job uploaded to one replica is read on the other and split
//! between the workers; a worker killed in the middle of a job leaves nothing behind; the
//! workers' `/healthz` and `/metrics` answer; both replicas serve the same champion.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use prodcat_storage::testing;
use serde_json::{json, Value};

/// A process killed when the test ends, whatever happens.
struct Process {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    folder: tempfile::TempDir,
    database_url: String,
    store_url: String,
}

impl Cluster {
    fn command(&self, name: &str, arguments: &[&str]) -> (Command, PathBuf) {
        let data_dir = self.folder.path().join(name);
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_prodcat"));
        command
            .args(arguments)
            .env("PRODCAT_DATA_DIR", &data_dir)
            .env("PRODCAT_DATABASE_URL", &self.database_url)
            .env("PRODCAT_OBJECT_STORE_URL", &self.store_url)
            .env("PRODCAT_MODEL_DIR", data_dir.join("no-pretrained-models"))
            .env("PRODCAT_JWT_KEYS_FILE", self.folder.path().join("jwt-keys"))
            .env("PRODCAT_LOG", "warn")
            .env_remove("PRODCAT_CONFIG")
            .current_dir(&data_dir);
        (command, data_dir)
    }

    fn spawn(&self, name: &str, arguments: &[&str], extra: &[(&str, &str)]) -> Process {
        let (mut command, data_dir) = self.command(name, arguments);
        let log = data_dir.join("output.log");
        let file = std::fs::File::create(&log).unwrap();
        command
            .envs(extra.iter().copied())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        Process {
            child: command.spawn().expect("start prodcat"),
            name: name.to_string(),
            log,
        }
    }
}

fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

async fn wait_for(client: &reqwest::Client, url: &str, process: &mut Process) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(url).send().await {
            if response.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!("{} exited ({status}): {}", process.name, process.log());
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer: {}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

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

    // Set up once, from a machine of its own.
    let (mut setup, _) = cluster.command(
        "setup",
        &[
            "quickstart",
            "--no-serve",
            "--text-only",
            "--products",
            "300",
        ],
    );
    let output = setup.output().unwrap();
    assert!(
        output.status.success(),
        "quickstart on PostgreSQL and S3 failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let password = "a long enough password";
    let (mut add_admin, _) = cluster.command(
        "setup",
        &["users", "add", "admin", "--role", "admin", "--password", password],
    );
    assert!(add_admin.output().unwrap().status.success());

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
    let worker_settings = [
        ("PRODCAT_WORKER_BATCH_SIZE", "25"),
        ("PRODCAT_WORKER_LEASE_SECONDS", "3"),
    ];
    let mut workers: Vec<Process> = worker_addresses
        .iter()
        .enumerate()
        .map(|(i, address)| {
            let mut settings = worker_settings.to_vec();
            settings.push(("PRODCAT_WORKER_LISTEN", address.as_str()));
            cluster.spawn(&format!("worker-{i}"), &["worker"], &settings)
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
    let response = client
        .post(format!("http://{}/v1/auth/token", apis[0]))
        .form(&[
            ("grant_type", "password"),
            ("username", "admin"),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let token: Value = response.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();

    // A job uploaded to one replica, followed on the other, split between the workers.
    let job = upload_job(&client, &apis[0], &token, 1500).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = job_status(&client, &apis[1], &token, &job).await;
        if status["status"] == "completed" {
            assert_eq!(status["doneCount"], 1500, "{status}");
            assert_eq!(status["failedCount"], 0, "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not complete: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut per_worker = Vec::new();
    for address in &worker_addresses {
        let text = metrics(&client, address).await;
        assert_eq!(metric_sum(&text, "prodcat_database_up"), 1.0, "{text}");
        assert!(
            metric_sum(&text, "prodcat_prediction_decisions_total") > 0.0,
            "{text}"
        );
        per_worker.push(metric_sum(&text, "prodcat_job_items_total"));
    }
    assert_eq!(per_worker.iter().sum::<f64>(), 1500.0, "{per_worker:?}");
    assert!(
        per_worker.iter().all(|items| *items > 0.0),
        "both workers took items: {per_worker:?}"
    );

    // A worker killed in the middle of a job: the other finishes it once the leases expire.
    let job = upload_job(&client, &apis[1], &token, 3000).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = job_status(&client, &apis[0], &token, &job).await;
        if status["doneCount"].as_u64().unwrap_or(0) >= 100 {
            break;
        }
        assert!(Instant::now() < deadline, "the second job did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers[0].child.kill().unwrap();
    workers[0].child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = job_status(&client, &apis[0], &token, &job).await;
        if status["status"] == "completed" {
            assert_eq!(status["doneCount"], 3000, "{status}");
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

    // Both replicas serve the same champion.
    let models: Value = client
        .get(format!("http://{}/v1/models", apis[1]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(models.to_string().contains("champion"), "{models}");
    for api in &apis {
        let answer: Value = client
            .post(format!("http://{api}/v1/predict"))
            .bearer_auth(&token)
            .json(&json!({"designation": "Piscine tubulaire ronde avec pompe"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer["categoryCode"].is_u64(), "{api}: {answer}");
    }
    let readiness: Vec<Value> = readiness(&client, &apis).await;
    assert_eq!(
        readiness[0]["modelVersion"], readiness[1]["modelVersion"],
        "{readiness:?}"
    );
    drop(store);
}

async fn readiness(client: &reqwest::Client, apis: &[String]) -> Vec<Value> {
    let mut answers = Vec::new();
    for api in apis {
        answers.push(
            client
                .get(format!("http://{api}/readyz"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap(),
        );
    }
    answers
}
