//! Text analysis shared by indexing and querying: the tokenizer chain registered in the keyword
//! index (split on non-alphanumerics, lowercase, fold accents to ASCII), the stop words that never
//! make a query term required, the edit distance used for typo tolerance and spelling
//! suggestions, and the bounded text that is embedded for search by meaning.

use prodcat_domain::normalize_text;
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer, TokenStream,
};

/// Name under which the folding analyzer is registered in the keyword index.
pub const FOLDED_TOKENIZER: &str = "prodcat_folded";

/// Tokens longer than this many bytes are dropped (URLs, serial numbers run together).
pub const MAX_TOKEN_BYTES: usize = 40;

/// A query keeps at most this many tokens; the rest is ignored so one request stays cheap.
pub const MAX_QUERY_TOKENS: usize = 32;

/// Raw description bytes read before normalisation when building the embedded text.
const DESCRIPTION_PREFIX_BYTES: usize = 8 * 1024;

/// Raw bytes of a field indexed for keywords (titles are ~70 characters; descriptions are capped
/// so a pathological 10 MB description cannot stall the writer).
pub const MAX_INDEXED_FIELD_BYTES: usize = 64 * 1024;

/// The analyzer used for both fields and queries: `été`, `ETE` and `eté` all become `ete`.
pub fn folded_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// Same token boundaries as [`folded_analyzer`] but accents kept: the form shown to people.
fn surface_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .build()
}

/// One analysed word: the indexed (folded) form and the lowercase form as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysedToken {
    pub folded: String,
    pub surface: String,
}

/// Tokens of `text` in order, folded and as written.
pub fn analyse(text: &str) -> Vec<AnalysedToken> {
    let folded = collect_tokens(&mut folded_analyzer(), text);
    let surface = collect_tokens(&mut surface_analyzer(), text);
    if folded.len() == surface.len() {
        folded
            .into_iter()
            .zip(surface)
            .map(|(folded, surface)| AnalysedToken { folded, surface })
            .collect()
    } else {
        // Cannot happen with the filters above (folding never splits or drops a token), but a
        // mismatch must not pair the wrong words: show the folded form then.
        folded
            .into_iter()
            .map(|folded| AnalysedToken {
                surface: folded.clone(),
                folded,
            })
            .collect()
    }
}

/// Folded tokens of `text`.
pub fn folded_tokens(text: &str) -> Vec<String> {
    collect_tokens(&mut folded_analyzer(), text)
}

fn collect_tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut tokens = Vec::new();
    while stream.advance() {
        tokens.push(stream.token().text.clone());
    }
    tokens
}

/// French and English function words (folded). A query made only of content words requires
/// them all; stop words only add to the score.
const STOP_WORDS: &[&str] = &[
    "a", "au", "aux", "avec", "ce", "ces", "cet", "cette", "d", "dans", "de", "des", "du", "en",
    "et", "l", "la", "le", "les", "leur", "leurs", "ma", "mes", "mon", "nos", "notre", "ou", "par",
    "pour", "qu", "que", "qui", "sa", "sans", "ses", "son", "sur", "ta", "tes", "ton", "un", "une",
    "vos", "votre", "an", "and", "for", "in", "of", "on", "or", "the", "to", "with",
];

/// Whether a folded token is a stop word.
pub fn is_stop_word(folded: &str) -> bool {
    STOP_WORDS.contains(&folded)
}

/// Typo tolerance of a query word by its length in characters: none below 4, one edit from 4,
/// two edits from 8.
pub fn allowed_edits(word: &str) -> u8 {
    match word.chars().count() {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// Optimal-string-alignment distance (insertions, deletions, substitutions and transpositions of
/// adjacent characters each cost one), or `None` when it exceeds `limit`.
pub fn edit_distance(left: &str, right: &str, limit: usize) -> Option<usize> {
    let left: Vec<char> = left.chars().collect();
    let right: Vec<char> = right.chars().collect();
    if left.len().abs_diff(right.len()) > limit {
        return None;
    }
    let width = right.len() + 1;
    let mut before_previous = vec![0usize; width];
    let mut previous: Vec<usize> = (0..width).collect();
    let mut current = vec![0usize; width];
    for i in 1..=left.len() {
        current[0] = i;
        let mut row_minimum = current[0];
        for j in 1..=right.len() {
            let substitution = usize::from(left[i - 1] != right[j - 1]);
            let mut value = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + substitution);
            if i > 1 && j > 1 && left[i - 1] == right[j - 2] && left[i - 2] == right[j - 1] {
                value = value.min(before_previous[j - 2] + 1);
            }
            current[j] = value;
            row_minimum = row_minimum.min(value);
        }
        if row_minimum > limit {
            return None;
        }
        std::mem::swap(&mut before_previous, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    let distance = previous[right.len()];
    (distance <= limit).then_some(distance)
}

/// The text embedded for search by meaning: the normalised title, then at most
/// `description_words` words of the normalised description (read from its first 8 KiB).
pub fn embedding_text(designation: &str, description: &str, description_words: usize) -> String {
    let title = normalize_text(truncate_at_char_boundary(
        designation,
        MAX_INDEXED_FIELD_BYTES,
    ));
    let mut text = title;
    if description_words > 0 {
        let body = normalize_text(truncate_at_char_boundary(
            description,
            DESCRIPTION_PREFIX_BYTES,
        ));
        for word in body.split_whitespace().take(description_words) {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(word);
        }
    }
    text
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character boundary.
pub fn truncate_at_char_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accents_and_case_fold_to_the_same_token() {
        for text in ["été", "ETE", "eté", "Été", "ÉTÉ"] {
            assert_eq!(folded_tokens(text), vec!["ete".to_string()], "{text}");
        }
        assert_eq!(
            folded_tokens("Cœur de Lion, 3,66 m"),
            vec!["coeur", "de", "lion", "3", "66", "m"]
        );
    }

    #[test]
    fn analysis_keeps_the_written_form_beside_the_folded_one() {
        let tokens = analyse("Piscine ÉTÉ");
        assert_eq!(tokens[0].folded, "piscine");
        assert_eq!(tokens[1].folded, "ete");
        assert_eq!(tokens[1].surface, "été");
    }

    #[test]
    fn edit_distances() {
        let check = |left: &str, right: &str, limit: usize, expected: Option<usize>| {
            assert_eq!(
                edit_distance(left, right, limit),
                expected,
                "{left} / {right}"
            );
        };
        check("piscine", "piscine", 2, Some(0));
        check("piscine", "pisicne", 2, Some(1));
        check("piscine", "piscne", 2, Some(1));
        check("piscine", "piscinee", 2, Some(1));
        check("piscine", "pascone", 2, Some(2));
        check("piscine", "pascona", 2, None);
        check("chat", "chien", 1, None);
        check("", "abc", 3, Some(3));
        check("été", "ete", 2, Some(2));
    }

    #[test]
    fn typo_budget_grows_with_word_length() {
        assert_eq!(allowed_edits("lit"), 0);
        assert_eq!(allowed_edits("lampe"), 1);
        assert_eq!(allowed_edits("trampoline"), 2);
    }

    #[test]
    fn embedded_text_is_title_plus_bounded_description() {
        let description = format!("<p>{}</p>", vec!["mot"; 100].join(" "));
        let text = embedding_text("Piscine &amp; spa", &description, 30);
        assert!(text.starts_with("Piscine & spa mot mot"));
        assert_eq!(text.split_whitespace().count(), 3 + 30);
        assert_eq!(embedding_text("Titre", "", 30), "Titre");
        assert_eq!(embedding_text("", "un deux", 30), "un deux");
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_at_char_boundary("ééé", 3), "é");
        assert_eq!(truncate_at_char_boundary("abc", 10), "abc");
    }
}
