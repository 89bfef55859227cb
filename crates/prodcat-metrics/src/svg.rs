//! Self-contained SVG pictures of model quality: a row-normalised confusion-matrix heat map and a
//! reliability diagram. Plain strings with no scripts or external resources, so they can be saved
//! as files, embedded in HTML reports or returned by an API as they are.

use std::fmt::Write;

use prodcat_domain::escape_html;

use crate::{ConfusionMatrix, ReliabilityDiagram};

/// Escapes text for SVG element content and attribute values. SVG is XML, which does not allow
/// control characters: they become spaces before the markup characters are escaped.
fn escape(text: &str) -> String {
    if text.chars().any(char::is_control) {
        let printable: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        escape_html(&printable)
    } else {
        escape_html(text)
    }
}

/// The opening tag of a `width` × `height` picture on a white background.
fn svg_opening(width: f64, height: f64) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif">
<rect width="100%" height="100%" fill="#ffffff"/>
"##
    )
}

/// A colour on a white-to-dark-blue ramp for `value` in [0, 1].
fn blue_ramp(value: f64) -> String {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [247.0, 251.0, 255.0]),
        (0.25, [198.0, 219.0, 239.0]),
        (0.5, [107.0, 174.0, 214.0]),
        (0.75, [33.0, 113.0, 181.0]),
        (1.0, [8.0, 48.0, 107.0]),
    ];
    let value = if value.is_finite() {
        value.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let upper = STOPS
        .iter()
        .position(|(at, _)| *at >= value)
        .unwrap_or(4)
        .max(1);
    let (low_at, low) = STOPS[upper - 1];
    let (high_at, high) = STOPS[upper];
    let t = (value - low_at) / (high_at - low_at);
    let channel = |i: usize| (low[i] + t * (high[i] - low[i])).round() as u8;
    format!("#{:02x}{:02x}{:02x}", channel(0), channel(1), channel(2))
}

/// A heat map of the confusion matrix: rows are true classes, columns predicted classes, each
/// cell coloured by the share of its row (recall on the diagonal) and labelled with its count.
/// `labels[i]` names class `i` (missing names fall back to the index). Each cell carries a
/// tooltip with both class names, the count and the row share.
pub fn confusion_matrix_svg(confusion: &ConfusionMatrix, labels: &[String], title: &str) -> String {
    let n = confusion.class_count;
    let name = |i: usize| labels.get(i).cloned().unwrap_or_else(|| i.to_string());
    let longest = (0..n)
        .map(|i| name(i).chars().count())
        .max()
        .unwrap_or(1)
        .min(40);
    let cell = if n <= 12 { 40.0 } else { 26.0 };
    let label_width = 14.0 + longest as f64 * 6.2;
    let top = 60.0 + longest as f64 * 4.6;
    let left = label_width + 24.0;
    let grid = cell * n as f64;
    let width = left + grid + 110.0;
    let height = top + grid + 50.0;
    let mut svg = svg_opening(width, height);
    let _ = write!(
        svg,
        r##"<text x="{x:.1}" y="22" font-size="16" font-weight="bold" text-anchor="middle">{title}</text>
<text x="{x:.1}" y="40" font-size="11" fill="#555555" text-anchor="middle">rows: true class, columns: predicted class; colour = share of the row, number = count ({total} samples)</text>
"##,
        x = width / 2.0,
        title = escape(title),
        total = confusion.total(),
    );
    let grid_layout = ConfusionGrid {
        left,
        top,
        cell,
        grid,
    };
    for truth in 0..n {
        confusion_row(&mut svg, &grid_layout, confusion, truth, &name);
    }
    for predicted in 0..n {
        let x = left + predicted as f64 * cell + cell / 2.0 + 4.0;
        let _ = writeln!(
            svg,
            r##"<text x="{x:.1}" y="{y:.1}" font-size="11" text-anchor="start" transform="rotate(-60 {x:.1} {y:.1})">{label}</text>"##,
            y = top - 6.0,
            label = escape(&name(predicted)),
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{x:.1}" y="{y:.1}" font-size="12" text-anchor="middle">predicted class</text>
<text x="{rx:.1}" y="{ry:.1}" font-size="10" fill="#555555">recall of support</text>
</svg>"##,
        x = left + grid / 2.0,
        y = top + grid + 30.0,
        rx = left + grid + 6.0,
        ry = top - 6.0,
    );
    svg
}

/// Where the cells of a confusion-matrix picture go.
struct ConfusionGrid {
    left: f64,
    top: f64,
    cell: f64,
    /// Width (and height) of all the cells.
    grid: f64,
}

/// The row of true class `truth`: its label, one coloured cell per predicted class (with its
/// count when not zero) and the class's recall.
fn confusion_row(
    svg: &mut String,
    layout: &ConfusionGrid,
    confusion: &ConfusionMatrix,
    truth: usize,
    name: &dyn Fn(usize) -> String,
) {
    let (left, cell) = (layout.left, layout.cell);
    let support = confusion.support(truth);
    let y = layout.top + truth as f64 * cell;
    let _ = writeln!(
        svg,
        r##"<text x="{lx:.1}" y="{ty:.1}" font-size="11" text-anchor="end">{label}</text>"##,
        lx = left - 6.0,
        ty = y + cell / 2.0 + 4.0,
        label = escape(&name(truth)),
    );
    for predicted in 0..confusion.class_count {
        let count = confusion.count(truth, predicted);
        let share = if support == 0 {
            0.0
        } else {
            count as f64 / support as f64
        };
        let x = left + predicted as f64 * cell;
        let stroke = if truth == predicted {
            r##" stroke="#d95f02" stroke-width="1.5""##
        } else {
            r##" stroke="#ffffff" stroke-width="0.5""##
        };
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" fill="{fill}"{stroke}><title>true {t} / predicted {p}: {count} ({percent:.1}% of the row)</title></rect>"##,
            fill = blue_ramp(share),
            t = escape(&name(truth)),
            p = escape(&name(predicted)),
            percent = share * 100.0,
        );
        if count > 0 {
            let colour = if share > 0.5 { "#ffffff" } else { "#1a1a1a" };
            let _ = writeln!(
                svg,
                r##"<text x="{cx:.1}" y="{cy:.1}" font-size="{size}" fill="{colour}" text-anchor="middle">{count}</text>"##,
                cx = x + cell / 2.0,
                cy = y + cell / 2.0 + 3.5,
                size = if cell > 30.0 { 12 } else { 9 },
            );
        }
    }
    let recall = if support == 0 {
        0.0
    } else {
        confusion.count(truth, truth) as f64 / support as f64
    };
    let _ = writeln!(
        svg,
        r##"<text x="{rx:.1}" y="{ty:.1}" font-size="10" fill="#555555">{percent:.0}% of {support}</text>"##,
        rx = left + layout.grid + 6.0,
        ty = y + cell / 2.0 + 4.0,
        percent = recall * 100.0,
    );
}

const SERIES_COLOURS: [&str; 4] = ["#d95f02", "#1b9e77", "#7570b3", "#e7298a"];

/// Where the parts of a reliability diagram go.
struct ReliabilityLayout {
    left: f64,
    top: f64,
    plot: f64,
    histogram: f64,
    /// Top of the histogram of samples per bin.
    histogram_top: f64,
    /// The largest bin count of all series (at least 1).
    max_count: u64,
    series_count: f64,
}

impl ReliabilityLayout {
    fn x_of(&self, value: f64) -> f64 {
        self.left + value.clamp(0.0, 1.0) * self.plot
    }

    fn y_of(&self, value: f64) -> f64 {
        self.top + self.plot - value.clamp(0.0, 1.0) * self.plot
    }
}

/// A reliability diagram: per confidence bin, the accuracy against the mean confidence, for one
/// or more named series (for example before and after calibration), over the diagonal of perfect
/// calibration, with a histogram of how many samples fall in each bin and each series' ECE.
pub fn reliability_diagram_svg(series: &[(&str, &ReliabilityDiagram)], title: &str) -> String {
    let (left, top, plot, histogram) = (60.0, 50.0, 360.0, 80.0);
    let layout = ReliabilityLayout {
        left,
        top,
        plot,
        histogram,
        histogram_top: top + plot + 58.0,
        max_count: series
            .iter()
            .flat_map(|(_, diagram)| diagram.bins.iter().map(|bin| bin.count))
            .max()
            .unwrap_or(0)
            .max(1),
        series_count: series.len().max(1) as f64,
    };
    let mut svg = reliability_axes(&layout, title);
    for (index, (name, diagram)) in series.iter().enumerate() {
        reliability_series(&mut svg, &layout, index, name, diagram);
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{l:.1}" y1="{b:.1}" x2="{r:.1}" y2="{b:.1}" stroke="#999999"/>
<text x="{lx:.1}" y="{ly:.1}" font-size="10" fill="#555555">samples per bin (max {max_count})</text>
</svg>"##,
        l = left,
        r = left + plot,
        b = layout.histogram_top + histogram,
        lx = left,
        ly = layout.histogram_top - 4.0,
        max_count = layout.max_count,
    );
    svg
}

/// The opening of a reliability diagram: title, plot area, diagonal, ticks and axis names.
fn reliability_axes(layout: &ReliabilityLayout, title: &str) -> String {
    let (left, top, plot) = (layout.left, layout.top, layout.plot);
    let width = left + plot + 210.0;
    let height = top + plot + layout.histogram + 80.0;
    let mut svg = svg_opening(width, height);
    let _ = writeln!(
        svg,
        r##"<text x="{tx:.1}" y="24" font-size="16" font-weight="bold" text-anchor="middle">{title}</text>
<rect x="{left}" y="{top}" width="{plot}" height="{plot}" fill="#fafafa" stroke="#999999"/>
<line x1="{x0:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y1:.1}" stroke="#888888" stroke-dasharray="5,4"/>"##,
        tx = width / 2.0,
        title = escape(title),
        x0 = layout.x_of(0.0),
        y0 = layout.y_of(0.0),
        x1 = layout.x_of(1.0),
        y1 = layout.y_of(1.0),
    );
    for tick in 0..=5 {
        let value = tick as f64 / 5.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{b:.1}" x2="{x:.1}" y2="{b2:.1}" stroke="#999999"/><text x="{x:.1}" y="{ty:.1}" font-size="10" text-anchor="middle">{value:.1}</text>
<line x1="{l2:.1}" y1="{y:.1}" x2="{l:.1}" y2="{y:.1}" stroke="#999999"/><text x="{lx:.1}" y="{yy:.1}" font-size="10" text-anchor="end">{value:.1}</text>"##,
            x = layout.x_of(value),
            b = top + plot,
            b2 = top + plot + 4.0,
            ty = top + plot + 15.0,
            y = layout.y_of(value),
            l = left,
            l2 = left - 4.0,
            lx = left - 7.0,
            yy = layout.y_of(value) + 3.5,
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{x:.1}" y="{y:.1}" font-size="12" text-anchor="middle">mean top-1 confidence in the bin</text>
<text x="16" y="{ay:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {ay:.1})">accuracy in the bin</text>"##,
        x = left + plot / 2.0,
        y = top + plot + 32.0,
        ay = top + plot / 2.0,
    );
    svg
}

/// One series of a reliability diagram: its curve and points, its histogram bars and its
/// legend entry.
fn reliability_series(
    svg: &mut String,
    layout: &ReliabilityLayout,
    index: usize,
    name: &str,
    diagram: &ReliabilityDiagram,
) {
    let colour = SERIES_COLOURS[index % SERIES_COLOURS.len()];
    let points: Vec<(f64, f64, &crate::ReliabilityBin)> = diagram
        .bins
        .iter()
        .filter(|bin| bin.count > 0)
        .map(|bin| {
            (
                layout.x_of(bin.mean_confidence),
                layout.y_of(bin.accuracy),
                bin,
            )
        })
        .collect();
    if !points.is_empty() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"##,
            path.join(" ")
        );
    }
    let max_count = layout.max_count as f64;
    for (x, y, bin) in &points {
        let radius = 2.5 + 4.0 * (bin.count as f64 / max_count).sqrt();
        let _ = writeln!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="{radius:.1}" fill="{colour}" fill-opacity="0.8"><title>{name}: confidence {lo:.2}-{hi:.2}, {count} samples, mean confidence {conf:.3}, accuracy {acc:.3}</title></circle>"##,
            name = escape(name),
            lo = bin.lower,
            hi = bin.upper,
            count = bin.count,
            conf = bin.mean_confidence,
            acc = bin.accuracy,
        );
    }
    for bin in diagram.bins.iter().filter(|bin| bin.count > 0) {
        let bin_width = (bin.upper - bin.lower) * layout.plot / layout.series_count;
        let bar_height = layout.histogram * bin.count as f64 / max_count;
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{colour}" fill-opacity="0.7"><title>{name}: {count} samples with confidence {lo:.2}-{hi:.2}</title></rect>"##,
            x = layout.x_of(bin.lower) + index as f64 * bin_width,
            y = layout.histogram_top + layout.histogram - bar_height,
            w = (bin_width - 1.0).max(0.5),
            h = bar_height,
            name = escape(name),
            count = bin.count,
            lo = bin.lower,
            hi = bin.upper,
        );
    }
    let legend_x = layout.left + layout.plot;
    let legend_y = layout.top + 20.0 + index as f64 * 36.0;
    let _ = writeln!(
        svg,
        r##"<rect x="{lx:.1}" y="{ry:.1}" width="14" height="14" fill="{colour}"/><text x="{tx:.1}" y="{ty:.1}" font-size="12">{name}</text><text x="{tx:.1}" y="{ty2:.1}" font-size="11" fill="#555555">ECE {ece:.4}, n = {n}</text>"##,
        lx = legend_x + 20.0,
        ry = legend_y - 11.0,
        tx = legend_x + 40.0,
        ty = legend_y,
        ty2 = legend_y + 15.0,
        name = escape(name),
        ece = diagram.expected_calibration_error,
        n = diagram.sample_count,
    );
}
