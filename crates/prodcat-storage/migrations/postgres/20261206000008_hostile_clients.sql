-- A user's tokens carry the version of the user's credentials and role; disabling the user or
-- changing their role or password increments it, and tokens of an older version are refused.
ALTER TABLE users ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;

-- Products change under optimistic concurrency: a change names the revision it was based on
-- (the ETag of GET /v1/products/{id}) and is refused when the product moved meanwhile.
ALTER TABLE products ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;

-- Failed sign-ins per account and per client address, shared by every replica: after a handful
-- of failures the key is blocked for a growing time.
CREATE TABLE login_throttle (
    throttle_key TEXT PRIMARY KEY NOT NULL,
    failures BIGINT NOT NULL,
    blocked_until_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
