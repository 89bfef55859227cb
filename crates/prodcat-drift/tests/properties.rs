//! Property tests: ranges, symmetries and identities the statistics must satisfy on any input.

use proptest::prelude::*;

use prodcat_drift::kolmogorov::two_sample_ks;
use prodcat_drift::stattest::{
    chi_square_test, fill_empty_bins, jensen_shannon_distance, population_stability_index,
    proportion_z_test, wasserstein_distance, wasserstein_normed,
};
use prodcat_drift::text_drift::roc_auc;
use prodcat_drift::{ColumnValues, Profile, ProfileColumn};

fn sample() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-1e3f64..1e3, 1..120)
}

fn small_integers() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec((0u8..6).prop_map(f64::from), 1..120)
}

fn labels() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..5, 1..150)
}

fn shares() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (1usize..30).prop_flat_map(|n| {
        (
            prop::collection::vec(0.0f64..10.0, n),
            prop::collection::vec(0.0f64..10.0, n),
        )
    })
}

proptest! {
    #[test]
    fn ks_is_a_probability_and_symmetric(a in sample(), b in sample()) {
        let forward = two_sample_ks(&a, &b).unwrap();
        let backward = two_sample_ks(&b, &a).unwrap();
        prop_assert!((0.0..=1.0).contains(&forward.statistic));
        prop_assert!((0.0..=1.0).contains(&forward.p_value));
        prop_assert!((forward.statistic - backward.statistic).abs() < 1e-12);
        prop_assert!((forward.p_value - backward.p_value).abs() < 1e-9);
    }

    #[test]
    fn ks_with_ties_stays_in_range(a in small_integers(), b in small_integers()) {
        let result = two_sample_ks(&a, &b).unwrap();
        prop_assert!((0.0..=1.0).contains(&result.p_value));
        let same = two_sample_ks(&a, &a).unwrap();
        prop_assert_eq!(same.statistic, 0.0);
        prop_assert_eq!(same.p_value, 1.0);
    }

    #[test]
    fn wasserstein_is_a_symmetric_distance(a in sample(), b in sample(), shift in -50.0f64..50.0) {
        let d = wasserstein_distance(&a, &b).unwrap();
        prop_assert!(d >= 0.0);
        prop_assert!((d - wasserstein_distance(&b, &a).unwrap()).abs() <= 1e-9 * (1.0 + d));
        prop_assert!(wasserstein_distance(&a, &a).unwrap().abs() < 1e-12);
        // Shifting a sample by c moves it exactly |c| away from itself.
        let moved: Vec<f64> = a.iter().map(|x| x + shift).collect();
        prop_assert!((wasserstein_distance(&a, &moved).unwrap() - shift.abs()).abs() < 1e-6);
        prop_assert!(wasserstein_normed(&a, &b).unwrap() >= 0.0);
    }

    #[test]
    fn jensen_shannon_is_bounded_and_symmetric((p, q) in shares()) {
        prop_assume!(p.iter().sum::<f64>() > 0.0 && q.iter().sum::<f64>() > 0.0);
        let d = jensen_shannon_distance(&p, &q).unwrap();
        prop_assert!(d >= 0.0 && d <= std::f64::consts::LN_2.sqrt() + 1e-12);
        prop_assert!((d - jensen_shannon_distance(&q, &p).unwrap()).abs() < 1e-12);
        prop_assert!(jensen_shannon_distance(&p, &p).unwrap() < 1e-7);
    }

    #[test]
    fn psi_is_non_negative_and_symmetric((p, q) in shares()) {
        let normalise = |v: &[f64]| -> Vec<f64> {
            let total: f64 = v.iter().sum();
            v.iter().map(|x| x / total).collect()
        };
        prop_assume!(p.iter().sum::<f64>() > 0.0 && q.iter().sum::<f64>() > 0.0);
        let (mut p, mut q) = (normalise(&p), normalise(&q));
        fill_empty_bins(&mut p);
        fill_empty_bins(&mut q);
        let forward = population_stability_index(&p, &q).unwrap();
        prop_assert!(forward >= -1e-12);
        prop_assert!((forward - population_stability_index(&q, &p).unwrap()).abs() < 1e-9 * (1.0 + forward));
    }

    #[test]
    fn chi_square_and_z_p_values_are_probabilities(a in labels(), b in labels()) {
        if let Some(result) = chi_square_test(&a, &b) {
            prop_assert!(result.p_value.is_nan() || (0.0..=1.0).contains(&result.p_value));
            prop_assert!(result.statistic >= 0.0);
        }
        let binary = |v: &[u8]| -> Vec<bool> { v.iter().map(|x| x % 2 == 0).collect() };
        let (a, b) = (binary(&a), binary(&b));
        let forward = proportion_z_test(&a, &b).unwrap();
        let backward = proportion_z_test(&b, &a).unwrap();
        prop_assert!(forward.p_value.is_nan() || (0.0..=1.0).contains(&forward.p_value));
        prop_assert!(
            (forward.p_value - backward.p_value).abs() < 1e-12
                || (forward.p_value.is_nan() && backward.p_value.is_nan())
        );
    }

    #[test]
    fn roc_auc_is_a_probability_and_flips_with_the_scores(
        pairs in prop::collection::vec((any::<bool>(), -5.0f64..5.0), 2..100)
    ) {
        let labels: Vec<bool> = pairs.iter().map(|p| p.0).collect();
        prop_assume!(labels.iter().any(|l| *l) && labels.iter().any(|l| !*l));
        let scores: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        let negated: Vec<f64> = scores.iter().map(|s| -s).collect();
        let auc = roc_auc(&labels, &scores).unwrap();
        prop_assert!((0.0..=1.0).contains(&auc));
        prop_assert!((auc + roc_auc(&labels, &negated).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn profiles_round_trip_through_json(
        numbers in prop::collection::vec(-1e6f64..1e6, 0..50),
        words in prop::collection::vec("[a-zé ]{0,12}", 0..20),
        flags in prop::collection::vec(any::<bool>(), 0..20),
    ) {
        let profile = Profile::from_columns(vec![
            ProfileColumn::new("n", ColumnValues::Numeric(numbers)),
            ProfileColumn::new("c", ColumnValues::Categorical(words.clone())),
            ProfileColumn::new("b", ColumnValues::Binary(flags)),
            ProfileColumn::new("t", ColumnValues::Text(words)),
        ]).unwrap();
        let json = profile.to_json().unwrap();
        prop_assert_eq!(Profile::from_json(&json).unwrap(), profile);
    }
}
