//! The OpenAI Chat Completions dialect, checked field by field as a client sees it.

use serde_json::{Value, json};
use switchyard_mock::{Behavior, MockError};

use crate::common::{collect_sse, openai_body, post_openai, start, start_scripted};

#[tokio::test]
async fn non_streaming_completion_has_the_real_shape() {
    let server = start().await;
    let response = post_openai(&server, &openai_body("gpt-4o", "hello big world")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "gpt-4o");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "echo: hello big world");
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(choice["finish_reason"], "stop");
    // "you are terse" + "hello big world" = 6 words in; "echo: hello big world" = 4 words out.
    assert_eq!(body["usage"], json!({"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}));
    assert_eq!(server.calls("gpt-4o"), 1);
    assert_eq!(server.total_calls(), 1);
}

#[tokio::test]
async fn streaming_sends_role_tokens_finish_usage_and_done() {
    let server = start_scripted("gpt-4o", Behavior::answering("hello world again")).await;
    let mut body = openai_body("gpt-4o", "hi");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = collect_sse(post_openai(&server, &body).await).await;
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    assert!(events.iter().all(|e| e.event.is_empty()));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| e.json()).collect();
    // Role, three tokens, finish, usage.
    assert_eq!(chunks.len(), 6, "{chunks:#?}");
    let id = chunks[0]["id"].as_str().unwrap();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["model"], "gpt-4o");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    let tokens: Vec<&str> =
        chunks[1..4].iter().map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap()).collect();
    assert_eq!(tokens, ["hello ", "world ", "again"]);
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["usage"], Value::Null);
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"], json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}));
}

#[tokio::test]
async fn streaming_without_usage_has_no_usage_field() {
    let server = start().await;
    let mut body = openai_body("gpt-4o", "hi");
    body["stream"] = json!(true);
    let events = collect_sse(post_openai(&server, &body).await).await;
    // Role, "echo: ", "hi", finish, [DONE].
    assert_eq!(events.len(), 5);
    for event in &events[..4] {
        assert!(event.json().get("usage").is_none(), "{}", event.data);
    }
}

#[tokio::test]
async fn logprobs_are_reported_when_asked() {
    let server = start_scripted("gpt-4o", Behavior::answering("yes no")).await;
    let mut body = openai_body("gpt-4o", "?");
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    let first: Value = post_openai(&server, &body).await.json().await.unwrap();
    let content = first["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 2);
    assert_eq!(content[0]["token"], "yes ");
    assert_eq!(content[0]["bytes"], json!([121, 101, 115, 32]));
    let logprob = content[0]["logprob"].as_f64().unwrap();
    assert!((-2.5..=0.0).contains(&logprob));
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
    assert_eq!(content[0]["top_logprobs"][0]["token"], "yes ");

    let second: Value = post_openai(&server, &body).await.json().await.unwrap();
    assert_eq!(first["choices"][0]["logprobs"], second["choices"][0]["logprobs"]);

    body["stream"] = json!(true);
    let events = collect_sse(post_openai(&server, &body).await).await;
    let token_chunk = events[1].json();
    assert_eq!(token_chunk["choices"][0]["logprobs"]["content"][0]["token"], "yes ");
    assert_eq!(token_chunk["choices"][0]["logprobs"]["content"][0]["logprob"], content[0]["logprob"]);
}

#[tokio::test]
async fn max_tokens_truncates_with_finish_reason_length() {
    let server = start_scripted("gpt-4o", Behavior::answering("one two three four five")).await;
    let mut body = openai_body("gpt-4o", "count");
    body["max_tokens"] = json!(3);
    let completion: Value = post_openai(&server, &body).await.json().await.unwrap();
    assert_eq!(completion["choices"][0]["message"]["content"], "one two three");
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert_eq!(completion["usage"]["completion_tokens"], 3);

    // `max_completion_tokens` wins over the legacy field.
    body["max_completion_tokens"] = json!(2);
    body["stream"] = json!(true);
    let events = collect_sse(post_openai(&server, &body).await).await;
    let tokens: Vec<String> =
        events[1..3].iter().map(|e| e.json()["choices"][0]["delta"]["content"].as_str().unwrap().to_owned()).collect();
    assert_eq!(tokens, ["one ", "two"]);
    assert_eq!(events[3].json()["choices"][0]["finish_reason"], "length");
}

struct Expected {
    status: u16,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<&'static str>,
    retry_after: Option<(&'static str, &'static str)>,
}

async fn check_error(error: MockError, expected: Expected) {
    let server = start_scripted("gpt-4o", Behavior::failing(error.clone())).await;
    let response = post_openai(&server, &openai_body("gpt-4o", "hi")).await;
    assert_eq!(response.status(), expected.status, "{error:?}");
    let headers = response.headers().clone();
    match expected.retry_after {
        Some((seconds, millis)) => {
            assert_eq!(headers["retry-after"], seconds, "{error:?}");
            assert_eq!(headers["retry-after-ms"], millis, "{error:?}");
        }
        None => assert!(headers.get("retry-after").is_none(), "{error:?}"),
    }
    let body: Value = response.json().await.unwrap();
    let object = body["error"].as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{error:?}");
    assert_eq!(body["error"]["type"], expected.kind, "{error:?}");
    assert_eq!(body["error"]["code"], json!(expected.code), "{error:?}");
    assert_eq!(body["error"]["param"], json!(expected.param), "{error:?}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    assert_eq!(server.calls("gpt-4o"), 1);
}

fn expected(status: u16, kind: &'static str, code: Option<&'static str>) -> Expected {
    Expected { status, kind, code, param: None, retry_after: None }
}

#[tokio::test]
async fn every_error_kind_has_the_openai_status_body_and_headers() {
    let rate_limit = MockError::Status { status: 429, retry_after_s: None, retry_after_ms: Some(1500) };
    check_error(
        rate_limit,
        Expected { retry_after: Some(("2", "1500")), ..expected(429, "requests", Some("rate_limit_exceeded")) },
    )
    .await;
    check_error(
        MockError::Status { status: 503, retry_after_s: Some(3), retry_after_ms: None },
        Expected { retry_after: Some(("3", "3000")), ..expected(503, "server_error", None) },
    )
    .await;
    check_error(MockError::Quota, expected(429, "insufficient_quota", Some("insufficient_quota"))).await;
    check_error(MockError::Auth, expected(401, "invalid_request_error", Some("invalid_api_key"))).await;
    check_error(
        MockError::ContextLength,
        Expected { param: Some("messages"), ..expected(400, "invalid_request_error", Some("context_length_exceeded")) },
    )
    .await;
    check_error(MockError::ContentPolicy, expected(400, "invalid_request_error", Some("content_policy_violation")))
        .await;
    for status in [500, 502, 504] {
        check_error(MockError::status(status), expected(status, "server_error", None)).await;
    }
    check_error(MockError::status(529), expected(529, "server_error", Some("overloaded"))).await;
    check_error(MockError::status(404), expected(404, "invalid_request_error", Some("model_not_found"))).await;
    check_error(
        MockError::status(403),
        expected(403, "request_forbidden", Some("unsupported_country_region_territory")),
    )
    .await;
    check_error(MockError::status(413), expected(413, "invalid_request_error", Some("request_too_large"))).await;
}

#[tokio::test]
async fn auth_error_message_matches_openai() {
    let server = start_scripted("gpt-4o", Behavior::failing(MockError::Auth)).await;
    let body: Value = post_openai(&server, &openai_body("gpt-4o", "hi")).await.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "Incorrect API key provided: sk-ab***yz. You can find your API key at \
         https://platform.openai.com/account/api-keys."
    );
}

#[tokio::test]
async fn malformed_requests_are_openai_400s_and_still_counted() {
    let server = start().await;
    let response = post_openai(&server, &json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "messages");
    assert_eq!(server.calls("gpt-4o"), 1);

    let response = crate::common::client()
        .post(format!("{}/chat/completions", server.openai_base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(server.total_calls(), 2);
}

#[tokio::test]
async fn confidence_knobs_set_every_token_logprob() {
    let behavior = Behavior { unsure_marker: Some("[hard]".into()), ..Behavior::answering("four and a bit") };
    let server = start_scripted("weak", behavior).await;
    let token_logprobs = |completion: &Value| -> Vec<f64> {
        completion["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["logprob"].as_f64().unwrap())
            .collect()
    };
    let mut body = openai_body("weak", "[hard] what is pi?");
    body["logprobs"] = json!(true);
    let unsure: Value = post_openai(&server, &body).await.json().await.unwrap();
    assert_eq!(token_logprobs(&unsure), vec![switchyard_mock::UNSURE_LOGPROB; 4]);
    body["messages"][1]["content"] = json!("what is 2+2?");
    let sure: Value = post_openai(&server, &body).await.json().await.unwrap();
    assert_eq!(token_logprobs(&sure), vec![switchyard_mock::SURE_LOGPROB; 4]);

    // Streamed tokens carry the same values.
    body["messages"][1]["content"] = json!("[hard] again");
    body["stream"] = json!(true);
    let events = collect_sse(post_openai(&server, &body).await).await;
    assert_eq!(events[1].json()["choices"][0]["logprobs"]["content"][0]["logprob"], switchyard_mock::UNSURE_LOGPROB);
}
