//! Property tests: random groups and strategies driven by random sequences of picks under random availability,
//! call starts and ends, failures and time steps, checked after every pick against the rules of exclusion and
//! panic mode. The test keeps its own record of failures and trickle times.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic on failure")]

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Advance { ms: u64 },
    Pick { available: Vec<bool>, units: (f64, f64), start: bool },
    End { member: usize, ms: u64 },
    Fail { member: usize },
}

const MEMBERS: usize = 4;

fn op() -> impl Strategy<Value = Op> {
    // Often all down, to exercise panic mode.
    let available = prop_oneof![
        2 => Just(vec![false; MEMBERS]),
        3 => prop::collection::vec(any::<bool>(), 0..=MEMBERS),
    ];
    prop_oneof![
        3 => (0u64..1_500).prop_map(|ms| Op::Advance { ms }),
        6 => (available, 0.0f64..1.0, 0.0f64..1.0, any::<bool>())
            .prop_map(|(available, u0, u1, start)| Op::Pick { available, units: (u0, u1), start }),
        2 => (0..MEMBERS, 1u64..5_000).prop_map(|(member, ms)| Op::End { member, ms }),
        2 => (0..MEMBERS).prop_map(|member| Op::Fail { member }),
    ]
}

fn strategy() -> impl Strategy<Value = BalanceStrategy> {
    prop_oneof![
        Just(BalanceStrategy::Weighted),
        Just(BalanceStrategy::LeastBusy { ties: TieBreak::Index }),
        Just(BalanceStrategy::LeastBusy { ties: TieBreak::Random }),
        Just(BalanceStrategy::PeakEwma),
    ]
}

proptest! {
    /// A pick outside panic mode is always an available member; panic mode happens only when no member is
    /// available, lets at most one call through per `panic_interval`, sends it to the member that failed least
    /// recently, and tells everyone else exactly when the next slot opens.
    #[test]
    fn exclusion_and_panic_mode_hold(
        strategy in strategy(),
        weights in prop::collection::vec(1u32..6, 1..=MEMBERS),
        panic_ms in 1u64..3_000,
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let config = BalancerConfig {
            strategy,
            panic_interval: Duration::from_millis(panic_ms),
            ..BalancerConfig::default()
        };
        let members = weights.iter().enumerate().map(|(i, &w)| GroupMember::new(format!("m{i}"), w)).collect();
        let mut balancer = Balancer::new(config, members).unwrap();
        let n = weights.len();
        let mut now = Instant::now();
        let mut failed_at: Vec<Option<Instant>> = vec![None; n];
        let mut last_trickle: Option<Instant> = None;
        for op in ops {
            match op {
                Op::Advance { ms } => now += Duration::from_millis(ms),
                Op::End { member, ms } => balancer.on_end(member, Duration::from_millis(ms), now),
                Op::Fail { member } => {
                    balancer.on_failure(member, now);
                    if let Some(at) = failed_at.get_mut(member) {
                        *at = Some(now);
                    }
                }
                Op::Pick { available, units, start } => {
                    let any_available = (0..n).any(|i| available.get(i).copied().unwrap_or(false));
                    let pick = balancer.pick(&available, units, now);
                    let slot_open = last_trickle.is_none_or(|at| now >= at + config.panic_interval);
                    match pick {
                        Pick::Member(i) => {
                            prop_assert!(i < n);
                            prop_assert!(available.get(i).copied().unwrap_or(false), "picked unavailable {i}");
                        }
                        Pick::Panic(i) => {
                            prop_assert!(!any_available, "panic while {available:?}");
                            prop_assert!(slot_open, "two trickles within {panic_ms} ms");
                            let oldest = failed_at.iter().copied().min().unwrap();
                            prop_assert_eq!(failed_at[i], oldest, "trickle to {} of {:?}", i, failed_at);
                            prop_assert!(failed_at[..i].iter().all(|at| *at > oldest), "not the first of equals");
                            last_trickle = Some(now);
                        }
                        Pick::None { retry_after } => {
                            prop_assert!(!any_available, "none while {available:?}");
                            prop_assert!(!slot_open, "refused an open trickle slot");
                            let next = last_trickle.unwrap() + config.panic_interval;
                            prop_assert_eq!(now + retry_after, next);
                        }
                    }
                    if start && let Some(member) = pick.member() {
                        balancer.on_start(member);
                    }
                }
            }
        }
    }
}
