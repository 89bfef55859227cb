#!/usr/bin/env python3
"""Exploratory study: does the multilingual-e5-small sentence embedding, appended as dense
companion columns to the text branch's TF-IDF features, help the linear SVM?

The TF-IDF + LinearSVC pipeline is the reference one (crates/prodcat-text-model/bench/
compare_sklearn.py), so the first column is the scikit-learn figure of the text branch. The
embeddings come from the project's own embedder:

    cargo build --release --workspace --examples
    target/release/examples/embed_csv models $R/text/X_train_sample.csv /tmp/e5-160.csv 160
    .venv/bin/python benchmarks/quality/e5-companion.py $R /tmp/e5-160.csv [SCALE ...]

Prints the weighted F1 (mean over 5 stratified folds) of TF-IDF alone, TF-IDF with the
embedding scaled by each SCALE (default 1 2 3 4), and the embedding alone, for three fold
seeds. The scale is chosen on the same folds it is reported on, so the best column is
optimistic; the product must tune it out of fold.
"""
import csv
import html
import os
import re
import sys

import numpy as np
import scipy.sparse as sparse
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

sys.path.insert(
    0, os.path.join(os.path.dirname(__file__), "..", "..", "crates", "prodcat-text-model", "bench")
)
from compare_sklearn import make_pipeline  # noqa: E402


def normalise(text):
    text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    return re.sub(r"\s+", " ", text).strip()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sample, embeddings_path = sys.argv[1], sys.argv[2]
    scales = [float(value) for value in sys.argv[3:]] or [1.0, 2.0, 3.0, 4.0]
    with open(os.path.join(sample, "text", "X_train_sample.csv"), newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    with open(os.path.join(sample, "text", "Y_train_sample.csv"), newline="") as handle:
        labels_by_index = {row[0]: row[1] for row in list(csv.reader(handle))[1:]}
    texts = [(normalise(row[1]) + " " + normalise(row[2])).strip() for row in rows]
    labels = np.array([labels_by_index[row[0]] for row in rows])
    vectors = {}
    with open(embeddings_path) as handle:
        for line in handle:
            parts = line.rstrip().split(",")
            vectors[parts[0]] = np.array(parts[1:], dtype=np.float32)
    embedding = np.stack([vectors[row[0]] for row in rows])
    for seed in (42, 1, 2):
        scores = {}
        for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(texts, labels):
            features = make_pipeline().named_steps["features"]
            train_tfidf = features.fit_transform([texts[i] for i in train])
            test_tfidf = features.transform([texts[i] for i in test])
            variants = [("tf-idf", train_tfidf, test_tfidf, 0.5)]
            for scale in scales:
                variants.append(
                    (
                        f"tf-idf + {scale:g} x e5",
                        sparse.hstack([train_tfidf, sparse.csr_matrix(scale * embedding[train])]).tocsr(),
                        sparse.hstack([test_tfidf, sparse.csr_matrix(scale * embedding[test])]).tocsr(),
                        0.5,
                    )
                )
            variants.append(("e5 alone", embedding[train], embedding[test], 1.0))
            for name, train_x, test_x, cost in variants:
                svm = LinearSVC(C=cost, dual=True, tol=1e-4, max_iter=2000).fit(train_x, labels[train])
                f1 = f1_score(labels[test], svm.predict(test_x), average="weighted")
                scores.setdefault(name, []).append(f1)
        print(f"fold seed {seed}: " + ", ".join(f"{name} {np.mean(values):.4f}" for name, values in scores.items()), flush=True)


if __name__ == "__main__":
    main()
