//! The pure part of the escalation counters.
