//! How the door hands a query to the cluster: [`Dispatch`], over the bus or in process.
//!
//! - [`NatsDispatch`] publishes on the query subject through the client library (`switchyard-client`), so the
//!   routers' queue group picks a node. A query with an id (`Idempotency-Key`) is re-sent while unanswered, as
//!   the client library does; one without is sent once (the door gives it no id, so it costs no claim in the
//!   shared store).
//! - [`LocalDispatch`] hands it to the router of the same node ([`LocalDispatcher`]): no bus hop for the query
//!   or its answer, the same admission, de-duplication and query code as a query from the bus. A plain answer
//!   comes back typed (without an id, the query runs in the request's own task); a stream is read by the client
//!   library, as over the bus.
//!
//! Both answer with the client library's types and errors, so the door treats them alike.

use std::sync::Arc;
use std::time::Instant;

use switchyard_bus::Bus;
use switchyard_client::{Client, ClientError, ClientOptions, NO_ID, QueryStream, read_stream_on};
use switchyard_protocol::client::{QueryReply, QueryRequest};
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::local::{Asked, LocalDispatcher};
use switchyard_runtime::{Node, NodeConfig};

/// Hands queries to the cluster.
#[async_trait::async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// Asks `route` and waits for the answer. `size` is the size of the request body, for admission.
    async fn query(&self, route: &str, request: QueryRequest, size: usize) -> Result<QueryReply, ClientError>;

    /// Asks `route` for a streamed answer.
    async fn stream(&self, route: &str, request: QueryRequest, size: usize) -> Result<QueryStream, ClientError>;

    /// Whether queries can be handed over now (the bus is connected).
    fn is_ready(&self) -> bool;

    /// `nats` or `local`, for logs.
    fn kind(&self) -> &'static str;
}

/// Over the bus: publishes on `<namespace>.v1.query.<route>`.
pub struct NatsDispatch {
    client: Client,
    bus: Arc<dyn Bus>,
}

impl NatsDispatch {
    /// A dispatcher on `bus` for the cluster of `subjects`; queries without `deadline_ms` get `options`'s
    /// default deadline. Queries without an id are never given one (see the module docs).
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, options: ClientOptions) -> Self {
        let options = ClientOptions { assign_ids: false, ..options };
        Self { client: Client::new(bus.clone(), subjects, options), bus }
    }
}

#[async_trait::async_trait]
impl Dispatch for NatsDispatch {
    async fn query(&self, route: &str, request: QueryRequest, _size: usize) -> Result<QueryReply, ClientError> {
        self.client.query(route, request).await
    }

    async fn stream(&self, route: &str, request: QueryRequest, _size: usize) -> Result<QueryStream, ClientError> {
        self.client.stream(route, request).await
    }

    fn is_ready(&self) -> bool {
        self.bus.is_connected()
    }

    fn kind(&self) -> &'static str {
        "nats"
    }
}

/// In process, to the router of this node.
pub struct LocalDispatch {
    dispatcher: LocalDispatcher,
    options: ClientOptions,
}

impl LocalDispatch {
    pub fn new(dispatcher: LocalDispatcher) -> Self {
        let options = ClientOptions { default_deadline: dispatcher.default_deadline(), ..ClientOptions::default() };
        Self { dispatcher, options }
    }

    /// How long to wait for the router's answer: the query's deadline, after which the router answers
    /// `deadline_exceeded` itself (the options' slack covers the way back).
    fn deadline(&self, request: &QueryRequest) -> std::time::Duration {
        request.deadline_ms.map_or(self.options.default_deadline, std::time::Duration::from_millis)
    }
}

#[async_trait::async_trait]
impl Dispatch for LocalDispatch {
    async fn query(&self, route: &str, request: QueryRequest, size: usize) -> Result<QueryReply, ClientError> {
        let started = Instant::now();
        let wait = self.deadline(&request) + self.options.deadline_slack;
        let id = request.id.clone();
        let id = move || id.unwrap_or_else(|| NO_ID.to_owned());
        match self.dispatcher.ask(route, request, size, wait).await {
            Asked::Answered(Ok(reply)) => Ok(reply),
            Asked::Answered(Err(reply)) => Err(ClientError::Server { reply: Box::new(reply) }),
            Asked::TimedOut => Err(ClientError::DeadlineExceeded { id: id(), waited: started.elapsed() }),
            Asked::Dropped => Err(ClientError::Closed { id: id() }),
        }
    }

    async fn stream(&self, route: &str, request: QueryRequest, size: usize) -> Result<QueryStream, ClientError> {
        let (id, deadline) = (request.id.clone(), self.deadline(&request));
        let replies = self.dispatcher.submit(route, request, size).await?;
        Ok(read_stream_on(id, replies, deadline, &self.options))
    }

    fn is_ready(&self) -> bool {
        self.dispatcher.is_connected()
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

/// The dispatcher a node's door uses: in process when the node runs a router, over `bus` otherwise.
pub fn for_node(node: &Node, config: &NodeConfig, bus: Arc<dyn Bus>) -> Arc<dyn Dispatch> {
    match node.dispatcher() {
        Some(dispatcher) => Arc::new(LocalDispatch::new(dispatcher)),
        None => {
            let default_deadline = std::time::Duration::from_millis(config.node.default_deadline_ms);
            let options = ClientOptions { default_deadline, ..ClientOptions::default() };
            Arc::new(NatsDispatch::new(bus, Subjects::new(&config.node.namespace), options))
        }
    }
}
