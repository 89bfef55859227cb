//! Time windows and the way people write times on the command line: durations back from now
//! (`7d`, `36h`, `90m`, `2w`), dates (`2026-11-01`), RFC 3339 times, or Unix milliseconds.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::PipelineError;

/// A half-open time window `[start, end)` in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftWindow {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl DriftWindow {
    /// The `length_ms` before `end_ms`.
    pub fn ending_at(end_ms: i64, length_ms: i64) -> Self {
        Self {
            start_ms: end_ms - length_ms,
            end_ms,
        }
    }
}

/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;

/// Parses a duration: a number followed by `s`, `m`, `h`, `d` or `w` (`7d`, `36h`).
pub fn parse_duration_ms(text: &str) -> Result<i64, PipelineError> {
    let trimmed = text.trim();
    let invalid = || {
        PipelineError::Invalid(format!(
            "invalid duration {trimmed:?}: expected a number and a unit, like 7d, 36h, 90m, 2w or 30s"
        ))
    };
    let unit_at = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(invalid)?;
    let (number, unit) = trimmed.split_at(unit_at);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let unit_ms = match unit.trim() {
        "s" | "sec" | "seconds" => 1_000.0,
        "m" | "min" | "minutes" => 60_000.0,
        "h" | "hours" => 3_600_000.0,
        "d" | "days" => DAY_MS as f64,
        "w" | "weeks" => 7.0 * DAY_MS as f64,
        _ => return Err(invalid()),
    };
    let value = number * unit_ms;
    if !value.is_finite() || value <= 0.0 || value > 1e15 {
        return Err(invalid());
    }
    Ok(value.round() as i64)
}

/// Parses a point in time: `now`, a duration back from `now_ms` (`7d`), a date (`2026-11-01`,
/// midnight UTC), an RFC 3339 time, or Unix milliseconds.
pub fn parse_time_ms(text: &str, now_ms: i64) -> Result<i64, PipelineError> {
    let trimmed = text.trim();
    if trimmed == "now" {
        return Ok(now_ms);
    }
    if let Ok(ms) = trimmed.parse::<i64>() {
        if ms > 0 {
            return Ok(ms);
        }
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(time.timestamp_millis());
    }
    // RFC 3339 without seconds (2026-11-30T12:00Z, 2026-11-30T12:00+01:00).
    if let Ok(time) = DateTime::parse_from_str(&trimmed.replace('Z', "+00:00"), "%Y-%m-%dT%H:%M%:z")
    {
        return Ok(time.timestamp_millis());
    }
    if let Ok(date) = NaiveDate::parse_from_str(trimmed, "%Y-%m-%d") {
        if let Some(midnight) = date.and_hms_opt(0, 0, 0) {
            return Ok(Utc.from_utc_datetime(&midnight).timestamp_millis());
        }
    }
    match parse_duration_ms(trimmed) {
        Ok(duration) => Ok(now_ms - duration),
        Err(_) => Err(PipelineError::Invalid(format!(
            "invalid time {trimmed:?}: expected now, a duration back from now (7d, 36h), a date \
             (2026-11-01), an RFC 3339 time or Unix milliseconds"
        ))),
    }
}

/// A time for people, in UTC (`2026-11-01 03:00`).
pub fn format_ms(ms: i64) -> String {
    prodcat_domain::format_utc_minutes(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_parse() {
        assert_eq!(parse_duration_ms("7d").unwrap(), 7 * DAY_MS);
        assert_eq!(parse_duration_ms("36h").unwrap(), 36 * 3_600_000);
        assert_eq!(parse_duration_ms("1.5m").unwrap(), 90_000);
        assert!(parse_duration_ms("7").is_err());
        assert!(parse_duration_ms("d").is_err());
        assert!(parse_duration_ms("-3d").is_err());
        let now = 1_800_000_000_000;
        assert_eq!(parse_time_ms("now", now).unwrap(), now);
        assert_eq!(parse_time_ms("2w", now).unwrap(), now - 14 * DAY_MS);
        assert_eq!(parse_time_ms("2026-11-01", now).unwrap(), 1_793_491_200_000);
        assert_eq!(
            parse_time_ms("2026-11-01T03:00:00Z", now).unwrap(),
            1_793_491_200_000 + 3 * 3_600_000
        );
        assert_eq!(
            parse_time_ms("1793491200000", now).unwrap(),
            1_793_491_200_000
        );
        assert!(parse_time_ms("yesterday", now).is_err());
        assert_eq!(format_ms(1_793_491_200_000), "2026-11-01 00:00");
        assert_eq!(
            parse_time_ms("2026-11-01T03:00Z", now).unwrap(),
            1_793_491_200_000 + 3 * 3_600_000
        );
    }
}
