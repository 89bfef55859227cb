//! The `prodcat` command: one binary for the whole life of the product classifier, from the demo
//! catalogue and imports to training, serving, monitoring and retraining.

mod commands;
mod output;
mod settings;

use clap::{Parser, Subcommand};

use crate::settings::GlobalArgs;

/// prodcat: classify marketplace products from their text and photo, and run that model in
/// production (datasets, training, registry, serving, drift, retraining) from one binary.
///
/// Everything runs on an embedded default (an SQLite file and a local folder under
/// ./prodcat-data) unless PRODCAT_DATABASE_URL / PRODCAT_OBJECT_STORE_URL point elsewhere.
/// Every flag can also be set with a PRODCAT_* environment variable or in prodcat.toml.
#[derive(Debug, Parser)]
#[command(name = "prodcat", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole job on the embedded default: demo catalogue (or --data DIR), import, show.
    Quickstart(commands::quickstart::QuickstartArgs),
    /// Catalogue data: generate the demo, import, list, show and compare dataset versions.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Train a model version (text, image or both fused) on a dataset version.
    Train(commands::train::TrainArgs),
    /// Evaluate a model on a dataset split or a labelled CSV pair: F1, per class, confusion.
    Evaluate(commands::evaluate::EvaluateArgs),
    /// Classify a product (or a CSV file of products) with a model.
    Predict(commands::predict::PredictArgs),
    /// Tracked runs: list, show, compare, export to MLflow.
    #[command(subcommand)]
    Runs(commands::runs::RunsCommand),
    /// The model registry: versions, aliases (champion, challenger), promotion, rollback.
    #[command(subcommand)]
    Models(commands::models::ModelsCommand),
    /// Check a model for data and concept drift (prediction log window or two CSV files).
    Drift(commands::drift::DriftArgs),
    /// Recorded, resumable pipelines: weekly-check and retrain; list, show.
    #[command(subcommand)]
    Pipeline(commands::pipeline::PipelineCommand),
    /// Simulate weeks of traffic with growing drift: detection, retraining, recovery.
    Simulate(commands::simulate::SimulateArgs),
    /// Serve the HTTP API (prediction, catalogue, review, search, jobs, models, /docs, /metrics).
    Serve(commands::serve::ServeArgs),
    /// Classify durable job items and run the scheduled pipelines (run any number of them).
    Worker(commands::worker::WorkerArgs),
    /// Apply the database schema (migrations) and exit; every command also does it on start.
    Migrate,
    /// People and service clients of the API, with their roles.
    #[command(subcommand)]
    Users(commands::users::UsersCommand),
    /// The audit log: every write through the API (who, what, when, from where).
    Audit(commands::users::AuditArgs),
    /// Back up the platform while it serves: a consistent database snapshot (pg_dump or
    /// SQLite's VACUUM INTO), every object, and a manifest of what they hold.
    Backup(commands::backup::BackupArgs),
    /// Restore a backup into an empty database (and the object store), then check that it
    /// holds exactly what the backup's manifest says.
    Restore(commands::backup::RestoreArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The code version recorded with runs and models: the build's, unless the deployment says.
    if let Ok(version) = std::env::var("PRODCAT_CODE_VERSION") {
        prodcat_registry::set_code_version(&version);
    }
    let (serve, worker) = match &cli.command {
        Command::Serve(args) => (Some(args), None),
        Command::Quickstart(args) => (Some(&args.serve), None),
        Command::Worker(args) => (None, Some(args)),
        _ => (None, None),
    };
    let settings = match settings::resolve(&cli.global, serve, worker) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Quickstart(args) => commands::quickstart::run(&settings, args).await,
            Command::Data(command) => commands::data::run(&settings, command).await,
            Command::Train(args) => commands::train::run(&settings, args).await,
            Command::Evaluate(args) => commands::evaluate::run(&settings, args).await,
            Command::Predict(args) => commands::predict::run(&settings, args).await,
            Command::Runs(command) => commands::runs::run(&settings, command).await,
            Command::Models(command) => commands::models_with_rescorer(&settings, command).await,
            Command::Drift(args) => commands::drift::run(&settings, args).await,
            Command::Pipeline(command) => commands::pipeline::run(&settings, command).await,
            Command::Simulate(args) => commands::simulate::run(&settings, args).await,
            Command::Serve(_) => commands::serve::run(&settings).await,
            Command::Worker(_) => commands::worker::run(&settings).await,
            Command::Migrate => commands::migrate(&settings).await,
            Command::Users(command) => commands::users::run(&settings, command).await,
            Command::Audit(args) => commands::users::run_audit(&settings, args).await,
            Command::Backup(args) => commands::backup::run_backup(&settings, args).await,
            Command::Restore(args) => commands::backup::run_restore(&settings, args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
