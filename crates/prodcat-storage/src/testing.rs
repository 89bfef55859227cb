//! Fresh, isolated databases and object stores for tests: an SQLite file in a temporary folder
//! always, and a brand-new PostgreSQL database when `PRODCAT_TEST_POSTGRES_URL` is set (an S3 bucket
//! prefix when `PRODCAT_TEST_S3_URL` is set). Each one is dropped when the test ends.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Database, ObjectStorage};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A database that exists only for one test.
pub struct TestDatabase {
    pub database: Database,
    /// Its URL (an SQLite path or a PostgreSQL URL), for processes a test starts.
    pub url: String,
    /// Keeps the SQLite folder alive.
    _folder: Option<tempfile::TempDir>,
    postgres_cleanup: Option<(String, String)>,
}

impl TestDatabase {
    /// "sqlite" or "postgres", for assertion messages.
    pub fn name(&self) -> &'static str {
        self.database.backend().name()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        drop_postgres_database(self.postgres_cleanup.take());
    }
}

/// Drops a test's PostgreSQL database (`(admin url, name)`), ending its sessions.
fn drop_postgres_database(cleanup: Option<(String, String)>) {
    let Some((admin_url, name)) = cleanup else {
        return;
    };
    // Dropping runs outside any runtime guarantee: use a short-lived one on a thread. The
    // test's own pool is not closed from there: its connections are driven by the test's
    // runtime, which is blocked in this drop (closing them would wait forever on a
    // current-thread runtime); `WITH (FORCE)` ends those sessions on the server side.
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            runtime.block_on(async move {
                if let Ok(admin) = sqlx::AnyPool::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    admin.close().await;
                }
            });
        }
    })
    .join();
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A fresh SQLite database in its own temporary folder.
pub async fn sqlite_database() -> TestDatabase {
    let folder = tempfile::tempdir().expect("create a temporary folder");
    let path = folder.path().join("prodcat.db");
    let database = Database::connect(path.to_str().expect("utf-8 temp path"))
        .await
        .expect("open the SQLite test database");
    TestDatabase {
        database,
        url: path.to_str().expect("utf-8 temp path").to_string(),
        _folder: Some(folder),
        postgres_cleanup: None,
    }
}

/// A fresh PostgreSQL database, or `None` (with a printed reason) when
/// `PRODCAT_TEST_POSTGRES_URL` is not set.
pub async fn postgres_database() -> Option<TestDatabase> {
    let empty = empty_postgres().await?;
    let database = Database::connect(&empty.url)
        .await
        .expect("connect to the fresh test database");
    let EmptyPostgres { url, mut _cleanup } = empty;
    Some(TestDatabase {
        database,
        url,
        _folder: None,
        postgres_cleanup: _cleanup.0.take(),
    })
}

/// A brand-new PostgreSQL database without any table (not migrated), dropped when the test
/// ends; `None` (with a printed reason) when `PRODCAT_TEST_POSTGRES_URL` is not set.
pub struct EmptyPostgres {
    pub url: String,
    _cleanup: TestDatabaseCleanup,
}

struct TestDatabaseCleanup(Option<(String, String)>);

impl Drop for TestDatabaseCleanup {
    fn drop(&mut self) {
        drop_postgres_database(self.0.take());
    }
}

/// See [`EmptyPostgres`].
pub async fn empty_postgres() -> Option<EmptyPostgres> {
    let Ok(admin_url) = std::env::var("PRODCAT_TEST_POSTGRES_URL") else {
        eprintln!("skipped on postgres: PRODCAT_TEST_POSTGRES_URL is not set");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("prodcat_test_{}", unique_suffix());
    let admin = sqlx::AnyPool::connect(&admin_url)
        .await
        .expect("connect to PRODCAT_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create a test database");
    admin.close().await;
    let mut url = url::Url::parse(&admin_url).expect("PRODCAT_TEST_POSTGRES_URL is a URL");
    url.set_path(&format!("/{name}"));
    Some(EmptyPostgres {
        url: url.to_string(),
        _cleanup: TestDatabaseCleanup(Some((admin_url, name))),
    })
}

/// Every backend available here: SQLite always, PostgreSQL when configured.
pub async fn databases() -> Vec<TestDatabase> {
    let mut all = vec![sqlite_database().await];
    all.extend(postgres_database().await);
    all
}

/// An object store that exists only for one test.
pub struct TestObjectStorage {
    pub storage: ObjectStorage,
    /// Its URL (a folder or `s3://bucket/prefix`), for processes a test starts.
    pub url: String,
    pub kind: &'static str,
    _folder: Option<tempfile::TempDir>,
}

/// Every object store available here: a local temporary folder always, and a fresh prefix of
/// the bucket in `PRODCAT_TEST_S3_URL` (e.g. `s3://prodcat-test`) when it is set.
pub fn object_storages() -> Vec<TestObjectStorage> {
    let folder = tempfile::tempdir().expect("create a temporary folder");
    let local = ObjectStorage::open(folder.path().to_str().expect("utf-8 temp path"))
        .expect("open a local object store");
    let mut all = vec![TestObjectStorage {
        storage: local,
        url: folder.path().to_str().expect("utf-8 temp path").to_string(),
        kind: "local",
        _folder: Some(folder),
    }];
    match std::env::var("PRODCAT_TEST_S3_URL") {
        Ok(base) => {
            let url = format!("{}/test-{}", base.trim_end_matches('/'), unique_suffix());
            all.push(TestObjectStorage {
                storage: ObjectStorage::open(&url).expect("open the S3 test bucket"),
                url,
                kind: "s3",
                _folder: None,
            });
        }
        Err(_) => eprintln!("skipped on s3: PRODCAT_TEST_S3_URL is not set"),
    }
    all
}
