//! `prodcat serve`: the HTTP service (prediction, catalogue, review queue, search, jobs,
//! models, metrics, OpenAPI and Swagger UI, the admin web UI) until SIGTERM or Ctrl-C, which lets in-flight
//! requests finish.

use anyhow::Context;
use prodcat_platform::Platform;
use prodcat_server::{RunningServer, SigningKeys};

pub use crate::settings::ServeArgs;
use crate::settings::Settings;

/// Prints where the service is and how to get a token.
pub fn print_ready(server: &RunningServer, admin_hint: &str) {
    let base = format!("http://{}", server.address);
    println!("prodcat is serving at {base}");
    println!("  {base}/ui        the admin web UI (sign in with a prodcat account)");
    println!("  {base}/          what this service offers");
    println!("  {base}/docs      interactive API documentation (Swagger UI)");
    println!("  {base}/metrics   Prometheus metrics");
    println!("  {base}/readyz    readiness (model loaded, database reachable)");
    println!("{admin_hint}");
    println!(
        "  curl -s {base}/v1/auth/token -d grant_type=password -d username=admin -d password=..."
    );
    println!("Stop with Ctrl-C (in-flight requests finish first).");
}

/// Serves `platform` until SIGTERM or Ctrl-C.
pub async fn serve(
    platform: Platform,
    settings: &Settings,
    admin_hint: &str,
) -> anyhow::Result<()> {
    let keys = SigningKeys::load(
        settings.server.jwt_secret_file.as_deref(),
        &settings.data_dir,
    )
    .context("failed to load the token signing keys")?;
    prodcat_server::serve_until_signal(platform, settings.server.clone(), keys, |server| {
        print_ready(server, admin_hint)
    })
    .await?;
    println!("prodcat stopped");
    Ok(())
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let platform = Platform::for_service(settings).await?;
    serve(
        platform,
        settings,
        "Get an admin token (create the user once with `prodcat users add admin --role admin`):",
    )
    .await
}
