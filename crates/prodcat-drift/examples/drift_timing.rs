//! Times each drift test on profile-sized inputs (the default profile keeps 5,000 rows) and
//! prints a table: test, reference rows, current rows, median milliseconds of 5 runs; then
//! the time of one PCA fit and projection on embedding-sized inputs.
//!
//! `cargo run --release -p prodcat-drift --example drift_timing`

use std::time::Instant;

use prodcat_drift::rng::SplitMix64;
use prodcat_drift::{
    detect_drift, ColumnValues, DriftOptions, Profile, ProfileColumn, StatTestKind,
};

fn column(kind: &str, rows: usize, seed: u64) -> ColumnValues {
    let mut rng = SplitMix64::new(seed);
    let words = [
        "coussin", "housse", "coton", "jeu", "console", "lampe", "table", "pour", "avec", "bleu",
        "lot",
    ];
    match kind {
        "numeric" => ColumnValues::Numeric(
            (0..rows)
                .map(|_| 100.0 + 20.0 * rng.next_gaussian())
                .collect(),
        ),
        "categorical" => ColumnValues::Categorical(
            (0..rows)
                .map(|_| format!("c{}", rng.next_below(27)))
                .collect(),
        ),
        "binary" => ColumnValues::Binary((0..rows).map(|_| rng.next_f64() < 0.35).collect()),
        _ => ColumnValues::Text(
            (0..rows)
                .map(|_| {
                    (0..8)
                        .map(|_| words[rng.next_below(words.len() as u64) as usize])
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect(),
        ),
    }
}

fn main() -> anyhow::Result<()> {
    let cases = [
        ("numeric", 1000, 5000, None),
        ("numeric", 5000, 5000, None),
        ("categorical", 1000, 5000, None),
        ("categorical", 5000, 5000, None),
        (
            "categorical",
            5000,
            5000,
            Some(StatTestKind::PopulationStabilityIndex),
        ),
        ("binary", 1000, 5000, None),
        ("binary", 5000, 5000, None),
        ("text", 1000, 1000, None),
        ("text", 5000, 5000, None),
    ];
    println!("| test | column kind | reference rows | current rows | median ms (5 runs) |");
    println!("|---|---|---|---|---|");
    for (kind, reference_rows, current_rows, forced) in cases {
        let reference = Profile::from_columns(vec![ProfileColumn::new(
            "x",
            column(kind, reference_rows, 1),
        )])?;
        let current =
            Profile::from_columns(vec![ProfileColumn::new("x", column(kind, current_rows, 2))])?;
        let options = match forced {
            Some(test) => DriftOptions::default().with_test("x", test),
            None => DriftOptions::default(),
        };
        let mut times = Vec::new();
        let mut test_name = String::new();
        for _ in 0..5 {
            let started = Instant::now();
            let report = detect_drift(&reference, &current, &options)?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            test_name = report.columns[0].test_name.clone();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {test_name} | {kind} | {reference_rows} | {current_rows} | {:.2} |",
            times[2]
        );
    }
    // Principal components of 384-d embeddings (the size of multilingual-e5-small), 5,000 rows,
    // with a decaying spectrum so neighbouring components are hard to separate.
    let mut rng = SplitMix64::new(9);
    let rows: Vec<Vec<f64>> = (0..5000)
        .map(|_| {
            (0..384)
                .map(|j| rng.next_gaussian() / (1.0 + j as f64).sqrt())
                .collect()
        })
        .collect();
    let started = Instant::now();
    let pca = prodcat_drift::features::Pca::fit(&rows, 3)?;
    println!(
        "| PCA fit, 3 components | 384-d embedding | 5000 | - | {:.2} |",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let started = Instant::now();
    for row in &rows {
        pca.project(row)?;
    }
    println!(
        "| PCA projection, 3 components | 384-d embedding | - | 5000 | {:.2} |",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
