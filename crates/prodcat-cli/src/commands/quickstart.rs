//! `prodcat quickstart`: the whole job on the embedded default, in one command: the demo
//! catalogue (or real data), the pretrained weights, import, training of text + image + fusion,
//! the champion alias. A second run reuses what exists and takes seconds.

use std::path::{Path, PathBuf};

use clap::Args;

use prodcat_platform::Platform;

use crate::commands::{data, serve, train};
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Real data in the challenge layout to use instead of the generated demo catalogue.
    #[arg(long, env = "PRODCAT_QUICKSTART_DATA")]
    pub data: Option<PathBuf>,
    /// Size of the generated demo catalogue.
    #[arg(long, default_value_t = 2000)]
    pub products: usize,
    /// Seed of the generated demo catalogue and of training.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Train the text branch only (no pretrained image weights needed).
    #[arg(long)]
    pub text_only: bool,
    /// Stop once the champion is ready instead of serving it.
    #[arg(long, env = "PRODCAT_QUICKSTART_NO_SERVE")]
    pub no_serve: bool,
    #[command(flatten)]
    pub serve: serve::ServeArgs,
}

/// Creates the `admin` user once, with a random password kept in `<data-dir>/admin-password`
/// (owner-only), and says how to get a token.
async fn ensure_admin(settings: &Settings, platform: &Platform) -> anyhow::Result<()> {
    let path = settings.data_dir.join("admin-password");
    if prodcat_catalogue::users::get_user(&platform.database, "admin")
        .await?
        .is_none()
    {
        let password = prodcat_catalogue::users::generate_secret();
        write_private(&path, &password)?;
        prodcat_catalogue::users::add_user(
            &platform.database,
            &prodcat_catalogue::NewUser {
                name: "admin".to_string(),
                role: prodcat_catalogue::Role::Admin,
                kind: prodcat_catalogue::UserKind::Person,
                secret: password.clone(),
            },
        )
        .await?;
        println!(
            "created the user admin (role admin); its password is in {}",
            path.display()
        );
    }
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    Ok(())
}

/// Runs `scripts/setup` when the pretrained files are missing and the script is at hand.
fn ensure_models(model_dir: &Path) -> anyhow::Result<bool> {
    let present = |dir: &Path| {
        dir.join("mobilenet-v2/manifest.json").is_file()
            && dir.join("e5-small/manifest.json").is_file()
    };
    if present(model_dir) {
        return Ok(true);
    }
    let script = Path::new("scripts/setup");
    if !script.is_file() {
        eprintln!(
            "note: pretrained models are missing in {} and scripts/setup is not here; \
             training the text branch only",
            model_dir.display()
        );
        return Ok(false);
    }
    println!("fetching the pretrained models (scripts/setup; once)");
    let status = std::process::Command::new(script)
        .env("PRODCAT_MODEL_DIR", model_dir)
        .status()?;
    if !status.success() {
        anyhow::bail!("scripts/setup failed ({status}); see its output above");
    }
    Ok(present(model_dir))
}

/// The catalogue to import: `--data`, or the demo catalogue (generated once).
fn catalogue_folder(settings: &Settings, args: &QuickstartArgs) -> anyhow::Result<PathBuf> {
    Ok(match &args.data {
        Some(dir) => dir.clone(),
        None => {
            let dir = settings
                .data_dir
                .join(format!("demo-catalogue-{}-{}", args.products, args.seed));
            if dir.join("X_train_update.csv").is_file() && dir.join("GENERATED-DATA.txt").is_file()
            {
                println!(
                    "[1/3] demo catalogue already generated in {}",
                    dir.display()
                );
            } else {
                println!(
                    "[1/3] generating the demo catalogue ({} products)",
                    args.products
                );
                let summary = data::generate(&dir, args.products, args.seed, true)?;
                data::print_generate_summary(&summary);
            }
            dir
        }
    })
}

pub async fn run(settings: &Settings, args: QuickstartArgs) -> anyhow::Result<()> {
    println!(
        "prodcat quickstart: data in {}, models in {}",
        settings.data_dir.display(),
        settings.model_dir.display()
    );
    let with_images = !args.text_only && ensure_models(&settings.model_dir)?;
    let catalogue = catalogue_folder(settings, &args)?;
    println!("[2/3] importing {}", catalogue.display());
    let version = data::import(
        settings,
        data::ImportArgs {
            dir: Some(catalogue),
            texts: None,
            labels: None,
            images: None,
            strict: false,
            require_images: false,
            split: "0.8,0.1,0.1".to_string(),
            seed: 42,
            note: "quickstart".to_string(),
            max_image_pixels: 40_000_000,
            json: false,
        },
    )
    .await?;
    let platform = Platform::from_settings(settings).await?;
    let champion = prodcat_registry::resolve(&platform.database, "champion")
        .await
        .ok();
    let champion_fits = champion.as_ref().is_some_and(|c| {
        c.dataset_version.as_ref() == Some(&version.id)
            && (!with_images
                || c.manifest
                    .get("branches")
                    .and_then(|b| b.as_array())
                    .is_some_and(|b| b.len() == 2))
    });
    let champion_id = if champion_fits {
        let id = champion.map(|c| c.id.to_string()).unwrap_or_default();
        println!("[3/3] champion {id} was trained on this dataset version already");
        id
    } else {
        println!(
            "[3/3] training {} and promoting it to champion",
            if with_images {
                "text + image + fusion"
            } else {
                "the text branch"
            }
        );
        let seed = args.seed.to_string();
        let dataset = version.id.to_string();
        let args = train::TrainArgs::from_words(&[
            "--dataset",
            &dataset,
            "--branch",
            if with_images { "fusion" } else { "text" },
            "--seed",
            &seed,
            "--name",
            "quickstart",
            "--promote",
        ])?;
        train::train(&platform, &args).await?
    };
    let added =
        prodcat_catalogue::products::load_dataset(&platform.database, &version.id, "quickstart")
            .await?;
    if added > 0 {
        println!(
            "loaded {added} products of {} into the live catalogue",
            version.id
        );
    }
    println!();
    println!(
        "Ready. Dataset version {}, champion model {champion_id}.",
        version.id
    );
    println!("  prodcat predict --designation \"Piscine tubulaire Intex 366x76\"");
    println!("  prodcat evaluate --model champion");
    println!(
        "  prodcat models list      prodcat runs list      prodcat data show {}",
        version.id
    );
    if args.no_serve {
        return Ok(());
    }
    println!();
    ensure_admin(settings, &platform).await?;
    let hint = format!(
        "Sign in as admin (at /ui, or for an API token below) with the password in {}:",
        settings.data_dir.join("admin-password").display()
    );
    serve::serve(platform, settings, &hint).await
}
