//! Quality routing: choose the model per query before any call.
//!
//! This crate is the decision code of issue 8, shared by the runtime's router and by `switchyard eval router`, so
//! both run the very same functions: the [`rules`] router (length, keywords, regexes, message count, system
//! prompt, metadata; first match wins), the [`learned`] routers (binary weak/strong and N-way, featurizer plus
//! logistic models trained offline), [`calibrate`]d thresholds, the out-of-distribution guard and the
//! [`drift`] monitor, the [`Decision`] a trace shows, and the offline [`train`] and [`eval`] procedures with
//! their file-level [`entry`] points. Nothing here performs network I/O or needs a runtime; the only I/O is in
//! the entry points, which read data and write model, report and plot files.

pub mod calibrate;
pub mod decision;
pub mod drift;
pub mod ensemble;
pub mod entry;
pub mod error;
pub mod eval;
pub mod learned;
pub mod query;
pub mod rules;
pub mod train;

pub use decision::{Decision, Reason};
pub use drift::{DriftMonitor, DriftReport, DriftStatus, OodGuard, QuerySignals};
pub use error::{QualityError, Result};
pub use learned::{BinaryRouter, LearnedRouter, NWayRouter, RouterFile, RouterScratch};
pub use query::{LiveView, Objective, QueryInput};
pub use rules::{RuleRouter, RuleRouterConfig};
