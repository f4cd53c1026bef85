//! The production bus: core NATS through `async-nats`.
//!
//! [`NatsBus`] maps [`Bus`] onto an `async_nats::Client` and its errors onto [`BusError`]. It
//! adds no buffering of its own: publishing hands the message to the client's writer task
//! (which batches writes), so it is as fast as the client. Requests use the client's
//! multiplexed inbox (one wildcard subscription for all requests), not a subscription per
//! request. The client reconnects by itself; connection events are logged here because nobody
//! else sees them.
//!
//! `async-nats`' own `flush` only writes the socket, and its subscription drain does not wait
//! for the server. To give the guarantees [`crate::MemoryBus`] gives (and the conformance suite
//! checks), `flush`, `subscribe` and `drain` make a round trip through the server: the client
//! publishes an empty message to a fresh inbox it subscribed to and waits for it to come back.
//! The server handles a connection's operations in order, so once it is back the server has
//! processed everything sent before, and has delivered to this client everything it routed
//! before. This needs permission to publish to and subscribe to the client's inbox prefix.

mod options;

use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::message::STATUS_HEADER;
use crate::subject::{is_valid_pattern, is_valid_queue};
use crate::{Bus, BusError, Message, Subscription, SubscriptionBackend};

pub use options::{DEFAULT_CONNECTION_TIMEOUT, DEFAULT_NATS_URL, DEFAULT_SYNC_TIMEOUT, NatsAuth, NatsOptions};

/// A connection to NATS. Cheap to clone: clones share the connection.
///
/// Beyond what `async-nats` guarantees: when `subscribe` returns, the server has registered the
/// subscription, so whatever any client publishes afterwards reaches it; when `flush` returns,
/// the server has processed everything this client sent before.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    servers: String,
    sync_timeout: Duration,
}

impl NatsBus {
    /// Connects to the servers in `options`.
    ///
    /// Fails fast (one attempt per server, each bounded by `connection_timeout`) unless
    /// `retry_on_initial_connect` is set; after the first connection the client reconnects on
    /// its own, up to `max_reconnects`.
    pub async fn connect(options: NatsOptions) -> Result<NatsBus, BusError> {
        options.validate()?;
        install_crypto_provider();
        let servers = options.redacted_servers();
        let client_name = options.name.clone().unwrap_or_default();
        let connect_options =
            options.to_connect_options().await?.event_callback(move |event| log_event(client_name.clone(), event));
        let client = connect_options
            .connect(options.servers.as_slice())
            .await
            .map_err(|error| connect_error(servers.clone(), error))?;
        tracing::debug!(servers = %servers, "connected to nats");
        Ok(NatsBus { client, servers, sync_timeout: options.sync_timeout })
    }

    /// Wraps a client connected elsewhere.
    pub fn from_client(client: async_nats::Client) -> NatsBus {
        NatsBus { client, servers: String::from("(external client)"), sync_timeout: DEFAULT_SYNC_TIMEOUT }
    }

    async fn subscribed(
        &self,
        subject: &str,
        queue: Option<&str>,
        subscribed: Result<async_nats::Subscriber, async_nats::SubscribeError>,
    ) -> Result<Subscription, BusError> {
        let subscriber = subscribed.map_err(|error| subscribe_error(subject, error))?;
        sync_with_server(&self.client, self.sync_timeout)
            .await
            .map_err(|source| BusError::Subscribe { subject: subject.to_owned(), source })?;
        let backend = NatsSubscription { subscriber, client: self.client.clone(), sync_timeout: self.sync_timeout };
        Ok(Subscription::new(subject, queue.map(str::to_owned), backend))
    }

    /// The server this bus is connected to now, as that server announces itself, or `None` while it is
    /// disconnected. With several servers (a NATS cluster) this is the one the client picked or failed over to.
    pub fn connected_server(&self) -> Option<ConnectedServer> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return None;
        }
        let info = self.client.server_info();
        Some(ConnectedServer { id: info.server_id, host: info.host, port: info.port })
    }

    /// The underlying client, for what [`Bus`] does not cover (JetStream, statistics, drain).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("servers", &self.servers)
            .field("state", &self.client.connection_state())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    async fn publish(&self, message: Message) -> Result<(), BusError> {
        let max_payload = self.client.max_payload();
        message.validate_outgoing(max_payload)?;
        let size = message.wire_size();
        let Message { subject, reply, headers, payload } = message;
        let headers = header_map(headers)?;
        let result = match (reply, headers) {
            (None, None) => self.client.publish(subject.clone(), payload).await,
            (None, Some(headers)) => self.client.publish_with_headers(subject.clone(), headers, payload).await,
            (Some(reply), None) => self.client.publish_with_reply(subject.clone(), reply, payload).await,
            (Some(reply), Some(headers)) => {
                self.client.publish_with_reply_and_headers(subject.clone(), reply, headers, payload).await
            }
        };
        result.map_err(|error| {
            use async_nats::client::PublishErrorKind;
            match error.kind() {
                PublishErrorKind::MaxPayloadExceeded => {
                    BusError::PayloadTooLarge { size, max: self.client.max_payload() }
                }
                PublishErrorKind::InvalidSubject => BusError::InvalidSubject { subject },
                PublishErrorKind::Send => BusError::Closed,
            }
        })
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message, BusError> {
        let max_payload = self.client.max_payload();
        message.validate_outgoing(max_payload)?;
        let size = message.wire_size();
        let Message { subject, headers, payload, .. } = message;
        let mut request = async_nats::Request::new().payload(payload).timeout(Some(timeout));
        if let Some(headers) = header_map(headers)? {
            request = request.headers(headers);
        }
        match self.client.send_request(subject.clone(), request).await {
            Ok(reply) => Ok(from_nats(reply)),
            Err(error) => {
                use async_nats::client::RequestErrorKind;
                Err(match error.kind() {
                    RequestErrorKind::NoResponders => BusError::NoResponders { subject },
                    RequestErrorKind::TimedOut => BusError::Timeout { subject, timeout },
                    RequestErrorKind::MaxPayloadExceeded => {
                        BusError::PayloadTooLarge { size, max: self.client.max_payload() }
                    }
                    RequestErrorKind::InvalidSubject => BusError::InvalidSubject { subject },
                    _ => BusError::Request { subject, source: Box::new(error) },
                })
            }
        }
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        if !is_valid_pattern(subject) {
            return Err(BusError::InvalidSubject { subject: subject.to_owned() });
        }
        let subscribed = self.client.subscribe(subject.to_owned()).await;
        self.subscribed(subject, None, subscribed).await
    }

    async fn queue_subscribe(&self, subject: &str, queue: &str) -> Result<Subscription, BusError> {
        if !is_valid_pattern(subject) {
            return Err(BusError::InvalidSubject { subject: subject.to_owned() });
        }
        if !is_valid_queue(queue) {
            return Err(BusError::InvalidQueue { queue: queue.to_owned() });
        }
        let subscribed = self.client.queue_subscribe(subject.to_owned(), queue.to_owned()).await;
        self.subscribed(subject, Some(queue), subscribed).await
    }

    fn new_inbox(&self) -> String {
        self.client.new_inbox()
    }

    async fn flush(&self) -> Result<(), BusError> {
        sync_with_server(&self.client, self.sync_timeout).await.map_err(|source| BusError::Flush { source })
    }

    fn max_payload(&self) -> usize {
        self.client.max_payload()
    }
}

/// A server a [`NatsBus`] is connected to ([`NatsBus::connected_server`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedServer {
    /// The server's unique id.
    pub id: String,
    /// The host it listens on for clients, as it announces it.
    pub host: String,
    /// Its client port.
    pub port: u16,
}

impl std::fmt::Display for ConnectedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The [`SubscriptionBackend`] of a [`NatsBus`] subscription.
struct NatsSubscription {
    subscriber: async_nats::Subscriber,
    client: async_nats::Client,
    sync_timeout: Duration,
}

impl Stream for NatsSubscription {
    type Item = Message;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Message>> {
        self.subscriber.poll_next_unpin(cx).map(|message| message.map(from_nats))
    }
}

#[async_trait::async_trait]
impl SubscriptionBackend for NatsSubscription {
    async fn drain(&mut self) -> Result<(), BusError> {
        // `async-nats` closes a drained subscription as soon as its UNSUB is written, dropping
        // messages still on their way. A round trip first brings in everything the server
        // routed to us until now; what it routes between then and the UNSUB counts as new.
        sync_with_server(&self.client, self.sync_timeout).await.map_err(|source| BusError::Flush { source })?;
        self.subscriber.drain().await.map_err(|_| BusError::Closed)
    }

    async fn unsubscribe(&mut self) -> Result<(), BusError> {
        self.subscriber.unsubscribe().await.map_err(|_| BusError::Closed)
    }
}

/// Waits until the server has processed everything this client sent before, and this client
/// has received everything the server routed to it before (see the module documentation).
async fn sync_with_server(client: &async_nats::Client, timeout: Duration) -> Result<(), crate::BoxError> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, bytes::Bytes::new()).await?;
    match tokio::time::timeout(timeout, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the connection closed during a round trip to the server".into()),
        Err(_) => Err(format!("the server did not answer a round trip within {timeout:?}").into()),
    }
}

/// `None` for no headers, so header-less messages use the cheaper `PUB` rather than `HPUB`.
fn header_map(headers: Vec<(String, String)>) -> Result<Option<async_nats::HeaderMap>, BusError> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers {
        let invalid = || BusError::InvalidHeader { name: name.clone() };
        let header_value: async_nats::HeaderValue = value.parse().map_err(|_| invalid())?;
        let header_name = async_nats::HeaderName::try_from(name.as_str()).map_err(|_| invalid())?;
        map.append(header_name, header_value);
    }
    Ok(Some(map))
}

/// Converts a received message; a status message (such as no-responders) gets its code in
/// [`STATUS_HEADER`].
fn from_nats(message: async_nats::Message) -> Message {
    let mut headers = Vec::new();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            for value in values {
                headers.push((name.to_string(), value.as_str().to_owned()));
            }
        }
    }
    if let Some(status) = message.status {
        headers.push((STATUS_HEADER.to_owned(), status.as_u16().to_string()));
    }
    Message {
        subject: message.subject.to_string(),
        reply: message.reply.map(|reply| reply.to_string()),
        headers,
        payload: message.payload,
    }
}

fn subscribe_error(subject: &str, error: async_nats::SubscribeError) -> BusError {
    use async_nats::client::SubscribeErrorKind;
    match error.kind() {
        SubscribeErrorKind::InvalidSubject => BusError::InvalidSubject { subject: subject.to_owned() },
        _ => BusError::Subscribe { subject: subject.to_owned(), source: Box::new(error) },
    }
}

/// `async-nats` builds its TLS configuration with rustls' process-wide crypto provider, and
/// rustls cannot pick one by itself when several are compiled in. Install `ring` (always
/// available through `async-nats`' default features) unless the binary installed one first.
/// Tells a refusal of the credentials and a failed TLS handshake apart from the server being away.
fn connect_error(servers: String, error: async_nats::ConnectError) -> BusError {
    use async_nats::ConnectErrorKind;
    match error.kind() {
        // `Authentication` is the client failing to sign the server's nonce (an unusable seed); the server refusing
        // is `AuthorizationViolation`. Neither error carries the secret.
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            BusError::Unauthorized { servers, source: Box::new(error) }
        }
        ConnectErrorKind::Tls => BusError::Tls { servers, source: Box::new(error) },
        // A handshake the peer broke off (an untrusted certificate either way) comes back as an I/O error.
        _ if is_tls_failure(&error) => BusError::Tls { servers, source: Box::new(error) },
        _ => BusError::Connect { servers, source: Box::new(error) },
    }
}

/// Whether a rustls error is somewhere in `error`'s chain, also inside an I/O error (whose `source` skips it).
fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        let io_inner = error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
        if error.is::<async_nats::rustls::Error>()
            || io_inner.is_some_and(|inner| inner.is::<async_nats::rustls::Error>())
        {
            return true;
        }
        next = error.source();
    }
    false
}

fn install_crypto_provider() {
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
}

async fn log_event(client: String, event: async_nats::Event) {
    use async_nats::Event;
    match event {
        Event::Connected => tracing::info!(client = %client, "nats connected"),
        Event::Disconnected => tracing::warn!(client = %client, "nats disconnected, reconnecting"),
        Event::LameDuckMode => {
            tracing::warn!(client = %client, "nats server entering lame duck mode")
        }
        Event::SlowConsumer(sid) => {
            tracing::warn!(client = %client, sid, "nats slow consumer, messages dropped")
        }
        Event::ServerError(error) => tracing::warn!(client = %client, %error, "nats server error"),
        Event::ClientError(error) => tracing::warn!(client = %client, %error, "nats client error"),
        Event::Draining => tracing::info!(client = %client, "nats connection draining"),
        Event::Closed => tracing::info!(client = %client, "nats connection closed"),
    }
}
