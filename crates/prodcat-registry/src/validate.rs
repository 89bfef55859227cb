//! Checks on the names this crate stores: metric and parameter keys, aliases, artifact names,
//! actors. Each check returns a clear error naming the value and the rule it breaks.

use crate::RegistryError;

/// Longest metric or parameter key accepted (MLflow's limit).
pub const MAX_KEY_LENGTH: usize = 250;

/// Metric and parameter keys: letters, digits, `_ - . / :` and spaces, 1 to 250 characters.
pub fn key(what: &'static str, value: &str) -> Result<(), RegistryError> {
    let invalid = |reason| RegistryError::InvalidName {
        what,
        value: value.to_string(),
        reason,
    };
    if value.trim().is_empty() {
        return Err(invalid("it is empty"));
    }
    if value.len() > MAX_KEY_LENGTH {
        return Err(invalid("it is longer than 250 characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | ' '))
    {
        return Err(invalid(
            "only letters, digits, '_', '-', '.', '/', ':' and spaces are allowed",
        ));
    }
    if value.split('/').any(|part| part == ".." || part == ".") {
        return Err(invalid("it must not contain '.' or '..' path segments"));
    }
    Ok(())
}

/// Alias names: lowercase letters, digits, `-` and `_`, starting with a letter, at most 64
/// characters; not `latest` and not shaped like a version id or MLflow's `v<number>`.
pub fn alias(value: &str) -> Result<(), RegistryError> {
    let invalid = |reason| RegistryError::InvalidName {
        what: "alias",
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("it is empty"));
    }
    if value.len() > 64 {
        return Err(invalid("it is longer than 64 characters"));
    }
    if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid("it must start with a lowercase letter"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(invalid(
            "only lowercase letters, digits, '-' and '_' are allowed",
        ));
    }
    if value == "latest" {
        return Err(invalid("\"latest\" always means the newest version"));
    }
    if value.starts_with("mv-") {
        return Err(invalid("it would be mistaken for a model version id"));
    }
    if value.len() > 1 && value.starts_with('v') && value[1..].bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "\"v<number>\" is reserved for version numbers (MLflow refuses it)",
        ));
    }
    Ok(())
}

/// Artifact names: a relative `/`-separated path of non-empty segments, without `.` or `..`.
pub fn artifact_name(value: &str) -> Result<(), RegistryError> {
    let invalid = |reason| RegistryError::InvalidName {
        what: "artifact name",
        value: value.to_string(),
        reason,
    };
    if value.is_empty() || value.len() > 500 {
        return Err(invalid("it must be 1 to 500 characters long"));
    }
    if value.starts_with('/') || value.ends_with('/') {
        return Err(invalid("it must be a relative path without a trailing '/'"));
    }
    if value
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(invalid("empty, '.' and '..' path segments are not allowed"));
    }
    if value
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == '?' || c == '#' || c == '%')
    {
        return Err(invalid(
            "control characters, '\\', '?', '#' and '%' are not allowed",
        ));
    }
    Ok(())
}

/// Free-text identity of who did something: not empty, at most 200 characters.
pub fn actor(value: &str) -> Result<(), RegistryError> {
    if value.trim().is_empty() || value.len() > 200 || value.chars().any(char::is_control) {
        return Err(RegistryError::InvalidName {
            what: "actor",
            value: value.to_string(),
            reason: "it must be 1 to 200 printable characters",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in [
            "weighted_f1",
            "f1.class.2583",
            "epoch.image.train_loss",
            "a b:c/d-e",
        ] {
            assert!(key("metric key", good).is_ok(), "{good}");
        }
        for bad in ["", " ", "a\nb", "é", "x/../y", &"k".repeat(251)] {
            assert!(key("metric key", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aliases() {
        for good in ["champion", "challenger", "shadow-2", "a_b"] {
            assert!(alias(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Champion",
            "2x",
            "latest",
            "mv-0123",
            "v3",
            "a b",
            &"a".repeat(65),
        ] {
            assert!(alias(bad).is_err(), "{bad}");
        }
        assert!(alias("v").is_ok());
        assert!(alias("v2a").is_ok());
    }

    #[test]
    fn artifact_names() {
        for good in [
            "model/manifest.json",
            "report.html",
            "pictures/confusion.svg",
        ] {
            assert!(artifact_name(good).is_ok(), "{good}");
        }
        for bad in ["", "/abs", "a//b", "../x", "a/./b", "dir/", "a\\b", "a?b"] {
            assert!(artifact_name(bad).is_err(), "{bad}");
        }
    }
}
