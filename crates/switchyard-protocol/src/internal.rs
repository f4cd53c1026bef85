//! Messages between nodes (bincode): a router calling a provider actor, and its answer.
//!
//! bincode is not self-describing, so these types avoid serde attributes that need it (no internally tagged
//! enums, no `skip_serializing_if`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use switchyard_core::{BreakerState, FailureClass};

use crate::chat::{ChatRequest, Completion};
use crate::client::QueryRequest;

/// A router asks the nodes hosting a provider to run one completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderCall {
    pub call_id: Uuid,
    pub request: ChatRequest,
    /// What is left of the client's deadline when the call is sent. Running out of it is a cancellation, never
    /// the provider's failure: a provider is charged only for breaking its own limits.
    pub budget_ms: u64,
    /// For a streaming query: where chunks go (the client's reply subject) and the first sequence number.
    pub stream: Option<StreamTarget>,
    /// A panic-mode trickle: every member of the group is tripped, and this one call goes through the breaker
    /// to find out whether the provider is back.
    pub bypass_breaker: bool,
    /// Where the node running the call says it is still at work, so its router notices a node that died.
    pub keepalive: Option<Keepalive>,
}

/// A router asks the coordinators of a cascade (queue group) to run one query through it. JSON, unlike the
/// provider calls: it carries the client's request as the client wrote it. The answer is the client's own
/// [`QueryOutcome`](crate::client::QueryOutcome) JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeCall {
    pub call_id: Uuid,
    /// The route the client asked for (it names the cascade).
    pub route: String,
    pub request: QueryRequest,
    /// What is left of the client's deadline when the call is sent.
    pub budget_ms: u64,
    /// Where the coordinator says it is still at work.
    pub keepalive: Option<Keepalive>,
}

/// A running call's sign of life: every `every_ms` after it started, the node running it publishes a
/// [`Heartbeat`] to `subject` (its router's inbox for heartbeats) until the call ends. A call that ends sooner
/// sends none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keepalive {
    pub subject: String,
    pub every_ms: u64,
}

/// One sign of life of a running call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub call_id: Uuid,
    /// The node running the call.
    pub node: String,
}

/// Where a streaming call publishes its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTarget {
    /// The client's reply subject.
    pub subject: String,
    /// The query's attempt number, stamped on every chunk.
    pub attempt: u32,
    /// When set, the call asks this subject for the stream before publishing its first chunk and gives up when
    /// refused: two hedged attempts never both write to the client.
    pub claim: Option<String>,
}

/// What a router receives from a provider call: the answer, and the node that gave it (routers learn from it which
/// nodes host a provider, so a call one node refuses can be sent to another).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderAnswer {
    pub node: String,
    pub reply: ProviderReply,
}

/// The answer of a provider actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProviderReply {
    Completed {
        completion: Completion,
        latency_us: u64,
        /// Chunks published to the stream target (0 when not streaming).
        chunks: u64,
    },
    Failed(WireFailure),
    /// The provider actor refused without calling upstream.
    Refused {
        reason: Refusal,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The provider's in-flight limit is reached.
    Overloaded,
    /// The provider actor is being restarted by its supervisor.
    Restarting,
    /// The cluster's circuit breaker for the provider is open; try again after this long.
    BreakerOpen { retry_after_ms: u64 },
    /// This node's own breaker for the provider is open; another node may still serve the call.
    LocalBreakerOpen { retry_after_ms: u64 },
}

impl Refusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Overloaded => "overloaded",
            Refusal::Restarting => "restarting",
            Refusal::BreakerOpen { .. } => "breaker_open",
            Refusal::LocalBreakerOpen { .. } => "local_breaker_open",
        }
    }

    /// Whether the refusal is the refusing node's own matter, so another node hosting the provider may serve.
    pub fn is_node_local(&self) -> bool {
        !matches!(self, Refusal::BreakerOpen { .. })
    }
}

/// A classified upstream failure, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFailure {
    pub class: WireFailureClass,
    pub status: Option<u16>,
    /// Already redacted by the provider client.
    pub message: String,
    pub latency_us: u64,
    pub chunks: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireFailureClass {
    Retryable,
    RateLimited { retry_after_ms: Option<u64> },
    Fatal { auth: bool },
    ContextWindowExceeded,
    ContentPolicy,
    Cancelled,
}

impl From<FailureClass> for WireFailureClass {
    fn from(class: FailureClass) -> Self {
        match class {
            FailureClass::Retryable => Self::Retryable,
            FailureClass::RateLimited { retry_after } => {
                Self::RateLimited { retry_after_ms: retry_after.map(|d| d.as_millis() as u64) }
            }
            FailureClass::Fatal { auth } => Self::Fatal { auth },
            FailureClass::ContextWindowExceeded => Self::ContextWindowExceeded,
            FailureClass::ContentPolicy => Self::ContentPolicy,
            FailureClass::Cancelled => Self::Cancelled,
        }
    }
}

impl From<WireFailureClass> for FailureClass {
    fn from(class: WireFailureClass) -> Self {
        match class {
            WireFailureClass::Retryable => Self::Retryable,
            WireFailureClass::RateLimited { retry_after_ms } => {
                Self::RateLimited { retry_after: retry_after_ms.map(std::time::Duration::from_millis) }
            }
            WireFailureClass::Fatal { auth } => Self::Fatal { auth },
            WireFailureClass::ContextWindowExceeded => Self::ContextWindowExceeded,
            WireFailureClass::ContentPolicy => Self::ContentPolicy,
            WireFailureClass::Cancelled => Self::Cancelled,
        }
    }
}

/// A breaker transition of the cluster, pushed to every node on `<ns>.v1.events.breaker.<p>` (bincode).
///
/// The shared store is the truth; events only make nodes learn of a transition faster than their 1 s poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerEvent {
    pub provider: String,
    /// Never `MetricsOnly` (see [`BreakerState`]).
    pub state: BreakerState,
    pub epoch: u64,
    /// Time left in the open interval when the event was sent.
    pub open_remaining_ms: u64,
    /// The node whose report or probe caused the transition.
    pub origin: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ChatMessage, Usage};
    use crate::codec::{Bincode, Codec};

    #[test]
    fn calls_and_replies_survive_bincode() {
        let call = ProviderCall {
            call_id: Uuid::new_v4(),
            request: ChatRequest {
                messages: vec![ChatMessage::user("hi")],
                max_tokens: Some(5),
                temperature: None,
                logprobs: true,
                stop: vec!["\n\n".into()],
                top_p: Some(0.5),
            },
            budget_ms: 1500,
            stream: Some(StreamTarget { subject: "_INBOX.x".into(), attempt: 1, claim: None }),
            bypass_breaker: false,
            keepalive: Some(Keepalive { subject: "_INBOX.r.alive".into(), every_ms: 1000 }),
        };
        let bytes = Bincode::encode(&call).expect("encode");
        assert_eq!(Bincode::decode::<ProviderCall>(&bytes).expect("decode"), call);

        let replies = [
            ProviderReply::Completed {
                completion: Completion {
                    content: "hello".into(),
                    model: "m".into(),
                    finish_reason: Some("stop".into()),
                    usage: Usage { input_tokens: 1, output_tokens: 2 },
                    cost_usd: 0.5,
                    logprobs: None,
                },
                latency_us: 10,
                chunks: 0,
            },
            ProviderReply::Failed(WireFailure {
                class: WireFailureClass::RateLimited { retry_after_ms: Some(1000) },
                status: Some(429),
                message: "slow down".into(),
                latency_us: 3,
                chunks: 0,
            }),
            ProviderReply::Refused { reason: Refusal::Overloaded },
        ];
        for reply in replies {
            let bytes = Bincode::encode(&reply).expect("encode");
            assert_eq!(Bincode::decode::<ProviderReply>(&bytes).expect("decode"), reply);
        }
    }

    #[test]
    fn failure_classes_convert_both_ways() {
        let classes = [
            FailureClass::Retryable,
            FailureClass::RateLimited { retry_after: Some(std::time::Duration::from_millis(1500)) },
            FailureClass::Fatal { auth: true },
            FailureClass::ContextWindowExceeded,
            FailureClass::ContentPolicy,
            FailureClass::Cancelled,
        ];
        for class in classes {
            assert_eq!(FailureClass::from(WireFailureClass::from(class)), class);
        }
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(Bincode::decode::<ProviderCall>(&[0xff, 0x00, 0x13]).is_err());
    }
}
