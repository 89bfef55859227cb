//! The one settings tree of prodcat, for every command (`serve` and `worker` included).
//!
//! Layers, each overriding the one before: built-in defaults, then a TOML file (`--config FILE`,
//! else `./prodcat.toml` when it exists), then overrides the binary gathers from `PRODCAT_*`
//! environment variables and command-line flags. This crate reads no environment variable: the
//! binary passes what it found as a [`SettingsLayer`].
//!
//! ```toml
//! # prodcat.toml
//! data-dir = "prodcat-data"
//! database-url = "postgres://prodcat@db/prodcat"
//!
//! [server]
//! listen = "0.0.0.0:8080"
//! rate-limit = 500
//!
//! [worker]
//! batch-size = 128
//!
//! [schedules]
//! weekly-check = "0 6 * * MON"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::PlatformError;

/// Values one layer may set; `None` leaves the layer below in force.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SettingsLayer {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub object_store_url: Option<String>,
    pub model_dir: Option<PathBuf>,
    pub log: Option<String>,
    pub webhook_url: Option<String>,
    /// More webhooks that receive every notification.
    pub webhooks: Option<Vec<String>>,
    /// A file holding the secret that signs webhook deliveries (HMAC-SHA256).
    pub webhook_secret_file: Option<PathBuf>,
    /// Loaded model versions kept in memory at once.
    pub model_cache_size: Option<usize>,
    /// Who acts (recorded with runs); the binary sets it from the system user.
    pub actor: Option<String>,
    /// Pipeline schedules: pipeline name = cron expression (UTC), run by `prodcat worker`.
    pub schedules: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub server: ServerLayer,
    #[serde(default)]
    pub worker: WorkerLayer,
}

/// The `[server]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerLayer {
    pub listen: Option<SocketAddr>,
    pub rate_limit: Option<f64>,
    pub rate_burst: Option<f64>,
    pub token_lifetime_seconds: Option<u64>,
    pub body_limit_mib: Option<usize>,
    pub upload_limit_mib: Option<usize>,
    pub request_timeout_seconds: Option<u64>,
    pub jwt_secret_file: Option<PathBuf>,
    pub swagger_ui_dir: Option<PathBuf>,
    pub model_poll_milliseconds: Option<u64>,
    pub pending_poll_milliseconds: Option<u64>,
    pub max_image_pixels: Option<u64>,
    pub max_batch_items: Option<usize>,
    pub max_job_items: Option<usize>,
    pub max_designation_bytes: Option<usize>,
    pub max_description_bytes: Option<usize>,
    pub trusted_proxies: Option<Vec<String>>,
    pub private_networks: Option<Vec<String>>,
    pub metrics_token_file: Option<PathBuf>,
    pub header_read_timeout_seconds: Option<u64>,
    pub max_connections: Option<usize>,
    pub database_timeout_milliseconds: Option<u64>,
    pub revocation_check_seconds: Option<u64>,
}

/// The `[worker]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkerLayer {
    pub model: Option<String>,
    pub batch_size: Option<usize>,
    pub concurrency: Option<usize>,
    pub lease_seconds: Option<u64>,
    pub no_scheduler: Option<bool>,
    pub listen: Option<SocketAddr>,
}

macro_rules! overlay {
    ($below:expr, $above:expr, [$($field:ident),* $(,)?]) => {
        $( if $above.$field.is_some() { $below.$field = $above.$field.clone(); } )*
    };
}

impl SettingsLayer {
    /// Reads a TOML settings file (unknown keys are refused, with their name).
    pub fn from_file(path: &Path) -> Result<Self, PlatformError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlatformError::Io {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| PlatformError::Settings {
            name: path.display().to_string(),
            reason: error.to_string(),
        })
    }

    /// This layer with `above` laid over it.
    pub fn overlaid_with(mut self, above: &SettingsLayer) -> Self {
        overlay!(
            self,
            above,
            [
                data_dir,
                database_url,
                object_store_url,
                model_dir,
                log,
                webhook_url,
                webhooks,
                webhook_secret_file,
                model_cache_size,
                actor,
                schedules
            ]
        );
        overlay!(
            self.server,
            above.server,
            [
                listen,
                rate_limit,
                rate_burst,
                token_lifetime_seconds,
                body_limit_mib,
                upload_limit_mib,
                request_timeout_seconds,
                jwt_secret_file,
                swagger_ui_dir,
                model_poll_milliseconds,
                pending_poll_milliseconds,
                max_image_pixels,
                max_batch_items,
                max_job_items,
                max_designation_bytes,
                max_description_bytes,
                trusted_proxies,
                private_networks,
                metrics_token_file,
                header_read_timeout_seconds,
                max_connections,
                database_timeout_milliseconds,
                revocation_check_seconds
            ]
        );
        overlay!(
            self.worker,
            above.worker,
            [
                model,
                batch_size,
                concurrency,
                lease_seconds,
                no_scheduler,
                listen
            ]
        );
        self
    }
}

/// The resolved settings.
#[derive(Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub object_store_url: String,
    pub model_dir: PathBuf,
    pub log: String,
    /// Where notifications go (never printed: the URLs may hold secrets).
    pub webhook_urls: Vec<String>,
    /// The file with the secret that signs webhook deliveries.
    pub webhook_secret_file: Option<PathBuf>,
    pub model_cache_size: usize,
    /// Who acts through these settings (recorded with runs and pipeline runs).
    pub actor: String,
    pub schedules: BTreeMap<String, String>,
    pub server: ServerSettings,
    pub worker: WorkerSettings,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("object_store_url", &self.object_store_url)
            .field("model_dir", &self.model_dir)
            .field("log", &self.log)
            .field("webhooks", &self.webhook_urls.len())
            .field("model_cache_size", &self.model_cache_size)
            .field("actor", &self.actor)
            .field("schedules", &self.schedules)
            .field("server", &self.server)
            .field("worker", &self.worker)
            .finish()
    }
}

/// A database URL without its password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// How `prodcat serve` runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Requests per second each client may make on average; 0 disables the limit.
    pub rate_limit_per_second: f64,
    /// Requests a client may make in a burst above the average.
    pub rate_limit_burst: f64,
    pub token_lifetime: Duration,
    /// Largest request body, except uploads of classification jobs.
    pub body_limit_bytes: usize,
    /// Largest upload of a classification job.
    pub upload_limit_bytes: usize,
    /// A request that takes longer is answered 503 with a timeout error.
    pub request_timeout: Duration,
    /// File holding the token signing secret; `None`: `<data dir>/jwt-secret`, created once.
    pub jwt_secret_file: Option<PathBuf>,
    /// Folder with the Swagger UI files; `None`: looked for in the usual places.
    pub swagger_ui_dir: Option<PathBuf>,
    /// How often the `champion` alias is checked for a newly promoted version.
    pub model_poll_interval: Duration,
    /// How often products waiting for a model are looked for.
    pub pending_poll_interval: Duration,
    /// Largest image accepted, in pixels (decompression-bomb guard).
    pub max_image_pixels: u64,
    /// Largest batch of `POST /v1/predict/batch`.
    pub max_batch_items: usize,
    /// Folder keeping product text embeddings across restarts (search by meaning).
    pub search_cache_dir: Option<PathBuf>,
    /// Largest number of items in one classification job.
    pub max_job_items: usize,
    /// What one product's text may carry (checked before any heavy work).
    pub input_limits: prodcat_model::InputLimits,
    /// Proxies whose `X-Forwarded-For` names the client (nobody else's is believed).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Networks allowed to read `/metrics` and the details of `/readyz` without a token.
    pub private_networks: Vec<ipnet::IpNet>,
    /// A file holding the bearer token scrapers outside those networks must send.
    pub metrics_token_file: Option<PathBuf>,
    /// A connection that has not sent a request's headers within this time is closed (an idle
    /// keep-alive connection included: the wait for the next request counts).
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// How long a request waits for a database connection before answering 503.
    pub database_timeout: Duration,
    /// How long a user's state (enabled, role, token version) is trusted before it is read
    /// again: the time a revocation takes to reach every replica.
    pub revocation_check: Duration,
}

/// Loopback, the private IPv4 ranges of RFC 1918 and IPv6 unique local addresses.
pub fn default_private_networks() -> Vec<ipnet::IpNet> {
    [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    ]
    .iter()
    .filter_map(|net| net.parse().ok())
    .collect()
}

fn parse_networks(name: &str, values: &[String]) -> Result<Vec<ipnet::IpNet>, PlatformError> {
    values
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(|value| {
            value
                .parse::<ipnet::IpNet>()
                .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| PlatformError::Settings {
                    name: name.to_string(),
                    reason: format!("{value:?} is not an address or a CIDR network (10.0.0.0/8)"),
                })
        })
        .collect()
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rate_limit_per_second: 2_000.0,
            rate_limit_burst: 4_000.0,
            token_lifetime: Duration::from_secs(3600),
            body_limit_bytes: 16 << 20,
            upload_limit_bytes: 512 << 20,
            request_timeout: Duration::from_secs(60),
            jwt_secret_file: None,
            swagger_ui_dir: None,
            model_poll_interval: Duration::from_secs(5),
            pending_poll_interval: Duration::from_secs(5),
            max_image_pixels: prodcat_model::DEFAULT_MAX_IMAGE_PIXELS,
            max_batch_items: 1_000,
            search_cache_dir: None,
            max_job_items: 1_000_000,
            input_limits: prodcat_model::InputLimits::default(),
            trusted_proxies: Vec::new(),
            private_networks: default_private_networks(),
            metrics_token_file: None,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1_024,
            database_timeout: Duration::from_millis(1_000),
            revocation_check: Duration::from_secs(2),
        }
    }
}

/// How `prodcat worker` runs.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// The model to classify with: an alias (follows promotions) or a version.
    pub model: String,
    /// Job items leased and classified at once.
    pub batch_size: usize,
    /// Batches in work at the same time in one process.
    pub concurrency: usize,
    /// How long a lease lasts without renewal.
    pub lease_duration: Duration,
    /// Whether this process leaves the pipeline scheduler to others.
    pub no_scheduler: bool,
    /// Where the worker serves `/healthz` and `/metrics` (none by default).
    pub listen: Option<SocketAddr>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            model: prodcat_registry::CHAMPION.to_string(),
            batch_size: 256,
            concurrency: 1,
            lease_duration: Duration::from_secs(60),
            no_scheduler: false,
            listen: None,
        }
    }
}

fn check(condition: bool, name: &str, reason: &str) -> Result<(), PlatformError> {
    if condition {
        Ok(())
    } else {
        Err(PlatformError::Settings {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    }
}

impl Settings {
    /// Defaults, then the file (`config`, else `./prodcat.toml` when present), then `overrides`.
    pub fn load(config: Option<&Path>, overrides: &SettingsLayer) -> Result<Self, PlatformError> {
        let file = match config {
            Some(path) => SettingsLayer::from_file(path)?,
            None if Path::new("prodcat.toml").is_file() => {
                SettingsLayer::from_file(Path::new("prodcat.toml"))?
            }
            None => SettingsLayer::default(),
        };
        Self::resolve(&file.overlaid_with(overrides))
    }

    /// Settings from one layer over the built-in defaults.
    pub fn resolve(layer: &SettingsLayer) -> Result<Self, PlatformError> {
        let data_dir = layer
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("prodcat-data"));
        let server_defaults = ServerSettings::default();
        let worker_defaults = WorkerSettings::default();
        let server_layer = &layer.server;
        let worker_layer = &layer.worker;
        let settings = Self {
            database_url: layer
                .database_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("prodcat.db").display())),
            object_store_url: layer
                .object_store_url
                .clone()
                .unwrap_or_else(|| data_dir.join("objects").display().to_string()),
            model_dir: layer
                .model_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("models")),
            log: layer.log.clone().unwrap_or_else(|| "warn".to_string()),
            webhook_urls: layer
                .webhook_url
                .iter()
                .flat_map(|urls| urls.split(','))
                .map(|url| url.trim().to_string())
                .chain(layer.webhooks.iter().flatten().cloned())
                .filter(|url| !url.trim().is_empty())
                .collect(),
            webhook_secret_file: layer.webhook_secret_file.clone(),
            model_cache_size: layer.model_cache_size.unwrap_or(4),
            actor: layer.actor.clone().unwrap_or_else(|| "unknown".to_string()),
            schedules: layer.schedules.clone().unwrap_or_default(),
            server: ServerSettings {
                listen: server_layer.listen.unwrap_or(server_defaults.listen),
                rate_limit_per_second: server_layer
                    .rate_limit
                    .unwrap_or(server_defaults.rate_limit_per_second),
                rate_limit_burst: server_layer
                    .rate_burst
                    .unwrap_or(server_defaults.rate_limit_burst),
                token_lifetime: server_layer
                    .token_lifetime_seconds
                    .map(Duration::from_secs)
                    .unwrap_or(server_defaults.token_lifetime),
                body_limit_bytes: server_layer
                    .body_limit_mib
                    .map(|mib| mib << 20)
                    .unwrap_or(server_defaults.body_limit_bytes),
                upload_limit_bytes: server_layer
                    .upload_limit_mib
                    .map(|mib| mib << 20)
                    .unwrap_or(server_defaults.upload_limit_bytes),
                request_timeout: server_layer
                    .request_timeout_seconds
                    .map(Duration::from_secs)
                    .unwrap_or(server_defaults.request_timeout),
                jwt_secret_file: server_layer.jwt_secret_file.clone(),
                swagger_ui_dir: server_layer.swagger_ui_dir.clone(),
                model_poll_interval: server_layer
                    .model_poll_milliseconds
                    .map(Duration::from_millis)
                    .unwrap_or(server_defaults.model_poll_interval),
                pending_poll_interval: server_layer
                    .pending_poll_milliseconds
                    .map(Duration::from_millis)
                    .unwrap_or(server_defaults.pending_poll_interval),
                max_image_pixels: server_layer
                    .max_image_pixels
                    .unwrap_or(server_defaults.max_image_pixels),
                max_batch_items: server_layer
                    .max_batch_items
                    .unwrap_or(server_defaults.max_batch_items),
                search_cache_dir: Some(data_dir.join("search-cache")),
                max_job_items: server_layer
                    .max_job_items
                    .unwrap_or(server_defaults.max_job_items),
                input_limits: prodcat_model::InputLimits {
                    max_designation_bytes: server_layer
                        .max_designation_bytes
                        .unwrap_or(server_defaults.input_limits.max_designation_bytes),
                    max_description_bytes: server_layer
                        .max_description_bytes
                        .unwrap_or(server_defaults.input_limits.max_description_bytes),
                    max_image_pixels: server_layer
                        .max_image_pixels
                        .unwrap_or(server_defaults.max_image_pixels),
                },
                trusted_proxies: match &server_layer.trusted_proxies {
                    Some(values) => parse_networks("server.trusted-proxies", values)?,
                    None => server_defaults.trusted_proxies,
                },
                private_networks: match &server_layer.private_networks {
                    Some(values) => parse_networks("server.private-networks", values)?,
                    None => server_defaults.private_networks,
                },
                metrics_token_file: server_layer.metrics_token_file.clone(),
                header_read_timeout: server_layer
                    .header_read_timeout_seconds
                    .map(Duration::from_secs)
                    .unwrap_or(server_defaults.header_read_timeout),
                max_connections: server_layer
                    .max_connections
                    .unwrap_or(server_defaults.max_connections),
                database_timeout: server_layer
                    .database_timeout_milliseconds
                    .map(Duration::from_millis)
                    .unwrap_or(server_defaults.database_timeout),
                revocation_check: server_layer
                    .revocation_check_seconds
                    .map(Duration::from_secs)
                    .unwrap_or(server_defaults.revocation_check),
            },
            worker: WorkerSettings {
                model: worker_layer.model.clone().unwrap_or(worker_defaults.model),
                batch_size: worker_layer
                    .batch_size
                    .unwrap_or(worker_defaults.batch_size),
                concurrency: worker_layer
                    .concurrency
                    .unwrap_or(worker_defaults.concurrency),
                lease_duration: worker_layer
                    .lease_seconds
                    .map(|seconds| Duration::from_secs(seconds.max(1)))
                    .unwrap_or(worker_defaults.lease_duration),
                no_scheduler: worker_layer
                    .no_scheduler
                    .unwrap_or(worker_defaults.no_scheduler),
                listen: worker_layer.listen,
            },
            data_dir,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Opens the metadata database (running migrations), creating the data folder for SQLite.
    pub async fn open_database(&self) -> Result<prodcat_storage::Database, PlatformError> {
        self.open_database_with(&prodcat_storage::ConnectOptions::default())
            .await
    }

    /// Opens the metadata database with explicit waits.
    pub async fn open_database_with(
        &self,
        wait: &prodcat_storage::ConnectOptions,
    ) -> Result<prodcat_storage::Database, PlatformError> {
        if self.database_url.starts_with("sqlite:") {
            std::fs::create_dir_all(&self.data_dir).map_err(|source| PlatformError::Io {
                path: self.data_dir.display().to_string(),
                source,
            })?;
        }
        Ok(prodcat_storage::Database::connect_with(&self.database_url, wait).await?)
    }

    /// Opens the object store.
    pub fn open_objects(&self) -> Result<prodcat_storage::ObjectStorage, PlatformError> {
        Ok(prodcat_storage::ObjectStorage::open(
            &self.object_store_url,
        )?)
    }

    /// Checks the values that would make a command misbehave.
    pub fn validate(&self) -> Result<(), PlatformError> {
        let server = &self.server;
        check(
            self.model_cache_size >= 1,
            "model-cache-size",
            "it must be at least 1",
        )?;
        check(
            server.rate_limit_per_second >= 0.0 && server.rate_limit_per_second.is_finite(),
            "server.rate-limit",
            "it must be a finite number of requests per second, 0 to disable",
        )?;
        check(
            server.rate_limit_burst >= 0.0 && server.rate_limit_burst.is_finite(),
            "server.rate-burst",
            "it must be a finite number of requests",
        )?;
        check(
            server.token_lifetime >= Duration::from_secs(1),
            "server.token-lifetime-seconds",
            "it must be at least one second",
        )?;
        check(
            server.body_limit_bytes >= 1024 && server.upload_limit_bytes >= 1024,
            "server.body-limit-mib",
            "body and upload limits must be at least 1 MiB",
        )?;
        check(
            server.request_timeout >= Duration::from_millis(10),
            "server.request-timeout-seconds",
            "it must be at least 1 second",
        )?;
        check(
            server.max_connections >= 1,
            "server.max-connections",
            "it must be at least 1",
        )?;
        check(
            server.max_job_items >= 1,
            "server.max-job-items",
            "it must be at least 1",
        )?;
        check(
            server.max_batch_items >= 1,
            "server.max-batch-items",
            "it must be at least 1",
        )?;
        check(
            self.worker.batch_size >= 1,
            "worker.batch-size",
            "it must be at least 1",
        )?;
        check(
            self.worker.concurrency >= 1,
            "worker.concurrency",
            "it must be at least 1",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(text: &str) -> SettingsLayer {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn layers_override_in_order() {
        let file = layer(
            "data-dir = \"from-file\"\nlog = \"info\"\n[server]\nrate-limit = 10\n[worker]\nbatch-size = 7\n",
        );
        let flags = layer("log = \"debug\"\n[server]\nlisten = \"127.0.0.1:9000\"\n");
        let settings = Settings::resolve(&file.overlaid_with(&flags)).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("from-file"));
        assert_eq!(settings.database_url, "sqlite://from-file/prodcat.db");
        assert_eq!(settings.object_store_url, "from-file/objects");
        assert_eq!(settings.log, "debug");
        assert_eq!(settings.server.rate_limit_per_second, 10.0);
        assert_eq!(settings.server.listen.port(), 9000);
        assert_eq!(settings.server.rate_limit_burst, 4_000.0);
        assert_eq!(settings.worker.batch_size, 7);
        assert_eq!(settings.worker.concurrency, 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<SettingsLayer>("colour = \"blue\"").is_err());
        assert!(toml::from_str::<SettingsLayer>("[server]\nport = 1").is_err());
        let error = Settings::resolve(&layer("[worker]\nbatch-size = 0\n")).unwrap_err();
        assert!(error.to_string().contains("worker.batch-size"), "{error}");
    }

    #[test]
    fn secrets_are_not_printed() {
        let settings = Settings::resolve(&layer(
            "database-url = \"postgres://app:hunter2@db/prodcat\"\nwebhook-url = \"https://hooks.example/T0/secret\"\n",
        ))
        .unwrap();
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("hooks.example"),
            "{debug}"
        );
        assert!(debug.contains("postgres://app:***@db/prodcat"));
    }
}
