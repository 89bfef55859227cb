//! Shared fixtures of the integration tests.
#![allow(dead_code)]

use prodcat_domain::CategoryCode;

/// Twelve short product texts of four categories.
pub const CORPUS: [(&str, u16); 12] = [
    (
        "Piscine tubulaire ronde 3,66 x 0,76 m avec pompe de filtration",
        2583,
    ),
    ("Pompe de filtration pour piscine hors sol 2 m3/h", 2583),
    ("Bâche à bulles pour piscine ronde 4 m", 2583),
    ("Robot nettoyeur de piscine électrique", 2583),
    ("Jeu vidéo PS4 aventure édition collector", 40),
    ("Manette sans fil pour console PS4 noire", 50),
    ("Jeu vidéo Nintendo Switch aventure et plateforme", 40),
    ("Câble de charge pour manette Switch", 50),
    ("Roman policier édition poche, très bon état", 10),
    ("Livre ancien : histoire de France, édition 1950", 10),
    ("Roman d'aventure pour la jeunesse, édition illustrée", 10),
    ("Jeu vidéo PC aventure, code de téléchargement", 40),
];

pub fn corpus_texts() -> Vec<&'static str> {
    CORPUS.iter().map(|(text, _)| *text).collect()
}

pub fn corpus_labels() -> Vec<CategoryCode> {
    CORPUS
        .iter()
        .map(|(_, code)| CategoryCode::from_u16(*code).unwrap())
        .collect()
}

/// A generated corpus: `per_class` texts for each of `classes` categories, each text made of
/// class-specific and shared words chosen by a seeded generator.
pub fn generated_corpus(
    classes: usize,
    per_class: usize,
    seed: u64,
) -> (Vec<String>, Vec<CategoryCode>) {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let shared = [
        "lot",
        "neuf",
        "qualité",
        "couleur",
        "taille",
        "modèle",
        "prix",
        "livraison",
    ];
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for class in 0..classes {
        let category = CategoryCode::from_index(class).unwrap();
        for _ in 0..per_class {
            let mut words = Vec::new();
            for _ in 0..(4 + next() % 8) {
                if next() % 3 == 0 {
                    words.push(shared[(next() % shared.len() as u64) as usize].to_string());
                } else {
                    words.push(format!("mot{}x{}", class, next() % 6));
                }
            }
            texts.push(words.join(" "));
            labels.push(category);
        }
    }
    (texts, labels)
}
