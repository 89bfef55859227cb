//! Export to MLflow through its REST API (`api/2.0/mlflow/...`, as served by `mlflow server`
//! 2.x and 3.x), so teams that already use the MLflow UI see prodcat's runs, parameters, metric
//! curves, artifacts, model versions and aliases there.
//!
//! The export is idempotent. Each MLflow run carries the tag `prodcat.run_id`; runs already
//! exported in their final state are left alone, runs exported while still running are replaced
//! (deleted and written again). Model versions carry `prodcat.model_version` and are created once.
//! Aliases are set to match prodcat's; aliases prodcat set earlier and has since removed are
//! deleted (the list lives in the registered model's `prodcat.aliases` tag), aliases set by other
//! tools are left alone. The latest alias moves are kept in the `prodcat.alias_history` tag.
//!
//! Artifacts are uploaded when an object store is given and the server proxies artifacts
//! (`mlflow-artifacts:` run artifact URIs, the default of `mlflow server`); otherwise they are
//! listed in the run's `prodcat.artifacts` tag.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use prodcat_storage::{Database, ObjectStorage};
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use crate::registry::{alias_history, list_aliases, list_versions, AliasEvent, ModelVersion};
use crate::runs::{
    list_artifacts, list_runs, metric_history, Artifact, Run, RunFilter, RunId, RunStatus,
};
use crate::RegistryError;

/// MLflow's limits per `runs/log-batch` request.
const PARAMS_PER_BATCH: usize = 100;
const METRICS_PER_BATCH: usize = 1000;
/// MLflow's longest tag value.
const MAX_TAG_LENGTH: usize = 8000;

/// Credentials for the tracking server. `Debug` never shows the secret.
#[derive(Clone, Default)]
pub enum MlflowAuth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
}

impl fmt::Debug for MlflowAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MlflowAuth::None => f.write_str("None"),
            MlflowAuth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            MlflowAuth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl MlflowAuth {
    /// From MLflow's own variables, looked up with `variable`: `MLFLOW_TRACKING_TOKEN`, or
    /// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`.
    pub fn from_variables(variable: impl Fn(&str) -> Option<String>) -> Self {
        let variable = |name: &str| variable(name).filter(|value| !value.is_empty());
        if let Some(token) = variable("MLFLOW_TRACKING_TOKEN") {
            return MlflowAuth::Bearer(token);
        }
        match (
            variable("MLFLOW_TRACKING_USERNAME"),
            variable("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(username), Some(password)) => MlflowAuth::Basic { username, password },
            _ => MlflowAuth::None,
        }
    }
}

/// Which tracking server to export to, under which names, as whom. The binary builds it from
/// its settings; this crate reads no environment variable.
#[derive(Debug, Clone)]
pub struct MlflowSettings {
    /// `http://` or `https://` address of the tracking server (a path prefix is allowed).
    pub tracking_uri: String,
    /// The MLflow experiment holding prodcat's runs (created when missing).
    pub experiment_name: String,
    /// The registered model holding prodcat's model versions (created when missing).
    pub registered_model_name: String,
    pub auth: MlflowAuth,
    /// Per request.
    pub timeout: Duration,
}

impl MlflowSettings {
    /// The server at `tracking_uri`, with the default names (`prodcat`, `prodcat-classifier`),
    /// no credentials and a 30-second timeout per request.
    pub fn new(tracking_uri: &str) -> Self {
        Self {
            tracking_uri: tracking_uri.trim().to_string(),
            experiment_name: "prodcat".to_string(),
            registered_model_name: "prodcat-classifier".to_string(),
            auth: MlflowAuth::None,
            timeout: Duration::from_secs(30),
        }
    }

    /// The settings the usual variables describe, looked up with `variable` (the binary passes
    /// `|name| std::env::var(name).ok()`): the server in `MLFLOW_TRACKING_URI` (`None` when it
    /// is unset or blank: no mirror), the names in `PRODCAT_MLFLOW_EXPERIMENT` and
    /// `PRODCAT_MLFLOW_MODEL_NAME` when set, credentials as [`MlflowAuth::from_variables`].
    pub fn from_variables(variable: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let named = |name: &str| {
            variable(name)
                .map(|value| value.trim().to_string())
                .filter(|value| !value.is_empty())
        };
        let mut settings = Self::new(&named("MLFLOW_TRACKING_URI")?);
        if let Some(name) = named("PRODCAT_MLFLOW_EXPERIMENT") {
            settings.experiment_name = name;
        }
        if let Some(name) = named("PRODCAT_MLFLOW_MODEL_NAME") {
            settings.registered_model_name = name;
        }
        settings.auth = MlflowAuth::from_variables(&variable);
        Some(settings)
    }
}

/// What to export.
#[derive(Debug, Clone)]
pub struct MlflowExportOptions {
    /// Only these runs; `None` exports every run.
    pub runs: Option<Vec<RunId>>,
    /// Export model versions and aliases too.
    pub include_models: bool,
    /// Upload artifact bytes from this store when the server proxies artifacts.
    pub objects: Option<ObjectStorage>,
}

impl Default for MlflowExportOptions {
    fn default() -> Self {
        Self {
            runs: None,
            include_models: true,
            objects: None,
        }
    }
}

/// What an export did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MlflowExportReport {
    pub tracking_uri: String,
    pub experiment_id: String,
    pub runs_created: usize,
    /// Exported earlier while still running, written again.
    pub runs_replaced: usize,
    /// Already exported in their final state.
    pub runs_unchanged: usize,
    pub params_logged: usize,
    pub metrics_logged: usize,
    pub artifacts_uploaded: usize,
    pub versions_created: usize,
    pub versions_unchanged: usize,
    pub aliases_set: usize,
    pub aliases_removed: usize,
    /// prodcat run id -> MLflow run id, for every exported run.
    pub run_ids: BTreeMap<String, String>,
    /// prodcat model version -> MLflow version number.
    pub version_numbers: BTreeMap<String, String>,
}

/// Mirrors the given runs (none for an empty slice) plus all model versions and aliases to the
/// server of `settings`. Meant to be called after each run and each alias move; a failure should
/// be logged, not fail the caller's work.
pub async fn mirror_to_mlflow(
    database: &Database,
    settings: &MlflowSettings,
    runs: &[RunId],
    objects: Option<&ObjectStorage>,
) -> Result<MlflowExportReport, RegistryError> {
    let options = MlflowExportOptions {
        runs: Some(runs.to_vec()),
        include_models: true,
        objects: objects.cloned(),
    };
    export_to_mlflow(database, settings, &options).await
}

/// Exports runs (with parameters, metric histories, artifacts and timings) and, unless disabled,
/// model versions and aliases to the MLflow tracking server of `settings`.
pub async fn export_to_mlflow(
    database: &Database,
    settings: &MlflowSettings,
    options: &MlflowExportOptions,
) -> Result<MlflowExportReport, RegistryError> {
    let client = Client::new(settings)?;
    let mut export = Export {
        report: MlflowExportReport {
            tracking_uri: client.display_uri.clone(),
            ..MlflowExportReport::default()
        },
        client,
        database,
        settings,
        options,
    };
    let experiment_id = export.client.experiment(&settings.experiment_name).await?;
    export.report.experiment_id = experiment_id.clone();
    let mut exported = export.client.exported_runs(&experiment_id).await?;
    for run in runs_to_export(database, options.runs.as_deref()).await? {
        let mlflow_id = export.run(&experiment_id, &run, &exported).await?;
        exported.insert(
            run.id.to_string(),
            ExportedRun {
                mlflow_id: mlflow_id.clone(),
                status: run.status.as_str().to_string(),
            },
        );
        export.report.run_ids.insert(run.id.to_string(), mlflow_id);
    }
    if options.include_models {
        export.models(&exported).await?;
    }
    let report = export.report;
    tracing::info!(
        uri = %report.tracking_uri,
        created = report.runs_created,
        replaced = report.runs_replaced,
        unchanged = report.runs_unchanged,
        versions = report.versions_created,
        "exported to MLflow"
    );
    Ok(report)
}

/// The runs to export, oldest first (so MLflow lists them in the same order): every run, or
/// the `wanted` ones, which must all exist.
async fn runs_to_export(
    database: &Database,
    wanted: Option<&[RunId]>,
) -> Result<Vec<Run>, RegistryError> {
    let mut runs = list_runs(database, &RunFilter::default()).await?;
    runs.reverse();
    if let Some(wanted) = wanted {
        for id in wanted {
            if !runs.iter().any(|run| &run.id == id) {
                return Err(RegistryError::UnknownRun(id.to_string()));
            }
        }
        runs.retain(|run| wanted.contains(&run.id));
    }
    Ok(runs)
}

/// An MLflow run that carries a `prodcat.run_id` tag.
#[derive(Debug, Clone)]
struct ExportedRun {
    mlflow_id: String,
    /// The prodcat status at its export (`prodcat.status` tag).
    status: String,
}

/// An MLflow model version that carries a `prodcat.model_version` tag.
#[derive(Debug, Clone)]
struct ExportedVersion {
    number: String,
    /// Its `prodcat.status` tag.
    status: Option<String>,
}

fn tag(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": truncate(value, MAX_TAG_LENGTH) })
}

fn truncate(text: &str, limit: usize) -> &str {
    &text[..text.floor_char_boundary(limit)]
}

fn mlflow_status(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "RUNNING",
        RunStatus::Finished => "FINISHED",
        RunStatus::Failed => "FAILED",
    }
}

/// The tags of an exported run: its prodcat identity and provenance, and the list of its
/// artifacts (the bytes only travel when the server proxies artifacts).
fn run_tags(run: &Run, artifacts: &[Artifact]) -> Vec<Value> {
    let mut tags = vec![
        tag("prodcat.run_id", run.id.as_str()),
        tag("prodcat.kind", run.kind.as_str()),
        tag("prodcat.status", run.status.as_str()),
        tag("prodcat.code_version", &run.code_version),
        tag("prodcat.created_by", &run.created_by),
        tag("mlflow.user", &run.created_by),
        tag("mlflow.runName", &run.name),
        tag("mlflow.source.name", "prodcat"),
    ];
    let commit = run.code_version.trim_end_matches("-dirty");
    if commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        tags.push(tag("mlflow.source.git.commit", commit));
    }
    if let Some(dataset) = &run.dataset_version {
        tags.push(tag("prodcat.dataset_version", dataset.as_str()));
    }
    if let Some(model) = &run.model_version {
        tags.push(tag("prodcat.model_version", model.as_str()));
    }
    if let Some(error) = &run.error {
        tags.push(tag("prodcat.error", error));
    }
    if !artifacts.is_empty() {
        let listing: Vec<Value> = artifacts
            .iter()
            .map(|artifact| {
                json!({
                    "name": artifact.name,
                    "objectKey": artifact.object_key,
                    "sha256": artifact.sha256,
                    "bytes": artifact.byte_length,
                    "mediaType": artifact.media_type,
                })
            })
            .collect();
        tags.push(tag("prodcat.artifacts", &Value::Array(listing).to_string()));
    }
    tags
}

/// The tags of an exported model version.
fn version_tags(version: &ModelVersion) -> Vec<Value> {
    let mut tags = vec![
        tag("prodcat.model_version", version.id.as_str()),
        tag("prodcat.object_prefix", &version.object_prefix),
        tag("prodcat.status", version.status.as_str()),
        tag("prodcat.created_by", &version.created_by),
    ];
    if let Some(dataset) = &version.dataset_version {
        tags.push(tag("prodcat.dataset_version", dataset.as_str()));
    }
    if let Some(run) = &version.run_id {
        tags.push(tag("prodcat.run_id", run.as_str()));
    }
    for (key, value) in &version.summary_metrics {
        tags.push(tag(&format!("prodcat.metric.{key}"), &value.to_string()));
    }
    tags
}

/// The latest alias moves as JSON lines, as many as fit in one tag value.
fn alias_history_lines(events: &[AliasEvent]) -> String {
    let mut lines = String::new();
    for event in events {
        let line = json!({
            "alias": event.alias,
            "action": event.action.as_str(),
            "from": event.from_version.as_ref().map(|v| v.as_str()),
            "to": event.to_version.as_ref().map(|v| v.as_str()),
            "actor": event.actor,
            "reason": event.reason,
            "forced": event.forced,
            "atMs": event.at_ms,
        })
        .to_string();
        if lines.len() + line.len() + 1 > MAX_TAG_LENGTH {
            break;
        }
        lines.push_str(&line);
        lines.push('\n');
    }
    lines
}

/// One export in progress: where it writes, what it reads, what it did so far.
struct Export<'a> {
    client: Client,
    database: &'a Database,
    settings: &'a MlflowSettings,
    options: &'a MlflowExportOptions,
    report: MlflowExportReport,
}

impl Export<'_> {
    /// Exports one run (unless it was exported in its final state already) and returns its
    /// MLflow id.
    async fn run(
        &mut self,
        experiment_id: &str,
        run: &Run,
        exported: &BTreeMap<String, ExportedRun>,
    ) -> Result<String, RegistryError> {
        if let Some(previous) = exported.get(run.id.as_str()) {
            if previous.status == run.status.as_str() && run.status != RunStatus::Running {
                self.report.runs_unchanged += 1;
                return Ok(previous.mlflow_id.clone());
            }
            self.client
                .call(
                    Method::POST,
                    "runs/delete",
                    &[],
                    Some(&json!({ "run_id": previous.mlflow_id })),
                )
                .await?;
            self.report.runs_replaced += 1;
        } else {
            self.report.runs_created += 1;
        }
        let artifacts = list_artifacts(self.database, &run.id).await?;
        let created = self
            .client
            .call(
                Method::POST,
                "runs/create",
                &[],
                Some(&json!({
                    "experiment_id": experiment_id,
                    "run_name": run.name,
                    "start_time": run.started_at_ms,
                    "tags": run_tags(run, &artifacts),
                })),
            )
            .await?;
        let info = &created["run"]["info"];
        let mlflow_id = info["run_id"]
            .as_str()
            .ok_or_else(|| {
                self.client
                    .unexpected("runs/create", "no run_id in the answer")
            })?
            .to_string();
        let artifact_uri = info["artifact_uri"].as_str().unwrap_or_default();
        self.log_run_data(run, &mlflow_id).await?;
        self.upload_artifacts(&artifacts, artifact_uri).await?;
        if run.status != RunStatus::Running {
            self.client
                .call(
                    Method::POST,
                    "runs/update",
                    &[],
                    Some(&json!({
                        "run_id": mlflow_id,
                        "status": mlflow_status(run.status),
                        "end_time": run.ended_at_ms.unwrap_or(run.started_at_ms),
                    })),
                )
                .await?;
        }
        Ok(mlflow_id)
    }

    /// Logs a run's parameters and every value of its metrics.
    async fn log_run_data(&mut self, run: &Run, mlflow_id: &str) -> Result<(), RegistryError> {
        let params: Vec<Value> = run
            .parameters
            .iter()
            .map(|(key, value)| json!({ "key": key, "value": value }))
            .collect();
        self.report.params_logged += self
            .client
            .log_batch(mlflow_id, "params", &params, PARAMS_PER_BATCH)
            .await?;
        let mut metrics: Vec<Value> = Vec::new();
        for (key, points) in metric_history(self.database, &run.id).await? {
            for point in points {
                metrics.push(json!({
                    "key": key,
                    "value": point.value,
                    "timestamp": point.timestamp_ms,
                    "step": point.step,
                }));
            }
        }
        self.report.metrics_logged += self
            .client
            .log_batch(mlflow_id, "metrics", &metrics, METRICS_PER_BATCH)
            .await?;
        Ok(())
    }

    /// Uploads the artifacts' bytes when an object store is given and the server proxies
    /// artifacts (`mlflow-artifacts:` URIs).
    async fn upload_artifacts(
        &mut self,
        artifacts: &[Artifact],
        artifact_uri: &str,
    ) -> Result<(), RegistryError> {
        let (Some(objects), Some(root)) = (
            &self.options.objects,
            artifact_uri.strip_prefix("mlflow-artifacts:"),
        ) else {
            return Ok(());
        };
        let root = root.trim_start_matches('/').trim_end_matches('/');
        for artifact in artifacts {
            let bytes = objects.get(&artifact.object_key).await?;
            self.client
                .upload(&format!("{root}/{}", artifact.name), bytes)
                .await?;
            self.report.artifacts_uploaded += 1;
        }
        Ok(())
    }

    /// Exports model versions and aliases, and the alias history tag.
    async fn models(
        &mut self,
        exported: &BTreeMap<String, ExportedRun>,
    ) -> Result<(), RegistryError> {
        let name = self.settings.registered_model_name.as_str();
        let registered = self.client.registered_model(name).await?;
        let mut numbers = self.client.exported_versions(name).await?;
        self.versions(&mut numbers, exported).await?;
        self.aliases(&registered, &numbers).await?;
        let history = alias_history_lines(&alias_history(self.database, None).await?);
        if !history.is_empty() {
            self.client
                .call(
                    Method::POST,
                    "registered-models/set-tag",
                    &[],
                    Some(&json!({
                        "name": name, "key": "prodcat.alias_history", "value": history,
                    })),
                )
                .await?;
        }
        Ok(())
    }

    /// Creates the model versions MLflow does not have yet (oldest first, so MLflow's numbers
    /// follow prodcat's order) and updates the status tag of the others; `numbers` gains the
    /// new versions.
    async fn versions(
        &mut self,
        numbers: &mut BTreeMap<String, ExportedVersion>,
        exported: &BTreeMap<String, ExportedRun>,
    ) -> Result<(), RegistryError> {
        let name = self.settings.registered_model_name.as_str();
        let mut versions: Vec<ModelVersion> = list_versions(self.database).await?;
        versions.reverse();
        for version in &versions {
            let id = version.id.as_str();
            if let Some(existing) = numbers.get(id) {
                if existing.status.as_deref() != Some(version.status.as_str()) {
                    self.client
                        .call(
                            Method::POST,
                            "model-versions/set-tag",
                            &[],
                            Some(&json!({
                                "name": name, "version": existing.number,
                                "key": "prodcat.status", "value": version.status.as_str(),
                            })),
                        )
                        .await?;
                }
                self.report.versions_unchanged += 1;
                self.report
                    .version_numbers
                    .insert(id.to_string(), existing.number.clone());
                continue;
            }
            let number = self.create_version(version, exported).await?;
            self.report.versions_created += 1;
            self.report
                .version_numbers
                .insert(id.to_string(), number.clone());
            numbers.insert(
                id.to_string(),
                ExportedVersion {
                    number,
                    status: Some(version.status.to_string()),
                },
            );
        }
        Ok(())
    }

    /// Creates one model version, linked to its exported run when there is one; returns its
    /// MLflow number.
    async fn create_version(
        &self,
        version: &ModelVersion,
        exported: &BTreeMap<String, ExportedRun>,
    ) -> Result<String, RegistryError> {
        let mlflow_run = version
            .run_id
            .as_ref()
            .and_then(|run| exported.get(run.as_str()))
            .map(|run| run.mlflow_id.clone());
        let source = match &mlflow_run {
            Some(run) => format!("runs:/{run}/model"),
            None => format!("prodcat:/{}", version.object_prefix.trim_start_matches('/')),
        };
        let mut body = json!({
            "name": self.settings.registered_model_name,
            "source": source,
            "tags": version_tags(version),
            "description": version.note,
        });
        if let Some(run) = &mlflow_run {
            body["run_id"] = json!(run);
        }
        let created = self
            .client
            .call(Method::POST, "model-versions/create", &[], Some(&body))
            .await?;
        created["model_version"]["version"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                self.client
                    .unexpected("model-versions/create", "no version in the answer")
            })
    }

    /// Sets prodcat's aliases, deletes those prodcat set before and no longer has (aliases set
    /// by other tools are left alone), and records the managed list.
    async fn aliases(
        &mut self,
        registered: &Value,
        numbers: &BTreeMap<String, ExportedVersion>,
    ) -> Result<(), RegistryError> {
        let name = self.settings.registered_model_name.as_str();
        let current: BTreeMap<String, String> = registered["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|alias| {
                Some((
                    alias["alias"].as_str()?.to_string(),
                    alias["version"].as_str()?.to_string(),
                ))
            })
            .collect();
        let previously_managed: Vec<String> = tags_of(registered)
            .get("prodcat.aliases")
            .map(|list| {
                list.split(',')
                    .filter(|alias| !alias.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let aliases = list_aliases(self.database).await?;
        for alias in &aliases {
            let Some(version) = numbers.get(alias.version.as_str()) else {
                continue;
            };
            if current.get(&alias.alias) != Some(&version.number) {
                self.client
                    .call(
                        Method::POST,
                        "registered-models/alias",
                        &[],
                        Some(&json!({
                            "name": name, "alias": alias.alias, "version": version.number,
                        })),
                    )
                    .await?;
                self.report.aliases_set += 1;
            }
        }
        for alias in &previously_managed {
            if current.contains_key(alias) && !aliases.iter().any(|ours| &ours.alias == alias) {
                self.client
                    .call(
                        Method::DELETE,
                        "registered-models/alias",
                        &[],
                        Some(&json!({ "name": name, "alias": alias })),
                    )
                    .await?;
                self.report.aliases_removed += 1;
            }
        }
        let managed = aliases
            .iter()
            .map(|alias| alias.alias.as_str())
            .collect::<Vec<_>>()
            .join(",");
        self.client
            .call(
                Method::POST,
                "registered-models/set-tag",
                &[],
                Some(&json!({ "name": name, "key": "prodcat.aliases", "value": managed })),
            )
            .await?;
        Ok(())
    }
}

/// `{key: value}` of an MLflow entity's `tags` array (runs keep them under `data`).
fn tags_of(entity: &Value) -> BTreeMap<String, String> {
    entity["tags"]
        .as_array()
        .or_else(|| entity["data"]["tags"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|tag| {
            Some((
                tag["key"].as_str()?.to_string(),
                tag["value"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// The token of the next page of a search answer, if there is one.
fn next_page_token(page: &Value) -> Option<String> {
    page["next_page_token"]
        .as_str()
        .filter(|token| !token.is_empty())
        .map(str::to_string)
}

/// A thin client for MLflow's REST API.
struct Client {
    http: reqwest::Client,
    base: url::Url,
    display_uri: String,
    auth: MlflowAuth,
}

impl Client {
    fn new(settings: &MlflowSettings) -> Result<Self, RegistryError> {
        let trimmed = settings.tracking_uri.trim();
        let invalid = |reason: String| RegistryError::InvalidTrackingUri {
            uri: trimmed.to_string(),
            reason,
        };
        let mut base = url::Url::parse(trimmed).map_err(|error| invalid(error.to_string()))?;
        if base.scheme() != "http" && base.scheme() != "https" {
            return Err(invalid(
                "only http:// and https:// tracking servers can be exported to".to_string(),
            ));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid(
                "put credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, not in the URI"
                    .to_string(),
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|error| invalid(format!("could not build an HTTP client: {error}")))?;
        Ok(Self {
            http,
            display_uri: base.as_str().trim_end_matches('/').to_string(),
            base,
            auth: settings.auth.clone(),
        })
    }

    fn unexpected(&self, endpoint: &str, message: &str) -> RegistryError {
        RegistryError::MlflowAnswer {
            endpoint: endpoint.to_string(),
            message: format!("unexpected answer from {}: {message}", self.display_uri),
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, RegistryError> {
        let url = self
            .base
            .join(path)
            .map_err(|error| RegistryError::MlflowRequest {
                endpoint: path.to_string(),
                message: error.to_string(),
            })?;
        let builder = self.http.request(method, url);
        Ok(match &self.auth {
            MlflowAuth::None => builder,
            MlflowAuth::Basic { username, password } => {
                builder.basic_auth(username, Some(password))
            }
            MlflowAuth::Bearer(token) => builder.bearer_auth(token),
        })
    }

    /// Calls `api/2.0/mlflow/<endpoint>`; a non-success answer becomes an error carrying MLflow's
    /// `error_code: message`.
    async fn call(
        &self,
        method: Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, RegistryError> {
        let mut builder = self
            .request(method, &format!("api/2.0/mlflow/{endpoint}"))?
            .query(query);
        if let Some(body) = body {
            builder = builder.json(body);
        }
        let response = self.send(builder, endpoint).await?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|error| RegistryError::MlflowRequest {
                endpoint: endpoint.to_string(),
                message: error.to_string(),
            })?;
        if !status.is_success() {
            let message = match serde_json::from_str::<Value>(&text) {
                Ok(error) if error["error_code"].is_string() => format!(
                    "{}: {}",
                    error["error_code"].as_str().unwrap_or_default(),
                    error["message"].as_str().unwrap_or_default()
                ),
                _ => truncate(text.trim(), 300).to_string(),
            };
            return Err(RegistryError::MlflowStatus {
                endpoint: endpoint.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        if text.trim().is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_str(&text)
            .map_err(|error| self.unexpected(endpoint, &format!("the answer is not JSON: {error}")))
    }

    /// Sends a request; a server that cannot be reached is an `MlflowRequest` error.
    async fn send(
        &self,
        builder: reqwest::RequestBuilder,
        endpoint: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        builder
            .send()
            .await
            .map_err(|error| RegistryError::MlflowRequest {
                endpoint: endpoint.to_string(),
                message: format!("{} unreachable: {error}", self.display_uri),
            })
    }

    /// Uploads bytes through the server's artifact proxy (`mlflow-artifacts`).
    async fn upload(&self, path: &str, bytes: bytes::Bytes) -> Result<(), RegistryError> {
        let endpoint = "mlflow-artifacts/artifacts";
        let encoded: Vec<String> = path
            .split('/')
            .map(|part| url::form_urlencoded::byte_serialize(part.as_bytes()).collect())
            .collect();
        let builder = self
            .request(
                Method::PUT,
                &format!("api/2.0/{endpoint}/{}", encoded.join("/")),
            )?
            .body(bytes);
        let response = self.send(builder, endpoint).await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(RegistryError::MlflowStatus {
                endpoint: endpoint.to_string(),
                status: status.as_u16(),
                message: truncate(text.trim(), 300).to_string(),
            });
        }
        Ok(())
    }

    /// Logs `items` (`params` or `metrics`) to a run in batches of at most `per_batch`;
    /// returns how many were logged.
    async fn log_batch(
        &self,
        mlflow_id: &str,
        field: &str,
        items: &[Value],
        per_batch: usize,
    ) -> Result<usize, RegistryError> {
        for batch in items.chunks(per_batch) {
            let mut body = json!({ "run_id": mlflow_id });
            body[field] = json!(batch);
            self.call(Method::POST, "runs/log-batch", &[], Some(&body))
                .await?;
        }
        Ok(items.len())
    }

    /// `GET get` with `query`; when MLflow answers that the resource does not exist, `POST
    /// create` with `body` instead. Returns whether it was created, and the answer.
    async fn get_or_create(
        &self,
        (get, query): (&str, &[(&str, &str)]),
        (create, body): (&str, &Value),
    ) -> Result<(bool, Value), RegistryError> {
        match self.call(Method::GET, get, query, None).await {
            Ok(found) => Ok((false, found)),
            Err(RegistryError::MlflowStatus { message, .. })
                if message.starts_with("RESOURCE_DOES_NOT_EXIST") =>
            {
                Ok((
                    true,
                    self.call(Method::POST, create, &[], Some(body)).await?,
                ))
            }
            Err(error) => Err(error),
        }
    }

    /// The id of the experiment `name`, created when missing.
    async fn experiment(&self, name: &str) -> Result<String, RegistryError> {
        let (created, answer) = self
            .get_or_create(
                ("experiments/get-by-name", &[("experiment_name", name)]),
                (
                    "experiments/create",
                    &json!({ "name": name, "tags": [tag("prodcat.managed", "true")] }),
                ),
            )
            .await?;
        if created {
            return answer["experiment_id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.unexpected("experiments/create", "no experiment_id"));
        }
        let experiment = &answer["experiment"];
        if experiment["lifecycle_stage"].as_str() == Some("deleted") {
            return Err(RegistryError::MlflowAnswer {
                endpoint: "experiments/get-by-name".to_string(),
                message: format!(
                    "the MLflow experiment {name:?} is deleted; restore it or export to another experiment name"
                ),
            });
        }
        experiment["experiment_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.unexpected("experiments/get-by-name", "no experiment_id"))
    }

    /// Runs of the experiment that carry a `prodcat.run_id` tag (active ones only).
    async fn exported_runs(
        &self,
        experiment_id: &str,
    ) -> Result<BTreeMap<String, ExportedRun>, RegistryError> {
        let mut exported = BTreeMap::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut body = json!({
                "experiment_ids": [experiment_id],
                "filter": "tags.`prodcat.run_id` LIKE 'run-%'",
                "run_view_type": "ACTIVE_ONLY",
                "max_results": 1000,
            });
            if let Some(token) = &page_token {
                body["page_token"] = json!(token);
            }
            let page = self
                .call(Method::POST, "runs/search", &[], Some(&body))
                .await?;
            for run in page["runs"].as_array().into_iter().flatten() {
                let tags = tags_of(run);
                if let (Some(ours), Some(mlflow_id)) =
                    (tags.get("prodcat.run_id"), run["info"]["run_id"].as_str())
                {
                    exported.insert(
                        ours.clone(),
                        ExportedRun {
                            mlflow_id: mlflow_id.to_string(),
                            status: tags.get("prodcat.status").cloned().unwrap_or_default(),
                        },
                    );
                }
            }
            page_token = next_page_token(&page);
            if page_token.is_none() {
                break;
            }
        }
        Ok(exported)
    }

    /// The versions of the registered model `name` that carry a `prodcat.model_version` tag,
    /// by prodcat version id.
    async fn exported_versions(
        &self,
        name: &str,
    ) -> Result<BTreeMap<String, ExportedVersion>, RegistryError> {
        let mut versions = BTreeMap::new();
        let filter = format!("name='{}'", name.replace('\'', "\\'"));
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![("filter", filter.as_str()), ("max_results", "200")];
            if let Some(token) = &page_token {
                query.push(("page_token", token.as_str()));
            }
            let page = self
                .call(Method::GET, "model-versions/search", &query, None)
                .await?;
            for version in page["model_versions"].as_array().into_iter().flatten() {
                let tags = tags_of(version);
                if let (Some(ours), Some(number)) = (
                    tags.get("prodcat.model_version"),
                    version["version"].as_str(),
                ) {
                    versions.insert(
                        ours.clone(),
                        ExportedVersion {
                            number: number.to_string(),
                            status: tags.get("prodcat.status").cloned(),
                        },
                    );
                }
            }
            page_token = next_page_token(&page);
            if page_token.is_none() {
                break;
            }
        }
        Ok(versions)
    }

    /// The registered model `name` (created when missing), as MLflow describes it.
    async fn registered_model(&self, name: &str) -> Result<Value, RegistryError> {
        let (_, answer) = self
            .get_or_create(
                ("registered-models/get", &[("name", name)]),
                (
                    "registered-models/create",
                    &json!({
                        "name": name,
                        "description": "Product category classifiers registered by prodcat.",
                        "tags": [tag("prodcat.managed", "true")],
                    }),
                ),
            )
            .await?;
        Ok(answer["registered_model"].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_uris_are_checked() {
        let client = |uri: &str| Client::new(&MlflowSettings::new(uri));
        assert!(client("http://127.0.0.1:5000").is_ok());
        let prefixed = client("https://mlflow.example.com/prefix").unwrap();
        assert_eq!(prefixed.base.as_str(), "https://mlflow.example.com/prefix/");
        assert!(client("file:///tmp/mlruns").is_err());
        assert!(client("databricks").is_err());
        assert!(client("http://user:secret@host").is_err());
    }

    #[test]
    fn secrets_are_not_shown() {
        let auth = MlflowAuth::Basic {
            username: "me".to_string(),
            password: "hunter2".to_string(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
        assert!(!format!("{:?}", MlflowAuth::Bearer("token123".to_string())).contains("token123"));
    }

    #[test]
    fn settings_come_from_the_variables_given() {
        assert!(MlflowSettings::from_variables(|_| None).is_none());
        assert!(MlflowSettings::from_variables(|_| Some(" ".to_string())).is_none());
        let variables = BTreeMap::from([
            ("MLFLOW_TRACKING_URI", " http://127.0.0.1:5000 "),
            ("PRODCAT_MLFLOW_MODEL_NAME", "classifier-b"),
            ("MLFLOW_TRACKING_USERNAME", "me"),
            ("MLFLOW_TRACKING_PASSWORD", "hunter2"),
        ]);
        let settings =
            MlflowSettings::from_variables(|name| variables.get(name).map(|v| v.to_string()))
                .unwrap();
        assert_eq!(settings.tracking_uri, "http://127.0.0.1:5000");
        assert_eq!(settings.experiment_name, "prodcat");
        assert_eq!(settings.registered_model_name, "classifier-b");
        assert!(matches!(settings.auth, MlflowAuth::Basic { .. }));
        let token = MlflowAuth::from_variables(|name| {
            (name == "MLFLOW_TRACKING_TOKEN").then(|| "t".to_string())
        });
        assert!(matches!(token, MlflowAuth::Bearer(_)));
    }

    #[test]
    fn tags_are_read_from_entities_and_runs() {
        let version = json!({ "tags": [{ "key": "a", "value": "1" }] });
        assert_eq!(tags_of(&version)["a"], "1");
        let run = json!({ "data": { "tags": [{ "key": "b", "value": "2" }] } });
        assert_eq!(tags_of(&run)["b"], "2");
        assert_eq!(truncate("ééé", 3), "é");
    }
}
