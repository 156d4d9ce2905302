//! The runtime snapshot: everything a request needs, built once from a validated [`Config`] and
//! published behind one `ArcSwap` so the request path never locks and a reload is one store.

pub mod reload;
pub mod route_table;
mod shared;

pub use shared::{ReloadStatus, Shared};

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::uri::{Authority, Scheme};
use http::HeaderValue;

use crate::config::{self, Config, Mode, RateLimit, ScopeCheck};
use crate::migration::identity::Integration;
use crate::migration::{RouteUsage, Tracker, ANONYMOUS};
use crate::net::upstream::{self, OutboundSettings, UpstreamClient};
use crate::ops::metrics::{Metrics, RouteMetrics};
use crate::runtime::route_table::RouteTable;
use crate::state::budget::{Budget, Budgets};
use crate::token::{self, TokenCell, TokenRequest};

/// Per-route data with every per-request constant precomputed.
#[derive(Debug)]
pub struct RouteTarget {
    /// Position in `config.routes` (indexes per-integration permissions and records).
    pub index: usize,
    /// The route's prefix.
    pub prefix: String,
    /// The instance it forwards to.
    pub instance: Arc<config::Instance>,
    /// What to do with the traffic.
    pub mode: Mode,
    /// Upstream scheme.
    pub scheme: Scheme,
    /// The instance's authority, for Coupa requests' URI (it keys the pool).
    pub authority: Authority,
    /// `Host` for Coupa.
    pub host: HeaderValue,
    /// The instance URL's path, prepended to the rest of the request path.
    pub base_path: String,
    /// `Proxy-Authorization` for absolute-form requests to a plain-HTTP instance through an
    /// outbound proxy with credentials (see [`crate::net::egress`]); `None` otherwise.
    pub proxy_authorization: Option<HeaderValue>,
    /// The client's token cell (oauth mode always has one).
    pub token: Option<Arc<TokenCell>>,
    /// The client's name, if the route names one.
    pub client: Option<String>,
    client_scopes: HashSet<Box<str>>,
    /// What to do when the client lacks a needed scope.
    pub scope_check: ScopeCheck,
    /// True when unrecognised callers may use the route.
    pub open: bool,
    /// The 403 message in blocked mode.
    pub blocked_message: String,
    /// Deadline for Coupa's response head.
    pub timeout: Duration,
    /// This route's counters.
    pub metrics: Arc<RouteMetrics>,
    /// Traffic of unrecognised callers on this route.
    pub anonymous_usage: Arc<Mutex<RouteUsage>>,
    /// The instance's rate budget (shared by every route to the instance).
    pub budget: Option<Arc<Budget>>,
    /// Largest request body accepted.
    pub max_body_bytes: Option<u64>,
    /// This route's own cap on requests in flight.
    pub max_concurrent: Option<usize>,
    /// Requests in flight on this route.
    pub inflight: AtomicUsize,
    /// `shadow_sample`: the share of passthrough GET/HEAD requests sent again with the token.
    pub shadow_sample: f64,
    /// Shadow requests in flight on this route (bounded).
    pub shadow_inflight: Arc<AtomicUsize>,
}

impl RouteTarget {
    /// True when the route's client was configured with one of `any_of`.
    pub fn client_has_any(&self, any_of: &[Arc<str>]) -> bool {
        any_of
            .iter()
            .any(|s| self.client_scopes.contains(s.as_ref()))
    }
}

/// One immutable view of the configuration and what was built from it.
pub struct Runtime {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Route prefix → target.
    pub routes: RouteTable<RouteTarget>,
    /// Token cells by client name.
    pub tokens: BTreeMap<String, Arc<TokenCell>>,
    /// The pooled clients towards Coupa, one per proxy worker (`server.workers`): a worker's
    /// pooled connections run as tasks on its own event loop, so handing a request to one
    /// never wakes another thread.
    pub upstream: Arc<[UpstreamClient]>,
    /// Client for token endpoints: same TLS roots and outbound proxy as `upstream`.
    pub token_http: reqwest::Client,
    /// TLS for the proxy listener (`[server.tls]`), read from its files when this snapshot was
    /// built: each new connection takes the current one, so a reload with a renewed
    /// certificate (or TLS turned on or off) applies to new connections.
    pub tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// Known callers, in config order.
    pub integrations: Vec<Integration>,
    /// What `upstream` and `token_http` were built from.
    outbound: OutboundSettings,
}

fn instance_rate<'c>(config: &'c Config, instance: &str) -> Option<&'c RateLimit> {
    config.instances.get(instance)?.rate_limit.as_ref()
}

impl Runtime {
    /// Builds a runtime from `config`, reading the TLS files it names and the proxy
    /// environment. The outbound clients (pool and token client) are reused from `previous`
    /// when [`OutboundSettings`] did not change; token cells are reused (with their live token)
    /// when, in addition, their token request is unchanged, so a new CA or proxy re-mints
    /// through the new path. New cells are returned second, not yet started.
    ///
    /// Fails, naming the config key, when a TLS file cannot be used or the proxy setting (or
    /// the environment's) is not a usable proxy URL.
    pub fn build(
        config: Config,
        metrics: &Metrics,
        tracker: &Tracker,
        budgets: &Budgets,
        previous: Option<&Runtime>,
    ) -> Result<(Runtime, Vec<Arc<TokenCell>>), String> {
        let outbound = OutboundSettings::load(&config.upstream, &|name| std::env::var(name).ok())?;
        let kept = previous.filter(|p| p.outbound == outbound);
        let (upstream, token_http) = match kept {
            Some(p) => (p.upstream.clone(), p.token_http.clone()),
            None => {
                // `ca_file` is read a second time here; a file replaced in between is caught
                // by the next reload (the watcher sees it changed).
                let tls = crate::net::tls::client_config(config.upstream.ca_file.as_deref())?;
                // `server.workers` is pinned to the running value on reload, so the count
                // always matches the running workers.
                let pool = (0..config.server.workers)
                    .map(|_| {
                        upstream::client(&config.upstream, tls.clone(), outbound.proxy.clone())
                    })
                    .collect();
                let token_http = token::http_client(tls, &outbound.proxy)?;
                tracing::info!(
                    proxy = %outbound.proxy.describe(),
                    ca_file = ?config.upstream.ca_file,
                    "outbound clients built"
                );
                (pool, token_http)
            }
        };
        let tls_acceptor = config
            .server
            .tls
            .as_ref()
            .map(crate::net::tls::acceptor)
            .transpose()?;
        let mut tokens = BTreeMap::new();
        let mut fresh = Vec::new();
        for (name, client) in &config.clients {
            let instance = &config.instances[&client.instance];
            let wanted = TokenRequest::new(client, instance);
            let reused = kept
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
        let anonymous = tracker.integration(ANONYMOUS);
        let routes = RouteTable::new(config.routes.iter().enumerate().map(|(index, r)| {
            let instance = config.instances[&r.instance].clone();
            let authority = instance
                .url
                .authority()
                .expect("validated instance URLs have an authority")
                .clone();
            let client_scopes = r
                .client
                .as_ref()
                .map(|c| {
                    config.clients[c]
                        .scopes
                        .iter()
                        .map(|s| s.as_str().into())
                        .collect()
                })
                .unwrap_or_default();
            let restricted = config
                .integrations
                .iter()
                .any(|g| g.routes.contains(&r.prefix));
            let proxy_authorization = outbound.proxy.forward_authorization(&instance.url);
            let target = RouteTarget {
                index,
                proxy_authorization,
                prefix: r.prefix.clone(),
                mode: r.mode,
                scheme: instance.url.scheme().cloned().unwrap_or(Scheme::HTTPS),
                host: HeaderValue::from_str(authority.as_str())
                    .expect("an authority is a valid header value"),
                authority,
                base_path: instance.base_path.clone(),
                instance,
                token: r.client.as_ref().map(|c| tokens[c].clone()),
                client: r.client.clone(),
                client_scopes,
                scope_check: r.scope_check,
                open: r.allow_anonymous || !restricted,
                blocked_message: r.blocked_message.clone(),
                timeout: r.timeout,
                metrics: metrics.route(&r.prefix),
                anonymous_usage: anonymous.route(&r.prefix),
                budget: instance_rate(&config, &r.instance).map(|rl| budgets.get(&r.instance, rl)),
                max_body_bytes: r.max_body_bytes,
                max_concurrent: r.max_concurrent_requests,
                inflight: AtomicUsize::new(0),
                shadow_sample: r.shadow_sample,
                shadow_inflight: Arc::default(),
            };
            (r.prefix.clone(), target)
        }));
        let integrations = config
            .integrations
            .iter()
            .map(|g| Integration::new(g, &config.routes, tracker.integration(&g.name)))
            .collect();
        let runtime = Runtime {
            config: Arc::new(config),
            routes,
            tokens,
            upstream,
            token_http,
            tls_acceptor,
            integrations,
            outbound,
        };
        Ok((runtime, fresh))
    }

    /// Tells each integration's record whether all its routes now inject tokens; called once
    /// the runtime is live, so a refused reload leaves the migration clock alone.
    pub fn observe_modes(&self) {
        let now = SystemTime::now();
        for (g, cfg) in self.integrations.iter().zip(&self.config.integrations) {
            let all_oauth = self
                .config
                .routes
                .iter()
                .filter(|r| cfg.routes.contains(&r.prefix))
                .all(|r| r.mode != Mode::Passthrough);
            g.stats.observe_modes(all_oauth, now);
        }
    }

    /// True when every client holds a valid token.
    pub fn ready(&self, now: Instant) -> bool {
        self.tokens.values().all(|c| c.is_ready(now))
    }
}
