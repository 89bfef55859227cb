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
use prodcat_domain::{sha256_hex, CategoryCode, ContentHash, ImageId, ProductId};
use prodcat_storage::{image_key, now_ms, Database, ObjectStorage, SqlPlaceholders};
use rayon::prelude::*;
use serde::Serialize;

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
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let headers = reader
        .byte_headers()
        .map_err(|e| csv_error(path, e))?
        .clone();
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

fn check_image(path: &Path, max_pixels: u64) -> Result<CheckedImage, (ProblemKind, String)> {
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

/// Hash of a row's content: the identity of a dataset record.
pub(crate) fn record_hash(
    product_id: i64,
    image_id: i64,
    designation: &str,
    description: &str,
    category: Option<CategoryCode>,
    image_hash: Option<&str>,
) -> String {
    let text = format!(
        "{product_id}\u{1f}{image_id}\u{1f}{designation}\u{1f}{description}\u{1f}{}\u{1f}{}",
        category.map(|c| c.to_string()).unwrap_or_default(),
        image_hash.unwrap_or("")
    );
    sha256_hex(text.as_bytes())
}

/// Imports `source` into a new dataset version.
pub async fn import_dataset(
    database: &Database,
    objects: &ObjectStorage,
    source: &ImportSource,
    options: &ImportOptions,
    progress: &dyn ImportProgress,
) -> Result<ImportOutcome, DatasetError> {
    let mut report = ImportReport::default();
    let texts_path = source.texts.clone();
    let total_bytes = std::fs::metadata(&texts_path)
        .map(|m| m.len())
        .map_err(|source| DatasetError::Io {
            path: texts_path.display().to_string(),
            source,
        })?;
    let labels = match &source.labels {
        Some(path) => {
            progress.stage("reading labels");
            let mut collector = Collector {
                strict: options.strict,
                report: &mut report,
            };
            Some(read_labels(path, &mut collector)?)
        }
        None => None,
    };
    let image_names = match &source.images {
        Some(folder) => {
            progress.stage("listing images");
            Some(list_image_folder(folder)?)
        }
        None => None,
    };

    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&texts_path)
        .map_err(|e| csv_error(&texts_path, e))?;
    let headers = reader
        .byte_headers()
        .map_err(|e| csv_error(&texts_path, e))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h == name.as_bytes());
    let required = ["designation", "description", "productid", "imageid"];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|name| column(name).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(DatasetError::MissingColumns {
            path: texts_path.display().to_string(),
            missing: missing.join(", "),
            expected: "an unnamed index column, designation, description, productid, imageid"
                .to_string(),
        });
    }
    let designation_column = column("designation").unwrap_or(1);
    let description_column = column("description").unwrap_or(2);
    let product_column = column("productid").unwrap_or(3);
    let image_column = column("imageid").unwrap_or(4);
    let index_column = headers
        .iter()
        .position(|h| h.is_empty() || h == b"Unnamed: 0" || h == b"index");

    progress.started(total_bytes);
    progress.stage("importing rows");
    let mut seen_products: HashSet<i64> = HashSet::new();
    let mut seen_indices: HashSet<i64> = HashSet::new();
    let mut stored_images: HashSet<String> = HashSet::new();
    let mut version_rows: Vec<NewVersionRow> = Vec::new();
    let mut chunk: Vec<ParsedRow> = Vec::with_capacity(options.chunk_rows);
    let mut record = csv::ByteRecord::new();
    let mut row_number: i64 = 0;
    loop {
        let more = match reader.read_byte_record(&mut record) {
            Ok(more) => more,
            Err(error) => {
                // A malformed record (e.g. an unterminated quote) ends the readable part of the
                // file: report where, then stop reading.
                let line = error.position().map(|p| p.line()).unwrap_or(0);
                let mut collector = Collector {
                    strict: options.strict,
                    report: &mut report,
                };
                collector.problem(
                    &texts_path,
                    line,
                    ProblemKind::WrongFieldCount,
                    format!("unreadable CSV record: {error}"),
                )?;
                false
            }
        };
        if more {
            report.rows_read += 1;
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            let default_index = row_number;
            row_number += 1;
            let mut collector = Collector {
                strict: options.strict,
                report: &mut report,
            };
            if let Some(row) = parse_row(
                &record,
                line,
                default_index,
                &headers,
                (
                    index_column,
                    designation_column,
                    description_column,
                    product_column,
                    image_column,
                ),
                labels.as_ref(),
                source,
                image_names.as_ref(),
                &mut seen_products,
                &mut seen_indices,
                &texts_path,
                options,
                &mut collector,
            )? {
                chunk.push(row);
            }
        }
        if chunk.len() >= options.chunk_rows || (!more && !chunk.is_empty()) {
            let rows = std::mem::take(&mut chunk);
            process_chunk(
                database,
                objects,
                rows,
                options,
                &texts_path,
                &mut stored_images,
                &mut version_rows,
                &mut report,
            )
            .await?;
            let bytes_read = reader.position().byte();
            if !progress.advanced(bytes_read, report.rows_read) {
                return Err(DatasetError::Cancelled);
            }
        }
        if !more {
            break;
        }
    }
    report.rows_imported = version_rows.len() as u64;
    report.rows_skipped = report.rows_read - report.rows_imported;
    if version_rows.is_empty() {
        return Err(DatasetError::NothingToImport {
            problems: report.problems.len(),
        });
    }
    progress.stage("writing the dataset version");
    let metadata = VersionMetadata {
        parent: None,
        source: format!(
            "{} import of {}",
            source.layout.as_str(),
            texts_path.display()
        ),
        note: options.note.clone(),
        split_seed: options.split_seed,
        split_ratios: options.split_ratios,
    };
    let (version, created) = create_version(database, version_rows, &metadata).await?;
    Ok(if created {
        ImportOutcome::Created { version, report }
    } else {
        ImportOutcome::AlreadyExists { version, report }
    })
}

#[allow(clippy::too_many_arguments)]
fn parse_row(
    record: &csv::ByteRecord,
    line: u64,
    default_index: i64,
    headers: &csv::ByteRecord,
    columns: (Option<usize>, usize, usize, usize, usize),
    labels: Option<&LabelMap>,
    source: &ImportSource,
    image_names: Option<&HashSet<String>>,
    seen_products: &mut HashSet<i64>,
    seen_indices: &mut HashSet<i64>,
    texts_path: &Path,
    options: &ImportOptions,
    collector: &mut Collector<'_>,
) -> Result<Option<ParsedRow>, DatasetError> {
    let (index_column, designation_column, description_column, product_column, image_column) =
        columns;
    if record.len() != headers.len() {
        collector.problem(
            texts_path,
            line,
            ProblemKind::WrongFieldCount,
            format!("expected {} fields, found {}", headers.len(), record.len()),
        )?;
        return Ok(None);
    }
    let mut fields = Vec::with_capacity(record.len());
    for (position, raw) in record.iter().enumerate() {
        match std::str::from_utf8(raw) {
            Ok(text) => fields.push(text),
            Err(error) => {
                let column = String::from_utf8_lossy(headers.get(position).unwrap_or(b"?"));
                collector.problem(
                    texts_path,
                    line,
                    ProblemKind::NotUtf8,
                    format!(
                        "column {column:?} is not valid UTF-8 (invalid byte at offset {})",
                        error.valid_up_to()
                    ),
                )?;
                return Ok(None);
            }
        }
    }
    let index = match index_column {
        Some(column) => match fields[column].trim().parse::<i64>() {
            Ok(index) if index >= 0 => index,
            _ => {
                collector.problem(
                    texts_path,
                    line,
                    ProblemKind::BadIndex,
                    format!("row index {:?} is not a whole number", fields[column]),
                )?;
                return Ok(None);
            }
        },
        None => default_index,
    };
    if !seen_indices.insert(index) {
        collector.problem(
            texts_path,
            line,
            ProblemKind::DuplicateIndex,
            format!("row index {index} appears more than once"),
        )?;
        return Ok(None);
    }
    let product_id = match ProductId::parse(fields[product_column]) {
        Ok(id) => id,
        Err(error) => {
            collector.problem(
                texts_path,
                line,
                ProblemKind::BadProductId,
                error.to_string(),
            )?;
            return Ok(None);
        }
    };
    let image_id = match ImageId::parse(fields[image_column]) {
        Ok(id) => id,
        Err(error) => {
            collector.problem(texts_path, line, ProblemKind::BadImageId, error.to_string())?;
            return Ok(None);
        }
    };
    let designation = fields[designation_column].to_string();
    if designation.trim().is_empty() {
        collector.problem(
            texts_path,
            line,
            ProblemKind::EmptyDesignation,
            "the designation (title) is empty".to_string(),
        )?;
        return Ok(None);
    }
    let category = match labels {
        None => None,
        Some(labels) => match labels.get(&index) {
            None => {
                collector.problem(
                    texts_path,
                    line,
                    ProblemKind::MissingLabel,
                    format!("no label for row index {index} in the labels file"),
                )?;
                return Ok(None);
            }
            Some(Err((label_line, message))) => {
                let labels_file = source
                    .labels
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                collector.problem(
                    texts_path,
                    line,
                    ProblemKind::UnknownCategory,
                    format!("{message} (labels file {labels_file}:{label_line})"),
                )?;
                return Ok(None);
            }
            Some(Ok(code)) => Some(*code),
        },
    };
    if !seen_products.insert(product_id.value()) {
        collector.problem(
            texts_path,
            line,
            ProblemKind::DuplicateProductId,
            format!("product id {product_id} appears more than once"),
        )?;
        return Ok(None);
    }
    let image_path = match (&source.images, image_names) {
        (Some(folder), Some(names)) => {
            let name = format!("image_{image_id}_product_{product_id}.jpg");
            if names.contains(&name) {
                Some(folder.join(name))
            } else {
                if options.require_images {
                    collector.problem(
                        texts_path,
                        line,
                        ProblemKind::MissingImage,
                        format!("image file {name} is missing from {}", folder.display()),
                    )?;
                    seen_products.remove(&product_id.value());
                    return Ok(None);
                }
                if collector.report.missing_image_examples.len() < 10 {
                    collector.report.missing_image_examples.push(name);
                }
                collector.report.images_missing += 1;
                None
            }
        }
        _ => None,
    };
    Ok(Some(ParsedRow {
        line,
        index,
        product_id,
        image_id,
        designation,
        description: fields[description_column].to_string(),
        category,
        image_path,
    }))
}

#[allow(clippy::too_many_arguments)]
async fn process_chunk(
    database: &Database,
    objects: &ObjectStorage,
    rows: Vec<ParsedRow>,
    options: &ImportOptions,
    texts_path: &Path,
    stored_images: &mut HashSet<String>,
    version_rows: &mut Vec<NewVersionRow>,
    report: &mut ImportReport,
) -> Result<(), DatasetError> {
    let max_pixels = options.max_image_pixels;
    let (rows, checked) = tokio::task::spawn_blocking(move || {
        let checked: Vec<Option<Result<CheckedImage, (ProblemKind, String)>>> = rows
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
    let mut records: Vec<(String, ParsedRow, Option<String>)> = Vec::with_capacity(rows.len());
    for (row, image) in rows.into_iter().zip(checked) {
        let image_hash = match image {
            None => None,
            Some(Ok(image)) => {
                report.images_found += 1;
                let hash = image.hash.as_str().to_string();
                if stored_images.insert(hash.clone()) {
                    new_images.push(image);
                }
                Some(hash)
            }
            Some(Err((kind, message))) => {
                let mut collector = Collector {
                    strict: options.strict,
                    report,
                };
                collector.problem(texts_path, row.line, kind, message)?;
                continue;
            }
        };
        let hash = record_hash(
            row.product_id.value(),
            row.image_id.value(),
            &row.designation,
            &row.description,
            row.category,
            image_hash.as_deref(),
        );
        records.push((hash, row, image_hash));
    }

    // Image bytes first (content-addressed, so a re-run or a crash leaves nothing wrong).
    let written: Vec<Result<bool, DatasetError>> = futures::stream::iter(new_images.iter())
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
            report.images_stored_new += 1;
        }
    }

    let mut transaction = database.pool().begin().await?;
    let now = now_ms();
    for batch in new_images.chunks(64) {
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
        query.execute(&mut *transaction).await?;
    }
    for batch in records.chunks(64) {
        let sql = format!(
            "INSERT INTO dataset_records (record_hash, product_id, image_id, designation, \
             description, category_code, image_hash) VALUES {} ON CONFLICT (record_hash) DO NOTHING",
            SqlPlaceholders::values(batch.len(), 7)
        );
        let mut query = sqlx::query(&sql);
        for (hash, row, image_hash) in batch {
            query = query
                .bind(hash.clone())
                .bind(row.product_id.value())
                .bind(row.image_id.value())
                .bind(row.designation.clone())
                .bind(row.description.clone())
                .bind(row.category.map(|c| c.value() as i64))
                .bind(image_hash.clone());
        }
        query.execute(&mut *transaction).await?;
    }
    transaction.commit().await?;
    for (hash, row, _) in records {
        version_rows.push(NewVersionRow {
            record_hash: hash,
            product_id: row.product_id.value(),
            source_index: row.index,
            category: row.category,
            split: None,
        });
    }
    Ok(())
}
