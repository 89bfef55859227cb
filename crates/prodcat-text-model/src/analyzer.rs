//! Cutting text into the n-grams scikit-learn's `TfidfVectorizer` would produce.
//!
//! - Preprocessing: `str.lower()` then, when asked, `strip_accents_unicode` (NFKD, combining
//!   marks dropped, and the text returned unchanged when NFKD does not change it).
//! - Word analyzer: tokens are the maximal runs of two or more word characters, which is what
//!   `(?u)\b\w\w+\b` finds; a word character is what Python's `re` calls `\w` (letters, numbers,
//!   underscore; not combining marks). n-grams of consecutive tokens are joined by one space.
//! - char_wb analyzer: for every whitespace-separated word, `" " + word + " "`, then every
//!   n-gram of code points inside it; a padded word no longer than n is emitted once and no
//!   longer n is tried for it.
//!
//! The hot path ([`for_each_ngram`]) hands out borrowed slices and reuses its buffers, so it
//! allocates nothing per n-gram.

use std::borrow::Cow;

use unicode_normalization::char::{canonical_combining_class, is_combining_mark};
use unicode_normalization::UnicodeNormalization;

use crate::options::{Analyzer, TfidfOptions};

/// Python's `\w` for `str` patterns: alphanumeric (letters of any case or script, digits and
/// other numbers) or the underscore; combining marks are not word characters there.
fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        c.is_alphanumeric() && !is_combining_mark(c)
    }
}

/// Python's `str.isspace()`, which `str.split()` uses: Unicode White_Space plus the four
/// information separators U+001C..U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// scikit-learn's `strip_accents_unicode`: NFKD, then every character with a non-zero
/// canonical combining class removed, except that a text NFKD leaves unchanged is returned as is.
pub fn strip_accents_unicode(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let decomposed: String = text.nfkd().collect();
    if decomposed == text {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        decomposed
            .chars()
            .filter(|&c| canonical_combining_class(c) == 0)
            .collect(),
    )
}

fn lowercase(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(text.to_ascii_lowercase())
        } else {
            Cow::Borrowed(text)
        }
    } else {
        Cow::Owned(text.to_lowercase())
    }
}

/// Lowercasing and accent stripping as configured.
pub(crate) fn preprocess<'a>(text: &'a str, options: &TfidfOptions) -> Cow<'a, str> {
    let lowered = if options.lowercase {
        lowercase(text)
    } else {
        Cow::Borrowed(text)
    };
    if !options.strip_accents {
        return lowered;
    }
    match lowered {
        Cow::Borrowed(borrowed) => strip_accents_unicode(borrowed),
        Cow::Owned(owned) => match strip_accents_unicode(&owned) {
            Cow::Borrowed(_) => Cow::Owned(owned),
            Cow::Owned(stripped) => Cow::Owned(stripped),
        },
    }
}

/// Byte ranges of the tokens of `text` (runs of 2+ word characters).
fn token_ranges(text: &str, ranges: &mut Vec<(usize, usize)>) {
    ranges.clear();
    let mut start = 0;
    let mut length = 0usize;
    for (position, c) in text.char_indices() {
        if is_word_char(c) {
            if length == 0 {
                start = position;
            }
            length += 1;
        } else {
            if length >= 2 {
                ranges.push((start, position));
            }
            length = 0;
        }
    }
    if length >= 2 {
        ranges.push((start, text.len()));
    }
}

/// Reusable buffers for [`for_each_ngram`].
#[derive(Default)]
pub(crate) struct Scratch {
    tokens: Vec<(usize, usize)>,
    joined: String,
    padded: String,
    boundaries: Vec<usize>,
}

/// Calls `visit` with every n-gram of `text` under `options`, in scikit-learn's order, as
/// borrowed slices (word n-grams with n >= 2 are assembled in a reused buffer).
pub(crate) fn for_each_ngram(
    text: &str,
    options: &TfidfOptions,
    scratch: &mut Scratch,
    mut visit: impl FnMut(&str),
) {
    let text = preprocess(text, options);
    let (min_n, max_n) = options.ngram_range;
    match options.analyzer {
        Analyzer::Word => {
            token_ranges(&text, &mut scratch.tokens);
            let tokens = &scratch.tokens;
            for n in min_n..=max_n.min(tokens.len()) {
                if n == 1 {
                    for &(start, end) in tokens {
                        visit(&text[start..end]);
                    }
                    continue;
                }
                for window in tokens.windows(n) {
                    scratch.joined.clear();
                    for (i, &(start, end)) in window.iter().enumerate() {
                        if i > 0 {
                            scratch.joined.push(' ');
                        }
                        scratch.joined.push_str(&text[start..end]);
                    }
                    visit(&scratch.joined);
                }
            }
        }
        Analyzer::CharWordBounded => {
            for word in text.split(is_python_space).filter(|w| !w.is_empty()) {
                scratch.padded.clear();
                scratch.padded.push(' ');
                scratch.padded.push_str(word);
                scratch.padded.push(' ');
                scratch.boundaries.clear();
                scratch
                    .boundaries
                    .extend(scratch.padded.char_indices().map(|(i, _)| i));
                scratch.boundaries.push(scratch.padded.len());
                let length = scratch.boundaries.len() - 1;
                for n in min_n..=max_n {
                    if length <= n {
                        visit(&scratch.padded);
                        break;
                    }
                    for start in 0..=length - n {
                        let from = scratch.boundaries[start];
                        let to = scratch.boundaries[start + n];
                        visit(&scratch.padded[from..to]);
                    }
                }
            }
        }
    }
}

/// The word tokens of `text` after lowercasing and accent stripping (scikit-learn's
/// `build_analyzer()` for unigrams).
pub fn word_tokens(text: &str) -> Vec<String> {
    word_ngrams(text, (1, 1))
}

/// All word n-grams of `text` for `ngram_range`, lowercased and accent-stripped, in
/// scikit-learn's order.
pub fn word_ngrams(text: &str, ngram_range: (usize, usize)) -> Vec<String> {
    let options = TfidfOptions {
        ngram_range,
        ..TfidfOptions::reference_word()
    };
    collect(text, &options)
}

/// All char_wb n-grams of `text` for `ngram_range`, lowercased, in scikit-learn's order.
pub fn char_wb_ngrams(text: &str, ngram_range: (usize, usize)) -> Vec<String> {
    let options = TfidfOptions {
        ngram_range,
        ..TfidfOptions::reference_char_wb()
    };
    collect(text, &options)
}

fn collect(text: &str, options: &TfidfOptions) -> Vec<String> {
    let mut out = Vec::new();
    if options.validate().is_err() {
        return out;
    }
    for_each_ngram(text, options, &mut Scratch::default(), |ngram| {
        out.push(ngram.to_string())
    });
    out
}
