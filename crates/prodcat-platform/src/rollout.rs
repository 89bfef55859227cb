//! The live rollouts as the predictor applies them: which version answers a request (the
//! champion, or the canary for its share, sticky per product or client), and whether a shadow
//! scores a copy of it. The rollouts are read from the registry (every replica reads the same)
//! and their models loaded through the platform's cache; a refresh swaps them atomically.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use prodcat_catalogue::prediction_log::ServingRole;
use prodcat_registry::{Rollout, RolloutKind, Stickiness};
use sha2::{Digest, Sha256};

use crate::model_service::ServedModel;
use crate::platform::Platform;
use crate::predictor::Requester;
use crate::PlatformError;

/// A rollout with its model loaded.
#[derive(Debug)]
pub struct LiveRollout {
    pub rollout: Rollout,
    pub model: Arc<ServedModel>,
}

/// The rollouts in force in this process.
#[derive(Debug, Default)]
pub struct RolloutRouter {
    canary: ArcSwapOption<LiveRollout>,
    shadow: ArcSwapOption<LiveRollout>,
}

/// Where in `[0, 1)` a key falls for a rollout: the same key always falls at the same place,
/// so a product (or a client) stays with the same version while the share does not change.
pub fn bucket(kind: RolloutKind, key: &str) -> f64 {
    let digest = Sha256::digest(format!("{}\u{1f}{key}", kind.as_str()).as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The key a requester is kept sticky by.
fn sticky_key(stickiness: Stickiness, requester: &Requester, fallback: &str) -> String {
    match (
        stickiness,
        requester.product_id.or(requester.claimed_product),
        &requester.client,
    ) {
        (Stickiness::Product, Some(product), _) => format!("product:{product}"),
        (_, _, Some(client)) => format!("client:{client}"),
        _ => format!("request:{fallback}"),
    }
}

impl RolloutRouter {
    /// The canary in force, if any.
    pub fn canary(&self) -> Option<Arc<LiveRollout>> {
        self.canary.load_full()
    }

    /// The shadow in force, if any.
    pub fn shadow(&self) -> Option<Arc<LiveRollout>> {
        self.shadow.load_full()
    }

    /// The model that answers this request and the role it plays.
    pub fn answering(
        &self,
        champion: &Arc<ServedModel>,
        requester: &Requester,
        request_key: &str,
    ) -> (Arc<ServedModel>, ServingRole) {
        if let Some(canary) = self.canary() {
            let key = sticky_key(canary.rollout.stickiness, requester, request_key);
            if bucket(RolloutKind::Canary, &key) < canary.rollout.share {
                return (canary.model.clone(), ServingRole::Canary);
            }
        }
        (champion.clone(), ServingRole::Champion)
    }

    /// The shadow model that scores a copy of this request, when it falls in the shadow's share.
    pub fn shadowing(&self, requester: &Requester, request_key: &str) -> Option<Arc<ServedModel>> {
        let shadow = self.shadow()?;
        let key = sticky_key(shadow.rollout.stickiness, requester, request_key);
        (bucket(RolloutKind::Shadow, &key) < shadow.rollout.share).then(|| shadow.model.clone())
    }

    /// Reads the rollouts from the registry and loads their models; a version that fails to
    /// load leaves its rollout out (and is logged) rather than failing requests.
    pub async fn refresh(&self, platform: &Platform) -> Result<(), PlatformError> {
        let rollouts = prodcat_registry::active_rollouts(&platform.database).await?;
        for kind in [RolloutKind::Canary, RolloutKind::Shadow] {
            let slot = match kind {
                RolloutKind::Canary => &self.canary,
                RolloutKind::Shadow => &self.shadow,
            };
            let wanted = rollouts.iter().find(|rollout| rollout.kind == kind);
            let current = slot.load_full();
            let Some(wanted) = wanted else {
                if current.is_some() {
                    tracing::info!(rollout = kind.as_str(), "rollout ended");
                    slot.store(None);
                }
                continue;
            };
            if current.as_ref().is_some_and(|live| live.rollout == *wanted) {
                continue;
            }
            let model = match current.as_ref() {
                Some(live) if live.rollout.version == wanted.version => live.model.clone(),
                _ => match self.load(platform, wanted).await {
                    Ok(model) => model,
                    Err(error) => {
                        tracing::error!(rollout = kind.as_str(), version = %wanted.version, %error, "the rollout's version failed to load; it is not applied");
                        slot.store(None);
                        continue;
                    }
                },
            };
            tracing::info!(rollout = kind.as_str(), version = %wanted.version, share = wanted.share, "rollout applied");
            slot.store(Some(Arc::new(LiveRollout {
                rollout: wanted.clone(),
                model,
            })));
        }
        Ok(())
    }

    async fn load(
        &self,
        platform: &Platform,
        rollout: &Rollout,
    ) -> Result<Arc<ServedModel>, PlatformError> {
        let version = prodcat_registry::get_version(&platform.database, &rollout.version).await?;
        let classifier = platform.classifier_for(&version).await?;
        Ok(Arc::new(ServedModel {
            version: classifier.version().clone(),
            classifier,
            loaded_at_ms: prodcat_storage::now_ms(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(
            bucket(RolloutKind::Canary, "product:7"),
            bucket(RolloutKind::Canary, "product:7")
        );
        let below = (0..10_000)
            .filter(|i| bucket(RolloutKind::Canary, &format!("product:{i}")) < 0.1)
            .count();
        assert!((800..1200).contains(&below), "{below}");
        // Shadow and canary shares are drawn independently.
        let both = (0..10_000)
            .filter(|i| {
                let key = format!("product:{i}");
                bucket(RolloutKind::Canary, &key) < 0.5 && bucket(RolloutKind::Shadow, &key) < 0.5
            })
            .count();
        assert!((2_200..2_800).contains(&both), "{both}");
    }
}
