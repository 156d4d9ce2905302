//! The request path: route, check, attach the token, rewrite headers, stream to Coupa and back.
//!
//! Everything per-request that can be computed earlier is: the route table, upstream scheme,
//! authority and `Host` value live in the runtime snapshot, the bearer header is prebuilt in the
//! token cell, and the peer address header is built once per connection. Nothing here logs on
//! success or formats strings.

mod error;
pub mod headers;
pub mod path;
pub mod upstream;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

pub use error::ProxyError;

use crate::runtime::{RouteTarget, Shared};

/// Response bodies: Coupa's streamed through, or a small one the gateway wrote itself.
pub type Body = Either<Incoming, Full<Bytes>>;

/// `X-Request-Id`: passed through when the caller sends a sane one, created otherwise, sent to
/// Coupa and echoed in the response so a caller's log line can be matched with ours.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Per-connection constants, built once when the connection is accepted.
#[derive(Debug)]
pub struct ConnInfo {
    /// The peer's IP as a header value, for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: HeaderValue,
}

impl ConnInfo {
    /// Constants for a plain-HTTP connection from `peer`.
    pub fn new(peer: std::net::SocketAddr) -> Self {
        Self {
            peer_ip: HeaderValue::try_from(peer.ip().to_string())
                .expect("an IP address is a valid header value"),
            proto: HeaderValue::from_static("http"),
        }
    }
}

/// Serves one request. Never fails: every error becomes a response here.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let request_id = match req.headers().get(&REQUEST_ID) {
        Some(v) if (1..=200).contains(&v.len()) => v.clone(),
        _ => new_request_id(),
    };
    // `load_full`: the snapshot must outlive the awaits below (arc-swap guards must not be
    // held across yield points). A reload during the request does not affect it.
    let runtime = shared.runtime.load_full();
    let path = req.uri().path();
    if let Some(reason) = path::check(path) {
        shared.metrics.unrouted.record(400);
        return Ok(ProxyError::BadPath(reason).into_response(&request_id));
    }
    let Some(found) = runtime.routes.find(path) else {
        shared.metrics.unrouted.record(404);
        return Ok(ProxyError::NoRoute.into_response(&request_id));
    };
    let route = found.route;
    let upstream_pq = upstream_path_and_query(route, found.rest, req.uri().query());
    let resp = match forward(
        &runtime.upstream,
        route,
        &conn,
        req,
        upstream_pq,
        &request_id,
    )
    .await
    {
        Ok(resp) => resp,
        Err(e) => e.into_response(&request_id),
    };
    route.metrics.responses.record(resp.status().as_u16());
    Ok(resp)
}

async fn forward(
    client: &upstream::UpstreamClient,
    route: &RouteTarget,
    conn: &ConnInfo,
    req: Request<Incoming>,
    path_and_query: Bytes,
    request_id: &HeaderValue,
) -> Result<Response<Body>, ProxyError> {
    let now = Instant::now();
    // Never forward without a token: Coupa would answer 401 and the caller would blame its
    // own credentials. 503 + Retry-After tells it to come back.
    let bearer = route.token.bearer(now).map_err(|u| ProxyError::NoToken {
        client: route.token.name().to_string(),
        retry_after: u.retry_after,
    })?;

    let (mut parts, body) = req.into_parts();
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(route.scheme.clone());
    uri.authority = Some(route.authority.clone());
    uri.path_and_query = Some(
        PathAndQuery::from_maybe_shared(path_and_query)
            .map_err(|e| ProxyError::Internal(e.into()))?,
    );
    parts.uri = Uri::from_parts(uri).map_err(|e| ProxyError::Internal(e.into()))?;
    // The pool picks HTTP/1.1 (or h2 when negotiated); an h2 caller's version must not leak.
    parts.version = Version::HTTP_11;
    headers::rewrite_request(
        &mut parts.headers,
        &route.host,
        bearer,
        &conn.peer_ip,
        &conn.proto,
    );
    parts.headers.insert(&REQUEST_ID, request_id.clone());
    let upstream_req = Request::from_parts(parts, body);

    let sent = Instant::now();
    let result = tokio::time::timeout(route.timeout, client.request(upstream_req)).await;
    let mut resp = match result {
        Err(_elapsed) => return Err(ProxyError::UpstreamTimeout),
        Ok(Err(e)) if timed_out(&e) => return Err(ProxyError::UpstreamTimeout),
        Ok(Err(e)) if e.is_connect() => return Err(ProxyError::UpstreamConnect(e)),
        Ok(Err(e)) => return Err(ProxyError::Upstream(e)),
        Ok(Ok(resp)) => resp,
    };
    route.metrics.upstream_latency.observe(sent.elapsed());
    let headers = resp.headers_mut();
    headers::remove_hop_by_hop(headers);
    if !headers.contains_key(&REQUEST_ID) {
        headers.insert(&REQUEST_ID, request_id.clone());
    }
    Ok(resp.map(Either::Left))
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
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
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
