-- Images stored once per content hash; the bytes live in the object store.
CREATE TABLE images (
    hash TEXT PRIMARY KEY NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    byte_length BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- One labelled (or unlabelled) catalogue row, addressed by the hash of its content.
CREATE TABLE dataset_records (
    record_hash TEXT PRIMARY KEY NOT NULL,
    product_id BIGINT NOT NULL,
    image_id BIGINT NOT NULL,
    designation TEXT NOT NULL,
    description TEXT NOT NULL,
    category_code BIGINT,
    image_hash TEXT REFERENCES images (hash)
);

-- An immutable dataset version: its id is a hash over its records and split settings.
CREATE TABLE dataset_versions (
    id TEXT PRIMARY KEY NOT NULL,
    content_hash TEXT NOT NULL UNIQUE,
    parent_id TEXT REFERENCES dataset_versions (id),
    created_at_ms BIGINT NOT NULL,
    source TEXT NOT NULL,
    note TEXT NOT NULL,
    row_count BIGINT NOT NULL,
    labelled_count BIGINT NOT NULL,
    image_count BIGINT NOT NULL,
    missing_image_count BIGINT NOT NULL,
    empty_description_count BIGINT NOT NULL,
    split_seed BIGINT NOT NULL,
    split_ratios TEXT NOT NULL
);

-- Membership of records in versions, with the split each row belongs to.
CREATE TABLE dataset_version_rows (
    version_id TEXT NOT NULL REFERENCES dataset_versions (id),
    position BIGINT NOT NULL,
    record_hash TEXT NOT NULL REFERENCES dataset_records (record_hash),
    product_id BIGINT NOT NULL,
    source_index BIGINT NOT NULL,
    split TEXT NOT NULL,
    PRIMARY KEY (version_id, position)
);
CREATE INDEX dataset_version_rows_product ON dataset_version_rows (version_id, product_id);
