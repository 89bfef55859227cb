//! Loading a dataset version into the live catalogue, on every available SQL backend: rows
//! kept in the dataset for their photo alone (no title) are not catalogue products.

use prodcat_dataset::generate::{generate_catalogue, GenerateOptions};
use prodcat_dataset::{import_dataset, ImportOptions, ImportSource};
use prodcat_storage::{testing, ObjectStorage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_a_title_stay_out_of_the_catalogue() {
    let folder = tempfile::tempdir().unwrap();
    let products = 40;
    generate_catalogue(
        folder.path(),
        &GenerateOptions {
            products,
            seed: 3,
            images: true,
        },
        &|_| {},
    )
    .unwrap();
    // Blank the title and description of the first three rows: they keep only their photo.
    let texts_path = folder.path().join("X_train_update.csv");
    let mut reader = csv::Reader::from_path(&texts_path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let mut rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    for row in rows.iter_mut().take(3) {
        let fields: Vec<&str> = row.iter().collect();
        *row = csv::StringRecord::from(vec![fields[0], "", "", fields[3], fields[4]]);
    }
    let mut writer = csv::Writer::from_path(&texts_path).unwrap();
    writer.write_record(&headers).unwrap();
    for row in &rows {
        writer.write_record(row).unwrap();
    }
    writer.flush().unwrap();
    let source = ImportSource::detect(folder.path()).unwrap();
    for test_database in testing::databases().await {
        let name = test_database.name();
        let database = &test_database.database;
        let objects =
            ObjectStorage::open(folder.path().join(name).join("objects").to_str().unwrap())
                .unwrap();
        let outcome = import_dataset(database, &objects, &source, &ImportOptions::default(), &())
            .await
            .unwrap();
        assert_eq!(outcome.report().rows_imported, products as u64, "{name}");
        assert_eq!(outcome.report().photo_only_rows, 3, "{name}");
        let added =
            prodcat_catalogue::products::load_dataset(database, &outcome.version().id, "test")
                .await
                .unwrap();
        assert_eq!(added, products - 3, "{name}");
        let untitled: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE TRIM(designation) = ''")
                .fetch_one(database.pool())
                .await
                .unwrap();
        assert_eq!(untitled, 0, "{name}");
    }
}
