//! The shortcut and the bus agree (issue 10): a router that hands calls to its own node's provider actors
//! (`node.local_calls`) gives the same traces, breaker transitions and idempotency as one that publishes them on
//! NATS.
//!
//! One scripted scenario runs twice on a fresh single node, once each way: a healthy query, a failing provider
//! retried then left for the fallback, its breaker tripping, refusing, and closing after a probe, a stream, an
//! idempotent replay and conflict, a refusal at the provider's in-flight limit, and a hedge whose loser is
//! cancelled. Each step records the answers (timings left out) and both providers' health afterwards (local and
//! cluster breaker with their epochs, counters); the two records must be equal, step by step. A single node keeps
//! the comparison exact: with several, the bus's queue group spreads calls over nodes whose own breakers then see
//! different calls, which is what the bus is for and not a difference of the shortcut. A listener on the
//! providers' call subjects proves that each run took the path it claims.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use switchyard_core::BreakerState;
use switchyard_e2e::{Calls, PRIMARY_MODEL, SECONDARY_MODEL, TestCluster, ask};
use switchyard_mock::{Behavior, MockError};
use switchyard_protocol::admin::ProviderHealth;
use switchyard_protocol::client::{ErrorReply, QueryOutcome, QueryReply, QueryRequest, StreamFrame, Trace};
use switchyard_testkit::eventually;

/// What one step of the scenario left behind.
#[derive(Debug, PartialEq)]
struct Step {
    name: &'static str,
    answers: Vec<Answer>,
    /// Both providers' health once their calls have ended.
    providers: Vec<ProviderHealth>,
    /// Upstream calls the mock received so far: primary, secondary.
    upstream: (u64, u64),
}

/// An answer with what legitimately differs between two runs (timings) left out.
#[derive(Debug, PartialEq)]
enum Answer {
    Reply(QueryReply),
    Error(ErrorReply),
    /// A stream: its chunks as (attempt, seq, delta), then its final frame's attempt, chunk count and answer.
    Stream {
        chunks: Vec<(u32, u64, String)>,
        attempt: u32,
        count: u64,
        last: Box<Answer>,
    },
}

impl Answer {
    fn of(outcome: QueryOutcome) -> Answer {
        match outcome {
            QueryOutcome::Reply(reply) => Answer::reply(reply),
            QueryOutcome::Error(error) => Answer::error(error),
        }
    }

    fn reply(mut reply: QueryReply) -> Answer {
        reply.latency_ms = 0.0;
        normalize(&mut reply.trace);
        Answer::Reply(reply)
    }

    fn error(mut error: ErrorReply) -> Answer {
        // How long a breaker stays open is jittered: only whether a hint is given must agree.
        error.error.retry_after_ms = error.error.retry_after_ms.map(|_| 1);
        if let Some(trace) = &mut error.trace {
            normalize(trace);
        }
        Answer::Error(error)
    }

    fn stream(frames: Vec<StreamFrame>) -> Answer {
        let mut chunks = Vec::new();
        for frame in frames {
            match frame {
                StreamFrame::Chunk { attempt, seq, delta } => chunks.push((attempt, seq, delta)),
                StreamFrame::Done { attempt, chunks: count, reply } => {
                    return Answer::Stream { chunks, attempt, count, last: Box::new(Answer::reply(reply)) };
                }
                StreamFrame::Error { attempt, chunks: count, error } => {
                    return Answer::Stream { chunks, attempt, count, last: Box::new(Answer::error(error)) };
                }
            }
        }
        panic!("a stream without its final frame")
    }

    fn outcomes(&self) -> Vec<(&str, &str)> {
        let trace = match self {
            Answer::Reply(reply) => Some(&reply.trace),
            Answer::Error(error) => error.trace.as_ref(),
            Answer::Stream { last, .. } => return last.outcomes(),
        };
        trace.iter().flat_map(|t| &t.attempts).map(|a| (a.provider.as_str(), a.outcome.as_str())).collect()
    }
}

fn normalize(trace: &mut Trace) {
    for attempt in &mut trace.attempts {
        attempt.latency_ms = 0.0;
    }
}

/// A provider's health with its timings and timestamps left out.
fn health_view(mut health: ProviderHealth) -> ProviderHealth {
    health.ewma_latency_ms = 0.0;
    health.last_error_at_ms = None;
    health.last_crash_at_ms = None;
    health.cluster_open_remaining_ms = None;
    health
}

struct Run {
    cluster: TestCluster,
    steps: Vec<Step>,
}

impl Run {
    async fn query(&self, route: &str, request: &QueryRequest) -> Answer {
        Answer::of(self.cluster.query(route, request).await.unwrap())
    }

    async fn providers(&self) -> Vec<ProviderHealth> {
        let health = self.cluster.nodes[0].health().await;
        let mut providers: Vec<_> = health.providers.into_iter().map(health_view).collect();
        providers.sort_by(|a, b| a.name.cmp(&b.name));
        providers
    }

    /// Waits for every call to end (a slot is given back just after its answer), then records the step.
    async fn record(&mut self, name: &'static str, answers: Vec<Answer>) -> &Step {
        let this = &*self;
        let providers = eventually("the providers' calls to end", Duration::from_secs(10), || async {
            let providers = this.providers().await;
            providers.iter().all(|p| p.in_flight == 0).then_some(providers)
        })
        .await
        .unwrap();
        let mock = &self.cluster.mock;
        let upstream = (mock.calls(PRIMARY_MODEL), mock.calls(SECONDARY_MODEL));
        self.steps.push(Step { name, answers, providers, upstream });
        self.steps.last().unwrap()
    }

    async fn primary(&self) -> ProviderHealth {
        self.providers().await.into_iter().find(|p| p.name == "primary").unwrap()
    }
}

fn with_id(text: &str, id: &str) -> QueryRequest {
    let mut request = ask(text);
    request.id = Some(id.into());
    request
}

/// Counts the provider calls published on NATS in the cluster's namespace.
async fn count_bus_calls(cluster: &TestCluster) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    for provider in ["primary", "secondary"] {
        let mut sub = cluster.client.subscribe(&cluster.subjects.provider_call(provider)).await.unwrap();
        let count = count.clone();
        tokio::spawn(async move {
            while sub.next().await.is_some() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    count
}

/// The scenario, on one node whose router reaches its providers by `path`.
async fn scenario(path: Calls) -> Vec<Step> {
    let cluster = TestCluster::start_with(1, &switchyard_testkit::redis_url(), |_, config| {
        let mut config = path.apply(config);
        let primary = &mut config.providers[0];
        // One call at a time; a trip after six calls in the window; an open interval long enough that the steps
        // made while it is open never meet its end, even on a slow machine.
        primary.max_in_flight = 1;
        primary.breaker.minimum_calls = 6;
        primary.breaker.open_wait_base_ms = 2_000;
        primary.breaker.open_wait_max_ms = 4_000;
        config
    })
    .await
    .unwrap();
    let bus_calls = count_bus_calls(&cluster).await;
    let mut run = Run { cluster, steps: Vec::new() };

    let healthy = run.query("chat", &ask("hello")).await;
    assert_eq!(healthy.outcomes(), [("primary", "success")]);
    run.record("healthy", vec![healthy]).await;

    // Three retries of the primary, then the fallback: four failures of five calls, below minimum_calls.
    run.cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));
    let retried = run.query("retrying", &ask("retry me")).await;
    let expected = [("primary", "retryable"), ("primary", "retryable"), ("primary", "retryable")];
    assert_eq!(retried.outcomes()[..3], expected);
    let step = run.record("retry_then_fallback", vec![retried]).await;
    assert_eq!(step.providers[0].breaker, Some(BreakerState::Closed));

    // The sixth call trips the primary's breaker.
    let tripping = vec![run.query("chat", &ask("trip 1")).await, run.query("chat", &ask("trip 2")).await];
    let step = run.record("trip", tripping).await;
    assert_eq!(step.providers[0].breaker, Some(BreakerState::Open));

    // While open, the node refuses without calling upstream; a route without a fallback gets a typed error.
    let refused = vec![run.query("chat", &ask("while open")).await, run.query("solo", &ask("nothing else")).await];
    assert_eq!(refused[0].outcomes(), [("primary", "refused_local_breaker_open"), ("secondary", "success")]);
    assert_eq!(refused[1].outcomes(), [("primary", "refused_local_breaker_open")]);
    run.record("refused_while_open", refused).await;

    // The provider heals; once the open interval is over, one probe closes the breaker.
    run.cluster.mock.clear_behavior(PRIMARY_MODEL);
    eventually("the breaker to let a probe through", Duration::from_secs(10), || async {
        (run.primary().await.breaker == Some(BreakerState::HalfOpen)).then_some(())
    })
    .await
    .unwrap();
    let probe = run.query("solo", &ask("probe")).await;
    assert_eq!(probe.outcomes(), [("primary", "success")]);
    let step = run.record("probe", vec![probe]).await;
    assert_eq!(step.providers[0].breaker, Some(BreakerState::Closed));

    let streamed = Answer::stream(run.cluster.stream("chat", &ask("one two three four five")).await.unwrap());
    run.record("stream", vec![streamed]).await;

    // The same id is answered once: the copy gets the kept answer, another request under it a conflict.
    let answers = vec![
        run.query("chat", &with_id("only once", "replay-1")).await,
        run.query("chat", &with_id("only once", "replay-1")).await,
        run.query("chat", &with_id("something else", "replay-1")).await,
    ];
    assert_eq!(answers[0], answers[1], "the replay is the kept answer");
    let step = run.record("idempotent_replay", answers).await;
    assert_eq!(step.upstream.0, 6 + 1 + 1 + 1, "one upstream call for the id");

    // At its in-flight limit the primary refuses the node's next call, which falls back.
    run.cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::default().with_latency_ms(600));
    let long_call = ask("long call");
    let busy = run.cluster.query("chat", &long_call);
    let refused = async {
        eventually("the first call to hold the primary's slot", Duration::from_secs(5), || async {
            (run.primary().await.in_flight == 1).then_some(())
        })
        .await
        .unwrap();
        run.query("chat", &ask("one too many")).await
    };
    let (busy, refused) = tokio::join!(busy, refused);
    let answers = vec![Answer::of(busy.unwrap()), refused];
    assert_eq!(answers[1].outcomes(), [("primary", "refused_overloaded"), ("secondary", "success")]);
    run.record("in_flight_limit", answers).await;

    // A slow primary is hedged; the loser is cancelled on its node, uncharged.
    run.cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::default().with_latency_ms(3_000));
    let hedged = run.query("hedged", &ask("hedge me")).await;
    assert_eq!(hedged.outcomes(), [("primary", "cancelled"), ("secondary", "success")]);
    run.record("hedge", vec![hedged]).await;

    let bus_calls = bus_calls.load(Ordering::Relaxed);
    match path {
        Calls::Local => assert_eq!(bus_calls, 0, "a local run published provider calls on NATS"),
        Calls::OverNats => assert!(bus_calls >= 15, "the run over NATS published only {bus_calls} provider calls"),
    }
    let Run { cluster, steps } = run;
    cluster.shutdown().await;
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_calls_and_calls_over_nats_give_the_same_traces_breakers_and_replays() {
    let local = scenario(Calls::Local).await;
    let over_nats = scenario(Calls::OverNats).await;
    assert_eq!(local.len(), over_nats.len());
    for (local, over_nats) in local.iter().zip(&over_nats) {
        assert_eq!(local, over_nats, "step {} differs: local calls first, calls over NATS second", local.name);
    }
}
