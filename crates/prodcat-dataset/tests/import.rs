//! Import, versioning and diff tests, run on every available SQL backend.

use std::path::Path;

use prodcat_dataset::generate::{generate_catalogue, GenerateOptions};
use prodcat_dataset::{
    diff_versions, import_dataset, list_versions, load_rows, show_version, DatasetError,
    ImportOptions, ImportOutcome, ImportProgress, ImportSource, ProblemKind, Split,
};
use prodcat_storage::testing;
use prodcat_storage::ObjectStorage;

fn generated(dir: &Path, products: usize, seed: u64) {
    generate_catalogue(
        dir,
        &GenerateOptions {
            products,
            seed,
            images: true,
        },
        &|_| {},
    )
    .expect("generate the demo catalogue");
}

fn objects(dir: &Path) -> ObjectStorage {
    ObjectStorage::open(dir.join("objects").to_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_generated_catalogue_once() {
    let folder = tempfile::tempdir().unwrap();
    generated(folder.path(), 300, 5);
    let source = ImportSource::detect(folder.path()).unwrap();
    for test_database in testing::databases().await {
        let database = &test_database.database;
        let store = objects(&folder.path().join(test_database.name()));
        let outcome = import_dataset(database, &store, &source, &ImportOptions::default(), &())
            .await
            .unwrap();
        let ImportOutcome::Created { version, report } = &outcome else {
            panic!("{}: expected a new version", test_database.name());
        };
        assert_eq!(report.rows_read, 300);
        assert_eq!(report.rows_imported, 300);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.images_found, 300);
        assert_eq!(version.row_count, 300);
        assert_eq!(version.labelled_count, 300);
        assert_eq!(version.image_count, 300);
        assert!(version.empty_description_count > 60 && version.empty_description_count < 150);
        // Images are stored once per content hash.
        let stored = store.list("images").await.unwrap();
        assert_eq!(stored.len() as u64, report.images_stored_new);

        let details = show_version(database, version.id.as_str()).await.unwrap();
        assert_eq!(details.class_distribution.len(), 27);
        assert_eq!(
            details.split_sizes.0 + details.split_sizes.1 + details.split_sizes.2,
            300
        );
        assert!(details.split_sizes.1 >= 27 && details.split_sizes.2 >= 27);
        let test_rows = load_rows(database, &version.id, Some(Split::Test))
            .await
            .unwrap();
        assert_eq!(test_rows.len() as i64, details.split_sizes.2);
        assert!(test_rows.iter().all(|r| r.image_hash.is_some()));

        // Importing the same data again is a no-op that says so.
        let again = import_dataset(database, &store, &source, &ImportOptions::default(), &())
            .await
            .unwrap();
        assert!(matches!(again, ImportOutcome::AlreadyExists { .. }));
        assert_eq!(again.version().id, version.id);
        assert_eq!(again.report().images_stored_new, 0);
        assert_eq!(list_versions(database).await.unwrap().len(), 1);
    }
}

/// Writes a texts/labels pair and an images folder with one row per kind of problem.
fn write_bad_catalogue(dir: &Path) -> ImportSource {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let good_image = prodcat_dataset::generate::generate_image(
        0,
        prodcat_domain::CategoryCode::from_u16(10).unwrap(),
        1,
    );
    let mut texts = b",designation,description,productid,imageid\n".to_vec();
    let mut labels = b",prdtypecode\n".to_vec();
    let mut add =
        |index: &str, designation: &[u8], product: &str, image: &str, label: Option<&str>| {
            texts.extend_from_slice(format!("{index},").as_bytes());
            texts.extend_from_slice(designation);
            texts.extend_from_slice(format!(",desc,{product},{image}\n").as_bytes());
            if let Some(label) = label {
                labels.extend_from_slice(format!("{index},{label}\n").as_bytes());
            }
        };
    for (position, product) in (1..=5).enumerate() {
        let image = 500 + product;
        add(
            &position.to_string(),
            b"Good title",
            &product.to_string(),
            &image.to_string(),
            Some("10"),
        );
        std::fs::write(
            images.join(format!("image_{image}_product_{product}.jpg")),
            &good_image,
        )
        .unwrap();
    }
    add("5", b"Bad product", "abc", "600", Some("10")); // bad product id
    add("6", b"Bad image id", "7", "-3", Some("10")); // bad image id
    add("7", b"", "8", "601", Some("10")); // empty designation
    add("8", b"No label", "9", "602", None); // missing label
    add("9", b"Unknown code", "10", "603", Some("1234")); // unknown category
    add("10", b"Duplicate product", "1", "604", Some("10")); // duplicate product id
    add("11", b"Not \xff utf8", "12", "605", Some("10")); // not UTF-8
    add("x", b"Bad index", "13", "606", Some("10")); // bad index
    add("0", b"Duplicate index", "14", "607", Some("10")); // duplicate index
    add("12", b"Corrupt image", "15", "608", Some("10"));
    std::fs::write(
        images.join("image_608_product_15.jpg"),
        &good_image[..good_image.len() / 3],
    )
    .unwrap();
    add("13", b"Not an image", "16", "609", Some("10"));
    std::fs::write(
        images.join("image_609_product_16.jpg"),
        b"hello, not a jpeg",
    )
    .unwrap();
    add("14", b"Missing image is fine", "17", "610", Some("10"));
    // No title but a photo: kept for the image branch.
    add("16", b"", "18", "611", Some("10"));
    std::fs::write(images.join("image_611_product_18.jpg"), &good_image).unwrap();
    texts.extend_from_slice(b"15,Too few fields,17\n");
    labels.extend_from_slice(b"15,10\n");
    let texts_path = dir.join("X.csv");
    let labels_path = dir.join("Y.csv");
    std::fs::write(&texts_path, texts).unwrap();
    std::fs::write(&labels_path, labels).unwrap();
    ImportSource::explicit(texts_path, Some(labels_path), Some(images)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_every_kind_of_bad_row_with_file_and_line() {
    let folder = tempfile::tempdir().unwrap();
    let source = write_bad_catalogue(folder.path());
    for test_database in testing::databases().await {
        let database = &test_database.database;
        let store = objects(&folder.path().join(test_database.name()));
        let outcome = import_dataset(database, &store, &source, &ImportOptions::default(), &())
            .await
            .unwrap();
        let report = outcome.report();
        let kinds: Vec<ProblemKind> = report.problems.iter().map(|p| p.kind).collect();
        for expected in [
            ProblemKind::BadProductId,
            ProblemKind::BadImageId,
            ProblemKind::EmptyDesignation,
            ProblemKind::MissingLabel,
            ProblemKind::UnknownCategory,
            ProblemKind::DuplicateProductId,
            ProblemKind::NotUtf8,
            ProblemKind::BadIndex,
            ProblemKind::DuplicateIndex,
            ProblemKind::UndecodableImage,
            ProblemKind::WrongFieldCount,
        ] {
            assert!(
                kinds.contains(&expected),
                "{expected:?} not reported: {kinds:?}"
            );
        }
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == ProblemKind::UndecodableImage)
                .count(),
            2
        );
        let bad_product = report
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::BadProductId)
            .unwrap();
        assert_eq!(bad_product.line, 7, "line of the bad product id row");
        assert!(bad_product.file.ends_with("X.csv"));
        assert!(bad_product.message.contains("abc"));
        let unknown = report
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::UnknownCategory)
            .unwrap();
        assert!(unknown.message.contains("1234") && unknown.message.contains("Y.csv:"));
        // Five good rows, the row whose image is missing (imported text-only) and the row
        // without a title but with a photo (imported photo-only); the row with neither is not.
        assert_eq!(report.rows_imported, 7);
        assert_eq!(report.images_missing, 1);
        assert_eq!(outcome.version().image_count, 6);
        assert_eq!(report.photo_only_rows, 1);
        let untitled = report
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::EmptyDesignation)
            .unwrap();
        assert!(
            untitled.message.contains("no photo"),
            "{}",
            untitled.message
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_stops_at_the_first_problem_and_stores_nothing() {
    let folder = tempfile::tempdir().unwrap();
    let source = write_bad_catalogue(folder.path());
    for test_database in testing::databases().await {
        let database = &test_database.database;
        let store = objects(&folder.path().join(test_database.name()));
        let options = ImportOptions {
            strict: true,
            ..ImportOptions::default()
        };
        let error = import_dataset(database, &store, &source, &options, &())
            .await
            .unwrap_err();
        match error {
            // Labels are read first: the first problem is the bad index in Y.csv.
            DatasetError::StrictProblem {
                ref file,
                line,
                ref message,
            } => {
                assert!(file.ends_with("Y.csv"), "{file}");
                assert_eq!(line, 13);
                assert!(message.contains("\"x\""), "{message}");
            }
            other => panic!("expected a strict problem, got {other}"),
        }
        assert!(list_versions(database).await.unwrap().is_empty());
        // With a clean labels file, the first problem is the bad product id on line 7 of X.csv.
        let labels_path = source.labels.clone().unwrap();
        let labels = std::fs::read_to_string(&labels_path).unwrap();
        let clean: String = labels
            .lines()
            .filter(|line| !line.starts_with("x,"))
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(&labels_path, clean).unwrap();
        let error = import_dataset(database, &store, &source, &options, &())
            .await
            .unwrap_err();
        match error {
            DatasetError::StrictProblem {
                ref file,
                line,
                ref message,
            } => {
                assert!(file.ends_with("X.csv"), "{file}");
                assert_eq!(line, 7);
                assert!(message.contains("abc"), "{message}");
            }
            other => panic!("expected a strict problem, got {other}"),
        }
        assert!(list_versions(database).await.unwrap().is_empty());
        std::fs::write(&labels_path, labels).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_limit_refuses_oversized_images() {
    let folder = tempfile::tempdir().unwrap();
    generated(folder.path(), 40, 2);
    let source = ImportSource::detect(folder.path()).unwrap();
    let test_database = testing::sqlite_database().await;
    let store = objects(folder.path());
    let options = ImportOptions {
        max_image_pixels: 100 * 100,
        ..ImportOptions::default()
    };
    let error = import_dataset(&test_database.database, &store, &source, &options, &())
        .await
        .unwrap_err();
    // Every row is refused, so nothing can be imported.
    assert!(
        matches!(error, DatasetError::NothingToImport { problems: 40 }),
        "{error}"
    );
}

struct CancelAfter(u64);

impl ImportProgress for CancelAfter {
    fn advanced(&self, _bytes: u64, rows: u64) -> bool {
        rows < self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_leaves_no_version() {
    let folder = tempfile::tempdir().unwrap();
    generated(folder.path(), 400, 9);
    let source = ImportSource::detect(folder.path()).unwrap();
    for test_database in testing::databases().await {
        let database = &test_database.database;
        let store = objects(&folder.path().join(test_database.name()));
        let options = ImportOptions {
            chunk_rows: 64,
            ..ImportOptions::default()
        };
        let error = import_dataset(database, &store, &source, &options, &CancelAfter(128))
            .await
            .unwrap_err();
        assert!(matches!(error, DatasetError::Cancelled));
        assert!(list_versions(database).await.unwrap().is_empty());
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dataset_version_rows")
            .fetch_one(database.pool())
            .await
            .unwrap();
        assert_eq!(rows, 0);
        // The next import completes and reuses what the interrupted one stored.
        let outcome = import_dataset(database, &store, &source, &options, &())
            .await
            .unwrap();
        assert_eq!(outcome.version().row_count, 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_counts_added_removed_and_relabelled_rows() {
    let folder = tempfile::tempdir().unwrap();
    generated(folder.path(), 120, 3);
    let texts = std::fs::read_to_string(folder.path().join("X_train_update.csv")).unwrap();
    let labels = std::fs::read_to_string(folder.path().join("Y_train_CVw08PX.csv")).unwrap();
    // Version 1: the first 100 rows. Version 2: rows 10..120 with rows 20..25 relabelled.
    let mut text_reader = csv::Reader::from_reader(texts.as_bytes());
    let text_rows: Vec<csv::StringRecord> = text_reader.records().map(|r| r.unwrap()).collect();
    let label_rows: Vec<(String, String)> = labels
        .lines()
        .skip(1)
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect();
    let write = |name: &str, range: std::ops::Range<usize>, relabel: std::ops::Range<usize>| {
        let dir = folder.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut writer = csv::Writer::from_path(dir.join("X.csv")).unwrap();
        writer
            .write_record(["", "designation", "description", "productid", "imageid"])
            .unwrap();
        let mut label_text = String::from(",prdtypecode\n");
        for i in range {
            writer.write_record(&text_rows[i]).unwrap();
            let code = if relabel.contains(&i) {
                if label_rows[i].1 == "2583" {
                    "10"
                } else {
                    "2583"
                }
            } else {
                label_rows[i].1.as_str()
            };
            label_text.push_str(&format!("{},{}\n", label_rows[i].0, code));
        }
        writer.flush().unwrap();
        std::fs::write(dir.join("Y.csv"), label_text).unwrap();
        ImportSource::explicit(dir.join("X.csv"), Some(dir.join("Y.csv")), None).unwrap()
    };
    let first = write("v1", 0..100, 0..0);
    let second = write("v2", 10..120, 20..25);
    for test_database in testing::databases().await {
        let database = &test_database.database;
        let store = objects(&folder.path().join(test_database.name()));
        let v1 = import_dataset(database, &store, &first, &ImportOptions::default(), &())
            .await
            .unwrap();
        let v2 = import_dataset(database, &store, &second, &ImportOptions::default(), &())
            .await
            .unwrap();
        let diff = diff_versions(database, v1.version().id.as_str(), v2.version().id.as_str())
            .await
            .unwrap();
        assert_eq!(diff.added, 20);
        assert_eq!(diff.removed, 10);
        assert_eq!(diff.relabelled, 5);
        assert_eq!(diff.content_changed, 0);
        assert_eq!(diff.unchanged, 85);
        assert_eq!(diff.relabelled_examples.len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_the_real_sample() {
    let Ok(root) = std::env::var("PRODCAT_SAMPLE_DATA") else {
        eprintln!("skipped: PRODCAT_SAMPLE_DATA is not set (real-sample import test)");
        return;
    };
    let root = Path::new(&root);
    let source = ImportSource::explicit(
        root.join("text/X_train_sample.csv"),
        Some(root.join("text/Y_train_sample.csv")),
        Some(root.join("images/image_train")),
    )
    .unwrap();
    let folder = tempfile::tempdir().unwrap();
    for test_database in testing::databases().await {
        let database = &test_database.database;
        let store = objects(&folder.path().join(test_database.name()));
        let outcome = import_dataset(database, &store, &source, &ImportOptions::default(), &())
            .await
            .unwrap();
        let report = outcome.report();
        assert!(
            report.problems.is_empty(),
            "{:?}",
            &report.problems[..3.min(report.problems.len())]
        );
        assert_eq!(report.rows_imported, 2682, "every real row is imported");
        assert_eq!(
            report.images_found, 553,
            "rows of the text sample with a real image"
        );
        let details = show_version(database, outcome.version().id.as_str())
            .await
            .unwrap();
        assert_eq!(details.class_distribution.len(), 27);
    }
}
