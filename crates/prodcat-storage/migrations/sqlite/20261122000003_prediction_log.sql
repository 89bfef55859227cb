-- Every served prediction: a profile of its inputs (never raw images), the model version, the
-- outcome, and the reviewed label once a person has confirmed or corrected it.
CREATE TABLE prediction_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    model_version TEXT NOT NULL,
    source TEXT NOT NULL,
    product_id BIGINT,
    text TEXT NOT NULL,
    description_empty BIGINT NOT NULL,
    image_width BIGINT,
    image_height BIGINT,
    image_brightness DOUBLE PRECISION,
    image_border_ratio DOUBLE PRECISION,
    predicted_code BIGINT NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    automatic BIGINT NOT NULL,
    branches TEXT NOT NULL,
    latency_us BIGINT NOT NULL,
    label_code BIGINT,
    labelled_at_ms BIGINT
);
CREATE INDEX prediction_log_time ON prediction_log (at_ms);
CREATE INDEX prediction_log_product ON prediction_log (product_id);
