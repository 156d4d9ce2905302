//! Every phase of a request has a time bound, on HTTP/1 and HTTP/2, in every state of the
//! connection: request head, request body, Coupa's response, writing to a client that stopped
//! reading, idle. Each test holds one phase open the way an attacker (or a broken client or
//! server) would, with the bound set to 1 s, and checks the gateway lets go within a few.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use coupa_gateway::net::server::Gateway;
use coupa_mock::MockCoupa;
use coupa_mock::DEMO_API_KEY;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for a 1 s bound to act before calling it unbounded.
const PATIENCE: Duration = Duration::from_secs(6);

/// `/prod` (oauth) and `/legacy` (passthrough) on one mock instance, with every bound the
/// gateway has at 1 s.
fn one_second_bounds(prod: &MockCoupa) -> GatewayToml {
    GatewayToml::prod(&prod.url())
        .server("header_timeout = \"1s\"")
        .server("idle_timeout = \"1s\"")
        .server("body_timeout = \"1s\"")
        .server("write_timeout = \"1s\"")
        .server("request_timeout = \"1s\"")
        .token_warmup("0s")
        .route(
            RouteToml::new("/legacy")
                .instance("prod")
                .client("prod-main")
                .mode("passthrough"),
        )
}

/// A mock and a ready gateway on [`one_second_bounds`].
async fn start() -> (MockCoupa, Gateway) {
    start_with(|toml| toml).await
}

/// [`start`], with `change` made to the configuration first.
async fn start_with(change: impl FnOnce(GatewayToml) -> GatewayToml) -> (MockCoupa, Gateway) {
    let prod = mock("prod").await;
    let gw = ready_gateway(&change(one_second_bounds(&prod))).await;
    (prod, gw)
}

/// Reads one HTTP/1 response (head and `Content-Length` body) from `s`.
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut byte))
            .await
            .expect("a response within the patience")
            .unwrap();
        assert!(
            n == 1,
            "closed before a whole head: {}",
            String::from_utf8_lossy(&data)
        );
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    (status, format!("{head}{}", String::from_utf8_lossy(&body)))
}

/// True when the gateway closes `s` within the patience (whatever it sends first).
async fn closed_within_patience(s: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_frees_its_slot_on_every_path() {
    // Coupa's wait (request_timeout) includes the upload: longer than the body bound, as by
    // default (120 s against 60 s), so a stalled client is answered 408, not 504.
    let (prod, gw) = start_with(|toml| toml.server("request_timeout = \"10s\"")).await;
    // oauth + small body: buffered for a 401 replay; passthrough: streamed to Coupa;
    // oauth + large body: streamed (over retry_body_limit).
    for (path, declared) in [
        ("/prod/api/invoices", 100),
        ("/legacy/api/invoices", 100),
        ("/prod/api/invoices", 5 * 1024 * 1024),
    ] {
        let mut s = TcpStream::connect(gw.addr()).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nX-COUPA-API-KEY: {DEMO_API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n{{\"half\":"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let (status, text) = read_response(&mut s).await;
        assert_eq!(status, 408, "{path} {declared}: {text}");
        assert!(text.contains("body_timeout"), "{text}");
        assert!(started.elapsed() < PATIENCE);
        assert!(closed_within_patience(&mut s).await, "{path}: kept open");
        assert!(
            eventually(PATIENCE, || gw.shared().inflight.load(Ordering::SeqCst)
                == 0)
            .await,
            "{path}: the in-flight slot was not released"
        );
    }
    // The same body sent in time goes through.
    let http = Http::new();
    let reply = http
        .request(
            http::Method::POST,
            &format!("http://{}/prod/api/invoices", gw.addr()),
            &[("content-type", "application/json")],
            Bytes::from_static(b"{\"invoice-number\":\"B-1\"}"),
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text());
    drop(prod);
}

/// An HTTP/2 connection to the gateway (prior knowledge), driven in the background; the
/// handle resolves when the gateway closes it.
async fn h2_connect(
    gw: &Gateway,
    window: u32,
) -> (
    hyper::client::conn::http2::SendRequest<TestBody>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(window)
        .initial_connection_window_size(window.max(65_535))
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    (
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

fn get(gw: &Gateway, path: &str) -> Request<TestBody> {
    Request::get(format!("http://{}{path}", gw.addr()))
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

#[tokio::test]
async fn an_idle_h2_connection_gets_a_goaway_although_it_answers_pings() {
    let (_prod, gw) = start().await;
    let (mut send, conn) = h2_connect(&gw, 65_535).await;
    let resp = send
        .send_request(get(&gw, "/prod/api/invoices/1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    // hyper's client answers the gateway's keep-alive pings, so only idleness by requests
    // ends this connection.
    tokio::time::timeout(PATIENCE, conn)
        .await
        .expect("an idle h2 connection was kept open")
        .unwrap();
}

#[tokio::test]
async fn a_stalled_h2_request_body_gets_408() {
    let (_prod, gw) = start().await;
    let (mut send, _conn) = h2_connect(&gw, 65_535).await;
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
    tx.send_data(Bytes::from_static(b"{\"half\":"))
        .await
        .unwrap();
    let req = Request::post(format!("http://{}/prod/api/invoices", gw.addr()))
        .header("content-type", "application/json")
        .header("content-length", "100")
        .body(body.map_err(|e| e.into()).boxed())
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, send.send_request(req))
        .await
        .expect("a stalled h2 body was held")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    drop(tx);
    assert!(
        eventually(PATIENCE, || gw.shared().inflight.load(Ordering::SeqCst)
            == 0)
        .await,
        "the in-flight slot was not released"
    );
}

#[tokio::test]
async fn an_h2_stream_the_client_never_reads_is_reset() {
    let (prod, gw) = start().await;
    let size = 4 * 1024 * 1024;
    prod.faults().set_download_size(size);
    // A 64 KiB stream window the client never reopens: it holds the body and reads nothing.
    let (mut send, conn) = h2_connect(&gw, 65_535).await;
    let resp = send
        .send_request(get(&gw, "/prod/api/attachments/1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Reading now finds what was sent before the stall, then the reset.
    let mut body = resp.into_body();
    let mut got = 0u64;
    let ended = loop {
        match tokio::time::timeout(PATIENCE, body.frame()).await {
            Err(_) => panic!("the stalled stream was neither reset nor finished"),
            Ok(None) => break Ok(()),
            Ok(Some(Ok(frame))) => got += frame.data_ref().map_or(0, |d| d.len() as u64),
            Ok(Some(Err(e))) => break Err(e),
        }
    };
    assert!(
        ended.is_err(),
        "the whole body arrived: the stream was never reset"
    );
    assert!(got < size, "{got} of {size} bytes");
    // The reset released the response and Coupa's connection: the h2 connection is idle and
    // goes away.
    tokio::time::timeout(PATIENCE, conn)
        .await
        .expect("the connection stayed busy after the reset")
        .unwrap();
}

#[tokio::test]
async fn an_http1_client_that_stops_reading_is_disconnected() {
    // Only the write bound may act here: the connection is busy, not idle.
    let (prod, gw) = start_with(|toml| toml.server("idle_timeout = \"60s\"")).await;
    let size = 32 * 1024 * 1024;
    prod.faults().set_download_size(size);
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /prod/api/attachments/1 HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    // Read nothing while the socket buffers fill, well past the write timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let started = Instant::now();
    loop {
        match tokio::time::timeout(PATIENCE, s.read(&mut buf)).await {
            Err(_) => panic!("neither closed nor finished ({got} bytes)"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n as u64,
        }
        assert!(started.elapsed() < PATIENCE * 2, "still streaming");
    }
    assert!(
        got < size,
        "the whole response arrived: the stalled writer was never cut off"
    );
}

#[tokio::test]
async fn coupa_pausing_mid_body_is_bounded_by_the_route_timeout() {
    let (prod, gw) = start().await;
    prod.faults().set_download_size(1024 * 1024);
    prod.faults().hold_download_midway(true);
    let (mut send, _conn) = h2_connect(&gw, 16 * 1024 * 1024).await;
    let resp = send
        .send_request(get(&gw, "/prod/api/attachments/1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let read = tokio::time::timeout(PATIENCE, resp.into_body().collect()).await;
    prod.faults().release_download();
    let read = read.expect("a response body Coupa stopped sending was held open");
    assert!(read.is_err(), "the body completed although Coupa held it");
    // Over HTTP/1 the connection is closed mid-body (the response cannot be finished).
    prod.faults().hold_download_midway(true);
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /prod/api/attachments/1 HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let closed = closed_within_patience(&mut s).await;
    prod.faults().release_download();
    assert!(
        closed,
        "an HTTP/1 download Coupa stopped sending was held open"
    );
}

#[tokio::test]
async fn an_upgrade_request_does_not_switch_off_the_connection_bounds() {
    let (prod, gw) = start().await;
    let upgrade = "GET /prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    // A partial head after an Upgrade request is still timed.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(upgrade.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    s.write_all(b"GET /prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    assert!(
        closed_within_patience(&mut s).await,
        "a partial head after Upgrade was held"
    );
    // So is an idle connection after one.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(upgrade.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    assert!(
        closed_within_patience(&mut s).await,
        "an idle connection after Upgrade was kept"
    );
    // And the framing check still refuses Content-Length with Transfer-Encoding.
    let before = prod.stats().api_requests;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(upgrade.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    s.write_all(
        b"POST /prod/api/invoices HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, text) = read_response(&mut s).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        prod.stats().api_requests,
        before + 1,
        "only the first reached Coupa"
    );
}

#[tokio::test]
async fn a_head_over_the_inspection_cap_is_still_timed_and_refused() {
    // max_header_bytes above the wrapper's 80 KiB inspection cap.
    let (_prod, gw) = start_with(|toml| toml.server("max_header_bytes = \"128KiB\"")).await;
    let big = "a".repeat(100 * 1024);
    // A 100 KiB partial head, then nothing.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(
        format!("GET /prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\nX-Big: {big}").as_bytes(),
    )
    .await
    .unwrap();
    assert!(
        closed_within_patience(&mut s).await,
        "a partial head over 80 KiB was held"
    );
    // A 100 KiB head within max_header_bytes is served; one over it gets 431.
    let (status, text) = raw(
        gw.addr(),
        &format!("GET /prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{}", &text[..text.len().min(200)]);
    let huge = "a".repeat(200 * 1024);
    let (status, _) = raw(
        gw.addr(),
        &format!("GET /prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\nX-Big: {huge}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 431);
}

#[tokio::test]
async fn a_download_pausing_longer_than_idle_timeout_is_not_cut_as_idle() {
    // A connection is idle only with no request in flight; a response still streaming is in
    // flight however long Coupa pauses within the route's timeout.
    let (prod, gw) = start_with(|toml| toml.server("request_timeout = \"10s\"")).await;
    let size = 256 * 1024;
    prod.faults().set_download_size(size);
    prod.faults().hold_download_midway(true);
    let http = Http::new();
    let url = format!("http://{}/prod/api/attachments/1", gw.addr());
    let (reply, ()) = tokio::join!(http.get(&url, &[]), async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        prod.faults().release_download();
    });
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len() as u64, size);
}

#[tokio::test]
async fn a_reload_applies_new_connection_bounds_to_the_next_connection() {
    let prod = mock("prod").await;
    let slow = one_second_bounds(&prod).server("idle_timeout = \"60s\"");
    let gw = ready_gateway(&slow).await;
    let mut before = TcpStream::connect(gw.addr()).await.unwrap();
    // `connect` returns once the kernel queues the connection, maybe before the gateway accepts
    // it; one answered request proves it was accepted under the old snapshot.
    before
        .write_all(b"GET /no-such-route HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = read_response(&mut before).await;
    assert_eq!(
        status, 404,
        "answered by the proxy listener before the reload"
    );
    gw.reload(one_second_bounds(&prod).config())
        .await
        .expect("reload applies");
    // The bounds are taken when a connection is accepted, from the snapshot then current.
    let mut after = TcpStream::connect(gw.addr()).await.unwrap();
    assert!(
        closed_within_patience(&mut after).await,
        "a connection accepted after the reload kept the old idle_timeout"
    );
    let mut sink = [0u8; 1];
    let still_open = tokio::time::timeout(Duration::from_millis(500), before.read(&mut sink)).await;
    assert!(
        still_open.is_err(),
        "the earlier connection keeps its own bounds"
    );
}
