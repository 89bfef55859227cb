//! Reads a reference and a current CSV file, tests every declared column for drift and
//! prints the per-column results as JSON (used by `bench/compare-evidently.sh`).
//!
//! Empty cells are missing values, as pandas reads them.
//!
//! ```text
//! cargo run --release -p prodcat-drift --example drift_csv -- \
//!     --reference ref.csv --current cur.csv \
//!     --numeric text_length,rating --categorical language --binary empty_description \
//!     --text text --psi predicted_class [--html report.html] [--report report.json]
//! ```

use std::collections::HashMap;

use anyhow::{bail, Context};
use prodcat_drift::{
    detect_drift, ColumnKind, ColumnSpec, DriftOptions, Profile, ProfileBuilder, StatTestKind,
    Value,
};

struct Arguments {
    reference: String,
    current: String,
    columns: Vec<ColumnSpec>,
    psi: Vec<String>,
    html: Option<String>,
    report: Option<String>,
}

fn parse_arguments() -> anyhow::Result<Arguments> {
    let mut values: HashMap<String, String> = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(name) = flag.strip_prefix("--") else {
            bail!("unexpected argument `{flag}`");
        };
        let value = args
            .next()
            .with_context(|| format!("flag --{name} needs a value"))?;
        values.insert(name.to_owned(), value);
    }
    let list = |name: &str| -> Vec<String> {
        values
            .get(name)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut columns = Vec::new();
    for (flag, kind) in [
        ("numeric", ColumnKind::Numeric),
        ("categorical", ColumnKind::Categorical),
        ("binary", ColumnKind::Binary),
        ("text", ColumnKind::Text),
    ] {
        columns.extend(
            list(flag)
                .into_iter()
                .map(|name| ColumnSpec::new(name, kind)),
        );
    }
    for name in list("psi") {
        if !columns.iter().any(|c| c.name == name) {
            columns.push(ColumnSpec::new(name, ColumnKind::Categorical));
        }
    }
    if columns.is_empty() {
        bail!("declare columns with --numeric, --categorical, --binary, --text or --psi");
    }
    Ok(Arguments {
        reference: values
            .get("reference")
            .cloned()
            .context("--reference is required")?,
        current: values
            .get("current")
            .cloned()
            .context("--current is required")?,
        psi: list("psi"),
        html: values.get("html").cloned(),
        report: values.get("report").cloned(),
        columns,
    })
}

fn parse_value(kind: ColumnKind, cell: &str, column: &str, row: usize) -> anyhow::Result<Value> {
    if cell.is_empty() {
        return Ok(Value::Missing);
    }
    Ok(match kind {
        ColumnKind::Numeric => match cell.to_ascii_lowercase().as_str() {
            "nan" | "na" | "null" => Value::Missing,
            _ => Value::Number(cell.parse().with_context(|| {
                format!("row {row}, column `{column}`: `{cell}` is not a number")
            })?),
        },
        ColumnKind::Categorical => Value::Category(cell.to_owned()),
        ColumnKind::Binary => match cell.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Flag(true),
            "false" | "0" | "no" => Value::Flag(false),
            _ => bail!("row {row}, column `{column}`: `{cell}` is not a yes/no value"),
        },
        ColumnKind::Text => Value::Text(cell.to_owned()),
    })
}

fn read_profile(path: &str, columns: &[ColumnSpec]) -> anyhow::Result<Profile> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("failed to open {path}"))?;
    let headers = reader.headers()?.clone();
    let positions: Vec<usize> = columns
        .iter()
        .map(|spec| {
            headers
                .iter()
                .position(|h| h == spec.name)
                .with_context(|| format!("{path} has no column `{}`", spec.name))
        })
        .collect::<anyhow::Result<_>>()?;
    // Keep every row: the comparison must see exactly the data Evidently sees.
    let mut builder = ProfileBuilder::new(columns.to_vec(), usize::MAX)?;
    for (row, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("failed to read row {row} of {path}"))?;
        let values = columns
            .iter()
            .zip(&positions)
            .map(|(spec, &position)| {
                parse_value(
                    spec.kind,
                    record.get(position).unwrap_or(""),
                    &spec.name,
                    row,
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        builder.push_row(values)?;
    }
    Ok(builder.build())
}

fn main() -> anyhow::Result<()> {
    let arguments = parse_arguments()?;
    let reference = read_profile(&arguments.reference, &arguments.columns)?;
    let current = read_profile(&arguments.current, &arguments.columns)?;
    let mut options = DriftOptions::default();
    for name in &arguments.psi {
        options = options.with_test(name.clone(), StatTestKind::PopulationStabilityIndex);
    }
    let report = detect_drift(&reference, &current, &options).context("drift detection failed")?;
    if let Some(path) = &arguments.html {
        std::fs::write(path, report.to_html())
            .with_context(|| format!("failed to write {path}"))?;
    }
    if let Some(path) = &arguments.report {
        std::fs::write(path, report.to_json()?)
            .with_context(|| format!("failed to write {path}"))?;
    }
    let columns: Vec<serde_json::Value> = report
        .columns
        .iter()
        .map(|c| {
            serde_json::json!({
                "column": c.name,
                "kind": c.kind,
                "test": c.test_name,
                "score": c.score,
                "statistic": c.statistic,
                "threshold": c.threshold,
                "decisionThreshold": c.decision_threshold,
                "drifted": c.drifted,
            })
        })
        .collect();
    let output = serde_json::json!({
        "columns": columns,
        "shareOfDriftedColumns": report.share_of_drifted_columns,
        "datasetDrift": report.dataset_drift,
    });
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
