//! Every NATS subject and queue group of Switchyard, built in one place.
//!
//! Subjects are versioned and live under a namespace, `switchyard` by default: `switchyard.v1.query.<route>`.
//! Separate clusters (or concurrent test runs) can share one NATS server under different namespaces without
//! seeing each other's traffic. Route, provider and namespace names become subject tokens, so they are validated
//! with [`is_valid_token`] when the configuration is loaded.

/// The header of a query without an id that its client may cancel: a token (a uuid) known only to the client and
/// the node running the query, which the client publishes on [`Subjects::query_cancel`] when it stops waiting.
/// Not the reply subject, which NATS rewrites when a query crosses accounts.
pub const CANCEL_HEADER: &str = "Switchyard-Cancel";

/// The longest cancel token a node takes; longer ones are ignored (the client's are 32 hex digits).
pub const MAX_CANCEL_TOKEN_LEN: usize = 64;

/// The default namespace.
pub const DEFAULT_NAMESPACE: &str = "switchyard";

/// The subject names of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    namespace: String,
    /// `<namespace>.v1`
    root: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new(DEFAULT_NAMESPACE)
    }
}

impl Subjects {
    /// `namespace` must be a valid token (checked by configuration loading).
    pub fn new(namespace: &str) -> Self {
        Self { namespace: namespace.to_owned(), root: format!("{namespace}.v{}", crate::SCHEMA_VERSION) }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The subject a client publishes a query for `route` to.
    pub fn query(&self, route: &str) -> String {
        format!("{}.query.{route}", self.root)
    }

    /// What routers subscribe to: queries for every route.
    pub fn query_wildcard(&self) -> String {
        format!("{}.query.*", self.root)
    }

    /// Queue group shared by every router, so each query is handled by exactly one node.
    pub fn router_queue(&self) -> String {
        format!("{}-routers", self.namespace)
    }

    /// The route named by a query subject, if it is one.
    pub fn route_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.root.as_str())
            .and_then(|rest| rest.strip_prefix(".query."))
            .filter(|route| is_valid_token(route))
    }

    /// Where a client that stopped waiting for a query without an id says so: the payload is the token the query
    /// carried in its [`CANCEL_HEADER`]. Heard by every router (no queue group): the one running the query stops
    /// it and cancels its provider calls. A query with an id runs on, so that a retry under the same id finds its
    /// answer.
    pub fn query_cancel(&self) -> String {
        format!("{}.cancel.query", self.root)
    }

    /// The subject a router calls provider `provider` on.
    pub fn provider_call(&self, provider: &str) -> String {
        format!("{}.provider.{provider}.call", self.root)
    }

    /// The subject of `provider`'s actor on one node, for a call another node refused.
    pub fn provider_node_call(&self, provider: &str, node: &str) -> String {
        format!("{}.provider.{provider}.node.{node}.call", self.root)
    }

    /// The queue group of the nodes hosting `provider`.
    pub fn provider_queue(&self, provider: &str) -> String {
        format!("{}-provider-{provider}", self.namespace)
    }

    /// Cancellations of `provider`'s calls (a hedge's loser), heard by every node hosting it: no queue group, the
    /// node running the call aborts it.
    pub fn provider_cancel(&self, provider: &str) -> String {
        format!("{}.provider.{provider}.cancel", self.root)
    }

    /// Every router node answers with its quality routers' status.
    pub fn admin_routers(&self) -> String {
        format!("{}.admin.routers", self.root)
    }

    /// Every router node reloads its quality routers from its configuration file, and answers how it went.
    pub fn admin_routers_reload(&self) -> String {
        format!("{}.admin.routers.reload", self.root)
    }

    /// Every cascade coordinator answers with its cascades' status.
    pub fn admin_cascades(&self) -> String {
        format!("{}.admin.cascades", self.root)
    }

    /// Where cascade `name` runs queries (its coordinators' queue group, [`Subjects::cascade_queue`]).
    pub fn cascade_run(&self, name: &str) -> String {
        format!("{}.cascade.{name}.run", self.root)
    }

    /// The queue group of the coordinators of cascade `name`.
    pub fn cascade_queue(&self, name: &str) -> String {
        format!("{}-cascade-{name}", self.namespace)
    }

    /// Breaker transitions of `provider`.
    pub fn breaker_event(&self, provider: &str) -> String {
        format!("{}.events.breaker.{provider}", self.root)
    }

    /// What every node subscribes to for breaker transitions.
    pub fn breaker_event_wildcard(&self) -> String {
        format!("{}.events.breaker.*", self.root)
    }

    /// Where the owner of an idempotency key announces its answer (a `QueryOutcome` in JSON), so that nodes
    /// waiting for that key hear it at once instead of polling the store. The key (route and client id) may hold
    /// any character, so the token is a digest of it.
    pub fn idempotency_answer(&self, key: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(key.as_bytes());
        format!("{}.idem.{}", self.root, crate::client::hex(&digest[..16]))
    }

    /// What every node subscribes to for operator commands and inspection.
    pub fn admin_wildcard(&self) -> String {
        format!("{}.admin.>", self.root)
    }

    /// Cluster-wide health: every node answers (gather replies until a timeout).
    pub fn admin_health(&self) -> String {
        format!("{}.admin.health", self.root)
    }

    /// An admin command addressed to one node (`health`, ...).
    pub fn admin_node(&self, node: &str, command: &str) -> String {
        format!("{}.admin.node.{node}.{command}", self.root)
    }

    /// An admin command for every node hosting `provider` (for instance `crash`, to exercise supervision).
    pub fn admin_provider(&self, provider: &str, command: &str) -> String {
        format!("{}.admin.provider.{provider}.{command}", self.root)
    }

    /// An operator's command on `provider`'s cluster breaker (`trip`, `disable`, `reset`): every node hears it on
    /// the admin wildcard, and exactly one node with the shared store executes it, through the queue group
    /// [`Subjects::admin_breaker_queue`].
    pub fn admin_breaker(&self, provider: &str, command: &str) -> String {
        format!("{}.admin.breaker.{provider}.{command}", self.root)
    }

    /// Every operator breaker command, for the executing queue group.
    pub fn admin_breaker_wildcard(&self) -> String {
        format!("{}.admin.breaker.*.*", self.root)
    }

    /// The queue group of the nodes that execute breaker commands.
    pub fn admin_breaker_queue(&self) -> String {
        format!("{}-admin-breaker", self.namespace)
    }

    /// Splits a breaker command subject into `(provider, command)`.
    pub fn parse_admin_breaker<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject.strip_prefix(self.root.as_str())?.strip_prefix(".admin.breaker.")?;
        rest.split_once('.')
    }

    /// Every node answers with its view of each provider's breakers next to the store's.
    pub fn admin_breakers(&self) -> String {
        format!("{}.admin.breakers", self.root)
    }

    /// Every node answers with its traffic figures.
    pub fn admin_stats(&self) -> String {
        format!("{}.admin.stats", self.root)
    }

    /// Splits an admin provider subject into `(provider, command)`.
    pub fn parse_admin_provider<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject.strip_prefix(self.root.as_str())?.strip_prefix(".admin.provider.")?;
        rest.split_once('.')
    }
}

/// A name usable as one subject token: non-empty, at most 64 bytes of `[A-Za-z0-9_-]`.
pub fn is_valid_token(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        let s = Subjects::default();
        assert_eq!(s.query("chat"), "switchyard.v1.query.chat");
        assert_eq!(s.route_of(&s.query("chat")), Some("chat"));
        assert_eq!(s.route_of("switchyard.v1.query.a.b"), None);
        assert_eq!(s.route_of("other.v1.query.chat"), None);
        assert_eq!(s.route_of(&s.query_cancel()), None, "a cancellation is never taken for a query");
        assert_eq!(s.provider_call("openai"), "switchyard.v1.provider.openai.call");
        assert_eq!(s.parse_admin_provider(&s.admin_provider("p-1", "crash")), Some(("p-1", "crash")));
        assert_eq!(s.router_queue(), "switchyard-routers");
        let idem = s.idempotency_answer("chat/a.b*>");
        assert!(idem.starts_with("switchyard.v1.idem.") && idem.len() == "switchyard.v1.idem.".len() + 32, "{idem}");
        assert_ne!(idem, s.idempotency_answer("chat/a.b"));
    }

    #[test]
    fn namespaces_do_not_overlap() {
        let a = Subjects::new("team-a");
        let b = Subjects::new("team-b");
        assert_eq!(a.query("chat"), "team-a.v1.query.chat");
        assert_eq!(b.route_of(&a.query("chat")), None);
        assert_ne!(a.router_queue(), b.router_queue());
    }

    #[test]
    fn tokens_reject_subject_syntax() {
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(65)] {
            assert!(!is_valid_token(bad), "{bad:?} should be rejected");
        }
        assert!(is_valid_token("gpt-4o_mini"));
    }
}
