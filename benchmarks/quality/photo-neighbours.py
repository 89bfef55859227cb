#!/usr/bin/env python3
"""Do the real sample's photos have near-duplicates that a nearest-neighbour photo branch could
exploit? Reads the MobileNetV2 features a training cached in the object store, five stratified
folds: the share of held-out photos whose nearest training photo is almost the same picture,
and a cosine nearest-neighbour vote against a logistic regression on the same features.

    python3 benchmarks/quality/photo-rows.py $R /tmp/photo-rows
    python3 benchmarks/quality/photo-neighbours.py $R /tmp/photo-rows $PRODCAT_DATA_DIR/objects
"""
import csv
import hashlib
import os
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold


def main(sample, rows, objects):
    images = os.path.join(sample, "images", "image_train")
    cache = os.path.join(objects, "features")
    backbone = next(d for d in sorted(os.listdir(cache)) if d.startswith("mobilenet-v2"))
    texts = list(csv.DictReader(open(os.path.join(rows, "X.csv"))))
    labels = list(csv.DictReader(open(os.path.join(rows, "Y.csv"))))
    vectors, classes = [], []
    for text, label in zip(texts, labels):
        path = os.path.join(images, f"image_{text['imageid']}_product_{text['productid']}.jpg")
        if not os.path.exists(path):
            continue
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        cached = os.path.join(cache, backbone, digest[:2], f"{digest}.f32")
        if os.path.exists(cached):
            vectors.append(np.fromfile(cached, dtype="<f4"))
            classes.append(int(label["prdtypecode"]))
    features, y = np.array(vectors), np.array(classes)
    print(f"{len(y)} photos with cached {backbone} features, {len(set(classes))} categories")
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    nearest = np.zeros(len(y))
    same = np.zeros(len(y), bool)
    by_vote = np.zeros(len(y), int)
    by_regression = np.zeros(len(y), int)
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(features, y):
        similarity = unit[test] @ unit[train].T
        order = np.argsort(-similarity, axis=1)[:, :10]
        nearest[test] = similarity[np.arange(len(test)), order[:, 0]]
        same[test] = y[train][order[:, 0]] == y[test]
        for row, neighbours in enumerate(order):
            votes = {}
            for index in neighbours:
                weight = np.exp(20 * similarity[row, index])
                votes[y[train][index]] = votes.get(y[train][index], 0) + weight
            by_vote[test[row]] = max(votes, key=votes.get)
        model = LogisticRegression(C=0.1, max_iter=2000).fit(features[train], y[train])
        by_regression[test] = model.predict(features[test])
    print("| nearest training photo's cosine | share of held-out photos | same category |")
    print("|---|---:|---:|")
    for threshold in (0.99, 0.95, 0.9):
        close = nearest >= threshold
        agree = same[close].mean() if close.any() else float("nan")
        print(f"| >= {threshold} | {close.mean():.4f} | {agree:.2f} |")
    print(f"10-neighbour cosine vote, weighted F1: {f1_score(y, by_vote, average='weighted'):.4f}")
    print(f"logistic regression, weighted F1: {f1_score(y, by_regression, average='weighted'):.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
