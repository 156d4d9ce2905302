//! `proxy.toml`: raw serde types (`deny_unknown_fields`) validated into [`Config`].
//!
//! Parsing happens in two steps: serde/toml checks the shape (unknown keys, types), then one
//! validation pass checks values and cross-references and collects every problem, so a user
//! fixes a broken file in one round trip instead of one error at a time.
//!
//! Layout: `raw` is the file's shape, `validate` the pass (one file per section), `units`
//! and `vars` the value syntaxes it shares, [`defaults`] every key's default.

pub mod defaults;
mod raw;
#[cfg(test)]
mod tests;
mod units;
mod validate;
mod vars;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::migration::scopes::ScopeTable;
use raw::RawConfig;

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
    /// `[[integrations]]`, in file order.
    pub integrations: Vec<Integration>,
    /// `[migration]`.
    pub migration: Migration,
    /// `[log]`.
    pub log: Log,
    /// `[state]`: where the migration ledger is kept.
    pub state: State,
    /// The built-in path → scope table with `[[scope_rules]]` applied.
    pub scopes: Arc<ScopeTable>,
    /// The file this was read from, if any.
    pub source: Option<PathBuf>,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct Server {
    /// `listen`, default [`defaults::SERVER_LISTEN`].
    pub listen: SocketAddr,
    /// `request_timeout`, default [`defaults::REQUEST_TIMEOUT`]: how long the gateway waits for
    /// Coupa's response head (upload included). Routes may override it.
    pub request_timeout: Duration,
    /// `header_timeout`, default [`defaults::HEADER_TIMEOUT`]: a client must send a request's
    /// headers within this (slowloris guard).
    pub header_timeout: Duration,
    /// `idle_timeout`, default [`defaults::IDLE_TIMEOUT`]: a connection with no request in flight
    /// is closed after this (HTTP/2: with a GOAWAY).
    pub idle_timeout: Duration,
    /// `body_timeout`, default [`defaults::BODY_TIMEOUT`]: a request body that makes no progress
    /// for this long ends the request with 408.
    pub body_timeout: Duration,
    /// `write_timeout`, default [`defaults::WRITE_TIMEOUT`]: a client that takes no response bytes
    /// for this long is disconnected (HTTP/2: its stream is reset).
    pub write_timeout: Duration,
    /// `max_header_bytes`, default [`defaults::MAX_HEADER_BYTES`]. At least 8 KiB.
    pub max_header_bytes: usize,
    /// `max_body_bytes`: requests declaring a larger body get 413; `None` = no limit.
    pub max_body_bytes: Option<u64>,
    /// `max_concurrent_requests`, default [`defaults::MAX_CONCURRENT_REQUESTS`]: requests in flight
    /// beyond it get 503.
    pub max_concurrent_requests: usize,
    /// `shutdown_grace`, default [`defaults::SHUTDOWN_GRACE`]: how long in-flight requests may
    /// finish on SIGTERM.
    pub shutdown_grace: Duration,
    /// `retry_body_limit`, default [`defaults::RETRY_BODY_LIMIT`]: request bodies up to this size
    /// are buffered so the request can be replayed once after a 401 from Coupa.
    pub retry_body_limit: u64,
    /// `[server.tls]`: terminate TLS on the listener.
    pub tls: Option<ServerTls>,
    /// `workers`, default [`defaults::workers`], the number of CPUs. Proxy threads, each with its
    /// own event loop and its own pool of connections to Coupa (restart to change).
    pub workers: usize,
    /// `trusted_proxies`: the load balancers and proxies whose word on the client address
    /// (`X-Forwarded-For`, `Forwarded`, a PROXY protocol header) is believed. Empty by default:
    /// the TCP peer is the client.
    pub trusted_proxies: TrustedProxies,
    /// `proxy_protocol`, default [`defaults::PROXY_PROTOCOL`]: every connection to the proxy
    /// listener starts with a PROXY protocol (v1 or v2) header naming the client.
    pub proxy_protocol: bool,
}

/// `server.trusted_proxies`: networks whose claims about the client address are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// The networks, as configured (each truncated to its prefix).
    pub fn new(nets: Vec<ipnet::IpNet>) -> Self {
        Self(nets)
    }

    /// True when no proxy is trusted (the default): the TCP peer is the client.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `ip` (an IPv4-mapped IPv6 address counts as its IPv4 one) is in the list.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// `[server.tls]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `cert`: PEM certificate chain (relative paths are relative to the config file).
    pub cert: PathBuf,
    /// `key`: PEM private key.
    pub key: PathBuf,
}

/// `[upstream] proxy`: the outbound HTTP(S) proxy for API and token traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundProxy {
    /// Use `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` from the environment (the default).
    FromEnv,
    /// Connect directly (`proxy = "none"`).
    Direct,
    /// Use this proxy URL (`http://host:port`, optionally with user:password), bypassing
    /// the hosts in `no_proxy`.
    Url {
        /// The proxy URL (may hold credentials: never logged).
        url: String,
        /// Comma-separated hosts/domains/CIDRs to reach directly, curl syntax.
        no_proxy: String,
    },
}

/// `[instances.NAME] rate_limit`: the instance's request budget (Coupa documents 25 req/s,
/// burst 20, per instance).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// `per_second`; default in [`defaults::RATE_LIMIT`].
    pub per_second: f64,
    /// `burst`; default in [`defaults::RATE_LIMIT`].
    pub burst: u32,
    /// `max_queue_wait` (default in [`defaults::RATE_LIMIT`]): how long a request over the rate
    /// may wait for its turn before the gateway answers 429 itself.
    pub max_queue_wait: Duration,
}

/// `[admin]`
#[derive(Debug, Clone)]
pub struct Admin {
    /// `listen`, default [`defaults::ADMIN_LISTEN`].
    pub listen: SocketAddr,
    /// `token` or `token_file`: when set, every admin endpoint but `/healthz` and `/readyz`
    /// requires `Authorization: Bearer <token>`.
    pub token: Option<AdminToken>,
}

/// `admin.token` / `admin.token_file`.
#[derive(Debug, Clone)]
pub struct AdminToken {
    /// The token, for the CLI's own requests (`report`).
    pub secret: SecretString,
    /// Its SHA-256: requests are compared by digest, in constant time and without revealing
    /// the token's length.
    pub sha256: [u8; 32],
    /// The resolved `token_file`, if the token came from one (watched for changes).
    pub file: Option<PathBuf>,
}

/// `[upstream]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `connect_timeout`, default [`defaults::CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// `pool_idle_timeout`, default [`defaults::POOL_IDLE_TIMEOUT`].
    pub pool_idle_timeout: Duration,
    /// `pool_max_idle_per_host`, default [`defaults::POOL_MAX_IDLE_PER_HOST`]. It must cover the
    /// requests in flight to one instance at peak: the pool opens a connection whenever none is
    /// idle, and closes the ones it cannot keep, so a cap below the peak turns every burst into
    /// connection churn (new TCP+TLS handshakes to Coupa). Idle connections still close after
    /// `pool_idle_timeout`.
    pub pool_max_idle_per_host: usize,
    /// `ca_file`: extra PEM CA certificates to trust (e.g. a corporate interception proxy's).
    pub ca_file: Option<PathBuf>,
    /// `proxy` / `no_proxy`.
    pub proxy: OutboundProxy,
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
    /// `token_url`, default `{url}` + [`defaults::TOKEN_PATH`].
    pub token_url: String,
    /// `token_timeout`, default [`defaults::TOKEN_TIMEOUT`].
    pub token_timeout: Duration,
    /// `rate_limit`; `None` when `enabled = false`.
    pub rate_limit: Option<RateLimit>,
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
    /// `refresh_after`, default [`defaults::REFRESH_AFTER`].
    pub refresh_after: Duration,
    /// `token_warmup`, default [`defaults::TOKEN_WARMUP`].
    pub token_warmup: Duration,
    /// The resolved `client_secret_file`, if the secret came from one (watched for changes).
    pub secret_file: Option<PathBuf>,
}

/// `[[routes]]`
#[derive(Debug, Clone)]
pub struct Route {
    /// `prefix`: starts with `/`, no trailing `/` (except the root `/`).
    pub prefix: String,
    /// `instance`: validated to exist.
    pub instance: String,
    /// `client`: validated to exist and belong to `instance`. Required in oauth mode; in
    /// passthrough mode it names the client the route will move to (its scopes are compared
    /// with the traffic in the migration report).
    pub client: Option<String>,
    /// `timeout`, default `server.request_timeout`.
    pub timeout: Duration,
    /// `mode`, default [`defaults::MODE`].
    pub mode: Mode,
    /// `blocked_message`, default [`defaults::BLOCKED_MESSAGE`]: the 403 message of a blocked
    /// route.
    pub blocked_message: String,
    /// `allow_anonymous`, default [`defaults::ALLOW_ANONYMOUS`]: callers no `[[integrations]]`
    /// entry recognises may use the route.
    pub allow_anonymous: bool,
    /// `scope_check`, default [`defaults::SCOPE_CHECK`].
    pub scope_check: ScopeCheck,
    /// `max_body_bytes`, default `server.max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// `max_concurrent_requests`: this route's own cap, if any (503 beyond it).
    pub max_concurrent_requests: Option<usize>,
    /// `shadow_sample`, default [`defaults::SHADOW_SAMPLE`]: in passthrough mode, the share
    /// of GET/HEAD requests replayed with the client's token to prove OAuth readiness.
    pub shadow_sample: f64,
}

/// `routes[].mode`: what the gateway does with a route's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Inject the client's bearer token (legacy key stripped).
    OAuth,
    /// Forward the legacy key untouched, no token: for integrations repointed before their
    /// OAuth client exists, and for instant rollback.
    Passthrough,
    /// Answer 403 with `blocked_message`: for retired integrations.
    Blocked,
}

impl Mode {
    /// The TOML spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::OAuth => "oauth",
            Mode::Passthrough => "passthrough",
            Mode::Blocked => "blocked",
        }
    }
}

/// `routes[].scope_check`: what to do when the route's client lacks the scope a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeCheck {
    /// Answer 403 naming the missing scope, without calling Coupa.
    Enforce,
    /// Forward anyway; record and log the missing scope once.
    Warn,
    /// Do not compare (traffic is still recorded for the report).
    Off,
}

impl ScopeCheck {
    /// The TOML spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ScopeCheck::Enforce => "enforce",
            ScopeCheck::Warn => "warn",
            ScopeCheck::Off => "off",
        }
    }
}

/// `[[integrations]]`: a known caller.
#[derive(Clone)]
pub struct Integration {
    /// `name`, unique; shown in logs, metrics and `/status`.
    pub name: String,
    /// `key_sha256`: SHA-256 of the legacy API key the integration sends in `X-COUPA-API-KEY`.
    pub key_sha256: Option<[u8; 32]>,
    /// `allow_ips`: networks the integration connects from.
    pub allow_ips: Vec<ipnet::IpNet>,
    /// `routes`: the prefixes it may use (validated to exist).
    pub routes: Vec<String>,
    /// `weight`, default [`defaults::INTEGRATION_WEIGHT`]: its share of an instance's rate
    /// budget when callers wait for it.
    pub weight: u32,
}

impl std::fmt::Debug for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key hash is not the key, but there is no reason to print it either.
        f.debug_struct("Integration")
            .field("name", &self.name)
            .field("key_sha256", &self.key_sha256.map(|_| "[set]"))
            .field("allow_ips", &self.allow_ips)
            .field("routes", &self.routes)
            .field("weight", &self.weight)
            .finish()
    }
}

/// `[migration]`
#[derive(Debug, Clone)]
pub struct Migration {
    /// `revoke_after`, default [`defaults::REVOKE_AFTER`]: how long an integration must go without
    /// passthrough traffic (while observed by this process) before its API key is called safe to
    /// revoke.
    pub revoke_after: Duration,
}

/// `[state]`
#[derive(Debug, Clone)]
pub struct State {
    /// `path`, `redis` or `memory`; without a `[state]` table, memory.
    pub store: StateStore,
    /// `flush_interval`, default [`defaults::STATE_FLUSH_INTERVAL`]: how often observations
    /// are written; a crash loses at most this much.
    pub flush_interval: Duration,
    /// `replicas`, default [`defaults::STATE_REPLICAS`]: the expected fleet size. With
    /// `redis`, a replica that cannot reach Redis spends `per_second / replicas` on its own.
    pub replicas: u32,
}

/// Where the migration ledger lives.
#[derive(Debug, Clone)]
pub enum StateStore {
    /// In the process: verdicts restart with it.
    Memory,
    /// `path`: one local file (absolute, or made so from the config file's directory).
    File(PathBuf),
    /// `redis`: a Redis server every replica shares (the URL may hold a password).
    Redis(SecretString),
}

impl StateStore {
    /// Equal settings (a reload cannot move the ledger; the running store stays).
    pub fn same_as(&self, other: &StateStore) -> bool {
        use secrecy::ExposeSecret;
        match (self, other) {
            (StateStore::Memory, StateStore::Memory) => true,
            (StateStore::File(a), StateStore::File(b)) => a == b,
            (StateStore::Redis(a), StateStore::Redis(b)) => a.expose_secret() == b.expose_secret(),
            _ => false,
        }
    }
}

/// A Redis URL for messages and `/status`: any user and password replaced by `***`.
pub fn redis_url_shown(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".into();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// `format`: `text` (default, [`defaults::LOG_FORMAT`]; for people) or `json` (for log
    /// pipelines). Read at start; `--log-format` overrides it.
    pub format: LogFormat,
    /// `access`, default [`defaults::LOG_ACCESS`]: one line per request (target `access`).
    pub access: bool,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The TOML spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The default 403 message of a blocked route.
pub use defaults::BLOCKED_MESSAGE as DEFAULT_BLOCKED_MESSAGE;

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_problems(.file.as_deref(), .problems))]
pub struct ConfigError {
    /// The file the configuration was read from, when known.
    pub file: Option<PathBuf>,
    /// One message per problem, each starting with the key path it is about. Never contains a
    /// secret.
    pub problems: Vec<String>,
}

fn render_problems(file: Option<&Path>, problems: &[String]) -> String {
    let prefix = file
        .map(|f| format!("{}: ", f.display()))
        .unwrap_or_default();
    let lines: Vec<String> = problems.iter().map(|p| format!("{prefix}{p}")).collect();
    lines.join("\n")
}

/// A JSON Schema (draft 2020-12) of `proxy.toml`, derived from the types the file is read
/// into, so it accepts exactly the keys the parser does (`coupa-gateway schema`; editors such
/// as taplo read it through the file's `#:schema` line).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RawConfig);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}

impl Config {
    /// Reads and validates `path`. `${VAR}` references are resolved from the process
    /// environment and a relative `client_secret_file` from the directory holding `path`.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let with_file = |mut e: ConfigError| {
            e.file = Some(path.to_path_buf());
            e
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            with_file(ConfigError {
                file: None,
                problems: vec![format!("cannot read the configuration file: {e}")],
            })
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        let env = |name: &str| std::env::var(name).ok();
        let mut config = Config::parse(&text, &env, base_dir).map_err(with_file)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates `text`. `env` resolves `${VAR}` references (injected so tests need
    /// not touch the process environment); a relative `client_secret_file` is read from
    /// `base_dir`. `source` is left `None`.
    pub fn parse(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: None,
            problems: vec![toml_problem(text, &e)],
        })?;
        validate::validate(&raw, env, base_dir).map_err(|problems| ConfigError {
            file: None,
            problems,
        })
    }

    /// A routing table for humans (`coupa-gateway check`): one aligned line per route. Shows
    /// no secrets.
    pub fn describe_routes(&self) -> String {
        let rows: Vec<(String, String, String)> = self
            .routes
            .iter()
            .map(|r| {
                let from = match r.prefix.as_str() {
                    "/" => "/...".to_owned(),
                    p => format!("{p}/..."),
                };
                let to = self
                    .instances
                    .get(&r.instance)
                    .map(|i| format!("{}/...", base_url(i)))
                    .unwrap_or_default();
                let scopes = r
                    .client
                    .as_ref()
                    .and_then(|c| self.clients.get(c))
                    .map(|c| c.scopes.join(" "))
                    .unwrap_or_default();
                let access = match self
                    .integrations
                    .iter()
                    .filter(|g| g.routes.contains(&r.prefix))
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                {
                    names if names.is_empty() => "anyone".to_owned(),
                    names if r.allow_anonymous => format!("{} + anonymous", names.join(", ")),
                    names => names.join(", "),
                };
                let details = format!(
                    "(mode {}, instance {}, client {}, timeout {}, scope_check {}, callers {access}, scopes {scopes})",
                    r.mode.as_str(),
                    r.instance,
                    r.client.as_deref().unwrap_or("-"),
                    humantime::format_duration(r.timeout),
                    r.scope_check.as_str(),
                );
                (from, to, details)
            })
            .collect();
        let from_w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let to_w = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (from, to, details) in rows {
            let _ = writeln!(out, "{from:from_w$}  ->  {to:to_w$}  {details}");
        }
        out
    }
}

/// `{scheme}://{authority}{base_path}`: what a route's remaining path is appended to.
fn base_url(instance: &Instance) -> String {
    let scheme = instance.url.scheme_str().unwrap_or("https");
    let authority = instance.url.authority().map_or("", |a| a.as_str());
    format!("{scheme}://{authority}{}", instance.base_path)
}

/// Keeps the toml crate's message and position but not its source excerpt: the offending
/// line may hold a literal `client_secret` (a typo in the key name is the likely case).
fn toml_problem(text: &str, err: &toml::de::Error) -> String {
    // Without input, the toml error renders its message plus the key path ("in `a.b`").
    let mut bare = err.clone();
    bare.set_input(None);
    let message = bare.to_string().trim_end().replace('\n', "; ");
    match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}
