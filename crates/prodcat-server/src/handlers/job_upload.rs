//! Reading a job's upload as it arrives: the bytes of the body (or of the multipart file part)
//! are handed to a parser running on the blocking pool, which reads JSON lines or CSV from them
//! and hands back checked items in chunks; each chunk is stored before the next is parsed. So
//! memory stays flat whatever the number of items, and a bad line stops the upload at once with
//! an error naming it.

use std::io::{BufRead, BufReader, Read};

use axum::body::Bytes;
use prodcat_model::{InputLimits, ProductInput};
use tokio::sync::mpsc;

use crate::api::JobItemRequest;
use crate::error::ApiError;
use crate::handlers::{decode_base64_image, parse_json};

/// The upload formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadFormat {
    JsonLines,
    Csv,
}

/// A product read from an upload, checked, before its image is stored.
#[derive(Debug, Clone)]
pub(crate) struct UploadedItem {
    pub designation: String,
    pub description: String,
    pub image: Option<Bytes>,
    pub product_id: Option<i64>,
}

/// The longest line of a JSON-lines upload (a product with its photo in base64).
pub(crate) const MAX_LINE_BYTES: usize = 32 << 20;

fn at_line(line: usize, error: ApiError) -> ApiError {
    ApiError {
        message: format!("line {line}: {}", error.message),
        ..error
    }
}

fn check_item(line: usize, item: &UploadedItem, limits: &InputLimits) -> Result<(), ApiError> {
    if item.designation.trim().is_empty()
        && item.description.trim().is_empty()
        && item.image.is_none()
    {
        return Err(ApiError::invalid(format!(
            "line {line}: the designation is missing (give a designation, a description or an \
             image)"
        )));
    }
    // The same checks as every other way in: text sizes, the photo's header.
    limits
        .check_product(&ProductInput {
            designation: &item.designation,
            description: &item.description,
            image: item.image.as_deref(),
        })
        .map_err(|error| at_line(line, ApiError::from(error)))
}

/// Reads one line of at most `limit` bytes (without its end); `None` at the end of the input.
fn read_line(reader: &mut impl BufRead, limit: usize) -> Result<Option<Vec<u8>>, ApiError> {
    let mut line = Vec::new();
    loop {
        let available = reader
            .fill_buf()
            .map_err(|error| ApiError::invalid(format!("the upload could not be read: {error}")))?;
        if available.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (taken, ended) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if line.len() > limit {
            return Err(ApiError::too_large(format!(
                "a line of the upload is longer than {limit} bytes"
            )));
        }
        if ended {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

fn json_item(number: usize, line: &[u8]) -> Result<UploadedItem, ApiError> {
    let request: JobItemRequest = parse_json(line).map_err(|error| at_line(number, error))?;
    let image = request
        .image
        .as_deref()
        .map(decode_base64_image)
        .transpose()
        .map_err(|error| at_line(number, error))?;
    Ok(UploadedItem {
        designation: request.designation.unwrap_or_default(),
        description: request.description.unwrap_or_default(),
        image,
        product_id: request.product_id,
    })
}

/// Parses JSON lines, handing each chunk of `chunk_size` items to `deliver` (which returns
/// false to stop). Returns the number of items.
fn parse_json_lines(
    input: impl Read,
    limits: &InputLimits,
    chunk_size: usize,
    deliver: &mut dyn FnMut(Vec<UploadedItem>) -> bool,
) -> Result<usize, ApiError> {
    let mut reader = BufReader::with_capacity(64 << 10, input);
    let mut chunk = Vec::with_capacity(chunk_size);
    let (mut number, mut count) = (0, 0);
    while let Some(line) = read_line(&mut reader, MAX_LINE_BYTES)? {
        number += 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let item = json_item(number, &line)?;
        check_item(number, &item, limits)?;
        chunk.push(item);
        count += 1;
        if chunk.len() >= chunk_size && !deliver(std::mem::take(&mut chunk)) {
            return Ok(count);
        }
    }
    if !chunk.is_empty() {
        deliver(chunk);
    }
    Ok(count)
}

/// Parses CSV with a header naming a `designation` column (optional `description` and
/// `productid`), handing chunks to `deliver` as [`parse_json_lines`] does.
fn parse_csv(
    input: impl Read,
    limits: &InputLimits,
    chunk_size: usize,
    deliver: &mut dyn FnMut(Vec<UploadedItem>) -> bool,
) -> Result<usize, ApiError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let headers = reader
        .headers()
        .map_err(|error| ApiError::invalid(format!("the CSV header can not be read: {error}")))?
        .clone();
    let column = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
    };
    let Some(designation_column) = column(&["designation"]) else {
        return Err(ApiError::invalid(
            "the CSV has no designation column (expected a header such as \
             designation,description,productid)",
        ));
    };
    let description_column = column(&["description"]);
    let product_column = column(&["productid", "product_id", "productId"]);
    let mut chunk = Vec::with_capacity(chunk_size);
    let mut count = 0;
    let mut record = csv::StringRecord::new();
    let mut line = 1;
    loop {
        line += 1;
        let more = reader.read_record(&mut record).map_err(|error| {
            ApiError::invalid(format!("line {line}: unreadable CSV row: {error}"))
        })?;
        if !more {
            break;
        }
        let field = |column: Option<usize>| column.and_then(|c| record.get(c)).unwrap_or("");
        let product_id = match field(product_column).trim() {
            "" => None,
            text => Some(text.parse::<i64>().map_err(|_| {
                ApiError::invalid(format!("line {line}: productid {text:?} is not an integer"))
            })?),
        };
        let item = UploadedItem {
            designation: field(Some(designation_column)).to_string(),
            description: field(description_column).to_string(),
            image: None,
            product_id,
        };
        check_item(line, &item, limits)?;
        chunk.push(item);
        count += 1;
        if chunk.len() >= chunk_size && !deliver(std::mem::take(&mut chunk)) {
            return Ok(count);
        }
    }
    if !chunk.is_empty() {
        deliver(chunk);
    }
    Ok(count)
}

/// Parses an upload of `format` from `input` (see [`parse_json_lines`], [`parse_csv`]).
pub(crate) fn parse_upload(
    format: UploadFormat,
    input: impl Read,
    limits: &InputLimits,
    chunk_size: usize,
    deliver: &mut dyn FnMut(Vec<UploadedItem>) -> bool,
) -> Result<usize, ApiError> {
    match format {
        UploadFormat::JsonLines => parse_json_lines(input, limits, chunk_size, deliver),
        UploadFormat::Csv => parse_csv(input, limits, chunk_size, deliver),
    }
}

/// Reads the bytes an async side sends through a channel, for a parser on the blocking pool.
pub(crate) struct ChannelReader {
    receiver: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(receiver: mpsc::Receiver<Bytes>) -> Self {
        Self {
            receiver,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(bytes) => self.current = bytes,
                None => return Ok(0),
            }
        }
        let count = buffer.len().min(self.current.len());
        buffer[..count].copy_from_slice(&self.current[..count]);
        self.current = self.current.slice(count..);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(format: UploadFormat, bytes: &[u8]) -> Result<Vec<UploadedItem>, ApiError> {
        let mut items = Vec::new();
        parse_upload(format, bytes, &InputLimits::default(), 3, &mut |chunk| {
            items.extend(chunk);
            true
        })?;
        Ok(items)
    }

    #[test]
    fn json_lines_and_csv_are_read_in_chunks_with_their_line_numbers() {
        let lines = b"{\"designation\": \"a\"}\n\n{\"designation\": \"b\", \"productId\": 7}\r\n{\"designation\": \"c\"}\n{\"designation\": \"d\"}";
        let items = parse(UploadFormat::JsonLines, lines).unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[1].product_id, Some(7));
        let error = parse(
            UploadFormat::JsonLines,
            b"{\"designation\": \"a\"}\n{oops}\n",
        )
        .unwrap_err();
        assert!(error.message.starts_with("line 2:"), "{}", error.message);
        let csv = b"designation,description,productid\nPiscine,,3\nJeu,\"long, text\",\n";
        let items = parse(UploadFormat::Csv, csv).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].product_id, Some(3));
        let error = parse(UploadFormat::Csv, b"designation,productid\nx,notanumber\n").unwrap_err();
        assert!(error.message.starts_with("line 2:"), "{}", error.message);
        let long = format!(
            "{{\"designation\": \"x\", \"description\": \"{}\"}}\n",
            "a".repeat(70_000)
        );
        let error = parse(UploadFormat::JsonLines, long.as_bytes()).unwrap_err();
        assert_eq!(
            error.status,
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            error.message
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes: an error or items, never a panic, and quickly.
        #[test]
        fn arbitrary_uploads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let started = std::time::Instant::now();
            let _ = parse(UploadFormat::JsonLines, &bytes);
            let _ = parse(UploadFormat::Csv, &bytes);
            prop_assert!(started.elapsed() < std::time::Duration::from_millis(500));
        }

        /// Lines shaped like items, with hostile text.
        #[test]
        fn hostile_text_in_items_is_handled(
            designation in "[<&a-zé\"\\\\ ]{0,200}",
            description in "[<>&;#a-z0-9 ]{0,2000}",
        ) {
            let line = serde_json::json!({"designation": designation, "description": description});
            let _ = parse(UploadFormat::JsonLines, format!("{line}\n").as_bytes());
        }
    }
}
