//! Image-head training on generated Gaussian classes: accuracy, determinism, class weights,
//! early stopping and the serialised format.

use prodcat_vision::head::HEAD_FORMAT_VERSION;
use prodcat_vision::{HeadKind, HeadTrainingOptions, ImageHead, VisionError};

/// Deterministic generator for test data (xorshift + Box-Muller).
struct TestRandom(u64);

impl TestRandom {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// `counts[c]` points per class around class-specific centres in `dimension` dimensions.
fn gaussian_classes(
    counts: &[usize],
    dimension: usize,
    spread: f64,
    seed: u64,
) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut random = TestRandom(seed);
    let centres: Vec<Vec<f64>> = (0..counts.len())
        .map(|_| (0..dimension).map(|_| random.normal() * 2.0).collect())
        .collect();
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (class, &count) in counts.iter().enumerate() {
        for _ in 0..count {
            features.push(
                centres[class]
                    .iter()
                    .map(|&centre| (centre + random.normal() * spread) as f32 * 3.0 + 1.0)
                    .collect(),
            );
            labels.push(class);
        }
    }
    (features, labels)
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(index, _)| index)
        .unwrap_or(0)
}

fn accuracy(head: &ImageHead, features: &[Vec<f32>], labels: &[usize]) -> f64 {
    let logits = head.logits_batch(features).expect("logits");
    let correct = logits
        .iter()
        .zip(labels)
        .filter(|(row, &label)| argmax(row) == label)
        .count();
    correct as f64 / labels.len() as f64
}

fn options(kind: HeadKind) -> HeadTrainingOptions {
    HeadTrainingOptions {
        kind,
        max_epochs: 60,
        patience: 8,
        ..HeadTrainingOptions::default()
    }
}

#[test]
fn both_head_kinds_learn_separable_classes() {
    // One draw (shared class centres), split alternately into fitting and held-out halves.
    let (all_x, all_y) = gaussian_classes(&[240, 160, 120, 80], 24, 1.0, 11);
    let mut fit_x = Vec::new();
    let mut fit_y = Vec::new();
    let mut held_x = Vec::new();
    let mut held_y = Vec::new();
    for (index, (features, label)) in all_x.into_iter().zip(all_y).enumerate() {
        if index % 2 == 0 {
            fit_x.push(features);
            fit_y.push(label);
        } else {
            held_x.push(features);
            held_y.push(label);
        }
    }
    for kind in [
        HeadKind::LogisticRegression,
        HeadKind::Mlp { hidden_units: 64 },
    ] {
        let (head, report) = ImageHead::train(&fit_x, &fit_y, 4, &options(kind)).expect("training");
        let held_accuracy = accuracy(&head, &held_x, &held_y);
        println!(
            "{kind:?}: held-out accuracy {held_accuracy:.3}, epochs {} (best {})",
            report.epochs_run, report.best_epoch
        );
        assert!(held_accuracy > 0.95, "{kind:?}: accuracy {held_accuracy}");
        assert!(report.best_epoch >= 1 && report.best_epoch <= report.epochs_run);
        assert_eq!(report.validation_losses.len(), report.epochs_run);
        assert_eq!(head.class_count(), 4);
        assert_eq!(head.feature_dimension(), 24);
    }
}

#[test]
fn same_data_and_seed_give_bit_identical_weights() {
    let (features, labels) = gaussian_classes(&[50, 30, 20], 16, 1.5, 5);
    for kind in [
        HeadKind::LogisticRegression,
        HeadKind::Mlp { hidden_units: 32 },
    ] {
        let first = ImageHead::train(&features, &labels, 3, &options(kind))
            .expect("first")
            .0;
        let second = ImageHead::train(&features, &labels, 3, &options(kind))
            .expect("second")
            .0;
        assert_eq!(first.to_bytes(), second.to_bytes(), "{kind:?}");
        let other_seed = HeadTrainingOptions {
            seed: 43,
            ..options(kind)
        };
        let third = ImageHead::train(&features, &labels, 3, &other_seed)
            .expect("third")
            .0;
        assert_ne!(first.to_bytes(), third.to_bytes(), "{kind:?}");
    }
}

#[test]
fn early_stopping_keeps_the_best_validation_epoch() {
    // Labels unrelated to the features: a big MLP can only memorise, so the validation loss
    // turns up quickly and training must stop long before 300 epochs.
    let (features, _) = gaussian_classes(&[180], 40, 1.0, 21);
    let labels: Vec<usize> = (0..features.len()).map(|index| index % 3).collect();
    let options = HeadTrainingOptions {
        kind: HeadKind::Mlp { hidden_units: 256 },
        max_epochs: 300,
        patience: 5,
        dropout: 0.0,
        l2_penalty: 0.0,
        learning_rate: 3e-3,
        ..HeadTrainingOptions::default()
    };
    let (_, report) = ImageHead::train(&features, &labels, 3, &options).expect("training");
    assert!(
        report.epochs_run < 300,
        "did not stop early: {}",
        report.epochs_run
    );
    assert_eq!(report.epochs_run, report.best_epoch + options.patience);
    let minimum = report
        .validation_losses
        .iter()
        .copied()
        .fold(f32::INFINITY, f32::min);
    assert_eq!(report.best_validation_loss, minimum);
}

#[test]
fn a_fixed_epoch_training_runs_every_epoch_and_keeps_the_last() {
    // Memorisable noise again: with early stopping this stops within a few epochs, so a head
    // trained for a fixed number of epochs must run them all and fit its rows far better.
    let (features, _) = gaussian_classes(&[180], 40, 1.0, 21);
    let labels: Vec<usize> = (0..features.len()).map(|index| index % 3).collect();
    let options = HeadTrainingOptions {
        kind: HeadKind::Mlp { hidden_units: 256 },
        max_epochs: 40,
        patience: 2,
        dropout: 0.0,
        l2_penalty: 0.0,
        learning_rate: 3e-3,
        ..HeadTrainingOptions::default()
    };
    let (head, report) = ImageHead::train_epochs(&features, &labels, 3, &options).expect("fixed");
    assert_eq!(report.epochs_run, 40);
    assert_eq!(report.best_epoch, 40);
    assert!(report.validation_losses.is_empty());
    assert_eq!(report.validation_examples, 0);
    assert_eq!(report.training_examples, features.len());
    let memorised = accuracy(&head, &features, &labels);
    let (stopped, _) = ImageHead::train(&features, &labels, 3, &options).expect("stopped");
    let early = accuracy(&stopped, &features, &labels);
    assert!(
        memorised > 0.9 && memorised > early + 0.2,
        "fixed epochs fit {memorised}, early stopping {early}"
    );
    let again = ImageHead::train_epochs(&features, &labels, 3, &options).expect("again");
    assert_eq!(head.to_bytes(), again.0.to_bytes());
}

#[test]
fn balanced_class_weights_raise_minority_recall() {
    let counts = [400, 400, 25];
    let (features, labels) = gaussian_classes(&counts, 8, 2.2, 77);
    // Same seed, larger counts: same class centres, more points (the first ones repeat the
    // training points of the first class; the rest are fresh).
    let (test_features, test_labels) = gaussian_classes(&[800, 800, 400], 8, 2.2, 77);
    let recall = |balanced: bool| {
        let options = HeadTrainingOptions {
            kind: HeadKind::LogisticRegression,
            balanced_class_weights: balanced,
            max_epochs: 80,
            ..HeadTrainingOptions::default()
        };
        let (head, _) = ImageHead::train(&features, &labels, 3, &options).expect("training");
        let logits = head.logits_batch(&test_features).expect("logits");
        let minority: Vec<_> = logits
            .iter()
            .zip(&test_labels)
            .filter(|(_, &label)| label == 2)
            .collect();
        minority.iter().filter(|(row, _)| argmax(row) == 2).count() as f64 / minority.len() as f64
    };
    let (plain, balanced) = (recall(false), recall(true));
    println!("minority recall: plain {plain:.3}, balanced {balanced:.3}");
    assert!(
        balanced > plain + 0.05,
        "plain {plain}, balanced {balanced}"
    );
}

#[test]
fn serialised_head_round_trips_and_rejects_damage() {
    let (features, labels) = gaussian_classes(&[30, 30, 30], 12, 1.0, 9);
    for kind in [
        HeadKind::LogisticRegression,
        HeadKind::Mlp { hidden_units: 16 },
    ] {
        let (head, _) = ImageHead::train(&features, &labels, 3, &options(kind)).expect("training");
        let bytes = head.to_bytes();
        let restored = ImageHead::from_bytes(&bytes).expect("round trip");
        assert_eq!(restored, head);
        assert_eq!(
            restored.logits_batch(&features).expect("logits"),
            head.logits_batch(&features).expect("logits")
        );

        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(matches!(
            ImageHead::from_bytes(&flipped),
            Err(VisionError::HeadFormat { .. })
        ));
        assert!(matches!(
            ImageHead::from_bytes(&bytes[..bytes.len() - 5]),
            Err(VisionError::HeadFormat { .. })
        ));
        assert!(matches!(
            ImageHead::from_bytes(b"PCVH"),
            Err(VisionError::HeadFormat { .. })
        ));
        let mut wrong_magic = bytes.clone();
        wrong_magic[0] = b'X';
        assert!(matches!(
            ImageHead::from_bytes(&wrong_magic),
            Err(VisionError::HeadFormat { .. })
        ));
        let mut future = bytes.clone();
        future[4..8].copy_from_slice(&(HEAD_FORMAT_VERSION + 1).to_le_bytes());
        assert!(matches!(
            ImageHead::from_bytes(&future),
            Err(VisionError::HeadVersionUnsupported { .. })
        ));
    }
}

#[test]
fn bad_training_inputs_are_refused_with_reasons() {
    let (features, labels) = gaussian_classes(&[10, 10], 4, 1.0, 1);
    let options = options(HeadKind::LogisticRegression);
    assert!(matches!(
        ImageHead::train(&features, &labels[..5], 2, &options),
        Err(VisionError::HeadTrainingData { .. })
    ));
    let mut out_of_range = labels.clone();
    out_of_range[0] = 7;
    assert!(matches!(
        ImageHead::train(&features, &out_of_range, 2, &options),
        Err(VisionError::HeadTrainingData { .. })
    ));
    let mut with_nan = features.clone();
    with_nan[3][1] = f32::NAN;
    assert!(matches!(
        ImageHead::train(&with_nan, &labels, 2, &options),
        Err(VisionError::HeadTrainingData { .. })
    ));
    let mut ragged = features.clone();
    ragged[2].push(1.0);
    assert!(matches!(
        ImageHead::train(&ragged, &labels, 2, &options),
        Err(VisionError::FeatureSizeMismatch { .. })
    ));
    let zero_rate = HeadTrainingOptions {
        learning_rate: 0.0,
        ..options.clone()
    };
    assert!(matches!(
        ImageHead::train(&features, &labels, 2, &zero_rate),
        Err(VisionError::HeadParameters { .. })
    ));
    let (head, _) = ImageHead::train(&features, &labels, 2, &options).expect("training");
    assert!(matches!(
        head.logits(&[1.0, 2.0]),
        Err(VisionError::FeatureSizeMismatch { .. })
    ));
}
