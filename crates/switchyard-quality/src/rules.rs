//! The rule router: ordered conditions over the query, first match wins, an explicit default.
//!
//! Rules are the transparent router: "long prompts or gold-tier users go to the strong model". A rule's
//! conditions are all optional and must all hold (AND); a rule with no condition is refused (that is what the
//! default is for). Conditions:
//! - prompt length in characters (`min_chars`, `max_chars`) or estimated tokens, `ceil(chars / 4)`
//!   (`min_tokens`, `max_tokens`), bounds inclusive;
//! - `keywords`: any of them occurs in the prompt, case-insensitive substring match;
//! - `regex`: the prompt matches (Rust `regex` syntax; add `(?i)` for case-insensitivity);
//! - message count (`min_messages`, `max_messages`) and system prompt presence (`system_prompt = true|false`);
//! - `metadata`: each listed key is present with one of the listed values (`metadata = { tier = ["gold"] }`).
//!
//! [`RuleRouterConfig`] is the serde form (`deny_unknown_fields`); [`RuleRouter::new`] validates it and compiles
//! the patterns once, returning a typed error that names the rule and the field, so a reload of a bad file can be
//! refused while the old router keeps serving. Deciding allocates nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::decision::{Decision, Reason};
use crate::error::{QualityError, Result};
use crate::query::QueryInput;

/// The conditions of one rule; every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleCondition {
    /// Prompt has at least this many characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_chars: Option<usize>,
    /// Prompt has at most this many characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<usize>,
    /// Prompt has at least this many estimated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<usize>,
    /// Prompt has at most this many estimated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// Any of these occurs in the prompt (case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// The prompt matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// At least this many messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_messages: Option<usize>,
    /// At most this many messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<usize>,
    /// A system prompt is present (`true`) or absent (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<bool>,
    /// Each key present with one of its listed values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Vec<String>>,
}

/// One rule: a name for the trace, its conditions, and the model it routes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's name, unique within the router.
    pub name: String,
    /// The model (or route target) chosen when the rule matches.
    pub model: String,
    /// The conditions.
    #[serde(flatten)]
    pub when: RuleCondition,
}

/// A rule router's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRouterConfig {
    /// The router's name in traces.
    pub name: String,
    /// The rules, tried in order.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The model chosen when no rule matches.
    pub default: String,
}

/// A compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    name: Arc<str>,
    model: Arc<str>,
    chars: (usize, usize),
    tokens: (usize, usize),
    messages: (usize, usize),
    keywords: Option<Regex>,
    regex: Option<Regex>,
    system_prompt: Option<bool>,
    metadata: Vec<(String, Vec<String>)>,
}

/// A validated, compiled rule router.
#[derive(Debug, Clone)]
pub struct RuleRouter {
    name: Arc<str>,
    rules: Vec<Rule>,
    default: Arc<str>,
}

/// Estimated tokens of a prompt, `ceil(chars / 4)` (the estimate every router and data set here uses).
pub fn estimated_tokens(prompt: &str) -> usize {
    prompt.chars().count().div_ceil(4)
}

impl RuleRouter {
    /// Validates and compiles `config`.
    pub fn new(config: &RuleRouterConfig) -> Result<Self> {
        if config.name.trim().is_empty() {
            return Err(QualityError::invalid("name", "the router needs a name"));
        }
        if config.default.trim().is_empty() {
            return Err(QualityError::invalid("default", "the default model must be named"));
        }
        let mut rules = Vec::with_capacity(config.rules.len());
        for (index, rc) in config.rules.iter().enumerate() {
            let err = |field: &'static str, reason: String| QualityError::Rule {
                index,
                name: rc.name.clone(),
                field,
                reason,
            };
            if rc.name.trim().is_empty() {
                return Err(err("name", "a rule needs a name".into()));
            }
            if config.rules[..index].iter().any(|r| r.name == rc.name) {
                return Err(err("name", "another rule has the same name".into()));
            }
            if rc.model.trim().is_empty() {
                return Err(err("model", "the rule's model must be named".into()));
            }
            let w = &rc.when;
            if *w == RuleCondition::default() {
                return Err(err("when", "a rule needs at least one condition (use `default` for the rest)".into()));
            }
            let range = |field: &'static str, lo: Option<usize>, hi: Option<usize>| {
                let r = (lo.unwrap_or(0), hi.unwrap_or(usize::MAX));
                if r.0 > r.1 { Err(err(field, format!("minimum {} is above maximum {}", r.0, r.1))) } else { Ok(r) }
            };
            let keywords = if w.keywords.is_empty() {
                None
            } else {
                if w.keywords.iter().any(|k| k.is_empty()) {
                    return Err(err("keywords", "a keyword is empty".into()));
                }
                let alternation: Vec<String> = w.keywords.iter().map(|k| regex::escape(k)).collect();
                Some(
                    Regex::new(&format!("(?i)(?:{})", alternation.join("|")))
                        .map_err(|e| err("keywords", e.to_string()))?,
                )
            };
            let regex = w.regex.as_deref().map(Regex::new).transpose().map_err(|e| err("regex", e.to_string()))?;
            if let Some((key, _)) = w.metadata.iter().find(|(_, values)| values.is_empty()) {
                return Err(err("metadata", format!("key {key:?} lists no value")));
            }
            rules.push(Rule {
                name: rc.name.as_str().into(),
                model: rc.model.as_str().into(),
                chars: range("max_chars", w.min_chars, w.max_chars)?,
                tokens: range("max_tokens", w.min_tokens, w.max_tokens)?,
                messages: range("max_messages", w.min_messages, w.max_messages)?,
                keywords,
                regex,
                system_prompt: w.system_prompt,
                metadata: w.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            });
        }
        Ok(RuleRouter { name: config.name.as_str().into(), rules, default: config.default.as_str().into() })
    }

    /// The router's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every model the router can choose (rules' models then the default, without repeats).
    pub fn models(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in self.rules.iter().map(|r| &*r.model).chain(std::iter::once(&*self.default)) {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    /// The first matching rule's model, else the default.
    pub fn decide(&self, query: &QueryInput<'_>) -> Decision {
        let chars = query.prompt.chars().count();
        let tokens = chars.div_ceil(4);
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.matches(query, chars, tokens) {
                return Decision {
                    router: self.name.clone(),
                    model: rule.model.clone(),
                    score: None,
                    threshold: None,
                    objective: None,
                    reason: Reason::RuleMatched { index, rule: rule.name.clone() },
                };
            }
        }
        Decision {
            router: self.name.clone(),
            model: self.default.clone(),
            score: None,
            threshold: None,
            objective: None,
            reason: Reason::Default,
        }
    }
}

impl Rule {
    fn matches(&self, q: &QueryInput<'_>, chars: usize, tokens: usize) -> bool {
        let within = |v: usize, (lo, hi): (usize, usize)| lo <= v && v <= hi;
        within(chars, self.chars)
            && within(tokens, self.tokens)
            && within(q.message_count, self.messages)
            && self.system_prompt.is_none_or(|want| want == q.has_system_prompt)
            && self.keywords.as_ref().is_none_or(|re| re.is_match(q.prompt))
            && self.regex.as_ref().is_none_or(|re| re.is_match(q.prompt))
            && self.metadata.iter().all(|(k, values)| q.metadata.get(k).is_some_and(|v| values.contains(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
name = "tiers"
default = "small"

[[rules]]
name = "gold users"
model = "large"
metadata = { tier = ["gold", "platinum"] }

[[rules]]
name = "code"
model = "coder"
keywords = ["```", "Traceback"]

[[rules]]
name = "proof"
model = "large"
regex = "(?i)\\bprove\\b"
system_prompt = false

[[rules]]
name = "long"
model = "large"
min_tokens = 50

[[rules]]
name = "long chat"
model = "large"
min_messages = 6
max_chars = 100000
"#;

    fn router() -> RuleRouter {
        let config: RuleRouterConfig = toml::from_str(CONFIG).expect("config parses");
        RuleRouter::new(&config).expect("config is valid")
    }

    #[test]
    fn first_match_wins_in_order() {
        let r = router();
        let mut gold = BTreeMap::new();
        gold.insert("tier".to_string(), "gold".to_string());
        let long = "word ".repeat(60);
        let check = |q: QueryInput<'_>, model: &str, reason: Reason| {
            let d = r.decide(&q);
            assert_eq!((&*d.model, &d.reason), (model, &reason), "{}", q.prompt);
            assert_eq!(&*d.router, "tiers");
        };
        let rule = |index: usize, name: &str| Reason::RuleMatched { index, rule: name.into() };
        check(QueryInput { metadata: &gold, ..QueryInput::prompt("hi ```") }, "large", rule(0, "gold users"));
        check(QueryInput::prompt("see this Traceback"), "coder", rule(1, "code"));
        check(QueryInput::prompt("traceback in lower case"), "coder", rule(1, "code"));
        check(QueryInput::prompt("Prove that 2 is prime"), "large", rule(2, "proof"));
        check(
            QueryInput { has_system_prompt: true, ..QueryInput::prompt("Prove that 2 is prime") },
            "small",
            Reason::Default,
        );
        check(QueryInput::prompt(&long), "large", rule(3, "long"));
        check(QueryInput { message_count: 7, ..QueryInput::prompt("ok") }, "large", rule(4, "long chat"));
        check(QueryInput::prompt("improve this"), "small", Reason::Default);
        assert_eq!(r.models(), ["large", "coder", "small"]);
    }

    #[test]
    fn invalid_configs_name_the_rule_and_field() {
        let check = |edit: &dyn Fn(&mut RuleRouterConfig), want_index: usize, want_field: &str| {
            let mut c: RuleRouterConfig = toml::from_str(CONFIG).expect("parses");
            edit(&mut c);
            match RuleRouter::new(&c) {
                Err(QualityError::Rule { index, field, .. }) => assert_eq!((index, field), (want_index, want_field)),
                other => panic!("expected a rule error, got {other:?}"),
            }
        };
        check(&|c| c.rules[2].when.regex = Some("(unclosed".into()), 2, "regex");
        check(&|c| c.rules[3].when.max_tokens = Some(10), 3, "max_tokens");
        check(&|c| c.rules[1].name = "gold users".into(), 1, "name");
        check(&|c| c.rules[4].when = RuleCondition::default(), 4, "when");
        check(&|c| c.rules[0].when.metadata.insert("task".into(), vec![]).map_or((), |_| ()), 0, "metadata");
        check(&|c| c.rules[1].model = " ".into(), 1, "model");
        let unknown = format!("{CONFIG}\n[extra]\n");
        assert!(toml::from_str::<RuleRouterConfig>(&unknown).is_err());
        let mut c: RuleRouterConfig = toml::from_str(CONFIG).expect("parses");
        c.default = String::new();
        assert!(matches!(RuleRouter::new(&c), Err(QualityError::Invalid { field: "default", .. })));
    }

    #[test]
    fn token_estimate() {
        assert_eq!(estimated_tokens("abcde"), 2);
        assert_eq!(estimated_tokens(""), 0);
    }
}
