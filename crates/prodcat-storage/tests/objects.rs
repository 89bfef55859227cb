//! Object storage round trips on every available store (local folder; S3 when configured).

use bytes::Bytes;
use prodcat_domain::ContentHash;
use prodcat_storage::{image_key, testing, StorageError};

#[tokio::test]
async fn objects_round_trip() {
    for test_store in testing::object_storages() {
        let storage = &test_store.storage;
        let kind = test_store.kind;
        let payload = Bytes::from_static(b"\x89PNG not really, but bytes");
        let hash = ContentHash::of(&payload);
        let key = image_key(&hash);
        assert!(!storage.exists(&key).await.unwrap(), "{kind}");
        assert!(
            storage.put_if_absent(&key, payload.clone()).await.unwrap(),
            "{kind}"
        );
        assert!(
            !storage.put_if_absent(&key, payload.clone()).await.unwrap(),
            "{kind}: stored once"
        );
        assert_eq!(storage.get(&key).await.unwrap(), payload, "{kind}");
        storage
            .put("reports/a.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let listed = storage.list("images").await.unwrap();
        assert_eq!(listed, vec![key.clone()], "{kind}");
        storage.delete(&key).await.unwrap();
        storage.delete(&key).await.unwrap();
        assert!(
            matches!(
                storage.get(&key).await,
                Err(StorageError::ObjectNotFound { .. })
            ),
            "{kind}"
        );
        assert_eq!(
            storage.list("reports").await.unwrap(),
            vec!["reports/a.json".to_string()]
        );
    }
}

#[tokio::test]
async fn databases_migrate_and_answer() {
    for test_database in testing::databases().await {
        test_database.database.ping().await.unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dataset_versions")
            .fetch_one(test_database.database.pool())
            .await
            .unwrap();
        assert_eq!(count, 0, "{}", test_database.name());
    }
}

#[test]
fn bad_locations_are_refused_clearly() {
    let error = prodcat_storage::ObjectStorage::open("ftp://x/y").unwrap_err();
    assert!(error.to_string().contains("ftp://x/y"));
    let error = prodcat_storage::ObjectStorage::open("s3://").unwrap_err();
    assert!(error.to_string().contains("bucket"));
}
