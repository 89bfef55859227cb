//! Small SVG charts drawn by the server for the UI's pages: lines of values over time. The
//! pictures carry only numbers, dates and the captions given by the code (no user text), use
//! presentation attributes rather than inline styles (the pages' content policy forbids them),
//! and describe themselves for screen readers.

use std::fmt::Write;

/// One line of a chart: a name for the legend, a colour, and (time in ms, value) points.
pub(crate) struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub points: Vec<(i64, f64)>,
    /// Drawn dashed (a reference rather than a measurement).
    pub dashed: bool,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 34.0;

fn day(ms: i64) -> String {
    prodcat_domain::format_utc_minutes(ms)
        .get(..10)
        .unwrap_or_default()
        .to_string()
}

/// A line chart of values between 0 and 1 over time; `None` when no series has a point.
pub(crate) fn line_chart(title: &str, series: &[Series<'_>]) -> Option<String> {
    let times: Vec<i64> = series
        .iter()
        .flat_map(|line| line.points.iter().map(|(time, _)| *time))
        .collect();
    let (first, last) = (*times.iter().min()?, *times.iter().max()?);
    let span = (last - first).max(1) as f64;
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |time: i64| {
        if first == last {
            LEFT + plot_width / 2.0
        } else {
            LEFT + (time - first) as f64 / span * plot_width
        }
    };
    let y = |value: f64| TOP + (1.0 - value.clamp(0.0, 1.0)) * plot_height;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"{title}\"><title>{title}</title>\
         <rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>"
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d8dde3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5b6470\">{tick:.2}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(tick) + 4.0,
            y = y(tick),
        );
    }
    for (time, anchor) in [(first, "start"), (last, "end")] {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"{anchor}\" fill=\"#5b6470\">{}</text>",
            x(time),
            HEIGHT - 12.0,
            day(time),
        );
    }
    let mut legend_x = LEFT;
    for line in series.iter().filter(|line| !line.points.is_empty()) {
        let dash = if line.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let path: Vec<String> = line
            .points
            .iter()
            .map(|(time, value)| format!("{:.1},{:.1}", x(*time), y(*value)))
            .collect();
        let _ = write!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}/>",
            path.join(" "),
            line.colour
        );
        for (time, value) in &line.points {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"><title>{}: {value:.3} ({})</title></circle>",
                x(*time),
                y(*value),
                line.colour,
                line.name,
                day(*time),
            );
        }
        let _ = write!(
            svg,
            "<line x1=\"{legend_x:.1}\" x2=\"{:.1}\" y1=\"12\" y2=\"12\" stroke=\"{}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{:.1}\" y=\"16\" font-size=\"12\" fill=\"#1b1f24\">{}</text>",
            legend_x + 18.0,
            line.colour,
            legend_x + 22.0,
            line.name,
        );
        legend_x += 30.0 + 7.0 * line.name.len() as f64;
    }
    svg.push_str("</svg>");
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_places_its_points_inside_the_plot_and_names_its_lines() {
        let week = 7 * 86_400_000;
        let svg = line_chart(
            "Weekly figures",
            &[
                Series {
                    name: "weighted F1",
                    colour: "#1f77b4",
                    points: vec![(0, 0.8), (week, 0.7), (2 * week, 1.4)],
                    dashed: false,
                },
                Series {
                    name: "reference F1",
                    colour: "#999999",
                    points: vec![(0, 0.75)],
                    dashed: true,
                },
            ],
        )
        .expect("a chart");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("weighted F1") && svg.contains("reference F1"));
        assert!(svg.contains("stroke-dasharray"));
        assert_eq!(svg.matches("<circle").count(), 4);
        // A value above 1 is drawn on the top line, not above the plot.
        assert!(svg.contains(&format!("cy=\"{TOP:.1}\"")));
        assert!(line_chart("Empty", &[]).is_none());
    }
}
