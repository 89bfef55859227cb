//! Small formatting helpers every layer needs once: HTML escaping for the pages and reports the
//! platform draws, UTC times for people, and the check of prefixed hex identifiers.

/// Escapes text for HTML element content and attribute values (`& < > " '`).
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// Formats Unix milliseconds as UTC `YYYY-MM-DD HH:MM` (proleptic Gregorian calendar).
pub fn format_utc_minutes(ms: i64) -> String {
    let (year, month, day, second_of_day) = civil_from_ms(ms);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        second_of_day / 3600,
        (second_of_day % 3600) / 60
    )
}

/// Formats Unix milliseconds as an RFC 3339 UTC time with seconds (`2026-11-30T12:00:00Z`).
pub fn format_rfc3339(ms: i64) -> String {
    let (year, month, day, second_of_day) = civil_from_ms(ms);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        (second_of_day % 3600) / 60,
        second_of_day % 60
    )
}

/// Year, month, day and second of the day of Unix milliseconds, in UTC.
fn civil_from_ms(ms: i64) -> (i64, i64, i64, i64) {
    let seconds = ms.div_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day, second_of_day)
}

/// Whether `text` is `prefix` followed by exactly `digits` lowercase hex digits (the shape of
/// run, job and prediction ids).
pub fn is_prefixed_hex(text: &str, prefix: &str, digits: usize) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == digits && is_lowercase_hex(rest))
}

/// Whether every character of `text` is a digit or a lowercase letter `a` to `f` (true for an
/// empty text).
pub fn is_lowercase_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape_html("été"), "été");
    }

    #[test]
    fn formats_times() {
        assert_eq!(format_utc_minutes(0), "1970-01-01 00:00");
        assert_eq!(format_utc_minutes(1_795_300_000_000), "2026-11-21 22:26");
        assert_eq!(format_utc_minutes(1_793_491_200_000), "2026-11-01 00:00");
        assert_eq!(
            format_rfc3339(1_793_491_200_000 + 3_723_000),
            "2026-11-01T01:02:03Z"
        );
        assert_eq!(format_utc_minutes(-60_000), "1969-12-31 23:59");
    }

    #[test]
    fn checks_prefixed_hex() {
        assert!(is_prefixed_hex("job-0123456789abcdef", "job-", 16));
        assert!(!is_prefixed_hex("job-0123456789ABCDEF", "job-", 16));
        assert!(!is_prefixed_hex("job-0123", "job-", 16));
        assert!(!is_prefixed_hex("run-0123456789abcdef", "job-", 16));
        assert!(is_prefixed_hex("0123456789abcdef", "", 16));
        assert!(is_lowercase_hex("09af") && !is_lowercase_hex("09aG"));
    }
}
