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

use crate::registry::{alias_history, list_aliases, list_versions, ModelVersion};
use crate::runs::{list_artifacts, list_runs, metric_history, Run, RunFilter, RunId, RunStatus};
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
    /// From MLflow's own variables: `MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and
    /// `MLFLOW_TRACKING_PASSWORD`.
    pub fn from_environment() -> Self {
        let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
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

/// What to export and how.
#[derive(Debug, Clone)]
pub struct MlflowExportOptions {
    /// The MLflow experiment holding prodcat's runs (created when missing).
    pub experiment_name: String,
    /// The registered model holding prodcat's model versions (created when missing).
    pub registered_model_name: String,
    /// Only these runs; `None` exports every run.
    pub runs: Option<Vec<RunId>>,
    /// Export model versions and aliases too.
    pub include_models: bool,
    /// Upload artifact bytes from this store when the server proxies artifacts.
    pub objects: Option<ObjectStorage>,
    pub auth: MlflowAuth,
    /// Per request.
    pub timeout: Duration,
}

impl Default for MlflowExportOptions {
    fn default() -> Self {
        Self {
            experiment_name: "prodcat".to_string(),
            registered_model_name: "prodcat-classifier".to_string(),
            runs: None,
            include_models: true,
            objects: None,
            auth: MlflowAuth::None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl MlflowExportOptions {
    /// Defaults, with credentials from MLflow's variables and the names from
    /// `PRODCAT_MLFLOW_EXPERIMENT` and `PRODCAT_MLFLOW_MODEL_NAME` when set.
    pub fn from_environment() -> Self {
        let mut options = Self {
            auth: MlflowAuth::from_environment(),
            ..Self::default()
        };
        if let Ok(name) = std::env::var("PRODCAT_MLFLOW_EXPERIMENT") {
            if !name.trim().is_empty() {
                options.experiment_name = name.trim().to_string();
            }
        }
        if let Ok(name) = std::env::var("PRODCAT_MLFLOW_MODEL_NAME") {
            if !name.trim().is_empty() {
                options.registered_model_name = name.trim().to_string();
            }
        }
        options
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

/// Mirrors to the server in `MLFLOW_TRACKING_URI` when that variable is set (else `None`): the
/// given runs (none for an empty slice) plus all model versions and aliases. Meant to be called
/// after each run and each alias move; a failure should be logged, not fail the caller's work.
pub async fn mirror_from_environment(
    database: &Database,
    runs: &[RunId],
    objects: Option<&ObjectStorage>,
) -> Option<Result<MlflowExportReport, RegistryError>> {
    let uri = std::env::var("MLFLOW_TRACKING_URI").ok()?;
    if uri.trim().is_empty() {
        return None;
    }
    let options = MlflowExportOptions {
        runs: Some(runs.to_vec()),
        objects: objects.cloned(),
        ..MlflowExportOptions::from_environment()
    };
    Some(export_to_mlflow(database, &uri, &options).await)
}

/// Exports runs (with parameters, metric histories, artifacts and timings) and, unless disabled,
/// model versions and aliases to the MLflow tracking server at `tracking_uri`.
pub async fn export_to_mlflow(
    database: &Database,
    tracking_uri: &str,
    options: &MlflowExportOptions,
) -> Result<MlflowExportReport, RegistryError> {
    let client = Client::new(tracking_uri, options)?;
    let mut report = MlflowExportReport {
        tracking_uri: client.display_uri.clone(),
        ..MlflowExportReport::default()
    };
    let experiment_id = client.experiment(&options.experiment_name).await?;
    report.experiment_id = experiment_id.clone();
    let mut exported = client.exported_runs(&experiment_id).await?;

    let mut runs = list_runs(database, &RunFilter::default()).await?;
    runs.reverse(); // oldest first, so MLflow lists them in the same order
    if let Some(wanted) = &options.runs {
        for id in wanted {
            if !runs.iter().any(|run| &run.id == id) {
                return Err(RegistryError::UnknownRun(id.to_string()));
            }
        }
        runs.retain(|run| wanted.contains(&run.id));
    }
    for run in &runs {
        let mlflow_id = export_run(
            &client,
            database,
            options,
            &experiment_id,
            run,
            &exported,
            &mut report,
        )
        .await?;
        exported.insert(
            run.id.to_string(),
            ExportedRun {
                mlflow_id: mlflow_id.clone(),
                status: run.status.as_str().to_string(),
            },
        );
        report.run_ids.insert(run.id.to_string(), mlflow_id);
    }
    if options.include_models {
        export_models(&client, database, options, &exported, &mut report).await?;
    }
    tracing::info!(
        uri = %client.display_uri,
        created = report.runs_created,
        replaced = report.runs_replaced,
        unchanged = report.runs_unchanged,
        versions = report.versions_created,
        "exported to MLflow"
    );
    Ok(report)
}

/// An MLflow run that carries a `prodcat.run_id` tag.
#[derive(Debug, Clone)]
struct ExportedRun {
    mlflow_id: String,
    /// The prodcat status at its export (`prodcat.status` tag).
    status: String,
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

async fn export_run(
    client: &Client,
    database: &Database,
    options: &MlflowExportOptions,
    experiment_id: &str,
    run: &Run,
    exported: &BTreeMap<String, ExportedRun>,
    report: &mut MlflowExportReport,
) -> Result<String, RegistryError> {
    if let Some(previous) = exported.get(run.id.as_str()) {
        if previous.status == run.status.as_str() && run.status != RunStatus::Running {
            report.runs_unchanged += 1;
            return Ok(previous.mlflow_id.clone());
        }
        client
            .call(
                Method::POST,
                "runs/delete",
                &[],
                Some(&json!({ "run_id": previous.mlflow_id })),
            )
            .await?;
        report.runs_replaced += 1;
    } else {
        report.runs_created += 1;
    }

    let artifacts = list_artifacts(database, &run.id).await?;
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
    let created = client
        .call(
            Method::POST,
            "runs/create",
            &[],
            Some(&json!({
                "experiment_id": experiment_id,
                "run_name": run.name,
                "start_time": run.started_at_ms,
                "tags": tags,
            })),
        )
        .await?;
    let info = &created["run"]["info"];
    let mlflow_id = info["run_id"]
        .as_str()
        .ok_or_else(|| client.unexpected("runs/create", "no run_id in the answer"))?
        .to_string();
    let artifact_uri = info["artifact_uri"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let params: Vec<Value> = run
        .parameters
        .iter()
        .map(|(key, value)| json!({ "key": key, "value": value }))
        .collect();
    for batch in params.chunks(PARAMS_PER_BATCH) {
        client
            .call(
                Method::POST,
                "runs/log-batch",
                &[],
                Some(&json!({ "run_id": mlflow_id, "params": batch })),
            )
            .await?;
        report.params_logged += batch.len();
    }
    let mut metrics: Vec<Value> = Vec::new();
    for (key, points) in metric_history(database, &run.id).await? {
        for point in points {
            metrics.push(json!({
                "key": key,
                "value": point.value,
                "timestamp": point.timestamp_ms,
                "step": point.step,
            }));
        }
    }
    for batch in metrics.chunks(METRICS_PER_BATCH) {
        client
            .call(
                Method::POST,
                "runs/log-batch",
                &[],
                Some(&json!({ "run_id": mlflow_id, "metrics": batch })),
            )
            .await?;
        report.metrics_logged += batch.len();
    }
    if let (Some(objects), Some(root)) = (
        &options.objects,
        artifact_uri.strip_prefix("mlflow-artifacts:"),
    ) {
        let root = root.trim_start_matches('/').trim_end_matches('/');
        for artifact in &artifacts {
            let bytes = objects.get(&artifact.object_key).await?;
            client
                .upload(&format!("{root}/{}", artifact.name), bytes)
                .await?;
            report.artifacts_uploaded += 1;
        }
    }
    if run.status != RunStatus::Running {
        client
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

async fn export_models(
    client: &Client,
    database: &Database,
    options: &MlflowExportOptions,
    exported: &BTreeMap<String, ExportedRun>,
    report: &mut MlflowExportReport,
) -> Result<(), RegistryError> {
    let name = options.registered_model_name.as_str();
    let registered = client.registered_model(name).await?;
    // MLflow version number by prodcat version id, and each version's prodcat.status tag.
    let mut numbers: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    let mut page_token: Option<String> = None;
    loop {
        let filter = format!("name='{}'", name.replace('\'', "\\'"));
        let mut query = vec![("filter", filter), ("max_results", "200".to_string())];
        if let Some(token) = &page_token {
            query.push(("page_token", token.clone()));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = client
            .call(Method::GET, "model-versions/search", &query, None)
            .await?;
        for version in page["model_versions"].as_array().into_iter().flatten() {
            let tags = tags_of(version);
            if let (Some(ours), Some(number)) = (
                tags.get("prodcat.model_version"),
                version["version"].as_str(),
            ) {
                numbers.insert(
                    ours.clone(),
                    (number.to_string(), tags.get("prodcat.status").cloned()),
                );
            }
        }
        page_token = page["next_page_token"]
            .as_str()
            .filter(|token| !token.is_empty())
            .map(str::to_string);
        if page_token.is_none() {
            break;
        }
    }

    let mut versions: Vec<ModelVersion> = list_versions(database).await?;
    versions.reverse(); // oldest first: MLflow numbers follow prodcat's order
    for version in &versions {
        let id = version.id.as_str();
        if let Some((number, status)) = numbers.get(id) {
            if status.as_deref() != Some(version.status.as_str()) {
                client
                    .call(
                        Method::POST,
                        "model-versions/set-tag",
                        &[],
                        Some(&json!({
                            "name": name, "version": number,
                            "key": "prodcat.status", "value": version.status.as_str(),
                        })),
                    )
                    .await?;
            }
            report.versions_unchanged += 1;
            report
                .version_numbers
                .insert(id.to_string(), number.clone());
            continue;
        }
        let mlflow_run = version
            .run_id
            .as_ref()
            .and_then(|run| exported.get(run.as_str()))
            .map(|run| run.mlflow_id.clone());
        let source = match &mlflow_run {
            Some(run) => format!("runs:/{run}/model"),
            None => format!("prodcat:/{}", version.object_prefix.trim_start_matches('/')),
        };
        let mut tags = vec![
            tag("prodcat.model_version", id),
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
        let mut body = json!({
            "name": name,
            "source": source,
            "tags": tags,
            "description": version.note,
        });
        if let Some(run) = &mlflow_run {
            body["run_id"] = json!(run);
        }
        let created = client
            .call(Method::POST, "model-versions/create", &[], Some(&body))
            .await?;
        let number = created["model_version"]["version"]
            .as_str()
            .ok_or_else(|| client.unexpected("model-versions/create", "no version in the answer"))?
            .to_string();
        report.versions_created += 1;
        report
            .version_numbers
            .insert(id.to_string(), number.clone());
        numbers.insert(id.to_string(), (number, Some(version.status.to_string())));
    }

    // Aliases: set ours, delete those we set before and no longer have.
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
    let registered_tags = tags_of(&registered);
    let previously_managed: Vec<String> = registered_tags
        .get("prodcat.aliases")
        .map(|list| {
            list.split(',')
                .filter(|alias| !alias.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let aliases = list_aliases(database).await?;
    for alias in &aliases {
        let Some((number, _)) = numbers.get(alias.version.as_str()) else {
            continue;
        };
        if current.get(&alias.alias) != Some(number) {
            client
                .call(
                    Method::POST,
                    "registered-models/alias",
                    &[],
                    Some(&json!({ "name": name, "alias": alias.alias, "version": number })),
                )
                .await?;
            report.aliases_set += 1;
        }
    }
    for alias in &previously_managed {
        if current.contains_key(alias) && !aliases.iter().any(|ours| &ours.alias == alias) {
            client
                .call(
                    Method::DELETE,
                    "registered-models/alias",
                    &[],
                    Some(&json!({ "name": name, "alias": alias })),
                )
                .await?;
            report.aliases_removed += 1;
        }
    }
    let managed = aliases
        .iter()
        .map(|alias| alias.alias.as_str())
        .collect::<Vec<_>>()
        .join(",");
    client
        .call(
            Method::POST,
            "registered-models/set-tag",
            &[],
            Some(&json!({ "name": name, "key": "prodcat.aliases", "value": managed })),
        )
        .await?;
    let mut history_lines = String::new();
    for event in alias_history(database, None).await? {
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
        if history_lines.len() + line.len() + 1 > MAX_TAG_LENGTH {
            break;
        }
        history_lines.push_str(&line);
        history_lines.push('\n');
    }
    if !history_lines.is_empty() {
        client
            .call(
                Method::POST,
                "registered-models/set-tag",
                &[],
                Some(&json!({
                    "name": name, "key": "prodcat.alias_history", "value": history_lines,
                })),
            )
            .await?;
    }
    Ok(())
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

/// A thin client for MLflow's REST API.
struct Client {
    http: reqwest::Client,
    base: url::Url,
    display_uri: String,
    auth: MlflowAuth,
}

impl Client {
    fn new(tracking_uri: &str, options: &MlflowExportOptions) -> Result<Self, RegistryError> {
        let trimmed = tracking_uri.trim();
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
            .timeout(options.timeout)
            .build()
            .map_err(|error| invalid(format!("could not build an HTTP client: {error}")))?;
        Ok(Self {
            http,
            display_uri: base.as_str().trim_end_matches('/').to_string(),
            base,
            auth: options.auth.clone(),
        })
    }

    fn unexpected(&self, endpoint: &str, message: &str) -> RegistryError {
        RegistryError::MlflowRequest {
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
        let response = builder
            .send()
            .await
            .map_err(|error| RegistryError::MlflowRequest {
                endpoint: endpoint.to_string(),
                message: format!("{} unreachable: {error}", self.display_uri),
            })?;
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

    /// Uploads bytes through the server's artifact proxy (`mlflow-artifacts`).
    async fn upload(&self, path: &str, bytes: bytes::Bytes) -> Result<(), RegistryError> {
        let endpoint = "mlflow-artifacts/artifacts";
        let encoded: Vec<String> = path
            .split('/')
            .map(|part| url::form_urlencoded::byte_serialize(part.as_bytes()).collect())
            .collect();
        let response = self
            .request(
                Method::PUT,
                &format!("api/2.0/{endpoint}/{}", encoded.join("/")),
            )?
            .body(bytes)
            .send()
            .await
            .map_err(|error| RegistryError::MlflowRequest {
                endpoint: endpoint.to_string(),
                message: format!("{} unreachable: {error}", self.display_uri),
            })?;
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

    /// The id of the experiment `name`, created when missing.
    async fn experiment(&self, name: &str) -> Result<String, RegistryError> {
        match self
            .call(
                Method::GET,
                "experiments/get-by-name",
                &[("experiment_name", name)],
                None,
            )
            .await
        {
            Ok(found) => {
                let experiment = &found["experiment"];
                if experiment["lifecycle_stage"].as_str() == Some("deleted") {
                    return Err(RegistryError::MlflowRequest {
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
            Err(RegistryError::MlflowStatus { message, .. })
                if message.starts_with("RESOURCE_DOES_NOT_EXIST") =>
            {
                let created = self
                    .call(
                        Method::POST,
                        "experiments/create",
                        &[],
                        Some(&json!({
                            "name": name,
                            "tags": [tag("prodcat.managed", "true")],
                        })),
                    )
                    .await?;
                created["experiment_id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.unexpected("experiments/create", "no experiment_id"))
            }
            Err(error) => Err(error),
        }
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
            page_token = page["next_page_token"]
                .as_str()
                .filter(|token| !token.is_empty())
                .map(str::to_string);
            if page_token.is_none() {
                break;
            }
        }
        Ok(exported)
    }

    /// The registered model `name` (created when missing), as MLflow describes it.
    async fn registered_model(&self, name: &str) -> Result<Value, RegistryError> {
        match self
            .call(
                Method::GET,
                "registered-models/get",
                &[("name", name)],
                None,
            )
            .await
        {
            Ok(found) => Ok(found["registered_model"].clone()),
            Err(RegistryError::MlflowStatus { message, .. })
                if message.starts_with("RESOURCE_DOES_NOT_EXIST") =>
            {
                let created = self
                    .call(
                        Method::POST,
                        "registered-models/create",
                        &[],
                        Some(&json!({
                            "name": name,
                            "description": "Product category classifiers registered by prodcat.",
                            "tags": [tag("prodcat.managed", "true")],
                        })),
                    )
                    .await?;
                Ok(created["registered_model"].clone())
            }
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_uris_are_checked() {
        let options = MlflowExportOptions::default();
        assert!(Client::new("http://127.0.0.1:5000", &options).is_ok());
        let client = Client::new("https://mlflow.example.com/prefix", &options).unwrap();
        assert_eq!(client.base.as_str(), "https://mlflow.example.com/prefix/");
        assert!(Client::new("file:///tmp/mlruns", &options).is_err());
        assert!(Client::new("databricks", &options).is_err());
        assert!(Client::new("http://user:secret@host", &options).is_err());
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
    fn tags_are_read_from_entities_and_runs() {
        let version = json!({ "tags": [{ "key": "a", "value": "1" }] });
        assert_eq!(tags_of(&version)["a"], "1");
        let run = json!({ "data": { "tags": [{ "key": "b", "value": "2" }] } });
        assert_eq!(tags_of(&run)["b"], "2");
        assert_eq!(truncate("ééé", 3), "é");
    }
}
