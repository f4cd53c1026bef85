//! A test cluster for Switchyard's end-to-end tests: a mock provider, nodes on the real NATS, a client.
//!
//! Each cluster lives in its own subject namespace, so tests running at the same time on the shared NATS server
//! never see each other's queries, provider calls or admin traffic.
//!
//! A router reaches its own node's provider actors directly or over NATS (`node.local_calls`); the checks whose
//! outcome depends on that path (breakers, the cluster gate, in-flight limits, retries and fallbacks, traces,
//! idempotency) run both ways through [`local_and_over_nats!`] and [`Calls`].

pub mod door;
pub mod python;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;

use switchyard_bus::{Bus, Message, NatsBus, NatsOptions, gather, request_many};
use switchyard_core::BreakerState;
use switchyard_mock::{MockConfig, MockServer};
use switchyard_protocol::ChatMessage;
use switchyard_protocol::admin::NodeHealth;
use switchyard_protocol::client::{ErrorReply, QueryOutcome, QueryReply, QueryRequest, StreamFrame};
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, NodeConfig, SharedState};
use switchyard_state::{RedisEndpoint, RedisOptions, RedisStore};

/// Model served by the `primary` provider (OpenAI wire format).
pub const PRIMARY_MODEL: &str = "model-a";
/// Model served by the `secondary` provider (Anthropic wire format).
pub const SECONDARY_MODEL: &str = "model-b";
/// The API key configured for `primary`; it must never show up anywhere.
pub const PRIMARY_KEY: &str = "sk-e2e-TOPSECRET-0123456789abcdef";

/// What [`TestCluster::drive_until_tripped`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Trip {
    pub sent: u32,
    pub answered: u32,
    /// From the first node refusing the provider to every node refusing it.
    pub spread: Duration,
}

/// How a router calls the provider actors of its own node (`node.local_calls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// Handed to the actor in process (the default).
    Local,
    /// Published on the provider's call subject, as a router on another node would.
    OverNats,
}

impl Calls {
    pub const BOTH: [Calls; 2] = [Calls::Local, Calls::OverNats];

    /// `config` with `node.local_calls` set for this path.
    pub fn apply(self, mut config: NodeConfig) -> NodeConfig {
        config.node.local_calls = self == Calls::Local;
        config
    }
}

/// Runs each check `$check(path: Calls)` twice, as `<check>::local` and `<check>::over_nats`.
#[macro_export]
macro_rules! local_and_over_nats {
    ($($check:ident),* $(,)?) => {
        $(
            mod $check {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn local() {
                    super::$check($crate::Calls::Local).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn over_nats() {
                    super::$check($crate::Calls::OverNats).await;
                }
            }
        )*
    };
}

pub struct TestCluster {
    pub mock: MockServer,
    pub nodes: Vec<Node>,
    pub subjects: Subjects,
    pub client: Arc<dyn Bus>,
}

/// A configuration for one node of a test cluster: routes `chat` = primary then secondary, `solo` = primary.
pub fn cluster_config(mock: &MockServer, namespace: &str, node: &str) -> anyhow::Result<NodeConfig> {
    cluster_config_with(&mock.openai_base_url(), &mock.base_url(), namespace, node)
}

/// [`cluster_config`] with the primary's and the secondary's base URLs given.
pub fn cluster_config_with(openai: &str, anthropic: &str, namespace: &str, node: &str) -> anyhow::Result<NodeConfig> {
    let toml = format!(
        r#"
        [node]
        name = "{node}"
        namespace = "{namespace}"
        drain_timeout_ms = 5000
        [supervisor]
        backoff_base_ms = 10
        [[providers]]
        name = "primary"
        kind = "openai"
        base_url = "{openai}"
        model = "{PRIMARY_MODEL}"
        api_key = "{PRIMARY_KEY}"
        input_price_per_mtok = 1.0
        output_price_per_mtok = 2.0
        timeout_ms = 5000
        first_token_timeout_ms = 250
        [providers.breaker]
        window_calls = 10
        minimum_calls = 4
        open_wait_base_ms = 300
        open_wait_max_ms = 1000
        [[providers]]
        name = "secondary"
        kind = "anthropic"
        base_url = "{anthropic}"
        model = "{SECONDARY_MODEL}"
        api_key = "sk-ant-e2e-other"
        timeout_ms = 5000
        [providers.breaker]
        window_calls = 10
        minimum_calls = 4
        open_wait_base_ms = 300
        open_wait_max_ms = 1000
        [[routes]]
        name = "chat"
        providers = ["primary", "secondary"]
        retry = {{ max_attempts = 1 }}
        [[routes]]
        name = "solo"
        providers = ["primary"]
        retry = {{ max_attempts = 1 }}
        [[routes]]
        name = "hedged"
        providers = ["primary", "secondary"]
        retry = {{ max_attempts = 1 }}
        hedge = {{ delay_ms = 200 }}
        [[routes]]
        name = "retrying"
        providers = ["primary", "secondary"]
        retry = {{ max_attempts = 3, backoff_base_ms = 10, backoff_max_ms = 50 }}
        [[routes]]
        name = "long"
        providers = ["primary"]
        context_window_fallbacks = ["secondary"]
        retry = {{ max_attempts = 1 }}
        [[groups]]
        name = "pool"
        strategy = "least_busy"
        panic_interval_ms = 500
        members = [{{ provider = "primary" }}, {{ provider = "secondary" }}]
        [[routes]]
        name = "pooled"
        providers = ["pool"]
        retry = {{ max_attempts = 1 }}
        [cluster]
        poll_interval_ms = 200
        probe_lease_ms = 2000
        "#
    );
    Ok(NodeConfig::from_toml(&toml)?)
}

pub async fn connect() -> anyhow::Result<Arc<dyn Bus>> {
    let bus = NatsBus::connect(NatsOptions::new(switchyard_testkit::nats_url())).await.context("NATS must run")?;
    Ok(Arc::new(bus))
}

/// A fresh namespace for one test.
pub fn unique_namespace() -> String {
    format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The answer of a query that must have succeeded.
#[allow(clippy::panic)]
pub fn reply(outcome: QueryOutcome) -> QueryReply {
    match outcome {
        QueryOutcome::Reply(reply) => reply,
        QueryOutcome::Error(error) => panic!("expected an answer, got {error:?}"),
    }
}

/// The typed error of a query that must have failed.
#[allow(clippy::panic)]
pub fn error(outcome: QueryOutcome) -> ErrorReply {
    match outcome {
        QueryOutcome::Error(error) => error,
        QueryOutcome::Reply(reply) => panic!("expected an error, got {reply:?}"),
    }
}

pub fn ask(text: &str) -> QueryRequest {
    QueryRequest::new(vec![ChatMessage::user(text)])
}

impl TestCluster {
    /// Starts a mock provider and `nodes` nodes, each with its own NATS and Redis connections.
    pub async fn start(nodes: usize) -> anyhow::Result<Self> {
        Self::start_with(nodes, &switchyard_testkit::redis_url(), |_, config| config).await
    }

    /// [`TestCluster::start`] with every router calling its own node's providers by `path`.
    pub async fn start_calls(nodes: usize, path: Calls) -> anyhow::Result<Self> {
        Self::start_with(nodes, &switchyard_testkit::redis_url(), |_, config| path.apply(config)).await
    }

    /// Starts a cluster on the Redis at `redis` (a URL, or a Redis Cluster or Sentinels); `adjust` may change each
    /// node's configuration (node `i` is `node-{i}`, from 1).
    pub async fn start_with(
        nodes: usize,
        redis: impl Into<RedisEndpoint>,
        adjust: impl Fn(usize, NodeConfig) -> NodeConfig,
    ) -> anyhow::Result<Self> {
        let redis = redis.into();
        let mock = MockServer::start(MockConfig::default()).await?;
        let namespace = unique_namespace();
        let mut started = Vec::new();
        for i in 1..=nodes {
            let config = adjust(i, cluster_config(&mock, &namespace, &format!("node-{i}"))?);
            // Each node has its own Redis connection, as separate processes would; lazily, so a node also starts
            // while Redis is down.
            let options =
                RedisOptions { key_prefix: format!("switchyard:test:{namespace}:"), ..RedisOptions::default() };
            let store = RedisStore::connect_lazy(redis.clone(), options).await?;
            started.push(Node::start(&config, connect().await?, SharedState::from_store(store)).await?);
        }
        Ok(Self { mock, nodes: started, subjects: Subjects::new(&namespace), client: connect().await? })
    }

    /// Sends queries on `route` until every node's cluster breaker for `provider` is open (give up after
    /// `max_queries`), while a sampler times how long the trip took to spread from the first node to the last.
    pub async fn drive_until_tripped(&self, route: &str, provider: &str, max_queries: u32) -> anyhow::Result<Trip> {
        let tripped = std::sync::atomic::AtomicBool::new(false);
        let (mut sent, mut answered) = (0u32, 0u32);
        let traffic = async {
            while !tripped.load(std::sync::atomic::Ordering::Relaxed) && sent < max_queries {
                sent += 1;
                let outcome = self.query(route, &ask(&format!("drive {sent}"))).await;
                answered += u32::from(matches!(outcome, Ok(QueryOutcome::Reply(_))));
            }
            tripped.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        let sampler = async {
            let mut first: Option<Instant> = None;
            while !tripped.load(std::sync::atomic::Ordering::Relaxed) {
                let states = self.cluster_breakers(provider).await;
                let now = Instant::now();
                if first.is_none() && states.iter().any(|s| *s != Some(BreakerState::Closed)) {
                    first = Some(now);
                }
                if states.iter().all(|s| *s == Some(BreakerState::Open)) {
                    tripped.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Some(now - first.unwrap_or(now));
                }
                tokio::task::yield_now().await;
            }
            None
        };
        let ((), spread) = tokio::join!(traffic, sampler);
        match spread {
            Some(spread) => Ok(Trip { sent, answered, spread }),
            None => bail!("{provider} did not trip on every node within {max_queries} queries"),
        }
    }

    /// Each node's view of `provider`'s cluster breaker (`None`: the node does not know it).
    pub async fn cluster_breakers(&self, provider: &str) -> Vec<Option<BreakerState>> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let health = node.health().await;
            out.push(health.providers.iter().find(|p| p.name == provider).and_then(|p| p.cluster_breaker));
        }
        out
    }

    pub fn namespace(&self) -> &str {
        self.subjects.namespace()
    }

    /// Sends raw bytes as a query on `route` and parses the answer.
    pub async fn query_raw(&self, route: &str, payload: Bytes) -> anyhow::Result<QueryOutcome> {
        let reply =
            self.client.request(Message::new(self.subjects.query(route), payload), Duration::from_secs(10)).await?;
        serde_json::from_slice(&reply.payload).with_context(|| String::from_utf8_lossy(&reply.payload).into_owned())
    }

    pub async fn query(&self, route: &str, request: &QueryRequest) -> anyhow::Result<QueryOutcome> {
        self.query_raw(route, Bytes::from(serde_json::to_vec(request)?)).await
    }

    /// Sends a streaming query and collects every frame up to and including the final one.
    pub async fn stream(&self, route: &str, request: &QueryRequest) -> anyhow::Result<Vec<StreamFrame>> {
        let mut request = request.clone();
        request.stream = true;
        let payload = Bytes::from(serde_json::to_vec(&request)?);
        let mut sub = request_many(self.client.as_ref(), Message::new(self.subjects.query(route), payload)).await?;
        let mut frames = Vec::new();
        loop {
            let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(10), sub.next()).await else {
                bail!("stream ended without a final frame after {} frames", frames.len());
            };
            if message.is_no_responders() {
                bail!("no node serves namespace {}", self.namespace());
            }
            let frame: StreamFrame = serde_json::from_slice(&message.payload)?;
            let last = !matches!(frame, StreamFrame::Chunk { .. });
            frames.push(frame);
            if last {
                return Ok(frames);
            }
        }
    }

    /// Gathers the health of every node that answers within `wait`.
    pub async fn health(&self, wait: Duration) -> anyhow::Result<Vec<NodeHealth>> {
        let ask = Message::new(self.subjects.admin_health(), Bytes::new());
        let replies = gather(self.client.as_ref(), ask, wait, usize::MAX).await?;
        Ok(replies.iter().map(|m| serde_json::from_slice(&m.payload)).collect::<Result<_, _>>()?)
    }

    pub async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
        self.mock.shutdown().await;
    }
}
