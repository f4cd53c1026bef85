//! The idempotency checks against both stores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use switchyard_state::conformance::DeleteKeysOnDrop;
use switchyard_state::idempotency::conformance::{check_all, check_one_owner};
use switchyard_state::{IdempotencyStore, ManualClock, MemoryStore, RedisEndpoint, RedisOptions, RedisStore};

fn unique(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), uuid_like())
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

#[tokio::test]
async fn memory_store_binds_fingerprints_leases_and_expires() {
    let clock = ManualClock::new(1_000_000);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    check_all(&store, "mem", Duration::from_secs(2), Duration::from_secs(30), |by| {
        let clock = clock.clone();
        async move { clock.advance(by) }
    })
    .await;
    check_one_owner(Arc::new(store), "mem").await;
}

#[tokio::test]
async fn redis_store_binds_fingerprints_leases_and_expires() {
    let prefix = format!("switchyard:test:{}:", unique("idem"));
    let options = RedisOptions { key_prefix: prefix.clone(), ..RedisOptions::default() };
    let store = RedisStore::connect(&switchyard_testkit::redis_url(), options).await.expect("Redis must run");
    // Redis expires keys on its own time: the suite really waits, so the lease and retention are short.
    check_all(&store, "redis", Duration::from_millis(200), Duration::from_millis(1200), tokio::time::sleep).await;
    check_one_owner(Arc::new(store.clone()) as Arc<dyn IdempotencyStore>, "redis").await;
    // The race key has a 5 s retention; remove it rather than leave it behind.
    let client = redis::Client::open(switchyard_testkit::redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut connection).await.unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut connection).await.unwrap();
    }
}

#[tokio::test]
async fn redis_cluster_store_binds_fingerprints_leases_and_expires() {
    // The shared cluster (`SWITCHYARD_REDIS_CLUSTER_URLS`) or a private one: claims and completions are scripts
    // over three keys of one hash tag, leases single-key commands, so each goes to the node owning its slot.
    let cluster = switchyard_testkit::RedisCluster::shared_or_start().expect("redis-server must be installed");
    let prefix = format!("switchyard:test:{}:", unique("idem-cluster"));
    let _cleanup: Vec<DeleteKeysOnDrop> =
        cluster.urls.iter().map(|url| DeleteKeysOnDrop { url: url.clone(), pattern: format!("{prefix}*") }).collect();
    let options = RedisOptions { key_prefix: prefix.clone(), ..RedisOptions::default() };
    let endpoint = RedisEndpoint::Cluster(cluster.urls.clone());
    let store = RedisStore::connect(endpoint, options).await.expect("the Redis Cluster must run");
    check_all(&store, "cluster", Duration::from_millis(200), Duration::from_millis(1200), tokio::time::sleep).await;
    check_one_owner(Arc::new(store.clone()) as Arc<dyn IdempotencyStore>, "cluster").await;
}
