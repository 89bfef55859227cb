//! The blob seam: images, model bundles and reports in a local folder or an S3-compatible bucket.
//!
//! Keys are `/`-separated relative paths. Images are content-addressed (`images/ab/abcdef...`), so
//! writing the same image twice stores it once.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use prodcat_domain::ContentHash;

use crate::StorageError;

/// Where blobs live, behind one interface.
#[derive(Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    prefix: Option<ObjectPath>,
    location: String,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("location", &self.location)
            .finish()
    }
}

/// The object key of an image with this content hash.
pub fn image_key(hash: &ContentHash) -> String {
    let text = hash.as_str();
    format!("images/{}/{}.jpg", &text[..2], text)
}

impl ObjectStorage {
    /// Opens a location: a folder path (created when missing), `file:///abs/path`, or
    /// `s3://bucket/optional/prefix`. S3 credentials, region and endpoint come from the usual
    /// `AWS_*` environment variables (`AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for a local
    /// S3-compatible server).
    pub fn open(location: &str) -> Result<Self, StorageError> {
        let trimmed = location.trim();
        if let Some(rest) = trimmed.strip_prefix("s3://") {
            let (bucket, prefix) = match rest.split_once('/') {
                Some((bucket, prefix)) => (bucket, prefix.trim_matches('/')),
                None => (rest, ""),
            };
            if bucket.is_empty() {
                return Err(StorageError::InvalidObjectStore {
                    location: trimmed.to_string(),
                    reason: "the bucket name is empty".to_string(),
                });
            }
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|error| StorageError::InvalidObjectStore {
                    location: trimmed.to_string(),
                    reason: error.to_string(),
                })?;
            return Ok(Self {
                store: Arc::new(store),
                prefix: (!prefix.is_empty()).then(|| ObjectPath::from(prefix)),
                location: trimmed.to_string(),
            });
        }
        let folder = trimmed.strip_prefix("file://").unwrap_or(trimmed);
        if folder.is_empty() || trimmed.contains("://") && !trimmed.starts_with("file://") {
            return Err(StorageError::InvalidObjectStore {
                location: trimmed.to_string(),
                reason: "expected a folder path, file:///path or s3://bucket/prefix".to_string(),
            });
        }
        std::fs::create_dir_all(folder).map_err(|source| StorageError::Io {
            path: folder.to_string(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(folder).map_err(|error| {
            StorageError::InvalidObjectStore {
                location: trimmed.to_string(),
                reason: error.to_string(),
            }
        })?;
        Ok(Self {
            store: Arc::new(store.with_automatic_cleanup(true)),
            prefix: None,
            location: folder.to_string(),
        })
    }

    /// A human-readable description of the location.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, key: &str) -> ObjectPath {
        match &self.prefix {
            Some(prefix) => key
                .split('/')
                .filter(|part| !part.is_empty())
                .fold(prefix.clone(), |path, part| path.join(part)),
            None => ObjectPath::from(key),
        }
    }

    fn object_error(key: &str, source: object_store::Error) -> StorageError {
        match source {
            object_store::Error::NotFound { .. } => StorageError::ObjectNotFound {
                key: key.to_string(),
            },
            source => StorageError::Object {
                key: key.to_string(),
                source,
            },
        }
    }

    /// Writes (or replaces) an object atomically.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.store
            .put(&self.path(key), bytes.into())
            .await
            .map_err(|error| Self::object_error(key, error))?;
        Ok(())
    }

    /// Writes an object unless one already exists at `key`; returns whether it wrote.
    /// Meant for content-addressed keys, where an existing object is by definition identical.
    pub async fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<bool, StorageError> {
        if self.exists(key).await? {
            return Ok(false);
        }
        self.put(key, bytes).await?;
        Ok(true)
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let result = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|error| Self::object_error(key, error))?;
        result
            .bytes()
            .await
            .map_err(|error| Self::object_error(key, error))
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(Self::object_error(key, error)),
        }
    }

    /// Deletes an object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(Self::object_error(key, error)),
        }
    }

    /// Keys under a prefix, relative to this storage's root, sorted.
    pub async fn list(&self, key_prefix: &str) -> Result<Vec<String>, StorageError> {
        let listing_root = self.path(key_prefix);
        let mut keys: Vec<String> = self
            .store
            .list(Some(&listing_root))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|error| Self::object_error(key_prefix, error))?;
        if let Some(prefix) = &self.prefix {
            let strip = format!("{}/", prefix.as_ref());
            for key in &mut keys {
                if let Some(rest) = key.strip_prefix(&strip) {
                    *key = rest.to_string();
                }
            }
        }
        keys.sort();
        Ok(keys)
    }
}
