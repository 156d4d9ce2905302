//! What a mock instance is started with: its name, clients, legacy keys, TLS, rate limit and
//! token lifetime.

use std::{fmt, net::SocketAddr, sync::Arc};

/// Configuration of one mock instance. Start from [`MockConfig::new`] and chain the helpers.
#[derive(Clone)]
pub struct MockConfig {
    /// Instance name (`"prod"`, `"test"`), sent back as `x-mock-instance` and used in logs.
    pub name: String,
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// OAuth clients this instance knows.
    pub clients: Vec<MockClient>,
    /// Legacy `X-COUPA-API-KEY` values accepted; each holds every scope.
    pub api_keys: Vec<String>,
    /// `expires_in` of new tokens, seconds (Coupa: 86399). Changeable live with
    /// [`crate::faults::Faults::set_expires_in`].
    pub expires_in: u64,
    /// Per-instance rate limit; `None` = unlimited. Default: Coupa's 25/s, burst 20.
    pub rate_limit: Option<MockRateLimit>,
    /// Rows seeded per resource (default 120, so paging at 50 shows).
    pub seed_rows: usize,
    /// Serve HTTPS with this certificate instead of plain HTTP (default: plain HTTP).
    pub tls: Option<MockTls>,
}

/// The certificate an HTTPS mock presents. PEM text, so tests can make one at run time (e.g.
/// with rcgen) without touching the file system.
#[derive(Clone)]
pub struct MockTls {
    /// The certificate chain, leaf first.
    pub cert_pem: String,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl fmt::Debug for MockTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockTls").finish_non_exhaustive()
    }
}

impl MockTls {
    /// A rustls acceptor for this certificate, offering h2 and HTTP/1.1 like Coupa.
    pub(crate) fn acceptor(&self) -> std::io::Result<tokio_rustls::TlsAcceptor> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("mock TLS: {what}"),
            )
        };
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid("cert_pem is not PEM"))?;
        // Never the key's text in an error, even a test key's.
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|_| invalid("key_pem holds no PEM private key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid(&e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// One OAuth client (Coupa: Setup › OAuth2/OpenID Connect Clients, grant "client credentials").
#[derive(Clone)]
pub struct MockClient {
    /// `client_id` (Coupa's "Identifier").
    pub id: String,
    /// `client_secret`.
    pub secret: String,
    /// Scopes granted to the client; a token may ask for a subset.
    pub scopes: Vec<String>,
}

/// Token-bucket rate limit: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MockRateLimit {
    /// Refill rate, requests per second.
    pub per_second: f64,
    /// Bucket capacity.
    pub burst: u32,
}

impl MockRateLimit {
    /// Coupa's documented limit (docs/coupa-api.md §10): 25 requests/s, burst 20.
    pub const COUPA: MockRateLimit = MockRateLimit {
        per_second: 25.0,
        burst: 20,
    };

    /// A limit of `per_second` with a bucket of `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        MockRateLimit { per_second, burst }
    }
}

impl Default for MockRateLimit {
    fn default() -> Self {
        MockRateLimit::COUPA
    }
}

impl fmt::Debug for MockClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret, even a mock's: logs get copied into bug reports.
        f.debug_struct("MockClient")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockConfig")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("clients", &self.clients)
            .field(
                "api_keys",
                &format_args!("<{} redacted>", self.api_keys.len()),
            )
            .field("expires_in", &self.expires_in)
            .field("rate_limit", &self.rate_limit)
            .field("seed_rows", &self.seed_rows)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl MockConfig {
    /// Defaults: listen on `127.0.0.1:0`, no clients, no API keys, `expires_in` 86399,
    /// Coupa's rate limit, 120 rows per resource.
    pub fn new(name: &str) -> Self {
        MockConfig {
            name: name.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            clients: Vec::new(),
            api_keys: Vec::new(),
            expires_in: 86_399,
            rate_limit: Some(MockRateLimit::COUPA),
            seed_rows: 120,
            tls: None,
        }
    }

    /// Serves HTTPS with `tls` (the URLs then start with `https://`).
    pub fn tls(mut self, tls: MockTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the listen address.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Adds an OAuth client with the scopes it is granted. A token request without `scope`
    /// gets all of them; one naming a scope outside them gets 400 `invalid_scope`.
    pub fn client(mut self, id: &str, secret: &str, scopes: &[&str]) -> Self {
        self.clients.push(MockClient {
            id: id.to_owned(),
            secret: secret.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        });
        self
    }

    /// Accepts `key` as a legacy `X-COUPA-API-KEY` (all scopes).
    pub fn api_key(mut self, key: &str) -> Self {
        self.api_keys.push(key.to_owned());
        self
    }

    /// Sets `expires_in` for tokens (seconds).
    pub fn expires_in(mut self, secs: u64) -> Self {
        self.expires_in = secs;
        self
    }

    /// Sets the rate limit; `None` = unlimited.
    pub fn rate_limit(mut self, limit: Option<MockRateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Sets the number of rows seeded per resource.
    pub fn seed_rows(mut self, rows: usize) -> Self {
        self.seed_rows = rows;
        self
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig::new("coupa")
    }
}
