//! Behaviour of the fitted model on generated data: determinism, the file format and its damage
//! handling, bad input, explanations, calibration and option validation.

mod common;

use prodcat_domain::CategoryCode;
use prodcat_text_model::{
    ClassWeighting, DocumentFrequency, SvmOptions, TextClassifier, TextClassifierOptions,
    TextModelError, TfidfOptions, FORMAT_VERSION,
};

fn small_model() -> TextClassifier {
    let (texts, labels) = common::generated_corpus(5, 30, 11);
    TextClassifier::fit(&texts, &labels, &TextClassifierOptions::default()).unwrap()
}

fn fit_in_pool(threads: usize, texts: &[String], labels: &[CategoryCode]) -> Vec<u8> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        TextClassifier::fit(texts, labels, &TextClassifierOptions::default())
            .unwrap()
            .to_bytes()
    })
}

#[test]
fn training_is_bit_identical_whatever_the_thread_count() {
    let (texts, labels) = common::generated_corpus(6, 40, 3);
    let one = fit_in_pool(1, &texts, &labels);
    let two = fit_in_pool(2, &texts, &labels);
    let three = fit_in_pool(3, &texts, &labels);
    assert!(
        one == two && two == three,
        "model bytes differ between thread counts"
    );
}

#[test]
fn another_seed_still_reaches_the_same_optimum() {
    let (texts, labels) = common::generated_corpus(4, 25, 5);
    let mut options = TextClassifierOptions::default();
    options.svm.tolerance = 1e-8;
    options.svm.max_iterations = 100_000;
    let first = TextClassifier::fit(&texts, &labels, &options).unwrap();
    options.svm.seed = 99;
    let second = TextClassifier::fit(&texts, &labels, &options).unwrap();
    assert_ne!(
        first.to_bytes(),
        second.to_bytes(),
        "the seed changes the visiting order"
    );
    for text in texts.iter().take(20) {
        for (a, b) in first
            .decision_values(text)
            .iter()
            .zip(second.decision_values(text))
        {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }
}

#[test]
fn file_round_trip_is_exact_and_deterministic() {
    let model = small_model();
    let bytes = model.to_bytes();
    let loaded = TextClassifier::from_bytes(&bytes).unwrap();
    assert_eq!(
        loaded.to_bytes(),
        bytes,
        "saving a loaded model gives the same bytes"
    );
    let (texts, _) = common::generated_corpus(5, 10, 77);
    assert_eq!(
        loaded.predict_batch(&texts, 5),
        model.predict_batch(&texts, 5)
    );
    let dir = std::env::temp_dir().join(format!("prodcat-text-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.bin");
    model.save(&path).unwrap();
    assert_eq!(TextClassifier::load(&path).unwrap().to_bytes(), bytes);
    std::fs::remove_dir_all(&dir).ok();
    assert!(matches!(
        TextClassifier::load(&dir.join("missing.bin")),
        Err(TextModelError::Io { .. })
    ));
}

#[test]
fn damaged_files_give_errors_not_panics() {
    let bytes = small_model().to_bytes();
    // Every truncation (sampled densely near the start and the end).
    let cut_points: Vec<usize> = (0..64)
        .chain((64..bytes.len()).step_by(97))
        .chain(bytes.len() - 64..bytes.len())
        .collect();
    for cut in cut_points {
        assert!(
            TextClassifier::from_bytes(&bytes[..cut]).is_err(),
            "a file cut at {cut} of {} bytes loaded",
            bytes.len()
        );
    }
    // Flipped bytes anywhere are caught by the checksum or the structure checks.
    for position in (0..bytes.len()).step_by(131) {
        let mut damaged = bytes.clone();
        damaged[position] ^= 0x5a;
        assert!(
            TextClassifier::from_bytes(&damaged).is_err(),
            "flip at {position} loaded"
        );
    }
    let mut wrong_magic = bytes.clone();
    wrong_magic[0] = b'X';
    assert!(matches!(
        TextClassifier::from_bytes(&wrong_magic),
        Err(TextModelError::NotAModelFile { .. })
    ));
    let mut future = bytes.clone();
    future[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert!(matches!(
        TextClassifier::from_bytes(&future),
        Err(TextModelError::UnsupportedFormatVersion { .. })
    ));
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(TextClassifier::from_bytes(&extra).is_err());
    assert!(TextClassifier::from_bytes(&[]).is_err());
}

#[test]
fn empty_and_unknown_text_score_by_intercepts_alone() {
    let model = small_model();
    for text in ["", "   ", "!!! ??? ...", "\u{0}\u{1}\u{7f}"] {
        let prediction = model.predict(text, 5);
        assert_eq!(prediction.known_feature_count, 0, "{text:?}");
        let intercepts = model.svm().intercepts();
        let best = (0..intercepts.len()).fold(0, |best, class| {
            if intercepts[class] > intercepts[best] {
                class
            } else {
                best
            }
        });
        assert_eq!(prediction.category, model.categories()[best]);
        assert_eq!(model.decision_values(text), intercepts);
        assert_eq!(prediction.top.len(), 5);
    }
}

#[test]
fn a_one_megabyte_text_is_classified() {
    let model = small_model();
    let (texts, _) = common::generated_corpus(5, 4, 1);
    let mut huge = String::new();
    while huge.len() < 1 << 20 {
        huge.push_str(&texts[huge.len() % texts.len()]);
        huge.push_str(" é\u{301}日本 ");
    }
    let prediction = model.predict(&huge, 3);
    assert!(prediction.known_feature_count > 0);
    assert!(prediction.probability.is_finite());
    let single_word: String = "a".repeat(1 << 20);
    assert!(model.predict(&single_word, 1).probability.is_finite());
}

#[test]
fn top_k_is_sorted_and_probabilities_sum_to_one() {
    let mut model = small_model();
    let (texts, labels) = common::generated_corpus(5, 12, 404);
    let report = model.calibrate(&texts, &labels).unwrap();
    assert!(report.negative_log_likelihood_after <= report.negative_log_likelihood_before + 1e-12);
    assert!((model.calibration().temperature - report.temperature).abs() < 1e-12);
    for text in &texts {
        let prediction = model.predict(text, 50);
        assert_eq!(prediction.top.len(), model.categories().len());
        let sum: f32 = prediction.top.iter().map(|s| s.probability).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
        assert!(prediction
            .top
            .windows(2)
            .all(|pair| pair[0].decision_value >= pair[1].decision_value));
        assert_eq!(prediction.category, prediction.top[0].category);
    }
    let unknown = CategoryCode::from_u16(2905).unwrap();
    assert!(matches!(
        model.calibrate(&["x"], &[unknown]),
        Err(TextModelError::UnknownCategory(_))
    ));
}

#[test]
fn explanations_add_up_to_the_decision_value() {
    let model = small_model();
    let (texts, _) = common::generated_corpus(5, 3, 8);
    for text in &texts {
        let scores = model.decision_values(text);
        for (class, &category) in model.categories().iter().enumerate() {
            let full = model.explain(text, category, usize::MAX).unwrap();
            let sum: f32 = full.intercept + full.terms.iter().map(|t| t.contribution).sum::<f32>();
            assert!(
                (sum - scores[class]).abs() < 1e-4,
                "{sum} vs {}",
                scores[class]
            );
            assert!((full.decision_value - scores[class]).abs() < 1e-4);
            let short = model.explain(text, category, 3).unwrap();
            assert!(short.terms.len() <= 3);
            assert!(short
                .terms
                .windows(2)
                .all(|p| p[0].contribution >= p[1].contribution));
            let listed: f32 = short.terms.iter().map(|t| t.contribution).sum();
            assert!(
                (short.intercept + listed + short.remaining_contribution - scores[class]).abs()
                    < 1e-4
            );
        }
    }
    let predicted = model.predict(&texts[0], 1).category;
    let explanation = model.explain(&texts[0], predicted, 5).unwrap();
    assert!(explanation.terms[0].contribution > 0.0);
    assert!(texts[0]
        .to_lowercase()
        .contains(explanation.terms[0].term.trim()));
}

#[test]
fn bad_training_input_is_refused_clearly() {
    let (texts, labels) = common::generated_corpus(3, 10, 2);
    let options = TextClassifierOptions::default();
    assert!(matches!(
        TextClassifier::fit(&texts, &labels[1..], &options),
        Err(TextModelError::LabelCountMismatch { .. })
    ));
    assert!(matches!(
        TextClassifier::fit::<&str>(&[], &[], &options),
        Err(TextModelError::EmptyCorpus)
    ));
    let one_class = vec![labels[0]; texts.len()];
    assert!(matches!(
        TextClassifier::fit(&texts, &one_class, &options),
        Err(TextModelError::TooFewClasses { found: 1 })
    ));
    let mut bad = options.clone();
    bad.svm.c = 0.0;
    assert!(matches!(
        TextClassifier::fit(&texts, &labels, &bad),
        Err(TextModelError::InvalidOption { name: "c", .. })
    ));
    let mut bad = options.clone();
    bad.vectorizer.word.ngram_range = (0, 2);
    assert!(matches!(
        TextClassifier::fit(&texts, &labels, &bad),
        Err(TextModelError::InvalidOption {
            name: "ngram_range",
            ..
        })
    ));
    let mut bad = options.clone();
    bad.vectorizer.word.min_df = DocumentFrequency::Count(1000);
    let error = TextClassifier::fit(&texts, &labels, &bad).unwrap_err();
    assert!(
        matches!(error, TextModelError::InvalidOption { name: "max_df", .. }),
        "{error}"
    );
    let mut bad = options.clone();
    bad.vectorizer.word.max_df = DocumentFrequency::Proportion(1.0);
    bad.vectorizer.word.min_df = DocumentFrequency::Count(25);
    let error = TextClassifier::fit(&texts, &labels, &bad).unwrap_err();
    assert!(
        matches!(error, TextModelError::NoTermsRemain { block: "word", .. }),
        "{error}"
    );
    // Texts without a single word token.
    let punctuation = vec!["! ?"; 6];
    let mixed: Vec<CategoryCode> = (0..6).map(|i| labels[i * 5]).collect();
    let error = TextClassifier::fit(&punctuation, &mixed, &options).unwrap_err();
    assert!(error.to_string().contains("no terms"), "{error}");
}

#[test]
fn balanced_weights_and_two_classes_work() {
    // Imbalanced: 40 of the first class, 8 of the second, 8 of the third.
    let (texts, labels) = common::generated_corpus(3, 40, 21);
    let keep: Vec<usize> = (0..texts.len()).filter(|i| i % 40 < 8 || *i < 40).collect();
    let texts: Vec<&str> = keep.iter().map(|&i| texts[i].as_str()).collect();
    let labels: Vec<CategoryCode> = keep.iter().map(|&i| labels[i]).collect();
    let uniform = TextClassifier::fit(&texts, &labels, &TextClassifierOptions::default()).unwrap();
    let mut options = TextClassifierOptions::default();
    options.svm.class_weighting = ClassWeighting::Balanced;
    let balanced = TextClassifier::fit(&texts, &labels, &options).unwrap();
    // The minority classes' intercepts rise relative to the majority's.
    let gap = |model: &TextClassifier| model.svm().intercepts()[1] - model.svm().intercepts()[0];
    assert!(
        gap(&balanced) > gap(&uniform),
        "{} vs {}",
        gap(&balanced),
        gap(&uniform)
    );

    let two: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i] != labels[labels.len() - 1])
        .collect();
    let texts2: Vec<&str> = two.iter().map(|&i| texts[i]).collect();
    let labels2: Vec<CategoryCode> = two.iter().map(|&i| labels[i]).collect();
    let binary = TextClassifier::fit(&texts2, &labels2, &TextClassifierOptions::default()).unwrap();
    assert_eq!(binary.categories().len(), 2);
    for text in &texts2 {
        let scores = binary.decision_values(text);
        assert!((scores[0] + scores[1]).abs() < 1e-6);
    }
    let correct = texts2
        .iter()
        .zip(&labels2)
        .filter(|(text, label)| binary.predict(text, 1).category == **label)
        .count();
    assert!(
        correct * 10 >= texts2.len() * 9,
        "{correct} of {}",
        texts2.len()
    );
}

#[test]
fn default_options_are_the_reference_pipeline() {
    let options = TextClassifierOptions::default();
    assert_eq!(options.vectorizer.word, TfidfOptions::reference_word());
    assert_eq!(options.vectorizer.word.max_features, Some(120_000));
    assert_eq!(options.vectorizer.char_wb.max_features, Some(160_000));
    assert_eq!(options.vectorizer.char_wb.ngram_range, (3, 5));
    assert_eq!(options.svm, SvmOptions::default());
    assert_eq!(options.svm.c, 0.5);
    let json = serde_json::to_string(&options).unwrap();
    let back: TextClassifierOptions = serde_json::from_str(&json).unwrap();
    assert_eq!(back, options);
}

#[test]
fn fit_transform_equals_fit_then_transform() {
    let (texts, _) = common::generated_corpus(5, 30, 17);
    let options = prodcat_text_model::VectorizerOptions::default();
    let (fitted, matrix) =
        prodcat_text_model::TextVectorizer::fit_transform(&texts, &options).unwrap();
    let refitted = prodcat_text_model::TextVectorizer::fit(&texts, &options).unwrap();
    assert_eq!(fitted.word().terms(), refitted.word().terms());
    assert_eq!(fitted.char_wb().terms(), refitted.char_wb().terms());
    assert_eq!(matrix, refitted.transform(&texts));
    for (row, text) in texts.iter().enumerate() {
        let single = fitted.transform_one(text);
        let (indices, values) = matrix.row(row);
        assert_eq!(single.indices, indices);
        assert_eq!(single.values, values);
    }
}
