//! Unit tests of the connection wrapper: framing, target rewrites and their interplay with
//! hyper.

use super::framing::*;
use super::target::*;
use super::*;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Bounds every async test, so a framing bug shows up as a failure rather
/// than a hang.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test timed out")
}

// ----- the byte sets ---------------------------------------------------

/// Re-derives the refused sets from the `http` crate itself, so an
/// upgrade that changes them fails here instead of in production.
#[test]
fn tables_match_http_crate() {
    let accepts = |target: Vec<u8>| {
        let uri_ok = http::Uri::from_maybe_shared(Bytes::from(target.clone())).is_ok();
        let pq_ok = http::uri::PathAndQuery::from_maybe_shared(Bytes::from(target)).is_ok();
        assert_eq!(uri_ok, pq_ok, "Uri and PathAndQuery disagree");
        uri_ok
    };
    let mut path_refused = Vec::new();
    let mut query_refused = Vec::new();
    for b in 0x21..=0x7e_u8 {
        if !accepts([b"/a".as_slice(), &[b], b"b"].concat()) {
            path_refused.push(b);
        }
        if !accepts([b"/a?b".as_slice(), &[b], b"c"].concat()) {
            query_refused.push(b);
        }
    }
    assert_eq!(path_refused, b"<>`");
    assert_eq!(query_refused, b"\"<>");
    for b in 0..=255_u8 {
        let i = usize::from(b);
        assert_eq!(
            PATH_REFUSED[i],
            path_refused.contains(&b),
            "path byte {b:#x}"
        );
        assert_eq!(
            QUERY_REFUSED[i],
            query_refused.contains(&b),
            "query byte {b:#x}"
        );
    }
    // And the rewritten forms are accepted.
    for b in path_refused.iter().chain(&query_refused) {
        let encoded = format!("/a%{b:02X}b?c%{b:02X}d");
        assert!(accepts(encoded.into_bytes()));
    }
}

// ----- pure framing over scripted reads --------------------------------

/// Yields the given chunks as separate reads, with a `Pending` before each
/// one so the wrapper also meets a stalled stream mid-head and mid-body.
struct Script {
    chunks: VecDeque<Vec<u8>>,
    stall: bool,
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stall {
            self.stall = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.stall = true;
        let Some(chunk) = self.chunks.front_mut() else {
            return Poll::Ready(Ok(()));
        };
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        Poll::Ready(Ok(()))
    }
}

/// Everything a reader with `out_size`-byte reads gets out of the wrapper
/// when the connection delivers `chunks`. With `sniff`, the listener's
/// protocol sniff reads first (its bytes must come out like any others).
async fn filter_sniffed(chunks: Vec<Vec<u8>>, out_size: usize, sniff: bool) -> Vec<u8> {
    let script = Script {
        chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
        stall: false,
    };
    let mut wrapper = LenientTargets::new(script);
    if sniff {
        wrapper.sniff_h2_preface().await.expect("scripted read");
    }
    let mut out = Vec::new();
    let mut buf = vec![0; out_size];
    loop {
        let n = wrapper.read(&mut buf).await.expect("scripted read");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

async fn filter(chunks: Vec<Vec<u8>>, out_size: usize) -> Vec<u8> {
    filter_sniffed(chunks, out_size, false).await
}

/// Checks the output for the whole input in one read, one byte per read,
/// and every split into two reads, with small and large reader buffers;
/// the splits also after the protocol sniff.
async fn check_all_splits(input: &[u8], expected: &[u8]) {
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for out_size in [1, 5, 8192] {
        let whole = filter(vec![input.to_vec()], out_size).await;
        assert_eq!(
            show(&whole),
            show(expected),
            "one read, out_size {out_size}"
        );
    }
    let bytes = input.iter().map(|&b| vec![b]).collect();
    assert_eq!(
        show(&filter(bytes, 8192).await),
        show(expected),
        "byte by byte"
    );
    for split in 1..input.len() {
        for (out_size, sniff) in [(3, false), (8192, false), (8192, true)] {
            let chunks = vec![input[..split].to_vec(), input[split..].to_vec()];
            let got = filter_sniffed(chunks, out_size, sniff).await;
            assert_eq!(
                show(&got),
                show(expected),
                "split at {split}, out_size {out_size}, sniff {sniff}"
            );
        }
    }
}

/// Checks a few representative read patterns; for the passthrough cases.
async fn check(input: &[u8], expected: &[u8]) {
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let bytes = input.iter().map(|&b| vec![b]).collect();
    assert_eq!(
        show(&filter(bytes, 8192).await),
        show(expected),
        "byte by byte"
    );
    assert_eq!(
        show(&filter(vec![input.to_vec()], 8192).await),
        show(expected),
        "one read"
    );
    let mid = input.len() / 2;
    let halves = vec![input[..mid].to_vec(), input[mid..].to_vec()];
    assert_eq!(show(&filter(halves, 7).await), show(expected), "halves");
}

/// A chunked body: the chunks, each with an extension, a trailer section
/// and quotes everywhere a rewriter must not look.
fn chunked_body(chunks: &[&str]) -> String {
    let mut body = String::new();
    for (i, data) in chunks.iter().enumerate() {
        body += &format!("{:x};n=\"{i}\"\r\n{data}\r\n", data.len());
    }
    body + "0;last\r\nX-Checksum: \"abc\"\r\nX-Note: <x> GET /t?\"u\" HTTP/1.1\r\n\r\n"
}

/// Several keep-alive requests, as sent and as hyper must receive them.
fn keep_alive_stream() -> (String, String) {
    let cl_body = "GET /x?\"y\" HTTP/1.1\r\n\r\n{\"a\":\"<b>\"}";
    let chunks = [
        "\"q\"<a>",
        "\r\n\r\nGET /y?\"z\" HTTP/1.1\r\nHost: h\r\n\r\n",
    ];
    let mut input = String::new();
    let mut expected = String::new();
    let mut both = |sent: &str, seen: &str| {
        input += sent;
        expected += seen;
    };
    both(
        "GET /api/invoices?fields=[\"id\",{\"supplier\":[\"name\"]}]&updated-at[gt]=2024-01-01T00:00:00%2B00:00 HTTP/1.1\r\nHost: coupa\r\n\r\n",
        "GET /api/invoices?fields=[%22id%22,{%22supplier%22:[%22name%22]}]&updated-at[gt]=2024-01-01T00:00:00%2B00:00 HTTP/1.1\r\nHost: coupa\r\n\r\n",
    );
    both(
        &format!("POST /api/notes?tag=\"n\" HTTP/1.1\r\nHost: coupa\r\nContent-Length: {}\r\n\r\n{cl_body}", cl_body.len()),
        &format!("POST /api/notes?tag=%22n%22 HTTP/1.1\r\nHost: coupa\r\nContent-Length: {}\r\n\r\n{cl_body}", cl_body.len()),
    );
    let body = chunked_body(&chunks);
    both(
        &format!("POST /api/batch?mode=\"c\" HTTP/1.1\r\nHost: coupa\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{body}"),
        &format!("POST /api/batch?mode=%22c%22 HTTP/1.1\r\nHost: coupa\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{body}"),
    );
    // Blank lines before a request line, bare-LF line endings, a path
    // that needs encoding too, and a fragment that must stay as sent.
    both(
        "\r\n\nGET /p<1>/`q`?a=\"b\"&c=%22#frag\"<> HTTP/1.1\nHost: coupa\n\n",
        "\r\n\nGET /p%3C1%3E/%60q%60?a=%22b%22&c=%22#frag\"<> HTTP/1.1\nHost: coupa\n\n",
    );
    both(
        "GET http://coupa.example/api/x?y=\"1\" HTTP/1.1\r\nHost: coupa\r\n\r\n",
        "GET http://coupa.example/api/x?y=%221%22 HTTP/1.1\r\nHost: coupa\r\n\r\n",
    );
    // Duplicate but equal lengths are fine for hyper, so for us too.
    both(
        "PUT /v?{\"k\":1} HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n\"x\"",
        "PUT /v?{%22k%22:1} HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n\"x\"",
    );
    both(
        "GET /plain?x=1 HTTP/1.1\r\nHost: coupa\r\n\r\n",
        "GET /plain?x=1 HTTP/1.1\r\nHost: coupa\r\n\r\n",
    );
    both(
        "GET /last?q=<\"z\"> HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET /last?q=%3C%22z%22%3E HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    (input, expected)
}

#[tokio::test]
async fn rewrites_only_request_lines_for_every_read_split() {
    let (input, expected) = keep_alive_stream();
    bounded(check_all_splits(input.as_bytes(), expected.as_bytes())).await;
}

#[tokio::test]
async fn rewrites_only_request_lines_for_random_read_patterns() {
    let (input, expected) = keep_alive_stream();
    let input = input.into_bytes();
    // A fixed LCG: reproducible, and no extra dependency.
    let mut seed = 0x2545_f491_u64;
    let mut next = move |bound: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as usize % bound
    };
    bounded(async {
        for _ in 0..300 {
            let mut chunks = Vec::new();
            let mut pos = 0;
            while pos < input.len() {
                let len = 1 + next(40).min(input.len() - pos - 1);
                chunks.push(input[pos..pos + len].to_vec());
                pos += len;
            }
            let out_size = 1 + next(64);
            assert_eq!(filter(chunks, out_size).await, expected.as_bytes());
        }
    })
    .await;
}

#[test]
fn a_clean_head_in_one_piece_is_not_copied() {
    let mut framer = Framer::new(MAX_HEAD);
    let head = b"GET /a?b=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nxyGET";
    assert_eq!(framer.feed_head(head), HeadStep::InPlace(head.len() - 5));
    assert!(framer.out.is_empty());
    assert!(matches!(framer.state, State::Fixed(2)));
    assert_eq!(framer.pass_len(b"xyGET"), 2);
    assert!(framer.in_head());
}

/// After a head the wrapper cannot follow, hyper gets that head and nothing more.
async fn check_refused_after(first_sent: &str, first_seen: &str, rest: &str) {
    let follow = format!("{rest}GET /after?q=\"never seen\" HTTP/1.1\r\n\r\n");
    check(
        format!("{first_sent}{follow}").as_bytes(),
        first_seen.as_bytes(),
    )
    .await;
}

#[tokio::test]
async fn upgrade_and_connect_heads_are_framed_like_any_other() {
    // The gateway never switches protocols, so hyper keeps reading HTTP/1 after these:
    // the next head must still be fixed (and, with limits, timed).
    let next = (
        "GET /n?q=\"1\" HTTP/1.1\r\n\r\n",
        "GET /n?q=%221%22 HTTP/1.1\r\n\r\n",
    );
    bounded(async {
        for (head, seen) in [
            (
                "GET /ws?t=\"1\" HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                "GET /ws?t=%221%22 HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            ),
            (
                "CONNECT coupa.example:443 HTTP/1.1\r\nHost: coupa.example:443\r\n\r\n",
                "CONNECT coupa.example:443 HTTP/1.1\r\nHost: coupa.example:443\r\n\r\n",
            ),
            (
                "CONNECT /prod/api/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                "CONNECT /prod/api/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            ),
        ] {
            let sent = format!("{head}{}", next.0);
            let expected = format!("{seen}{}", next.1);
            check(sent.as_bytes(), expected.as_bytes()).await;
        }
    })
    .await;
}

#[tokio::test]
async fn framing_hyper_refuses_ends_what_reaches_hyper() {
    bounded(async {
        // The HTTP/2 preface without the sniff (the listener sniffs first): not HTTP/1.
        check_refused_after(
            "PRI * HTTP/2.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\n",
            "SM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
        )
        .await;
        // Request-smuggling shapes: hyper goes by chunked; so does the wrapper, up to
        // the end of that body and no further (the gateway answers 400 and closes).
        for both in [
            "POST /s HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /s HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        ] {
            let seen = format!("{both}0\r\n\r\n");
            check_refused_after(both, &seen, "0\r\n\r\n").await;
        }
        for refused in [
            "POST /s HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST /s HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST /s HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST /s HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST /s HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /s HTTP/1.1\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            // A head httparse refuses (header without a colon, two spaces) stays as sent.
            "GET /a?b=\"c\" HTTP/1.1\r\nNo colon here\r\n\r\n",
            "GET /a?b=\"c\"  HTTP/1.1\r\n\r\n",
        ] {
            check_refused_after(refused, refused, "hello").await;
        }
        // A chunked body hyper would refuse passes up to the byte hyper fails on.
        let chunked = "POST /s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, seen) in [
            ("5\nhello\r\n0\r\n\r\n", "5\n"),
            ("5\r\nhelloX\r\n0\r\n\r\n", "5\r\nhelloX"),
            ("fffffffffffffffff\r\n", "fffffffffffffffff"),
        ] {
            check_refused_after(chunked, &format!("{chunked}{seen}"), body).await;
        }
    })
    .await;
}

#[tokio::test]
async fn partial_and_oversized_heads_end_what_reaches_hyper() {
    bounded(async {
        let partial = "GET /a?b=\"c\" HTTP/1.1\r\nHost: x\r\n";
        check(partial.as_bytes(), partial.as_bytes()).await;
        let partial = "POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
        check(partial.as_bytes(), partial.as_bytes()).await;
        // Over the cap: hyper gets the first MAX_HEAD bytes, unchanged, and no more.
        let huge = format!(
            "GET /a?b=\"c\" HTTP/1.1\r\nX-Big: {}\r\n\r\nGET /d?\"e\" HTTP/1.1\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        check(huge.as_bytes(), &huge.as_bytes()[..MAX_HEAD]).await;
        // Just under the cap is still rewritten.
        let line = "GET /a?b=\"c\" HTTP/1.1\r\nX-Big: ";
        let filler = "a".repeat(MAX_HEAD - line.len() - 4);
        let near = format!("{line}{filler}\r\n\r\n");
        let fixed = format!("GET /a?b=%22c%22 HTTP/1.1\r\nX-Big: {filler}\r\n\r\n");
        assert_eq!(near.len(), MAX_HEAD);
        check(near.as_bytes(), fixed.as_bytes()).await;
    })
    .await;
}

#[tokio::test]
async fn sniff_tells_the_h2_preface_and_keeps_every_byte() {
    bounded(async {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04".to_vec();
        let get = b"GET /a?b=\"c\" HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let fixed = b"GET /a?b=%22c%22 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let partial = b"PRI * HTTP/2.0\r\n".to_vec();
        // (input, is h2, what the reader gets: the preface passes through unchanged)
        let cases = [
            (preface.clone(), true, preface),
            (get, false, fixed),
            (partial.clone(), false, partial), // EOF inside the preface
            (Vec::new(), false, Vec::new()),
        ];
        for (input, h2, expected) in cases {
            let one_by_one: Vec<Vec<u8>> = input.iter().map(|&b| vec![b]).collect();
            for chunks in [vec![input.clone()], one_by_one] {
                let script = Script {
                    chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
                    stall: false,
                };
                let mut wrapper = LenientTargets::new(script);
                assert_eq!(wrapper.sniff_h2_preface().await.unwrap(), h2);
                let mut out = Vec::new();
                wrapper.read_to_end(&mut out).await.unwrap();
                assert_eq!(out, expected, "{}", String::from_utf8_lossy(&input));
            }
        }
    })
    .await;
}

// ----- end to end through hyper ----------------------------------------

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let uri = req.uri().to_string();
    let body = req.into_body().collect().await?.to_bytes();
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{uri} {}",
        body.len()
    )))))
}

/// An HTTP/1 server whose handler answers `<uri> <body length>`.
async fn server(lenient: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let conn = http1::Builder::new();
                // Errors are the point of some tests; the client sees them.
                let _ = if lenient {
                    let io = TokioIo::new(LenientTargets::new(tcp));
                    conn.serve_connection(io, service_fn(echo)).await
                } else {
                    conn.serve_connection(TokioIo::new(tcp), service_fn(echo))
                        .await
                };
            });
        }
    });
    addr
}

struct Client {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let (rd, wr) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        Self {
            rd: BufReader::new(rd),
            wr,
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.wr.write_all(bytes.as_bytes()).await.expect("send");
    }

    /// The next response's status and body; `None` once the server closed.
    async fn response(&mut self) -> Option<(u16, String)> {
        let mut line = String::new();
        if self.rd.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status = line.split(' ').nth(1)?.parse().ok()?;
        let mut length = 0;
        loop {
            line.clear();
            self.rd.read_line(&mut line).await.ok()?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':')?;
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; length];
        self.rd.read_exact(&mut body).await.ok()?;
        Some((status, String::from_utf8(body).ok()?))
    }
}

const JSON_QUERY: &str =
    "/api/invoices?fields=[\"id\",{\"supplier\":[\"name\"]}]&updated-at[gt]=2024-01-01T00:00:00%2B00:00";

#[tokio::test]
async fn hyper_serves_raw_json_queries_on_one_keep_alive_connection() {
    bounded(async {
        let mut client = Client::connect(server(true).await).await;

        client.send(&format!("GET {JSON_QUERY} HTTP/1.1\r\nHost: coupa\r\n\r\n")).await;
        let encoded = JSON_QUERY.replace('"', "%22");
        assert_eq!(client.response().await, Some((200, format!("{encoded} 0"))));

        let body = chunked_body(&["{\"a\":\"<b>\"}", "GET /x?\"y\" HTTP/1.1\r\n\r\n"]);
        client
            .send(&format!(
                "POST /api/batch?m=\"c\" HTTP/1.1\r\nHost: coupa\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
            ))
            .await;
        let len = "{\"a\":\"<b>\"}GET /x?\"y\" HTTP/1.1\r\n\r\n".len();
        assert_eq!(client.response().await, Some((200, format!("/api/batch?m=%22c%22 {len}"))));

        let body = "{\"note\":\"GET /z?\\\"q\\\" HTTP/1.1\"}";
        client
            .send(&format!(
                "POST /api/notes HTTP/1.1\r\nHost: coupa\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
            .await;
        assert_eq!(client.response().await, Some((200, format!("/api/notes {}", body.len()))));

        client.send("GET /api/search?q=<a>&p=\"b\" HTTP/1.1\r\nHost: coupa\r\n\r\n").await;
        assert_eq!(
            client.response().await,
            Some((200, "/api/search?q=%3Ca%3E&p=%22b%22 0".to_owned()))
        );
    })
    .await;
}

/// Documents why the wrapper exists: plain hyper refuses the same request.
#[tokio::test]
async fn hyper_alone_refuses_raw_quotes() {
    bounded(async {
        let mut client = Client::connect(server(false).await).await;
        client
            .send(&format!("GET {JSON_QUERY} HTTP/1.1\r\nHost: coupa\r\n\r\n"))
            .await;
        let (status, _) = client.response().await.expect("a response");
        assert_eq!(status, 400);
    })
    .await;
}

#[tokio::test]
async fn expect_continue_works_through_the_wrapper() {
    bounded(async {
        let mut client = Client::connect(server(true).await).await;
        // The body looks like a request line; it must arrive untouched.
        let body = "GET /?\"a\" HTTP/1.1\r\n\r\n";
        client
            .send(&format!(
                "POST /api/up?x=\"1\" HTTP/1.1\r\nHost: coupa\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ))
            .await;
        assert_eq!(client.response().await, Some((100, String::new())));
        client.send(body).await;
        let echoed = format!("/api/up?x=%221%22 {}", body.len());
        assert_eq!(client.response().await, Some((200, echoed)));
        client.send("GET /next?\"n\" HTTP/1.1\r\nHost: coupa\r\n\r\n").await;
        assert_eq!(client.response().await, Some((200, "/next?%22n%22 0".to_owned())));
    })
    .await;
}

#[tokio::test]
async fn smuggling_shaped_requests_never_get_their_body_rewritten() {
    bounded(async {
        let mut client = Client::connect(server(true).await).await;
        // Content-Length covers the hidden request; chunked framing ends
        // before it. hyper goes by chunked and closes afterwards.
        let hidden = "GET /hidden?q=\"x\" HTTP/1.1\r\nHost: coupa\r\n\r\n";
        let body = format!("0\r\n\r\n{hidden}");
        client
            .send(&format!(
                "POST /s HTTP/1.1\r\nHost: coupa\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
                body.len()
            ))
            .await;
        assert_eq!(client.response().await, Some((200, "/s 0".to_owned())));
        // Whatever else hyper answers, the hidden request was never
        // rewritten into something it would serve.
        while let Some((status, body)) = client.response().await {
            assert!(!body.starts_with("/hidden"), "served {status} {body}");
        }
    })
    .await;
}
