//! The pooled HTTP client towards Coupa (hyper-util legacy pool over rustls), and the settings
//! both outbound clients (this pool and the token client) are built from.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::Uri;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::bounds::RequestBody;
use crate::config;
use crate::egress::{ProxyConnector, ProxyRules};

/// The caller's request body on its way to Coupa: bounded in time (`server.body_timeout`)
/// and size (the route's `max_body_bytes`).
pub type CallerBody = Limited<RequestBody<Incoming>>;

/// Bodies sent to Coupa: streamed from the caller, or buffered so that a request can be
/// replayed after a 401.
pub type UpstreamBody = Either<CallerBody, Full<Bytes>>;

/// The upstream client type.
pub type UpstreamClient = Client<Dealias<HttpsConnector<ProxyConnector>>, UpstreamBody>;

/// What the outbound clients are made of: `[upstream]` as configured, the extra CA file's
/// content and the proxy rules it resolved to (the environment included). Two equal values
/// build clients that behave the same, so a reload keeps the running ones (and their pooled
/// connections and tokens) exactly when this is unchanged.
#[derive(PartialEq)]
pub struct OutboundSettings {
    /// `[upstream]`.
    pub upstream: config::Upstream,
    /// The bytes of `upstream.ca_file` when they were read: a replaced CA bundle at the same
    /// path is a change.
    ca_pem: Option<Vec<u8>>,
    /// Which destinations go through which proxy.
    pub proxy: Arc<ProxyRules>,
}

impl OutboundSettings {
    /// Reads `upstream.ca_file` (for comparison; [`crate::tls::client_config`] parses it) and
    /// resolves the proxy setting with `env` as the environment.
    pub fn load(
        upstream: &config::Upstream,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let ca_pem = match &upstream.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                format!(
                    "upstream.ca_file: cannot read \"{}\": {e}; check the path and the file's permissions",
                    path.display()
                )
            })?),
            None => None,
        };
        Ok(Self {
            upstream: upstream.clone(),
            ca_pem,
            proxy: Arc::new(ProxyRules::new(&upstream.proxy, env)?),
        })
    }
}

/// Builds one proxy worker's client. It serves every route: the pool is keyed by
/// scheme+authority, and sharing it across routes is what gives high connection reuse (see
/// STYLE.md §5). Its connections run as tasks on the runtime that opens them, so each worker
/// gets its own client (see `server::Worker`).
pub fn client(
    cfg: &config::Upstream,
    tls: Arc<rustls::ClientConfig>,
    proxy: Arc<ProxyRules>,
) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // Nagle + delayed ACK costs ~40 ms on small writes (STYLE.md §5.3).
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(30)));
    let egress = ProxyConnector::new(http, tls.clone(), proxy, cfg.connect_timeout);
    // HTTP/1.1 upstream only: Coupa answers it everywhere, and one multiplexed h2 connection
    // would funnel large attachment uploads through a single flow-control window.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(egress);
    Client::builder(TokioExecutor::new())
        // Below the 60–75 s keep-alive of common load balancers, so the pool drops a connection
        // before the far end does and we avoid "connection closed before message completed".
        .pool_idle_timeout(cfg.pool_idle_timeout)
        .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(Dealias(https))
}

/// Every authority [`pool_alias`] has handed out an alias for, at the alias's number, with the
/// alias. Process-wide and append-only: pools outlive reloads, so an alias must never come to
/// mean another destination. It grows by one entry per distinct instance authority ever
/// configured.
static ALIASES: Mutex<Vec<(Authority, Authority)>> = Mutex::new(Vec::new());

/// The short stand-in for `authority` that requests to the pool carry in their URI.
///
/// PERF: hyper-util's pool is keyed by the request URI's scheme and authority and hashes that
/// key with SipHash on every checkout and every return, and `http`'s `Hash for Authority` feeds
/// the hasher one byte at a time: 2,000–2,400 instructions per request for `127.0.0.1:19090`
/// (callgrind, benches/RESULTS.md), more for `acme-test.coupahost.com`. An alias is `~` and a
/// number (`~` occurs in no host name, and the configuration refuses instance URLs with one, so an alias never shadows a real host); [`Dealias`] puts
/// the real authority back before connecting, and `Host` is always set from the real one
/// ([`super::headers`]). Not for absolute-form requests through an outbound proxy, whose
/// request line shows the URI's authority.
pub fn pool_alias(authority: &Authority) -> Authority {
    let mut aliases = ALIASES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, alias)) = aliases
        .iter()
        .find(|(a, _)| a.as_str() == authority.as_str())
    {
        return alias.clone();
    }
    // Leaked once per distinct authority (see ALIASES): a static alias clones without the
    // reference counting a shared one costs on every pool-key copy.
    let name: &'static str = Box::leak(format!("~{}", aliases.len()).into_boxed_str());
    let alias = Authority::from_static(name);
    aliases.push((authority.clone(), alias.clone()));
    alias
}

/// `dst` with a [`pool_alias`] replaced by the authority it stands for; any other URI as is.
fn dealias(dst: Uri) -> Uri {
    let real = dst
        .authority()
        .and_then(|a| a.as_str().strip_prefix('~'))
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| {
            let aliases = ALIASES.lock().unwrap_or_else(PoisonError::into_inner);
            aliases.get(n).map(|(real, _)| real.clone())
        });
    let Some(real) = real else { return dst };
    let mut parts = dst.into_parts();
    parts.authority = Some(real);
    Uri::from_parts(parts).expect("replacing a valid authority keeps the URI valid")
}

/// The pool's outermost connector: gives the connector chain (DNS, `CONNECT`, TLS server name)
/// the real destination of an aliased pool key. Runs once per new connection, not per request.
#[derive(Clone, Debug)]
pub struct Dealias<C>(C);

impl<C: Service<Uri>> Service<Uri> for Dealias<C> {
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        self.0.call(dealias(dst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_is_short_stable_and_unique_and_dealiases_to_its_authority() {
        let coupa = Authority::from_static("acme-test.coupahost.com");
        let other = Authority::from_static("acme.coupahost.com:8443");
        let alias = pool_alias(&coupa);
        assert!(
            alias.as_str().starts_with('~') && alias.as_str().len() < 5,
            "{alias}"
        );
        assert_eq!(pool_alias(&coupa), alias);
        assert_ne!(pool_alias(&other), alias);

        let uri = |s: String| s.parse::<Uri>().unwrap();
        assert_eq!(
            dealias(uri(format!("https://{alias}/"))),
            uri("https://acme-test.coupahost.com/".into())
        );
        assert_eq!(
            dealias(uri(format!("http://{}", pool_alias(&other)))),
            uri("http://acme.coupahost.com:8443".into())
        );
        for as_is in [
            "https://acme.coupahost.com/",
            "http://~x/",
            "http://~999999/",
        ] {
            assert_eq!(dealias(uri(as_is.into())), uri(as_is.into()), "{as_is}");
        }
    }
}
