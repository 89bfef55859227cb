"""Runs Evidently 0.7.23 and prodcat-drift on identical reference/current CSV pairs and prints
one table: column, test chosen by each, drift score by each, verdict by each.

Usage: compare_evidently.py --binary PATH_TO_drift_csv --work-dir DIR
"""

import argparse
import json
import math
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")

from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

NUMERIC = ["text_length", "image_brightness", "rating", "has_image"]
CATEGORICAL = ["language", "predicted_class"]
BINARY = ["empty_description"]
TEXT = ["text"]
PSI = ["predicted_class"]

EVIDENTLY_NAMES = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "PSI": "psi",
    "Percentile text content drift": "perc_text_content_drift",
    "Absolute text content drift": "abs_text_content_drift",
}

HOME = ("coussin housse coton lin décoration salon rideau nappe plaid velours drap oreiller bleu gris beige "
        "motif fleurs moderne lavable doux chambre lit table chaise lampe").split()
GAMES = ("jeu console manette nintendo switch playstation xbox aventure combat niveau joueur multijoueur "
         "édition collector course football mario zelda online pegi").split()
SHARED = "pour avec et de la le neuf lot taille noir blanc".split()
CLASSES = [10, 40, 50, 60, 1140, 1160, 1180, 1280, 1281, 1300, 1301, 1302, 1320, 1560, 1920, 1940, 2060,
           2220, 2280, 2403, 2462, 2522, 2582, 2583, 2585, 2705, 2905]


def make_frame(rng, rows, shift):
    """One synthetic product-feature table; `shift` names what drifts (or None)."""
    numeric_shift = shift == "numeric"
    category_shift = shift == "category"
    binary_shift = shift == "binary"
    text_shift = shift == "text"
    lengths = np.round(rng.lognormal(mean=5.0 + (0.25 if numeric_shift else 0.0), sigma=0.6, size=rows))
    brightness = rng.normal(200.0 + (10.0 if numeric_shift else 0.0), 25.0, size=rows)
    rating_weights = [0.1, 0.2, 0.4, 0.3] if not category_shift else [0.2, 0.3, 0.3, 0.2]
    rating = rng.choice([1, 2, 3, 4], p=rating_weights, size=rows)
    has_image = (rng.random(rows) < (0.7 if not binary_shift else 0.55)).astype(int)
    language_weights = [0.8, 0.12, 0.03, 0.05] if not category_shift else [0.65, 0.25, 0.04, 0.06]
    language = rng.choice(["fr", "en", "de", "other"], p=language_weights, size=rows)
    class_weights = np.array([1.0 + (i % 7) for i in range(len(CLASSES))])
    if category_shift:
        class_weights[0] *= 3.0
        class_weights[5] *= 3.0
        class_weights[9] = 0.3
    predicted = rng.choice(CLASSES, p=class_weights / class_weights.sum(), size=rows)
    empty = rng.random(rows) < (0.35 if not binary_shift else 0.5)
    texts = []
    for _ in range(rows):
        if rng.random() < 0.03:
            texts.append("")  # missing text: read back as NaN and dropped, as by pandas
            continue
        vocabulary = GAMES if (text_shift and rng.random() < 0.3) else HOME
        words = []
        for _ in range(int(rng.integers(4, 10))):
            pool = SHARED if rng.random() < 0.3 else vocabulary
            words.append(pool[int(rng.integers(len(pool)))])
        texts.append(" ".join(words))
    return pd.DataFrame({
        "text_length": lengths.astype(int),
        "image_brightness": brightness,
        "rating": rating,
        "has_image": has_image,
        "language": language,
        "predicted_class": [f"c{c}" for c in predicted],
        "empty_description": empty,
        "text": texts,
    })


SCENARIOS = [
    (f"{size}_{shift or 'no_drift'}", rows, shift)
    for size, rows in (("small", (800, 600)), ("large", (3000, 2000)))
    for shift in (None, "numeric", "category", "binary", "text")
]


def run_evidently(reference_path, current_path):
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL + BINARY,
                                text_columns=TEXT)
    reference = Dataset.from_pandas(pd.read_csv(reference_path), data_definition=definition)
    current = Dataset.from_pandas(pd.read_csv(current_path), data_definition=definition)
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset(per_column_method={c: "psi" for c in PSI})],
                      include_tests=True).run(current, reference)
    elapsed = time.perf_counter() - started
    result = snapshot.dict()
    failed = {}
    for test in result.get("tests", []):
        name = test.get("name", "")
        if name.startswith("Value Drift for column "):
            failed[name[len("Value Drift for column "):]] = test.get("status") == "FAIL"
    columns = {}
    share = None
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            share = metric["value"]["share"]
        if config["type"].endswith("ValueDrift"):
            column = config["column"]
            columns[column] = {
                "test": EVIDENTLY_NAMES.get(config["method"], config["method"]),
                "score": float(metric["value"]),
                "drifted": failed.get(column),
            }
    return columns, share, elapsed


def run_prodcat(binary, reference_path, current_path):
    command = [binary, "--reference", str(reference_path), "--current", str(current_path),
               "--numeric", ",".join(NUMERIC), "--categorical", ",".join(CATEGORICAL),
               "--binary", ",".join(BINARY), "--text", ",".join(TEXT), "--psi", ",".join(PSI)]
    started = time.perf_counter()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    elapsed = time.perf_counter() - started
    parsed = json.loads(output)
    return {c["column"]: c for c in parsed["columns"]}, parsed["shareOfDriftedColumns"], elapsed


def score_text(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.6f}"


def relative_difference(a, b):
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--work-dir", required=True)
    arguments = parser.parse_args()
    work = Path(arguments.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    print("| scenario | column | test Evidently | test prodcat | score Evidently | score prodcat | "
          "drift Evidently | drift prodcat |")
    print("|---|---|---|---|---|---|---|---|")
    tests_agree = verdicts_agree = total = 0
    worst = {}
    timing = []
    shares = []
    for index, (name, (reference_rows, current_rows), shift) in enumerate(SCENARIOS):
        reference_path = work / f"{name}-reference.csv"
        current_path = work / f"{name}-current.csv"
        make_frame(np.random.default_rng(1000 + index), reference_rows, None).to_csv(reference_path, index=False)
        make_frame(np.random.default_rng(2000 + index), current_rows, shift).to_csv(current_path, index=False)
        evidently, evidently_share, evidently_seconds = run_evidently(reference_path, current_path)
        prodcat, prodcat_share, prodcat_seconds = run_prodcat(arguments.binary, reference_path, current_path)
        timing.append((name, evidently_seconds, prodcat_seconds))
        shares.append((name, evidently_share, prodcat_share))
        for column in NUMERIC + CATEGORICAL + BINARY + TEXT:
            ours, theirs = prodcat[column], evidently[column]
            total += 1
            tests_agree += ours["test"] == theirs["test"]
            verdicts_agree += bool(ours["drifted"]) == bool(theirs["drifted"])
            if ours["test"] == theirs["test"]:
                difference = relative_difference(ours["score"], theirs["score"])
                worst[ours["test"]] = max(worst.get(ours["test"], 0.0), difference)
            mark = "" if bool(ours["drifted"]) == bool(theirs["drifted"]) else " **≠**"
            print(f"| {name} | {column} | {theirs['test']} | {ours['test']} | {score_text(theirs['score'])} | "
                  f"{score_text(ours['score'])} | {theirs['drifted']} | {ours['drifted']}{mark} |")
    print()
    print(f"Columns compared: {total}; same test chosen: {tests_agree}; same verdict: {verdicts_agree}.")
    print()
    print("| test | largest relative score difference |")
    print("|---|---|")
    for test, difference in sorted(worst.items()):
        print(f"| {test} | {difference:.2e} |")
    print()
    print("| scenario | drifted share Evidently | drifted share prodcat | Evidently Report.run (s) | "
          "prodcat process incl. CSV parsing (s) |")
    print("|---|---|---|---|---|")
    for (name, evidently_share, prodcat_share), (_, evidently_seconds, prodcat_seconds) in zip(shares, timing):
        print(f"| {name} | {evidently_share:.3f} | {prodcat_share:.3f} | {evidently_seconds:.3f} | "
              f"{prodcat_seconds:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
