//! One query's journey over the providers of its route.
//!
//! The router actor admits a query and spawns [`run_query`] as a task. It walks the route's chains (the generic
//! one, or after a context-window or content-policy failure the special one first), resolving each entry to a
//! provider (a group picks a member), and calls it over the bus (`<ns>.v1.provider.<p>.call`, bincode). A
//! transient failure may be retried on the same provider (full-jitter backoff, `Retry-After` as a floor, within
//! the retry budget and the deadline); otherwise the walk moves on. Every attempt is recorded in the trace. A
//! failure that is the request's own fault ends the walk at once; so does any failure after stream chunks
//! reached the client (a stream is never retried after its first chunk).

// An answer is a reply either way: both sides are large and both are moved exactly once, to the client.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use switchyard_bus::{Bus, BusError, Message};
use switchyard_core::{FailureClass, RetryDecision};
use switchyard_protocol::client::{Attempt, ErrorReply, ErrorType, QueryReply, QueryRequest, StreamFrame, Trace};
use switchyard_protocol::internal::{ProviderCall, ProviderReply, Refusal, StreamTarget};
use switchyard_protocol::subjects::Subjects;
use switchyard_protocol::{Bincode, Codec, Json};

use crate::routing::{Resolved, RoutePlan, Routing};

/// What every query task of a node shares.
pub struct QueryContext {
    pub node: String,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
}

/// The final answer of a query, before it is rendered for a plain or a streaming client.
pub type Answer = Result<QueryReply, ErrorReply>;

/// How a streamed answer ended: the attempt whose chunks reached the client, and how many it published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamEnd {
    pub attempt: u32,
    pub chunks: u64,
}

/// Renders an answer as the bytes a client expects on its reply subject: a reply or an error, or for a streaming
/// client the final frame.
pub fn render(answer: &Answer, stream: Option<StreamEnd>) -> Bytes {
    let encoded = match (answer, stream) {
        (Ok(reply), None) => Json::encode(reply),
        (Err(error), None) => Json::encode(error),
        (Ok(reply), Some(StreamEnd { attempt, chunks })) => {
            Json::encode(&StreamFrame::Done { attempt, chunks, reply: reply.clone() })
        }
        (Err(error), Some(StreamEnd { attempt, chunks })) => {
            Json::encode(&StreamFrame::Error { attempt, chunks, error: error.clone() })
        }
    };
    // Our own reply types always serialise; an empty payload would still end the client's wait.
    Bytes::from(encoded.unwrap_or_default())
}

/// One upstream call's result, as the walk sees it.
enum CallResult {
    Answered(switchyard_protocol::Completion),
    Failed { class: FailureClass, status: Option<u16>, message: String, chunks: u64 },
    Refused { reason: Refusal },
    NoResponders,
    Timeout,
    Broken(String),
}

/// Sends one call to `provider` and waits, at most until the deadline, for its reply.
async fn call_provider(ctx: &QueryContext, provider: &str, call: &ProviderCall, remaining: Duration) -> CallResult {
    let payload = match Bincode::encode(call) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => return CallResult::Broken(e.to_string()),
    };
    // A little slack beyond the budget lets the provider report its own deadline expiry.
    let wait = remaining + Duration::from_millis(50);
    match ctx.bus.request(Message::new(ctx.subjects.provider_call(provider), payload), wait).await {
        Ok(reply) => match Bincode::decode::<ProviderReply>(&reply.payload) {
            Ok(ProviderReply::Completed { completion, .. }) => CallResult::Answered(completion),
            Ok(ProviderReply::Failed(f)) => {
                CallResult::Failed { class: f.class.into(), status: f.status, message: f.message, chunks: f.chunks }
            }
            Ok(ProviderReply::Refused { reason }) => CallResult::Refused { reason },
            Err(decode) => CallResult::Broken(decode.to_string()),
        },
        Err(BusError::NoResponders { .. }) => CallResult::NoResponders,
        Err(BusError::Timeout { .. }) => CallResult::Timeout,
        Err(other) => CallResult::Broken(other.to_string()),
    }
}

/// Runs `request` on `plan`: retries of the same provider, fallbacks along the chains, balancing inside groups,
/// all inside the client's deadline.
pub async fn run_query(
    ctx: &QueryContext,
    routing: &Routing,
    plan: &RoutePlan,
    request: &QueryRequest,
    reply_to: &str,
    deadline: Instant,
) -> Answer {
    let started = Instant::now();
    routing.record_request(started);
    let mut trace = Trace { node: ctx.node.clone(), route: plan.name.clone(), attempts: Vec::new() };
    let fail = |kind, code: &str, message: String, trace: Trace| {
        Err(ErrorReply::new(kind, code, message).with_id(request.id.clone()).with_trace(trace))
    };
    let mut call = ProviderCall {
        call_id: Uuid::new_v4(),
        request: request.to_chat_request(),
        budget_ms: 0,
        stream: request.stream.then(|| StreamTarget { subject: reply_to.to_owned(), attempt: 1, claim: None }),
        bypass_breaker: false,
        attempt_capped: false,
    };
    let mut retry_after: Option<u64> = None;
    let mut note_retry_after = |ms: u64| retry_after = Some(retry_after.map_or(ms, |r: u64| r.min(ms)));
    let mut only_unavailable = true;
    let mut tried: Vec<String> = Vec::new();
    let mut last_failure: Option<FailureClass> = None;

    while let Some(target) = plan.chains.next(&tried, last_failure) {
        tried.push(target.clone());
        last_failure = None;
        let (provider, member, bypass) = match routing.resolve(&target, Instant::now()) {
            Resolved::Provider { name, member, bypass_breaker } => (name, member, bypass_breaker),
            Resolved::Unavailable { retry_after } => {
                note_retry_after(retry_after.as_millis().max(1) as u64);
                trace.attempts.push(Attempt {
                    provider: target.clone(),
                    outcome: "group_unavailable".into(),
                    latency_ms: 0.0,
                    status: None,
                    message: None,
                    panic: false,
                });
                continue;
            }
        };
        let mut attempt_no = 1;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                routing.finish(&member, Duration::ZERO, false, None);
                return fail(ErrorType::DeadlineExceeded, "deadline_exceeded", "the deadline passed".into(), trace);
            }
            let fallback_left = plan.chains.next(&tried, Some(FailureClass::Retryable)).is_some();
            let (budget, capped) = plan.attempt_budget(remaining, fallback_left);
            call.call_id = Uuid::new_v4();
            call.budget_ms = budget.as_millis().max(1) as u64;
            call.bypass_breaker = bypass;
            call.attempt_capped = capped;
            let attempt_started = Instant::now();
            let result = call_provider(ctx, &provider, &call, budget).await;
            let latency = attempt_started.elapsed();
            let mut attempt = Attempt {
                provider: provider.clone(),
                outcome: String::new(),
                latency_ms: latency.as_secs_f64() * 1000.0,
                status: None,
                message: None,
                panic: bypass,
            };
            match result {
                CallResult::Answered(completion) => {
                    routing.finish(&member, latency, false, None);
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
                CallResult::Failed { class, status, message, chunks } => {
                    routing.finish(&member, latency, class.worth_falling_back(), None);
                    attempt.outcome = class.as_str().into();
                    attempt.status = status;
                    attempt.message = Some(message.clone());
                    trace.attempts.push(attempt);
                    only_unavailable &= matches!(class, FailureClass::RateLimited { .. });
                    if let FailureClass::RateLimited { retry_after: Some(wait) } = class {
                        note_retry_after(wait.as_millis() as u64);
                    }
                    if chunks > 0 {
                        let message = format!("{provider} failed after {chunks} streamed chunks");
                        return fail(ErrorType::UpstreamError, "stream_interrupted", message, trace);
                    }
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match plan.retry.decide(attempt_no, class, remaining, false, rand::random::<f64>()) {
                        RetryDecision::RetrySameAfter(delay) if routing.try_retry(Instant::now()) => {
                            tokio::time::sleep(delay).await;
                            attempt_no += 1;
                            routing.start(&member);
                            continue;
                        }
                        RetryDecision::RetrySameAfter(_) | RetryDecision::NextProvider => {
                            last_failure = Some(class);
                        }
                        RetryDecision::GiveUp if class == FailureClass::Cancelled => {
                            return fail(ErrorType::DeadlineExceeded, "deadline_exceeded", message, trace);
                        }
                        RetryDecision::GiveUp => {
                            return fail(ErrorType::UpstreamError, class.as_str(), message, trace);
                        }
                    }
                }
                CallResult::Refused { reason } => {
                    let refused_for = match reason {
                        Refusal::BreakerOpen { retry_after_ms } => {
                            note_retry_after(retry_after_ms);
                            Some(Duration::from_millis(retry_after_ms))
                        }
                        _ => None,
                    };
                    routing.finish(&member, latency, false, refused_for);
                    attempt.outcome = format!("refused_{}", reason.as_str());
                    trace.attempts.push(attempt);
                }
                CallResult::NoResponders => {
                    routing.finish(&member, latency, false, None);
                    attempt.outcome = "no_responders".into();
                    trace.attempts.push(attempt);
                }
                CallResult::Timeout => {
                    routing.finish(&member, latency, capped, None);
                    attempt.outcome = "timeout".into();
                    trace.attempts.push(attempt);
                    if !capped {
                        let message = "the deadline passed".into();
                        return fail(ErrorType::DeadlineExceeded, "deadline_exceeded", message, trace);
                    }
                    // The attempt's cap passed, not the client's deadline: the next provider may still answer.
                    only_unavailable = false;
                    last_failure = Some(FailureClass::Retryable);
                }
                CallResult::Broken(message) => {
                    routing.finish(&member, latency, false, None);
                    attempt.outcome = "bus_error".into();
                    attempt.message = Some(message);
                    trace.attempts.push(attempt);
                    only_unavailable = false;
                }
            }
            break;
        }
    }

    if only_unavailable {
        let message = format!("no provider of route {} is available", plan.name);
        let error = ErrorReply::new(ErrorType::NoProviderAvailable, "no_provider_available", message)
            .with_retry_after_ms(retry_after.unwrap_or(1000))
            .with_id(request.id.clone())
            .with_trace(trace);
        return Err(error);
    }
    let message = format!("every provider of route {} failed", plan.name);
    fail(ErrorType::UpstreamError, "all_providers_failed", message, trace)
}
