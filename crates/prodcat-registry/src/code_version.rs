//! The code version recorded with every run: the git commit of the working tree when there is
//! one (with `-dirty` when tracked files have uncommitted changes), else the package version.
//!
//! `PRODCAT_CODE_VERSION`, when set and not empty, wins: container images built without a `.git`
//! folder pass the commit that way.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The code version of the current directory's checkout; never fails. Looked up once per
/// process: the code that runs does not change while it runs.
pub fn code_version() -> String {
    static CACHED: OnceLock<String> = OnceLock::new();
    CACHED
        .get_or_init(|| {
            if let Ok(value) = std::env::var("PRODCAT_CODE_VERSION") {
                let value = value.trim();
                if !value.is_empty() {
                    return value.to_string();
                }
            }
            code_version_in(Path::new("."))
        })
        .clone()
}

/// The code version of the checkout containing `directory` (see [`code_version`]), ignoring
/// `PRODCAT_CODE_VERSION`.
pub fn code_version_in(directory: &Path) -> String {
    git_version(directory).unwrap_or_else(package_version)
}

/// `prodcat-<version of this package>`, the fallback outside a git checkout.
pub fn package_version() -> String {
    format!("prodcat-{}", env!("CARGO_PKG_VERSION"))
}

fn git(directory: &Path, arguments: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(directory)
        .args(arguments)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

fn git_version(directory: &Path) -> Option<String> {
    let commit = git(directory, &["rev-parse", "--verify", "HEAD"])?;
    let commit = commit.trim();
    if commit.len() < 7 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Only tracked files count: build outputs and scratch files do not make a tree dirty.
    let dirty = git(
        directory,
        &["status", "--porcelain", "--untracked-files=no"],
    )
    .map(|status| !status.trim().is_empty())
    .unwrap_or(false);
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_checkout_gives_the_package_version() {
        let folder = tempfile::tempdir().unwrap();
        assert_eq!(code_version_in(folder.path()), package_version());
    }

    #[test]
    fn in_a_checkout_gives_the_commit_and_dirty_state() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path();
        let run = |arguments: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(path)
                .args(arguments)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|status| status.success())
                .unwrap_or(false)
        };
        if !run(&["init", "-q"]) {
            eprintln!("skipped: git is not available");
            return;
        }
        std::fs::write(path.join("file.txt"), "one").unwrap();
        assert!(run(&["add", "file.txt"]));
        assert!(run(&[
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "-q",
            "-m",
            "first"
        ]));
        let clean = code_version_in(path);
        assert_eq!(clean.len(), 40, "{clean}");
        assert!(clean.bytes().all(|b| b.is_ascii_hexdigit()));
        // Untracked files do not count.
        std::fs::write(path.join("scratch.txt"), "x").unwrap();
        assert_eq!(code_version_in(path), clean);
        std::fs::write(path.join("file.txt"), "two").unwrap();
        assert_eq!(code_version_in(path), format!("{clean}-dirty"));
    }
}
