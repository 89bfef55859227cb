//! `prodcat backup` and `prodcat restore`: the whole platform (database snapshot, objects, a
//! manifest of what they hold) into a folder, and back into an empty database.

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Args;
use prodcat_platform::backup::{self, BackupManifest, CheckRecord};
use prodcat_platform::Platform;

use crate::output::{table, Progress};
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The new folder to write (must not exist or be empty) [default:
    /// ./prodcat-backup-YYYYMMDD-HHMM].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Leave the object store out (when it is backed up by other means, such as S3 bucket
    /// versioning); the manifest says so.
    #[arg(long)]
    pub no_objects: bool,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A folder written by `prodcat backup`.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A progress bar created once the number of objects is known.
fn object_progress(label: &'static str) -> impl Fn(usize, usize) + Sync {
    let bar: OnceLock<Progress> = OnceLock::new();
    move |done, total| {
        let progress = bar.get_or_init(|| Progress::new(label, total as u64, "objects"));
        progress.set(done as u64, "");
        if done == total {
            progress.finish();
        }
    }
}

fn print_checks(checks: &[CheckRecord]) {
    let mut summary = table(&["holds", "rows", "first", "sha256"]);
    for check in checks {
        summary.add_row(vec![
            check.name.clone(),
            check.rows.to_string(),
            check.first.clone().unwrap_or_default(),
            check.sha256[..16].to_string(),
        ]);
    }
    println!("{summary}");
}

fn print_manifest(manifest: &BackupManifest, folder: &std::path::Path) {
    println!(
        "backup of a {} database in {}: {}, {} objects ({} bytes){}",
        manifest.backend,
        folder.display(),
        manifest.database_file,
        manifest.object_count,
        manifest.object_bytes,
        if manifest.objects_included {
            ""
        } else {
            "; objects not included"
        }
    );
    print_checks(&manifest.checks);
}

pub async fn run_backup(settings: &Settings, args: BackupArgs) -> anyhow::Result<()> {
    let platform = Platform::from_settings(settings).await?;
    let out = args
        .out
        .unwrap_or_else(|| backup::default_folder(std::path::Path::new(".")));
    let manifest = backup::backup(
        &platform,
        &settings.database_url,
        &out,
        !args.no_objects,
        &object_progress("objects"),
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        print_manifest(&manifest, &out);
        println!(
            "restore it into an empty database with: prodcat restore --from {}",
            out.display()
        );
    }
    Ok(())
}

pub async fn run_restore(settings: &Settings, args: RestoreArgs) -> anyhow::Result<()> {
    let objects = settings.open_objects()?;
    let (report, database) = backup::restore(
        &args.from,
        &settings.database_url,
        &objects,
        &object_progress("objects"),
    )
    .await?;
    database.close().await;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "manifest": report.manifest,
                "objectsCopied": report.objects_copied,
                "checks": report.checks,
            })
        );
    } else {
        println!(
            "restored {} into {} ({} objects copied); every check matches the backup:",
            args.from.display(),
            prodcat_platform::settings::redact_url(&settings.database_url),
            report.objects_copied
        );
        print_checks(&report.checks);
    }
    Ok(())
}
