//! Why a token request failed, classed from the error's structure (never its text), so that
//! metrics, `/status` hints and the refresher's back-off all agree on what went wrong.

use std::time::Duration;

/// Why a token request failed. Every variant is free of secrets.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The endpoint answered with an RFC 6749 §5.2 error body.
    #[error("token endpoint answered HTTP {status} {error}{}", describe_opt(.description))]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The `error` code, e.g. `invalid_client`.
        error: String,
        /// `error_description`, if sent.
        description: Option<String>,
    },
    /// A non-success status without an OAuth error body.
    #[error("token endpoint answered HTTP {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// A short excerpt of the body.
        body: String,
        /// `Retry-After` (seconds) on a 429 or 503.
        retry_after: Option<Duration>,
    },
    /// 2xx, but not a usable token response.
    #[error("token endpoint sent an unusable response: {0}")]
    BadResponse(String),
    /// No answer within the configured timeout.
    #[error("token endpoint did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection, DNS or TLS failure before an answer.
    #[error("could not reach the token endpoint: {}", chain(.0))]
    Transport(#[source] reqwest::Error),
}

fn describe_opt(d: &Option<String>) -> String {
    d.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
}

/// reqwest's top-level message alone ("error sending request") says nothing an operator can
/// act on; the causes do.
fn chain(e: &reqwest::Error) -> String {
    crate::errors::error_chain(e)
}

/// Coarse classes of token failure, for metrics labels, hints and back-off policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Wrong client id or secret (`invalid_client`, or a bare 401).
    InvalidClient,
    /// A requested scope is not granted to the client (`invalid_scope`).
    InvalidScope,
    /// The client may not use this grant (`unauthorized_client`, `unsupported_grant_type`).
    Unauthorized,
    /// Another OAuth error code.
    OAuth,
    /// An HTTP error without an OAuth body (proxies, 5xx).
    Http,
    /// 429 from the token endpoint.
    RateLimited,
    /// Unusable 2xx body.
    Response,
    /// Timed out.
    Timeout,
    /// TLS handshake or certificate failure.
    Tls,
    /// TCP connect (or DNS) failure.
    Connect,
}

impl FailureKind {
    /// Stable label for metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::InvalidClient => "invalid_client",
            FailureKind::InvalidScope => "invalid_scope",
            FailureKind::Unauthorized => "unauthorized_client",
            FailureKind::OAuth => "oauth_error",
            FailureKind::Http => "http_error",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Response => "bad_response",
            FailureKind::Timeout => "timeout",
            FailureKind::Tls => "tls",
            FailureKind::Connect => "connect",
        }
    }
}

impl TokenError {
    /// True for failures that retrying will not fix until someone changes a setting in Coupa
    /// or in `proxy.toml` (RFC 6749 `invalid_client`, `invalid_scope`, `unauthorized_client`):
    /// they back off for minutes, not seconds, so a wrong secret does not hammer Coupa.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.kind(),
            FailureKind::InvalidClient | FailureKind::InvalidScope | FailureKind::Unauthorized
        )
    }

    /// The endpoint's own `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The failure's class, found by walking the source chain (never by matching text).
    pub fn kind(&self) -> FailureKind {
        match self {
            TokenError::Rejected { status, error, .. } => match error.as_str() {
                "invalid_client" => FailureKind::InvalidClient,
                "invalid_scope" => FailureKind::InvalidScope,
                "unauthorized_client" | "unsupported_grant_type" => FailureKind::Unauthorized,
                _ if *status == 401 => FailureKind::InvalidClient,
                _ => FailureKind::OAuth,
            },
            TokenError::Status { status: 401, .. } => FailureKind::InvalidClient,
            TokenError::Status { status: 429, .. } => FailureKind::RateLimited,
            TokenError::Status { .. } => FailureKind::Http,
            TokenError::BadResponse(_) => FailureKind::Response,
            TokenError::Timeout(_) => FailureKind::Timeout,
            TokenError::Transport(e) => {
                if e.is_timeout() {
                    FailureKind::Timeout
                } else if crate::errors::is_caused_by::<rustls::Error>(e) {
                    FailureKind::Tls
                } else {
                    FailureKind::Connect
                }
            }
        }
    }

    /// What an operator should check, in one sentence.
    pub fn hint(&self) -> &'static str {
        match self.kind() {
            FailureKind::InvalidClient => {
                "check client_id and client_secret against Setup > OAuth2/OpenID Connect Clients in Coupa"
            }
            FailureKind::InvalidScope => {
                "a requested scope is not ticked on the Coupa client; compare `scopes` with the client's Oidc Scopes"
            }
            FailureKind::Unauthorized => {
                "the Coupa client must use grant type \"Client credentials\" and be active"
            }
            FailureKind::OAuth | FailureKind::Http | FailureKind::Response => {
                "check token_url and that the instance is up"
            }
            FailureKind::RateLimited => {
                "the token endpoint is rate limiting; the gateway backs off and retries"
            }
            FailureKind::Timeout => {
                "the token endpoint is slow or unreachable; check network, firewall or outbound proxy"
            }
            FailureKind::Tls => {
                "TLS failed; check the certificate of the token URL, and of the outbound proxy when upstream.proxy (or HTTPS_PROXY) is an https:// URL, and set upstream.ca_file to the CA that signed it (e.g. a corporate interception proxy's) if it is not a public one"
            }
            FailureKind::Connect => {
                "could not connect; check the host name (DNS), port, firewall and outbound proxy"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_follow_rfc6749_codes() {
        let rejected = |status, error: &str| TokenError::Rejected {
            status,
            error: error.into(),
            description: None,
        };
        assert_eq!(
            rejected(401, "invalid_client").kind(),
            FailureKind::InvalidClient
        );
        assert_eq!(
            rejected(400, "invalid_scope").kind(),
            FailureKind::InvalidScope
        );
        assert_eq!(
            rejected(400, "unauthorized_client").kind(),
            FailureKind::Unauthorized
        );
        assert_eq!(rejected(401, "whatever").kind(), FailureKind::InvalidClient);
        assert_eq!(rejected(400, "whatever").kind(), FailureKind::OAuth);
        assert_eq!(
            TokenError::Status {
                status: 503,
                body: String::new(),
                retry_after: None,
            }
            .kind(),
            FailureKind::Http
        );
    }

    #[test]
    fn tls_errors_are_found_inside_nested_io_errors() {
        // The shape hyper-rustls produces for an untrusted certificate.
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, cert));
        assert!(crate::errors::is_caused_by::<rustls::Error>(&wrapped));
        assert!(!crate::errors::is_caused_by::<std::fmt::Error>(&wrapped));
    }
}
