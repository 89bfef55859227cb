//! One settings struct, layered: built-in defaults, then an optional TOML config file, then
//! `PRODCAT_*` environment variables, then command-line flags (clap merges the last two).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

/// Options every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML). Defaults to ./prodcat.toml when that file exists.
    #[arg(long, env = "PRODCAT_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Folder for the embedded default: the SQLite file and the local object store live here.
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

    /// Folder holding the pretrained model files fetched by scripts/setup (default: ./models).
    #[arg(long, env = "PRODCAT_MODEL_DIR", global = true, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,

    /// Log filter, e.g. info, debug, prodcat_dataset=trace (default: warn; RUST_LOG also works).
    #[arg(long, env = "PRODCAT_LOG", global = true, value_name = "FILTER")]
    pub log: Option<String>,

    /// Webhook for drift and retraining notifications (Slack-compatible JSON).
    #[arg(
        long,
        env = "PRODCAT_WEBHOOK_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub webhook_url: Option<String>,
}

/// Values a configuration file may set (all optional; unknown keys are refused).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSettings {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub object_store_url: Option<String>,
    pub model_dir: Option<PathBuf>,
    pub log: Option<String>,
    pub webhook_url: Option<String>,
    /// Pipeline schedules: pipeline name = cron expression (UTC), run by `prodcat worker`.
    pub schedules: Option<std::collections::BTreeMap<String, String>>,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub object_store_url: String,
    pub model_dir: PathBuf,
    pub log: String,
    /// Where notifications go (never printed: the URL may hold a secret).
    pub webhook_url: Option<String>,
    /// Pipeline schedules from the configuration file (`[schedules]`).
    pub schedules: std::collections::BTreeMap<String, String>,
}

impl Settings {
    pub fn resolve(global: &GlobalArgs) -> anyhow::Result<Self> {
        let file = match &global.config {
            Some(path) => Some(read_file(path)?),
            None => {
                let default = Path::new("prodcat.toml");
                if default.is_file() {
                    Some(read_file(default)?)
                } else {
                    None
                }
            }
        }
        .unwrap_or_default();
        let data_dir = global
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("prodcat-data"));
        let database_url = global
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("prodcat.db").display()));
        let object_store_url = global
            .object_store_url
            .clone()
            .or(file.object_store_url)
            .unwrap_or_else(|| data_dir.join("objects").display().to_string());
        let model_dir = global
            .model_dir
            .clone()
            .or(file.model_dir)
            .unwrap_or_else(|| PathBuf::from("models"));
        let log = global
            .log
            .clone()
            .or(file.log)
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| "warn".to_string());
        let webhook_url = global
            .webhook_url
            .clone()
            .or(file.webhook_url)
            .filter(|url| !url.trim().is_empty());
        let schedules = file.schedules.unwrap_or_default();
        Ok(Self {
            data_dir,
            database_url,
            object_store_url,
            model_dir,
            log,
            webhook_url,
            schedules,
        })
    }

    /// The configured schedules, parsed (an unknown pipeline or a bad cron expression is an
    /// error naming the schedule).
    pub fn schedules(&self) -> anyhow::Result<Vec<prodcat_pipelines::Schedule>> {
        prodcat_pipelines::parse_schedules(
            self.schedules
                .iter()
                .map(|(name, expression)| (name.as_str(), expression.as_str())),
        )
        .context("invalid [schedules] in the configuration")
    }

    pub async fn open_database(&self) -> anyhow::Result<prodcat_storage::Database> {
        prodcat_storage::Database::connect(&self.database_url)
            .await
            .with_context(|| "failed to open the metadata database".to_string())
    }

    pub fn open_objects(&self) -> anyhow::Result<prodcat_storage::ObjectStorage> {
        prodcat_storage::ObjectStorage::open(&self.object_store_url)
            .with_context(|| "failed to open the object store".to_string())
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}
