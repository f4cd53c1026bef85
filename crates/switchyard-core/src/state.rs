//! The one name of a breaker's state.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A breaker's state by name: the vocabulary of a node's own breaker ([`crate::BreakerPhase`]), of its copy of the
/// cluster's breaker ([`crate::ClusterPhase`]), of the shared store, of breaker events and of the admin topic. The
/// phases add what only a node's clock can say: until when an open breaker stays open.
///
/// The cluster's breaker is never `MetricsOnly`, which is a mode of a node's own breaker (operators switch the
/// cluster's breaker off with `Disabled`); the shared store refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow; their outcomes count toward a trip.
    Closed,
    /// Calls are refused until the open interval ends; then probes decide.
    Open,
    /// Probes are out; everyone else is refused.
    HalfOpen,
    /// An operator opened the breaker; only a reset closes it.
    ForcedOpen,
    /// An operator switched the breaker off: calls always flow.
    Disabled,
    /// A node's own breaker admits everything and only reports the trips it would make.
    MetricsOnly,
}

impl BreakerState {
    /// The stable lowercase name, as stored in Redis, sent in events and shown in admin replies and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::Disabled => "disabled",
            BreakerState::MetricsOnly => "metrics_only",
        }
    }

    /// The state named `name` (see [`BreakerState::as_str`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "closed" => BreakerState::Closed,
            "open" => BreakerState::Open,
            "half_open" => BreakerState::HalfOpen,
            "forced_open" => BreakerState::ForcedOpen,
            "disabled" => BreakerState::Disabled,
            "metrics_only" => BreakerState::MetricsOnly,
            _ => return None,
        })
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_match_the_wire_form() {
        use BreakerState::*;
        for state in [Closed, Open, HalfOpen, ForcedOpen, Disabled, MetricsOnly] {
            assert_eq!(BreakerState::from_name(state.as_str()), Some(state));
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{state}\""));
            assert_eq!(serde_json::from_str::<BreakerState>(&json).unwrap(), state);
        }
        assert_eq!(BreakerState::from_name("Open"), None);
    }
}
