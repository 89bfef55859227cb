//! The code version recorded with every run: the git commit of the working tree when there is
//! one (with `-dirty` when tracked files have uncommitted changes), else the package version.
//!
//! The binary may set it for the whole process with [`set_code_version`]: container images
//! built without a `.git` folder pass the commit that way (`PRODCAT_CODE_VERSION`). This crate
//! reads no environment variable itself.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{OnceLock, PoisonError, RwLock};

/// The value given to [`set_code_version`], if any.
static CONFIGURED: RwLock<Option<String>> = RwLock::new(None);

/// Records `version` as the code version of every run started from now on in this process. A
/// blank value clears it, so that the checkout is looked up again.
pub fn set_code_version(version: &str) {
    let version = version.trim();
    let value = (!version.is_empty()).then(|| version.to_string());
    *CONFIGURED.write().unwrap_or_else(PoisonError::into_inner) = value;
}

/// The code version set with [`set_code_version`], else that of the current directory's
/// checkout; never fails. The checkout is looked up once per process: the code that runs does
/// not change while it runs.
pub fn code_version() -> String {
    if let Some(configured) = CONFIGURED
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        return configured.clone();
    }
    static DETECTED: OnceLock<String> = OnceLock::new();
    DETECTED
        .get_or_init(|| code_version_in(Path::new(".")))
        .clone()
}

/// The code version of the checkout containing `directory` (see [`code_version`]), ignoring
/// [`set_code_version`].
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
    fn a_configured_version_wins_until_cleared() {
        let detected = code_version();
        set_code_version("  0123456789abcdef0123456789abcdef01234567 ");
        assert_eq!(code_version(), "0123456789abcdef0123456789abcdef01234567");
        set_code_version(" ");
        assert_eq!(code_version(), detected);
    }

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
