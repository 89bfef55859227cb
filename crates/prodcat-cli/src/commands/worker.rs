//! `prodcat worker`: classifies the items of durable jobs (any number of workers, on any
//! machines sharing the database) and runs the scheduled pipelines (one scheduler is active at a
//! time, whatever the number of workers). Stops on SIGTERM or Ctrl-C after the batch in hand.

use std::time::Duration;

use clap::Args;
use prodcat_jobs::{run_worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

use crate::commands::train;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The model to classify with: an alias (default champion, which follows promotions) or a
    /// version.
    #[arg(long, env = "PRODCAT_WORKER_MODEL", default_value = "champion")]
    pub model: String,
    /// Job items leased and classified at once.
    #[arg(long, env = "PRODCAT_WORKER_BATCH_SIZE", default_value_t = 256)]
    pub batch_size: usize,
    /// Batches in work at the same time in this process.
    #[arg(long, env = "PRODCAT_WORKER_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,
    /// Seconds a lease lasts without renewal; items of a worker that died are taken over after.
    #[arg(long, env = "PRODCAT_WORKER_LEASE_SECONDS", default_value_t = 60)]
    pub lease_seconds: u64,
    /// Do not run the pipeline scheduler ([schedules] in prodcat.toml) in this process.
    #[arg(long, env = "PRODCAT_WORKER_NO_SCHEDULER")]
    pub no_scheduler: bool,
}

pub async fn run(settings: &Settings, args: WorkerArgs) -> anyhow::Result<()> {
    let platform = train::platform(settings)
        .await?
        .with_webhook_url(settings.webhook_url.clone());
    let schedules = settings.schedules()?;
    let options = WorkerOptions {
        model_reference: args.model.clone(),
        batch_size: args.batch_size,
        concurrency: args.concurrency,
        lease_duration: Duration::from_secs(args.lease_seconds.max(1)),
        ..WorkerOptions::default()
    };
    let shutdown = CancellationToken::new();
    let scheduler = if args.no_scheduler || schedules.is_empty() {
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
        prodcat_server::shutdown_signal().await;
        eprintln!("stopping after the batch in hand");
        signal.cancel();
    });
    println!(
        "worker {} classifying job items with {} (batch {}, concurrency {}); Ctrl-C stops it",
        options.owner, options.model_reference, options.batch_size, options.concurrency
    );
    let stats = run_worker(&platform, &options, shutdown.clone()).await;
    shutdown.cancel();
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
