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
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

pub use error::ProxyError;

use crate::config::{Mode, ScopeCheck};
use crate::identity::{self, Caller};
use crate::migration::{Observation, ANONYMOUS};
use crate::runtime::{RouteTarget, Shared};
use crate::scopes::Needed;

/// Response bodies: Coupa's streamed through, or a small one the gateway wrote itself.
pub type Body = Either<Incoming, Full<Bytes>>;

/// `X-Request-Id`: passed through when the caller sends a sane one, created otherwise, sent to
/// Coupa and echoed in the response so a caller's log line can be matched with ours.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Per-connection constants, built once when the connection is accepted.
#[derive(Debug)]
pub struct ConnInfo {
    /// The peer's address (integrations may be recognised by it).
    pub peer: IpAddr,
    /// The peer's IP as a header value, for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: HeaderValue,
}

impl ConnInfo {
    /// Constants for a plain-HTTP connection from `peer`.
    pub fn new(peer: std::net::SocketAddr) -> Self {
        Self::with_proto(peer, "http")
    }

    /// Constants for a connection from `peer` on which the gateway terminated TLS.
    pub fn https(peer: std::net::SocketAddr) -> Self {
        Self::with_proto(peer, "https")
    }

    fn with_proto(peer: std::net::SocketAddr, proto: &'static str) -> Self {
        Self {
            peer: peer.ip(),
            peer_ip: HeaderValue::try_from(peer.ip().to_string())
                .expect("an IP address is a valid header value"),
            proto: HeaderValue::from_static(proto),
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
        return Ok(ProxyError::BadPath(reason).into_response(&request_id, ANONYMOUS));
    }
    let Some(found) = runtime.routes.find(path) else {
        shared.metrics.unrouted.record(404);
        return Ok(ProxyError::NoRoute.into_response(&request_id, ANONYMOUS));
    };
    let route = found.route;
    let needed = runtime.config.scopes.needed(req.method(), found.rest);
    let upstream_pq = upstream_path_and_query(route, found.rest, req.uri().query());
    let legacy_key = req.headers().contains_key(&headers::COUPA_API_KEY);
    let caller = identity::identify(&runtime.integrations, req.headers(), conn.peer);
    let (caller_name, usage) = match &caller {
        Caller::Known(g) | Caller::WrongAddress(g) => (g.name.as_str(), &g.usage[route.index]),
        Caller::UnknownKey | Caller::Anonymous => (ANONYMOUS, &route.anonymous_usage),
    };
    let ctx = Forward {
        client: &runtime.upstream,
        route,
        conn: &conn,
        request_id: &request_id,
    };
    let result = async {
        admit(route, &caller)?;
        match route.mode {
            Mode::Blocked => Err(ProxyError::Blocked(route.blocked_message.clone())),
            Mode::Passthrough => {
                check_scope(&shared, route, needed, req.method(), caller_name, false)?;
                ctx.send(req, upstream_pq, None).await
            }
            Mode::OAuth => {
                check_scope(&shared, route, needed, req.method(), caller_name, true)?;
                let bearer = bearer(route)?;
                ctx.send(req, upstream_pq, Some(bearer)).await
            }
        }
    }
    .await;
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => e.into_response(&request_id, caller_name),
    };
    let status = resp.status().as_u16();
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
    Ok(resp)
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

/// Never forward without a token: Coupa would answer 401 and the caller would blame its own
/// credentials. 503 + Retry-After tells it to come back.
fn bearer(route: &RouteTarget) -> Result<HeaderValue, ProxyError> {
    let cell = route
        .token
        .as_ref()
        .expect("validated oauth routes have a client");
    cell.bearer(Instant::now())
        .map_err(|u| ProxyError::NoToken {
            client: cell.name().to_string(),
            retry_after: u.retry_after,
        })
}

/// What sending one request upstream needs besides the request.
struct Forward<'a> {
    client: &'a upstream::UpstreamClient,
    route: &'a RouteTarget,
    conn: &'a ConnInfo,
    request_id: &'a HeaderValue,
}

impl Forward<'_> {
    async fn send(
        &self,
        req: Request<Incoming>,
        path_and_query: Bytes,
        bearer: Option<HeaderValue>,
    ) -> Result<Response<Body>, ProxyError> {
        let route = self.route;
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
            &self.conn.peer_ip,
            &self.conn.proto,
        );
        parts.headers.insert(&REQUEST_ID, self.request_id.clone());
        // After the rewrite, which removed any caller's Proxy-Authorization (hop-by-hop).
        if let Some(auth) = &route.proxy_authorization {
            parts
                .headers
                .insert(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
        let upstream_req = Request::from_parts(parts, body);

        let sent = Instant::now();
        let result = tokio::time::timeout(route.timeout, self.client.request(upstream_req)).await;
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
            headers.insert(&REQUEST_ID, self.request_id.clone());
        }
        Ok(resp.map(Either::Left))
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
