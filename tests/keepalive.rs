//! The keep-alive race: Coupa's side closes a pooled connection just as a request goes out on
//! it. A request that fails that way on a *reused* connection before any response byte is sent
//! once more on a new connection when its body can be replayed; a failure on a new connection,
//! or of a streamed body, is not retried. And a `Keep-Alive: timeout=N` is honoured.
//!
//! The upstream here is a raw TCP server whose behaviour per connection is scripted, so the
//! race happens on every run instead of one in ten: it reads a request and closes the socket
//! without answering.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use coupa_gateway::net::server::Gateway;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream does on each connection.
#[derive(Clone, Copy)]
enum Script {
    /// Answers the first request, then closes the connection on reading the second.
    AnswerOnce,
    /// Closes every connection on reading its first request.
    Never,
    /// Answers every request with `Keep-Alive: timeout=1` and keeps the connection open.
    KeepAliveOneSecond,
}

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Connections the gateway closed (end of stream while waiting for a request).
    closed_by_gateway: AtomicUsize,
}

struct Upstream {
    url: String,
    seen: Arc<Seen>,
}

async fn upstream(script: Script) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            counts.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(socket, script, counts.clone()));
        }
    });
    Upstream { url, seen }
}

async fn serve(mut socket: TcpStream, script: Script, seen: Arc<Seen>) {
    let mut answered = 0;
    loop {
        if !read_request(&mut socket).await {
            seen.closed_by_gateway.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let answer = match script {
            Script::AnswerOnce if answered == 0 => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Script::AnswerOnce | Script::Never => return,
            Script::KeepAliveOneSecond => {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=1\r\n\r\nok"
            }
        };
        socket.write_all(answer.as_bytes()).await.unwrap();
        answered += 1;
    }
}

/// Reads one request (head, and a body by `Content-Length` or chunked); false at end of stream.
async fn read_request(socket: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        while !body.ends_with(b"0\r\n\r\n") {
            match socket.read(&mut byte).await {
                Ok(1) => body.push(byte[0]),
                _ => return false,
            }
        }
    } else if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        let mut body = vec![0u8; len];
        if socket.read_exact(&mut body).await.is_err() {
            return false;
        }
    }
    true
}

/// One worker (one pool), so every request of a test shares the pool; tokens from a mock.
async fn gateway_to(upstream: &Upstream, mode: &str) -> (Gateway, coupa_mock::MockCoupa) {
    let tokens = mock("prod").await;
    let toml = GatewayToml::prod(&upstream.url)
        .server("workers = 1")
        .map_instance("prod", |i| i.token_url(&tokens.token_url()))
        .map_route("/prod", |r| r.mode(mode));
    (ready_gateway(&toml).await, tokens)
}

fn retries(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("coupa_gateway_upstream_retries_total{route=\"/prod\"} "))
        .expect("the retries metric")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_request_on_a_reused_connection_closed_by_the_far_end_is_sent_again() {
    for mode in ["oauth", "passthrough"] {
        let up = upstream(Script::AnswerOnce).await;
        let (gw, _tokens) = gateway_to(&up, mode).await;
        let http = Http::new();
        let url = proxy_url(&gw, "/prod/api/suppliers");
        assert_eq!(http.get(&url, &[]).await.status, StatusCode::OK);
        // The pooled connection is reused and closed without an answer: sent again, on a new one.
        let second = http.get(&url, &[]).await;
        assert_eq!(second.status, StatusCode::OK, "{mode}: {}", second.text());
        assert_eq!(up.seen.connections.load(Ordering::SeqCst), 2, "{mode}");
        assert_eq!(retries(&metrics(&gw).await), 1, "{mode}");
        // A buffered POST body is replayed the same way.
        let post = http
            .request(
                Method::POST,
                &url,
                &[("content-type", "application/json")],
                "{}",
            )
            .await;
        assert_eq!(post.status, StatusCode::OK, "{mode}: {}", post.text());
    }
}

#[tokio::test]
async fn a_failure_on_a_new_connection_is_not_retried() {
    let up = upstream(Script::Never).await;
    let (gw, _tokens) = gateway_to(&up, "oauth").await;
    let reply = Http::new()
        .get(&proxy_url(&gw, "/prod/api/suppliers"), &[])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["error"], "upstream_failed");
    assert_eq!(up.seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(retries(&metrics(&gw).await), 0);
}

#[tokio::test]
async fn a_streamed_post_is_not_retried() {
    let up = upstream(Script::AnswerOnce).await;
    let (gw, _tokens) = gateway_to(&up, "oauth").await;
    let http = Http::new();
    let url = proxy_url(&gw, "/prod/api/suppliers");
    assert_eq!(http.get(&url, &[]).await.status, StatusCode::OK);
    // No declared length: streamed, so it cannot be sent twice.
    let (status, text) = raw(
        gw.addr(),
        "POST /prod/api/invoices HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 502, "{text}");
    assert_eq!(up.seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(retries(&metrics(&gw).await), 0);
}

#[tokio::test]
async fn a_keep_alive_timeout_from_the_far_end_ends_the_idle_connection() {
    let up = upstream(Script::KeepAliveOneSecond).await;
    let (gw, _tokens) = gateway_to(&up, "oauth").await;
    let http = Http::new();
    let url = proxy_url(&gw, "/prod/api/suppliers");
    assert_eq!(http.get(&url, &[]).await.status, StatusCode::OK);
    // The pool would keep it for `pool_idle_timeout` (90 s); the far end said 1 s.
    let seen = up.seen.clone();
    assert!(
        eventually(Duration::from_secs(20), || seen
            .closed_by_gateway
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "the gateway did not close the connection the far end would close"
    );
    assert_eq!(http.get(&url, &[]).await.status, StatusCode::OK);
    assert_eq!(up.seen.connections.load(Ordering::SeqCst), 2);
    assert_eq!(retries(&metrics(&gw).await), 0);
}
