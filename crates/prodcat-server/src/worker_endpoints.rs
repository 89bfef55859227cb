//! The small HTTP side of `prodcat worker`: `/healthz` for probes and `/metrics` for
//! Prometheus, under the API's access rule for metrics (the private networks or the scrapers'
//! token). Workers are scraped directly, so the peer address is the client's address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prodcat_platform::ServerSettings;
use prodcat_storage::Database;
use tokio_util::sync::CancellationToken;

use crate::api::HealthBody;
use crate::error::ApiError;
use crate::metrics_export;
use crate::ServerError;

/// Whether the worker loop runs: set by `prodcat worker`, read by `/healthz`.
#[derive(Debug, Default)]
pub struct WorkerHealth {
    running: AtomicBool,
}

impl WorkerHealth {
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct EndpointState {
    health: Arc<WorkerHealth>,
    started: Instant,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    private_networks: Arc<[ipnet::IpNet]>,
    metrics_token: Option<Arc<str>>,
}

/// A worker's endpoints, listening until `shutdown` is cancelled.
pub struct WorkerEndpoints {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerEndpoints {
    /// Binds `address` and serves `/healthz` and `/metrics`; the database's reachability is
    /// refreshed every 5 seconds (`prodcat_database_up`).
    pub async fn start(
        address: SocketAddr,
        settings: &ServerSettings,
        database: Database,
        health: Arc<WorkerHealth>,
        shutdown: CancellationToken,
    ) -> Result<Self, ServerError> {
        let state = EndpointState {
            health,
            started: Instant::now(),
            metrics: metrics_export::install(),
            private_networks: settings.private_networks.clone().into(),
            metrics_token: crate::server::read_metrics_token(settings)?.map(Arc::from),
        };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::Listen {
                address: address.to_string(),
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                address: address.to_string(),
                source,
            })?;
        let refresh_stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                metrics_export::refresh_database_up(&database).await;
                tokio::select! {
                    _ = refresh_stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        });
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .with_state(state);
        let task = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
            if let Err(error) = served {
                tracing::warn!(%error, "the worker's endpoints stopped");
            }
        });
        Ok(Self { address, task })
    }

    /// Waits for the endpoints to stop (after the shutdown token is cancelled).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

async fn healthz(State(state): State<EndpointState>) -> Response {
    let body = Json(HealthBody {
        status: if state.health.is_running() {
            "ok"
        } else {
            "stopped"
        }
        .to_string(),
        uptime_seconds: state.started.elapsed().as_secs(),
    });
    if state.health.is_running() {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(
    State(state): State<EndpointState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let private = state
        .private_networks
        .iter()
        .any(|net| net.contains(&peer.ip()));
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let scraper = match (&state.metrics_token, bearer) {
        (Some(expected), Some(given)) => {
            crate::handlers::operations::constant_time_equal(expected.as_bytes(), given.as_bytes())
        }
        _ => false,
    };
    if !(private || scraper) {
        return ApiError::forbidden(
            "a worker's metrics are served to the private network and to scrapers with the \
             metrics token",
        )
        .into_response();
    }
    let text = state
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
