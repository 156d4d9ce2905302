//! End-to-end tests of the mock over real sockets on `127.0.0.1:0`.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

use super::*;

const KEY: &str = "legacy0123456789legacy0123456789legacy01";
const ALL: &[&str] = &[
    "core.invoice.read",
    "core.invoice.write",
    "core.supplier.read",
    "core.supplier.write",
    "core.common.read",
];

type ReqBody = BoxBody<Bytes, io::Error>;

/// A mock with one client (`gw` / `s3cret`, scopes [`ALL`]), one API key and no rate limit
/// (most tests send more than a burst of requests).
async fn start() -> MockCoupa {
    start_with(MockConfig::new("prod").rate_limit(None)).await
}

async fn start_with(cfg: MockConfig) -> MockCoupa {
    MockCoupa::start(cfg.client("gw", "s3cret", ALL).api_key(KEY))
        .await
        .expect("mock starts")
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

fn full(body: impl Into<Bytes>) -> ReqBody {
    Full::new(body.into())
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed()
}

fn client() -> Client<HttpConnector, ReqBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(
    method: Method,
    url: String,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client()
        .request(req.body(full(body)).unwrap())
        .await
        .expect("request succeeds");
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

async fn get(mock: &MockCoupa, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(Method::GET, format!("{}{path}", mock.url()), headers, "").await
}

/// Form-encodes pairs (spaces as `+`).
fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

async fn token_request(mock: &MockCoupa, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut all = vec![FORM];
    all.extend_from_slice(headers);
    send(Method::POST, mock.token_url(), &all, body.to_owned()).await
}

/// Mints a token for `gw` with `scope` (or all granted scopes) and returns it.
async fn token(mock: &MockCoupa, scope: Option<&str>) -> String {
    let mut pairs = vec![
        ("grant_type", "client_credentials"),
        ("client_id", "gw"),
        ("client_secret", "s3cret"),
    ];
    if let Some(s) = scope {
        pairs.push(("scope", s));
    }
    let r = token_request(mock, &[], &form(&pairs)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["access_token"].as_str().unwrap().to_owned()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

const JSON: (&str, &str) = ("accept", "application/json");
const WITH_KEY: (&str, &str) = ("x-coupa-api-key", KEY);

fn sha_hex(data: &[u8]) -> String {
    codec::hex(&Sha256::digest(data))
}

#[tokio::test]
async fn token_success_echoes_scope_and_expiry() {
    let mock = start().await;
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "gw"),
        ("client_secret", "s3cret"),
        ("scope", "core.invoice.read core.supplier.read"),
    ]);
    let r = token_request(&mock, &[], &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let j = r.json();
    assert_eq!(j["token_type"], "bearer");
    assert_eq!(j["expires_in"], 86_399);
    assert_eq!(j["scope"], "core.invoice.read core.supplier.read");
    let tok = j["access_token"].as_str().unwrap();
    assert!(tok.len() >= 43, "{tok}");
    assert!(tok
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));

    // No scope: every granted scope. Basic credentials instead of the body.
    mock.faults().set_expires_in(120);
    let basic = format!("Basic {}", codec::base64_encode(b"gw:s3cret"));
    let r = token_request(
        &mock,
        &[("authorization", &basic)],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["scope"], ALL.join(" "));
    assert_eq!(r.json()["expires_in"], 120);
    assert_eq!(
        mock.stats(),
        Stats {
            token_requests: 2,
            tokens_issued: 2,
            ..Stats::default()
        }
    );
}

/// Extra headers, form body, expected status, expected RFC 6749 `error`.
type TokenCase = (
    Vec<(&'static str, String)>,
    String,
    StatusCode,
    &'static str,
);

#[tokio::test]
async fn token_errors_follow_rfc6749() {
    let mock = start().await;
    let cases: Vec<TokenCase> = vec![
        (
            vec![],
            "grant_type=client_credentials&client_id=gw&client_secret=wrong".into(),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            vec![],
            "grant_type=client_credentials&client_id=nobody&client_secret=s3cret".into(),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            vec![],
            "client_id=gw&client_secret=s3cret".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![],
            "grant_type=password&client_id=gw&client_secret=s3cret".into(),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            vec![],
            "grant_type=client_credentials&grant_type=client_credentials&client_id=gw&client_secret=s3cret".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![(
                "authorization",
                format!("Basic {}", codec::base64_encode(b"gw:s3cret")),
            )],
            "grant_type=client_credentials&client_id=gw&client_secret=s3cret".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![(
                "authorization",
                format!("Basic {}", codec::base64_encode(b"gw:nope")),
            )],
            "grant_type=client_credentials".into(),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
    ];
    let n = cases.len() as u64;
    for (headers, body, status, error) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = token_request(&mock, &headers, &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert_eq!(r.json()["error"], error, "{body}");
        assert!(r.json()["error_description"].is_string());
        if headers.is_empty() {
            assert_eq!(r.header("www-authenticate"), None);
        } else if status == StatusCode::UNAUTHORIZED {
            assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
        }
    }
    let s = mock.stats();
    assert_eq!((s.token_requests, s.tokens_issued), (n, 0));
}

#[tokio::test]
async fn ungranted_scope_is_invalid_scope() {
    let mock = start().await;
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "gw"),
        ("client_secret", "s3cret"),
        ("scope", "core.invoice.read core.user.write"),
    ]);
    let r = token_request(&mock, &[], &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_scope");
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("core.user.write"));
}

#[tokio::test]
async fn token_faults() {
    let mock = start().await;
    mock.faults().fail_token_with(Some((500, "server_error")));
    let body = "grant_type=client_credentials&client_id=gw&client_secret=s3cret";
    let r = token_request(&mock, &[], body).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json()["error"], "server_error");
    mock.faults().fail_token_with(Some((401, "invalid_client")));
    assert_eq!(
        token_request(&mock, &[], body).await.status,
        StatusCode::UNAUTHORIZED
    );
    mock.faults().fail_token_with(None);
    mock.faults().set_token_delay(Duration::from_millis(150));
    let t0 = Instant::now();
    assert_eq!(token_request(&mock, &[], body).await.status, StatusCode::OK);
    assert!(t0.elapsed() >= Duration::from_millis(150));
    let s = mock.stats();
    assert_eq!((s.token_requests, s.tokens_issued), (3, 1));
}

#[tokio::test]
async fn missing_or_bad_credentials_are_401() {
    let mock = start().await;
    let r = get(&mock, "/api/invoices", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("<errors><error>"), "{}", r.text());
    let r = get(
        &mock,
        "/api/invoices",
        &[JSON, ("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.json()["errors"]["invoices"][0].is_string(),
        "{}",
        r.text()
    );
    let r = get(&mock, "/api/invoices", &[("x-coupa-api-key", "wrong")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // An Authorization header decides on its own, even next to a valid key.
    let r = get(
        &mock,
        "/api/invoices",
        &[("authorization", "Bearer nope"), WITH_KEY],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(mock.stats().unauthorized, 4);
}

#[tokio::test]
async fn bearer_lacking_scope_is_403() {
    let mock = start().await;
    let tok = token(&mock, Some("core.supplier.read")).await;
    let auth = bearer(&tok);
    let r = get(&mock, "/api/invoices", &[JSON, ("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text().contains("core.invoice.read"), "{}", r.text());
    let r = get(&mock, "/api/suppliers/1", &[JSON, ("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::OK);
    // Lowercase scheme works, as NS-BUNDLE sends it.
    let lower = format!("bearer {tok}");
    let r = get(
        &mock,
        "/api/suppliers/2",
        &[JSON, ("authorization", &lower)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(
        Method::POST,
        format!("{}/api/suppliers", mock.url()),
        &[JSON, ("authorization", &auth)],
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text().contains("core.supplier.write"));
    let r = get(
        &mock,
        "/api/no_such_thing",
        &[JSON, ("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(mock.stats().forbidden, 2);
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_401() {
    let mock = start().await;
    let old = bearer(&token(&mock, None).await);
    assert_eq!(
        get(&mock, "/api/invoices/1", &[("authorization", &old)])
            .await
            .status,
        StatusCode::OK
    );
    mock.faults().revoke_all_tokens();
    assert_eq!(
        get(&mock, "/api/invoices/1", &[("authorization", &old)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let new = bearer(&token(&mock, None).await);
    assert_eq!(
        get(&mock, "/api/invoices/1", &[("authorization", &new)])
            .await
            .status,
        StatusCode::OK
    );
    mock.faults().set_expires_in(0);
    let dead = bearer(&token(&mock, None).await);
    assert_eq!(
        get(&mock, "/api/invoices/1", &[("authorization", &dead)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn legacy_api_key_holds_every_scope() {
    let mock = start().await;
    for path in [
        "/api/invoices/1",
        "/api/users",
        "/api/receiving_transactions/3",
    ] {
        let r = get(&mock, path, &[JSON, ("X-COUPA-API-KEY", KEY)]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    let r = send(
        Method::PUT,
        format!("{}/api/users/1", mock.url()),
        &[JSON, WITH_KEY],
        r#"{"active": false}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["active"], false);
}

#[tokio::test]
async fn json_or_xml_by_accept() {
    let mock = start().await;
    let r = get(&mock, "/api/invoices/4", &[JSON, WITH_KEY]).await;
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let j = r.json();
    assert_eq!(j["id"], 4);
    assert_eq!(j["invoice-number"], "INV-000004");
    assert_eq!(j["supplier"]["id"], 13);

    let r = get(&mock, "/api/invoices/4", &[WITH_KEY]).await;
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/xml"));
    let x = r.text();
    assert!(
        x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "{x}"
    );
    assert!(x.contains("<invoice-header>"), "{x}");
    assert!(x.contains("<id type=\"integer\">4</id>"), "{x}");
    assert!(
        x.contains("<invoice-number>INV-000004</invoice-number>"),
        "{x}"
    );

    let r = get(
        &mock,
        "/api/suppliers?limit=4",
        &[("accept", "application/xml"), WITH_KEY],
    )
    .await;
    let x = r.text();
    assert!(x.contains("<suppliers type=\"array\"><supplier>"), "{x}");
    assert!(x.contains("<name>Johnson &amp; Johnson 4</name>"), "{x}");
    assert_eq!(x.matches("<supplier>").count(), 4);

    // Coupa's asymmetry for an empty search: XML 404, JSON 200 [].
    let r = get(&mock, "/api/currencies", &[WITH_KEY]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains("No results match your search criteria."));
    let r = get(&mock, "/api/currencies", &[JSON, WITH_KEY]).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn paging_clamps_to_50_and_offset_works() {
    let mock = start().await;
    let ids = |r: &Reply| -> Vec<u64> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["id"].as_u64().unwrap())
            .collect()
    };
    let r = get(&mock, "/api/invoices", &[JSON, WITH_KEY]).await;
    assert_eq!(ids(&r), (1..=50).collect::<Vec<_>>());
    let r = get(&mock, "/api/invoices?limit=500", &[JSON, WITH_KEY]).await;
    assert_eq!(ids(&r).len(), 50);
    let r = get(&mock, "/api/invoices?offset=50&limit=10", &[JSON, WITH_KEY]).await;
    assert_eq!(ids(&r), (51..=60).collect::<Vec<_>>());
    let r = get(&mock, "/api/invoices?offset=100", &[JSON, WITH_KEY]).await;
    assert_eq!(ids(&r), (101..=120).collect::<Vec<_>>());
    let r = get(
        &mock,
        "/api/invoices?status=approved&exported=false&fields=[%22id%22]&updated-at[gt]=2024-01-01",
        &[JSON, WITH_KEY],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let rows = r.json();
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows
        .iter()
        .all(|row| row["status"] == "approved" && row["exported"] == false));
}

#[tokio::test]
async fn post_then_get_and_put_exported() {
    let mock = start().await;
    let url = mock.url();
    let r = send(
        Method::POST,
        format!("{url}/api/suppliers"),
        &[JSON, WITH_KEY, ("content-type", "application/json")],
        r#"{"name": "New Co", "status": "active", "id": 5}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["id"], 121);
    let r = get(&mock, "/api/suppliers/121", &[JSON, WITH_KEY]).await;
    assert_eq!(r.json()["name"], "New Co");

    let r = send(
        Method::POST,
        format!("{url}/api/suppliers"),
        &[WITH_KEY, ("content-type", "application/xml")],
        "<supplier><name>X</name></supplier>",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.text(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<supplier><id type=\"integer\">122</id></supplier>\n"
    );

    let r = send(
        Method::POST,
        format!("{url}/api/suppliers"),
        &[JSON, WITH_KEY],
        "{not json",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["errors"]["suppliers"][0].is_string());

    let r = send(
        Method::PUT,
        format!("{url}/api/invoices/1?exported=true"),
        &[JSON, WITH_KEY],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["exported"], true);
    assert!(r.json()["last-exported-at"].is_string());
    let r = get(&mock, "/api/invoices/9999", &[JSON, WITH_KEY]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rate_limit_gives_429_after_the_burst() {
    let mock =
        start_with(MockConfig::new("prod").rate_limit(Some(MockRateLimit::new(0.01, 3)))).await;
    for _ in 0..3 {
        assert_eq!(
            get(&mock, "/api/users/1", &[WITH_KEY]).await.status,
            StatusCode::OK
        );
    }
    let r = get(&mock, "/api/users/1", &[WITH_KEY]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), None);
    // Checked before authentication: no credentials still counts as rate limited.
    mock.faults().set_retry_after(Some(7));
    let r = get(&mock, "/api/users/1", &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("7"));
    // The token endpoint is not limited.
    token(&mock, None).await;
    let s = mock.stats();
    assert_eq!((s.api_requests, s.rate_limited, s.unauthorized), (5, 2, 0));
    mock.set_rate_limit(None);
    assert_eq!(
        get(&mock, "/api/users/1", &[WITH_KEY]).await.status,
        StatusCode::OK
    );
}

/// A request body fed chunk by chunk from a channel, of unknown length (sent chunked).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn upload_streams_and_hashes_3mb() {
    const MB: usize = 1024 * 1024;
    let mock = start().await;
    let data = attachment_bytes(12_345, 3 * MB);
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let req = Request::post(format!("{}/api/invoices/7/attachments", mock.url()))
        .header("x-coupa-api-key", KEY)
        .header("content-type", "application/octet-stream")
        .body(ChannelBody(rx).boxed())
        .unwrap();
    let pending = tokio::spawn(client().request(req));

    for chunk in data[..MB].chunks(64 * 1024) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    // The mock has hashed the first megabyte while two are still unsent.
    wait_until("the first MB at the mock", || {
        mock.faults().upload_bytes_received() >= MB as u64
    })
    .await;
    assert!(!pending.is_finished());
    for chunk in data[MB..].chunks(64 * 1024) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    drop(tx);

    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let j: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(j["file-size"], 3 * MB);
    assert_eq!(j["sha256"], sha_hex(&data));
    assert_eq!(j["id"], 1);
    assert_eq!(mock.faults().upload_bytes_received(), 3 * MB as u64);

    let r = get(&mock, "/api/invoices/7/attachments", &[JSON, WITH_KEY]).await;
    assert_eq!(r.json()[0]["sha256"], sha_hex(&data));

    // Image scans stream the same way; unknown parents are 404.
    let r = send(
        Method::PUT,
        format!("{}/api/invoices/3/image_scan", mock.url()),
        &[WITH_KEY],
        &b"%PDF-1.4 tiny"[..],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["sha256"], sha_hex(b"%PDF-1.4 tiny"));
    let r = send(
        Method::POST,
        format!("{}/api/invoices/999/attachments", mock.url()),
        &[WITH_KEY],
        "x",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn download_hash_matches_header() {
    let mock = start().await;
    for size in [DEFAULT_DOWNLOAD_SIZE, 300_001, 0] {
        mock.faults().set_download_size(size);
        let r = get(&mock, "/api/attachments/5", &[WITH_KEY]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
        assert_eq!(r.body.len() as u64, size);
        assert_eq!(r.header("x-mock-sha256"), Some(sha_hex(&r.body).as_str()));
        assert_eq!(r.body, attachment_bytes(0, size as usize));
    }
    mock.faults().set_download_size(4096);
    let r = send(
        Method::HEAD,
        format!("{}/api/attachments/5", mock.url()),
        &[WITH_KEY],
        "",
    )
    .await;
    assert_eq!(r.header("content-length"), Some("4096"));
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn download_midway_gate_holds_the_second_half() {
    let mock = start().await;
    let size: u64 = 1_000_000;
    mock.faults().set_download_size(size);
    mock.faults().hold_download_midway(true);

    let stream = TcpStream::connect(mock.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/api/attachments/1")
        .header("host", "mock")
        .header("x-coupa-api-key", KEY)
        .body(full(""))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let want = resp.headers()["x-mock-sha256"].to_str().unwrap().to_owned();
    let mut body = resp.into_body();
    let mut got = Vec::new();

    // The first half arrives while the upstream is still holding the rest.
    while (got.len() as u64) < size / 2 {
        let frame = tokio::time::timeout(Duration::from_secs(2), body.frame())
            .await
            .expect("first half arrives")
            .unwrap()
            .unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(got.len() as u64, size / 2);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), body.frame())
            .await
            .is_err(),
        "nothing more may arrive while held"
    );

    mock.faults().release_download();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(2), body.frame())
        .await
        .expect("rest arrives after release")
    {
        got.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert_eq!(got.len() as u64, size);
    assert_eq!(sha_hex(&got), want);
}

/// Sends one raw HTTP/1.1 request and returns the whole raw response.
async fn raw_request(mock: &MockCoupa, target: &str) -> String {
    let mut stream = TcpStream::connect(mock.addr()).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: mock\r\nX-Coupa-Api-Key: {KEY}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn raw_query_is_recorded_byte_exact() {
    let mock = start().await;
    let targets = [
        // The brief's query with its double quotes percent-encoded (see the next test for why).
        "/api/invoices?fields=[%22id%22,{%22supplier%22:[%22name%22]}]&updated-at[gt]=2024-01-01T00:00:00%2B00:00",
        // NS-BUNDLE's shape (docs/coupa-api.md §11), likewise.
        "/api/purchase_orders?exported=false&fields=[%22id%22,{%22pay_from_account%22:[%22id%22,{%22currency%22:[%22code%22]}]}]&pay_to_account[type]=CoupaPay::SupplierPaymentAccount&status[in]=a,b",
        // Everything else the query grammar of `http` lets through raw, `+` and `%`s untouched.
        "/api/users?a=!$&'()*+,;=:@/?[]{}|\\^`~&b=%2b+%20&c=%zz",
    ];
    for target in targets {
        let raw = raw_request(&mock, target).await;
        assert!(raw.starts_with("HTTP/1.1 200 "), "{target}: {raw}");
        assert_eq!(mock.requests().last().unwrap().target, target);
    }
}

/// Documents what hyper (httparse + `http::Uri`) accepts in a request-target's query, since the
/// gateway is a hyper server too: of the printable ASCII bytes only `"`, `<` and `>` are rejected
/// (400 before any handler runs), and `#` silently cuts the target (it starts a fragment).
#[tokio::test]
async fn hyper_request_target_grammar() {
    let mock = start().await;
    let mut rejected = String::new();
    for b in 0x21u8..=0x7e {
        let c = char::from(b);
        let raw = raw_request(&mock, &format!("/api/users?x={c}y")).await;
        if raw.starts_with("HTTP/1.1 400 ") {
            rejected.push(c);
        } else {
            assert!(raw.starts_with("HTTP/1.1 200 "), "{c}: {raw}");
            let target = mock.requests().last().unwrap().target.clone();
            if c == '#' {
                assert_eq!(target, "/api/users?x=");
            } else {
                assert_eq!(target, format!("/api/users?x={c}y"));
            }
        }
    }
    assert_eq!(rejected, "\"<>");
    let raw = raw_request(
        &mock,
        "/api/invoices?fields=[\"id\",{\"supplier\":[\"name\"]}]&updated-at[gt]=2024-01-01T00:00:00%2B00:00",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
    // In the path, `"`, `{` and `}` are allowed; the query grammar is the stricter one.
    let raw = raw_request(&mock, "/api/users/{\"x\"}").await;
    assert!(raw.starts_with("HTTP/1.1 404 "), "{raw}");
}

#[tokio::test]
async fn two_instances_at_once() {
    let prod = MockCoupa::start(
        MockConfig::new("prod")
            .client("p", "ps", &["core.invoice.read"])
            .seed_rows(5),
    )
    .await
    .unwrap();
    let test = MockCoupa::start(
        MockConfig::new("test")
            .client("t", "ts", &["core.invoice.read"])
            .seed_rows(3),
    )
    .await
    .unwrap();
    assert_ne!(prod.addr(), test.addr());
    let mint = |m: &MockCoupa, id: &str, secret: &str| {
        let url = m.token_url();
        let body = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ]);
        async move {
            let r = send(Method::POST, url, &[FORM], body).await;
            (r.status, r.json()["access_token"].as_str().map(bearer))
        }
    };
    let (_, prod_tok) = mint(&prod, "p", "ps").await;
    let prod_tok = prod_tok.unwrap();
    let (status, _) = mint(&test, "p", "ps").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, test_tok) = mint(&test, "t", "ts").await;
    let test_tok = test_tok.unwrap();

    let r = get(
        &prod,
        "/api/invoices",
        &[JSON, ("authorization", &prod_tok)],
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 5);
    assert_eq!(r.header("x-mock-instance"), Some("prod"));
    let r = get(
        &test,
        "/api/invoices",
        &[JSON, ("authorization", &test_tok)],
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 3);
    assert_eq!(r.header("x-mock-instance"), Some("test"));
    let r = get(
        &test,
        "/api/invoices",
        &[JSON, ("authorization", &prod_tok)],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (prod.stats().api_requests, test.stats().api_requests),
        (1, 2)
    );
    assert_eq!(
        (prod.stats().unauthorized, test.stats().unauthorized),
        (0, 1)
    );
}

#[tokio::test]
async fn requests_are_recorded_and_request_id_echoed() {
    let mock = start().await;
    let r = get(
        &mock,
        "/api/users/1?x=1",
        &[WITH_KEY, ("x-request-id", "abc-123")],
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let r = token_request(
        &mock,
        &[("x-request-id", "tok-1")],
        "grant_type=client_credentials&client_id=gw&client_secret=s3cret",
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("tok-1"));
    let r = get(&mock, "/oauth2/scopes", &[]).await;
    assert!(r
        .json()
        .as_array()
        .unwrap()
        .contains(&json!("core.invoice.read")));

    let seen = mock.requests();
    assert_eq!(
        seen.len(),
        1,
        "token and scope requests are not API requests"
    );
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].target, "/api/users/1?x=1");
    assert_eq!(seen[0].query(), Some("x=1"));
    assert_eq!(seen[0].header("x-coupa-api-key"), Some(KEY));
    assert_eq!(seen[0].header("X-Request-Id"), Some("abc-123"));
    mock.clear_requests();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn api_faults() {
    let mock = start().await;
    mock.faults().fail_api_with(Some(503));
    let r = get(&mock, "/api/users/1", &[JSON]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.json()["errors"]["users"][0].is_string());
    mock.faults().fail_api_with(None);
    mock.faults().set_api_delay(Duration::from_millis(150));
    let t0 = Instant::now();
    assert_eq!(
        get(&mock, "/api/users/1", &[WITH_KEY]).await.status,
        StatusCode::OK
    );
    assert!(t0.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let mock = start().await;
    let stream = TcpStream::connect(mock.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for id in 1..=5 {
        let req = Request::get(format!("/api/users/{id}"))
            .header("host", "mock")
            .header("x-coupa-api-key", KEY)
            .header("accept", "application/json")
            .body(full(""))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
    }
}

#[tokio::test]
async fn shutdown_and_drop_stop_listening() {
    let mock = start().await;
    let addr = mock.addr();
    // An idle keep-alive connection must not keep shutdown waiting.
    let idle = TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    mock.shutdown().await;
    assert!(t0.elapsed() < Duration::from_millis(900));
    assert!(TcpStream::connect(addr).await.is_err());
    drop(idle);

    let mock = start().await;
    let addr = mock.addr();
    drop(mock);
    let mut closed = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "dropping the mock closes its listener");
}
