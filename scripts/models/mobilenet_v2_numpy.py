"""Reference forward pass of torchvision's MobileNetV2 in plain numpy.

Written from the architecture description (Sandler et al. 2018, torchvision's
layer naming), independent of the Rust implementation: it works in NCHW
layout, float64, and applies batch normalisation as a separate step instead of
folding it into the convolution weights.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BATCH_NORM_EPSILON = 1e-5
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])

# (expansion factor t, output channels c, repeats n, first stride s)
INVERTED_RESIDUAL_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def torchvision_preprocess(image: Image.Image) -> np.ndarray:
    """Resize the shorter side to 256 (bilinear, antialiased as PIL does), centre
    crop 224, scale to [0, 1], normalise with ImageNet mean/std. Returns HWC float32."""
    image = image.convert("RGB")
    width, height = image.size
    if width <= height:
        new_width, new_height = 256, int(256 * height / width)
    else:
        new_width, new_height = int(256 * width / height), 256
    resized = image.resize((new_width, new_height), Image.BILINEAR)
    top = int(round((new_height - 224) / 2.0))
    left = int(round((new_width - 224) / 2.0))
    cropped = resized.crop((left, top, left + 224, top + 224))
    pixels = np.asarray(cropped, dtype=np.float32) / np.float32(255.0)
    normalised = (pixels - IMAGENET_MEAN.astype(np.float32)) / IMAGENET_STD.astype(np.float32)
    return normalised.astype(np.float32)


def _pad(x: np.ndarray, padding: int) -> np.ndarray:
    if padding == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def convolution(x: np.ndarray, weight: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Dense convolution. x: (N, C, H, W); weight: (O, C, K, K)."""
    out_channels, in_channels, kernel, _ = weight.shape
    x = _pad(x, padding)
    batch, _, height, width = x.shape
    out_height = (height - kernel) // stride + 1
    out_width = (width - kernel) // stride + 1
    if kernel == 1:
        patches = x[:, :, : (out_height - 1) * stride + 1 : stride, : (out_width - 1) * stride + 1 : stride]
        return np.einsum("nchw,oc->nohw", patches, weight[:, :, 0, 0], optimize=True)
    result = np.zeros((batch, out_channels, out_height, out_width))
    for ky in range(kernel):
        for kx in range(kernel):
            window = x[:, :, ky : ky + (out_height - 1) * stride + 1 : stride, kx : kx + (out_width - 1) * stride + 1 : stride]
            result += np.einsum("nchw,oc->nohw", window, weight[:, :, ky, kx], optimize=True)
    return result


def depthwise_convolution(x: np.ndarray, weight: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Depthwise convolution. x: (N, C, H, W); weight: (C, 1, K, K)."""
    channels, _, kernel, _ = weight.shape
    x = _pad(x, padding)
    _, _, height, width = x.shape
    out_height = (height - kernel) // stride + 1
    out_width = (width - kernel) // stride + 1
    result = np.zeros((x.shape[0], channels, out_height, out_width))
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


def forward(state: dict, nhwc_batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the network on a (N, 224, 224, 3) batch; return (features (N, 1280), logits (N, 1000))."""
    weights = {name: np.asarray(value, dtype=np.float64) for name, value in state.items()}
    x, block = blocks(weights, nhwc_batch.astype(np.float64))
    features = last_convolution(weights, x, block).mean(axis=(2, 3))
    logits = features @ weights["classifier.1.weight"].T + weights["classifier.1.bias"]
    return features, logits


def blocks(
    weights: dict, nhwc_batch: np.ndarray, stop_at_depthwise_of: int | None = None, taps: dict | None = None
) -> tuple[np.ndarray, int]:
    """The stem and the inverted residual blocks, in the dtype of `weights` and the batch.

    Returns the NCHW output and the index of the next layer (the last convolution); with
    `stop_at_depthwise_of`, that block's depthwise output (after its ReLU6) and the block.
    With `taps`, a dict whose keys are block indices, each of those blocks' NCHW output is
    stored under its index."""
    x = np.transpose(nhwc_batch, (0, 3, 1, 2))
    x = relu6(batch_norm(convolution(x, weights["features.0.0.weight"], 2, 1), weights, "features.0.1"))
    in_channels = 32
    block = 1
    for expansion, out_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTINGS:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            prefix = f"features.{block}.conv"
            h = x
            layer = 0
            if expansion != 1:
                h = convolution(h, weights[f"{prefix}.0.0.weight"], 1, 0)
                h = relu6(batch_norm(h, weights, f"{prefix}.0.1"))
                layer = 1
            h = depthwise_convolution(h, weights[f"{prefix}.{layer}.0.weight"], stride, 1)
            h = relu6(batch_norm(h, weights, f"{prefix}.{layer}.1"))
            if block == stop_at_depthwise_of:
                return h, block
            h = convolution(h, weights[f"{prefix}.{layer + 1}.weight"], 1, 0)
            h = batch_norm(h, weights, f"{prefix}.{layer + 2}")
            if stride == 1 and in_channels == out_channels:
                h = h + x
            x = h
            if taps is not None and block in taps:
                taps[block] = x
            in_channels = out_channels
            block += 1
    return x, block


def last_convolution(weights: dict, x: np.ndarray, block: int) -> np.ndarray:
    """The 1x1 convolution to 1280 channels after the blocks, with its batch norm and ReLU6 (NCHW)."""
    return relu6(batch_norm(convolution(x, weights[f"features.{block}.0.weight"], 1, 0), weights, f"features.{block}.1"))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)
