//! EfficientNet-Lite: graphs built from random weights of the released shapes (no fetched model
//! needed), and, when `scripts/models/fetch-efficientnet.py` has run, each variant checked
//! against the independent numpy reference it wrote (skipped with a printed reason otherwise).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prodcat_vision::efficientnet::block_plan;
use prodcat_vision::{
    default_backbone_directory, BackboneKind, BackboneNetwork, ImageFeatureExtractor,
    PreparedImage, PreprocessOptions, Preprocessor, VisionError, FEATURE_DIMENSION,
    IMAGENET_CLASS_COUNT,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

const LITE: [BackboneKind; 3] = [
    BackboneKind::EfficientNetLite0,
    BackboneKind::EfficientNetLite1,
    BackboneKind::EfficientNetLite2,
];

/// Every float tensor of an EfficientNet-Lite checkpoint (PyTorch port names) with its shape.
fn lite_tensor_shapes(kind: BackboneKind) -> BTreeMap<String, Vec<usize>> {
    let mut shapes = BTreeMap::new();
    let mut convolution_batch_norm =
        |convolution: String, batch_norm: String, shape: Vec<usize>| {
            let channels = shape[0];
            shapes.insert(format!("{convolution}.weight"), shape);
            for suffix in ["weight", "bias", "running_mean", "running_var"] {
                shapes.insert(format!("{batch_norm}.{suffix}"), vec![channels]);
            }
        };
    convolution_batch_norm("_conv_stem".into(), "_bn0".into(), vec![32, 3, 3, 3]);
    let mut channels = 32;
    for (index, block) in block_plan(kind).into_iter().enumerate() {
        let hidden = block.input_channels * block.expansion;
        if block.expansion != 1 {
            convolution_batch_norm(
                format!("_blocks.{index}._expand_conv"),
                format!("_blocks.{index}._bn0"),
                vec![hidden, block.input_channels, 1, 1],
            );
        }
        convolution_batch_norm(
            format!("_blocks.{index}._depthwise_conv"),
            format!("_blocks.{index}._bn1"),
            vec![hidden, 1, block.kernel, block.kernel],
        );
        convolution_batch_norm(
            format!("_blocks.{index}._project_conv"),
            format!("_blocks.{index}._bn2"),
            vec![block.output_channels, hidden, 1, 1],
        );
        channels = block.output_channels;
    }
    convolution_batch_norm(
        "_conv_head".into(),
        "_bn1".into(),
        vec![1280, channels, 1, 1],
    );
    shapes.insert("_fc.weight".into(), vec![1000, 1280]);
    shapes.insert("_fc.bias".into(), vec![1000]);
    shapes
}

/// Random weights as safetensors bytes: small He-scaled kernels and batch-norm statistics near
/// identity, so the signal still depends on the input after 50 layers.
fn random_safetensors(shapes: &BTreeMap<String, Vec<usize>>, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape) in shapes {
        let count: usize = shape.iter().product();
        let start = data.len();
        let fan_in: usize = shape.iter().skip(1).product();
        let kernel_scale = (2.0 / fan_in.max(1) as f32).sqrt() / 0.2887 * 0.7;
        let is_batch_norm = shape.len() == 1 && !name.starts_with("_fc");
        for _ in 0..count {
            let noise = uniform();
            let value = if name.ends_with("running_var") {
                1.0 + noise.abs() * 0.2
            } else if is_batch_norm && name.ends_with(".weight") {
                1.0 + noise * 0.2
            } else if is_batch_norm {
                noise * 0.2
            } else {
                noise * kernel_scale
            };
            data.extend_from_slice(&value.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header_bytes = serde_json::to_vec(&header).expect("header");
    while !header_bytes.len().is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    let mut bytes = (header_bytes.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header_bytes);
    bytes.extend_from_slice(&data);
    bytes
}

fn write_directory(name: &str, weights: &[u8], architecture: Option<&str>) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("prodcat-vision-lite-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    std::fs::write(directory.join("model.safetensors"), weights).expect("weights");
    let mut manifest = serde_json::json!({
        "weights_file": "model.safetensors",
        "weights_sha256": hex::encode(Sha256::digest(weights)),
    });
    if let Some(architecture) = architecture {
        manifest["architecture"] = architecture.into();
    }
    std::fs::write(directory.join("manifest.json"), manifest.to_string()).expect("manifest");
    directory
}

fn patterned_image(side: u32, period: usize) -> PreparedImage {
    let count = side as usize * side as usize * 3;
    PreparedImage::from_values_with_side(
        (0..count)
            .map(|index| ((index % period) as f32 - period as f32 / 2.0) / 40.0)
            .collect(),
        side,
    )
    .expect("image")
}

#[test]
fn random_lite0_weights_build_a_working_network() {
    let kind = BackboneKind::EfficientNetLite0;
    let shapes = lite_tensor_shapes(kind);
    assert_eq!(
        shapes.len(),
        247,
        "the released Lite0 checkpoint has 247 float tensors"
    );
    let weights = random_safetensors(&shapes, 11);
    let directory = write_directory("random", &weights, Some("efficientnet_lite0"));

    // The manifest's architecture picks the backbone.
    let network = BackboneNetwork::load(&directory).expect("random weights load");
    assert_eq!(network.kind(), kind);
    let multiply_adds = network.multiply_adds() as f64;
    assert!(
        (3.5e8..4.5e8).contains(&multiply_adds),
        "Lite0 is about 0.4 G multiply-adds, counted {multiply_adds}"
    );
    let image = patterned_image(224, 97);
    let first = network.run(&image).expect("run");
    assert_eq!(first.features.len(), FEATURE_DIMENSION);
    assert_eq!(first.logits.len(), IMAGENET_CLASS_COUNT);
    assert!(
        first
            .features
            .iter()
            .all(|value| (0.0..=6.0).contains(value)),
        "ReLU6 then mean stays in [0, 6]"
    );
    assert!(first.logits.iter().all(|value| value.is_finite()));
    assert_eq!(network.run(&image).expect("again"), first, "deterministic");
    let other = patterned_image(224, 31);
    let second = network.run(&other).expect("run");
    let largest_change = second
        .logits
        .iter()
        .zip(&first.logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        largest_change > 1e-3,
        "logits do not depend on the input ({largest_change})"
    );

    // Flip averaging is the mean of the picture's and its mirror's outputs.
    assert_eq!(image.mirrored().mirrored(), image);
    let mirrored = network.run(&image.mirrored()).expect("mirror");
    let averaged = network.run_with_flip(&image, true).expect("flip");
    for (index, value) in averaged.features.iter().enumerate() {
        let expected = (first.features[index] + mirrored.features[index]) * 0.5;
        assert!((value - expected).abs() < 1e-6, "feature {index}");
    }
    assert_ne!(averaged, first);

    // A picture of another backbone's size is refused, not cropped or padded.
    assert!(matches!(
        network.run(&patterned_image(240, 97)),
        Err(VisionError::InputSizeMismatch { .. })
    ));
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn directories_of_another_backbone_are_refused_with_reasons() {
    let weights = random_safetensors(&lite_tensor_shapes(BackboneKind::EfficientNetLite0), 5);

    // Declared architecture differs from the one asked for.
    let declared = write_directory("declared", &weights, Some("efficientnet_lite0"));
    match BackboneNetwork::load_kind(&declared, BackboneKind::EfficientNetLite1) {
        Err(VisionError::BackboneMismatch {
            expected, found, ..
        }) => {
            assert_eq!(expected, "efficientnet_lite1");
            assert_eq!(found, "efficientnet_lite0");
        }
        other => panic!("expected BackboneMismatch, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&declared);

    // No declaration: a user directory is accepted when its tensors fit, and the offending
    // tensor is named when they do not (Lite1 has more blocks than Lite0).
    let undeclared = write_directory("undeclared", &weights, None);
    let network = BackboneNetwork::load_kind(&undeclared, BackboneKind::EfficientNetLite0)
        .expect("compatible tensors are enough");
    assert_eq!(network.kind(), BackboneKind::EfficientNetLite0);
    match BackboneNetwork::load_kind(&undeclared, BackboneKind::EfficientNetLite1) {
        Err(VisionError::TensorMissing { name }) => assert!(name.starts_with("_blocks."), "{name}"),
        Err(VisionError::TensorShapeMismatch { name, .. }) => {
            assert!(name.starts_with("_blocks."), "{name}")
        }
        other => panic!("expected a tensor error, got {other:?}"),
    }
    // Without a declaration, BackboneNetwork::load assumes MobileNetV2 and says what it lacks.
    match BackboneNetwork::load(&undeclared) {
        Err(VisionError::TensorMissing { name }) => assert_eq!(name, "features.0.0.weight"),
        other => panic!("expected TensorMissing, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&undeclared);

    // An architecture nobody knows.
    let unknown = write_directory("unknown", &weights, Some("resnet_50"));
    assert!(matches!(
        BackboneNetwork::load(&unknown),
        Err(VisionError::UnknownBackbone { .. })
    ));
    let _ = std::fs::remove_dir_all(&unknown);
}

#[test]
fn preprocessing_follows_each_backbones_size_and_normalisation() -> Result<()> {
    // A red square on white, as a PNG.
    let mut picture = image::RgbImage::from_pixel(300, 200, image::Rgb([255, 255, 255]));
    for y in 50..150 {
        for x in 100..200 {
            picture.put_pixel(x, y, image::Rgb([200, 0, 0]));
        }
    }
    let mut png = Vec::new();
    picture.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    for kind in BackboneKind::ALL {
        let preprocessor = Preprocessor::for_backbone(PreprocessOptions::product_features(), kind);
        let prepared = preprocessor.prepare(&png)?;
        assert_eq!(prepared.side(), kind.input_size(), "{kind}");
        let values = prepared.values();
        let side = kind.input_size() as usize;
        // The centre pixel is the red product; the border-cropped square has white corners.
        let centre = &values[(side / 2 * side + side / 2) * 3..][..3];
        let corner = &values[..3];
        let table = kind.normalization().lookup_table();
        assert!(
            (centre[0] - table[0][200]).abs() < 0.05,
            "{kind}: {centre:?}"
        );
        assert!((centre[1] - table[1][0]).abs() < 0.05, "{kind}: {centre:?}");
        assert!(
            (corner[2] - table[2][255]).abs() < 1e-6,
            "{kind}: {corner:?}"
        );
    }
    Ok(())
}

// ---- checks against the numpy reference of the fetched models -------------------------------

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
    acceptable_top1: Vec<usize>,
}

fn fetched_directory(kind: BackboneKind) -> Option<PathBuf> {
    let directory = default_backbone_directory(kind);
    if directory.join("manifest.json").exists() && directory.join("reference/index.json").exists() {
        Some(directory)
    } else {
        println!(
            "skipped: {} has no fetched model (run python3 scripts/models/fetch-efficientnet.py)",
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

/// tract's output on the reference inputs equals the float64 numpy forward pass.
fn check_against_reference(kind: BackboneKind) -> Result<()> {
    let Some(directory) = fetched_directory(kind) else {
        return Ok(());
    };
    let network = BackboneNetwork::load_kind(&directory, kind)?;
    let reference = directory.join("reference");
    let index = reference_index(&directory)?;
    assert!(index.images.len() >= 3);
    for image in &index.images {
        let input = PreparedImage::from_values_with_side(
            read_f32(&reference.join(&image.input_file))?,
            kind.input_size(),
        )?;
        let expected_features = read_f32(&reference.join(&image.features_file))?;
        let expected_logits = read_f32(&reference.join(&image.logits_file))?;
        let output = network.run(&input)?;
        let logits_difference = max_abs_difference(&output.logits, &expected_logits);
        let features_difference = max_abs_difference(&output.features, &expected_features);
        println!(
            "{kind} {}: max |logit diff| {logits_difference:.2e}, max |feature diff| {features_difference:.2e}",
            image.name
        );
        assert!(
            logits_difference < 1e-4,
            "{kind} {}: logits differ by {logits_difference}",
            image.name
        );
        assert!(
            features_difference < 1e-4,
            "{kind} {}: features differ by {features_difference}",
            image.name
        );
        assert_eq!(
            argmax(&output.logits),
            image.expected_top1,
            "{kind} {}",
            image.name
        );
    }

    // The Rust preprocessing reproduces the reference inputs (one 8-bit level is 1/128 after
    // the Lite normalisation), and the whole pipeline gives a sensible class.
    let preprocessor =
        Preprocessor::for_backbone(PreprocessOptions::imagenet_classification_for(kind), kind);
    let extractor = ImageFeatureExtractor::load_backbone(
        &directory,
        kind,
        PreprocessOptions::imagenet_classification_for(kind),
    )?;
    for image in &index.images {
        let bytes = std::fs::read(reference.join(&image.image_file))?;
        let prepared = preprocessor.prepare(&bytes)?;
        let expected = read_f32(&reference.join(&image.input_file))?;
        let mean = prepared
            .values()
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / expected.len() as f32;
        println!("{kind} {}: mean |input diff| {mean:.4}", image.name);
        assert!(
            mean < 0.01,
            "{kind} {}: mean input difference {mean}",
            image.name
        );
        let top = extractor.extract(&bytes)?.top_classes(1)[0];
        println!("{kind} {}: pipeline top-1 {top:?}", image.name);
        assert!(
            image.acceptable_top1.contains(&top.0),
            "{kind} {}: class {} is not among {:?}",
            image.name,
            top.0,
            image.acceptable_top1
        );
    }
    Ok(())
}

#[test]
fn lite0_matches_numpy_reference() -> Result<()> {
    check_against_reference(LITE[0])
}

#[test]
fn lite1_matches_numpy_reference() -> Result<()> {
    check_against_reference(LITE[1])
}

#[test]
fn lite2_matches_numpy_reference() -> Result<()> {
    check_against_reference(LITE[2])
}
