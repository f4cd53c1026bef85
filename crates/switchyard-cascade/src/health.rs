//! Escalation-rate health, cost maths and latency tails.
