//! Balancing inside a group: which member of a group of equivalent providers takes the next call.
//!
//! A route's group lists members with weights; the [`Balancer`] picks one per call among the members whose
//! breaker admits calls (the caller passes that as `available`). Three strategies:
//!
//! - **Weighted**: nginx's smooth weighted round-robin. Each pick adds every available member's weight to its
//!   running score, takes the highest score (the lowest index on a tie) and subtracts the total weight of the
//!   available members from the winner. Deterministic, exact over a cycle (weights 5, 1, 1 give `a a b a c a a`)
//!   and without bursts.
//! - **LeastBusy**: the fewest calls in flight relative to weight, `(in_flight + 1) / weight` (Envoy's
//!   least-request with active-request bias 1; with equal weights, simply the fewest in flight). Ties go to the
//!   lowest index or, with [`TieBreak::Random`], to one drawn with the caller's `unit`.
//! - **PeakEwma**: the power of two choices (P2C) over a peak-EWMA latency estimate, as linkerd and Finagle do:
//!   two distinct members are drawn with the caller's two `unit`s, and the one with the lower
//!   `latency_estimate * (in_flight + 1) / weight` wins (the first drawn on a tie). The estimate, its time decay
//!   (`decay`, default 10 s) and the one place it differs from linkerd are described in `ewma.rs`.
//!
//! **Exclusion and panic mode.** Unavailable members are never picked while any member is available. When no
//! member is, failing every call would turn a group-wide outage into a total one, and picking among tripped
//! members would hammer them; so, as Envoy's panic threshold ("never eject everything") and the design's panic
//! mode, the group lets a trickle through: at most one call per `panic_interval` (default 1 s) goes to the
//! member that failed least recently (one never seen failing first, then the lowest index), and every other
//! call gets `Pick::None` with the time until the next trickle slot, which the router turns into
//! `no_provider_available` with `retry_after_ms`. A failing trickle call moves the next one to another member,
//! and once a member is available again normal picking resumes. A trickle call goes past the member's breaker:
//! it is the group's probe, and the caller sends it even though the breaker refuses ordinary calls.
//!
//! The caller reports every call it starts with [`Balancer::on_start`] and every call that ends, whatever its
//! outcome, with [`Balancer::on_end`]; a failure that counts against the member's health also goes to
//! [`Balancer::on_failure`]. Everything is pure: time and the random `unit`s are arguments.

mod ewma;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use ewma::PeakEwma;

/// The largest group a balancer accepts.
pub const MAX_MEMBERS: usize = 1_024;

/// The largest weight of one member.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// How the balancer chooses among the available members. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BalanceStrategy {
    /// Smooth weighted round-robin (nginx).
    #[default]
    Weighted,
    /// The fewest calls in flight relative to weight.
    LeastBusy { ties: TieBreak },
    /// Power of two choices over peak-EWMA latency times calls in flight.
    PeakEwma,
}

/// How [`BalanceStrategy::LeastBusy`] chooses among equally busy members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TieBreak {
    /// The lowest index: deterministic, and the first member takes the light load.
    #[default]
    Index,
    /// Uniformly, with the first of the caller's `unit`s.
    Random,
}

/// How a group balances. See the module documentation for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalancerConfig {
    /// Default: `Weighted`.
    pub strategy: BalanceStrategy,
    /// The time constant of the latency estimate's decay (linkerd's and Finagle's `decay`). Default: 10 s.
    pub decay: Duration,
    /// The latency estimate of a member without observations, and where an idle estimate decays to.
    /// Default: 1 s.
    pub default_latency: Duration,
    /// In panic mode, at most one call per this interval goes through. Default: 1 s.
    pub panic_interval: Duration,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            strategy: BalanceStrategy::Weighted,
            decay: Duration::from_secs(10),
            default_latency: Duration::from_secs(1),
            panic_interval: Duration::from_secs(1),
        }
    }
}

/// One member of a group, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The provider's name, unique in the group.
    pub name: String,
    /// The member's share of the traffic, between 1 and [`MAX_WEIGHT`].
    pub weight: u32,
}

impl GroupMember {
    pub fn new(name: impl Into<String>, weight: u32) -> Self {
        Self { name: name.into(), weight }
    }
}

/// A group or balancer setting that cannot work.
pub type BalanceConfigError = crate::InvalidSetting;

impl BalancerConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), BalanceConfigError> {
        let fail = |field, reason| Err(crate::InvalidSetting { component: "balancer", field, reason });
        let hour = Duration::from_secs(60 * 60);
        if self.decay.is_zero() || self.decay > hour {
            return fail("decay", "must be positive and at most 1 h");
        }
        if self.default_latency.is_zero() || self.default_latency > hour {
            return fail("default_latency", "must be positive and at most 1 h");
        }
        if self.panic_interval < Duration::from_millis(1) || self.panic_interval > hour {
            return fail("panic_interval", "must be between 1 ms and 1 h");
        }
        Ok(())
    }
}

/// The balancer's answer for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Pick {
    /// Call this member (an index into the group).
    Member(usize),
    /// Every member is unavailable; this call is the group's trickle and goes to this member, past its breaker.
    Panic(usize),
    /// Every member is unavailable and the trickle slot is taken: fail fast and ask again after `retry_after`.
    None { retry_after: Duration },
}

impl Pick {
    /// The member to call, trickle or not.
    pub fn member(&self) -> Option<usize> {
        match self {
            Pick::Member(i) | Pick::Panic(i) => Some(*i),
            Pick::None { .. } => None,
        }
    }
}

/// What the balancer knows about one member, for health replies and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberSnapshot {
    pub name: String,
    pub weight: u32,
    pub in_flight: u32,
    /// The peak-EWMA latency estimate at the snapshot's time.
    pub latency_estimate: Duration,
    pub last_failure_at: Option<Instant>,
}

/// What the balancer knows about its group.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancerSnapshot {
    pub members: Vec<MemberSnapshot>,
    /// While a trickle slot is taken, the time until the next one.
    pub next_trickle_in: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Member {
    name: String,
    weight: u32,
    /// The smooth weighted round-robin score.
    score: i64,
    in_flight: u32,
    latency: PeakEwma,
    last_failure_at: Option<Instant>,
}

/// The balancer of one group. Pure: time and randomness come in as arguments.
#[derive(Debug, Clone)]
pub struct Balancer {
    config: BalancerConfig,
    members: Vec<Member>,
    /// The first instant the next trickle call may go through, once one has.
    next_trickle: Option<Instant>,
}

impl Balancer {
    /// A balancer over `members` (in order: indices are positions in this list), or the reason it cannot work.
    pub fn new(config: BalancerConfig, members: Vec<GroupMember>) -> Result<Self, BalanceConfigError> {
        config.validate()?;
        let fail = |field, reason| Err(crate::InvalidSetting { component: "balancer", field, reason });
        if members.is_empty() || members.len() > MAX_MEMBERS {
            return fail("members", "a group needs between 1 and 1024 members");
        }
        for (i, member) in members.iter().enumerate() {
            if member.name.is_empty() {
                return fail("members.name", "must not be empty");
            }
            if members[..i].iter().any(|other| other.name == member.name) {
                return fail("members.name", "must be unique in the group");
            }
            if !(1..=MAX_WEIGHT).contains(&member.weight) {
                return fail("members.weight", "must be between 1 and 1000000");
            }
        }
        let members = members
            .into_iter()
            .map(|m| Member {
                name: m.name,
                weight: m.weight,
                score: 0,
                in_flight: 0,
                latency: PeakEwma::default(),
                last_failure_at: None,
            })
            .collect();
        Ok(Self { config, members, next_trickle: None })
    }

    pub fn config(&self) -> &BalancerConfig {
        &self.config
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always `false`: a group has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn name(&self, member: usize) -> Option<&str> {
        self.members.get(member).map(|m| m.name.as_str())
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// Picks the member for one call at `now`. `available[i]` says whether member `i`'s breaker admits calls (a
    /// missing entry counts as unavailable); `units` are two random numbers in `[0, 1)`, used by the strategies
    /// that draw. Recording the call is the caller's: [`Balancer::on_start`] once it is made.
    pub fn pick(&mut self, available: &[bool], units: (f64, f64), now: Instant) -> Pick {
        let eligible: Vec<usize> =
            (0..self.members.len()).filter(|&i| available.get(i).copied().unwrap_or(false)).collect();
        if eligible.is_empty() {
            return self.trickle(now);
        }
        let chosen = match self.config.strategy {
            BalanceStrategy::Weighted => self.weighted(&eligible),
            BalanceStrategy::LeastBusy { ties } => self.least_busy(&eligible, ties, units.0),
            BalanceStrategy::PeakEwma => self.two_choices(&eligible, units, now),
        };
        Pick::Member(chosen)
    }

    /// A call to `member` started (a trickle call included).
    pub fn on_start(&mut self, member: usize) {
        if let Some(m) = self.members.get_mut(member) {
            m.in_flight = m.in_flight.saturating_add(1);
        }
    }

    /// A call to `member` ended at `now` after `latency`, whatever its outcome.
    pub fn on_end(&mut self, member: usize, latency: Duration, now: Instant) {
        let (tau, prior) = (self.config.decay, self.config.default_latency);
        if let Some(m) = self.members.get_mut(member) {
            m.in_flight = m.in_flight.saturating_sub(1);
            m.latency.observe(latency, now, tau, prior);
        }
    }

    /// A call to `member` failed at `now` in a way that counts against its health; panic mode prefers the
    /// members that failed least recently.
    pub fn on_failure(&mut self, member: usize, now: Instant) {
        if let Some(m) = self.members.get_mut(member) {
            m.last_failure_at = Some(m.last_failure_at.map_or(now, |at| at.max(now)));
        }
    }

    pub fn snapshot(&self, now: Instant) -> BalancerSnapshot {
        let members = self
            .members
            .iter()
            .map(|m| MemberSnapshot {
                name: m.name.clone(),
                weight: m.weight,
                in_flight: m.in_flight,
                latency_estimate: Duration::try_from_secs_f64(self.estimate(m, now)).unwrap_or(Duration::MAX),
                last_failure_at: m.last_failure_at,
            })
            .collect();
        let next_trickle_in = self.next_trickle.filter(|at| now < *at).map(|at| at - now);
        BalancerSnapshot { members, next_trickle_in }
    }

    /// Panic mode: one call per interval to the member that failed least recently, the others wait.
    fn trickle(&mut self, now: Instant) -> Pick {
        if let Some(next) = self.next_trickle
            && now < next
        {
            return Pick::None { retry_after: next - now };
        }
        // `None` (never failed) sorts before any instant; `min_by_key` keeps the first of equals.
        let chosen = (0..self.members.len()).min_by_key(|&i| self.members[i].last_failure_at).unwrap_or(0);
        self.next_trickle = Some(now.checked_add(self.config.panic_interval).unwrap_or(now));
        Pick::Panic(chosen)
    }

    /// nginx's smooth weighted round-robin over `eligible` (not empty).
    fn weighted(&mut self, eligible: &[usize]) -> usize {
        let mut total = 0i64;
        let mut best = eligible[0];
        for &i in eligible {
            let weight = i64::from(self.members[i].weight);
            self.members[i].score += weight;
            total += weight;
            if self.members[i].score > self.members[best].score {
                best = i;
            }
        }
        self.members[best].score -= total;
        best
    }

    /// The fewest in flight relative to weight, over `eligible` (not empty).
    fn least_busy(&self, eligible: &[usize], ties: TieBreak, unit: f64) -> usize {
        // `(in_flight + 1) / weight`, compared by cross-multiplication to stay exact.
        let load = |i: usize| (u64::from(self.members[i].in_flight) + 1, u64::from(self.members[i].weight));
        let lighter = |a: (u64, u64), b: (u64, u64)| a.0 * b.1 < b.0 * a.1;
        let mut best = load(eligible[0]);
        for &i in eligible {
            if lighter(load(i), best) {
                best = load(i);
            }
        }
        let tied: Vec<usize> = eligible.iter().copied().filter(|&i| !lighter(best, load(i))).collect();
        match ties {
            TieBreak::Index => tied[0],
            TieBreak::Random => tied[draw(unit, tied.len())],
        }
    }

    /// The power of two choices over `eligible` (not empty).
    fn two_choices(&self, eligible: &[usize], units: (f64, f64), now: Instant) -> usize {
        let n = eligible.len();
        let first = draw(units.0, n);
        if n == 1 {
            return eligible[first];
        }
        // The second draw skips the first, so the two are distinct and both uniform.
        let mut second = draw(units.1, n - 1);
        if second >= first {
            second += 1;
        }
        let (a, b) = (eligible[first], eligible[second]);
        if self.cost(b, now) < self.cost(a, now) { b } else { a }
    }

    /// `latency_estimate * (in_flight + 1) / weight`, in seconds.
    fn cost(&self, member: usize, now: Instant) -> f64 {
        let m = &self.members[member];
        self.estimate(m, now) * (f64::from(m.in_flight) + 1.0) / f64::from(m.weight)
    }

    fn estimate(&self, m: &Member, now: Instant) -> f64 {
        m.latency.value(now, self.config.decay, self.config.default_latency)
    }
}

/// An index in `0..n` from a random `unit` in `[0, 1)`; out-of-range or non-finite units are clamped.
fn draw(unit: f64, n: usize) -> usize {
    let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
    ((unit * n as f64) as usize).min(n.saturating_sub(1))
}
