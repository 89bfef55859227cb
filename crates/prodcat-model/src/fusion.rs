//! Late fusion and automation: the image weight that maximises weighted F1 on validation data,
//! and the confidence threshold that keeps automatic decisions at a target precision.

use serde::Serialize;

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
/// given rows, maximising coverage. When no threshold reaches it, nothing is automatic.
pub fn automation_threshold(
    probabilities: &[Vec<f32>],
    labels: &[usize],
    target_precision: f64,
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
    let never = ThresholdChoice {
        threshold: 1.0 + f32::EPSILON,
        coverage: 0.0,
        precision: 0.0,
    };
    let mut correct = 0usize;
    let mut choice = never;
    let mut index = 0;
    while index < scored.len() {
        // Rows with equal confidence are accepted or refused together.
        let confidence = scored[index].0;
        while index < scored.len() && scored[index].0 == confidence {
            correct += usize::from(scored[index].1);
            index += 1;
        }
        let precision = correct as f64 / index as f64;
        if precision >= target_precision {
            choice = ThresholdChoice {
                threshold: confidence,
                coverage: index as f64 / scored.len() as f64,
                precision,
            };
        }
    }
    choice
}

#[cfg(test)]
mod tests {
    use super::*;

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
