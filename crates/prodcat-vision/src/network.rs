//! The pretrained backbones built directly as tract-core `TypedModel`s in NHWC layout, batch
//! norm folded into the convolutions at build time, with two outputs: the 1280-d globally pooled
//! features and the 1000 ImageNet logits. [`BackboneNetwork`] runs any of them.
//!
//! MobileNetV2 is torchvision's (width 1.0, 224 px): a 3x3 stride-2 stem, 17 inverted-residual
//! blocks (1x1 expansion, 3x3 depthwise, 1x1 linear projection, residual when shape is kept), a
//! 1x1 convolution to 1280 channels, global average pooling and a linear classifier. ReLU6
//! follows every convolution except the projections. EfficientNet-Lite is built by
//! [`crate::efficientnet`] from the same pieces.
//!
//! One optimised plan is shared; every worker thread runs it through its own single-threaded
//! state, so a batch is spread over the cores with one image per thread at a time.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::nn::{DataFormat, Reduce, Reducer};

use crate::backbone::{BackboneKind, NetworkInput};
use crate::error::{Result, VisionError};
use crate::preprocess::PreparedImage;
use crate::weights::BackboneWeights;

/// Side of MobileNetV2's square input, in pixels (other backbones: [`BackboneKind::input_size`]).
pub const INPUT_SIZE: usize = 224;
/// Number of values in one NHWC MobileNetV2 input image (224 x 224 x 3).
pub const INPUT_VALUE_COUNT: usize = INPUT_SIZE * INPUT_SIZE * 3;
/// Dimension of the pooled feature vector.
pub const FEATURE_DIMENSION: usize = 1280;
/// Number of ImageNet classes of the pretrained classifier.
pub const IMAGENET_CLASS_COUNT: usize = 1000;
/// Multiply-adds of one forward pass at 224 px (MobileNetV2 paper: 300 M); twice that in FLOP.
pub const MULTIPLY_ADDS_PER_IMAGE: f64 = 300e6;

/// torchvision's batch-norm epsilon.
const MOBILENET_BATCH_NORM_EPSILON: f64 = 1e-5;

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
    /// The element-wise mean of two outputs (features and logits), e.g. of a picture and its
    /// mirror image.
    pub fn averaged_with(mut self, other: &NetworkOutput) -> NetworkOutput {
        for (value, other) in self.features.iter_mut().zip(&other.features) {
            *value = (*value + other) * 0.5;
        }
        for (value, other) in self.logits.iter_mut().zip(&other.logits) {
            *value = (*value + other) * 0.5;
        }
        self
    }

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

pub(crate) fn graph_error(error: impl std::fmt::Display) -> VisionError {
    VisionError::GraphConstruction {
        reason: format!("{error:#}"),
    }
}

fn inference_error(error: impl std::fmt::Display) -> VisionError {
    VisionError::Inference {
        reason: format!("{error:#}"),
    }
}

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Padding {
    /// `kernel / 2` on every side (PyTorch's `padding=k//2`).
    Symmetric,
    /// TensorFlow's "SAME": output `ceil(input / stride)`, the odd pixel of padding after.
    TensorFlowSame,
}

/// The shape of one convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvolutionShape {
    pub input_channels: usize,
    pub output_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub group: usize,
    pub padding: Padding,
}

impl ConvolutionShape {
    /// A dense (group 1) convolution.
    pub fn dense(
        input_channels: usize,
        output_channels: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    ) -> Self {
        Self {
            input_channels,
            output_channels,
            kernel,
            stride,
            group: 1,
            padding,
        }
    }

    /// A depthwise convolution over `channels`.
    pub fn depthwise(channels: usize, kernel: usize, stride: usize, padding: Padding) -> Self {
        Self {
            input_channels: channels,
            output_channels: channels,
            kernel,
            stride,
            group: channels,
            padding,
        }
    }
}

/// Padding before and after along one spatial axis, and the output length.
fn padded_axis(length: usize, shape: &ConvolutionShape) -> (usize, usize, usize) {
    let (kernel, stride) = (shape.kernel, shape.stride.max(1));
    match shape.padding {
        Padding::Symmetric => {
            let padding = kernel / 2;
            let output = (length + 2 * padding).saturating_sub(kernel) / stride + 1;
            (padding, padding, output)
        }
        Padding::TensorFlowSame => {
            let output = length.div_ceil(stride);
            let total = ((output - 1) * stride + kernel).saturating_sub(length);
            (total / 2, total - total / 2, output)
        }
    }
}

/// Builds a backbone graph from PyTorch-named weights, counting multiply-adds as it goes.
pub(crate) struct GraphBuilder<'a> {
    pub model: TypedModel,
    weights: &'a BackboneWeights,
    multiply_adds: u64,
}

impl<'a> GraphBuilder<'a> {
    pub fn new(weights: &'a BackboneWeights) -> Self {
        Self {
            model: TypedModel::default(),
            weights,
            multiply_adds: 0,
        }
    }

    /// The NHWC image input, `side` pixels square.
    pub fn image_input(&mut self, side: usize) -> Result<OutletId> {
        self.model
            .add_source("image", f32::fact([1, side, side, 3]))
            .map_err(graph_error)
    }

    fn spatial_shape(&self, wire: OutletId) -> Result<(usize, usize)> {
        self.model
            .outlet_fact(wire)
            .map_err(graph_error)?
            .shape
            .as_concrete()
            .map(|shape| (shape[1], shape[2]))
            .ok_or_else(|| graph_error("a feature map has a symbolic shape"))
    }

    /// Convolution `convolution` (no bias) followed by batch norm `batch_norm` (with
    /// `epsilon`), folded into one convolution with bias; optionally followed by ReLU6.
    pub fn convolution_batch_norm(
        &mut self,
        input: OutletId,
        convolution: &str,
        batch_norm: &str,
        epsilon: f64,
        shape: ConvolutionShape,
        relu6: bool,
    ) -> Result<OutletId> {
        let output_channels = shape.output_channels;
        let kernel_tensor = self.weights.tensor(
            &format!("{convolution}.weight"),
            &[
                output_channels,
                shape.input_channels / shape.group,
                shape.kernel,
                shape.kernel,
            ],
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
            let scale = f64::from(gamma[output]) / (f64::from(variance[output]) + epsilon).sqrt();
            for value in &mut folded_kernel[output * per_output..(output + 1) * per_output] {
                *value = (f64::from(*value) * scale) as f32;
            }
            folded_bias[output] =
                (f64::from(beta[output]) - f64::from(mean[output]) * scale) as f32;
        }
        self.convolution_with_bias(input, convolution, folded_kernel, folded_bias, shape, relu6)
    }

    pub fn convolution_with_bias(
        &mut self,
        input: OutletId,
        name: &str,
        kernel_values: Vec<f32>,
        bias_values: Vec<f32>,
        shape: ConvolutionShape,
        relu6: bool,
    ) -> Result<OutletId> {
        let ConvolutionShape {
            input_channels,
            output_channels,
            kernel,
            stride,
            group,
            ..
        } = shape;
        let (height, width) = self.spatial_shape(input)?;
        let (top, bottom, output_height) = padded_axis(height, &shape);
        let (left, right, output_width) = padded_axis(width, &shape);
        self.multiply_adds += (output_height
            * output_width
            * output_channels
            * (input_channels / group)
            * kernel
            * kernel) as u64;
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
        let operation = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NHWC,
                kernel_shape: tvec![kernel, kernel],
                padding: PaddingSpec::Explicit(tvec![top, left], tvec![bottom, right]),
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

    /// `left + right`, for residual connections.
    pub fn add(&mut self, name: &str, left: OutletId, right: OutletId) -> Result<OutletId> {
        Ok(self
            .model
            .wire_node(name, tract_core::ops::math::add(), &[left, right])
            .map_err(graph_error)?[0])
    }

    /// Global average pooling of `wire` (the features), then the linear classifier named
    /// `classifier` (`.weight` of shape 1000 x 1280 and `.bias`); both become the graph's
    /// outputs. Returns the finished graph and its multiply-adds per image.
    pub fn finish_with_classifier(
        mut self,
        wire: OutletId,
        classifier: &str,
    ) -> Result<(TypedModel, u64)> {
        // Global average pooling: sum over H and W, then scale by 1 / (H * W).
        let (height, width) = self.spatial_shape(wire)?;
        let summed = self
            .model
            .wire_node("pool.sum", Reduce::new(tvec![1, 2], Reducer::Sum), &[wire])
            .map_err(graph_error)?[0];
        let scale = self
            .model
            .add_const("pool.scale", tensor0(1.0f32 / (height * width) as f32))
            .map_err(graph_error)?;
        let features = wire_with_rank_broadcast(
            "pool.mean",
            &mut self.model,
            tract_core::ops::math::mul(),
            &[summed, scale],
        )
        .map_err(graph_error)?[0];

        // The classifier as a 1x1 convolution over the 1x1 pooled map.
        let weight = self.weights.tensor(
            &format!("{classifier}.weight"),
            &[IMAGENET_CLASS_COUNT, FEATURE_DIMENSION],
        )?;
        let bias = self
            .weights
            .tensor(&format!("{classifier}.bias"), &[IMAGENET_CLASS_COUNT])?;
        let logits = self.convolution_with_bias(
            features,
            classifier,
            weight.values.clone(),
            bias.values.clone(),
            ConvolutionShape::dense(
                FEATURE_DIMENSION,
                IMAGENET_CLASS_COUNT,
                1,
                1,
                Padding::Symmetric,
            ),
            false,
        )?;
        self.model
            .select_output_outlets(&[features, logits])
            .map_err(graph_error)?;
        Ok((self.model, self.multiply_adds))
    }
}

fn build_mobilenet_v2(weights: &BackboneWeights) -> Result<(TypedModel, u64)> {
    let mut builder = GraphBuilder::new(weights);
    let epsilon = MOBILENET_BATCH_NORM_EPSILON;
    let padding = Padding::Symmetric;
    let input = builder.image_input(INPUT_SIZE)?;
    let mut wire = builder.convolution_batch_norm(
        input,
        "features.0.0",
        "features.0.1",
        epsilon,
        ConvolutionShape::dense(3, 32, 3, 2, padding),
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
                inner = builder.convolution_batch_norm(
                    inner,
                    &format!("{prefix}.0.0"),
                    &format!("{prefix}.0.1"),
                    epsilon,
                    ConvolutionShape::dense(input_channels, hidden, 1, 1, padding),
                    true,
                )?;
                layer = 1;
            }
            inner = builder.convolution_batch_norm(
                inner,
                &format!("{prefix}.{layer}.0"),
                &format!("{prefix}.{layer}.1"),
                epsilon,
                ConvolutionShape::depthwise(hidden, 3, stride, padding),
                true,
            )?;
            inner = builder.convolution_batch_norm(
                inner,
                &format!("{prefix}.{}", layer + 1),
                &format!("{prefix}.{}", layer + 2),
                epsilon,
                ConvolutionShape::dense(hidden, output_channels, 1, 1, padding),
                false,
            )?;
            if stride == 1 && input_channels == output_channels {
                inner = builder.add(&format!("{prefix}.residual"), inner, wire)?;
            }
            wire = inner;
            input_channels = output_channels;
            block += 1;
        }
    }
    wire = builder.convolution_batch_norm(
        wire,
        &format!("features.{block}.0"),
        &format!("features.{block}.1"),
        epsilon,
        ConvolutionShape::dense(input_channels, FEATURE_DIMENSION, 1, 1, padding),
        true,
    )?;
    builder.finish_with_classifier(wire, "classifier.1")
}

/// Build the (unoptimised) typed graph from torchvision-named weights.
pub fn build_mobilenet_v2_graph(weights: &BackboneWeights) -> Result<TypedModel> {
    Ok(build_mobilenet_v2(weights)?.0)
}

/// Build the (unoptimised) typed graph of `kind` and its multiply-adds per image.
pub fn build_backbone_graph(
    kind: BackboneKind,
    weights: &BackboneWeights,
) -> Result<(TypedModel, u64)> {
    match kind {
        BackboneKind::MobileNetV2 => build_mobilenet_v2(weights),
        BackboneKind::EfficientNetLite0
        | BackboneKind::EfficientNetLite1
        | BackboneKind::EfficientNetLite2 => {
            crate::efficientnet::build_efficientnet_lite(kind, weights)
        }
    }
}

/// Constructors of torchvision's MobileNetV2, kept for callers written when it was the only
/// backbone; they give a [`BackboneNetwork`].
#[derive(Debug, Clone, Copy)]
pub struct MobileNetV2;

impl MobileNetV2 {
    /// Load and verify a MobileNetV2 model directory (see [`crate::weights`]).
    pub fn load(directory: &Path) -> Result<BackboneNetwork> {
        BackboneNetwork::load_kind(directory, BackboneKind::MobileNetV2)
    }

    /// Build, optimise and plan MobileNetV2 from weights in memory.
    pub fn from_weights(weights: &BackboneWeights) -> Result<BackboneNetwork> {
        BackboneNetwork::from_weights(BackboneKind::MobileNetV2, weights)
    }
}

/// A runnable pretrained backbone: one optimised plan, reusable single-threaded states.
pub struct BackboneNetwork {
    kind: BackboneKind,
    plan: Arc<TypedSimplePlan>,
    idle_states: Mutex<Vec<TypedSimpleState>>,
    class_names: Option<Vec<String>>,
    multiply_adds: u64,
}

impl std::fmt::Debug for BackboneNetwork {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BackboneNetwork")
            .field("kind", &self.kind)
            .field("nodes", &self.plan.model().nodes().len())
            .field("multiply_adds", &self.multiply_adds)
            .field("has_class_names", &self.class_names.is_some())
            .finish()
    }
}

impl BackboneNetwork {
    /// Load and verify a model directory and build the backbone its manifest declares
    /// (MobileNetV2 when the manifest declares no architecture).
    pub fn load(directory: &Path) -> Result<Self> {
        let weights = BackboneWeights::load_directory(directory)?;
        let kind = weights.declared_backbone()?.unwrap_or_default();
        Self::from_weights(kind, &weights)
    }

    /// Load and verify a model directory and build `kind` from it. A manifest that declares
    /// another architecture is refused; one that declares none is accepted (the tensors are
    /// checked while the graph is built).
    pub fn load_kind(directory: &Path, kind: BackboneKind) -> Result<Self> {
        let weights = BackboneWeights::load_directory(directory)?;
        if let Some(declared) = weights.declared_architecture() {
            if BackboneKind::from_architecture(declared) != Some(kind) {
                return Err(VisionError::BackboneMismatch {
                    path: directory.to_path_buf(),
                    expected: kind.architecture().to_string(),
                    found: declared.to_string(),
                });
            }
        }
        Self::from_weights(kind, &weights)
    }

    /// Build, optimise and plan `kind` from weights in memory.
    pub fn from_weights(kind: BackboneKind, weights: &BackboneWeights) -> Result<Self> {
        let (model, multiply_adds) = build_backbone_graph(kind, weights)?;
        let model = model.into_optimized().map_err(graph_error)?;
        let plan = SimplePlan::new(model).map_err(graph_error)?;
        Ok(Self {
            kind,
            plan,
            idle_states: Mutex::new(Vec::new()),
            class_names: weights.class_names().map(<[String]>::to_vec),
            multiply_adds,
        })
    }

    /// Which backbone this is.
    pub fn kind(&self) -> BackboneKind {
        self.kind
    }

    /// The input it takes (side and normalisation).
    pub fn input(&self) -> NetworkInput {
        self.kind.input()
    }

    /// Multiply-adds of one forward pass (convolutions and classifier), counted at build time.
    pub fn multiply_adds(&self) -> u64 {
        self.multiply_adds
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
        &self,
        state: &mut TypedSimpleState,
        image: &PreparedImage,
    ) -> Result<NetworkOutput> {
        let side = self.kind.input_size();
        if image.side() != side {
            return Err(VisionError::InputSizeMismatch {
                expected: self.input().value_count(),
                actual: image.values().len(),
            });
        }
        let side = side as usize;
        let input =
            Tensor::from_shape(&[1, side, side, 3], image.values()).map_err(inference_error)?;
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

    /// The image's output, or with `flip_averaging` the mean of the outputs of the image and
    /// its mirror image.
    pub(crate) fn run_on_state_with_flip(
        &self,
        state: &mut TypedSimpleState,
        image: &PreparedImage,
        flip_averaging: bool,
    ) -> Result<NetworkOutput> {
        let output = self.run_on_state(state, image)?;
        if flip_averaging {
            let mirrored = self.run_on_state(state, &image.mirrored())?;
            Ok(output.averaged_with(&mirrored))
        } else {
            Ok(output)
        }
    }

    /// Run the network on one prepared image, on the calling thread.
    pub fn run(&self, image: &PreparedImage) -> Result<NetworkOutput> {
        self.run_with_flip(image, false)
    }

    /// [`Self::run`], averaged with the mirror image's output when `flip_averaging` is set.
    pub fn run_with_flip(
        &self,
        image: &PreparedImage,
        flip_averaging: bool,
    ) -> Result<NetworkOutput> {
        let mut state = self.take_state()?;
        let result = self.run_on_state_with_flip(&mut state, image, flip_averaging);
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
            self.run_on_state(state, image)
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
