//! Checks the Rust network against the independent numpy reference written by
//! `scripts/models/fetch-mobilenet.py`, and the full Rust pipeline on known images.
//! Skips (with a printed reason) when the model directory has not been fetched.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prodcat_vision::{
    default_mobilenet_directory, ImageFeatureExtractor, MobileNetV2, PreparedImage,
    PreprocessOptions, Preprocessor, VisionError, FEATURE_DIMENSION, IMAGENET_CLASS_COUNT,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct ReferenceIndex {
    images: Vec<ReferenceImage>,
}

#[derive(Deserialize)]
struct ReferenceImage {
    name: String,
    image_file: String,
    input_file: String,
    features_file: String,
    logits_file: String,
    expected_top1: usize,
}

fn model_directory() -> Option<PathBuf> {
    let directory = default_mobilenet_directory();
    if directory.join("manifest.json").exists() && directory.join("reference/index.json").exists() {
        Some(directory)
    } else {
        println!(
            "skipped: {} has no fetched model (run python3 scripts/models/fetch-mobilenet.py)",
            directory.display()
        );
        None
    }
}

fn read_f32(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect())
}

fn reference_index(directory: &Path) -> Result<ReferenceIndex> {
    let text = std::fs::read_to_string(directory.join("reference/index.json"))?;
    Ok(serde_json::from_str(&text)?)
}

fn max_abs_difference(left: &[f32], right: &[f32]) -> f32 {
    assert_eq!(left.len(), right.len());
    left.iter()
        .zip(right)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(index, _)| index)
        .unwrap_or(0)
}

#[test]
fn network_matches_numpy_reference_on_reference_inputs() -> Result<()> {
    let Some(directory) = model_directory() else {
        return Ok(());
    };
    let network = MobileNetV2::load(&directory)?;
    let index = reference_index(&directory)?;
    assert!(index.images.len() >= 3);
    for image in &index.images {
        let reference = directory.join("reference");
        let input = PreparedImage::from_values(read_f32(&reference.join(&image.input_file))?)?;
        let expected_features = read_f32(&reference.join(&image.features_file))?;
        let expected_logits = read_f32(&reference.join(&image.logits_file))?;
        let output = network.run(&input)?;
        assert_eq!(output.features.len(), FEATURE_DIMENSION);
        assert_eq!(output.logits.len(), IMAGENET_CLASS_COUNT);
        let logits_difference = max_abs_difference(&output.logits, &expected_logits);
        let features_difference = max_abs_difference(&output.features, &expected_features);
        println!(
            "{}: max |logit diff| {logits_difference:.2e}, max |feature diff| {features_difference:.2e}",
            image.name
        );
        assert!(
            logits_difference < 1e-4,
            "{}: logits differ by {logits_difference}",
            image.name
        );
        assert!(
            features_difference < 1e-4,
            "{}: features differ by {features_difference}",
            image.name
        );
        assert_eq!(argmax(&output.logits), argmax(&expected_logits));
        assert_eq!(argmax(&output.logits), image.expected_top1);
    }
    Ok(())
}

#[test]
fn full_pipeline_classifies_grace_hopper_as_bow_tie() -> Result<()> {
    let Some(directory) = model_directory() else {
        return Ok(());
    };
    let extractor =
        ImageFeatureExtractor::load(&directory, PreprocessOptions::imagenet_classification())?;
    let bytes = std::fs::read(directory.join("reference/images/grace_hopper.jpg"))?;
    let output = extractor.extract(&bytes)?;
    let top = output.top_classes(2);
    println!("grace_hopper top-2: {top:?}");
    assert_eq!(top[0].0, 457, "bow tie expected on top");
    assert!((top[0].1 - 0.51).abs() < 0.05, "p(bow tie) = {}", top[0].1);
    assert_eq!(top[1].0, 652, "military uniform expected second");
    if let Some(names) = extractor.network().class_names() {
        assert_eq!(names[457], "bow tie");
    }
    Ok(())
}

#[test]
fn rust_preprocessing_matches_torchvision_reference_inputs() -> Result<()> {
    let Some(directory) = model_directory() else {
        return Ok(());
    };
    let preprocessor = Preprocessor::new(PreprocessOptions::imagenet_classification());
    for image in reference_index(&directory)?.images {
        let reference = directory.join("reference");
        let bytes = std::fs::read(reference.join(&image.image_file))?;
        let prepared = preprocessor.prepare(&bytes)?;
        let expected = read_f32(&reference.join(&image.input_file))?;
        let differences: Vec<f32> = prepared
            .values()
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let mean = differences.iter().sum::<f32>() / differences.len() as f32;
        let maximum = differences.iter().copied().fold(0.0, f32::max);
        // One 8-bit level is 1/255/0.225 = 0.0174 after normalisation.
        println!(
            "{}: mean |input diff| {mean:.4}, max {maximum:.4}",
            image.name
        );
        assert!(mean < 0.01, "{}: mean input difference {mean}", image.name);
    }
    Ok(())
}

#[test]
fn batch_extraction_keeps_order_and_isolates_bad_images() -> Result<()> {
    let Some(directory) = model_directory() else {
        return Ok(());
    };
    let extractor =
        ImageFeatureExtractor::load(&directory, PreprocessOptions::imagenet_classification())?
            .with_threads(2);
    let index = reference_index(&directory)?;
    let mut images: Vec<Vec<u8>> = Vec::new();
    for image in &index.images {
        images.push(std::fs::read(
            directory.join("reference").join(&image.image_file),
        )?);
    }
    images.insert(1, b"definitely not an image".to_vec());
    let results = extractor.extract_batch(&images);
    assert_eq!(results.len(), images.len());
    assert!(matches!(
        results[1],
        Err(VisionError::UnrecognisedImageFormat { .. })
    ));
    let expected_top: Vec<usize> = index
        .images
        .iter()
        .map(|image| image.expected_top1)
        .collect();
    let got_top: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(position, _)| *position != 1)
        .map(|(_, result)| result.as_ref().map(|output| output.top_classes(1)[0].0))
        .collect::<Result<_, _>>()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    assert_eq!(got_top, expected_top);
    // Parallel results equal sequential ones exactly.
    for (position, bytes) in images
        .iter()
        .enumerate()
        .filter(|(position, _)| *position != 1)
    {
        let single = extractor.extract(bytes)?;
        let batched = results[position]
            .as_ref()
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        assert_eq!(&single, batched);
    }
    Ok(())
}

#[test]
fn corrupt_or_incomplete_model_directories_are_refused() -> Result<()> {
    let Some(directory) = model_directory() else {
        return Ok(());
    };
    let scratch =
        std::env::temp_dir().join(format!("prodcat-vision-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    std::fs::copy(
        directory.join("manifest.json"),
        scratch.join("manifest.json"),
    )?;
    // Missing weights file.
    let error = MobileNetV2::load(&scratch).expect_err("missing weights must fail");
    assert!(
        matches!(error, VisionError::ModelFileMissing { .. }),
        "{error}"
    );
    // Corrupt weights: one flipped byte.
    let mut weights = std::fs::read(directory.join("model.safetensors"))?;
    let middle = weights.len() / 2;
    weights[middle] ^= 0x40;
    std::fs::write(scratch.join("model.safetensors"), &weights)?;
    let error = MobileNetV2::load(&scratch).expect_err("corrupt weights must fail");
    assert!(
        matches!(error, VisionError::ChecksumMismatch { .. }),
        "{error}"
    );
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
