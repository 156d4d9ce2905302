//! The pooled HTTP client towards Coupa (hyper-util legacy pool over rustls), and the settings
//! both outbound clients (this pool and the token client) are built from.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config;
use crate::net::bounds::RequestBody;
use crate::net::egress::{ProxyConnector, ProxyRules};
use crate::net::pooled::Tracking;

/// The caller's request body on its way to Coupa: bounded in time (`server.body_timeout`)
/// and size (the route's `max_body_bytes`).
pub type CallerBody = Limited<RequestBody<Incoming>>;

/// Bodies sent to Coupa: streamed from the caller, or buffered so that a request can be
/// replayed after a 401.
pub type UpstreamBody = Either<CallerBody, Full<Bytes>>;

type Pool = Client<Tracking<HttpsConnector<ProxyConnector>>, UpstreamBody>;

/// One proxy worker's way to Coupa: the pool, and a client that never reuses a connection,
/// for the one retry after the keep-alive race ([`crate::net::pooled`]): a second pooled
/// connection might have been closed by the same idle pause.
#[derive(Clone)]
pub struct UpstreamClient {
    pooled: Pool,
    fresh: Pool,
}

impl UpstreamClient {
    /// Sends `req` on a pooled connection (or a new one when none is idle).
    pub fn request(&self, req: Request<UpstreamBody>) -> ResponseFuture {
        self.pooled.request(req)
    }

    /// Sends `req` on a new connection, closed after the exchange.
    pub fn request_fresh(&self, req: Request<UpstreamBody>) -> ResponseFuture {
        self.fresh.request(req)
    }
}

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
    /// Reads `upstream.ca_file` (for comparison; [`crate::net::tls::client_config`] parses it) and
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
    let https = Tracking::new(https);
    let pooled = Client::builder(TokioExecutor::new())
        // Below the 60–75 s keep-alive of common load balancers, so the pool drops a connection
        // before the far end does and we avoid "connection closed before message completed".
        // Shorter keep-alives are learnt per connection from `Keep-Alive: timeout` (pooled.rs).
        .pool_idle_timeout(cfg.pool_idle_timeout)
        .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https.clone());
    let fresh = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .timer(TokioTimer::new())
        .build(https);
    UpstreamClient { pooled, fresh }
}
