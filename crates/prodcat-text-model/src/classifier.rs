//! The text classifier as the rest of prodcat sees it: category codes in, calibrated top-k
//! predictions and exact explanations out.
//!
//! Probabilities are `softmax(decision_values / T)` with `T` fitted on held-out data by
//! [`TextClassifier::calibrate`] (temperature scaling, see `prodcat_metrics`); until then `T = 1`.
//! Calibration never changes which category ranks first.
//!
//! A text with no n-gram of the vocabulary (the empty text, for instance) becomes an all-zero
//! feature row: its decision values are the intercepts alone, so it gets the category with the
//! largest intercept, with a low probability, and `known_feature_count == 0` tells the caller so.
//!
//! A model trained with dense companion features ([`DenseCompanion`], a sentence embedding of
//! each text) takes them beside each text through the `*_with_companion` methods; the other
//! methods score a text as if its companion features were all zero (its n-grams alone).

use prodcat_domain::CategoryCode;
use prodcat_metrics::{
    negative_log_likelihood, reliability_diagram, ReliabilityDiagram, TemperatureScaling,
    DEFAULT_CALIBRATION_BINS,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::options::{Analyzer, DenseCompanion, TextClassifierOptions};
use crate::sparse::{append_dense, check_dense, SparseRow};
use crate::svm::{argmax, LinearSvm};
use crate::vectorizer::TextVectorizer;
use crate::TextModelError;

/// One category with its calibrated probability and raw decision value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoredCategory {
    pub category: CategoryCode,
    pub probability: f32,
    pub decision_value: f32,
}

/// The answer for one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    /// The top category.
    pub category: CategoryCode,
    /// Its calibrated probability.
    pub probability: f32,
    /// The best categories, most probable first (as many as asked, at most all).
    pub top: Vec<ScoredCategory>,
    /// How many distinct n-grams of the text are in the vocabulary (0: intercepts only).
    pub known_feature_count: usize,
}

/// How much one n-gram moved one category's decision value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TermContribution {
    pub term: String,
    pub analyzer: Analyzer,
    /// The n-gram's TF-IDF value in this text.
    pub value: f32,
    /// The category's weight for the n-gram.
    pub weight: f32,
    /// `value * weight`.
    pub contribution: f32,
}

/// The decision value of a category taken apart: `intercept + sum of all contributions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub category: CategoryCode,
    pub decision_value: f32,
    pub intercept: f32,
    /// The largest contributions, largest first.
    pub terms: Vec<TermContribution>,
    /// Sum of the contributions not listed in `terms`.
    pub remaining_contribution: f32,
    /// What the dense companion features (the sentence embedding) added, when the model has
    /// them.
    #[serde(default)]
    pub companion_contribution: f32,
}

/// What calibration did, measured on the calibration data itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalibrationReport {
    pub temperature: f64,
    pub sample_count: usize,
    pub negative_log_likelihood_before: f64,
    pub negative_log_likelihood_after: f64,
    pub expected_calibration_error_before: f64,
    pub expected_calibration_error_after: f64,
    pub reliability_before: ReliabilityDiagram,
    pub reliability_after: ReliabilityDiagram,
}

/// Vectoriser + SVM + category labels + temperature.
#[derive(Debug, Clone)]
pub struct TextClassifier {
    pub(crate) options: TextClassifierOptions,
    pub(crate) categories: Vec<CategoryCode>,
    pub(crate) vectorizer: TextVectorizer,
    pub(crate) svm: LinearSvm,
    pub(crate) calibration: TemperatureScaling,
}

impl TextClassifier {
    /// Fits the vectoriser and the SVM on `texts` labelled `labels`. The model's categories are
    /// the distinct labels, in ascending code order. Options with a companion need its features:
    /// [`Self::fit_with_companion`].
    pub fn fit<S: AsRef<str> + Sync>(
        texts: &[S],
        labels: &[CategoryCode],
        options: &TextClassifierOptions,
    ) -> Result<Self, TextModelError> {
        Self::fit_inner(texts, None, labels, options)
    }

    /// [`Self::fit`] with each text's dense companion features (`options.companion` says how
    /// many values each has and how they are scaled).
    pub fn fit_with_companion<S: AsRef<str> + Sync>(
        texts: &[S],
        companion: &[&[f32]],
        labels: &[CategoryCode],
        options: &TextClassifierOptions,
    ) -> Result<Self, TextModelError> {
        Self::fit_inner(texts, Some(companion), labels, options)
    }

    fn fit_inner<S: AsRef<str> + Sync>(
        texts: &[S],
        companion: Option<&[&[f32]]>,
        labels: &[CategoryCode],
        options: &TextClassifierOptions,
    ) -> Result<Self, TextModelError> {
        if texts.len() != labels.len() {
            return Err(TextModelError::LabelCountMismatch {
                texts: texts.len(),
                labels: labels.len(),
            });
        }
        if texts.is_empty() {
            return Err(TextModelError::EmptyCorpus);
        }
        options.svm.validate()?;
        match (&options.companion, companion) {
            (Some(spec), Some(_)) => spec.validate()?,
            (Some(spec), None) => {
                return Err(companion_error(
                    spec,
                    "the options name companion features but none were given".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(TextModelError::InvalidOption {
                    name: "companion",
                    reason: "companion features were given but the options do not name them".into(),
                })
            }
            (None, None) => {}
        }
        let mut categories = labels.to_vec();
        categories.sort_unstable();
        categories.dedup();
        if categories.len() < 2 {
            return Err(TextModelError::TooFewClasses {
                found: categories.len(),
            });
        }
        let classes: Vec<usize> = labels
            .iter()
            .map(|label| categories.binary_search(label).unwrap_or(0))
            .collect();
        let (vectorizer, mut features) = TextVectorizer::fit_transform(texts, &options.vectorizer)?;
        if let (Some(spec), Some(dense)) = (&options.companion, companion) {
            features = features
                .with_dense_columns(dense, spec.dimension, spec.scale)
                .map_err(|reason| companion_error(spec, reason))?;
        }
        let svm = LinearSvm::fit(&features, &classes, categories.len(), &options.svm)?;
        Ok(Self {
            options: options.clone(),
            categories,
            vectorizer,
            svm,
            calibration: TemperatureScaling::identity(),
        })
    }

    /// Assembles a classifier from a fitted vectoriser and SVM (for instance when the two steps
    /// are timed or cached separately). `categories` must be strictly ascending, one per SVM class,
    /// and the SVM must take the vectoriser's columns.
    pub fn from_parts(
        options: TextClassifierOptions,
        categories: Vec<CategoryCode>,
        vectorizer: TextVectorizer,
        svm: LinearSvm,
    ) -> Result<Self, TextModelError> {
        if categories.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(TextModelError::InvalidOption {
                name: "categories",
                reason: "must be strictly ascending".into(),
            });
        }
        if categories.len() != svm.class_count() {
            return Err(TextModelError::InvalidOption {
                name: "categories",
                reason: format!(
                    "{} categories for an SVM of {} classes",
                    categories.len(),
                    svm.class_count()
                ),
            });
        }
        let columns = vectorizer.feature_count() + companion_width(&options);
        if columns != svm.feature_count() {
            return Err(TextModelError::FeatureCountMismatch {
                expected: svm.feature_count(),
                actual: columns,
            });
        }
        Ok(Self {
            options,
            categories,
            vectorizer,
            svm,
            calibration: TemperatureScaling::identity(),
        })
    }

    /// The categories, in class-index order.
    pub fn categories(&self) -> &[CategoryCode] {
        &self.categories
    }

    /// The class index of `category`, if the model knows it.
    pub fn class_index(&self, category: CategoryCode) -> Option<usize> {
        self.categories.binary_search(&category).ok()
    }

    /// The options the model was trained with.
    pub fn options(&self) -> &TextClassifierOptions {
        &self.options
    }

    /// The dense companion features the model takes beside each text, if any.
    pub fn companion(&self) -> Option<&DenseCompanion> {
        self.options.companion.as_ref()
    }

    pub fn vectorizer(&self) -> &TextVectorizer {
        &self.vectorizer
    }

    pub fn svm(&self) -> &LinearSvm {
        &self.svm
    }

    /// The current temperature.
    pub fn calibration(&self) -> TemperatureScaling {
        self.calibration
    }

    /// Sets the temperature (for instance one fitted elsewhere).
    pub fn set_calibration(
        &mut self,
        calibration: TemperatureScaling,
    ) -> Result<(), TextModelError> {
        if !(calibration.temperature.is_finite() && calibration.temperature > 0.0) {
            return Err(TextModelError::InvalidOption {
                name: "temperature",
                reason: format!(
                    "must be positive and finite, got {}",
                    calibration.temperature
                ),
            });
        }
        self.calibration = calibration;
        Ok(())
    }

    /// The feature row of a text: its n-grams, then its companion features (scaled) when the
    /// model has them and they are given.
    fn feature_row(
        &self,
        text: &str,
        companion: Option<&[f32]>,
    ) -> Result<SparseRow, TextModelError> {
        let mut row = self.vectorizer.transform_one(text);
        if let (Some(spec), Some(values)) = (&self.options.companion, companion) {
            check_dense(values, spec.dimension).map_err(|reason| companion_error(spec, reason))?;
            append_dense(
                &mut row.indices,
                &mut row.values,
                self.vectorizer.feature_count(),
                values,
                spec.scale,
            );
        }
        Ok(row)
    }

    /// Decision values of one text, one per category.
    pub fn decision_values(&self, text: &str) -> Vec<f32> {
        let row = self.vectorizer.transform_one(text);
        self.svm.decision_values(&row.indices, &row.values)
    }

    /// Decision values of one text with its companion features (a model without a companion
    /// ignores them).
    pub fn decision_values_with_companion(
        &self,
        text: &str,
        companion: Option<&[f32]>,
    ) -> Result<Vec<f32>, TextModelError> {
        let row = self.feature_row(text, companion)?;
        Ok(self.svm.decision_values(&row.indices, &row.values))
    }

    /// Decision values of many texts, row-major (`text * categories + class`), in parallel.
    pub fn decision_matrix<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<f32> {
        let k = self.categories.len();
        let mut out = vec![0.0f32; texts.len() * k];
        out.par_chunks_mut(k)
            .zip(texts.par_iter())
            .for_each(|(scores, text)| {
                let row = self.vectorizer.transform_one(text.as_ref());
                self.svm
                    .decision_values_into(&row.indices, &row.values, scores);
            });
        out
    }

    /// [`Self::decision_matrix`] with each text's companion features.
    pub fn decision_matrix_with_companion<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        companion: Option<&[&[f32]]>,
    ) -> Result<Vec<f32>, TextModelError> {
        let Some(dense) = companion else {
            return Ok(self.decision_matrix(texts));
        };
        if dense.len() != texts.len() {
            return Err(TextModelError::LabelCountMismatch {
                texts: texts.len(),
                labels: dense.len(),
            });
        }
        let k = self.categories.len();
        let mut out = vec![0.0f32; texts.len() * k];
        out.par_chunks_mut(k)
            .zip(texts.par_iter().zip(dense.par_iter()))
            .try_for_each(|(scores, (text, values))| {
                let row = self.feature_row(text.as_ref(), Some(values))?;
                self.svm
                    .decision_values_into(&row.indices, &row.values, scores);
                Ok::<(), TextModelError>(())
            })?;
        Ok(out)
    }

    /// Calibrated probabilities of one row of decision values.
    pub fn probabilities_from_decision_values(&self, decision_values: &[f32]) -> Vec<f32> {
        let scores: Vec<f64> = decision_values.iter().map(|&v| v as f64).collect();
        self.calibration
            .probabilities(&scores)
            .into_iter()
            .map(|p| p as f32)
            .collect()
    }

    fn prediction_from(&self, decision_values: &[f32], known: usize, top_k: usize) -> Prediction {
        let probabilities = self.probabilities_from_decision_values(decision_values);
        let mut order: Vec<usize> = (0..decision_values.len()).collect();
        // Largest decision value first; ties keep the lower class index first.
        order.sort_by(|&a, &b| {
            decision_values[b]
                .total_cmp(&decision_values[a])
                .then(a.cmp(&b))
        });
        let top: Vec<ScoredCategory> = order
            .iter()
            .take(top_k.max(1))
            .map(|&class| ScoredCategory {
                category: self.categories[class],
                probability: probabilities[class],
                decision_value: decision_values[class],
            })
            .collect();
        Prediction {
            category: top[0].category,
            probability: top[0].probability,
            top,
            known_feature_count: known,
        }
    }

    /// The category of one text with the `top_k` most probable categories (at least one).
    pub fn predict(&self, text: &str, top_k: usize) -> Prediction {
        let row = self.vectorizer.transform_one(text);
        let scores = self.svm.decision_values(&row.indices, &row.values);
        self.prediction_from(&scores, row.len(), top_k)
    }

    /// [`Self::predict`] for many texts, in parallel, in input order.
    pub fn predict_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        top_k: usize,
    ) -> Vec<Prediction> {
        texts
            .par_iter()
            .map(|text| self.predict(text.as_ref(), top_k))
            .collect()
    }

    /// Just the top category of each text, in parallel.
    pub fn predict_categories<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<CategoryCode> {
        let k = self.categories.len();
        self.decision_matrix(texts)
            .chunks_exact(k)
            .map(|scores| self.categories[argmax(scores)])
            .collect()
    }

    /// Takes the decision value of `category` for `text` apart into the intercept and one
    /// contribution per n-gram (exact: the parts add up to the decision value up to float
    /// rounding); lists the `limit` largest contributions.
    pub fn explain(
        &self,
        text: &str,
        category: CategoryCode,
        limit: usize,
    ) -> Result<Explanation, TextModelError> {
        self.explain_with_companion(text, None, category, limit)
    }

    /// [`Self::explain`] with the text's companion features, whose whole contribution is
    /// reported as one figure.
    pub fn explain_with_companion(
        &self,
        text: &str,
        companion: Option<&[f32]>,
        category: CategoryCode,
        limit: usize,
    ) -> Result<Explanation, TextModelError> {
        let class = self
            .class_index(category)
            .ok_or_else(|| TextModelError::UnknownCategory(category.to_string()))?;
        let companion_contribution = match (&self.options.companion, companion) {
            (Some(spec), Some(values)) => {
                check_dense(values, spec.dimension)
                    .map_err(|reason| companion_error(spec, reason))?;
                let first_column = self.vectorizer.feature_count();
                values
                    .iter()
                    .enumerate()
                    .map(|(offset, &value)| {
                        value * spec.scale * self.svm.weight(first_column + offset, class)
                    })
                    .sum()
            }
            _ => 0.0,
        };
        let row = self.vectorizer.transform_one(text);
        let mut contributions: Vec<(usize, f32, f32, f32)> = row
            .indices
            .iter()
            .zip(&row.values)
            .map(|(&column, &value)| {
                let weight = self.svm.weight(column as usize, class);
                (column as usize, value, weight, value * weight)
            })
            .collect();
        contributions.sort_by(|a, b| b.3.total_cmp(&a.3).then(a.0.cmp(&b.0)));
        let intercept = self.svm.intercepts()[class];
        let total: f32 = contributions.iter().map(|c| c.3).sum();
        let listed = contributions.len().min(limit);
        let remaining: f32 = contributions[listed..].iter().map(|c| c.3).sum();
        let terms = contributions[..listed]
            .iter()
            .filter_map(|&(column, value, weight, contribution)| {
                self.vectorizer
                    .feature_name(column)
                    .map(|(analyzer, term)| TermContribution {
                        term: term.to_string(),
                        analyzer,
                        value,
                        weight,
                        contribution,
                    })
            })
            .collect();
        Ok(Explanation {
            category,
            decision_value: intercept + total + companion_contribution,
            intercept,
            terms,
            remaining_contribution: remaining,
            companion_contribution,
        })
    }

    /// Fits the temperature on held-out `texts`/`labels` (labels the model does not know are an
    /// error) and reports NLL and ECE (15 bins) before and after, on that same data.
    pub fn calibrate<S: AsRef<str> + Sync>(
        &mut self,
        texts: &[S],
        labels: &[CategoryCode],
    ) -> Result<CalibrationReport, TextModelError> {
        self.calibrate_with_companion(texts, None, labels)
    }

    /// [`Self::calibrate`] with each text's companion features.
    pub fn calibrate_with_companion<S: AsRef<str> + Sync>(
        &mut self,
        texts: &[S],
        companion: Option<&[&[f32]]>,
        labels: &[CategoryCode],
    ) -> Result<CalibrationReport, TextModelError> {
        if texts.len() != labels.len() {
            return Err(TextModelError::LabelCountMismatch {
                texts: texts.len(),
                labels: labels.len(),
            });
        }
        let classes = labels
            .iter()
            .map(|&label| {
                self.class_index(label)
                    .ok_or_else(|| TextModelError::UnknownCategory(label.to_string()))
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let scores: Vec<f64> = self
            .decision_matrix_with_companion(texts, companion)?
            .into_iter()
            .map(f64::from)
            .collect();
        let k = self.categories.len();
        let fitted = TemperatureScaling::fit(&scores, k, &classes)?;
        let before = TemperatureScaling::identity().probability_matrix(&scores, k);
        let after = fitted.probability_matrix(&scores, k);
        let reliability_before =
            reliability_diagram(&before, k, &classes, DEFAULT_CALIBRATION_BINS)?;
        let reliability_after = reliability_diagram(&after, k, &classes, DEFAULT_CALIBRATION_BINS)?;
        let report = CalibrationReport {
            temperature: fitted.temperature,
            sample_count: texts.len(),
            negative_log_likelihood_before: negative_log_likelihood(&scores, k, &classes, 1.0)?,
            negative_log_likelihood_after: negative_log_likelihood(
                &scores,
                k,
                &classes,
                fitted.temperature,
            )?,
            expected_calibration_error_before: reliability_before.expected_calibration_error,
            expected_calibration_error_after: reliability_after.expected_calibration_error,
            reliability_before,
            reliability_after,
        };
        self.calibration = fitted;
        Ok(report)
    }
}

/// Columns the companion features add.
pub(crate) fn companion_width(options: &TextClassifierOptions) -> usize {
    options
        .companion
        .as_ref()
        .map_or(0, |companion| companion.dimension)
}

fn companion_error(spec: &DenseCompanion, reason: String) -> TextModelError {
    TextModelError::Companion {
        reason,
        dimension: spec.dimension,
        source_name: spec.source.clone(),
    }
}
