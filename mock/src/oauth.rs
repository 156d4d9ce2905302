//! `POST /oauth2/token`: the client-credentials grant (RFC 6749 §4.4) as Coupa offers it
//! (docs/coupa-api.md §3, §4, §7), and the store of issued tokens.
//!
//! Parameters are read from the form body and, as some Coupa clients do, from the query string;
//! a parameter given twice is `invalid_request` (RFC 6749 §3.2). Client authentication is either
//! the body (`client_id` + `client_secret`, Coupa's documented form) or HTTP Basic (§2.3.1), but
//! not both (§2.3: "MUST NOT use more than one authentication method").

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use rand::Rng;
use serde_json::{json, Value};

use super::{bump, codec, faults::lock, json_response, MockBody, Shared};

/// Largest token request body read (a form with a few hundred scopes fits easily).
const MAX_FORM_BODY: usize = 64 * 1024;

/// Length of minted tokens: 48 characters of a 64-letter URL-safe alphabet = 288 random bits.
const TOKEN_LEN: usize = 48;

/// Store sweeps expired tokens once it holds this many, so benches minting in a loop stay flat.
const SWEEP_THRESHOLD: usize = 10_000;

struct Issued {
    scopes: Vec<String>,
    issued_at: Instant,
    expires_at: Instant,
    /// [`super::Faults::revoke_all_tokens`] generation the token was minted in.
    generation: u64,
}

/// Tokens this instance issued, with their scopes, expiry and revocation generation.
#[derive(Default)]
pub(super) struct TokenStore {
    tokens: Mutex<HashMap<String, Issued>>,
}

impl TokenStore {
    fn issue(&self, scopes: Vec<String>, ttl: Duration, generation: u64) -> String {
        let now = Instant::now();
        // `expires_in` can be anything a test sets; a lifetime past `Instant`'s range is
        // simply "a very long time".
        let expires_at = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        let token = random_token();
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= SWEEP_THRESHOLD {
            tokens.retain(|_, t| t.expires_at > now);
        }
        tokens.insert(
            token.clone(),
            Issued {
                scopes,
                issued_at: now,
                expires_at,
                generation,
            },
        );
        token
    }

    /// The scopes of a live token: known, unexpired, not revoked, and at least `activation`
    /// old.
    pub(super) fn scopes_of(
        &self,
        token: &str,
        generation: u64,
        activation: Duration,
    ) -> Option<Vec<String>> {
        let tokens = lock(&self.tokens);
        let t = tokens.get(token)?;
        let now = Instant::now();
        (t.generation == generation && now < t.expires_at && now >= t.issued_at + activation)
            .then(|| t.scopes.clone())
    }
}

fn random_token() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..TOKEN_LEN)
        .map(|_| char::from(ALPHABET[usize::from(rng.random::<u8>() & 63)]))
        .collect()
}

/// An RFC 6749 §5.2 error answer.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<MockBody> {
    let mut resp = json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    );
    no_store(&mut resp);
    resp
}

/// RFC 6749 §5.1: token responses must not be cached.
fn no_store(resp: &mut Response<MockBody>) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn invalid_client(description: &str, via_basic: bool) -> Response<MockBody> {
    let mut resp = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    if via_basic {
        // RFC 6749 §5.2: a client that tried Basic gets a challenge for the scheme it used.
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"coupa\""),
        );
    }
    resp
}

/// Handles `POST /oauth2/token`.
pub(super) async fn token_endpoint(shared: &Shared, req: Request<Incoming>) -> Response<MockBody> {
    bump(&shared.counters.token_requests);
    let delay = shared.faults.token_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some((status, error)) = shared.faults.token_failure() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return oauth_error(status, &error, "injected by the mock's fault knobs");
    }
    if req.method() != Method::POST {
        let mut resp = oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "the token endpoint only accepts POST",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_FORM_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("could not read the request body: {e}"),
            )
        }
    };
    let mut params: HashMap<String, String> = HashMap::new();
    let query = codec::parse_pairs(parts.uri.query().unwrap_or(""));
    let form = codec::parse_pairs(&String::from_utf8_lossy(&body));
    for (k, v) in query.into_iter().chain(form) {
        if params.contains_key(&k) {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("parameter {k} is given more than once"),
            );
        }
        params.insert(k, v);
    }

    match params.get("grant_type").map(String::as_str) {
        None | Some("") => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing grant_type",
            )
        }
        Some("client_credentials") => {}
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type {other} is not supported; use client_credentials"),
            )
        }
    }

    let basic = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, creds)| creds.trim().to_owned());
    let in_body = params.contains_key("client_id") || params.contains_key("client_secret");
    let (client_id, secret, via_basic) = match basic {
        Some(_) if in_body => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client credentials given both in the Authorization header and in the body",
            )
        }
        Some(creds) => match decode_basic(&creds) {
            Some((id, secret)) => (id, secret, true),
            None => return invalid_client("malformed HTTP Basic credentials", true),
        },
        None => (
            params.get("client_id").cloned().unwrap_or_default(),
            params.get("client_secret").cloned().unwrap_or_default(),
            false,
        ),
    };
    let Some(client) = shared
        .clients
        .iter()
        .find(|c| c.id == client_id && c.secret == secret)
    else {
        // Same answer for an unknown client and a wrong secret, as real servers give.
        return invalid_client("client authentication failed", via_basic);
    };

    let scopes: Vec<String> = match params.get("scope").map(|s| s.split_ascii_whitespace()) {
        Some(requested) => {
            let mut scopes: Vec<String> = Vec::new();
            for s in requested {
                if !client.scopes.iter().any(|g| g == s) {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        &format!("the scope {s} is not granted to client {}", client.id),
                    );
                }
                if !scopes.iter().any(|have| have == s) {
                    scopes.push(s.to_owned());
                }
            }
            scopes
        }
        None => Vec::new(),
    };
    // RFC 6749 §3.3: no (or an empty) scope means the server's default, here all granted scopes.
    let scopes = if scopes.is_empty() {
        client.scopes.clone()
    } else {
        scopes
    };

    let expires_in = shared.faults.expires_in();
    let scope_text = scopes.join(" ");
    let token = shared.tokens.issue(
        scopes,
        Duration::from_secs(expires_in),
        shared.faults.token_generation(),
    );
    bump(&shared.counters.tokens_issued);
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body: Value = json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": expires_in,
        "scope": scope_text,
        // Undocumented by Coupa but typical of Rails OAuth servers; clients must ignore it.
        "created_at": created_at,
    });
    let mut resp = json_response(StatusCode::OK, &body);
    no_store(&mut resp);
    resp
}

/// Decodes `base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn decode_basic(creds: &str) -> Option<(String, String)> {
    let raw = codec::base64_decode(creds)?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((
        codec::percent_decode(id, true),
        codec::percent_decode(secret, true),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_url_safe_and_unique() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), TOKEN_LEN);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn store_checks_expiry_and_generation() {
        let store = TokenStore::default();
        let live = store.issue(vec!["a".into()], Duration::from_secs(60), 0);
        let dead = store.issue(vec!["a".into()], Duration::ZERO, 0);
        let huge = store.issue(vec![], Duration::from_secs(u64::MAX), 0);
        assert_eq!(
            store.scopes_of(&live, 0, Duration::ZERO),
            Some(vec!["a".to_owned()])
        );
        assert_eq!(store.scopes_of(&dead, 0, Duration::ZERO), None);
        assert_eq!(store.scopes_of(&live, 1, Duration::ZERO), None);
        assert_eq!(store.scopes_of(&huge, 0, Duration::ZERO), Some(vec![]));
        assert_eq!(store.scopes_of("nope", 0, Duration::ZERO), None);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let enc = codec::base64_encode(b"my+client:p%40ss%3Aword");
        assert_eq!(
            decode_basic(&enc),
            Some(("my client".to_owned(), "p@ss:word".to_owned()))
        );
        assert_eq!(decode_basic("!!!"), None);
        assert_eq!(decode_basic(&codec::base64_encode(b"nocolon")), None);
    }
}
