//! OAuth readiness: a sampled GET or HEAD of a passthrough route, once its caller has the whole
//! answer, sent again with the route's client's token instead of the legacy key, and the two
//! statuses compared (`200 -> 403` names a scope the client lacks before the flip does).
//!
//! Never at the caller's expense: the job starts when the caller's response body has been
//! sent; it takes only a turn of the instance's budget that nobody else wants (otherwise it is
//! dropped, counted); at most [`MAX_IN_FLIGHT`] run per route; a failure is counted, never
//! retried. Coupa's logs tell shadow traffic apart by its `X-Request-Id` suffix and
//! `User-Agent`. A 401 marks the token rejected (the usual recovery mints a new one) but
//! nothing is replayed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full};

use crate::migration::{secs, RouteUsage};
use crate::net::upstream::UpstreamClient;
use crate::ops::access_log::redact_query;
use crate::runtime::RouteTarget;
use crate::state::budget::Budget;
use crate::state::ledger::ShadowDifference;
use crate::token::TokenCell;

/// Shadow requests in flight per route.
pub const MAX_IN_FLIGHT: usize = 4;
/// Coupa's 401/403 text kept per difference.
const MAX_ERROR_TEXT: usize = 300;
/// Coupa's error body read for that text; the rest of any body is read and dropped.
const MAX_ERROR_BODY: usize = 16 * 1024;
const USER_AGENT: &str = concat!(
    "coupa-gateway-shadow/",
    env!("CARGO_PKG_VERSION"),
    " (OAuth readiness check; replays a passthrough GET with the client's token)"
);

/// One shadow request, ready to go once the caller's response is sent.
pub struct ShadowJob {
    clients: Arc<[UpstreamClient]>,
    worker: usize,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
    proxy_authorization: Option<HeaderValue>,
    timeout: Duration,
    token: Arc<TokenCell>,
    budget: Option<Arc<Budget>>,
    usage: Arc<Mutex<RouteUsage>>,
    in_flight: Arc<AtomicUsize>,
    method: Method,
    path_and_query: Bytes,
    accept: Option<HeaderValue>,
    request_id: HeaderValue,
    /// The caller's URI, for the difference's path.
    caller_uri: Uri,
    scope: Option<Arc<str>>,
    /// The caller's (passthrough) status, once known.
    pub caller_status: u16,
}

/// What the request path hands over to build a job.
pub struct Sampled<'a> {
    pub route: &'a RouteTarget,
    pub clients: &'a Arc<[UpstreamClient]>,
    pub worker: usize,
    pub usage: &'a Arc<Mutex<RouteUsage>>,
    pub method: &'a Method,
    pub path_and_query: &'a Bytes,
    pub accept: Option<&'a HeaderValue>,
    pub request_id: &'a HeaderValue,
    pub caller_uri: &'a Uri,
    pub scope: Option<&'a Arc<str>>,
}

impl ShadowJob {
    /// A job for this request, when the route samples it (`None` most of the time).
    pub fn sample(s: Sampled<'_>) -> Option<Box<ShadowJob>> {
        let route = s.route;
        if !(*s.method == Method::GET || *s.method == Method::HEAD) {
            return None;
        }
        if rand::random::<f64>() >= route.shadow_sample {
            return None;
        }
        let token = route.token.clone()?;
        let mut request_id = s.request_id.as_bytes().to_vec();
        request_id.extend_from_slice(b"-shadow");
        Some(Box::new(ShadowJob {
            clients: s.clients.clone(),
            worker: s.worker,
            scheme: route.scheme.clone(),
            authority: route.authority.clone(),
            host: route.host.clone(),
            proxy_authorization: route.proxy_authorization.clone(),
            timeout: route.timeout,
            token,
            budget: route.budget.clone(),
            usage: s.usage.clone(),
            in_flight: route.shadow_inflight.clone(),
            method: s.method.clone(),
            path_and_query: s.path_and_query.clone(),
            accept: s.accept.cloned(),
            request_id: HeaderValue::from_bytes(&request_id).ok()?,
            caller_uri: s.caller_uri.clone(),
            scope: s.scope.cloned(),
            caller_status: 0,
        }))
    }

    /// Sends it in the background (the caller's response has been sent).
    pub fn launch(self: Box<Self>) {
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(tokio::spawn(self.run()));
        }
    }

    fn usage(&self) -> std::sync::MutexGuard<'_, RouteUsage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(self: Box<Self>) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.usage().shadow.dropped += 1;
            return;
        }
        let in_flight = self.in_flight.clone();
        self.send().await;
        in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    async fn send(&self) {
        if let Some(budget) = &self.budget {
            if !budget.try_spare().await {
                self.usage().shadow.dropped += 1;
                return;
            }
        }
        let Ok(bearer) = self.token.bearer(Instant::now()) else {
            self.usage().shadow.failed += 1;
            return;
        };
        if bearer.rejected {
            self.usage().shadow.failed += 1;
            return;
        }
        let Some(request) = self.request(&bearer.header) else {
            self.usage().shadow.failed += 1;
            return;
        };
        let client = &self.clients[self.worker.min(self.clients.len() - 1)];
        let exchange = async {
            let resp = client.request(request).await.ok()?;
            let status = resp.status();
            let keep = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
            let mut body = resp.into_body();
            let mut kept = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.ok()?;
                if let (true, Some(data)) = (keep, frame.data_ref()) {
                    let room = MAX_ERROR_BODY.saturating_sub(kept.len());
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some((status, kept))
        };
        let Ok(Some((status, body))) = tokio::time::timeout(self.timeout, exchange).await else {
            self.usage().shadow.failed += 1;
            return;
        };
        if status == StatusCode::UNAUTHORIZED
            && Instant::now() >= bearer.minted + self.token.warmup()
        {
            // The usual recovery: a new token for the requests that follow; no replay here.
            self.token.reject(bearer.generation);
        }
        let token = bearer
            .header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned();
        let caller = self.caller_status;
        self.usage()
            .shadow
            .record(caller, status.as_u16(), || ShadowDifference {
                at: secs(SystemTime::now()),
                pair: format!("{caller} -> {}", status.as_u16()),
                path: redact_query(self.caller_uri.path(), self.caller_uri.query()),
                scope: self.scope.as_deref().map(str::to_owned),
                error: (!body.is_empty()).then(|| error_text(&body, &token)),
            });
    }

    fn request(&self, bearer: &HeaderValue) -> Option<Request<crate::net::upstream::UpstreamBody>> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query =
            Some(PathAndQuery::from_maybe_shared(self.path_and_query.clone()).ok()?);
        let mut request = Request::new(Either::Right(Full::new(Bytes::new())));
        *request.uri_mut() = Uri::from_parts(uri).ok()?;
        *request.method_mut() = self.method.clone();
        *request.version_mut() = Version::HTTP_11;
        let h = request.headers_mut();
        h.insert(header::HOST, self.host.clone());
        h.insert(header::AUTHORIZATION, bearer.clone());
        h.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        h.insert(&super::REQUEST_ID, self.request_id.clone());
        if let Some(accept) = &self.accept {
            h.insert(header::ACCEPT, accept.clone());
        }
        if let Some(p) = &self.proxy_authorization {
            h.insert(header::PROXY_AUTHORIZATION, p.clone());
        }
        Some(request)
    }
}

/// Coupa's error body as a short, printable text, the token removed before it is cut.
fn error_text(body: &[u8], token: &str) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if !token.is_empty() {
        text = text.replace(token, "[token]");
    }
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_TEXT)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn error_text_drops_the_token_before_cutting_and_controls() {
        let body = format!(
            "{{\"error\":\"insufficient_scope\",\"token\":\"abc123\"}}\n{}",
            "x".repeat(400)
        );
        let text = error_text(body.as_bytes(), "abc123");
        assert!(text.starts_with("{\"error\":\"insufficient_scope\",\"token\":\"[token]\"}"));
        assert!(!text.contains("abc123") && !text.contains('\n'));
        assert_eq!(text.chars().count(), 300);
    }
}
