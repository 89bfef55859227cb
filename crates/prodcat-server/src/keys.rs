//! The keys that sign access tokens. Every replica of the service must verify the tokens the
//! others issue, so the keys come from configuration: a file with one key per line,
//! `<key id> <secret>` (at least 32 bytes each). The first key signs new tokens; every key
//! verifies the tokens that name it in their `kid` header. Rotating: add the new key as the
//! first line on every replica, wait one token lifetime, remove the old line. A file with a
//! single bare secret (no key id) is one key named `default`.
//!
//! When no file is configured, `<data dir>/jwt-secret` is used, created once with owner-only
//! permissions: right for one process, wrong for several replicas (they would each create
//! their own).

use std::path::Path;

use crate::ServerError;

/// One signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub id: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The configured keys, the signing one first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeys {
    keys: Vec<SigningKey>,
}

const MINIMUM_SECRET_BYTES: usize = 32;

fn invalid(reason: String) -> ServerError {
    ServerError::InvalidSetting {
        name: "token signing keys",
        reason,
    }
}

impl SigningKeys {
    /// One key named `default`.
    pub fn single(secret: &[u8]) -> Result<Self, ServerError> {
        Self::new(vec![SigningKey {
            id: "default".to_string(),
            secret: secret.to_vec(),
        }])
    }

    /// Keys in order (the first signs); ids must be unique and secrets at least 32 bytes.
    pub fn new(keys: Vec<SigningKey>) -> Result<Self, ServerError> {
        if keys.is_empty() {
            return Err(invalid("there is no key".to_string()));
        }
        for (index, key) in keys.iter().enumerate() {
            if key.secret.len() < MINIMUM_SECRET_BYTES {
                return Err(invalid(format!(
                    "key {:?} has {} bytes; at least {MINIMUM_SECRET_BYTES} are needed",
                    key.id,
                    key.secret.len()
                )));
            }
            let valid_id = !key.id.is_empty()
                && key.id.len() <= 64
                && key
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid_id {
                return Err(invalid(format!(
                    "key id {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                    key.id
                )));
            }
            if keys[..index].iter().any(|other| other.id == key.id) {
                return Err(invalid(format!("key id {:?} appears twice", key.id)));
            }
        }
        Ok(Self { keys })
    }

    /// Parses the key file's text (see the module's documentation).
    pub fn parse(text: &str) -> Result<Self, ServerError> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        if lines.len() == 1 && !lines[0].contains(char::is_whitespace) {
            return Self::single(lines[0].as_bytes());
        }
        let keys = lines
            .iter()
            .enumerate()
            .map(
                |(number, line)| match line.split_once(char::is_whitespace) {
                    Some((id, secret)) => Ok(SigningKey {
                        id: id.to_string(),
                        secret: secret.trim().as_bytes().to_vec(),
                    }),
                    None => Err(invalid(format!(
                        "line {} has no key id: expected `<key id> <secret>`",
                        number + 1
                    ))),
                },
            )
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// Reads a key file.
    pub fn from_file(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|error| match error {
            ServerError::InvalidSetting { name, reason } => ServerError::InvalidSetting {
                name,
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// The configured file, else `<data dir>/jwt-secret` (created once when absent).
    pub fn load(file: Option<&Path>, data_dir: &Path) -> Result<Self, ServerError> {
        match file {
            Some(path) => Self::from_file(path),
            None => Self::single(&load_or_create_secret(data_dir)?),
        }
    }

    /// The key that signs new tokens.
    pub fn signing(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// The key with this id.
    pub fn by_id(&self, id: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|key| key.id == id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The signing secret in `<data dir>/jwt-secret`: read when it exists, otherwise 48 random
/// bytes are written there (hex, mode 0600) first.
pub fn load_or_create_secret(data_dir: &Path) -> Result<Vec<u8>, ServerError> {
    let path = data_dir.join("jwt-secret");
    let io_error = |source| ServerError::Io {
        path: path.display().to_string(),
        source,
    };
    if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(io_error)?;
        let secret = text.trim().as_bytes().to_vec();
        if secret.len() < MINIMUM_SECRET_BYTES {
            return Err(invalid(format!(
                "{} holds fewer than {MINIMUM_SECRET_BYTES} bytes",
                path.display()
            )));
        }
        return Ok(secret);
    }
    std::fs::create_dir_all(data_dir).map_err(|source| ServerError::Io {
        path: data_dir.display().to_string(),
        source,
    })?;
    let bytes: [u8; 48] = rand::random();
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, text.as_bytes()).map_err(io_error)?;
    Ok(text.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_created_once_with_private_permissions() {
        let folder = tempfile::tempdir().unwrap();
        let first = load_or_create_secret(folder.path()).unwrap();
        let second = load_or_create_secret(folder.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 96);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(folder.path().join("jwt-secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let short = tempfile::tempdir().unwrap();
        std::fs::write(short.path().join("jwt-secret"), "too short").unwrap();
        assert!(load_or_create_secret(short.path()).is_err());
    }

    #[test]
    fn key_files_name_their_keys() {
        let secret_a = "a".repeat(32);
        let secret_b = "b".repeat(40);
        let keys =
            SigningKeys::parse(&format!("# rotation\nnew {secret_b}\nold {secret_a}\n")).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.signing().id, "new");
        assert_eq!(keys.by_id("old").unwrap().secret, secret_a.as_bytes());
        let bare = SigningKeys::parse(&format!("{secret_a}\n")).unwrap();
        assert_eq!(bare.signing().id, "default");
        for bad in [
            String::new(),
            "short tooshort".to_string(),
            format!("same {secret_a}\nsame {secret_b}"),
            format!("bad/id {secret_a}"),
            format!("{secret_a}\n{secret_b}"),
        ] {
            assert!(SigningKeys::parse(&bad).is_err(), "{bad:?}");
        }
        let debug = format!("{keys:?}");
        assert!(!debug.contains(&secret_a) && debug.contains("redacted"));
    }
}
