//! A realistic in-process fake of one Coupa instance: OAuth 2.0 token endpoint, a handful of
//! `/api` resources, scopes, the rate limit, streaming attachments, and fault knobs a test can
//! flip while it runs.
//!
//! Used by the gateway's integration tests, `coupa-gateway demo` / `mock` and the benches. It
//! is a crate of its own that does not depend on the gateway, so it cannot share a bug with it
//! (nor quietly start to: the compiler refuses the import). Several
//! instances (prod, test, …) can run in one process, each on its own listener, over plain HTTP
//! or, with [`MockConfig::tls`], HTTPS (rustls with its own configuration, not the gateway's).
//!
//! # What it answers
//! - `POST /oauth2/token`: client credentials (RFC 6749 §4.4) in the form body or HTTP Basic
//!   (§2.3.1, but never both at once), errors per §5.2; tokens are opaque random strings that
//!   remember their scopes and expiry (see [`MockConfig::client`] and [`Faults`]).
//! - `GET /oauth2/scopes`: JSON array of the scope names the mock knows ([`known_scopes`]).
//! - `/api/…`: one request goes through, in this order:
//!   1. counted (`api_requests`) and recorded ([`MockCoupa::requests`]);
//!   2. rate limit (token bucket per instance) → 429, no `Retry-After` unless
//!      [`Faults::set_retry_after`];
//!   3. [`Faults::set_api_delay`], then [`Faults::fail_api_with`];
//!   4. authentication → 401: if an `Authorization` header is present it alone decides (a bad
//!      bearer token is 401 even next to a valid `X-COUPA-API-KEY`, so a gateway that forgets to
//!      strip or replace credentials shows up); otherwise a configured `X-COUPA-API-KEY`, which
//!      holds every scope;
//!   5. unknown resource → 404, then scope ([`required_scope`]) → 403 naming the scope;
//!   6. the resource itself: list/get/create/update/delete, attachments, image scans.
//!
//!   The token endpoint is not rate limited (Coupa does not document whether it counts).
//! - Formats: JSON when any `Accept` contains `application/json`, else XML (Coupa's default).
//!   Like Coupa, an XML list with no match is a 404 "No results match your search criteria."
//!   while JSON answers `200 []` (docs/coupa-api.md §1).
//!
//! # Resources
//! [`RESOURCES`] are seeded with `seed_rows` deterministic rows each; a few more names known to
//! the scope map (`lookups`, `currencies`, `departments`, …) start empty. Per resource:
//! - `GET /api/{res}`: `offset`, `limit` (at most 50), `order_by` and `dir`, and exact-match
//!   filters on top-level fields; anything else (`fields=[…]`, `updated-at[gt]=…`) is ignored;
//! - `GET /api/{res}/{id}`; `POST /api/{res}` (JSON, or XML kept as a bare id);
//! - `PUT`/`PATCH /api/{res}/{id}` merges fields, `?exported=true|false` sets the export flag;
//! - `DELETE /api/{res}/{id}`.
//!
//! Attachments stream: `POST /api/{res}/{id}/attachments` and `PUT
//! /api/invoices/{id}/image_scan` hash the raw body chunk by chunk and answer its size and
//! SHA-256 (bodies are never stored); `GET /api/attachments/{id}` serves
//! [`Faults::set_download_size`] bytes of [`attachment_bytes`] for any numeric id, with
//! `x-mock-sha256`, honouring [`Faults::hold_download_midway`].
//!
//! Every response carries `x-mock-instance: <name>` and echoes the request's `x-request-id`.
//!
//! # Request targets
//! The recorded target is exactly the request line's target, but hyper's parser (httparse and
//! `http::Uri`) decides what reaches the mock at all: in the query it rejects raw `"`, `<` and
//! `>` with 400 before any handler runs, and a raw `#` silently ends the target (fragment).
//! Raw `[`, `]`, `{`, `}`, `|`, `^`, `:` and the rest of printable ASCII pass through
//! untouched. The `hyper_request_target_grammar` test pins this down.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

mod api;
mod codec;
mod config;
mod data;
mod demo;
mod faults;
mod oauth;
mod scopes;
mod stream;
#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    convert::Infallible,
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use serde_json::{json, Value};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
};

pub use config::{MockClient, MockConfig, MockRateLimit, MockTls};
pub use demo::{demo_instance, DEMO_API_KEY, DEMO_SCOPES};
pub use faults::{Faults, DEFAULT_DOWNLOAD_SIZE};
pub use scopes::{known_scopes, required_scope, RESOURCES};
pub use stream::{attachment_bytes, attachment_sha256, DOWNLOAD_CHUNK};

use faults::lock;

/// Response body of every mock answer: either a small buffer or a streamed download.
type MockBody = BoxBody<Bytes, std::io::Error>;

/// How many API requests [`MockCoupa::requests`] keeps.
pub const RECORDED_REQUESTS: usize = 1000;

/// Largest JSON/XML body `POST`/`PUT` accept (attachments stream and have no limit).
const MAX_JSON_BODY: usize = 10 * 1024 * 1024;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_MOCK_INSTANCE: HeaderName = HeaderName::from_static("x-mock-instance");
static X_COUPA_API_KEY: HeaderName = HeaderName::from_static("x-coupa-api-key");

/// One `/api` request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Request method.
    pub method: Method,
    /// The request-target exactly as received (origin form: path and query, byte for byte;
    /// absolute form is kept whole).
    pub target: String,
    /// All request headers.
    pub headers: HeaderMap,
}

impl RecordedRequest {
    /// The first value of header `name` as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The raw query (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// A snapshot of an instance's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests to `/oauth2/token`, whatever their outcome.
    pub token_requests: u64,
    /// Tokens minted.
    pub tokens_issued: u64,
    /// Requests to `/api/…`, whatever their outcome.
    pub api_requests: u64,
    /// `/api` requests answered 429 by the rate limiter.
    pub rate_limited: u64,
    /// `/api` requests answered 401 for missing or bad credentials (not injected faults).
    pub unauthorized: u64,
    /// `/api` requests answered 403 for a missing scope.
    pub forbidden: u64,
}

#[derive(Default)]
struct Counters {
    token_requests: AtomicU64,
    tokens_issued: AtomicU64,
    api_requests: AtomicU64,
    rate_limited: AtomicU64,
    unauthorized: AtomicU64,
    forbidden: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Token-bucket state.
struct Bucket {
    limit: MockRateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(limit: MockRateLimit) -> Self {
        Bucket {
            limit,
            tokens: f64::from(limit.burst),
            last: Instant::now(),
        }
    }

    fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.limit.per_second;
        self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a credential allows.
enum Grant {
    /// Legacy API key: everything.
    All,
    /// OAuth token with these scopes.
    Scopes(Vec<String>),
}

impl Grant {
    fn allows_any(&self, wanted: &[String]) -> bool {
        match self {
            Grant::All => true,
            Grant::Scopes(have) => wanted.iter().any(|w| have.contains(w)),
        }
    }
}

/// State shared by the accept loop, every connection and the [`MockCoupa`] handle.
struct Shared {
    name: String,
    instance_header: HeaderValue,
    clients: Vec<MockClient>,
    api_keys: Vec<String>,
    faults: Faults,
    counters: Counters,
    tokens: oauth::TokenStore,
    store: data::Store,
    attachments: stream::Attachments,
    limiter: Mutex<Option<Bucket>>,
    recorded: Mutex<VecDeque<RecordedRequest>>,
}

impl Shared {
    fn new(cfg: MockConfig) -> Self {
        let instance_header = HeaderValue::from_str(&cfg.name)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-name"));
        Shared {
            instance_header,
            faults: Faults::new(cfg.expires_in),
            counters: Counters::default(),
            tokens: oauth::TokenStore::default(),
            store: data::Store::seeded(cfg.seed_rows),
            attachments: stream::Attachments::default(),
            limiter: Mutex::new(cfg.rate_limit.map(Bucket::new)),
            recorded: Mutex::new(VecDeque::new()),
            name: cfg.name,
            clients: cfg.clients,
            api_keys: cfg.api_keys,
        }
    }

    fn record(&self, req: &Request<Incoming>) {
        let uri = req.uri();
        // Origin form is by far the common case; `path_and_query` holds the bytes exactly as
        // they were on the request line (http's `Uri` validates but never re-encodes).
        let target = match (uri.scheme(), uri.path_and_query()) {
            (None, Some(pq)) => pq.as_str().to_owned(),
            _ => uri.to_string(),
        };
        let entry = RecordedRequest {
            method: req.method().clone(),
            target,
            headers: req.headers().clone(),
        };
        let mut recorded = lock(&self.recorded);
        if recorded.len() >= RECORDED_REQUESTS {
            recorded.pop_front();
        }
        recorded.push_back(entry);
    }

    fn rate_limit_allows(&self) -> bool {
        // No limiter configured = unlimited.
        lock(&self.limiter).as_mut().is_none_or(Bucket::try_take)
    }

    fn authenticate(&self, headers: &HeaderMap) -> Option<Grant> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value.to_str().ok()?.trim();
            let (scheme, token) = value.split_once(|c: char| c.is_ascii_whitespace())?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            let generation = self.faults.token_generation();
            return self
                .tokens
                .scopes_of(
                    token.trim(),
                    generation,
                    self.faults.token_activation_delay(),
                )
                .map(Grant::Scopes);
        }
        let key = headers.get(&X_COUPA_API_KEY)?.to_str().ok()?;
        self.api_keys.iter().any(|k| k == key).then_some(Grant::All)
    }
}

/// A running mock Coupa instance. Dropping it or calling [`MockCoupa::shutdown`] stops it.
pub struct MockCoupa {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for MockCoupa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockCoupa")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockCoupa {
    /// Binds `cfg.listen`, spawns the accept loop and returns once the socket is listening
    /// (connections made after this returns are served). Needs a Tokio runtime.
    /// With [`MockConfig::tls`], a certificate or key that cannot be used is an
    /// `InvalidInput` error.
    pub async fn start(cfg: MockConfig) -> std::io::Result<MockCoupa> {
        let tls = cfg.tls.as_ref().map(MockTls::acceptor).transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg));
        let (shutdown, shutdown_rx) = watch::channel(false);
        tracing::info!(name = %shared.name, %addr, scheme, "mock Coupa listening");
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx, tls));
        Ok(MockCoupa {
            addr,
            scheme,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`, or `https://…` with TLS (no trailing slash).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The token endpoint URL (`{url}/oauth2/token`).
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.url())
    }

    /// The instance name from its config.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The fault knobs, changeable while the instance runs.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Replaces the rate limit (with a full bucket); `None` = unlimited.
    pub fn set_rate_limit(&self, limit: Option<MockRateLimit>) {
        *lock(&self.shared.limiter) = limit.map(Bucket::new);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            token_requests: get(&c.token_requests),
            tokens_issued: get(&c.tokens_issued),
            api_requests: get(&c.api_requests),
            rate_limited: get(&c.rate_limited),
            unauthorized: get(&c.unauthorized),
            forbidden: get(&c.forbidden),
        }
    }

    /// The last [`RECORDED_REQUESTS`] `/api` requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.recorded).iter().cloned().collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.recorded).clear();
    }

    /// Stops accepting, closes idle keep-alive connections, gives in-flight responses up to
    /// one second to finish, and returns when all of that is done.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(name = %self.shared.name, error = %e, "mock accept loop panicked");
            }
        }
    }
}

impl Drop for MockCoupa {
    fn drop(&mut self) {
        // The accept loop and the connections see this (or the sender going away) and wind
        // down on their own; nothing here may block.
        self.shutdown.send_replace(true);
    }
}

/// How long a connection may take to finish in-flight responses after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared), shutdown.clone(), tls.clone()));
                }
                Err(e) if is_per_connection_error(&e) => {
                    tracing::debug!(name = %shared.name, error = %e, "mock accept: connection gone");
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning or giving up (axum's
                    // `handle_accept_error`); the loop must survive them.
                    tracing::warn!(name = %shared.name, error = %e, "mock accept failed; retrying");
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    tracing::info!(name = %shared.name, "mock Coupa stopped");
}

fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // Nagle + delayed ACK would add ~40 ms to small responses (STYLE.md §5.3).
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "mock: TCP_NODELAY failed");
    }
    let Some(tls) = tls else {
        return serve_io(stream, shared, shutdown).await;
    };
    // A client that rejects the certificate (the tests for untrusted upstreams) ends here.
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(stream)) => serve_io(stream, shared, shutdown).await,
        Ok(Err(e)) => tracing::debug!(name = %shared.name, error = %e, "mock TLS handshake failed"),
        Err(_) => tracing::debug!(name = %shared.name, "mock TLS handshake timed out"),
    }
}

async fn serve_io<S>(stream: S, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's HTTP/1 header-read timeout needs a timer to work with.
    builder.http1().timer(TokioTimer::new());
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "mock connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            if tokio::time::timeout(DRAIN_TIMEOUT, conn.as_mut()).await.is_err() {
                tracing::debug!("mock connection did not drain in time; dropping it");
            }
        }
    }
}

/// The per-request entry point: dispatch, then the headers every answer carries.
async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<MockBody> {
    let request_id = req.headers().get(&X_REQUEST_ID).cloned();
    let path = req.uri().path();
    let mut resp = if path == "/oauth2/token" {
        oauth::token_endpoint(&shared, req).await
    } else if path == "/oauth2/scopes" {
        json_response(StatusCode::OK, &json!(known_scopes()))
    } else if path == "/api" || path.starts_with("/api/") {
        api::api(&shared, req).await
    } else {
        text_response(StatusCode::NOT_FOUND, "not found\n")
    };
    let headers = resp.headers_mut();
    headers.insert(X_MOCK_INSTANCE.clone(), shared.instance_header.clone());
    if let Some(id) = request_id {
        headers.insert(X_REQUEST_ID.clone(), id);
    }
    resp
}

fn full_body(bytes: impl Into<Bytes>) -> MockBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<MockBody> {
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_response(status: StatusCode, value: &Value) -> Response<MockBody> {
    // Serialising a `Value` cannot fail (its keys are strings).
    let body = serde_json::to_vec(value).unwrap_or_default();
    response(status, "application/json; charset=utf-8", body)
}

fn xml_response(status: StatusCode, body: String) -> Response<MockBody> {
    response(status, "application/xml; charset=utf-8", body)
}

fn text_response(status: StatusCode, body: &'static str) -> Response<MockBody> {
    response(status, "text/plain; charset=utf-8", body)
}
