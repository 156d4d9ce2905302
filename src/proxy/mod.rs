//! The request path: route, check, attach the token, rewrite headers, stream to Coupa and back.
//!
//! Everything per-request that can be computed earlier is: the route table, upstream scheme,
//! authority and `Host` value live in the runtime snapshot, the bearer header is prebuilt in the
//! token cell, and the peer address header is built once per connection. Nothing here logs on
//! success or formats strings.

mod admission;
mod body;
pub mod client_addr;
mod error;
mod forward;
pub mod headers;
pub mod path;
mod request_id;
mod scope_check;
mod shadow;
#[cfg(test)]
mod testing;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::HeaderValue;
use http::uri::Uri;
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::{Either, Limited};
use hyper::body::Incoming;

pub use body::Body;
pub use error::ProxyError;
pub use headers::X_REQUEST_ID as REQUEST_ID;

use crate::config::Mode;
use crate::migration::discovered::{self, Sighting};
use crate::migration::identity::{self, Caller};
use crate::migration::{Observation, ANONYMOUS};
use crate::net::bounds::RequestBody;
use crate::net::conn::{ActiveRequest, ConnState};
use crate::ops::access_log::{self, redact_query, AccessRecord};
use crate::runtime::Shared;
use forward::Forward;

/// Per-connection constants, built once when the connection is accepted.
#[derive(Debug)]
pub struct ConnInfo {
    /// The peer's address: the TCP peer's, or the one its PROXY protocol header named. The
    /// client's unless the peer is a trusted proxy ([`client_addr`]).
    pub peer: IpAddr,
    /// The peer's IP as a header value, appended to `X-Forwarded-For`.
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
///
/// The stages, in order; each is a function of its own module with its own unit tests.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // Until the response body is sent: a connection streaming a long download is not idle.
    // PERF: held here and handed to the body at each return, not by an outer async fn whose
    // state would copy this whole future (+600 instructions per request, callgrind).
    let active = ActiveRequest::enter(conn.state.clone());
    let request_id = request_id::pick(req.headers());
    // `load_full`: the snapshot must outlive the awaits below (arc-swap guards must not be
    // held across yield points). A reload during the request does not affect it.
    let runtime = shared.runtime.load_full();
    let started = Instant::now();
    // Behind a trusted balancer, the client it forwards for (`allow_ips`, logs, the ledger).
    let client = client_addr::client(
        &runtime.config.server.trusted_proxies,
        conn.peer,
        req.headers(),
    );
    // Captured only when an access line will be written (PERF: the common no-log case pays
    // this one check).
    let log = (runtime.config.log.access
        && tracing::enabled!(target: "access", tracing::Level::INFO))
    .then(|| {
        let trace_id = access_log::trace_id(req.headers());
        (req.method().clone(), req.uri().clone(), trace_id)
    });

    // 1. Refuse what must never reach Coupa, then route by prefix.
    let keys = headers::legacy_key(req.headers());
    let found = runtime.routes.find(req.uri().path());
    let refused = admission::refusal(&req, keys, &conn.state)
        .or_else(|| found.is_none().then_some(ProxyError::NoRoute));
    if let Some(error) = refused {
        return Ok(
            unrouted(&shared, client, error, &request_id, log, started).map(|b| b.holding(active))
        );
    }
    let found = found.expect("no refusal means a route matched");
    let route = found.route;

    // 2. Identify the caller by the one legacy key (or its address).
    let key = keys.single();
    let legacy_key = key.is_some();
    let caller = identity::identify(&runtime.integrations, key, client);
    let (caller_name, weight, usage) = match &caller {
        Caller::Known(g) | Caller::WrongAddress(g) => {
            (g.name.as_str(), g.weight, &g.usage[route.index])
        }
        Caller::UnknownKey(_) | Caller::Anonymous => (ANONYMOUS, 1, &route.anonymous_usage),
    };
    // Kept for discovery only (a refcount, not a copy): known callers pay one branch.
    let unknown_agent = match caller {
        Caller::UnknownKey(_) => req.headers().get(http::header::USER_AGENT).cloned(),
        _ => None,
    };
    let needed = runtime.config.scopes.needed(req.method(), found.rest);
    let upstream_pq = forward::upstream_path_and_query(route, found.rest, req.uri().query());
    let declared = content_length(req.headers());
    let server = &runtime.config.server;
    // PERF: routes without shadow sampling pay this one comparison.
    let mut shadow = if route.shadow_sample > 0.0 && route.mode == Mode::Passthrough {
        shadow::ShadowJob::sample(shadow::Sampled {
            route,
            clients: &runtime.upstream,
            worker: conn.worker,
            usage,
            method: req.method(),
            path_and_query: &upstream_pq,
            accept: req.headers().get(http::header::ACCEPT),
            request_id: &request_id,
            caller_uri: req.uri(),
            scope: needed.map(|n| &n.label),
        })
    } else {
        None
    };
    let ctx = Forward {
        client: &runtime.upstream[conn.worker],
        route,
        conn: &conn,
        request_id: &request_id,
        upstream_micros: AtomicU64::new(0),
    };
    let result = async {
        // 3. May this caller use this route, in its current mode?
        admission::admit(route, &caller)?;
        if route.mode == Mode::Blocked {
            return Err(ProxyError::Blocked(route.blocked_message.clone()));
        }
        let oauth = route.mode == Mode::OAuth;
        // 4. Does the route's client hold a scope the request needs?
        scope_check::check(&shared, route, needed, req.method(), caller_name, oauth)?;
        // 5. Shed load before queueing or buffering anything, then wait for the budget.
        let _in_flight = admission::shed(&shared, server.max_concurrent_requests, route, declared)?;
        admission::wait_turn(route, caller_name, weight).await?;
        // 6. Forward, the body bounded in time and size; attach the token on oauth routes.
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
        } else if body.is_end_stream() {
            // Nothing to stream: the request can be sent again after the keep-alive race.
            let resp = ctx
                .buffered(&parts, upstream_pq, None, bytes::Bytes::new())
                .await?;
            Ok(ctx.finish(resp))
        } else {
            let request = ctx.prepare(&parts, upstream_pq, None, Either::Left(body))?;
            let resp = ctx.dispatch(request).await?;
            Ok(ctx.finish(resp))
        }
    }
    .await;

    // 7. Errors become the gateway's own small JSON answers ([`ProxyError::into_response`]).
    let (resp, error) = match result {
        Ok(resp) => match shadow.take() {
            Some(mut job) => {
                job.caller_status = resp.status().as_u16();
                (resp.map(|b| b.then_shadow(job)), None)
            }
            None => (resp, None),
        },
        Err(e) => {
            let code = e.code();
            (e.into_response(&request_id, caller_name), Some(code))
        }
    };

    // 8. Account: metrics, the migration ledger and (when on) the access line.
    let status = resp.status().as_u16();
    let unknown_key = match &caller {
        Caller::UnknownKey(digest) => Some(digest),
        _ => None,
    };
    let resp = match log {
        Some((method, uri, trace_id)) => {
            let upstream = ctx.upstream_micros.load(Ordering::Relaxed);
            let record = AccessRecord {
                request_id: request_id.clone(),
                trace_id,
                integration: caller_name.to_owned(),
                peer: client,
                key: unknown_key.map(discovered::fingerprint),
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
    route.metrics.responses.record(status, started.elapsed());
    let at = SystemTime::now();
    usage
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record(&Observation {
            status,
            mode: route.mode,
            legacy_key,
            needed,
            at,
        });
    if let Some(digest) = unknown_key {
        discover(
            &shared,
            &Sighting {
                digest,
                route: &route.prefix,
                status,
                peer: client,
                user_agent: unknown_agent.as_ref().map(HeaderValue::as_bytes),
                at,
            },
        );
    }
    Ok(resp.map(|b| b.holding(active)))
}

/// Notes a request whose key no integration knows (out of line: known callers never come here).
#[cold]
fn discover(shared: &Shared, sighting: &Sighting<'_>) {
    shared.tracker.discovered.record(sighting);
}

/// The answer to a request refused before routing (method, bad path or framing, no route).
#[cold]
fn unrouted(
    shared: &Shared,
    client: IpAddr,
    error: ProxyError,
    request_id: &HeaderValue,
    log: Option<(http::Method, Uri, Option<[u8; 32]>)>,
    started: Instant,
) -> Response<Body> {
    let status = error.status().as_u16();
    shared.metrics.unrouted.record(status, started.elapsed());
    let code = error.code();
    let resp = error.into_response(request_id, ANONYMOUS);
    match log {
        Some((method, uri, trace_id)) => resp.map(|b| {
            b.logged(AccessRecord {
                request_id: request_id.clone(),
                trace_id,
                integration: ANONYMOUS.to_owned(),
                peer: client,
                key: None,
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
