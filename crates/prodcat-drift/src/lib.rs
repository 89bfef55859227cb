//! Drift detection for prodcat.
//!
//! A [`Profile`] describes a dataset by named columns of four kinds (numeric, categorical,
//! binary, text), kept to a bounded deterministic sample so it can be stored with each model
//! version. [`detect_drift`] compares a current profile with the reference one column by
//! column, choosing each test the way Evidently 0.7.23 chooses its defaults (K-S, chi-square
//! and Z-tests for references of up to 1,000 rows; normed Wasserstein and Jensen-Shannon
//! above; a TF-IDF domain classifier for text; PSI on request), and produces a
//! [`DriftReport`] that renders as JSON, as a self-contained HTML page and as gauge values.
//! [`concept_drift`] compares weighted F1 on recently reviewed predictions with the
//! reference F1. The [`features`] module computes the per-product features profiles hold.
//!
//! This crate is pure computation: no storage, no network.

pub mod concept;
pub mod drift;
pub mod error;
pub mod features;
pub mod html;
pub mod kolmogorov;
pub mod profile;
pub mod report;
pub mod rng;
pub mod special;
pub mod stattest;
pub mod text_drift;

pub use concept::{concept_drift, weighted_f1, ConceptDriftResult};
pub use drift::{detect_drift, select_test, test_column, DriftOptions, SMALL_REFERENCE_ROWS};
pub use error::{DriftError, Result};
pub use kolmogorov::{two_sample_ks, KolmogorovMethod, KolmogorovSmirnov};
pub use profile::{
    ColumnKind, ColumnSpec, ColumnValues, Profile, ProfileBuilder, ProfileColumn, Value,
    DEFAULT_PROFILE_ROWS,
};
pub use report::{ColumnDrift, ColumnSummary, DriftReport, Histogram, TextDriftDetails};
pub use stattest::{ScoreKind, StatTestKind};
pub use text_drift::{domain_classifier_drift, TextDriftMode, TextDriftOutcome};
