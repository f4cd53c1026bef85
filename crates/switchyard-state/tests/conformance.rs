//! Runs the one state conformance suite against both implementations.
//!
//! The in-memory store must behave like the Redis store wherever a node could notice, so the same checks run
//! against `MemoryStore`, against the real Redis at `SWITCHYARD_REDIS_URL` (default `redis://127.0.0.1:6379`),
//! against a Redis Cluster of three masters (`SWITCHYARD_REDIS_CLUSTER_URLS`, which `deploy/test.sh` sets, else
//! one started by the test: all checks then run in one test, on one cluster, since a new cluster takes two
//! seconds to accept writes), and through a Sentinel (a master and a Sentinel started by each check), each
//! Redis test under its own key prefix, deleted afterwards. The Redis halves fail, loudly, when no server is
//! reachable or none can be started: a skipped conformance run would prove nothing.

use switchyard_state::RedisEndpoint;
use switchyard_state::conformance::Fixture;
use switchyard_state::{state_conformance_sequence, state_conformance_suite};
use switchyard_testkit::{RedisCluster, RedisSentinel};

state_conformance_suite!(memory, || async { Fixture::memory() });
state_conformance_suite!(redis, || async { Fixture::redis(&switchyard_testkit::redis_url()).await });
state_conformance_sequence!(
    redis_cluster,
    RedisCluster::shared_or_start().unwrap_or_else(|error| panic!("no redis cluster: {error:#}")),
    async |cluster: &RedisCluster| Fixture::redis(RedisEndpoint::Cluster(cluster.urls.clone())).await
);
state_conformance_suite!(redis_sentinel, || async {
    let servers = RedisSentinel::start().unwrap_or_else(|error| panic!("no redis sentinel: {error:#}"));
    let endpoint =
        RedisEndpoint::Sentinel { sentinels: vec![servers.sentinel_url.clone()], master: servers.master_name.clone() };
    Fixture::redis(endpoint).await.with_cleanup(servers)
});
