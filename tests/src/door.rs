//! A node with the http role for the door's end-to-end tests: a one-node [`TestCluster`] and the OpenAI- and
//! Anthropic-compatible door in front of it, handing queries over in process or over NATS.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use switchyard_client::ClientOptions;
use switchyard_http::{Dispatch, DoorConfig, HttpServer, LocalDispatch, NatsDispatch};
use switchyard_runtime::config::{HttpKeySection, HttpSection};
use switchyard_runtime::{NodeConfig, Role};

use switchyard_mock::Behavior;
use switchyard_testkit::eventually;

use crate::{PRIMARY_MODEL, TestCluster, cluster_config, connect};

/// A key allowed every route.
pub const KEY: &str = "sk-door-e2e-0123456789";
/// A key allowed the route `solo` only, with metadata `tier = bronze`.
pub const LIMITED_KEY: &str = "sk-door-limited-0123456789";

/// How the door hands queries over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// To the node's own router, in process.
    Local,
    /// To the routers' queue group, over NATS.
    Nats,
}

/// A one-node cluster (router, providers) with a door in front of it.
pub struct Door {
    pub cluster: TestCluster,
    pub server: HttpServer,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub http: reqwest::Client,
    keys: KeyDir,
}

/// The directory of the key files, removed on drop.
struct KeyDir(std::path::PathBuf);

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Door {
    pub async fn start(mode: Mode) -> anyhow::Result<Door> {
        Self::start_with(mode, |config| config).await
    }

    /// [`Door::start`] with the node's configuration changed by `adjust` (the door's own section is fixed).
    pub async fn start_with(mode: Mode, adjust: impl Fn(NodeConfig) -> NodeConfig) -> anyhow::Result<Door> {
        let cluster = TestCluster::start_with(1, &switchyard_testkit::redis_url(), |_, config| adjust(config)).await?;
        let dir = std::env::temp_dir().join(format!("switchyard-door-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let keys = KeyDir(dir);
        let key_file = |name: &str, value: &str| -> anyhow::Result<std::path::PathBuf> {
            let path = keys.0.join(name);
            std::fs::write(&path, value)?;
            Ok(path)
        };
        let mut config = cluster_config(&cluster.mock, cluster.namespace(), "node-1")?;
        config.node.roles.push(Role::Http);
        config.http = Some(HttpSection {
            listen: "127.0.0.1:0".parse()?,
            max_body_bytes: 64 * 1024,
            keys: vec![
                HttpKeySection {
                    name: "all".into(),
                    key_env: None,
                    key_file: Some(key_file("all", KEY)?),
                    routes: vec!["*".into()],
                    metadata: Default::default(),
                },
                HttpKeySection {
                    name: "limited".into(),
                    key_env: None,
                    key_file: Some(key_file("limited", LIMITED_KEY)?),
                    routes: vec!["solo".into()],
                    metadata: [("tier".to_owned(), "bronze".to_owned())].into(),
                },
            ],
        });
        config.validate()?;
        let dispatch: Arc<dyn Dispatch> = match mode {
            Mode::Local => Arc::new(LocalDispatch::new(cluster.nodes[0].dispatcher().context("a router node")?)),
            Mode::Nats => {
                Arc::new(NatsDispatch::new(connect().await?, cluster.subjects.clone(), ClientOptions::default()))
            }
        };
        let server = switchyard_http::serve(DoorConfig::from_node_config(&config)?, dispatch).await?;
        let base = format!("http://{}", server.local_addr());
        Ok(Door { cluster, server, base, http: reqwest::Client::new(), keys })
    }

    /// Posts `body` to `/v1/chat/completions`, with `key` as the bearer key when given.
    pub async fn post(&self, key: Option<&str>, body: Value) -> anyhow::Result<reqwest::Response> {
        let mut request = self.http.post(format!("{}/v1/chat/completions", self.base)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        Ok(request.send().await?)
    }

    /// Posts `body` to `/v1/messages` as Anthropic's clients do, with `key` in `x-api-key` when given.
    pub async fn post_messages(&self, key: Option<&str>, body: Value) -> anyhow::Result<reqwest::Response> {
        let mut request =
            self.http.post(format!("{}/v1/messages", self.base)).header("anthropic-version", "2023-06-01").json(&body);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        Ok(request.send().await?)
    }

    /// A door whose node holds one query at a time, its provider answering after a second: a second query
    /// while the first is held is overloaded.
    pub async fn start_holding_one(mode: Mode) -> anyhow::Result<Door> {
        let door = Door::start_with(mode, |mut config| {
            config.node.max_in_flight_queries = 1;
            config
        })
        .await?;
        door.cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::answering("slow answer").with_latency_ms(1_000));
        Ok(door)
    }

    /// Sends `first` and, once it holds the node (it reached the provider), runs `second`; then `first`'s
    /// response.
    pub async fn while_one_is_held(
        &self,
        first: impl Future<Output = anyhow::Result<reqwest::Response>>,
        second: impl Future<Output = ()>,
    ) -> anyhow::Result<reqwest::Response> {
        let held = async {
            let mock = &self.cluster.mock;
            eventually("the first query reached the provider", Duration::from_secs(5), || async {
                (mock.calls(PRIMARY_MODEL) == 1).then_some(())
            })
            .await?;
            second.await;
            anyhow::Ok(())
        };
        let (first, held) = tokio::join!(first, held);
        held?;
        first
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
        self.cluster.shutdown().await;
        drop(self.keys);
    }
}
