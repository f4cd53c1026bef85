//! What the cluster says about a provider, as one node applies it.
//!
//! A node's own breaker judges its own calls; the cluster's breaker (shared through Redis and breaker events)
//! judges the provider for everyone. A call is admitted only when both agree. The cluster's rules, as a node
//! sees them:
//! - **closed** or **disabled**: the cluster has no objection; the local breaker decides.
//! - **open** until a deadline: refuse, with the time left as the retry hint. Nobody calls the provider.
//! - **open past its deadline**, or **half-open**: exactly one node in the cluster holds the probe lease. That
//!   node admits one call, the probe; every other node refuses. So the whole cluster sends one probe per open
//!   interval, however many nodes and queries are waiting.
//! - **forced open**: refuse.
//!
//! The probe lease is short and renewed by its holder while the probe runs ([`ClusterGate::lease_renewal`]
//! decides at each renewal tick): a live holder keeps it however long the call takes (up to the longest
//! provider timeout, after which something went wrong and the lease is let go), and a dead holder's lease
//! lapses within one lease, so another node probes. A lease whose probe never started is not renewed: it lapses
//! and is asked for again.
//!
//! Views arrive out of order (events, polls, replies to our own reports); the epoch decides: a view with a lower
//! epoch than the one applied changes nothing. When the shared store cannot be reached the node is *degraded*:
//! it keeps honouring an open deadline it knows about, but past it the local breaker probes on its own, since no
//! lease can be had.

use std::time::{Duration, Instant};

use crate::BreakerState;

/// The cluster's breaker state, with the open deadline on this node's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterPhase {
    Closed,
    Open { until: Instant },
    HalfOpen,
    ForcedOpen,
    Disabled,
}

impl ClusterPhase {
    /// The state's name, without its deadline.
    pub fn state(&self) -> BreakerState {
        match self {
            ClusterPhase::Closed => BreakerState::Closed,
            ClusterPhase::Open { .. } => BreakerState::Open,
            ClusterPhase::HalfOpen => BreakerState::HalfOpen,
            ClusterPhase::ForcedOpen => BreakerState::ForcedOpen,
            ClusterPhase::Disabled => BreakerState::Disabled,
        }
    }
}

/// The gate's answer for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// The cluster has no objection; ask the local breaker.
    Admit,
    /// This call is the cluster's probe: send it whatever the local breaker says, and report its outcome.
    Probe { epoch: u64 },
    /// Refuse without calling; try again after this long.
    Refuse { retry_after: Duration },
}

/// How long a refused caller should wait while another node's probe is out.
pub const PROBE_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a refused caller should wait while an operator forces the breaker open.
pub const FORCED_OPEN_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What the probe lease holder does about its lease at a renewal tick (see [`ClusterGate::lease_renewal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRenewal {
    /// The probe is running: renew the lease of this epoch in the shared store.
    Renew { epoch: u64 },
    /// The lease holds but its probe has not gone out yet: check again at the next tick.
    Wait,
    /// The probe has run longer than any provider call may: let the lease lapse so another node probes.
    GiveUp,
    /// This node no longer holds that lease (reported, lapsed, or the cluster moved on): stop renewing.
    Stop,
}

/// One node's copy of the cluster's breaker for one provider.
#[derive(Debug, Clone)]
pub struct ClusterGate {
    phase: ClusterPhase,
    epoch: u64,
    /// This node holds the probe lease of `epoch` until the instant; the probe may go out before then.
    lease: Option<(u64, Instant)>,
    probe_in_flight: bool,
    /// When the probe went out (set with `probe_in_flight`).
    probe_started: Option<Instant>,
    degraded: bool,
}

impl Default for ClusterGate {
    fn default() -> Self {
        Self {
            phase: ClusterPhase::Closed,
            epoch: 0,
            lease: None,
            probe_in_flight: false,
            probe_started: None,
            degraded: false,
        }
    }
}

impl ClusterGate {
    pub fn phase(&self) -> ClusterPhase {
        self.phase
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// Applies a view of the cluster; returns whether it replaced the current one (a higher epoch, or the same
    /// epoch with a later open deadline, which is how a 429 extension arrives).
    pub fn apply(&mut self, phase: ClusterPhase, epoch: u64) -> bool {
        let extends = epoch == self.epoch
            && matches!((self.phase, phase), (ClusterPhase::Open { until: a }, ClusterPhase::Open { until: b }) if b > a);
        if epoch < self.epoch || (epoch == self.epoch && !extends) {
            return false;
        }
        if epoch > self.epoch {
            self.lease = None;
            self.probe_in_flight = false;
            self.probe_started = None;
        }
        self.phase = phase;
        self.epoch = epoch;
        true
    }

    /// Takes `phase` and `epoch` whatever this gate knew: the shared store lost its memory (it restarted empty,
    /// or from an old snapshot) and is the truth again.
    pub fn replace(&mut self, phase: ClusterPhase, epoch: u64) {
        *self = ClusterGate { phase, epoch, degraded: self.degraded, ..ClusterGate::default() };
    }

    /// This node won the probe lease of `epoch`, valid until `until`.
    pub fn grant_probe(&mut self, epoch: u64, until: Instant) {
        if epoch == self.epoch && matches!(self.phase, ClusterPhase::Open { .. } | ClusterPhase::HalfOpen) {
            self.lease = Some((epoch, until));
            self.phase = ClusterPhase::HalfOpen;
        }
    }

    /// The store renewed this node's lease of `epoch` until `until` (never shortened; ignored when the lease is
    /// not this node's any more).
    pub fn renew_probe(&mut self, epoch: u64, until: Instant) {
        if let Some((held, old)) = self.lease
            && held == epoch
            && epoch == self.epoch
        {
            self.lease = Some((epoch, old.max(until)));
        }
    }

    /// At a renewal tick for the lease of `epoch`: renew while its probe runs (for at most `max_probe`, the
    /// longest a provider call may take), wait while the lease holds and the probe has not gone out, stop
    /// otherwise.
    pub fn lease_renewal(&self, epoch: u64, now: Instant, max_probe: Duration) -> LeaseRenewal {
        match self.lease {
            Some((held, until)) if held == epoch && epoch == self.epoch => match self.probe_started {
                Some(started) if self.probe_in_flight => {
                    if now.saturating_duration_since(started) >= max_probe {
                        LeaseRenewal::GiveUp
                    } else {
                        LeaseRenewal::Renew { epoch }
                    }
                }
                _ if now < until => LeaseRenewal::Wait,
                _ => LeaseRenewal::Stop,
            },
            _ => LeaseRenewal::Stop,
        }
    }

    /// The probe's outcome was reported; the next view decides what comes next.
    pub fn probe_done(&mut self) {
        self.lease = None;
        self.probe_in_flight = false;
        self.probe_started = None;
    }

    pub fn set_degraded(&mut self, degraded: bool) {
        self.degraded = degraded;
    }

    /// Whether this node may ask the store for the probe lease now.
    pub fn wants_probe(&self, now: Instant) -> bool {
        match self.phase {
            ClusterPhase::Open { until } => now >= until && !self.holds_lease(now),
            ClusterPhase::HalfOpen => !self.holds_lease(now),
            _ => false,
        }
    }

    fn holds_lease(&self, now: Instant) -> bool {
        self.lease.is_some_and(|(_, until)| now < until)
    }

    pub fn admit(&mut self, now: Instant) -> GateDecision {
        match self.phase {
            ClusterPhase::Closed | ClusterPhase::Disabled => GateDecision::Admit,
            ClusterPhase::ForcedOpen => GateDecision::Refuse { retry_after: FORCED_OPEN_RETRY_AFTER },
            ClusterPhase::Open { until } if now < until => GateDecision::Refuse { retry_after: until - now },
            // Past the deadline, or half-open: the lease holder sends one probe; without a store, the local
            // breaker probes on its own.
            ClusterPhase::Open { .. } | ClusterPhase::HalfOpen => match self.lease {
                Some((epoch, until)) if !self.probe_in_flight && now < until => {
                    self.probe_in_flight = true;
                    self.probe_started = Some(now);
                    GateDecision::Probe { epoch }
                }
                _ if self.degraded => GateDecision::Admit,
                _ => GateDecision::Refuse { retry_after: PROBE_RETRY_AFTER },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_for(now: Instant, ms: u64) -> ClusterPhase {
        ClusterPhase::Open { until: now + Duration::from_millis(ms) }
    }

    #[test]
    fn closed_admits_and_open_refuses_until_the_deadline() {
        let t0 = Instant::now();
        let mut gate = ClusterGate::default();
        assert_eq!(gate.admit(t0), GateDecision::Admit);
        assert!(gate.apply(open_for(t0, 500), 3));
        assert_eq!(gate.admit(t0), GateDecision::Refuse { retry_after: Duration::from_millis(500) });
        assert!(!gate.wants_probe(t0));
        let later = t0 + Duration::from_millis(500);
        assert!(gate.wants_probe(later));
        assert_eq!(gate.admit(later), GateDecision::Refuse { retry_after: PROBE_RETRY_AFTER }, "no lease, no probe");
    }

    #[test]
    fn the_lease_holder_sends_exactly_one_probe() {
        let t0 = Instant::now();
        let mut gate = ClusterGate::default();
        gate.apply(open_for(t0, 0), 4);
        gate.grant_probe(4, t0 + Duration::from_secs(5));
        assert_eq!(gate.phase(), ClusterPhase::HalfOpen);
        assert_eq!(gate.admit(t0), GateDecision::Probe { epoch: 4 });
        assert_eq!(gate.admit(t0), GateDecision::Refuse { retry_after: PROBE_RETRY_AFTER });
        gate.probe_done();
        assert!(gate.apply(ClusterPhase::Closed, 5));
        assert_eq!(gate.admit(t0), GateDecision::Admit);
    }

    #[test]
    fn an_expired_lease_sends_no_probe() {
        let t0 = Instant::now();
        let mut gate = ClusterGate::default();
        gate.apply(open_for(t0, 0), 4);
        gate.grant_probe(4, t0 + Duration::from_millis(100));
        assert!(!gate.wants_probe(t0));
        let late = t0 + Duration::from_millis(100);
        assert_eq!(gate.admit(late), GateDecision::Refuse { retry_after: PROBE_RETRY_AFTER });
        assert!(gate.wants_probe(late), "the lease can be asked for again");
    }

    #[test]
    fn stale_views_and_stale_leases_change_nothing() {
        let t0 = Instant::now();
        let mut gate = ClusterGate::default();
        gate.apply(open_for(t0, 1000), 7);
        assert!(!gate.apply(ClusterPhase::Closed, 6));
        assert!(!gate.apply(ClusterPhase::Closed, 7), "same epoch, no extension");
        gate.grant_probe(6, t0 + Duration::from_secs(5));
        assert_eq!(gate.admit(t0 + Duration::from_secs(2)), GateDecision::Refuse { retry_after: PROBE_RETRY_AFTER });
        assert!(gate.apply(open_for(t0, 3000), 7), "a later deadline at the same epoch extends");
        assert_eq!(
            gate.admit(t0 + Duration::from_secs(2)),
            GateDecision::Refuse { retry_after: Duration::from_secs(1) }
        );
    }

    #[test]
    fn the_holder_renews_only_while_its_probe_runs() {
        let t0 = Instant::now();
        let max = Duration::from_secs(30);
        let ms = Duration::from_millis;
        let mut gate = ClusterGate::default();
        gate.apply(open_for(t0, 0), 4);
        assert_eq!(gate.lease_renewal(4, t0, max), LeaseRenewal::Stop, "no lease, nothing to renew");
        gate.grant_probe(4, t0 + ms(1000));
        assert_eq!(gate.lease_renewal(4, t0, max), LeaseRenewal::Wait, "the probe has not gone out");
        assert_eq!(gate.lease_renewal(4, t0 + ms(1000), max), LeaseRenewal::Stop, "an unused lease lapses");
        assert_eq!(gate.admit(t0 + ms(10)), GateDecision::Probe { epoch: 4 });
        assert_eq!(gate.lease_renewal(4, t0 + ms(300), max), LeaseRenewal::Renew { epoch: 4 });
        assert_eq!(gate.lease_renewal(3, t0 + ms(300), max), LeaseRenewal::Stop, "another epoch's lease");
        gate.renew_probe(4, t0 + ms(1300));
        gate.renew_probe(4, t0 + ms(900));
        assert!(!gate.wants_probe(t0 + ms(1200)), "renewed, never shortened");
        assert_eq!(gate.lease_renewal(4, t0 + ms(10) + max, max), LeaseRenewal::GiveUp, "a probe past any timeout");
        gate.probe_done();
        assert_eq!(gate.lease_renewal(4, t0 + ms(400), max), LeaseRenewal::Stop, "reported: done");
        gate.grant_probe(4, t0 + ms(2000));
        gate.admit(t0);
        assert!(gate.apply(ClusterPhase::Closed, 5));
        assert_eq!(gate.lease_renewal(4, t0, max), LeaseRenewal::Stop, "the cluster moved on");
    }

    #[test]
    fn degraded_nodes_honour_deadlines_then_let_the_local_breaker_probe() {
        let t0 = Instant::now();
        let mut gate = ClusterGate::default();
        gate.apply(open_for(t0, 100), 2);
        gate.set_degraded(true);
        assert!(matches!(gate.admit(t0), GateDecision::Refuse { .. }));
        assert_eq!(gate.admit(t0 + Duration::from_millis(100)), GateDecision::Admit);
    }

    #[test]
    fn forced_open_refuses_and_disabled_admits() {
        let t0 = Instant::now();
        let mut gate = ClusterGate::default();
        gate.apply(ClusterPhase::ForcedOpen, 1);
        assert_eq!(gate.admit(t0), GateDecision::Refuse { retry_after: FORCED_OPEN_RETRY_AFTER });
        gate.apply(ClusterPhase::Disabled, 2);
        assert_eq!(gate.admit(t0), GateDecision::Admit);
    }
}
