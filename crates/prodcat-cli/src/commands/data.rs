//! `prodcat data ...`: generate the demo catalogue, import catalogues into dataset versions, and
//! list, inspect and compare versions.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use prodcat_dataset::generate::{generate_catalogue, GenerateOptions, GenerateSummary};
use prodcat_dataset::{
    DatasetVersion, ImportOptions, ImportOutcome, ImportProgress, ImportSource, SplitRatios,
};

use crate::output::{self, Progress};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write a generated demo catalogue in the challenge layout (for demos and tests anywhere).
    Generate(GenerateArgs),
    /// Import a catalogue (challenge layout, new-data drop, or explicit files) as a dataset version.
    Import(ImportArgs),
    /// List dataset versions, newest first.
    List(JsonArgs),
    /// Show a version: rows, class distribution per split, empty descriptions, images.
    Show(ShowArgs),
    /// Compare two versions: rows added, removed, relabelled, changed.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output folder (created; existing files with the same names are replaced).
    #[arg(long, env = "PRODCAT_GENERATE_OUT")]
    pub out: PathBuf,
    /// Number of products.
    #[arg(long, default_value_t = 3000, env = "PRODCAT_GENERATE_PRODUCTS")]
    pub products: usize,
    /// Random seed: the same seed always gives the same catalogue.
    #[arg(long, default_value_t = 42, env = "PRODCAT_GENERATE_SEED")]
    pub seed: u64,
    /// Write only the CSV files, no images.
    #[arg(long)]
    pub no_images: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Folder in the challenge layout (X_train_update.csv, Y_train_CVw08PX.csv,
    /// images/image_train/) or the new-data drop layout (New_X_train.csv, New_y_train.csv, images/).
    pub dir: Option<PathBuf>,
    /// Texts CSV (`,designation,description,productid,imageid`), instead of a folder.
    #[arg(long, conflicts_with = "dir")]
    pub texts: Option<PathBuf>,
    /// Labels CSV (`,prdtypecode`), joined to the texts on the unnamed index column.
    #[arg(long, requires = "texts")]
    pub labels: Option<PathBuf>,
    /// Folder of images named image_<imageid>_product_<productid>.jpg.
    #[arg(long, requires = "texts")]
    pub images: Option<PathBuf>,
    /// Stop at the first problem instead of skipping bad rows.
    #[arg(long, env = "PRODCAT_IMPORT_STRICT")]
    pub strict: bool,
    /// Treat a missing image file as a bad row (by default the row is imported text-only).
    #[arg(long)]
    pub require_images: bool,
    /// Train, validation and test shares of the stratified split.
    #[arg(
        long,
        default_value = "0.8,0.1,0.1",
        value_name = "TRAIN,VALIDATION,TEST"
    )]
    pub split: String,
    /// Seed of the split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// A note stored with the version.
    #[arg(long, default_value = "")]
    pub note: String,
    /// Largest accepted image in pixels (protects against decompression bombs).
    #[arg(long, default_value_t = 40_000_000)]
    pub max_image_pixels: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Version id (or a unique prefix, or `latest`).
    pub version: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older version.
    pub from: String,
    /// The newer version.
    pub to: String,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(settings: &Settings, command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Generate(args) => {
            let summary = generate(&args.out, args.products, args.seed, !args.no_images)?;
            print_generate_summary(&summary);
            Ok(())
        }
        DataCommand::Import(args) => import(settings, args).await.map(|_| ()),
        DataCommand::List(args) => list(settings, args.json).await,
        DataCommand::Show(args) => show(settings, &args.version, args.json).await,
        DataCommand::Diff(args) => diff(settings, &args.from, &args.to, args.json).await,
    }
}

/// Generates the demo catalogue with a progress bar.
pub fn generate(
    out: &std::path::Path,
    products: usize,
    seed: u64,
    images: bool,
) -> anyhow::Result<GenerateSummary> {
    let progress = Progress::new("generating", products as u64, "products");
    let options = GenerateOptions {
        products,
        seed,
        images,
    };
    let summary = generate_catalogue(out, &options, &|done| progress.set(done as u64, ""))
        .with_context(|| format!("failed to generate the demo catalogue in {}", out.display()))?;
    progress.finish();
    Ok(summary)
}

pub fn print_generate_summary(summary: &GenerateSummary) {
    println!(
        "Generated a DEMO catalogue (synthetic data, not real products) in {}",
        summary.out_dir.display()
    );
    println!(
        "  {} products, {} images (500x500 JPEG), {} empty descriptions ({}), 27 categories in the reference proportions",
        summary.products,
        summary.images,
        summary.empty_descriptions,
        output::percent(summary.empty_descriptions as i64, summary.products as i64)
    );
}

struct ImportBar(Progress);

impl ImportProgress for ImportBar {
    fn advanced(&self, bytes_read: u64, rows_done: u64) -> bool {
        self.0.set(bytes_read, &format!("{rows_done} rows"));
        true
    }
}

/// Imports a catalogue and prints the outcome.
pub async fn import(settings: &Settings, args: ImportArgs) -> anyhow::Result<DatasetVersion> {
    let source = match (&args.dir, &args.texts) {
        (Some(dir), None) => ImportSource::detect(dir)?,
        (None, Some(texts)) => {
            ImportSource::explicit(texts.clone(), args.labels.clone(), args.images.clone())?
        }
        _ => anyhow::bail!(
            "say what to import: a folder (prodcat data import DIR) or --texts X.csv [--labels Y.csv] [--images DIR]"
        ),
    };
    let options = ImportOptions {
        strict: args.strict,
        require_images: args.require_images,
        split_seed: args.seed,
        split_ratios: SplitRatios::parse(&args.split)?,
        note: args.note.clone(),
        max_image_pixels: args.max_image_pixels,
        ..ImportOptions::default()
    };
    let database = settings.open_database().await?;
    let objects = settings.open_objects()?;
    let total = std::fs::metadata(&source.texts)
        .map(|m| m.len())
        .unwrap_or(0);
    if !args.json {
        eprintln!(
            "Importing {} ({} layout){}{}",
            source.texts.display(),
            source.layout.as_str(),
            source
                .labels
                .as_ref()
                .map(|p| format!(", labels {}", p.display()))
                .unwrap_or_else(|| ", no labels".to_string()),
            source
                .images
                .as_ref()
                .map(|p| format!(", images {}", p.display()))
                .unwrap_or_else(|| ", no images folder".to_string()),
        );
    }
    let started = Instant::now();
    let bar = ImportBar(Progress::new("importing", total, "bytes"));
    let outcome = prodcat_dataset::import_dataset(&database, &objects, &source, &options, &bar)
        .await
        .context("import failed; nothing was stored")?;
    bar.0.finish();
    let elapsed = started.elapsed();
    let report = outcome.report();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "created": matches!(outcome, ImportOutcome::Created { .. }),
                "version": outcome.version(),
                "report": report,
                "seconds": elapsed.as_secs_f64(),
            }))?
        );
        return Ok(outcome.version().clone());
    }
    for problem in report.problems.iter().take(20) {
        eprintln!(
            "  skipped {}:{}: {}",
            problem.file, problem.line, problem.message
        );
    }
    if report.problems.len() > 20 {
        eprintln!("  ... and {} more problems", report.problems.len() - 20);
    }
    let version = outcome.version();
    match &outcome {
        ImportOutcome::Created { .. } => println!("Created dataset version {}", version.id),
        ImportOutcome::AlreadyExists { .. } => println!(
            "Nothing to do: this data is already dataset version {} (imported before, unchanged)",
            version.id
        ),
    }
    let rate = report.rows_read as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "  rows read {}, imported {}, skipped {} ({}; {:.0} rows/s)",
        report.rows_read,
        report.rows_imported,
        report.rows_skipped,
        output::duration(elapsed),
        rate
    );
    println!(
        "  images found {}, missing {} (imported text-only), newly stored {}",
        report.images_found, report.images_missing, report.images_stored_new
    );
    if report.photo_only_rows > 0 {
        println!(
            "  rows without a title kept for their photo (image branch only): {}",
            report.photo_only_rows
        );
    }
    for (kind, count) in report.problem_counts() {
        println!("  problem {kind:?}: {count} rows");
    }
    Ok(version.clone())
}

async fn list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let versions = prodcat_dataset::list_versions(&database).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(());
    }
    if versions.is_empty() {
        println!("No dataset versions yet. Import one with `prodcat data import DIR`.");
        return Ok(());
    }
    let mut table = output::table(&[
        "version", "created", "rows", "labelled", "images", "parent", "source",
    ]);
    for version in versions {
        table.add_row(vec![
            version.id.to_string(),
            format_time(version.created_at_ms),
            version.row_count.to_string(),
            version.labelled_count.to_string(),
            version.image_count.to_string(),
            version
                .parent
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".to_string()),
            version.source,
        ]);
    }
    println!("{table}");
    Ok(())
}

async fn show(settings: &Settings, reference: &str, json: bool) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let details = prodcat_dataset::show_version(&database, reference).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&details)?);
        return Ok(());
    }
    let version = &details.version;
    println!("Dataset version {}", version.id);
    println!("  created      {}", format_time(version.created_at_ms));
    println!("  source       {}", version.source);
    if !version.note.is_empty() {
        println!("  note         {}", version.note);
    }
    if let Some(parent) = &version.parent {
        println!("  parent       {parent}");
    }
    println!(
        "  rows         {} ({} labelled)",
        version.row_count, version.labelled_count
    );
    println!(
        "  split        train {} / validation {} / test {} (seed {}, shares {})",
        details.split_sizes.0,
        details.split_sizes.1,
        details.split_sizes.2,
        version.split_seed,
        version.split_ratios
    );
    println!(
        "  descriptions {} empty ({})",
        version.empty_description_count,
        output::percent(version.empty_description_count, version.row_count)
    );
    println!(
        "  images       {} found, {} missing ({} with image)",
        version.image_count,
        version.missing_image_count,
        output::percent(version.image_count, version.row_count)
    );
    let mut table = output::table(&["code", "category", "rows", "share", "train", "val", "test"]);
    for (code, train, validation, test) in &details.class_distribution {
        let rows = train + validation + test;
        table.add_row(vec![
            code.map(|c| c.to_string())
                .unwrap_or_else(|| "-".to_string()),
            code.map(|c| c.name().to_string())
                .unwrap_or_else(|| "(unlabelled)".to_string()),
            rows.to_string(),
            output::percent(rows, version.row_count),
            train.to_string(),
            validation.to_string(),
            test.to_string(),
        ]);
    }
    println!("{table}");
    Ok(())
}

async fn diff(settings: &Settings, from: &str, to: &str, json: bool) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let diff = prodcat_dataset::diff_versions(&database, from, to).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&diff)?);
        return Ok(());
    }
    println!("Changes from {} to {}", diff.from, diff.to);
    println!("  added           {}", diff.added);
    println!("  removed         {}", diff.removed);
    println!("  relabelled      {}", diff.relabelled);
    println!(
        "  content changed {} (same label, other text or image)",
        diff.content_changed
    );
    println!("  unchanged       {}", diff.unchanged);
    for (product, old, new) in &diff.relabelled_examples {
        println!(
            "    product {product}: {} -> {}",
            old.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            new.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

/// Formats Unix milliseconds as UTC `YYYY-MM-DD HH:MM`.
pub use prodcat_domain::format_utc_minutes as format_time;

#[cfg(test)]
mod tests {
    #[test]
    fn formats_times() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00");
        assert_eq!(super::format_time(1_795_300_000_000), "2026-11-21 22:26");
    }
}
