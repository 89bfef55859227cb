//! The sentence embedding as companion features of the text branch, through the training and
//! the classifier: chosen, stored, needed at prediction time, and the same answers whether the
//! vectors come from the training's cache or from the classifier's own embedder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prodcat_dataset::generate::{generate_catalogue, GenerateOptions};
use prodcat_dataset::{import_dataset, load_rows, ImportOptions, ImportSource, Split};
use prodcat_domain::product_text;
use prodcat_embed::TextEmbedder;
use prodcat_model::{
    load_bundle, BranchSelection, ModelError, ProductClassifier, ProductInput, TrainOptions,
    Trainer, TrainingResources,
};
use prodcat_storage::{testing, ObjectStorage};

fn e5_dir() -> Option<PathBuf> {
    let root = std::env::var("PRODCAT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let dir = prodcat_embed::model_directory::e5_directory(&root);
    dir.join("manifest.json").is_file().then_some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_branch_with_the_sentence_embedding_trains_stores_and_serves() {
    let Some(directory) = e5_dir() else {
        eprintln!("skipped: multilingual-e5-small is not installed (run scripts/setup)");
        return;
    };
    let embedder = Arc::new(TextEmbedder::load(&directory).unwrap());
    let folder = tempfile::tempdir().unwrap();
    generate_catalogue(
        &folder.path().join("catalogue"),
        &GenerateOptions {
            products: 300,
            seed: 5,
            images: false,
        },
        &|_| {},
    )
    .unwrap();
    let database = testing::sqlite_database().await;
    let objects = ObjectStorage::open(folder.path().join("objects").to_str().unwrap()).unwrap();
    let source = ImportSource::detect(&folder.path().join("catalogue")).unwrap();
    let imported = import_dataset(
        &database.database,
        &objects,
        &source,
        &ImportOptions::default(),
        &(),
    )
    .await
    .unwrap();
    let dataset = imported.version().id.clone();
    let resources = TrainingResources {
        database: &database.database,
        objects: &objects,
        backbone: None,
        embedder: Some(&embedder),
    };

    // Asked for, without the embedder: a clear error, nothing trained.
    let mut options = TrainOptions {
        branches: BranchSelection::Text,
        text_embeddings: true,
        ..TrainOptions::default()
    };
    let without = Trainer::new(
        TrainingResources {
            embedder: None,
            ..resources
        },
        &options,
    )
    .train(&dataset)
    .await;
    assert!(matches!(without, Err(ModelError::TextEmbedderUnavailable)));

    // Every candidate scale is scored by cross-validation and one is recorded.
    let chosen = Trainer::new(resources, &options)
        .train(&dataset)
        .await
        .unwrap();
    for scale in ["0", "1", "2", "3"] {
        let key = format!("text.companion_scale_{scale}_weighted_f1");
        let score = chosen.metrics.get(&key).copied().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&score), "{key}: {score}");
    }
    assert!(chosen.metrics.contains_key("text.companion_scale"));
    assert_eq!(
        chosen.bundle.manifest.parameters["textEmbeddings"],
        serde_json::json!(true)
    );

    // With one scale the companion is taken: the bundle needs the embedder to answer.
    options.companion_scales = vec![2.0];
    let outcome = Trainer::new(resources, &options)
        .train(&dataset)
        .await
        .unwrap();
    let system = outcome.evaluation.system().unwrap();
    assert!(
        system.weighted_f1 > 0.7,
        "weighted F1 {}",
        system.weighted_f1
    );
    let version = outcome.bundle.version().unwrap();
    let bundle = load_bundle(&objects, &version).await.unwrap();
    let companion = bundle.text.as_ref().unwrap().companion().unwrap().clone();
    assert_eq!(companion.scale, 2.0);
    assert_eq!(companion.source, embedder.model_id());
    assert_eq!(companion.dimension, embedder.dimension());

    let bare = ProductClassifier::new(bundle, None).unwrap();
    assert_eq!(bare.text_embedder_needed(), Some(embedder.model_id()));
    let rows = load_rows(&database.database, &dataset, Some(Split::Test))
        .await
        .unwrap();
    let row = &rows[0];
    let input = ProductInput {
        designation: &row.designation,
        description: &row.description,
        image: None,
    };
    assert!(matches!(
        bare.predict(&input, false),
        Err(ModelError::TextEmbedderUnavailable)
    ));
    let classifier = bare.with_text_embedder(embedder.clone()).unwrap();
    let prediction = classifier.predict(&input, true).unwrap();
    let explanation = prediction.explanation.as_ref().unwrap();
    assert!(explanation.companion_contribution != 0.0);

    // The classifier's own embedding gives the answers the training's cached vectors gave.
    let text = product_text(&row.designation, &row.description);
    let cached =
        prodcat_model::companion_vectors(&objects, &embedder, std::slice::from_ref(&text), &|_| {})
            .await
            .unwrap();
    let from_cache = classifier
        .text_probabilities_with(&text, cached.get(&text).map(Vec::as_slice))
        .unwrap()
        .unwrap();
    let own = prediction.text_probabilities.unwrap();
    for (a, b) in from_cache.iter().zip(&own) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}
