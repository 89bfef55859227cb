//! Extracts MobileNetV2 features for every labelled training image of the sample and writes
//! them as raw little-endian f32 rows (1280 per image) plus a CSV of file names and labels, for
//! offline analysis of heads and recipes.
//!
//! `cargo run --release -p prodcat-vision --example extract-features -- OUTPUT_PREFIX [product|imagenet]`
//! (reads `$PRODCAT_SAMPLE_DATA/images/images_index.csv`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use prodcat_vision::{default_mobilenet_directory, ImageFeatureExtractor, PreprocessOptions};

fn main() -> Result<()> {
    let mut arguments = std::env::args().skip(1);
    let prefix = PathBuf::from(
        arguments
            .next()
            .context("usage: extract-features OUTPUT_PREFIX [product|imagenet]")?,
    );
    let options = match arguments.next().as_deref() {
        None | Some("product") => PreprocessOptions::product_features(),
        Some("imagenet") => PreprocessOptions::imagenet_classification(),
        Some(other) => bail!("unknown recipe {other}"),
    };
    let sample = PathBuf::from(
        std::env::var_os("PRODCAT_SAMPLE_DATA").context("PRODCAT_SAMPLE_DATA is not set")?,
    );
    let index = std::fs::read_to_string(sample.join("images/images_index.csv"))?;
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for line in index.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() > 5 && fields[1] == "train" {
            files.push(sample.join("images").join(fields[0]));
            labels.push(fields[5].to_string());
        }
    }
    let extractor = ImageFeatureExtractor::load(&default_mobilenet_directory(), options)?;
    let mut features =
        std::io::BufWriter::new(std::fs::File::create(prefix.with_extension("f32"))?);
    let mut listing = std::io::BufWriter::new(std::fs::File::create(prefix.with_extension("csv"))?);
    writeln!(listing, "file,prdtypecode")?;
    for ((result, file), label) in extractor
        .extract_files(&files)
        .into_iter()
        .zip(&files)
        .zip(&labels)
    {
        let output = result.with_context(|| format!("extracting {}", file.display()))?;
        for value in output.features {
            features.write_all(&value.to_le_bytes())?;
        }
        writeln!(listing, "{},{label}", file.display())?;
    }
    println!(
        "wrote {} feature rows to {}",
        files.len(),
        prefix.with_extension("f32").display()
    );
    Ok(())
}
