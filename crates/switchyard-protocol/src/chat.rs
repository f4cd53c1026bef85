//! Provider-neutral chat types: what a provider is asked and what it answers.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: Role::User, content: content.into() }
    }
}

/// One chat completion request, independent of any provider's wire format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// Ask for token log-probabilities (OpenAI-compatible providers only).
    pub logprobs: bool,
    /// Sequences that end the answer before they would appear (at most [`crate::client::MAX_STOP_SEQUENCES`]).
    pub stop: Vec<String>,
    /// Nucleus sampling: sample only from the most likely tokens whose probabilities add up to this, in (0, 1].
    pub top_p: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
}

/// A provider's answer, with what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub content: String,
    /// The model that answered, as the provider reported it.
    pub model: String,
    pub finish_reason: Option<String>,
    pub usage: Usage,
    pub cost_usd: f64,
    pub logprobs: Option<Vec<TokenLogprob>>,
}
