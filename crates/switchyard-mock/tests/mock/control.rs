//! The control API changes behaviour at run time, and the library handle agrees with it.

use serde_json::{Value, json};
use switchyard_mock::{Behavior, MockConfig, MockError};

use crate::common::{client, openai_body, post_anthropic, post_openai, start, start_with};

const WEAK: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";

#[tokio::test]
async fn control_api_takes_a_model_down_and_back() {
    let server = start().await;
    let control = format!("{}/control/models/{WEAK}", server.base_url());
    assert_eq!(post_openai(&server, &openai_body(WEAK, "hi")).await.status(), 200);

    let down = json!({"errors": [{"rate": 1.0, "error": {"kind": "status", "status": 503}}]});
    let response = client().put(&control).json(&down).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(post_openai(&server, &openai_body(WEAK, "hi")).await.status(), 503);
    // Other models keep the default.
    assert_eq!(post_openai(&server, &openai_body("other", "hi")).await.status(), 200);

    let response = client().delete(&control).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(post_openai(&server, &openai_body(WEAK, "hi")).await.status(), 200);

    let stats: Value =
        client().get(format!("{}/control/stats", server.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats, json!({"calls": {WEAK: 3, "other": 1}, "total": 4}));
    assert_eq!(server.calls(WEAK), 3);
}

#[tokio::test]
async fn control_api_replaces_the_default_and_resets() {
    let initial = Behavior::answering("configured");
    let server =
        start_with(MockConfig { models: [("pinned".to_owned(), initial)].into(), ..MockConfig::default() }).await;
    let base = server.base_url();
    let auth = json!({"errors": [{"rate": 1, "error": {"kind": "auth"}}]});
    let response = client().put(format!("{base}/control/default")).json(&auth).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let anthropic = crate::common::anthropic_body("anything", "hi");
    assert_eq!(post_anthropic(&server, &anthropic).await.status(), 401);
    server.set_behavior("pinned", Behavior::failing(MockError::status(500)));
    assert_eq!(post_openai(&server, &openai_body("pinned", "hi")).await.status(), 500);

    let response = client().post(format!("{base}/control/reset")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(server.total_calls(), 0);
    assert_eq!(post_anthropic(&server, &anthropic).await.status(), 200);
    let pinned: Value = post_openai(&server, &openai_body("pinned", "hi")).await.json().await.unwrap();
    assert_eq!(pinned["choices"][0]["message"]["content"], "configured");
}

#[tokio::test]
async fn bad_control_json_is_a_400_with_a_message() {
    let server = start().await;
    let base = server.base_url();
    for body in ["{not json", r#"{"hang": "yes"}"#, r#"{"unknown_field": 1}"#, r#"{"reset_rate": 2.0}"#] {
        let response = client().put(format!("{base}/control/models/m")).body(body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().unwrap().contains("invalid behavior"), "{error}");
    }
    // Nothing was scripted.
    assert_eq!(post_openai(&server, &openai_body("m", "hi")).await.status(), 200);
}

#[tokio::test]
async fn library_handle_scripts_and_clears() {
    let server = start().await;
    server.set_default_behavior(Behavior::failing(MockError::status(529)));
    assert_eq!(post_openai(&server, &openai_body("a", "hi")).await.status(), 529);
    server.set_behavior("a", Behavior::default());
    assert_eq!(post_openai(&server, &openai_body("a", "hi")).await.status(), 200);
    server.clear_behavior("a");
    assert_eq!(post_openai(&server, &openai_body("a", "hi")).await.status(), 529);
    assert_eq!(server.calls("a"), 3);
    assert_eq!(server.calls("never"), 0);
}

#[tokio::test]
async fn control_api_makes_a_model_unsure_at_run_time() {
    let server = start().await;
    let mut body = openai_body(WEAK, "easy one");
    body["logprobs"] = json!(true);
    let first_logprob = |completion: Value| completion["choices"][0]["logprobs"]["content"][0]["logprob"].as_f64();
    let hashed = first_logprob(post_openai(&server, &body).await.json().await.unwrap()).unwrap();
    assert!((-2.5..=0.0).contains(&hashed));

    let control = format!("{}/control/models/{WEAK}", server.base_url());
    let response = client().put(&control).json(&json!({"unsure_rate": 1.0})).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let unsure = first_logprob(post_openai(&server, &body).await.json().await.unwrap());
    assert_eq!(unsure, Some(switchyard_mock::UNSURE_LOGPROB));

    let response = client().put(&control).json(&json!({"unsure_marker": "hard"})).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let sure = first_logprob(post_openai(&server, &body).await.json().await.unwrap());
    assert_eq!(sure, Some(switchyard_mock::SURE_LOGPROB));

    let response = client().put(&control).json(&json!({"unsure_rate": 1.5})).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("unsure_rate"), "{error}");
}
