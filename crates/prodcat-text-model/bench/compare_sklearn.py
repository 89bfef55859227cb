"""The scikit-learn side of the side-by-side text benchmark (driven by compare-sklearn.sh).

split  --data dataset.jsonl --out splits.json   stratified 80/20 split and 5 stratified folds
run    --data dataset.jsonl --splits splits.json --out sklearn.json
table  --sklearn sklearn.json --rust rust.json   prints the comparison as a Markdown table
score  --train train.jsonl --test test.jsonl --out score.json
                                                fits on one file, scores on another (rows with
                                                an empty text are left out of the fit)
"""

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time

import numpy as np


def read_rows(path):
    texts, labels = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(row["label"])
    return texts, np.array(labels)


def split(args):
    from sklearn.model_selection import StratifiedKFold, train_test_split

    texts, labels = read_rows(args.data)
    indices = np.arange(len(texts))
    train, test = train_test_split(
        indices, test_size=0.2, stratify=labels, random_state=42
    )
    folds = []
    if args.folds > 1:
        folds = [
            test_fold.tolist()
            for _, test_fold in StratifiedKFold(
                args.folds, shuffle=True, random_state=42
            ).split(indices, labels)
        ]
    with open(args.out, "w") as handle:
        json.dump({"train": train.tolist(), "test": test.tolist(), "folds": folds}, handle)


def make_pipeline():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.svm import LinearSVC

    features = FeatureUnion(
        [
            (
                "word",
                TfidfVectorizer(
                    analyzer="word",
                    ngram_range=(1, 2),
                    max_features=120000,
                    min_df=2,
                    max_df=0.9,
                    sublinear_tf=True,
                    strip_accents="unicode",
                ),
            ),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(3, 5), max_features=160000, sublinear_tf=True
                ),
            ),
        ]
    )
    return Pipeline(
        [("features", features), ("svm", LinearSVC(C=0.5, dual=True, tol=1e-4, max_iter=1000))]
    )


def peak_memory_mib():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def ece(probabilities, labels, bins=15):
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lower, upper in zip(edges[:-1], edges[1:]):
        mask = (confidence > lower) & (confidence <= upper)
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return total


def run(args):
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp, softmax
    from sklearn.metrics import f1_score

    texts, labels = read_rows(args.data)
    with open(args.splits) as handle:
        splits = json.load(handle)
    train, test = splits["train"], splits["test"]
    train_texts = [texts[i] for i in train]
    test_texts = [texts[i] for i in test]
    y_train, y_test = labels[train], labels[test]

    pipeline = make_pipeline()
    features, svm = pipeline.named_steps["features"], pipeline.named_steps["svm"]
    start, cpu_start = time.perf_counter(), time.process_time()
    x_train = features.fit_transform(train_texts)
    vectorize_seconds = time.perf_counter() - start
    vectorize_cpu_seconds = time.process_time() - cpu_start
    start, cpu_start = time.perf_counter(), time.process_time()
    svm.fit(x_train, y_train)
    svm_seconds = time.perf_counter() - start
    svm_cpu_seconds = time.process_time() - cpu_start
    fit_seconds = vectorize_seconds + svm_seconds
    peak = peak_memory_mib()
    print(f"sklearn: fit {fit_seconds:.2f}s (vectorise {vectorize_seconds:.2f}s / {vectorize_cpu_seconds:.2f} CPU s, "
          f"svm {svm_seconds:.2f}s / {svm_cpu_seconds:.2f} CPU s), "
          f"{x_train.shape[1]} features, iterations {svm.n_iter_}", file=sys.stderr)
    del x_train

    start = time.perf_counter()
    predicted = pipeline.predict(test_texts)
    batch_seconds = time.perf_counter() - start
    weighted_f1 = f1_score(y_test, predicted, average="weighted")
    macro_f1 = f1_score(y_test, predicted, average="macro")

    scores = pipeline.decision_function(test_texts)
    class_index = {c: i for i, c in enumerate(svm.classes_)}
    y_index = np.array([class_index[c] for c in y_test])

    def nll(temperature):
        z = scores / temperature
        return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(z)), y_index]))

    fitted = minimize_scalar(lambda lt: nll(np.exp(lt)), bounds=(-14, 14), method="bounded",
                             options={"xatol": 1e-10})
    temperature = float(np.exp(fitted.x))
    ece_before = ece(softmax(scores, axis=1), y_index)
    ece_after = ece(softmax(scores / temperature, axis=1), y_index)

    calls = min(300, len(test_texts) * 5)
    latencies = []
    cpu_start = time.thread_time()
    for call in range(calls):
        text = test_texts[call % len(test_texts)]
        start = time.perf_counter()
        pipeline.predict([text])
        latencies.append((time.perf_counter() - start) * 1e6)
    latency_cpu_mean_us = (time.thread_time() - cpu_start) / calls * 1e6
    latencies.sort()

    with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as handle:
        path = handle.name
    start = time.perf_counter()
    with open(path, "wb") as handle:
        pickle.dump(pipeline, handle, protocol=pickle.HIGHEST_PROTOCOL)
    save_seconds = time.perf_counter() - start
    model_bytes = os.path.getsize(path)
    start = time.perf_counter()
    with open(path, "rb") as handle:
        pickle.load(handle)
    load_seconds = time.perf_counter() - start
    os.unlink(path)

    fold_scores = []
    for fold in splits["folds"]:
        in_fold = np.zeros(len(texts), dtype=bool)
        in_fold[fold] = True
        fold_pipeline = make_pipeline()
        fold_pipeline.fit([t for t, f in zip(texts, in_fold) if not f], labels[~in_fold])
        fold_predicted = fold_pipeline.predict([texts[i] for i in fold])
        fold_scores.append(f1_score(labels[fold], fold_predicted, average="weighted"))

    result = {
        "side": "scikit-learn",
        "threads": 1,
        "train_count": len(train),
        "test_count": len(test),
        "feature_count": int(len(features.get_feature_names_out())),
        "fit_seconds": fit_seconds,
        "vectorize_seconds": vectorize_seconds,
        "svm_seconds": svm_seconds,
        "fit_cpu_seconds": vectorize_cpu_seconds + svm_cpu_seconds,
        "vectorize_cpu_seconds": vectorize_cpu_seconds,
        "svm_cpu_seconds": svm_cpu_seconds,
        "svm_iterations_max": int(max(svm.n_iter_)) if np.ndim(svm.n_iter_) else int(svm.n_iter_),
        "weighted_f1": float(weighted_f1),
        "macro_f1": float(macro_f1),
        "cv_weighted_f1": [float(s) for s in fold_scores],
        "cv_weighted_f1_mean": float(np.mean(fold_scores)) if fold_scores else None,
        "temperature": temperature,
        "ece_before": float(ece_before),
        "ece_after": float(ece_after),
        "single_latency_median_us": statistics.median(latencies),
        "single_latency_cpu_mean_us": latency_cpu_mean_us,
        "single_latency_p99_us": latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)],
        "batch_products_per_second": len(test_texts) / batch_seconds,
        "peak_memory_mib": peak,
        "model_bytes": model_bytes,
        "save_seconds": save_seconds,
        "load_seconds": load_seconds,
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"sklearn: weighted F1 {weighted_f1:.4f}, CV {fold_scores}", file=sys.stderr)


def table(args):
    with open(args.sklearn) as handle:
        sk = json.load(handle)
    with open(args.rust) as handle:
        rs = json.load(handle)

    def row(name, key, fmt, better):
        a, b = sk.get(key), rs.get(key)
        if a is None or b is None:
            return
        ratio = ""
        if better == "faster" and b:
            ratio = f"{a / b:.1f}x faster"
        elif better == "higher" and b:
            ratio = f"{b / a:.1f}x higher"
        elif better == "smaller" and b:
            ratio = f"{a / b:.1f}x smaller"
        elif better == "diff":
            ratio = f"{b - a:+.4f}"
        print(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |")

    print(f"Products: {sk['train_count']} train / {sk['test_count']} validation; "
          f"features: scikit-learn {sk['feature_count']}, prodcat {rs['feature_count']}; "
          f"prodcat threads: {rs['threads']}")
    print()
    print("| measure | scikit-learn | prodcat-text-model | prodcat vs scikit-learn |")
    print("|---|---|---|---|")
    row("weighted F1, 80/20 split", "weighted_f1", "{:.4f}", "diff")
    row("macro F1, 80/20 split", "macro_f1", "{:.4f}", "diff")
    row("weighted F1, 5-fold CV mean", "cv_weighted_f1_mean", "{:.4f}", "diff")
    row("fit time, s (vectorise + SVM)", "fit_seconds", "{:.2f}", "faster")
    row("  vectorise (fit_transform), s", "vectorize_seconds", "{:.2f}", "faster")
    row("  SVM fit, s", "svm_seconds", "{:.2f}", "faster")
    row("fit CPU time, s (all threads)", "fit_cpu_seconds", "{:.2f}", "faster")
    row("  vectorise CPU time, s", "vectorize_cpu_seconds", "{:.2f}", "faster")
    row("  SVM fit CPU time, s", "svm_cpu_seconds", "{:.2f}", "faster")
    row("  SVM outer iterations, max over classes", "svm_iterations_max", "{}", "")
    row("one product, median latency, us", "single_latency_median_us", "{:.1f}", "faster")
    row("one product, p99 latency, us", "single_latency_p99_us", "{:.1f}", "faster")
    row("one product, CPU time per call (mean), us", "single_latency_cpu_mean_us", "{:.1f}", "faster")
    row("batch throughput, products/s", "batch_products_per_second", "{:.0f}", "higher")
    row("peak memory after fit, MiB (VmHWM)", "peak_memory_mib", "{:.0f}", "smaller")
    row("model size on disk, bytes", "model_bytes", "{:,}", "smaller")
    row("model load, s", "load_seconds", "{:.3f}", "faster")
    row("temperature (fitted on validation)", "temperature", "{:.4f}", "")
    row("ECE before calibration", "ece_before", "{:.4f}", "")
    row("ECE after calibration (in-sample)", "ece_after", "{:.4f}", "")
    if "ece_after_cross_fitted" in rs:
        print(f"| ECE after calibration, 2-fold cross-fitted | | {rs['ece_after_cross_fitted']:.4f} | |")
    print()
    if sk["cv_weighted_f1"]:
        print("per-fold weighted F1, scikit-learn:", " ".join(f"{s:.4f}" for s in sk["cv_weighted_f1"]))
        print("per-fold weighted F1, prodcat:     ", " ".join(f"{s:.4f}" for s in rs["cv_weighted_f1"]))


def score(args):
    from sklearn.metrics import f1_score

    texts, labels = read_rows(args.train)
    keep = [i for i, text in enumerate(texts) if text.strip()]
    test_texts, test_labels = read_rows(args.test)
    pipeline = make_pipeline()
    pipeline.fit([texts[i] for i in keep], labels[keep])
    predicted = pipeline.predict(test_texts)
    result = {
        "train_count": len(keep),
        "test_count": len(test_texts),
        "weighted_f1": f1_score(test_labels, predicted, average="weighted"),
        "macro_f1": f1_score(test_labels, predicted, average="macro"),
        "predicted": [int(p) for p in predicted],
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle)
    print(f"sklearn: fit on {len(keep)}, weighted F1 {result['weighted_f1']:.4f} on "
          f"{len(test_texts)}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("split")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (0: none)")
    p = commands.add_parser("run")
    p.add_argument("--data", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--out", required=True)
    p = commands.add_parser("table")
    p.add_argument("--sklearn", required=True)
    p.add_argument("--rust", required=True)
    p = commands.add_parser("score")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    {"split": split, "run": run, "table": table, "score": score}[args.command](args)


if __name__ == "__main__":
    main()
