#!/usr/bin/env bash
# The service benchmarks: prodcat's HTTP service under load from wrk on loopback, beside a
# FastAPI + scikit-learn reference serving the same text pipeline, then durable classification
# jobs with one and two `prodcat worker` processes and with a worker killed half-way.
#
#   benchmarks/service/run.sh
#
# Settings (environment):
#   WORK=/tmp/prodcat-service-bench  scratch folder (data, models, logs); reused by a second run
#   FRESH=1                          start from an empty scratch folder
#   DURATION=60                      seconds of each measured wrk run (after a WARMUP=5 s run)
#   CONNECTIONS=16 WRK_THREADS=1     wrk load of the text scenarios (both servers)
#   IMAGE_CONNECTIONS=2              wrk connections of the image scenario
#   TEXT_PRODUCTS=20000              demo products for the text model and the reference
#   IMAGE_PRODUCTS=5000              demo products (with photos) for the fusion model
#   JOB_ITEMS=100000                 products in each classification job
#   SCENARIOS="text reference jobs image embeddings shadow postgres"   which parts to run
#                                    shadow: the text champion with no shadow, a 25 % and a 100 %
#                                    shadow of a second version; postgres: jobs with 1, 2 and 4
#                                    workers and predictions through 1 and 2 replicas behind nginx,
#                                    all on PostgreSQL (pg-jobs or pg-replicas: one half)
#   POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test   a server where the postgres scenarios
#                                    create (and re-create) the database prodcat_service_bench
#   PRODCAT_BIN=target/release/prodcat, PRODCAT_MODEL_DIR=models (pretrained weights)
#   RESULTS=benchmarks/service/results.md   where the table is written (with the machine)
#   PROFILE=1                        record `perf record -g` of the server during the measured runs
#   QUIET_WAIT=0                     before each scenario, wait up to this many seconds for the
#                                    rest of the machine to go idle (it is shared); 0: do not wait
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
command_line="${BASH_SOURCE[0]#"$root/"} $*"

WORK="${WORK:-/tmp/prodcat-service-bench}"
DURATION="${DURATION:-60}"
WARMUP="${WARMUP:-5}"
CONNECTIONS="${CONNECTIONS:-16}"
WRK_THREADS="${WRK_THREADS:-1}"
IMAGE_CONNECTIONS="${IMAGE_CONNECTIONS:-2}"
TEXT_PRODUCTS="${TEXT_PRODUCTS:-20000}"
IMAGE_PRODUCTS="${IMAGE_PRODUCTS:-5000}"
JOB_ITEMS="${JOB_ITEMS:-100000}"
SCENARIOS="${SCENARIOS:-text reference jobs image embeddings shadow postgres}"
POSTGRES_URL="${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
RESULTS="${RESULTS:-$here/results.md}"
PROFILE="${PROFILE:-}"
QUIET_WAIT="${QUIET_WAIT:-0}"
bin="${PRODCAT_BIN:-target/release/prodcat}"
[[ "$bin" = /* ]] || bin="$root/$bin"
export PRODCAT_MODEL_DIR="${PRODCAT_MODEL_DIR:-$root/models}"
[[ "$PRODCAT_MODEL_DIR" = /* ]] || PRODCAT_MODEL_DIR="$root/$PRODCAT_MODEL_DIR"
export PRODCAT_DATA_DIR="$WORK/data"
export PRODCAT_LOG="${PRODCAT_LOG:-warn}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }
wait_quiet() {
  if [[ "$QUIET_WAIT" != 0 ]]; then
    log "waiting (at most $QUIET_WAIT s) for the rest of the machine to go idle"
    "$py" "$here/bench.py" wait-quiet --root $$ --max-seconds "$QUIET_WAIT"
  fi
}

# ---------------------------------------------------------------------------------------------
# Processes started here, stopped on exit whatever happens.
started_pids=()
stop_pid() {
  local pid="$1"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  for pid in "${started_pids[@]}"; do
    stop_pid "$pid"
  done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # URL PID LOG
  for _ in $(seq 1 600); do
    if curl -fsS -o /dev/null "$1/readyz" 2>/dev/null; then
      return 0
    fi
    kill -0 "$2" 2>/dev/null || { tail -n 20 "$3" >&2; die "the server exited; see $3"; }
    sleep 0.2
  done
  die "$1 was not ready after 120 s; see $3"
}

# ---------------------------------------------------------------------------------------------
# Tools: wrk, the reference's virtual environment, the prodcat binary.
if ! command -v wrk >/dev/null; then
  log "installing wrk (Debian package)"
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
venv="$here/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
if ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt" 2>/dev/null; then
  log "installing the reference's pinned requirements into $venv"
  "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/.requirements.txt"
fi
py="$venv/bin/python"
if [[ ! -x "$bin" ]] && [[ -z "${PRODCAT_BIN:-}" ]]; then
  log "building prodcat (release)"
  (cd "$root" && cargo build --release --quiet -p prodcat-cli)
fi
for sub in serve worker users; do
  "$bin" "$sub" --help >/dev/null 2>&1 || die "$bin has no '$sub' command (build it: cargo build --release -p prodcat-cli)"
done

[[ -n "${FRESH:-}" ]] && rm -rf "$WORK"
mkdir -p "$WORK/logs" "$WORK/bin" "$PRODCAT_DATA_DIR"
# A copy, so that a rebuild during the run can not mix two binaries in one table.
bin_built="$(date -u -r "$bin" '+%Y-%m-%d %H:%M UTC')"
cp "$bin" "$WORK/bin/prodcat.tmp" && mv "$WORK/bin/prodcat.tmp" "$WORK/bin/prodcat"
bin="$WORK/bin/prodcat"
cd "$WORK"
results="$WORK/results.jsonl"
: >"$results"
# How much CPU the rest of the machine takes while each scenario runs (reported beside it).
cpu_log="$WORK/cpu.log"
: >"$cpu_log"
"$py" "$here/bench.py" cpu-monitor --root $$ --out "$cpu_log" &
started_pids+=("$!")
prodcat() { "$bin" "$@"; }
# The id of the version in a `--json` answer of `data import` or `train`.
version_id() {
  "$py" -c 'import json, sys; v = json.load(sys.stdin)["version"]; print(v["id"] if isinstance(v, dict) else v)'
}

# ---------------------------------------------------------------------------------------------
# Data and models. Each step leaves a stamp so a second run reuses what the first made.
text_catalogue="$WORK/catalogue-text"
if [[ ! -f "$WORK/.text-model" ]]; then
  if [[ ! -f "$WORK/.text-catalogue" ]]; then
    log "generating $TEXT_PRODUCTS demo products (text only)"
    rm -rf "$text_catalogue"
    prodcat data generate --out "$text_catalogue" --products "$TEXT_PRODUCTS" --seed 1 --no-images \
      >"$WORK/logs/generate-text.log" 2>&1
    touch "$WORK/.text-catalogue"
  fi
  log "importing and training the text model (prodcat train --branch text --promote)"
  dataset="$(prodcat data import "$text_catalogue" --json 2>"$WORK/logs/import-text.log" |
    version_id)"
  echo "$dataset" >"$WORK/.text-dataset"
  prodcat train --dataset "$dataset" --branch text --promote --json >"$WORK/text-train.json" \
    2>"$WORK/logs/train-text.log"
  version_id <"$WORK/text-train.json" >"$WORK/.text-model"
fi
text_model="$(cat "$WORK/.text-model")"
texts_csv="$text_catalogue/X_train_update.csv"
labels_csv="$text_catalogue/Y_train_CVw08PX.csv"

if wants reference && [[ ! -f "$WORK/reference-model.pkl" ]]; then
  log "fitting the scikit-learn reference on the same catalogue"
  "$py" "$here/reference_server.py" fit --texts "$texts_csv" --labels "$labels_csv" \
    --out "$WORK/reference-model.pkl.tmp" 2>"$WORK/logs/reference-fit.log"
  mv "$WORK/reference-model.pkl.tmp" "$WORK/reference-model.pkl"
fi

client="bench-client"
if [[ ! -f "$WORK/client-secret" ]]; then
  secret="$("$py" -c 'import secrets; print(secrets.token_hex(16))')"
  prodcat users add "$client" --role service --service --password "$secret" >"$WORK/logs/users.log" 2>&1
  echo "$secret" >"$WORK/client-secret"
fi
client_secret="$(cat "$WORK/client-secret")"

"$py" "$here/bench.py" bodies --texts "$texts_csv" --out "$WORK/text-bodies.jsonl" --limit 2000

# ---------------------------------------------------------------------------------------------
server_pid=""
server_url=""
start_server() { # NAME
  local port
  port="$(free_port)"
  server_url="http://127.0.0.1:$port"
  # The binary itself in the background (not through a shell function), so that $! is its pid.
  "$bin" serve --listen "127.0.0.1:$port" --rate-limit 0 >"$WORK/logs/serve-$1.log" 2>&1 &
  server_pid=$!
  started_pids+=("$server_pid")
  wait_ready "$server_url" "$server_pid" "$WORK/logs/serve-$1.log"
  token="$(curl -fsS "$server_url/v1/auth/token" -d grant_type=client_credentials \
    -d "client_id=$client" -d "client_secret=$client_secret" |
    "$py" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
}
stop_server() {
  stop_pid "$server_pid"
}

# One request first, so a broken setup fails here rather than as wrk errors; with a photo, the
# answer must come from the image branch too.
check_one() { # URL TOKEN BODIES
  head -n1 "$3" | curl -fsS -X POST "$1/v1/predict" -H "Authorization: Bearer $2" \
    -H 'Content-Type: application/json' --data-binary @- |
    "$py" -c '
import json, sys
answer = json.load(sys.stdin)
with_image = sys.argv[1] == "image"
branches = answer.get("branches", ["image"] if with_image else [])
if with_image and "image" not in branches:
    sys.exit(f"the photo was not used: {answer}")
print("check: category", answer.get("categoryCode"), "branches", branches, file=sys.stderr)
' "$([[ "$(basename "$3")" == image* ]] && echo image || echo text)"
}

run_wrk() { # KEY SCENARIO URL TOKEN BODIES CONNECTIONS NOTES [PID_TO_PROFILE]
  local key="$1"
  shift
  local scenario="$1" url="$2" bearer="$3" bodies="$4" connections="$5" notes="$6" pid="${7:-}"
  local name="${scenario//[^a-zA-Z0-9]/-}"
  check_one "$url" "$bearer" "$bodies"
  wait_quiet
  BENCH_BODIES="$bodies" BENCH_TOKEN="$bearer" wrk -t"$WRK_THREADS" -c"$connections" -d"${WARMUP}s" \
    --timeout 10s -s "$here/predict.lua" "$url" >"$WORK/logs/wrk-$name-warmup.log"
  local perf_pid=""
  if [[ -n "$PROFILE" && -n "$pid" ]]; then
    perf record -g -F 499 -p "$pid" -o "$WORK/perf-$name.data" -- sleep "$((DURATION / 2))" \
      >"$WORK/logs/perf-$name.log" 2>&1 &
    perf_pid=$!
  fi
  log "wrk: $scenario, $DURATION s, $WRK_THREADS thread(s), $connections connections"
  local started
  started="$(date +%s.%N)"
  BENCH_BODIES="$bodies" BENCH_TOKEN="$bearer" wrk -t"$WRK_THREADS" -c"$connections" -d"${DURATION}s" \
    --timeout 10s --latency -s "$here/predict.lua" "$url" >"$WORK/logs/wrk-$name.log"
  [[ -n "$perf_pid" ]] && wait "$perf_pid" || true
  if [[ -n "$pid" ]]; then
    # prodcat logs every prediction through a bounded queue; rows it could not take are dropped
    # and counted. Over the warm-up and the run (a fresh server each time):
    notes+="; prediction log: $(curl -fsS "$url/metrics" | awk '
      /^prodcat_prediction_log_written_total/ { written += $2 }
      /^prodcat_prediction_log_dropped_total/ { dropped += $2 }
      /^prodcat_shadow_skipped_total/ { skipped += $2; shadow = 1 }
      END {
        printf "%d rows written, %d dropped (writer queue full)", written, dropped
        if (shadow) printf "; shadow copies skipped because the shadow was busy: %d", skipped
      }')"
  fi
  "$py" "$here/bench.py" wrk-result --key "$key" --started "$started" --scenario "$scenario" \
    --log "$WORK/logs/wrk-$name.log" --notes "$notes" | tee -a "$results" >&2
}

load_note="wrk -t$WRK_THREADS -c$CONNECTIONS on loopback, sharing the 2 cores with the server"

# ---------------------------------------------------------------------------------------------
if wants text; then
  log "text-only predict against prodcat (model $text_model)"
  start_server text
  run_wrk text-prodcat "text predict, prodcat" "$server_url" "$token" "$WORK/text-bodies.jsonl" "$CONNECTIONS" \
    "prodcat serve (tokio, all cores), JWT checked per request, rate limit off; $load_note; 2,000 distinct products cycled" \
    "$server_pid"
  stop_server
fi

if wants reference; then
  log "text-only predict against the FastAPI + scikit-learn reference"
  ref_port="$(free_port)"
  ref_token="$("$py" -c 'import secrets; print(secrets.token_hex(16))')"
  (
    cd "$here"
    export PRODCAT_REF_MODEL="$WORK/reference-model.pkl" PRODCAT_REF_TOKEN="$ref_token"
    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
    exec "$venv/bin/uvicorn" reference_server:app --host 127.0.0.1 --port "$ref_port" --workers 2 \
      --log-level warning --no-access-log
  ) >"$WORK/logs/reference.log" 2>&1 &
  ref_pid=$!
  started_pids+=("$ref_pid")
  wait_ready "http://127.0.0.1:$ref_port" "$ref_pid" "$WORK/logs/reference.log"
  run_wrk text-reference "text predict, FastAPI + scikit-learn" "http://127.0.0.1:$ref_port" "$ref_token" \
    "$WORK/text-bodies.jsonl" "$CONNECTIONS" \
    "uvicorn --workers 2 (uvloop, httptools), one process per core, bearer token checked; same pipeline fitted on the same $TEXT_PRODUCTS products; $load_note"
  stop_pid "$ref_pid"
fi

if wants jobs; then
  if [[ ! -f "$WORK/job-items-$JOB_ITEMS.jsonl" ]]; then
    "$py" "$here/bench.py" job-input --texts "$texts_csv" --count "$JOB_ITEMS" --out "$WORK/job-items-$JOB_ITEMS.jsonl"
  fi
  start_server jobs
  worker_cmd=("$bin" worker --no-scheduler)
  worker_note=" (defaults: batch 256, concurrency 1, lease 60 s; the server runs beside them)"
  for scenario in "job-1:1:job of $JOB_ITEMS, 1 worker:" \
                  "job-2:2:job of $JOB_ITEMS, 2 workers:" \
                  "job-kill:2:job of $JOB_ITEMS, 2 workers, one SIGKILLed half-way:--kill-half-way"; do
    IFS=: read -r key workers name kill <<<"$scenario"
    wait_quiet
    log "$name"
    "$py" "$here/bench.py" job --key "$key" --scenario "$name" --url "$server_url" --token "$token" \
      --items "$WORK/job-items-$JOB_ITEMS.jsonl" --db "$PRODCAT_DATA_DIR/prodcat.db" --workers "$workers" \
      --worker-note "$worker_note" --log-prefix "$WORK/logs/worker-${workers}${kill:+-kill}" \
      ${kill:+"$kill"} -- "${worker_cmd[@]}" | tee -a "$results" >&2
  done
  stop_server
fi

if wants image; then
  image_catalogue="$WORK/catalogue-image"
  if [[ ! -f "$WORK/.fusion-model" ]]; then
    if [[ ! -f "$WORK/.image-catalogue" ]]; then
      log "generating $IMAGE_PRODUCTS demo products with 500x500 photos"
      rm -rf "$image_catalogue"
      prodcat data generate --out "$image_catalogue" --products "$IMAGE_PRODUCTS" --seed 2 \
        >"$WORK/logs/generate-image.log" 2>&1
      touch "$WORK/.image-catalogue"
    fi
    log "importing and training the fusion model (text + image; minutes on 2 cores)"
    dataset="$(prodcat data import "$image_catalogue" --json 2>"$WORK/logs/import-image.log" |
      version_id)"
    prodcat train --dataset "$dataset" --branch fusion --json >"$WORK/fusion-train.json" \
      2>"$WORK/logs/train-fusion.log"
    version_id <"$WORK/fusion-train.json" >"$WORK/.fusion-model"
  fi
  fusion_model="$(cat "$WORK/.fusion-model")"
  log "serving the fusion model $fusion_model (champion for the image run)"
  prodcat models promote "$fusion_model" --force --reason "service benchmark: image scenario" \
    >"$WORK/logs/promote-fusion.log" 2>&1
  "$py" "$here/bench.py" bodies --texts "$image_catalogue/X_train_update.csv" \
    --images "$image_catalogue/images/image_train" --image-count 50 --out "$WORK/image-bodies.jsonl"
  start_server image
  run_wrk image "predict with a 500x500 JPEG, prodcat" "$server_url" "$token" "$WORK/image-bodies.jsonl" \
    "$IMAGE_CONNECTIONS" \
    "fusion model (MobileNetV2 + text); base64 JPEG in JSON, 50 distinct demo photos cycled; wrk -t$WRK_THREADS -c$IMAGE_CONNECTIONS (one request in flight per core), sharing the 2 cores" \
    "$server_pid"
  stop_server
  prodcat models promote "$text_model" --force --reason "service benchmark: back to the text model" \
    >"$WORK/logs/promote-text.log" 2>&1
fi

if wants embeddings; then
  [[ -f "$WORK/.text-dataset" ]] || die "no dataset id in $WORK/.text-dataset: run once with FRESH=1"
  if [[ ! -f "$WORK/.text-e5-model" ]]; then
    log "training a text model with the sentence embedding (prodcat train --text-embedding-scale 2)"
    prodcat train --dataset "$(cat "$WORK/.text-dataset")" --branch text --text-embedding-scale 2 \
      --json >"$WORK/text-e5-train.json" 2>"$WORK/logs/train-text-e5.log"
    version_id <"$WORK/text-e5-train.json" >"$WORK/.text-e5-model"
  fi
  e5_model="$(cat "$WORK/.text-e5-model")"
  prodcat models promote "$e5_model" --force --reason "service benchmark: sentence-embedding scenario" \
    >"$WORK/logs/promote-e5.log" 2>&1
  start_server embeddings
  run_wrk text-e5 "text predict, text branch with the sentence embedding" "$server_url" "$token" \
    "$WORK/text-bodies.jsonl" "$CONNECTIONS" \
    "prodcat train --text-embeddings: each request embeds its text's first 160 characters with multilingual-e5-small; $load_note" \
    "$server_pid"
  stop_server
  prodcat models promote "$text_model" --force --reason "service benchmark: back to the text model" \
    >"$WORK/logs/promote-text.log" 2>&1
fi

if wants shadow; then
  [[ -f "$WORK/.text-dataset" ]] || die "no dataset id in $WORK/.text-dataset: run once with FRESH=1"
  if [[ ! -f "$WORK/.text-model-2" ]]; then
    log "training a second text model (C = 1 instead of 0.5; the version to shadow)"
    prodcat train --dataset "$(cat "$WORK/.text-dataset")" --branch text --c 1 --json >"$WORK/text-train-2.json" \
      2>"$WORK/logs/train-text-2.log"
    version_id <"$WORK/text-train-2.json" >"$WORK/.text-model-2"
  fi
  challenger="$(cat "$WORK/.text-model-2")"
  [[ "$challenger" != "$text_model" ]] || die "the second model is the champion itself ($challenger)"
  prodcat models shadow --stop --reason "service benchmark" >/dev/null 2>&1 || true
  for scenario in "shadow-0:0:text predict, no shadow" \
                  "shadow-25:0.25:text predict, 25 % shadow" \
                  "shadow-100:1:text predict, 100 % shadow"; do
    IFS=: read -r key share name <<<"$scenario"
    if [[ "$share" != 0 ]]; then
      prodcat models shadow "$challenger" --share "$share" --reason "service benchmark: shadow cost" \
        >"$WORK/logs/$key.log" 2>&1
    fi
    log "$name (champion $text_model, shadow $challenger)"
    start_server "$key"
    run_wrk "$key" "$name" "$server_url" "$token" "$WORK/text-bodies.jsonl" "$CONNECTIONS" \
      "champion answers, the shadow scores $share of the requests off the request path; $load_note" \
      "$server_pid"
    stop_server
    if [[ "$share" != 0 ]]; then
      prodcat models shadow --stop --reason "service benchmark done" >>"$WORK/logs/$key.log" 2>&1
    fi
  done
fi

if wants postgres || wants pg-jobs || wants pg-replicas; then
  # One PostgreSQL database and one shared object folder; each process has its own data folder,
  # as pods would. The signing keys are shared, so a token from one replica works on the other.
  pg_database=prodcat_service_bench
  pg_url="${POSTGRES_URL%/*}/$pg_database"
  pg_root="$WORK/postgres"
  export PRODCAT_DATABASE_URL="$pg_url" PRODCAT_OBJECT_STORE_URL="$pg_root/objects" \
    PRODCAT_JWT_KEYS_FILE="$pg_root/jwt-keys"
  export PRODCAT_DATA_DIR="$pg_root/setup"
  if [[ ! -f "$WORK/.pg-model" ]]; then
    log "creating the database $pg_database and training the text model on it"
    psql "$POSTGRES_URL" -X -q -c "DROP DATABASE IF EXISTS $pg_database" \
      -c "CREATE DATABASE $pg_database" >"$WORK/logs/pg-create.log" 2>&1 ||
      die "could not create $pg_database on $POSTGRES_URL; see $WORK/logs/pg-create.log"
    rm -rf "$pg_root"
    mkdir -p "$pg_root/objects" "$PRODCAT_DATA_DIR"
    printf 'bench-key %s\n' "$("$py" -c 'import secrets; print(secrets.token_hex(32))')" >"$pg_root/jwt-keys"
    dataset="$(prodcat data import "$text_catalogue" --json 2>"$WORK/logs/pg-import.log" | version_id)"
    prodcat train --dataset "$dataset" --branch text --promote --json 2>"$WORK/logs/pg-train.log" |
      version_id >"$WORK/.pg-model.tmp"
    prodcat users add "$client" --role service --service --password "$client_secret" \
      >"$WORK/logs/pg-users.log" 2>&1
    mv "$WORK/.pg-model.tmp" "$WORK/.pg-model"
  fi
  replica_pids=()
  replica_ports=()
  start_replica() { # INDEX
    local port
    port="$(free_port)"
    mkdir -p "$pg_root/replica-$1"
    PRODCAT_DATA_DIR="$pg_root/replica-$1" "$bin" serve --listen "127.0.0.1:$port" --rate-limit 0 \
      >"$WORK/logs/pg-serve-$1.log" 2>&1 &
    replica_pids+=("$!")
    replica_ports+=("$port")
    started_pids+=("$!")
    wait_ready "http://127.0.0.1:$port" "$!" "$WORK/logs/pg-serve-$1.log"
  }
  start_replica 1
  server_url="http://127.0.0.1:${replica_ports[0]}"
  token="$(curl -fsS "$server_url/v1/auth/token" -d grant_type=client_credentials \
    -d "client_id=$client" -d "client_secret=$client_secret" |
    "$py" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"

  if [[ ! -f "$WORK/job-items-$JOB_ITEMS.jsonl" ]]; then
    "$py" "$here/bench.py" job-input --texts "$texts_csv" --count "$JOB_ITEMS" --out "$WORK/job-items-$JOB_ITEMS.jsonl"
  fi
  for workers in 1 2 4; do
    wants postgres || wants pg-jobs || break
    wait_quiet
    name="job of $JOB_ITEMS on PostgreSQL, $workers worker(s)"
    log "$name"
    mkdir -p "$pg_root/workers-$workers"
    PRODCAT_DATA_DIR="$pg_root/workers-$workers" "$py" "$here/bench.py" job --key "pg-job-$workers" \
      --scenario "$name" --url "$server_url" --token "$token" --items "$WORK/job-items-$JOB_ITEMS.jsonl" \
      --db "$pg_url" --workers "$workers" \
      --worker-note " on one PostgreSQL (defaults: batch 256, concurrency 1, lease 60 s; one API replica runs beside them)" \
      --log-prefix "$WORK/logs/pg-worker-$workers" -- "$bin" worker --no-scheduler | tee -a "$results" >&2
  done

  if wants postgres || wants pg-replicas; then
    if ! command -v nginx >/dev/null; then
      log "installing nginx (Debian package) to balance the replicas"
      apt-get install -y nginx >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y nginx >/dev/null; }
    fi
    nginx_pid=""
    start_balancer() { # PORT...
      local folder="$WORK/nginx" port upstreams=""
      mkdir -p "$folder/tmp"
      for port in "$@"; do upstreams+="    server 127.0.0.1:$port;"$'\n'; done
      balancer_port="$(free_port)"
      cat >"$folder/nginx.conf" <<EOF_NGINX
worker_processes 1;
daemon off;
pid $folder/nginx.pid;
error_log $folder/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $folder/tmp/body;
  proxy_temp_path $folder/tmp/proxy;
  fastcgi_temp_path $folder/tmp/fastcgi;
  uwsgi_temp_path $folder/tmp/uwsgi;
  scgi_temp_path $folder/tmp/scgi;
  upstream prodcat {
$upstreams    keepalive 64;
  }
  server {
    listen 127.0.0.1:$balancer_port;
    location / {
      proxy_pass http://prodcat;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF_NGINX
      nginx -e "$folder/error.log" -p "$folder" -c "$folder/nginx.conf" &
      nginx_pid=$!
      started_pids+=("$nginx_pid")
      wait_ready "http://127.0.0.1:$balancer_port" "$nginx_pid" "$folder/error.log"
    }
    balancer_note="nginx (1 worker process, keep-alive to the replicas) in front; wrk -t$WRK_THREADS -c$CONNECTIONS; wrk, nginx and the replicas share the 2 cores"
    run_wrk pg-direct "text predict on PostgreSQL, 1 replica, no balancer" "$server_url" "$token" \
      "$WORK/text-bodies.jsonl" "$CONNECTIONS" "$load_note" "${replica_pids[0]}"
    start_balancer "${replica_ports[0]}"
    run_wrk pg-replicas-1 "text predict on PostgreSQL, 1 replica behind nginx" "http://127.0.0.1:$balancer_port" \
      "$token" "$WORK/text-bodies.jsonl" "$CONNECTIONS" "$balancer_note"
    stop_pid "$nginx_pid"
    start_replica 2
    start_balancer "${replica_ports[0]}" "${replica_ports[1]}"
    run_wrk pg-replicas-2 "text predict on PostgreSQL, 2 replicas behind nginx" "http://127.0.0.1:$balancer_port" \
      "$token" "$WORK/text-bodies.jsonl" "$CONNECTIONS" "$balancer_note (a token from replica 1 is accepted by both)"
    stop_pid "$nginx_pid"
  fi
  for pid in "${replica_pids[@]}"; do stop_pid "$pid"; done
fi

# ---------------------------------------------------------------------------------------------
header="$WORK/header.md"
{
  echo "# Service benchmarks"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) memory"
  echo "- prodcat: $(cd "$root" && git rev-parse --short HEAD)$(cd "$root" && [[ -z "$(git status --porcelain -- crates)" ]] || echo ' (with uncommitted changes in crates/)'), $("$bin" --version 2>/dev/null || echo prodcat), binary built $bin_built"
  echo "- reference: $("$py" -c 'import fastapi, sklearn, uvicorn, sys; print(f"FastAPI {fastapi.__version__}, scikit-learn {sklearn.__version__}, uvicorn {uvicorn.__version__}, Python {sys.version.split()[0]}")')"
  echo "- command: \`$command_line\` (DURATION=$DURATION, CONNECTIONS=$CONNECTIONS, IMAGE_CONNECTIONS=$IMAGE_CONNECTIONS, TEXT_PRODUCTS=$TEXT_PRODUCTS, IMAGE_PRODUCTS=$IMAGE_PRODUCTS, JOB_ITEMS=$JOB_ITEMS, QUIET_WAIT=$QUIET_WAIT)"
  echo "- load: wrk $(wrk --version 2>&1 | head -n1 | awk '{print $2}') on loopback, on the same machine: the load generator and the server share the 2 cores, so every figure is lower than a server alone on them would reach. Latency is measured by wrk (closed loop) after a ${WARMUP} s warm-up; errors are non-2xx responses plus socket errors (connect, read, write, timeout over 10 s)."
  echo "- other processes: each row's notes give the cores the rest of the machine used while it ran (the machine's CPU use minus the benchmark's own processes, sampled every second); above 0.1 core the row is marked noisy."
  echo "- jobs: products/s from the workers' launch (model load included) to the last item's completion; exactly once is checked on the job's counts and on the \`job_items\` rows (every item done, with one result, no failed)."
  echo
} >"$header"
"$py" "$here/bench.py" table --results "$results" --header "$header" --cpu "$cpu_log" >"$WORK/results.md"
cp "$WORK/results.md" "$RESULTS"
cat "$WORK/results.md"
log "table written to $RESULTS; logs in $WORK/logs"
