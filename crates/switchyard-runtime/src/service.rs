//! The NATS service API (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`), so standard NATS tooling (`nats micro ls`,
//! `nats micro info switchyard`) lists the nodes and their endpoints.
//!
//! Each node is one instance of a service named after the cluster's namespace (`switchyard` by default, so
//! clusters sharing a NATS server are told apart), its id the node's name. The three verbs are answered on
//! `$SRV.<verb>`, `$SRV.<verb>.<service>` and `$SRV.<verb>.<service>.<id>` with the JSON documents of the NATS
//! micro specification (`io.nats.micro.v1.*_response`). The endpoints are the subscriptions the node serves:
//! queries (router nodes), provider calls (one per hosted provider), cascade runs, admin. Built here as pure
//! functions of a snapshot; the admin actor answers with them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The three verbs of the NATS service API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Ping,
    Info,
    Stats,
}

/// Whether `subject` asks this node (`id` of `service`) a service verb: `$SRV.<VERB>`, `$SRV.<VERB>.<service>` or
/// `$SRV.<VERB>.<service>.<id>`.
pub fn parse(subject: &str, service: &str, id: &str) -> Option<Verb> {
    let mut tokens = subject.split('.');
    if tokens.next()? != "$SRV" {
        return None;
    }
    let verb = match tokens.next()? {
        "PING" => Verb::Ping,
        "INFO" => Verb::Info,
        "STATS" => Verb::Stats,
        _ => return None,
    };
    match (tokens.next(), tokens.next(), tokens.next()) {
        (None, _, _) => Some(verb),
        (Some(name), None, _) if name == service => Some(verb),
        (Some(name), Some(target), None) if name == service && target == id => Some(verb),
        _ => None,
    }
}

/// One endpoint of a node, with its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub subject: String,
    pub queue_group: Option<String>,
    pub requests: u64,
    pub errors: u64,
}

/// What the service documents say about one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The service's name: the cluster's namespace.
    pub name: String,
    pub id: String,
    pub version: String,
    pub roles: Vec<String>,
    /// RFC 3339 start time.
    pub started: String,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingResponse {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub id: String,
    pub version: String,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub name: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_group: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoResponse {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub id: String,
    pub version: String,
    pub metadata: BTreeMap<String, String>,
    pub description: String,
    pub endpoints: Vec<EndpointInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub name: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_group: Option<String>,
    pub num_requests: u64,
    pub num_errors: u64,
    pub last_error: String,
    /// Nanoseconds; not measured per endpoint here (0).
    pub processing_time: u64,
    pub average_processing_time: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsResponse {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub id: String,
    pub version: String,
    pub metadata: BTreeMap<String, String>,
    pub started: String,
    pub endpoints: Vec<EndpointStats>,
}

fn metadata(instance: &Instance) -> BTreeMap<String, String> {
    BTreeMap::from([("roles".to_owned(), instance.roles.join(","))])
}

/// The JSON document answering `verb`.
pub fn respond(verb: Verb, instance: &Instance) -> serde_json::Value {
    let (name, id, version) = (instance.name.clone(), instance.id.clone(), instance.version.clone());
    let document = match verb {
        Verb::Ping => serde_json::to_value(PingResponse {
            kind: "io.nats.micro.v1.ping_response".into(),
            name,
            id,
            version,
            metadata: metadata(instance),
        }),
        Verb::Info => serde_json::to_value(InfoResponse {
            kind: "io.nats.micro.v1.info_response".into(),
            name,
            id,
            version,
            metadata: metadata(instance),
            description: "Switchyard node: routes LLM queries across providers".into(),
            endpoints: instance
                .endpoints
                .iter()
                .map(|e| EndpointInfo {
                    name: e.name.clone(),
                    subject: e.subject.clone(),
                    queue_group: e.queue_group.clone(),
                    metadata: BTreeMap::new(),
                })
                .collect(),
        }),
        Verb::Stats => serde_json::to_value(StatsResponse {
            kind: "io.nats.micro.v1.stats_response".into(),
            name,
            id,
            version,
            metadata: metadata(instance),
            started: instance.started.clone(),
            endpoints: instance
                .endpoints
                .iter()
                .map(|e| EndpointStats {
                    name: e.name.clone(),
                    subject: e.subject.clone(),
                    queue_group: e.queue_group.clone(),
                    num_requests: e.requests,
                    num_errors: e.errors,
                    last_error: String::new(),
                    processing_time: 0,
                    average_processing_time: 0,
                })
                .collect(),
        }),
    };
    document.unwrap_or_default()
}

/// A wall-clock time as RFC 3339 (UTC, seconds), as the micro specification's `started`.
pub fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_answered_for_all_the_service_or_this_instance() {
        let p = |subject| parse(subject, "switchyard", "n1");
        assert_eq!(p("$SRV.PING"), Some(Verb::Ping));
        assert_eq!(p("$SRV.INFO.switchyard"), Some(Verb::Info));
        assert_eq!(p("$SRV.STATS.switchyard.n1"), Some(Verb::Stats));
        assert_eq!(p("$SRV.STATS.switchyard.n2"), None, "another instance");
        assert_eq!(p("$SRV.PING.other"), None, "another service");
        assert_eq!(p("switchyard.v1.admin.health"), None);
    }

    #[test]
    fn documents_follow_the_micro_schema() {
        let instance = Instance {
            name: "switchyard".into(),
            id: "n1".into(),
            version: "0.1.0".into(),
            roles: vec!["router".into()],
            started: rfc3339(std::time::UNIX_EPOCH),
            endpoints: vec![Endpoint {
                name: "query".into(),
                subject: "switchyard.v1.query.*".into(),
                queue_group: Some("switchyard-routers".into()),
                requests: 3,
                errors: 1,
            }],
        };
        let stats = respond(Verb::Stats, &instance);
        assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
        assert_eq!(stats["started"], "1970-01-01T00:00:00Z");
        assert_eq!(stats["endpoints"][0]["num_requests"], 3);
        let info = respond(Verb::Info, &instance);
        assert_eq!(info["endpoints"][0]["queue_group"], "switchyard-routers");
        assert_eq!(respond(Verb::Ping, &instance)["metadata"]["roles"], "router");
    }
}
