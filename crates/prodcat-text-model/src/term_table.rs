//! A hash table keyed by n-gram text, built for the vectoriser's hot path: one hash computation
//! per lookup, keys of up to 22 bytes stored inline (no pointer to follow, no `memcmp` call to
//! compare them), longer keys on the heap.

use std::hash::Hasher;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

const INLINE: usize = 22;

/// An n-gram, inline when short: `Inline(bytes)` holds the length in byte 0 and the text after.
#[derive(Clone)]
enum TermKey {
    Inline([u8; INLINE + 1]),
    Heap(Box<str>),
}

/// The inline form of a short term (zero-padded), used to compare without a `memcmp` call.
fn inline_form(term: &str) -> Option<[u8; INLINE + 1]> {
    let bytes = term.as_bytes();
    if bytes.len() > INLINE {
        return None;
    }
    let mut out = [0u8; INLINE + 1];
    out[0] = bytes.len() as u8;
    out[1..=bytes.len()].copy_from_slice(bytes);
    Some(out)
}

impl TermKey {
    fn new(term: &str) -> Self {
        match inline_form(term) {
            Some(inline) => Self::Inline(inline),
            None => Self::Heap(term.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // The inline bytes were copied from a `&str` and cut at its length.
            Self::Inline(bytes) => {
                std::str::from_utf8(&bytes[1..=bytes[0] as usize]).unwrap_or_default()
            }
            Self::Heap(text) => text,
        }
    }

    fn into_boxed_str(self) -> Box<str> {
        match self {
            Self::Inline(_) => self.as_str().into(),
            Self::Heap(text) => text,
        }
    }
}

/// A probe for one lookup: the term, its hash and, when short, its inline form.
pub(crate) struct Probe<'a> {
    term: &'a str,
    hash: u64,
    inline: Option<[u8; INLINE + 1]>,
}

impl<'a> Probe<'a> {
    pub(crate) fn new(term: &'a str) -> Self {
        Self {
            term,
            hash: hash_term(term),
            inline: inline_form(term),
        }
    }

    fn matches(&self, key: &TermKey) -> bool {
        match (key, &self.inline) {
            (TermKey::Inline(stored), Some(inline)) => stored == inline,
            (TermKey::Heap(stored), None) => **stored == *self.term,
            _ => false,
        }
    }
}

/// The hash of a stored entry, for when the table grows.
fn rehash<V>(entry: &(TermKey, V)) -> u64 {
    hash_term(entry.0.as_str())
}

fn hash_term(term: &str) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(term.as_bytes());
    hasher.write_u8(0xff);
    hasher.finish()
}

/// Terms and a value for each.
#[derive(Clone)]
pub(crate) struct TermTable<V> {
    table: HashTable<(TermKey, V)>,
}

impl<V> Default for TermTable<V> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
        }
    }
}

impl<V> TermTable<V> {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            table: HashTable::with_capacity(capacity),
        }
    }

    pub(crate) fn get(&self, term: &str) -> Option<&V> {
        let probe = Probe::new(term);
        self.table
            .find(probe.hash, |(key, _)| probe.matches(key))
            .map(|(_, value)| value)
    }

    /// Updates the value of `term`, or inserts `insert()` when the term is new.
    pub(crate) fn upsert(
        &mut self,
        term: &str,
        insert: impl FnOnce() -> V,
        update: impl FnOnce(&mut V),
    ) {
        let probe = Probe::new(term);
        match self
            .table
            .find_mut(probe.hash, |(key, _)| probe.matches(key))
        {
            Some((_, value)) => update(value),
            None => {
                self.table
                    .insert_unique(probe.hash, (TermKey::new(term), insert()), rehash);
            }
        }
    }

    /// The value of `term`, inserted by `make()` first when the term is new.
    pub(crate) fn get_or_insert_with(&mut self, term: &str, make: impl FnOnce() -> V) -> &mut V {
        let probe = Probe::new(term);
        let entry = self
            .table
            .entry(probe.hash, |(key, _)| probe.matches(key), rehash);
        let (_, value) = entry
            .or_insert_with(|| (TermKey::new(term), make()))
            .into_mut();
        value
    }

    /// Every entry, borrowed, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.table.iter().map(|(key, value)| (key.as_str(), value))
    }

    /// The entries as owned strings and values, in no particular order.
    pub(crate) fn into_entries(self) -> impl Iterator<Item = (Box<str>, V)> {
        self.table
            .into_iter()
            .map(|(key, value)| (key.into_boxed_str(), value))
    }

    pub(crate) fn insert_new(&mut self, term: &str, value: V) {
        self.table
            .insert_unique(hash_term(term), (TermKey::new(term), value), rehash);
    }
}

impl<V> std::fmt::Debug for TermTable<V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "TermTable({} terms)", self.table.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_terms_are_found_and_merged() {
        let long = "a word bigram longer than twenty-three bytes";
        let mut left = TermTable::<u32>::default();
        for term in ["ab", " ab ", "é日本", long, ""] {
            left.upsert(term, || 1, |count| *count += 1);
        }
        left.upsert("ab", || 1, |count| *count += 1);
        assert_eq!(left.get("ab"), Some(&2));
        assert_eq!(left.get(long), Some(&1));
        assert_eq!(left.get(""), Some(&1));
        assert_eq!(left.get("a"), None);
        assert_eq!(left.get(&long[..23]), None);
        *left.get_or_insert_with(long, || 0) += 5;
        assert_eq!(*left.get_or_insert_with("new", || 7), 7);
        assert_eq!(left.get(long), Some(&6));
        assert_eq!(left.get("new"), Some(&7));
        assert_eq!(left.iter().count(), 6);
        assert!(left
            .iter()
            .any(|(term, &count)| term == "é日本" && count == 1));
        let mut entries: Vec<(Box<str>, u32)> = left.into_entries().collect();
        entries.sort();
        assert_eq!(entries[0], ("".into(), 1));
        assert!(entries
            .iter()
            .any(|(term, count)| &**term == long && *count == 6));
    }
}
