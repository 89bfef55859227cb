//! Dense companion features beside the n-grams: they are learnt from, scored, explained,
//! stored, and refused when they do not fit the model.

use prodcat_domain::{CategoryCode, SplitMix64};
use prodcat_text_model::{DenseCompanion, TextClassifier, TextClassifierOptions, TextModelError};

const DIMENSION: usize = 8;

/// Texts that say nothing about their class (the same few words everywhere) and dense vectors
/// that do (a noisy one-hot of the class): only the companion can tell the classes apart.
fn corpus(per_class: usize, seed: u64) -> (Vec<String>, Vec<Vec<f32>>, Vec<CategoryCode>) {
    let codes = [10u16, 40, 50, 2583];
    let words = ["produit", "neuf", "lot", "couleur", "taille", "garantie"];
    let mut random = SplitMix64::new(seed);
    let mut texts = Vec::new();
    let mut dense = Vec::new();
    let mut labels = Vec::new();
    for (class, &code) in codes.iter().enumerate() {
        for _ in 0..per_class {
            let text: Vec<&str> = (0..4)
                .map(|_| words[random.next_index(words.len())])
                .collect();
            texts.push(text.join(" "));
            let vector: Vec<f32> = (0..DIMENSION)
                .map(|column| {
                    let noise = (random.next_index(1000) as f32 / 1000.0 - 0.5) * 0.4;
                    if column == class {
                        1.0 + noise
                    } else {
                        noise
                    }
                })
                .collect();
            dense.push(vector);
            labels.push(CategoryCode::from_u16(code).unwrap());
        }
    }
    (texts, dense, labels)
}

fn options(scale: f32) -> TextClassifierOptions {
    let mut options = TextClassifierOptions::default();
    options.vectorizer.word.min_df = prodcat_text_model::DocumentFrequency::Count(1);
    options.vectorizer.char_wb.min_df = prodcat_text_model::DocumentFrequency::Count(1);
    options.companion = Some(DenseCompanion {
        source: "test-vectors".into(),
        dimension: DIMENSION,
        scale,
    });
    options
}

fn rows(dense: &[Vec<f32>]) -> Vec<&[f32]> {
    dense.iter().map(Vec::as_slice).collect()
}

fn accuracy(
    model: &TextClassifier,
    texts: &[String],
    dense: Option<&[&[f32]]>,
    labels: &[CategoryCode],
) -> f64 {
    let k = model.categories().len();
    let scores = model.decision_matrix_with_companion(texts, dense).unwrap();
    let right = scores
        .chunks_exact(k)
        .zip(labels)
        .filter(|(row, label)| {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(index, _)| index)
                .unwrap();
            model.categories()[best] == **label
        })
        .count();
    right as f64 / texts.len() as f64
}

#[test]
fn the_companion_features_are_learnt_when_the_text_says_nothing() {
    let (texts, dense, labels) = corpus(40, 1);
    let model =
        TextClassifier::fit_with_companion(&texts, &rows(&dense), &labels, &options(1.0)).unwrap();
    assert_eq!(model.companion().unwrap().dimension, DIMENSION);
    let (new_texts, new_dense, new_labels) = corpus(30, 99);
    let with = accuracy(&model, &new_texts, Some(&rows(&new_dense)), &new_labels);
    let without = accuracy(&model, &new_texts, None, &new_labels);
    assert!(with >= 0.95, "accuracy with the companion features {with}");
    assert!(
        without <= 0.5,
        "accuracy from the uninformative words alone {without}"
    );
    // The same texts without the companion cannot be learnt beyond chance.
    let mut text_options = options(1.0);
    text_options.companion = None;
    let text_only = TextClassifier::fit(&texts, &labels, &text_options).unwrap();
    assert!(accuracy(&text_only, &new_texts, None, &new_labels) <= 0.5);
}

#[test]
fn explanations_add_up_with_the_companion_contribution() {
    let (texts, dense, labels) = corpus(20, 2);
    let model =
        TextClassifier::fit_with_companion(&texts, &rows(&dense), &labels, &options(2.0)).unwrap();
    for (text, vector) in texts.iter().zip(&dense).step_by(7) {
        let scores = model
            .decision_values_with_companion(text, Some(vector))
            .unwrap();
        for (class, &category) in model.categories().iter().enumerate() {
            let explanation = model
                .explain_with_companion(text, Some(vector), category, usize::MAX)
                .unwrap();
            let listed: f32 = explanation.terms.iter().map(|t| t.contribution).sum();
            let total = explanation.intercept
                + listed
                + explanation.remaining_contribution
                + explanation.companion_contribution;
            assert!(
                (total - scores[class]).abs() < 1e-4,
                "{total} vs {}",
                scores[class]
            );
            assert!((explanation.decision_value - scores[class]).abs() < 1e-4);
        }
    }
}

#[test]
fn a_model_with_a_companion_round_trips_through_its_file() {
    let (texts, dense, labels) = corpus(15, 3);
    let mut model =
        TextClassifier::fit_with_companion(&texts, &rows(&dense), &labels, &options(1.5)).unwrap();
    model
        .calibrate_with_companion(&texts, Some(&rows(&dense)), &labels)
        .unwrap();
    let bytes = model.to_bytes();
    let loaded = TextClassifier::from_bytes(&bytes).unwrap();
    assert_eq!(loaded.to_bytes(), bytes);
    assert_eq!(loaded.companion(), model.companion());
    for (text, vector) in texts.iter().zip(&dense) {
        assert_eq!(
            loaded
                .decision_values_with_companion(text, Some(vector))
                .unwrap(),
            model
                .decision_values_with_companion(text, Some(vector))
                .unwrap()
        );
    }
}

#[test]
fn companion_features_that_do_not_fit_are_refused_with_the_reason() {
    let (texts, dense, labels) = corpus(10, 4);
    let model =
        TextClassifier::fit_with_companion(&texts, &rows(&dense), &labels, &options(1.0)).unwrap();
    let short = vec![0.5f32; DIMENSION - 1];
    let error = model
        .decision_values_with_companion(&texts[0], Some(&short))
        .unwrap_err();
    assert!(matches!(error, TextModelError::Companion { .. }));
    assert!(
        error.to_string().contains("7 values, expected 8"),
        "{error}"
    );
    let mut not_finite = dense[0].clone();
    not_finite[3] = f32::NAN;
    assert!(matches!(
        model.decision_values_with_companion(&texts[0], Some(&not_finite)),
        Err(TextModelError::Companion { .. })
    ));
    // Options naming a companion need its features, and features need options naming them.
    assert!(matches!(
        TextClassifier::fit(&texts, &labels, &options(1.0)),
        Err(TextModelError::Companion { .. })
    ));
    assert!(matches!(
        TextClassifier::fit_with_companion(
            &texts,
            &rows(&dense),
            &labels,
            &TextClassifierOptions::default()
        ),
        Err(TextModelError::InvalidOption { .. })
    ));
    assert!(matches!(
        TextClassifier::fit_with_companion(&texts, &rows(&dense), &labels, &options(-1.0)),
        Err(TextModelError::InvalidOption { .. })
    ));
    assert!(matches!(
        TextClassifier::fit_with_companion(&texts, &rows(&dense[1..]), &labels[..], &options(1.0)),
        Err(TextModelError::Companion { .. })
    ));
}
