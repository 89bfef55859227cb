//! Property tests: ranges, identities and guarantees that must hold for any input.

use prodcat_metrics::{
    classification_report, confusion_matrix_svg, negative_log_likelihood, reliability_diagram,
    reliability_diagram_svg, softmax, TemperatureScaling,
};
use proptest::prelude::*;

fn pairs() -> impl Strategy<Value = (usize, Vec<usize>, Vec<usize>)> {
    (1usize..8).prop_flat_map(|class_count| {
        (1usize..60).prop_flat_map(move |n| {
            (
                Just(class_count),
                proptest::collection::vec(0..class_count, n),
                proptest::collection::vec(0..class_count, n),
            )
        })
    })
}

fn scored() -> impl Strategy<Value = (usize, Vec<f64>, Vec<usize>)> {
    (2usize..6).prop_flat_map(|class_count| {
        (1usize..40).prop_flat_map(move |n| {
            (
                Just(class_count),
                proptest::collection::vec(-8.0f64..8.0, n * class_count),
                proptest::collection::vec(0..class_count, n),
            )
        })
    })
}

proptest! {
    #[test]
    fn scores_stay_in_unit_interval((class_count, truth, predicted) in pairs()) {
        let report = classification_report(&truth, &predicted, class_count).unwrap();
        for value in [report.accuracy, report.weighted_f1, report.macro_f1,
                      report.weighted_precision, report.weighted_recall,
                      report.macro_precision, report.macro_recall] {
            prop_assert!((0.0..=1.0 + 1e-12).contains(&value), "{value}");
        }
        for class in &report.per_class {
            prop_assert!((0.0..=1.0).contains(&class.f1));
            // F1 lies between the smaller and larger of precision and recall.
            prop_assert!(class.f1 <= class.precision.max(class.recall) + 1e-12);
            prop_assert!(class.f1 + 1e-12 >= class.precision.min(class.recall));
        }
        prop_assert_eq!(report.confusion.total(), truth.len() as u64);
        // Weighted recall is accuracy, by definition.
        prop_assert!((report.weighted_recall - report.accuracy).abs() < 1e-12);
    }

    #[test]
    fn perfect_predictions_score_one((class_count, truth, _) in pairs()) {
        let report = classification_report(&truth, &truth, class_count).unwrap();
        prop_assert!((report.accuracy - 1.0).abs() < 1e-12);
        prop_assert!((report.weighted_f1 - 1.0).abs() < 1e-12);
        prop_assert!((report.macro_f1 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn softmax_is_a_distribution(row in proptest::collection::vec(-500.0f64..500.0, 1..30)) {
        let probabilities = softmax(&row).unwrap();
        let sum: f64 = probabilities.iter().sum();
        prop_assert!((sum - 1.0).abs() < 1e-9, "sum {sum}");
        prop_assert!(probabilities.iter().all(|p| (0.0..=1.0).contains(p)));
        let top_score = row.iter().copied().enumerate().fold((0, f64::MIN), |b, (i, v)| if v > b.1 { (i, v) } else { b }).0;
        let top_probability = probabilities.iter().copied().enumerate().fold((0, f64::MIN), |b, (i, v)| if v > b.1 { (i, v) } else { b }).0;
        prop_assert_eq!(row[top_score], row[top_probability]);
    }

    #[test]
    fn temperature_fit_never_worsens_nll((class_count, scores, labels) in scored()) {
        let fitted = TemperatureScaling::fit(&scores, class_count, &labels).unwrap();
        prop_assert!(fitted.temperature.is_finite() && fitted.temperature > 0.0);
        let before = negative_log_likelihood(&scores, class_count, &labels, 1.0).unwrap();
        let after = negative_log_likelihood(&scores, class_count, &labels, fitted.temperature).unwrap();
        prop_assert!(after <= before + 1e-12, "after {after} > before {before}");
        // And it is a minimum: nudging the temperature does not help.
        for factor in [0.9, 1.1] {
            let nudged = negative_log_likelihood(&scores, class_count, &labels, fitted.temperature * factor).unwrap();
            prop_assert!(after <= nudged + 1e-9, "T*{factor} gives {nudged} < {after}");
        }
    }

    #[test]
    fn ece_is_bounded_and_bins_add_up((class_count, scores, labels) in scored()) {
        let probabilities = TemperatureScaling::identity().probability_matrix(&scores, class_count);
        let diagram = reliability_diagram(&probabilities, class_count, &labels, 15).unwrap();
        prop_assert!((0.0..=1.0).contains(&diagram.expected_calibration_error));
        prop_assert_eq!(diagram.bins.iter().map(|b| b.count).sum::<u64>(), labels.len() as u64);
        let svg = reliability_diagram_svg(&[("raw", &diagram)], "t");
        prop_assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}

#[test]
fn confusion_svg_names_classes_and_escapes_them() {
    let report = classification_report(&[0, 0, 1, 2, 2, 2], &[0, 1, 1, 2, 2, 0], 3).unwrap();
    let labels = vec![
        "10 used books".to_string(),
        "40 <games> & co".to_string(),
        "60".to_string(),
    ];
    let svg = confusion_matrix_svg(&report.confusion, &labels, "Validation");
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("10 used books"));
    assert!(svg.contains("40 &lt;games&gt; &amp; co"));
    assert!(!svg.contains("<games>"));
    // Three rows of three cells.
    assert_eq!(svg.matches("<rect x=").count(), 9);
    assert!(
        svg.contains(">2</text>"),
        "count of the 2-2 cell is printed"
    );
}
