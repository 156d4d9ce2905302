//! The admin listener as a tower stack around [`admin::handle`]: the token check
//! (`admin.token`), a time bound, security headers and a request-body limit, each a tower-http
//! layer. The admin path is not hot, so this is where tower belongs; the proxy path stays
//! hand-shaped for its measured cost (docs/architecture.md).
//!
//! Layer order (`ServiceBuilder`: the first layer listed sees the request first and the
//! response last):
//! 1. security headers, outermost, so every answer has them, the layers' own 401/408/413
//!    included;
//! 2. the body limit: the admin endpoints are read-only and take no body;
//! 3. the time bound, so a stuck status render cannot hold a scraper's connection forever;
//! 4. the token check, innermost: only requests that passed it reach the handler.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::{BoxError, Service, ServiceBuilder};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::validate_request::{ValidateRequest, ValidateRequestHeaderLayer};

use crate::ops::admin;
use crate::runtime::Shared;

/// Paths open without the token: orchestrators' probes carry no credentials, and they show
/// nothing but up/ready (and which clients wait for a token).
pub const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Largest request body accepted (the endpoints take none).
const BODY_LIMIT: usize = 1024;

/// A status render reads counters and a few locks; far below this unless something is stuck.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The admin service for one connection's requests: `Clone`, so each request gets its own
/// copy (`ServiceExt::oneshot`).
pub fn service<B>(
    shared: Arc<Shared>,
) -> impl Service<
    Request<B>,
    Response = Response<UnsyncBoxBody<Bytes, BoxError>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
where
    B: http_body::Body + Send + 'static,
{
    let check = RequireToken {
        shared: shared.clone(),
    };
    ServiceBuilder::new()
        // One body type whatever layer answered.
        .map_response(boxed)
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            TIMEOUT,
        ))
        .layer(ValidateRequestHeaderLayer::custom(check))
        .service_fn(move |req| admin::handle(shared.clone(), req))
}

fn boxed<B>(resp: Response<B>) -> Response<UnsyncBoxBody<Bytes, BoxError>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    resp.map(|b| b.map_err(Into::into).boxed_unsync())
}

/// Requires `Authorization: Bearer <admin.token>` outside [`OPEN_PATHS`] when a token is
/// configured. The token is read from the current snapshot, so a reload rotates it.
#[derive(Clone)]
struct RequireToken {
    shared: Arc<Shared>,
}

impl<B> ValidateRequest<B> for RequireToken {
    type ResponseBody = Full<Bytes>;

    fn validate(&mut self, req: &mut Request<B>) -> Result<(), Response<Full<Bytes>>> {
        let runtime = self.shared.runtime.load();
        let Some(token) = &runtime.config.admin.token else {
            return Ok(());
        };
        if OPEN_PATHS.contains(&req.uri().path()) {
            return Ok(());
        }
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| credentials(v.as_bytes()));
        match presented {
            Some(given) if matches(&given, &token.sha256) => Ok(()),
            Some(_) => Err(unauthorized("the admin token sent is not this gateway's")),
            None => Err(unauthorized(
                "this endpoint needs the admin token: send Authorization: Bearer <admin.token>",
            )),
        }
    }
}

/// The token presented: a `Bearer` token, or the password of `Basic` credentials (any user
/// name), which is what a browser opening the status page can send. Schemes in any case
/// (RFC 9110 §11.1).
fn credentials(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = (&value[..space], value[space..].trim_ascii());
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(Cow::Borrowed(rest));
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(Cow::Owned(decoded[colon + 1..].to_vec()));
    }
    None
}

/// Compares digests, so the time taken says nothing about the token, not even its length.
fn matches(given: &[u8], expected: &[u8; 32]) -> bool {
    let digest: [u8; 32] = Sha256::digest(given).into();
    digest.ct_eq(expected).into()
}

fn unauthorized(message: &str) -> Response<Full<Bytes>> {
    let mut resp = admin::json_response(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": "unauthorized", "message": message}),
    );
    let h = resp.headers_mut();
    // Basic too, so a browser asks for the token (as the password) on the status page.
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"coupa-gateway admin\""),
    );
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"coupa-gateway admin\", charset=\"UTF-8\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_credentials_are_read_in_any_case_of_the_scheme() {
        let read = |v: &[u8]| credentials(v).map(|c| c.into_owned());
        assert_eq!(read(b"Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(read(b"bearer  abc "), Some(b"abc".to_vec()));
        // "ops:abc" and ":a:b" (the password is everything after the first colon).
        assert_eq!(read(b"Basic b3BzOmFiYw=="), Some(b"abc".to_vec()));
        assert_eq!(read(b"BASIC OmE6Yg=="), Some(b"a:b".to_vec()));
        assert_eq!(read(b"Basic not-base64!"), None);
        assert_eq!(read(b"Basic YWJj"), None, "no colon");
        assert_eq!(read(b"Digest abc"), None);
        assert_eq!(read(b"Bearer"), None);
    }

    #[test]
    fn tokens_match_by_digest() {
        let expected: [u8; 32] = Sha256::digest(b"0123456789abcdef").into();
        assert!(matches(b"0123456789abcdef", &expected));
        assert!(!matches(b"0123456789abcdeF", &expected));
        assert!(!matches(b"", &expected));
    }
}
