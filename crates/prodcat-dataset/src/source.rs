//! Where an import reads from: the challenge layout, the "new data" drop layout, or explicit files.

use std::path::{Path, PathBuf};

use crate::DatasetError;

/// The layout an import source was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceLayout {
    /// `X_train_update.csv`, `Y_train_CVw08PX.csv`, `images/image_train/`.
    Challenge,
    /// `New_X_train.csv`, `New_y_train.csv` and an images folder.
    NewDataDrop,
    /// Files named on the command line.
    Explicit,
}

impl SourceLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceLayout::Challenge => "challenge",
            SourceLayout::NewDataDrop => "new-data-drop",
            SourceLayout::Explicit => "explicit",
        }
    }
}

/// The files an import reads.
#[derive(Debug, Clone)]
pub struct ImportSource {
    pub layout: SourceLayout,
    pub texts: PathBuf,
    pub labels: Option<PathBuf>,
    pub images: Option<PathBuf>,
}

const IMAGE_FOLDERS: &[&str] = &[
    "images/image_train",
    "image_train",
    "images",
    "new_images",
    "images/new_images",
];

fn first_existing_folder(dir: &Path) -> Option<PathBuf> {
    IMAGE_FOLDERS
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_dir() && !path.join("image_train").is_dir())
        .or_else(|| {
            let nested = dir.join("images").join("image_train");
            nested.is_dir().then_some(nested)
        })
}

impl ImportSource {
    /// Recognises the layout of a folder by its file names.
    pub fn detect(dir: &Path) -> Result<Self, DatasetError> {
        if !dir.is_dir() {
            return Err(DatasetError::Layout(format!(
                "{} is not a folder; pass a folder in the challenge layout or --texts/--labels/--images",
                dir.display()
            )));
        }
        let challenge = (
            dir.join("X_train_update.csv"),
            dir.join("Y_train_CVw08PX.csv"),
        );
        if challenge.0.is_file() {
            return Ok(Self {
                layout: SourceLayout::Challenge,
                texts: challenge.0,
                labels: challenge.1.is_file().then_some(challenge.1),
                images: first_existing_folder(dir),
            });
        }
        let drop_texts = dir.join("New_X_train.csv");
        if drop_texts.is_file() {
            let labels = ["New_y_train.csv", "New_Y_train.csv"]
                .iter()
                .map(|name| dir.join(name))
                .find(|path| path.is_file());
            return Ok(Self {
                layout: SourceLayout::NewDataDrop,
                texts: drop_texts,
                labels,
                images: first_existing_folder(dir),
            });
        }
        Err(DatasetError::Layout(format!(
            "no catalogue found in {}: expected X_train_update.csv + Y_train_CVw08PX.csv \
             (challenge layout) or New_X_train.csv + New_y_train.csv (new data drop)",
            dir.display()
        )))
    }

    /// Files named explicitly.
    pub fn explicit(
        texts: PathBuf,
        labels: Option<PathBuf>,
        images: Option<PathBuf>,
    ) -> Result<Self, DatasetError> {
        if !texts.is_file() {
            return Err(DatasetError::Layout(format!(
                "--texts {}: no such file",
                texts.display()
            )));
        }
        if let Some(labels) = &labels {
            if !labels.is_file() {
                return Err(DatasetError::Layout(format!(
                    "--labels {}: no such file",
                    labels.display()
                )));
            }
        }
        if let Some(images) = &images {
            if !images.is_dir() {
                return Err(DatasetError::Layout(format!(
                    "--images {}: no such folder",
                    images.display()
                )));
            }
        }
        Ok(Self {
            layout: SourceLayout::Explicit,
            texts,
            labels,
            images,
        })
    }
}
