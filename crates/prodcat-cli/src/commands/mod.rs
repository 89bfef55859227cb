//! One module per top-level subcommand.

pub mod backup;
pub mod cross_validation;
pub mod data;
pub mod drift;
pub mod evaluate;
pub mod models;
pub mod pipeline;
pub mod predict;
pub mod quickstart;
pub mod rollouts;
pub mod runs;
pub mod serve;
pub mod simulate;
pub mod train;
pub mod users;
pub mod worker;

/// `prodcat models ...` with re-scoring, so promotions over a champion compare both models on
/// the same evaluation set now.
pub async fn models_with_rescorer(
    settings: &crate::settings::Settings,
    command: models::ModelsCommand,
) -> anyhow::Result<()> {
    let platform = prodcat_platform::Platform::from_settings(settings).await?;
    let rescorer = prodcat_pipelines::PlatformRescorer {
        platform: &platform,
    };
    models::run_with_rescorer(settings, command, &rescorer).await
}

/// `prodcat migrate`: opens the database, which applies every pending migration, and exits.
pub async fn migrate(settings: &crate::settings::Settings) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    println!(
        "the {} database at {} has the current schema",
        database.backend().name(),
        prodcat_platform::settings::redact_url(&settings.database_url)
    );
    Ok(())
}
