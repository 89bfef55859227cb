//! What the command-line tests share: `prodcat` processes on their own data folders that
//! share a database and an object store, free addresses, and small HTTP helpers.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A process killed when the test ends, whatever happens.
pub struct Process {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Process {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Cluster {
    pub folder: tempfile::TempDir,
    pub database_url: String,
    pub store_url: String,
}

impl Cluster {
    pub fn command(&self, name: &str, arguments: &[&str]) -> (Command, PathBuf) {
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

    pub fn spawn(&self, name: &str, arguments: &[&str], extra: &[(&str, &str)]) -> Process {
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

/// The password the tests give the users they add.
pub const PASSWORD: &str = "a long enough password";

/// A token for `name` from the API at `api` (password grant).
pub async fn sign_in(client: &reqwest::Client, api: &str, name: &str, password: &str) -> String {
    let response = client
        .post(format!("http://{api}/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", name),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

pub fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

pub async fn wait_for(client: &reqwest::Client, url: &str, process: &mut Process) {
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

pub async fn get_json(
    client: &reqwest::Client,
    api: &str,
    path: &str,
    token: &str,
) -> (u16, Value) {
    let response = client
        .get(format!("http://{api}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
