//! The service's settings (the CLI layers defaults, environment and flags onto them) and the
//! signing secret for tokens, created once with owner-only permissions when none is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ServerError;

/// How the service runs.
#[derive(Clone)]
pub struct ServerSettings {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// HMAC key for the access tokens (HS256). At least 32 bytes.
    pub jwt_secret: Vec<u8>,
    /// How long an access token is valid.
    pub token_lifetime: Duration,
    /// Largest request body, except uploads of classification jobs.
    pub body_limit_bytes: usize,
    /// Largest upload of a classification job (JSON lines or CSV).
    pub upload_limit_bytes: usize,
    /// Requests per second each client (token subject, else address) may make on average;
    /// 0 disables the limit.
    pub rate_limit_per_second: f64,
    /// Requests a client may make in a burst above the average.
    pub rate_limit_burst: f64,
    /// A request that takes longer is answered 503 with a timeout error.
    pub request_timeout: Duration,
    /// How often the `champion` alias is checked for a newly promoted version.
    pub model_poll_interval: Duration,
    /// How often products waiting for a model are looked for.
    pub pending_poll_interval: Duration,
    /// Largest image accepted, in pixels (decompression-bomb guard).
    pub max_image_pixels: u64,
    /// Largest batch of `POST /v1/predict/batch`.
    pub max_batch_items: usize,
    /// Folder with the Swagger UI files (`swagger-ui-dist`); looked for in the usual places
    /// when not set.
    pub swagger_ui_dir: Option<PathBuf>,
    /// Text-only predictions whose text is at most this long run on the request's own task (they
    /// take tens of microseconds); longer texts and images go to the blocking pool.
    pub inline_text_bytes: usize,
    /// Folder keeping product text embeddings across restarts (search by meaning); `None`
    /// keeps them in memory only.
    pub search_cache_dir: Option<PathBuf>,
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("listen", &self.listen)
            .field("jwt_secret", &"<redacted>")
            .field("token_lifetime", &self.token_lifetime)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("upload_limit_bytes", &self.upload_limit_bytes)
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .field("request_timeout", &self.request_timeout)
            .field("model_poll_interval", &self.model_poll_interval)
            .field("max_image_pixels", &self.max_image_pixels)
            .finish_non_exhaustive()
    }
}

impl ServerSettings {
    /// Defaults with the given secret.
    pub fn with_secret(jwt_secret: Vec<u8>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            jwt_secret,
            token_lifetime: Duration::from_secs(3600),
            body_limit_bytes: 16 << 20,
            upload_limit_bytes: 512 << 20,
            rate_limit_per_second: 2_000.0,
            rate_limit_burst: 4_000.0,
            request_timeout: Duration::from_secs(60),
            model_poll_interval: Duration::from_secs(5),
            pending_poll_interval: Duration::from_secs(5),
            max_image_pixels: prodcat_vision::preprocess::DEFAULT_MAX_PIXELS,
            max_batch_items: 1_000,
            swagger_ui_dir: None,
            inline_text_bytes: 8_192,
            search_cache_dir: None,
        }
    }

    /// Checks the values that would make the service misbehave.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.jwt_secret.len() < 32 {
            return Err(ServerError::InvalidSetting {
                name: "jwt secret",
                reason: "it must be at least 32 bytes".to_string(),
            });
        }
        if self.token_lifetime < Duration::from_secs(1) {
            return Err(ServerError::InvalidSetting {
                name: "token lifetime",
                reason: "it must be at least one second".to_string(),
            });
        }
        if self.body_limit_bytes < 1024 || self.upload_limit_bytes < 1024 {
            return Err(ServerError::InvalidSetting {
                name: "body limit",
                reason: "it must be at least 1 KiB".to_string(),
            });
        }
        if !(self.rate_limit_per_second >= 0.0 && self.rate_limit_per_second.is_finite()) {
            return Err(ServerError::InvalidSetting {
                name: "rate limit",
                reason: "it must be a finite number of requests per second, 0 to disable"
                    .to_string(),
            });
        }
        if self.request_timeout < Duration::from_millis(10) {
            return Err(ServerError::InvalidSetting {
                name: "request timeout",
                reason: "it must be at least 10 ms".to_string(),
            });
        }
        if self.max_batch_items == 0 {
            return Err(ServerError::InvalidSetting {
                name: "batch size",
                reason: "it must be at least 1".to_string(),
            });
        }
        Ok(())
    }
}

/// The signing secret in `<data dir>/jwt-secret`: read when it exists, otherwise 48 random
/// bytes are written there (hex, mode 0600) first.
pub fn load_or_create_secret(data_dir: &Path) -> Result<Vec<u8>, ServerError> {
    let path = data_dir.join("jwt-secret");
    let io_error = |source| ServerError::Io {
        path: path.display().to_string(),
        source,
    };
    if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(io_error)?;
        let secret = text.trim().as_bytes().to_vec();
        if secret.len() < 32 {
            return Err(ServerError::InvalidSetting {
                name: "jwt secret",
                reason: format!("{} holds fewer than 32 bytes", path.display()),
            });
        }
        return Ok(secret);
    }
    std::fs::create_dir_all(data_dir).map_err(|source| ServerError::Io {
        path: data_dir.display().to_string(),
        source,
    })?;
    let bytes: [u8; 48] = rand::random();
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, text.as_bytes()).map_err(io_error)?;
    Ok(text.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_created_once_with_private_permissions() {
        let folder = tempfile::tempdir().unwrap();
        let first = load_or_create_secret(folder.path()).unwrap();
        let second = load_or_create_secret(folder.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 96);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(folder.path().join("jwt-secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let short = tempfile::tempdir().unwrap();
        std::fs::write(short.path().join("jwt-secret"), "too short").unwrap();
        assert!(load_or_create_secret(short.path()).is_err());
    }

    #[test]
    fn settings_are_checked() {
        let good = ServerSettings::with_secret(vec![7; 32]);
        assert!(good.validate().is_ok());
        assert!(ServerSettings::with_secret(vec![7; 8]).validate().is_err());
        let mut bad = good.clone();
        bad.rate_limit_per_second = f64::NAN;
        assert!(bad.validate().is_err());
        let debug = format!("{good:?}");
        assert!(debug.contains("redacted") && !debug.contains("[7, 7"));
    }
}
