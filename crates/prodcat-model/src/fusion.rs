//! Late fusion and automation: the stacked combiner over both branches' log-probabilities
//! (fitted on out-of-fold predictions, regularised toward the text branch and kept only when it
//! beats the text branch under cross-validation), the older linear image weight, and the
//! confidence threshold whose automatic decisions keep a target precision with a lower
//! confidence bound.

use serde::{Deserialize, Serialize};

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (index, value) in row.iter().enumerate() {
        if *value > row[best] {
            best = index;
        }
    }
    best
}

/// Weighted F1 of argmax predictions (rows of `class_count` probabilities).
fn weighted_f1(rows: &[Vec<f32>], labels: &[usize], class_count: usize) -> f64 {
    let predicted: Vec<usize> = rows.iter().map(|row| argmax(row)).collect();
    prodcat_metrics::classification_report(labels, &predicted, class_count)
        .map(|report| report.weighted_f1)
        .unwrap_or(0.0)
}

fn log_loss(rows: &[Vec<f32>], labels: &[usize]) -> f64 {
    rows.iter()
        .zip(labels)
        .map(|(row, &label)| -(f64::from(row[label]).max(1e-12)).ln())
        .sum::<f64>()
        / rows.len().max(1) as f64
}

/// Picks the image weight `w` in 0, 0.05, ..., 1 for `p = w * image + (1 - w) * text` that
/// maximises weighted F1 on the given rows (ties broken by lower log loss, then smaller weight).
pub fn tune_fusion_weight(
    text: &[Vec<f32>],
    image: &[Vec<f32>],
    labels: &[usize],
    class_count: usize,
) -> f32 {
    if text.is_empty() || text.len() != image.len() || text.len() != labels.len() {
        return 0.0;
    }
    let mut best = (f64::MIN, f64::MAX, 0.0f32);
    for step in 0..=20 {
        let weight = step as f32 / 20.0;
        let fused: Vec<Vec<f32>> = text
            .iter()
            .zip(image)
            .map(|(t, i)| {
                t.iter()
                    .zip(i)
                    .map(|(t, i)| weight * i + (1.0 - weight) * t)
                    .collect()
            })
            .collect();
        let f1 = weighted_f1(&fused, labels, class_count);
        let loss = log_loss(&fused, labels);
        let better = f1 > best.0 + 1e-12 || ((f1 - best.0).abs() <= 1e-12 && loss < best.1 - 1e-12);
        if better {
            best = (f1, loss, weight);
        }
    }
    best.2
}

/// `w * image + (1 - w) * text`, then a temperature on the log-probabilities (renormalised).
pub fn fuse(text: &[f32], image: &[f32], weight: f32, temperature: f64) -> Vec<f32> {
    let mixed: Vec<f64> = text
        .iter()
        .zip(image)
        .map(|(t, i)| f64::from(weight * i + (1.0 - weight) * t).max(1e-12))
        .collect();
    if (temperature - 1.0).abs() < 1e-12 {
        return mixed.into_iter().map(|p| p as f32).collect();
    }
    let logs: Vec<f64> = mixed.iter().map(|p| p.ln() / temperature).collect();
    let max = logs.iter().copied().fold(f64::MIN, f64::max);
    let exps: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| (e / sum) as f32).collect()
}

/// Fits the temperature of the fused log-probabilities on labelled rows.
pub fn fit_fused_temperature(
    text: &[Vec<f32>],
    image: &[Vec<f32>],
    labels: &[usize],
    weight: f32,
    class_count: usize,
) -> f64 {
    let scores: Vec<f64> = text
        .iter()
        .zip(image)
        .flat_map(|(t, i)| {
            t.iter()
                .zip(i)
                .map(|(t, i)| f64::from(weight * i + (1.0 - weight) * t).max(1e-12).ln())
                .collect::<Vec<_>>()
        })
        .collect();
    prodcat_metrics::TemperatureScaling::fit(&scores, class_count, labels)
        .map(|t| t.temperature)
        .unwrap_or(1.0)
}

/// A threshold chosen for automatic decisions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdChoice {
    /// Confidence at or above which a decision is automatic (1.0 + epsilon means "never").
    pub threshold: f32,
    /// Share of rows decided automatically.
    pub coverage: f64,
    /// Precision of the automatic decisions on these rows.
    pub precision: f64,
}

/// The lowest confidence threshold whose automatic decisions reach `target_precision` on the
/// given rows, maximising coverage. When no threshold reaches it, nothing is automatic. The
/// observed precision, without a confidence bound (the bounded rule at `z = 0`).
pub fn automation_threshold(
    probabilities: &[Vec<f32>],
    labels: &[usize],
    target_precision: f64,
) -> ThresholdChoice {
    automation_threshold_bounded(probabilities, labels, target_precision, 0.0)
}

/// One-sided z value of the lower confidence bound on the precision of automatic decisions
/// (95% one-sided).
pub const PRECISION_BOUND_Z: f64 = 1.645;

/// The Wilson score lower bound of a proportion of `successes` in `trials` at `z`.
pub fn wilson_lower_bound(successes: usize, trials: usize, z: f64) -> f64 {
    if trials == 0 {
        return 0.0;
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let margin = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - margin) / (1.0 + z2 / n)).max(0.0)
}

/// The lowest confidence threshold whose automatic decisions reach `target_precision` with
/// confidence: the Wilson lower bound (at `z`) of their precision on the given rows must reach
/// the target, so that the promise holds on new products and not only on the tuning rows.
/// Maximises coverage under that rule; when no threshold qualifies, nothing is automatic.
pub fn automation_threshold_bounded(
    probabilities: &[Vec<f32>],
    labels: &[usize],
    target_precision: f64,
    z: f64,
) -> ThresholdChoice {
    let mut scored: Vec<(f32, bool)> = probabilities
        .iter()
        .zip(labels)
        .map(|(row, &label)| {
            let best = argmax(row);
            (row[best], best == label)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut choice = ThresholdChoice {
        threshold: 1.0 + f32::EPSILON,
        coverage: 0.0,
        precision: 0.0,
    };
    let mut correct = 0usize;
    let mut index = 0;
    while index < scored.len() {
        // Rows with equal confidence are accepted or refused together.
        let confidence = scored[index].0;
        while index < scored.len() && scored[index].0 == confidence {
            correct += usize::from(scored[index].1);
            index += 1;
        }
        if wilson_lower_bound(correct, index, z) >= target_precision {
            choice = ThresholdChoice {
                threshold: confidence,
                coverage: index as f64 / scored.len() as f64,
                precision: correct as f64 / index as f64,
            };
        }
    }
    choice
}

/// A stacked combiner: class scores `a * ln p_text + b * ln p_image + bias`, then softmax.
/// `a = 1, b = 0, bias = 0` is the text branch itself, which is where the fit is shrunk to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackedFusion {
    pub text_scale: f64,
    pub image_scale: f64,
    /// One bias per class, in label-set order.
    pub class_bias: Vec<f64>,
}

/// How strongly the stacked combiner is pulled toward the text branch (a Gaussian prior worth
/// about this many products on each parameter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StackingOptions {
    pub scale_prior: f64,
    pub bias_prior: f64,
    /// Folds of the check that the combiner beats the text branch on rows it was not fitted on.
    pub check_folds: usize,
}

impl Default for StackingOptions {
    fn default() -> Self {
        Self {
            scale_prior: 10.0,
            bias_prior: 30.0,
            check_folds: 5,
        }
    }
}

const LOG_FLOOR: f64 = -16.0;

fn log_probability(p: f32) -> f64 {
    f64::from(p).max(1e-7).ln().max(LOG_FLOOR)
}

impl StackedFusion {
    /// The text branch alone.
    pub fn text_only(class_count: usize) -> Self {
        Self {
            text_scale: 1.0,
            image_scale: 0.0,
            class_bias: vec![0.0; class_count],
        }
    }

    /// Whether the photo counts at all.
    pub fn uses_image(&self) -> bool {
        self.image_scale > 0.0
    }

    /// The image's share of the two scales (for people: 0 = text only).
    pub fn image_share(&self) -> f64 {
        let total = self.text_scale.abs() + self.image_scale.abs();
        if total > 0.0 {
            self.image_scale.abs() / total
        } else {
            0.0
        }
    }

    /// The combined probabilities of one product.
    pub fn combine(&self, text: &[f32], image: &[f32]) -> Vec<f32> {
        let scores: Vec<f64> = text
            .iter()
            .zip(image)
            .enumerate()
            .map(|(class, (t, i))| {
                self.text_scale * log_probability(*t)
                    + self.image_scale * log_probability(*i)
                    + self.class_bias.get(class).copied().unwrap_or(0.0)
            })
            .collect();
        softmax(&scores).into_iter().map(|p| p as f32).collect()
    }

    /// Fits the combiner on rows with both branches' (out-of-fold) probabilities: multinomial
    /// log loss plus a Gaussian prior centred on the text branch.
    pub fn fit(
        text: &[Vec<f32>],
        image: &[Vec<f32>],
        labels: &[usize],
        class_count: usize,
        options: &StackingOptions,
    ) -> Self {
        let rows: Vec<(Vec<f64>, Vec<f64>, usize)> = text
            .iter()
            .zip(image)
            .zip(labels)
            .filter(|(_, &label)| label < class_count)
            .map(|((t, i), &label)| {
                (
                    t.iter().map(|p| log_probability(*p)).collect(),
                    i.iter().map(|p| log_probability(*p)).collect(),
                    label,
                )
            })
            .collect();
        // Parameters: [a, b, bias_0 .. bias_k-1]; prior means [1, 0, 0 ...].
        let dimension = 2 + class_count;
        let prior_mean = |j: usize| if j == 0 { 1.0 } else { 0.0 };
        let prior_weight = |j: usize| {
            if j < 2 {
                options.scale_prior
            } else {
                options.bias_prior
            }
        };
        let objective = |theta: &[f64], gradient: Option<&mut Vec<f64>>| -> f64 {
            let mut loss = 0.0;
            let mut grad = vec![0.0; dimension];
            for (lt, li, label) in &rows {
                let scores: Vec<f64> = (0..class_count)
                    .map(|c| theta[0] * lt[c] + theta[1] * li[c] + theta[2 + c])
                    .collect();
                let probabilities = softmax(&scores);
                loss -= probabilities[*label].max(1e-300).ln();
                for (c, ((probability, t), i)) in probabilities.iter().zip(lt).zip(li).enumerate() {
                    let residual = probability - f64::from(u8::from(c == *label));
                    grad[0] += residual * t;
                    grad[1] += residual * i;
                    grad[2 + c] += residual;
                }
            }
            for (j, g) in grad.iter_mut().enumerate() {
                let difference = theta[j] - prior_mean(j);
                loss += 0.5 * prior_weight(j) * difference * difference;
                *g += prior_weight(j) * difference;
            }
            if let Some(out) = gradient {
                *out = grad;
            }
            loss
        };
        let mut theta: Vec<f64> = (0..dimension).map(prior_mean).collect();
        if rows.is_empty() {
            return Self::text_only(class_count);
        }
        let mut gradient = vec![0.0; dimension];
        let mut loss = objective(&theta, Some(&mut gradient));
        let mut step = 1.0 / rows.len() as f64;
        for _ in 0..500 {
            let norm: f64 = gradient.iter().map(|g| g * g).sum::<f64>().sqrt();
            if norm < 1e-6 * rows.len() as f64 {
                break;
            }
            // Backtracking line search along the negative gradient.
            let mut accepted = false;
            for _ in 0..30 {
                let candidate: Vec<f64> = theta
                    .iter()
                    .zip(&gradient)
                    .map(|(t, g)| t - step * g)
                    .collect();
                let candidate_loss = objective(&candidate, None);
                if candidate_loss <= loss - 0.5 * step * norm * norm {
                    theta = candidate;
                    loss = objective(&theta, Some(&mut gradient));
                    step *= 2.0;
                    accepted = true;
                    break;
                }
                step *= 0.5;
            }
            if !accepted {
                break;
            }
        }
        Self {
            text_scale: theta[0],
            image_scale: theta[1],
            class_bias: theta[2..].to_vec(),
        }
    }
}

fn softmax(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::MIN, f64::max);
    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// What the choice of a combiner measured on the tuning rows.
#[derive(Debug, Clone, PartialEq)]
pub struct StackingChoice {
    pub combiner: StackedFusion,
    /// Whether the stacked combiner beat the text branch on held-out tuning rows (otherwise the
    /// combiner is the text branch alone).
    pub kept: bool,
    pub rows: usize,
    /// Cross-validated weighted F1 and log loss of the text branch and of the combiner.
    pub text_weighted_f1: f64,
    pub stacked_weighted_f1: f64,
    pub text_log_loss: f64,
    pub stacked_log_loss: f64,
    /// Cross-validated log loss of the same combiner given no information from the photo: the
    /// text branch rescaled and biased at its best.
    pub calibrated_text_log_loss: f64,
}

/// How much lower (relative) the combiner's held-out log loss must be than the calibrated text
/// branch's for the photo to count: noise in a useless photo's probabilities can win a hair.
const MIN_LOG_LOSS_GAIN: f64 = 0.01;

/// Fits the stacked combiner on all tuning rows, and keeps it only if, cross-validated over
/// those rows, its weighted F1 is not lower than the text branch's, its log loss is lower than
/// the text branch's and (by [`MIN_LOG_LOSS_GAIN`]) than the same combiner's without the photo
/// (a combiner that only sharpens the text probabilities lowers the log loss without the photo
/// helping at all), and it gives the photo a positive weight; otherwise the text branch alone
/// is the answer.
pub fn choose_stacked_fusion(
    text: &[Vec<f32>],
    image: &[Vec<f32>],
    labels: &[usize],
    class_count: usize,
    options: &StackingOptions,
) -> StackingChoice {
    let rows = labels.len();
    let folds = options.check_folds.max(2).min(rows.max(1));
    // Stratified folds: the j-th row of each class goes to fold j mod folds.
    let mut seen = vec![0usize; class_count + 1];
    let fold_of: Vec<usize> = labels
        .iter()
        .map(|&label| {
            let slot = &mut seen[label.min(class_count)];
            *slot += 1;
            (*slot - 1) % folds
        })
        .collect();
    // Each row scored by a combiner fitted on the other folds.
    let cross_validated = |image: &[Vec<f32>]| -> Vec<Vec<f32>> {
        let mut held_out: Vec<Vec<f32>> = vec![Vec::new(); rows];
        if rows < 2 {
            return held_out;
        }
        for fold in 0..folds {
            let (mut t, mut i, mut l) = (Vec::new(), Vec::new(), Vec::new());
            for row in (0..rows).filter(|&row| fold_of[row] != fold) {
                t.push(text[row].clone());
                i.push(image[row].clone());
                l.push(labels[row]);
            }
            let combiner = StackedFusion::fit(&t, &i, &l, class_count, options);
            for row in (0..rows).filter(|&row| fold_of[row] == fold) {
                held_out[row] = combiner.combine(&text[row], &image[row]);
            }
        }
        held_out
    };
    let held_out = cross_validated(image);
    // The same combiner given a photo that says nothing (uniform probabilities) can only
    // rescale the text branch and add class biases: the text branch at its best calibration,
    // which a useful photo must beat.
    let no_photo = vec![vec![1.0 / class_count.max(1) as f32; class_count]; rows];
    let calibrated_text = cross_validated(&no_photo);
    let text_weighted_f1 = weighted_f1(text, labels, class_count);
    let text_log_loss = log_loss(text, labels);
    let (stacked_weighted_f1, stacked_log_loss, calibrated_text_log_loss) = if rows >= 2 {
        (
            weighted_f1(&held_out, labels, class_count),
            log_loss(&held_out, labels),
            log_loss(&calibrated_text, labels),
        )
    } else {
        (0.0, f64::MAX, f64::MAX)
    };
    let fitted = StackedFusion::fit(text, image, labels, class_count, options);
    let kept = rows >= 2
        && fitted.uses_image()
        && stacked_weighted_f1 >= text_weighted_f1
        && stacked_log_loss < text_log_loss
        && stacked_log_loss < calibrated_text_log_loss * (1.0 - MIN_LOG_LOSS_GAIN);
    StackingChoice {
        combiner: if kept {
            fitted
        } else {
            StackedFusion::text_only(class_count)
        },
        kept,
        rows,
        text_weighted_f1,
        stacked_weighted_f1,
        text_log_loss,
        stacked_log_loss,
        calibrated_text_log_loss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_bound_is_below_the_observed_precision_and_tightens_with_data() {
        let small = wilson_lower_bound(19, 20, PRECISION_BOUND_Z);
        let large = wilson_lower_bound(1900, 2000, PRECISION_BOUND_Z);
        assert!(
            small < 0.95 && large < 0.95 && small < large,
            "{small} {large}"
        );
        assert!((large - 0.9404).abs() < 0.002, "{large}");
        assert_eq!(wilson_lower_bound(0, 0, PRECISION_BOUND_Z), 0.0);
    }

    #[test]
    fn bounded_threshold_is_stricter_than_the_observed_one() {
        // 200 rows at 0.99 all right, 200 at 0.9 with 185 right, 200 at 0.6 half right: 96% of
        // the 400 most confident are right, but not surely 95%.
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for (confidence, right) in [(0.99f32, 200), (0.9, 185), (0.6, 100)] {
            for i in 0..200 {
                rows.push(vec![confidence, 1.0 - confidence]);
                labels.push(if i < right { 0 } else { 1 });
            }
        }
        let observed = automation_threshold(&rows, &labels, 0.95);
        let bounded = automation_threshold_bounded(&rows, &labels, 0.95, PRECISION_BOUND_Z);
        assert_eq!(observed.threshold, 0.9);
        assert_eq!(bounded.threshold, 0.99);
        assert!((bounded.coverage - 1.0 / 3.0).abs() < 1e-9);
    }

    /// Rows whose text is right 70% of the time; the photo is either informative (right 60% of
    /// the time, independently) or noise.
    fn branch_rows(informative: bool, rows: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<usize>) {
        let k = 5;
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        let (mut text, mut image, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for row in 0..rows {
            let label = row % k;
            let distribution = |accuracy: f64, strength: f32, next: &mut dyn FnMut() -> f64| {
                let target = if next() < accuracy {
                    label
                } else {
                    (next() * k as f64) as usize % k
                };
                let mut p = vec![(1.0 - strength) / (k - 1) as f32; k];
                p[target] = strength;
                p
            };
            text.push(distribution(0.7, 0.6, &mut next));
            image.push(if informative {
                distribution(0.6, 0.5, &mut next)
            } else {
                distribution(0.0, 0.5, &mut next)
            });
            labels.push(label);
        }
        (text, image, labels)
    }

    #[test]
    fn stacking_keeps_an_informative_photo_and_drops_a_useless_one() {
        let options = StackingOptions::default();
        let (text, image, labels) = branch_rows(true, 600);
        let useful = choose_stacked_fusion(&text, &image, &labels, 5, &options);
        assert!(useful.kept, "{useful:?}");
        assert!(useful.stacked_weighted_f1 >= useful.text_weighted_f1);
        assert!(useful.stacked_log_loss < useful.calibrated_text_log_loss);
        assert!(useful.stacked_log_loss < useful.text_log_loss);
        let (text, image, labels) = branch_rows(false, 600);
        let useless = choose_stacked_fusion(&text, &image, &labels, 5, &options);
        assert!(!useless.kept, "{useless:?}");
        assert_eq!(useless.combiner, StackedFusion::text_only(5));
        // The text-only combiner gives the text branch's own answer.
        let combined = useless.combiner.combine(&text[0], &image[0]);
        assert_eq!(argmax(&combined), argmax(&text[0]));
    }

    #[test]
    fn picks_the_weight_that_helps() {
        // Text is right on the first half, image on the second half, and confidently so.
        let mut text = Vec::new();
        let mut image = Vec::new();
        let mut labels = Vec::new();
        for i in 0..40 {
            let label = i % 2;
            labels.push(label);
            let right = |confidence: f32| {
                let mut row = vec![1.0 - confidence; 2];
                row[label] = confidence;
                row
            };
            let wrong = |confidence: f32| {
                let mut row = vec![confidence; 2];
                row[label] = 1.0 - confidence;
                row
            };
            if i < 20 {
                text.push(right(0.9));
                image.push(wrong(0.55));
            } else {
                text.push(wrong(0.55));
                image.push(right(0.9));
            }
        }
        let weight = tune_fusion_weight(&text, &image, &labels, 2);
        assert!((0.3..=0.7).contains(&weight), "weight {weight}");
        let text_only = tune_fusion_weight(&text, &text, &labels, 2);
        assert_eq!(text_only, 0.0);
    }

    #[test]
    fn threshold_reaches_target_precision_with_most_coverage() {
        // Confidence 0.9: 10 right; 0.7: 8 right 2 wrong; 0.5: 5 right 5 wrong.
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        let mut add = |confidence: f32, right: bool| {
            rows.push(vec![confidence, 1.0 - confidence]);
            labels.push(if right { 0 } else { 1 });
        };
        for _ in 0..10 {
            add(0.9, true);
        }
        for i in 0..10 {
            add(0.7, i < 8);
        }
        for i in 0..10 {
            add(0.55, i < 5);
        }
        let choice = automation_threshold(&rows, &labels, 0.9);
        assert_eq!(choice.threshold, 0.7);
        assert!((choice.coverage - 20.0 / 30.0).abs() < 1e-9);
        assert!((choice.precision - 0.9).abs() < 1e-9);
        let strict = automation_threshold(&rows, &labels, 0.99);
        assert_eq!(strict.threshold, 0.9);
        let impossible = automation_threshold(&[vec![0.6, 0.4]], &[1], 0.95);
        assert!(impossible.threshold > 1.0 && impossible.coverage == 0.0);
    }
}
