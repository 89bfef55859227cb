//! Streaming import of a catalogue into a new dataset version.
//!
//! Rows are read one at a time and processed in chunks: each row is validated, its image is read,
//! hashed, checked to decode and stored once per content hash; the content-addressed row record is
//! written. Only when every row has been seen is the version itself (its membership and splits)
//! written, in one transaction: an interrupted or failed import leaves no version behind, and
//! importing identical data again finds the existing version and changes nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use prodcat_domain::{CategoryCode, ContentHash, ImageId, ProductId};
use prodcat_storage::{image_key, now_ms, Database, ObjectStorage, SqlPlaceholders};
use rayon::prelude::*;
use serde::Serialize;

use crate::records::{insert_records, NewRecord};
use crate::source::ImportSource;
use crate::split::SplitRatios;
use crate::version::{create_version, DatasetVersion, NewVersionRow, VersionMetadata};
use crate::DatasetError;

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Fail on the first problem instead of skipping bad rows.
    pub strict: bool,
    /// Treat a row whose image file is missing as a problem (by default it is imported text-only).
    pub require_images: bool,
    pub split_seed: u64,
    pub split_ratios: SplitRatios,
    pub note: String,
    /// Largest accepted image, in pixels (decompression-bomb guard).
    pub max_image_pixels: u64,
    /// Rows processed per chunk (memory is bounded by this many images).
    pub chunk_rows: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            strict: false,
            require_images: false,
            split_seed: 42,
            split_ratios: SplitRatios::default(),
            note: String::new(),
            max_image_pixels: 40_000_000,
            chunk_rows: 512,
        }
    }
}

/// Receives progress; `advanced` returning `false` cancels the import (nothing is stored).
pub trait ImportProgress: Send + Sync {
    fn started(&self, _total_bytes: u64) {}
    fn advanced(&self, _bytes_read: u64, _rows_done: u64) -> bool {
        true
    }
    fn stage(&self, _message: &str) {}
}

/// A progress sink that ignores everything.
impl ImportProgress for () {}

/// What kind of problem a row has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    WrongFieldCount,
    NotUtf8,
    BadIndex,
    DuplicateIndex,
    BadProductId,
    BadImageId,
    EmptyDesignation,
    MissingLabel,
    UnknownCategory,
    BadLabelRow,
    DuplicateProductId,
    MissingImage,
    UndecodableImage,
    ImageTooLarge,
}

/// One problem, located by file and line.
#[derive(Debug, Clone, Serialize)]
pub struct RowProblem {
    pub file: String,
    pub line: u64,
    pub kind: ProblemKind,
    pub message: String,
}

/// What an import saw and did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub rows_read: u64,
    pub rows_imported: u64,
    pub rows_skipped: u64,
    pub images_found: u64,
    pub images_missing: u64,
    pub images_stored_new: u64,
    /// Rows without a title imported for their photo alone (they teach the image branch).
    pub photo_only_rows: u64,
    pub problems: Vec<RowProblem>,
    /// Rows imported without an image because the file was missing (first few).
    pub missing_image_examples: Vec<String>,
}

impl ImportReport {
    /// Problem counts by kind, most frequent first.
    pub fn problem_counts(&self) -> Vec<(ProblemKind, usize)> {
        let mut counts: HashMap<ProblemKind, usize> = HashMap::new();
        for problem in &self.problems {
            *counts.entry(problem.kind).or_default() += 1;
        }
        let mut sorted: Vec<_> = counts.into_iter().collect();
        sorted.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then(format!("{:?}", a.0).cmp(&format!("{:?}", b.0)))
        });
        sorted
    }
}

/// The result of an import.
#[derive(Debug, Clone)]
pub enum ImportOutcome {
    Created {
        version: DatasetVersion,
        report: ImportReport,
    },
    /// Identical data was imported before: nothing changed.
    AlreadyExists {
        version: DatasetVersion,
        report: ImportReport,
    },
}

impl ImportOutcome {
    pub fn version(&self) -> &DatasetVersion {
        match self {
            ImportOutcome::Created { version, .. }
            | ImportOutcome::AlreadyExists { version, .. } => version,
        }
    }
    pub fn report(&self) -> &ImportReport {
        match self {
            ImportOutcome::Created { report, .. } | ImportOutcome::AlreadyExists { report, .. } => {
                report
            }
        }
    }
}

/// A text row that passed validation, waiting for its image.
struct ParsedRow {
    line: u64,
    index: i64,
    product_id: ProductId,
    image_id: ImageId,
    designation: String,
    description: String,
    category: Option<CategoryCode>,
    image_path: Option<PathBuf>,
}

struct CheckedImage {
    hash: ContentHash,
    width: u32,
    height: u32,
    bytes: Bytes,
}

type LabelMap = HashMap<i64, Result<CategoryCode, (u64, String)>>;

struct Collector<'a> {
    strict: bool,
    report: &'a mut ImportReport,
}

impl Collector<'_> {
    fn problem(
        &mut self,
        file: &Path,
        line: u64,
        kind: ProblemKind,
        message: String,
    ) -> Result<(), DatasetError> {
        let file = file.display().to_string();
        if self.strict {
            return Err(DatasetError::StrictProblem {
                file,
                line,
                message,
            });
        }
        self.report.problems.push(RowProblem {
            file,
            line,
            kind,
            message,
        });
        Ok(())
    }
}

fn csv_error(path: &Path, source: csv::Error) -> DatasetError {
    DatasetError::Csv {
        path: path.display().to_string(),
        source,
    }
}

fn read_labels(path: &Path, collector: &mut Collector<'_>) -> Result<LabelMap, DatasetError> {
    let (mut reader, headers) = open_csv(path)?;
    let code_column = headers
        .iter()
        .position(|h| h == b"prdtypecode")
        .ok_or_else(|| DatasetError::MissingColumns {
            path: path.display().to_string(),
            missing: "prdtypecode".to_string(),
            expected: "an unnamed index column and prdtypecode".to_string(),
        })?;
    let mut labels = LabelMap::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let more = reader
            .read_byte_record(&mut record)
            .map_err(|e| csv_error(path, e))?;
        if !more {
            break;
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let field = |i: usize| String::from_utf8_lossy(record.get(i).unwrap_or(b"")).to_string();
        if record.len() <= code_column {
            collector.problem(
                path,
                line,
                ProblemKind::BadLabelRow,
                format!("expected {} fields, found {}", headers.len(), record.len()),
            )?;
            continue;
        }
        let Ok(index) = field(0).trim().parse::<i64>() else {
            collector.problem(
                path,
                line,
                ProblemKind::BadLabelRow,
                format!("row index {:?} is not a whole number", field(0)),
            )?;
            continue;
        };
        let code =
            CategoryCode::parse(&field(code_column)).map_err(|error| (line, error.to_string()));
        labels.insert(index, code);
    }
    Ok(labels)
}

fn list_image_folder(folder: &Path) -> Result<HashSet<String>, DatasetError> {
    let entries = std::fs::read_dir(folder).map_err(|source| DatasetError::Io {
        path: folder.display().to_string(),
        source,
    })?;
    let mut names = HashSet::new();
    for entry in entries.flatten() {
        if let Some(name) = entry.file_name().to_str() {
            names.insert(name.to_string());
        }
    }
    Ok(names)
}

fn check_image(path: &Path, max_pixels: u64) -> Result<CheckedImage, Rejection> {
    let bytes = std::fs::read(path).map_err(|error| {
        (
            ProblemKind::MissingImage,
            format!("cannot read image {}: {error}", path.display()),
        )
    })?;
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|error| (ProblemKind::UndecodableImage, error.to_string()))?;
    match reader.format() {
        None => {
            return Err((
                ProblemKind::UndecodableImage,
                format!("{} is not a JPEG or PNG image", path.display()),
            ))
        }
        Some(image::ImageFormat::Jpeg) if !jpeg_is_complete(&bytes) => {
            return Err((
                ProblemKind::UndecodableImage,
                format!(
                    "image {} is truncated (the JPEG end marker is missing)",
                    path.display()
                ),
            ))
        }
        Some(_) => {}
    }
    let (width, height) = reader.into_dimensions().map_err(|error| {
        (
            ProblemKind::UndecodableImage,
            format!("image {} cannot be decoded: {error}", path.display()),
        )
    })?;
    if width as u64 * height as u64 > max_pixels {
        return Err((
            ProblemKind::ImageTooLarge,
            format!(
                "image {} is {width}x{height} pixels, above the limit of {max_pixels} pixels",
                path.display()
            ),
        ));
    }
    // A full decode catches truncated and corrupt files that a header check lets through.
    let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|error| (ProblemKind::UndecodableImage, error.to_string()))?;
    reader.no_limits();
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(4));
    reader.limits(limits);
    reader.decode().map_err(|error| {
        (
            ProblemKind::UndecodableImage,
            format!("image {} cannot be decoded: {error}", path.display()),
        )
    })?;
    Ok(CheckedImage {
        hash: ContentHash::of(&bytes),
        width,
        height,
        bytes: Bytes::from(bytes),
    })
}

/// Whether a JPEG ends with its end-of-image marker (ignoring trailing padding). Decoders are
/// lenient with truncated files and fill the missing part with grey; this check is not.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], 0 | b'\r' | b'\n' | b' ') {
        end -= 1;
    }
    end >= 2 && bytes[end - 2] == 0xFF && bytes[end - 1] == 0xD9
}

/// Imports `source` into a new dataset version.
pub async fn import_dataset(
    database: &Database,
    objects: &ObjectStorage,
    source: &ImportSource,
    options: &ImportOptions,
    progress: &dyn ImportProgress,
) -> Result<ImportOutcome, DatasetError> {
    let mut import = Import {
        database,
        objects,
        options,
        progress,
        texts_path: &source.texts,
        report: ImportReport::default(),
        stored_images: HashSet::new(),
        version_rows: Vec::new(),
    };
    let total_bytes = std::fs::metadata(&source.texts)
        .map(|m| m.len())
        .map_err(|error| DatasetError::Io {
            path: source.texts.display().to_string(),
            source: error,
        })?;
    let labels = match &source.labels {
        Some(path) => {
            progress.stage("reading labels");
            Some(read_labels(path, &mut import.collector())?)
        }
        None => None,
    };
    let images = match &source.images {
        Some(folder) => {
            progress.stage("listing images");
            Some((folder.as_path(), list_image_folder(folder)?))
        }
        None => None,
    };
    let (mut reader, headers) = open_csv(&source.texts)?;
    let mut checker = RowChecker {
        texts_path: &source.texts,
        columns: Columns::find(&headers, &source.texts)?,
        headers,
        labels,
        labels_path: source.labels.as_deref(),
        images,
        require_images: options.require_images,
        seen_products: HashSet::new(),
        seen_indices: HashSet::new(),
    };
    progress.started(total_bytes);
    progress.stage("importing rows");
    import.read_rows(&mut reader, &mut checker).await?;
    import.write_version(source).await
}

/// Opens a CSV file (rows may have any number of fields) and reads its header.
fn open_csv(path: &Path) -> Result<(csv::Reader<std::fs::File>, csv::ByteRecord), DatasetError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let headers = reader
        .byte_headers()
        .map_err(|e| csv_error(path, e))?
        .clone();
    Ok((reader, headers))
}

/// Where the fields of a text row are.
#[derive(Debug, Clone, Copy)]
struct Columns {
    /// The row index (an unnamed first column, `Unnamed: 0` or `index`), when there is one.
    index: Option<usize>,
    designation: usize,
    description: usize,
    product: usize,
    image: usize,
}

impl Columns {
    /// Finds the columns in the header of the texts file `path`; the four named ones must be
    /// there.
    fn find(headers: &csv::ByteRecord, path: &Path) -> Result<Self, DatasetError> {
        let column = |name: &str| headers.iter().position(|h| h == name.as_bytes());
        let required = ["designation", "description", "productid", "imageid"];
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|name| column(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(DatasetError::MissingColumns {
                path: path.display().to_string(),
                missing: missing.join(", "),
                expected: "an unnamed index column, designation, description, productid, imageid"
                    .to_string(),
            });
        }
        Ok(Self {
            index: headers
                .iter()
                .position(|h| h.is_empty() || h == b"Unnamed: 0" || h == b"index"),
            designation: column("designation").unwrap_or(1),
            description: column("description").unwrap_or(2),
            product: column("productid").unwrap_or(3),
            image: column("imageid").unwrap_or(4),
        })
    }
}

/// Why a row is left out: the kind of problem and what to tell people.
type Rejection = (ProblemKind, String);

/// Checks the text rows one by one against the header, the labels, the image folder and the
/// rows seen before.
struct RowChecker<'a> {
    texts_path: &'a Path,
    headers: csv::ByteRecord,
    columns: Columns,
    labels: Option<LabelMap>,
    labels_path: Option<&'a Path>,
    /// The image folder and the names of the files in it.
    images: Option<(&'a Path, HashSet<String>)>,
    require_images: bool,
    seen_products: HashSet<i64>,
    seen_indices: HashSet<i64>,
}

impl RowChecker<'_> {
    /// The row at `line` if it passes every check; otherwise its problem is collected (or, in
    /// strict mode, returned as the error).
    fn check(
        &mut self,
        record: &csv::ByteRecord,
        line: u64,
        default_index: i64,
        collector: &mut Collector<'_>,
    ) -> Result<Option<ParsedRow>, DatasetError> {
        match self.parse(record, line, default_index, collector.report) {
            Ok(row) => Ok(Some(row)),
            Err((kind, message)) => {
                collector.problem(self.texts_path, line, kind, message)?;
                Ok(None)
            }
        }
    }

    fn parse(
        &mut self,
        record: &csv::ByteRecord,
        line: u64,
        default_index: i64,
        report: &mut ImportReport,
    ) -> Result<ParsedRow, Rejection> {
        let fields = self.fields(record)?;
        let columns = self.columns;
        let index = match columns.index {
            Some(column) => match fields[column].trim().parse::<i64>() {
                Ok(index) if index >= 0 => index,
                _ => {
                    return Err((
                        ProblemKind::BadIndex,
                        format!("row index {:?} is not a whole number", fields[column]),
                    ))
                }
            },
            None => default_index,
        };
        if !self.seen_indices.insert(index) {
            return Err((
                ProblemKind::DuplicateIndex,
                format!("row index {index} appears more than once"),
            ));
        }
        let product_id = ProductId::parse(fields[columns.product])
            .map_err(|error| (ProblemKind::BadProductId, error.to_string()))?;
        let image_id = ImageId::parse(fields[columns.image])
            .map_err(|error| (ProblemKind::BadImageId, error.to_string()))?;
        let designation = fields[columns.designation].to_string();
        // A row without a title is kept only for its photo (it teaches the image branch); the
        // photo is looked up below.
        let untitled = designation.trim().is_empty();
        if untitled && self.images.is_none() {
            return Err((
                ProblemKind::EmptyDesignation,
                "the designation (title) is empty (a row without a title needs a photo)"
                    .to_string(),
            ));
        }
        let category = self.category(index)?;
        if !self.seen_products.insert(product_id.value()) {
            return Err((
                ProblemKind::DuplicateProductId,
                format!("product id {product_id} appears more than once"),
            ));
        }
        if untitled && !self.has_image_file(product_id, image_id) {
            self.seen_products.remove(&product_id.value());
            return Err((
                ProblemKind::EmptyDesignation,
                format!(
                    "the designation (title) is empty and the row has no photo ({})",
                    image_file_name(product_id, image_id)
                ),
            ));
        }
        let image_path = self.image_path(product_id, image_id, report)?;
        Ok(ParsedRow {
            line,
            index,
            product_id,
            image_id,
            designation,
            description: fields[columns.description].to_string(),
            category,
            image_path,
        })
    }

    /// The fields of a row that has as many as the header, all UTF-8.
    fn fields<'r>(&self, record: &'r csv::ByteRecord) -> Result<Vec<&'r str>, Rejection> {
        if record.len() != self.headers.len() {
            return Err((
                ProblemKind::WrongFieldCount,
                format!(
                    "expected {} fields, found {}",
                    self.headers.len(),
                    record.len()
                ),
            ));
        }
        let mut fields = Vec::with_capacity(record.len());
        for (position, raw) in record.iter().enumerate() {
            let text = std::str::from_utf8(raw).map_err(|error| {
                let column = String::from_utf8_lossy(self.headers.get(position).unwrap_or(b"?"));
                (
                    ProblemKind::NotUtf8,
                    format!(
                        "column {column:?} is not valid UTF-8 (invalid byte at offset {})",
                        error.valid_up_to()
                    ),
                )
            })?;
            fields.push(text);
        }
        Ok(fields)
    }

    /// The row's label from the labels file (`None` without one).
    fn category(&self, index: i64) -> Result<Option<CategoryCode>, Rejection> {
        let Some(labels) = &self.labels else {
            return Ok(None);
        };
        match labels.get(&index) {
            None => Err((
                ProblemKind::MissingLabel,
                format!("no label for row index {index} in the labels file"),
            )),
            Some(Err((label_line, message))) => {
                let labels_file = self
                    .labels_path
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                Err((
                    ProblemKind::UnknownCategory,
                    format!("{message} (labels file {labels_file}:{label_line})"),
                ))
            }
            Some(Ok(code)) => Ok(Some(*code)),
        }
    }

    /// Whether the images folder holds the row's image file.
    fn has_image_file(&self, product_id: ProductId, image_id: ImageId) -> bool {
        self.images
            .as_ref()
            .is_some_and(|(_, names)| names.contains(&image_file_name(product_id, image_id)))
    }

    /// The path of the row's image file; a missing file is a problem only when images are
    /// required (otherwise the row is imported text-only and the file counted as missing).
    fn image_path(
        &mut self,
        product_id: ProductId,
        image_id: ImageId,
        report: &mut ImportReport,
    ) -> Result<Option<PathBuf>, Rejection> {
        let Some((folder, names)) = &self.images else {
            return Ok(None);
        };
        let name = image_file_name(product_id, image_id);
        if names.contains(&name) {
            return Ok(Some(folder.join(name)));
        }
        if self.require_images {
            let message = format!("image file {name} is missing from {}", folder.display());
            self.seen_products.remove(&product_id.value());
            return Err((ProblemKind::MissingImage, message));
        }
        if report.missing_image_examples.len() < 10 {
            report.missing_image_examples.push(name);
        }
        report.images_missing += 1;
        Ok(None)
    }
}

/// The challenge layout's name of a product's image file.
fn image_file_name(product_id: ProductId, image_id: ImageId) -> String {
    format!("image_{image_id}_product_{product_id}.jpg")
}

/// One import in progress: where it writes, what it has stored so far, what it saw.
struct Import<'a> {
    database: &'a Database,
    objects: &'a ObjectStorage,
    options: &'a ImportOptions,
    progress: &'a dyn ImportProgress,
    texts_path: &'a Path,
    report: ImportReport,
    /// Image hashes stored by this import.
    stored_images: HashSet<String>,
    version_rows: Vec<NewVersionRow>,
}

impl Import<'_> {
    fn collector(&mut self) -> Collector<'_> {
        Collector {
            strict: self.options.strict,
            report: &mut self.report,
        }
    }

    /// Reads the text rows to the end, checking each one and storing them chunk by chunk.
    async fn read_rows(
        &mut self,
        reader: &mut csv::Reader<std::fs::File>,
        checker: &mut RowChecker<'_>,
    ) -> Result<(), DatasetError> {
        let mut chunk: Vec<ParsedRow> = Vec::with_capacity(self.options.chunk_rows);
        let mut record = csv::ByteRecord::new();
        let mut row_number: i64 = 0;
        loop {
            let more = match reader.read_byte_record(&mut record) {
                Ok(more) => more,
                Err(error) => {
                    // A malformed record (e.g. an unterminated quote) ends the readable part of
                    // the file: report where, then stop reading.
                    let line = error.position().map(|p| p.line()).unwrap_or(0);
                    let path = self.texts_path;
                    self.collector().problem(
                        path,
                        line,
                        ProblemKind::WrongFieldCount,
                        format!("unreadable CSV record: {error}"),
                    )?;
                    false
                }
            };
            if more {
                self.report.rows_read += 1;
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                let default_index = row_number;
                row_number += 1;
                if let Some(row) =
                    checker.check(&record, line, default_index, &mut self.collector())?
                {
                    chunk.push(row);
                }
            }
            if chunk.len() >= self.options.chunk_rows || (!more && !chunk.is_empty()) {
                self.store_chunk(std::mem::take(&mut chunk)).await?;
                let bytes_read = reader.position().byte();
                if !self.progress.advanced(bytes_read, self.report.rows_read) {
                    return Err(DatasetError::Cancelled);
                }
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// Checks the chunk's images, stores the new ones and the chunk's records, and adds its rows
    /// to the version.
    async fn store_chunk(&mut self, rows: Vec<ParsedRow>) -> Result<(), DatasetError> {
        let max_pixels = self.options.max_image_pixels;
        let (rows, checked) = tokio::task::spawn_blocking(move || {
            let checked: Vec<Option<Result<CheckedImage, Rejection>>> = rows
                .par_iter()
                .map(|row| row.image_path.as_ref().map(|p| check_image(p, max_pixels)))
                .collect();
            (rows, checked)
        })
        .await
        .map_err(|error| DatasetError::TaskFailed {
            task: "the image check",
            message: error.to_string(),
        })?;
        let mut new_images: Vec<CheckedImage> = Vec::new();
        let mut records: Vec<NewRecord> = Vec::with_capacity(rows.len());
        let mut source_indices: Vec<i64> = Vec::with_capacity(rows.len());
        for (row, image) in rows.into_iter().zip(checked) {
            let image_hash = match image {
                None => None,
                Some(Ok(image)) => {
                    self.report.images_found += 1;
                    let hash = image.hash.as_str().to_string();
                    if self.stored_images.insert(hash.clone()) {
                        new_images.push(image);
                    }
                    Some(hash)
                }
                Some(Err((kind, message))) => {
                    let path = self.texts_path;
                    self.collector().problem(path, row.line, kind, message)?;
                    continue;
                }
            };
            if image_hash.is_some() && row.designation.trim().is_empty() {
                self.report.photo_only_rows += 1;
            }
            let record = NewRecord::new(
                row.product_id.value(),
                row.image_id.value(),
                row.designation,
                row.description,
                row.category,
                image_hash,
            );
            records.push(record);
            source_indices.push(row.index);
        }
        self.store_images(&new_images).await?;
        let mut transaction = self.database.begin_write().await?;
        insert_images(&mut transaction, &new_images).await?;
        insert_records(&mut transaction, &records).await?;
        transaction.commit().await?;
        for (record, source_index) in records.into_iter().zip(source_indices) {
            self.version_rows.push(NewVersionRow {
                record_hash: record.hash,
                product_id: record.product_id,
                source_index,
                category: record.category,
                split: None,
            });
        }
        Ok(())
    }

    /// Writes image bytes (content-addressed, so a re-run or a crash leaves nothing wrong).
    async fn store_images(&mut self, images: &[CheckedImage]) -> Result<(), DatasetError> {
        let objects = self.objects;
        let written: Vec<Result<bool, DatasetError>> = futures::stream::iter(images.iter())
            .map(|image| async move {
                objects
                    .put_if_absent(&image_key(&image.hash), image.bytes.clone())
                    .await
                    .map_err(DatasetError::from)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for result in written {
            if result? {
                self.report.images_stored_new += 1;
            }
        }
        Ok(())
    }

    /// Writes the version once every row was read (or finds the identical one).
    async fn write_version(self, source: &ImportSource) -> Result<ImportOutcome, DatasetError> {
        let mut report = self.report;
        report.rows_imported = self.version_rows.len() as u64;
        report.rows_skipped = report.rows_read - report.rows_imported;
        if self.version_rows.is_empty() {
            return Err(DatasetError::NothingToImport {
                problems: report.problems.len(),
            });
        }
        self.progress.stage("writing the dataset version");
        let metadata = VersionMetadata {
            parent: None,
            source: format!(
                "{} import of {}",
                source.layout.as_str(),
                self.texts_path.display()
            ),
            note: self.options.note.clone(),
            split_seed: self.options.split_seed,
            split_ratios: self.options.split_ratios,
        };
        let (version, created) =
            create_version(self.database, self.version_rows, &metadata).await?;
        Ok(if created {
            ImportOutcome::Created { version, report }
        } else {
            ImportOutcome::AlreadyExists { version, report }
        })
    }
}

/// Records the size of newly stored images.
async fn insert_images(
    connection: &mut sqlx::AnyConnection,
    images: &[CheckedImage],
) -> Result<(), DatasetError> {
    let now = now_ms();
    for batch in images.chunks(64) {
        let sql = format!(
            "INSERT INTO images (hash, width, height, byte_length, created_at_ms) VALUES {} \
             ON CONFLICT (hash) DO NOTHING",
            SqlPlaceholders::values(batch.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for image in batch {
            query = query
                .bind(image.hash.as_str().to_string())
                .bind(image.width as i64)
                .bind(image.height as i64)
                .bind(image.bytes.len() as i64)
                .bind(now);
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
}
