//! The pooled HTTP client towards Coupa (hyper-util legacy pool over rustls).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config;

/// Bodies sent to Coupa: streamed from the caller (with the route's size limit), or buffered
/// so that a request can be replayed after a 401.
pub type UpstreamBody = Either<Limited<Incoming>, Full<Bytes>>;

/// The upstream client type.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// Builds the shared client. One instance serves every route: the pool is keyed by
/// scheme+authority, and sharing it is what gives high connection reuse (see STYLE.md §5).
pub fn client(cfg: &config::Upstream, tls: Arc<rustls::ClientConfig>) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // Nagle + delayed ACK costs ~40 ms on small writes (STYLE.md §5.3).
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(30)));
    // HTTP/1.1 upstream only: Coupa answers it everywhere, and one multiplexed h2 connection
    // would funnel large attachment uploads through a single flow-control window.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        // Below the 60–75 s keep-alive of common load balancers, so the pool drops a connection
        // before the far end does and we avoid "connection closed before message completed".
        .pool_idle_timeout(cfg.pool_idle_timeout)
        .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}
