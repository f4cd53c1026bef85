//! Answering a query that carries an idempotency key once, across the cluster.
//!
//! The router de-duplicates copies of an `id` inside one node; this module does it between nodes, through the
//! shared [`IdempotencyStore`]: the node that claims a key runs the query, the others wait for its answer.

// An answer is a reply either way: both sides are large and both are moved exactly once, to the client.
#![allow(clippy::result_large_err)]

use std::time::{Duration, Instant};

use tracing::debug;

use switchyard_protocol::client::{ErrorReply, ErrorType, QueryOutcome};
use switchyard_protocol::{Codec, Json};
use switchyard_state::{Claim, IdempotencyStore};

use crate::query::Answer;

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
