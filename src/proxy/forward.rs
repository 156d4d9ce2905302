//! Forwarding: Coupa's request built from the caller's (URI, head, body), the token attached
//! and a 401 recovered from, the exchange bounded by the route's timeout, and Coupa's response
//! readied for the caller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::HeaderValue;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Full, LengthLimitError};
use hyper::body::Incoming;

use super::{headers, Body, ConnInfo, ProxyError, REQUEST_ID};
use crate::errors;
use crate::net::bounds::BodyTimeout;
use crate::net::pooled::StaleConnection;
use crate::net::upstream;
use crate::runtime::RouteTarget;
use crate::token::TokenCell;

/// What sending one request upstream needs besides the request.
pub(super) struct Forward<'a> {
    pub(super) client: &'a upstream::UpstreamClient,
    pub(super) route: &'a RouteTarget,
    pub(super) conn: &'a ConnInfo,
    pub(super) request_id: &'a HeaderValue,
    /// Time to Coupa's last response head, for the access log (0: Coupa not called).
    pub(super) upstream_micros: AtomicU64,
}

/// A request body that may be sent twice (buffered) or only once (streamed).
enum Prepared {
    Replayable(Bytes),
    Streamed(upstream::CallerBody),
}

impl Forward<'_> {
    /// The oauth path: attach the token; after a 401 from Coupa, get a new token (one token
    /// request for any number of concurrent 401s) and replay once when the body allows it.
    pub(super) async fn oauth(
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
                let resp = self
                    .buffered(
                        &parts,
                        path_and_query.clone(),
                        Some(&bearer.header),
                        bytes.clone(),
                    )
                    .await?;
                if resp.status() != StatusCode::UNAUTHORIZED {
                    return Ok(self.finish(resp));
                }
                let Some(next) = cell.recover(&bearer).await else {
                    cell.unauthorized_passed.fetch_add(1, Ordering::Relaxed);
                    return Ok(self.finish(resp));
                };
                cell.unauthorized_replayed.fetch_add(1, Ordering::Relaxed);
                drop(resp);
                // One replay, whatever it answers: never loop.
                let resp = self
                    .buffered(&parts, path_and_query, Some(&next.header), bytes)
                    .await?;
                Ok(self.finish(resp))
            }
        }
    }

    /// The request for Coupa: the caller's method and body, the route's upstream URI, and the
    /// head [`headers::request_headers`] builds from the caller's.
    pub(super) fn prepare<B>(
        &self,
        caller: &http::request::Parts,
        path_and_query: Bytes,
        bearer: Option<&HeaderValue>,
        body: B,
    ) -> Result<Request<B>, ProxyError> {
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

    /// Sends a request whose body is in `body` (buffered, or empty), and sends it once more
    /// on a new connection when the pooled connection it went out on turns out to have been
    /// closed by Coupa's side before answering (the keep-alive race, [`upstream_race`]). A
    /// streamed body cannot be sent twice, so [`Self::dispatch`] never retries; a failure on a
    /// new connection is not the race and is not retried either.
    pub(super) async fn buffered(
        &self,
        caller: &http::request::Parts,
        path_and_query: Bytes,
        bearer: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<Response<Incoming>, ProxyError> {
        let request = self.prepare(
            caller,
            path_and_query.clone(),
            bearer,
            Either::Right(Full::new(body.clone())),
        )?;
        match self.send(request, false).await {
            Err(ProxyError::Upstream(e)) if upstream_race(&e) => {
                self.route.metrics.upstream_retries.record();
                let again = self.prepare(
                    caller,
                    path_and_query,
                    bearer,
                    Either::Right(Full::new(body)),
                )?;
                self.send(again, true).await
            }
            other => other,
        }
    }

    /// Sends to Coupa on a pooled connection and waits for the response head, within the
    /// route's timeout. (PERF: not an `async fn` around `send`, whose state machine would nest
    /// the whole exchange's in one more layer.)
    pub(super) fn dispatch(
        &self,
        request: Request<upstream::UpstreamBody>,
    ) -> impl std::future::Future<Output = Result<Response<Incoming>, ProxyError>> + '_ {
        self.send(request, false)
    }

    /// Sends on a pooled connection, or on a new unpooled one (`fresh`).
    async fn send(
        &self,
        request: Request<upstream::UpstreamBody>,
        fresh: bool,
    ) -> Result<Response<Incoming>, ProxyError> {
        let route = self.route;
        let sent = Instant::now();
        let response = if fresh {
            self.client.request_fresh(request)
        } else {
            self.client.request(request)
        };
        let result = tokio::time::timeout(route.timeout, response).await;
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
    pub(super) fn finish(&self, mut resp: Response<Incoming>) -> Response<Body> {
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
        let Some(budget) = &self.route.budget else {
            return;
        };
        let now = Instant::now();
        // Coupa's Retry-After is disputed (docs/coupa-api.md §10): honour it when sent (seconds
        // form), otherwise pause the instance for a second, about what its bucket needs.
        let sent = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        budget.slow_down(now + Duration::from_secs(sent.unwrap_or(1)));
        if sent.is_none() {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(budget.retry_after(now)),
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
pub(super) fn upstream_path_and_query(
    route: &RouteTarget,
    rest: &str,
    query: Option<&str>,
) -> Bytes {
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

/// The request went out on a reused pooled connection that Coupa's side had closed: nothing
/// of it was answered, so it may be sent again.
fn upstream_race(e: &hyper_util::client::legacy::Error) -> bool {
    errors::is_caused_by::<StaleConnection>(e)
}

/// A connect that timed out is a timeout (504, like nginx), not an unreachable host (502).
fn timed_out(e: &hyper_util::client::legacy::Error) -> bool {
    errors::causes(e).any(|err| {
        err.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::shared;
    use http_body_util::Full;

    #[tokio::test]
    async fn coupas_request_is_built_from_the_callers() {
        let shared =
            shared("[[routes]]\nprefix = \"/prod\"\ninstance = \"prod\"\nclient = \"prod-main\"\n");
        let runtime = shared.runtime.load();
        let found = runtime.routes.find("/prod/api/invoices").unwrap();
        let conn = ConnInfo::new("10.1.2.3:4567".parse().unwrap(), 0);
        let request_id = HeaderValue::from_static("req-1");
        let ctx = Forward {
            client: &runtime.upstream[0],
            route: found.route,
            conn: &conn,
            request_id: &request_id,
            upstream_micros: AtomicU64::new(0),
        };
        let caller = Request::post("/prod/api/invoices?fields=[%22id%22]&updated-at[gt]=2024")
            .version(Version::HTTP_2)
            .header("x-coupa-api-key", "legacy")
            .header("host", "gateway.corp")
            .header("accept", "application/json")
            .body(())
            .unwrap();
        let (parts, ()) = caller.into_parts();
        let pq = upstream_path_and_query(found.route, found.rest, parts.uri.query());
        let bearer = HeaderValue::from_static("Bearer T");
        let body = Full::new(Bytes::from_static(b"{}"));
        let out = ctx.prepare(&parts, pq, Some(&bearer), body).unwrap();
        // The query byte for byte: Coupa's JSON and brackets are neither decoded nor re-encoded.
        assert_eq!(
            out.uri(),
            "http://127.0.0.1:9/api/invoices?fields=[%22id%22]&updated-at[gt]=2024"
        );
        assert_eq!(out.method(), http::Method::POST);
        assert_eq!(
            out.version(),
            Version::HTTP_11,
            "the caller's h2 must not leak"
        );
        let h = out.headers();
        assert_eq!(h["authorization"], "Bearer T");
        assert!(h.get("x-coupa-api-key").is_none());
        assert_eq!(h["host"], "127.0.0.1:9");
        assert_eq!(h["x-forwarded-host"], "gateway.corp");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h[&REQUEST_ID], "req-1");
        assert_eq!(h["accept"], "application/json");
        assert_eq!(out.body().size_hint().exact(), Some(2));
    }
}
