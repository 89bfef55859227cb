//! Model-directory loading and graph construction on weights the test generates: checksum
//! verification, clear errors for missing, corrupt or incompatible files, and a network built
//! from random torchvision-shaped weights (no fetched model needed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prodcat_vision::{
    MobileNetV2, MobileNetWeights, PreparedImage, VisionError, FEATURE_DIMENSION,
    IMAGENET_CLASS_COUNT, INPUT_SIZE,
};
use sha2::{Digest, Sha256};

/// Every tensor of torchvision's MobileNetV2 state dict (floats only) with its shape.
fn mobilenet_tensor_shapes() -> BTreeMap<String, Vec<usize>> {
    let mut shapes = BTreeMap::new();
    let mut convolution_batch_norm =
        |convolution: String, batch_norm: String, shape: Vec<usize>| {
            let channels = shape[0];
            shapes.insert(format!("{convolution}.weight"), shape);
            for suffix in ["weight", "bias", "running_mean", "running_var"] {
                shapes.insert(format!("{batch_norm}.{suffix}"), vec![channels]);
            }
        };
    convolution_batch_norm(
        "features.0.0".into(),
        "features.0.1".into(),
        vec![32, 3, 3, 3],
    );
    let settings = [
        (1, 16, 1),
        (6, 24, 2),
        (6, 32, 3),
        (6, 64, 4),
        (6, 96, 3),
        (6, 160, 3),
        (6, 320, 1),
    ];
    let mut input = 32;
    let mut block = 1;
    for (expansion, output, repeats) in settings {
        for _ in 0..repeats {
            let hidden = input * expansion;
            let prefix = format!("features.{block}.conv");
            let mut layer = 0;
            if expansion != 1 {
                convolution_batch_norm(
                    format!("{prefix}.0.0"),
                    format!("{prefix}.0.1"),
                    vec![hidden, input, 1, 1],
                );
                layer = 1;
            }
            convolution_batch_norm(
                format!("{prefix}.{layer}.0"),
                format!("{prefix}.{layer}.1"),
                vec![hidden, 1, 3, 3],
            );
            convolution_batch_norm(
                format!("{prefix}.{}", layer + 1),
                format!("{prefix}.{}", layer + 2),
                vec![output, hidden, 1, 1],
            );
            input = output;
            block += 1;
        }
    }
    convolution_batch_norm(
        format!("features.{block}.0"),
        format!("features.{block}.1"),
        vec![1280, 320, 1, 1],
    );
    shapes.insert("classifier.1.weight".into(), vec![1000, 1280]);
    shapes.insert("classifier.1.bias".into(), vec![1000]);
    shapes
}

/// Random weights as raw safetensors bytes: He-scaled kernels and batch-norm statistics near
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
        // Uniform(-0.5, 0.5) has standard deviation 0.2887.
        let fan_in: usize = shape.iter().skip(1).product();
        let kernel_scale = (2.0 / fan_in.max(1) as f32).sqrt() / 0.2887 * 0.7;
        let is_batch_norm = shape.len() == 1 && !name.starts_with("classifier");
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

fn write_directory(name: &str, weights: &[u8], tensor_count: Option<usize>) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("prodcat-vision-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    std::fs::write(directory.join("model.safetensors"), weights).expect("weights");
    let mut manifest = serde_json::json!({
        "weights_file": "model.safetensors",
        "weights_sha256": hex::encode(Sha256::digest(weights)),
    });
    if let Some(count) = tensor_count {
        manifest["tensor_count"] = count.into();
    }
    std::fs::write(directory.join("manifest.json"), manifest.to_string()).expect("manifest");
    directory
}

fn remove(directory: &Path) {
    let _ = std::fs::remove_dir_all(directory);
}

#[test]
fn random_weights_build_a_working_network_with_both_outputs() {
    let shapes = mobilenet_tensor_shapes();
    assert_eq!(shapes.len(), 262);
    let directory = write_directory("random", &random_safetensors(&shapes, 3), Some(262));
    let network = MobileNetV2::load(&directory).expect("random weights load");
    let image = PreparedImage::from_values(
        (0..INPUT_SIZE * INPUT_SIZE * 3)
            .map(|index| ((index % 97) as f32 - 48.0) / 30.0)
            .collect(),
    )
    .expect("image");
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
    assert_eq!(
        network.run(&image).expect("second run"),
        first,
        "deterministic"
    );
    let other = PreparedImage::from_values(vec![0.5; INPUT_SIZE * INPUT_SIZE * 3]).expect("image");
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
    assert!(matches!(
        PreparedImage::from_values(vec![0.0; 10]),
        Err(VisionError::InputSizeMismatch { .. })
    ));
    remove(&directory);
}

#[test]
fn incompatible_weights_name_the_offending_tensor() {
    let mut shapes = mobilenet_tensor_shapes();
    shapes.remove("features.7.conv.1.1.running_var");
    let directory = write_directory("missing-tensor", &random_safetensors(&shapes, 5), None);
    match MobileNetV2::load(&directory) {
        Err(VisionError::TensorMissing { name }) => {
            assert_eq!(name, "features.7.conv.1.1.running_var")
        }
        other => panic!("expected TensorMissing, got {other:?}"),
    }
    remove(&directory);

    let mut shapes = mobilenet_tensor_shapes();
    shapes.insert("classifier.1.weight".into(), vec![10, 1280]);
    let directory = write_directory("wrong-shape", &random_safetensors(&shapes, 5), None);
    match MobileNetV2::load(&directory) {
        Err(VisionError::TensorShapeMismatch {
            name,
            expected,
            actual,
        }) => {
            assert_eq!(name, "classifier.1.weight");
            assert_eq!(expected, vec![1000, 1280]);
            assert_eq!(actual, vec![10, 1280]);
        }
        other => panic!("expected TensorShapeMismatch, got {other:?}"),
    }
    remove(&directory);
}

#[test]
fn broken_directories_get_clear_errors() {
    let empty = std::env::temp_dir().join(format!("prodcat-vision-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let error = MobileNetWeights::load_directory(&empty).expect_err("no manifest");
    assert!(matches!(error, VisionError::ModelFileMissing { .. }));
    assert!(error.to_string().contains("manifest.json"));

    std::fs::write(empty.join("manifest.json"), "{not json").expect("write");
    assert!(matches!(
        MobileNetWeights::load_directory(&empty),
        Err(VisionError::ManifestInvalid { .. })
    ));
    std::fs::write(
        empty.join("manifest.json"),
        r#"{"weights_file": "model.safetensors", "weights_sha256": "abc"}"#,
    )
    .expect("write");
    assert!(matches!(
        MobileNetWeights::load_directory(&empty),
        Err(VisionError::ManifestInvalid { .. })
    ));
    std::fs::write(
        empty.join("manifest.json"),
        format!(
            r#"{{"weights_file": "../outside.safetensors", "weights_sha256": "{}"}}"#,
            "0".repeat(64)
        ),
    )
    .expect("write");
    assert!(matches!(
        MobileNetWeights::load_directory(&empty),
        Err(VisionError::ManifestInvalid { .. })
    ));
    remove(&empty);

    // Right checksum, but the bytes are not safetensors.
    let directory = write_directory("garbage", b"this is not a safetensors file at all", None);
    assert!(matches!(
        MobileNetWeights::load_directory(&directory),
        Err(VisionError::WeightsUnreadable { .. })
    ));
    remove(&directory);

    // A tensor count that disagrees with the file.
    let shapes = mobilenet_tensor_shapes();
    let directory = write_directory("count", &random_safetensors(&shapes, 9), Some(100));
    assert!(matches!(
        MobileNetWeights::load_directory(&directory),
        Err(VisionError::ManifestInvalid { .. })
    ));
    remove(&directory);
}
