#!/usr/bin/env python3
"""Which branch holds the fusion back? Trains the product fold by fold with its own commands,
reads each held-out product's text and photo probabilities from `prodcat predict --json`, and
fuses them, by `ln p_text + w ln p_photo` for a few fixed w, each with the matching branch of a
plain reference pipeline fitted on the same training rows (the text: n-gram TF-IDF with the
sentence embedding at weight 2 and a linear SVM with a temperature fitted out of fold; the
photo: a logistic regression on the last convolution's pooled features). Swapping one branch
at a time shows which one's probabilities add less.

    python3 benchmarks/quality/photo-rows.py $R /tmp/photo-rows
    target/release/examples/embed_csv models /tmp/photo-rows/X.csv /tmp/e5-rows.csv 160
    for FOLD in 0 1 2 3 4; do
      .venv/bin/python benchmarks/quality/branch-swap.py split $R /tmp/photo-rows 42 $FOLD /tmp/swap/$FOLD
      PRODCAT_DATA_DIR=/tmp/swap/$FOLD/data prodcat data import --texts /tmp/swap/$FOLD/train-X.csv \
          --labels /tmp/swap/$FOLD/train-Y.csv --images $R/images/image_train
      PRODCAT_DATA_DIR=/tmp/swap/$FOLD/data prodcat train --branch fusion --text-embeddings --promote
      PRODCAT_DATA_DIR=/tmp/swap/$FOLD/data .venv/bin/python benchmarks/quality/branch-swap.py \
          dump $R /tmp/swap/$FOLD
    done
    .venv/bin/python benchmarks/quality/branch-swap.py compare $R /tmp/photo-rows /tmp/e5-rows.csv \
        /tmp/layers 42 /tmp/swap

`split` writes the fold's training rows (every row of the other folds) and its held-out rows
with a text and a photo; `dump` runs `prodcat predict --json` (the `prodcat` on PATH, else
target/release/prodcat) on each held-out product; `compare` needs the pooled photo features of
multi-layer-features.py in its work folder (/tmp/layers above).
"""
import argparse
import csv
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

ROOT = Path(__file__).resolve().parents[2]
PHOTO_WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


def reference_pipeline():
    spec = importlib.util.spec_from_file_location("layers", ROOT / "benchmarks/quality/multi-layer-features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photo_path(sample, row):
    return Path(sample) / "images" / "image_train" / f"image_{row['imageid']}_product_{row['productid']}.jpg"


def folds(labels, seed):
    return list(StratifiedKFold(5, shuffle=True, random_state=seed).split(labels, labels))


def split(options):
    texts = list(csv.reader(open(Path(options.rows) / "X.csv", newline="")))
    labels = list(csv.reader(open(Path(options.rows) / "Y.csv", newline="")))
    train, test = folds(np.array([row[1] for row in labels[1:]]), options.seed)[options.fold]
    header = texts[0]
    options.out.mkdir(parents=True, exist_ok=True)
    for name, chosen in (("train", train), ("test", test)):
        rows = []
        for index in chosen:
            row = dict(zip(header, texts[index + 1]))
            if name == "test" and not (row["designation"] and photo_path(options.sample, row).exists()):
                continue
            rows.append(index)
        with open(options.out / f"{name}-X.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(texts[i + 1] for i in rows)
        with open(options.out / f"{name}-Y.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(labels[0])
            writer.writerows(labels[i + 1] for i in rows)
        print(f"{name}: {len(rows)} rows")


def dump(options):
    binary = shutil.which("prodcat") or str(ROOT / "target" / "release" / "prodcat")
    out = []
    for row in csv.DictReader(open(options.fold_dir / "test-X.csv", newline="")):
        image = photo_path(options.sample, row)
        if not image.exists():
            continue
        command = [binary, "predict", f"--designation={row['designation']}", f"--description={row['description']}"]
        answer = subprocess.run(command + ["--image", str(image), "--json"], capture_output=True, text=True, check=True)
        prediction = json.loads(answer.stdout)
        out.append(
            {
                "index": row[""],
                "text": prediction["textProbabilities"],
                "image": prediction["imageProbabilities"],
                "category": prediction["category"],
            }
        )
    (options.fold_dir / "probabilities.json").write_text(json.dumps(out))
    print(f"{len(out)} held-out products with a text and a photo")


def compare(options):
    layers = reference_pipeline()
    rows = layers.read_rows(options.sample, options.rows)
    pooled = layers.pooled_features(rows, options.layers)["last, average"]
    reference = layers.ReferencePipeline(rows, options.embeddings)
    labels, classes = reference.labels, reference.classes
    # The product orders its categories by code; the reference pipeline by their text.
    by_code = sorted(int(code) for code in classes)
    product_column = [by_code.index(int(code)) for code in classes]
    row_of = {row["index"]: i for i, row in enumerate(rows)}
    parts = {name: [] for name in ("product text", "product photo", "reference text", "reference photo", "answer", "truth")}
    for fold, (train, _) in enumerate(folds(labels, options.seed)):
        dumped = json.loads((options.swap / str(fold) / "probabilities.json").read_text())
        held_out = np.array([row_of[entry["index"]] for entry in dumped])
        parts["product text"].append(np.array([entry["text"] for entry in dumped])[:, product_column])
        parts["product photo"].append(np.array([entry["image"] for entry in dumped])[:, product_column])
        parts["answer"].append(np.array([str(entry["category"]) for entry in dumped]))
        parts["reference text"].append(reference.text(train, held_out))
        parts["reference photo"].append(reference.photo(pooled, train, held_out, 0.01))
        parts["truth"].append(labels[held_out])
    parts = {name: np.concatenate(values) for name, values in parts.items()}
    truth = parts["truth"]

    def score(probabilities):
        return f1_score(truth, classes[probabilities.argmax(1)], average="weighted")

    print(f"{len(truth)} held-out products with a text and a photo, weighted F1 pooled over the five folds")
    print(f"the product's own fused answer: {f1_score(truth, parts['answer'], average='weighted'):.4f}")
    print("| text branch | photo branch | text alone | photo alone | " + " | ".join(f"fused − text, w {w:g}" for w in PHOTO_WEIGHTS) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(PHOTO_WEIGHTS))
    for text_name in ("product text", "reference text"):
        for photo_name in ("product photo", "reference photo"):
            text, photo = parts[text_name], parts[photo_name]
            gains = [100 * (score(np.log(text + 1e-12) + w * np.log(photo + 1e-12)) - score(text)) for w in PHOTO_WEIGHTS]
            print(
                f"| {text_name} | {photo_name} | {score(text):.4f} | {score(photo):.4f} | "
                + " | ".join(f"{gain:+.1f}" for gain in gains)
                + " |"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("split")
    command.add_argument("sample")
    command.add_argument("rows")
    command.add_argument("seed", type=int)
    command.add_argument("fold", type=int)
    command.add_argument("out", type=Path)
    command = commands.add_parser("dump")
    command.add_argument("sample", type=Path)
    command.add_argument("fold_dir", type=Path)
    command = commands.add_parser("compare")
    command.add_argument("sample")
    command.add_argument("rows")
    command.add_argument("embeddings")
    command.add_argument("layers", type=Path)
    command.add_argument("seed", type=int)
    command.add_argument("swap", type=Path)
    options = parser.parse_args()
    {"split": split, "dump": dump, "compare": compare}[options.command](options)


if __name__ == "__main__":
    main()
