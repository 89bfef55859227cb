//! The TF-IDF feature union: a word block and a char_wb block, each fitted on a corpus
//! (vocabulary by document frequency and corpus frequency, idf), each producing l2-normalised
//! rows, stacked side by side (word columns first).
//!
//! Fitting counts n-grams in parallel over documents with per-thread hash maps that are merged
//! at the end; one hash lookup per n-gram occurrence, no string allocated for an n-gram already
//! seen. Transforming is parallel over documents too.
//!
//! Feature selection follows scikit-learn's `_limit_features`: keep terms with
//! `min_df <= df <= max_df`, then, when more than `max_features` remain, the `max_features`
//! with the largest total count. scikit-learn breaks ties in that count with an unstable sort;
//! here ties go to the alphabetically smaller term, so the choice is deterministic. Columns are
//! in alphabetical (code point) order of the terms, as in scikit-learn.

use rayon::prelude::*;

use crate::analyzer::{for_each_ngram, Scratch};
use crate::options::{Analyzer, TfidfOptions, VectorizerOptions};
use crate::sparse::{CsrMatrix, SparseRow};
use crate::term_table::TermTable;
use crate::TextModelError;

/// Document frequency and total count of one term.
struct TermStatistics {
    document_frequency: u32,
    total_count: u64,
}

/// One fitted TF-IDF block: its sorted vocabulary and idf weights.
#[derive(Debug, Clone)]
pub struct FeatureBlock {
    options: TfidfOptions,
    document_count: usize,
    terms: Vec<Box<str>>,
    idf: Vec<f32>,
    lookup: TermTable<u32>,
}

impl FeatureBlock {
    fn block_name(options: &TfidfOptions) -> &'static str {
        match options.analyzer {
            Analyzer::Word => "word",
            Analyzer::CharWordBounded => "char_wb",
        }
    }

    /// Fits the block on counted parts of a corpus of `document_count` documents.
    fn fit_counted(
        parts: &[CountedPart],
        options: &TfidfOptions,
        document_count: usize,
    ) -> Result<Self, TextModelError> {
        let counts = merge_counts(parts);
        let min_count = options.min_df.as_count(document_count);
        let max_count = options.max_df.as_count(document_count);
        if max_count < min_count {
            return Err(TextModelError::InvalidOption {
                name: "max_df",
                reason: format!(
                    "max_df ({}) corresponds to fewer documents than min_df ({})",
                    options.describe_max_df(),
                    options.describe_min_df()
                ),
            });
        }
        let mut kept: Vec<(Box<str>, TermStatistics)> = counts
            .into_entries()
            .filter(|(_, stats)| {
                let df = stats.document_frequency as f64;
                df >= min_count && df <= max_count
            })
            .collect();
        if let Some(limit) = options.max_features {
            if kept.len() > limit {
                kept.par_sort_unstable_by(|a, b| {
                    b.1.total_count
                        .cmp(&a.1.total_count)
                        .then_with(|| a.0.cmp(&b.0))
                });
                kept.truncate(limit);
            }
        }
        if kept.is_empty() {
            return Err(TextModelError::NoTermsRemain {
                block: Self::block_name(options),
                min_df: options.describe_min_df(),
                max_df: options.describe_max_df(),
                documents: document_count,
            });
        }
        kept.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let idf = kept
            .iter()
            .map(|(_, stats)| idf_weight(options, document_count, stats.document_frequency))
            .collect();
        let terms = kept.into_iter().map(|(term, _)| term).collect();
        Self::from_parts(options.clone(), document_count, terms, idf)
    }

    /// Rebuilds a fitted block from its parts, checking that terms are strictly sorted, idf
    /// values finite and one per term.
    pub(crate) fn from_parts(
        options: TfidfOptions,
        document_count: usize,
        terms: Vec<Box<str>>,
        idf: Vec<f32>,
    ) -> Result<Self, TextModelError> {
        options.validate()?;
        if terms.len() != idf.len() {
            return Err(TextModelError::Corrupt(format!(
                "{} terms but {} idf weights",
                terms.len(),
                idf.len()
            )));
        }
        if terms.len() > u32::MAX as usize / 2 {
            return Err(TextModelError::Corrupt(format!("{} terms", terms.len())));
        }
        if let Some(pair) = terms.windows(2).find(|pair| pair[0] >= pair[1]) {
            return Err(TextModelError::Corrupt(format!(
                "vocabulary not strictly sorted at {:?} / {:?}",
                pair[0], pair[1]
            )));
        }
        if idf.iter().any(|value| !value.is_finite()) {
            return Err(TextModelError::Corrupt("non-finite idf weight".into()));
        }
        let mut lookup = TermTable::with_capacity(terms.len());
        for (index, term) in terms.iter().enumerate() {
            lookup.insert_new(term, index as u32);
        }
        Ok(Self {
            options,
            document_count,
            terms,
            idf,
            lookup,
        })
    }

    /// The block's options.
    pub fn options(&self) -> &TfidfOptions {
        &self.options
    }

    /// Number of documents the block was fitted on.
    pub fn document_count(&self) -> usize {
        self.document_count
    }

    /// The vocabulary, in column order.
    pub fn terms(&self) -> &[Box<str>] {
        &self.terms
    }

    /// The idf weight of each column.
    pub fn idf(&self) -> &[f32] {
        &self.idf
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// True when the block has no column (never the case for a fitted block).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The column of `term`, if it is in the vocabulary.
    pub fn column(&self, term: &str) -> Option<u32> {
        self.lookup.get(term).copied()
    }

    /// Appends this block's entries for `text` to `indices`/`values`, columns shifted by
    /// `offset`.
    fn transform_into(
        &self,
        text: &str,
        offset: u32,
        buffers: &mut TransformBuffers,
        indices: &mut Vec<u32>,
        values: &mut Vec<f32>,
    ) {
        let columns = &mut buffers.columns;
        columns.clear();
        for_each_ngram(text, &self.options, &mut buffers.scratch, |ngram| {
            if let Some(&column) = self.lookup.get(ngram) {
                columns.push(column);
            }
        });
        columns.sort_unstable();
        let counted = &mut buffers.counted;
        counted.clear();
        let mut position = 0;
        while position < columns.len() {
            let column = columns[position];
            let mut end = position + 1;
            while end < columns.len() && columns[end] == column {
                end += 1;
            }
            counted.push((column, (end - position) as u32));
            position = end;
        }
        self.weigh(counted, offset, &mut buffers.weights, indices, values);
    }

    /// Appends the TF-IDF entries of (column, count) pairs sorted by column, l2-normalised,
    /// columns shifted by `offset`.
    fn weigh(
        &self,
        counted: &[(u32, u32)],
        offset: u32,
        weights: &mut Vec<f64>,
        indices: &mut Vec<u32>,
        values: &mut Vec<f32>,
    ) {
        weights.clear();
        for &(column, count) in counted {
            let count = count as f64;
            let mut weight = if self.options.sublinear_tf {
                1.0 + count.ln()
            } else {
                count
            };
            if self.options.use_idf {
                weight *= self.idf[column as usize] as f64;
            }
            indices.push(column + offset);
            weights.push(weight);
        }
        let norm = if self.options.l2_normalize {
            weights.iter().map(|w| w * w).sum::<f64>().sqrt()
        } else {
            1.0
        };
        let scale = if norm > 0.0 { 1.0 / norm } else { 1.0 };
        values.extend(weights.iter().map(|w| (w * scale) as f32));
    }

    /// The rows of the documents of counted `parts`, in document order.
    fn rows_of_parts(&self, parts: &[CountedPart], offset: u32) -> Vec<SparseRow> {
        let per_part: Vec<Vec<SparseRow>> = parts
            .par_iter()
            .map(|part| {
                let mut local_to_column = vec![u32::MAX; part.statistics.len()];
                for (term, &local) in part.table.iter() {
                    if let Some(&column) = self.lookup.get(term) {
                        local_to_column[local as usize] = column;
                    }
                }
                let mut counted = Vec::new();
                let mut weights = Vec::new();
                part.document_offsets
                    .windows(2)
                    .map(|range| {
                        counted.clear();
                        counted.extend(
                            part.entries[range[0]..range[1]]
                                .iter()
                                .map(|&(local, count)| (local_to_column[local as usize], count))
                                .filter(|&(column, _)| column != u32::MAX),
                        );
                        counted.sort_unstable();
                        let mut row = SparseRow::default();
                        self.weigh(
                            &counted,
                            offset,
                            &mut weights,
                            &mut row.indices,
                            &mut row.values,
                        );
                        row
                    })
                    .collect()
            })
            .collect();
        per_part.into_iter().flatten().collect()
    }
}

fn idf_weight(options: &TfidfOptions, documents: usize, document_frequency: u32) -> f32 {
    let (n, df) = (documents as f64, document_frequency as f64);
    let value = if options.smooth_idf {
        ((n + 1.0) / (df + 1.0)).ln() + 1.0
    } else {
        (n / df).ln() + 1.0
    };
    value as f32
}

/// One contiguous part of a corpus, counted: every distinct n-gram with a local id, the
/// statistics of each local id, and each document's (local id, count) pairs.
struct CountedPart {
    table: TermTable<u32>,
    statistics: Vec<TermStatistics>,
    document_offsets: Vec<usize>,
    entries: Vec<(u32, u32)>,
}

/// Counts the n-grams of every document, in parallel over documents.
///
/// The corpus is cut into a few contiguous parts (two per thread), each counted into its own
/// table. Each document's n-grams are kept as (local id, count) pairs, so that once the
/// vocabulary is chosen the training matrix is built without analysing the texts again.
fn count_parts<S: AsRef<str> + Sync>(texts: &[S], options: &TfidfOptions) -> Vec<CountedPart> {
    let parts = (rayon::current_num_threads() * 2).max(1);
    let part_length = texts.len().div_ceil(parts).max(1);
    texts
        .par_chunks(part_length)
        .map(|documents| {
            let mut part = CountedPart {
                table: TermTable::default(),
                statistics: Vec::new(),
                document_offsets: vec![0],
                entries: Vec::new(),
            };
            let mut scratch = Scratch::default();
            let mut ids: Vec<u32> = Vec::new();
            for text in documents {
                ids.clear();
                for_each_ngram(text.as_ref(), options, &mut scratch, |ngram| {
                    let next = part.statistics.len() as u32;
                    let id = *part.table.get_or_insert_with(ngram, || next);
                    if id == next {
                        part.statistics.push(TermStatistics {
                            document_frequency: 0,
                            total_count: 0,
                        });
                    }
                    ids.push(id);
                });
                ids.sort_unstable();
                let mut position = 0;
                while position < ids.len() {
                    let id = ids[position];
                    let mut end = position + 1;
                    while end < ids.len() && ids[end] == id {
                        end += 1;
                    }
                    let count = (end - position) as u32;
                    let stats = &mut part.statistics[id as usize];
                    stats.document_frequency += 1;
                    stats.total_count += count as u64;
                    part.entries.push((id, count));
                    position = end;
                }
                part.document_offsets.push(part.entries.len());
            }
            part
        })
        .collect()
}

/// Corpus-wide statistics of every n-gram of the counted parts.
fn merge_counts(parts: &[CountedPart]) -> TermTable<TermStatistics> {
    let largest = parts.iter().map(|p| p.statistics.len()).max().unwrap_or(0);
    let mut merged = TermTable::with_capacity(largest);
    for part in parts {
        for (term, &local) in part.table.iter() {
            let stats = &part.statistics[local as usize];
            merged.upsert(
                term,
                || TermStatistics {
                    document_frequency: stats.document_frequency,
                    total_count: stats.total_count,
                },
                |existing| {
                    existing.document_frequency += stats.document_frequency;
                    existing.total_count += stats.total_count;
                },
            );
        }
    }
    merged
}

#[derive(Default)]
struct TransformBuffers {
    scratch: Scratch,
    columns: Vec<u32>,
    counted: Vec<(u32, u32)>,
    weights: Vec<f64>,
}

/// The fitted word + char_wb TF-IDF union.
#[derive(Debug, Clone)]
pub struct TextVectorizer {
    word: FeatureBlock,
    char_wb: FeatureBlock,
}

impl TextVectorizer {
    /// Fits both blocks on `texts`.
    pub fn fit<S: AsRef<str> + Sync>(
        texts: &[S],
        options: &VectorizerOptions,
    ) -> Result<Self, TextModelError> {
        check_fit(texts.len(), options)?;
        let word = FeatureBlock::fit_counted(
            &count_parts(texts, &options.word),
            &options.word,
            texts.len(),
        )?;
        let char_wb = FeatureBlock::fit_counted(
            &count_parts(texts, &options.char_wb),
            &options.char_wb,
            texts.len(),
        )?;
        Ok(Self { word, char_wb })
    }

    /// Fits on `texts` and returns their feature matrix (the same as `fit` then `transform`,
    /// but each text is analysed once: the counts gathered for fitting become the rows).
    pub fn fit_transform<S: AsRef<str> + Sync>(
        texts: &[S],
        options: &VectorizerOptions,
    ) -> Result<(Self, CsrMatrix), TextModelError> {
        check_fit(texts.len(), options)?;
        let (word, word_rows) = {
            let parts = count_parts(texts, &options.word);
            let block = FeatureBlock::fit_counted(&parts, &options.word, texts.len())?;
            let rows = block.rows_of_parts(&parts, 0);
            (block, rows)
        };
        let (char_wb, char_rows) = {
            let parts = count_parts(texts, &options.char_wb);
            let block = FeatureBlock::fit_counted(&parts, &options.char_wb, texts.len())?;
            let rows = block.rows_of_parts(&parts, word.len() as u32);
            (block, rows)
        };
        let vectorizer = Self { word, char_wb };
        let mut matrix = CsrMatrix::empty(vectorizer.feature_count());
        matrix.reserve(
            word_rows.iter().map(SparseRow::len).sum::<usize>()
                + char_rows.iter().map(SparseRow::len).sum::<usize>(),
        );
        for (word_row, char_row) in word_rows.iter().zip(&char_rows) {
            matrix.append_union(word_row, char_row);
        }
        Ok((vectorizer, matrix))
    }

    pub(crate) fn from_blocks(
        word: FeatureBlock,
        char_wb: FeatureBlock,
    ) -> Result<Self, TextModelError> {
        check_analyzer(&word.options, Analyzer::Word, "word.analyzer")?;
        check_analyzer(
            &char_wb.options,
            Analyzer::CharWordBounded,
            "char_wb.analyzer",
        )?;
        Ok(Self { word, char_wb })
    }

    /// The options the blocks were fitted with.
    pub fn options(&self) -> VectorizerOptions {
        VectorizerOptions {
            word: self.word.options.clone(),
            char_wb: self.char_wb.options.clone(),
        }
    }

    /// The word block (columns `0..word().len()`).
    pub fn word(&self) -> &FeatureBlock {
        &self.word
    }

    /// The char_wb block (columns after the word block).
    pub fn char_wb(&self) -> &FeatureBlock {
        &self.char_wb
    }

    /// Total number of columns.
    pub fn feature_count(&self) -> usize {
        self.word.len() + self.char_wb.len()
    }

    /// The analyzer and n-gram behind column `feature`.
    pub fn feature_name(&self, feature: usize) -> Option<(Analyzer, &str)> {
        if feature < self.word.len() {
            Some((Analyzer::Word, &self.word.terms[feature]))
        } else {
            self.char_wb
                .terms
                .get(feature - self.word.len())
                .map(|term| (Analyzer::CharWordBounded, &**term))
        }
    }

    fn transform_with(&self, text: &str, buffers: &mut TransformBuffers) -> SparseRow {
        let mut row = SparseRow::default();
        self.word
            .transform_into(text, 0, buffers, &mut row.indices, &mut row.values);
        self.char_wb.transform_into(
            text,
            self.word.len() as u32,
            buffers,
            &mut row.indices,
            &mut row.values,
        );
        row
    }

    /// The feature row of one text. A text with no known n-gram (for example the empty text)
    /// gives an empty (all-zero) row.
    pub fn transform_one(&self, text: &str) -> SparseRow {
        self.transform_with(text, &mut TransformBuffers::default())
    }

    /// The feature matrix of `texts`, rows in input order, computed in parallel.
    pub fn transform<S: AsRef<str> + Sync>(&self, texts: &[S]) -> CsrMatrix {
        let rows: Vec<SparseRow> = texts
            .par_iter()
            .map_init(TransformBuffers::default, |buffers, text| {
                self.transform_with(text.as_ref(), buffers)
            })
            .collect();
        let mut matrix = CsrMatrix::empty(self.feature_count());
        matrix.reserve(rows.iter().map(SparseRow::len).sum());
        for row in &rows {
            matrix.append_trusted(&row.indices, &row.values);
        }
        matrix
    }
}

/// Refuses an empty corpus and options a vectorizer cannot be fitted with.
fn check_fit(text_count: usize, options: &VectorizerOptions) -> Result<(), TextModelError> {
    if text_count == 0 {
        return Err(TextModelError::EmptyCorpus);
    }
    check_analyzer(&options.word, Analyzer::Word, "word.analyzer")?;
    check_analyzer(
        &options.char_wb,
        Analyzer::CharWordBounded,
        "char_wb.analyzer",
    )?;
    options.word.validate()?;
    options.char_wb.validate()
}

fn check_analyzer(
    options: &TfidfOptions,
    expected: Analyzer,
    name: &'static str,
) -> Result<(), TextModelError> {
    if options.analyzer == expected {
        Ok(())
    } else {
        Err(TextModelError::InvalidOption {
            name,
            reason: format!("expected {expected:?}, got {:?}", options.analyzer),
        })
    }
}
