//! Deriving a version from a parent, later imports and review decisions, on every available SQL
//! backend.

use std::path::Path;

use prodcat_dataset::generate::{generate_catalogue, GenerateOptions};
use prodcat_dataset::{
    derive_version, import_dataset, load_rows, DatasetRow, DeriveOptions, DeriveOutcome,
    ImportOptions, ImportSource, ReviewedLabel,
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

/// A reviewer's label for `row`'s product (with a new title when `retitle`).
fn review(row: &DatasetRow, category: CategoryCode, retitle: bool) -> ReviewedLabel {
    let designation = if retitle {
        format!("{} (revu)", row.designation)
    } else {
        row.designation.clone()
    };
    ReviewedLabel {
        product_id: row.product_id,
        category,
        designation,
        description: row.description.clone(),
        image_hash: row.image_hash.clone(),
    }
}

/// Derives from `parent` with the default options and these reviewers' labels.
async fn derive(
    database: &Database,
    objects: &ObjectStorage,
    parent: &DatasetVersionId,
    reviewed: Vec<ReviewedLabel>,
) -> DeriveOutcome {
    derive_version(
        database,
        objects,
        parent.as_str(),
        &DeriveOptions {
            reviewed,
            ..DeriveOptions::default()
        },
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
        let unchanged = derive(database, &objects, &parent.id, Vec::new()).await;
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
        let confirmed = &parent_rows[1];
        let retitled = &parent_rows[2];
        let labels = vec![
            review(relabel, other, false),
            review(confirmed, confirmed.category.unwrap(), false),
            review(retitled, retitled.category.unwrap(), true),
        ];

        let derived = derive(database, &objects, &parent.id, labels.clone()).await;
        assert!(derived.created, "{name}");
        assert_eq!(derived.parent, parent.id, "{name}");
        assert_eq!(derived.reviewed_unchanged, 1, "{name}");
        assert_eq!(derived.reviewed_relabelled, 2, "{name}");
        assert_eq!(derived.imported_versions.len(), 1, "{name}");
        assert!(derived.imported_rows > 0, "{name}");
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

        // The same labels and imports give the same version; without the labels (once the
        // catalogue marked them used) only the imported rows remain.
        let again = derive(database, &objects, &parent.id, labels).await;
        assert_eq!(again.version.id, derived.version.id, "{name}");
        assert!(!again.created, "{name}");
        let without = derive(database, &objects, &parent.id, Vec::new()).await;
        assert_eq!(without.reviewed_relabelled, 0, "{name}");
        assert_eq!(without.imported_rows, derived.imported_rows, "{name}");
        println!(
            "{name} derived {} {}",
            derived.version.id,
            serde_json::to_string(&derived).unwrap()
        );
    }
}
