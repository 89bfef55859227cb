//! The image head: a classifier trained on the frozen 1280-d MobileNetV2 features.
//!
//! Two shapes, chosen by [`HeadKind`]: multinomial logistic regression, or an MLP with one
//! hidden ReLU layer (with dropout while training). Both standardise the features with the
//! training mean/std stored inside the head, train by mini-batch Adam on softmax cross-entropy
//! with optional "balanced" class weights (n / (k * n_class)), and stop early when the loss on
//! a validation set has not improved for `patience` epochs, keeping the best epoch's weights.
//! Everything random (split, initialisation, batch order, dropout) comes from one seed, and
//! training is single-threaded, so the same data and seed give bit-identical weights.
//!
//! The head outputs logits; calibration to probabilities happens downstream.
//!
//! Serialised format (little-endian): magic `PCVH`, u32 format version, u32 kind (0 logistic,
//! 1 MLP), u32 feature dimension, u32 hidden units (0 for logistic), u32 class count, then f32
//! arrays: feature mean, feature scale (1/std), then per layer weights (inputs x outputs,
//! row-major) and bias; last, the sha256 of everything before it.

use tract_core::prelude::tract_ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::error::{Result, VisionError};
use crate::random::SeededRandom;
use crate::weights::sha256_hex;

/// Version of the serialised head format written by this build.
pub const HEAD_FORMAT_VERSION: u32 = 1;
const HEAD_MAGIC: &[u8; 4] = b"PCVH";
const CHECKSUM_LENGTH: usize = 32;

/// The classifier's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// Multinomial logistic regression (one linear layer + softmax).
    LogisticRegression,
    /// One hidden ReLU layer of `hidden_units`, then a linear layer.
    Mlp { hidden_units: usize },
}

/// How to train the head.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadTrainingOptions {
    pub kind: HeadKind,
    /// Adam step size.
    pub learning_rate: f32,
    pub batch_size: usize,
    pub max_epochs: usize,
    /// Epochs without validation-loss improvement before stopping.
    pub patience: usize,
    /// L2 penalty `l2_penalty / 2 * |W|^2` added to the (class-weighted mean) cross-entropy,
    /// on weights, not biases. Comparable to scikit-learn's `1 / (C * n_examples)`.
    pub l2_penalty: f32,
    /// Dropout on the hidden layer while training (MLP only).
    pub dropout: f32,
    /// Weight each example by n / (k * n_class) so rare classes count as much as common ones.
    pub balanced_class_weights: bool,
    /// Share of each class held out for early stopping by [`ImageHead::train`].
    pub validation_fraction: f32,
    pub seed: u64,
}

impl Default for HeadTrainingOptions {
    /// The best setting of the 5-fold cross-validation on the real sample images (see the
    /// crate's benchmark notes): MLP 512, dropout 0.5, L2 0.1, learning rate 3e-4.
    fn default() -> Self {
        Self {
            kind: HeadKind::Mlp { hidden_units: 512 },
            learning_rate: 3e-4,
            batch_size: 64,
            max_epochs: 200,
            patience: 12,
            l2_penalty: 0.1,
            dropout: 0.5,
            balanced_class_weights: true,
            validation_fraction: 0.15,
            seed: 42,
        }
    }
}

/// What happened during training.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingReport {
    pub epochs_run: usize,
    /// 1-based epoch whose weights were kept.
    pub best_epoch: usize,
    pub best_validation_loss: f32,
    pub training_losses: Vec<f32>,
    pub validation_losses: Vec<f32>,
    pub training_examples: usize,
    pub validation_examples: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct DenseLayer {
    /// inputs x outputs
    weights: Array2<f32>,
    bias: Array1<f32>,
}

/// A trained image head.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageHead {
    kind: HeadKind,
    feature_dimension: usize,
    class_count: usize,
    feature_mean: Array1<f32>,
    feature_scale: Array1<f32>,
    layers: Vec<DenseLayer>,
}

fn training_error(reason: impl Into<String>) -> VisionError {
    VisionError::HeadTrainingData {
        reason: reason.into(),
    }
}

fn format_error(reason: impl Into<String>) -> VisionError {
    VisionError::HeadFormat {
        reason: reason.into(),
    }
}

/// Adam moment estimates for one layer.
struct LayerMoments {
    weights_first: Array2<f32>,
    weights_second: Array2<f32>,
    bias_first: Array1<f32>,
    bias_second: Array1<f32>,
}

impl LayerMoments {
    fn zeros(layer: &DenseLayer) -> Self {
        Self {
            weights_first: Array2::zeros(layer.weights.raw_dim()),
            weights_second: Array2::zeros(layer.weights.raw_dim()),
            bias_first: Array1::zeros(layer.bias.raw_dim()),
            bias_second: Array1::zeros(layer.bias.raw_dim()),
        }
    }
}

struct AdamStep {
    learning_rate: f32,
    l2_penalty: f32,
    first_correction: f32,
    second_correction: f32,
}

const ADAM_BETA1: f32 = 0.9;
const ADAM_BETA2: f32 = 0.999;
const ADAM_EPSILON: f32 = 1e-8;

impl AdamStep {
    fn apply(
        &self,
        layer: &mut DenseLayer,
        moments: &mut LayerMoments,
        weight_gradient: &Array2<f32>,
        bias_gradient: &Array1<f32>,
    ) {
        let update = |parameter: &mut f32,
                      first: &mut f32,
                      second: &mut f32,
                      gradient: f32,
                      penalty: f32| {
            // The L2 term is part of the objective (coupled), so the optimum is that of
            // L2-regularised cross-entropy whatever the optimiser's preconditioning.
            let gradient = gradient + penalty * *parameter;
            *first = ADAM_BETA1 * *first + (1.0 - ADAM_BETA1) * gradient;
            *second = ADAM_BETA2 * *second + (1.0 - ADAM_BETA2) * gradient * gradient;
            let first_hat = *first / self.first_correction;
            let second_hat = *second / self.second_correction;
            *parameter -= self.learning_rate * first_hat / (second_hat.sqrt() + ADAM_EPSILON);
        };
        for (((parameter, first), second), gradient) in layer
            .weights
            .iter_mut()
            .zip(moments.weights_first.iter_mut())
            .zip(moments.weights_second.iter_mut())
            .zip(weight_gradient.iter())
        {
            update(parameter, first, second, *gradient, self.l2_penalty);
        }
        for (((parameter, first), second), gradient) in layer
            .bias
            .iter_mut()
            .zip(moments.bias_first.iter_mut())
            .zip(moments.bias_second.iter_mut())
            .zip(bias_gradient.iter())
        {
            update(parameter, first, second, *gradient, 0.0);
        }
    }
}

/// Row-wise softmax in place.
fn softmax_rows(values: &mut Array2<f32>) {
    for mut row in values.rows_mut() {
        let maximum = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f32;
        for value in row.iter_mut() {
            *value = (*value - maximum).exp();
            total += *value;
        }
        for value in row.iter_mut() {
            *value /= total;
        }
    }
}

fn to_matrix<F: AsRef<[f32]>>(features: &[F], dimension: usize) -> Result<Array2<f32>> {
    let mut matrix = Array2::zeros((features.len(), dimension));
    for (index, row) in features.iter().enumerate() {
        let row = row.as_ref();
        if row.len() != dimension {
            return Err(VisionError::FeatureSizeMismatch {
                expected: dimension,
                actual: row.len(),
            });
        }
        if let Some(position) = row.iter().position(|value| !value.is_finite()) {
            return Err(training_error(format!(
                "feature vector {index} has a non-finite value at position {position}"
            )));
        }
        matrix.row_mut(index).assign(&Array1::from(row.to_vec()));
    }
    Ok(matrix)
}

/// Stratified split of example indices into (training, validation).
fn stratified_split(
    labels: &[usize],
    class_count: usize,
    fraction: f32,
    random: &mut SeededRandom,
) -> (Vec<usize>, Vec<usize>) {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); class_count];
    for (index, &label) in labels.iter().enumerate() {
        by_class[label].push(index);
    }
    let mut training = Vec::new();
    let mut validation = Vec::new();
    for mut members in by_class {
        random.shuffle(&mut members);
        let held_out = if members.len() >= 2 {
            ((members.len() as f32 * fraction).round() as usize).clamp(1, members.len() - 1)
        } else {
            0
        };
        validation.extend_from_slice(&members[..held_out]);
        training.extend_from_slice(&members[held_out..]);
    }
    training.sort_unstable();
    validation.sort_unstable();
    (training, validation)
}

impl ImageHead {
    /// Train on `features` / `labels` (class indices below `class_count`), holding out a
    /// stratified `validation_fraction` of each class for early stopping.
    pub fn train<F: AsRef<[f32]>>(
        features: &[F],
        labels: &[usize],
        class_count: usize,
        options: &HeadTrainingOptions,
    ) -> Result<(Self, TrainingReport)> {
        if !(options.validation_fraction > 0.0 && options.validation_fraction < 1.0) {
            return Err(VisionError::HeadParameters {
                reason: format!(
                    "validation_fraction must be in (0, 1), got {}",
                    options.validation_fraction
                ),
            });
        }
        Self::check_labels(features.len(), labels, class_count)?;
        let mut random = SeededRandom::new(options.seed);
        let (training, validation) = stratified_split(
            labels,
            class_count,
            options.validation_fraction,
            &mut random,
        );
        if validation.is_empty() {
            return Err(training_error(
                "no class has two examples, so no validation set can be held out",
            ));
        }
        let pick = |indices: &[usize]| -> (Vec<&[f32]>, Vec<usize>) {
            (
                indices
                    .iter()
                    .map(|&index| features[index].as_ref())
                    .collect(),
                indices.iter().map(|&index| labels[index]).collect(),
            )
        };
        let (training_features, training_labels) = pick(&training);
        let (validation_features, validation_labels) = pick(&validation);
        Self::train_with_validation_and_random(
            &training_features,
            &training_labels,
            &validation_features,
            &validation_labels,
            class_count,
            options,
            random,
        )
    }

    /// Train on one set and stop early on another given explicitly.
    pub fn train_with_validation<F: AsRef<[f32]>, G: AsRef<[f32]>>(
        training_features: &[F],
        training_labels: &[usize],
        validation_features: &[G],
        validation_labels: &[usize],
        class_count: usize,
        options: &HeadTrainingOptions,
    ) -> Result<(Self, TrainingReport)> {
        Self::train_with_validation_and_random(
            training_features,
            training_labels,
            validation_features,
            validation_labels,
            class_count,
            options,
            SeededRandom::new(options.seed),
        )
    }

    /// Train for exactly `options.max_epochs` epochs with no early stopping, keeping the last
    /// weights: the refit of a head on more rows once a first training with early stopping
    /// chose its number of epochs. The report's validation fields are empty.
    pub fn train_epochs<F: AsRef<[f32]>>(
        features: &[F],
        labels: &[usize],
        class_count: usize,
        options: &HeadTrainingOptions,
    ) -> Result<(Self, TrainingReport)> {
        Self::train_with_validation_and_random(
            features,
            labels,
            &[] as &[&[f32]],
            &[],
            class_count,
            options,
            SeededRandom::new(options.seed),
        )
    }

    fn check_labels(examples: usize, labels: &[usize], class_count: usize) -> Result<()> {
        if examples != labels.len() {
            return Err(training_error(format!(
                "{examples} feature vectors but {} labels",
                labels.len()
            )));
        }
        if examples == 0 {
            return Err(training_error("no examples"));
        }
        if class_count < 2 {
            return Err(training_error(format!(
                "need at least 2 classes, got {class_count}"
            )));
        }
        if let Some(label) = labels.iter().find(|&&label| label >= class_count) {
            return Err(training_error(format!(
                "label {label} is not below the class count {class_count}"
            )));
        }
        Ok(())
    }

    fn check_options(options: &HeadTrainingOptions) -> Result<()> {
        let invalid = |reason: String| Err(VisionError::HeadParameters { reason });
        if !(options.learning_rate.is_finite() && options.learning_rate > 0.0) {
            return invalid(format!(
                "learning_rate must be positive, got {}",
                options.learning_rate
            ));
        }
        if options.batch_size == 0 || options.max_epochs == 0 {
            return invalid("batch_size and max_epochs must be at least 1".to_string());
        }
        if !(options.l2_penalty.is_finite() && options.l2_penalty >= 0.0) {
            return invalid(format!(
                "l2_penalty must be >= 0, got {}",
                options.l2_penalty
            ));
        }
        if !(0.0..1.0).contains(&options.dropout) {
            return invalid(format!(
                "dropout must be in [0, 1), got {}",
                options.dropout
            ));
        }
        if let HeadKind::Mlp { hidden_units: 0 } = options.kind {
            return invalid("an MLP needs at least one hidden unit".to_string());
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn train_with_validation_and_random<F: AsRef<[f32]>, G: AsRef<[f32]>>(
        training_features: &[F],
        training_labels: &[usize],
        validation_features: &[G],
        validation_labels: &[usize],
        class_count: usize,
        options: &HeadTrainingOptions,
        mut random: SeededRandom,
    ) -> Result<(Self, TrainingReport)> {
        // Without validation rows, every epoch runs and the last weights are kept.
        let early_stopping = !validation_features.is_empty() || !validation_labels.is_empty();
        Self::check_options(options)?;
        Self::check_labels(training_features.len(), training_labels, class_count)?;
        if early_stopping {
            Self::check_labels(validation_features.len(), validation_labels, class_count)?;
        }
        let dimension = training_features[0].as_ref().len();
        if dimension == 0 {
            return Err(training_error("feature vectors are empty"));
        }
        let mut training = to_matrix(training_features, dimension)?;
        let mut validation = to_matrix(validation_features, dimension)?;

        // Standardisation from the training set only.
        let count = training.nrows() as f64;
        let mut feature_mean = Array1::<f32>::zeros(dimension);
        let mut feature_scale = Array1::<f32>::zeros(dimension);
        for (column, (mean, scale)) in training
            .axis_iter(Axis(1))
            .zip(feature_mean.iter_mut().zip(feature_scale.iter_mut()))
        {
            let average = column.iter().map(|&value| f64::from(value)).sum::<f64>() / count;
            let variance = column
                .iter()
                .map(|&value| (f64::from(value) - average).powi(2))
                .sum::<f64>()
                / count;
            *mean = average as f32;
            let deviation = variance.sqrt();
            *scale = if deviation > 1e-6 {
                (1.0 / deviation) as f32
            } else {
                1.0
            };
        }
        for matrix in [&mut training, &mut validation] {
            for mut row in matrix.rows_mut() {
                row -= &feature_mean;
                row *= &feature_scale;
            }
        }

        let mut class_totals = vec![0usize; class_count];
        for &label in training_labels {
            class_totals[label] += 1;
        }
        let present = class_totals.iter().filter(|&&total| total > 0).count();
        let class_weights: Vec<f32> = class_totals
            .iter()
            .map(|&total| {
                if !options.balanced_class_weights {
                    1.0
                } else if total == 0 {
                    0.0
                } else {
                    training_labels.len() as f32 / (present as f32 * total as f32)
                }
            })
            .collect();

        let mut head = Self {
            kind: options.kind,
            feature_dimension: dimension,
            class_count,
            feature_mean,
            feature_scale,
            layers: Vec::new(),
        };
        let mut initialised_layer = |inputs: usize, outputs: usize, gain: f64| {
            let deviation = (gain / inputs as f64).sqrt();
            DenseLayer {
                weights: Array2::from_shape_fn((inputs, outputs), |_| {
                    (random.normal() * deviation) as f32
                }),
                bias: Array1::zeros(outputs),
            }
        };
        head.layers = match options.kind {
            HeadKind::LogisticRegression => vec![DenseLayer {
                weights: Array2::zeros((dimension, class_count)),
                bias: Array1::zeros(class_count),
            }],
            HeadKind::Mlp { hidden_units } => vec![
                initialised_layer(dimension, hidden_units, 2.0),
                initialised_layer(hidden_units, class_count, 1.0),
            ],
        };
        let mut moments: Vec<LayerMoments> = head.layers.iter().map(LayerMoments::zeros).collect();

        let mut order: Vec<usize> = (0..training.nrows()).collect();
        let mut best = head.layers.clone();
        let mut best_loss = f32::INFINITY;
        let mut best_epoch = 0;
        let mut training_losses = Vec::new();
        let mut validation_losses = Vec::new();
        let mut step = 0i32;
        for epoch in 1..=options.max_epochs {
            random.shuffle(&mut order);
            let mut epoch_loss = 0.0f64;
            let mut epoch_weight = 0.0f64;
            for batch in order.chunks(options.batch_size) {
                step += 1;
                let inputs = training.select(Axis(0), batch);
                let labels: Vec<usize> =
                    batch.iter().map(|&index| training_labels[index]).collect();
                let (loss, weight) = head.train_step(
                    &inputs,
                    &labels,
                    &class_weights,
                    options,
                    &mut moments,
                    step,
                    &mut random,
                );
                epoch_loss += loss;
                epoch_weight += weight;
            }
            let training_loss = (epoch_loss / epoch_weight.max(f64::MIN_POSITIVE)) as f32;
            training_losses.push(training_loss);
            if !early_stopping {
                if !training_loss.is_finite() {
                    return Err(training_error(format!(
                        "training diverged at epoch {epoch} (training loss {training_loss})"
                    )));
                }
                best_epoch = epoch;
                best.clone_from(&head.layers);
                continue;
            }
            let validation_loss = head.mean_cross_entropy(validation.view(), validation_labels);
            validation_losses.push(validation_loss);
            if !validation_loss.is_finite() {
                return Err(training_error(format!(
                    "training diverged at epoch {epoch} (validation loss {validation_loss})"
                )));
            }
            if validation_loss < best_loss - 1e-6 {
                best_loss = validation_loss;
                best_epoch = epoch;
                best.clone_from(&head.layers);
            } else if epoch - best_epoch >= options.patience {
                break;
            }
        }
        head.layers = best;
        let report = TrainingReport {
            epochs_run: training_losses.len(),
            best_epoch,
            best_validation_loss: best_loss,
            training_losses,
            validation_losses,
            training_examples: training.nrows(),
            validation_examples: validation.nrows(),
        };
        Ok((head, report))
    }

    /// One Adam step on a mini-batch of standardised inputs; returns (weighted loss sum,
    /// weight sum) for reporting.
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &mut self,
        inputs: &Array2<f32>,
        labels: &[usize],
        class_weights: &[f32],
        options: &HeadTrainingOptions,
        moments: &mut [LayerMoments],
        step: i32,
        random: &mut SeededRandom,
    ) -> (f64, f64) {
        let example_weights: Vec<f32> = labels.iter().map(|&label| class_weights[label]).collect();
        let weight_sum: f32 = example_weights.iter().sum::<f32>().max(f32::MIN_POSITIVE);

        // Forward.
        let (hidden, dropout_mask) = match self.kind {
            HeadKind::LogisticRegression => (None, None),
            HeadKind::Mlp { .. } => {
                let mut hidden = inputs.dot(&self.layers[0].weights) + &self.layers[0].bias;
                hidden.mapv_inplace(|value| value.max(0.0));
                let mask = if options.dropout > 0.0 {
                    let keep = 1.0 - options.dropout;
                    let mask = Array2::from_shape_fn(hidden.raw_dim(), |_| {
                        if random.next_f64() < f64::from(keep) {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    });
                    hidden *= &mask;
                    Some(mask)
                } else {
                    None
                };
                (Some(hidden), mask)
            }
        };
        let last = self.layers.len() - 1;
        let last_input = hidden.as_ref().unwrap_or(inputs);
        let mut probabilities =
            last_input.dot(&self.layers[last].weights) + &self.layers[last].bias;
        softmax_rows(&mut probabilities);

        let mut loss = 0.0f64;
        let mut output_gradient = probabilities;
        for ((&label, &weight), mut gradient) in labels
            .iter()
            .zip(&example_weights)
            .zip(output_gradient.rows_mut())
        {
            loss -= f64::from(weight) * f64::from(gradient[label].max(1e-12)).ln();
            gradient[label] -= 1.0;
            gradient *= weight / weight_sum;
        }

        // Backward and update.
        let first_correction = 1.0 - ADAM_BETA1.powi(step);
        let second_correction = 1.0 - ADAM_BETA2.powi(step);
        let adam = AdamStep {
            learning_rate: options.learning_rate,
            l2_penalty: options.l2_penalty,
            first_correction,
            second_correction,
        };
        let last_weight_gradient = last_input.t().dot(&output_gradient);
        let last_bias_gradient = output_gradient.sum_axis(Axis(0));
        if let (Some(hidden), HeadKind::Mlp { .. }) = (hidden.as_ref(), self.kind) {
            let mut hidden_gradient = output_gradient.dot(&self.layers[last].weights.t());
            hidden_gradient.zip_mut_with(hidden, |gradient, &activation| {
                if activation <= 0.0 {
                    *gradient = 0.0;
                }
            });
            if let Some(mask) = &dropout_mask {
                hidden_gradient *= mask;
            }
            let first_weight_gradient = inputs.t().dot(&hidden_gradient);
            let first_bias_gradient = hidden_gradient.sum_axis(Axis(0));
            let (first_layers, last_layers) = self.layers.split_at_mut(1);
            let (first_moments, last_moments) = moments.split_at_mut(1);
            adam.apply(
                &mut last_layers[0],
                &mut last_moments[0],
                &last_weight_gradient,
                &last_bias_gradient,
            );
            adam.apply(
                &mut first_layers[0],
                &mut first_moments[0],
                &first_weight_gradient,
                &first_bias_gradient,
            );
        } else {
            adam.apply(
                &mut self.layers[0],
                &mut moments[0],
                &last_weight_gradient,
                &last_bias_gradient,
            );
        }
        (loss, f64::from(weight_sum))
    }

    /// Unweighted mean cross-entropy on standardised inputs.
    fn mean_cross_entropy(&self, inputs: ArrayView2<f32>, labels: &[usize]) -> f32 {
        let mut probabilities = self.forward_standardised(inputs);
        softmax_rows(&mut probabilities);
        let total: f64 = labels
            .iter()
            .enumerate()
            .map(|(row, &label)| -f64::from(probabilities[[row, label]].max(1e-12)).ln())
            .sum();
        (total / labels.len().max(1) as f64) as f32
    }

    fn forward_standardised(&self, inputs: ArrayView2<f32>) -> Array2<f32> {
        match self.kind {
            HeadKind::LogisticRegression => {
                inputs.dot(&self.layers[0].weights) + &self.layers[0].bias
            }
            HeadKind::Mlp { .. } => {
                let mut hidden = inputs.dot(&self.layers[0].weights) + &self.layers[0].bias;
                hidden.mapv_inplace(|value| value.max(0.0));
                hidden.dot(&self.layers[1].weights) + &self.layers[1].bias
            }
        }
    }

    /// Logits for each feature vector.
    pub fn logits_batch<F: AsRef<[f32]>>(&self, features: &[F]) -> Result<Vec<Vec<f32>>> {
        if features.is_empty() {
            return Ok(Vec::new());
        }
        let mut matrix = Array2::zeros((features.len(), self.feature_dimension));
        for (index, row) in features.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != self.feature_dimension {
                return Err(VisionError::FeatureSizeMismatch {
                    expected: self.feature_dimension,
                    actual: row.len(),
                });
            }
            matrix
                .row_mut(index)
                .iter_mut()
                .zip(
                    row.iter()
                        .zip(self.feature_mean.iter().zip(self.feature_scale.iter())),
                )
                .for_each(|(target, (&value, (&mean, &scale)))| *target = (value - mean) * scale);
        }
        Ok(self
            .forward_standardised(matrix.view())
            .rows()
            .into_iter()
            .map(|row| row.to_vec())
            .collect())
    }

    /// Logits for one feature vector.
    pub fn logits(&self, features: &[f32]) -> Result<Vec<f32>> {
        Ok(self.logits_batch(&[features])?.pop().unwrap_or_default())
    }

    pub fn kind(&self) -> HeadKind {
        self.kind
    }

    pub fn class_count(&self) -> usize {
        self.class_count
    }

    pub fn feature_dimension(&self) -> usize {
        self.feature_dimension
    }

    /// Serialise to the versioned binary format (see the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let hidden = match self.kind {
            HeadKind::LogisticRegression => 0u32,
            HeadKind::Mlp { hidden_units } => hidden_units as u32,
        };
        let kind = match self.kind {
            HeadKind::LogisticRegression => 0u32,
            HeadKind::Mlp { .. } => 1u32,
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(HEAD_MAGIC);
        for value in [
            HEAD_FORMAT_VERSION,
            kind,
            self.feature_dimension as u32,
            hidden,
            self.class_count as u32,
        ] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        let mut push = |values: &mut dyn Iterator<Item = f32>| {
            for value in values {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
        };
        push(&mut self.feature_mean.iter().copied());
        push(&mut self.feature_scale.iter().copied());
        for layer in &self.layers {
            push(&mut layer.weights.iter().copied());
            push(&mut layer.bias.iter().copied());
        }
        let checksum = hex::decode(sha256_hex(&bytes)).unwrap_or_default();
        bytes.extend_from_slice(&checksum);
        bytes
    }

    /// Read and validate the binary format: magic, version, sizes, checksum, finite values.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let header_length = 4 + 5 * 4;
        if bytes.len() < header_length + CHECKSUM_LENGTH {
            return Err(format_error(format!(
                "{} bytes is too short for a head",
                bytes.len()
            )));
        }
        if &bytes[..4] != HEAD_MAGIC {
            return Err(format_error("missing PCVH magic bytes"));
        }
        let field = |index: usize| {
            let start = 4 + index * 4;
            u32::from_le_bytes([
                bytes[start],
                bytes[start + 1],
                bytes[start + 2],
                bytes[start + 3],
            ])
        };
        let version = field(0);
        if version != HEAD_FORMAT_VERSION {
            return Err(VisionError::HeadVersionUnsupported {
                found: version,
                supported: HEAD_FORMAT_VERSION,
            });
        }
        let (payload, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LENGTH);
        if hex::encode(checksum) != sha256_hex(payload) {
            return Err(format_error("checksum mismatch: the file is corrupt"));
        }
        let dimension = field(2) as usize;
        let hidden = field(3) as usize;
        let class_count = field(4) as usize;
        let kind = match (field(1), hidden) {
            (0, 0) => HeadKind::LogisticRegression,
            (1, hidden_units) if hidden_units > 0 => HeadKind::Mlp { hidden_units },
            (kind, hidden) => {
                return Err(format_error(format!(
                    "unknown kind {kind} with {hidden} hidden units"
                )))
            }
        };
        if dimension == 0 || class_count < 2 {
            return Err(format_error(format!(
                "invalid sizes: {dimension} features, {class_count} classes"
            )));
        }
        let layer_shapes: Vec<(usize, usize)> = match kind {
            HeadKind::LogisticRegression => vec![(dimension, class_count)],
            HeadKind::Mlp { hidden_units } => {
                vec![(dimension, hidden_units), (hidden_units, class_count)]
            }
        };
        let expected_values = 2 * dimension
            + layer_shapes
                .iter()
                .map(|&(inputs, outputs)| inputs * outputs + outputs)
                .sum::<usize>();
        let body = &payload[header_length..];
        if body.len() != expected_values * 4 {
            return Err(format_error(format!(
                "body holds {} bytes, the header implies {}",
                body.len(),
                expected_values * 4
            )));
        }
        let values: Vec<f32> = body
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        if values.iter().any(|value| !value.is_finite()) {
            return Err(format_error("non-finite parameter"));
        }
        let mut cursor = 0usize;
        let mut take = |length: usize| {
            let slice = values[cursor..cursor + length].to_vec();
            cursor += length;
            slice
        };
        let feature_mean = Array1::from(take(dimension));
        let feature_scale = Array1::from(take(dimension));
        let mut layers = Vec::new();
        for (inputs, outputs) in layer_shapes {
            let weights = Array2::from_shape_vec((inputs, outputs), take(inputs * outputs))
                .map_err(|error| format_error(error.to_string()))?;
            let bias = Array1::from(take(outputs));
            layers.push(DenseLayer { weights, bias });
        }
        Ok(Self {
            kind,
            feature_dimension: dimension,
            class_count,
            feature_mean,
            feature_scale,
            layers,
        })
    }
}
