//! Compares the image backbones on the real labelled sample photos: end-to-end throughput
//! (read + decode + preprocess + network, product recipe, 2 worker threads) with and without
//! flip averaging, and image-only weighted and macro F1 of the MLP head under 5-fold stratified
//! cross-validation on the cached features, for a few head regularisation settings.
//!
//! ```text
//! PRODCAT_SAMPLE_DATA=/path/to/rakuten \
//!     cargo run --release -p prodcat-vision --example compare-backbones -- \
//!     [--backbones mobilenet-v2,efficientnet-lite0,...] [--cache DIRECTORY] [--throughput N] \
//!     [--no-flip] [--default-head] [--concatenate mobilenet-v2+efficientnet-lite2 ...]
//! ```
//!
//! `--concatenate A+B` adds a feature set of two (or more) of the `--backbones` side by side,
//! as `prodcat train --backbone A+B` gives the head; `--no-flip` skips the flip-averaged
//! features and `--default-head` the other head settings.
//!
//! `--throughput N` only measures speed, on the first N images, and prints images per second
//! of wall time and per CPU-second of this process (the latter is what other processes on a
//! shared machine disturb least).
//!
//! Reads `$PRODCAT_SAMPLE_DATA/images/images_index.csv` (rows of the `train` split) and the
//! model directories under `$PRODCAT_MODEL_DIR` (default `models/`); a backbone whose directory
//! is missing is skipped with a note. Features and timings are cached in the cache directory
//! (default: a `prodcat-backbone-features` folder in the system's temporary directory) so the
//! head settings can be rerun without extracting again; delete it to measure again.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use prodcat_domain::CategoryCode;
use prodcat_vision::{
    model_root_from_environment, BackboneKind, HeadKind, HeadTrainingOptions,
    ImageFeatureExtractor, ImageHead, PreprocessOptions, FEATURE_DIMENSION,
};

const FOLDS: usize = 5;
const THREADS: usize = 2;

struct Sample {
    paths: Vec<PathBuf>,
    labels: Vec<usize>,
}

fn read_sample(sample: &Path) -> Result<Sample> {
    let index = sample.join("images/images_index.csv");
    let text =
        std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty index")?.split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|&field| field == name)
            .with_context(|| format!("no {name} column in {}", index.display()))
    };
    let (file_column, split_column, code_column) =
        (column("file")?, column("split")?, column("prdtypecode")?);
    let (mut paths, mut labels) = (Vec::new(), Vec::new());
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.get(split_column) != Some(&"train") {
            continue;
        }
        let code =
            CategoryCode::parse(fields[code_column]).map_err(|error| anyhow::anyhow!("{error}"))?;
        paths.push(sample.join("images").join(fields[file_column]));
        labels.push(code.index());
    }
    Ok(Sample { paths, labels })
}

/// Features of every image (in order) and the end-to-end images per second.
struct Extraction {
    features: Vec<Vec<f32>>,
    images_per_second: f64,
}

fn write_cache(path: &Path, extraction: &Extraction) -> Result<()> {
    let mut bytes = Vec::with_capacity(8 + extraction.features.len() * FEATURE_DIMENSION * 4);
    bytes.extend_from_slice(&extraction.images_per_second.to_le_bytes());
    for row in &extraction.features {
        for value in row {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn read_cache(path: &Path, count: usize) -> Option<Extraction> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() != 8 + count * FEATURE_DIMENSION * 4 {
        return None;
    }
    let images_per_second = f64::from_le_bytes(bytes[..8].try_into().ok()?);
    let values: Vec<f32> = bytes[8..]
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect();
    Some(Extraction {
        features: values
            .chunks(FEATURE_DIMENSION)
            .map(<[f32]>::to_vec)
            .collect(),
        images_per_second,
    })
}

fn extract(
    directory: &Path,
    kind: BackboneKind,
    flip: bool,
    paths: &[PathBuf],
) -> Result<Extraction> {
    let extractor = ImageFeatureExtractor::load_backbone(
        directory,
        kind,
        PreprocessOptions::product_features(),
    )?
    .with_threads(THREADS)
    .with_flip_averaging(flip);
    // Warm-up: network states and caches.
    for result in extractor.extract_files(&paths[..16.min(paths.len())]) {
        result?;
    }
    let started = Instant::now();
    let features = extractor
        .extract_files(paths)
        .into_iter()
        .zip(paths)
        .map(|(result, path)| {
            result
                .map(|output| output.features)
                .with_context(|| format!("extracting {}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let images_per_second = paths.len() as f64 / started.elapsed().as_secs_f64();
    Ok(Extraction {
        features,
        images_per_second,
    })
}

/// CPU seconds (user + system) this process has used so far, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / ticks_per_second)
        })
        .unwrap_or(f64::NAN)
}

fn throughput_table(
    model_root: &Path,
    backbones: &[BackboneKind],
    paths: &[PathBuf],
) -> Result<()> {
    println!("| backbone | flip averaging | multiply-adds (G) | images/s wall ({THREADS} threads) | images per CPU-second | load average before |");
    println!("|---|---|---|---|---|---|");
    for &kind in backbones {
        let directory = model_root.join(kind.as_str());
        if !directory.join("manifest.json").is_file() {
            eprintln!("note: {} is missing; {kind} skipped", directory.display());
            continue;
        }
        for flip in [false, true] {
            let extractor = ImageFeatureExtractor::load_backbone(
                &directory,
                kind,
                PreprocessOptions::product_features(),
            )?
            .with_threads(THREADS)
            .with_flip_averaging(flip);
            for result in extractor.extract_files(&paths[..16.min(paths.len())]) {
                result?;
            }
            let load = std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|text| text.split_whitespace().next().map(str::to_string))
                .unwrap_or_default();
            let started = Instant::now();
            let cpu_started = cpu_seconds();
            for result in extractor.extract_files(paths) {
                result?;
            }
            let wall = started.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu_started;
            println!(
                "| {kind} | {} | {:.2} | {:.1} | {:.1} | {load} |",
                if flip { "yes" } else { "no" },
                extractor.network().multiply_adds() as f64 / 1e9,
                paths.len() as f64 / wall,
                paths.len() as f64 / cpu
            );
        }
    }
    Ok(())
}

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

/// (weighted F1, macro F1) over the classes present in `truth`.
fn f1_scores(truth: &[usize], predicted: &[usize], class_count: usize) -> (f64, f64) {
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
    let (mut weighted, mut macro_sum, mut present) = (0.0, 0.0, 0.0);
    for class in 0..class_count {
        if support[class] == 0.0 {
            continue;
        }
        let precision = if predicted_count[class] > 0.0 {
            true_positive[class] / predicted_count[class]
        } else {
            0.0
        };
        let recall = true_positive[class] / support[class];
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        weighted += f1 * support[class] / total;
        macro_sum += f1;
        present += 1.0;
    }
    (weighted, macro_sum / present)
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(index, _)| index)
        .unwrap_or(0)
}

/// Mean and standard deviation over folds of weighted F1, and mean macro F1.
fn cross_validate(
    features: &[Vec<f32>],
    labels: &[usize],
    options: &HeadTrainingOptions,
) -> Result<(f64, f64, f64)> {
    let class_count = CategoryCode::all().count();
    let folds = stratified_folds(labels, FOLDS, 2024);
    let (mut weighted, mut macro_scores) = (Vec::new(), Vec::new());
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
        let (head, _) = ImageHead::train(&train_x, &train_y, class_count, options)?;
        let predicted: Vec<usize> = head
            .logits_batch(&test_x)?
            .iter()
            .map(|row| argmax(row))
            .collect();
        let (weighted_f1, macro_f1) = f1_scores(&test_y, &predicted, class_count);
        weighted.push(weighted_f1);
        macro_scores.push(macro_f1);
    }
    let mean = weighted.iter().sum::<f64>() / FOLDS as f64;
    let deviation = (weighted
        .iter()
        .map(|score| (score - mean).powi(2))
        .sum::<f64>()
        / (FOLDS - 1) as f64)
        .sqrt();
    Ok((
        mean,
        deviation,
        macro_scores.iter().sum::<f64>() / FOLDS as f64,
    ))
}

/// The head settings compared: the default and one lighter and one stronger regularisation.
fn head_settings() -> Vec<(&'static str, HeadTrainingOptions)> {
    let base = HeadTrainingOptions::default();
    vec![
        (
            "MLP 512, dropout 0.3, L2 0.001, lr 1e-3",
            HeadTrainingOptions {
                kind: HeadKind::Mlp { hidden_units: 512 },
                dropout: 0.3,
                l2_penalty: 1e-3,
                learning_rate: 1e-3,
                ..base.clone()
            },
        ),
        (
            "MLP 512, dropout 0.5, L2 0.1, lr 3e-4 (default)",
            base.clone(),
        ),
        (
            "MLP 512, dropout 0.5, L2 1.0, lr 3e-4",
            HeadTrainingOptions {
                l2_penalty: 1.0,
                ..base
            },
        ),
    ]
}

fn main() -> Result<()> {
    let mut backbones: Vec<BackboneKind> = BackboneKind::ALL.to_vec();
    let mut cache = std::env::temp_dir().join("prodcat-backbone-features");
    let mut throughput_images: Option<usize> = None;
    let mut flips = vec![false, true];
    let mut default_head_only = false;
    let mut concatenations: Vec<Vec<BackboneKind>> = Vec::new();
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--backbones" => {
                backbones = arguments
                    .next()
                    .context("--backbones needs a comma-separated list")?
                    .split(',')
                    .map(BackboneKind::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--throughput" => {
                throughput_images = Some(
                    arguments
                        .next()
                        .context("--throughput needs a count")?
                        .parse()?,
                );
            }
            "--no-flip" => flips = vec![false],
            "--default-head" => default_head_only = true,
            "--concatenate" => concatenations.push(
                arguments
                    .next()
                    .context("--concatenate needs a plus-separated list of backbones")?
                    .split('+')
                    .map(BackboneKind::parse)
                    .collect::<Result<_, _>>()?,
            ),
            "--cache" => {
                cache = PathBuf::from(arguments.next().context("--cache needs a directory")?)
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let sample_root = PathBuf::from(
        std::env::var_os("PRODCAT_SAMPLE_DATA").context("PRODCAT_SAMPLE_DATA is not set")?,
    );
    let sample = read_sample(&sample_root)?;
    std::fs::create_dir_all(&cache)?;
    // Warm the page cache so the first backbone does not pay for the disk.
    for path in &sample.paths {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    let model_root = model_root_from_environment();
    if let Some(count) = throughput_images {
        return throughput_table(
            &model_root,
            &backbones,
            &sample.paths[..count.min(sample.paths.len())],
        );
    }
    let mut feature_sets: Vec<(String, bool, Extraction)> = Vec::new();
    for kind in backbones {
        let directory = model_root.join(kind.as_str());
        if !directory.join("manifest.json").is_file() {
            eprintln!(
                "note: {} is missing; {kind} skipped (run scripts/setup)",
                directory.display()
            );
            continue;
        }
        for &flip in &flips {
            let file = cache.join(format!("{kind}{}.f32", if flip { "-flip" } else { "" }));
            let extraction = match read_cache(&file, sample.paths.len()) {
                Some(extraction) => extraction,
                None => {
                    let extraction = extract(&directory, kind, flip, &sample.paths)?;
                    write_cache(&file, &extraction)?;
                    extraction
                }
            };
            eprintln!(
                "{kind} flip={flip}: {:.1} images/s end to end on {THREADS} threads",
                extraction.images_per_second
            );
            feature_sets.push((kind.to_string(), flip, extraction));
        }
    }
    // Concatenated features of several backbones (each already extracted above), as one set.
    for parts in &concatenations {
        for &flip in &flips {
            let members: Vec<&Extraction> = parts
                .iter()
                .map(|part| {
                    feature_sets
                        .iter()
                        .find(|(name, set_flip, _)| *name == part.as_str() && *set_flip == flip)
                        .map(|(_, _, extraction)| extraction)
                        .with_context(|| format!("--concatenate needs {part} among --backbones"))
                })
                .collect::<Result<_>>()?;
            let features = (0..sample.paths.len())
                .map(|row| {
                    members
                        .iter()
                        .flat_map(|member| member.features[row].iter().copied())
                        .collect()
                })
                .collect();
            let images_per_second = 1.0
                / members
                    .iter()
                    .map(|member| 1.0 / member.images_per_second)
                    .sum::<f64>();
            let name = parts
                .iter()
                .map(|part| part.as_str())
                .collect::<Vec<_>>()
                .join("+");
            feature_sets.push((
                name,
                flip,
                Extraction {
                    features,
                    images_per_second,
                },
            ));
        }
    }

    // Every (feature set, head setting) pair, two at a time (one per core).
    let mut settings = head_settings();
    if default_head_only {
        settings.retain(|(name, _)| name.ends_with("(default)"));
    }
    let jobs: Vec<(usize, usize)> = (0..feature_sets.len())
        .flat_map(|set| (0..settings.len()).map(move |setting| (set, setting)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| loop {
                let position = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(set, setting)) = jobs.get(position) else {
                    break;
                };
                let scores = cross_validate(
                    &feature_sets[set].2.features,
                    &sample.labels,
                    &settings[setting].1,
                );
                let (kind, flip, _) = &feature_sets[set];
                eprintln!("done: {kind} flip={flip} {}", settings[setting].0);
                results
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((set, setting, scores));
            });
        }
    });
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by_key(|(set, setting, _)| (*set, *setting));

    let mut output = std::io::stdout().lock();
    writeln!(
        output,
        "| backbone | flip averaging | head | weighted F1 (mean ± sd, 5 folds) | macro F1 | images/s end to end ({THREADS} threads) |"
    )?;
    writeln!(output, "|---|---|---|---|---|---|")?;
    for (set, setting, scores) in results {
        let (kind, flip, extraction) = &feature_sets[set];
        let (weighted, deviation, macro_f1) = scores?;
        writeln!(
            output,
            "| {kind} | {} | {} | {weighted:.4} ± {deviation:.4} | {macro_f1:.4} | {:.1} |",
            if *flip { "yes" } else { "no" },
            settings[setting].0,
            extraction.images_per_second
        )?;
    }
    writeln!(
        output,
        "\n{} images, {} classes",
        sample.labels.len(),
        sample.labels.iter().collect::<BTreeSet<_>>().len()
    )?;
    Ok(())
}
