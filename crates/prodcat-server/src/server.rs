//! The router, start-up (state, background tasks, listener) and graceful shutdown.
//!
//! Background tasks: the model poller (swaps to a newly promoted champion), the classifier of
//! products waiting for a model, the metrics gauges, and the prediction log writer. On shutdown
//! the listener stops accepting, in-flight requests finish, the tasks stop and the prediction log
//! is flushed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use prodcat_catalogue::PredictionLogWriter;
use prodcat_jobs::{classify_pending, PendingPolicy};
use prodcat_platform::{ModelService, Platform, Predictor, RefreshOutcome, ServerSettings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::TokenSigner;
use crate::error::ApiError;
use crate::handlers::{auth, jobs, models, operations, predict, products, rollouts, search};
use crate::keys::SigningKeys;
use crate::middleware::{self, RateLimiter};
use crate::search_service::SearchService;
use crate::state::{AppState, StateInner};
use crate::swagger::SwaggerAssets;
use crate::{metrics_export, ServerError};
use prodcat_platform::shutdown_signal;

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    ApiError::internal(&"a request handler panicked").into_response()
}

/// The application's routes with every middleware.
pub fn router(state: AppState) -> Router {
    let settings = &state.settings;
    let layers = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::client_address,
        ))
        .layer(axum::middleware::from_fn(middleware::record_metrics))
        .layer(axum::middleware::from_fn(middleware::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::rate_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::audit,
        ));
    Router::new()
        .route("/", get(operations::landing))
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::readyz))
        .route("/metrics", get(operations::metrics))
        .route("/openapi.json", get(operations::openapi_json))
        .route("/docs", get(operations::docs))
        .route("/docs/", get(operations::docs))
        .route("/docs/{file}", get(operations::docs_file))
        .route("/v1/auth/token", post(auth::issue_token))
        .route("/v1/predict", post(predict::predict))
        .route("/v1/predict/batch", post(predict::predict_batch))
        .route(
            "/v1/jobs/classify",
            post(jobs::create_job).layer(DefaultBodyLimit::max(settings.upload_limit_bytes)),
        )
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route(
            "/v1/products",
            post(products::create_product).get(products::list_products),
        )
        .route(
            "/v1/products/{id}",
            get(products::get_product)
                .patch(products::update_product)
                .delete(products::delete_product),
        )
        .route("/v1/products/{id}/image", get(products::get_product_image))
        .route("/v1/products/{id}/similar", get(search::similar))
        .route("/v1/search", get(search::search))
        .route("/v1/review", get(products::review_queue))
        .route(
            "/v1/review/{product_id}",
            post(products::review_decision).delete(products::undo_review_decision),
        )
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/rollback", post(models::rollback))
        .route("/v1/models/{version}/promote", post(models::promote))
        .route("/v1/models/{version}/shadow", post(rollouts::start_shadow))
        .route("/v1/models/{version}/canary", post(rollouts::start_canary))
        .route(
            "/v1/models/shadow",
            axum::routing::delete(rollouts::stop_shadow),
        )
        .route(
            "/v1/models/canary",
            axum::routing::delete(rollouts::stop_canary),
        )
        .route("/v1/models/rollouts", get(rollouts::rollouts))
        .route("/v1/models/live", get(rollouts::live))
        .route("/v1/models/aliases-at", get(rollouts::aliases_at))
        .route("/v1/predictions/{id}", get(rollouts::prediction))
        .route("/v1/audit", get(operations::audit_log))
        .merge(crate::ui::routes())
        .fallback(operations::not_found)
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(layers)
        .with_state(state)
}

/// Bounds on the connections a server keeps.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    /// Connections served at once; further ones wait in the listen queue.
    max_connections: usize,
    /// A connection that sends no complete request head within this time (an idle keep-alive
    /// connection included) is closed.
    header_read_timeout: Duration,
}

/// Accepts connections until `shutdown`, at most `max_connections` at a time, each served
/// over HTTP/1.1 or HTTP/2 with the header-read timeout; then lets the requests in flight
/// finish (graceful shutdown) before returning.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = app.clone();
        let service = tower::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                router.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A running server.
pub struct RunningServer {
    /// The address it listens on (useful with port 0).
    pub address: SocketAddr,
    pub state: AppState,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Cancelling this token shuts the server down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shuts down gracefully (in-flight requests finish) and waits until it has stopped.
    pub async fn stop(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after its token is cancelled).
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(result) => result,
            Err(error) => Err(ServerError::Task {
                what: "server task".to_string(),
                reason: error.to_string(),
            }),
        }
    }
}

fn spawn_model_poller(state: AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(state.settings.model_poll_interval) => {}
            }
            if let Err(error) = state.predictor.refresh_rollouts().await {
                tracing::warn!(%error, "reading the rollouts failed");
            }
            crate::guard::check_canary(&state).await;
            match state.model_service().refresh().await {
                Ok(RefreshOutcome::Swapped { .. }) => {
                    // A new model may classify what the previous one could not.
                    if let Err(error) = prodcat_catalogue::products::retry_given_up_products(
                        &state.platform.database,
                    )
                    .await
                    {
                        tracing::warn!(%error, "re-queueing pending products failed");
                    }
                    state.pending_wakeup.notify_one()
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "checking the champion alias failed"),
            }
        }
    })
}

fn spawn_pending_classifier(state: AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(state.settings.pending_poll_interval) => {}
                _ = state.pending_wakeup.notified() => {}
            }
            let policy = PendingPolicy::default();
            loop {
                match classify_pending(&state.predictor, &policy).await {
                    Ok(report) if report.seen == 0 => break,
                    Ok(_) if shutdown.is_cancelled() => break,
                    Ok(report) if report.classified == 0 => break,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "classifying pending products failed");
                        break;
                    }
                }
            }
        }
    })
}

fn spawn_gauges(state: AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            metrics_export::refresh_gauges(&state).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    })
}

/// The scrapers' bearer token, from the configured file.
pub(crate) fn read_metrics_token(settings: &ServerSettings) -> Result<Option<String>, ServerError> {
    let Some(path) = &settings.metrics_token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ServerError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim().to_string();
    if token.len() < 16 {
        return Err(ServerError::InvalidSetting {
            name: "metrics token",
            reason: format!("{} holds fewer than 16 characters", path.display()),
        });
    }
    Ok(Some(token))
}

/// Builds the state, loads the champion (if any), binds the listener and starts serving.
pub async fn start(
    platform: Platform,
    settings: ServerSettings,
    keys: SigningKeys,
) -> Result<RunningServer, ServerError> {
    let metrics = metrics_export::install();
    let (log, log_task) = PredictionLogWriter::start(platform.database.clone());
    let search = std::sync::Arc::new(SearchService::open(
        &platform,
        settings.search_cache_dir.clone(),
    )?);
    let models = std::sync::Arc::new(ModelService::new(
        platform.clone(),
        prodcat_registry::CHAMPION,
    ));
    let search_by_meaning = search.index().has_embedder();
    let state = AppState::new(StateInner {
        search,
        signer: TokenSigner::new(keys, settings.token_lifetime),
        predictor: Predictor::new(models, Some(log.clone()))
            .with_batch_budget(settings.request_timeout)
            .with_rollouts(),
        limiter: RateLimiter::new(settings.rate_limit_per_second, settings.rate_limit_burst),
        swagger: SwaggerAssets::load(settings.swagger_ui_dir.as_deref()),
        metrics,
        started: Instant::now(),
        pending_wakeup: tokio::sync::Notify::new(),
        revocation: crate::revocation::RevocationCache::new(settings.revocation_check),
        password_checks: tokio::sync::Semaphore::new(prodcat_platform::available_cores()),
        metrics_token: read_metrics_token(&settings)?,
        openapi: crate::openapi::openapi_document(&crate::openapi::DocumentSettings::of(
            &settings,
            search_by_meaning,
        )),
        platform,
        settings,
    });
    if let Err(error) = state.predictor.refresh_rollouts().await {
        tracing::warn!(%error, "reading the rollouts failed");
    }
    match state.model_service().refresh().await {
        Ok(RefreshOutcome::Swapped { to, .. }) => tracing::info!(version = %to, "serving model"),
        Ok(RefreshOutcome::NoChampion) => {
            tracing::warn!("no champion model yet: predictions answer 503 until one is promoted")
        }
        Ok(RefreshOutcome::Failed(failure)) => {
            tracing::error!(version = %failure.version, error = %failure.error, "the champion failed to load")
        }
        Ok(RefreshOutcome::Unchanged) => {}
        Err(error) => tracing::error!(%error, "reading the champion alias failed"),
    }
    let listener = tokio::net::TcpListener::bind(state.settings.listen)
        .await
        .map_err(|source| ServerError::Listen {
            address: state.settings.listen.to_string(),
            source,
        })?;
    let address = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            address: state.settings.listen.to_string(),
            source,
        })?;
    let shutdown = CancellationToken::new();
    let background = CancellationToken::new();
    let tasks = vec![
        spawn_model_poller(state.clone(), background.clone()),
        spawn_pending_classifier(state.clone(), background.clone()),
        spawn_gauges(state.clone(), background.clone()),
        tokio::spawn(
            state
                .search
                .clone()
                .run(state.platform.clone(), background.clone()),
        ),
    ];
    let app = router(state.clone());
    let serve_shutdown = shutdown.clone();
    let connections = ConnectionLimits {
        max_connections: state.settings.max_connections,
        header_read_timeout: state.settings.header_read_timeout,
    };
    let task = tokio::spawn(async move {
        let served = serve_connections(listener, app, connections, serve_shutdown).await;
        background.cancel();
        for task in tasks {
            let _ = task.await;
        }
        // Everything answered so far is in the log; the writer itself stops once the last
        // handle (held by the state) is dropped.
        log.flush().await;
        drop(log_task);
        tracing::info!("server stopped");
        served.map_err(|source| ServerError::Listen {
            address: address.to_string(),
            source,
        })
    });
    tracing::info!(%address, "listening");
    Ok(RunningServer {
        address,
        state,
        shutdown,
        task,
    })
}

/// Starts the server, calls `on_ready` with its address, and serves until SIGTERM or SIGINT;
/// returns once in-flight requests are finished.
pub async fn serve_until_signal(
    platform: Platform,
    settings: ServerSettings,
    keys: SigningKeys,
    on_ready: impl FnOnce(&RunningServer),
) -> Result<(), ServerError> {
    let server = start(platform, settings, keys).await?;
    on_ready(&server);
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    server.stop().await
}
