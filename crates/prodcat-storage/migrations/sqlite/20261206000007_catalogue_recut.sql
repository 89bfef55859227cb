-- Products waiting for a model are retried with backoff and a cap: how often it failed, when to
-- try again, the last error, and whether automatic retries were given up (a new model or a
-- change of the product makes it eligible again).
ALTER TABLE products ADD COLUMN classify_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE products ADD COLUMN next_classify_at_ms BIGINT;
ALTER TABLE products ADD COLUMN classify_error TEXT;
ALTER TABLE products ADD COLUMN classify_given_up BIGINT NOT NULL DEFAULT 0;
CREATE INDEX products_pending ON products (status, classify_given_up, next_classify_at_ms);

-- Each prediction has an id chosen when it is made: the log writer inserts with
-- ON CONFLICT DO NOTHING on it, so a batch retried after an uncertain commit adds no duplicate.
-- The serving role (champion, canary, shadow), the client who asked and each branch's outputs
-- say which model answered whom and how.
ALTER TABLE prediction_log ADD COLUMN prediction_id TEXT;
ALTER TABLE prediction_log ADD COLUMN serving_role TEXT NOT NULL DEFAULT 'champion';
ALTER TABLE prediction_log ADD COLUMN client TEXT;
ALTER TABLE prediction_log ADD COLUMN branch_outputs TEXT;
CREATE UNIQUE INDEX prediction_log_prediction ON prediction_log (prediction_id);
