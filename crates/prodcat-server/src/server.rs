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
use crate::handlers::{auth, jobs, models, operations, predict, products, search};
use crate::keys::SigningKeys;
use crate::middleware::{self, RateLimiter};
use crate::search_service::SearchService;
use crate::state::{AppState, StateInner};
use crate::swagger::SwaggerAssets;
use crate::{metrics_export, ServerError};

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    ApiError::internal(&"a request handler panicked").into_response()
}

/// The application's routes with every middleware.
pub fn router(state: AppState) -> Router {
    let settings = &state.settings;
    let layers = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(panic_response))
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
        .route("/v1/review/{product_id}", post(products::review_decision))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/rollback", post(models::rollback))
        .route("/v1/models/{version}/promote", post(models::promote))
        .route("/v1/audit", get(operations::audit_log))
        .fallback(operations::not_found)
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(layers)
        .with_state(state)
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
    let state = AppState::new(StateInner {
        search,
        signer: TokenSigner::new(keys, settings.token_lifetime),
        predictor: Predictor::new(models, Some(log.clone())),
        limiter: RateLimiter::new(settings.rate_limit_per_second, settings.rate_limit_burst),
        swagger: SwaggerAssets::load(settings.swagger_ui_dir.as_deref()),
        metrics,
        started: Instant::now(),
        pending_wakeup: tokio::sync::Notify::new(),
        platform,
        settings,
    });
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
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let serve_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { serve_shutdown.cancelled().await })
            .await;
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

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "listening for Ctrl-C failed");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "listening for SIGTERM failed");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
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
