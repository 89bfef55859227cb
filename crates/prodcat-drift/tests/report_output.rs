//! The report's JSON, HTML and gauge outputs on a small mixed profile.

use prodcat_drift::rng::SplitMix64;
use prodcat_drift::{
    concept_drift, detect_drift, ColumnValues, DriftOptions, DriftReport, Profile, ProfileColumn,
};

fn profile(seed: u64, shift: f64) -> Profile {
    let mut rng = SplitMix64::new(seed);
    let numbers: Vec<f64> = (0..400)
        .map(|_| 50.0 + shift + 10.0 * rng.next_gaussian())
        .collect();
    let languages: Vec<String> = (0..400)
        .map(|_| {
            if rng.next_f64() < 0.8 + shift / 100.0 {
                "fr"
            } else {
                "en"
            }
            .to_owned()
        })
        .collect();
    let classes: Vec<String> = (0..400)
        .map(|_| format!("<class {}>", rng.next_below(5)))
        .collect();
    Profile::from_columns(vec![
        ProfileColumn::new("text_length", ColumnValues::Numeric(numbers)),
        ProfileColumn::new("language", ColumnValues::Categorical(languages)),
        ProfileColumn::new(
            "predicted <class> & \"quote\"",
            ColumnValues::Categorical(classes),
        ),
    ])
    .unwrap()
}

fn report() -> DriftReport {
    let options = DriftOptions {
        title: "Model <v3> drift".into(),
        ..DriftOptions::default()
    };
    let pairs: Vec<(u8, u8)> = (0..50)
        .map(|i| (i % 3, if i % 5 == 0 { 0 } else { i % 3 }))
        .collect();
    detect_drift(&profile(1, 0.0), &profile(2, 10.0), &options)
        .unwrap()
        .with_concept_drift(concept_drift(0.95, &pairs, 0.05).unwrap())
}

#[test]
fn json_round_trips_and_names_the_tests() {
    let report = report();
    let json = report.to_json().unwrap();
    assert_eq!(DriftReport::from_json(&json).unwrap(), report);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["columns"][0]["testName"], "ks");
    assert_eq!(value["columns"][1]["testName"], "z");
    assert_eq!(value["columns"][2]["testName"], "chisquare");
    assert_eq!(value["columns"][0]["drifted"], true);
    assert!(value["shareOfDriftedColumns"].as_f64().unwrap() > 0.0);
    assert!(value["conceptDrift"]["drifted"].as_bool().unwrap());
}

#[test]
fn html_is_self_contained_escaped_and_highlights_drift() {
    let report = report();
    let html = report.to_html();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script"), "no scripts");
    assert!(!html.contains("src="), "no external resources");
    assert!(!html.contains("href=\"http"), "no external links");
    assert_eq!(
        html.matches("<svg").count(),
        report.columns.len(),
        "one chart per column"
    );
    assert!(html.contains("Model &lt;v3&gt; drift"));
    assert!(html.contains("predicted &lt;class&gt; &amp; &quot;quote&quot;"));
    assert!(!html.contains("<class"), "category labels are escaped");
    let drifted_rows = html.matches("<tr class=\"drifted\">").count();
    assert_eq!(drifted_rows, report.drifted_columns);
    assert!(html.contains("Concept drift"));
}

#[test]
fn gauges_carry_one_score_per_column() {
    let report = report();
    let scores = report.drift_scores();
    assert_eq!(scores.len(), 3);
    assert_eq!(scores[0].0, "text_length");
    assert!((scores[0].1 - report.columns[0].score).abs() < 1e-15);
    let flags = report.drift_flags();
    assert_eq!(
        flags.iter().filter(|(_, v)| *v == 1.0).count(),
        report.drifted_columns
    );
}
