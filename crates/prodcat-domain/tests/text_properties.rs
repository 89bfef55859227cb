//! Hostile marketplace text: normalisation never panics, takes time linear in the text's
//! length, and leaves no control character or run of spaces behind.

use std::time::{Duration, Instant};

use prodcat_domain::{normalize_text, product_text};
use proptest::prelude::*;

/// Pieces that make HTML scanners and entity decoders work hardest when repeated.
fn hostile_piece() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("<"),
        Just(">"),
        Just("<a"),
        Just("</"),
        Just("<!--"),
        Just("-->"),
        Just("<?"),
        Just("&"),
        Just("&amp;"),
        Just("&amp;lt;"),
        Just("&lt;b&gt;"),
        Just("&#x3C;"),
        Just("&#60;"),
        Just("&#"),
        Just(";"),
        Just("é"),
        Just("e\u{301}"),
        Just("\u{a0}"),
        Just("\t\n"),
        Just("\u{0}"),
        Just("mot "),
    ]
}

fn hostile_text(max_pieces: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(hostile_piece(), 0..max_pieces).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any Unicode text: no panic, no control character or doubled space in the output.
    #[test]
    fn any_text_is_normalised(text in "\\PC{0,300}|[<>&;#a-z0-9 ]{0,300}") {
        let out = normalize_text(&text);
        prop_assert!(!out.chars().any(char::is_control));
        prop_assert!(!out.contains("  "));
        prop_assert_eq!(out.trim(), out.as_str());
    }

    /// Hostile text up to the description cap (64 KiB) is normalised quickly: the cost is
    /// linear, so even the worst repetition stays far under the CPU budget of a request.
    #[test]
    fn hostile_text_is_normalised_in_bounded_time(piece in hostile_piece(), mixed in hostile_text(64)) {
        let text = format!("{mixed}{}", piece.repeat(64 * 1024 / piece.len().max(1)));
        let started = Instant::now();
        let _ = product_text(&text, &text);
        prop_assert!(started.elapsed() < Duration::from_millis(250), "{:?} for {} bytes", started.elapsed(), text.len());
    }
}

/// The worst inputs found so far, at four times the cap and at sixteen times: time grows about
/// linearly (a quadratic scan would take 16 times longer for 4 times the text). The fastest of
/// three runs is compared, so that a busy machine does not decide the verdict.
#[test]
fn cost_grows_linearly_with_the_text() {
    for piece in ["<", "<a", "&amp;", "&lt;", "<!--", "&#"] {
        let time = |bytes: usize| {
            let text = piece.repeat(bytes / piece.len());
            (0..3)
                .map(|_| {
                    let started = Instant::now();
                    std::hint::black_box(normalize_text(&text));
                    started.elapsed()
                })
                .min()
                .unwrap()
        };
        let small = time(256 * 1024);
        let large = time(1024 * 1024);
        assert!(
            large < small * 10 + Duration::from_millis(20),
            "{piece:?}: {small:?} for 256 KiB but {large:?} for 1 MiB"
        );
    }
}
