-- Drift monitoring and scheduled pipelines.

-- One drift report: a current window (from the prediction log, or a file) compared with the
-- model version's stored reference profile. The full JSON and HTML live in the object store.
-- concept_drift is NULL when the window had too few reviewed labels to judge it.
CREATE TABLE drift_reports (
    id TEXT PRIMARY KEY NOT NULL,
    model_version TEXT NOT NULL,
    source TEXT NOT NULL,
    window_start_ms BIGINT,
    window_end_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    reference_rows BIGINT NOT NULL,
    current_rows BIGINT NOT NULL,
    dataset_drift BIGINT NOT NULL,
    drift_share DOUBLE PRECISION NOT NULL,
    drifted_features BIGINT NOT NULL,
    tested_features BIGINT NOT NULL,
    concept_drift BIGINT,
    concept_reference_f1 DOUBLE PRECISION,
    concept_current_f1 DOUBLE PRECISION,
    labelled_rows BIGINT NOT NULL,
    json_key TEXT NOT NULL,
    html_key TEXT NOT NULL,
    feature_scores TEXT NOT NULL
);
CREATE INDEX drift_reports_created ON drift_reports (created_at_ms);
CREATE INDEX drift_reports_model ON drift_reports (model_version, created_at_ms);

-- One run of a named pipeline (weekly-check, retrain). parameters and output are JSON;
-- heartbeat_at_ms moves while a step works, so a run whose process died can be told apart from
-- one still working; resumed counts how often it was picked up again.
CREATE TABLE pipeline_runs (
    id TEXT PRIMARY KEY NOT NULL,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    triggered_by TEXT NOT NULL,
    parameters TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT,
    heartbeat_at_ms BIGINT NOT NULL,
    resumed BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    output TEXT,
    registry_run TEXT,
    parent_run TEXT,
    created_by TEXT NOT NULL
);
CREATE INDEX pipeline_runs_started ON pipeline_runs (pipeline, started_at_ms);

-- The recorded steps of a pipeline run: a completed step keeps its output (JSON) and is skipped
-- when the run is resumed.
CREATE TABLE pipeline_steps (
    run_id TEXT NOT NULL REFERENCES pipeline_runs (id),
    name TEXT NOT NULL,
    position BIGINT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT,
    output TEXT,
    error TEXT,
    PRIMARY KEY (run_id, name)
);

-- The scheduler's leader lease: one row per lease name; the holder keeps it by renewing before
-- expires_at_ms, any other scheduler may take it once it has expired.
CREATE TABLE scheduler_lease (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    acquired_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

-- Per schedule, the last due time that was fired (claimed by compare-and-set, so each due time
-- fires once whatever the number of schedulers).
CREATE TABLE schedule_state (
    schedule TEXT PRIMARY KEY NOT NULL,
    cron TEXT NOT NULL,
    last_due_ms BIGINT NOT NULL,
    last_fired_at_ms BIGINT,
    last_run_id TEXT,
    last_holder TEXT,
    updated_at_ms BIGINT NOT NULL
);

-- Every notification attempt: sent, failed (with the error) or not configured.
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    destination TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    payload TEXT NOT NULL,
    pipeline_run TEXT
);
CREATE INDEX notifications_time ON notifications (at_ms);
