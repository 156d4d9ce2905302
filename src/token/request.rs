//! One client-credentials request to the token endpoint and the reading of its answer. Error
//! bodies are cut and redacted here, before their text can reach `/status` or a log.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{redact, TokenError};
use crate::config;
use crate::net::egress::ProxyRules;

/// Used when the token endpoint omits `expires_in` (RFC 6749 §5.1 only RECOMMENDS it). An hour
/// is short enough to be safe and long enough not to hammer the endpoint.
const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);
/// The longest token-endpoint error body kept for `/status` and logs.
const ERROR_BODY_EXCERPT: usize = 300;

/// What a token request needs; built from a `[clients.NAME]` and its instance.
#[derive(Clone)]
pub struct TokenRequest {
    /// Absolute URL of the token endpoint.
    pub token_url: String,
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`; never logged.
    pub client_secret: SecretString,
    /// Requested scopes, sent space-separated.
    pub scopes: Vec<String>,
    /// Whole-request timeout for the token call.
    pub timeout: Duration,
}

impl TokenRequest {
    /// The request for `client` against `instance`.
    pub fn new(client: &config::Client, instance: &config::Instance) -> Self {
        Self {
            token_url: instance.token_url.clone(),
            client_id: client.client_id.clone(),
            client_secret: client.client_secret.clone(),
            scopes: client.scopes.clone(),
            timeout: instance.token_timeout,
        }
    }

    /// True when both would send the same token request, so a token minted for one is valid
    /// for the other (used to keep token cells across reloads). The secret is part of the
    /// comparison: a rotated secret must mint a fresh token.
    pub fn same_as(&self, other: &TokenRequest) -> bool {
        self.token_url == other.token_url
            && self.client_id == other.client_id
            && self.client_secret.expose_secret() == other.client_secret.expose_secret()
            && self.scopes == other.scopes
    }
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// A freshly minted token, as the endpoint returned it.
pub struct Minted {
    /// The access token; never logged.
    pub access_token: SecretString,
    /// `expires_in`, or an hour (`DEFAULT_EXPIRES_IN`) when the endpoint omitted it.
    pub expires_in: Duration,
    /// True when `expires_in` was missing from the response.
    pub expires_in_assumed: bool,
    /// `scope` as echoed by the endpoint, if it did.
    pub scope: Option<String>,
    /// When the request was sent (lifetimes count from here, erring early).
    pub requested_at: Instant,
    /// Wall-clock twin of `requested_at`, for display.
    pub requested_at_wall: SystemTime,
}

/// Builds the HTTP client for token endpoints: rustls with `tls` (the same roots as the pool),
/// the same outbound proxy rules as the pool, no redirects (a redirected token request would
/// carry the secret to another host), no cookies. Fails only on a proxy URL reqwest refuses.
pub fn http_client(
    tls: Arc<rustls::ClientConfig>,
    proxy: &ProxyRules,
) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("coupa-gateway/", env!("CARGO_PKG_VERSION")));
    proxy.apply_to(builder)?.build().map_err(|e| {
        format!(
            "cannot build the token client: {}",
            crate::errors::error_chain(&e)
        )
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    error_description: Option<String>,
}

/// Performs one client-credentials request (RFC 6749 §4.4) with the credentials in the form
/// body, as Coupa documents (`client_secret_post`).
pub async fn fetch(http: &reqwest::Client, req: &TokenRequest) -> Result<Minted, TokenError> {
    let scope = req.scopes.join(" ");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", req.client_id.as_str()),
        ("client_secret", req.client_secret.expose_secret()),
        ("scope", scope.as_str()),
    ];
    let requested_at = Instant::now();
    let requested_at_wall = SystemTime::now();
    let send = async {
        let resp = http
            .post(&req.token_url)
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = if status.is_success() {
            resp.bytes().await?
        } else {
            start_of(resp, redact::MAX_INPUT).await?
        };
        Ok::<_, reqwest::Error>((status, retry_after, body))
    };
    let (status, retry_after, body) = match tokio::time::timeout(req.timeout, send).await {
        Err(_) => return Err(TokenError::Timeout(req.timeout)),
        Ok(Err(e)) if e.is_timeout() => return Err(TokenError::Timeout(req.timeout)),
        Ok(Err(e)) => return Err(TokenError::Transport(e.without_url())),
        Ok(Ok(x)) => x,
    };
    let secret = req.client_secret.expose_secret();
    if !status.is_success() {
        return Err(failure(status, retry_after, &body, secret));
    }
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| TokenError::BadResponse(format!("not a JSON token response ({e})")))?;
    let access_token = match parsed.access_token {
        Some(t) if !t.is_empty() => t,
        _ => return Err(TokenError::BadResponse("no access_token".into())),
    };
    if let Some(tt) = &parsed.token_type {
        if !tt.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::BadResponse(format!(
                "token_type {tt:?} is not \"bearer\""
            )));
        }
    }
    // Some servers send expires_in as a string; accept both (RFC 6749 says number).
    let expires_in = match &parsed.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    if parsed.expires_in.is_some() && expires_in.is_none() {
        return Err(TokenError::BadResponse("expires_in is not a number".into()));
    }
    if expires_in == Some(0) {
        return Err(TokenError::BadResponse("expires_in is 0".into()));
    }
    Ok(Minted {
        access_token: SecretString::from(access_token),
        expires_in: expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_EXPIRES_IN),
        expires_in_assumed: expires_in.is_none(),
        scope: parsed.scope,
        requested_at,
        requested_at_wall,
    })
}

/// The first `limit` bytes of `resp`'s body, and one more if there are more (so that the
/// excerpt can show it was cut). Only the start of an error body is ever shown; reading all of
/// it would let an endpoint, or a proxy's error page, make every retry buffer any amount.
async fn start_of(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() <= limit {
        match resp.chunk().await? {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => break,
        }
    }
    body.truncate(limit + 1);
    Ok(body.into())
}

/// The error for a non-success answer, free of `secret` (its text goes to `/status` and logs).
fn failure(
    status: http::StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    secret: &str,
) -> TokenError {
    // JSON escapes are decoded by now, but a field may still quote the form or a Basic header,
    // so the fields go through the same redaction as a raw body.
    if let Ok(err) = serde_json::from_slice::<ErrorResponse>(body) {
        return TokenError::Rejected {
            status: status.as_u16(),
            error: redact::redact(&err.error, secret),
            description: err.error_description.map(|d| redact::redact(&d, secret)),
        };
    }
    TokenError::Status {
        status: status.as_u16(),
        body: excerpt(body, secret),
        retry_after,
    }
}

/// The start of an error body for `/status` and logs, with `secret` redacted. Defence in
/// depth: an endpoint that echoes the request in its error must not leak the secret there.
/// Redaction runs on the whole of what is kept before the cut: cutting first could leave a
/// prefix of the secret at the cut, or split an encoded one so that it is no longer found.
/// The cut then falls in redacted text, where at worst it splits a `[redacted]`.
fn excerpt(body: &[u8], secret: &str) -> String {
    let kept = &body[..body.len().min(redact::MAX_INPUT)];
    let redacted = redact::redact(&String::from_utf8_lossy(kept), secret);
    let text = redacted.trim();
    match text.char_indices().nth(ERROR_BODY_EXCERPT) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None if text.is_empty() => "(empty body)".into(),
        None if kept.len() < body.len() && !text.ends_with('…') => format!("{text}…"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_echoed_by_the_endpoint_are_redacted() {
        assert_eq!(
            excerpt(b"bad secret s3cr3t given", "s3cr3t"),
            "bad secret [redacted] given"
        );
        assert_eq!(excerpt(b"  ", "s3cr3t"), "(empty body)");
        let long = "x".repeat(1000);
        assert_eq!(
            excerpt(long.as_bytes(), "s3cr3t").chars().count(),
            ERROR_BODY_EXCERPT + 1
        );
    }

    #[test]
    fn a_secret_across_the_excerpt_boundary_leaves_no_prefix() {
        let secret = "S3cr3t/Pr0d+Key=?>";
        // Cutting first, then redacting, kept "S3cr3t/Pr0" here; an encoded secret cut in
        // two was not recognised at all.
        for echo in [secret, "S3cr3t%2FPr0d%2BKey%3D%3F%3E"] {
            for at in [ERROR_BODY_EXCERPT - 10, ERROR_BODY_EXCERPT - 1] {
                let body = format!("{}{echo} and more", "x".repeat(at));
                let out = excerpt(body.as_bytes(), secret);
                assert!(!out.contains("S3cr"), "{at}: {out}");
                assert!(out.ends_with('…'), "{at}: {out}");
            }
        }
        // Past the redaction window nothing is searched, and nothing is shown.
        let body = format!("{}{secret}", "x".repeat(redact::MAX_INPUT));
        assert_eq!(
            excerpt(body.as_bytes(), secret),
            format!("{}…", "x".repeat(300))
        );
        let body = format!("{}{secret}", " ".repeat(redact::MAX_INPUT - 4));
        assert_eq!(excerpt(body.as_bytes(), secret), "[redacted]…");
    }

    #[tokio::test]
    async fn only_the_start_of_an_error_body_is_read() {
        let resp = |len: usize| reqwest::Response::from(http::Response::new(vec![b'x'; len]));
        let limit = 10;
        assert_eq!(start_of(resp(0), limit).await.unwrap().len(), 0);
        assert_eq!(start_of(resp(10), limit).await.unwrap().len(), 10);
        assert_eq!(start_of(resp(11), limit).await.unwrap().len(), 11);
        assert_eq!(start_of(resp(1000), limit).await.unwrap().len(), 11);
        let body = start_of(resp(redact::MAX_INPUT + 5), redact::MAX_INPUT)
            .await
            .unwrap();
        assert_eq!(excerpt(&body, "s3cr3t"), format!("{}…", "x".repeat(300)));
    }

    #[test]
    fn rejected_fields_are_redacted_like_the_body() {
        let secret = "S3cr3t/Pr0d+Key=?>";
        let body = br#"{"error":"invalid_client S3cr3t\/Pr0d+Key=?>",
            "error_description":"bad client_secret=S3cr3t%2fPr0d%2bKey%3d%3f%3e"}"#;
        let e = failure(http::StatusCode::UNAUTHORIZED, None, body, secret);
        assert!(matches!(e, TokenError::Rejected { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "token endpoint answered HTTP 401 invalid_client [redacted]: bad client_secret=[redacted]"
        );
        let e = failure(
            http::StatusCode::BAD_GATEWAY,
            None,
            b"<p>S3cr3t&#x2F;Pr0d",
            secret,
        );
        assert_eq!(
            e.to_string(),
            "token endpoint answered HTTP 502: <p>[redacted]"
        );
    }
}
