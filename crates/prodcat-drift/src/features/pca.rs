//! Principal components of embeddings, so an embedding distribution can be profiled as a few
//! numeric columns: fitted on the reference embeddings by deterministic power iteration with
//! deflation (never forming the covariance matrix), then applied to current embeddings.

use serde::{Deserialize, Serialize};

use crate::error::{DriftError, Result};
use crate::rng::SplitMix64;

const MAX_ITERATIONS: usize = 1000;
const TOLERANCE: f64 = 1e-10;

/// A fitted projection onto the leading principal components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pca {
    /// Mean of the reference embeddings.
    pub mean: Vec<f64>,
    /// Unit-length components, one per row; the largest coordinate of each is positive.
    pub components: Vec<Vec<f64>>,
    /// Variance of the reference data along each component.
    pub explained_variance: Vec<f64>,
}

impl Pca {
    /// Fits `count` components to `rows` (all of the same dimension, at least two rows).
    pub fn fit(rows: &[Vec<f64>], count: usize) -> Result<Self> {
        let dimension = rows.first().map(Vec::len).unwrap_or(0);
        if rows.len() < 2 || dimension == 0 {
            return Err(DriftError::InvalidInput(format!(
                "PCA needs at least two non-empty embeddings, got {} of dimension {dimension}",
                rows.len()
            )));
        }
        if let Some((index, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != dimension) {
            return Err(DriftError::InvalidInput(format!(
                "embedding {index} has dimension {} instead of {dimension}",
                row.len()
            )));
        }
        if rows.iter().flatten().any(|v| !v.is_finite()) {
            return Err(DriftError::InvalidInput(
                "embeddings contain NaN or infinite values".into(),
            ));
        }
        if count == 0 || count > dimension {
            return Err(DriftError::InvalidSetting {
                setting: "PCA components",
                reason: format!("{count} is not within 1..={dimension}"),
            });
        }
        let n = rows.len() as f64;
        let mut mean = vec![0.0; dimension];
        for row in rows {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let centred: Vec<Vec<f64>> = rows
            .iter()
            .map(|row| row.iter().zip(&mean).map(|(v, m)| v - m).collect())
            .collect();

        let mut rng = SplitMix64::new(0x0050_4341);
        let mut components: Vec<Vec<f64>> = Vec::with_capacity(count);
        let mut explained_variance = Vec::with_capacity(count);
        for _ in 0..count {
            let mut vector: Vec<f64> = (0..dimension).map(|_| rng.next_gaussian()).collect();
            orthogonalise(&mut vector, &components);
            normalise(&mut vector);
            let mut eigenvalue = 0.0;
            for _ in 0..MAX_ITERATIONS {
                let mut next = covariance_times(&centred, &vector, n);
                orthogonalise(&mut next, &components);
                eigenvalue = norm(&next);
                if eigenvalue <= f64::EPSILON {
                    break;
                }
                next.iter_mut().for_each(|v| *v /= eigenvalue);
                let change: f64 = next
                    .iter()
                    .zip(&vector)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                vector = next;
                if change < TOLERANCE {
                    break;
                }
            }
            if let Some(largest) = vector
                .iter()
                .copied()
                .max_by(|a, b| a.abs().total_cmp(&b.abs()))
            {
                if largest < 0.0 {
                    vector.iter_mut().for_each(|v| *v = -*v);
                }
            }
            components.push(vector);
            explained_variance.push(eigenvalue.max(0.0));
        }
        Ok(Self {
            mean,
            components,
            explained_variance,
        })
    }

    /// Coordinates of `row` along the components.
    pub fn project(&self, row: &[f64]) -> Result<Vec<f64>> {
        if row.len() != self.mean.len() {
            return Err(DriftError::InvalidInput(format!(
                "embedding of dimension {} does not fit a PCA fitted on dimension {}",
                row.len(),
                self.mean.len()
            )));
        }
        Ok(self
            .components
            .iter()
            .map(|component| {
                component
                    .iter()
                    .zip(row.iter().zip(&self.mean))
                    .map(|(c, (v, m))| c * (v - m))
                    .sum()
            })
            .collect())
    }
}

fn covariance_times(centred: &[Vec<f64>], vector: &[f64], n: f64) -> Vec<f64> {
    let mut out = vec![0.0; vector.len()];
    for row in centred {
        let dot: f64 = row.iter().zip(vector).map(|(a, b)| a * b).sum();
        for (o, r) in out.iter_mut().zip(row) {
            *o += dot * r;
        }
    }
    out.iter_mut().for_each(|o| *o /= n);
    out
}

fn orthogonalise(vector: &mut [f64], basis: &[Vec<f64>]) {
    for component in basis {
        let dot: f64 = vector.iter().zip(component).map(|(a, b)| a * b).sum();
        for (v, c) in vector.iter_mut().zip(component) {
            *v -= dot * c;
        }
    }
}

fn norm(vector: &[f64]) -> f64 {
    vector.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn normalise(vector: &mut [f64]) {
    let length = norm(vector);
    if length > 0.0 {
        vector.iter_mut().for_each(|v| *v /= length);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_axes_of_an_anisotropic_cloud() {
        let mut rng = SplitMix64::new(7);
        // Variance 9 along (1, 1)/√2, 1 along (1, -1)/√2, 0.01 along z.
        let rows: Vec<Vec<f64>> = (0..4000)
            .map(|_| {
                let (a, b, c) = (
                    3.0 * rng.next_gaussian(),
                    rng.next_gaussian(),
                    0.1 * rng.next_gaussian(),
                );
                let s = std::f64::consts::FRAC_1_SQRT_2;
                vec![s * (a + b) + 5.0, s * (a - b) - 2.0, c]
            })
            .collect();
        let pca = Pca::fit(&rows, 2).unwrap();
        let s = std::f64::consts::FRAC_1_SQRT_2;
        assert!((pca.components[0][0] - s).abs() < 0.02 && (pca.components[0][1] - s).abs() < 0.02);
        assert!((pca.components[1][0].abs() - s).abs() < 0.02 && pca.components[1][2].abs() < 0.02);
        assert!((pca.explained_variance[0] - 9.0).abs() < 0.6);
        assert!((pca.explained_variance[1] - 1.0).abs() < 0.1);
        let dot: f64 = pca.components[0]
            .iter()
            .zip(&pca.components[1])
            .map(|(a, b)| a * b)
            .sum();
        assert!(dot.abs() < 1e-8);
        assert_eq!(pca, Pca::fit(&rows, 2).unwrap());
        let projected = pca.project(&[5.0, -2.0, 0.0]).unwrap();
        assert!(projected.iter().all(|v| v.abs() < 0.2), "{projected:?}");
        assert!(pca.project(&[1.0]).is_err());
    }
}
