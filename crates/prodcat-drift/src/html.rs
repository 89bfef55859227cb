//! Renders a drift report as one self-contained HTML page: inline CSS, inline SVG bar
//! charts of reference vs current per column, a summary table with drifted columns
//! highlighted. No scripts and no external assets.

use std::fmt::Write;

use prodcat_domain::escape_html;

use crate::drift::short_number;
use crate::report::{ColumnDrift, ColumnSummary, DriftReport, Histogram};
use crate::stattest::ScoreKind;

const REFERENCE_COLOUR: &str = "#4c72b0";
const CURRENT_COLOUR: &str = "#dd8452";

fn score_text(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value != 0.0 && value.abs() < 0.001 {
        format!("{value:.3e}")
    } else {
        format!("{value:.4}")
    }
}

/// The whole page.
pub fn render_html(report: &DriftReport) -> String {
    let mut page = String::with_capacity(16 * 1024);
    let title = escape_html(&report.title);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<style>\n{}\n</style>\n</head>\n<body>\n",
        STYLE
    );
    let verdict_class = if report.dataset_drift {
        "verdict drift"
    } else {
        "verdict stable"
    };
    let verdict = if report.dataset_drift {
        "Dataset drift detected"
    } else {
        "No dataset drift"
    };
    let _ = write!(
        page,
        "<header><h1>{title}</h1>\n<p class=\"{verdict_class}\">{verdict}</p>\n\
         <p>{} of {} columns drifted (share {:.2}; dataset drift when the share is at least {:.2}). \
         Reference rows: {}. Current rows: {}.</p>\n",
        report.drifted_columns,
        report.columns.len(),
        report.share_of_drifted_columns,
        report.drift_share,
        report.reference_rows,
        report.current_rows,
    );
    if let Some(concept) = &report.concept_drift {
        let class = if concept.drifted { "drift" } else { "stable" };
        let _ = writeln!(
            page,
            "<p class=\"concept {class}\">Concept drift: weighted F1 {:.4} on {} labelled predictions vs {:.4} \
             on the reference (drop {:.4}, tolerated {:.4}): {}.</p>",
            concept.current_f1,
            concept.labelled_predictions,
            concept.reference_f1,
            concept.drop,
            concept.margin,
            if concept.drifted { "drifted" } else { "stable" }
        );
    }
    page.push_str("</header>\n<main>\n<h2>Summary</h2>\n<table class=\"summary\">\n<thead><tr><th>Column</th><th>Kind</th><th>Test</th><th>Score</th><th>Threshold</th><th>Drift</th></tr></thead>\n<tbody>\n");
    for column in &report.columns {
        let row_class = if column.drifted {
            " class=\"drifted\""
        } else {
            ""
        };
        let _ = writeln!(
            page,
            "<tr{row_class}><td><a href=\"#column-{anchor}\">{name}</a></td><td>{kind}</td><td>{test}</td><td>{score}</td><td>{threshold}</td><td>{drift}</td></tr>",
            anchor = anchor(&column.name),
            name = escape_html(&column.name),
            kind = column.kind,
            test = escape_html(column.test.display_name()),
            score = score_text(column.score),
            threshold = threshold_text(column),
            drift = if column.drifted { "Detected" } else { "Not detected" },
        );
    }
    page.push_str("</tbody>\n</table>\n<h2>Columns</h2>\n");
    for column in &report.columns {
        render_column(&mut page, column);
    }
    let _ = write!(
        page,
        "</main>\n<footer><span class=\"swatch\" style=\"background:{REFERENCE_COLOUR}\"></span> reference \
         <span class=\"swatch\" style=\"background:{CURRENT_COLOUR}\"></span> current</footer>\n</body>\n</html>\n"
    );
    page
}

fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn threshold_text(column: &ColumnDrift) -> String {
    let comparison = match column.score_kind {
        ScoreKind::PValue => "p below",
        ScoreKind::Distance => "at least",
        ScoreKind::RocAuc => "above",
    };
    if (column.decision_threshold - column.threshold).abs() > 0.0 {
        format!(
            "{comparison} {} (the {} percentile of random classifiers)",
            score_text(column.decision_threshold),
            ordinal_percent(column.threshold)
        )
    } else {
        format!("{comparison} {}", score_text(column.threshold))
    }
}

fn ordinal_percent(fraction: f64) -> String {
    let percent = (fraction * 100.0).round() as i64;
    let suffix = match (percent % 10, percent % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{percent}{suffix}")
}

fn render_column(page: &mut String, column: &ColumnDrift) {
    let class = if column.drifted {
        "column drifted"
    } else {
        "column"
    };
    let _ = write!(
        page,
        "<section class=\"{class}\" id=\"column-{}\">\n<h3>{} <small>{} · {} = {} · {}</small></h3>\n",
        anchor(&column.name),
        escape_html(&column.name),
        column.kind,
        escape_html(column.test.display_name()),
        score_text(column.score),
        if column.drifted { "drift detected" } else { "no drift" },
    );
    page.push_str(&bar_chart_svg(&column.histogram));
    page.push_str("<table class=\"stats\"><thead><tr><th></th><th>reference</th><th>current</th></tr></thead><tbody>\n");
    for (label, reference, current) in summary_rows(&column.reference, &column.current) {
        let _ = writeln!(
            page,
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            escape_html(label),
            escape_html(&reference),
            escape_html(&current)
        );
    }
    page.push_str("</tbody></table>\n");
    if let Some(details) = &column.text_details {
        let _ = writeln!(
            page,
            "<p class=\"words\">Words typical of current data: {}<br>Words typical of reference data: {}</p>",
            escape_html(&details.typical_current_words.join(", ")),
            escape_html(&details.typical_reference_words.join(", "))
        );
    }
    page.push_str("</section>\n");
}

fn summary_rows(
    reference: &ColumnSummary,
    current: &ColumnSummary,
) -> Vec<(&'static str, String, String)> {
    fn fields(summary: &ColumnSummary) -> Vec<(&'static str, String)> {
        match summary {
            ColumnSummary::Numeric {
                count,
                missing,
                mean,
                std,
                min,
                median,
                max,
            } => vec![
                ("count", count.to_string()),
                ("missing", missing.to_string()),
                ("mean", short_number(*mean)),
                ("std", short_number(*std)),
                ("min", short_number(*min)),
                ("median", short_number(*median)),
                ("max", short_number(*max)),
            ],
            ColumnSummary::Categorical {
                count,
                missing,
                distinct,
                most_common,
                most_common_share,
            } => vec![
                ("count", count.to_string()),
                ("missing", missing.to_string()),
                ("distinct", distinct.to_string()),
                (
                    "most common",
                    format!("{most_common} ({:.1}%)", most_common_share * 100.0),
                ),
            ],
            ColumnSummary::Text {
                count,
                missing,
                distinct,
                mean_characters,
                mean_words,
            } => vec![
                ("count", count.to_string()),
                ("missing", missing.to_string()),
                ("distinct", distinct.to_string()),
                ("mean characters", format!("{mean_characters:.1}")),
                ("mean words", format!("{mean_words:.1}")),
            ],
        }
    }
    let left = fields(reference);
    let right = fields(current);
    left.into_iter()
        .zip(right)
        .map(|((label, a), (_, b))| (label, a, b))
        .collect()
}

/// A grouped bar chart (reference and current share per bin) as inline SVG.
pub fn bar_chart_svg(histogram: &Histogram) -> String {
    let bins = histogram.labels.len();
    if bins == 0 {
        return "<p>No values to chart.</p>\n".into();
    }
    let (width, height) = (720.0_f64, 260.0_f64);
    let (left, right, top, bottom) = (48.0, 12.0, 24.0, 70.0);
    let plot_width = width - left - right;
    let plot_height = height - top - bottom;
    let maximum = histogram
        .reference
        .iter()
        .chain(&histogram.current)
        .copied()
        .fold(0.0_f64, f64::max)
        .max(1e-12);
    let group = plot_width / bins as f64;
    let bar = (group * 0.4).max(0.5);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" \
         aria-label=\"share per {} for reference and current data\" xmlns=\"http://www.w3.org/2000/svg\">",
        escape_html(&histogram.measure)
    );
    for step in 0..=4 {
        let fraction = step as f64 / 4.0;
        let y = top + plot_height * (1.0 - fraction);
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{:.0}%</text>",
            width - right,
            left - 4.0,
            y + 4.0,
            maximum * fraction * 100.0
        );
    }
    for (offset, (colour, side)) in [(REFERENCE_COLOUR, "reference"), (CURRENT_COLOUR, "current")]
        .into_iter()
        .enumerate()
    {
        let x = width - right - 170.0 + 85.0 * offset as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{x:.1}\" y=\"4\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"13\" class=\"axis\">{side}</text>",
            x + 14.0,
        );
    }
    for index in 0..bins {
        let x = left + group * index as f64 + group * 0.1;
        for (offset, (values, colour, side)) in [
            (&histogram.reference, REFERENCE_COLOUR, "reference"),
            (&histogram.current, CURRENT_COLOUR, "current"),
        ]
        .into_iter()
        .enumerate()
        {
            let value = values.get(index).copied().unwrap_or(0.0);
            let bar_height = plot_height * value / maximum;
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{bar_height:.1}\" fill=\"{colour}\"><title>{} {}: {:.2}%</title></rect>",
                x + bar * offset as f64,
                top + plot_height - bar_height,
                side,
                escape_html(&histogram.labels[index]),
                value * 100.0
            );
        }
        let label_every = bins.div_ceil(24).max(1);
        if index % label_every == 0 {
            let label_x = left + group * (index as f64 + 0.5);
            let label_y = top + plot_height + 12.0;
            let mut label: String = histogram.labels[index].chars().take(18).collect();
            if histogram.labels[index].chars().count() > 18 {
                label.push('…');
            }
            let _ = writeln!(
                svg,
                "<text x=\"{label_x:.1}\" y=\"{label_y:.1}\" class=\"axis\" text-anchor=\"end\" transform=\"rotate(-40 {label_x:.1} {label_y:.1})\">{}</text>",
                escape_html(&label)
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"middle\">{}</text>\n</svg>\n",
        left + plot_width / 2.0,
        height - 4.0,
        escape_html(&histogram.measure)
    );
    svg
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:980px;padding:1rem 1.5rem;color:#222}\
h1{margin-bottom:.25rem}h3 small{font-weight:normal;color:#555}\
.verdict{display:inline-block;padding:.3rem .8rem;border-radius:4px;font-weight:600}\
.verdict.drift,.concept.drift{background:#fde2e1;color:#a1160a}.verdict.stable,.concept.stable{background:#e3f4e1;color:#1d6b16}\
.concept{padding:.3rem .6rem;border-radius:4px}\
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}\
table.summary tr.drifted td{background:#fde2e1;font-weight:600}\
section.column{border-top:1px solid #ccc;padding-top:.5rem;margin-top:1rem}section.column.drifted h3{color:#a1160a}\
svg.chart{max-width:100%;height:auto;display:block}svg .axis{font-size:10px;fill:#555}\
.swatch{display:inline-block;width:.8rem;height:.8rem;vertical-align:middle}footer{margin:1rem 0;color:#555}\
.words{color:#444;font-size:.9rem}";
