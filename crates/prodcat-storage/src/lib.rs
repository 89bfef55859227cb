//! Storage seams of prodcat: SQL metadata through `sqlx` (an SQLite file by default, PostgreSQL in
//! production; one schema, migrated automatically) and blobs (images, model bundles, reports)
//! through `object_store` (a local folder by default, S3-compatible storage in production).
//!
//! Higher crates write their own queries against [`Database`]; the schema and its migrations live
//! here so there is one migration history for the whole project.

pub mod backup;
mod database;
mod error;
mod objects;
pub mod testing;

pub use database::{now_ms, Backend, ConnectOptions, Database, SqlPlaceholders};
pub use error::{sql_error_kind, StorageError};
pub use objects::{image_key, ObjectStorage};
