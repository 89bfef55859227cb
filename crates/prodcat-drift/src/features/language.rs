//! A small language detector for product text: French, English, German, Spanish, Italian,
//! Dutch, or "other" when the evidence is too thin or split. Each function word votes for
//! the languages that use it (a word shared by k languages gives each 1/k), characteristic
//! letters (ç, ß, ñ, …) add half a vote, and the winner must lead clearly.

use serde::{Deserialize, Serialize};

/// A detected language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Fr,
    En,
    De,
    Es,
    It,
    Nl,
    Other,
}

impl Language {
    /// The six languages the detector scores, in score-array order.
    pub const SCORED: [Language; 6] = [
        Language::Fr,
        Language::En,
        Language::De,
        Language::Es,
        Language::It,
        Language::Nl,
    ];

    /// ISO 639-1 code, or "other".
    pub fn code(self) -> &'static str {
        match self {
            Language::Fr => "fr",
            Language::En => "en",
            Language::De => "de",
            Language::Es => "es",
            Language::It => "it",
            Language::Nl => "nl",
            Language::Other => "other",
        }
    }
}

const FRENCH: &[&str] = &[
    "le", "la", "les", "des", "du", "de", "un", "une", "et", "est", "pour", "avec", "sans", "dans",
    "sur", "au", "aux", "ce", "cette", "ces", "qui", "que", "pas", "plus", "vous", "nous", "il",
    "elle", "ils", "sont", "votre", "vos", "leur", "très", "être", "peut", "tout", "tous", "comme",
    "mais", "ou", "où", "en", "par", "son", "sa", "ses", "se", "ne", "aussi", "entre", "idéal",
    "facile", "taille", "couleur",
];
const ENGLISH: &[&str] = &[
    "the", "and", "for", "with", "of", "to", "in", "is", "are", "this", "that", "it", "you",
    "your", "on", "from", "by", "be", "can", "will", "not", "or", "an", "as", "at", "which", "has",
    "have", "was", "these", "our", "its", "all", "more", "use", "easy", "high", "quality", "size",
    "color", "colour", "new", "made", "only", "also", "when", "into",
];
const GERMAN: &[&str] = &[
    "der", "die", "das", "und", "mit", "für", "ist", "ein", "eine", "einen", "dem", "den", "des",
    "nicht", "auf", "auch", "sie", "es", "zu", "von", "im", "sich", "bei", "aus", "oder", "wird",
    "sind", "wie", "noch", "nur", "kann", "ihr", "ihre", "werden", "über", "unter", "aus", "größe",
    "farbe", "hohe",
];
const SPANISH: &[&str] = &[
    "el", "la", "los", "las", "de", "del", "y", "en", "un", "una", "con", "para", "por", "es",
    "que", "se", "su", "sus", "al", "lo", "como", "más", "pero", "muy", "este", "esta", "está",
    "son", "sin", "también", "puede", "tamaño", "color", "fácil", "alta", "calidad",
];
const ITALIAN: &[&str] = &[
    "il", "lo", "la", "gli", "le", "di", "del", "della", "dei", "delle", "e", "è", "un", "una",
    "per", "con", "che", "non", "sono", "nel", "nella", "alla", "al", "da", "dal", "questo",
    "questa", "anche", "più", "molto", "come", "si", "suo", "sua", "essere", "può", "facile",
    "alta", "qualità", "colore",
];
const DUTCH: &[&str] = &[
    "de",
    "het",
    "een",
    "en",
    "van",
    "voor",
    "met",
    "is",
    "zijn",
    "op",
    "te",
    "dat",
    "die",
    "niet",
    "in",
    "aan",
    "ook",
    "als",
    "bij",
    "door",
    "of",
    "naar",
    "uit",
    "wordt",
    "worden",
    "kan",
    "u",
    "uw",
    "je",
    "deze",
    "dit",
    "nog",
    "maar",
    "hoge",
    "kwaliteit",
    "kleur",
    "maat",
    "gemakkelijk",
];

fn word_lists() -> [&'static [&'static str]; 6] {
    [FRENCH, ENGLISH, GERMAN, SPANISH, ITALIAN, DUTCH]
}

/// Letters that point to some languages (index into [`Language::SCORED`]).
fn letter_votes(c: char) -> &'static [usize] {
    match c {
        'ç' | 'ê' | 'â' | 'î' | 'ô' | 'û' | 'ë' | 'ï' | 'œ' => &[0],
        'é' => &[0, 3],
        'è' => &[0, 4],
        'à' => &[0, 4],
        'ù' => &[0, 4],
        'ß' | 'ä' | 'ö' => &[2],
        'ü' => &[2],
        'ñ' | '¿' | '¡' | 'á' | 'í' | 'ó' | 'ú' => &[3],
        'ò' | 'ì' => &[4],
        'ĳ' => &[5],
        _ => &[],
    }
}

/// Per-language evidence for `text` (order of [`Language::SCORED`]).
pub fn language_scores(text: &str) -> [f64; 6] {
    let lists = word_lists();
    let mut scores = [0.0; 6];
    let lower = text.to_lowercase();
    for token in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
    {
        let voters: Vec<usize> = (0..6).filter(|&i| lists[i].contains(&token)).collect();
        if voters.is_empty() {
            continue;
        }
        let share = 1.0 / voters.len() as f64;
        for i in voters {
            scores[i] += share;
        }
    }
    for c in lower.chars() {
        let voters = letter_votes(c);
        if voters.is_empty() {
            continue;
        }
        let share = 0.5 / voters.len() as f64;
        for &i in voters {
            scores[i] += share;
        }
    }
    scores
}

/// The language of `text`: the best-scoring language when it has at least one and a half
/// votes (one word alone is too thin) and leads the runner-up by at least half a vote and by
/// 20 %, otherwise [`Language::Other`].
pub fn detect_language(text: &str) -> Language {
    let scores = language_scores(text);
    let mut order: Vec<usize> = (0..6).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (best, second) = (scores[order[0]], scores[order[1]]);
    if best >= 1.5 && best - second >= 0.5 && best >= second * 1.2 {
        Language::SCORED[order[0]]
    } else {
        Language::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_sentences() {
        let cases = [
            (
                "Housse de coussin en coton pour le salon, idéale avec la décoration",
                Language::Fr,
            ),
            (
                "Ce jeu est livré sans sa boîte mais avec la notice",
                Language::Fr,
            ),
            (
                "Garden chair made of solid wood with a cushion for the terrace",
                Language::En,
            ),
            (
                "This toy is easy to use and the colours are bright",
                Language::En,
            ),
            (
                "Gartenstuhl aus Holz mit Kissen für die Terrasse und den Balkon",
                Language::De,
            ),
            (
                "Das Spiel ist für Kinder ab drei Jahren geeignet",
                Language::De,
            ),
            (
                "Silla de jardín con cojín para la terraza y el balcón",
                Language::Es,
            ),
            (
                "El juguete es muy fácil de usar y los colores son vivos",
                Language::Es,
            ),
            (
                "Sedia da giardino con cuscino per la terrazza e il balcone",
                Language::It,
            ),
            (
                "Il gioco è molto facile da usare e gli colori sono vivaci",
                Language::It,
            ),
            (
                "Tuinstoel van hout met een kussen voor het terras",
                Language::Nl,
            ),
            (
                "Het speelgoed is gemakkelijk te gebruiken en de kleuren zijn fel",
                Language::Nl,
            ),
            ("Nintendo Switch Mario Kart 8", Language::Other),
            ("", Language::Other),
        ];
        for (text, expected) in cases {
            assert_eq!(detect_language(text), expected, "{text}");
        }
    }
}
