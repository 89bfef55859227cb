-- Live rollouts beside the champion: the share of traffic, the stickiness and the guard rails
-- of the shadow and canary aliases (the aliases themselves, and their history, are in
-- model_aliases and alias_history).
CREATE TABLE rollouts (
    alias TEXT PRIMARY KEY NOT NULL,
    share DOUBLE PRECISION NOT NULL,
    stickiness TEXT NOT NULL,
    guard TEXT NOT NULL,
    started_by TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    reason TEXT NOT NULL
);

-- Predictions that failed, by version and serving role (error rates of live comparisons and
-- guard rails); what the request sent is not kept.
CREATE TABLE prediction_errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    model_version TEXT NOT NULL,
    serving_role TEXT NOT NULL,
    error_kind TEXT NOT NULL,
    latency_us BIGINT NOT NULL
);
CREATE INDEX prediction_errors_time ON prediction_errors (at_ms);

-- Deliveries of signed webhooks: every attempt, retried with backoff.
ALTER TABLE notifications ADD COLUMN event_id TEXT;
ALTER TABLE notifications ADD COLUMN attempts BIGINT NOT NULL DEFAULT 1;
