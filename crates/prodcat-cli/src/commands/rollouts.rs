//! `prodcat models shadow|canary|live` and `prodcat models history --at`: live rollouts from
//! the command line (the same registry state every server replica applies within its poll
//! interval).

use clap::Args;
use prodcat_platform::Platform;
use prodcat_registry::{GuardRails, NewRollout, RolloutKind, Stickiness};

use crate::commands::data::format_time;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct ShadowArgs {
    /// The version to shadow (id, unique prefix, alias or latest); omit with --stop.
    #[arg(required_unless_present = "stop")]
    pub version: Option<String>,
    /// Share of live predictions it scores, 0 to 1 (default 0.25).
    #[arg(long, default_value_t = 0.25)]
    pub share: f64,
    /// End the shadow.
    #[arg(long, conflicts_with = "version")]
    pub stop: bool,
    /// Why (recorded in the alias history).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// The version to serve to a share of the traffic; omit with --stop.
    #[arg(required_unless_present = "stop")]
    pub version: Option<String>,
    /// Percent of live requests it answers (default 10).
    #[arg(long, default_value_t = 10.0)]
    pub share: f64,
    /// What keeps the same traffic on the same version: product or client.
    #[arg(long, default_value = "product")]
    pub sticky: String,
    /// Roll back when its error rate exceeds the champion's by more than this (absolute).
    #[arg(long, default_value_t = 0.02)]
    pub max_error_increase: f64,
    /// Roll back when its p99 latency exceeds the champion's by more than this factor.
    #[arg(long, default_value_t = 0.5)]
    pub max_p99_increase: f64,
    /// Roll back when its weighted F1 on reviewed products falls below the champion's by more
    /// than this...
    #[arg(long, default_value_t = 0.03)]
    pub max_f1_drop: f64,
    /// ...once each has at least this many reviewed products.
    #[arg(long, default_value_t = 50)]
    pub min_labels: usize,
    /// End the canary (the champion answers everything again).
    #[arg(long, conflicts_with = "version")]
    pub stop: bool,
    /// Why (recorded in the alias history).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct LiveArgs {
    /// How far back: 15m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    pub window: String,
    #[arg(long)]
    pub json: bool,
}

async fn stop(
    settings: &Settings,
    kind: RolloutKind,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let reason = reason.unwrap_or_else(|| format!("stopped by {}", settings.actor));
    match prodcat_registry::stop_rollout(&database, kind, &settings.actor, &reason, None).await? {
        Some(event) => println!(
            "{} of {} stopped; every server applies it within its poll interval",
            kind.as_str(),
            event
                .from_version
                .map(|v| v.to_string())
                .unwrap_or_default()
        ),
        None => println!("no {} was running", kind.as_str()),
    }
    Ok(())
}

async fn start(settings: &Settings, rollout: NewRollout) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let started = prodcat_registry::start_rollout(&database, &rollout).await?;
    println!(
        "{} {} at {:.0} % of live traffic (sticky per {}); every server applies it within its \
         poll interval",
        started.kind.as_str(),
        started.version,
        started.share * 100.0,
        started.stickiness.as_str()
    );
    if started.kind == RolloutKind::Canary {
        println!(
            "guard rails: roll back when errors +{:.3}, p99 +{:.0} %, or F1 -{:.3} on {}+ \
             reviewed products; `prodcat models promote {}` finishes it",
            started.guard.max_error_rate_increase,
            started.guard.max_p99_increase * 100.0,
            started.guard.max_f1_drop,
            started.guard.min_labels,
            started.version
        );
    }
    Ok(())
}

/// `prodcat models shadow`.
pub async fn shadow(settings: &Settings, args: ShadowArgs) -> anyhow::Result<()> {
    if args.stop {
        return stop(settings, RolloutKind::Shadow, args.reason).await;
    }
    start(
        settings,
        NewRollout {
            kind: RolloutKind::Shadow,
            version: args.version.unwrap_or_default(),
            share: args.share,
            stickiness: Stickiness::Product,
            guard: GuardRails::default(),
            actor: settings.actor.clone(),
            reason: args
                .reason
                .unwrap_or_else(|| "shadow started from the command line".to_string()),
        },
    )
    .await
}

/// `prodcat models canary`.
pub async fn canary(settings: &Settings, args: CanaryArgs) -> anyhow::Result<()> {
    if args.stop {
        return stop(settings, RolloutKind::Canary, args.reason).await;
    }
    start(
        settings,
        NewRollout {
            kind: RolloutKind::Canary,
            version: args.version.unwrap_or_default(),
            share: args.share / 100.0,
            stickiness: Stickiness::parse(&args.sticky)?,
            guard: GuardRails {
                max_error_rate_increase: args.max_error_increase,
                max_p99_increase: args.max_p99_increase,
                max_f1_drop: args.max_f1_drop,
                min_labels: args.min_labels,
                ..GuardRails::default()
            },
            actor: settings.actor.clone(),
            reason: args
                .reason
                .unwrap_or_else(|| "canary started from the command line".to_string()),
        },
    )
    .await
}

fn percent(value: Option<f64>) -> String {
    value
        .map(|v| format!("{:.1} %", v * 100.0))
        .unwrap_or_else(|| "–".to_string())
}

fn number(value: Option<f64>, digits: usize) -> String {
    value
        .map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".to_string())
}

/// `prodcat models live`.
pub async fn live(settings: &Settings, args: LiveArgs) -> anyhow::Result<()> {
    let platform = Platform::from_settings(settings).await?;
    let window = prodcat_pipelines::parse_duration_ms(&args.window)?;
    let comparison =
        prodcat_platform::live::compare(&platform, prodcat_storage::now_ms() - window).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
        return Ok(());
    }
    for rollout in prodcat_registry::active_rollouts(&platform.database).await? {
        println!(
            "{} {} at {:.0} % since {} ({})",
            rollout.kind.as_str(),
            rollout.version,
            rollout.share * 100.0,
            format_time(rollout.started_at_ms),
            rollout.reason
        );
    }
    if comparison.versions.is_empty() {
        println!("No prediction served in the last {}.", args.window);
        return Ok(());
    }
    let mut table = output::table(&[
        "role",
        "version",
        "requests",
        "errors",
        "agreement",
        "confidence",
        "automatic",
        "p50 ms",
        "p99 ms",
        "reviewed",
        "weighted F1 (95 % CI)",
    ]);
    for figures in &comparison.versions {
        table.add_row(vec![
            figures.role.clone(),
            figures.model_version.clone(),
            figures.requests.to_string(),
            format!("{} ({:.1} %)", figures.errors, figures.error_rate * 100.0),
            percent(figures.agreement),
            number(figures.mean_confidence, 3),
            percent(figures.automatic_share),
            number(figures.latency_p50_ms, 2),
            number(figures.latency_p99_ms, 2),
            figures.labelled.to_string(),
            match (figures.weighted_f1, figures.weighted_f1_interval) {
                (Some(f1), Some([low, high])) => format!("{f1:.4} ({low:.4}–{high:.4})"),
                (Some(f1), None) => format!("{f1:.4}"),
                _ => "–".to_string(),
            },
        ]);
    }
    println!("{table}");
    Ok(())
}

/// `prodcat models history --at T`: which version each alias named at that time.
pub async fn aliases_at(settings: &Settings, at: &str, json: bool) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let at_ms = prodcat_pipelines::parse_time_ms(at, prodcat_storage::now_ms())?;
    let mut named = Vec::new();
    for alias in [
        prodcat_registry::CHAMPION,
        prodcat_registry::CANARY,
        prodcat_registry::SHADOW,
    ] {
        named.push((
            alias,
            prodcat_registry::alias_at(&database, alias, at_ms)
                .await?
                .map(|v| v.to_string()),
        ));
    }
    if json {
        let object: serde_json::Map<String, serde_json::Value> = named
            .iter()
            .map(|(alias, version)| (alias.to_string(), serde_json::json!(version)))
            .collect();
        println!("{}", serde_json::Value::Object(object));
        return Ok(());
    }
    println!("At {} (UTC):", format_time(at_ms));
    for (alias, version) in named {
        println!(
            "  {alias:<9} {}",
            version.unwrap_or_else(|| "(not set)".to_string())
        );
    }
    Ok(())
}
