"""Helpers of the service benchmark (driven by run.sh); standard library only.

bodies     --texts X.csv --out F [--limit N] [--images DIR --image-count N]
           request bodies for POST /v1/predict, one JSON object per line (wrk cycles through them)
job-input  --texts X.csv --count N --out F
           N products as JSON lines for POST /v1/jobs/classify (the catalogue repeated)
wrk-result --scenario NAME --log wrk.log [--notes ...]
           turns predict.lua's BENCH_RESULT line into a result line
job        --url U --token T --items F --db prodcat.db|postgres://... --workers N [--kill-half-way] -- WORKER CMD
           submits a job, starts N worker processes, follows the job to the end (killing one
           worker with SIGKILL half-way when asked), checks every item was classified exactly
           once, and prints a result line
cpu-monitor --root PID --out F
           every second, the cores the whole machine used and the cores used by PID and its
           descendants (the benchmark's own processes), so each scenario can tell how much
           CPU other processes took while it ran
wait-quiet --root PID --max-seconds N [--threshold 0.1]
           waits (at most N s) until processes outside PID's tree use under the threshold
           (cores) over two 3 s windows in a row
table      --results results.jsonl [--header FILE] [--cpu F]
           the Markdown table of the result lines, with each target met or missed
"""

import argparse
import base64
import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def catalogue_rows(path):
    csv.field_size_limit(1 << 30)
    with open(path, newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def bodies(args):
    count = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for row in catalogue_rows(args.texts):
            body = {"designation": row["designation"], "description": row["description"]}
            if args.images:
                name = f"image_{row['imageid']}_product_{row['productid']}.jpg"
                path = Path(args.images) / name
                if not path.exists():
                    continue
                body["image"] = base64.b64encode(path.read_bytes()).decode()
            out.write(json.dumps(body, ensure_ascii=False) + "\n")
            count += 1
            limit = args.image_count if args.images else args.limit
            if count >= limit:
                break
    if count == 0:
        sys.exit(f"no request bodies could be made from {args.texts}")
    print(f"{count} request bodies in {args.out}", file=sys.stderr)


def job_input(args):
    rows = [
        {"designation": row["designation"], "description": row["description"]}
        for row in catalogue_rows(args.texts)
    ]
    with open(args.out, "w", encoding="utf-8") as out:
        for index in range(args.count):
            out.write(json.dumps(rows[index % len(rows)], ensure_ascii=False) + "\n")


def emit(result):
    print("RESULT " + json.dumps(result), flush=True)


def wrk_result(args):
    line = next(
        (l for l in Path(args.log).read_text().splitlines() if l.startswith("BENCH_RESULT ")), None
    )
    if line is None:
        sys.exit(f"no BENCH_RESULT line in {args.log} (did wrk run?)")
    data = json.loads(line[len("BENCH_RESULT "):])
    errors = data["non2xx"] + data["connect"] + data["read"] + data["write"] + data["timeout"]
    emit(
        {
            "key": args.key,
            "scenario": args.scenario,
            "started": args.started,
            "ended": time.time(),
            "rate": data["rps"],
            "unit": "req/s",
            "p50_ms": data["p50_ms"],
            "p99_ms": data["p99_ms"],
            "errors": errors,
            "requests": data["requests"],
            "seconds": data["seconds"],
            "notes": args.notes,
        }
    )


def http(url, token, method="GET", body=None, content_type=None, timeout=600):
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read())



class Database:
    """Read-only queries on the platform's database: a SQLite file or a PostgreSQL URL (through
    psql). `{job}` in a statement stands for the quoted job id."""

    def __init__(self, location):
        self.location = location
        self.postgres = location.startswith(("postgres://", "postgresql://"))
        if not self.postgres:
            self.connection = sqlite3.connect(f"file:{location}?mode=ro", uri=True)

    def rows(self, statement, job_id):
        if not re.fullmatch(r"[A-Za-z0-9_-]+", job_id):
            sys.exit(f"unexpected job id {job_id!r}")
        statement = statement.replace("{job}", f"'{job_id}'")
        if not self.postgres:
            return self.connection.execute(statement).fetchall()
        output = subprocess.run(
            ["psql", self.location, "-X", "-q", "-A", "-t", "-F", "\t", "-P", "null=NULL", "-c", statement],
            check=True, capture_output=True, text=True,
        ).stdout
        return [
            tuple(None if field == "NULL" else int(field) if re.fullmatch(r"-?[0-9]+", field) else field
                  for field in line.split("\t"))
            for line in output.splitlines() if line
        ]

    def close(self):
        if not self.postgres:
            self.connection.close()


def job(args):
    body = Path(args.items).read_bytes()
    item_count = body.count(b"\n")
    started = time.monotonic()
    status, accepted = http(
        f"{args.url}/v1/jobs/classify", args.token, "POST", body, "application/x-ndjson"
    )
    accept_seconds = time.monotonic() - started
    if status not in (200, 202):
        sys.exit(f"job not accepted: {status} {accepted}")
    job_id = accepted["jobId"]
    print(f"job {job_id}: {item_count} items accepted in {accept_seconds:.1f} s", file=sys.stderr)

    logs = []
    workers = []
    launched = time.monotonic()
    launched_epoch_ms = time.time() * 1000.0
    for index in range(args.workers):
        log = open(f"{args.log_prefix}-{index}.log", "w")
        logs.append(log)
        workers.append(
            subprocess.Popen(args.worker, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
    killed_at = None
    deadline = launched + args.timeout
    job_state = None
    while time.monotonic() < deadline:
        time.sleep(args.poll)
        _, job_state = http(f"{args.url}/v1/jobs/{job_id}?limit=0", args.token)
        finished = job_state["doneCount"] + job_state["failedCount"]
        if args.kill_half_way and killed_at is None and finished >= item_count // 2:
            os.kill(workers[0].pid, signal.SIGKILL)
            workers[0].wait()
            killed_at = finished
            killed_epoch_ms = time.time() * 1000.0
            print(f"killed worker pid {workers[0].pid} (SIGKILL) at {finished} finished items",
                  file=sys.stderr)
        if job_state["status"] == "completed":
            break
        for worker in workers[1 if killed_at is not None else 0:]:
            if worker.poll() is not None:
                sys.exit(f"a worker exited with {worker.returncode}; see {args.log_prefix}-*.log")
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    for log in logs:
        log.close()
    if job_state is None or job_state["status"] != "completed":
        sys.exit(f"job {job_id} did not complete within {args.timeout} s: {job_state}")

    database = Database(args.db)
    by_status = dict(
        database.rows("SELECT status, COUNT(*) FROM job_items WHERE job_id = {job} GROUP BY status", job_id)
    )
    done_with_result = database.rows(
        "SELECT COUNT(*) FROM job_items WHERE job_id = {job} AND status = 'done' AND result IS NOT NULL",
        job_id,
    )[0][0]
    distinct_positions = database.rows(
        "SELECT COUNT(DISTINCT position) FROM job_items WHERE job_id = {job}", job_id
    )[0][0]
    attempts = dict(
        database.rows("SELECT attempts, COUNT(*) FROM job_items WHERE job_id = {job} GROUP BY attempts", job_id)
    )
    first_ms, last_ms = database.rows(
        "SELECT MIN(finished_at_ms), MAX(finished_at_ms) FROM job_items WHERE job_id = {job}", job_id
    )[0]
    first_retry_ms = database.rows(
        "SELECT MIN(finished_at_ms) FROM job_items WHERE job_id = {job} AND attempts > 1", job_id
    )[0][0]
    job_row = database.rows("SELECT created_at_ms, finished_at_ms FROM jobs WHERE id = {job}", job_id)[0]
    log_rows = database.rows(
        f"SELECT COUNT(*) FROM prediction_log WHERE source = 'job' AND at_ms >= {int(job_row[0])} "
        f"AND at_ms <= {int(job_row[1] or last_ms)}",
        job_id,
    )[0][0]
    database.close()

    exactly_once = (
        job_state["doneCount"] == item_count
        and job_state["failedCount"] == 0
        and by_status == {"done": item_count}
        and done_with_result == item_count
        and distinct_positions == item_count
    )
    # From the workers' launch (model load included) to the last item's completion.
    span_seconds = max((last_ms - launched_epoch_ms) / 1000.0, 1e-3)
    checks = (
        f"done {job_state['doneCount']}/{item_count}, failed {job_state['failedCount']}, "
        f"items by status {by_status}, with a result {done_with_result}, "
        f"attempts {attempts}, job prediction-log rows {log_rows}"
    )
    print(f"job {job_id}: {checks}; exactly once: {exactly_once}", file=sys.stderr)
    notes = (
        f"{args.workers} `prodcat worker` process(es){args.worker_note}; text-only items; "
        f"{span_seconds:.1f} s from worker launch (model load included) to the last item; "
        f"items finished over {(last_ms - first_ms) / 1000.0:.1f} s; "
        f"upload of {item_count:,} lines accepted in {accept_seconds:.1f} s"
    )
    if args.kill_half_way:
        retried = sum(count for attempt, count in attempts.items() if attempt > 1)
        notes += (
            f"; one worker SIGKILLed at {killed_at:,} finished items; its leased items were taken "
            f"over when their lease expired, the first finished "
            f"{((first_retry_ms or killed_epoch_ms) - killed_epoch_ms) / 1000.0:.0f} s after the kill "
            f"({retried:,} items ran twice, each with one result); "
            f"exactly once: {'yes' if exactly_once else 'NO'} (done {job_state['doneCount']:,}, "
            f"failed {job_state['failedCount']}, rows done+result {done_with_result:,}, "
            f"prediction-log rows {log_rows:,})"
        )
    elif not exactly_once:
        notes += f"; NOT exactly once: {checks}"
    emit(
        {
            "key": args.key,
            "scenario": args.scenario,
            "started": launched_epoch_ms / 1000.0,
            "ended": last_ms / 1000.0,
            "rate": item_count / span_seconds,
            "unit": "products/s",
            "p50_ms": None,
            "p99_ms": None,
            "errors": job_state["failedCount"] + (0 if exactly_once else 1),
            "requests": item_count,
            "seconds": span_seconds,
            "exactly_once": exactly_once,
            "notes": notes,
        }
    )
    if not exactly_once:
        sys.exit(1)


def cpu_ticks():
    """Busy ticks of the whole machine, and (pid -> (ppid, ticks)) for every process."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    processes = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                text = handle.read()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2:].split()
        processes[int(entry)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    return busy, processes


def descendants(root, processes):
    children = {}
    for pid, (ppid, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        found.add(pid)
        stack.extend(children.get(pid, []))
    return found


def cpu_monitor(args):
    hertz = os.sysconf("SC_CLK_TCK")
    busy, processes = cpu_ticks()
    previous_time = time.time()
    with open(args.out, "a") as out:
        while os.path.exists(f"/proc/{args.root}"):
            time.sleep(1.0)
            now = time.time()
            new_busy, new_processes = cpu_ticks()
            ours = 0
            for pid in descendants(args.root, new_processes):
                before = processes.get(pid)
                ours += new_processes[pid][1] - (before[1] if before else 0)
            seconds = now - previous_time
            out.write(f"{now:.3f} {(new_busy - busy) / hertz / seconds:.3f} "
                      f"{ours / hertz / seconds:.3f}\n")
            out.flush()
            busy, processes, previous_time = new_busy, new_processes, now


def wait_quiet(args):
    hertz = os.sysconf("SC_CLK_TCK")
    deadline = time.time() + args.max_seconds
    quiet_windows, other = 0, None
    while time.time() < deadline:
        busy, processes = cpu_ticks()
        time.sleep(3.0)
        new_busy, new_processes = cpu_ticks()
        ours = sum(
            new_processes[pid][1] - processes.get(pid, (0, 0))[1]
            for pid in descendants(args.root, new_processes)
        )
        other = max(0.0, (new_busy - busy - ours) / hertz / 3.0)
        quiet_windows = quiet_windows + 1 if other < args.threshold else 0
        if quiet_windows >= 2:
            return
    print(f"the machine is still busy (other processes: {other:.2f} cores); going on", file=sys.stderr)


def other_cores(cpu_lines, started, ended):
    """Mean cores used by processes outside the benchmark between two times."""
    samples = [
        max(0.0, total - ours)
        for at, total, ours in cpu_lines
        if started + 1.0 <= at <= ended
    ]
    return sum(samples) / len(samples) if samples else None


def verdicts(rows):
    """The targets of the issue, met or missed, per row key."""
    by_key = {row.get("key"): row for row in rows}
    out = {}
    text = by_key.get("text-prodcat")
    reference = by_key.get("text-reference")
    if text:
        ok = text["rate"] >= 3000 and text["p99_ms"] < 10 and text["errors"] == 0
        out["text-prodcat"] = f"{'met' if ok else 'MISSED'}: >= 3,000 req/s, p99 < 10 ms, no error"
    if text and reference:
        ratio = text["rate"] / reference["rate"]
        ok = ratio >= 10 and text["p99_ms"] < reference["p99_ms"]
        out["text-reference"] = (
            f"{'met' if ok else 'MISSED'}: prodcat does {ratio:.1f}x its requests/s "
            f"(>= 10x) at a {'lower' if text['p99_ms'] < reference['p99_ms'] else 'HIGHER'} p99"
        )
    image = by_key.get("image")
    if image:
        ok = image["p50_ms"] < 50 and image["errors"] == 0
        out["image"] = f"{'met' if ok else 'MISSED'}: p50 < 50 ms"
    kill = by_key.get("job-kill")
    if kill:
        out["job-kill"] = f"{'met' if kill.get('exactly_once') else 'MISSED'}: completes, exactly once"
    one, two = by_key.get("job-1"), by_key.get("job-2")
    if one and two:
        out["job-2"] = f"2 workers: {two['rate'] / one['rate']:.2f}x one worker"
    pg_one = by_key.get("pg-job-1")
    for key in ("pg-job-2", "pg-job-4"):
        if pg_one and key in by_key:
            row = by_key[key]
            out[key] = (
                f"{'exactly once' if row.get('exactly_once') else 'NOT exactly once'}; "
                f"{row['rate'] / pg_one['rate']:.2f}x one worker"
            )
    replica_one, replica_two = by_key.get("pg-replicas-1"), by_key.get("pg-replicas-2")
    if replica_one and replica_two:
        out["pg-replicas-2"] = f"{replica_two['rate'] / replica_one['rate']:.2f}x one replica"
    no_shadow = by_key.get("shadow-0")
    for key, share in (("shadow-25", "25 %"), ("shadow-100", "100 %")):
        row = by_key.get(key)
        if no_shadow and row:
            cost = 1 - row["rate"] / no_shadow["rate"]
            bounded = row["errors"] == 0 and row["p99_ms"] < max(2 * no_shadow["p99_ms"], no_shadow["p99_ms"] + 5)
            out[key] = (
                f"{'bounded' if bounded else 'NOT BOUNDED'}: a {share} shadow costs {cost * 100:.0f} % "
                f"of the requests/s, p99 {row['p99_ms'] - no_shadow['p99_ms']:+.2f} ms, no error"
                if row["errors"] == 0 else f"MISSED: {row['errors']} errors with a {share} shadow"
            )
    for key in ("job-1", "pg-job-1"):
        if key in by_key and by_key[key].get("exactly_once") is not None:
            out[key] = "exactly once" if by_key[key]["exactly_once"] else "NOT exactly once"
    return out


def fmt(value, digits):
    return "–" if value is None else f"{value:,.{digits}f}"


def table(args):
    rows = [
        json.loads(line[len("RESULT "):])
        for line in Path(args.results).read_text().splitlines()
        if line.startswith("RESULT ")
    ]
    cpu_lines = []
    if args.cpu and Path(args.cpu).exists():
        cpu_lines = [tuple(map(float, line.split())) for line in Path(args.cpu).read_text().splitlines()
                     if len(line.split()) == 3]
    targets = verdicts(rows)
    out = []
    if args.header:
        out.append(Path(args.header).read_text().rstrip() + "\n")
    out.append("| scenario | throughput | p50 ms | p99 ms | errors | target | notes |")
    out.append("|---|---|---|---|---|---|---|")
    noisy = False
    for row in rows:
        notes = row["notes"]
        other = other_cores(cpu_lines, row.get("started", 0), row.get("ended", 0))
        if other is not None:
            notes += f"; other processes on the machine meanwhile: {other:.2f} cores"
            if other > 0.1:
                notes += " (NOISY: not a clean measurement)"
                noisy = True
        out.append(
            f"| {row['scenario']} | {fmt(row['rate'], 0)} {row['unit']} | {fmt(row['p50_ms'], 2)} "
            f"| {fmt(row['p99_ms'], 2)} | {row['errors']} | {targets.get(row.get('key'), '')} "
            f"| {notes} |"
        )
    if noisy:
        out.append("")
        out.append("Some scenarios ran while other processes used the CPU; run again on a quiet machine.")
    print("\n".join(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("bodies")
    p.add_argument("--texts", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int, default=2000)
    p.add_argument("--images")
    p.add_argument("--image-count", type=int, default=50)
    p = commands.add_parser("job-input")
    p.add_argument("--texts", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--out", required=True)
    p = commands.add_parser("wrk-result")
    p.add_argument("--key", required=True)
    p.add_argument("--started", type=float, required=True, help="epoch seconds")
    p.add_argument("--scenario", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--notes", default="")
    p = commands.add_parser("job")
    p.add_argument("--key", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--items", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--worker-note", default="")
    p.add_argument("--kill-half-way", action="store_true")
    p.add_argument("--poll", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--log-prefix", required=True)
    p.add_argument("worker", nargs=argparse.REMAINDER, help="-- the worker command")
    p = commands.add_parser("cpu-monitor")
    p.add_argument("--root", type=int, required=True)
    p.add_argument("--out", required=True)
    p = commands.add_parser("wait-quiet")
    p.add_argument("--root", type=int, required=True)
    p.add_argument("--max-seconds", type=float, required=True)
    p.add_argument("--threshold", type=float, default=0.1)
    p = commands.add_parser("table")
    p.add_argument("--results", required=True)
    p.add_argument("--header")
    p.add_argument("--cpu")
    args = parser.parse_args()
    if getattr(args, "worker", None) and args.worker[0] == "--":
        args.worker = args.worker[1:]
    {
        "bodies": bodies,
        "job-input": job_input,
        "wrk-result": wrk_result,
        "job": job,
        "cpu-monitor": cpu_monitor,
        "wait-quiet": wait_quiet,
        "table": table,
    }[args.command](args)


if __name__ == "__main__":
    main()
