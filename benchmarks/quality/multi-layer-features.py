#!/usr/bin/env python3
"""Would the photo branch gain from MobileNetV2's earlier layers? The product reads the
average-pooled output of the network's last convolution (1280 values), which the network learnt
for ImageNet's classes. Earlier layers are more generic (edges, textures, printed letters) and
often transfer better to other kinds of pictures. This study pools the outputs of blocks 10, 13,
16 and 17 (64, 96, 160 and 320 channels) and the last convolution (average and maximum), and
measures, over five stratified folds:

- the photo alone: a logistic regression on each set of pooled features, all 1,720 labelled
  photos;
- beside the text: the products with a text and a photo, the text branch being the n-gram
  TF-IDF with the sentence embedding at weight 2 (the product's `--text-embeddings`), a linear
  SVM whose scores become probabilities through a temperature fitted out of fold; fused by
  `ln p_text + w ln p_photo` for a few fixed w.

    python3 benchmarks/quality/photo-rows.py $R /tmp/photo-rows
    cargo build --release -p prodcat-embed --example embed_csv
    target/release/examples/embed_csv models /tmp/photo-rows/X.csv /tmp/e5-rows.csv 160
    .venv/bin/pip install scikit-learn   # scripts/setup's .venv has numpy and Pillow
    .venv/bin/python benchmarks/quality/multi-layer-features.py $R /tmp/photo-rows \
        /tmp/e5-rows.csv /tmp/layers

The first run writes the pooled features (1,720 photos, 6 to 10 minutes on 2 cores) to the work folder
(last argument); later runs read them. Needs the converted weights in $PRODCAT_MODEL_DIR (or
models/).
"""
import argparse
import csv
import html
import importlib.util
import re
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
import scipy.sparse as sparse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "models"))
sys.path.insert(0, str(ROOT / "crates" / "prodcat-text-model" / "bench"))
import mobilenet_v2_numpy as network  # noqa: E402
from compare_sklearn import make_pipeline  # noqa: E402

TAPPED_BLOCKS = (10, 13, 16, 17)
EMBEDDING_WEIGHT = 2.0


def weights():
    """The converted MobileNetV2 weights in float32, read as the tail study reads them."""
    spec = importlib.util.spec_from_file_location("tail", ROOT / "benchmarks/quality/tail-fine-tuning.py")
    tail = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tail)
    return tail.weights()


def normalise(text):
    text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    return re.sub(r"\s+", " ", text).strip()


def read_rows(sample, rows_dir):
    texts = list(csv.DictReader(open(Path(rows_dir) / "X.csv", newline="")))
    labels = list(csv.DictReader(open(Path(rows_dir) / "Y.csv", newline="")))
    images = Path(sample) / "images" / "image_train"
    rows = []
    for text, label in zip(texts, labels):
        path = images / f"image_{text['imageid']}_product_{text['productid']}.jpg"
        body = (normalise(text.get("designation") or "") + " " + normalise(text.get("description") or "")).strip()
        rows.append({"index": text[""], "text": body, "photo": path if path.exists() else None, "label": label["prdtypecode"]})
    return rows


def pooled_features(rows, work):
    work.mkdir(parents=True, exist_ok=True)
    target = work / "pooled.npz"
    if target.exists():
        return dict(np.load(target))
    w = weights()
    photos = [row["photo"] for row in rows if row["photo"] is not None]
    out = {f"block {b}": [] for b in TAPPED_BLOCKS}
    out["last, average"] = []
    out["last, maximum"] = []
    started = time.time()
    for start in range(0, len(photos), 16):
        batch = np.stack([network.torchvision_preprocess(Image.open(p)) for p in photos[start : start + 16]])
        taps = {b: None for b in TAPPED_BLOCKS}
        x, block = network.blocks(w, batch.astype(np.float32), taps=taps)
        last = network.last_convolution(w, x, block)
        for b in TAPPED_BLOCKS:
            out[f"block {b}"].append(taps[b].mean(axis=(2, 3)))
        out["last, average"].append(last.mean(axis=(2, 3)))
        out["last, maximum"].append(last.max(axis=(2, 3)))
        print(f"features: {start + len(batch)}/{len(photos)} photos, {time.time() - started:.0f} s", file=sys.stderr)
    result = {name: np.concatenate(parts).astype(np.float32) for name, parts in out.items()}
    np.savez(target, **result)
    return result


def feature_sets(pooled):
    earlier = np.hstack([pooled[f"block {b}"] for b in TAPPED_BLOCKS])
    return {
        "last convolution, average (the product's)": pooled["last, average"],
        "last convolution, maximum": pooled["last, maximum"],
        "last, average + maximum": np.hstack([pooled["last, average"], pooled["last, maximum"]]),
        "blocks 10, 13, 16, 17": earlier,
        "last, average + blocks 10-17": np.hstack([pooled["last, average"], earlier]),
    }


def photo_probabilities(train_x, train_y, test_x, cost, classes):
    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(C=cost, max_iter=500).fit(scaler.transform(train_x), train_y)
    assert list(model.classes_) == list(classes)
    return model.predict_proba(scaler.transform(test_x))


def text_model(texts, embedding, labels):
    features = make_pipeline().named_steps["features"]
    tfidf = features.fit_transform(texts)
    svm = LinearSVC(C=0.5, dual=True, tol=1e-4, max_iter=2000).fit(
        sparse.hstack([tfidf, sparse.csr_matrix(EMBEDDING_WEIGHT * embedding)]).tocsr(), labels
    )
    return lambda t, e: svm.decision_function(
        sparse.hstack([features.transform(t), sparse.csr_matrix(EMBEDDING_WEIGHT * e)]).tocsr()
    ), svm.classes_


def text_probabilities(texts, embedding, labels, train, test, classes):
    """The SVM on the training rows; its scores turned into probabilities by a temperature fitted
    on three-fold out-of-fold scores of the same training rows."""
    out_of_fold = np.zeros((len(train), len(classes)))
    for inner_train, inner_test in StratifiedKFold(3, shuffle=True, random_state=0).split(train, labels[train]):
        rows, held = train[inner_train], train[inner_test]
        score, model_classes = text_model([texts[i] for i in rows], embedding[rows], labels[rows])
        assert list(model_classes) == list(classes)
        out_of_fold[inner_test] = score([texts[i] for i in held], embedding[held])
    truth = np.searchsorted(classes, labels[train])

    def loss(scale):
        p = network.softmax(out_of_fold * scale)
        return -np.mean(np.log(p[np.arange(len(train)), truth] + 1e-12))

    scale = minimize_scalar(loss, bounds=(0.1, 50.0), method="bounded").x
    score, _ = text_model([texts[i] for i in train], embedding[train], labels[train])
    return network.softmax(score([texts[i] for i in test], embedding[test]) * scale)


class ReferencePipeline:
    """The plain pipeline's two branches over the rows of photo-rows.py: row indices in, each
    branch's probabilities for the held-out rows out (columns in the order of `classes`)."""

    def __init__(self, rows, embeddings_path):
        self.labels = np.array([row["label"] for row in rows])
        self.classes = np.unique(self.labels)
        vectors = {}
        with open(embeddings_path) as handle:
            for line in handle:
                parts = line.rstrip().split(",")
                vectors[parts[0]] = np.array(parts[1:], dtype=np.float32)
        self.text_rows = np.array([i for i, row in enumerate(rows) if row["text"]])
        self.text_position = {row: position for position, row in enumerate(self.text_rows)}
        self.texts = [rows[i]["text"] for i in self.text_rows]
        self.embedding = np.stack([vectors[rows[i]["index"]] for i in self.text_rows])
        self.photo_rows = np.array([i for i, row in enumerate(rows) if row["photo"] is not None])
        self.photo_position = {row: position for position, row in enumerate(self.photo_rows)}

    def text(self, train, held_out):
        train_text = np.array([self.text_position[i] for i in train if i in self.text_position])
        held_out_text = np.array([self.text_position[i] for i in held_out])
        return text_probabilities(
            self.texts, self.embedding, self.labels[self.text_rows], train_text, held_out_text, self.classes
        )

    def photo(self, features, train, held_out, cost):
        """`features` has one row per photo, in the order of the rows that have one."""
        train_photo = np.array([self.photo_position[i] for i in train if i in self.photo_position])
        held_out_photo = np.array([self.photo_position[i] for i in held_out])
        photo_labels = self.labels[self.photo_rows]
        return photo_probabilities(
            features[train_photo], photo_labels[train_photo], features[held_out_photo], cost, self.classes
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sample")
    parser.add_argument("rows")
    parser.add_argument("embeddings")
    parser.add_argument("work", type=Path)
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--costs", type=float, nargs="+", default=[0.003, 0.01, 0.03])
    parser.add_argument("--photo-weights", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    options = parser.parse_args()

    rows = read_rows(options.sample, options.rows)
    pooled = pooled_features(rows, options.work)
    sets = feature_sets(pooled)
    photo_rows = np.array([i for i, row in enumerate(rows) if row["photo"] is not None])
    labels = np.array([row["label"] for row in rows])
    classes = np.unique(labels)
    photo_labels = labels[photo_rows]

    print("photo alone, 1,720 photos, weighted F1 (mean of 5 folds) per fold seed and cost")
    for name, x in sets.items():
        line = []
        for cost in options.costs:
            scores = []
            for seed in options.fold_seeds:
                for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, photo_labels):
                    p = photo_probabilities(x[train], photo_labels[train], x[test], cost, classes)
                    scores.append(f1_score(photo_labels[test], classes[p.argmax(1)], average="weighted"))
            line.append(f"C {cost:g}: {np.mean(scores):.4f}")
        print(f"  {name} ({x.shape[1]} values): " + ", ".join(line), flush=True)

    reference = ReferencePipeline(rows, options.embeddings)
    in_both = {i for i in reference.text_rows if rows[i]["photo"] is not None}
    cost = options.costs[len(options.costs) // 2]
    print(f"\nproducts with a text and a photo ({len(in_both)}), weighted F1 pooled over 5 folds, photo C {cost:g}")
    for seed in options.fold_seeds:
        truth, text_p, photo_p = [], [], {name: [] for name in sets}
        for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(labels, labels):
            test_both = np.array([i for i in test if i in in_both])
            text_p.append(reference.text(train, test_both))
            for name, x in sets.items():
                photo_p[name].append(reference.photo(x, train, test_both, cost))
            truth.append(labels[test_both])
        truth = np.concatenate(truth)
        text_p = np.concatenate(text_p)
        text_f1 = f1_score(truth, classes[text_p.argmax(1)], average="weighted")
        print(f"  fold seed {seed}: text {text_f1:.4f}")
        for name in sets:
            p = np.concatenate(photo_p[name])
            fused = [
                f1_score(truth, classes[(np.log(text_p + 1e-12) + w * np.log(p + 1e-12)).argmax(1)], average="weighted")
                for w in options.photo_weights
            ]
            photo_f1 = f1_score(truth, classes[p.argmax(1)], average="weighted")
            print(
                f"    {name}: photo {photo_f1:.4f}; fused − text "
                + ", ".join(f"w {w:g}: {100 * (f - text_f1):+.1f}" for w, f in zip(options.photo_weights, fused)),
                flush=True,
            )


if __name__ == "__main__":
    main()
