//! Property tests: no input makes the analyzers, the vectoriser or the file reader panic, and
//! vectorised rows keep their invariants.

mod common;

use std::sync::OnceLock;

use prodcat_text_model::{char_wb_ngrams, word_ngrams, TextClassifier, TextClassifierOptions};
use proptest::prelude::*;

fn model() -> &'static (TextClassifier, Vec<u8>) {
    static MODEL: OnceLock<(TextClassifier, Vec<u8>)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let (texts, labels) = common::generated_corpus(4, 20, 9);
        let model =
            TextClassifier::fit(&texts, &labels, &TextClassifierOptions::default()).unwrap();
        let bytes = model.to_bytes();
        (model, bytes)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn analyzers_accept_any_text(text in "\\PC{0,80}|[a-zé ]{0,40}") {
        for ngram in word_ngrams(&text, (1, 2)) {
            prop_assert!(!ngram.is_empty());
            prop_assert!(ngram.chars().count() >= 2);
        }
        for ngram in char_wb_ngrams(&text, (3, 5)) {
            prop_assert!(!ngram.is_empty());
            prop_assert!(ngram.chars().count() <= 5);
        }
    }

    #[test]
    fn rows_are_sorted_and_blocks_unit_length(text in "\\PC{0,120}|(mot[0-3]x[0-5] ){1,12}") {
        let (model, _) = model();
        let vectorizer = model.vectorizer();
        let row = vectorizer.transform_one(&text);
        prop_assert!(row.indices.windows(2).all(|pair| pair[0] < pair[1]));
        prop_assert!(row.indices.iter().all(|&i| (i as usize) < vectorizer.feature_count()));
        let split = vectorizer.word().len() as u32;
        for block in [true, false] {
            let norm: f64 = row.indices.iter().zip(&row.values)
                .filter(|(i, _)| (**i < split) == block)
                .map(|(_, v)| (*v as f64) * (*v as f64))
                .sum();
            prop_assert!(norm == 0.0 || (norm - 1.0).abs() < 1e-5, "norm {}", norm);
        }
        let prediction = model.predict(&text, 3);
        prop_assert!(prediction.probability > 0.0 && prediction.probability <= 1.0);
    }

    #[test]
    fn reader_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = TextClassifier::from_bytes(&bytes);
        let mut with_header = b"PCTXTMDL\x01\x00\x00\x00".to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = TextClassifier::from_bytes(&with_header);
    }

    #[test]
    fn reader_never_panics_on_damaged_models(position in 0usize..1_000_000, value in any::<u8>(), cut in 0usize..1_000_000) {
        let (_, bytes) = model();
        let mut damaged = bytes.clone();
        let at = position % damaged.len();
        damaged[at] = value;
        let _ = TextClassifier::from_bytes(&damaged);
        let _ = TextClassifier::from_bytes(&bytes[..cut % bytes.len()]);
    }
}
