//! A tiny canned HTTP/1.1 server: each connection gets the next scripted reply, so the clients can be tested
//! against exact upstream bytes (good answers, error bodies, broken streams, dropped and silent connections)
//! without any real provider.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};

/// What the server does with one connection, after reading its request.
#[derive(Clone)]
pub enum Reply {
    /// Writes these bytes, then closes the connection.
    Raw(String),
    /// Writes these bytes, then keeps the connection open without another byte.
    Stall(String),
    /// Closes the connection without answering.
    Close,
    /// Never answers, keeping the connection open.
    Hang,
}

/// A full response with a `content-length`.
pub fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    Reply::Raw(format!("{head}content-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()))
}

/// A JSON response.
pub fn json(status: u16, body: &str) -> Reply {
    response(status, &[("content-type", "application/json")], body)
}

/// The head of a 200 event stream whose body runs until the connection closes.
pub fn sse_head() -> String {
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
        .to_owned()
}

/// A 200 event stream carrying `events`, then closing.
pub fn sse(events: &str) -> Reply {
    Reply::Raw(format!("{}{events}", sse_head()))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Overloaded",
        _ => "Whatever",
    }
}

/// One request as the server saw it.
#[derive(Debug)]
pub struct Recorded {
    /// `POST /v1/chat/completions`
    pub target: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
}

/// A running canned server.
pub struct Canned {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    requests: mpsc::UnboundedReceiver<Recorded>,
}

impl Canned {
    /// Starts a server answering successive connections with `replies` (the last one repeats).
    pub async fn start(replies: Vec<Reply>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (sender, requests) = mpsc::unbounded_channel();
        let replies = Arc::new(Mutex::new(replies.into_iter().rev().collect::<Vec<_>>()));
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let reply = {
                    let mut replies = replies.lock().await;
                    if replies.len() > 1 { replies.pop().unwrap() } else { replies[0].clone() }
                };
                tokio::spawn(answer(socket, reply, sender.clone()));
            }
        });
        Canned { base, requests }
    }

    /// The next request the server received.
    pub async fn request(&mut self) -> Recorded {
        self.requests.recv().await.unwrap()
    }
}

async fn answer(mut socket: TcpStream, reply: Reply, sender: mpsc::UnboundedSender<Recorded>) {
    let Some(request) = read_request(&mut socket).await else { return };
    let _ = sender.send(request);
    match reply {
        Reply::Raw(bytes) => {
            let _ = socket.write_all(bytes.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        Reply::Stall(bytes) => {
            let _ = socket.write_all(bytes.as_bytes()).await;
            let _ = socket.flush().await;
            std::future::pending::<()>().await;
        }
        Reply::Close => drop(socket),
        Reply::Hang => std::future::pending::<()>().await,
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<Recorded> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break pos + 4;
        }
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    let target = request_line.rsplit_once(' ').map_or(request_line, |(target, _)| target).to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|value| value.parse().ok()).unwrap_or(0);
    while buffer.len() < head_end + length {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap_or(serde_json::Value::Null);
    Some(Recorded { target, headers, body })
}
