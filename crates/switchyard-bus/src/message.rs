//! The message that travels on the bus, independent of the client library.
//!
//! A [`Message`] is what a component publishes and what a subscription yields, whichever bus
//! carries it. Its size is measured the way NATS measures it (payload plus encoded headers), so
//! the in-memory bus rejects exactly the messages a NATS server would reject.

use std::fmt;

use bytes::Bytes;

use crate::BusError;

/// Header set by the bus on a status message (the bus's own reply rather than a peer's), with
/// the status code as its value. NATS sends such messages itself; the in-memory bus imitates it.
pub const STATUS_HEADER: &str = "Switchyard-Bus-Status";

/// Status code of the message the bus sends to a reply subject when a message published with
/// that reply subject reached no subscriber.
pub const STATUS_NO_RESPONDERS: u16 = 503;

/// One message: a subject, an optional reply subject, headers and an opaque payload.
///
/// Headers are a list of name/value pairs; a name may repeat. After a trip through NATS, values
/// of one name keep their order but the order between different names is not preserved, so look
/// headers up by name ([`Message::header`], [`Message::header_values`]). Header names are
/// case-sensitive.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject the message was published to.
    pub subject: String,
    /// Where a reply should be published, for request/reply.
    pub reply: Option<String>,
    /// Header name/value pairs.
    pub headers: Vec<(String, String)>,
    /// The opaque body.
    pub payload: Bytes,
}

impl Message {
    /// A message on `subject` with `payload`, no reply subject and no headers.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Message { subject: subject.into(), reply: None, headers: Vec::new(), payload: payload.into() }
    }

    /// Sets the reply subject.
    #[must_use]
    pub fn with_reply(mut self, reply: impl Into<String>) -> Self {
        self.reply = Some(reply.into());
        self
    }

    /// Appends a header; a name may be given several times.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first value of header `name`, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// All values of header `name`, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The status code if this is a status message from the bus itself (see [`STATUS_HEADER`]).
    pub fn status(&self) -> Option<u16> {
        self.header(STATUS_HEADER)?.parse().ok()
    }

    /// Whether this is the bus telling a requester that nobody received its message.
    pub fn is_no_responders(&self) -> bool {
        self.status() == Some(STATUS_NO_RESPONDERS)
    }

    /// Size on the wire as NATS counts it against `max_payload`: the payload plus, when there
    /// are headers, the encoded header block (`NATS/1.0\r\n`, `name: value\r\n` each, `\r\n`).
    pub fn wire_size(&self) -> usize {
        if self.headers.is_empty() {
            return self.payload.len();
        }
        let framing = b"NATS/1.0\r\n".len() + b"\r\n".len();
        let lines: usize =
            self.headers.iter().map(|(name, value)| name.len() + b": ".len() + value.len() + b"\r\n".len()).sum();
        self.payload.len() + framing + lines
    }

    /// A reply to this message: a message on its reply subject, or `None` when it has none.
    pub fn reply_with(&self, payload: impl Into<Bytes>) -> Option<Message> {
        self.reply.as_ref().map(|reply| Message::new(reply.clone(), payload))
    }

    /// Checks what every bus checks before sending: subject syntax, reply syntax, header syntax
    /// and size against `max_payload`.
    pub(crate) fn validate_outgoing(&self, max_payload: usize) -> Result<(), BusError> {
        if !crate::subject::is_valid_subject(&self.subject) {
            return Err(BusError::InvalidSubject { subject: self.subject.clone() });
        }
        if let Some(reply) = &self.reply
            && !crate::subject::is_valid_subject(reply)
        {
            return Err(BusError::InvalidSubject { subject: reply.clone() });
        }
        for (name, value) in &self.headers {
            if !is_valid_header_name(name) || !is_valid_header_value(value) {
                return Err(BusError::InvalidHeader { name: name.clone() });
            }
        }
        let size = self.wire_size();
        if size > max_payload {
            return Err(BusError::PayloadTooLarge { size, max: max_payload });
        }
        Ok(())
    }
}

/// The payload is summarised by its length so a debug log never dumps a large body.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("subject", &self.subject)
            .field("reply", &self.reply)
            .field("headers", &self.headers)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// NATS header names: non-empty printable ASCII without `:`.
fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && c != ':')
}

/// NATS header values: anything but a line break.
fn is_valid_header_value(value: &str) -> bool {
    !value.contains(['\r', '\n'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_and_lookup() {
        let message = Message::new("a.b", "hi")
            .with_reply("_INBOX.1")
            .with_header("k", "1")
            .with_header("k", "2")
            .with_header("other", "x");
        assert_eq!(message.subject, "a.b");
        assert_eq!(message.reply.as_deref(), Some("_INBOX.1"));
        assert_eq!(message.header("k"), Some("1"));
        assert_eq!(message.header_values("k").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(message.header("K"), None);
        assert_eq!(message.header("missing"), None);
        assert_eq!(message.payload, Bytes::from_static(b"hi"));
        assert_eq!(message.status(), None);
    }

    #[test]
    fn wire_size_counts_headers_like_nats() {
        assert_eq!(Message::new("a", vec![0u8; 10]).wire_size(), 10);
        // "NATS/1.0\r\n" (10) + "k: v\r\n" (6) + "\r\n" (2) + payload (10).
        assert_eq!(Message::new("a", vec![0u8; 10]).with_header("k", "v").wire_size(), 28);
    }

    #[test]
    fn outgoing_validation() {
        let ok = Message::new("a.b", "x").with_reply("r.1").with_header("k", "v");
        assert!(ok.validate_outgoing(100).is_ok());

        let cases = [Message::new("a.*", "x"), Message::new("", "x"), Message::new("a", "x").with_reply("r.>")];
        for message in cases {
            assert!(matches!(message.validate_outgoing(100), Err(BusError::InvalidSubject { .. })), "{message:?}");
        }

        for (name, value) in [("", "v"), ("a:b", "v"), ("a b", "v"), ("k", "a\r\nb")] {
            let message = Message::new("a", "x").with_header(name, value);
            assert!(
                matches!(message.validate_outgoing(100), Err(BusError::InvalidHeader { .. })),
                "{name:?}: {value:?}"
            );
        }

        assert!(matches!(
            Message::new("a", vec![0u8; 101]).validate_outgoing(100),
            Err(BusError::PayloadTooLarge { size: 101, max: 100 })
        ));
        assert!(Message::new("a", vec![0u8; 100]).validate_outgoing(100).is_ok());
    }

    #[test]
    fn status_messages() {
        let status = Message::new("_INBOX.1", Bytes::new()).with_header(STATUS_HEADER, "503");
        assert_eq!(status.status(), Some(503));
        assert!(status.is_no_responders());
    }

    #[test]
    fn reply_with_uses_reply_subject() {
        let request = Message::new("svc", "q").with_reply("_INBOX.7");
        let reply = request.reply_with("a");
        assert_eq!(reply.map(|m| m.subject), Some("_INBOX.7".to_owned()));
        assert!(Message::new("svc", "q").reply_with("a").is_none());
    }
}
