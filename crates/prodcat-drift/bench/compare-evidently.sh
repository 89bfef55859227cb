#!/usr/bin/env bash
# Compares prodcat-drift with Evidently 0.7.23 on identical generated CSV pairs and prints one
# table (column, test chosen by each, drift score by each, verdict by each).
# Installs what it needs into the workspace virtualenv (.venv) when missing.
# Usage: crates/prodcat-drift/bench/compare-evidently.sh [work-dir]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../../.." && pwd)"
venv="$workspace/.venv"
work_dir="${1:-$workspace/target-prodcat-drift/compare-evidently}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import evidently, pandas, sys; sys.exit(0 if evidently.__version__ == "0.7.23" and int(pandas.__version__.split(".")[0]) < 3 else 1)' 2>/dev/null; then
    "$venv/bin/pip" install --quiet "pandas<3" "evidently==0.7.23"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$workspace/target-prodcat-drift}"
cargo build --quiet --release --manifest-path "$workspace/Cargo.toml" -p prodcat-drift --example drift_csv

"$venv/bin/python" "$here/compare_evidently.py" \
    --binary "$CARGO_TARGET_DIR/release/examples/drift_csv" \
    --work-dir "$work_dir"
