//! The OpenAI-compatible client against canned upstream bytes.

use std::time::{Duration, Instant};

use switchyard_providers::{FailureClass, ProviderKind};

use crate::common::canned::{Canned, Reply, json, response, sse, sse_head};
use crate::common::{assert_cost, collect, provider, request, settings};

const KEY: &str = "sk-test-0123456789abcdefghij";

const ANSWER: &str = r#"{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {
      "index": 0,
      "message": { "role": "assistant", "content": "Hello there", "refusal": null, "annotations": [] },
      "logprobs": {
        "content": [
          { "token": "Hello", "logprob": -0.31725305, "bytes": [72, 101, 108, 108, 111], "top_logprobs": [] },
          { "token": " there", "logprob": -1.3190403, "bytes": [32, 116, 104, 101, 114, 101], "top_logprobs": [] }
        ],
        "refusal": null
      },
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19, "completion_tokens": 2, "total_tokens": 21,
    "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
    "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0 }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_06737a9306"
}"#;

fn chunk(choices: &str, usage: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[{choices}],\"usage\":{usage}}}\n\n"
    )
}

fn delta(text: &str, logprob: f64) -> String {
    chunk(
        &format!(
            r#"{{"index":0,"delta":{{"content":"{text}"}},"logprobs":{{"content":[{{"token":"{text}","logprob":{logprob},"bytes":[],"top_logprobs":[]}}],"refusal":null}},"finish_reason":null}}"#
        ),
        "null",
    )
}

fn stream_body(terminated: bool) -> String {
    let mut body = chunk(
        r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}"#,
        "null",
    );
    body.push_str(&delta("Hello", -0.0009));
    body.push_str(&delta(" there", -0.25));
    body.push_str(&chunk(r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#, "null"));
    body.push_str(&chunk("", r#"{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}"#));
    if terminated {
        body.push_str("data: [DONE]\n\n");
    }
    body
}

#[tokio::test]
async fn complete_sends_the_openai_shape_and_reads_the_answer() {
    let mut server = Canned::start(vec![json(200, ANSWER)]).await;
    let client = provider(settings(ProviderKind::OpenAi, &format!("{}/v1/", server.base), Some(KEY)));
    assert_eq!(client.name(), "test-provider");
    assert_eq!(client.model(), "configured-model");

    let completion = client.complete(&switchyard_protocol::ChatRequest { logprobs: true, ..request() }).await.unwrap();
    assert_eq!(completion.content, "Hello there");
    assert_eq!(completion.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
    assert_eq!((completion.usage.input_tokens, completion.usage.output_tokens), (19, 2));
    assert_cost(&completion);
    let logprobs = completion.logprobs.unwrap();
    assert_eq!(logprobs.len(), 2);
    assert_eq!(logprobs[1].token, " there");
    assert!((logprobs[1].logprob - -1.3190403).abs() < 1e-12);

    let seen = server.request().await;
    assert_eq!(seen.target, "POST /v1/chat/completions");
    assert_eq!(seen.headers["authorization"], format!("Bearer {KEY}"));
    assert!(seen.headers["content-type"].starts_with("application/json"));
    let body = &seen.body;
    assert_eq!(body["model"], "configured-model");
    assert_eq!(body["stream"], false);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["top_p"], 0.5);
    assert_eq!(body["stop"], serde_json::json!(["\n\n"]));
    assert_eq!(body["logprobs"], true);
    assert_eq!(body["top_logprobs"], 0);
    assert!(body.get("stream_options").is_none());
    assert_eq!(body["messages"].as_array().unwrap().len(), 3);
    assert_eq!(body["messages"][0], serde_json::json!({"role": "system", "content": "Be brief."}));
    assert_eq!(body["messages"][2], serde_json::json!({"role": "user", "content": "Say hello"}));
}

#[tokio::test]
async fn a_keyless_local_server_gets_no_authorization_and_no_optional_fields() {
    let answer = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"llama3.2","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"length"}]}"#;
    let mut server = Canned::start(vec![json(200, answer)]).await;
    let client = provider(settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), None));
    let plain = switchyard_protocol::ChatRequest {
        max_tokens: None,
        temperature: None,
        stop: vec![],
        top_p: None,
        ..request()
    };
    let completion = client.complete(&plain).await.unwrap();
    assert_eq!(completion.content, "Hi");
    assert_eq!(completion.finish_reason.as_deref(), Some("length"));
    assert_eq!(completion.usage, Default::default());
    assert_eq!(completion.logprobs, None);
    let seen = server.request().await;
    assert!(!seen.headers.contains_key("authorization"));
    for field in ["max_tokens", "temperature", "top_p", "stop", "logprobs", "top_logprobs"] {
        assert!(seen.body.get(field).is_none(), "{field} sent");
    }
}

#[tokio::test]
async fn stream_yields_deltas_then_the_whole_answer() {
    let mut server = Canned::start(vec![sse(&stream_body(true))]).await;
    let client = provider(settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), Some(KEY)));
    let stream = client.stream(&switchyard_protocol::ChatRequest { logprobs: true, ..request() }).await.unwrap();
    let (deltas, done) = collect(stream).await;
    assert_eq!(deltas, ["Hello", " there"]);
    let completion = done.unwrap();
    assert_eq!(completion.content, "Hello there");
    assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
    assert_eq!((completion.usage.input_tokens, completion.usage.output_tokens), (9, 2));
    assert_eq!(completion.model, "gpt-4o-mini-2024-07-18");
    assert_cost(&completion);
    let tokens: Vec<_> = completion.logprobs.unwrap().into_iter().map(|entry| entry.token).collect();
    assert_eq!(tokens, ["Hello", " there"]);

    let seen = server.request().await;
    assert_eq!(seen.body["stream"], true);
    assert_eq!(seen.body["stream_options"], serde_json::json!({"include_usage": true}));
    assert_eq!(seen.headers["accept"], "text/event-stream");
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_it_classified() {
    let mut body = stream_body(false)[..].split("\n\n").take(2).collect::<Vec<_>>().join("\n\n");
    body.push_str("\n\ndata: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n");
    let server = Canned::start(vec![sse(&body)]).await;
    let client = provider(settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), Some(KEY)));
    let (deltas, done) = collect(client.stream(&request()).await.unwrap()).await;
    assert_eq!(deltas, ["Hello"]);
    let err = done.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable);
    assert_eq!(err.status, None);
    assert!(err.message.contains("server_error"), "{err}");
    assert_eq!(err.provider, "test-provider");
}

#[tokio::test]
async fn a_stream_without_done_is_retryable() {
    let server = Canned::start(vec![sse(&stream_body(false))]).await;
    let client = provider(settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), Some(KEY)));
    let (deltas, done) = collect(client.stream(&request()).await.unwrap()).await;
    assert_eq!(deltas, ["Hello", " there"]);
    let err = done.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable);
    assert!(err.message.contains("[DONE]"), "{err}");
}

#[tokio::test]
async fn a_stalled_stream_times_out_retryable() {
    let stalled = format!("{}{}", sse_head(), delta("Hello", -0.1));
    let server = Canned::start(vec![Reply::Stall(stalled)]).await;
    let client = provider(settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), Some(KEY)));
    let (deltas, done) = collect(client.stream(&request()).await.unwrap()).await;
    assert_eq!(deltas, ["Hello"]);
    let err = done.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable);
    assert!(err.message.contains("timed out"), "{err}");
}

#[tokio::test]
async fn error_statuses_are_classified() {
    let rate_limited = response(
        429,
        &[("content-type", "application/json"), ("retry-after-ms", "1500"), ("retry-after", "2")],
        r#"{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-abc on tokens per min (TPM): Limit 200000, Used 199990, Requested 120. Please try again in 1.5s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
    );
    let quota = json(
        429,
        r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
    );
    let context = json(
        400,
        r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130417 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
    );
    let overloaded = json(
        503,
        r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error","param":null,"code":null}}"#,
    );
    let server = Canned::start(vec![rate_limited, quota, context, overloaded]).await;
    let client = provider(settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), Some(KEY)));

    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::RateLimited { retry_after: Some(Duration::from_millis(1500)) });
    assert_eq!(err.status, Some(429));
    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Fatal { auth: false });
    // Errors before the first byte of a stream come back from `stream` itself.
    let Err(err) = client.stream(&request()).await else { panic!("context error expected") };
    assert_eq!(err.class, FailureClass::ContextWindowExceeded);
    assert_eq!(err.status, Some(400));
    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable);
    assert_eq!(err.status, Some(503));
}

#[tokio::test]
async fn an_empty_filtered_answer_is_a_content_policy_failure() {
    let filtered = r#"{"id":"chatcmpl-2","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":null},"finish_reason":"content_filter"}],"usage":{"prompt_tokens":10,"completion_tokens":0,"total_tokens":10}}"#;
    let server = Canned::start(vec![json(200, filtered)]).await;
    let client = provider(settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), Some(KEY)));
    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::ContentPolicy);
}

#[tokio::test]
async fn an_error_object_in_a_success_status_is_classified() {
    let body = r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#;
    let server = Canned::start(vec![json(200, body)]).await;
    let client = provider(settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), None));
    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable);
    let Err(err) = client.stream(&request()).await else { panic!("error expected") };
    assert_eq!(err.class, FailureClass::Retryable);
    assert!(err.message.contains("Loading model"), "{err}");
}

#[tokio::test]
async fn transport_failures_are_retryable() {
    // A body cut short of its content-length, a connection closed without an answer, a server that never answers.
    let cut = Reply::Raw(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        ANSWER.len(),
        &ANSWER[..40]
    ));
    let server = Canned::start(vec![cut, Reply::Close, Reply::Hang]).await;
    let client = provider(settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), Some(KEY)));

    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable, "{err}");
    assert_eq!(err.status, None);
    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable, "{err}");

    let started = Instant::now();
    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable, "{err}");
    assert!(err.message.contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let err = provider(settings(ProviderKind::OpenAi, &base, Some(KEY))).complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable, "{err}");
}

#[tokio::test]
async fn a_server_certificate_no_trusted_root_issued_is_refused() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    // A TLS server whose certificate a private CA issued: the platform's verifier does not know that CA.
    let pki = switchyard_testkit::pki::TestPki::generate().unwrap();
    let certs: Vec<_> = CertificateDer::pem_file_iter(pki.server_cert()).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(pki.server_key()).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://127.0.0.1:{}/v1", listener.local_addr().unwrap().port());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.is_ok()
    });
    let err = provider(settings(ProviderKind::OpenAi, &base, Some(KEY))).complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable, "{err}");
    assert!(err.message.contains("certificate"), "the refusal names the certificate: {err}");
    assert!(!err.message.contains(KEY), "{err}");
    assert!(!server.await.unwrap(), "no TLS session was established");
}

#[tokio::test]
async fn a_malformed_base_url_is_fatal() {
    let err = provider(settings(ProviderKind::OpenAi, "not a url", Some(KEY))).complete(&request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Fatal { auth: false }, "{err}");
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let moved = response(308, &[("location", "https://elsewhere.example/v1/chat/completions")], "");
    let server = Canned::start(vec![moved]).await;
    let client = provider(settings(ProviderKind::OpenAi, &format!("{}/v1", server.base), Some(KEY)));
    let err = client.complete(&request()).await.unwrap_err();
    assert_eq!((err.class, err.status), (FailureClass::Fatal { auth: false }, Some(308)));
}
