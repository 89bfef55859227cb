//! The replay of a week: its traffic classified through the predictor (as live traffic is),
//! written to the prediction log and the catalogue with the simulated reviewers' labels, and
//! scored against the true labels.

use std::collections::HashSet;

use bytes::Bytes;
use prodcat_catalogue::prediction_log::write_prediction_log;
use prodcat_catalogue::products::{
    insert_if_absent, insert_review_decisions, RecordedDecision, StoredProduct,
};
use prodcat_catalogue::{PredictionLogRow, PredictionSource, ProductStatus};
use prodcat_domain::{CategoryCode, ContentHash};
use prodcat_drift::weighted_f1;
use prodcat_platform::{LogMode, Platform, Predictor, ProductToClassify, Requester};
use prodcat_storage::image_key;

use super::traffic::{ItemKind, Served};
use crate::window::DAY_MS;
use crate::PipelineError;

pub(super) struct Prediction {
    pub(super) code: u16,
    /// The row the prediction log gets (time, source, product and label set when logged).
    pub(super) log: PredictionLogRow,
}

/// Classifies the week's traffic through the predictor, as live traffic is classified.
pub(super) async fn predict_all(
    predictor: &Predictor,
    items: &[Served],
) -> Vec<Option<Prediction>> {
    let products: Vec<ProductToClassify> = items
        .iter()
        .map(|item| ProductToClassify {
            designation: item.product.designation.clone(),
            description: item.product.description.clone(),
            // A model without an image branch still reads the photo's statistics for the log.
            image: item.image_bytes.clone().map(Bytes::from),
            explain: false,
        })
        .collect();
    let requesters: Vec<Requester> = items
        .iter()
        .map(|item| {
            Requester::new(PredictionSource::Simulation)
                .client("simulation")
                .product(item.product.product_id)
        })
        .collect();
    match predictor
        .predict_batch(products, &requesters, LogMode::Caller)
        .await
    {
        Ok(results) => results
            .into_iter()
            .map(|result| {
                let predicted = result.ok()?;
                Some(Prediction {
                    code: predicted.prediction.category.value(),
                    log: predicted.log,
                })
            })
            .collect(),
        Err(_) => items.iter().map(|_| None).collect(),
    }
}

fn f1_of(pairs: &[(u16, u16)]) -> Option<f64> {
    weighted_f1(pairs).ok()
}

/// Writes the week's traffic to the prediction log and the catalogue, and the reviewers' labels.
pub(super) async fn log_week(
    platform: &Platform,
    items: &[Served],
    predictions: &[Option<Prediction>],
    reviewed: &HashSet<usize>,
    week_end: i64,
) -> Result<(), PipelineError> {
    let database = &platform.database;
    for item in items {
        if let (Some(hash), Some(bytes)) = (&item.image_hash, &item.image_bytes) {
            let key = image_key(&ContentHash::parse(hash)?);
            platform
                .objects
                .put_if_absent(&key, Bytes::from(bytes.clone()))
                .await?;
        }
    }
    let mut log_rows = Vec::new();
    let mut products = Vec::new();
    let mut decisions = Vec::new();
    for (index, (item, prediction)) in items.iter().zip(predictions).enumerate() {
        let Some(prediction) = prediction else {
            continue;
        };
        let labelled = reviewed.contains(&index);
        let label = item.product.category;
        let labelled_at = (item.at_ms + DAY_MS).min(week_end - 1);
        let predicted = CategoryCode::from_u16(prediction.code)?;
        let mut row = prediction.log.clone();
        row.at_ms = item.at_ms;
        row.label_code = labelled.then(|| i64::from(label.value()));
        row.labelled_at_ms = labelled.then_some(labelled_at);
        products.push(StoredProduct {
            id: item.product.product_id,
            designation: item.product.designation.clone(),
            description: item.product.description.clone(),
            image_hash: item.image_hash.clone(),
            status: if labelled {
                ProductStatus::Reviewed
            } else if row.automatic {
                ProductStatus::Classified
            } else {
                ProductStatus::Review
            },
            predicted_code: Some(predicted),
            confidence: Some(row.confidence),
            model_version: Some(row.model_version.clone()),
            category_code: Some(if labelled { label } else { predicted }),
            at_ms: item.at_ms,
            created_by: "simulation".to_string(),
        });
        if labelled {
            decisions.push(RecordedDecision {
                product_id: item.product.product_id,
                decision: if label == predicted {
                    "confirmed"
                } else {
                    "corrected"
                }
                .to_string(),
                category: label,
                previous: Some(predicted),
                reviewer: "simulated-reviewer".to_string(),
                at_ms: labelled_at,
            });
        }
        log_rows.push(row);
    }
    write_prediction_log(database, &log_rows).await?;
    insert_if_absent(database, &products).await?;
    insert_review_decisions(database, &decisions).await?;
    Ok(())
}

/// Weighted F1 of a week's predictions against the true labels.
pub(super) struct WeekScores {
    pub(super) weighted_f1: f64,
    pub(super) weighted_f1_clean: Option<f64>,
    pub(super) weighted_f1_drifted: Option<f64>,
    /// What the first champion scored on the same traffic (no retraining).
    pub(super) without_retraining_f1: f64,
}

impl WeekScores {
    pub(super) fn of(
        items: &[Served],
        predictions: &[Option<Prediction>],
        baseline: Option<&[Option<Prediction>]>,
    ) -> Self {
        let pairs_of = |predictions: &[Option<Prediction>], keep: &dyn Fn(ItemKind) -> bool| {
            items
                .iter()
                .zip(predictions)
                .filter(|(item, _)| keep(item.kind))
                .filter_map(|(item, p)| Some((p.as_ref()?.code, item.product.category.value())))
                .collect::<Vec<(u16, u16)>>()
        };
        let weighted_f1 = f1_of(&pairs_of(predictions, &|_| true)).unwrap_or(0.0);
        Self {
            weighted_f1,
            weighted_f1_clean: f1_of(&pairs_of(predictions, &|k| k == ItemKind::Clean)),
            weighted_f1_drifted: f1_of(&pairs_of(predictions, &|k| k != ItemKind::Clean)),
            without_retraining_f1: match baseline {
                Some(baseline) => f1_of(&pairs_of(baseline, &|_| true)).unwrap_or(0.0),
                None => weighted_f1,
            },
        }
    }
}
