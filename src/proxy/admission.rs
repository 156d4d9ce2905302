//! Admission: what is refused before routing (methods Coupa does not use, paths and framing
//! two parsers could read differently, more than one legacy key), who may use a route, and
//! load shedding (in-flight caps, declared body size, the instance's rate budget).

use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Version};

use super::{headers, path, ProxyError};
use crate::migration::identity::Caller;
use crate::net::conn::ConnState;
use crate::runtime::{RouteTarget, Shared};

/// Why a request is refused before routing, if it is: a method Coupa does not use, then a path
/// or framing that two parsers could read differently, then more than one legacy key (the
/// caller must be identified by the key Coupa would see).
pub(super) fn refusal<B>(
    req: &Request<B>,
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
fn framing_problem<B>(req: &Request<B>, conn: &ConnState) -> Option<&'static str> {
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

/// The methods Coupa's REST API uses ([`super::error::ALLOWED_METHODS`]). Anything else is refused
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

/// Counts a request in flight; `enter` refuses past `max` and the guard leaves on drop.
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    pub(super) fn enter(counter: &'a AtomicUsize, max: usize) -> Option<Self> {
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
pub(super) fn admit(route: &RouteTarget, caller: &Caller<'_>) -> Result<(), ProxyError> {
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
        Caller::UnknownKey(_) => Err(ProxyError::Unauthenticated(
            "the X-COUPA-API-KEY sent is not one this gateway knows; this route admits only the integrations configured for it",
        )),
        Caller::Anonymous => Err(ProxyError::Unauthenticated(
            "send the integration's API key in X-COUPA-API-KEY; this route admits only the integrations configured for it",
        )),
    }
}

/// Sheds what the gateway cannot take now, before anything is queued or buffered (both cost
/// memory): past the global or the route's in-flight cap, or a declared body over the route's
/// limit. The guards count the request in until dropped.
pub(super) fn shed<'a>(
    shared: &'a Shared,
    max_concurrent: usize,
    route: &'a RouteTarget,
    declared: Option<u64>,
) -> Result<(InFlight<'a>, Option<InFlight<'a>>), ProxyError> {
    let global = InFlight::enter(&shared.inflight, max_concurrent).ok_or(ProxyError::Overloaded)?;
    let on_route = match route.max_concurrent {
        Some(max) => Some(InFlight::enter(&route.inflight, max).ok_or(ProxyError::Overloaded)?),
        None => None,
    };
    if let (Some(max), Some(len)) = (route.max_body_bytes, declared) {
        if len > max {
            return Err(ProxyError::BodyTooLarge(max));
        }
    }
    Ok((global, on_route))
}

/// Waits for the instance's rate budget in the caller's fair-queue class (up to the
/// instance's `max_queue_wait`), or refuses with 429.
pub(super) async fn wait_turn(
    route: &RouteTarget,
    class: &str,
    weight: u32,
) -> Result<(), ProxyError> {
    let Some(budget) = &route.budget else {
        return Ok(());
    };
    budget
        .wait_turn(class, weight)
        .await
        .map_err(|retry| ProxyError::RateLimited {
            instance: route.instance.name.clone(),
            retry_after: retry.as_secs().max(1),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::identity::identify;
    use crate::proxy::testing::shared;
    use http::HeaderValue;

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn refused(req: &Request<()>) -> Option<&'static str> {
        refusal(
            req,
            headers::legacy_key(req.headers()),
            &ConnState::default(),
        )
        .map(|e| e.code())
    }

    #[test]
    fn refusals_come_before_routing() {
        assert_eq!(refused(&request("GET", "/prod/api/invoices", &[])), None);
        for method in ["TRACE", "CONNECT", "PROPFIND"] {
            let req = request(method, "/prod/api/invoices", &[]);
            assert_eq!(refused(&req), Some("method_not_allowed"), "{method}");
        }
        let req = request("GET", "/prod/../test/api/x", &[]);
        assert_eq!(refused(&req), Some("bad_request"));
        let req = request("GET", "http://evil.example/prod/api/x", &[("host", "gw")]);
        assert_eq!(refused(&req), Some("bad_request"));
        let two = [("x-coupa-api-key", "a"), ("x_coupa_api_key", "b")];
        assert_eq!(
            refused(&request("GET", "/prod/api/x", &two)),
            Some("duplicate_api_key")
        );
        // The method is judged first: nothing about a TRACE is looked at further.
        let req = request("TRACE", "/prod/../x", &two);
        assert_eq!(refused(&req), Some("method_not_allowed"));
    }

    #[test]
    fn the_allow_header_lists_exactly_the_forwarded_methods() {
        let listed: Vec<http::Method> = super::super::error::ALLOWED_METHODS
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

    #[tokio::test]
    async fn admission_follows_the_integrations_routes_and_addresses() {
        // `erp`'s key is "erp-key"; `/open` admits anyone, `/erp` only `erp` from 10.0.0.0/8.
        let shared = shared(
            r#"
[[routes]]
prefix = "/open"
instance = "prod"
client = "prod-main"
[[routes]]
prefix = "/erp"
instance = "prod"
client = "prod-main"
[[integrations]]
name = "erp"
key_sha256 = "0cd50862624d9547ee9e517c7569fd7fe4c7212fab77b5db3dc306b9c3a4c55c"
allow_ips = ["10.0.0.0/8"]
routes = ["/erp"]
"#,
        );
        let runtime = shared.runtime.load();
        let route = |path: &str| runtime.routes.find(path).unwrap().route;
        let key = HeaderValue::from_static("erp-key");
        let inside = "10.1.2.3".parse().unwrap();
        let outside = "192.0.2.1".parse().unwrap();
        let code = |path: &str, key: Option<&HeaderValue>, peer| {
            admit(route(path), &identify(&runtime.integrations, key, peer))
                .err()
                .map(|e| e.code())
        };
        assert_eq!(code("/erp/api/x", Some(&key), inside), None);
        assert_eq!(
            code("/erp/api/x", Some(&key), outside),
            Some("address_forbidden")
        );
        assert_eq!(code("/erp/api/x", None, inside), Some("unauthenticated"));
        let other = HeaderValue::from_static("not-a-known-key");
        assert_eq!(
            code("/erp/api/x", Some(&other), inside),
            Some("unauthenticated")
        );
        assert_eq!(
            code("/open/api/x", Some(&key), inside),
            Some("route_forbidden")
        );
        assert_eq!(code("/open/api/x", None, outside), None);
    }

    #[tokio::test]
    async fn load_is_shed_at_the_caps_and_released_with_the_guards() {
        let shared = shared(
            "[[routes]]\nprefix = \"/prod\"\ninstance = \"prod\"\nclient = \"prod-main\"\nmax_concurrent_requests = 1\nmax_body_bytes = 10\n",
        );
        let runtime = shared.runtime.load();
        let route = runtime.routes.find("/prod/api/x").unwrap().route;
        let held = shed(&shared, 100, route, Some(10)).expect("room");
        let full = shed(&shared, 100, route, None).err().map(|e| e.code());
        assert_eq!(full, Some("overloaded"));
        drop(held);
        assert_eq!(shared.inflight.load(Ordering::SeqCst), 0);
        let big = shed(&shared, 100, route, Some(11)).err().map(|e| e.code());
        assert_eq!(big, Some("body_too_large"));
        assert_eq!(
            route.inflight.load(Ordering::SeqCst),
            0,
            "a refusal holds nothing"
        );
        let global = shed(&shared, 0, route, None).err().map(|e| e.code());
        assert_eq!(global, Some("overloaded"));
    }
}
