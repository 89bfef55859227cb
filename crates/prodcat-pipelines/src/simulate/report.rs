//! The simulation's report: a self-contained HTML page with the weekly chart (SVG) and table.

use prodcat_domain::escape_html as escape;

use super::{SimulationReport, WeekResult};
use crate::window::format_ms;

fn short(version: &str) -> String {
    version.chars().take(11).collect()
}

/// The SVG chart: weekly F1 (with and without retraining), drifted-feature share, injected
/// drift, retraining events and the champion of each week.
pub(crate) fn render_chart(report: &SimulationReport) -> String {
    let (width, height) = (860.0_f64, 420.0_f64);
    let (left, right, top, bottom) = (60.0, 200.0, 30.0, 90.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let n = report.weeks.len().max(1);
    let x = |week: usize| left + plot_w * ((week as f64 - 0.5) / n as f64);
    let y = |value: f64| top + plot_h * (1.0 - value.clamp(0.0, 1.0));
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    svg.push_str(&format!(
        "<rect x=\"{left}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"#fafafa\" stroke=\"#ccc\"/>\n"
    ));
    for tick in 0..=10 {
        let value = tick as f64 / 10.0;
        svg.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{value:.1}</text>\n",
            left + plot_w,
            left - 6.0,
            y(value) + 4.0,
            y = y(value)
        ));
    }
    // Retraining events: between the week that found drift and the next week.
    for week in &report.weeks {
        if week.retrain_run.is_none() {
            continue;
        }
        let position = x(week.week) + plot_w / n as f64 / 2.0;
        let colour = if week.promoted { "#2e7d32" } else { "#9e9e9e" };
        let label = match (&week.challenger, week.promoted) {
            (Some(c), true) => format!("retrained, {} promoted", short(c)),
            (Some(_), false) => "retrained, not promoted".to_string(),
            (None, _) => "retrain: no new data".to_string(),
        };
        svg.push_str(&format!(
            "<line x1=\"{position:.1}\" x2=\"{position:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/>\n<text x=\"{:.1}\" y=\"{}\" fill=\"{colour}\" transform=\"rotate(-90 {:.1} {})\" text-anchor=\"end\">{}</text>\n",
            top + plot_h,
            position - 4.0,
            top + 6.0,
            position - 4.0,
            top + 6.0,
            escape(&label)
        ));
    }
    let series: [(&str, &str, &str, WeekValue); 4] = [
        ("weighted F1 (served champion)", "#1565c0", "", |w| {
            w.weighted_f1
        }),
        ("weighted F1 without retraining", "#757575", "6 4", |w| {
            w.without_retraining_f1
        }),
        ("share of drifted features", "#ef6c00", "", |w| {
            w.drifted_feature_share
        }),
        ("injected drift share", "#c62828", "2 3", |w| {
            w.injected_drift
        }),
    ];
    for (index, (name, colour, dash, value)) in series.iter().enumerate() {
        let points: Vec<(f64, f64)> = report
            .weeks
            .iter()
            .map(|w| (x(w.week), y(value(w))))
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        svg.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2.5\" stroke-dasharray=\"{dash}\"/>\n",
            path.join(" ")
        ));
        for (px, py) in &points {
            svg.push_str(&format!(
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"{colour}\"/>\n"
            ));
        }
        let legend_y = top + 10.0 + index as f64 * 22.0;
        let legend_x = left + plot_w + 14.0;
        svg.push_str(&format!(
            "<line x1=\"{legend_x}\" x2=\"{}\" y1=\"{legend_y}\" y2=\"{legend_y}\" stroke=\"{colour}\" stroke-width=\"2.5\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            legend_x + 24.0,
            legend_x + 30.0,
            legend_y + 4.0,
            escape(name)
        ));
    }
    let legend_y = top + 10.0 + 4.0 * 22.0;
    let legend_x = left + plot_w + 14.0;
    svg.push_str(&format!(
        "<line x1=\"{legend_x}\" x2=\"{}\" y1=\"{legend_y}\" y2=\"{legend_y}\" stroke=\"#2e7d32\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/><text x=\"{}\" y=\"{}\">retraining</text>\n",
        legend_x + 24.0,
        legend_x + 30.0,
        legend_y + 4.0
    ));
    for week in &report.weeks {
        let px = x(week.week);
        svg.push_str(&format!(
            "<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\">week {}</text>\n<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>\n<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">drift {:.0}%</text>\n",
            top + plot_h + 18.0,
            week.week,
            top + plot_h + 36.0,
            escape(&short(&week.champion)),
            top + plot_h + 54.0,
            week.injected_drift * 100.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">champion serving the week</text>\n",
        left + plot_w / 2.0,
        height - 8.0
    ));
    svg.push_str("</svg>\n");
    svg
}

/// One plotted value of a week.
type WeekValue = fn(&WeekResult) -> f64;

fn cell(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "–".to_string())
}

/// The self-contained HTML report.
pub(crate) fn render_report(report: &SimulationReport) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>prodcat drift simulation</title>\n<style>\
         body{font-family:sans-serif;margin:2rem;max-width:1100px;color:#222}\
         table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}\
         th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:right}\
         th{background:#f3f3f3}td.left,th.left{text-align:left}\
         tr.drift td{background:#fff3e0}code{font-size:.85rem}</style></head><body>\n",
    );
    html.push_str("<h1>Drift simulation</h1>\n");
    html.push_str(&format!(
        "<p>Data: {}. {} weeks, drift growing linearly from 0% to {:.0}% (then held there), {} products a week, \
         {:.0}% of them labelled by reviewers; first champion <code>{}</code> trained on {} \
         products (weighted F1 {} on its test split), branch <code>{}</code>, seed {}. \
         Drifted traffic comes from the focus categories {} (foreign-language listings) and \
         degraded listings. Wall time {:.0} s.</p>\n",
        escape(&report.data_source),
        report.weeks.len(),
        report.options.max_drift * 100.0,
        report.traffic_per_week,
        report.options.review_share * 100.0,
        report.initial_champion,
        report.initial_rows,
        cell(report.initial_test_f1),
        escape(&report.options.branches),
        report.options.seed,
        report
            .focus_categories
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        report.wall_seconds
    ));
    html.push_str(&render_chart(report));
    html.push_str(
        "<table><thead><tr><th>week</th><th>injected drift</th><th>traffic</th>\
         <th class=\"left\">champion</th><th>weighted F1</th><th>F1 clean / drifted</th>\
         <th>F1 without retraining</th><th>drifted features</th><th>reviewed F1 (reference)</th>\
         <th class=\"left\">decision</th><th class=\"left\">retraining</th><th class=\"left\">report</th></tr></thead><tbody>\n",
    );
    for week in &report.weeks {
        let retraining =
            match (&week.retrain_run, &week.challenger) {
                (Some(run), Some(challenger)) => format!(
                "<code>{}</code>: {} new rows, challenger <code>{}</code> {} vs champion {} → {}",
                escape(run),
                week.new_rows.unwrap_or(0),
                escape(&short(challenger)),
                cell(week.challenger_test_f1),
                cell(week.champion_test_f1),
                if week.promoted { "promoted" } else { "not promoted" }
            ),
                (Some(run), None) => format!("<code>{}</code>: no new data", escape(run)),
                _ => "–".to_string(),
            };
        let decision = if week.drift_found {
            let mut kinds = Vec::new();
            if week.dataset_drift {
                kinds.push("data drift");
            }
            if week.concept_drift == Some(true) {
                kinds.push("concept drift");
            }
            kinds.join(" + ")
        } else {
            "no drift".to_string()
        };
        html.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{:.0}%</td><td>{}</td><td class=\"left\"><code>{}</code></td>\
             <td>{:.4}</td><td>{} / {}</td><td>{:.4}</td><td>{}/{} ({:.0}%)</td><td>{} ({})</td>\
             <td class=\"left\">{}</td><td class=\"left\">{}</td><td class=\"left\">{}</td></tr>\n",
            if week.drift_found { "drift" } else { "" },
            week.week,
            week.injected_drift * 100.0,
            week.traffic,
            escape(&short(&week.champion)),
            week.weighted_f1,
            cell(week.weighted_f1_clean),
            cell(week.weighted_f1_drifted),
            week.without_retraining_f1,
            week.drifted_features.len(),
            week.tested_features,
            week.drifted_feature_share * 100.0,
            cell(week.concept_f1),
            cell(week.concept_reference_f1),
            decision,
            retraining,
            week.drift_report_file
                .as_ref()
                .map(|f| format!("<a href=\"{0}\">{0}</a>", escape(f)))
                .unwrap_or_else(|| "–".to_string())
        ));
    }
    html.push_str("</tbody></table>\n");
    html.push_str(
        "<p>Weighted F1 is measured on each week's whole traffic with its true labels (used for \
         measurement only). Retraining sees the initial data plus the labels the simulated \
         reviewers gave (a uniform random share of the traffic); the challenger is compared with \
         the champion on the new dataset version's test split and promoted only if the policy \
         allows it. \"Without retraining\" is the first champion scored on the same traffic.</p>\n",
    );
    for week in &report.weeks {
        if !week.drifted_features.is_empty() {
            html.push_str(&format!(
                "<p>Week {}: drifted features: {}.</p>\n",
                week.week,
                escape(&week.drifted_features.join(", "))
            ));
        }
    }
    html.push_str(&format!(
        "<p>Notifications recorded: {}. Times are UTC; week 1 starts {}.</p>\n</body></html>\n",
        report.notifications,
        format_ms(report.options.start_ms)
    ));
    html
}

/// The progress line of a finished week.
pub(super) fn week_summary(result: &WeekResult) -> String {
    let reviewed = match (result.concept_f1, result.concept_drift) {
        (Some(f1), Some(drifted)) => format!(
            ", reviewed F1 {f1:.4}{}",
            if drifted { " (concept drift)" } else { "" }
        ),
        _ => String::new(),
    };
    let action = match (&result.retrain_run, &result.challenger) {
        (Some(_), Some(challenger)) => format!(
            "retrained: {challenger} {} ({} vs {})",
            if result.promoted {
                "promoted"
            } else {
                "not promoted"
            },
            result
                .challenger_test_f1
                .map(|f| format!("{f:.4}"))
                .unwrap_or_default(),
            result
                .champion_test_f1
                .map(|f| format!("{f:.4}"))
                .unwrap_or_default()
        ),
        (Some(_), None) => "retraining found no new data".to_string(),
        _ if result.drift_found => "drift found".to_string(),
        _ => "no drift".to_string(),
    };
    format!(
        "week {}: weighted F1 {:.4} (first champion {:.4}); {:.0}% of features drifted{reviewed}; {action}",
        result.week,
        result.weighted_f1,
        result.without_retraining_f1,
        result.drifted_feature_share * 100.0,
    )
}
