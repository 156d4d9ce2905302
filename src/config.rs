//! `proxy.toml`: raw serde types (`deny_unknown_fields`) validated into [`Config`].
//!
//! INTERFACE SKETCH — the validated types below are what the rest of the crate codes against.
//! The parsing/validation half is being written separately.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

/// A fully validated configuration. Every reference between sections has been resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`: the proxy listener.
    pub server: Server,
    /// `[admin]`: health, readiness, metrics, status.
    pub admin: Admin,
    /// `[upstream]`: the pooled client towards Coupa.
    pub upstream: Upstream,
    /// `[instances.NAME]`, by name.
    pub instances: BTreeMap<String, Arc<Instance>>,
    /// `[clients.NAME]`, by name.
    pub clients: BTreeMap<String, Arc<Client>>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<Route>,
    /// The file this was read from, if any.
    pub source: Option<PathBuf>,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct Server {
    /// `listen`, default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `request_timeout`, default 120 s: how long the gateway waits for Coupa's response head
    /// (upload included). Routes may override it.
    pub request_timeout: Duration,
}

/// `[admin]`
#[derive(Debug, Clone)]
pub struct Admin {
    /// `listen`, default `127.0.0.1:9090`.
    pub listen: SocketAddr,
}

/// `[upstream]`
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `connect_timeout`, default 5 s.
    pub connect_timeout: Duration,
    /// `pool_idle_timeout`, default 50 s (below the usual 60–75 s upstream keep-alive).
    pub pool_idle_timeout: Duration,
    /// `pool_max_idle_per_host`, default 64.
    pub pool_max_idle_per_host: usize,
}

/// `[instances.NAME]`
#[derive(Debug, Clone)]
pub struct Instance {
    /// The table key.
    pub name: String,
    /// `url`: scheme and authority (e.g. `https://acme.coupahost.com`), no query.
    pub url: http::Uri,
    /// The path part of `url` without a trailing slash (`""` for most instances).
    pub base_path: String,
    /// `token_url`, default `{url}/oauth2/token`.
    pub token_url: String,
    /// `token_timeout`, default 10 s.
    pub token_timeout: Duration,
}

/// `[clients.NAME]`
#[derive(Debug, Clone)]
pub struct Client {
    /// The table key.
    pub name: String,
    /// `instance`: the name of the instance it belongs to (validated to exist).
    pub instance: String,
    /// `client_id` (after `${VAR}` expansion).
    pub client_id: String,
    /// `client_secret` (after `${VAR}` expansion) or the contents of `client_secret_file`.
    pub client_secret: SecretString,
    /// `scopes`, sent space-separated.
    pub scopes: Vec<String>,
    /// `refresh_after`, default 20 h.
    pub refresh_after: Duration,
    /// `token_warmup`, default 5 s.
    pub token_warmup: Duration,
}

/// `[[routes]]`
#[derive(Debug, Clone)]
pub struct Route {
    /// `prefix`: starts with `/`, no trailing `/` (except the root `/`).
    pub prefix: String,
    /// `instance`: validated to exist.
    pub instance: String,
    /// `client`: validated to exist and belong to `instance`.
    pub client: String,
    /// `timeout`, default `server.request_timeout`.
    pub timeout: Duration,
}
