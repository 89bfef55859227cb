//! `prodcat pipeline`: run the weekly check or the retraining as recorded, resumable pipelines
//! (each a plain command an external scheduler such as Airflow or a Kubernetes CronJob can call;
//! the exit code says whether it succeeded), list pipelines, schedules and runs, show a run.

use clap::{Args, Subcommand};
use prodcat_pipelines::{
    format_ms, get_pipeline_run, lease_holder, list_pipeline_runs, pipeline_steps, run_pipeline,
    schedule_states, PipelineName, PipelineRequest, PipelineRun, RetrainParameters, RunStatus,
    StartMode, WeeklyCheckParameters,
};
use prodcat_registry::PromotionPolicy;

use crate::output;
use crate::settings::Settings;
use prodcat_platform::Platform;

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Run a pipeline. By default the latest run of the same pipeline is resumed when it failed
    /// (its completed steps are skipped); --fresh always starts a new run.
    #[command(subcommand)]
    Run(RunCommand),
    /// The pipelines, their schedules and their latest runs.
    List {
        /// Runs to show.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One run with its steps (attempts, times, outputs, errors).
    Show {
        /// Run id (or a unique prefix).
        run: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Drift report of the champion over the last window, decision, notification, and the
    /// retrain pipeline when drift is found.
    WeeklyCheck(WeeklyCheckArgs),
    /// Snapshot a dataset version with the reviewed labels and new imports, train a challenger
    /// with the champion's parameters, evaluate both on the same test split, promote by policy,
    /// notify.
    Retrain(RetrainArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Start a new run even if the latest run of this pipeline failed.
    #[arg(long, conflicts_with = "resume")]
    pub fresh: bool,
    /// Resume this run (id or prefix) instead.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
    /// Print the run as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WeeklyCheckArgs {
    /// The model to check.
    #[arg(long, default_value = "champion")]
    pub model: String,
    /// Length of the window (7d, 24h).
    #[arg(long, default_value = "7d")]
    pub window: String,
    /// End of the window (now, a date, an RFC 3339 time, a duration back from now).
    #[arg(long, default_value = "now")]
    pub until: String,
    /// Dataset drift when at least this share of the features drifted.
    #[arg(long, default_value_t = 0.5)]
    pub drift_share: f64,
    /// Concept drift when the reviewed weighted F1 is lower than the test F1 by more than this.
    #[arg(long, default_value_t = 0.05)]
    pub concept_margin: f64,
    /// Only report and notify; do not start the retraining.
    #[arg(long)]
    pub no_retrain: bool,
    #[command(flatten)]
    pub start: StartArgs,
}

#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// Promote the challenger even if the promotion policy refuses (recorded as forced).
    #[arg(long)]
    pub force_promote: bool,
    /// Train even when no new labelled data arrived.
    #[arg(long)]
    pub without_new_data: bool,
    /// The challenger's weighted F1 must beat the champion's by at least this.
    #[arg(long, default_value_t = PromotionPolicy::default().min_weighted_f1_gain)]
    pub min_gain: f64,
    /// No class's F1 may drop by more than this.
    #[arg(long, default_value_t = PromotionPolicy::default().max_class_f1_drop)]
    pub max_class_drop: f64,
    /// Why (kept in the alias history).
    #[arg(long, default_value = "manual retraining")]
    pub reason: String,
    #[command(flatten)]
    pub start: StartArgs,
}

fn mode(start: &StartArgs) -> StartMode {
    match (&start.resume, start.fresh) {
        (Some(run), _) => StartMode::Resume(run.clone()),
        (None, true) => StartMode::Fresh,
        (None, false) => StartMode::ResumeFailed,
    }
}

pub async fn run(settings: &Settings, command: PipelineCommand) -> anyhow::Result<()> {
    let platform = Platform::from_settings(settings).await?;
    match command {
        PipelineCommand::Run(command) => run_one(&platform, command).await,
        PipelineCommand::List { limit, json } => list(&platform, settings, limit, json).await,
        PipelineCommand::Show { run, json } => {
            let run = get_pipeline_run(&platform.database, &run).await?;
            if json {
                let steps = pipeline_steps(&platform.database, &run.id).await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"run": run, "steps": steps}))?
                );
                return Ok(());
            }
            print_run(&platform, &run).await
        }
    }
}

/// The request a `pipeline run` subcommand asks for, and whether to print JSON.
fn request_of(command: RunCommand) -> anyhow::Result<(PipelineRequest, bool)> {
    Ok(match command {
        RunCommand::WeeklyCheck(args) => {
            let until = prodcat_pipelines::parse_time_ms(&args.until, prodcat_storage::now_ms())?;
            prodcat_pipelines::parse_duration_ms(&args.window)?;
            let mut parameters = WeeklyCheckParameters {
                model: args.model,
                window: args.window,
                until_ms: Some(until),
                retrain: !args.no_retrain,
                ..WeeklyCheckParameters::default()
            };
            parameters.drift.drift_share = args.drift_share;
            parameters.drift.concept_margin = args.concept_margin;
            (
                PipelineRequest::new(PipelineName::WeeklyCheck, "cli", mode(&args.start))
                    .with_parameters(serde_json::to_value(parameters)?),
                args.start.json,
            )
        }
        RunCommand::Retrain(args) => {
            let parameters = RetrainParameters {
                force_promote: args.force_promote,
                train_without_new_data: args.without_new_data,
                policy: PromotionPolicy {
                    min_weighted_f1_gain: args.min_gain,
                    max_class_f1_drop: args.max_class_drop,
                },
                reason: args.reason,
            };
            (
                PipelineRequest::new(PipelineName::Retrain, "cli", mode(&args.start))
                    .with_parameters(serde_json::to_value(parameters)?),
                args.start.json,
            )
        }
    })
}

/// `prodcat pipeline run ...`.
async fn run_one(platform: &Platform, command: RunCommand) -> anyhow::Result<()> {
    let (request, json) = request_of(command)?;
    eprintln!("Running pipeline {}", request.pipeline);
    let run = run_pipeline(platform, &request).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        print_run(platform, &run).await?;
    }
    if run.status != RunStatus::Succeeded {
        anyhow::bail!(
            "pipeline run {} failed: {} (run `prodcat pipeline run {}` again to resume it; completed steps are skipped)",
            run.id,
            run.error.clone().unwrap_or_default(),
            run.pipeline
        );
    }
    Ok(())
}

/// `prodcat pipeline list`: the pipelines, their schedules, the scheduler's leader, the runs.
async fn list(
    platform: &Platform,
    settings: &Settings,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let runs = list_pipeline_runs(&platform.database, None, limit).await?;
    let states = schedule_states(&platform.database).await?;
    let schedules = crate::settings::schedules(settings)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pipelines": PipelineName::ALL.iter().map(|p| serde_json::json!({
                    "name": p.as_str(),
                    "description": p.description(),
                    "steps": p.steps(),
                })).collect::<Vec<_>>(),
                "schedules": schedules.iter().map(|s| serde_json::json!({
                    "name": s.name,
                    "cron": s.expression,
                    "nextDueMs": s.next_after(prodcat_storage::now_ms()),
                })).collect::<Vec<_>>(),
                "scheduleStates": states,
                "runs": runs,
            }))?
        );
        return Ok(());
    }
    let mut table = output::table(&["pipeline", "steps", "schedule", "next due (UTC)"]);
    let now = prodcat_storage::now_ms();
    for pipeline in PipelineName::ALL {
        let schedule = schedules.iter().find(|s| s.pipeline == pipeline);
        table.add_row(vec![
            format!("{pipeline}\n{}", pipeline.description()),
            pipeline.steps().join(" → "),
            schedule
                .map(|s| format!("{} ({})", s.expression, s.describe()))
                .unwrap_or_else(|| "not scheduled".to_string()),
            schedule
                .and_then(|s| s.next_after(now))
                .map(format_ms)
                .unwrap_or_default(),
        ]);
    }
    println!("{table}");
    if let Some((holder, expires)) = lease_holder(&platform.database).await? {
        println!(
            "Scheduler leader: {holder} (lease {} {})",
            if expires > now { "until" } else { "expired at" },
            format_ms(expires)
        );
    }
    for state in &states {
        println!(
            "Schedule {} ({}): last due {}{}",
            state.schedule,
            state.cron,
            format_ms(state.last_due_ms),
            state
                .last_run_id
                .as_ref()
                .map(|r| format!(", run {r}"))
                .unwrap_or_default()
        );
    }
    if runs.is_empty() {
        println!("No pipeline run yet (prodcat pipeline run weekly-check).");
        return Ok(());
    }
    let mut table = output::table(&[
        "run",
        "pipeline",
        "status",
        "triggered by",
        "started (UTC)",
        "duration",
        "result",
    ]);
    for run in runs {
        table.add_row(vec![
            run.id.clone(),
            run.pipeline.clone(),
            status_text(&run, now),
            run.triggered_by.clone(),
            format_ms(run.started_at_ms),
            run.ended_at_ms
                .map(|end| {
                    output::duration(std::time::Duration::from_millis(
                        (end - run.started_at_ms).max(0) as u64,
                    ))
                })
                .unwrap_or_default(),
            result_text(&run),
        ]);
    }
    println!("{table}");
    Ok(())
}

fn status_text(run: &PipelineRun, now: i64) -> String {
    if run.abandoned(now) {
        "abandoned (resumable)".to_string()
    } else {
        run.status.to_string()
    }
}

fn result_text(run: &PipelineRun) -> String {
    if let Some(error) = &run.error {
        return error.chars().take(80).collect();
    }
    let Some(output) = &run.output else {
        return String::new();
    };
    let text = |value: Option<&serde_json::Value>| {
        value
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    match run.pipeline.as_str() {
        "weekly-check" => {
            let drift = output.get("decision").and_then(|d| d.get("driftFound"));
            let retrain = output.get("retrain").filter(|r| !r.is_null());
            format!(
                "{}{}",
                if drift.and_then(|d| d.as_bool()) == Some(true) {
                    "drift found"
                } else {
                    "no drift"
                },
                match retrain {
                    Some(retrain) => format!(", retrain {}", text(retrain.get("runId"))),
                    None => String::new(),
                }
            )
        }
        _ => {
            if let Some(skipped) = output.get("skipped").and_then(|s| s.as_str()) {
                return skipped.chars().take(80).collect();
            }
            let promoted = output.get("promoted").and_then(|p| p.as_bool()) == Some(true);
            format!(
                "{} {}",
                text(output.get("challenger")),
                if promoted { "promoted" } else { "not promoted" }
            )
        }
    }
}

async fn print_run(platform: &prodcat_platform::Platform, run: &PipelineRun) -> anyhow::Result<()> {
    let now = prodcat_storage::now_ms();
    println!(
        "Pipeline run {} ({}): {}, triggered by {}, started {}{}{}",
        run.id,
        run.pipeline,
        status_text(run, now),
        run.triggered_by,
        format_ms(run.started_at_ms),
        if run.resumed > 0 {
            format!(", resumed {} time(s)", run.resumed)
        } else {
            String::new()
        },
        run.registry_run
            .as_ref()
            .map(|r| format!(", registry run {r}"))
            .unwrap_or_default()
    );
    let steps = pipeline_steps(&platform.database, &run.id).await?;
    let mut table = output::table(&["step", "status", "attempts", "duration", "output / error"]);
    for step in steps {
        let detail = match (&step.error, &step.output) {
            (Some(error), _) => error.clone(),
            (None, Some(output)) => {
                let text = output.to_string();
                if text.chars().count() > 160 {
                    format!("{}…", text.chars().take(160).collect::<String>())
                } else {
                    text
                }
            }
            _ => String::new(),
        };
        table.add_row(vec![
            step.name.clone(),
            step.status.to_string(),
            step.attempts.to_string(),
            step.ended_at_ms
                .map(|end| {
                    output::duration(std::time::Duration::from_millis(
                        (end - step.started_at_ms).max(0) as u64,
                    ))
                })
                .unwrap_or_default(),
            detail,
        ]);
    }
    println!("{table}");
    if let Some(error) = &run.error {
        println!("Error: {error}");
    } else if run.output.is_some() {
        println!("Result: {}", result_text(run));
    }
    Ok(())
}
