//! The Lua scripts, one per transition, each with a versioned name. A script's text starts with its name
//! (`-- switchyard_breaker_report_v1`), so it is recognisable in `SCRIPT`, `SLOWLOG` and `MONITOR` output.
//! Changing a script's behaviour means a new version in its name, since nodes of two releases may share a
//! Redis during a rolling upgrade.

/// A named Lua script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LuaScript {
    /// The versioned name, such as `switchyard_breaker_report_v1`.
    pub name: &'static str,
    /// The full source sent to Redis: the name, the shared prelude, the script's body.
    pub source: &'static str,
}

macro_rules! lua {
    ($name:literal, $file:literal) => {
        LuaScript {
            name: $name,
            source: concat!("-- ", $name, "\n", include_str!("../scripts/common.lua"), include_str!($file)),
        }
    };
}

/// Adds a batch of outcomes and decides a cluster trip.
pub const REPORT: LuaScript = lua!("switchyard_breaker_report_v1", "../scripts/report.lua");
/// Opens or extends a 429 cooldown.
pub const RATE_LIMITED: LuaScript = lua!("switchyard_breaker_rate_limited_v1", "../scripts/rate_limited.lua");
/// Grants the half-open probe lease to one node.
pub const ACQUIRE_PROBE: LuaScript = lua!("switchyard_breaker_acquire_probe_v1", "../scripts/acquire_probe.lua");
/// Closes or re-opens after the probe.
pub const PROBE_RESULT: LuaScript = lua!("switchyard_breaker_probe_result_v1", "../scripts/probe_result.lua");
/// Operator commands: force_open, disable, reset.
pub const COMMAND: LuaScript = lua!("switchyard_breaker_command_v1", "../scripts/command.lua");
/// Reads a breaker with Redis `TIME`.
pub const GET: LuaScript = lua!("switchyard_breaker_get_v1", "../scripts/get.lua");
/// Adds escalation counts to the current time bucket.
pub const ESCALATION_ADD: LuaScript = lua!("switchyard_escalation_add_v1", "../scripts/escalation_add.lua");
/// Sums escalation counts over a window.
pub const ESCALATION_RATE: LuaScript = lua!("switchyard_escalation_rate_v1", "../scripts/escalation_rate.lua");

/// Claims an idempotency key bound to a fingerprint, or takes it over from a dead owner (no breaker prelude: it
/// reads no time and returns no breaker; expiries are Redis `PX`).
pub const IDEMPOTENCY_CLAIM: LuaScript = LuaScript {
    name: "switchyard_idempotency_claim_v2",
    source: concat!("-- switchyard_idempotency_claim_v2\n", include_str!("../scripts/idempotency_claim.lua")),
};

/// Stores an idempotency key's answer for its retention.
pub const IDEMPOTENCY_COMPLETE: LuaScript = LuaScript {
    name: "switchyard_idempotency_complete_v1",
    source: concat!("-- switchyard_idempotency_complete_v1\n", include_str!("../scripts/idempotency_complete.lua")),
};

/// Every script, for tooling that preloads or inspects them.
pub const ALL: [LuaScript; 10] = [
    REPORT,
    RATE_LIMITED,
    ACQUIRE_PROBE,
    PROBE_RESULT,
    COMMAND,
    GET,
    ESCALATION_ADD,
    ESCALATION_RATE,
    IDEMPOTENCY_CLAIM,
    IDEMPOTENCY_COMPLETE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_is_named_and_versioned() {
        for script in ALL {
            let version = script.name.rsplit_once("_v").and_then(|(_, v)| v.parse::<u32>().ok());
            assert!(script.name.starts_with("switchyard_") && version.is_some(), "{}", script.name);
            assert!(script.source.starts_with(&format!("-- {}\n", script.name)));
        }
        let names: std::collections::BTreeSet<_> = ALL.iter().map(|script| script.name).collect();
        assert_eq!(names.len(), ALL.len());
    }
}
