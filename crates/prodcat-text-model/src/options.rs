//! Hyper-parameters of the vectoriser and the SVM, with the reference pipeline's values as
//! defaults. All serialisable, so a fitted model records exactly how it was made.

use serde::{Deserialize, Serialize};

use crate::TextModelError;

/// How a text is cut into n-grams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Analyzer {
    /// Tokens of two or more word characters (`(?u)\b\w\w+\b`), n-grams joined by one space.
    Word,
    /// Character n-grams inside each whitespace-separated word padded with one space each side
    /// (scikit-learn's `char_wb`).
    CharWordBounded,
}

/// A document-frequency threshold: an absolute count or a proportion of the documents.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DocumentFrequency {
    Count(usize),
    Proportion(f64),
}

impl DocumentFrequency {
    /// The threshold as a document count for a corpus of `documents` (a proportion stays
    /// fractional, as scikit-learn compares `df <= max_df * n_documents`).
    pub fn as_count(self, documents: usize) -> f64 {
        match self {
            Self::Count(count) => count as f64,
            Self::Proportion(share) => share * documents as f64,
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Count(count) => count.to_string(),
            Self::Proportion(share) => share.to_string(),
        }
    }

    fn validate(self, name: &'static str) -> Result<(), TextModelError> {
        match self {
            Self::Proportion(share) if !(share.is_finite() && (0.0..=1.0).contains(&share)) => {
                Err(TextModelError::InvalidOption {
                    name,
                    reason: format!("a proportion must lie in [0, 1], got {share}"),
                })
            }
            _ => Ok(()),
        }
    }
}

/// One TF-IDF block (scikit-learn's `TfidfVectorizer` parameters that matter here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TfidfOptions {
    pub analyzer: Analyzer,
    /// Smallest and largest n, inclusive.
    pub ngram_range: (usize, usize),
    pub lowercase: bool,
    /// scikit-learn's `strip_accents="unicode"`: NFKD, then combining marks dropped.
    pub strip_accents: bool,
    pub min_df: DocumentFrequency,
    pub max_df: DocumentFrequency,
    /// Keep only this many terms, the most frequent over the corpus (ties: alphabetical order).
    pub max_features: Option<usize>,
    /// `1 + ln(tf)` instead of the raw count.
    pub sublinear_tf: bool,
    pub use_idf: bool,
    /// `ln((1 + n) / (1 + df)) + 1` instead of `ln(n / df) + 1`.
    pub smooth_idf: bool,
    /// Scale every row of the block to unit Euclidean length.
    pub l2_normalize: bool,
}

impl TfidfOptions {
    /// The reference word block: (1,2)-grams, accents stripped, min_df 2, max_df 0.9,
    /// 120,000 features, sublinear tf.
    pub fn reference_word() -> Self {
        Self {
            analyzer: Analyzer::Word,
            ngram_range: (1, 2),
            lowercase: true,
            strip_accents: true,
            min_df: DocumentFrequency::Count(2),
            max_df: DocumentFrequency::Proportion(0.9),
            max_features: Some(120_000),
            sublinear_tf: true,
            use_idf: true,
            smooth_idf: true,
            l2_normalize: true,
        }
    }

    /// The reference char_wb block: (3,5)-grams, 160,000 features, sublinear tf.
    pub fn reference_char_wb() -> Self {
        Self {
            analyzer: Analyzer::CharWordBounded,
            ngram_range: (3, 5),
            lowercase: true,
            strip_accents: false,
            min_df: DocumentFrequency::Count(1),
            max_df: DocumentFrequency::Proportion(1.0),
            max_features: Some(160_000),
            sublinear_tf: true,
            use_idf: true,
            smooth_idf: true,
            l2_normalize: true,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), TextModelError> {
        let (low, high) = self.ngram_range;
        if low == 0 || low > high || high > 64 {
            return Err(TextModelError::InvalidOption {
                name: "ngram_range",
                reason: format!("need 1 <= min <= max <= 64, got ({low}, {high})"),
            });
        }
        self.min_df.validate("min_df")?;
        self.max_df.validate("max_df")?;
        if self.max_features == Some(0) {
            return Err(TextModelError::InvalidOption {
                name: "max_features",
                reason: "must be at least 1 when set".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn describe_min_df(&self) -> String {
        self.min_df.describe()
    }

    pub(crate) fn describe_max_df(&self) -> String {
        self.max_df.describe()
    }
}

/// The feature union: a word block and a char_wb block, stacked in that order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VectorizerOptions {
    pub word: TfidfOptions,
    pub char_wb: TfidfOptions,
}

impl Default for VectorizerOptions {
    fn default() -> Self {
        Self {
            word: TfidfOptions::reference_word(),
            char_wb: TfidfOptions::reference_char_wb(),
        }
    }
}

/// How the per-class cost C is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassWeighting {
    /// Every class gets C.
    #[default]
    Uniform,
    /// scikit-learn's `class_weight="balanced"`: class k weighs `n / (n_classes * count_k)`.
    /// As in LIBLINEAR's one-vs-rest, the weight scales C of the positive side of class k's
    /// binary problem; the negative side keeps C.
    Balanced,
}

/// LinearSVC / LIBLINEAR `L2R_L2LOSS_SVC_DUAL` parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SvmOptions {
    /// Inverse regularisation strength.
    pub c: f64,
    /// Stop when the projected-gradient spread falls below this (LIBLINEAR's `eps`).
    pub tolerance: f64,
    pub max_iterations: usize,
    /// Learn an intercept as the weight of an extra constant feature (regularised, as LIBLINEAR).
    pub fit_intercept: bool,
    /// Value of that constant feature.
    pub intercept_scaling: f64,
    pub class_weighting: ClassWeighting,
    /// Seed of the per-iteration random permutations (class k uses a stream derived from it).
    pub seed: u64,
}

impl Default for SvmOptions {
    fn default() -> Self {
        Self {
            c: 0.5,
            tolerance: 1e-4,
            max_iterations: 1000,
            fit_intercept: true,
            intercept_scaling: 1.0,
            class_weighting: ClassWeighting::Uniform,
            seed: 0,
        }
    }
}

impl SvmOptions {
    pub(crate) fn validate(&self) -> Result<(), TextModelError> {
        let positive = |name: &'static str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(TextModelError::InvalidOption {
                    name,
                    reason: format!("must be a positive finite number, got {value}"),
                })
            }
        };
        positive("c", self.c)?;
        positive("tolerance", self.tolerance)?;
        positive("intercept_scaling", self.intercept_scaling)?;
        if self.max_iterations == 0 {
            return Err(TextModelError::InvalidOption {
                name: "max_iterations",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Everything needed to train a [`crate::TextClassifier`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextClassifierOptions {
    pub vectorizer: VectorizerOptions,
    pub svm: SvmOptions,
    /// Dense features given with each text besides its n-grams (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub companion: Option<DenseCompanion>,
}

/// Dense features read beside each text (a sentence embedding of it, for instance): appended
/// after the TF-IDF columns and multiplied by `scale`, which sets how much they weigh against
/// the n-grams (the TF-IDF blocks have unit-length rows; an embedding of unit length scaled by 2
/// weighs as much as both blocks together).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DenseCompanion {
    /// What the features are (the embedding model's id): a model must only ever be given
    /// features from the same source.
    pub source: String,
    /// Values per text.
    pub dimension: usize,
    pub scale: f32,
}

impl DenseCompanion {
    pub(crate) fn validate(&self) -> Result<(), TextModelError> {
        if self.dimension == 0 {
            return Err(TextModelError::InvalidOption {
                name: "companion.dimension",
                reason: "must be at least 1".into(),
            });
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(TextModelError::InvalidOption {
                name: "companion.scale",
                reason: format!("must be a positive finite number, got {}", self.scale),
            });
        }
        Ok(())
    }
}
