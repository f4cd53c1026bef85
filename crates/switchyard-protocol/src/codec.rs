//! Codecs: JSON for clients, bincode between nodes.
//!
//! bincode is pinned at 2.0.1 (3.0 is an empty tombstone, 2.x is unmaintained), so it stays behind this trait:
//! replacing it touches this file only.

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode {codec} payload: {reason}")]
    Encode { codec: &'static str, reason: String },
    #[error("cannot decode {codec} payload: {reason}")]
    Decode { codec: &'static str, reason: String },
}

pub trait Codec {
    const NAME: &'static str;
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError>;
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// JSON, the client-facing codec.
pub struct Json;

impl Codec for Json {
    const NAME: &'static str = "json";

    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::Encode { codec: Self::NAME, reason: e.to_string() })
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::Decode { codec: Self::NAME, reason: e.to_string() })
    }
}

/// bincode (standard configuration, serde integration), the node-to-node codec.
pub struct Bincode;

impl Codec for Bincode {
    const NAME: &'static str = "bincode";

    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
        bincode::serde::encode_to_vec(value, bincode::config::standard())
            .map_err(|e| CodecError::Encode { codec: Self::NAME, reason: e.to_string() })
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map(|(value, _)| value)
            .map_err(|e| CodecError::Decode { codec: Self::NAME, reason: e.to_string() })
    }
}
