//! Deriving a version from a parent, later imports and review decisions, on every available SQL
//! backend.

use std::path::Path;

use prodcat_dataset::generate::{generate_catalogue, GenerateOptions};
use prodcat_dataset::{
    derive_version, import_dataset, load_rows, DatasetRow, DeriveOptions, DeriveOutcome,
    ImportOptions, ImportSource,
};
use prodcat_domain::{CategoryCode, DatasetVersionId};
use prodcat_storage::{testing, Database, ObjectStorage};

async fn import(database: &Database, objects: &ObjectStorage, folder: &Path, seed: u64) {
    generate_catalogue(
        folder,
        &GenerateOptions {
            products: 120,
            seed,
            images: true,
        },
        &|_| {},
    )
    .expect("generate a catalogue");
    let source = ImportSource::detect(folder).unwrap();
    import_dataset(database, objects, &source, &ImportOptions::default(), &())
        .await
        .unwrap();
}

/// Stores `row`'s product (with a new title when `retitle`) and a review decision labelling it
/// `category`.
async fn review(database: &Database, row: &DatasetRow, category: CategoryCode, retitle: bool) {
    let designation = if retitle {
        format!("{} (revu)", row.designation)
    } else {
        row.designation.clone()
    };
    sqlx::query(
        "INSERT INTO products (id, designation, description, image_hash, status, \
         category_code, created_at_ms, updated_at_ms, created_by) \
         VALUES ($1, $2, $3, $4, 'reviewed', $5, 1, 1, 'test') \
         ON CONFLICT (id) DO UPDATE SET designation = excluded.designation",
    )
    .bind(row.product_id)
    .bind(designation)
    .bind(row.description.clone())
    .bind(row.image_hash.clone())
    .bind(i64::from(category.value()))
    .execute(database.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO review_decisions (product_id, decision, category_code, reviewer, at_ms) \
         VALUES ($1, 'corrected', $2, 'reviewer', 2)",
    )
    .bind(row.product_id)
    .bind(i64::from(category.value()))
    .execute(database.pool())
    .await
    .unwrap();
}

/// Derives from `parent` with the default options.
async fn derive(
    database: &Database,
    objects: &ObjectStorage,
    parent: &DatasetVersionId,
) -> DeriveOutcome {
    derive_version(
        database,
        objects,
        parent.as_str(),
        &DeriveOptions::default(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derives_from_reviews_and_later_imports() {
    let folder = tempfile::tempdir().unwrap();
    for test_database in testing::databases().await {
        let database = &test_database.database;
        let name = test_database.name();
        let objects =
            ObjectStorage::open(folder.path().join(name).join("objects").to_str().unwrap())
                .unwrap();
        import(database, &objects, &folder.path().join(name).join("a"), 21).await;
        let parent = prodcat_dataset::resolve_version(database, "latest")
            .await
            .unwrap();
        let parent_rows = load_rows(database, &parent.id, None).await.unwrap();

        // Nothing arrived yet: the parent comes back unchanged.
        let unchanged = derive(database, &objects, &parent.id).await;
        assert!(!unchanged.created, "{name}");
        assert_eq!(unchanged.version.id, parent.id, "{name}");
        assert_eq!(unchanged.new_rows(), 0, "{name}");

        // A later import, then three reviews: a new label, a confirmed label, a new title.
        std::thread::sleep(std::time::Duration::from_millis(5));
        import(database, &objects, &folder.path().join(name).join("b"), 22).await;
        let other = CategoryCode::from_u16(2905).unwrap();
        let relabel = parent_rows[3..]
            .iter()
            .find(|row| row.category != Some(other))
            .unwrap();
        review(database, relabel, other, false).await;
        let confirmed = &parent_rows[1];
        review(database, confirmed, confirmed.category.unwrap(), false).await;
        let retitled = &parent_rows[2];
        review(database, retitled, retitled.category.unwrap(), true).await;

        let derived = derive(database, &objects, &parent.id).await;
        assert!(derived.created, "{name}");
        assert_eq!(derived.parent, parent.id, "{name}");
        assert_eq!(derived.reviewed_unchanged, 1, "{name}");
        assert_eq!(derived.reviewed_relabelled, 2, "{name}");
        assert_eq!(derived.imported_versions.len(), 1, "{name}");
        assert!(derived.imported_rows > 0, "{name}");
        assert_eq!(derived.decisions_marked, 3, "{name}");
        let rows = load_rows(database, &derived.version.id, None)
            .await
            .unwrap();
        let row_of = |product_id: i64| rows.iter().find(|row| row.product_id == product_id);
        let relabelled = row_of(relabel.product_id).unwrap();
        assert_eq!(relabelled.category, Some(other), "{name}");
        assert_eq!(relabelled.split, relabel.split, "{name}: the split is kept");
        assert!(row_of(retitled.product_id)
            .unwrap()
            .designation
            .ends_with("(revu)"));
        assert!(
            parent_rows
                .iter()
                .all(|row| row_of(row.product_id).is_some()),
            "{name}: a derived version keeps every row of its parent"
        );
        assert!(
            rows.len() > parent_rows.len(),
            "{name}: the later import adds rows"
        );

        // The decisions are used: deriving again finds nothing new from reviews, and the same
        // imported rows give the same version.
        let again = derive(database, &objects, &parent.id).await;
        assert_eq!(again.decisions_marked, 0, "{name}");
        assert_eq!(again.reviewed_relabelled, 0, "{name}");
        assert_eq!(again.imported_rows, derived.imported_rows, "{name}");
        println!(
            "{name} derived {} {}",
            derived.version.id,
            serde_json::to_string(&derived).unwrap()
        );
    }
}
