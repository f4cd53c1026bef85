//! Quality routing (issue 8), end to end on the real NATS and Redis with the mock providers.
//!
//! One node routes and hosts four providers on the mock (`cheap`, `strong`, and two more proposers for the
//! ensemble). Routes:
//! - `ask`: a rule router, long or `prove`-tagged or gold-tier questions to `strong`, others to `cheap`;
//! - `learned`: a binary router trained in the test (on generated outcome data in the generic JSONL format) whose
//!   models map to `cheap` and `strong`;
//! - `panel`: an ensemble of three proposers, two called per query, and an aggregator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use switchyard_bus::{Bus, Message, gather};
use switchyard_core::BreakerState;
use switchyard_e2e::{ask, connect, reply, unique_namespace};
use switchyard_learn::FeatureConfig;
use switchyard_mock::{Behavior, MockConfig, MockError, MockServer};
use switchyard_protocol::client::{QueryOutcome, QueryReply, QueryRequest};
use switchyard_protocol::subjects::Subjects;
use switchyard_quality::entry::{DataSource, RouterKind, TrainRouterOptions, train_router};
use switchyard_quality::train::BinaryTrainOptions;
use switchyard_runtime::quality::{ReloadOutcome, RouterStatus};
use switchyard_runtime::{Node, NodeConfig, SharedState};
use switchyard_state::{RedisOptions, RedisStore};
use switchyard_testkit::{eventually, redis_url};

const CHEAP: &str = "qr-cheap-model";
const STRONG: &str = "qr-strong-model";
const EASY: [&str; 8] = ["add", "sum", "plus", "count", "list", "name", "copy", "echo"];
const HARD: [&str; 8] = ["prove", "derive", "optimize", "integral", "theorem", "lemma", "asymptotic", "proof"];

/// Prompt `i` of the generated distribution: even ones are hard (only the strong model answers them well).
fn prompt(i: usize) -> String {
    let words = if i.is_multiple_of(2) { HARD } else { EASY };
    format!("please {} the {} of item {}", words[i % 8], words[(i / 8) % 8], i % 13)
}

/// A scratch directory of this test run.
fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-qr-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Trains a binary router on 600 generated queries (generic JSONL: `small` fails the hard ones, `large` answers
/// all) and returns its file.
fn train(dir: &Path) -> PathBuf {
    let data = dir.join("outcomes.jsonl");
    let mut file = std::fs::File::create(&data).unwrap();
    for i in 0..600 {
        let small = if i % 2 == 0 { 0.0 } else { 1.0 };
        let line = serde_json::json!({
            "id": format!("q{i}"),
            "prompt": prompt(i),
            "outcomes": {"small": {"score": small, "cost_usd": 0.0001}, "large": {"score": 1.0, "cost_usd": 0.002}},
        });
        writeln!(file, "{line}").unwrap();
    }
    let out = dir.join("router.json");
    let options = TrainRouterOptions {
        data: DataSource::Outcomes { path: data, prices: None },
        kind: RouterKind::Binary { weak: Some("small".into()), strong: Some("large".into()) },
        test_fraction: None,
        seed: 1,
        binary: BinaryTrainOptions {
            name: "toy".into(),
            features: FeatureConfig { hash_bits: 12, ..FeatureConfig::default() },
            l2_grid: vec![1e-3],
            folds: 3,
            ..BinaryTrainOptions::default()
        },
        nway: Default::default(),
        out: out.clone(),
    };
    train_router(&options).unwrap();
    out
}

/// The node's configuration; `rules` is the `ask` router's rule list (so a reload can change it).
fn config_text(mock: &MockServer, namespace: &str, router_file: &Path, rules: &str) -> String {
    let openai = mock.openai_base_url();
    let provider = |name: &str, model: &str, price: f64| {
        format!(
            r#"
            [[providers]]
            name = "{name}"
            kind = "openai"
            base_url = "{openai}"
            model = "{model}"
            api_key = "sk-quality-test"
            input_price_per_mtok = {price}
            output_price_per_mtok = {price}
            timeout_ms = 5000
            [providers.breaker]
            window_calls = 10
            minimum_calls = 4
            open_wait_base_ms = 30000
            open_wait_max_ms = 30000
            "#
        )
    };
    format!(
        r#"
        [node]
        name = "front"
        namespace = "{namespace}"
        drain_timeout_ms = 1000
        [cluster]
        poll_interval_ms = 200
        min_reporting_nodes = 1
        {cheap}
        {strong}
        {p1}
        {p2}
        [[routers]]
        kind = "rules"
        name = "by-length"
        default = "cheap"
        {rules}
        [[routers]]
        kind = "learned"
        name = "toy"
        file = "{file}"
        targets = {{ small = "cheap", large = "strong" }}
        [[ensembles]]
        name = "moa"
        proposers = ["p1", "p2", "cheap"]
        k = 2
        aggregator = "strong"
        [[routes]]
        name = "ask"
        router = "by-length"
        providers = ["cheap", "strong"]
        retry = {{ max_attempts = 1 }}
        [[routes]]
        name = "learned"
        router = "toy"
        providers = ["cheap", "strong"]
        [[routes]]
        name = "panel"
        ensemble = "moa"
        "#,
        cheap = provider("cheap", CHEAP, 0.5),
        strong = provider("strong", STRONG, 30.0),
        p1 = provider("p1", "qr-proposer-1", 1.0),
        p2 = provider("p2", "qr-proposer-2", 1.0),
        file = router_file.display(),
    )
}

const RULES: &str = r#"
        [[routers.rules]]
        name = "long"
        model = "strong"
        min_chars = 200
        [[routers.rules]]
        name = "tagged"
        model = "strong"
        keywords = ["prove"]
        [[routers.rules]]
        name = "gold"
        model = "strong"
        metadata = { tier = ["gold"] }
"#;

struct Front {
    mock: MockServer,
    dir: PathBuf,
    namespace: String,
    subjects: Subjects,
    client: Arc<dyn Bus>,
    node: Node,
}

impl Front {
    async fn start() -> Front {
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let dir = scratch_dir();
        let router = train(&dir);
        let namespace = unique_namespace();
        let path = dir.join("node.toml");
        std::fs::write(&path, config_text(&mock, &namespace, &router, RULES)).unwrap();
        let config = NodeConfig::load(&path).unwrap();
        let options = RedisOptions { key_prefix: format!("switchyard:test:{namespace}:"), ..RedisOptions::default() };
        let store = RedisStore::connect_lazy(&redis_url(), options).await.unwrap();
        let node = Node::start(&config, connect().await.unwrap(), SharedState::from_store(store)).await.unwrap();
        Front { mock, dir, subjects: Subjects::new(&namespace), namespace, client: connect().await.unwrap(), node }
    }

    async fn query(&self, route: &str, request: &QueryRequest) -> QueryOutcome {
        let payload = Bytes::from(serde_json::to_vec(request).unwrap());
        let ask = Message::new(self.subjects.query(route), payload);
        let message = self.client.request(ask, Duration::from_secs(10)).await.unwrap();
        serde_json::from_slice(&message.payload).unwrap()
    }

    async fn ask(&self, route: &str, request: &QueryRequest) -> QueryReply {
        reply(self.query(route, request).await)
    }

    async fn routers(&self) -> Vec<RouterStatus> {
        let ask = Message::new(self.subjects.admin_routers(), Bytes::new());
        let replies = gather(&self.client, ask, Duration::from_millis(500), 1).await.unwrap();
        assert_eq!(replies.len(), 1, "one router node answers");
        serde_json::from_slice(&replies[0].payload).unwrap()
    }

    async fn reload(&self) -> ReloadOutcome {
        let ask = Message::new(self.subjects.admin_routers_reload(), Bytes::new());
        let replies = gather(&self.client, ask, Duration::from_secs(2), 1).await.unwrap();
        serde_json::from_slice(&replies[0].payload).unwrap()
    }

    async fn stop(self) {
        self.node.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn reason(reply: &QueryReply) -> Value {
    reply.trace.decision.as_ref().expect("a routed answer carries its decision").reason.clone()
}

fn gold(text: &str) -> QueryRequest {
    let mut request = ask(text);
    request.metadata.insert("tier".into(), "gold".into());
    request
}

#[tokio::test]
async fn a_rule_route_sends_short_questions_cheap_and_long_tagged_or_gold_ones_strong() {
    let front = Front::start().await;
    let short = front.ask("ask", &ask("What is 2 + 2?")).await;
    assert_eq!(short.provider, "cheap");
    let decision = short.trace.decision.as_ref().unwrap();
    assert_eq!((decision.router.as_str(), decision.model.as_str()), ("by-length", "cheap"));
    assert_eq!(reason(&short)["kind"], "default");

    let long = front.ask("ask", &ask(&"Tell me about the history of rivers. ".repeat(8))).await;
    assert_eq!(long.provider, "strong");
    assert_eq!(reason(&long)["kind"], "rule_matched");
    assert_eq!(reason(&long)["rule"], "long");

    let tagged = front.ask("ask", &ask("Prove that there are infinitely many primes.")).await;
    assert_eq!((tagged.provider.as_str(), reason(&tagged)["rule"].as_str()), ("strong", Some("tagged")));
    let vip = front.ask("ask", &gold("Hi!")).await;
    assert_eq!((vip.provider.as_str(), reason(&vip)["rule"].as_str()), ("strong", Some("gold")));

    let status = front.routers().await;
    let rules = status.iter().find(|s| s.router == "by-length").unwrap();
    assert_eq!(rules.decisions, 4);
    assert_eq!(rules.by_model.get("strong"), Some(&3));
    front.stop().await;
}

#[tokio::test]
async fn a_learned_route_sends_hard_prompts_strong_with_its_score_and_threshold() {
    let front = Front::start().await;
    let (mut strong, mut cheap) = (0, 0);
    for i in 1000..1040 {
        let reply = front.ask("learned", &ask(&prompt(i))).await;
        let decision = reply.trace.decision.clone().unwrap();
        let (score, threshold) = (decision.score.expect("a score"), decision.threshold.expect("a threshold"));
        let hard = i % 2 == 0;
        let expected = if hard { "strong" } else { "cheap" };
        assert_eq!(reply.provider, expected, "prompt {:?}: score {score} threshold {threshold}", prompt(i));
        assert_eq!(decision.model, if hard { "large" } else { "small" });
        assert_eq!(decision.target, expected);
        assert_eq!(hard, score >= threshold, "score {score} threshold {threshold}");
        if hard { strong += 1 } else { cheap += 1 }
    }
    assert_eq!((strong, cheap), (20, 20));
    // The realised strong share is counted live, next to the calibration target.
    let status = front.routers().await;
    let toy = status.iter().find(|s| s.router == "toy").unwrap();
    assert_eq!(toy.kind, "binary");
    assert_eq!(toy.decisions, 40);
    assert_eq!(toy.strong_share, Some(0.5));
    assert!(toy.target_strong_share.is_some());

    // A query unlike the training data goes to the strong model, and says so.
    let odd = front.ask("learned", &ask("Ψυχή καὶ σῶμα· τί ἐστι τὸ ἀγαθόν; Ζητοῦμεν ἀλήθειαν ἐν λόγοις.")).await;
    assert_eq!(odd.provider, "strong");
    assert_eq!(reason(&odd)["kind"], "out_of_distribution", "{:?}", odd.trace.decision);
    front.stop().await;
}

#[tokio::test]
async fn a_shifted_stream_of_queries_is_reported_as_drift() {
    let front = Front::start().await;
    for i in 0..220 {
        let shifted = format!("Translate to French: the weather in city number {i} is sunny and warm today");
        front.ask("learned", &ask(&shifted)).await;
    }
    let status = front.routers().await;
    let toy = status.iter().find(|s| s.router == "toy").unwrap();
    let drift = toy.drift.as_ref().expect("a drift report over 220 queries");
    assert_eq!(drift.window, 220);
    assert_eq!(format!("{:?}", drift.status), "Significant", "{drift}");
    assert!(toy.out_of_distribution > 100, "{toy:?}");
    front.stop().await;
}

#[tokio::test]
async fn a_chosen_model_that_is_tripped_falls_back_along_the_chain() {
    let front = Front::start().await;
    front.mock.set_behavior(STRONG, Behavior::failing(MockError::status(500)));
    let long = "Explain, step by step, why the sky looks blue at noon and red at sunset. ".repeat(4);
    // Strong fails, so the walk falls back to cheap; after enough failures strong's breaker opens.
    eventually("strong's cluster breaker opens", Duration::from_secs(10), || async {
        let reply = front.ask("ask", &ask(&long)).await;
        assert_eq!(reply.provider, "cheap", "the chain's next target answers");
        let health = front.node.health().await;
        let strong = health.providers.iter().find(|p| p.name == "strong").unwrap();
        (strong.cluster_breaker == Some(BreakerState::Open)).then_some(())
    })
    .await
    .unwrap();
    let calls = front.mock.calls(STRONG);
    let reply = front.ask("ask", &ask(&long)).await;
    assert_eq!(reply.provider, "cheap");
    assert_eq!(front.mock.calls(STRONG), calls, "a tripped model is not called");
    let decision = reply.trace.decision.clone().unwrap();
    assert_eq!(decision.model, "cheap", "{decision:?}");
    let why = &decision.reason;
    assert_eq!(why["kind"], "fallback", "{decision:?}");
    assert_eq!(why["preferred"], "strong");
    assert_eq!(why["because"]["rule"], "long");
    let status = front.routers().await;
    assert!(status.iter().find(|s| s.router == "by-length").unwrap().fallbacks >= 1);
    front.stop().await;
}

#[tokio::test]
async fn an_ensemble_query_reaches_k_proposers_and_one_aggregator() {
    let front = Front::start().await;
    front.mock.set_behavior("qr-proposer-1", Behavior::answering("four"));
    front.mock.set_behavior("qr-proposer-2", Behavior::answering("4"));
    front.mock.set_behavior(STRONG, Behavior::answering("The answer is 4."));
    let reply = front.ask("panel", &ask("What is 2 + 2?")).await;
    assert_eq!(reply.content, "The answer is 4.");
    assert_eq!(reply.provider, "strong");
    let ensemble = reply.trace.ensemble.clone().expect("the ensemble's trace");
    let proposers: Vec<_> = ensemble.proposers.iter().map(|p| (p.target.as_str(), p.outcome.as_str())).collect();
    assert_eq!(proposers, [("p1", "success"), ("p2", "success")], "the first k = 2 proposers");
    assert_eq!(ensemble.aggregator.as_ref().unwrap().target, "strong");
    assert_eq!(front.mock.calls("qr-proposer-1"), 1);
    assert_eq!(front.mock.calls("qr-proposer-2"), 1);
    assert_eq!(front.mock.calls(CHEAP), 0, "the third proposer is not needed");
    assert_eq!(front.mock.calls(STRONG), 1, "one aggregator call");
    let proposal_costs: f64 = ensemble.proposers.iter().map(|p| p.cost_usd).sum();
    let aggregator_cost = ensemble.aggregator.as_ref().unwrap().cost_usd;
    assert!((reply.cost_usd - proposal_costs - aggregator_cost).abs() < 1e-12, "the reply pays for every call");

    // A failing proposer is replaced by nobody (k is a bound), and the aggregator works with what it got.
    front.mock.set_behavior("qr-proposer-1", Behavior::failing(MockError::status(400)));
    let reply = front.ask("panel", &ask("What is 3 + 3?")).await;
    let ensemble = reply.trace.ensemble.clone().unwrap();
    assert_eq!(ensemble.proposers.iter().filter(|p| p.outcome == "success").count(), 1);
    assert_eq!(reply.provider, "strong");
    front.stop().await;
}

#[tokio::test]
async fn rules_reload_from_the_file_without_dropping_queries_and_a_bad_file_is_refused() {
    let front = Front::start().await;
    let path = front.dir.join("node.toml");
    let router = front.dir.join("router.json");
    let hello = ask("hello there");
    assert_eq!(front.ask("ask", &hello).await.provider, "cheap");

    // Queries keep flowing while the file changes: none is lost, and the new rule applies after the reload.
    let traffic = async {
        let mut answered = 0;
        for i in 0..60 {
            let outcome = front.query("ask", &ask(&format!("hello {i}"))).await;
            assert!(matches!(outcome, QueryOutcome::Reply(_)), "{outcome:?}");
            answered += 1;
            tokio::task::yield_now().await;
        }
        answered
    };
    let change = async {
        let greeting = format!(
            "{RULES}\n        [[routers.rules]]\n        name = \"greeting\"\n        model = \"strong\"\n        keywords = [\"hello\"]\n"
        );
        std::fs::write(&path, config_text(&front.mock, &front.namespace, &router, &greeting)).unwrap();
        front.reload().await
    };
    let (answered, outcome) = tokio::join!(traffic, change);
    assert_eq!(answered, 60);
    assert!(outcome.ok && outcome.generation == 1, "{outcome:?}");
    let after = front.ask("ask", &hello).await;
    assert_eq!((after.provider.as_str(), reason(&after)["rule"].as_str()), ("strong", Some("greeting")));

    // A rule naming an unknown target is refused; the rules in use stay.
    let bad = "[[routers.rules]]\n        name = \"x\"\n        model = \"nowhere\"\n        keywords = [\"hello\"]";
    std::fs::write(&path, config_text(&front.mock, &front.namespace, &router, bad)).unwrap();
    let outcome = front.reload().await;
    assert!(!outcome.ok && outcome.message.contains("nowhere"), "{outcome:?}");
    assert_eq!(front.ask("ask", &hello).await.provider, "strong", "the greeting rule still serves");

    // The file watcher picks a change up without a command.
    std::fs::write(&path, config_text(&front.mock, &front.namespace, &router, RULES)).unwrap();
    eventually("the watcher reloads the rules", Duration::from_secs(10), || async {
        (front.ask("ask", &hello).await.provider == "cheap").then_some(())
    })
    .await
    .unwrap();
    front.stop().await;
}
