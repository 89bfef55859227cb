-- People and services that may call the API, with their role.
CREATE TABLE users (
    name TEXT PRIMARY KEY NOT NULL,
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0
);

-- The live catalogue: products added through the API, classified at once or later.
-- status: pending (not classified yet), classified (automatic decision), review (waiting for a
-- person), reviewed (a person accepted or corrected the category).
CREATE TABLE products (
    id BIGINT PRIMARY KEY NOT NULL,
    designation TEXT NOT NULL,
    description TEXT NOT NULL,
    image_hash TEXT,
    status TEXT NOT NULL,
    predicted_code BIGINT,
    confidence DOUBLE PRECISION,
    model_version TEXT,
    category_code BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    view_count BIGINT NOT NULL DEFAULT 0,
    deleted_at_ms BIGINT
);
CREATE INDEX products_status ON products (status, confidence);
CREATE INDEX products_category ON products (category_code);

-- What reviewers decided; these labels feed retraining.
CREATE TABLE review_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id BIGINT NOT NULL,
    decision TEXT NOT NULL,
    category_code BIGINT NOT NULL,
    previous_code BIGINT,
    reviewer TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    used_in_dataset TEXT
);
CREATE INDEX review_decisions_product ON review_decisions (product_id);

-- Every write through the API: who, what, when, from where.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    client_address TEXT NOT NULL,
    status BIGINT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (at_ms);
