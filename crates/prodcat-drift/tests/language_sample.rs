//! The language detector on the real Rakuten sample (read from `PRODCAT_SAMPLE_DATA`):
//! the catalogue is mostly French, with some English and German listings.

use std::collections::BTreeMap;

use prodcat_drift::features::{detect_language, Language};

#[test]
fn real_sample_is_mostly_french() -> anyhow::Result<()> {
    let Ok(root) = std::env::var("PRODCAT_SAMPLE_DATA") else {
        println!("skipped: PRODCAT_SAMPLE_DATA is not set");
        return Ok(());
    };
    let path = std::path::Path::new(&root).join("text/X_train_sample.csv");
    let mut reader = csv::Reader::from_path(&path)?;
    let mut counts: BTreeMap<Language, usize> = BTreeMap::new();
    let mut examples: BTreeMap<Language, Vec<String>> = BTreeMap::new();
    let mut total = 0usize;
    for record in reader.records() {
        let record = record?;
        let text =
            prodcat_domain::product_text(record.get(1).unwrap_or(""), record.get(2).unwrap_or(""));
        let language = detect_language(&text);
        *counts.entry(language).or_default() += 1;
        let list = examples.entry(language).or_default();
        if list.len() < 3 {
            list.push(text.chars().take(90).collect());
        }
        total += 1;
    }
    println!("{total} rows: {counts:?}");
    for (language, texts) in &examples {
        println!("{}: {texts:?}", language.code());
    }
    let share =
        |language: Language| counts.get(&language).copied().unwrap_or(0) as f64 / total as f64;
    assert!(total > 2000);
    assert!(
        share(Language::Fr) > 0.6,
        "French share {}",
        share(Language::Fr)
    );
    assert!(share(Language::En) > 0.005 && share(Language::En) < 0.2);
    assert!(share(Language::De) > 0.002 && share(Language::De) < 0.1);
    assert!(share(Language::Other) < 0.35);
    Ok(())
}
