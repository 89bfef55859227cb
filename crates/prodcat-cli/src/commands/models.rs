//! `prodcat models ...`: the model registry: list and show versions, promote a version to an
//! alias under the promotion policy (or by force, with a reason), roll an alias back, and show the
//! history of alias moves.
//!
//! Promotion over an existing champion re-scores both models on the same evaluation set through a
//! [`Rescorer`]; [`run_with_rescorer`] takes the one that can load and score models.

use anyhow::Context;
use clap::{Args, Subcommand};
use prodcat_registry::{
    AliasEvent, ModelVersion, PromotionOutcome, PromotionPolicy, PromotionRequest, Rescorer,
};

use crate::commands::data::format_time;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List model versions, newest first, with their aliases.
    List(ListArgs),
    /// Show a version (id, unique prefix, alias such as champion, or latest).
    Show(ShowArgs),
    /// Point an alias (champion by default) at a version, if the promotion policy allows it.
    Promote(PromoteArgs),
    /// Move an alias back to the version it pointed to before its last move.
    Rollback(RollbackArgs),
    /// Show every alias move: who, when, why, from which version to which; with --at, which
    /// version each alias named at that time.
    History(HistoryArgs),
    /// Make a version score a share of live predictions off the request path (the caller
    /// always gets the champion's answer); `--stop` ends it.
    Shadow(crate::commands::rollouts::ShadowArgs),
    /// Serve a share of live requests with a version, sticky per product or client, rolled
    /// back automatically when it does worse than the champion; `--stop` ends it, `promote`
    /// finishes it.
    Canary(crate::commands::rollouts::CanaryArgs),
    /// Compare the versions serving live traffic (champion, canary, shadow).
    Live(crate::commands::rollouts::LiveArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Version id, unique prefix, alias or `latest`.
    pub version: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The challenger: version id, unique prefix, alias or `latest`.
    pub version: String,
    /// The alias to move.
    #[arg(long, default_value = "champion")]
    pub alias: String,
    /// Why (recorded in the alias history).
    #[arg(long)]
    pub reason: String,
    /// Override the promotion policy (recorded; requires --reason).
    #[arg(long)]
    pub force: bool,
    /// The set both models are re-scored on, `<dataset version>:<split>` (default: the
    /// challenger's dataset version, test split).
    #[arg(long, value_name = "SET")]
    pub evaluation_set: Option<String>,
    /// Weighted F1 gain the challenger needs over the champion.
    #[arg(long, default_value_t = 0.005, env = "PRODCAT_PROMOTION_MIN_GAIN")]
    pub min_weighted_f1_gain: f64,
    /// Largest drop of any class's F1 that is tolerated.
    #[arg(long, default_value_t = 0.05, env = "PRODCAT_PROMOTION_MAX_CLASS_DROP")]
    pub max_class_f1_drop: f64,
    /// Who is acting (default: PRODCAT_ACTOR, else the login name).
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The alias to move back.
    #[arg(long, default_value = "champion")]
    pub alias: String,
    /// Why (recorded in the alias history).
    #[arg(long)]
    pub reason: String,
    /// Who is acting (default: PRODCAT_ACTOR, else the login name).
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this alias (default: every alias).
    #[arg(long)]
    pub alias: Option<String>,
    /// Which version each alias named at this time (RFC 3339 such as 2026-11-30T12:00Z, a
    /// date, a duration back such as 7d, or Unix milliseconds).
    #[arg(long)]
    pub at: Option<String>,
    /// At most this many moves, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

/// Runs a models command; `rescorer` scores versions for promotions over an existing champion.
pub async fn run_with_rescorer(
    settings: &Settings,
    command: ModelsCommand,
    rescorer: &dyn Rescorer,
) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List(args) => list(settings, args.json).await,
        ModelsCommand::Show(args) => show(settings, &args.version, args.json).await,
        ModelsCommand::Promote(args) => promote(settings, args, rescorer).await,
        ModelsCommand::Rollback(args) => rollback(settings, args).await,
        ModelsCommand::History(args) => match &args.at {
            Some(at) => crate::commands::rollouts::aliases_at(settings, at, args.json).await,
            None => history(settings, args).await,
        },
        ModelsCommand::Shadow(args) => crate::commands::rollouts::shadow(settings, args).await,
        ModelsCommand::Canary(args) => crate::commands::rollouts::canary(settings, args).await,
        ModelsCommand::Live(args) => crate::commands::rollouts::live(settings, args).await,
    }
}

fn headline(version: &ModelVersion) -> String {
    version
        .summary_metrics
        .get("weighted_f1")
        .map(|value| format!("{value:.4}"))
        .unwrap_or_else(|| "-".to_string())
}

async fn list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let versions = prodcat_registry::list_versions(&database).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(());
    }
    if versions.is_empty() {
        println!("No model versions yet. `prodcat train` registers one.");
        return Ok(());
    }
    let mut table = output::table(&[
        "version",
        "aliases",
        "created",
        "weighted F1",
        "dataset",
        "run",
        "status",
    ]);
    for version in &versions {
        table.add_row(vec![
            version.id.to_string(),
            version.aliases.join(", "),
            format_time(version.created_at_ms),
            headline(version),
            version
                .dataset_version
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_else(|| "-".to_string()),
            version
                .run_id
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_else(|| "-".to_string()),
            version.status.to_string(),
        ]);
    }
    println!("{table}");
    Ok(())
}

async fn show(settings: &Settings, reference: &str, json: bool) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let version = prodcat_registry::resolve(&database, reference).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&version)?);
        return Ok(());
    }
    println!("Model version {}", version.id);
    if !version.aliases.is_empty() {
        println!("  aliases      {}", version.aliases.join(", "));
    }
    println!("  status       {}", version.status);
    println!(
        "  created      {} by {}",
        format_time(version.created_at_ms),
        version.created_by
    );
    if let Some(dataset) = &version.dataset_version {
        println!("  dataset      {dataset}");
    }
    if let Some(run) = &version.run_id {
        println!("  run          {run}");
    }
    println!("  bundle       {}", version.object_prefix);
    if !version.note.is_empty() {
        println!("  note         {}", version.note);
    }
    if !version.summary_metrics.is_empty() {
        let mut table = output::table(&["metric", "value"]);
        for (key, value) in &version.summary_metrics {
            table.add_row(vec![key.clone(), format!("{value:.4}")]);
        }
        println!("{table}");
    }
    println!(
        "  manifest\n{}",
        serde_json::to_string_pretty(&version.manifest)?
            .lines()
            .map(|line| format!("    {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

fn actor(explicit: Option<String>) -> String {
    explicit
        .map(|actor| actor.trim().to_string())
        .filter(|actor| !actor.is_empty())
        .unwrap_or_else(crate::settings::actor)
}

fn describe_event(event: &AliasEvent) -> String {
    format!(
        "{} {} -> {}",
        event.alias,
        event
            .from_version
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_else(|| "(unset)".to_string()),
        event
            .to_version
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_else(|| "(removed)".to_string())
    )
}

/// Mirrors the registry to MLflow when MLFLOW_TRACKING_URI is set; a failure is only reported.
async fn mirror(settings: &Settings, database: &prodcat_storage::Database) {
    let Some(mlflow) =
        prodcat_registry::MlflowSettings::from_variables(|name| std::env::var(name).ok())
    else {
        return;
    };
    let objects = settings.open_objects().ok();
    {
        let result =
            prodcat_registry::mirror_to_mlflow(database, &mlflow, &[], objects.as_ref()).await;
        match result {
            Ok(report) => eprintln!("Mirrored the registry to MLflow at {}", report.tracking_uri),
            Err(error) => eprintln!("warning: the MLflow mirror failed: {error}"),
        }
    }
}

async fn promote(
    settings: &Settings,
    args: PromoteArgs,
    rescorer: &dyn Rescorer,
) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let challenger = prodcat_registry::resolve(&database, &args.version).await?;
    let evaluation_set = args.evaluation_set.clone().or_else(|| {
        challenger
            .dataset_version
            .as_ref()
            .map(|dataset| format!("{dataset}:test"))
    });
    let request = PromotionRequest {
        alias: args.alias.clone(),
        version: challenger.id.to_string(),
        actor: actor(args.actor.clone()),
        reason: args.reason.clone(),
        force: args.force,
        evaluation_set,
        policy: PromotionPolicy {
            min_weighted_f1_gain: args.min_weighted_f1_gain,
            max_class_f1_drop: args.max_class_f1_drop,
        },
    };
    let outcome = prodcat_registry::promote(&database, &request, rescorer)
        .await
        .with_context(|| format!("could not promote {} to {}", challenger.id, args.alias))?;
    if outcome.moved() {
        mirror(settings, &database).await;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        match &outcome {
            PromotionOutcome::FirstVersion { event } => println!(
                "Promoted: {} (there was no {} yet, nothing to compare with)",
                describe_event(event),
                args.alias
            ),
            PromotionOutcome::Promoted { event, .. } => {
                println!("Promoted: {}", describe_event(event))
            }
            PromotionOutcome::Forced { event, .. } => println!(
                "Promoted BY FORCE: {} (reason recorded: {})",
                describe_event(event),
                event.reason
            ),
            PromotionOutcome::Refused { .. } => println!(
                "Refused: {} stays where it is; {} does not meet the promotion policy",
                args.alias, challenger.id
            ),
        }
        if let Some(decision) = outcome.decision() {
            println!(
                "  compared on {}: {} (champion) vs {} (challenger)",
                decision.evaluation_set, decision.champion, decision.challenger
            );
            for reason in &decision.reasons {
                println!("  - {reason}");
            }
        }
    }
    if let PromotionOutcome::Refused { .. } = outcome {
        anyhow::bail!(
            "the promotion policy refused {} (use --force with a --reason to override)",
            challenger.id
        );
    }
    Ok(())
}

async fn rollback(settings: &Settings, args: RollbackArgs) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let event =
        prodcat_registry::rollback(&database, &args.alias, &actor(args.actor), &args.reason)
            .await?;
    mirror(settings, &database).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&event)?);
    } else {
        println!("Rolled back: {}", describe_event(&event));
    }
    Ok(())
}

async fn history(settings: &Settings, args: HistoryArgs) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let mut events = prodcat_registry::alias_history(&database, args.alias.as_deref()).await?;
    events.truncate(args.limit);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    if events.is_empty() {
        println!("No alias has moved yet. `prodcat models promote VERSION --reason ...` sets one.");
        return Ok(());
    }
    let mut table = output::table(&[
        "when", "alias", "action", "from", "to", "by", "forced", "reason",
    ]);
    for event in &events {
        table.add_row(vec![
            format_time(event.at_ms),
            event.alias.clone(),
            event.action.to_string(),
            event
                .from_version
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_else(|| "-".to_string()),
            event
                .to_version
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_else(|| "-".to_string()),
            event.actor.clone(),
            if event.forced { "yes" } else { "" }.to_string(),
            event.reason.clone(),
        ]);
    }
    println!("{table}");
    Ok(())
}
