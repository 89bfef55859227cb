//! Data-driven checks against numbers computed with scikit-learn 1.9 (`f1_score`,
//! `precision_recall_fscore_support`, `accuracy_score`, zero_division=0) and, for calibration,
//! scipy's bounded scalar minimiser on the same negative log-likelihood.

use prodcat_metrics::{
    classification_report, expected_calibration_error, negative_log_likelihood, ConfusionMatrix,
    MetricsError, TemperatureScaling, DEFAULT_CALIBRATION_BINS,
};

const TOLERANCE: f64 = 1e-12;

struct Expected {
    accuracy: f64,
    weighted_f1: f64,
    macro_f1: f64,
    weighted_precision: f64,
    macro_recall: f64,
    /// F1 of every class that occurs in truth or predictions, in class order.
    f1_of_present: &'static [f64],
}

fn check(truth: &[usize], predicted: &[usize], class_count: usize, expected: Expected) {
    let report = classification_report(truth, predicted, class_count).unwrap();
    let close = |name: &str, actual: f64, wanted: f64| {
        assert!(
            (actual - wanted).abs() < TOLERANCE,
            "{name}: got {actual}, scikit-learn says {wanted} (truth {truth:?}, predicted {predicted:?})"
        );
    };
    close("accuracy", report.accuracy, expected.accuracy);
    close("weighted F1", report.weighted_f1, expected.weighted_f1);
    close("macro F1", report.macro_f1, expected.macro_f1);
    close(
        "weighted precision",
        report.weighted_precision,
        expected.weighted_precision,
    );
    close("macro recall", report.macro_recall, expected.macro_recall);
    let present: Vec<f64> = report
        .per_class
        .iter()
        .filter(|m| m.support > 0 || m.predicted > 0)
        .map(|m| m.f1)
        .collect();
    assert_eq!(present.len(), expected.f1_of_present.len());
    for (actual, wanted) in present.iter().zip(expected.f1_of_present) {
        close("per-class F1", *actual, *wanted);
    }
}

#[test]
fn classification_metrics_match_scikit_learn() {
    check(
        &[0, 0, 0, 1, 1, 2, 2, 2, 2, 3],
        &[0, 1, 0, 1, 1, 2, 0, 2, 3, 0],
        4,
        Expected {
            accuracy: 0.6,
            weighted_f1: 0.5980952380952381,
            macro_f1: 0.5095238095238095,
            weighted_precision: 0.6833333333333333,
            macro_recall: 0.5416666666666666,
            f1_of_present: &[0.5714285714285714, 0.8, 0.6666666666666666, 0.0],
        },
    );
    check(
        &[0, 1, 2, 3, 0, 1, 2, 3, 3, 3, 1, 0],
        &[1, 1, 2, 2, 0, 3, 2, 2, 3, 1, 1, 0],
        4,
        Expected {
            accuracy: 0.5833333333333334,
            weighted_f1: 0.5650793650793651,
            macro_f1: 0.5928571428571429,
            weighted_precision: 0.625,
            macro_recall: 0.6458333333333333,
            f1_of_present: &[
                0.8,
                0.5714285714285714,
                0.6666666666666666,
                0.3333333333333333,
            ],
        },
    );
    // Class 1 occurs nowhere (left out of macro averages), class 3 is only predicted (F1 0),
    // class 4 exists in the label space only.
    check(
        &[2, 2, 2, 0, 0],
        &[2, 2, 0, 0, 3],
        5,
        Expected {
            accuracy: 0.6,
            weighted_f1: 0.68,
            macro_f1: 0.43333333333333335,
            weighted_precision: 0.8,
            macro_recall: 0.38888888888888884,
            f1_of_present: &[0.5, 0.8, 0.0],
        },
    );
}

#[test]
fn confusion_matrix_counts_rows_as_truth() {
    let report = classification_report(&[0, 0, 1, 2], &[0, 1, 1, 1], 3).unwrap();
    assert_eq!(
        report.confusion,
        ConfusionMatrix {
            class_count: 3,
            counts: vec![1, 1, 0, 0, 1, 0, 0, 1, 0]
        }
    );
    let json = serde_json::to_string(&report).unwrap();
    assert!(
        json.contains("\"weightedF1\""),
        "camelCase field names: {json}"
    );
    let back: prodcat_metrics::ClassificationReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn bad_inputs_are_reported() {
    assert_eq!(classification_report(&[], &[], 3), Err(MetricsError::Empty));
    assert!(matches!(
        classification_report(&[0, 1], &[0], 3),
        Err(MetricsError::LengthMismatch { .. })
    ));
    assert_eq!(
        classification_report(&[0, 7], &[0, 1], 3),
        Err(MetricsError::ClassOutOfRange {
            class: 7,
            position: 1,
            class_count: 3
        })
    );
    assert!(matches!(
        TemperatureScaling::fit(&[0.0, f64::NAN], 2, &[0]),
        Err(MetricsError::NotFinite { position: 1, .. })
    ));
    assert!(matches!(
        TemperatureScaling::fit(&[0.0, 1.0, 2.0], 2, &[0]),
        Err(MetricsError::LengthMismatch { .. })
    ));
}

const SCORES: [[f64; 3]; 12] = [
    [2.0, 0.3, -0.27],
    [-0.89, 1.55, -0.99],
    [0.06, 1.34, 1.51],
    [1.38, 0.49, 0.36],
    [0.11, 1.07, -0.03],
    [0.7, -1.34, 1.54],
    [0.1, -1.29, -1.84],
    [-0.24, 0.73, 0.27],
    [0.16, -0.19, -0.52],
    [-0.54, -0.05, 2.11],
    [-1.53, 1.52, -0.98],
    [1.19, 1.06, -0.81],
];
const LABELS: [usize; 12] = [0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 1, 0];

#[test]
fn temperature_and_ece_match_scipy() {
    let scores: Vec<f64> = SCORES.iter().flatten().copied().collect();
    let unscaled = negative_log_likelihood(&scores, 3, &LABELS, 1.0).unwrap();
    assert!((unscaled - 0.5117384287731163).abs() < 1e-12, "{unscaled}");
    let fitted = TemperatureScaling::fit(&scores, 3, &LABELS).unwrap();
    assert!(
        (fitted.temperature - 0.32887913630750487).abs() < 1e-6,
        "temperature {}",
        fitted.temperature
    );
    let nll = negative_log_likelihood(&scores, 3, &LABELS, fitted.temperature).unwrap();
    assert!((nll - 0.33341895699576213).abs() < 1e-10, "{nll}");

    let before = TemperatureScaling::identity().probability_matrix(&scores, 3);
    let after = fitted.probability_matrix(&scores, 3);
    let ece_before =
        expected_calibration_error(&before, 3, &LABELS, DEFAULT_CALIBRATION_BINS).unwrap();
    let ece_after =
        expected_calibration_error(&after, 3, &LABELS, DEFAULT_CALIBRATION_BINS).unwrap();
    assert!(
        (ece_before - 0.33963777603934636).abs() < 1e-12,
        "{ece_before}"
    );
    assert!(
        (ece_after - 0.16444455265103355).abs() < 1e-6,
        "{ece_after}"
    );
}
