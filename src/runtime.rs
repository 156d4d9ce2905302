//! The runtime snapshot: everything a request needs, built once from a validated [`Config`] and
//! published behind one `ArcSwap` so the request path never locks and a reload is one store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use http::HeaderValue;

use crate::config::{self, Config};
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::upstream::{self, UpstreamClient};
use crate::route::RouteTable;
use crate::token::{TokenCell, TokenRequest};

/// Per-route data with every per-request constant precomputed.
#[derive(Debug)]
pub struct RouteTarget {
    /// The route's prefix.
    pub prefix: String,
    /// The instance it forwards to.
    pub instance: Arc<config::Instance>,
    /// Upstream scheme.
    pub scheme: Scheme,
    /// Upstream authority (cheap `Bytes` clone per request).
    pub authority: Authority,
    /// `Host` for Coupa.
    pub host: HeaderValue,
    /// The instance URL's path, prepended to the rest of the request path.
    pub base_path: String,
    /// The client's token cell.
    pub token: Arc<TokenCell>,
    /// Deadline for Coupa's response head.
    pub timeout: Duration,
    /// This route's counters.
    pub metrics: Arc<RouteMetrics>,
}

/// One immutable view of the configuration and what was built from it.
pub struct Runtime {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Route prefix → target.
    pub routes: RouteTable<RouteTarget>,
    /// Token cells by client name.
    pub tokens: BTreeMap<String, Arc<TokenCell>>,
    /// The pooled client towards Coupa.
    pub upstream: UpstreamClient,
}

/// State shared by the proxy and admin listeners for the life of the process.
pub struct Shared {
    /// The current runtime snapshot.
    pub runtime: ArcSwap<Runtime>,
    /// Counters that outlive snapshots.
    pub metrics: Metrics,
    /// TLS settings for every outbound connection.
    pub tls: Arc<rustls::ClientConfig>,
    /// Client for token endpoints.
    pub token_http: reqwest::Client,
    /// Process start, for uptime.
    pub started: Instant,
    /// Wall-clock process start.
    pub started_at: SystemTime,
}

impl Runtime {
    /// Builds a runtime from `config`. Token cells whose token request is unchanged from
    /// `previous` are reused (with their live token); the others are new and returned second,
    /// not yet started.
    pub fn build(
        config: Config,
        metrics: &Metrics,
        tls: &Arc<rustls::ClientConfig>,
        previous: Option<&Runtime>,
    ) -> (Runtime, Vec<Arc<TokenCell>>) {
        let mut tokens = BTreeMap::new();
        let mut fresh = Vec::new();
        for (name, client) in &config.clients {
            let instance = &config.instances[&client.instance];
            let wanted = TokenRequest::new(client, instance);
            let reused = previous
                .and_then(|p| p.tokens.get(name))
                .filter(|cell| cell.request().same_as(&wanted))
                .cloned();
            let cell = reused.unwrap_or_else(|| {
                let cell = TokenCell::new(client, instance);
                fresh.push(cell.clone());
                cell
            });
            tokens.insert(name.clone(), cell);
        }
        let routes = RouteTable::new(config.routes.iter().map(|r| {
            let instance = config.instances[&r.instance].clone();
            let authority = instance
                .url
                .authority()
                .expect("validated instance URLs have an authority")
                .clone();
            let target = RouteTarget {
                prefix: r.prefix.clone(),
                scheme: instance.url.scheme().cloned().unwrap_or(Scheme::HTTPS),
                host: HeaderValue::from_str(authority.as_str())
                    .expect("an authority is a valid header value"),
                authority,
                base_path: instance.base_path.clone(),
                instance,
                token: tokens[&r.client].clone(),
                timeout: r.timeout,
                metrics: metrics.route(&r.prefix),
            };
            (r.prefix.clone(), target)
        }));
        let upstream = upstream::client(&config.upstream, tls.clone());
        let runtime = Runtime {
            config: Arc::new(config),
            routes,
            tokens,
            upstream,
        };
        (runtime, fresh)
    }

    /// True when every client holds a valid token.
    pub fn ready(&self, now: Instant) -> bool {
        self.tokens.values().all(|c| c.is_ready(now))
    }
}
