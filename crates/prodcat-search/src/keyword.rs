//! The keyword index: a tantivy index of the normalised title and description of every product,
//! tokenised by the folding analyzer, ranked by BM25 with the title boosted, with typo tolerance
//! (fuzzy expansions of each query word, ranked below exact matches), a category filter and
//! pagination. Writes are serialised by a mutex; every write commits and reloads the reader
//! before returning, so the next search sees it.

use std::path::Path;
use std::sync::Mutex;

use prodcat_domain::CategoryCode;
use tantivy::collector::{Count, DocSetCollector, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use crate::analysis::{self, allowed_edits, edit_distance, is_stop_word, FOLDED_TOKENIZER};
use crate::error::SearchError;

/// How a query word's typo variants weigh against the word itself: one edit away counts half,
/// two edits a quarter (before the frequency blending described on [`KeywordIndex`]).
pub const FUZZY_PENALTY: [f32; 3] = [1.0, 0.5, 0.25];

/// At most this many index terms stand in for one query word's typos (closest, then most
/// frequent first).
pub const MAX_FUZZY_EXPANSIONS: usize = 8;

/// Ranking knobs of the keyword index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeywordRanking {
    /// Multiplier of title matches over description matches.
    pub title_boost: f32,
}

impl Default for KeywordRanking {
    fn default() -> Self {
        Self { title_boost: 2.5 }
    }
}

/// What one product contributes to the keyword index (texts already normalised).
#[derive(Debug, Clone)]
pub struct KeywordDocument<'a> {
    pub product_id: i64,
    pub title: &'a str,
    pub description: &'a str,
    pub category: Option<CategoryCode>,
}

/// One keyword match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeywordHit {
    pub product_id: i64,
    /// BM25 score (title boosted, typo variants weighted down).
    pub score: f32,
}

/// A page of keyword matches and how many products match in all.
#[derive(Debug, Clone, Default)]
pub struct KeywordResults {
    pub hits: Vec<KeywordHit>,
    pub total: usize,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    product_id: Field,
    title: Field,
    description: Field,
    category: Field,
}

/// BM25 keyword index over titles and descriptions.
///
/// Typo tolerance: every query word of 4 or more characters also matches index terms at one
/// edit (two from 8 characters; a transposition counts as one edit), found in the term
/// dictionaries with a Levenshtein automaton. Each such variant is searched as an ordinary BM25
/// term, with its boost multiplied by [`FUZZY_PENALTY`] and by `idf(most frequent form) /
/// idf(variant)`, so a rare misspelling in the catalogue never outranks the common correct word
/// and products that contain the query word itself come first.
///
/// Matching: every content word of a query of up to 3 content words is required (as itself or
/// a typo variant); for longer queries, 3 in 4 (rounded up). French and English stop words
/// never count toward that and only add to the score.
pub struct KeywordIndex {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    ranking: KeywordRanking,
}

impl std::fmt::Debug for KeywordIndex {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeywordIndex")
            .field("documents", &self.document_count())
            .finish()
    }
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let product_id = builder.add_i64_field(
        "product_id",
        NumericOptions::default().set_indexed().set_fast(),
    );
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(FOLDED_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let title = builder.add_text_field("title", text.clone());
    let description = builder.add_text_field("description", text);
    let category = builder.add_u64_field("category", NumericOptions::default().set_indexed());
    (
        builder.build(),
        Fields {
            product_id,
            title,
            description,
            category,
        },
    )
}

impl KeywordIndex {
    /// Opens the index in memory (`directory` = `None`) or in `directory` (created if missing;
    /// an index already there is reused, and is usually cleared by a full rebuild).
    pub fn open(
        directory: Option<&Path>,
        writer_threads: usize,
        writer_memory_bytes: usize,
        ranking: KeywordRanking,
    ) -> Result<Self, SearchError> {
        let (schema, fields) = schema();
        let index = match directory {
            None => Index::create_in_ram(schema),
            Some(path) => {
                std::fs::create_dir_all(path)
                    .map_err(SearchError::io("create the keyword index directory", path))?;
                let mmap = MmapDirectory::open(path).map_err(|error| SearchError::Io {
                    operation: "open the keyword index directory",
                    path: path.to_path_buf(),
                    source: std::io::Error::other(error.to_string()),
                })?;
                Index::open_or_create(mmap, schema)
                    .map_err(SearchError::keyword("opening the index directory"))?
            }
        };
        index
            .tokenizers()
            .register(FOLDED_TOKENIZER, analysis::folded_analyzer());
        let writer_threads = writer_threads.clamp(1, 8);
        let writer_memory_bytes = writer_memory_bytes.max(writer_threads * 16_000_000);
        let writer = index
            .writer_with_num_threads(writer_threads, writer_memory_bytes)
            .map_err(SearchError::keyword("creating the index writer"))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(SearchError::keyword("creating the index reader"))?;
        Ok(Self {
            reader,
            writer: Mutex::new(writer),
            fields,
            ranking,
        })
    }

    /// Products in the index (as of the last commit).
    pub fn document_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    fn tantivy_document(&self, document: &KeywordDocument<'_>) -> TantivyDocument {
        let mut output = TantivyDocument::new();
        output.add_i64(self.fields.product_id, document.product_id);
        output.add_text(
            self.fields.title,
            analysis::truncate_at_char_boundary(document.title, analysis::MAX_INDEXED_FIELD_BYTES),
        );
        output.add_text(
            self.fields.description,
            analysis::truncate_at_char_boundary(
                document.description,
                analysis::MAX_INDEXED_FIELD_BYTES,
            ),
        );
        if let Some(category) = document.category {
            output.add_u64(self.fields.category, u64::from(category.value()));
        }
        output
    }

    fn commit(&self, writer: &mut IndexWriter) -> Result<(), SearchError> {
        writer
            .commit()
            .map_err(SearchError::keyword("committing"))?;
        self.reader
            .reload()
            .map_err(SearchError::keyword("reloading the reader after a commit"))
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        // A panic while holding the writer leaves nothing half-applied that a commit would
        // publish (tantivy rolls uncommitted operations back on error), so keep going.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the whole index with `documents`, in one commit.
    pub fn replace_all<'a>(
        &self,
        documents: impl Iterator<Item = KeywordDocument<'a>>,
    ) -> Result<(), SearchError> {
        let mut writer = self.lock_writer();
        let result = (|| {
            writer
                .delete_all_documents()
                .map_err(SearchError::keyword("clearing the index"))?;
            for document in documents {
                writer
                    .add_document(self.tantivy_document(&document))
                    .map_err(SearchError::keyword("adding a document"))?;
            }
            self.commit(&mut writer)
        })();
        if result.is_err() {
            let _ = writer.rollback();
        }
        result
    }

    /// Adds or replaces products (matched by id) and removes `deleted` ids, in one commit.
    pub fn apply(
        &self,
        upserts: &[KeywordDocument<'_>],
        deleted: &[i64],
    ) -> Result<(), SearchError> {
        let mut writer = self.lock_writer();
        let result = (|| {
            for product_id in deleted {
                writer.delete_term(Term::from_field_i64(self.fields.product_id, *product_id));
            }
            for document in upserts {
                writer.delete_term(Term::from_field_i64(
                    self.fields.product_id,
                    document.product_id,
                ));
                writer
                    .add_document(self.tantivy_document(document))
                    .map_err(SearchError::keyword("adding a document"))?;
            }
            self.commit(&mut writer)
        })();
        if result.is_err() {
            let _ = writer.rollback();
        }
        result
    }

    /// The page `offset..offset + limit` of products matching `query` (best first), and the
    /// number of matches. A query without any word matches nothing.
    pub fn search(
        &self,
        query: &str,
        category: Option<CategoryCode>,
        offset: usize,
        limit: usize,
    ) -> Result<KeywordResults, SearchError> {
        let searcher = self.reader.searcher();
        let Some(query) = self.build_query(&searcher, query, category)? else {
            return Ok(KeywordResults::default());
        };
        if limit == 0 {
            let total = searcher
                .search(&query, &Count)
                .map_err(SearchError::keyword("counting matches"))?;
            return Ok(KeywordResults {
                hits: Vec::new(),
                total,
            });
        }
        let collector = (
            TopDocs::with_limit(limit)
                .and_offset(offset)
                .order_by_score(),
            Count,
        );
        let (top, total) = searcher
            .search(&query, &collector)
            .map_err(SearchError::keyword("searching"))?;
        let mut hits = Vec::with_capacity(top.len());
        let mut columns: Vec<Option<tantivy::columnar::Column<i64>>> =
            vec![None; searcher.segment_readers().len()];
        for (score, address) in top {
            let segment = address.segment_ord as usize;
            if columns[segment].is_none() {
                columns[segment] = Some(
                    searcher
                        .segment_reader(address.segment_ord)
                        .fast_fields()
                        .i64("product_id")
                        .map_err(SearchError::keyword("reading product ids"))?,
                );
            }
            if let Some(product_id) = columns[segment]
                .as_ref()
                .and_then(|column| column.first(address.doc_id))
            {
                hits.push(KeywordHit { product_id, score });
            }
        }
        Ok(KeywordResults { hits, total })
    }

    /// Ids of every product matching `query` (for counting overlaps with other lists).
    pub fn matching_ids(
        &self,
        query: &str,
        category: Option<CategoryCode>,
    ) -> Result<Vec<i64>, SearchError> {
        let searcher = self.reader.searcher();
        let Some(query) = self.build_query(&searcher, query, category)? else {
            return Ok(Vec::new());
        };
        let addresses = searcher
            .search(&query, &DocSetCollector)
            .map_err(SearchError::keyword("collecting matches"))?;
        let mut by_segment: Vec<Vec<u32>> = vec![Vec::new(); searcher.segment_readers().len()];
        for address in addresses {
            if let Some(documents) = by_segment.get_mut(address.segment_ord as usize) {
                documents.push(address.doc_id);
            }
        }
        let mut ids = Vec::new();
        for (segment, documents) in by_segment.iter().enumerate() {
            if documents.is_empty() {
                continue;
            }
            let column = searcher
                .segment_reader(segment as u32)
                .fast_fields()
                .i64("product_id")
                .map_err(SearchError::keyword("reading product ids"))?;
            ids.extend(
                documents
                    .iter()
                    .filter_map(|document| column.first(*document)),
            );
        }
        Ok(ids)
    }

    /// Builds the BM25 query for `text`; `None` when it has no word.
    fn build_query(
        &self,
        searcher: &Searcher,
        text: &str,
        category: Option<CategoryCode>,
    ) -> Result<Option<Box<dyn Query>>, SearchError> {
        let mut words: Vec<String> = Vec::new();
        for token in analysis::folded_tokens(text) {
            if !words.contains(&token) {
                words.push(token);
            }
            if words.len() == analysis::MAX_QUERY_TOKENS {
                break;
            }
        }
        if words.is_empty() {
            return Ok(None);
        }
        let all_stop_words = words.iter().all(|word| is_stop_word(word));
        let mut content_groups: Vec<Box<dyn Query>> = Vec::new();
        let mut optional_groups: Vec<Box<dyn Query>> = Vec::new();
        for word in &words {
            let group = self.word_query(searcher, word)?;
            if all_stop_words || !is_stop_word(word) {
                content_groups.push(group);
            } else {
                optional_groups.push(group);
            }
        }
        let required = required_words(content_groups.len());
        let content: Box<dyn Query> = if content_groups.len() == 1 {
            content_groups.remove(0)
        } else {
            Box::new(BooleanQuery::with_minimum_required_clauses(
                content_groups
                    .into_iter()
                    .map(|group| (Occur::Should, group))
                    .collect(),
                required,
            ))
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, content)];
        clauses.extend(
            optional_groups
                .into_iter()
                .map(|group| (Occur::Should, group)),
        );
        if let Some(category) = category {
            let filter = TermQuery::new(
                Term::from_field_u64(self.fields.category, u64::from(category.value())),
                IndexRecordOption::Basic,
            );
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(filter), 0.0)),
            ));
        }
        Ok(Some(Box::new(BooleanQuery::new(clauses))))
    }

    /// One query word: itself and its typo variants, in the title (boosted) and the description.
    fn word_query(&self, searcher: &Searcher, word: &str) -> Result<Box<dyn Query>, SearchError> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let variants = if is_stop_word(word) {
            Vec::new()
        } else {
            self.typo_variants(searcher, word, allowed_edits(word))?
        };
        let documents = searcher.num_docs().max(1) as f32;
        for (field, field_boost) in [
            (self.fields.title, self.ranking.title_boost),
            (self.fields.description, 1.0),
        ] {
            let exact = Term::from_field_text(field, word);
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(exact.clone(), IndexRecordOption::WithFreqs)),
                    field_boost,
                )),
            ));
            if variants.is_empty() {
                continue;
            }
            let exact_frequency = document_frequency(searcher, &exact)?;
            let mut frequencies = Vec::with_capacity(variants.len());
            for variant in &variants {
                frequencies.push(document_frequency(
                    searcher,
                    &Term::from_field_text(field, &variant.term),
                )?);
            }
            let blended = frequencies
                .iter()
                .copied()
                .chain(std::iter::once(exact_frequency))
                .max()
                .unwrap_or(0);
            let blended_idf = inverse_document_frequency(blended, documents);
            for (variant, frequency) in variants.iter().zip(frequencies) {
                if frequency == 0 {
                    continue;
                }
                let own_idf = inverse_document_frequency(frequency, documents);
                let boost = field_boost
                    * FUZZY_PENALTY[variant.edits.min(2)]
                    * (blended_idf / own_idf).min(1.0);
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(
                        Box::new(TermQuery::new(
                            Term::from_field_text(field, &variant.term),
                            IndexRecordOption::WithFreqs,
                        )),
                        boost,
                    )),
                ));
            }
        }
        Ok(Box::new(BooleanQuery::new(clauses)))
    }

    /// Index terms (title or description) within `edits` of `word`, other than `word` itself:
    /// closest first, then most frequent, at most [`MAX_FUZZY_EXPANSIONS`].
    fn typo_variants(
        &self,
        searcher: &Searcher,
        word: &str,
        edits: u8,
    ) -> Result<Vec<TermVariant>, SearchError> {
        if edits == 0 {
            return Ok(Vec::new());
        }
        let mut found = self.terms_within(
            searcher,
            &[self.fields.title, self.fields.description],
            word,
            edits,
        )?;
        found.retain(|variant| variant.term != word);
        found.truncate(MAX_FUZZY_EXPANSIONS);
        Ok(found)
    }

    /// Terms of the title field within `edits` of `word` (itself included when present), with
    /// the number of products (live or recently deleted) whose title has them.
    pub fn title_terms_within(
        &self,
        word: &str,
        edits: u8,
    ) -> Result<Vec<TermVariant>, SearchError> {
        let searcher = self.reader.searcher();
        self.terms_within(&searcher, &[self.fields.title], word, edits)
    }

    fn terms_within(
        &self,
        searcher: &Searcher,
        fields: &[Field],
        word: &str,
        edits: u8,
    ) -> Result<Vec<TermVariant>, SearchError> {
        let mut found: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for field in fields {
            let automaton = FuzzyTermQuery::new(Term::from_field_text(*field, word), edits, true)
                .automaton()
                .map_err(SearchError::keyword("building a typo automaton"))?;
            for segment in searcher.segment_readers() {
                let inverted = segment
                    .inverted_index(*field)
                    .map_err(SearchError::keyword("reading a term dictionary"))?;
                let mut stream =
                    inverted
                        .terms()
                        .search(&automaton)
                        .into_stream()
                        .map_err(|error| SearchError::KeywordIndex {
                            operation: "streaming a term dictionary",
                            source: error.into(),
                        })?;
                while stream.advance() {
                    if let Ok(term) = std::str::from_utf8(stream.key()) {
                        *found.entry(term.to_string()).or_default() +=
                            u64::from(stream.value().doc_freq);
                    }
                }
            }
        }
        let limit = usize::from(edits);
        let mut variants: Vec<TermVariant> = found
            .into_iter()
            .filter_map(|(term, frequency)| {
                edit_distance(word, &term, limit).map(|edits| TermVariant {
                    term,
                    edits,
                    frequency,
                })
            })
            .collect();
        variants.sort_by(|left, right| {
            left.edits
                .cmp(&right.edits)
                .then(right.frequency.cmp(&left.frequency))
                .then_with(|| left.term.cmp(&right.term))
        });
        Ok(variants)
    }

    /// Segments currently searched (for diagnostics).
    pub fn segment_count(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }
}

/// An index term close to a query word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermVariant {
    pub term: String,
    pub edits: usize,
    /// Products containing the term, summed over the fields searched.
    pub frequency: u64,
}

/// Content words a product must contain: all of up to 3, else 3 in 4 rounded up.
pub fn required_words(content_words: usize) -> usize {
    if content_words <= 3 {
        content_words
    } else {
        (content_words * 3).div_ceil(4)
    }
}

fn document_frequency(searcher: &Searcher, term: &Term) -> Result<u64, SearchError> {
    searcher
        .doc_freq(term)
        .map_err(SearchError::keyword("reading a document frequency"))
}

/// BM25's inverse document frequency, as tantivy computes it.
fn inverse_document_frequency(frequency: u64, documents: f32) -> f32 {
    let frequency = frequency as f32;
    (1.0 + (documents - frequency + 0.5).max(0.0) / (frequency + 0.5))
        .ln()
        .max(1e-3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_word_counts() {
        let expected = [(0, 0), (1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (8, 6)];
        for (words, required) in expected {
            assert_eq!(required_words(words), required, "{words}");
        }
    }

    #[test]
    fn frequent_terms_weigh_less() {
        assert!(inverse_document_frequency(1, 1000.0) > inverse_document_frequency(500, 1000.0));
    }
}
