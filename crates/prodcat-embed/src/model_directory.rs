//! The model directory: where the files of a text embedding model live and how they are
//! checked.
//!
//! Layout written by `scripts/models/fetch-e5.py` (`<model root>/e5-small/`):
//! - `e5-small-q4.bin`: the E5S1 4-bit model (required; any other `*.bin` file starting with
//!   the E5S1 magic is accepted when this name is absent);
//! - `tokenizer.json`: the XLM-R SentencePiece tokenizer (optional: without it the model
//!   file's built-in vocabulary is used);
//! - `manifest.json`: sources and sha256 of each file (optional: when present, every file it
//!   lists that is loaded must match);
//! - `reference.json`, `reference-engine/`: reference outputs of the C engine, for tests and
//!   benchmarks only.
//!
//! The model root is chosen by the caller (the binary's model folder setting,
//! `PRODCAT_MODEL_DIR`); this crate reads no environment variable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::EmbedError;
use crate::model_file::MAGIC;

/// Sub-directory of the model root holding multilingual-e5-small.
pub const MODEL_SUBDIRECTORY: &str = "e5-small";
/// Preferred name of the model file.
pub const MODEL_FILE_NAME: &str = "e5-small-q4.bin";
/// Name of the tokenizer description.
pub const TOKENIZER_FILE_NAME: &str = "tokenizer.json";
/// Name of the manifest.
pub const MANIFEST_FILE_NAME: &str = "manifest.json";
/// Name of the reference outputs written by the setup script.
pub const REFERENCE_FILE_NAME: &str = "reference.json";

/// The e5 directory under the model root `model_root`.
pub fn e5_directory(model_root: &Path) -> PathBuf {
    model_root.join(MODEL_SUBDIRECTORY)
}

/// The files found in a model directory.
#[derive(Debug, Clone)]
pub struct ModelDirectory {
    pub directory: PathBuf,
    pub model_file: PathBuf,
    pub tokenizer_json: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
}

impl ModelDirectory {
    /// Finds the model file, tokenizer and manifest in `directory`.
    pub fn locate(directory: &Path) -> Result<Self, EmbedError> {
        let preferred = directory.join(MODEL_FILE_NAME);
        let model_file = if preferred.is_file() {
            preferred
        } else {
            find_e5s1_file(directory)?.ok_or_else(|| EmbedError::ModelFileMissing {
                directory: directory.to_path_buf(),
                expected: format!("{MODEL_FILE_NAME} or another *.bin file in the E5S1 format"),
            })?
        };
        let existing = |name: &str| {
            let path = directory.join(name);
            path.is_file().then_some(path)
        };
        Ok(Self {
            directory: directory.to_path_buf(),
            model_file,
            tokenizer_json: existing(TOKENIZER_FILE_NAME),
            manifest: existing(MANIFEST_FILE_NAME),
        })
    }

    /// Identifies the weights and tokenizer: `multilingual-e5-small-<16 hex digits>` from the
    /// sha256 of the model file and of `tokenizer.json` (taken from the manifest when it lists
    /// them, else computed). Vectors of different ids must never be mixed.
    pub fn model_id(&self) -> Result<String, EmbedError> {
        let listed = self
            .manifest()?
            .map(|manifest| manifest.sha256_by_file)
            .unwrap_or_default();
        let checksum = |path: &Path| -> Result<String, EmbedError> {
            let name = path
                .strip_prefix(&self.directory)
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned();
            if let Some(hash) = listed.get(&name) {
                return Ok(hash.clone());
            }
            let bytes = std::fs::read(path).map_err(|source| EmbedError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(prodcat_domain::sha256_hex(&bytes))
        };
        let model_hash = checksum(&self.model_file)?;
        let tokenizer_hash = match &self.tokenizer_json {
            Some(path) => checksum(path)?,
            None => "built-in".to_string(),
        };
        let combined =
            prodcat_domain::sha256_hex(format!("{model_hash}:{tokenizer_hash}").as_bytes());
        Ok(format!("multilingual-e5-small-{}", &combined[..16]))
    }

    /// Reads the manifest, when there is one.
    pub fn manifest(&self) -> Result<Option<Manifest>, EmbedError> {
        self.manifest
            .as_ref()
            .map(|path| Manifest::read(path, &self.directory))
            .transpose()
    }
}

fn find_e5s1_file(directory: &Path) -> Result<Option<PathBuf>, EmbedError> {
    let entries = std::fs::read_dir(directory).map_err(|source| EmbedError::Io {
        path: directory.to_path_buf(),
        source,
    })?;
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension().is_some_and(|extension| extension == "bin") && path.is_file()
        })
        .collect();
    candidates.sort();
    for path in candidates {
        let mut magic = [0u8; 4];
        let readable = std::fs::File::open(&path)
            .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic));
        if readable.is_ok() && &magic == MAGIC {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

#[derive(Deserialize)]
struct ManifestFile {
    #[serde(default)]
    files: HashMap<String, ManifestEntry>,
}

#[derive(Deserialize)]
struct ManifestEntry {
    sha256: String,
}

/// Checksums recorded for the files of a model directory.
#[derive(Debug, Clone)]
pub struct Manifest {
    directory: PathBuf,
    sha256_by_file: HashMap<String, String>,
}

impl Manifest {
    /// Parses `manifest.json`; file names in it are relative to `directory`.
    pub fn read(path: &Path, directory: &Path) -> Result<Self, EmbedError> {
        let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parsed: ManifestFile =
            serde_json::from_str(&text).map_err(|error| EmbedError::InvalidManifest {
                path: path.to_path_buf(),
                detail: error.to_string(),
            })?;
        Ok(Self {
            directory: directory.to_path_buf(),
            sha256_by_file: parsed
                .files
                .into_iter()
                .map(|(name, entry)| (name, entry.sha256.to_ascii_lowercase()))
                .collect(),
        })
    }

    /// Checks `bytes` (the content of `path`) against the manifest, if it lists the file.
    pub fn verify(&self, path: &Path, bytes: &[u8]) -> Result<(), EmbedError> {
        let name = path
            .strip_prefix(&self.directory)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let Some(expected) = self.sha256_by_file.get(&name) else {
            return Ok(());
        };
        let actual = prodcat_domain::sha256_hex(bytes);
        if actual != *expected {
            return Err(EmbedError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temporary_directory(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("prodcat-embed-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    #[test]
    fn locates_files_and_checks_the_manifest() {
        let directory = temporary_directory("locate");
        assert!(matches!(
            ModelDirectory::locate(&directory),
            Err(EmbedError::ModelFileMissing { .. })
        ));
        std::fs::write(directory.join("other.bin"), b"GGUF....").unwrap();
        std::fs::write(directory.join("custom.bin"), b"E5S1....").unwrap();
        let found = ModelDirectory::locate(&directory).unwrap();
        assert_eq!(found.model_file, directory.join("custom.bin"));
        assert!(found.tokenizer_json.is_none() && found.manifest.is_none());

        let sha = prodcat_domain::sha256_hex(b"E5S1....");
        std::fs::write(
            directory.join(MANIFEST_FILE_NAME),
            format!(r#"{{"files": {{"custom.bin": {{"sha256": "{sha}"}}}}}}"#),
        )
        .unwrap();
        let found = ModelDirectory::locate(&directory).unwrap();
        let manifest = found.manifest().unwrap().unwrap();
        manifest.verify(&found.model_file, b"E5S1....").unwrap();
        assert!(matches!(
            manifest.verify(&found.model_file, b"E5S1...."[..7].as_ref()),
            Err(EmbedError::ChecksumMismatch { .. })
        ));
        // Files the manifest does not list are not checked.
        manifest
            .verify(&directory.join("tokenizer.json"), b"{}")
            .unwrap();

        std::fs::write(directory.join(MANIFEST_FILE_NAME), "not json").unwrap();
        assert!(matches!(
            ModelDirectory::locate(&directory).unwrap().manifest(),
            Err(EmbedError::InvalidManifest { .. })
        ));
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
