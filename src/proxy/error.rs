//! The request path's one error type and the one place that turns it into a response.
//!
//! Statuses never blame the caller for the gateway's or Coupa's failure: 502 when Coupa could not
//! be reached or broke the exchange, 504 when it was too slow, 503 (+ `Retry-After`) when the
//! gateway holds no valid token. 401 is never produced for the gateway's own failures, because
//! integrations treat 401 as "my credentials are wrong" and page a human.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::{Body, REQUEST_ID};

/// The methods forwarded to Coupa, as the `Allow` header of a 405 lists them;
/// `super::forwarded_method` is the check (a test keeps the two in step).
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Everything that can stop a request on its way to or from Coupa.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The route admits only known integrations, and the caller was not recognised.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A known integration asked for a route it may not use.
    #[error("integration \"{integration}\" may not use route \"{route}\"; add \"{route}\" to its routes in proxy.toml if it should")]
    RouteForbidden {
        /// The integration.
        integration: String,
        /// The route's prefix.
        route: String,
    },
    /// The integration's key was sent from an address outside its `allow_ips`.
    #[error("integration \"{integration}\" is not allowed to connect from this address; check its allow_ips in proxy.toml")]
    AddressForbidden {
        /// The integration.
        integration: String,
    },
    /// The route is retired (`mode = "blocked"`).
    #[error("{0}")]
    Blocked(String),
    /// `scope_check = "enforce"` and the route's client lacks the scope the request needs.
    #[error("client \"{client}\" lacks the scope {scope} needed for this request; tick it on the client in Coupa (Setup > OAuth2/OpenID Connect Clients) and add it to clients.{client}.scopes in proxy.toml")]
    ScopeMissing {
        /// The client.
        client: String,
        /// The scope (or alternatives) needed.
        scope: String,
    },
    /// A method Coupa's REST API does not use (CONNECT, TRACE, WebDAV and other extensions).
    #[error("the gateway forwards only the methods Coupa's API uses: {ALLOWED_METHODS}")]
    MethodNotAllowed,
    /// No route prefix matches the path.
    #[error("no route matches this path; the gateway serves only its configured prefixes")]
    NoRoute,
    /// More than one legacy key header (`X-COUPA-API-KEY`, also spelled with `_`).
    #[error("send exactly one X-COUPA-API-KEY header; this request carries several (X_COUPA_API_KEY and other spellings with '_' count too: Coupa reads them as the same header)")]
    DuplicateApiKey,
    /// The request could escape its route or be read differently by Coupa (path, framing).
    #[error("rejected request: {0}")]
    BadRequest(&'static str),
    /// The request body stopped arriving for `server.body_timeout`.
    #[error(
        "the request body stopped arriving (server.body_timeout); send the whole body promptly"
    )]
    BodyTimeout,
    /// The declared body is larger than the route allows.
    #[error("the request body is larger than this route accepts ({0} bytes)")]
    BodyTooLarge(u64),
    /// Too many requests in flight (globally or on the route).
    #[error("the gateway is at its concurrent-request limit; retry shortly")]
    Overloaded,
    /// The instance's rate budget is used up beyond the queue wait.
    #[error("the gateway is spacing requests to instance \"{instance}\" to stay within Coupa's rate limit and its queue is full; retry after {retry_after} s")]
    RateLimited {
        /// The instance.
        instance: String,
        /// Seconds until a request would be accepted.
        retry_after: u64,
    },
    /// The route's client holds no valid token (startup, or the token endpoint is failing).
    #[error("the gateway holds no valid OAuth token for client \"{client}\" yet; it is retrying (see the admin /status page)")]
    NoToken {
        /// The client's name.
        client: String,
        /// Seconds until the next token attempt.
        retry_after: u64,
    },
    /// Coupa could not be reached (DNS, refused connection, TLS).
    #[error("could not connect to the Coupa instance")]
    UpstreamConnect(#[source] hyper_util::client::legacy::Error),
    /// Coupa took longer than the route's timeout to answer (or to accept the connection).
    #[error("the Coupa instance did not answer in time")]
    UpstreamTimeout,
    /// The exchange with Coupa failed after connecting (reset, malformed response).
    #[error("the Coupa instance closed or broke the connection")]
    Upstream(#[source] hyper_util::client::legacy::Error),
    /// The gateway could not build the upstream request (should not happen with a validated
    /// config; reported as ours, not the caller's).
    #[error("internal error building the upstream request")]
    Internal(#[source] http::Error),
}

impl ProxyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ProxyError::RouteForbidden { .. }
            | ProxyError::AddressForbidden { .. }
            | ProxyError::Blocked(_)
            | ProxyError::ScopeMissing { .. } => StatusCode::FORBIDDEN,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) | ProxyError::DuplicateApiKey => StatusCode::BAD_REQUEST,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::NoToken { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamConnect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for the JSON body and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::Unauthenticated(_) => "unauthenticated",
            ProxyError::RouteForbidden { .. } => "route_forbidden",
            ProxyError::AddressForbidden { .. } => "address_forbidden",
            ProxyError::Blocked(_) => "route_blocked",
            ProxyError::ScopeMissing { .. } => "scope_missing",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::NoRoute => "no_route",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::BodyTimeout => "body_timeout",
            ProxyError::DuplicateApiKey => "duplicate_api_key",
            ProxyError::BodyTooLarge(_) => "body_too_large",
            ProxyError::Overloaded => "overloaded",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::NoToken { .. } => "token_unavailable",
            ProxyError::UpstreamConnect(_) => "upstream_unreachable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::Upstream(_) => "upstream_failed",
            ProxyError::Internal(_) => "internal_error",
        }
    }

    /// Renders `{"error": code, "message": ..., "request_id": ...}` with the right status and,
    /// for 503, a `Retry-After`.
    pub fn into_response(self, request_id: &HeaderValue, caller: &str) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            // Error path only: a failing upstream is worth a log line per request.
            tracing::warn!(
                status = status.as_u16(),
                error = self.code(),
                integration = caller,
                cause = %crate::errors::error_chain(&self),
                request_id = request_id.to_str().unwrap_or("-"),
                "request failed"
            );
        }
        let body = serde_json::json!({
            "error": self.code(),
            "message": self.to_string(),
            "request_id": request_id.to_str().unwrap_or(""),
        });
        let mut resp = Response::new(Body::full(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(REQUEST_ID.clone(), request_id.clone());
        match self {
            ProxyError::NoToken { retry_after, .. }
            | ProxyError::RateLimited { retry_after, .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            ProxyError::Overloaded => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // An unread or unparseable body would poison the next request on this
            // connection: close it (rpxy and linkerd do the same).
            ProxyError::BadRequest(_)
            | ProxyError::DuplicateApiKey
            | ProxyError::BodyTooLarge(_)
            | ProxyError::BodyTimeout => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // RFC 9110 §15.5.6: a 405 lists the methods the target supports. Closed too: a
            // CONNECT client may already be sending tunnel bytes, which must not be read as
            // the next request.
            ProxyError::MethodNotAllowed => {
                h.insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // RFC 9110 §11.6.1: a 401 names how to authenticate. The scheme is not a standard
            // one; it tells a human which header the gateway expected.
            ProxyError::Unauthenticated(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("X-COUPA-API-KEY realm=\"coupa-gateway\""),
                );
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: ProxyError) -> (u16, http::HeaderMap, serde_json::Value) {
        let resp = e.into_response(&HeaderValue::from_static("req-1"), "erp");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = futures_body(resp.into_body());
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    fn futures_body(body: Body) -> Bytes {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(body.collect()).unwrap().to_bytes()
    }

    #[test]
    fn every_error_maps_to_one_status_code_and_small_json_body() {
        let cases = [
            (ProxyError::Unauthenticated("who"), 401, "unauthenticated"),
            (ProxyError::MethodNotAllowed, 405, "method_not_allowed"),
            (ProxyError::NoRoute, 404, "no_route"),
            (ProxyError::BadRequest("why"), 400, "bad_request"),
            (ProxyError::DuplicateApiKey, 400, "duplicate_api_key"),
            (ProxyError::BodyTimeout, 408, "body_timeout"),
            (ProxyError::BodyTooLarge(10), 413, "body_too_large"),
            (ProxyError::Overloaded, 503, "overloaded"),
            (
                ProxyError::RateLimited {
                    instance: "prod".into(),
                    retry_after: 3,
                },
                429,
                "rate_limited",
            ),
            (
                ProxyError::NoToken {
                    client: "c".into(),
                    retry_after: 7,
                },
                503,
                "token_unavailable",
            ),
            (ProxyError::UpstreamTimeout, 504, "upstream_timeout"),
        ];
        for (error, status, code) in cases {
            let (got, headers, body) = answer(error);
            assert_eq!((got, body["error"].as_str()), (status, Some(code)));
            assert_eq!(body["request_id"], "req-1");
            assert!(!body["message"].as_str().unwrap().is_empty());
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            assert_eq!(headers[&REQUEST_ID], "req-1");
        }
    }

    #[test]
    fn the_answer_tells_the_caller_what_to_do_next() {
        let (_, h, _) = answer(ProxyError::NoToken {
            client: "c".into(),
            retry_after: 7,
        });
        assert_eq!(h[header::RETRY_AFTER], "7");
        let (_, h, _) = answer(ProxyError::Overloaded);
        assert_eq!(h[header::RETRY_AFTER], "1");
        let (_, h, _) = answer(ProxyError::MethodNotAllowed);
        assert_eq!(h[header::ALLOW], ALLOWED_METHODS);
        assert_eq!(h[header::CONNECTION], "close");
        for unread_body in [ProxyError::BodyTimeout, ProxyError::BadRequest("x")] {
            let (_, h, _) = answer(unread_body);
            assert_eq!(h[header::CONNECTION], "close");
        }
        let (_, h, _) = answer(ProxyError::Unauthenticated("who"));
        assert!(h[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("X-COUPA-API-KEY"));
        // The gateway's own failures never answer 401: integrations page a human on it.
        let (status, _, _) = answer(ProxyError::UpstreamTimeout);
        assert_eq!(status, 504);
    }
}
