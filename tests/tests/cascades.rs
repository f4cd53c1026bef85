//! Cascades (issue 7), end to end on the real NATS and Redis with the mock providers.
//!
//! One node routes client queries and hosts the providers (`weak`, `strong`, and `judge`, the model asked for
//! a self-evaluation of the weak answer); one or two other nodes coordinate the cascade `math` (weak first,
//! escalate to strong when the judge's confidence is below 0.7). The judge's score is set on the mock, so a test
//! decides whether the weak stage is confident.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use switchyard_bus::{Bus, Message, gather};
use switchyard_e2e::{ask, connect, reply, unique_namespace};
use switchyard_mock::{Behavior, MockConfig, MockServer};
use switchyard_protocol::client::{CascadeOverride, QueryOutcome, QueryReply, QueryRequest};
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, NodeConfig, SharedState};
use switchyard_state::{BreakerStore, RedisOptions, RedisStore};
use switchyard_testkit::{eventually, redis_url};

const WEAK: &str = "cascade-weak";
const STRONG: &str = "cascade-strong";
const JUDGE: &str = "cascade-judge";
/// The weak model of cascade `lp` (judged by its token logprobs), priced at two thirds of the strong one: the
/// cascade stops paying once more than a third of its queries escalate.
const PRICEY: &str = "cascade-pricey";

fn config(mock: &MockServer, namespace: &str, node: &str, roles: &str) -> NodeConfig {
    let openai = mock.openai_base_url();
    let provider = |name: &str, model: &str, price: f64| {
        format!(
            r#"
            [[providers]]
            name = "{name}"
            kind = "openai"
            base_url = "{openai}"
            model = "{model}"
            api_key = "sk-cascade-test"
            input_price_per_mtok = {price}
            output_price_per_mtok = {price}
            timeout_ms = 5000
            "#
        )
    };
    let toml = format!(
        r#"
        [node]
        name = "{node}"
        namespace = "{namespace}"
        roles = {roles}
        drain_timeout_ms = 1000
        call_keepalive_ms = 200
        [cluster]
        poll_interval_ms = 200
        {weak}
        {strong}
        {judge}
        [[cascades]]
        name = "math"
        escalation_window_s = 60
        health = {{ min_decisions = 10 }}
        [[cascades.stages]]
        target = "weak"
        threshold = 0.7
        estimator = {{ kind = "self_eval", target = "judge" }}
        [[cascades.stages]]
        target = "strong"
        [[routes]]
        name = "math"
        cascade = "math"
        {pricey}
        [[cascades]]
        name = "lp"
        escalation_window_s = 60
        health = {{ min_decisions = 10 }}
        [[cascades.stages]]
        target = "pricey"
        threshold = 0.5
        estimator = {{ kind = "logprobs" }}
        [[cascades.stages]]
        target = "strong"
        [[routes]]
        name = "lp"
        cascade = "lp"
        "#,
        pricey = provider("pricey", PRICEY, 20.0),
        weak = provider("weak", WEAK, 0.5),
        strong = provider("strong", STRONG, 30.0),
        judge = provider("judge", JUDGE, 0.5),
    );
    NodeConfig::from_toml(&toml).unwrap()
}

struct Cluster {
    mock: MockServer,
    namespace: String,
    subjects: Subjects,
    client: Arc<dyn Bus>,
    front: Node,
    coordinators: Vec<Node>,
}

async fn store(namespace: &str) -> RedisStore {
    let options = RedisOptions { key_prefix: format!("switchyard:test:{namespace}:"), ..RedisOptions::default() };
    RedisStore::connect_lazy(&redis_url(), options).await.unwrap()
}

impl Cluster {
    async fn start(coordinators: usize) -> Cluster {
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let namespace = unique_namespace();
        let front = config(&mock, &namespace, "front", r#"["router", "providers"]"#);
        let shared = SharedState::from_store(store(&namespace).await);
        let front = Node::start(&front, connect().await.unwrap(), shared).await.unwrap();
        let mut cluster = Cluster {
            mock,
            subjects: Subjects::new(&namespace),
            namespace,
            client: connect().await.unwrap(),
            front,
            coordinators: Vec::new(),
        };
        for i in 1..=coordinators {
            cluster.add_coordinator(i).await;
        }
        cluster
    }

    async fn add_coordinator(&mut self, i: usize) {
        let config = config(&self.mock, &self.namespace, &format!("coord-{i}"), r#"["cascade"]"#);
        let shared = SharedState::from_store(store(&self.namespace).await);
        self.coordinators.push(Node::start(&config, connect().await.unwrap(), shared).await.unwrap());
    }

    fn judge(&self, score: &str) {
        self.mock.set_behavior(JUDGE, Behavior::answering(score));
    }

    async fn query(&self, text: &str) -> QueryReply {
        self.query_on("math", text).await
    }

    async fn query_on(&self, route: &str, text: &str) -> QueryReply {
        self.ask_on(route, &ask(text)).await
    }

    async fn ask(&self, request: &QueryRequest) -> QueryReply {
        self.ask_on("math", request).await
    }

    async fn ask_on(&self, route: &str, request: &QueryRequest) -> QueryReply {
        let mut request = request.clone();
        request.deadline_ms = Some(10_000);
        let payload = Bytes::from(serde_json::to_vec(&request).unwrap());
        let message = Message::new(self.subjects.query(route), payload);
        let answer = self.client.request(message, Duration::from_secs(12)).await.unwrap();
        reply(serde_json::from_slice::<QueryOutcome>(&answer.payload).unwrap())
    }

    /// Every coordinator's view of cascade `math`, by node.
    async fn statuses(&self) -> Vec<Value> {
        self.statuses_of("math").await
    }

    async fn statuses_of(&self, cascade: &str) -> Vec<Value> {
        let ask = Message::new(self.subjects.admin_cascades(), Bytes::new());
        let replies = gather(self.client.as_ref(), ask, Duration::from_millis(500), usize::MAX).await.unwrap();
        let mut all = Vec::new();
        for message in replies {
            let statuses: Vec<Value> = serde_json::from_slice(&message.payload).unwrap();
            all.extend(statuses.into_iter().filter(|s| s["name"] == cascade));
        }
        all
    }

    async fn shutdown(self) {
        for node in self.coordinators {
            node.shutdown().await;
        }
        self.front.shutdown().await;
        self.mock.shutdown().await;
    }
}

fn verdicts(reply: &QueryReply) -> Vec<String> {
    reply
        .trace
        .stages
        .iter()
        .map(|s| {
            let verdict = &s["verdict"];
            format!("{}:{}", verdict["verdict"].as_str().unwrap_or("?"), verdict["reason"].as_str().unwrap_or(""))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confident_weak_stage_answers_and_an_unsure_one_escalates() {
    let cluster = Cluster::start(1).await;

    cluster.judge("Confidence: 0.9");
    let confident = cluster.query("what is 2 + 2?").await;
    assert_eq!(confident.provider, "weak", "{:?}", confident.trace);
    assert_eq!(confident.content, "echo: what is 2 + 2?");
    let stage = &confident.trace.stages[0];
    assert_eq!(stage["estimator"], "self_eval");
    assert_eq!(stage["threshold"], 0.7);
    assert!((stage["confidence"].as_f64().unwrap() - 0.9).abs() < 1e-9, "{stage}");
    assert_eq!(verdicts(&confident), ["stopped:confident"]);
    let info = confident.trace.cascade.as_ref().unwrap();
    assert_eq!((info.name.as_str(), info.node.as_str()), ("math", "coord-1"));

    cluster.judge("I am not sure: 2/10");
    let unsure = cluster.query("prove the Riemann hypothesis").await;
    assert_eq!(unsure.provider, "strong", "{:?}", unsure.trace);
    assert_eq!(verdicts(&unsure), ["escalated:below_threshold", "stopped:last_stage"]);
    assert!((unsure.trace.stages[0]["confidence"].as_f64().unwrap() - 0.2).abs() < 1e-9);
    // Every call of every stage is in the trace: weak, judge, strong.
    let providers: Vec<&str> = unsure.trace.attempts.iter().map(|a| a.provider.as_str()).collect();
    assert_eq!(providers, ["weak", "judge", "strong"]);

    // A query may stop the cascade early, or lower its threshold, within the operator's limits.
    let mut request = ask("prove it anyway");
    request.cascade = Some(CascadeOverride { threshold: None, max_stage: Some(0) });
    let capped = cluster.ask(&request).await;
    assert_eq!(capped.provider, "weak");
    assert_eq!(verdicts(&capped), ["stopped:max_stage"]);
    assert_eq!(capped.trace.cascade.as_ref().unwrap().max_stage, Some(0));
    let mut request = ask("prove it with a low bar");
    request.cascade = Some(CascadeOverride { threshold: Some(0.1), max_stage: None });
    let lenient = cluster.ask(&request).await;
    assert_eq!(lenient.provider, "weak", "0.2 clears a 0.1 threshold");
    assert_eq!(lenient.trace.cascade.as_ref().unwrap().threshold, Some(0.1));

    // A reply that is no score is low confidence, logged, never a failure.
    cluster.judge("no idea what you mean");
    let unparsable = cluster.query("what is love?").await;
    assert_eq!(unparsable.provider, "strong");
    let stage = &unparsable.trace.stages[0];
    assert!(stage["confidence"].is_null() && !stage["unavailable"].is_null(), "{stage}");
    assert_eq!(verdicts(&unparsable), ["escalated:estimate_unavailable", "stopped:last_stage"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_read_one_escalation_rate_from_redis() {
    let cluster = Cluster::start(2).await;
    // 12 queries: 4 confident, 8 escalated; the queue group spreads them over both coordinators.
    let mut ran_on = std::collections::BTreeSet::new();
    for (i, score) in ["0.9", "0.1", "0.1"].iter().cycle().take(12).enumerate() {
        cluster.judge(score);
        let answer = cluster.query(&format!("question {i}")).await;
        ran_on.insert(answer.trace.cascade.unwrap().node);
    }
    eprintln!("runs went to {ran_on:?}");
    let statuses = eventually("both coordinators see the cluster's 12 decisions", Duration::from_secs(10), || async {
        let statuses = cluster.statuses().await;
        let seen = |s: &Value| (s["stages"][0]["direct"].as_u64(), s["stages"][0]["escalated"].as_u64());
        (statuses.len() == 2 && statuses.iter().all(|s| seen(s) == (Some(4), Some(8)))).then_some(statuses)
    })
    .await
    .unwrap();
    for status in &statuses {
        let stage = &status["stages"][0];
        assert!((stage["escalation_rate"].as_f64().unwrap() - 8.0 / 12.0).abs() < 1e-9);
        assert_eq!(stage["health"], "act", "{status}");
        // 67 % escalations are past the break-even point only if the weak stage costs more than a third of the
        // strong one; here it is far cheaper, so the cascade still pays.
        assert_eq!(status["cost"]["costs_more_than_strong"], false, "{status}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_stage_whose_breaker_is_open_is_skipped() {
    let cluster = Cluster::start(1).await;
    cluster.judge("0.9");
    store(&cluster.namespace).await.force_open("weak").await.unwrap();
    let started = Instant::now();
    let skipped = eventually("the weak stage is skipped", Duration::from_secs(5), || async {
        let answer = cluster.query("anything").await;
        (answer.provider == "strong").then_some(answer)
    })
    .await
    .unwrap();
    assert_eq!(verdicts(&skipped), ["skipped:", "stopped:last_stage"]);
    assert_eq!(skipped.trace.stages[0]["verdict"]["reason"]["why"], "all_tripped", "{:?}", skipped.trace.stages);
    // Never waited on the open breaker.
    assert!(skipped.latency_ms < 1_000.0, "{} ms", skipped.latency_ms);
    eprintln!("skipped after {:?}", started.elapsed());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_run_loses_no_query() {
    const QUERIES: usize = 3;
    let mut cluster = Cluster::start(1).await;
    cluster.judge("0.9");
    cluster.mock.set_behavior(WEAK, Behavior::default().with_latency_ms(2_000));
    let client = cluster.client.clone();
    let subject = cluster.subjects.query("math");
    let sent = Instant::now();
    let queries: Vec<_> = (0..QUERIES)
        .map(|i| {
            let (client, subject) = (client.clone(), subject.clone());
            tokio::spawn(async move {
                let mut request = ask(&format!("slow {i}"));
                request.deadline_ms = Some(15_000);
                let payload = Bytes::from(serde_json::to_vec(&request).unwrap());
                let answer = client.request(Message::new(subject, payload), Duration::from_secs(16)).await.unwrap();
                (reply(serde_json::from_slice::<QueryOutcome>(&answer.payload).unwrap()), sent.elapsed())
            })
        })
        .collect();
    // Every run is at its weak stage on coord-1; then coord-2 joins and coord-1 dies.
    eventually("every run is calling the weak stage", Duration::from_secs(5), || async {
        (cluster.mock.calls(WEAK) == QUERIES as u64).then_some(())
    })
    .await
    .unwrap();
    cluster.add_coordinator(2).await;
    let first = cluster.coordinators.remove(0);
    first.abort().await;
    let killed_at = sent.elapsed();
    for query in queries {
        let (answer, took) = query.await.unwrap();
        let info = answer.trace.cascade.as_ref().unwrap();
        eprintln!("{}: answered by {} on {} after {took:?}", answer.content, answer.provider, info.node);
        assert_eq!(info.node, "coord-2", "the survivor ran it again");
        assert_eq!(answer.provider, "weak");
        // Lost after three 200 ms heartbeat periods, then the whole cascade again (2 s weak stage).
        assert!(took < killed_at + Duration::from_secs(4), "{took:?}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_health_follows_a_weak_stage_made_worse_and_the_cost_flag_fires_past_break_even() {
    let cluster = Cluster::start(1).await;
    let weak = |rate: f64| Behavior { unsure_rate: rate, unsure_marker: Some("#never#".into()), ..Behavior::default() };
    // Waits until the coordinator's view of `lp` shows `decisions` decisions; returns the first stage's status.
    let settled = |decisions: u64| {
        let cluster = &cluster;
        async move {
            eventually(&format!("{decisions} decisions counted"), Duration::from_secs(10), || async {
                let status = cluster.statuses_of("lp").await.pop()?;
                let stage = &status["stages"][0];
                let seen = stage["direct"].as_u64()? + stage["escalated"].as_u64()?;
                (seen == decisions).then_some(status)
            })
            .await
            .unwrap()
        }
    };
    let mut asked = 0;
    let mut ask_n = |n: usize| {
        let start = asked;
        asked += n;
        let cluster = &cluster;
        async move {
            for i in start..start + n {
                cluster.query_on("lp", &format!("lp question {i}")).await;
            }
        }
    };

    // A sure weak model: nothing escalates.
    cluster.mock.set_behavior(PRICEY, weak(0.0));
    ask_n(10).await;
    let status = settled(10).await;
    assert_eq!(status["stages"][0]["health"], "healthy", "{status}");
    assert_eq!(status["cost"]["costs_more_than_strong"], false);

    // Made worse at run time: every answer unsure. 4 of 14 escalated (29 %): warn, still below break-even.
    cluster.mock.set_behavior(PRICEY, weak(1.0));
    ask_n(4).await;
    let status = settled(14).await;
    assert_eq!(status["stages"][0]["health"], "warn", "{status}");
    let break_even = status["cost"]["break_even_rate"].as_f64().unwrap();
    assert!((0.30..0.37).contains(&break_even), "weak at 2/3 of strong's price: {status}");
    assert_eq!(status["cost"]["costs_more_than_strong"], false, "{status}");

    // 10 of 20 (50 %): act, and past break-even the cascade costs more than the strong model alone.
    ask_n(6).await;
    let status = settled(20).await;
    assert_eq!(status["stages"][0]["health"], "act", "{status}");
    assert_eq!(status["cost"]["costs_more_than_strong"], true, "{status}");
    let cost = &status["cost"];
    eprintln!(
        "expected {} measured {} strong-only {}",
        cost["expected_per_query"], cost["measured_per_query"], cost["strong_only_per_query"]
    );
    cluster.shutdown().await;
}
