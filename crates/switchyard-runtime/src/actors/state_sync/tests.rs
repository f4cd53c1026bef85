//! `StateSync` as an actor, on paused time, with the in-memory store and bus: what it sends to the store and
//! when. Virtual time moves the actor's tickers, the store's clock and this node's clock together.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use async_trait::async_trait;
use switchyard_bus::MemoryBus;
use switchyard_core::GateDecision;
use switchyard_state::{Clock, EscalationCounts, MemoryStore, ReportOutcome, Update};

use super::*;

const P: &str = "p";
const LEASE: Duration = Duration::from_secs(1);
const FLUSH: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_secs(1);

/// The store's clock follows tokio's (paused) clock.
struct TokioClock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }
}

/// One store call, as the counting store saw it.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Report { node: String, batch: OutcomeBatch },
    RateLimited { epoch: u64, retry_after: Duration, changed: bool },
    Renew { node: String, granted: bool },
    Acquire { node: String },
    Poll { providers: Vec<String> },
    Other,
}

/// A [`MemoryStore`] that records every call (one call is one Redis command on the Redis store).
struct CountingStore {
    inner: MemoryStore,
    calls: Mutex<Vec<Call>>,
}

impl CountingStore {
    fn new() -> Arc<Self> {
        let clock = TokioClock { base_ms: 1_700_000_000_000, start: tokio::time::Instant::now() };
        Arc::new(CountingStore { inner: MemoryStore::with_clock(Arc::new(clock)), calls: Mutex::default() })
    }

    fn log(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn reports(&self) -> Vec<OutcomeBatch> {
        self.calls()
            .into_iter()
            .filter_map(|c| if let Call::Report { batch, .. } = c { Some(batch) } else { None })
            .collect()
    }

    fn polls_of(&self, provider: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c, Call::Poll { providers } if providers.iter().any(|p| p == provider)))
            .count()
    }

    fn renewals(&self, by: &str) -> usize {
        self.calls().iter().filter(|c| matches!(c, Call::Renew { node, .. } if node == by)).count()
    }

    fn acquires(&self, by: &str) -> usize {
        self.calls().iter().filter(|c| matches!(c, Call::Acquire { node } if node == by)).count()
    }
}

#[async_trait]
impl BreakerStore for CountingStore {
    async fn report(
        &self,
        provider: &str,
        node: &str,
        batch: OutcomeBatch,
        policy: &TripPolicy,
    ) -> Result<ReportOutcome, StateError> {
        self.log(Call::Report { node: node.to_owned(), batch });
        self.inner.report(provider, node, batch, policy).await
    }

    async fn rate_limited(&self, provider: &str, epoch: u64, retry_after: Duration) -> Result<Update, StateError> {
        let update = self.inner.rate_limited(provider, epoch, retry_after).await?;
        self.log(Call::RateLimited { epoch, retry_after, changed: update.changed });
        Ok(update)
    }

    async fn acquire_probe(&self, provider: &str, node: &str, lease: Duration) -> Result<ProbeDecision, StateError> {
        self.log(Call::Acquire { node: node.to_owned() });
        self.inner.acquire_probe(provider, node, lease).await
    }

    async fn renew_probe(
        &self,
        provider: &str,
        node: &str,
        epoch: u64,
        lease: Duration,
    ) -> Result<ProbeDecision, StateError> {
        let decision = self.inner.renew_probe(provider, node, epoch, lease).await?;
        self.log(Call::Renew { node: node.to_owned(), granted: decision.is_granted() });
        Ok(decision)
    }

    async fn probe_result(
        &self,
        provider: &str,
        node: &str,
        epoch: u64,
        success: bool,
        wait: &OpenWait,
    ) -> Result<Update, StateError> {
        self.log(Call::Other);
        self.inner.probe_result(provider, node, epoch, success, wait).await
    }

    async fn get(&self, provider: &str) -> Result<ClusterView, StateError> {
        self.inner.get(provider).await
    }

    async fn get_many(&self, providers: &[&str]) -> Result<Vec<ClusterView>, StateError> {
        self.log(Call::Poll { providers: providers.iter().map(|p| (*p).to_owned()).collect() });
        self.inner.get_many(providers).await
    }

    async fn force_open(&self, provider: &str) -> Result<Update, StateError> {
        self.inner.force_open(provider).await
    }

    async fn disable(&self, provider: &str) -> Result<Update, StateError> {
        self.inner.disable(provider).await
    }

    async fn reset(&self, provider: &str) -> Result<Update, StateError> {
        self.inner.reset(provider).await
    }

    async fn add_escalations(&self, cascade: &str, stage: u32, counts: EscalationCounts) -> Result<(), StateError> {
        self.inner.add_escalations(cascade, stage, counts).await
    }

    async fn escalation_rate(
        &self,
        cascade: &str,
        stage: u32,
        window: Duration,
    ) -> Result<EscalationCounts, StateError> {
        self.inner.escalation_rate(cascade, stage, window).await
    }
}

fn policy() -> TripPolicy {
    TripPolicy {
        minimum_calls: 4,
        wait: OpenWait::new(Duration::from_secs(1), Duration::from_secs(8)),
        ..TripPolicy::default()
    }
}

/// One node's `StateSync` on the shared store and bus.
struct Node {
    actor: ActorRef<StateSyncMsg>,
    join: JoinHandle<()>,
    gates: ClusterGates,
}

impl Node {
    async fn start(name: &str, store: Arc<CountingStore>, bus: &MemoryBus) -> Node {
        let gates = ClusterGates::new([P]);
        let args = StateSyncArgs {
            node: name.to_owned(),
            store,
            bus: Arc::new(bus.clone()),
            subjects: Subjects::new("test"),
            directory: ProviderDirectory::default(),
            gates: gates.clone(),
            policies: HashMap::from([(P.to_owned(), policy())]),
            telemetry: Arc::default(),
            settings: SyncSettings {
                flush_interval: FLUSH,
                poll_interval: POLL,
                probe_lease: LEASE,
                max_probe: Duration::from_secs(30),
            },
            degraded: Arc::new(AtomicBool::new(false)),
        };
        let (actor, join) = Actor::spawn(None, StateSync, args).await.unwrap();
        Node { actor, join, gates }
    }

    fn outcome(&self, epoch: u64, outcome: Outcome, local_trip: bool) {
        let message = StateSyncMsg::Outcome { provider: P.to_owned(), epoch, outcome, slow: false, local_trip };
        self.actor.cast(message).unwrap();
    }

    fn phase(&self) -> ClusterPhase {
        self.gates.with(P, |gate| gate.phase()).unwrap()
    }

    fn epoch(&self) -> u64 {
        self.gates.with(P, |gate| gate.epoch()).unwrap()
    }

    /// What the provider actor would be told for one call now.
    fn admit(&self) -> GateDecision {
        self.gates.with(P, |gate| gate.admit(now())).unwrap()
    }

    async fn stop(self) {
        self.actor.stop(None);
        self.join.await.unwrap();
    }
}

/// Lets every runnable task run, moving virtual time by `by`.
async fn advance(by: Duration) {
    tokio::time::sleep(by).await;
}

/// Moves virtual time in small steps until `check` holds; fails after `limit` of virtual time.
async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = tokio::time::Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?} of virtual time");
        advance(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

fn rate_limited(ms: u64) -> Outcome {
    Outcome::Failure(FailureClass::RateLimited { retry_after: Some(Duration::from_millis(ms)) })
}

#[tokio::test(start_paused = true)]
async fn successes_are_batched_into_one_report_a_second_and_failures_go_out_at_once() {
    let store = CountingStore::new();
    let node = Node::start("node-a", store.clone(), &MemoryBus::new()).await;
    advance(Duration::from_millis(1)).await;
    for _ in 0..50 {
        node.outcome(0, Outcome::Success, false);
    }
    advance(FLUSH).await;
    assert!(store.reports().is_empty(), "no store command per success, and good news waits for its second");
    advance(Duration::from_secs(1)).await;
    assert_eq!(
        store.reports(),
        vec![OutcomeBatch { successes: 50, ..OutcomeBatch::new(0) }],
        "one report for the second's successes"
    );
    advance(10 * Duration::from_secs(1)).await;
    assert_eq!(store.reports().len(), 1, "an idle provider costs nothing");

    // Busy for three seconds: about one report a second, every success counted once.
    for _ in 0..30 {
        for _ in 0..20 {
            node.outcome(0, Outcome::Success, false);
        }
        advance(FLUSH).await;
    }
    advance(Duration::from_secs(1)).await;
    let reports = store.reports();
    eprintln!("{} reports for 600 successes over 3 busy seconds", reports.len() - 1);
    assert!((3..=4).contains(&(reports.len() - 1)), "{reports:?}");
    assert_eq!(reports[1..].iter().map(|b| b.successes).sum::<u64>(), 600);
    assert!(reports.iter().all(|b| b.failures == 0));

    // A failure does not wait for the second: it goes out at the next flush, with the successes beside it.
    let before = store.reports().len();
    node.outcome(0, Outcome::Success, false);
    node.outcome(0, Outcome::Failure(FailureClass::Retryable), false);
    advance(FLUSH).await;
    assert_eq!(store.reports().last(), Some(&OutcomeBatch { successes: 1, failures: 1, ..OutcomeBatch::new(0) }));
    // A local trip is reported at once.
    node.outcome(0, Outcome::Failure(FailureClass::Retryable), true);
    advance(Duration::from_millis(1)).await;
    assert_eq!(store.reports().last(), Some(&OutcomeBatch { failures: 1, ..OutcomeBatch::new(0) }));
    assert_eq!(store.reports().len(), before + 2);
    node.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_busy_provider_is_not_polled_its_report_brings_its_view_back() {
    let store = CountingStore::new();
    let node = Node::start("node-a", store.clone(), &MemoryBus::new()).await;
    advance(Duration::from_millis(1)).await;
    assert_eq!(store.polls_of(P), 1, "rehydrated at start");
    // Busy for ten seconds: one report a second, and no poll of the provider.
    for _ in 0..100 {
        for _ in 0..5 {
            node.outcome(0, Outcome::Success, false);
        }
        advance(FLUSH).await;
    }
    let reports = store.reports().len();
    let polls = store.polls_of(P);
    eprintln!("10 busy seconds: {reports} reports, {} polls", polls - 1);
    assert!((9..=11).contains(&reports), "{reports} reports");
    assert!(polls <= 2, "a busy provider's report stands for its poll: {polls} polls");
    // Idle: the poll is the backstop again.
    advance(Duration::from_secs(5)).await;
    assert!(store.polls_of(P) >= polls + 3, "an idle provider is polled every second");
    node.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stale_429_never_reopens_a_breaker_that_closed_since() {
    let store = CountingStore::new();
    let node = Node::start("node-a", store.clone(), &MemoryBus::new()).await;
    advance(Duration::from_millis(1)).await;

    // A 429 at epoch 0 opens the cluster breaker at once.
    node.outcome(0, rate_limited(1000), false);
    until("the cooldown applies", FLUSH, || matches!(node.phase(), ClusterPhase::Open { .. })).await;
    assert_eq!(node.epoch(), 1);
    // It ends; this node takes the probe, which succeeds.
    until("the probe lease", 2 * LEASE, || node.phase() == ClusterPhase::HalfOpen).await;
    let GateDecision::Probe { epoch } = node.admit() else { panic!("the lease holder probes") };
    node.actor.cast(StateSyncMsg::ProbeResult { provider: P.to_owned(), epoch, success: Some(true) }).unwrap();
    until("the breaker closes", FLUSH, || node.phase() == ClusterPhase::Closed).await;
    let closed = node.epoch();
    assert_eq!(closed, 3);

    // A late 429 from a call admitted at epoch 0 is stale: the store ignores it and the breaker stays closed.
    node.outcome(0, rate_limited(30_000), false);
    until("the stale cooldown is sent", FLUSH, || {
        store.calls().iter().any(|c| matches!(c, Call::RateLimited { retry_after, .. } if retry_after.as_secs() == 30))
    })
    .await;
    advance(Duration::from_millis(10)).await;
    let sent = store.calls().into_iter().rfind(|c| matches!(c, Call::RateLimited { .. }));
    assert_eq!(sent, Some(Call::RateLimited { epoch: 0, retry_after: Duration::from_secs(30), changed: false }));
    assert_eq!((node.phase(), node.epoch()), (ClusterPhase::Closed, closed));
    assert_eq!(node.admit(), GateDecision::Admit);
    assert_eq!(store.get(P).await.unwrap().state, BreakerState::Closed);

    // A 429 observed since the close does open it.
    node.outcome(closed, rate_limited(2000), false);
    until("a fresh cooldown applies", FLUSH, || matches!(node.phase(), ClusterPhase::Open { .. })).await;
    assert_eq!(node.epoch(), closed + 1);
    node.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_probe_holder_renews_its_lease_and_a_dead_holder_hands_over_within_a_lease() {
    let store = CountingStore::new();
    let bus = MemoryBus::new();
    // Two other nodes trip the cluster (open for 1 s).
    for node in ["x", "y"] {
        let batch = OutcomeBatch { failures: 5, ..OutcomeBatch::new(0) };
        store.inner.report(P, node, batch, &policy()).await.unwrap();
    }
    let a = Node::start("node-a", store.clone(), &bus).await;
    let b = Node::start("node-b", store.clone(), &bus).await;
    let owner = || futures::executor::block_on(store.get(P)).unwrap().probe.map(|lease| lease.owner);
    until("a node takes the probe lease", 3 * LEASE, || owner().is_some()).await;
    let (holder, other) = if owner().as_deref() == Some("node-a") { (a, b) } else { (b, a) };
    let holder_name = owner().unwrap();
    let other_name = if holder_name == "node-a" { "node-b" } else { "node-a" };
    let GateDecision::Probe { epoch } = holder.admit() else { panic!("the lease holder sends the probe") };

    // The probe runs for five leases: its holder keeps renewing, nobody else probes.
    let asked = store.acquires(other_name);
    advance(5 * LEASE).await;
    let asked = store.acquires(other_name) - asked;
    eprintln!("the other node asked for the lease {asked} times in 5 leases");
    assert!(asked <= 10, "one pending lease request per node, not one more per poll: {asked}");
    let view = store.get(P).await.unwrap();
    assert_eq!((view.state, view.epoch, owner().as_deref()), (BreakerState::HalfOpen, epoch, Some(&*holder_name)));
    let renewals = store.renewals(&holder_name);
    assert!((12..=16).contains(&renewals), "{renewals} renewals in 5 leases, one every third of a lease");
    assert!(store.calls().iter().all(|c| !matches!(c, Call::Renew { granted: false, .. })));
    assert!(matches!(other.admit(), GateDecision::Refuse { .. }), "the other node does not probe");

    // The holder dies with its probe out. The other node takes over within about one lease.
    holder.stop().await;
    let handover = until("another node takes the lease", 3 * LEASE, || owner().as_deref() == Some(other_name)).await;
    eprintln!("probe lease handed over {handover:?} after its holder died (lease {LEASE:?}, virtual time)");
    assert!(handover <= LEASE + FLUSH, "handover took {handover:?}");
    until("the new holder may probe", FLUSH, || other.gates.with(P, |g| g.wants_probe(now())) == Some(false)).await;
    let GateDecision::Probe { epoch } = other.admit() else { panic!("the new holder sends the probe") };
    other.actor.cast(StateSyncMsg::ProbeResult { provider: P.to_owned(), epoch, success: Some(true) }).unwrap();
    until("the breaker closes", FLUSH, || other.phase() == ClusterPhase::Closed).await;
    let renewals = store.renewals(other_name);
    advance(5 * LEASE).await;
    assert_eq!(store.renewals(other_name), renewals, "no renewal once the probe reported");
    other.stop().await;
}
