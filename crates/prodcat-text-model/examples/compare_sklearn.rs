//! The Rust side of the side-by-side benchmark against scikit-learn
//! (`bench/compare-sklearn.sh` drives both sides).
//!
//! - `prepare --texts X.csv --labels Y.csv --out dataset.jsonl [--synthesize N --seed S]`:
//!   reads a challenge-format CSV pair, normalises each product's text with
//!   `prodcat_domain::product_text`, and writes one JSON line per product (`text`, `label`).
//!   With `--synthesize N` it writes N products resampled from the input with small
//!   perturbations (dropped, swapped, borrowed and misspelt words, invented reference codes):
//!   a stand-in for a larger catalogue when only a sample is at hand.
//! - `run --data dataset.jsonl --splits splits.json --out rust.json [--artifacts DIR]`:
//!   on the split indices written by the Python side, measures fit time, weighted F1 (80/20 and
//!   5-fold), calibration, single-product latency, batch throughput, peak memory and model size.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use prodcat_domain::{product_text, CategoryCode, SplitMix64};
use prodcat_metrics::{
    classification_report, confusion_matrix_svg, reliability_diagram, reliability_diagram_svg,
    TemperatureScaling, DEFAULT_CALIBRATION_BINS,
};
use prodcat_text_model::{LinearSvm, TextClassifier, TextClassifierOptions, TextVectorizer};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Row {
    text: String,
    label: u16,
}

#[derive(Deserialize)]
struct Splits {
    train: Vec<usize>,
    test: Vec<usize>,
    folds: Vec<Vec<usize>>,
}

fn argument(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn required(args: &[String], name: &str) -> Result<String> {
    argument(args, name).with_context(|| format!("missing {name}"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("prepare") => prepare(&args),
        Some("run") => run(&args),
        Some("latency") => latency(&args),
        _ => bail!("usage: compare_sklearn prepare|run ... (see the module documentation)"),
    }
}

fn prepare(args: &[String]) -> Result<()> {
    let texts_path = required(args, "--texts")?;
    let labels_path = required(args, "--labels")?;
    let out = PathBuf::from(required(args, "--out")?);
    let mut labels: HashMap<String, u16> = HashMap::new();
    let mut reader = csv::Reader::from_path(&labels_path).with_context(|| labels_path.clone())?;
    for record in reader.records() {
        let record = record?;
        let code = CategoryCode::parse(record.get(1).unwrap_or_default())?;
        labels.insert(record.get(0).unwrap_or_default().to_string(), code.value());
    }
    let mut rows = Vec::new();
    let mut reader = csv::Reader::from_path(&texts_path).with_context(|| texts_path.clone())?;
    for record in reader.records() {
        let record = record?;
        let index = record.get(0).unwrap_or_default();
        let Some(&label) = labels.get(index) else {
            continue;
        };
        let text = product_text(
            record.get(1).unwrap_or_default(),
            record.get(2).unwrap_or_default(),
        );
        rows.push(Row { text, label });
    }
    if rows.is_empty() {
        bail!("no labelled rows joined between {texts_path} and {labels_path}");
    }
    if let Some(count) = argument(args, "--synthesize") {
        let count: usize = count.parse()?;
        let seed: u64 = argument(args, "--seed").map_or(Ok(7), |s| s.parse())?;
        rows = synthesize(&rows, count, seed);
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    for row in &rows {
        serde_json::to_writer(&mut file, row)?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    eprintln!("wrote {} products to {}", rows.len(), out.display());
    Ok(())
}

/// True with `probability`.
fn chance(random: &mut SplitMix64, probability: f64) -> bool {
    random.next_f64() >= 1.0 - probability
}

/// Resamples `rows` to `count` products, perturbing each copy.
fn synthesize(rows: &[Row], count: usize, seed: u64) -> Vec<Row> {
    let mut random = SplitMix64::new(seed);
    let mut by_label: HashMap<u16, Vec<usize>> = HashMap::new();
    for (index, row) in rows.iter().enumerate() {
        by_label.entry(row.label).or_default().push(index);
    }
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..count)
        .map(|_| {
            let source = &rows[random.next_index(rows.len())];
            let same_class = &by_label[&source.label];
            let mut words: Vec<String> = Vec::new();
            for word in source.text.split_whitespace() {
                if chance(&mut random, 0.08) {
                    continue;
                }
                let mut word = word.to_string();
                if chance(&mut random, 0.06) {
                    let donor = &rows[same_class[random.next_index(same_class.len())]].text;
                    let donor_words: Vec<&str> = donor.split_whitespace().collect();
                    if !donor_words.is_empty() {
                        word = donor_words[random.next_index(donor_words.len())].to_string();
                    }
                }
                if chance(&mut random, 0.04) && word.chars().count() > 3 {
                    let mut chars: Vec<char> = word.chars().collect();
                    let at = random.next_index(chars.len() - 1);
                    match random.next_index(3) {
                        0 => chars.swap(at, at + 1),
                        1 => {
                            chars.remove(at);
                        }
                        _ => chars.insert(at, chars[at]),
                    }
                    word = chars.into_iter().collect();
                }
                words.push(word);
            }
            for _ in 0..words.len() / 12 {
                let at = random.next_index(words.len().max(2) - 1);
                if at + 1 < words.len() {
                    words.swap(at, at + 1);
                }
            }
            if chance(&mut random, 0.4) {
                let length = 4 + random.next_index(6);
                let code: String = (0..length)
                    .map(|_| ALPHABET[random.next_index(ALPHABET.len())] as char)
                    .collect();
                let at = random.next_index(words.len() + 1);
                words.insert(at, code.to_uppercase());
            }
            Row {
                text: words.join(" "),
                label: source.label,
            }
        })
        .collect()
}

fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    std::io::BufReader::new(file)
        .lines()
        .map(|line| Ok(serde_json::from_str(&line?)?))
        .collect()
}

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

/// CPU seconds used so far by all threads of this process (user + system).
fn cpu_seconds() -> f64 {
    let ticks_per_second = 100.0;
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let after_name = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / ticks_per_second)
        })
        .unwrap_or(f64::NAN)
}

/// CPU nanoseconds used so far by the calling thread (its run time, not its waiting time).
fn thread_cpu_nanoseconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

struct Fitted {
    classifier: TextClassifier,
    vectorize_seconds: f64,
    svm_seconds: f64,
    vectorize_cpu_seconds: f64,
    svm_cpu_seconds: f64,
}

fn fit(texts: &[&str], labels: &[CategoryCode], options: &TextClassifierOptions) -> Result<Fitted> {
    let mut categories = labels.to_vec();
    categories.sort_unstable();
    categories.dedup();
    let classes: Vec<usize> = labels
        .iter()
        .map(|l| categories.binary_search(l).unwrap_or(0))
        .collect();
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let (vectorizer, features) = TextVectorizer::fit_transform(texts, &options.vectorizer)?;
    let vectorize_seconds = start.elapsed().as_secs_f64();
    let vectorize_cpu_seconds = cpu_seconds() - cpu_start;
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let svm = LinearSvm::fit(&features, &classes, categories.len(), &options.svm)?;
    let svm_seconds = start.elapsed().as_secs_f64();
    let svm_cpu_seconds = cpu_seconds() - cpu_start;
    let classifier = TextClassifier::from_parts(options.clone(), categories, vectorizer, svm)?;
    Ok(Fitted {
        classifier,
        vectorize_seconds,
        svm_seconds,
        vectorize_cpu_seconds,
        svm_cpu_seconds,
    })
}

fn weighted_f1(
    classifier: &TextClassifier,
    texts: &[&str],
    labels: &[CategoryCode],
) -> Result<f64> {
    let predicted = classifier.predict_categories(texts);
    let truth: Vec<usize> = labels.iter().map(|c| c.index()).collect();
    let predicted: Vec<usize> = predicted.iter().map(|c| c.index()).collect();
    Ok(classification_report(&truth, &predicted, 27)?.weighted_f1)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Trains on the training split, then only predicts one product at a time, for profiling.
fn latency(args: &[String]) -> Result<()> {
    let rows = read_rows(Path::new(&required(args, "--data")?))?;
    let splits: Splits =
        serde_json::from_str(&std::fs::read_to_string(required(args, "--splits")?)?)?;
    let calls: usize = argument(args, "--calls").map_or(Ok(20_000), |c| c.parse())?;
    let texts: Vec<&str> = splits
        .train
        .iter()
        .map(|&i| rows[i].text.as_str())
        .collect();
    let labels: Vec<CategoryCode> = splits
        .train
        .iter()
        .map(|&i| CategoryCode::from_u16(rows[i].label))
        .collect::<Result<_, _>>()?;
    let classifier = TextClassifier::fit(&texts, &labels, &TextClassifierOptions::default())?;
    let test: Vec<&str> = splits.test.iter().map(|&i| rows[i].text.as_str()).collect();
    let mut latencies = Vec::with_capacity(calls);
    let cpu_start = thread_cpu_nanoseconds();
    for call in 0..calls {
        let start = Instant::now();
        let prediction = classifier.predict(test[call % test.len()], 5);
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(prediction);
    }
    let cpu_mean = (thread_cpu_nanoseconds() - cpu_start) / 1e3 / calls as f64;
    println!(
        "median {:.1} us, CPU mean {:.1} us over {calls} calls",
        median(&mut latencies),
        cpu_mean
    );
    let mut huge = String::new();
    while huge.len() < 1 << 20 {
        huge.push_str(test[huge.len() % test.len()]);
        huge.push(' ');
    }
    let start = Instant::now();
    let prediction = classifier.predict(&huge, 5);
    println!(
        "one text of {} bytes: {:.1} ms, {} known n-grams",
        huge.len(),
        start.elapsed().as_secs_f64() * 1e3,
        prediction.known_feature_count
    );
    let start = Instant::now();
    let prediction = classifier.predict("", 5);
    println!(
        "empty text: {:.1} us, category {} with probability {:.3} (intercepts only)",
        start.elapsed().as_secs_f64() * 1e6,
        prediction.category,
        prediction.probability
    );
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let rows = read_rows(Path::new(&required(args, "--data")?))?;
    let splits: Splits =
        serde_json::from_str(&std::fs::read_to_string(required(args, "--splits")?)?)?;
    let out = PathBuf::from(required(args, "--out")?);
    let artifacts = argument(args, "--artifacts").map(PathBuf::from);
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let labels: Vec<CategoryCode> = rows
        .iter()
        .map(|r| CategoryCode::from_u16(r.label))
        .collect::<Result<_, _>>()?;
    let pick = |indices: &[usize]| -> (Vec<&str>, Vec<CategoryCode>) {
        (
            indices.iter().map(|&i| texts[i]).collect(),
            indices.iter().map(|&i| labels[i]).collect(),
        )
    };
    let options = TextClassifierOptions::default();
    let (train_texts, train_labels) = pick(&splits.train);
    let (test_texts, test_labels) = pick(&splits.test);

    let start = Instant::now();
    let fitted = fit(&train_texts, &train_labels, &options)?;
    let fit_seconds = start.elapsed().as_secs_f64();
    let peak_after_fit = peak_memory_mib();
    let mut classifier = fitted.classifier;
    eprintln!(
        "rust: fit {fit_seconds:.2}s (vectorise {:.2}s / {:.2} CPU s, svm {:.2}s / {:.2} CPU s), {} features, iterations {:?}",
        fitted.vectorize_seconds,
        fitted.vectorize_cpu_seconds,
        fitted.svm_seconds,
        fitted.svm_cpu_seconds,
        classifier.vectorizer().feature_count(),
        classifier.svm().iterations()
    );

    let start = Instant::now();
    let predicted = classifier.predict_categories(&test_texts);
    let batch_seconds = start.elapsed().as_secs_f64();
    let truth: Vec<usize> = test_labels.iter().map(|c| c.index()).collect();
    let predicted_index: Vec<usize> = predicted.iter().map(|c| c.index()).collect();
    let report = classification_report(&truth, &predicted_index, 27)?;

    // Calibration on the validation split; "cross-fitted" fits T on one half, measures the other.
    let calibration = classifier.calibrate(&test_texts, &test_labels)?;
    let scores: Vec<f64> = classifier
        .decision_matrix(&test_texts)
        .into_iter()
        .map(f64::from)
        .collect();
    let k = classifier.categories().len();
    let classes: Vec<usize> = test_labels
        .iter()
        .map(|c| classifier.class_index(*c).unwrap_or(0))
        .collect();
    let half = classes.len() / 2;
    let mut cross_fitted = 0.0;
    for (fit_range, eval_range) in [
        (0..half, half..classes.len()),
        (half..classes.len(), 0..half),
    ] {
        let fit_scores = &scores[fit_range.start * k..fit_range.end * k];
        let scaling = TemperatureScaling::fit(fit_scores, k, &classes[fit_range.clone()])?;
        let eval_scores = &scores[eval_range.start * k..eval_range.end * k];
        let probabilities = scaling.probability_matrix(eval_scores, k);
        let diagram = reliability_diagram(
            &probabilities,
            k,
            &classes[eval_range.clone()],
            DEFAULT_CALIBRATION_BINS,
        )?;
        cross_fitted += diagram.expected_calibration_error * eval_range.len() as f64;
    }
    cross_fitted /= classes.len() as f64;

    // Single-product latency: vectorise + score + calibrated top 5, one thread, in process.
    let calls = 3000.min(test_texts.len() * 20).max(1);
    let mut latencies = Vec::with_capacity(calls);
    let mut sink = 0usize;
    let cpu_start = thread_cpu_nanoseconds();
    for call in 0..calls {
        let text = test_texts[call % test_texts.len()];
        let start = Instant::now();
        let prediction = classifier.predict(text, 5);
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
        sink += prediction.top.len();
    }
    let latency_cpu_mean_us = (thread_cpu_nanoseconds() - cpu_start) / 1e3 / calls as f64;
    let latency_median_us = median(&mut latencies);
    let latency_p99_us = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];

    let model_path =
        std::env::temp_dir().join(format!("prodcat-text-model-{}.bin", std::process::id()));
    let start = Instant::now();
    classifier.save(&model_path)?;
    let save_seconds = start.elapsed().as_secs_f64();
    let model_bytes = std::fs::metadata(&model_path)?.len();
    let start = Instant::now();
    let loaded = TextClassifier::load(&model_path)?;
    let load_seconds = start.elapsed().as_secs_f64();
    std::fs::remove_file(&model_path).ok();
    if loaded.predict_categories(&test_texts) != predicted {
        bail!("the reloaded model predicts differently");
    }

    if let Some(dir) = &artifacts {
        std::fs::create_dir_all(dir)?;
        let names: Vec<String> = CategoryCode::all()
            .map(|c| format!("{} {}", c.value(), c.name()))
            .collect();
        std::fs::write(
            dir.join("confusion-matrix.svg"),
            confusion_matrix_svg(&report.confusion, &names, "Text model, validation split"),
        )?;
        std::fs::write(
            dir.join("reliability.svg"),
            reliability_diagram_svg(
                &[
                    (
                        "softmax of decision values",
                        &calibration.reliability_before,
                    ),
                    ("temperature scaled", &calibration.reliability_after),
                ],
                "Text model calibration, validation split",
            ),
        )?;
        let example = test_texts[0];
        let prediction = classifier.predict(example, 5);
        let explanation = classifier.explain(example, prediction.category, 8)?;
        std::fs::write(
            dir.join("example-prediction.json"),
            serde_json::to_string_pretty(&serde_json::json!({
                "text": example, "prediction": prediction, "explanation": explanation
            }))?,
        )?;
    }

    let mut fold_scores = Vec::new();
    for fold in &splits.folds {
        let in_fold: std::collections::HashSet<usize> = fold.iter().copied().collect();
        let train: Vec<usize> = (0..rows.len()).filter(|i| !in_fold.contains(i)).collect();
        let (fold_train_texts, fold_train_labels) = pick(&train);
        let (fold_texts, fold_labels) = pick(fold);
        let fitted = fit(&fold_train_texts, &fold_train_labels, &options)?;
        fold_scores.push(weighted_f1(&fitted.classifier, &fold_texts, &fold_labels)?);
    }
    let cv_mean = (!fold_scores.is_empty())
        .then(|| fold_scores.iter().sum::<f64>() / fold_scores.len() as f64);

    let result = serde_json::json!({
        "side": "rust",
        "threads": rayon::current_num_threads(),
        "train_count": train_texts.len(),
        "test_count": test_texts.len(),
        "feature_count": classifier.vectorizer().feature_count(),
        "word_features": classifier.vectorizer().word().len(),
        "char_features": classifier.vectorizer().char_wb().len(),
        "fit_seconds": fit_seconds,
        "vectorize_seconds": fitted.vectorize_seconds,
        "svm_seconds": fitted.svm_seconds,
        "fit_cpu_seconds": fitted.vectorize_cpu_seconds + fitted.svm_cpu_seconds,
        "vectorize_cpu_seconds": fitted.vectorize_cpu_seconds,
        "svm_cpu_seconds": fitted.svm_cpu_seconds,
        "svm_iterations_max": classifier.svm().iterations().iter().max(),
        "weighted_f1": report.weighted_f1,
        "macro_f1": report.macro_f1,
        "accuracy": report.accuracy,
        "cv_weighted_f1": fold_scores,
        "cv_weighted_f1_mean": cv_mean,
        "temperature": calibration.temperature,
        "ece_before": calibration.expected_calibration_error_before,
        "ece_after": calibration.expected_calibration_error_after,
        "ece_after_cross_fitted": cross_fitted,
        "nll_before": calibration.negative_log_likelihood_before,
        "nll_after": calibration.negative_log_likelihood_after,
        "single_latency_median_us": latency_median_us,
        "single_latency_p99_us": latency_p99_us,
        "single_latency_cpu_mean_us": latency_cpu_mean_us,
        "batch_products_per_second": test_texts.len() as f64 / batch_seconds,
        "peak_memory_mib": peak_after_fit,
        "model_bytes": model_bytes,
        "save_seconds": save_seconds,
        "load_seconds": load_seconds,
        "checksum_sink": sink,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
    eprintln!(
        "rust: weighted F1 {:.4}, CV mean {:?}, latency {:.1} us (CPU {:.1} us per call)",
        report.weighted_f1, cv_mean, latency_median_us, latency_cpu_mean_us
    );
    Ok(())
}
