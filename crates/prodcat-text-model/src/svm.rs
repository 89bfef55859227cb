//! One-vs-rest linear SVM with L2 regularisation and the squared hinge loss, trained in the dual
//! by coordinate descent exactly as LIBLINEAR's `solve_l2r_l1l2_svc` (solver
//! `L2R_L2LOSS_SVC_DUAL`, what scikit-learn's `LinearSVC(dual=True)` runs):
//!
//! - dual variables `alpha_i >= 0`, `w = sum_i alpha_i y_i x_i`, diagonal term `0.5 / C_i`;
//! - every outer iteration visits the active samples in a fresh random order;
//! - shrinking: a sample at `alpha = 0` whose gradient exceeds the previous iteration's largest
//!   projected gradient leaves the active set (the squared hinge has no upper bound on `alpha`,
//!   so LIBLINEAR's other shrinking case never arises); when the projected-gradient spread drops below
//!   `tolerance` on the active set, everything is reactivated once more before stopping;
//! - the intercept is the weight of an extra feature of value `intercept_scaling`, regularised
//!   like the others (LIBLINEAR's bias);
//! - one binary problem per class (class against the rest; with two classes a single problem, as
//!   LIBLINEAR does). With balanced class weights, class k's weight scales C of its positive
//!   samples only, as in LIBLINEAR's one-vs-rest.
//!
//! Binary problems run in parallel, one per task; each has its own random stream derived from the
//! seed and the class, so the weights are bit-identical whatever the number of threads.
//! Training keeps `w` in `f64` as LIBLINEAR does; the fitted weights are stored as `f32`,
//! feature-major (`weights[feature * class_count + class]`), so that scoring a sparse row reads
//! one contiguous run of class weights per stored feature.

use prodcat_domain::SplitMix64;
use rayon::prelude::*;

use crate::options::{ClassWeighting, SvmOptions};
use crate::sparse::CsrMatrix;
use crate::TextModelError;

/// A fitted one-vs-rest linear SVM.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSvm {
    class_count: usize,
    feature_count: usize,
    weights: Vec<f32>,
    intercepts: Vec<f32>,
    iterations: Vec<u32>,
    options: SvmOptions,
}

/// The generator of one class's coordinate permutations.
fn class_random(seed: u64, class: usize) -> SplitMix64 {
    SplitMix64::new(seed ^ (class as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// The solution of one binary problem.
struct BinarySolution {
    weights: Vec<f64>,
    intercept: f64,
    iterations: u32,
}

/// `weights . x` for a sparse row whose columns are all below `weights.len()` (checked by
/// [`LinearSvm::fit`] before any solve starts). Four partial sums break the dependency chain of
/// the additions; the result is deterministic (fixed summation order).
#[inline]
fn sparse_dot(weights: &[f64], columns: &[u32], values: &[f32]) -> f64 {
    debug_assert!(columns.iter().all(|&c| (c as usize) < weights.len()));
    let mut sums = [0.0f64; 4];
    let whole = columns.len() / 4 * 4;
    for (columns4, values4) in columns[..whole]
        .chunks_exact(4)
        .zip(values[..whole].chunks_exact(4))
    {
        for lane in 0..4 {
            // SAFETY: every column index is below `weights.len()`, checked once in `fit`.
            let weight = unsafe { *weights.get_unchecked(columns4[lane] as usize) };
            sums[lane] += weight * values4[lane] as f64;
        }
    }
    let mut tail = 0.0;
    for (&column, &value) in columns[whole..].iter().zip(&values[whole..]) {
        // SAFETY: as above.
        tail += unsafe { *weights.get_unchecked(column as usize) } * value as f64;
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

/// `weights += step * x` for a sparse row with columns below `weights.len()` (checked in `fit`).
#[inline]
fn sparse_add(weights: &mut [f64], columns: &[u32], values: &[f32], step: f64) {
    debug_assert!(columns.iter().all(|&c| (c as usize) < weights.len()));
    for (&column, &value) in columns.iter().zip(values) {
        // SAFETY: every column index is below `weights.len()`, checked once in `fit`.
        unsafe { *weights.get_unchecked_mut(column as usize) += step * value as f64 };
    }
}

/// Dual coordinate descent for one binary problem; `positive[i]` says whether sample i is +1.
fn solve_binary(
    x: &CsrMatrix,
    positive: &[bool],
    cost_positive: f64,
    cost_negative: f64,
    squared_norms: &[f64],
    options: &SvmOptions,
    random: &mut SplitMix64,
) -> BinarySolution {
    let sample_count = x.row_count();
    let bias = if options.fit_intercept {
        options.intercept_scaling
    } else {
        0.0
    };
    let diagonal = |i: usize| {
        if positive[i] {
            0.5 / cost_positive
        } else {
            0.5 / cost_negative
        }
    };
    let mut weights = vec![0.0f64; x.column_count()];
    let mut intercept_weight = 0.0f64;
    let mut alpha = vec![0.0f64; sample_count];
    let quadratic: Vec<f64> = (0..sample_count)
        .map(|i| diagonal(i) + squared_norms[i] + bias * bias)
        .collect();
    let mut index: Vec<usize> = (0..sample_count).collect();
    let mut active_size = sample_count;
    let mut previous_max = f64::INFINITY;
    let mut iteration = 0usize;
    while iteration < options.max_iterations {
        let mut new_max = f64::NEG_INFINITY;
        let mut new_min = f64::INFINITY;
        for i in 0..active_size {
            let j = i + random.next_index(active_size - i);
            index.swap(i, j);
        }
        let mut s = 0;
        while s < active_size {
            let i = index[s];
            let sign = if positive[i] { 1.0 } else { -1.0 };
            let (columns, values) = x.row(i);
            let margin = intercept_weight * bias + sparse_dot(&weights, columns, values);
            let gradient = margin * sign - 1.0 + alpha[i] * diagonal(i);
            let mut projected = 0.0;
            if alpha[i] == 0.0 {
                if gradient > previous_max {
                    active_size -= 1;
                    index.swap(s, active_size);
                    continue;
                } else if gradient < 0.0 {
                    projected = gradient;
                }
            } else {
                projected = gradient;
            }
            new_max = new_max.max(projected);
            new_min = new_min.min(projected);
            if projected.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (old - gradient / quadratic[i]).max(0.0);
                let step = (alpha[i] - old) * sign;
                sparse_add(&mut weights, columns, values, step);
                intercept_weight += step * bias;
            }
            s += 1;
        }
        iteration += 1;
        if new_max - new_min <= options.tolerance {
            if active_size == sample_count {
                break;
            }
            active_size = sample_count;
            previous_max = f64::INFINITY;
            continue;
        }
        previous_max = if new_max <= 0.0 {
            f64::INFINITY
        } else {
            new_max
        };
    }
    BinarySolution {
        weights,
        intercept: intercept_weight * bias,
        iterations: iteration as u32,
    }
}

impl LinearSvm {
    /// Trains one binary problem per class (one in total for two classes) on the rows of `x`;
    /// `labels[i]` is the class index of row i, in `0..class_count`.
    pub fn fit(
        x: &CsrMatrix,
        labels: &[usize],
        class_count: usize,
        options: &SvmOptions,
    ) -> Result<Self, TextModelError> {
        options.validate()?;
        if x.row_count() == 0 {
            return Err(TextModelError::EmptyCorpus);
        }
        if labels.len() != x.row_count() {
            return Err(TextModelError::LabelCountMismatch {
                texts: x.row_count(),
                labels: labels.len(),
            });
        }
        if let Some(row) = labels.iter().position(|&class| class >= class_count) {
            return Err(TextModelError::ClassOutOfRange {
                class: labels[row],
                row,
                class_count,
            });
        }
        // The solver indexes the weights without bounds checks: make sure it may.
        if x.max_column()
            .is_some_and(|column| column as usize >= x.column_count())
        {
            return Err(TextModelError::FeatureCountMismatch {
                expected: x.column_count(),
                actual: x.max_column().map_or(0, |column| column as usize + 1),
            });
        }
        let mut counts = vec![0usize; class_count];
        for &class in labels {
            counts[class] += 1;
        }
        let present = counts.iter().filter(|&&count| count > 0).count();
        if class_count < 2 || present < 2 {
            return Err(TextModelError::TooFewClasses { found: present });
        }
        let class_costs: Vec<f64> = counts
            .iter()
            .map(|&count| match options.class_weighting {
                ClassWeighting::Uniform => options.c,
                ClassWeighting::Balanced if count == 0 => options.c,
                ClassWeighting::Balanced => {
                    options.c * labels.len() as f64 / (class_count as f64 * count as f64)
                }
            })
            .collect();
        let squared_norms: Vec<f64> = (0..x.row_count())
            .map(|i| x.row(i).1.iter().map(|&v| v as f64 * v as f64).sum())
            .collect();
        // Binary problems: with two classes, class 1 against class 0 (class 1 positive).
        let problems: Vec<usize> = if class_count == 2 {
            vec![1]
        } else {
            (0..class_count).collect()
        };
        let solutions: Vec<BinarySolution> = problems
            .par_iter()
            .map(|&class| {
                let positive: Vec<bool> = labels.iter().map(|&label| label == class).collect();
                let cost_negative = if class_count == 2 {
                    class_costs[0]
                } else {
                    options.c
                };
                solve_binary(
                    x,
                    &positive,
                    class_costs[class],
                    cost_negative,
                    &squared_norms,
                    options,
                    &mut class_random(options.seed, class),
                )
            })
            .collect();
        let feature_count = x.column_count();
        let mut weights = vec![0.0f32; feature_count * class_count];
        let mut intercepts = vec![0.0f32; class_count];
        let mut iterations = vec![0u32; class_count];
        if class_count == 2 {
            let solution = &solutions[0];
            for (feature, &weight) in solution.weights.iter().enumerate() {
                weights[feature * 2] = -weight as f32;
                weights[feature * 2 + 1] = weight as f32;
            }
            intercepts = vec![-solution.intercept as f32, solution.intercept as f32];
            iterations = vec![solution.iterations; 2];
        } else {
            for (class, solution) in solutions.iter().enumerate() {
                for (feature, &weight) in solution.weights.iter().enumerate() {
                    weights[feature * class_count + class] = weight as f32;
                }
                intercepts[class] = solution.intercept as f32;
                iterations[class] = solution.iterations;
            }
        }
        Ok(Self {
            class_count,
            feature_count,
            weights,
            intercepts,
            iterations,
            options: options.clone(),
        })
    }

    /// Rebuilds a fitted model from stored parts, checking their sizes.
    pub(crate) fn from_parts(
        class_count: usize,
        feature_count: usize,
        weights: Vec<f32>,
        intercepts: Vec<f32>,
        iterations: Vec<u32>,
        options: SvmOptions,
    ) -> Result<Self, TextModelError> {
        let expected = feature_count.checked_mul(class_count);
        if class_count < 2
            || expected != Some(weights.len())
            || intercepts.len() != class_count
            || iterations.len() != class_count
        {
            return Err(TextModelError::Corrupt(format!(
                "SVM sizes do not agree: {class_count} classes, {feature_count} features, \
                 {} weights, {} intercepts, {} iteration counts",
                weights.len(),
                intercepts.len(),
                iterations.len()
            )));
        }
        if weights.iter().chain(&intercepts).any(|w| !w.is_finite()) {
            return Err(TextModelError::Corrupt("non-finite SVM weight".into()));
        }
        Ok(Self {
            class_count,
            feature_count,
            weights,
            intercepts,
            iterations,
            options,
        })
    }

    /// Number of classes (columns of the decision values).
    pub fn class_count(&self) -> usize {
        self.class_count
    }

    /// Number of input features.
    pub fn feature_count(&self) -> usize {
        self.feature_count
    }

    /// Feature-major weights: `weights()[feature * class_count + class]`.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The weight of `feature` for `class` (0 when out of range).
    pub fn weight(&self, feature: usize, class: usize) -> f32 {
        if class >= self.class_count {
            return 0.0;
        }
        self.weights
            .get(feature * self.class_count + class)
            .copied()
            .unwrap_or(0.0)
    }

    /// The intercept of every class.
    pub fn intercepts(&self) -> &[f32] {
        &self.intercepts
    }

    /// Outer iterations each binary problem took.
    pub fn iterations(&self) -> &[u32] {
        &self.iterations
    }

    /// True when every binary problem stopped before `max_iterations`.
    pub fn converged(&self) -> bool {
        self.iterations
            .iter()
            .all(|&count| (count as usize) < self.options.max_iterations)
    }

    /// The options the model was trained with.
    pub fn options(&self) -> &SvmOptions {
        &self.options
    }

    /// Writes the decision values of one sparse row into `out` (`class_count` long).
    /// Columns at or beyond `feature_count` are ignored.
    pub fn decision_values_into(&self, indices: &[u32], values: &[f32], out: &mut [f32]) {
        out.copy_from_slice(&self.intercepts);
        let k = self.class_count;
        for (&column, &value) in indices.iter().zip(values) {
            let start = column as usize * k;
            if let Some(row) = self.weights.get(start..start + k) {
                for (score, &weight) in out.iter_mut().zip(row) {
                    *score += value * weight;
                }
            }
        }
    }

    /// Decision values of one sparse row.
    pub fn decision_values(&self, indices: &[u32], values: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.class_count];
        self.decision_values_into(indices, values, &mut out);
        out
    }

    /// Decision values of every row of `x`, row-major (`row * class_count + class`), in parallel.
    pub fn decision_matrix(&self, x: &CsrMatrix) -> Result<Vec<f32>, TextModelError> {
        if x.column_count() != self.feature_count {
            return Err(TextModelError::FeatureCountMismatch {
                expected: self.feature_count,
                actual: x.column_count(),
            });
        }
        let mut out = vec![0.0f32; x.row_count() * self.class_count];
        out.par_chunks_mut(self.class_count)
            .enumerate()
            .for_each(|(row, scores)| {
                let (indices, values) = x.row(row);
                self.decision_values_into(indices, values, scores);
            });
        Ok(out)
    }

    /// The class with the largest decision value of each row (first one on ties).
    pub fn predict(&self, x: &CsrMatrix) -> Result<Vec<usize>, TextModelError> {
        let scores = self.decision_matrix(x)?;
        Ok(scores.chunks_exact(self.class_count).map(argmax).collect())
    }
}

/// Index of the largest value (the first one on ties; 0 for an empty slice).
pub(crate) fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (index, &value) in values.iter().enumerate() {
        if value > values[best] {
            best = index;
        }
    }
    best
}
