//! Reusable learning pieces of Switchyard's quality routing and cascade verification.
//!
//! Quality routers and cascade verifiers both learn from recorded outcomes (which model answered which prompt how
//! well, at what cost) and are judged by the same metrics. This crate holds what they share, with no runtime and
//! no network: [`dataset`] loaders into one [`dataset::OutcomeTable`] shape, seeded [`split`]s by question id,
//! the deterministic prompt [`features`], a sparse [`logistic`] regression, RouteLLM's [`metrics`] (PGR, APGR,
//! CPT) and SVG [`plot`]s. The only I/O is reading data files and writing model or plot files from explicit
//! entry points.
//!
//! **Architecture invariant:** nothing here reads a clock, draws unseeded randomness or uses `std`'s randomly
//! seeded hashers for anything that reaches a feature index or a split; a saved model reproduces its features on
//! any machine.

pub mod dataset;
pub mod error;
pub mod features;
pub mod hash;
pub mod logistic;
pub mod metrics;
pub mod plot;
pub mod split;

pub use dataset::{ModelInfo, OutcomeTable, Price, QueryRecord};
pub use error::{LearnError, Result};
pub use features::{FeatureConfig, FeatureGroup, FeatureScratch, Featurizer, PromptStats, SparseVec};
pub use logistic::{LogisticModel, TrainConfig, TrainSummary};
pub use metrics::{BinaryCurve, BinaryOutcome, CostQualityPoint, CurvePoint};
pub use split::Split;
