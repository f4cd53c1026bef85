//! Replay of the RouteLLM recordings through both wire formats (skipped when the data is absent).

use serde_json::{Value, json};
use switchyard_mock::{Answer, Behavior, MockConfig, ReplayData};

use crate::common::{anthropic_body, collect_sse, data_dir, openai_body, post_anthropic, post_openai, start_with};

const WEAK: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";
const STRONG: &str = "gpt-4-1106-preview";
const JANET: &str = "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and \
bakes muffins for her friends every day with four. She sells the remainder at the farmers' market daily \
for $2 per fresh duck egg. How much in dollars does she make every day at the farmers' market?";

fn replaying(replay: ReplayData) -> MockConfig {
    MockConfig {
        default_behavior: Behavior { answer: Answer::Replay, ..Behavior::default() },
        replay: Some(replay),
        ..MockConfig::default()
    }
}

#[tokio::test]
async fn gsm8k_answers_are_replayed_verbatim() {
    let Some(dir) = data_dir() else { return };
    let replay = ReplayData::load(dir.join("routellm/gsm8k/gsm8k_responses.csv")).unwrap();
    assert!(replay.len() >= 2 * 1_300, "{}", replay.len());
    let weak_answer = replay.get(WEAK, JANET).unwrap().to_owned();
    assert!(weak_answer.starts_with(" Janet starts with 16 eggs per day."));
    let strong_answer = replay.get(STRONG, JANET).unwrap().to_owned();
    let server = start_with(replaying(replay)).await;

    let completion: Value = post_openai(&server, &openai_body(WEAK, JANET)).await.json().await.unwrap();
    assert_eq!(completion["choices"][0]["message"]["content"], weak_answer.as_str());
    assert_eq!(completion["usage"]["completion_tokens"], weak_answer.split_whitespace().count());

    let mut body = anthropic_body(STRONG, JANET);
    body["max_tokens"] = json!(4096);
    body["stream"] = json!(true);
    let events = collect_sse(post_anthropic(&server, &body).await).await;
    let streamed: String = events
        .iter()
        .filter(|e| e.event == "content_block_delta")
        .map(|e| e.json()["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, strong_answer);
}

#[tokio::test]
async fn replay_misses_are_not_found_in_the_provider_format() {
    let mut replay = ReplayData::new();
    replay.insert("known", "a recorded prompt", "a recorded answer");
    let server = start_with(replaying(replay)).await;

    let hit: Value = post_openai(&server, &openai_body("known", "a recorded prompt")).await.json().await.unwrap();
    assert_eq!(hit["choices"][0]["message"]["content"], "a recorded answer");

    let response = post_openai(&server, &openai_body("known", "something else")).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response = post_openai(&server, &openai_body("unknown", "a recorded prompt")).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");

    let response = post_anthropic(&server, &anthropic_body("unknown", "a recorded prompt")).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found_error");
    assert_eq!(server.total_calls(), 4);
}

#[tokio::test]
async fn mmlu_files_answer_with_the_correctness_label() {
    let Some(dir) = data_dir() else { return };
    let path = dir.join("routellm/mmlu/responses/mmlu_abstract_algebra.csv");
    let replay = ReplayData::load(&path).unwrap();
    let prompt = replay.prompts(WEAK).next().unwrap().to_owned();
    let expected = replay.get(WEAK, &prompt).unwrap().to_owned();
    assert!(expected == "True" || expected == "False", "{expected}");
    let server = start_with(replaying(replay)).await;
    let completion: Value = post_openai(&server, &openai_body(WEAK, &prompt)).await.json().await.unwrap();
    assert_eq!(completion["choices"][0]["message"]["content"], expected.as_str());
}
