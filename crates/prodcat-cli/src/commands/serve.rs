//! `prodcat serve`: the HTTP service (prediction, catalogue, review queue, search, jobs,
//! models, metrics, OpenAPI and Swagger UI) until SIGTERM or Ctrl-C, which lets in-flight
//! requests finish.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prodcat_pipelines::Platform;
use prodcat_server::{load_or_create_secret, RunningServer, ServerSettings};

use crate::commands::train;
use crate::settings::Settings;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (keep it on 127.0.0.1 behind a reverse proxy).
    #[arg(long, env = "PRODCAT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Requests per second each client (token subject, else address) may make on average;
    /// 0 disables the limit. Over it, requests answer 429 with Retry-After.
    #[arg(long, env = "PRODCAT_RATE_LIMIT", default_value_t = 2000.0)]
    pub rate_limit: f64,
    /// Requests a client may make in a burst above the average.
    #[arg(long, env = "PRODCAT_RATE_BURST", default_value_t = 4000.0)]
    pub rate_burst: f64,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "PRODCAT_TOKEN_LIFETIME", default_value_t = 3600)]
    pub token_lifetime: u64,
    /// Largest request body in MiB (uploads of classification jobs have their own limit).
    #[arg(long, env = "PRODCAT_BODY_LIMIT_MIB", default_value_t = 16)]
    pub body_limit_mib: usize,
    /// Largest upload of a classification job, in MiB.
    #[arg(long, env = "PRODCAT_UPLOAD_LIMIT_MIB", default_value_t = 512)]
    pub upload_limit_mib: usize,
    /// A request taking longer answers 503 with a timeout error, in seconds.
    #[arg(long, env = "PRODCAT_REQUEST_TIMEOUT", default_value_t = 60)]
    pub request_timeout: u64,
    /// File holding the token signing secret (at least 32 bytes). Default:
    /// <data-dir>/jwt-secret, created once with owner-only permissions.
    #[arg(long, env = "PRODCAT_JWT_SECRET_FILE", value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Folder with Swagger UI's files (npm package swagger-ui-dist; scripts/setup fetches it).
    #[arg(long, env = "PRODCAT_SWAGGER_UI_DIR", value_name = "DIR")]
    pub swagger_ui_dir: Option<PathBuf>,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rate_limit: 2000.0,
            rate_burst: 4000.0,
            token_lifetime: 3600,
            body_limit_mib: 16,
            upload_limit_mib: 512,
            request_timeout: 60,
            jwt_secret_file: None,
            swagger_ui_dir: None,
        }
    }
}

/// The service's settings from the command line and the resolved settings.
pub fn server_settings(settings: &Settings, args: &ServeArgs) -> anyhow::Result<ServerSettings> {
    let secret = match &args.jwt_secret_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read the JWT secret {}", path.display()))?;
            text.trim().as_bytes().to_vec()
        }
        None => load_or_create_secret(&settings.data_dir)?,
    };
    let mut server = ServerSettings::with_secret(secret);
    server.listen = args.listen;
    server.rate_limit_per_second = args.rate_limit;
    server.rate_limit_burst = args.rate_burst;
    server.token_lifetime = Duration::from_secs(args.token_lifetime);
    server.body_limit_bytes = args.body_limit_mib << 20;
    server.upload_limit_bytes = args.upload_limit_mib << 20;
    server.request_timeout = Duration::from_secs(args.request_timeout);
    server.swagger_ui_dir = args.swagger_ui_dir.clone();
    server.search_cache_dir = Some(settings.data_dir.join("search-cache"));
    server.validate()?;
    Ok(server)
}

/// Prints where the service is and how to get a token.
pub fn print_ready(server: &RunningServer) {
    let base = format!("http://{}", server.address);
    println!("prodcat is serving at {base}");
    println!("  {base}/          what this service offers");
    println!("  {base}/docs      interactive API documentation (Swagger UI)");
    println!("  {base}/metrics   Prometheus metrics");
    println!("  {base}/readyz    readiness (model loaded, database reachable)");
    println!(
        "Get an admin token (create the user once with `prodcat users add admin --role admin`):"
    );
    println!(
        "  curl -s {base}/v1/auth/token -d grant_type=password -d username=admin -d password=..."
    );
    println!("Stop with Ctrl-C (in-flight requests finish first).");
}

/// Serves `platform` until SIGTERM or Ctrl-C.
pub async fn serve(platform: Platform, server: ServerSettings) -> anyhow::Result<()> {
    prodcat_server::serve_until_signal(platform, server, print_ready).await?;
    println!("prodcat stopped");
    Ok(())
}

pub async fn run(settings: &Settings, args: ServeArgs) -> anyhow::Result<()> {
    let server = server_settings(settings, &args)?;
    let platform = train::platform(settings)
        .await?
        .with_webhook_url(settings.webhook_url.clone());
    serve(platform, server).await
}
