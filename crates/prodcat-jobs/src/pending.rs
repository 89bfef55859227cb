//! Products waiting for a model: catalogue products stored `pending` (no model was in service,
//! or the model could not look at their photo) are classified later by whichever process runs
//! this (the HTTP service, a worker).
//!
//! Each product is its own unit of work: a product whose image object is missing, or whose
//! classification keeps failing, gets its error recorded and a later attempt with exponential
//! backoff, up to a cap after which it waits for a new model or a change of the product; the
//! others are classified meanwhile. The classification and its prediction-log row are stored in
//! one transaction that applies only while the product is still pending, so two processes doing
//! this at once classify each product once.

use std::time::Duration;

use prodcat_catalogue::products::{
    apply_pending_classification, pending_products, product_image, record_classify_failure,
};
use prodcat_catalogue::{Classification, PredictionSource, Product};
use prodcat_platform::{LogMode, PredictError, Predictor, ProductToClassify, Requester};
use prodcat_storage::now_ms;

use crate::JobError;

/// How failures of pending products are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingPolicy {
    /// Products looked at in one pass.
    pub batch_size: i64,
    /// Attempts before automatic retries stop (until a new model or a change).
    pub max_attempts: i64,
    /// Wait after the first failure; doubled after each further one.
    pub first_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for PendingPolicy {
    fn default() -> Self {
        Self {
            batch_size: 64,
            max_attempts: 8,
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3_600),
        }
    }
}

impl PendingPolicy {
    /// When to try again after the `attempt`-th failure (1-based), or `None` to stop.
    pub fn next_attempt_at_ms(&self, attempt: i64, now_ms: i64) -> Option<i64> {
        if attempt >= self.max_attempts {
            return None;
        }
        let factor = 1u32 << attempt.clamp(1, 20).saturating_sub(1) as u32;
        let wait = self
            .first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        Some(now_ms + wait.as_millis() as i64)
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingReport {
    /// Products looked at.
    pub seen: usize,
    pub classified: usize,
    pub failed: usize,
}

/// Reads a pending product's image; a missing or unreadable object is this product's failure.
async fn image_of(
    predictor: &Predictor,
    product: &Product,
) -> Result<Option<bytes::Bytes>, String> {
    product_image(&predictor.models().platform().objects, product)
        .await
        .map_err(|error| format!("the product's image could not be read: {error}"))
}

/// Classifies one pass of due pending products with the model in service.
pub async fn classify_pending(
    predictor: &Predictor,
    policy: &PendingPolicy,
) -> Result<PendingReport, JobError> {
    let model = match predictor.served() {
        Ok(model) => model,
        Err(_) => return Ok(PendingReport::default()),
    };
    let database = &predictor.models().platform().database;
    let products = pending_products(database, policy.batch_size).await?;
    let mut report = PendingReport {
        seen: products.len(),
        ..PendingReport::default()
    };
    for product in &products {
        let outcome = match image_of(predictor, product).await {
            Ok(image) => predictor
                .predict_with(
                    &model,
                    ProductToClassify {
                        designation: product.designation.clone(),
                        description: product.description.clone(),
                        image,
                        explain: false,
                    },
                    &Requester::new(PredictionSource::Product).product(product.id),
                    LogMode::Caller,
                )
                .await
                .map_err(|error: PredictError| error.to_string()),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(predicted) => {
                let classification = Classification::of(&predicted.prediction);
                if apply_pending_classification(
                    database,
                    product.id,
                    &classification,
                    &predicted.log,
                )
                .await?
                {
                    report.classified += 1;
                }
            }
            Err(error) => {
                report.failed += 1;
                let attempt = product.classify_attempts + 1;
                let next = policy.next_attempt_at_ms(attempt, now_ms());
                tracing::warn!(
                    product = product.id,
                    attempt,
                    %error,
                    gave_up = next.is_none(),
                    "a pending product could not be classified"
                );
                record_classify_failure(database, product.id, &error, next).await?;
            }
        }
    }
    if report.classified > 0 {
        tracing::info!(
            classified = report.classified,
            "pending products classified"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_then_stops() {
        let policy = PendingPolicy {
            batch_size: 10,
            max_attempts: 5,
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
        };
        assert_eq!(policy.next_attempt_at_ms(1, 0), Some(5_000));
        assert_eq!(policy.next_attempt_at_ms(2, 0), Some(10_000));
        assert_eq!(policy.next_attempt_at_ms(3, 0), Some(20_000));
        assert_eq!(policy.next_attempt_at_ms(4, 0), Some(30_000));
        assert_eq!(policy.next_attempt_at_ms(5, 0), None);
    }
}
