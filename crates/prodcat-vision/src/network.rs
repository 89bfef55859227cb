//! MobileNetV2 built directly as a tract-core `TypedModel` in NHWC layout, batch norm folded
//! into the convolutions at build time, with two outputs: the 1280-d globally pooled features
//! and the 1000 ImageNet logits.
//!
//! The network is torchvision's MobileNetV2 (width 1.0, 224 px): a 3x3 stride-2 stem, 17
//! inverted-residual blocks (1x1 expansion, 3x3 depthwise, 1x1 linear projection, residual
//! when shape is kept), a 1x1 convolution to 1280 channels, global average pooling and a linear
//! classifier. ReLU6 follows every convolution except the projections.
//!
//! One optimised plan is shared; every worker thread runs it through its own single-threaded
//! state, so a batch is spread over the cores with one image per thread at a time.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::nn::{DataFormat, Reduce, Reducer};

use crate::error::{Result, VisionError};
use crate::preprocess::PreparedImage;
use crate::weights::MobileNetWeights;

/// Side of the square network input, in pixels.
pub const INPUT_SIZE: usize = 224;
/// Number of values in one NHWC input image (224 x 224 x 3).
pub const INPUT_VALUE_COUNT: usize = INPUT_SIZE * INPUT_SIZE * 3;
/// Dimension of the pooled feature vector.
pub const FEATURE_DIMENSION: usize = 1280;
/// Number of ImageNet classes of the pretrained classifier.
pub const IMAGENET_CLASS_COUNT: usize = 1000;
/// Multiply-adds of one forward pass at 224 px (MobileNetV2 paper: 300 M); twice that in FLOP.
pub const MULTIPLY_ADDS_PER_IMAGE: f64 = 300e6;

const BATCH_NORM_EPSILON: f64 = 1e-5;

/// (expansion factor, output channels, repeats, stride of the first repeat)
const INVERTED_RESIDUAL_SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// What the network gives for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkOutput {
    /// Globally average-pooled activations of the last convolution (1280 values).
    pub features: Vec<f32>,
    /// ImageNet logits (1000 values, before softmax).
    pub logits: Vec<f32>,
}

impl NetworkOutput {
    /// The `count` most probable ImageNet classes with their softmax probabilities.
    pub fn top_classes(&self, count: usize) -> Vec<(usize, f32)> {
        let probabilities = softmax(&self.logits);
        let mut ranked: Vec<(usize, f32)> = probabilities.into_iter().enumerate().collect();
        ranked.sort_by(|left, right| right.1.total_cmp(&left.1).then(left.0.cmp(&right.0)));
        ranked.truncate(count);
        ranked
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let maximum = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exponentials: Vec<f64> = logits
        .iter()
        .map(|&value| f64::from(value - maximum).exp())
        .collect();
    let total: f64 = exponentials.iter().sum();
    exponentials
        .into_iter()
        .map(|value| (value / total) as f32)
        .collect()
}

fn graph_error(error: impl std::fmt::Display) -> VisionError {
    VisionError::GraphConstruction {
        reason: format!("{error:#}"),
    }
}

fn inference_error(error: impl std::fmt::Display) -> VisionError {
    VisionError::Inference {
        reason: format!("{error:#}"),
    }
}

struct GraphBuilder<'a> {
    model: TypedModel,
    weights: &'a MobileNetWeights,
}

impl GraphBuilder<'_> {
    /// Convolution `conv` (no bias) followed by batch norm `batch_norm`, folded into one
    /// convolution with bias; optionally followed by ReLU6.
    #[allow(clippy::too_many_arguments)]
    fn convolution_batch_norm(
        &mut self,
        input: OutletId,
        convolution: &str,
        batch_norm: &str,
        input_channels: usize,
        output_channels: usize,
        kernel: usize,
        stride: usize,
        group: usize,
        relu6: bool,
    ) -> Result<OutletId> {
        let kernel_tensor = self.weights.tensor(
            &format!("{convolution}.weight"),
            &[output_channels, input_channels / group, kernel, kernel],
        )?;
        let channel_tensor = |suffix: &str| {
            self.weights
                .tensor(&format!("{batch_norm}.{suffix}"), &[output_channels])
        };
        let gamma = &channel_tensor("weight")?.values;
        let beta = &channel_tensor("bias")?.values;
        let mean = &channel_tensor("running_mean")?.values;
        let variance = &channel_tensor("running_var")?.values;

        let per_output = kernel_tensor.values.len() / output_channels;
        let mut folded_kernel = kernel_tensor.values.clone();
        let mut folded_bias = vec![0f32; output_channels];
        for output in 0..output_channels {
            let scale = f64::from(gamma[output])
                / (f64::from(variance[output]) + BATCH_NORM_EPSILON).sqrt();
            for value in &mut folded_kernel[output * per_output..(output + 1) * per_output] {
                *value = (f64::from(*value) * scale) as f32;
            }
            folded_bias[output] =
                (f64::from(beta[output]) - f64::from(mean[output]) * scale) as f32;
        }
        self.convolution_with_bias(
            input,
            convolution,
            folded_kernel,
            folded_bias,
            [input_channels, output_channels, kernel, stride, group],
            relu6,
        )
    }

    fn convolution_with_bias(
        &mut self,
        input: OutletId,
        name: &str,
        kernel_values: Vec<f32>,
        bias_values: Vec<f32>,
        [input_channels, output_channels, kernel, stride, group]: [usize; 5],
        relu6: bool,
    ) -> Result<OutletId> {
        let kernel_tensor = Tensor::from_shape(
            &[output_channels, input_channels / group, kernel, kernel],
            &kernel_values,
        )
        .map_err(graph_error)?;
        let bias_tensor =
            Tensor::from_shape(&[output_channels], &bias_values).map_err(graph_error)?;
        let kernel_outlet = self
            .model
            .add_const(format!("{name}.kernel"), kernel_tensor)
            .map_err(graph_error)?;
        let bias_outlet = self
            .model
            .add_const(format!("{name}.bias"), bias_tensor)
            .map_err(graph_error)?;
        let padding = kernel / 2;
        let operation = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NHWC,
                kernel_shape: tvec![kernel, kernel],
                padding: PaddingSpec::Explicit(tvec![padding, padding], tvec![padding, padding]),
                dilations: None,
                strides: Some(tvec![stride, stride]),
                input_channels,
                output_channels,
            },
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        };
        let output = self
            .model
            .wire_node(name, operation, &[input, kernel_outlet, bias_outlet])
            .map_err(graph_error)?[0];
        if relu6 {
            self.relu6(name, output)
        } else {
            Ok(output)
        }
    }

    fn relu6(&mut self, name: &str, input: OutletId) -> Result<OutletId> {
        let zero = self
            .model
            .add_const(format!("{name}.relu6.zero"), tensor0(0f32))
            .map_err(graph_error)?;
        let six = self
            .model
            .add_const(format!("{name}.relu6.six"), tensor0(6f32))
            .map_err(graph_error)?;
        let floored = wire_with_rank_broadcast(
            format!("{name}.relu6.max"),
            &mut self.model,
            tract_core::ops::math::max(),
            &[input, zero],
        )
        .map_err(graph_error)?[0];
        Ok(wire_with_rank_broadcast(
            format!("{name}.relu6.min"),
            &mut self.model,
            tract_core::ops::math::min(),
            &[floored, six],
        )
        .map_err(graph_error)?[0])
    }

    fn build(mut self) -> Result<TypedModel> {
        let input = self
            .model
            .add_source("image", f32::fact([1, INPUT_SIZE, INPUT_SIZE, 3]))
            .map_err(graph_error)?;
        let mut wire = self.convolution_batch_norm(
            input,
            "features.0.0",
            "features.0.1",
            3,
            32,
            3,
            2,
            1,
            true,
        )?;
        let mut input_channels = 32;
        let mut block = 1;
        for (expansion, output_channels, repeats, first_stride) in INVERTED_RESIDUAL_SETTINGS {
            for repeat in 0..repeats {
                let stride = if repeat == 0 { first_stride } else { 1 };
                let prefix = format!("features.{block}.conv");
                let hidden = input_channels * expansion;
                let mut inner = wire;
                let mut layer = 0;
                if expansion != 1 {
                    inner = self.convolution_batch_norm(
                        inner,
                        &format!("{prefix}.0.0"),
                        &format!("{prefix}.0.1"),
                        input_channels,
                        hidden,
                        1,
                        1,
                        1,
                        true,
                    )?;
                    layer = 1;
                }
                inner = self.convolution_batch_norm(
                    inner,
                    &format!("{prefix}.{layer}.0"),
                    &format!("{prefix}.{layer}.1"),
                    hidden,
                    hidden,
                    3,
                    stride,
                    hidden,
                    true,
                )?;
                inner = self.convolution_batch_norm(
                    inner,
                    &format!("{prefix}.{}", layer + 1),
                    &format!("{prefix}.{}", layer + 2),
                    hidden,
                    output_channels,
                    1,
                    1,
                    1,
                    false,
                )?;
                if stride == 1 && input_channels == output_channels {
                    inner = self
                        .model
                        .wire_node(
                            format!("{prefix}.residual"),
                            tract_core::ops::math::add(),
                            &[inner, wire],
                        )
                        .map_err(graph_error)?[0];
                }
                wire = inner;
                input_channels = output_channels;
                block += 1;
            }
        }
        wire = self.convolution_batch_norm(
            wire,
            &format!("features.{block}.0"),
            &format!("features.{block}.1"),
            input_channels,
            FEATURE_DIMENSION,
            1,
            1,
            1,
            true,
        )?;

        // Global average pooling: sum over H and W, then scale by 1 / (H * W).
        let spatial = self
            .model
            .outlet_fact(wire)
            .map_err(graph_error)?
            .shape
            .as_concrete()
            .map(|shape| shape[1] * shape[2])
            .ok_or_else(|| graph_error("last feature map has a symbolic shape"))?;
        let summed = self
            .model
            .wire_node("pool.sum", Reduce::new(tvec![1, 2], Reducer::Sum), &[wire])
            .map_err(graph_error)?[0];
        let scale = self
            .model
            .add_const("pool.scale", tensor0(1.0f32 / spatial as f32))
            .map_err(graph_error)?;
        let features = wire_with_rank_broadcast(
            "pool.mean",
            &mut self.model,
            tract_core::ops::math::mul(),
            &[summed, scale],
        )
        .map_err(graph_error)?[0];

        // The classifier as a 1x1 convolution over the 1x1 pooled map.
        let classifier = self.weights.tensor(
            "classifier.1.weight",
            &[IMAGENET_CLASS_COUNT, FEATURE_DIMENSION],
        )?;
        let classifier_bias = self
            .weights
            .tensor("classifier.1.bias", &[IMAGENET_CLASS_COUNT])?;
        let logits = self.convolution_with_bias(
            features,
            "classifier.1",
            classifier.values.clone(),
            classifier_bias.values.clone(),
            [FEATURE_DIMENSION, IMAGENET_CLASS_COUNT, 1, 1, 1],
            false,
        )?;
        self.model
            .select_output_outlets(&[features, logits])
            .map_err(graph_error)?;
        Ok(self.model)
    }
}

/// Build the (unoptimised) typed graph from torchvision-named weights.
pub fn build_mobilenet_v2_graph(weights: &MobileNetWeights) -> Result<TypedModel> {
    GraphBuilder {
        model: TypedModel::default(),
        weights,
    }
    .build()
}

/// The runnable pretrained network.
pub struct MobileNetV2 {
    plan: Arc<TypedSimplePlan>,
    idle_states: Mutex<Vec<TypedSimpleState>>,
    class_names: Option<Vec<String>>,
}

impl std::fmt::Debug for MobileNetV2 {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MobileNetV2")
            .field("nodes", &self.plan.model().nodes().len())
            .field("has_class_names", &self.class_names.is_some())
            .finish()
    }
}

impl MobileNetV2 {
    /// Load and verify a model directory (see [`crate::weights`]) and build the network.
    pub fn load(directory: &Path) -> Result<Self> {
        Self::from_weights(&MobileNetWeights::load_directory(directory)?)
    }

    /// Build, optimise and plan the network from weights in memory.
    pub fn from_weights(weights: &MobileNetWeights) -> Result<Self> {
        let model = build_mobilenet_v2_graph(weights)?
            .into_optimized()
            .map_err(graph_error)?;
        let plan = SimplePlan::new(model).map_err(graph_error)?;
        Ok(Self {
            plan,
            idle_states: Mutex::new(Vec::new()),
            class_names: weights.class_names().map(<[String]>::to_vec),
        })
    }

    /// ImageNet class names, when the model directory ships them.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    fn take_state(&self) -> Result<TypedSimpleState> {
        let reused = self
            .idle_states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match reused {
            Some(state) => Ok(state),
            None => SimpleState::new(&self.plan).map_err(inference_error),
        }
    }

    fn return_state(&self, state: TypedSimpleState) {
        self.idle_states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(state);
    }

    pub(crate) fn run_on_state(
        state: &mut TypedSimpleState,
        image: &PreparedImage,
    ) -> Result<NetworkOutput> {
        let input = Tensor::from_shape(&[1, INPUT_SIZE, INPUT_SIZE, 3], image.values())
            .map_err(inference_error)?;
        let outputs = state
            .run(tvec![input.into_tvalue()])
            .map_err(inference_error)?;
        let flat = |index: usize| -> Result<Vec<f32>> {
            let value = outputs
                .get(index)
                .ok_or_else(|| inference_error(format!("network output {index} is missing")))?;
            Ok(value
                .to_plain_array_view::<f32>()
                .map_err(inference_error)?
                .iter()
                .copied()
                .collect())
        };
        let features = flat(0)?;
        let logits = flat(1)?;
        if features.len() != FEATURE_DIMENSION || logits.len() != IMAGENET_CLASS_COUNT {
            return Err(inference_error(format!(
                "unexpected output sizes {} and {}",
                features.len(),
                logits.len()
            )));
        }
        Ok(NetworkOutput { features, logits })
    }

    /// Run the network on one prepared image, on the calling thread.
    pub fn run(&self, image: &PreparedImage) -> Result<NetworkOutput> {
        let mut state = self.take_state()?;
        let result = Self::run_on_state(&mut state, image);
        self.return_state(state);
        result
    }

    /// Run many prepared images on `threads` worker threads (one network state each);
    /// results come back in input order.
    pub fn run_batch(
        &self,
        images: &[PreparedImage],
        threads: usize,
    ) -> Vec<Result<NetworkOutput>> {
        self.map_parallel(images, threads, |state, image| {
            Self::run_on_state(state, image)
        })
    }

    /// Apply `work` to every item on up to `threads` scoped threads, each holding its own
    /// network state; keeps input order. A failure to create a state becomes that item's error.
    pub(crate) fn map_parallel<T: Sync, R: Send>(
        &self,
        items: &[T],
        threads: usize,
        work: impl Fn(&mut TypedSimpleState, &T) -> Result<R> + Sync,
    ) -> Vec<Result<R>> {
        let threads = threads.clamp(1, items.len().max(1));
        let next = AtomicUsize::new(0);
        let worker = || {
            let mut produced = Vec::new();
            let mut state = match self.take_state() {
                Ok(state) => Some(state),
                Err(error) => {
                    let message = error.to_string();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= items.len() {
                            return produced;
                        }
                        produced.push((index, Err(inference_error(&message))));
                    }
                }
            };
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= items.len() {
                    break;
                }
                if let Some(state) = state.as_mut() {
                    produced.push((index, work(state, &items[index])));
                }
            }
            if let Some(state) = state.take() {
                self.return_state(state);
            }
            produced
        };
        let mut slots: Vec<Option<Result<R>>> = (0..items.len()).map(|_| None).collect();
        if threads == 1 {
            for (index, result) in worker() {
                slots[index] = Some(result);
            }
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads).map(|_| scope.spawn(worker)).collect();
                for handle in handles {
                    match handle.join() {
                        Ok(produced) => {
                            for (index, result) in produced {
                                slots[index] = Some(result);
                            }
                        }
                        Err(_) => {
                            // A panicking worker loses its items; they are reported below.
                        }
                    }
                }
            });
        }
        slots
            .into_iter()
            .map(|slot| slot.unwrap_or_else(|| Err(inference_error("worker thread panicked"))))
            .collect()
    }
}

/// Number of worker threads to use by default: the available cores.
pub fn default_thread_count() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
}
