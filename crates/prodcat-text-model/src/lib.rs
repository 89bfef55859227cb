//! The text branch of prodcat: a TF-IDF n-gram vectoriser and a linear SVM, built to give the
//! same answers as scikit-learn's
//! `FeatureUnion([TfidfVectorizer(word, 1-2), TfidfVectorizer(char_wb, 3-5)]) + LinearSVC`
//! pipeline, faster, with calibrated probabilities and exact explanations.
//!
//! - [`TextVectorizer`]: word (1,2)-grams and char_wb (3,5)-grams, sublinear tf, smooth idf, l2
//!   rows, horizontally stacked into one [`CsrMatrix`].
//! - [`LinearSvm`]: one-vs-rest L2-regularised squared-hinge SVM trained by dual coordinate
//!   descent as LIBLINEAR does, classes in parallel, deterministic for a seed.
//! - [`TextClassifier`]: the two together with category labels and a temperature for calibrated
//!   probabilities; top-k predictions, explanations, a versioned binary file format.
//!
//! Input text is expected to be normalised already (`prodcat_domain::product_text`).

mod analyzer;
mod classifier;
mod error;
mod format;
mod options;
mod sparse;
mod svm;
mod term_table;
mod vectorizer;

pub use analyzer::{char_wb_ngrams, strip_accents_unicode, word_ngrams, word_tokens};
pub use classifier::{
    CalibrationReport, Explanation, Prediction, ScoredCategory, TermContribution, TextClassifier,
};
pub use error::TextModelError;
pub use format::FORMAT_VERSION;
pub use options::{
    Analyzer, ClassWeighting, DenseCompanion, DocumentFrequency, SvmOptions, TextClassifierOptions,
    TfidfOptions, VectorizerOptions,
};
pub use sparse::{CsrMatrix, SparseRow};
pub use svm::LinearSvm;
pub use vectorizer::{FeatureBlock, TextVectorizer};
