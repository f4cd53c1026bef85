//! The Lua scripts, one per transition, each with a versioned name. A script's text starts with its name
//! (`-- switchyard_breaker_report_v1`), so it is recognisable in `SCRIPT`, `SLOWLOG` and `MONITOR` output.
//! The `closed_epoch` field of the breaker hash (the epoch of the last close) is written by the v2 close scripts
//! (`probe_result`, `command`) and read by `rate_limited_v2`; a hash without it reads as 0, so a breaker last
//! closed by a v1 script simply treats every cooldown as fresh, as v1 did.
//! Changing a script's behaviour means a new version in its name, since nodes of two releases may share a
//! Redis during a rolling upgrade.
//!
//! Redis Cluster: every key a script touches is in its `KEYS` and carries one hash tag (a provider's or a
//! cascade's), so the script runs on one slot; no key name is built inside Lua. The v3 breaker scripts (`report`,
//! `probe_result`, `command`) and the v2 escalation scripts keep time buckets as fields of one hash per provider
//! (or cascade stage) instead of one key per second, which v2 and v1 derived from `KEYS[1]` and the script's clock.
//! Nodes of a release before v3 count outcomes in the old keys, so during a rolling upgrade the two halves of the
//! cluster see each other's breaker states and commands but not each other's outcome counts.

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

/// Adds a batch of outcomes and decides a cluster trip (v3: buckets are fields of one hash, nodes a sorted set).
pub const REPORT: LuaScript = lua!("switchyard_breaker_report_v3", "../scripts/report.lua");
/// Opens or extends a 429 cooldown, unless it was observed before the breaker last closed (v2: takes the epoch).
pub const RATE_LIMITED: LuaScript = lua!("switchyard_breaker_rate_limited_v2", "../scripts/rate_limited.lua");
/// Grants the half-open probe lease to one node.
pub const ACQUIRE_PROBE: LuaScript = lua!("switchyard_breaker_acquire_probe_v1", "../scripts/acquire_probe.lua");
/// Renews the probe lease of its owner while the probe runs.
pub const RENEW_PROBE: LuaScript = lua!("switchyard_breaker_renew_probe_v1", "../scripts/renew_probe.lua");
/// Closes or re-opens after the probe (v2: a close records `closed_epoch`; v3: the v3 bucket keys).
pub const PROBE_RESULT: LuaScript = lua!("switchyard_breaker_probe_result_v3", "../scripts/probe_result.lua");
/// Operator commands: force_open, disable, reset (v2: a reset records `closed_epoch`; v3: the v3 bucket keys).
pub const COMMAND: LuaScript = lua!("switchyard_breaker_command_v3", "../scripts/command.lua");
/// Reads a breaker with Redis `TIME`.
pub const GET: LuaScript = lua!("switchyard_breaker_get_v1", "../scripts/get.lua");
/// Adds escalation counts to the current time bucket (v2: buckets are fields of one hash).
pub const ESCALATION_ADD: LuaScript = lua!("switchyard_escalation_add_v2", "../scripts/escalation_add.lua");
/// Sums escalation counts over a window (v2: buckets are fields of one hash).
pub const ESCALATION_RATE: LuaScript = lua!("switchyard_escalation_rate_v2", "../scripts/escalation_rate.lua");

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
pub const ALL: [LuaScript; 11] = [
    REPORT,
    RATE_LIMITED,
    ACQUIRE_PROBE,
    RENEW_PROBE,
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
