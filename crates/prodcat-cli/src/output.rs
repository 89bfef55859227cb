//! Terminal output helpers: tables, progress bars that degrade to plain lines when not on a
//! terminal, and number formatting.

use std::io::IsTerminal;
use std::time::Duration;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A table with the project's look.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().map(|h| h.to_string()));
    table
}

/// A progress bar on stderr; on a non-terminal it prints a line every 10%.
pub struct Progress {
    bar: ProgressBar,
    interactive: bool,
    total: u64,
    last_reported_tenth: std::sync::atomic::AtomicU64,
    label: String,
}

impl Progress {
    pub fn new(label: &str, total: u64, unit: &str) -> Self {
        let interactive = std::io::stderr().is_terminal();
        let bar = if interactive {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let template = match unit {
                "bytes" => "{msg:>12} [{bar:40.cyan/blue}] {bytes}/{total_bytes} ({eta}) {prefix}",
                _ => "{msg:>12} [{bar:40.cyan/blue}] {pos}/{len} {prefix} ({per_sec}, eta {eta})",
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        bar.set_message(label.to_string());
        Self {
            bar,
            interactive,
            total,
            last_reported_tenth: std::sync::atomic::AtomicU64::new(0),
            label: label.to_string(),
        }
    }

    pub fn set(&self, position: u64, detail: &str) {
        self.bar.set_position(position);
        if !detail.is_empty() {
            self.bar.set_prefix(detail.to_string());
        }
        if !self.interactive && self.total > 0 {
            let tenth = position * 10 / self.total;
            let previous = self
                .last_reported_tenth
                .fetch_max(tenth, std::sync::atomic::Ordering::Relaxed);
            if tenth > previous {
                eprintln!("{}: {}% {detail}", self.label, tenth * 10);
            }
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Formats a duration for people.
pub fn duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else if seconds < 120.0 {
        format!("{seconds:.1} s")
    } else {
        format!(
            "{:.0} min {:.0} s",
            (seconds / 60.0).floor(),
            seconds % 60.0
        )
    }
}

/// Formats a share as a percentage.
pub fn percent(part: i64, whole: i64) -> String {
    if whole == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}
