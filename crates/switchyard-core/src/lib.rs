//! The pure core of Switchyard.
//!
//! Everything here is deterministic domain logic: how a provider failure is classified, when a provider's breaker
//! trips and recovers, how long to wait before a retry or a restart, how duplicate queries are recognised, what a
//! call costs. Nothing in this crate performs I/O, reads a clock or draws a random number: time and randomness
//! come in as arguments, so every rule can be tested exhaustively without a runtime.

pub mod backoff;
pub mod balance;
pub mod breaker;
pub mod cost;
pub mod dedup;
pub mod gate;
pub mod hedge;
pub mod invalid;
pub mod outcome;
pub mod restart;
pub mod retry;
pub mod state;

pub use backoff::Backoff;
pub use balance::{
    BalanceConfigError, BalanceStrategy, Balancer, BalancerConfig, BalancerSnapshot, GroupMember, MemberSnapshot, Pick,
    TieBreak,
};
pub use breaker::{
    Breaker, BreakerConfig, BreakerConfigError, BreakerPhase, BreakerSnapshot, CallOutcome, OperatorAction, Permit,
    Rejected, SlidingWindow, Transition, TransitionReason,
};
pub use cost::Price;
pub use dedup::{DedupLimits, DedupTable, Seen};
pub use gate::{ClusterGate, ClusterPhase, GateDecision, LeaseRenewal};
pub use hedge::{HedgePolicy, LatencyWindow};
pub use invalid::InvalidSetting;
pub use outcome::{FailureClass, Outcome};
pub use restart::{RestartDecision, RestartPolicy, RestartTracker};
pub use retry::{
    FallbackChains, RetryBudget, RetryBudgetConfig, RetryBudgetSnapshot, RetryConfigError, RetryDecision, RetryOn,
    RetryPolicy,
};
pub use state::BreakerState;
