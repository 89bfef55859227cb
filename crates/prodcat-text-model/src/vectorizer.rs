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

/// Document frequency and total count of one term, with the last document that counted it.
struct TermStatistics {
    document_frequency: u32,
    total_count: u64,
    last_document: usize,
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

    fn fit<S: AsRef<str> + Sync>(
        texts: &[S],
        options: &TfidfOptions,
    ) -> Result<Self, TextModelError> {
        options.validate()?;
        let document_count = texts.len();
        let counts = count_terms(texts, options);
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
        let weights = &mut buffers.weights;
        weights.clear();
        let start = indices.len();
        let mut position = 0;
        while position < columns.len() {
            let column = columns[position];
            let mut end = position + 1;
            while end < columns.len() && columns[end] == column {
                end += 1;
            }
            let count = (end - position) as f64;
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
            position = end;
        }
        let norm = if self.options.l2_normalize {
            weights.iter().map(|w| w * w).sum::<f64>().sqrt()
        } else {
            1.0
        };
        let scale = if norm > 0.0 { 1.0 / norm } else { 1.0 };
        values.extend(weights.iter().map(|w| (w * scale) as f32));
        debug_assert_eq!(indices.len() - start, weights.len());
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

/// Counts document frequency and total frequency of every n-gram, in parallel over documents.
///
/// The corpus is cut into a few contiguous parts (two per thread), each counted into its own
/// map, and the maps are merged at the end: few parts keep the merge cheap, two per thread keep
/// both threads busy when one part is slower.
fn count_terms<S: AsRef<str> + Sync>(
    texts: &[S],
    options: &TfidfOptions,
) -> TermTable<TermStatistics> {
    let parts = (rayon::current_num_threads() * 2).max(1);
    let part_length = texts.len().div_ceil(parts).max(1);
    texts
        .par_chunks(part_length)
        .enumerate()
        .map(|(part, documents)| {
            let mut counts = TermTable::<TermStatistics>::default();
            let mut scratch = Scratch::default();
            for (offset, text) in documents.iter().enumerate() {
                let document = part * part_length + offset;
                for_each_ngram(text.as_ref(), options, &mut scratch, |ngram| {
                    counts.upsert(
                        ngram,
                        || TermStatistics {
                            document_frequency: 1,
                            total_count: 1,
                            last_document: document,
                        },
                        |stats| {
                            stats.total_count += 1;
                            if stats.last_document != document {
                                stats.last_document = document;
                                stats.document_frequency += 1;
                            }
                        },
                    );
                });
            }
            counts
        })
        .reduce(TermTable::default, |left, right| {
            let (mut large, small) = if left.len() >= right.len() {
                (left, right)
            } else {
                (right, left)
            };
            large.merge(small, |existing, stats| {
                existing.document_frequency += stats.document_frequency;
                existing.total_count += stats.total_count;
            });
            large
        })
}

#[derive(Default)]
struct TransformBuffers {
    scratch: Scratch,
    columns: Vec<u32>,
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
        if texts.is_empty() {
            return Err(TextModelError::EmptyCorpus);
        }
        check_analyzer(&options.word, Analyzer::Word, "word.analyzer")?;
        check_analyzer(
            &options.char_wb,
            Analyzer::CharWordBounded,
            "char_wb.analyzer",
        )?;
        let word = FeatureBlock::fit(texts, &options.word)?;
        let char_wb = FeatureBlock::fit(texts, &options.char_wb)?;
        Ok(Self { word, char_wb })
    }

    /// Fits on `texts` and returns their feature matrix.
    pub fn fit_transform<S: AsRef<str> + Sync>(
        texts: &[S],
        options: &VectorizerOptions,
    ) -> Result<(Self, CsrMatrix), TextModelError> {
        let vectorizer = Self::fit(texts, options)?;
        let matrix = vectorizer.transform(texts);
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
