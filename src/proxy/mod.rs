//! The request path: route, check, attach the token, rewrite headers, stream to Coupa and back.
//!
//! Everything per-request that can be computed earlier is: the route table, upstream scheme,
//! authority and `Host` value live in the runtime snapshot, the bearer header is prebuilt in the
//! token cell, and the peer address header is built once per connection. Nothing here logs on
//! success or formats strings.

mod body;
mod error;
pub mod headers;
pub mod path;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::HeaderValue;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;

pub use error::ProxyError;

use crate::config::{Mode, ScopeCheck};
use crate::errors;
use crate::migration::identity::{self, Caller};
use crate::migration::scopes::Needed;
use crate::migration::{Observation, ANONYMOUS};
use crate::net::bounds::{BodyTimeout, RequestBody};
use crate::net::conn::{ActiveRequest, ConnState};
use crate::net::upstream;
use crate::runtime::{RouteTarget, Shared};
use crate::state::ratelimit::Turn;
use crate::token::TokenCell;

use crate::ops::access_log::{redact_query, AccessRecord};
pub use body::Body;

pub use headers::X_REQUEST_ID as REQUEST_ID;

/// Per-connection constants, built once when the connection is accepted.
#[derive(Debug)]
pub struct ConnInfo {
    /// The peer's address (integrations may be recognised by it).
    pub peer: IpAddr,
    /// The peer's IP as a header value, for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: HeaderValue,
    /// Shared with the connection's I/O wrapper (idle tracking, framing flags).
    pub state: Arc<ConnState>,
    /// The proxy worker serving the connection: which of the runtime's pooled clients to use.
    pub worker: usize,
}

impl ConnInfo {
    /// Constants for a plain-HTTP connection from `peer`.
    pub fn new(peer: std::net::SocketAddr, worker: usize) -> Self {
        Self::with_proto(peer, "http", worker)
    }

    /// Constants for a connection from `peer` on which the gateway terminated TLS.
    pub fn https(peer: std::net::SocketAddr, worker: usize) -> Self {
        Self::with_proto(peer, "https", worker)
    }

    fn with_proto(peer: std::net::SocketAddr, proto: &'static str, worker: usize) -> Self {
        Self {
            peer: peer.ip(),
            peer_ip: HeaderValue::try_from(peer.ip().to_string())
                .expect("an IP address is a valid header value"),
            proto: HeaderValue::from_static(proto),
            state: Arc::default(),
            worker,
        }
    }
}

/// Serves one request. Never fails: every error becomes a response here.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // Until the response body is sent: a connection streaming a long download is not idle.
    // PERF: held here and handed to the body at each return, not by an outer async fn whose
    // state would copy this whole future (+600 instructions per request, callgrind).
    let active = ActiveRequest::enter(conn.state.clone());
    let request_id = match req.headers().get(&REQUEST_ID) {
        Some(v) if headers::usable_request_id(v) => v.clone(),
        _ => new_request_id(),
    };
    // `load_full`: the snapshot must outlive the awaits below (arc-swap guards must not be
    // held across yield points). A reload during the request does not affect it.
    let runtime = shared.runtime.load_full();
    let started = Instant::now();
    // Captured only when an access line will be written (PERF: the common no-log case pays
    // this one check).
    let log = (runtime.config.log.access
        && tracing::enabled!(target: "access", tracing::Level::INFO))
    .then(|| (req.method().clone(), req.uri().clone()));
    let path = req.uri().path();
    let found = runtime.routes.find(path);
    let keys = headers::legacy_key(req.headers());
    let refused = match refusal(&req, keys, &conn.state) {
        Some(error) => Some(error),
        None if found.is_none() => Some(ProxyError::NoRoute),
        None => None,
    };
    if let Some(error) = refused {
        return Ok(unrouted(&shared, error, &request_id, log, started).map(|b| b.holding(active)));
    }
    let found = found.expect("no refusal means a route matched");
    let route = found.route;
    let needed = runtime.config.scopes.needed(req.method(), found.rest);
    let upstream_pq = upstream_path_and_query(route, found.rest, req.uri().query());
    let key = keys.single();
    let legacy_key = key.is_some();
    let caller = identity::identify(&runtime.integrations, key, conn.peer);
    let (caller_name, usage) = match &caller {
        Caller::Known(g) | Caller::WrongAddress(g) => (g.name.as_str(), &g.usage[route.index]),
        Caller::UnknownKey | Caller::Anonymous => (ANONYMOUS, &route.anonymous_usage),
    };
    let ctx = Forward {
        client: &runtime.upstream[conn.worker],
        route,
        conn: &conn,
        request_id: &request_id,
        upstream_micros: AtomicU64::new(0),
    };
    let declared = content_length(req.headers());
    let server = &runtime.config.server;
    let result = async {
        admit(route, &caller)?;
        if route.mode == Mode::Blocked {
            return Err(ProxyError::Blocked(route.blocked_message.clone()));
        }
        let oauth = route.mode == Mode::OAuth;
        check_scope(&shared, route, needed, req.method(), caller_name, oauth)?;
        // Shed before queueing or buffering anything: both cost memory.
        let _global = InFlight::enter(&shared.inflight, server.max_concurrent_requests)
            .ok_or(ProxyError::Overloaded)?;
        let _route = match route.max_concurrent {
            Some(max) => Some(InFlight::enter(&route.inflight, max).ok_or(ProxyError::Overloaded)?),
            None => None,
        };
        if let (Some(max), Some(len)) = (route.max_body_bytes, declared) {
            if len > max {
                return Err(ProxyError::BodyTooLarge(max));
            }
        }
        if let Some(limiter) = &route.limiter {
            match limiter.acquire(Instant::now()) {
                Turn::Now => {}
                Turn::At(at) => tokio::time::sleep_until(at.into()).await,
                Turn::Rejected(retry) => {
                    return Err(ProxyError::RateLimited {
                        instance: route.instance.name.clone(),
                        retry_after: retry.as_secs().max(1),
                    })
                }
            }
        }
        let (parts, body) = req.into_parts();
        let body = RequestBody::new(body, server.body_timeout);
        let body = Limited::new(body, route.max_body_bytes.map_or(usize::MAX, clamp_usize));
        if oauth {
            let cell = route
                .token
                .as_ref()
                .expect("validated oauth routes have a client");
            ctx.oauth(
                cell,
                parts,
                body,
                declared,
                upstream_pq,
                server.retry_body_limit,
            )
            .await
        } else {
            let request = ctx.prepare(&parts, upstream_pq, None, Either::Left(body))?;
            let resp = ctx.dispatch(request).await?;
            Ok(ctx.finish(resp))
        }
    }
    .await;
    let (resp, error) = match result {
        Ok(resp) => (resp, None),
        Err(e) => {
            let code = e.code();
            (e.into_response(&request_id, caller_name), Some(code))
        }
    };
    let status = resp.status().as_u16();
    let resp = match log {
        Some((method, uri)) => {
            let upstream = ctx.upstream_micros.load(Ordering::Relaxed);
            let record = AccessRecord {
                request_id: request_id.clone(),
                integration: caller_name.to_owned(),
                route: route.prefix.clone(),
                instance: route.instance.name.clone(),
                mode: route.mode.as_str(),
                method,
                path: redact_query(uri.path(), uri.query()),
                status,
                error,
                upstream: (upstream > 0).then(|| Duration::from_micros(upstream)),
                request_bytes: declared,
                started,
            };
            resp.map(|b| b.logged(record))
        }
        None => resp,
    };
    route.metrics.responses.record(status);
    usage
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record(&Observation {
            status,
            mode: route.mode,
            legacy_key,
            needed,
            at: SystemTime::now(),
        });
    Ok(resp.map(|b| b.holding(active)))
}

/// The answer to a request refused before routing (method, bad path or framing, no route).
#[cold]
fn unrouted(
    shared: &Shared,
    error: ProxyError,
    request_id: &HeaderValue,
    log: Option<(http::Method, Uri)>,
    started: Instant,
) -> Response<Body> {
    let status = error.status().as_u16();
    shared.metrics.unrouted.record(status);
    let code = error.code();
    let resp = error.into_response(request_id, ANONYMOUS);
    match log {
        Some((method, uri)) => resp.map(|b| {
            b.logged(AccessRecord {
                request_id: request_id.clone(),
                integration: ANONYMOUS.to_owned(),
                route: String::new(),
                instance: String::new(),
                mode: "",
                method,
                path: redact_query(uri.path(), uri.query()),
                status,
                error: Some(code),
                upstream: None,
                request_bytes: None,
                started,
            })
        }),
        None => resp,
    }
}

/// Why a request is refused before routing, if it is: a method Coupa does not use, then a path
/// or framing that two parsers could read differently, then more than one legacy key (the
/// caller must be identified by the key Coupa would see).
fn refusal(
    req: &Request<Incoming>,
    keys: headers::LegacyKey<'_>,
    conn: &ConnState,
) -> Option<ProxyError> {
    if !forwarded_method(req.method()) {
        return Some(ProxyError::MethodNotAllowed);
    }
    if let Some(reason) = path::check(req.uri().path()).or_else(|| framing_problem(req, conn)) {
        return Some(ProxyError::BadRequest(reason));
    }
    (keys == headers::LegacyKey::Several).then_some(ProxyError::DuplicateApiKey)
}

/// Request framing the gateway refuses even though hyper parsed it: both `Content-Length` and
/// `Transfer-Encoding` (RFC 9112 §6.1: a classic request-smuggling vector between two
/// parsers), and an HTTP/1 absolute-form target naming a host other than `Host` (the gateway
/// routes by path; a request aimed at another host is a misdirected proxy request).
fn framing_problem(req: &Request<Incoming>, conn: &ConnState) -> Option<&'static str> {
    // hyper drops Content-Length when Transfer-Encoding is present, so the raw head's
    // verdict comes from the connection wrapper.
    if conn.conflicting_framing() {
        return Some("both Content-Length and Transfer-Encoding are set");
    }
    let h = req.headers();
    if req.version() < Version::HTTP_2 {
        if let Some(authority) = req.uri().authority() {
            let host = h.get(http::header::HOST).map(|v| v.as_bytes());
            if host != Some(authority.as_str().as_bytes()) {
                return Some("absolute-form request target for another host");
            }
        }
    }
    None
}

/// The methods Coupa's REST API uses ([`error::ALLOWED_METHODS`]). Anything else is refused
/// before a token is attached: TRACE has Coupa (or anything on the way) echo the request
/// back, the gateway's bearer token included; CONNECT asks for a tunnel; extension methods
/// (WebDAV, `PURGE`) would reach whatever on the way handles them, with the gateway's token.
fn forwarded_method(m: &http::Method) -> bool {
    use http::Method;
    *m == Method::GET
        || *m == Method::POST
        || *m == Method::PUT
        || *m == Method::PATCH
        || *m == Method::DELETE
        || *m == Method::HEAD
        || *m == Method::OPTIONS
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn clamp_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Counts a request in flight; `enter` refuses past `max` and the guard leaves on drop.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize, max: usize) -> Option<Self> {
        if counter.fetch_add(1, Ordering::AcqRel) >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight(counter))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// May this caller use this route?
fn admit(route: &RouteTarget, caller: &Caller<'_>) -> Result<(), ProxyError> {
    match caller {
        Caller::Known(g) if g.may_use(route.index) => Ok(()),
        Caller::Known(g) => Err(ProxyError::RouteForbidden {
            integration: g.name.clone(),
            route: route.prefix.clone(),
        }),
        Caller::WrongAddress(g) => Err(ProxyError::AddressForbidden {
            integration: g.name.clone(),
        }),
        _ if route.open => Ok(()),
        Caller::UnknownKey => Err(ProxyError::Unauthenticated(
            "the X-COUPA-API-KEY sent is not one this gateway knows; this route admits only the integrations configured for it",
        )),
        Caller::Anonymous => Err(ProxyError::Unauthenticated(
            "send the integration's API key in X-COUPA-API-KEY; this route admits only the integrations configured for it",
        )),
    }
}

/// Compares what the request needs with the route's client. In enforce mode (oauth only: in
/// passthrough the client's token is not used) a gap is a 403 before Coupa is called; in
/// warn mode it is logged once per client and scope.
fn check_scope(
    shared: &Shared,
    route: &RouteTarget,
    needed: Option<&Needed>,
    method: &http::Method,
    caller: &str,
    oauth: bool,
) -> Result<(), ProxyError> {
    let (Some(needed), Some(client)) = (needed, &route.client) else {
        return Ok(());
    };
    if route.scope_check == ScopeCheck::Off
        || needed.any_of.is_empty()
        || route.client_has_any(&needed.any_of)
    {
        return Ok(());
    }
    if oauth && route.scope_check == ScopeCheck::Enforce {
        return Err(ProxyError::ScopeMissing {
            client: client.clone(),
            scope: needed.label.to_string(),
        });
    }
    shared.warn_missing_scope(client, &needed.label, method, caller);
    Ok(())
}

/// What sending one request upstream needs besides the request.
struct Forward<'a> {
    client: &'a upstream::UpstreamClient,
    route: &'a RouteTarget,
    conn: &'a ConnInfo,
    request_id: &'a HeaderValue,
    /// Time to Coupa's last response head, for the access log (0: Coupa not called).
    upstream_micros: AtomicU64,
}

/// A request body that may be sent twice (buffered) or only once (streamed).
enum Prepared {
    Replayable(Bytes),
    Streamed(upstream::CallerBody),
}

impl Forward<'_> {
    /// The oauth path: attach the token; after a 401 from Coupa, get a new token (one token
    /// request for any number of concurrent 401s) and replay once when the body allows it.
    async fn oauth(
        &self,
        cell: &TokenCell,
        parts: http::request::Parts,
        body: upstream::CallerBody,
        declared: Option<u64>,
        path_and_query: Bytes,
        retry_body_limit: u64,
    ) -> Result<Response<Body>, ProxyError> {
        let unavailable = |retry_after| ProxyError::NoToken {
            client: cell.name().to_string(),
            retry_after,
        };
        let mut bearer = cell
            .bearer(Instant::now())
            .map_err(|u| unavailable(u.retry_after))?;
        if bearer.rejected {
            // Coupa already refused this token; its replacement is being minted.
            bearer = cell
                .replacement(bearer.generation)
                .await
                .ok_or_else(|| unavailable(1))?;
        }
        match replayable(body, declared, retry_body_limit).await? {
            Prepared::Streamed(body) => {
                let request = self.prepare(
                    &parts,
                    path_and_query,
                    Some(&bearer.header),
                    Either::Left(body),
                )?;
                let resp = self.dispatch(request).await?;
                if resp.status() == StatusCode::UNAUTHORIZED {
                    cell.unauthorized_passed.fetch_add(1, Ordering::Relaxed);
                    // Not replayable; the next request should still get a working token.
                    if Instant::now() >= bearer.minted + cell.warmup() {
                        cell.reject(bearer.generation);
                    }
                }
                Ok(self.finish(resp))
            }
            Prepared::Replayable(bytes) => {
                // The caller's head stays as it came: a replay is built from it again.
                let request = self.prepare(
                    &parts,
                    path_and_query.clone(),
                    Some(&bearer.header),
                    Either::Right(Full::new(bytes.clone())),
                )?;
                let resp = self.dispatch(request).await?;
                if resp.status() != StatusCode::UNAUTHORIZED {
                    return Ok(self.finish(resp));
                }
                let Some(next) = cell.recover(&bearer).await else {
                    cell.unauthorized_passed.fetch_add(1, Ordering::Relaxed);
                    return Ok(self.finish(resp));
                };
                cell.unauthorized_replayed.fetch_add(1, Ordering::Relaxed);
                drop(resp);
                let again = self.prepare(
                    &parts,
                    path_and_query,
                    Some(&next.header),
                    Either::Right(Full::new(bytes)),
                )?;
                // One replay, whatever it answers: never loop.
                let resp = self.dispatch(again).await?;
                Ok(self.finish(resp))
            }
        }
    }

    /// The request for Coupa: the caller's method and body, the route's upstream URI, and the
    /// head [`headers::request_headers`] builds from the caller's.
    fn prepare(
        &self,
        caller: &http::request::Parts,
        path_and_query: Bytes,
        bearer: Option<&HeaderValue>,
        body: upstream::UpstreamBody,
    ) -> Result<Request<upstream::UpstreamBody>, ProxyError> {
        let route = self.route;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(route.scheme.clone());
        uri.authority = Some(route.authority.clone());
        uri.path_and_query = Some(
            PathAndQuery::from_maybe_shared(path_and_query)
                .map_err(|e| ProxyError::Internal(e.into()))?,
        );
        let mut request = Request::new(body);
        *request.uri_mut() = Uri::from_parts(uri).map_err(|e| ProxyError::Internal(e.into()))?;
        *request.method_mut() = caller.method.clone();
        // The pool picks HTTP/1.1 (or h2 when negotiated); an h2 caller's version must not leak.
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers::request_headers(
            &caller.headers,
            headers::Outbound {
                host: &route.host,
                bearer,
                peer_ip: &self.conn.peer_ip,
                proto: &self.conn.proto,
                request_id: self.request_id,
                proxy_authorization: route.proxy_authorization.as_ref(),
            },
        );
        Ok(request)
    }

    /// Sends to Coupa and waits for the response head, within the route's timeout.
    async fn dispatch(
        &self,
        request: Request<upstream::UpstreamBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let route = self.route;
        let sent = Instant::now();
        let result = tokio::time::timeout(route.timeout, self.client.request(request)).await;
        let resp = match result {
            Err(_elapsed) => return Err(ProxyError::UpstreamTimeout),
            Ok(Err(e)) if errors::is_caused_by::<LengthLimitError>(&e) => {
                return Err(ProxyError::BodyTooLarge(route.max_body_bytes.unwrap_or(0)))
            }
            Ok(Err(e)) if errors::is_caused_by::<BodyTimeout>(&e) => {
                return Err(ProxyError::BodyTimeout)
            }
            Ok(Err(e)) if timed_out(&e) => return Err(ProxyError::UpstreamTimeout),
            Ok(Err(e)) if e.is_connect() => return Err(ProxyError::UpstreamConnect(e)),
            Ok(Err(e)) => return Err(ProxyError::Upstream(e)),
            Ok(Ok(resp)) => resp,
        };
        let took = sent.elapsed();
        route.metrics.upstream_latency.observe(took);
        self.upstream_micros
            .store(took.as_micros().max(1) as u64, Ordering::Relaxed);
        Ok(resp)
    }

    /// Coupa's response for the caller: hop-by-hop headers out, request id in, and a 429/503
    /// slows the instance's limiter (and gets a `Retry-After` if Coupa sent none).
    fn finish(&self, mut resp: Response<Incoming>) -> Response<Body> {
        let status = resp.status();
        let headers = resp.headers_mut();
        headers::remove_hop_by_hop(headers);
        headers
            .entry(&REQUEST_ID)
            .or_insert_with(|| self.request_id.clone());
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            self.throttled(headers);
        }
        resp.map(|body| Body::upstream(body, self.route.timeout))
    }

    #[cold]
    fn throttled(&self, headers: &mut http::HeaderMap) {
        let Some(limiter) = &self.route.limiter else {
            return;
        };
        let now = Instant::now();
        // Coupa's Retry-After is disputed (docs/coupa-api.md §10): honour it when sent (seconds
        // form), otherwise pause the instance for a second, about what its bucket needs.
        let sent = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        limiter.slow_down(now + Duration::from_secs(sent.unwrap_or(1)));
        limiter.throttled.fetch_add(1, Ordering::Relaxed);
        if sent.is_none() {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(limiter.retry_after(now)),
            );
        }
    }
}

/// Buffers a small body (so a 401 can be replayed) or leaves it streaming. A body with no
/// declared length is streamed: reading it to find out would defeat streaming.
async fn replayable(
    body: upstream::CallerBody,
    declared: Option<u64>,
    limit: u64,
) -> Result<Prepared, ProxyError> {
    if body.is_end_stream() {
        return Ok(Prepared::Replayable(Bytes::new()));
    }
    match declared {
        Some(len) if len <= limit => {
            let collected = body.collect().await.map_err(|e| {
                if errors::is_caused_by::<BodyTimeout>(&*e) {
                    ProxyError::BodyTimeout
                } else {
                    ProxyError::BadRequest("the request body could not be read")
                }
            })?;
            Ok(Prepared::Replayable(collected.to_bytes()))
        }
        _ => Ok(Prepared::Streamed(body)),
    }
}

/// `{base_path}{rest}?{query}`, byte for byte: Coupa queries carry JSON and brackets
/// (`fields=["id"]`, `updated-at[gt]=...`) and must not be decoded or re-encoded.
fn upstream_path_and_query(route: &RouteTarget, rest: &str, query: Option<&str>) -> Bytes {
    let query_len = query.map_or(0, |q| q.len() + 1);
    let mut buf = BytesMut::with_capacity(route.base_path.len() + rest.len() + query_len);
    buf.put_slice(route.base_path.as_bytes());
    buf.put_slice(rest.as_bytes());
    if let Some(q) = query {
        buf.put_u8(b'?');
        buf.put_slice(q.as_bytes());
    }
    buf.freeze()
}

/// A connect that timed out is a timeout (504, like nginx), not an unreachable host (502).
fn timed_out(e: &hyper_util::client::legacy::Error) -> bool {
    errors::causes(e).any(|err| {
        err.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// A process-unique id: a random 32-bit prefix (distinguishes restarts and replicas) and a
/// counter, as 8+16 hex digits. No allocation beyond the header value itself.
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 25];
    for i in 0..8 {
        out[i] = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    out[8] = b'-';
    for i in 0..16 {
        out[9 + i] = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_header_lists_exactly_the_forwarded_methods() {
        let listed: Vec<http::Method> = error::ALLOWED_METHODS
            .split(", ")
            .map(|m| m.parse().unwrap())
            .collect();
        assert_eq!(listed.len(), 7);
        assert!(listed.iter().all(forwarded_method));
        for other in [
            "CONNECT", "TRACE", "TRACK", "PROPFIND", "PURGE", "get", "Get",
        ] {
            assert!(!forwarded_method(&other.parse().unwrap()), "{other}");
        }
    }

    #[test]
    fn request_ids_are_unique_and_well_formed() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        assert!(a
            .to_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-'));
    }
}
