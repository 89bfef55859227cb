-- The durable job queue: a job is a batch of items accepted at once; each item is leased by one
-- worker at a time (lease owner and expiry), retried with backoff after a failure, and finished
-- exactly once with a result or a recorded error.
-- jobs.status: queued (nothing taken yet), running, completed (every item done or failed).
CREATE TABLE jobs (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    content_hash TEXT NOT NULL,
    created_by TEXT NOT NULL,
    item_count BIGINT NOT NULL,
    done_count BIGINT NOT NULL DEFAULT 0,
    failed_count BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    error TEXT
);
CREATE INDEX jobs_created ON jobs (created_at_ms);

-- job_items.status: pending (waiting, possibly until next_attempt_ms), leased (a worker holds it
-- until lease_expires_ms), done (result set), failed (error set; no more attempts).
CREATE TABLE job_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    position BIGINT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_ms BIGINT,
    next_attempt_ms BIGINT NOT NULL,
    result TEXT,
    error TEXT,
    finished_at_ms BIGINT,
    UNIQUE (job_id, position)
);
CREATE INDEX job_items_queue ON job_items (status, id);
