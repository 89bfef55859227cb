//! Text embeddings for search by meaning: the [`SentenceEmbedder`] seam (multilingual-e5-small
//! through `prodcat-embed` in production; any other model can be plugged in), and the
//! persistent cache of product vectors keyed by a content hash of the embedded text, so a
//! restart re-embeds only the products whose text changed.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prodcat_embed::{ModelDirectory, TextEmbedder};
use sha2::{Digest, Sha256};

use crate::error::SearchError;
use crate::vectors::QuantizedVector;

/// A model that turns queries and product texts into vectors whose cosine similarity measures
/// closeness of meaning.
pub trait SentenceEmbedder: Send + Sync {
    /// Identifies the weights and tokenizer: vectors from different ids are never mixed (the id
    /// is part of the cache file name).
    fn model_id(&self) -> &str;
    /// Length of every vector.
    fn dimension(&self) -> usize;
    /// Embeds one search query.
    fn embed_query(&self, text: &str) -> Vec<f32>;
    /// Embeds product texts, one vector per text, in order.
    fn embed_passages(&self, texts: &[&str]) -> Vec<Vec<f32>>;
}

/// multilingual-e5-small (through `prodcat-embed`): queries get e5's `query: ` prefix, products
/// `passage: `.
pub struct E5Embedder {
    embedder: Arc<TextEmbedder>,
    model_id: String,
}

impl E5Embedder {
    /// Loads the model directory (`<PRODCAT_MODEL_DIR>/e5-small`) with default options; the model
    /// id comes from the checksums of the model and tokenizer files.
    pub fn load(directory: &Path) -> Result<Self, SearchError> {
        let model_id = model_id_of_directory(directory)?;
        let embedder = TextEmbedder::load(directory)?;
        Ok(Self::new(Arc::new(embedder), model_id))
    }

    /// Wraps an already loaded embedder; `model_id` must change whenever its weights or
    /// tokenizer do.
    pub fn new(embedder: Arc<TextEmbedder>, model_id: impl Into<String>) -> Self {
        Self {
            embedder,
            model_id: model_id.into(),
        }
    }

    /// The wrapped embedder.
    pub fn text_embedder(&self) -> &Arc<TextEmbedder> {
        &self.embedder
    }
}

impl SentenceEmbedder for E5Embedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.embedder.dimension()
    }

    fn embed_query(&self, text: &str) -> Vec<f32> {
        self.embedder.embed_query(text)
    }

    fn embed_passages(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        self.embedder.embed_passages(texts)
    }
}

/// `multilingual-e5-small-<16 hex digits>` from the sha256 of the model file and of
/// `tokenizer.json` (see [`ModelDirectory::model_id`]).
pub fn model_id_of_directory(directory: &Path) -> Result<String, SearchError> {
    Ok(ModelDirectory::locate(directory)?.model_id()?)
}

/// Content hash of an embedded text (the cache key).
pub type TextKey = [u8; 32];

/// sha256 of the text.
pub fn text_key(text: &str) -> TextKey {
    Sha256::digest(text.as_bytes()).into()
}

const CACHE_MAGIC: &[u8; 8] = b"PCSVEC01";

/// An append-only file of quantised product vectors keyed by text hash, for one model.
///
/// Layout: `PCSVEC01`, dimension (u32 LE), model id length (u16 LE), model id bytes; then
/// records of 32-byte key, scale (f32 LE) and `dimension` signed bytes. A record cut short by
/// a crash is dropped when the file is opened again.
pub struct EmbeddingCache {
    path: PathBuf,
    file: File,
    dimension: usize,
    header_length: u64,
    offsets: HashMap<TextKey, u64>,
    records: u64,
}

impl std::fmt::Debug for EmbeddingCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EmbeddingCache")
            .field("path", &self.path)
            .field("dimension", &self.dimension)
            .field("records", &self.records)
            .finish()
    }
}

impl EmbeddingCache {
    /// Opens (or creates) the cache for `model_id` in `directory`.
    pub fn open(directory: &Path, model_id: &str, dimension: usize) -> Result<Self, SearchError> {
        std::fs::create_dir_all(directory)
            .map_err(SearchError::io("create the directory", directory))?;
        let safe_id: String = model_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = directory.join(format!("text-vectors-{safe_id}.bin"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(SearchError::io("open", &path))?;
        let header = header_bytes(model_id, dimension);
        let header_length = header.len() as u64;
        let file_length = file
            .metadata()
            .map_err(SearchError::io("inspect", &path))?
            .len();
        let mut cache = Self {
            path: path.clone(),
            file,
            dimension,
            header_length,
            offsets: HashMap::new(),
            records: 0,
        };
        if file_length < header_length {
            // New, or cut short while the header was written: start over.
            cache.rewrite_header(&header)?;
            return Ok(cache);
        }
        let mut found = vec![0u8; header.len()];
        cache
            .file
            .read_exact(&mut found)
            .map_err(SearchError::io("read", &path))?;
        if found != header {
            return Err(SearchError::InvalidCache {
                path,
                detail: format!(
                    "its header does not announce model {model_id} with {dimension} dimensions; \
                     remove the file to rebuild it"
                ),
            });
        }
        let record_length = cache.record_length() as u64;
        let records = (file_length - header_length) / record_length;
        let valid_length = header_length + records * record_length;
        if valid_length != file_length {
            cache
                .file
                .set_len(valid_length)
                .map_err(SearchError::io("truncate a partial record of", &path))?;
        }
        let mut reader = BufReader::with_capacity(1 << 20, &mut cache.file);
        let mut record = vec![0u8; record_length as usize];
        for index in 0..records {
            reader
                .read_exact(&mut record)
                .map_err(SearchError::io("read", &path))?;
            let mut key = [0u8; 32];
            key.copy_from_slice(&record[..32]);
            cache
                .offsets
                .insert(key, header_length + index * record_length);
        }
        cache.records = records;
        Ok(cache)
    }

    fn record_length(&self) -> usize {
        32 + 4 + self.dimension
    }

    fn rewrite_header(&mut self, header: &[u8]) -> Result<(), SearchError> {
        self.file
            .set_len(0)
            .and_then(|_| self.file.seek(SeekFrom::Start(0)))
            .and_then(|_| self.file.write_all(header))
            .and_then(|_| self.file.flush())
            .map_err(SearchError::io("write", &self.path))?;
        Ok(())
    }

    /// Where the vectors live.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Distinct texts with a stored vector.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn contains(&self, key: &TextKey) -> bool {
        self.offsets.contains_key(key)
    }

    /// The stored vector of one text.
    pub fn get(&mut self, key: &TextKey) -> Result<Option<QuantizedVector>, SearchError> {
        let Some(&offset) = self.offsets.get(key) else {
            return Ok(None);
        };
        let mut record = vec![0u8; self.record_length()];
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut record))
            .map_err(SearchError::io("read", &self.path))?;
        Ok(Some(self.decode(&record)))
    }

    /// The stored vectors of many texts, reading the file once from start to end.
    pub fn get_many(
        &mut self,
        keys: &HashSet<TextKey>,
    ) -> Result<HashMap<TextKey, QuantizedVector>, SearchError> {
        let mut found = HashMap::new();
        if keys.is_empty() || self.records == 0 {
            return Ok(found);
        }
        let record_length = self.record_length();
        self.file
            .seek(SeekFrom::Start(self.header_length))
            .map_err(SearchError::io("read", &self.path))?;
        let mut reader = BufReader::with_capacity(1 << 20, &mut self.file);
        let mut record = vec![0u8; record_length];
        let mut records = Vec::new();
        for _ in 0..self.records {
            reader
                .read_exact(&mut record)
                .map_err(SearchError::io("read", &self.path))?;
            if keys.contains(&record[..32]) {
                records.push(record.clone());
            }
        }
        for record in records {
            let mut key = [0u8; 32];
            key.copy_from_slice(&record[..32]);
            // A key appended twice keeps its last vector.
            found.insert(key, self.decode(&record));
        }
        Ok(found)
    }

    fn decode(&self, record: &[u8]) -> QuantizedVector {
        let scale = f32::from_le_bytes([record[32], record[33], record[34], record[35]]);
        let codes = record[36..].iter().map(|byte| *byte as i8).collect();
        QuantizedVector { scale, codes }
    }

    /// Appends vectors (flushed to the operating system, not synced to disk: see [`Self::sync`]).
    pub fn append(&mut self, entries: &[(TextKey, QuantizedVector)]) -> Result<(), SearchError> {
        if entries.is_empty() {
            return Ok(());
        }
        let record_length = self.record_length() as u64;
        let start = self.header_length + self.records * record_length;
        self.file
            .seek(SeekFrom::Start(start))
            .map_err(SearchError::io("write", &self.path))?;
        let mut writer = BufWriter::with_capacity(1 << 20, &mut self.file);
        let mut written = Vec::with_capacity(entries.len());
        for (index, (key, vector)) in entries.iter().enumerate() {
            if vector.codes.len() != self.dimension {
                continue;
            }
            let mut record = Vec::with_capacity(record_length as usize);
            record.extend_from_slice(key);
            record.extend_from_slice(&vector.scale.to_le_bytes());
            record.extend(vector.codes.iter().map(|code| *code as u8));
            writer
                .write_all(&record)
                .map_err(SearchError::io("write", &self.path))?;
            written.push((*key, index));
        }
        writer
            .flush()
            .map_err(SearchError::io("write", &self.path))?;
        drop(writer);
        for (position, (key, _)) in written.iter().enumerate() {
            self.offsets
                .insert(*key, start + position as u64 * record_length);
        }
        self.records += written.len() as u64;
        Ok(())
    }

    /// Forces appended vectors to disk.
    pub fn sync(&mut self) -> Result<(), SearchError> {
        self.file
            .sync_data()
            .map_err(SearchError::io("sync", &self.path))
    }

    /// Rewrites the file with only the vectors of `live` texts when more than half of its
    /// records are stale (texts no product has any more, or superseded duplicates). Returns
    /// whether it was rewritten.
    pub fn compact_if_mostly_stale(
        &mut self,
        live: &HashSet<TextKey>,
        model_id: &str,
    ) -> Result<bool, SearchError> {
        let live_records = self
            .offsets
            .keys()
            .filter(|key| live.contains(*key))
            .count() as u64;
        if self.records < 1024 || live_records * 2 >= self.records {
            return Ok(false);
        }
        let kept_keys: HashSet<TextKey> = self
            .offsets
            .keys()
            .filter(|key| live.contains(*key))
            .copied()
            .collect();
        let kept = self.get_many(&kept_keys)?;
        let temporary = self.path.with_extension("bin.compacting");
        {
            let mut file =
                File::create(&temporary).map_err(SearchError::io("create", &temporary))?;
            file.write_all(&header_bytes(model_id, self.dimension))
                .map_err(SearchError::io("write", &temporary))?;
            let mut writer = BufWriter::with_capacity(1 << 20, &mut file);
            let mut keys: Vec<&TextKey> = kept.keys().collect();
            keys.sort();
            for key in keys {
                let vector = &kept[key];
                writer
                    .write_all(key)
                    .and_then(|_| writer.write_all(&vector.scale.to_le_bytes()))
                    .and_then(|_| {
                        let bytes: Vec<u8> = vector.codes.iter().map(|code| *code as u8).collect();
                        writer.write_all(&bytes)
                    })
                    .map_err(SearchError::io("write", &temporary))?;
            }
            writer
                .flush()
                .map_err(SearchError::io("write", &temporary))?;
            drop(writer);
            file.sync_all()
                .map_err(SearchError::io("sync", &temporary))?;
        }
        std::fs::rename(&temporary, &self.path).map_err(SearchError::io("replace", &self.path))?;
        *self = Self::open(
            self.path.parent().unwrap_or(Path::new(".")),
            model_id,
            self.dimension,
        )?;
        Ok(true)
    }
}

fn header_bytes(model_id: &str, dimension: usize) -> Vec<u8> {
    let id = model_id.as_bytes();
    let id = &id[..id.len().min(u16::MAX as usize)];
    let mut header = Vec::with_capacity(14 + id.len());
    header.extend_from_slice(CACHE_MAGIC);
    header.extend_from_slice(&(dimension as u32).to_le_bytes());
    header.extend_from_slice(&(id.len() as u16).to_le_bytes());
    header.extend_from_slice(id);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(seed: i8, dimension: usize) -> QuantizedVector {
        QuantizedVector {
            scale: 0.01 * f32::from(seed),
            codes: (0..dimension).map(|i| seed.wrapping_add(i as i8)).collect(),
        }
    }

    #[test]
    fn vectors_survive_reopening_and_a_torn_last_record() {
        let directory = tempfile::tempdir().unwrap();
        let keys: Vec<TextKey> = (0..5).map(|i| text_key(&format!("text {i}"))).collect();
        {
            let mut cache = EmbeddingCache::open(directory.path(), "model/a", 8).unwrap();
            assert!(cache.is_empty());
            let entries: Vec<(TextKey, QuantizedVector)> = keys
                .iter()
                .enumerate()
                .map(|(i, key)| (*key, vector(i as i8 + 1, 8)))
                .collect();
            cache.append(&entries).unwrap();
            cache.sync().unwrap();
            assert_eq!(cache.get(&keys[2]).unwrap(), Some(vector(3, 8)));
        }
        let path = directory.path().join("text-vectors-model_a.bin");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[1, 2, 3]).unwrap();
        drop(file);
        let mut cache = EmbeddingCache::open(directory.path(), "model/a", 8).unwrap();
        assert_eq!(cache.len(), 5);
        let wanted: HashSet<TextKey> = [keys[0], keys[4]].into_iter().collect();
        let found = cache.get_many(&wanted).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[&keys[4]], vector(5, 8));
        cache.append(&[(text_key("new"), vector(9, 8))]).unwrap();
        drop(cache);
        let mut cache = EmbeddingCache::open(directory.path(), "model/a", 8).unwrap();
        assert_eq!(cache.len(), 6);
        assert_eq!(cache.get(&text_key("new")).unwrap(), Some(vector(9, 8)));
    }

    #[test]
    fn a_file_for_another_dimension_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        EmbeddingCache::open(directory.path(), "m", 8).unwrap();
        let error = EmbeddingCache::open(directory.path(), "m", 16).unwrap_err();
        assert!(matches!(error, SearchError::InvalidCache { .. }), "{error}");
    }

    #[test]
    fn compaction_keeps_only_live_texts() {
        let directory = tempfile::tempdir().unwrap();
        let mut cache = EmbeddingCache::open(directory.path(), "m", 4).unwrap();
        let entries: Vec<(TextKey, QuantizedVector)> = (0..3000)
            .map(|i| (text_key(&i.to_string()), vector((i % 100) as i8, 4)))
            .collect();
        cache.append(&entries).unwrap();
        let live: HashSet<TextKey> = entries[..1000].iter().map(|(key, _)| *key).collect();
        assert!(cache.compact_if_mostly_stale(&live, "m").unwrap());
        assert_eq!(cache.len(), 1000);
        assert_eq!(
            cache.get(&entries[10].0).unwrap(),
            Some(entries[10].1.clone())
        );
        assert_eq!(cache.get(&entries[2000].0).unwrap(), None);
        assert!(!cache.compact_if_mostly_stale(&live, "m").unwrap());
    }
}
