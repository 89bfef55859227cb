#!/usr/bin/env python3
"""Would fine-tuning MobileNetV2 help the photo branch? The part of the network that can be
fine-tuned cheaply is its pointwise tail: the last block's projection (960 -> 320) and the last
convolution (320 -> 1280), both 1x1, read from the last block's depthwise output (7 x 7 x 960),
which stays fixed and is computed once. Five stratified folds over the labelled photos: a linear
head (dropout 0.5) on the frozen pooled features, against the same head trained together with
the tail, pulled toward the pretrained tail (L2-SP). Prints held-out weighted / macro F1 after
each epoch, averaged over the folds.

    python3 benchmarks/quality/photo-rows.py $R /tmp/photo-rows
    .venv/bin/pip install scikit-learn   # scripts/setup's .venv has numpy and Pillow
    .venv/bin/python benchmarks/quality/tail-fine-tuning.py $R /tmp/photo-rows /tmp/tail \
        [--epochs 12] [--tail-learning-rate 1e-4] [--pull 1e-2]

The first run writes the activations (1,720 photos: about 6 minutes, 324 MB) to the work folder
(third argument); later runs read them. Needs numpy, Pillow and scikit-learn, and the converted
weights in $PRODCAT_MODEL_DIR (or models/).
"""
import argparse
import csv
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "models"))
import mobilenet_v2_numpy as network  # noqa: E402

LAST_BLOCK = 17


def weights():
    spec = importlib.util.spec_from_file_location("fetch", ROOT / "scripts/models/fetch-mobilenet.py")
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    models = Path(os.environ.get("PRODCAT_MODEL_DIR", ROOT / "models"))
    state = fetch.read_safetensors(models / "mobilenet-v2" / "model.safetensors")
    return {name: np.asarray(value, dtype=np.float32) for name, value in state.items()}


def folded(w, weight, norm):
    """A 1x1 convolution with its batch normalisation folded in: (in, out) matrix and bias."""
    scale = w[norm + ".weight"] / np.sqrt(w[norm + ".running_var"] + network.BATCH_NORM_EPSILON)
    return (w[weight][:, :, 0, 0] * scale[:, None]).T.copy(), w[norm + ".bias"] - w[norm + ".running_mean"] * scale


def activations(sample, rows, work):
    work.mkdir(parents=True, exist_ok=True)
    if (work / "activations.npy").exists():
        return np.load(work / "activations.npy"), np.load(work / "labels.npy"), dict(np.load(work / "tail.npz"))
    w = weights()
    images = Path(sample) / "images" / "image_train"
    texts = list(csv.DictReader(open(Path(rows) / "X.csv")))
    labels = list(csv.DictReader(open(Path(rows) / "Y.csv")))
    paths, classes = [], []
    for text, label in zip(texts, labels):
        path = images / f"image_{text['imageid']}_product_{text['productid']}.jpg"
        if path.exists():
            paths.append(path)
            classes.append(int(label["prdtypecode"]))
    out = np.zeros((len(paths), 49, 960), dtype=np.float32)
    started = time.time()
    for start in range(0, len(paths), 16):
        batch = np.stack([network.torchvision_preprocess(Image.open(p)) for p in paths[start : start + 16]])
        depthwise, _ = network.blocks(w, batch.astype(np.float32), stop_at_depthwise_of=LAST_BLOCK)
        out[start : start + len(batch)] = depthwise.transpose(0, 2, 3, 1).reshape(len(batch), 49, 960)
        print(f"activations: {start + len(batch)}/{len(paths)} photos, {time.time() - started:.0f} s", file=sys.stderr)
    project, project_bias = folded(w, f"features.{LAST_BLOCK}.conv.2.weight", f"features.{LAST_BLOCK}.conv.3")
    last, last_bias = folded(w, f"features.{LAST_BLOCK + 1}.0.weight", f"features.{LAST_BLOCK + 1}.1")
    tail = {"W1": project, "b1": project_bias, "W2": last, "b2": last_bias}
    np.save(work / "activations.npy", out)
    np.save(work / "labels.npy", np.array(classes))
    np.savez(work / "tail.npz", **tail)
    return out, np.array(classes), tail


def pooled(x, tail):
    h = x @ tail["W1"] + tail["b1"]
    z = h @ tail["W2"] + tail["b2"]
    return h, z, np.clip(z, 0, 6).mean(1)


def fit_and_score(a, y, k, train, test, tune_tail, options, rng):
    pretrained = {name: value.copy() for name, value in options.tail.items()}
    tail = {name: value.copy() for name, value in options.tail.items()}
    head, head_bias = np.zeros((1280, k), np.float32), np.zeros(k, np.float32)
    params = [head, head_bias] + ([tail["W1"], tail["b1"], tail["W2"], tail["b2"]] if tune_tail else [])
    rates = [1e-3, 1e-3] + [options.tail_learning_rate] * 4
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    frozen = None if tune_tail else np.concatenate([pooled(a[i : i + 128], tail)[2] for i in range(0, len(a), 128)])
    curve, step = [], 0
    for _ in range(options.epochs):
        order = rng.permutation(train)
        for s in range(0, len(order), 64):
            rows = order[s : s + 64]
            onehot = np.eye(k, dtype=np.float32)[y[rows]]
            if tune_tail:
                x = a[rows]
                h, z, features = pooled(x, tail)
            else:
                features = frozen[rows]
            keep = (rng.random(features.shape) > 0.5).astype(np.float32) * 2.0
            dropped = features * keep
            logits = dropped @ head + head_bias
            logits -= logits.max(1, keepdims=True)
            probabilities = np.exp(logits)
            probabilities /= probabilities.sum(1, keepdims=True)
            residual = (probabilities - onehot) / len(rows)
            grads = [dropped.T @ residual + 1e-4 * head, residual.sum(0)]
            if tune_tail:
                dz = ((residual @ head.T) * keep)[:, None, :] / 49.0 * ((z > 0) & (z < 6))
                grad_w2 = np.einsum("bnc,bnd->cd", h, dz, optimize=True) + options.pull * (tail["W2"] - pretrained["W2"])
                dh = dz @ tail["W2"].T
                grad_w1 = np.einsum("bnc,bnd->cd", x, dh, optimize=True) + options.pull * (tail["W1"] - pretrained["W1"])
                grads += [grad_w1, dh.sum((0, 1)), grad_w2, dz.sum((0, 1))]
            step += 1
            for p, g, (m, v), rate in zip(params, grads, moments, rates):
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                p -= rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
        held_out = np.concatenate([pooled(a[test[i : i + 128]], tail)[2] for i in range(0, len(test), 128)]) if tune_tail else frozen[test]
        predicted = (held_out @ head + head_bias).argmax(1)
        curve.append((f1_score(y[test], predicted, average="weighted"), f1_score(y[test], predicted, average="macro")))
    return curve


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sample")
    parser.add_argument("rows")
    parser.add_argument("work", type=Path)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--tail-learning-rate", type=float, default=1e-4)
    parser.add_argument("--pull", type=float, default=1e-2, help="L2 weight toward the pretrained tail")
    options = parser.parse_args()
    a, raw, options.tail = activations(options.sample, options.rows, options.work)
    classes = np.unique(raw)
    y = np.searchsorted(classes, raw)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(a, y))
    print(f"{len(y)} photos, {len(classes)} categories, five folds; held-out weighted / macro F1 after each epoch")
    for name, tune_tail in [("frozen network, linear head", False), ("pointwise tail fine-tuned with the head", True)]:
        started = time.time()
        rng = np.random.default_rng(0)
        curves = np.array([fit_and_score(a, y, len(classes), train, test, tune_tail, options, rng) for train, test in folds])
        mean = curves.mean(0)
        print(f"{name} ({time.time() - started:.0f} s):")
        print("  " + " ".join(f"{epoch + 1}: {w:.4f}/{m:.4f}" for epoch, (w, m) in enumerate(mean)))


if __name__ == "__main__":
    main()
