//! Checks against scikit-learn 1.9 outputs for small fixed inputs: the analyzers
//! (`TfidfVectorizer(...).build_analyzer()`), the fitted vocabulary, idf and row values of the
//! feature union, and LinearSVC's decision values (trained to a tight tolerance, where the
//! optimum is unique and the visiting order no longer matters).

mod common;

use prodcat_text_model::{
    char_wb_ngrams, word_ngrams, SvmOptions, TextClassifier, TextClassifierOptions, TfidfOptions,
    VectorizerOptions,
};

fn check_word(input: &str, expected: &[&str]) {
    assert_eq!(
        word_ngrams(input, (1, 2)),
        expected,
        "word n-grams of {input:?}"
    );
}

fn check_char(input: &str, expected: &[&str]) {
    assert_eq!(
        char_wb_ngrams(input, (3, 5)),
        expected,
        "char_wb n-grams of {input:?}"
    );
}

#[test]
fn word_analyzer_matches_scikit_learn() {
    check_word(
        "Lampe Étanche à LED, 2x3 m_m!",
        &[
            "lampe",
            "etanche",
            "led",
            "2x3",
            "m_m",
            "lampe etanche",
            "etanche led",
            "led 2x3",
            "2x3 m_m",
        ],
    );
    // Apostrophes split, the ligature decomposes, Greek gets its final sigma.
    check_word(
        "l'été ﬁnal ΣΟΦΟΣ x y zz",
        &[
            "ete",
            "final",
            "σοφο\u{3c2}",
            "zz",
            "ete final",
            "final σοφο\u{3c2}",
            "σοφο\u{3c2} zz",
        ],
    );
    check_word("a  b\tc", &[]);
    check_word(
        "Naïve café-crème n°5 ½ 2²",
        &[
            "naive",
            "cafe",
            "creme",
            "22",
            "naive cafe",
            "cafe creme",
            "creme 22",
        ],
    );
    check_word("", &[]);
    check_word("   ", &[]);
    check_word("e\u{301}t\u{e9}", &["ete"]);
    check_word(
        "日本語テキスト and ёлка",
        &[
            "日本語テキスト",
            "and",
            "елка",
            "日本語テキスト and",
            "and елка",
        ],
    );
    check_word("🙂 emoji 🙂🙂 ok", &["emoji", "ok", "emoji ok"]);
}

#[test]
fn char_wb_analyzer_matches_scikit_learn() {
    check_char("a  b\tc", &[" a ", " b ", " c "]);
    check_char(
        "Ab cdef",
        &[
            " ab", "ab ", " ab ", " cd", "cde", "def", "ef ", " cde", "cdef", "def ", " cdef",
            "cdef ",
        ],
    );
    check_char("où", &[" où", "où ", " où "]);
    check_char("xy", &[" xy", "xy ", " xy "]);
    check_char("", &[]);
}

fn small_options() -> VectorizerOptions {
    VectorizerOptions {
        word: TfidfOptions {
            max_features: Some(8),
            ..TfidfOptions::reference_word()
        },
        char_wb: TfidfOptions {
            max_features: Some(206),
            ..TfidfOptions::reference_char_wb()
        },
    }
}

fn close(actual: f32, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual as f64 - expected).abs() <= tolerance,
        "{what}: got {actual}, scikit-learn says {expected}"
    );
}

#[test]
fn union_matches_scikit_learn_vocabulary_idf_and_values() {
    let texts = common::corpus_texts();
    let (vectorizer, matrix) =
        prodcat_text_model::TextVectorizer::fit_transform(&texts, &small_options()).unwrap();
    let words: Vec<&str> = vectorizer.word().terms().iter().map(|t| &**t).collect();
    assert_eq!(
        words,
        [
            "aventure",
            "de",
            "edition",
            "jeu",
            "jeu video",
            "piscine",
            "pour",
            "video"
        ]
    );
    let idf = [
        1.955511445,
        1.619039208,
        1.955511445,
        2.178654996,
        2.178654996,
        1.955511445,
        1.773189888,
        2.178654996,
    ];
    for (actual, expected) in vectorizer.word().idf().iter().zip(idf) {
        close(*actual, expected, 1e-6, "word idf");
    }
    assert_eq!(vectorizer.char_wb().len(), 206);
    let (columns, values) = matrix.row(0);
    assert_eq!(columns.len(), 81, "stored entries of row 0");
    let value_of = |term: &str, char_block: bool| -> f32 {
        let column = if char_block {
            vectorizer.char_wb().column(term).unwrap() + vectorizer.word().len() as u32
        } else {
            vectorizer.word().column(term).unwrap()
        };
        values[columns.iter().position(|&c| c == column).unwrap()]
    };
    close(value_of("de", false), 0.6377278, 1e-6, "row 0 'de'");
    close(
        value_of("piscine", false),
        0.7702618,
        1e-6,
        "row 0 'piscine'",
    );
    close(value_of(" av", true), 0.0992733, 1e-6, "row 0 ' av'");
    close(value_of(" fil", true), 0.1106014, 1e-6, "row 0 ' fil'");
    close(value_of(" de ", true), 0.082192, 1e-6, "row 0 ' de '");
}

#[test]
fn linear_svm_matches_liblinear_decision_values() {
    let options = TextClassifierOptions {
        vectorizer: small_options(),
        svm: SvmOptions {
            tolerance: 1e-10,
            max_iterations: 1_000_000,
            ..SvmOptions::default()
        },
        companion: None,
    };
    let model =
        TextClassifier::fit(&common::corpus_texts(), &common::corpus_labels(), &options).unwrap();
    let codes: Vec<u16> = model.categories().iter().map(|c| c.value()).collect();
    assert_eq!(codes, [10, 40, 50, 2583]);
    let expected = [
        ("pompe piscine", [-0.868189, -0.714647, -1.112819, 0.991795]),
        (
            "jeu vidéo aventure",
            [-0.905377, 0.915055, -1.011891, -0.811896],
        ),
        ("", [-0.306315, -0.288795, -0.364321, -0.259806]),
        ("roman", [0.061468, -0.555025, -0.476973, -0.390393]),
    ];
    for (text, wanted) in expected {
        let scores = model.decision_values(text);
        for (actual, expected) in scores.iter().zip(wanted) {
            close(
                *actual,
                expected,
                2e-5,
                &format!("decision value of {text:?}"),
            );
        }
    }
    for (actual, expected) in model
        .svm()
        .intercepts()
        .iter()
        .zip([-0.306315, -0.288795, -0.364321, -0.259806])
    {
        close(*actual, expected, 2e-5, "intercept");
    }
}
