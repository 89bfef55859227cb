//! One module per top-level subcommand.

pub mod data;
pub mod drift;
pub mod evaluate;
pub mod models;
pub mod pipeline;
pub mod predict;
pub mod quickstart;
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
    let platform = train::platform(settings).await?;
    let rescorer = prodcat_pipelines::PlatformRescorer {
        platform: &platform,
    };
    models::run_with_rescorer(settings, command, &rescorer).await
}
