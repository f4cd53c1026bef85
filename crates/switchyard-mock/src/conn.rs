//! Accepted connections the mock can cut, to fake a provider that drops the TCP connection.
//!
//! A handler cannot reach the socket hyper owns, and returning any response, even one whose body fails,
//! risks putting a status line on the wire. So every accepted socket is wrapped in [`ConnIo`], which
//! shares a kill flag with a [`Connection`] handle that handlers receive through axum's `ConnectInfo`.
//! Once the flag is set, the next read or write fails and sets `SO_LINGER` to zero, so hyper drops the
//! connection and the kernel answers with a reset: the client sees a connection error and no bytes.
//! The listener also disables Nagle's algorithm, since small SSE chunks must leave at once.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::trace;

/// A TCP listener whose connections can be reset by the handler serving them.
pub(crate) struct MockListener {
    inner: TcpListener,
}

impl MockListener {
    pub(crate) fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl Listener for MockListener {
    type Io = ConnIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ConnIo, SocketAddr) {
        // The `TcpListener` implementation retries and backs off on accept errors.
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        if let Err(err) = stream.set_nodelay(true) {
            trace!(%err, "failed to set TCP_NODELAY on an accepted connection");
        }
        let io = ConnIo { stream, connection: Connection::default() };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A handle on the connection a request arrived on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Connection {
    killed: Arc<AtomicBool>,
}

impl Connection {
    /// Makes the connection fail on its next read or write, without sending anything more.
    pub(crate) fn reset(&self) {
        self.killed.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, MockListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, MockListener>) -> Self {
        stream.io().connection.clone()
    }
}

/// An accepted socket that fails once its [`Connection`] was reset.
pub(crate) struct ConnIo {
    stream: TcpStream,
    connection: Connection,
}

impl ConnIo {
    /// The error to return when killed; the zero linger turns the coming close into a reset.
    fn check(&self) -> io::Result<()> {
        if !self.connection.killed.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Err(err) = self.stream.set_zero_linger() {
            trace!(%err, "failed to set SO_LINGER on a connection being reset");
        }
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by the mock"))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
