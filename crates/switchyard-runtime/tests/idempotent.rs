//! What an idempotent query costs the shared store, and when: one claim before the upstream call, and the
//! answer stored only after the client has its reply.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use switchyard_bus::{Bus, MemoryBus, Message};
use switchyard_mock::{MockConfig, MockServer};
use switchyard_protocol::ChatMessage;
use switchyard_protocol::client::{QueryOutcome, QueryRequest};
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, NodeConfig, SharedState};
use switchyard_state::{Claim, IdempotencyStore, MemoryStore, StateError};

/// A [`MemoryStore`] that counts calls and holds `complete` until released.
struct Counting {
    inner: MemoryStore,
    claims: AtomicU64,
    completes: AtomicU64,
    others: AtomicU64,
    renewals: AtomicU64,
    release: tokio::sync::Semaphore,
}

impl Counting {
    fn new(released: usize) -> Arc<Counting> {
        Arc::new(Counting {
            inner: MemoryStore::new(),
            claims: AtomicU64::new(0),
            completes: AtomicU64::new(0),
            others: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
            release: tokio::sync::Semaphore::new(released),
        })
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for Counting {
    async fn claim(&self, key: &str, fp: &str, node: &str, retention: Duration) -> Result<Claim, StateError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(key, fp, node, retention).await
    }

    async fn take_over(
        &self,
        key: &str,
        fp: &str,
        from: &str,
        node: &str,
        retention: Duration,
    ) -> Result<Claim, StateError> {
        self.others.fetch_add(1, Ordering::SeqCst);
        self.inner.take_over(key, fp, from, node, retention).await
    }

    async fn renew(&self, node: &str, lease: Duration) -> Result<(), StateError> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        self.inner.renew(node, lease).await
    }

    async fn alive(&self, node: &str) -> Result<bool, StateError> {
        self.others.fetch_add(1, Ordering::SeqCst);
        self.inner.alive(node).await
    }

    async fn complete(&self, key: &str, answer: &[u8], retention: Duration) -> Result<(), StateError> {
        let _permit = self.release.acquire().await;
        self.completes.fetch_add(1, Ordering::SeqCst);
        self.inner.complete(key, answer, retention).await
    }
}

fn config(mock: &MockServer, lease_ms: u64) -> NodeConfig {
    NodeConfig::from_toml(&format!(
        r#"
        [node]
        namespace = "cost"
        idempotency_lease_ms = {lease_ms}
        [[providers]]
        name = "mock"
        kind = "openai"
        base_url = "{}"
        model = "m"
        [[routes]]
        name = "chat"
        providers = ["mock"]
        "#,
        mock.openai_base_url()
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_renewed_only_while_a_keyed_query_holds_it() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    // A 30 ms lease: renewed every 10 ms while held.
    let store = Counting::new(1000);
    let bus = MemoryBus::new();
    let shared = SharedState { idempotency: Some(store.clone()), breakers: None };
    let node = Node::start(&config(&mock, 30), Arc::new(bus.clone()), shared).await.unwrap();
    let subject = Subjects::new("cost").query("chat");
    let ask = |id: Option<&str>| {
        let mut request = QueryRequest::new(vec![ChatMessage::user("lease")]);
        request.id = id.map(str::to_owned);
        let payload = Bytes::from(serde_json::to_vec(&request).unwrap());
        bus.request(Message::new(subject.clone(), payload), Duration::from_secs(5))
    };
    // Queries without an id, over twenty renewal periods: the store hears nothing.
    for _ in 0..20 {
        let reply = ask(None).await.unwrap();
        assert!(matches!(serde_json::from_slice(&reply.payload).unwrap(), QueryOutcome::Reply(_)));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.renewals.load(Ordering::SeqCst), 0, "no lease while the node owns no key");
    assert_eq!(store.claims.load(Ordering::SeqCst), 0);
    // A keyed query after the quiet spell renews the lease beside its claim, and the lease is live behind it.
    let reply = ask(Some("lease-1")).await.unwrap();
    assert!(matches!(serde_json::from_slice(&reply.payload).unwrap(), QueryOutcome::Reply(_)));
    assert_eq!(store.claims.load(Ordering::SeqCst), 1);
    assert!(store.renewals.load(Ordering::SeqCst) >= 1, "the lease is renewed with the first claim");
    node.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_query_pays_one_store_call_before_its_reply_and_stores_after_it() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let config = config(&mock, 2000);
    let store = Counting::new(0);
    let bus = MemoryBus::new();
    let shared = SharedState { idempotency: Some(store.clone()), breakers: None };
    let node = Node::start(&config, Arc::new(bus.clone()), shared).await.unwrap();

    let mut request = QueryRequest::new(vec![ChatMessage::user("once")]);
    request.id = Some("cost-1".into());
    let payload = Bytes::from(serde_json::to_vec(&request).unwrap());
    let subject = Subjects::new("cost").query("chat");
    let ask = || bus.request(Message::new(subject.clone(), payload.clone()), Duration::from_secs(5));

    // The reply arrives while storing the answer is still held back: storing never delays the client.
    let reply = ask().await.unwrap();
    assert!(matches!(serde_json::from_slice(&reply.payload).unwrap(), QueryOutcome::Reply(_)));
    assert_eq!(store.claims.load(Ordering::SeqCst), 1, "one claim before the upstream call");
    assert_eq!(store.completes.load(Ordering::SeqCst), 0, "the answer is stored after the reply");
    assert_eq!(store.others.load(Ordering::SeqCst), 0, "no lease check on the owner's path");
    store.release.add_permits(1);
    switchyard_testkit::eventually("the answer is stored", Duration::from_secs(5), || async {
        (store.completes.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await
    .unwrap();
    // A copy on the same node is answered from the node's table, without the store.
    let copy = ask().await.unwrap();
    assert!(matches!(serde_json::from_slice(&copy.payload).unwrap(), QueryOutcome::Reply(_)));
    assert_eq!(store.claims.load(Ordering::SeqCst), 1);
    assert_eq!(mock.total_calls(), 1);
    node.shutdown().await;
    mock.shutdown().await;
}
