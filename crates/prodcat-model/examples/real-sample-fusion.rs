//! Quality of the text branch, the image branch and their late fusion on the real data sample.
//!
//! Cross-validated (5 stratified folds) on the real products that have both text and a photo. In
//! each fold: one fold is the test set, the next one the validation set (calibration and the fusion
//! weight are tuned there), and the text model and the image head are trained on every other real
//! row and photo of the sample. A second table cross-validates the image branch alone on all
//! labelled photos.
//!
//! Run: `PRODCAT_SAMPLE_DATA=... PRODCAT_MODEL_DIR=... cargo run --release -p prodcat-model
//! --example real-sample-fusion`

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use prodcat_domain::{product_text, CategoryCode};
use prodcat_metrics::{classification_report, expected_calibration_error, TemperatureScaling};
use prodcat_model::{fit_fused_temperature, fuse, tune_fusion_weight, ImageBackbone};
use prodcat_text_model::{TextClassifier, TextClassifierOptions};
use prodcat_vision::{HeadTrainingOptions, ImageHead};

struct TextRow {
    text: String,
    label: CategoryCode,
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

fn scores(rows: &[Vec<f32>], labels: &[usize], k: usize) -> (f64, f64) {
    let predicted: Vec<usize> = rows.iter().map(|r| argmax(r)).collect();
    let f1 = classification_report(labels, &predicted, k)
        .map(|r| r.weighted_f1)
        .unwrap_or(0.0);
    let flat: Vec<f64> = rows.iter().flatten().map(|v| f64::from(*v)).collect();
    let ece = expected_calibration_error(&flat, k, labels, 15).unwrap_or(f64::NAN);
    (f1, ece)
}

/// Stratified fold of each item: items of a class are dealt round-robin after a seeded shuffle.
fn folds(labels: &[usize], count: usize, seed: u64) -> Vec<usize> {
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, label) in labels.iter().enumerate() {
        by_class.entry(*label).or_default().push(i);
    }
    let mut fold = vec![0; labels.len()];
    let mut offset = 0;
    for members in by_class.values_mut() {
        members.sort_by_key(|&i| prodcat_domain::sha256_hex(format!("{seed}:{i}").as_bytes()));
        for (rank, &i) in members.iter().enumerate() {
            fold[i] = (rank + offset) % count;
        }
        offset += members.len();
    }
    fold
}

fn mean_std(values: &[f64]) -> String {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    format!("{mean:.4} ± {:.4}", var.sqrt())
}

fn main() -> anyhow::Result<()> {
    let root =
        PathBuf::from(std::env::var("PRODCAT_SAMPLE_DATA").context("set PRODCAT_SAMPLE_DATA")?);
    let model_dir =
        PathBuf::from(std::env::var("PRODCAT_MODEL_DIR").unwrap_or_else(|_| "models".into()));
    let started = Instant::now();

    // Text rows by original index.
    let mut labels_by_index: HashMap<String, CategoryCode> = HashMap::new();
    for record in csv::Reader::from_path(root.join("text/Y_train_sample.csv"))?.records() {
        let record = record?;
        labels_by_index.insert(record[0].to_string(), CategoryCode::parse(&record[1])?);
    }
    let mut text_rows: BTreeMap<String, TextRow> = BTreeMap::new();
    for record in csv::Reader::from_path(root.join("text/X_train_sample.csv"))?.records() {
        let record = record?;
        let label = labels_by_index[&record[0]];
        text_rows.insert(
            record[0].to_string(),
            TextRow {
                text: product_text(&record[1], &record[2]),
                label,
            },
        );
    }
    // Labelled photos by original index.
    let mut photos: Vec<(String, PathBuf, CategoryCode)> = Vec::new();
    for record in csv::Reader::from_path(root.join("images/images_index.csv"))?.records() {
        let record = record?;
        if &record[1] != "train" {
            continue;
        }
        photos.push((
            record[2].to_string(),
            root.join("images").join(&record[0]),
            CategoryCode::parse(&record[5])?,
        ));
    }
    println!(
        "{} text rows, {} labelled photos, {} products with both",
        text_rows.len(),
        photos.len(),
        photos
            .iter()
            .filter(|(i, ..)| text_rows.contains_key(i))
            .count()
    );

    let backbone =
        ImageBackbone::load(&model_dir).context("load MobileNetV2 (run scripts/setup)")?;
    // Features can be cached between runs with PRODCAT_FEATURES_CACHE=FILE.
    let cache = std::env::var("PRODCAT_FEATURES_CACHE")
        .ok()
        .map(PathBuf::from);
    let extract_started = Instant::now();
    let cached: Option<Vec<Vec<f32>>> = cache.as_ref().and_then(|path| {
        let bytes = std::fs::read(path).ok()?;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (values.len() == photos.len() * 1280)
            .then(|| values.chunks(1280).map(|c| c.to_vec()).collect())
    });
    let features: Vec<Vec<f32>> = match cached {
        Some(features) => features,
        None => {
            let bytes: Vec<Vec<u8>> = photos
                .iter()
                .map(|(_, path, _)| std::fs::read(path))
                .collect::<Result<_, _>>()?;
            let features: Vec<Vec<f32>> = backbone
                .features_batch(&bytes)
                .into_iter()
                .collect::<Result<_, _>>()?;
            if let Some(path) = &cache {
                let raw: Vec<u8> = features
                    .iter()
                    .flatten()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                std::fs::write(path, raw)?;
            }
            features
        }
    };
    println!(
        "features of {} photos in {:.1} s",
        features.len(),
        extract_started.elapsed().as_secs_f64()
    );
    let categories: Vec<CategoryCode> = CategoryCode::all().collect();
    let k = categories.len();
    let class = |code: CategoryCode| code.index();
    let photo_of: HashMap<&str, usize> = photos
        .iter()
        .enumerate()
        .map(|(i, (index, ..))| (index.as_str(), i))
        .collect();

    // Products with text and photo, and their folds.
    let both: Vec<&str> = photos
        .iter()
        .map(|(i, ..)| i.as_str())
        .filter(|i| text_rows.contains_key(*i))
        .collect();
    let both_labels: Vec<usize> = both.iter().map(|i| class(text_rows[*i].label)).collect();
    let fold_of = folds(&both_labels, 5, 7);
    let mut table: Vec<[f64; 7]> = Vec::new();
    for fold in 0..5 {
        let validation_fold = (fold + 1) % 5;
        let held_out: HashMap<&str, usize> = both
            .iter()
            .enumerate()
            .filter(|(p, _)| fold_of[*p] == fold || fold_of[*p] == validation_fold)
            .map(|(p, i)| (*i, fold_of[p]))
            .collect();
        let train_text: Vec<&TextRow> = text_rows
            .iter()
            .filter(|(i, _)| !held_out.contains_key(i.as_str()))
            .map(|(_, r)| r)
            .collect();
        let mut text_model = TextClassifier::fit(
            &train_text
                .iter()
                .map(|r| r.text.as_str())
                .collect::<Vec<_>>(),
            &train_text.iter().map(|r| r.label).collect::<Vec<_>>(),
            &TextClassifierOptions::default(),
        )?;
        let pick = |wanted: usize| -> Vec<&str> {
            both.iter()
                .enumerate()
                .filter(|(p, _)| fold_of[*p] == wanted)
                .map(|(_, i)| *i)
                .collect()
        };
        let (validation, test) = (pick(validation_fold), pick(fold));
        text_model.calibrate(
            &validation
                .iter()
                .map(|i| text_rows[*i].text.as_str())
                .collect::<Vec<_>>(),
            &validation
                .iter()
                .map(|i| text_rows[*i].label)
                .collect::<Vec<_>>(),
        )?;
        let train_photos: Vec<usize> = (0..photos.len())
            .filter(|p| !held_out.contains_key(photos[*p].0.as_str()))
            .collect();
        let (head, _) = ImageHead::train(
            &train_photos
                .iter()
                .map(|p| features[*p].as_slice())
                .collect::<Vec<_>>(),
            &train_photos
                .iter()
                .map(|p| class(photos[*p].2))
                .collect::<Vec<_>>(),
            k,
            &HeadTrainingOptions::default(),
        )?;
        let image_probabilities =
            |ids: &[&str], temperature: &TemperatureScaling| -> anyhow::Result<Vec<Vec<f32>>> {
                ids.iter()
                    .map(|i| {
                        let logits = head.logits(&features[photo_of[i]])?;
                        let scores: Vec<f64> = logits.iter().map(|v| f64::from(*v)).collect();
                        Ok(temperature
                            .probabilities(&scores)
                            .into_iter()
                            .map(|p| p as f32)
                            .collect())
                    })
                    .collect()
            };
        let labels_of = |ids: &[&str]| -> Vec<usize> {
            ids.iter().map(|i| class(text_rows[*i].label)).collect()
        };
        let validation_logits: Vec<f64> = validation
            .iter()
            .flat_map(|i| head.logits(&features[photo_of[i]]).unwrap_or_default())
            .map(f64::from)
            .collect();
        let temperature = TemperatureScaling::fit(&validation_logits, k, &labels_of(&validation))?;
        // The text model knows the classes of its training rows, which cover all 27 here.
        assert_eq!(text_model.categories(), categories.as_slice());
        let text_probabilities = |ids: &[&str]| -> Vec<Vec<f32>> {
            ids.iter()
                .map(|i| {
                    let decision = text_model.decision_values(&text_rows[*i].text);
                    text_model.probabilities_from_decision_values(&decision)
                })
                .collect()
        };
        let validation_text = text_probabilities(&validation);
        let validation_image = image_probabilities(&validation, &temperature)?;
        let weight = tune_fusion_weight(
            &validation_text,
            &validation_image,
            &labels_of(&validation),
            k,
        );
        let fused_temperature = fit_fused_temperature(
            &validation_text,
            &validation_image,
            &labels_of(&validation),
            weight,
            k,
        );
        let test_text = text_probabilities(&test);
        let test_image = image_probabilities(&test, &temperature)?;
        let fused: Vec<Vec<f32>> = test_text
            .iter()
            .zip(&test_image)
            .map(|(t, i)| fuse(t, i, weight, fused_temperature))
            .collect();
        let labels = labels_of(&test);
        let (text_f1, text_ece) = scores(&test_text, &labels, k);
        let (image_f1, image_ece) = scores(&test_image, &labels, k);
        let (fused_f1, fused_ece) = scores(&fused, &labels, k);
        println!(
            "fold {fold}: {} test products, text F1 {text_f1:.4}, image F1 {image_f1:.4}, fused F1 {fused_f1:.4} (image weight {weight:.2})",
            test.len()
        );
        table.push([
            text_f1,
            image_f1,
            fused_f1,
            text_ece,
            image_ece,
            fused_ece,
            f64::from(weight),
        ]);
    }
    let column = |c: usize| table.iter().map(|row| row[c]).collect::<Vec<_>>();
    println!();
    println!("| products with text and photo (5-fold CV) | weighted F1 | ECE |");
    println!("|---|---|---|");
    println!(
        "| text only | {} | {} |",
        mean_std(&column(0)),
        mean_std(&column(3))
    );
    println!(
        "| image only | {} | {} |",
        mean_std(&column(1)),
        mean_std(&column(4))
    );
    println!(
        "| late fusion | {} | {} |",
        mean_std(&column(2)),
        mean_std(&column(5))
    );
    println!(
        "| fusion weight of the image branch | {} | |",
        mean_std(&column(6))
    );

    // The image branch alone on every labelled photo.
    let photo_labels: Vec<usize> = photos.iter().map(|(_, _, c)| class(*c)).collect();
    let photo_folds = folds(&photo_labels, 5, 11);
    let mut image_f1s = Vec::new();
    let mut image_eces = Vec::new();
    for fold in 0..5 {
        let train: Vec<usize> = (0..photos.len())
            .filter(|p| photo_folds[*p] != fold)
            .collect();
        let test: Vec<usize> = (0..photos.len())
            .filter(|p| photo_folds[*p] == fold)
            .collect();
        let (head, _) = ImageHead::train(
            &train
                .iter()
                .map(|p| features[*p].as_slice())
                .collect::<Vec<_>>(),
            &train.iter().map(|p| photo_labels[*p]).collect::<Vec<_>>(),
            k,
            &HeadTrainingOptions::default(),
        )?;
        let probabilities: Vec<Vec<f32>> = test
            .iter()
            .map(|p| {
                let logits = head.logits(&features[*p]).unwrap_or_default();
                prodcat_vision::softmax(&logits)
            })
            .collect();
        let labels: Vec<usize> = test.iter().map(|p| photo_labels[*p]).collect();
        let (f1, ece) = scores(&probabilities, &labels, k);
        image_f1s.push(f1);
        image_eces.push(ece);
    }
    println!();
    println!(
        "| all {} labelled photos, image branch alone (5-fold CV, uncalibrated) | {} | {} |",
        photos.len(),
        mean_std(&image_f1s),
        mean_std(&image_eces)
    );
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
