#!/usr/bin/env bash
# Starts a throwaway `mlflow server` for the MLflow export test and prints its URL on stdout.
#
# Installs mlflow (pinned) into <workspace>/.venv with pip when it is missing, picks a free port on
# 127.0.0.1, and runs the server in the background in its own process group with a temporary
# SQLite backend store and artifact root. Nothing but the URL goes to stdout, so
#
#     url=$(crates/prodcat-registry/bench/start-mlflow.sh --pid-file /tmp/mlflow.pid)
#     export PRODCAT_TEST_MLFLOW_URL="$url"
#     ...
#     kill -- "-$(cat /tmp/mlflow.pid)"     # stops the server and its workers
#
# Options: --pid-file FILE (default: <state folder>/mlflow.pid), --state-dir DIR (default: a new
# temporary folder; holds the store, the artifacts and mlflow.log), --timeout SECONDS (default 120).
set -euo pipefail

script_dir=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$script_dir/../../.." && pwd)
venv="$root/.venv"
mlflow_requirement="mlflow==${PRODCAT_MLFLOW_VERSION:-3.17.2}"

pid_file=""
state_dir=""
timeout_seconds=120
while [ $# -gt 0 ]; do
    case "$1" in
        --pid-file) pid_file="$2"; shift 2 ;;
        --state-dir) state_dir="$2"; shift 2 ;;
        --timeout) timeout_seconds="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "start-mlflow: unknown option $1" >&2; exit 2 ;;
    esac
done

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import mlflow.server" >/dev/null 2>&1; then
    echo "start-mlflow: installing $mlflow_requirement into $venv" >&2
    # Other tools in the same environment need pandas < 3; keep it there.
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$mlflow_requirement" "pandas<3" >&2
fi

if [ -z "$state_dir" ]; then
    state_dir=$(mktemp -d "${TMPDIR:-/tmp}/prodcat-mlflow.XXXXXX")
fi
mkdir -p "$state_dir/artifacts"
if [ -z "$pid_file" ]; then
    pid_file="$state_dir/mlflow.pid"
fi
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"

# setsid: the server and its workers share one process group that `kill -- -PID` ends.
# Background job execution (a job runner and several consumers) is not needed for the REST API.
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$venv/bin/mlflow" server \
    --host 127.0.0.1 --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$state_dir/mlflow.db" \
    --artifacts-destination "$state_dir/artifacts" \
    >"$state_dir/mlflow.log" 2>&1 </dev/null &
server_pid=$!
echo "$server_pid" >"$pid_file"

deadline=$((SECONDS + timeout_seconds))
until "$venv/bin/python" -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('$url/health', timeout=2).status == 200 else 1)" >/dev/null 2>&1; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "start-mlflow: the server exited; its log ($state_dir/mlflow.log) ends with:" >&2
        tail -n 20 "$state_dir/mlflow.log" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "start-mlflow: no answer from $url/health after ${timeout_seconds}s; see $state_dir/mlflow.log" >&2
        kill -- "-$server_pid" 2>/dev/null || true
        exit 1
    fi
    sleep 0.5
done
echo "start-mlflow: mlflow server (process group $server_pid) ready at $url; state in $state_dir" >&2
echo "$url"
