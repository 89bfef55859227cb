//! The reference pipeline on the real labelled sample (`$PRODCAT_SAMPLE_DATA/text`): every fifth
//! row held out, the rest trained on; the weighted F1 must be within 0.01 of scikit-learn's on the
//! same split (0.71013, 155,781 features, measured with `bench/compare_sklearn.py`'s pipeline).

use std::path::Path;

use prodcat_domain::{product_text, CategoryCode};
use prodcat_metrics::classification_report;
use prodcat_text_model::{TextClassifier, TextClassifierOptions};

const SCIKIT_LEARN_WEIGHTED_F1: f64 = 0.7101281778992307;
const SCIKIT_LEARN_FEATURES: usize = 155_781;

fn read_sample(root: &Path) -> anyhow::Result<(Vec<String>, Vec<CategoryCode>)> {
    let mut labels = std::collections::HashMap::new();
    for record in csv::Reader::from_path(root.join("text/Y_train_sample.csv"))?.records() {
        let record = record?;
        labels.insert(record[0].to_string(), CategoryCode::parse(&record[1])?);
    }
    let mut texts = Vec::new();
    let mut codes = Vec::new();
    for record in csv::Reader::from_path(root.join("text/X_train_sample.csv"))?.records() {
        let record = record?;
        if let Some(&code) = labels.get(&record[0]) {
            texts.push(product_text(&record[1], &record[2]));
            codes.push(code);
        }
    }
    Ok((texts, codes))
}

#[test]
fn matches_scikit_learn_on_the_real_sample() -> anyhow::Result<()> {
    let Ok(root) = std::env::var("PRODCAT_SAMPLE_DATA") else {
        eprintln!("skipped: PRODCAT_SAMPLE_DATA is not set (real-sample text model test)");
        return Ok(());
    };
    let (texts, labels) = read_sample(Path::new(&root))?;
    assert_eq!(texts.len(), 2682);
    let (mut train_texts, mut train_labels, mut test_texts, mut test_labels) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (index, (text, label)) in texts.iter().zip(&labels).enumerate() {
        if index % 5 == 0 {
            test_texts.push(text.as_str());
            test_labels.push(*label);
        } else {
            train_texts.push(text.as_str());
            train_labels.push(*label);
        }
    }
    let mut model = TextClassifier::fit(
        &train_texts,
        &train_labels,
        &TextClassifierOptions::default(),
    )?;
    assert_eq!(model.vectorizer().feature_count(), SCIKIT_LEARN_FEATURES);
    assert!(
        model.svm().converged(),
        "iterations {:?}",
        model.svm().iterations()
    );
    let predicted = model.predict_categories(&test_texts);
    let truth: Vec<usize> = test_labels.iter().map(|c| c.index()).collect();
    let predicted: Vec<usize> = predicted.iter().map(|c| c.index()).collect();
    let f1 = classification_report(&truth, &predicted, 27)?.weighted_f1;
    assert!(
        (f1 - SCIKIT_LEARN_WEIGHTED_F1).abs() <= 0.01,
        "weighted F1 {f1} vs scikit-learn {SCIKIT_LEARN_WEIGHTED_F1}"
    );
    let report = model.calibrate(&test_texts, &test_labels)?;
    assert!(report.negative_log_likelihood_after <= report.negative_log_likelihood_before);
    assert!(
        report.expected_calibration_error_after < report.expected_calibration_error_before,
        "{report:?}"
    );
    assert!(report.expected_calibration_error_after < 0.15);
    Ok(())
}
