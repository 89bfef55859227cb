//! `prodcat quickstart`: the whole job on the embedded default, in one command. A second run
//! reuses what exists.

use std::path::PathBuf;

use clap::Args;

use crate::commands::data;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Real data in the challenge layout to use instead of the generated demo catalogue.
    #[arg(long, env = "PRODCAT_QUICKSTART_DATA")]
    pub data: Option<PathBuf>,
    /// Size of the generated demo catalogue.
    #[arg(long, default_value_t = 3000)]
    pub products: usize,
    /// Seed of the generated demo catalogue.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub async fn run(settings: &Settings, args: QuickstartArgs) -> anyhow::Result<()> {
    println!(
        "prodcat quickstart: data in {}",
        settings.data_dir.display()
    );
    let catalogue = match &args.data {
        Some(dir) => dir.clone(),
        None => {
            let dir = settings
                .data_dir
                .join(format!("demo-catalogue-{}-{}", args.products, args.seed));
            if dir.join("X_train_update.csv").is_file() && dir.join("GENERATED-DATA.txt").is_file()
            {
                println!(
                    "[1/2] demo catalogue already generated in {}",
                    dir.display()
                );
            } else {
                println!(
                    "[1/2] generating the demo catalogue ({} products)",
                    args.products
                );
                let summary = data::generate(&dir, args.products, args.seed, true)?;
                data::print_generate_summary(&summary);
            }
            dir
        }
    };
    println!("[2/2] importing {}", catalogue.display());
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
    println!();
    println!("Dataset version {} is ready:", version.id);
    println!("  prodcat data show {}", version.id);
    println!("  prodcat data list");
    Ok(())
}
