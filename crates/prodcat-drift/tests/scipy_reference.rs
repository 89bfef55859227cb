//! Exact checks against numbers computed by scipy 1.17 and Evidently 0.7.23 on fixed inputs.
//!
//! Inputs are golden-ratio sequences x_i = frac((i + offset) · 0.6180339887498949)^power
//! · scale + shift, which Python and Rust compute bit for bit the same; categories are
//! `c{floor(x · k)}`. The expected values were printed by scipy's `ks_2samp`, `kstwo.sf`
//! and Evidently's `_chi_stat_test`, `_z_stat_test`, `_wasserstein_distance_norm`,
//! `_jensenshannon` and `_psi` on the same sequences.

use prodcat_drift::drift::binned_shares;
use prodcat_drift::kolmogorov::{kolmogorov_survival, two_sample_ks};
use prodcat_drift::stattest::{
    chi_square_test, fill_empty_bins, jensen_shannon_distance, population_stability_index,
    proportion_z_test, wasserstein_normed,
};
use prodcat_drift::ColumnValues;

const GOLDEN: f64 = 0.6180339887498949;

/// (n1, offset1, power1, shift1, n2, offset2, power2, shift2, rounding levels, D, p-value)
type KsCase = (
    usize,
    usize,
    f64,
    f64,
    usize,
    usize,
    f64,
    f64,
    u32,
    f64,
    f64,
);
/// (n1, offset1, power1, n2, offset2, power2, categories k, expected)
type CategoryCase = (usize, usize, f64, usize, usize, f64, u32, f64);
/// (n1, offset1, power1, n2, offset2, power2, shift2, expected)
type ShiftCase = (usize, usize, f64, usize, usize, f64, f64, f64);

fn sequence(n: usize, offset: usize, power: f64, shift: f64) -> Vec<f64> {
    (0..n)
        .map(|i| (((i + offset) as f64 * GOLDEN) % 1.0).powf(power) + shift)
        .collect()
}

fn categories(values: &[f64], k: u32) -> Vec<String> {
    values
        .iter()
        .map(|x| format!("c{}", (x * k as f64) as i64))
        .collect()
}

fn check(what: &str, actual: f64, expected: f64, relative: f64, absolute: f64) {
    let error = (actual - expected).abs();
    assert!(
        error <= absolute || error <= relative * expected.abs(),
        "{what}: got {actual:e}, scipy/Evidently {expected:e}"
    );
}

const KS_CASES: &[KsCase] = &[
    (
        7,
        0,
        1.0,
        0.0,
        11,
        3,
        1.0,
        0.2,
        0,
        0.36363636363636365,
        0.49453242835595784,
    ),
    (
        50,
        0,
        1.0,
        0.0,
        50,
        7,
        1.0,
        0.1,
        0,
        0.16,
        0.5486851446031328,
    ),
    (
        200,
        1,
        1.0,
        0.0,
        300,
        5,
        2.0,
        0.0,
        0,
        0.26,
        1.360147805295867e-07,
    ),
    (
        999,
        2,
        1.0,
        0.0,
        1000,
        9,
        1.0,
        0.03,
        0,
        0.031592592592592596,
        0.681869470139521,
    ),
    (
        500,
        0,
        1.0,
        0.0,
        700,
        1,
        1.0,
        0.0,
        10,
        0.0014285714285714286,
        1.0,
    ),
    (
        1000,
        0,
        1.0,
        0.0,
        10000,
        5,
        1.0,
        0.02,
        0,
        0.0213,
        0.7971962978606857,
    ),
    (
        800,
        0,
        1.0,
        0.0,
        12000,
        3,
        1.0,
        0.05,
        0,
        0.05258333333333337,
        0.030477451540785294,
    ),
    (
        300,
        0,
        1.0,
        0.0,
        20000,
        11,
        1.1,
        0.0,
        0,
        0.038316666666666666,
        0.7626500464011013,
    ),
    (
        100,
        0,
        1.0,
        0.0,
        15000,
        2,
        1.0,
        0.3,
        0,
        0.3206,
        1.4931825712332445e-09,
    ),
    (
        5000,
        1,
        1.0,
        0.0,
        11000,
        2,
        1.0,
        0.005,
        0,
        0.005454545454545379,
        0.9999447557193548,
    ),
    (
        60,
        0,
        1.0,
        0.0,
        10001,
        4,
        1.0,
        0.1,
        0,
        0.11885311468853121,
        0.33788196180842567,
    ),
];

const KOLMOGOROV_CASES: &[(u64, f64, f64)] = &[
    (10, 0.08, 0.9999978058034054),
    (10, 0.3, 0.27053557479999946),
    (10, 0.6, 0.0005681672000000003),
    (10, 0.95, 1.9531250000000172e-13),
    (100, 0.05, 0.9532159710635725),
    (100, 0.12, 0.1033037490181987),
    (100, 0.25, 5.408871776434847e-06),
    (140, 0.1, 0.11353657290090946),
    (141, 0.05, 0.854845693009663),
    (141, 0.11, 0.061026676517912715),
    (141, 0.2, 2.0276784223976912e-05),
    (500, 0.02, 0.9859871786857471),
    (500, 0.05, 0.15866260223815387),
    (500, 0.07, 0.01416832020019071),
    (1000, 0.03, 0.3226902143914636),
    (1000, 0.045, 0.03378304014546085),
    (5000, 0.01, 0.6954557253913853),
    (5000, 0.02, 0.03613941395325637),
    (20000, 0.005, 0.6974088406327613),
    (20000, 0.009, 0.07785289326070222),
    (200000, 0.002, 0.39995085369038097),
    (200000, 0.003, 0.0545369786611305),
    (1000, 0.0011, 1.0),
    (50, 0.5, 4.392853499119748e-12),
];

const CHI_SQUARE_CASES: &[CategoryCase] = &[
    (300, 0, 1.0, 200, 5, 1.0, 4, 0.99992128060221),
    (300, 0, 1.0, 400, 5, 1.5, 5, 1.123533562397295e-10),
    (50, 0, 1.0, 80, 3, 1.0, 3, 0.72299974810295),
    (1000, 0, 1.0, 1000, 1, 1.3, 6, 4.497163158057397e-12),
];

const Z_CASES: &[(usize, usize, f64, usize, usize, f64, f64)] = &[
    (300, 0, 1.0, 200, 5, 1.0, 1.0),
    (300, 0, 1.0, 400, 5, 1.5, 0.0007388185450334372),
    (1000, 0, 1.0, 900, 1, 1.2, 0.007709166873296702),
    (40, 0, 1.0, 40, 1, 1.0, 0.8230088713702759),
];

const WASSERSTEIN_CASES: &[ShiftCase] = &[
    (2000, 0, 1.0, 1500, 3, 1.0, 0.0, 0.0009649937667730264),
    (2000, 0, 1.0, 3000, 3, 1.0, 0.05, 0.1735237313377566),
    (5000, 0, 2.0, 4000, 7, 1.0, 0.0, 0.5598294197086887),
];

const JS_NUMERIC_CASES: &[ShiftCase] = &[
    (2000, 0, 1.0, 1500, 3, 1.0, 0.0, 0.0019016023673032573),
    (2000, 0, 1.0, 3000, 3, 1.0, 0.2, 0.3489722627774732),
    (5000, 0, 2.0, 4000, 7, 1.0, 0.0, 0.22007563970652755),
];

const JS_CATEGORICAL_CASES: &[CategoryCase] = &[
    (2000, 0, 1.0, 1500, 3, 1.0, 5, 0.0006714034415087477),
    (2000, 0, 1.0, 3000, 3, 2.0, 5, 0.19806303570508296),
    (1500, 0, 1.0, 1200, 1, 1.0, 2, 0.0010606603853983345),
];

const PSI_CATEGORICAL_CASES: &[CategoryCase] = &[
    (2000, 0, 1.0, 1500, 3, 1.0, 27, 0.00021304907379321507),
    (2000, 0, 1.0, 3000, 3, 2.0, 27, 0.4309048503485467),
    (500, 0, 3.0, 400, 1, 1.0, 27, 1.027244941981305),
];

const PSI_NUMERIC_CASES: &[ShiftCase] = &[
    (2000, 0, 1.0, 1500, 3, 1.0, 0.0, 2.8928798616759696e-05),
    (2000, 0, 1.0, 3000, 3, 1.0, 0.2, 2.3373454325896352),
];

#[test]
fn kolmogorov_smirnov_two_sample_matches_scipy() {
    for &(n1, o1, p1, s1, n2, o2, p2, s2, round, statistic, p_value) in KS_CASES {
        let mut a = sequence(n1, o1, p1, s1);
        let mut b = sequence(n2, o2, p2, s2);
        if round > 0 {
            let levels = round as f64;
            a.iter_mut()
                .for_each(|x| *x = (*x * levels).round_ties_even() / levels);
            b.iter_mut()
                .for_each(|x| *x = (*x * levels).round_ties_even() / levels);
        }
        let result = two_sample_ks(&a, &b).unwrap();
        let what = format!("ks n1={n1} n2={n2}");
        check(&what, result.statistic, statistic, 1e-12, 1e-15);
        check(&what, result.p_value, p_value, 1e-8, 1e-14);
    }
}

#[test]
fn kolmogorov_distribution_matches_scipy_kstwo() {
    for &(n, d, expected) in KOLMOGOROV_CASES {
        check(
            &format!("kstwo.sf n={n} d={d}"),
            kolmogorov_survival(n, d),
            expected,
            1e-8,
            1e-15,
        );
    }
}

#[test]
fn chi_square_matches_evidently() {
    for &(n1, o1, p1, n2, o2, p2, k, expected) in CHI_SQUARE_CASES {
        let a = categories(&sequence(n1, o1, p1, 0.0), k);
        let b = categories(&sequence(n2, o2, p2, 0.0), k);
        let result = chi_square_test(&a, &b).unwrap();
        check(
            &format!("chi-square n1={n1} n2={n2} k={k}"),
            result.p_value,
            expected,
            1e-9,
            1e-15,
        );
    }
}

#[test]
fn z_test_matches_evidently() {
    for &(n1, o1, p1, n2, o2, p2, expected) in Z_CASES {
        let a = categories(&sequence(n1, o1, p1, 0.0), 2);
        let b = categories(&sequence(n2, o2, p2, 0.0), 2);
        let result = proportion_z_test(&a, &b).unwrap();
        check(
            &format!("z n1={n1} n2={n2}"),
            result.p_value,
            expected,
            1e-9,
            1e-15,
        );
    }
}

#[test]
fn wasserstein_normed_matches_evidently() {
    for &(n1, o1, p1, n2, o2, p2, s2, expected) in WASSERSTEIN_CASES {
        let value =
            wasserstein_normed(&sequence(n1, o1, p1, 0.0), &sequence(n2, o2, p2, s2)).unwrap();
        check(
            &format!("wasserstein n1={n1} n2={n2}"),
            value,
            expected,
            1e-9,
            1e-15,
        );
    }
}

#[test]
fn jensen_shannon_matches_evidently() {
    for &(n1, o1, p1, n2, o2, p2, s2, expected) in JS_NUMERIC_CASES {
        let shares = binned_shares(
            &ColumnValues::Numeric(sequence(n1, o1, p1, 0.0)),
            &ColumnValues::Numeric(sequence(n2, o2, p2, s2)),
        )
        .unwrap();
        let value = jensen_shannon_distance(&shares.reference, &shares.current).unwrap();
        check(
            &format!("js numeric n1={n1} n2={n2}"),
            value,
            expected,
            1e-9,
            1e-15,
        );
    }
    for &(n1, o1, p1, n2, o2, p2, k, expected) in JS_CATEGORICAL_CASES {
        let shares = binned_shares(
            &ColumnValues::Categorical(categories(&sequence(n1, o1, p1, 0.0), k)),
            &ColumnValues::Categorical(categories(&sequence(n2, o2, p2, 0.0), k)),
        )
        .unwrap();
        let value = jensen_shannon_distance(&shares.reference, &shares.current).unwrap();
        check(
            &format!("js categorical n1={n1} n2={n2} k={k}"),
            value,
            expected,
            1e-9,
            1e-15,
        );
    }
}

#[test]
fn population_stability_index_matches_evidently() {
    let psi = |reference: ColumnValues, current: ColumnValues| -> f64 {
        let mut shares = binned_shares(&reference, &current).unwrap();
        fill_empty_bins(&mut shares.reference);
        fill_empty_bins(&mut shares.current);
        population_stability_index(&shares.reference, &shares.current).unwrap()
    };
    for &(n1, o1, p1, n2, o2, p2, k, expected) in PSI_CATEGORICAL_CASES {
        let value = psi(
            ColumnValues::Categorical(categories(&sequence(n1, o1, p1, 0.0), k)),
            ColumnValues::Categorical(categories(&sequence(n2, o2, p2, 0.0), k)),
        );
        check(
            &format!("psi categorical n1={n1} n2={n2}"),
            value,
            expected,
            1e-9,
            1e-15,
        );
    }
    for &(n1, o1, p1, n2, o2, p2, s2, expected) in PSI_NUMERIC_CASES {
        let value = psi(
            ColumnValues::Numeric(sequence(n1, o1, p1, 0.0)),
            ColumnValues::Numeric(sequence(n2, o2, p2, s2)),
        );
        check(
            &format!("psi numeric n1={n1} n2={n2}"),
            value,
            expected,
            1e-9,
            1e-15,
        );
    }
}
