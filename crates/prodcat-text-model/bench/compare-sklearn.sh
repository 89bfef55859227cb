#!/usr/bin/env bash
# Side-by-side benchmark of prodcat-text-model against scikit-learn's identical pipeline:
# same normalised texts, same split indices, same machine, one table.
#
#   crates/prodcat-text-model/bench/compare-sklearn.sh [--texts X.csv --labels Y.csv]
#       [--synthesize N] [--folds K] [--skip-sklearn] [--work DIR]
#
# Defaults to the real sample in $PRODCAT_SAMPLE_DATA/text. --synthesize N resamples the input
# with small perturbations into N products (a stand-in for a larger catalogue). --folds 0 skips
# cross-validation (default 5).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
sample="${PRODCAT_SAMPLE_DATA:-/work/shared/data/rakuten}"
texts="$sample/text/X_train_sample.csv"
labels="$sample/text/Y_train_sample.csv"
synthesize=""
skip_sklearn=""
work=""
folds=5
while [[ $# -gt 0 ]]; do
  case "$1" in
    --texts) texts="$2"; shift 2 ;;
    --labels) labels="$2"; shift 2 ;;
    --synthesize) synthesize="$2"; shift 2 ;;
    --folds) folds="$2"; shift 2 ;;
    --skip-sklearn) skip_sklearn=1; shift ;;
    --work) work="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
work="${work:-$(mktemp -d -t prodcat-text-bench-XXXXXX)}"
mkdir -p "$work"

venv="$root/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import sklearn, numpy, scipy, pandas" 2>/dev/null; then
  "$venv/bin/pip" install --quiet scikit-learn numpy scipy pandas
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release --quiet -p prodcat-text-model --example compare_sklearn
bench="$CARGO_TARGET_DIR/release/examples/compare_sklearn"

prepare_args=(prepare --texts "$texts" --labels "$labels" --out "$work/dataset.jsonl")
if [[ -n "$synthesize" ]]; then
  prepare_args+=(--synthesize "$synthesize")
fi
"$bench" "${prepare_args[@]}"
"$venv/bin/python" "$here/compare_sklearn.py" split --data "$work/dataset.jsonl" --out "$work/splits.json" \
  --folds "$folds"

"$bench" run --data "$work/dataset.jsonl" --splits "$work/splits.json" --out "$work/rust.json" \
  --artifacts "$work/artifacts"
if [[ -z "$skip_sklearn" ]]; then
  "$venv/bin/python" "$here/compare_sklearn.py" run --data "$work/dataset.jsonl" \
    --splits "$work/splits.json" --out "$work/sklearn.json"
  "$venv/bin/python" "$here/compare_sklearn.py" table --sklearn "$work/sklearn.json" --rust "$work/rust.json"
else
  cat "$work/rust.json"
fi
echo "inputs, results and pictures: $work" >&2
