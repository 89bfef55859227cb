//! Test support shared by the tests of the crates above (jobs, server, command line): a platform over a given database
//! with a small model trained on a generated catalogue and promoted to champion, so tests never
//! need anything but a plain machine.

use std::path::Path;

use prodcat_dataset::generate::{generate_catalogue, GenerateOptions};
use prodcat_dataset::{import_dataset, ImportOptions, ImportSource};
use prodcat_model::{BranchSelection, TrainOptions};
use prodcat_platform::Platform;

use crate::{run_training, TrainingRequest};
use prodcat_registry::ModelVersion;
use prodcat_storage::{Database, ObjectStorage};

/// A platform whose object store and generated data live in a temporary folder.
pub struct TestPlatform {
    pub platform: Platform,
    /// The dataset version the models are trained on.
    pub dataset: String,
    folder: tempfile::TempDir,
}

impl TestPlatform {
    /// Generates `products` catalogue rows (with images when `images`), imports them, and
    /// returns the platform. `model_dir` is where pretrained files are looked for.
    pub async fn new(database: Database, products: usize, images: bool, model_dir: &Path) -> Self {
        let folder = tempfile::tempdir().expect("create a temporary folder");
        let catalogue = folder.path().join("catalogue");
        generate_catalogue(
            &catalogue,
            &GenerateOptions {
                products,
                seed: 7,
                images,
            },
            &|_| {},
        )
        .expect("generate the demo catalogue");
        let objects = ObjectStorage::open(
            folder
                .path()
                .join("objects")
                .to_str()
                .expect("utf-8 temporary path"),
        )
        .expect("open the object store");
        let source = ImportSource::detect(&catalogue).expect("detect the catalogue layout");
        let outcome = import_dataset(&database, &objects, &source, &ImportOptions::default(), &())
            .await
            .expect("import the generated catalogue");
        let dataset = outcome.version().id.to_string();
        Self {
            platform: Platform::new(database, objects, model_dir),
            dataset,
            folder,
        }
    }

    /// A predictor following the champion, logging nothing (what a worker uses).
    pub fn predictor(&self) -> prodcat_platform::Predictor {
        let models = std::sync::Arc::new(prodcat_platform::ModelService::new(
            self.platform.clone(),
            prodcat_registry::CHAMPION,
        ));
        prodcat_platform::Predictor::new(models, None)
    }

    /// The temporary folder (for extra files a test needs).
    pub fn folder(&self) -> &Path {
        self.folder.path()
    }

    /// Trains a model (text only, or fused with images) with the text SVM's `c`, and registers
    /// it. Different `c` values give different versions.
    pub async fn train(&self, branches: BranchSelection, c: f64) -> ModelVersion {
        let mut options = TrainOptions {
            branches,
            ..TrainOptions::default()
        };
        options.text.svm.c = c;
        options.head.max_epochs = 30;
        let result = run_training(
            &self.platform,
            &TrainingRequest {
                dataset: self.dataset.clone(),
                options,
                name: "test model".to_string(),
            },
            &(),
        )
        .await
        .expect("train a test model");
        result.version
    }

    /// Points `champion` at `version` (by force when a champion exists).
    pub async fn make_champion(&self, version: &ModelVersion) {
        prodcat_registry::force_promote(
            &self.platform.database,
            prodcat_registry::CHAMPION,
            version.id.as_str(),
            "test",
            "test setup",
        )
        .await
        .expect("promote the test model");
    }

    /// Trains a text model and makes it the champion.
    pub async fn with_text_champion(database: Database, products: usize) -> (Self, ModelVersion) {
        let platform = Self::new(database, products, false, Path::new("/nonexistent")).await;
        let version = platform.train(BranchSelection::Text, 0.5).await;
        platform.make_champion(&version).await;
        (platform, version)
    }
}
