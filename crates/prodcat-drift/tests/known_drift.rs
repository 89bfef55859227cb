//! For every test type: a known-no-drift case (same distribution, different seed) that must
//! not alarm and a known-drift case that must, run through the full profile -> report path
//! so the automatic test selection is checked at the same time.

use prodcat_drift::rng::SplitMix64;
use prodcat_drift::{
    detect_drift, ColumnKind, ColumnValues, DriftOptions, Profile, ProfileColumn, StatTestKind,
};

fn normal(seed: u64, n: usize, mean: f64, std: f64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| mean + std * rng.next_gaussian()).collect()
}

fn draw_categories(seed: u64, n: usize, weights: &[f64]) -> Vec<String> {
    let mut rng = SplitMix64::new(seed);
    let total: f64 = weights.iter().sum();
    (0..n)
        .map(|_| {
            let mut u = rng.next_f64() * total;
            for (index, weight) in weights.iter().enumerate() {
                if u < *weight {
                    return format!("class_{index}");
                }
                u -= weight;
            }
            format!("class_{}", weights.len() - 1)
        })
        .collect()
}

fn flags(seed: u64, n: usize, share_true: f64) -> Vec<bool> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.next_f64() < share_true).collect()
}

const HOME_WORDS: &[&str] = &[
    "coussin",
    "housse",
    "coton",
    "lin",
    "décoration",
    "salon",
    "rideau",
    "nappe",
    "plaid",
    "velours",
    "drap",
    "oreiller",
    "bleu",
    "gris",
    "beige",
    "motif",
    "fleurs",
    "moderne",
    "lavable",
    "doux",
    "chambre",
    "lit",
];
const GAME_WORDS: &[&str] = &[
    "jeu",
    "console",
    "manette",
    "nintendo",
    "switch",
    "playstation",
    "xbox",
    "aventure",
    "combat",
    "niveau",
    "joueur",
    "multijoueur",
    "édition",
    "collector",
    "course",
    "football",
    "mario",
    "zelda",
    "online",
    "pegi",
];
const SHARED_WORDS: &[&str] = &[
    "pour", "avec", "et", "de", "la", "le", "neuf", "lot", "taille", "noir", "blanc",
];

fn titles(seed: u64, n: usize, vocabulary: &[&str]) -> Vec<String> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let words = 4 + rng.next_below(6) as usize;
            (0..words)
                .map(|_| {
                    if rng.next_f64() < 0.3 {
                        SHARED_WORDS[rng.next_below(SHARED_WORDS.len() as u64) as usize]
                    } else {
                        vocabulary[rng.next_below(vocabulary.len() as u64) as usize]
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Runs one column through `detect_drift` and checks the chosen test and the verdict.
fn check(
    values: (ColumnValues, ColumnValues),
    options: &DriftOptions,
    test: StatTestKind,
    drift: bool,
) {
    let reference = Profile::from_columns(vec![ProfileColumn::new("feature", values.0)]).unwrap();
    let current = Profile::from_columns(vec![ProfileColumn::new("feature", values.1)]).unwrap();
    let report = detect_drift(&reference, &current, options).unwrap();
    let column = &report.columns[0];
    assert_eq!(column.test, test, "test chosen");
    assert_eq!(
        column.drifted,
        drift,
        "{test:?}: score {} against {} should {}be drift",
        column.score,
        column.decision_threshold,
        if drift { "" } else { "not " }
    );
    assert_eq!(
        report.dataset_drift, drift,
        "one column decides the dataset verdict"
    );
}

fn numeric(a: Vec<f64>, b: Vec<f64>) -> (ColumnValues, ColumnValues) {
    (ColumnValues::Numeric(a), ColumnValues::Numeric(b))
}
fn categorical(a: Vec<String>, b: Vec<String>) -> (ColumnValues, ColumnValues) {
    (ColumnValues::Categorical(a), ColumnValues::Categorical(b))
}

#[test]
fn kolmogorov_smirnov_small_numeric() {
    let options = DriftOptions::default();
    let test = StatTestKind::KolmogorovSmirnov;
    check(
        numeric(normal(1, 600, 0.0, 1.0), normal(2, 500, 0.0, 1.0)),
        &options,
        test,
        false,
    );
    check(
        numeric(normal(1, 600, 0.0, 1.0), normal(3, 500, 0.3, 1.0)),
        &options,
        test,
        true,
    );
}

#[test]
fn chi_square_small_categorical_and_few_valued_numeric() {
    let options = DriftOptions::default();
    let test = StatTestKind::ChiSquare;
    let weights = [0.4, 0.3, 0.2, 0.1];
    let shifted = [0.25, 0.3, 0.25, 0.2];
    check(
        categorical(
            draw_categories(1, 800, &weights),
            draw_categories(2, 700, &weights),
        ),
        &options,
        test,
        false,
    );
    check(
        categorical(
            draw_categories(1, 800, &weights),
            draw_categories(3, 700, &shifted),
        ),
        &options,
        test,
        true,
    );
    // A numeric column with four distinct values is tested like a categorical one.
    let as_numbers = |labels: Vec<String>| -> Vec<f64> {
        labels
            .iter()
            .map(|l| l.trim_start_matches("class_").parse::<f64>().unwrap())
            .collect()
    };
    check(
        numeric(
            as_numbers(draw_categories(4, 900, &weights)),
            as_numbers(draw_categories(7, 900, &weights)),
        ),
        &options,
        test,
        false,
    );
    check(
        numeric(
            as_numbers(draw_categories(4, 900, &weights)),
            as_numbers(draw_categories(6, 900, &shifted)),
        ),
        &options,
        test,
        true,
    );
}

#[test]
fn proportion_z_test_small_binary() {
    let options = DriftOptions::default();
    let test = StatTestKind::ProportionZ;
    let binary = |a: Vec<bool>, b: Vec<bool>| (ColumnValues::Binary(a), ColumnValues::Binary(b));
    check(
        binary(flags(1, 900, 0.35), flags(2, 800, 0.35)),
        &options,
        test,
        false,
    );
    check(
        binary(flags(1, 900, 0.35), flags(3, 800, 0.45)),
        &options,
        test,
        true,
    );
}

#[test]
fn wasserstein_large_numeric() {
    let options = DriftOptions::default();
    let test = StatTestKind::WassersteinNormed;
    check(
        numeric(normal(1, 3000, 70.0, 20.0), normal(2, 2000, 70.0, 20.0)),
        &options,
        test,
        false,
    );
    check(
        numeric(normal(1, 3000, 70.0, 20.0), normal(3, 2000, 76.0, 20.0)),
        &options,
        test,
        true,
    );
}

#[test]
fn jensen_shannon_large_categorical_and_binary() {
    let options = DriftOptions::default();
    let test = StatTestKind::JensenShannon;
    let weights = [0.5, 0.2, 0.2, 0.1];
    check(
        categorical(
            draw_categories(1, 4000, &weights),
            draw_categories(2, 3000, &weights),
        ),
        &options,
        test,
        false,
    );
    check(
        categorical(
            draw_categories(1, 4000, &weights),
            draw_categories(3, 3000, &[0.3, 0.2, 0.2, 0.3]),
        ),
        &options,
        test,
        true,
    );
    let binary = |a: Vec<bool>, b: Vec<bool>| (ColumnValues::Binary(a), ColumnValues::Binary(b));
    check(
        binary(flags(1, 4000, 0.35), flags(2, 3000, 0.35)),
        &options,
        test,
        false,
    );
    check(
        binary(flags(1, 4000, 0.35), flags(3, 3000, 0.65)),
        &options,
        test,
        true,
    );
}

#[test]
fn population_stability_index_on_predicted_classes() {
    let options =
        DriftOptions::default().with_test("feature", StatTestKind::PopulationStabilityIndex);
    let test = StatTestKind::PopulationStabilityIndex;
    let weights: Vec<f64> = (1..=27).map(|i| 1.0 + (i % 7) as f64).collect();
    let mut shifted = weights.clone();
    shifted[0] *= 4.0;
    shifted[5] *= 4.0;
    shifted[9] = 0.2;
    check(
        categorical(
            draw_categories(1, 3000, &weights),
            draw_categories(2, 2000, &weights),
        ),
        &options,
        test,
        false,
    );
    check(
        categorical(
            draw_categories(1, 3000, &weights),
            draw_categories(3, 2000, &shifted),
        ),
        &options,
        test,
        true,
    );
}

#[test]
fn text_domain_classifier_small_reference() {
    let options = DriftOptions::default();
    let test = StatTestKind::TextDomainClassifierPercentile;
    let text = |a: Vec<String>, b: Vec<String>| (ColumnValues::Text(a), ColumnValues::Text(b));
    check(
        text(titles(1, 400, HOME_WORDS), titles(2, 300, HOME_WORDS)),
        &options,
        test,
        false,
    );
    let mut mixed = titles(3, 200, HOME_WORDS);
    mixed.extend(titles(4, 100, GAME_WORDS));
    check(
        text(titles(1, 400, HOME_WORDS), mixed),
        &options,
        test,
        true,
    );
}

#[test]
fn text_domain_classifier_large_reference() {
    let options = DriftOptions::default();
    let test = StatTestKind::TextDomainClassifierAbsolute;
    let text = |a: Vec<String>, b: Vec<String>| (ColumnValues::Text(a), ColumnValues::Text(b));
    check(
        text(titles(1, 1500, HOME_WORDS), titles(2, 1000, HOME_WORDS)),
        &options,
        test,
        false,
    );
    let mut mixed = titles(3, 700, HOME_WORDS);
    mixed.extend(titles(4, 300, GAME_WORDS));
    check(
        text(titles(1, 1500, HOME_WORDS), mixed),
        &options,
        test,
        true,
    );
}

#[test]
fn dataset_drift_uses_share_at_least_threshold() {
    let stable = || ColumnValues::Numeric(normal(10, 500, 0.0, 1.0));
    let column = |name: &str, values: ColumnValues| ProfileColumn::new(name, values);
    let reference =
        Profile::from_columns(vec![column("a", stable()), column("b", stable())]).unwrap();
    let current = Profile::from_columns(vec![
        column("a", ColumnValues::Numeric(normal(11, 500, 0.0, 1.0))),
        column("b", ColumnValues::Numeric(normal(12, 500, 1.0, 1.0))),
    ])
    .unwrap();
    let report = detect_drift(&reference, &current, &DriftOptions::default()).unwrap();
    assert_eq!(report.drifted_columns, 1);
    assert_eq!(report.share_of_drifted_columns, 0.5);
    assert!(
        report.dataset_drift,
        "a share equal to the drift share is dataset drift"
    );
    let stricter = DriftOptions {
        drift_share: 0.51,
        ..DriftOptions::default()
    };
    assert!(
        !detect_drift(&reference, &current, &stricter)
            .unwrap()
            .dataset_drift
    );
}

#[test]
fn mismatched_and_empty_columns_are_reported_by_name() {
    let reference = Profile::from_columns(vec![ProfileColumn::new(
        "length",
        ColumnValues::Numeric(vec![1.0, 2.0]),
    )])
    .unwrap();
    let wrong_kind = Profile::from_columns(vec![ProfileColumn::new(
        "length",
        ColumnValues::Categorical(vec!["a".into()]),
    )])
    .unwrap();
    let error = detect_drift(&reference, &wrong_kind, &DriftOptions::default()).unwrap_err();
    assert!(error.to_string().contains("`length`"), "{error}");
    let empty = Profile::from_columns(vec![ProfileColumn::new(
        "length",
        ColumnValues::Numeric(vec![f64::NAN]),
    )])
    .unwrap();
    let error = detect_drift(&reference, &empty, &DriftOptions::default()).unwrap_err();
    assert!(error.to_string().contains("current"), "{error}");
    let other = Profile::from_columns(vec![ProfileColumn::new(
        "width",
        ColumnValues::Numeric(vec![1.0]),
    )])
    .unwrap();
    assert!(detect_drift(&reference, &other, &DriftOptions::default()).is_err());
    let forced =
        DriftOptions::default().with_test("length", StatTestKind::TextDomainClassifierAbsolute);
    let error = detect_drift(&reference, &reference, &forced).unwrap_err();
    assert!(error.to_string().contains("cannot be applied"), "{error}");
    assert_eq!(ColumnKind::Numeric.to_string(), "numeric");
}

/// K-S and the Z-test are two-sample tests: they must alarm on about 5 % of no-drift pairs
/// at the 0.05 level. Evidently's chi-square is a goodness-of-fit test that takes the
/// reference shares as exact, so (like Evidently) it alarms more often: the statistic is
/// inflated by about 1 + n_current / n_reference, which predicts the rate checked here.
#[test]
fn p_value_tests_false_alarm_rate_is_near_five_percent() {
    let options = DriftOptions::default();
    let trials = 300u64;
    let mut alarms = [0usize; 3];
    for trial in 0..trials {
        let seed = 1000 + 2 * trial;
        let cases = [
            numeric(normal(seed, 300, 0.0, 1.0), normal(seed + 1, 250, 0.0, 1.0)),
            categorical(
                draw_categories(seed, 300, &[0.4, 0.3, 0.2, 0.1]),
                draw_categories(seed + 1, 250, &[0.4, 0.3, 0.2, 0.1]),
            ),
            (
                ColumnValues::Binary(flags(seed, 300, 0.3)),
                ColumnValues::Binary(flags(seed + 1, 250, 0.3)),
            ),
        ];
        for (index, (a, b)) in cases.into_iter().enumerate() {
            let reference = Profile::from_columns(vec![ProfileColumn::new("x", a)]).unwrap();
            let current = Profile::from_columns(vec![ProfileColumn::new("x", b)]).unwrap();
            if detect_drift(&reference, &current, &options)
                .unwrap()
                .columns[0]
                .drifted
            {
                alarms[index] += 1;
            }
        }
    }
    let rate = |count: usize| count as f64 / trials as f64;
    assert!(
        (0.015..=0.095).contains(&rate(alarms[0])),
        "ks: false alarm rate {}",
        rate(alarms[0])
    );
    assert!(
        (0.015..=0.095).contains(&rate(alarms[2])),
        "z: false alarm rate {}",
        rate(alarms[2])
    );
    // chi2.ppf(0.95, 3) = 7.814727903251178; inflation 1 + 250 / 300.
    let predicted =
        prodcat_drift::special::chi_square_survival(7.814727903251178 / (1.0 + 250.0 / 300.0), 3.0);
    assert!(
        (rate(alarms[1]) - predicted).abs() < 0.06,
        "chisquare: false alarm rate {} vs predicted {predicted}",
        rate(alarms[1])
    );
}
