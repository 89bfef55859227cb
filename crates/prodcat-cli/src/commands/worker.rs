//! `prodcat worker`: classifies the items of durable jobs (any number of workers, on any
//! machines sharing the database) and runs the scheduled pipelines (one scheduler is active at a
//! time, whatever the number of workers). Stops on SIGTERM or Ctrl-C after the batch in hand.

use std::sync::Arc;

use prodcat_jobs::{run_worker, WorkerOptions};
use prodcat_platform::{ModelService, Platform, Predictor};
use prodcat_server::{WorkerEndpoints, WorkerHealth};
use tokio_util::sync::CancellationToken;

pub use crate::settings::WorkerArgs;
use crate::settings::{schedules, Settings};

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let platform = Platform::from_settings(settings).await?;
    let schedules = schedules(settings)?;
    let worker = &settings.worker;
    let options = WorkerOptions {
        batch_size: worker.batch_size,
        concurrency: worker.concurrency,
        lease_duration: worker.lease_duration,
        ..WorkerOptions::default()
    };
    let models = Arc::new(ModelService::new(platform.clone(), &worker.model));
    let predictor = Predictor::new(models, None);
    let shutdown = CancellationToken::new();
    let health = Arc::new(WorkerHealth::default());
    let endpoints = match worker.listen {
        Some(address) => {
            let endpoints = WorkerEndpoints::start(
                address,
                &settings.server,
                platform.database.clone(),
                health.clone(),
                shutdown.clone(),
            )
            .await?;
            println!(
                "health on http://{0}/healthz, metrics on http://{0}/metrics",
                endpoints.address
            );
            Some(endpoints)
        }
        None => None,
    };
    let scheduler = if worker.no_scheduler || schedules.is_empty() {
        None
    } else {
        for schedule in &schedules {
            println!("schedule {}", schedule.describe());
        }
        let stop = shutdown.clone();
        Some(tokio::spawn(prodcat_pipelines::run_scheduler(
            platform.clone(),
            schedules,
            async move { stop.cancelled().await },
        )))
    };
    let signal = shutdown.clone();
    tokio::spawn(async move {
        prodcat_platform::shutdown_signal().await;
        eprintln!("stopping after the batch in hand");
        signal.cancel();
    });
    println!(
        "worker {} classifying job items with {} (batch {}, concurrency {}); Ctrl-C stops it",
        options.owner, worker.model, options.batch_size, options.concurrency
    );
    health.set_running(true);
    let stats = run_worker(&predictor, &options, shutdown.clone()).await;
    health.set_running(false);
    shutdown.cancel();
    if let Some(endpoints) = endpoints {
        endpoints.stopped().await;
    }
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    let stats = stats?;
    println!(
        "worker stopped: {} batches, {} items done, {} failed, {} retried",
        stats.batches, stats.done, stats.failed, stats.retried
    );
    Ok(())
}
