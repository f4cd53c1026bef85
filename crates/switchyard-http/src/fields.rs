//! Reading a request body's JSON fields one by one, for both wire formats: every error is a 400 naming its field.
//!
//! The door reads requests field by field instead of through serde structs so that each field is decided on
//! explicitly (honoured, accepted as harmless, or refused by name); these are the readers both formats share.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The body's top-level JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed(format!("we could not parse the JSON body of your request: {e}")))?;
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(ApiError::malformed("the request body must be a JSON object")),
    }
}

pub fn string(name: &str, value: &Value) -> Result<String, ApiError> {
    value.as_str().map(str::to_owned).ok_or_else(|| ApiError::invalid(format!("{name} must be a string"), name))
}

pub fn boolean(name: &str, value: &Value) -> Result<bool, ApiError> {
    value.as_bool().ok_or_else(|| ApiError::invalid(format!("{name} must be a boolean"), name))
}

pub fn positive(name: &str, value: &Value) -> Result<u32, ApiError> {
    let n = value.as_u64().filter(|n| *n > 0).and_then(|n| u32::try_from(n).ok());
    n.ok_or_else(|| ApiError::invalid(format!("{name} must be a positive integer"), name))
}

/// A temperature within `0..=max`.
pub fn temperature(name: &str, value: &Value, max: f64) -> Result<f32, ApiError> {
    let t = value.as_f64().filter(|t| (0.0..=max).contains(t));
    let t = t.ok_or_else(|| ApiError::invalid(format!("{name} must be a number between 0 and {max}"), name))?;
    Ok(t as f32)
}

/// A probability within `(0, 1]` (`top_p`).
pub fn probability(name: &str, value: &Value) -> Result<f32, ApiError> {
    let p = value.as_f64().filter(|p| *p > 0.0 && *p <= 1.0);
    let p =
        p.ok_or_else(|| ApiError::invalid(format!("{name} must be a number greater than 0 and at most 1"), name))?;
    Ok(p as f32)
}

/// Stop sequences: one string, or an array of strings (the query checks how many and how long).
pub fn strings(name: &str, value: &Value) -> Result<Vec<String>, ApiError> {
    let invalid = || ApiError::invalid(format!("{name} must be a string or an array of strings"), name);
    match value {
        Value::String(one) => Ok(vec![one.clone()]),
        Value::Array(items) => items.iter().map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid)).collect(),
        _ => Err(invalid()),
    }
}

/// Accepts `value` only when it equals the neutral `expected`.
pub fn neutral(name: &str, value: &Value, expected: &Value) -> Result<(), ApiError> {
    match value == expected {
        true => Ok(()),
        false => Err(ApiError::invalid(format!("only {name} = {expected} is supported by this gateway"), name)),
    }
}

pub fn neutral_number(name: &str, value: &Value, expected: f64) -> Result<(), ApiError> {
    match value.as_f64() == Some(expected) {
        true => Ok(()),
        false => Err(ApiError::invalid(format!("only {name} = {expected} is supported by this gateway"), name)),
    }
}

/// Whether `value` is an empty array (a neutral `tools`, `stop`, ...).
pub fn is_empty_array(value: &Value) -> bool {
    value.as_array().is_some_and(Vec::is_empty)
}
