//! Writes the multilingual-e5-small embedding of every product of a texts CSV in the challenge
//! layout (`,designation,description,productid,imageid`) as `index,v1,...,v384` lines: the
//! input of the companion-features study of the text branch (`benchmarks/quality/
//! e5-companion.py`).
//!
//! ```text
//! cargo build --release --workspace --examples
//! target/release/examples/embed_csv MODEL_DIR X.csv OUT.csv [CHARACTERS]
//! ```
//!
//! Each product's normalised text (title, then description) is cut to its first `CHARACTERS`
//! characters (160 by default) and embedded as a query.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use prodcat_embed::model_directory::e5_directory;
use prodcat_embed::TextEmbedder;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.len() > 4 {
        bail!("usage: embed_csv MODEL_DIR X.csv OUT.csv [CHARACTERS]");
    }
    let embedder = TextEmbedder::load(&e5_directory(Path::new(&args[0])))
        .context("loading multilingual-e5-small (scripts/setup fetches it)")?;
    let characters: usize = match args.get(3) {
        Some(value) => value.parse().context("CHARACTERS must be a whole number")?,
        None => 160,
    };
    let mut reader = csv::Reader::from_path(&args[1]).with_context(|| args[1].clone())?;
    let mut indices = Vec::new();
    let mut texts = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{} row {}", args[1], line + 2))?;
        if record.len() < 3 {
            bail!(
                "{} row {}: expected index, designation, description",
                args[1],
                line + 2
            );
        }
        let text = prodcat_domain::product_text(&record[1], &record[2]);
        indices.push(record[0].to_string());
        texts.push(text.chars().take(characters).collect::<String>());
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let started = Instant::now();
    let vectors = embedder.embed_queries(&refs);
    eprintln!("{} texts embedded in {:.1?}", refs.len(), started.elapsed());
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(&args[2]).with_context(|| args[2].clone())?);
    for (index, vector) in indices.iter().zip(vectors) {
        let values: Vec<String> = vector.iter().map(|v| format!("{v:.6}")).collect();
        writeln!(out, "{index},{}", values.join(","))?;
    }
    out.flush()?;
    Ok(())
}
