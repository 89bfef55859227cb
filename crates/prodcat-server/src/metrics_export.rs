//! Prometheus metrics: the recorder (installed once per process), descriptions, build info, and
//! the gauges read from the database every few seconds (review queue, products waiting for a
//! model, job queue depth and failures) plus drift scores when the monitoring pipeline has
//! produced some.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;
use prodcat_catalogue::products as catalogue;
use prodcat_catalogue::ProductStatus;

const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const CONFIDENCE_BUCKETS: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// The process-wide recorder's handle (`None` when another recorder was installed first).
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("prodcat_http_request_duration_seconds".to_string()),
                    &LATENCY_BUCKETS,
                )
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full("prodcat_prediction_confidence".to_string()),
                        &CONFIDENCE_BUCKETS,
                    )
                });
            let handle = match builder.map(|builder| builder.install_recorder()) {
                Ok(Ok(handle)) => Some(handle),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "the metrics recorder could not be installed");
                    None
                }
                Err(error) => {
                    tracing::warn!(%error, "the metrics buckets are invalid");
                    None
                }
            };
            describe();
            // Counters exist from the first scrape, so that rate() and increase() see their
            // first event rather than starting from it.
            for counter in [
                "prodcat_http_rate_limited_total",
                "prodcat_http_timeouts_total",
                "prodcat_model_swaps_total",
                "prodcat_model_load_failures_total",
                "prodcat_prediction_log_dropped_total",
                "prodcat_prediction_log_written_total",
            ] {
                metrics::counter!(counter).absolute(0);
            }
            metrics::gauge!(
                "prodcat_build_info",
                "version" => env!("CARGO_PKG_VERSION"),
                "code_version" => prodcat_registry::code_version()
            )
            .set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "prodcat_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "prodcat_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route"
    );
    describe_counter!(
        "prodcat_predictions_total",
        "Served predictions by category and source"
    );
    describe_histogram!(
        "prodcat_prediction_confidence",
        "Calibrated confidence of served predictions"
    );
    describe_gauge!(
        "prodcat_review_queue_size",
        "Products waiting for a reviewer"
    );
    describe_gauge!("prodcat_products", "Catalogue products by status");
    describe_gauge!(
        "prodcat_job_queue_depth",
        "Job items pending or in work, by status"
    );
    describe_gauge!("prodcat_job_items_failed", "Job items that failed for good");
    describe_counter!(
        "prodcat_job_items_total",
        "Job items finished by this process, by outcome"
    );
    describe_gauge!(
        "prodcat_model_info",
        "The model version in service (1) and earlier ones (0)"
    );
    describe_counter!("prodcat_model_swaps_total", "Swaps of the model in service");
    describe_counter!(
        "prodcat_model_load_failures_total",
        "Promoted versions that failed to load (the previous model kept serving)"
    );
    describe_gauge!("prodcat_build_info", "Build of this process");
    describe_counter!(
        "prodcat_http_rate_limited_total",
        "Requests refused by the rate limit"
    );
    describe_counter!(
        "prodcat_http_timeouts_total",
        "Requests stopped by the timeout"
    );
    describe_counter!(
        "prodcat_prediction_log_dropped_total",
        "Prediction log rows dropped (queue full or database failing)"
    );
    describe_counter!(
        "prodcat_prediction_log_written_total",
        "Prediction log rows written"
    );
    describe_counter!(
        "prodcat_prediction_decisions_total",
        "Served predictions by decision (automatic or review) and source"
    );
    describe_gauge!(
        "prodcat_database_up",
        "1 when the database answered the last ping within 2 seconds"
    );
    describe_gauge!(
        "prodcat_scheduler_schedules",
        "Pipeline schedules this process runs"
    );
    describe_gauge!(
        "prodcat_scheduler_leader",
        "1 while this process holds the scheduler lease"
    );
    describe_gauge!(
        "prodcat_scheduler_last_tick_timestamp_seconds",
        Unit::Seconds,
        "Unix time of this process's last scheduler pass"
    );
    describe_gauge!(
        "prodcat_pipeline_last_run_timestamp_seconds",
        Unit::Seconds,
        "Unix time at which the latest run of a pipeline ending with a status ended"
    );
}

/// Sets `prodcat_database_up`: 1 when the database answers a ping within 2 seconds.
pub async fn refresh_database_up(database: &prodcat_storage::Database) -> bool {
    let up = matches!(
        tokio::time::timeout(std::time::Duration::from_secs(2), database.ping()).await,
        Ok(Ok(()))
    );
    metrics::gauge!("prodcat_database_up").set(if up { 1.0 } else { 0.0 });
    up
}

/// Reads the database-backed gauges once.
pub async fn refresh_gauges(state: &AppState) {
    let database = &state.platform.database;
    if !refresh_database_up(database).await {
        return;
    }
    match prodcat_pipelines::last_run_ends(database).await {
        Ok(ends) => {
            for (pipeline, status, ended_at_ms) in ends {
                metrics::gauge!(
                    "prodcat_pipeline_last_run_timestamp_seconds",
                    "pipeline" => pipeline,
                    "status" => status
                )
                .set(ended_at_ms as f64 / 1000.0);
            }
        }
        Err(error) => tracing::warn!(%error, "reading the pipeline runs for metrics failed"),
    }
    match catalogue::count_by_status(database).await {
        Ok(counts) => {
            for status in ProductStatus::ALL {
                let count = counts.get(&status).copied().unwrap_or(0) as f64;
                metrics::gauge!("prodcat_products", "status" => status.as_str()).set(count);
                if status == ProductStatus::Review {
                    metrics::gauge!("prodcat_review_queue_size").set(count);
                }
            }
        }
        Err(error) => tracing::warn!(%error, "reading product counts for metrics failed"),
    }
    match prodcat_jobs::queue_depth(database).await {
        Ok(depth) => {
            metrics::gauge!("prodcat_job_queue_depth", "status" => "pending")
                .set(depth.pending as f64);
            metrics::gauge!("prodcat_job_queue_depth", "status" => "leased")
                .set(depth.leased as f64);
            metrics::gauge!("prodcat_job_items_failed").set(depth.failed as f64);
        }
        Err(error) => tracing::warn!(%error, "reading the job queue depth for metrics failed"),
    }
    if let Some(handle) = &state.metrics {
        handle.run_upkeep();
    }
}
