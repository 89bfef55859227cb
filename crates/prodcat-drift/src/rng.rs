//! The deterministic pseudo-random generator drift detection samples with: SplitMix64, shared
//! with the rest of prodcat through `prodcat-domain`.

pub use prodcat_domain::SplitMix64;
