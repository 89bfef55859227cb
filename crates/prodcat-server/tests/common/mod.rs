//! Test support: start the real server on port 0 against a fresh database with a small text
//! model trained on a generated catalogue, and speak HTTP to it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use prodcat_catalogue::users::add_user;
use prodcat_catalogue::{NewUser, Role, UserKind};
use prodcat_pipelines::testing::TestPlatform;
use prodcat_registry::ModelVersion;
use prodcat_server::{RunningServer, ServerSettings, SigningKeys};
use prodcat_storage::Database;
use serde_json::Value;

pub const PASSWORD: &str = "a long enough password";

/// A running server with its platform and a token per role.
pub struct TestApp {
    pub server: RunningServer,
    pub base: String,
    pub client: reqwest::Client,
    pub platform: TestPlatform,
    pub version: Option<ModelVersion>,
    pub admin: String,
    pub reviewer: String,
    pub service: String,
    pub viewer: String,
}

/// The keys the test servers sign tokens with.
pub fn test_keys() -> SigningKeys {
    SigningKeys::single(b"test secret of at least thirty-two bytes").unwrap()
}

pub fn settings() -> ServerSettings {
    ServerSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        model_poll_interval: Duration::from_millis(200),
        pending_poll_interval: Duration::from_millis(200),
        rate_limit_per_second: 100_000.0,
        rate_limit_burst: 100_000.0,
        revocation_check: Duration::from_millis(200),
        swagger_ui_dir: Some(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/swagger-ui-dist"),
        ),
        ..ServerSettings::default()
    }
}

pub fn model_dir() -> PathBuf {
    std::env::var("PRODCAT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

impl TestApp {
    /// A server whose champion is a text model trained on 540 generated products.
    pub async fn with_text_model(database: Database) -> Self {
        let (platform, version) = TestPlatform::with_text_champion(database, 540).await;
        Self::start(platform, Some(version), settings()).await
    }

    /// A server over a platform without any model yet.
    pub async fn without_model(database: Database) -> Self {
        let platform = TestPlatform::new(database, 540, false, Path::new("/nonexistent")).await;
        Self::start(platform, None, settings()).await
    }

    pub async fn start(
        platform: TestPlatform,
        version: Option<ModelVersion>,
        settings: ServerSettings,
    ) -> Self {
        let server = prodcat_server::start(platform.platform.clone(), settings, test_keys())
            .await
            .expect("start the server");
        let base = format!("http://{}", server.address);
        let signer = server.state.signer.clone();
        // The tokens' users exist (tokens of unknown users are refused).
        for (name, role) in [
            ("ada", Role::Admin),
            ("rey", Role::Reviewer),
            ("svc", Role::Service),
            ("vic", Role::Viewer),
        ] {
            let added = add_user(
                &platform.platform.database,
                &NewUser {
                    name: name.to_string(),
                    role,
                    kind: if role == Role::Service {
                        UserKind::Service
                    } else {
                        UserKind::Person
                    },
                    secret: PASSWORD.to_string(),
                },
            )
            .await;
            if let Err(error) = added {
                assert!(
                    matches!(error, prodcat_catalogue::CatalogueError::UserExists(_)),
                    "{error}"
                );
            }
        }
        Self {
            admin: signer.issue("ada", Role::Admin),
            reviewer: signer.issue("rey", Role::Reviewer),
            service: signer.issue("svc", Role::Service),
            viewer: signer.issue("vic", Role::Viewer),
            server,
            base,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            platform,
            version,
        }
    }

    pub fn database(&self) -> &Database {
        &self.platform.platform.database
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn token(&self, role: Role) -> &str {
        match role {
            Role::Admin => &self.admin,
            Role::Reviewer => &self.reviewer,
            Role::Service => &self.service,
            Role::Viewer => &self.viewer,
        }
    }

    pub async fn add_person(&self, name: &str, role: Role) {
        add_user(
            self.database(),
            &NewUser {
                name: name.to_string(),
                role,
                kind: UserKind::Person,
                secret: PASSWORD.to_string(),
            },
        )
        .await
        .unwrap();
    }

    /// Sends JSON with a token; returns status and JSON body (Null when not JSON).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send the request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn stop(self) {
        self.server.stop().await.expect("stop the server");
    }
}

/// Asserts an error answer: the status and the JSON error body.
pub fn assert_error(status: u16, body: &Value, expected_status: u16, context: &str) {
    assert_eq!(status, expected_status, "{context}: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{context}: error body without a message: {body}"
    );
    assert!(
        body["errorType"].as_str().is_some_and(|e| !e.is_empty()),
        "{context}: error body without an errorType: {body}"
    );
}

/// A generated 500x500 product photo.
pub fn product_jpeg(index: usize, code: u16) -> Vec<u8> {
    prodcat_dataset::generate::generate_image(
        index,
        prodcat_domain::CategoryCode::from_u16(code).unwrap(),
        11,
    )
}

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A small valid JPEG whose header claims `width` x `height` pixels.
pub fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = product_jpeg(0, 2583);
    let position = bytes
        .windows(2)
        .position(|pair| pair[0] == 0xFF && (pair[1] == 0xC0 || pair[1] == 0xC2))
        .expect("a start-of-frame marker");
    // FF C0, length (2), precision (1), height (2), width (2).
    bytes[position + 5..position + 7].copy_from_slice(&height.to_be_bytes());
    bytes[position + 7..position + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

/// Waits until `check` returns true (polling every 50 ms) or panics after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a raw request frames its body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// With a Content-Length header.
    Declared,
    /// In chunks of 16 KiB, with no length announced, so the server only learns the size by
    /// reading.
    Chunked,
}

/// Posts `body` over a raw connection and reads the answer even when the server answers before
/// the whole body is sent (a body over the limit): the writer runs on its own and a broken pipe
/// is expected. Returns the status and the JSON body (Null when not JSON).
pub async fn post_oversized(
    address: std::net::SocketAddr,
    path: &str,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
    framing: Framing,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let length_header = match framing {
        Framing::Declared => format!("Content-Length: {}", body.len()),
        Framing::Chunked => "Transfer-Encoding: chunked".to_string(),
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {content_type}\r\n{length_header}\r\nConnection: close\r\n\r\n"
    );
    let body = match framing {
        Framing::Declared => body,
        Framing::Chunked => {
            let mut framed = Vec::with_capacity(body.len() + body.len() / 1024 + 16);
            for piece in body.chunks(16 << 10) {
                framed.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                framed.extend_from_slice(piece);
                framed.extend_from_slice(b"\r\n");
            }
            framed.extend_from_slice(b"0\r\n\r\n");
            framed
        }
    };
    let sender = tokio::spawn(async move {
        // The server may stop reading and close early: write errors are part of the test.
        if writer.write_all(head.as_bytes()).await.is_ok() {
            let _ = writer.write_all(&body).await;
        }
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&chunk[..n]);
                    if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let headers = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
                        let length = headers
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .and_then(|value| value.trim().parse::<usize>().ok());
                        if length.is_some_and(|length| answer.len() >= end + 4 + length) {
                            break;
                        }
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 30 s");
    sender.abort();
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
