//! Live comparison of the versions serving traffic (the champion and any canary or shadow) over
//! a recent window, from the prediction log: requests, errors, agreement with the champion,
//! confidence and automatic share, latency percentiles, and, once reviewers' labels have
//! arrived, weighted F1 with a bootstrap confidence interval. The guard rails of a canary are
//! judged on the same figures.

use std::collections::{BTreeMap, HashMap};

use prodcat_catalogue::prediction_log::{
    recent_error_counts, recent_predictions, ServedPrediction,
};
use prodcat_domain::SplitMix64;
use prodcat_registry::{GuardRails, Rollout};
use serde::Serialize;

use crate::platform::Platform;
use crate::PlatformError;

/// At most this many recent predictions are read for one comparison.
const ROW_LIMIT: i64 = 200_000;

/// The figures of one version in one serving role.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServingFigures {
    pub model_version: String,
    /// `champion`, `canary` or `shadow`.
    pub role: String,
    pub requests: usize,
    pub errors: i64,
    pub error_rate: f64,
    /// Share of the paired requests on which this version chose the champion's category
    /// (shadows are paired with the champion's answer to the same request).
    pub agreement: Option<f64>,
    pub paired: usize,
    pub mean_confidence: Option<f64>,
    /// Confidence quartiles (25 %, 50 %, 75 %).
    pub confidence_quartiles: Option<[f64; 3]>,
    pub automatic_share: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Reviewed products among its answers, and its weighted F1 on them.
    pub labelled: usize,
    pub weighted_f1: Option<f64>,
    /// 95 % bootstrap interval of the weighted F1.
    pub weighted_f1_interval: Option<[f64; 2]>,
}

/// The comparison of every version serving in the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveComparison {
    pub since_ms: i64,
    pub until_ms: i64,
    pub versions: Vec<ServingFigures>,
}

impl LiveComparison {
    /// The figures of `role` (the first such version).
    pub fn role(&self, role: &str) -> Option<&ServingFigures> {
        self.versions.iter().find(|figures| figures.role == role)
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[position.min(sorted.len() - 1)]
}

/// Weighted F1 and its 95 % bootstrap interval (200 resamples, seeded) on (predicted, label).
fn f1_with_interval(pairs: &[(i64, i64)]) -> (Option<f64>, Option<[f64; 2]>) {
    let Ok(f1) = prodcat_drift::weighted_f1(pairs) else {
        return (None, None);
    };
    if pairs.len() < 2 {
        return (Some(f1), None);
    }
    let mut random = SplitMix64::new(0x4c49_5645);
    let mut scores: Vec<f64> = (0..200)
        .filter_map(|_| {
            let sample: Vec<(i64, i64)> = (0..pairs.len())
                .map(|_| pairs[(random.next_u64() % pairs.len() as u64) as usize])
                .collect();
            prodcat_drift::weighted_f1(&sample).ok()
        })
        .collect();
    scores.sort_by(f64::total_cmp);
    let interval =
        (!scores.is_empty()).then(|| [quantile(&scores, 0.025), quantile(&scores, 0.975)]);
    (Some(f1), interval)
}

fn figures(
    version: &str,
    role: &str,
    rows: &[&ServedPrediction],
    errors: i64,
    champion_answers: &HashMap<&str, i64>,
) -> ServingFigures {
    let requests = rows.len();
    let mut confidences: Vec<f64> = rows.iter().map(|row| row.confidence).collect();
    confidences.sort_by(f64::total_cmp);
    let mut latencies: Vec<f64> = rows
        .iter()
        .map(|row| row.latency_us as f64 / 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let (mut paired, mut agreed) = (0usize, 0usize);
    if role != "champion" {
        for row in rows {
            let base = row
                .prediction_id
                .as_deref()
                .and_then(|id| id.strip_suffix("-shadow"));
            if let Some(champion) = base.and_then(|id| champion_answers.get(id)) {
                paired += 1;
                agreed += usize::from(*champion == row.predicted_code);
            }
        }
    }
    let labelled: Vec<(i64, i64)> = rows
        .iter()
        .filter_map(|row| Some((row.predicted_code, row.label_code?)))
        .collect();
    let (weighted_f1, weighted_f1_interval) = f1_with_interval(&labelled);
    let attempts = requests as i64 + errors;
    ServingFigures {
        model_version: version.to_string(),
        role: role.to_string(),
        requests,
        errors,
        error_rate: if attempts > 0 {
            errors as f64 / attempts as f64
        } else {
            0.0
        },
        agreement: (paired > 0).then(|| agreed as f64 / paired as f64),
        paired,
        mean_confidence: (!confidences.is_empty())
            .then(|| confidences.iter().sum::<f64>() / confidences.len() as f64),
        confidence_quartiles: (!confidences.is_empty()).then(|| {
            [
                quantile(&confidences, 0.25),
                quantile(&confidences, 0.5),
                quantile(&confidences, 0.75),
            ]
        }),
        automatic_share: (requests > 0)
            .then(|| rows.iter().filter(|row| row.automatic).count() as f64 / requests as f64),
        latency_p50_ms: (!latencies.is_empty()).then(|| quantile(&latencies, 0.5)),
        latency_p99_ms: (!latencies.is_empty()).then(|| quantile(&latencies, 0.99)),
        labelled: labelled.len(),
        weighted_f1,
        weighted_f1_interval,
    }
}

/// Compares every version that served (or failed) from `since_ms` on.
pub async fn compare(platform: &Platform, since_ms: i64) -> Result<LiveComparison, PlatformError> {
    let rows = recent_predictions(&platform.database, since_ms, ROW_LIMIT).await?;
    let errors = recent_error_counts(&platform.database, since_ms).await?;
    let champion_answers: HashMap<&str, i64> = rows
        .iter()
        .filter(|row| row.serving_role == "champion")
        .filter_map(|row| Some((row.prediction_id.as_deref()?, row.predicted_code)))
        .collect();
    let mut groups: BTreeMap<(String, String), Vec<&ServedPrediction>> = BTreeMap::new();
    for row in &rows {
        groups
            .entry((row.serving_role.clone(), row.model_version.clone()))
            .or_default()
            .push(row);
    }
    let mut error_counts: HashMap<(String, String), i64> = HashMap::new();
    for (version, role, count) in errors {
        groups.entry((role.clone(), version.clone())).or_default();
        error_counts.insert((role, version), count);
    }
    let order = |role: &str| match role {
        "champion" => 0,
        "canary" => 1,
        _ => 2,
    };
    let mut versions: Vec<ServingFigures> = groups
        .iter()
        .map(|((role, version), group)| {
            figures(
                version,
                role,
                group,
                error_counts
                    .get(&(role.clone(), version.clone()))
                    .copied()
                    .unwrap_or(0),
                &champion_answers,
            )
        })
        .collect();
    versions.sort_by_key(|figures| (order(&figures.role), std::cmp::Reverse(figures.requests)));
    Ok(LiveComparison {
        since_ms,
        until_ms: prodcat_storage::now_ms(),
        versions,
    })
}

/// Why a canary should be rolled back, with the figures that say so; `None` while it holds.
pub fn guard_verdict(
    rollout: &Rollout,
    guard: &GuardRails,
    comparison: &LiveComparison,
) -> Option<(String, serde_json::Value)> {
    let champion = comparison.role("champion")?;
    let canary = comparison.versions.iter().find(|figures| {
        figures.role == "canary" && figures.model_version == rollout.version.as_str()
    })?;
    let figures =
        serde_json::json!({ "champion": champion, "canary": canary, "guardRails": guard });
    let enough_traffic = |figures: &ServingFigures| {
        figures.requests as i64 + figures.errors >= guard.min_requests as i64
    };
    if enough_traffic(champion) && enough_traffic(canary) {
        if canary.error_rate > champion.error_rate + guard.max_error_rate_increase {
            return Some((
                format!(
                    "canary error rate {:.3} exceeds the champion's {:.3} by more than {:.3}",
                    canary.error_rate, champion.error_rate, guard.max_error_rate_increase
                ),
                figures,
            ));
        }
        if let (Some(canary_p99), Some(champion_p99)) =
            (canary.latency_p99_ms, champion.latency_p99_ms)
        {
            if canary_p99 > champion_p99 * (1.0 + guard.max_p99_increase) + 1.0 {
                return Some((
                    format!(
                        "canary p99 latency {canary_p99:.1} ms exceeds the champion's \
                         {champion_p99:.1} ms by more than {:.0} %",
                        guard.max_p99_increase * 100.0
                    ),
                    figures,
                ));
            }
        }
    }
    if canary.labelled >= guard.min_labels && champion.labelled >= guard.min_labels {
        if let (Some(canary_f1), Some(champion_f1)) = (canary.weighted_f1, champion.weighted_f1) {
            if canary_f1 < champion_f1 - guard.max_f1_drop {
                return Some((
                    format!(
                        "canary weighted F1 {canary_f1:.4} on {} reviewed products is below the \
                         champion's {champion_f1:.4} by more than {:.3}",
                        canary.labelled, guard.max_f1_drop
                    ),
                    figures,
                ));
            }
        }
    }
    None
}
