-- Experiment tracking and the model registry.

-- One tracked run: a training, an evaluation or a pipeline. Parameters are a JSON object of
-- strings; times are Unix milliseconds.
CREATE TABLE runs (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    name TEXT NOT NULL,
    dataset_version TEXT,
    model_version TEXT,
    code_version TEXT NOT NULL,
    parameters TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT,
    error TEXT,
    created_by TEXT NOT NULL
);
CREATE INDEX runs_started ON runs (started_at_ms);

-- Metric values of a run, one row per key and step (per-epoch curves have many steps).
CREATE TABLE run_metrics (
    run_id TEXT NOT NULL REFERENCES runs (id),
    key TEXT NOT NULL,
    step BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, key, step)
);

-- Files a run produced; the bytes live in the object store under object_key.
CREATE TABLE run_artifacts (
    run_id TEXT NOT NULL REFERENCES runs (id),
    name TEXT NOT NULL,
    object_key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    byte_length BIGINT NOT NULL,
    media_type TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, name)
);

-- Registered model versions: immutable bundles described by their manifest (JSON).
CREATE TABLE model_versions (
    id TEXT PRIMARY KEY NOT NULL,
    run_id TEXT REFERENCES runs (id),
    created_at_ms BIGINT NOT NULL,
    dataset_version TEXT,
    manifest TEXT NOT NULL,
    object_prefix TEXT NOT NULL,
    summary_metrics TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX model_versions_created ON model_versions (created_at_ms);

-- Where each alias (champion, challenger, any user alias) points now.
CREATE TABLE model_aliases (
    alias TEXT PRIMARY KEY NOT NULL,
    version_id TEXT NOT NULL REFERENCES model_versions (id),
    updated_at_ms BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);

-- Every alias move, in order: who, when, why, from which version to which, whether forced, and
-- the promotion policy's decision (JSON) when one was taken.
CREATE TABLE alias_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alias TEXT NOT NULL,
    action TEXT NOT NULL,
    from_version TEXT REFERENCES model_versions (id),
    to_version TEXT REFERENCES model_versions (id),
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    forced BIGINT NOT NULL,
    decision TEXT,
    at_ms BIGINT NOT NULL
);
CREATE INDEX alias_history_alias ON alias_history (alias, id);
