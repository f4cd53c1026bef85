//! The one error every configuration check of the core returns: which setting, of which component, and why.

use std::fmt;

/// A setting a component cannot work with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSetting {
    /// `breaker`, `retry`, `balancer`.
    pub component: &'static str,
    /// The field, as named in its struct (`open_wait.max`, `max_attempts`, `members.weight`, …).
    pub field: &'static str,
    /// Why the value was refused.
    pub reason: &'static str,
}

impl fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} config: {} {}", self.component, self.field, self.reason)
    }
}

impl std::error::Error for InvalidSetting {}
