//! Text normalisation shared by everything downstream of import.
//!
//! Marketplace text arrives as HTML fragments, often with entities encoded once or twice
//! (`&amp;eacute;`), tags escaped as entities (`&lt;br&gt;`), non-breaking spaces and mixed Unicode
//! forms. [`normalize_text`] turns it into plain, NFC-normalised text with single spaces.

use unicode_normalization::UnicodeNormalization;

/// Normalises one marketplace text field:
/// entities decoded (twice when double-encoded), HTML tags removed, Unicode NFC,
/// control characters and runs of whitespace collapsed to one space, ends trimmed.
pub fn normalize_text(raw: &str) -> String {
    let mut text = decode_entities(raw);
    text = strip_tags(&text);
    // Tags that were escaped as entities only become visible after the first decode.
    if text.contains('&') {
        text = strip_tags(&decode_entities(&text));
    }
    collapse_whitespace(&text.nfc().collect::<String>())
}

/// The text a classifier reads for a product: normalised title and description, space-joined.
pub fn product_text(designation: &str, description: &str) -> String {
    let title = normalize_text(designation);
    let body = normalize_text(description);
    match (title.is_empty(), body.is_empty()) {
        (_, true) => title,
        (true, false) => body,
        (false, false) => format!("{title} {body}"),
    }
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let once = html_escape::decode_html_entities(text).into_owned();
    if once.contains('&') && once != text {
        html_escape::decode_html_entities(&once).into_owned()
    } else {
        once
    }
}

/// Removes anything shaped like an HTML tag or comment: `<` followed by a letter, `/`, `!` or `?`
/// up to the next `>`. A lone `<` (as in "< 5 cm") is kept.
fn strip_tags(text: &str) -> String {
    if !text.contains('<') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let looks_like_tag = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?'));
        if !looks_like_tag {
            out.push('<');
            rest = after;
            continue;
        }
        // The tag ends at the first `>` unless another `<` comes first (then this `<` is text
        // and the scan goes on from the next one). Each byte is looked at a bounded number of
        // times, so the whole pass is linear in the text's length.
        match after.find(['<', '>']) {
            Some(end) if after.as_bytes()[end] == b'>' => {
                out.push(' ');
                rest = &after[end + 1..];
            }
            Some(next) => {
                out.push('<');
                out.push_str(&after[..next]);
                rest = &after[next..];
            }
            None => {
                // No `>` anywhere after: nothing left can be a tag.
                out.push('<');
                out.push_str(after);
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() || c == '\u{feff}' || c == '\u{200b}' {
            pending_space = true;
        } else {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(normalize_text(input), expected, "input: {input:?}");
    }

    #[test]
    fn normalises_marketplace_html() {
        check("", "");
        check("   ", "");
        check("Lampe &eacute;tanche", "Lampe étanche");
        check("l&#39;arbre", "l'arbre");
        check("double &amp;eacute;t&amp;eacute;", "double été");
        check("a<br>b<br />c", "a b c");
        check("<p>Mod&egrave;le:<strong> X</strong></p>", "Modèle: X");
        check("&lt;br&gt;escaped tag", "escaped tag");
        check("taille < 5 cm et > 2", "taille < 5 cm et > 2");
        check("espace\u{a0}insécable", "espace insécable");
        check("tab\tand\r\nnewlines   many", "tab and newlines many");
        check("<span class=\"x\">é</span>", "é");
        check("<!-- comment -->texte", "texte");
        // Decomposed e + combining acute becomes the composed character.
        check("cafe\u{301}", "café");
        check("R&amp;D", "R&D");
    }

    #[test]
    fn product_text_joins_non_empty_fields() {
        assert_eq!(product_text("Titre", ""), "Titre");
        assert_eq!(product_text("", "<p>Corps</p>"), "Corps");
        assert_eq!(product_text("Titre", "<b>Corps</b>"), "Titre Corps");
    }

    #[test]
    fn never_leaves_markup_or_double_spaces_on_real_rows() {
        let Ok(root) = std::env::var("PRODCAT_SAMPLE_DATA") else {
            eprintln!("skipped: PRODCAT_SAMPLE_DATA is not set (real-sample normalisation test)");
            return;
        };
        let path = std::path::Path::new(&root).join("text/X_train_sample.csv");
        let raw = std::fs::read_to_string(&path).expect("read X_train_sample.csv");
        let mut checked = 0;
        let mut with_markup = 0;
        for line in raw.lines().skip(1) {
            if line.contains("&#39;") || line.contains("<br") || line.contains("&eacute;") {
                with_markup += 1;
            }
            let normalized = normalize_text(line);
            assert!(!normalized.contains("  "), "double space in {normalized:?}");
            for marker in [
                "&#39;", "&eacute;", "<br", "</p>", "<li>", "&nbsp;", "&amp;",
            ] {
                assert!(
                    !normalized.contains(marker),
                    "{marker} left in {normalized:?}"
                );
            }
            checked += 1;
        }
        assert!(
            checked > 1000,
            "expected the real sample, read {checked} lines"
        );
        assert!(with_markup > 100, "the sample should contain markup");
    }
}
