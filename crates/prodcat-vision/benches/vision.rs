//! Image-branch benchmark: throughput of decode + preprocess + MobileNetV2 on 1 and 2 cores,
//! time and peak memory over the real images and over 10,000 generated variants, and
//! image-only weighted F1 of the heads under 5-fold stratified cross-validation.
//!
//! `cargo bench -p prodcat-vision --bench vision` with `PRODCAT_SAMPLE_DATA` pointing at the
//! sample (images under `images/image_train/`, labels in `images/images_index.csv`) and the
//! model fetched by `scripts/models/fetch-mobilenet.py`. `PRODCAT_VISION_BENCH` selects
//! sections (comma-separated: throughput, real, generated, f1, recipes; default all).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use prodcat_domain::CategoryCode;
use prodcat_vision::network::MULTIPLY_ADDS_PER_IMAGE;
use prodcat_vision::{
    default_mobilenet_directory, BorderCropOptions, HeadKind, HeadTrainingOptions,
    ImageFeatureExtractor, ImageHead, PreprocessOptions, Preprocessor, ResizeGeometry,
};

const FOLDS: usize = 5;

struct LabelledImage {
    path: PathBuf,
    class_index: usize,
}

fn read_labelled_images(sample: &Path) -> Result<Vec<LabelledImage>> {
    let index = sample.join("images/images_index.csv");
    let text =
        std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty index")?.split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|&field| field == name)
            .with_context(|| format!("no {name} column"))
    };
    let (file_column, split_column, code_column) =
        (column("file")?, column("split")?, column("prdtypecode")?);
    let mut images = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.get(split_column) != Some(&"train") {
            continue;
        }
        let code =
            CategoryCode::parse(fields[code_column]).map_err(|error| anyhow::anyhow!("{error}"))?;
        images.push(LabelledImage {
            path: sample.join("images").join(fields[file_column]),
            class_index: code.index(),
        });
    }
    Ok(images)
}

/// Peak resident memory of this process (VmHWM) in MiB.
fn peak_memory_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn current_memory_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Reset the kernel's peak-RSS counter so the next phase measures its own peak.
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU seconds (user + system) this process has used so far, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            let after = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / ticks_per_second)
        })
        .unwrap_or(f64::NAN)
}

fn gflops(images_per_second: f64) -> f64 {
    images_per_second * 2.0 * MULTIPLY_ADDS_PER_IMAGE / 1e9
}

fn extract_all(extractor: &ImageFeatureExtractor, paths: &[PathBuf]) -> Result<Vec<Vec<f32>>> {
    extractor
        .extract_files(paths)
        .into_iter()
        .zip(paths)
        .map(|(result, path)| {
            result
                .map(|output| output.features)
                .with_context(|| format!("extracting {}", path.display()))
        })
        .collect()
}

fn throughput(network_directory: &Path, paths: &[PathBuf]) -> Result<()> {
    println!("\n## Throughput (real images, product recipe)\n");
    println!("| stage | threads | images | wall s | images/s (wall) | GFLOP/s (wall) | CPU s | images per CPU-second | GFLOP/s per busy core |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let extractor =
        ImageFeatureExtractor::load(network_directory, PreprocessOptions::product_features())?;
    // Warm-up: page cache and network states.
    extract_all(&extractor, &paths[..16.min(paths.len())])?;
    for threads in [2usize, 1] {
        let extractor =
            ImageFeatureExtractor::load(network_directory, PreprocessOptions::product_features())?
                .with_threads(threads);
        let started = Instant::now();
        let cpu_started = cpu_seconds();
        extract_all(&extractor, paths)?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_started;
        let rate = paths.len() as f64 / seconds;
        let cpu_rate = paths.len() as f64 / cpu;
        println!(
            "| read + decode + crop + resize + network | {threads} | {} | {seconds:.2} | {rate:.1} | {:.1} | {cpu:.1} | {cpu_rate:.1} | {:.1} |",
            paths.len(),
            gflops(rate),
            gflops(cpu_rate)
        );
    }
    // Breakdown: preprocessing alone and the network alone, single thread.
    let subset = &paths[..400.min(paths.len())];
    let preprocessor = Preprocessor::new(PreprocessOptions::product_features());
    let bytes: Vec<Vec<u8>> = subset.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let prepared: Vec<_> = bytes
        .iter()
        .map(|image| preprocessor.prepare(image))
        .collect::<Result<_, _>>()?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_started;
    println!(
        "| decode + crop + resize + normalise (from memory) | 1 | {} | {seconds:.2} | {:.1} | - | {cpu:.1} | {:.1} | - |",
        subset.len(),
        subset.len() as f64 / seconds,
        subset.len() as f64 / cpu
    );
    for threads in [1usize, 2] {
        let started = Instant::now();
        let cpu_started = cpu_seconds();
        for result in extractor.network().run_batch(&prepared, threads) {
            result?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_started;
        let rate = subset.len() as f64 / seconds;
        let cpu_rate = subset.len() as f64 / cpu;
        println!(
            "| network only (prepared tensors) | {threads} | {} | {seconds:.2} | {rate:.1} | {:.1} | {cpu:.1} | {cpu_rate:.1} | {:.1} |",
            subset.len(),
            gflops(rate),
            gflops(cpu_rate)
        );
    }
    Ok(())
}

fn real_images(network_directory: &Path, paths: &[PathBuf]) -> Result<Vec<Vec<f32>>> {
    println!("\n## All real images (product recipe, 2 threads)\n");
    reset_peak_memory();
    let before = current_memory_mib();
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let extractor =
        ImageFeatureExtractor::load(network_directory, PreprocessOptions::product_features())?
            .with_threads(2);
    let load_seconds = started.elapsed().as_secs_f64();
    let features = extract_all(&extractor, paths)?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_started;
    println!("| images | model load + plan (s) | total wall (s) | images/s (wall) | total CPU (s) | RSS before (MiB) | peak RSS (MiB) |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {load_seconds:.2} | {seconds:.2} | {:.1} | {cpu:.1} | {before:.0} | {:.0} |",
        paths.len(),
        paths.len() as f64 / (seconds - load_seconds),
        peak_memory_mib()
    );
    Ok(features)
}

/// 10,000 variants of the real images (flips and rotations, re-encoded as JPEG quality 90),
/// written to disk first, then extracted from the files.
fn generated_images(network_directory: &Path, paths: &[PathBuf], count: usize) -> Result<()> {
    println!("\n## {count} generated images (real images flipped/rotated, re-encoded JPEG q90)\n");
    let directory =
        std::env::temp_dir().join(format!("prodcat-vision-generated-{}", std::process::id()));
    std::fs::create_dir_all(&directory)?;
    let generation_started = Instant::now();
    let mut generated = Vec::with_capacity(count);
    for index in 0..count {
        let source = image::load_from_memory(&std::fs::read(&paths[index % paths.len()])?)?;
        let variant = match (index / paths.len()) % 6 {
            0 => source.fliph(),
            1 => source.flipv(),
            2 => source.rotate90(),
            3 => source.rotate180(),
            4 => source.rotate270(),
            _ => source.fliph().rotate90(),
        };
        let mut bytes = Vec::new();
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90);
        variant.to_rgb8().write_with_encoder(encoder)?;
        let path = directory.join(format!("generated-{index:05}.jpg"));
        std::fs::write(&path, &bytes)?;
        generated.push(path);
    }
    let generation_seconds = generation_started.elapsed().as_secs_f64();

    reset_peak_memory();
    let before = current_memory_mib();
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let extractor =
        ImageFeatureExtractor::load(network_directory, PreprocessOptions::product_features())?
            .with_threads(2);
    let mut features = Vec::with_capacity(count);
    for chunk in generated.chunks(1000) {
        features.extend(extract_all(&extractor, chunk)?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_started;
    println!("| images | generation (s, not timed) | extraction incl. model load, wall (s) | images/s (wall) | CPU (s) | images per CPU-second | RSS before (MiB) | peak RSS (MiB) |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {count} | {generation_seconds:.1} | {seconds:.1} | {:.1} | {cpu:.1} | {:.1} | {before:.0} | {:.0} |",
        count as f64 / seconds,
        count as f64 / cpu,
        peak_memory_mib()
    );
    std::fs::remove_dir_all(&directory)?;
    Ok(())
}

/// Fold of every example: per class, a seeded shuffle, then positions dealt round-robin.
fn stratified_folds(labels: &[usize], folds: usize, seed: u64) -> Vec<usize> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let classes: BTreeSet<usize> = labels.iter().copied().collect();
    let mut assignment = vec![0; labels.len()];
    for class in classes {
        let mut members: Vec<usize> = (0..labels.len())
            .filter(|&index| labels[index] == class)
            .collect();
        for position in (1..members.len()).rev() {
            let other = (next() % (position as u64 + 1)) as usize;
            members.swap(position, other);
        }
        for (position, member) in members.into_iter().enumerate() {
            assignment[member] = position % folds;
        }
    }
    assignment
}

fn weighted_f1(truth: &[usize], predicted: &[usize], class_count: usize) -> f64 {
    let mut true_positive = vec![0f64; class_count];
    let mut predicted_count = vec![0f64; class_count];
    let mut support = vec![0f64; class_count];
    for (&actual, &guess) in truth.iter().zip(predicted) {
        support[actual] += 1.0;
        predicted_count[guess] += 1.0;
        if actual == guess {
            true_positive[actual] += 1.0;
        }
    }
    let total: f64 = support.iter().sum();
    (0..class_count)
        .map(|class| {
            let precision = if predicted_count[class] > 0.0 {
                true_positive[class] / predicted_count[class]
            } else {
                0.0
            };
            let recall = if support[class] > 0.0 {
                true_positive[class] / support[class]
            } else {
                0.0
            };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            f1 * support[class] / total
        })
        .sum()
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(index, _)| index)
        .unwrap_or(0)
}

/// Mean and standard deviation over folds of weighted F1, plus mean epochs and seconds.
fn cross_validate(
    features: &[Vec<f32>],
    labels: &[usize],
    options: &HeadTrainingOptions,
) -> Result<(f64, f64, f64, f64)> {
    let class_count = CategoryCode::all().count();
    let folds = stratified_folds(labels, FOLDS, 2024);
    let mut scores = Vec::new();
    let mut epochs = 0.0;
    let started = Instant::now();
    for fold in 0..FOLDS {
        let (mut train_x, mut train_y, mut test_x, mut test_y) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for index in 0..labels.len() {
            if folds[index] == fold {
                test_x.push(features[index].as_slice());
                test_y.push(labels[index]);
            } else {
                train_x.push(features[index].as_slice());
                train_y.push(labels[index]);
            }
        }
        let (head, report) = ImageHead::train(&train_x, &train_y, class_count, options)?;
        epochs += report.epochs_run as f64;
        let predicted: Vec<usize> = head
            .logits_batch(&test_x)?
            .iter()
            .map(|row| argmax(row))
            .collect();
        scores.push(weighted_f1(&test_y, &predicted, class_count));
    }
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let deviation = (scores
        .iter()
        .map(|score| (score - mean).powi(2))
        .sum::<f64>()
        / (scores.len() - 1) as f64)
        .sqrt();
    Ok((
        mean,
        deviation,
        epochs / FOLDS as f64,
        started.elapsed().as_secs_f64() / FOLDS as f64,
    ))
}

fn head_configurations() -> Vec<(String, HeadTrainingOptions)> {
    let base = HeadTrainingOptions::default();
    // (hidden units or 0 for logistic regression, dropout, L2 penalty, learning rate)
    let settings: Vec<(usize, f32, f32, f32)> = match std::env::var("PRODCAT_VISION_HEAD_GRID") {
        Ok(grid) => grid
            .split(';')
            .filter_map(|entry| {
                let numbers: Vec<f32> = entry
                    .split(':')
                    .filter_map(|field| field.trim().parse().ok())
                    .collect();
                (numbers.len() == 4)
                    .then(|| (numbers[0] as usize, numbers[1], numbers[2], numbers[3]))
            })
            .collect(),
        Err(_) => vec![
            (0, 0.0, 1e-3, 1e-3),
            (0, 0.0, 0.3, 1e-4),
            (512, 0.3, 1e-3, 1e-3),
            (
                base_hidden_units(&base),
                base.dropout,
                base.l2_penalty,
                base.learning_rate,
            ),
        ],
    };
    let mut configurations = Vec::new();
    for (hidden_units, dropout, l2_penalty, learning_rate) in settings {
        let kind = if hidden_units == 0 {
            HeadKind::LogisticRegression
        } else {
            HeadKind::Mlp { hidden_units }
        };
        let name = match kind {
            HeadKind::LogisticRegression => {
                format!("logistic regression, L2 {l2_penalty}, lr {learning_rate}")
            }
            HeadKind::Mlp { hidden_units } => {
                format!(
                    "MLP {hidden_units}, dropout {dropout}, L2 {l2_penalty}, lr {learning_rate}"
                )
            }
        };
        let is_default = kind == base.kind
            && dropout == base.dropout
            && l2_penalty == base.l2_penalty
            && learning_rate == base.learning_rate;
        configurations.push((
            if is_default {
                format!("{name} (default)")
            } else {
                name
            },
            HeadTrainingOptions {
                kind,
                dropout,
                l2_penalty,
                learning_rate,
                ..base.clone()
            },
        ));
    }
    configurations.push((
        "default, without class weights".to_string(),
        HeadTrainingOptions {
            balanced_class_weights: false,
            ..base
        },
    ));
    configurations
}

fn base_hidden_units(options: &HeadTrainingOptions) -> usize {
    match options.kind {
        HeadKind::LogisticRegression => 0,
        HeadKind::Mlp { hidden_units } => hidden_units,
    }
}

fn f1_table(features: &[Vec<f32>], labels: &[usize]) -> Result<()> {
    println!(
        "\n## Image-only weighted F1, 5-fold stratified CV on {} real images (product recipe)\n",
        labels.len()
    );
    println!("| head (balanced class weights unless said) | weighted F1 (mean ± sd over folds) | mean epochs | train seconds/fold |");
    println!("|---|---|---|---|");
    for (name, options) in head_configurations() {
        let (mean, deviation, epochs, seconds) = cross_validate(features, labels, &options)?;
        println!("| {name} | {mean:.4} ± {deviation:.4} | {epochs:.0} | {seconds:.2} |");
    }
    Ok(())
}

fn recipes(network_directory: &Path, paths: &[PathBuf], labels: &[usize]) -> Result<()> {
    println!("\n## Preprocessing recipes (default MLP head, 5-fold CV)\n");
    println!("| recipe | weighted F1 (mean ± sd) |");
    println!("|---|---|");
    let border = Some(BorderCropOptions::default());
    let centre = ResizeGeometry::ShorterSideThenCenterCrop { shorter_side: 256 };
    let whole_centre = ResizeGeometry::ShorterSideThenCenterCrop { shorter_side: 224 };
    for (name, options) in [
        (
            "white-border crop + pad to square + 224 (default)",
            PreprocessOptions::product_features(),
        ),
        (
            "no crop, resize 224 (500x500 source: whole image)",
            PreprocessOptions {
                border_crop: None,
                geometry: whole_centre,
                ..PreprocessOptions::product_features()
            },
        ),
        (
            "white-border crop + shorter side 256 + centre 224",
            PreprocessOptions {
                border_crop: border,
                geometry: centre,
                ..PreprocessOptions::product_features()
            },
        ),
        (
            "torchvision eval (no crop, 256, centre 224)",
            PreprocessOptions::imagenet_classification(),
        ),
    ] {
        let extractor = ImageFeatureExtractor::load(network_directory, options)?.with_threads(2);
        let features = extract_all(&extractor, paths)?;
        let (mean, deviation, _, _) =
            cross_validate(&features, labels, &HeadTrainingOptions::default())?;
        println!("| {name} | {mean:.4} ± {deviation:.4} |");
    }
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let Some(sample) = std::env::var_os("PRODCAT_SAMPLE_DATA").map(PathBuf::from) else {
        println!("skipped: PRODCAT_SAMPLE_DATA is not set");
        return Ok(());
    };
    let network_directory = default_mobilenet_directory();
    if !network_directory.join("manifest.json").exists() {
        println!(
            "skipped: no model in {} (run scripts/models/fetch-mobilenet.py)",
            network_directory.display()
        );
        return Ok(());
    }
    let sections: Vec<String> = std::env::var("PRODCAT_VISION_BENCH")
        .unwrap_or_else(|_| "throughput,real,generated,f1,recipes".to_string())
        .split(',')
        .map(|section| section.trim().to_string())
        .collect();
    let wants = |name: &str| sections.iter().any(|section| section == name);
    let images = read_labelled_images(&sample)?;
    if images.is_empty() {
        bail!("no labelled images found under {}", sample.display());
    }
    let paths: Vec<PathBuf> = images.iter().map(|image| image.path.clone()).collect();
    let labels: Vec<usize> = images.iter().map(|image| image.class_index).collect();
    println!(
        "# prodcat-vision benchmark: {} labelled real images, {} cores available",
        images.len(),
        prodcat_vision::default_thread_count()
    );

    let mut features = None;
    if let Some(cached) = std::env::var_os("PRODCAT_VISION_FEATURES") {
        // Raw f32 rows written by the extract-features example, in index order.
        let bytes = std::fs::read(&cached).with_context(|| format!("reading {cached:?}"))?;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        let rows: Vec<Vec<f32>> = values
            .chunks_exact(prodcat_vision::FEATURE_DIMENSION)
            .map(<[f32]>::to_vec)
            .collect();
        if rows.len() != paths.len() {
            bail!(
                "{cached:?} holds {} rows for {} images",
                rows.len(),
                paths.len()
            );
        }
        println!("(features read from {cached:?})");
        features = Some(rows);
    } else if wants("real") || wants("f1") {
        features = Some(real_images(&network_directory, &paths)?);
    }
    if wants("throughput") {
        throughput(&network_directory, &paths)?;
    }
    if wants("generated") {
        generated_images(&network_directory, &paths, 10_000)?;
    }
    if wants("f1") {
        if let Some(features) = &features {
            f1_table(features, &labels)?;
        }
    }
    if wants("recipes") {
        recipes(&network_directory, &paths, &labels)?;
    }
    Ok(())
}
