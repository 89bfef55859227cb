//! Shared test helpers: a small deterministic embedder (hashed character trigrams, so tests of
//! the semantic machinery run without model files), generated catalogues, and the locations of
//! the optional real sample and model files.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prodcat_dataset::generate::{category_plan, generate_product};
use prodcat_domain::CategoryCode;
use prodcat_search::{folded_tokens, SearchDocument, SentenceEmbedder};

/// Embeds a text as the L2-normalised counts of its hashed character trigrams (word-bounded,
/// accents folded). Texts sharing word fragments get close vectors: a weak but real embedder,
/// enough to exercise ranking, fusion and persistence.
pub struct TrigramEmbedder {
    pub dimension: usize,
    pub passages_embedded: AtomicUsize,
    pub model_id: String,
}

impl TrigramEmbedder {
    pub fn new(dimension: usize) -> Arc<Self> {
        Arc::new(Self {
            dimension,
            passages_embedded: AtomicUsize::new(0),
            model_id: format!("trigram-{dimension}"),
        })
    }

    pub fn embedded(&self) -> usize {
        self.passages_embedded.load(Ordering::SeqCst)
    }

    fn vector(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0.0f32; self.dimension];
        for word in folded_tokens(text) {
            let padded: Vec<char> = format!(" {word} ").chars().collect();
            for window in padded.windows(3) {
                let mut hash: u64 = 0xcbf29ce484222325;
                for c in window {
                    hash ^= *c as u64;
                    hash = hash.wrapping_mul(0x100000001b3);
                }
                vector[(hash % self.dimension as u64) as usize] += 1.0;
            }
        }
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|v| *v /= norm);
        } else {
            vector[0] = 1.0;
        }
        vector
    }
}

impl SentenceEmbedder for TrigramEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed_query(&self, text: &str) -> Vec<f32> {
        self.vector(text)
    }

    fn embed_passages(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        self.passages_embedded
            .fetch_add(texts.len(), Ordering::SeqCst);
        texts.iter().map(|text| self.vector(text)).collect()
    }
}

/// A document with text only.
pub fn document(
    product_id: i64,
    designation: &str,
    description: &str,
    category: u16,
) -> SearchDocument {
    SearchDocument {
        product_id,
        designation: designation.to_string(),
        description: description.to_string(),
        category: Some(CategoryCode::from_u16(category).expect("valid category")),
        image_features: None,
        popularity: 0.0,
    }
}

/// `count` generated products with the real category proportions.
pub fn generated_documents(count: usize, seed: u64) -> Vec<SearchDocument> {
    category_plan(count, seed)
        .into_iter()
        .enumerate()
        .map(|(index, category)| {
            let product = generate_product(index, category, seed);
            SearchDocument {
                product_id: product.product_id,
                designation: product.designation,
                description: product.description,
                category: Some(product.category),
                image_features: None,
                popularity: ((index * 7919) % 1000) as f64,
            }
        })
        .collect()
}

/// The real sample directory, or `None` after printing why the test is skipped.
pub fn sample_directory(test: &str) -> Option<PathBuf> {
    match std::env::var_os("PRODCAT_SAMPLE_DATA") {
        Some(path)
            if PathBuf::from(&path)
                .join("text/X_train_sample.csv")
                .is_file() =>
        {
            Some(PathBuf::from(path))
        }
        _ => {
            println!(
                "skipped: {test}: PRODCAT_SAMPLE_DATA is not set to the real sample directory"
            );
            None
        }
    }
}

/// The e5 model directory, or `None` after printing why the test is skipped.
pub fn e5_directory(test: &str) -> Option<PathBuf> {
    let model_root = std::env::var_os("PRODCAT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let directory = prodcat_embed::model_directory::e5_directory(&model_root);
    if directory
        .join(prodcat_embed::model_directory::MODEL_FILE_NAME)
        .is_file()
    {
        Some(directory)
    } else {
        println!(
            "skipped: {test}: no multilingual-e5-small model in {} (run scripts/models/fetch-e5.py or set PRODCAT_MODEL_DIR)",
            directory.display()
        );
        None
    }
}

/// Reads the real sample's training rows with their labels.
pub fn sample_documents(directory: &std::path::Path) -> anyhow::Result<Vec<SearchDocument>> {
    use anyhow::Context;
    let mut labels = std::collections::HashMap::new();
    let mut reader = csv::Reader::from_path(directory.join("text/Y_train_sample.csv"))
        .context("failed to open Y_train_sample.csv")?;
    for record in reader.records() {
        let record = record?;
        labels.insert(record[0].to_string(), CategoryCode::parse(&record[1])?);
    }
    let mut reader = csv::Reader::from_path(directory.join("text/X_train_sample.csv"))
        .context("failed to open X_train_sample.csv")?;
    let mut documents = Vec::new();
    for (position, record) in reader.records().enumerate() {
        let record = record?;
        documents.push(SearchDocument {
            product_id: record[3].trim().parse().context("bad productid")?,
            designation: record[1].to_string(),
            description: record[2].to_string(),
            category: labels.get(&record[0]).copied(),
            image_features: None,
            popularity: (position % 97) as f64,
        });
    }
    Ok(documents)
}
