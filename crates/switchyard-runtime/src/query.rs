//! One query's journey over the providers of its route.
//!
//! The router actor admits a query and spawns [`run_query`] as a task. It calls the route's providers in order
//! over the bus (`switchyard.v1.provider.<p>.call`, bincode) until one answers, recording every attempt in the
//! trace. A failure that is the request's own fault ends the journey at once; so does any failure after stream
//! chunks reached the client (a stream is never retried after its first chunk).

// An answer is a reply either way: both sides are large and both are moved exactly once, to the client.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::debug;
use uuid::Uuid;

use switchyard_bus::{Bus, BusError, Message};
use switchyard_core::FailureClass;
use switchyard_protocol::client::{
    Attempt, ErrorReply, ErrorType, QueryOutcome, QueryReply, QueryRequest, StreamFrame, Trace,
};
use switchyard_protocol::internal::{ProviderCall, ProviderReply, Refusal, StreamTarget, WireFailureClass};
use switchyard_protocol::subjects::Subjects;
use switchyard_protocol::{Bincode, Codec, Json};
use switchyard_state::{Claim, IdempotencyStore};

/// What every query task of a node shares.
pub struct QueryContext {
    pub node: String,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
}

/// The final answer of a query, before it is rendered for a plain or a streaming client.
pub type Answer = Result<QueryReply, ErrorReply>;

/// Renders an answer as the bytes a client expects on its reply subject.
pub fn render(answer: &Answer, stream: bool) -> Bytes {
    let encoded = match (answer, stream) {
        (Ok(reply), false) => Json::encode(reply),
        (Err(error), false) => Json::encode(error),
        (Ok(reply), true) => Json::encode(&StreamFrame::Done(reply.clone())),
        (Err(error), true) => Json::encode(&StreamFrame::Error(error.clone())),
    };
    // Our own reply types always serialise; an empty payload would still end the client's wait.
    Bytes::from(encoded.unwrap_or_default())
}

/// Runs `request` on the providers of `route`, in order, until one answers or the deadline passes.
pub async fn run_query(
    ctx: &QueryContext,
    route: &str,
    providers: &[String],
    request: &QueryRequest,
    reply_to: &str,
    deadline: Instant,
) -> Answer {
    let started = Instant::now();
    let mut trace = Trace { node: ctx.node.clone(), route: route.to_owned(), attempts: Vec::new() };
    let chat = request.to_chat_request();
    let fail = |kind, code: &str, message: String, trace: Trace| {
        Err(ErrorReply::new(kind, code, message).with_id(request.id.clone()).with_trace(trace))
    };
    let mut retry_after: Option<u64> = None;
    let mut only_unavailable = true;

    for provider in providers {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return fail(ErrorType::DeadlineExceeded, "deadline_exceeded", "the deadline passed".into(), trace);
        }
        let call = ProviderCall {
            call_id: Uuid::new_v4(),
            request: chat.clone(),
            budget_ms: remaining.as_millis().max(1) as u64,
            stream: request.stream.then(|| StreamTarget { subject: reply_to.to_owned(), first_seq: 0 }),
        };
        let payload = match Bincode::encode(&call) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => return fail(ErrorType::InvalidRequest, "unencodable", e.to_string(), trace),
        };
        let attempt_started = Instant::now();
        // A little slack beyond the budget lets the provider report its own deadline expiry.
        let wait = remaining + Duration::from_millis(50);
        let result = ctx.bus.request(Message::new(ctx.subjects.provider_call(provider), payload), wait).await;
        let latency_ms = attempt_started.elapsed().as_secs_f64() * 1000.0;
        let mut attempt =
            Attempt { provider: provider.clone(), outcome: String::new(), latency_ms, status: None, message: None };
        match result.map(|m| Bincode::decode::<ProviderReply>(&m.payload)) {
            Ok(Ok(ProviderReply::Completed { completion, .. })) => {
                attempt.outcome = "success".into();
                trace.attempts.push(attempt);
                return Ok(QueryReply {
                    id: request.id.clone(),
                    content: completion.content,
                    model: completion.model,
                    provider: provider.clone(),
                    finish_reason: completion.finish_reason,
                    usage: completion.usage,
                    cost_usd: completion.cost_usd,
                    latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                    trace,
                });
            }
            Ok(Ok(ProviderReply::Failed(failure))) => {
                let class = FailureClass::from(failure.class);
                attempt.outcome = class.as_str().into();
                attempt.status = failure.status;
                attempt.message = Some(failure.message.clone());
                trace.attempts.push(attempt);
                only_unavailable &= matches!(class, FailureClass::RateLimited { .. });
                if let WireFailureClass::RateLimited { retry_after_ms: Some(ms) } = failure.class {
                    retry_after = Some(retry_after.map_or(ms, |r| r.min(ms)));
                }
                if failure.chunks > 0 {
                    let message = format!("{provider} failed after {} streamed chunks", failure.chunks);
                    return fail(ErrorType::UpstreamError, "stream_interrupted", message, trace);
                }
                if class == FailureClass::Cancelled {
                    return fail(ErrorType::DeadlineExceeded, "deadline_exceeded", failure.message, trace);
                }
                if !class.worth_falling_back() {
                    return fail(ErrorType::UpstreamError, class.as_str(), failure.message, trace);
                }
            }
            Ok(Ok(ProviderReply::Refused { reason })) => {
                attempt.outcome = format!("refused_{}", reason.as_str());
                trace.attempts.push(attempt);
                if let Refusal::BreakerOpen { retry_after_ms } = reason {
                    retry_after = Some(retry_after.map_or(retry_after_ms, |r| r.min(retry_after_ms)));
                }
            }
            Ok(Err(decode)) => {
                attempt.outcome = "bad_reply".into();
                attempt.message = Some(decode.to_string());
                trace.attempts.push(attempt);
                only_unavailable = false;
            }
            Err(BusError::NoResponders { .. }) => {
                attempt.outcome = "no_responders".into();
                trace.attempts.push(attempt);
            }
            Err(BusError::Timeout { .. }) => {
                attempt.outcome = "timeout".into();
                trace.attempts.push(attempt);
                return fail(ErrorType::DeadlineExceeded, "deadline_exceeded", "the deadline passed".into(), trace);
            }
            Err(other) => {
                attempt.outcome = "bus_error".into();
                attempt.message = Some(other.to_string());
                trace.attempts.push(attempt);
            }
        }
    }

    if only_unavailable {
        let message = format!("no provider of route {route} is available");
        let error = ErrorReply::new(ErrorType::NoProviderAvailable, "no_provider_available", message)
            .with_retry_after_ms(retry_after.unwrap_or(1000))
            .with_id(request.id.clone())
            .with_trace(trace);
        return Err(error);
    }
    let message = format!("every provider of route {route} failed");
    fail(ErrorType::UpstreamError, "all_providers_failed", message, trace)
}

/// Answers a query that carries an idempotency key once across the cluster.
///
/// The first node to claim `key` runs the query and stores the answer (until the deadline); a node that finds the
/// key taken waits for that answer, and one that finds it answered returns it. When the store cannot be reached
/// the node answers by itself: a duplicate is then possible, a lost query is not.
pub async fn answer_once<F, Fut>(
    store: &dyn IdempotencyStore,
    key: &str,
    node: &str,
    deadline: Instant,
    run: F,
) -> Answer
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let ttl = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    match store.claim(key, node, ttl).await {
        Ok(Claim::Answered(bytes)) => match decode_answer(&bytes) {
            Some(answer) => answer,
            None => run().await,
        },
        Ok(Claim::Taken { owner }) => wait_for_answer(store, key, &owner, deadline).await,
        Ok(Claim::Owned) => {
            let answer = run().await;
            let ttl = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            if let Err(error) = store.complete(key, &encode_answer(&answer), ttl).await {
                debug!(%error, "cannot store the answer of an idempotent query");
            }
            answer
        }
        Err(error) => {
            debug!(%error, "idempotency store unavailable, answering locally");
            run().await
        }
    }
}

/// Polls for the answer another node is producing, until the deadline.
async fn wait_for_answer(store: &dyn IdempotencyStore, key: &str, owner: &str, deadline: Instant) -> Answer {
    while Instant::now() < deadline {
        if let Ok(Some(bytes)) = store.answer(key).await
            && let Some(answer) = decode_answer(&bytes)
        {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let message = format!("the query is being answered by node {owner} and its deadline passed");
    Err(ErrorReply::new(ErrorType::DeadlineExceeded, "deadline_exceeded", message))
}

fn encode_answer(answer: &Answer) -> Vec<u8> {
    let outcome = match answer {
        Ok(reply) => QueryOutcome::Reply(reply.clone()),
        Err(error) => QueryOutcome::Error(error.clone()),
    };
    Json::encode(&outcome).unwrap_or_default()
}

fn decode_answer(bytes: &[u8]) -> Option<Answer> {
    match Json::decode::<QueryOutcome>(bytes).ok()? {
        QueryOutcome::Reply(reply) => Some(Ok(reply)),
        QueryOutcome::Error(error) => Some(Err(error)),
    }
}
