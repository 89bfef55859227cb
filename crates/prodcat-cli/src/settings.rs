//! The command line's part of the settings: the flags (each also readable from a `PRODCAT_*`
//! environment variable) that become the top layer of the platform's one settings tree
//! ([`prodcat_platform::Settings`]: defaults, then `prodcat.toml`, then these).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use prodcat_platform::settings::{ServerLayer, WorkerLayer};
use prodcat_platform::SettingsLayer;

pub use prodcat_platform::Settings;

/// Options every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML). Defaults to ./prodcat.toml when that file exists.
    #[arg(long, env = "PRODCAT_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Folder for the embedded default: the SQLite file and the local object store live here
    /// [default: prodcat-data].
    #[arg(long, env = "PRODCAT_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Metadata database: sqlite://FILE (default: <data-dir>/prodcat.db) or postgres://...
    #[arg(long, env = "PRODCAT_DATABASE_URL", global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Object store for images, model bundles and reports: a folder (default:
    /// <data-dir>/objects) or s3://bucket/prefix (credentials from the AWS_* variables).
    #[arg(
        long,
        env = "PRODCAT_OBJECT_STORE_URL",
        global = true,
        value_name = "URL"
    )]
    pub object_store_url: Option<String>,

    /// Folder holding the pretrained model files fetched by scripts/setup [default: models].
    #[arg(long, env = "PRODCAT_MODEL_DIR", global = true, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,

    /// Log filter, e.g. info, debug, prodcat_dataset=trace [default: warn; RUST_LOG also works].
    #[arg(long, env = "PRODCAT_LOG", global = true, value_name = "FILTER")]
    pub log: Option<String>,

    /// Webhooks (comma-separated) told of drift, retraining, promotions, rollbacks and rollouts
    /// (Slack-compatible JSON; `webhooks = [...]` in prodcat.toml adds more).
    #[arg(
        long,
        env = "PRODCAT_WEBHOOK_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub webhook_url: Option<String>,

    /// File holding the secret that signs webhook deliveries (HMAC-SHA256 in
    /// X-Prodcat-Signature); without it deliveries are not signed.
    #[arg(
        long,
        env = "PRODCAT_WEBHOOK_SECRET_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub webhook_secret_file: Option<PathBuf>,

    /// Loaded model versions kept in memory at once [default: 4].
    #[arg(
        long,
        env = "PRODCAT_MODEL_CACHE_SIZE",
        global = true,
        value_name = "N"
    )]
    pub model_cache_size: Option<usize>,
}

impl GlobalArgs {
    /// The layer these flags (and variables) form.
    pub fn layer(&self) -> SettingsLayer {
        SettingsLayer {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            object_store_url: self.object_store_url.clone(),
            model_dir: self.model_dir.clone(),
            log: self.log.clone().or_else(|| std::env::var("RUST_LOG").ok()),
            webhook_url: self.webhook_url.clone(),
            webhook_secret_file: self.webhook_secret_file.clone(),
            model_cache_size: self.model_cache_size,
            actor: Some(actor()),
            ..SettingsLayer::default()
        }
    }
}

/// Flags of `prodcat serve` (and the quickstart, which serves too): the `[server]` section.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on; keep it on 127.0.0.1 behind a reverse proxy [default:
    /// 127.0.0.1:8080].
    #[arg(long, env = "PRODCAT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Requests per second each client (token subject, else address) may make on average;
    /// 0 disables the limit. Over it, requests answer 429 with Retry-After [default: 2000].
    #[arg(long, env = "PRODCAT_RATE_LIMIT")]
    pub rate_limit: Option<f64>,
    /// Requests a client may make in a burst above the average [default: 4000].
    #[arg(long, env = "PRODCAT_RATE_BURST")]
    pub rate_burst: Option<f64>,
    /// Lifetime of access tokens, in seconds [default: 3600].
    #[arg(long, env = "PRODCAT_TOKEN_LIFETIME")]
    pub token_lifetime: Option<u64>,
    /// Largest request body in MiB; uploads of classification jobs have their own limit
    /// [default: 16].
    #[arg(long, env = "PRODCAT_BODY_LIMIT_MIB")]
    pub body_limit_mib: Option<usize>,
    /// Largest upload of a classification job, in MiB [default: 512].
    #[arg(long, env = "PRODCAT_UPLOAD_LIMIT_MIB")]
    pub upload_limit_mib: Option<usize>,
    /// A request taking longer answers 503 with a timeout error, in seconds [default: 60].
    #[arg(long, env = "PRODCAT_REQUEST_TIMEOUT")]
    pub request_timeout: Option<u64>,
    /// File with the token signing keys: one `<key id> <secret>` per line (the first signs,
    /// all verify), or a single secret of at least 32 bytes. Every replica must use the same
    /// file. Default: <data-dir>/jwt-secret, created once with owner-only permissions.
    #[arg(
        long,
        env = "PRODCAT_JWT_KEYS_FILE",
        alias = "jwt-secret-file",
        value_name = "FILE"
    )]
    pub jwt_keys_file: Option<PathBuf>,
    /// Folder with Swagger UI's files (npm package swagger-ui-dist; scripts/setup fetches it).
    #[arg(long, env = "PRODCAT_SWAGGER_UI_DIR", value_name = "DIR")]
    pub swagger_ui_dir: Option<PathBuf>,
    /// Networks (comma-separated CIDRs) of the reverse proxies whose X-Forwarded-For is
    /// believed; from any other peer the header is ignored [default: none].
    #[arg(
        long,
        env = "PRODCAT_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR,..."
    )]
    pub trusted_proxies: Option<Vec<String>>,
    #[command(flatten)]
    pub operations: OperationsArgs,
}

/// Who may read `/metrics` (and the details of `/readyz`): shared by `serve` and `worker`.
#[derive(Debug, Clone, Default, Args)]
pub struct OperationsArgs {
    /// Networks (comma-separated CIDRs) that read /metrics without a token [default: loopback
    /// and the private ranges 10/8, 172.16/12, 192.168/16, fc00::/7].
    #[arg(
        long,
        env = "PRODCAT_PRIVATE_NETWORKS",
        value_delimiter = ',',
        value_name = "CIDR,..."
    )]
    pub private_networks: Option<Vec<String>>,
    /// File holding the scrapers' bearer token (16 characters or more) for /metrics from
    /// outside those networks.
    #[arg(long, env = "PRODCAT_METRICS_TOKEN_FILE", value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
}

impl OperationsArgs {
    fn apply(&self, layer: &mut ServerLayer) {
        if self.private_networks.is_some() {
            layer.private_networks = self.private_networks.clone();
        }
        if self.metrics_token_file.is_some() {
            layer.metrics_token_file = self.metrics_token_file.clone();
        }
    }
}

impl ServeArgs {
    pub fn layer(&self) -> ServerLayer {
        let mut layer = ServerLayer {
            listen: self.listen,
            rate_limit: self.rate_limit,
            rate_burst: self.rate_burst,
            token_lifetime_seconds: self.token_lifetime,
            body_limit_mib: self.body_limit_mib,
            upload_limit_mib: self.upload_limit_mib,
            request_timeout_seconds: self.request_timeout,
            jwt_secret_file: self.jwt_keys_file.clone(),
            swagger_ui_dir: self.swagger_ui_dir.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            ..ServerLayer::default()
        };
        self.operations.apply(&mut layer);
        layer
    }
}

/// Flags of `prodcat worker`: the `[worker]` section.
#[derive(Debug, Clone, Default, Args)]
pub struct WorkerArgs {
    /// The model to classify with: an alias (champion, which follows promotions) or a version
    /// [default: champion].
    #[arg(long, env = "PRODCAT_WORKER_MODEL")]
    pub model: Option<String>,
    /// Job items leased and classified at once [default: 256].
    #[arg(long, env = "PRODCAT_WORKER_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Batches in work at the same time in this process [default: 1].
    #[arg(long, env = "PRODCAT_WORKER_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Seconds a lease lasts without renewal; items of a worker that died are taken over
    /// after [default: 60].
    #[arg(long, env = "PRODCAT_WORKER_LEASE_SECONDS")]
    pub lease_seconds: Option<u64>,
    /// Do not run the pipeline scheduler ([schedules] in prodcat.toml) in this process.
    #[arg(long, env = "PRODCAT_WORKER_NO_SCHEDULER")]
    pub no_scheduler: bool,
    /// Address of this worker's /healthz and /metrics (for probes and Prometheus); unset
    /// means the worker listens nowhere.
    #[arg(long, env = "PRODCAT_WORKER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub operations: OperationsArgs,
}

impl WorkerArgs {
    pub fn layer(&self) -> WorkerLayer {
        WorkerLayer {
            model: self.model.clone(),
            batch_size: self.batch_size,
            concurrency: self.concurrency,
            lease_seconds: self.lease_seconds,
            no_scheduler: self.no_scheduler.then_some(true),
            listen: self.listen,
        }
    }
}

/// Resolves the settings tree for a command: defaults, the file, then these flags.
pub fn resolve(
    global: &GlobalArgs,
    serve: Option<&ServeArgs>,
    worker: Option<&WorkerArgs>,
) -> anyhow::Result<Settings> {
    let mut layer = global.layer();
    if let Some(serve) = serve {
        layer.server = serve.layer();
    }
    if let Some(worker) = worker {
        layer.worker = worker.layer();
        worker.operations.apply(&mut layer.server);
    }
    Settings::load(global.config.as_deref(), &layer).context("invalid settings")
}

/// The configured schedules, parsed (an unknown pipeline or a bad cron expression is an error
/// naming the schedule).
pub fn schedules(settings: &Settings) -> anyhow::Result<Vec<prodcat_pipelines::Schedule>> {
    prodcat_pipelines::parse_schedules(
        settings
            .schedules
            .iter()
            .map(|(name, expression)| (name.as_str(), expression.as_str())),
    )
    .context("invalid [schedules] in the configuration")
}

/// Who runs this command (recorded with runs, alias moves and pipeline runs): `PRODCAT_ACTOR`,
/// else the system user.
pub fn actor() -> String {
    prodcat_registry::actor_or_unknown(
        ["PRODCAT_ACTOR", "USER", "USERNAME"]
            .iter()
            .filter_map(|name| std::env::var(name).ok()),
    )
}
