//! `proxy.toml`: raw serde types (`deny_unknown_fields`) validated into [`Config`].
//!
//! Parsing happens in two steps: serde/toml checks the shape (unknown keys, types), then one
//! validation pass checks values and cross-references and collects every problem, so a user
//! fixes a broken file in one round trip instead of one error at a time.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use secrecy::SecretString;

use crate::migration::scopes::{self, RuleSource, ScopeRule, ScopeTable};
use serde::Deserialize;

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
    /// The built-in path → scope table with `[[scope_rules]]` applied.
    pub scopes: Arc<ScopeTable>,
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
    /// `header_timeout`, default 30 s: a client must send a request's headers within this
    /// (slowloris guard).
    pub header_timeout: Duration,
    /// `idle_timeout`, default 60 s: a connection with no request in flight is closed after
    /// this (HTTP/2: with a GOAWAY).
    pub idle_timeout: Duration,
    /// `body_timeout`, default 60 s: a request body that makes no progress for this long ends
    /// the request with 408.
    pub body_timeout: Duration,
    /// `write_timeout`, default 60 s: a client that takes no response bytes for this long is
    /// disconnected (HTTP/2: its stream is reset).
    pub write_timeout: Duration,
    /// `max_header_bytes`, default 64 KiB (Coupa JWTs are several KB; integrations' own
    /// headers are small). At least 8 KiB.
    pub max_header_bytes: usize,
    /// `max_body_bytes`: requests declaring a larger body get 413; `None` = no limit.
    pub max_body_bytes: Option<u64>,
    /// `max_concurrent_requests`, default 4096: requests in flight beyond it get 503.
    pub max_concurrent_requests: usize,
    /// `shutdown_grace`, default 30 s: how long in-flight requests may finish on SIGTERM.
    pub shutdown_grace: Duration,
    /// `retry_body_limit`, default 1 MiB: request bodies up to this size are buffered so the
    /// request can be replayed once after a 401 from Coupa.
    pub retry_body_limit: u64,
    /// `[server.tls]`: terminate TLS on the listener.
    pub tls: Option<ServerTls>,
    /// `workers`, default: the number of CPUs. Proxy threads, each with its own event loop and
    /// its own pool of connections to Coupa (restart to change).
    pub workers: usize,
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
    /// `per_second`, default 25.
    pub per_second: f64,
    /// `burst`, default 20.
    pub burst: u32,
    /// `max_queue_wait`, default 30 s: how long a request over the rate may wait for its
    /// turn before the gateway answers 429 itself.
    pub max_queue_wait: Duration,
}

/// `[admin]`
#[derive(Debug, Clone)]
pub struct Admin {
    /// `listen`, default `127.0.0.1:9090`.
    pub listen: SocketAddr,
}

/// `[upstream]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `connect_timeout`, default 5 s.
    pub connect_timeout: Duration,
    /// `pool_idle_timeout`, default 50 s (below the usual 60–75 s upstream keep-alive).
    pub pool_idle_timeout: Duration,
    /// `pool_max_idle_per_host`, default 1024. It must cover the requests in flight to one
    /// instance at peak: the pool opens a connection whenever none is idle, and closes the
    /// ones it cannot keep, so a cap below the peak turns every burst into connection churn
    /// (new TCP+TLS handshakes to Coupa). Idle connections still close after
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
    /// `token_url`, default `{url}/oauth2/token`.
    pub token_url: String,
    /// `token_timeout`, default 10 s.
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
    /// `refresh_after`, default 20 h.
    pub refresh_after: Duration,
    /// `token_warmup`, default 5 s.
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
    /// `mode`, default oauth.
    pub mode: Mode,
    /// `blocked_message`: the 403 message of a blocked route.
    pub blocked_message: String,
    /// `allow_anonymous`, default false: callers no `[[integrations]]` entry recognises may
    /// use the route.
    pub allow_anonymous: bool,
    /// `scope_check`, default warn.
    pub scope_check: ScopeCheck,
    /// `max_body_bytes`, default `server.max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// `max_concurrent_requests`: this route's own cap, if any (503 beyond it).
    pub max_concurrent_requests: Option<usize>,
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
    pub fn as_str(self) -> &'static str {
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
    pub fn as_str(self) -> &'static str {
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
}

impl std::fmt::Debug for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key hash is not the key, but there is no reason to print it either.
        f.debug_struct("Integration")
            .field("name", &self.name)
            .field("key_sha256", &self.key_sha256.map(|_| "[set]"))
            .field("allow_ips", &self.allow_ips)
            .field("routes", &self.routes)
            .finish()
    }
}

/// `[migration]`
#[derive(Debug, Clone)]
pub struct Migration {
    /// `revoke_after`, default 7 days: how long an integration must go without passthrough
    /// traffic (while observed by this process) before its API key is called safe to revoke.
    pub revoke_after: Duration,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// `format`: `text` (default, for people) or `json` (for log pipelines). Read at start;
    /// `--log-format` overrides it.
    pub format: LogFormat,
    /// `access`, default true: one line per request (target `access`).
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

/// The default 403 message of a blocked route.
pub const DEFAULT_BLOCKED_MESSAGE: &str =
    "this integration route has been retired; contact your Coupa integration team";

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
        let mut v = Validator {
            env,
            base_dir,
            problems: Vec::new(),
        };
        let config = v.config(&raw);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                file: None,
                problems: v.problems,
            })
        }
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

// Raw TOML shape. No `Debug` derive on purpose: `RawClient` holds the secret as a plain String.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    instances: BTreeMap<String, RawInstance>,
    #[serde(default)]
    clients: BTreeMap<String, RawClient>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    integrations: Vec<RawIntegration>,
    #[serde(default)]
    migration: RawMigration,
    #[serde(default)]
    scope_rules: Vec<RawScopeRule>,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    access: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScopeRule {
    path: Option<String>,
    methods: Option<Vec<String>>,
    exact: Option<bool>,
    scopes: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    request_timeout: Option<String>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    body_timeout: Option<String>,
    write_timeout: Option<String>,
    max_header_bytes: Option<RawSize>,
    max_body_bytes: Option<RawSize>,
    max_concurrent_requests: Option<usize>,
    shutdown_grace: Option<String>,
    retry_body_limit: Option<RawSize>,
    tls: Option<RawServerTls>,
    workers: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    cert: Option<String>,
    key: Option<String>,
}

/// A byte size: a number, or a string with a unit ("64KiB", "250MB").
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    enabled: Option<bool>,
    per_second: Option<f64>,
    burst: Option<u32>,
    max_queue_wait: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    connect_timeout: Option<String>,
    pool_idle_timeout: Option<String>,
    pool_max_idle_per_host: Option<usize>,
    ca_file: Option<String>,
    proxy: Option<String>,
    no_proxy: Option<String>,
}

// Required keys are `Option` too so that a missing one is reported with its key path alongside
// every other problem, rather than aborting deserialisation.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    url: Option<String>,
    token_url: Option<String>,
    token_timeout: Option<String>,
    rate_limit: Option<RawRateLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    instance: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    scopes: Option<Vec<String>>,
    refresh_after: Option<String>,
    token_warmup: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Option<String>,
    instance: Option<String>,
    client: Option<String>,
    timeout: Option<String>,
    mode: Option<String>,
    blocked_message: Option<String>,
    allow_anonymous: Option<bool>,
    scope_check: Option<String>,
    max_body_bytes: Option<RawSize>,
    max_concurrent_requests: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegration {
    name: Option<String>,
    key_sha256: Option<String>,
    allow_ips: Option<Vec<String>>,
    routes: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMigration {
    revoke_after: Option<String>,
}

const EXAMPLE_URL: &str = "https://acme.coupahost.com";
/// PERF: with 64, 256 requests in flight made the pool open ~2,300 connections/s; with 1024 it
/// opens one per request slot and req/s rose ×1.29, p99 fell ×0.68 (load bench A/B,
/// benches/RESULTS.md). See [`Upstream::pool_max_idle_per_host`].
const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 1024;
const DURATION_HINT: &str = r#"use forms like "20h", "90m", "5s""#;
const SCOPES_HINT: &str = "list each scope as its own string, \
    e.g. scopes = [\"core.invoice.read\", \"core.supplier.read\"]";

/// One validation pass. Invalid values are replaced by placeholders so checking can go on;
/// the resulting `Config` is discarded whenever `problems` is non-empty.
struct Validator<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: &'a Path,
    problems: Vec<String>,
}

impl Validator<'_> {
    fn problem(&mut self, key: impl Display, message: impl Display) {
        self.problems.push(format!("{key}: {message}"));
    }

    fn check<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|m| self.problem(key, m)).ok()
    }

    fn required<'r>(
        &mut self,
        key: &str,
        value: &'r Option<String>,
        hint: &str,
    ) -> Option<&'r str> {
        if value.is_none() {
            self.problem(key, format!("missing; add {hint}"));
        }
        value.as_deref()
    }

    fn listen(&mut self, key: &str, raw: Option<&str>, default: SocketAddr) -> SocketAddr {
        let Some(raw) = raw else { return default };
        let parsed = raw.parse().map_err(|_| {
            format!(r#"{raw:?} is not a socket address; use IP:PORT such as "{default}""#)
        });
        self.check(key, parsed).unwrap_or(default)
    }

    /// Parses a duration that may be zero.
    fn duration(&mut self, key: &str, raw: Option<&str>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        let parsed = humantime::parse_duration(raw)
            .map_err(|_| format!("{raw:?} is not a duration; {DURATION_HINT}"));
        self.check(key, parsed).unwrap_or(default)
    }

    /// Parses a duration that must be positive (timeouts, refresh intervals).
    fn positive(&mut self, key: &str, raw: Option<&str>, default: Duration) -> Duration {
        let d = self.duration(key, raw, default);
        if d.is_zero() {
            self.problem(
                key,
                format!("{:?} must be greater than zero", raw.unwrap_or("0s")),
            );
            return default;
        }
        d
    }

    fn expand(&mut self, key: &str, raw: &str, unset_hint: &str) -> Option<String> {
        let expanded = expand_vars(raw, self.env, unset_hint);
        self.check(key, expanded)
    }

    fn config(&mut self, raw: &RawConfig) -> Config {
        let server = Server {
            listen: self.listen(
                "server.listen",
                raw.server.listen.as_deref(),
                SocketAddr::from(([127, 0, 0, 1], 8080)),
            ),
            request_timeout: self.positive(
                "server.request_timeout",
                raw.server.request_timeout.as_deref(),
                Duration::from_secs(120),
            ),
            header_timeout: self.positive(
                "server.header_timeout",
                raw.server.header_timeout.as_deref(),
                Duration::from_secs(30),
            ),
            idle_timeout: self.positive(
                "server.idle_timeout",
                raw.server.idle_timeout.as_deref(),
                Duration::from_secs(60),
            ),
            body_timeout: self.positive(
                "server.body_timeout",
                raw.server.body_timeout.as_deref(),
                Duration::from_secs(60),
            ),
            write_timeout: self.positive(
                "server.write_timeout",
                raw.server.write_timeout.as_deref(),
                Duration::from_secs(60),
            ),
            max_header_bytes: {
                let key = "server.max_header_bytes";
                let v = self.size(key, raw.server.max_header_bytes.as_ref(), 64 * 1024);
                if v < 8192 {
                    self.problem(key, format!("{v} is below the minimum of 8 KiB (8192); Coupa tokens alone are several KB"));
                }
                v.max(8192) as usize
            },
            max_body_bytes: raw
                .server
                .max_body_bytes
                .as_ref()
                .map(|s| self.size("server.max_body_bytes", Some(s), 0)),
            max_concurrent_requests: match raw.server.max_concurrent_requests {
                Some(0) => {
                    self.problem(
                        "server.max_concurrent_requests",
                        "0 would refuse every request; use a positive number",
                    );
                    4096
                }
                v => v.unwrap_or(4096),
            },
            shutdown_grace: self.duration(
                "server.shutdown_grace",
                raw.server.shutdown_grace.as_deref(),
                Duration::from_secs(30),
            ),
            retry_body_limit: self.size(
                "server.retry_body_limit",
                raw.server.retry_body_limit.as_ref(),
                1024 * 1024,
            ),
            tls: raw.server.tls.as_ref().and_then(|t| self.server_tls(t)),
            workers: match raw.server.workers {
                Some(n @ (0 | 257..)) => {
                    self.problem(
                        "server.workers",
                        format!(
                            "{n} is out of range; use 1 to 256, or leave it out for one per CPU"
                        ),
                    );
                    1
                }
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
        };
        let admin = Admin {
            listen: self.listen(
                "admin.listen",
                raw.admin.listen.as_deref(),
                SocketAddr::from(([127, 0, 0, 1], 9090)),
            ),
        };
        let upstream = Upstream {
            connect_timeout: self.positive(
                "upstream.connect_timeout",
                raw.upstream.connect_timeout.as_deref(),
                Duration::from_secs(5),
            ),
            pool_idle_timeout: self.positive(
                "upstream.pool_idle_timeout",
                raw.upstream.pool_idle_timeout.as_deref(),
                Duration::from_secs(50),
            ),
            pool_max_idle_per_host: raw
                .upstream
                .pool_max_idle_per_host
                .unwrap_or(DEFAULT_POOL_MAX_IDLE_PER_HOST),
            ca_file: raw
                .upstream
                .ca_file
                .as_deref()
                .and_then(|f| self.readable_file("upstream.ca_file", f)),
            proxy: self.outbound_proxy(&raw.upstream),
        };
        let instances = raw
            .instances
            .iter()
            .map(|(name, i)| (name.clone(), Arc::new(self.instance(name, i))))
            .collect();
        let clients = raw
            .clients
            .iter()
            .map(|(name, c)| (name.clone(), Arc::new(self.client(name, c, raw))))
            .collect();
        if raw.routes.is_empty() {
            let hint = "no routes defined; \
                add a [[routes]] table with prefix = \"/NAME\" and instance = \"NAME\"";
            self.problem("routes", hint);
        }
        let mut routes: Vec<Route> = Vec::new();
        for (i, r) in raw.routes.iter().enumerate() {
            let route = self.route(i, r, raw, server.request_timeout, server.max_body_bytes);
            // An invalid prefix is left empty; it was reported already.
            let earlier = routes.iter().position(|o| o.prefix == route.prefix);
            if let (false, Some(j)) = (route.prefix.is_empty(), earlier) {
                let written = r.prefix.as_deref().unwrap_or_default();
                let shown = if written == route.prefix {
                    format!("{written:?}")
                } else {
                    format!("{written:?} (same as {:?})", route.prefix)
                };
                self.problem(
                    format!("routes[{i}].prefix"),
                    format!("{shown} is already used by routes[{j}]; prefixes must be unique"),
                );
            }
            routes.push(route);
        }
        let integrations = self.integrations(&raw.integrations, &routes);
        self.anonymous_exposure(server.listen, &routes, &integrations);
        let migration = Migration {
            revoke_after: self.positive(
                "migration.revoke_after",
                raw.migration.revoke_after.as_deref(),
                Duration::from_secs(7 * 24 * 3600),
            ),
        };
        let scopes = Arc::new(self.scope_table(&raw.scope_rules));
        let log = Log {
            format: match raw.log.format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    self.problem(
                        "log.format",
                        format!(r#"{other:?} is not a log format; use "text" or "json""#),
                    );
                    LogFormat::Text
                }
            },
            access: raw.log.access.unwrap_or(true),
        };
        Config {
            server,
            admin,
            upstream,
            instances,
            clients,
            routes,
            integrations,
            migration,
            log,
            scopes,
            source: None,
        }
    }

    fn instance(&mut self, name: &str, raw: &RawInstance) -> Instance {
        let key = format!("instances.{name}");
        self.name(&key, name);
        let hint = "export it or write the value directly";
        let url_key = format!("{key}.url");
        let (url, base_path) = self
            .required(&url_key, &raw.url, &format!(r#"url = "{EXAMPLE_URL}""#))
            .and_then(|u| self.expand(&url_key, u, hint))
            .and_then(|u| self.check(&url_key, base_url_parts(&u)))
            .unwrap_or_default();
        let token_url_key = format!("{key}.token_url");
        let token_url = match &raw.token_url {
            Some(t) => self
                .expand(&token_url_key, t, hint)
                .and_then(|t| {
                    self.check(
                        &token_url_key,
                        http_url(&t, &format!("{EXAMPLE_URL}/oauth2/token")).map(|_| t),
                    )
                })
                .unwrap_or_default(),
            None => format!(
                "{}://{}{base_path}/oauth2/token",
                url.scheme_str().unwrap_or("https"),
                url.authority().map_or("", |a| a.as_str())
            ),
        };
        Instance {
            name: name.to_owned(),
            url,
            base_path,
            token_url,
            token_timeout: self.positive(
                &format!("{key}.token_timeout"),
                raw.token_timeout.as_deref(),
                Duration::from_secs(10),
            ),
            rate_limit: self.rate_limit(&format!("{key}.rate_limit"), raw.rate_limit.as_ref()),
        }
    }

    fn rate_limit(&mut self, key: &str, raw: Option<&RawRateLimit>) -> Option<RateLimit> {
        let default = RateLimit {
            per_second: 25.0,
            burst: 20,
            max_queue_wait: Duration::from_secs(30),
        };
        let Some(raw) = raw else { return Some(default) };
        if raw.enabled == Some(false) {
            if raw.per_second.is_some() || raw.burst.is_some() || raw.max_queue_wait.is_some() {
                self.problem(
                    key,
                    "enabled = false ignores the other settings; remove them or enable the limit",
                );
            }
            return None;
        }
        let per_second = raw.per_second.unwrap_or(default.per_second);
        if !(per_second.is_finite() && per_second > 0.0) {
            self.problem(
                format!("{key}.per_second"),
                format!("{per_second} must be a positive number of requests per second, e.g. 25"),
            );
        }
        let burst = raw.burst.unwrap_or(default.burst);
        if burst == 0 {
            self.problem(
                format!("{key}.burst"),
                "0 would refuse every request; use at least 1 (Coupa documents 20)",
            );
        }
        Some(RateLimit {
            per_second: if per_second.is_finite() && per_second > 0.0 {
                per_second
            } else {
                default.per_second
            },
            burst: burst.max(1),
            max_queue_wait: self.duration(
                &format!("{key}.max_queue_wait"),
                raw.max_queue_wait.as_deref(),
                default.max_queue_wait,
            ),
        })
    }

    fn size(&mut self, key: &str, raw: Option<&RawSize>, default: u64) -> u64 {
        match raw {
            None => default,
            Some(RawSize::Bytes(n)) => *n,
            Some(RawSize::Text(t)) => {
                let parsed = parse_size(t).ok_or_else(|| {
                    format!(r#"{t:?} is not a size; use a number of bytes or forms like "64KiB", "1MiB", "250MB""#)
                });
                self.check(key, parsed).unwrap_or(default)
            }
        }
    }

    fn readable_file(&mut self, key: &str, raw: &str) -> Option<PathBuf> {
        let expanded = self.expand(key, raw, "export it or write the path directly")?;
        let path = self.base_dir.join(expanded);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Some(path),
            Ok(_) => {
                self.problem(key, format!("\"{}\" is not a file", path.display()));
                None
            }
            Err(e) => {
                self.problem(key, format!("cannot read \"{}\": {e}", path.display()));
                None
            }
        }
    }

    fn server_tls(&mut self, raw: &RawServerTls) -> Option<ServerTls> {
        let cert = self
            .required(
                "server.tls.cert",
                &raw.cert,
                r#"cert = "/path/to/fullchain.pem""#,
            )
            .map(str::to_owned);
        let key = self
            .required(
                "server.tls.key",
                &raw.key,
                r#"key = "/path/to/privkey.pem""#,
            )
            .map(str::to_owned);
        let cert = cert.and_then(|c| self.readable_file("server.tls.cert", &c));
        let key = key.and_then(|k| self.readable_file("server.tls.key", &k));
        Some(ServerTls {
            cert: cert?,
            key: key?,
        })
    }

    fn outbound_proxy(&mut self, raw: &RawUpstream) -> OutboundProxy {
        match raw.proxy.as_deref() {
            None => {
                if raw.no_proxy.is_some() {
                    self.problem("upstream.no_proxy", "only used with upstream.proxy = \"http://host:port\"; with the environment's proxy use NO_PROXY");
                }
                OutboundProxy::FromEnv
            }
            Some("none") => OutboundProxy::Direct,
            Some(url) => {
                let Some(url) =
                    self.expand("upstream.proxy", url, "export it or write the URL directly")
                else {
                    return OutboundProxy::FromEnv;
                };
                // Not echoed: a proxy URL may carry a password.
                let ok = url.parse::<Uri>().ok().filter(|u| {
                    matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some()
                });
                if ok.is_none() {
                    self.problem(
                        "upstream.proxy",
                        r#"is not a proxy URL; use "http://proxy.example.com:3128" or "none""#,
                    );
                }
                OutboundProxy::Url {
                    url,
                    no_proxy: raw.no_proxy.clone().unwrap_or_default(),
                }
            }
        }
    }

    fn client(&mut self, name: &str, raw: &RawClient, all: &RawConfig) -> Client {
        let key = format!("clients.{name}");
        self.name(&key, name);
        let instance_key = format!("{key}.instance");
        let instance = self
            .required(
                &instance_key,
                &raw.instance,
                r#"instance = "NAME" naming an [instances.NAME] table"#,
            )
            .unwrap_or_default()
            .to_owned();
        if raw.instance.is_some() && !all.instances.contains_key(&instance) {
            self.problem(
                &instance_key,
                unknown("instance", &instance, all.instances.keys()),
            );
        }
        let id_key = format!("{key}.client_id");
        let client_id = self
            .required(
                &id_key,
                &raw.client_id,
                r#"client_id = "..." from the client's page in Coupa"#,
            )
            .and_then(|id| self.expand(&id_key, id, "export it or write the value directly"))
            .and_then(|id| {
                self.non_empty(&id_key, id, "set it to the client's identifier from Coupa")
            })
            .unwrap_or_default();
        let client_secret = SecretString::from(self.secret(&key, raw).unwrap_or_default());
        let scopes = self.scopes(&key, raw.scopes.as_deref());
        let refresh_key = format!("{key}.refresh_after");
        let refresh_after = self.positive(
            &refresh_key,
            raw.refresh_after.as_deref(),
            Duration::from_secs(20 * 3600),
        );
        let warmup_key = format!("{key}.token_warmup");
        let token_warmup = self.duration(
            &warmup_key,
            raw.token_warmup.as_deref(),
            Duration::from_secs(5),
        );
        if token_warmup >= refresh_after {
            self.problem(
                warmup_key,
                format!(
                    "{:?} must be shorter than refresh_after ({:?})",
                    written(raw.token_warmup.as_deref(), token_warmup),
                    written(raw.refresh_after.as_deref(), refresh_after),
                ),
            );
        }
        // Already expanded (and any problem reported) by `secret`; kept for change detection.
        let secret_file = raw
            .client_secret_file
            .as_deref()
            .and_then(|f| expand_vars(f, self.env, "").ok())
            .map(|f| self.base_dir.join(f));
        Client {
            name: name.to_owned(),
            instance,
            client_id,
            client_secret,
            scopes,
            refresh_after,
            token_warmup,
            secret_file,
        }
    }

    fn non_empty(&mut self, key: &str, value: String, hint: &str) -> Option<String> {
        if value.is_empty() {
            self.problem(key, format!("is empty; {hint}"));
            return None;
        }
        Some(value)
    }

    /// Table keys end up in key paths, logs and metric labels, so keep them to bare TOML keys.
    fn name(&mut self, key: &str, name: &str) {
        let bare = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if name.is_empty() || !name.chars().all(bare) {
            self.problem(
                key,
                format!(r#"{name:?} is not a valid name; use letters, digits, "-" and "_""#),
            );
        }
    }

    /// The secret from `client_secret` or `client_secret_file`. Messages name keys and file
    /// paths only, never the value.
    fn secret(&mut self, key: &str, raw: &RawClient) -> Option<String> {
        let secret_key = format!("{key}.client_secret");
        let file_key = format!("{key}.client_secret_file");
        match (&raw.client_secret, &raw.client_secret_file) {
            (Some(_), Some(_)) => {
                self.problem(
                    key,
                    "set either client_secret or client_secret_file, not both",
                );
                None
            }
            (None, None) => {
                let hint = "missing client secret; add client_secret = \"${VAR}\" \
                    or client_secret_file = \"/path/to/file\"";
                self.problem(key, hint);
                None
            }
            (Some(secret), None) => {
                let secret =
                    self.expand(&secret_key, secret, "export it or use client_secret_file")?;
                self.non_empty(
                    &secret_key,
                    secret,
                    "set it to the client's secret from Coupa",
                )
            }
            (None, Some(file)) => {
                let file = self.expand(&file_key, file, "export it or write the path directly")?;
                let path = self.base_dir.join(file);
                let read = read_secret_file(&path);
                let secret = self.check(&file_key, read)?.trim_end().to_owned();
                let hint = format!(
                    "\"{}\" is empty; write the client's secret into it",
                    path.display()
                );
                if secret.is_empty() {
                    self.problem(&file_key, hint);
                    return None;
                }
                Some(secret)
            }
        }
    }

    fn scopes(&mut self, key: &str, raw: Option<&[String]>) -> Vec<String> {
        let key = format!("{key}.scopes");
        let list_them = "list the scopes this client may use, as shown under \"Oidc Scopes\" \
            on its page in Coupa, e.g. scopes = [\"core.invoice.read\"]";
        let scopes = raw.unwrap_or_default();
        match raw {
            None => self.problem(&key, format!("missing; {list_them}")),
            Some([]) => self.problem(&key, format!("is empty; {list_them}")),
            Some(_) => {}
        }
        for (i, scope) in scopes.iter().enumerate() {
            let scope_key = format!("{key}[{i}]");
            let message = if scope.is_empty() {
                "is empty; remove it".to_owned()
            } else if scope.contains(',') {
                format!("{scope:?} contains a comma; {SCOPES_HINT}")
            } else if scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
                format!("{scope:?} contains whitespace; {SCOPES_HINT}")
            } else if let Some(j) = scopes[..i].iter().position(|s| s == scope) {
                format!("{scope:?} is already listed as scopes[{j}]; remove the duplicate")
            } else {
                continue;
            };
            self.problem(scope_key, message);
        }
        scopes.to_vec()
    }

    fn scope_table(&mut self, raw: &[RawScopeRule]) -> ScopeTable {
        let before = self.problems.len();
        let mut rules = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let key = format!("scope_rules[{i}]");
            let pattern = self
                .required(
                    &format!("{key}.path"),
                    &r.path,
                    r#"path = "/api/RESOURCE" (may use * for one segment)"#,
                )
                .unwrap_or_default()
                .to_owned();
            let methods = r.methods.as_ref().map(|list| {
                list.iter()
                    .enumerate()
                    .filter_map(|(j, m)| {
                        let parsed = scopes::parse_method(m).ok_or_else(|| {
                            format!(r#"{m:?} is not an HTTP method; use upper-case names such as "GET" or "POST""#)
                        });
                        self.check(&format!("{key}.methods[{j}]"), parsed)
                    })
                    .collect()
            });
            let scopes = match &r.scopes {
                None => {
                    self.problem(format!("{key}.scopes"), r#"missing; list the scopes that allow it, e.g. scopes = ["core.common.read"] (any one suffices)"#);
                    Vec::new()
                }
                Some(list) => list.clone(),
            };
            rules.push(ScopeRule {
                pattern,
                methods,
                exact: r.exact.unwrap_or(false),
                scopes,
                source: RuleSource::Config { index: i },
            });
        }
        if self.problems.len() > before {
            // Reported already; the table would only repeat them.
            return ScopeTable::builtin();
        }
        match ScopeTable::new(rules) {
            Ok(table) => table,
            Err(e) => {
                self.problems.push(e.message);
                ScopeTable::builtin()
            }
        }
    }

    fn integrations(&mut self, raw: &[RawIntegration], routes: &[Route]) -> Vec<Integration> {
        let mut out: Vec<Integration> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let key = format!("integrations[{i}]");
            let name = self
                .required(
                    &format!("{key}.name"),
                    &r.name,
                    r#"name = "erp-invoices" (shown in logs, metrics and /status)"#,
                )
                .unwrap_or_default()
                .to_owned();
            if !name.is_empty() {
                self.name(&format!("{key}.name"), &name);
                if let Some(j) = out.iter().position(|o| o.name == name) {
                    self.problem(
                        format!("{key}.name"),
                        format!(
                            "{name:?} is already used by integrations[{j}]; names must be unique"
                        ),
                    );
                }
            }
            let key_sha256 = r.key_sha256.as_deref().and_then(|h| {
                let parsed = parse_sha256(h);
                self.check(&format!("{key}.key_sha256"), parsed)
            });
            if let Some(hash) = key_sha256 {
                if let Some(j) = out.iter().position(|o| o.key_sha256 == Some(hash)) {
                    self.problem(
                        format!("{key}.key_sha256"),
                        format!("the same key is already integrations[{j}]'s; one key identifies one integration"),
                    );
                }
            }
            let mut allow_ips = Vec::new();
            for (j, net) in r.allow_ips.iter().flatten().enumerate() {
                let parsed = parse_net(net);
                if let Some(net) = self.check(&format!("{key}.allow_ips[{j}]"), parsed) {
                    allow_ips.push(net);
                }
            }
            if r.key_sha256.is_none() && r.allow_ips.as_ref().is_none_or(|a| a.is_empty()) {
                self.problem(
                    &key,
                    "no way to recognise it; add key_sha256 (from `coupa-gateway hash-key`) and/or allow_ips",
                );
            }
            let mut allowed = Vec::new();
            match &r.routes {
                None => self.problem(
                    format!("{key}.routes"),
                    r#"missing; list the route prefixes it may use, e.g. routes = ["/prod"]"#,
                ),
                Some(list) if list.is_empty() => self.problem(
                    format!("{key}.routes"),
                    r#"is empty; list the route prefixes it may use, e.g. routes = ["/prod"]"#,
                ),
                Some(list) => {
                    for (j, p) in list.iter().enumerate() {
                        let normalised = route_prefix(p).unwrap_or_else(|_| p.clone());
                        if routes.iter().any(|rt| rt.prefix == normalised) {
                            allowed.push(normalised);
                        } else {
                            let known: Vec<&str> =
                                routes.iter().map(|rt| rt.prefix.as_str()).collect();
                            self.problem(
                                format!("{key}.routes[{j}]"),
                                format!("no route with prefix {p:?}; known: {}", known.join(", ")),
                            );
                        }
                    }
                }
            }
            out.push(Integration {
                name,
                key_sha256,
                allow_ips,
                routes: allowed,
            });
        }
        out
    }

    /// Secure by default: a gateway reachable from the network must not hand out Coupa access
    /// (with a real token) to whoever connects, unless the route says so.
    fn anonymous_exposure(
        &mut self,
        listen: SocketAddr,
        routes: &[Route],
        integrations: &[Integration],
    ) {
        if listen.ip().is_loopback() {
            return;
        }
        for (i, r) in routes.iter().enumerate() {
            let restricted = integrations.iter().any(|g| g.routes.contains(&r.prefix));
            if !restricted && !r.allow_anonymous && r.mode != Mode::Blocked {
                self.problem(
                    format!("routes[{i}]"),
                    format!(
                        "server.listen {listen} is not a loopback address and no [[integrations]] entry lists \
                         route {:?}, so anyone who can reach the port could use it; add an \
                         [[integrations]] entry with key_sha256 or allow_ips and routes = [{:?}], or set \
                         allow_anonymous = true on the route to accept that",
                        r.prefix, r.prefix
                    ),
                );
            }
        }
    }

    fn route(
        &mut self,
        i: usize,
        raw: &RawRoute,
        all: &RawConfig,
        default_timeout: Duration,
        default_max_body: Option<u64>,
    ) -> Route {
        let key = format!("routes[{i}]");
        let prefix_key = format!("{key}.prefix");
        let prefix = self
            .required(&prefix_key, &raw.prefix, r#"prefix = "/NAME""#)
            .and_then(|p| self.check(&prefix_key, route_prefix(p)))
            .unwrap_or_default();
        let instance = raw.instance.clone().unwrap_or_default();
        let instance_key = format!("{key}.instance");
        // Client checks against an unknown instance would only repeat the same mistake.
        let instance_ok = match &raw.instance {
            None => {
                let hint = raw
                    .client
                    .as_ref()
                    .and_then(|c| all.clients.get(c)?.instance.as_deref())
                    .unwrap_or("NAME");
                self.problem(&instance_key, format!("missing; add instance = {hint:?}"));
                false
            }
            Some(name) if !all.instances.contains_key(name) => {
                self.problem(
                    &instance_key,
                    unknown("instance", name, all.instances.keys()),
                );
                false
            }
            Some(_) => true,
        };
        let mode_key = format!("{key}.mode");
        let mode = match raw.mode.as_deref() {
            None | Some("oauth") => Mode::OAuth,
            Some("passthrough") => Mode::Passthrough,
            Some("blocked") => Mode::Blocked,
            Some(other) => {
                self.problem(
                    &mode_key,
                    format!(r#"{other:?} is not a mode; use "oauth", "passthrough" or "blocked""#),
                );
                Mode::OAuth
            }
        };
        let scope_check = match raw.scope_check.as_deref() {
            None | Some("warn") => ScopeCheck::Warn,
            Some("enforce") => ScopeCheck::Enforce,
            Some("off") => ScopeCheck::Off,
            Some(other) => {
                self.problem(
                    format!("{key}.scope_check"),
                    format!(r#"{other:?} is not a scope check; use "enforce", "warn" or "off""#),
                );
                ScopeCheck::Warn
            }
        };
        if raw.blocked_message.is_some() && mode != Mode::Blocked {
            self.problem(
                format!("{key}.blocked_message"),
                r#"only used with mode = "blocked"; remove it or set the mode"#,
            );
        }
        let client = match &raw.client {
            Some(name) => {
                let client_key = format!("{key}.client");
                match all.clients.get(name).map(|c| c.instance.as_deref()) {
                    None => self.problem(client_key, unknown("client", name, all.clients.keys())),
                    Some(Some(owner)) if instance_ok && owner != instance => {
                        let message = format!(
                            "client {name:?} belongs to instance {owner:?}, \
                             but the route targets {instance:?}"
                        );
                        self.problem(client_key, message);
                    }
                    Some(_) => {}
                }
                Some(name.clone())
            }
            None if !instance_ok => None,
            None => {
                let candidates: Vec<&str> = all
                    .clients
                    .iter()
                    .filter(|(_, c)| c.instance.as_deref() == Some(instance.as_str()))
                    .map(|(n, _)| n.as_str())
                    .collect();
                match candidates[..] {
                    [only] => Some(only.to_owned()),
                    // Without a token, a route needs no client; one may be named later.
                    _ if mode != Mode::OAuth => None,
                    [] => {
                        let message = format!(
                            "instance {instance:?} has no clients; \
                             add a [clients.NAME] table with instance = {instance:?}"
                        );
                        self.problem(&key, message);
                        None
                    }
                    _ => {
                        let message = format!(
                            "instance {instance:?} has {} clients ({}); \
                             name one with client = \"...\"",
                            candidates.len(),
                            candidates.join(", ")
                        );
                        self.problem(&key, message);
                        None
                    }
                }
            }
        };
        Route {
            prefix,
            instance,
            client,
            timeout: self.positive(
                &format!("{key}.timeout"),
                raw.timeout.as_deref(),
                default_timeout,
            ),
            mode,
            blocked_message: raw
                .blocked_message
                .clone()
                .unwrap_or_else(|| DEFAULT_BLOCKED_MESSAGE.to_owned()),
            allow_anonymous: raw.allow_anonymous.unwrap_or(false),
            scope_check,
            max_body_bytes: match &raw.max_body_bytes {
                Some(s) => Some(self.size(&format!("{key}.max_body_bytes"), Some(s), 0)),
                None => default_max_body,
            },
            max_concurrent_requests: match raw.max_concurrent_requests {
                Some(0) => {
                    self.problem(
                        format!("{key}.max_concurrent_requests"),
                        "0 would refuse every request; use a positive number or remove it",
                    );
                    None
                }
                v => v,
            },
        }
    }
}

/// `"64KiB"`, `"1 MiB"`, `"250MB"`, `"1024"`: decimal (kB, MB, GB) and binary (KiB, MiB, GiB)
/// units, case-insensitive.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A hex SHA-256 as `coupa-gateway hash-key` prints it.
fn parse_sha256(value: &str) -> Result<[u8; 32], String> {
    let hint = "use the 64 hex digits `coupa-gateway hash-key` prints for the key";
    let v = value.trim();
    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        // Never echo the value: someone may have pasted the key itself.
        return Err(format!(
            "is not a SHA-256 in hex ({} characters); {hint}",
            v.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in v.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).map_err(|_| hint.to_owned())?;
        out[i] = u8::from_str_radix(hex, 16).map_err(|_| hint.to_owned())?;
    }
    Ok(out)
}

/// Largest secret file read: a client secret is tens of bytes; a FIFO or a device named by
/// mistake must not hang or exhaust memory at start-up or on reload.
const MAX_SECRET_FILE: u64 = 64 * 1024;

fn read_secret_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read \"{shown}\": {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "\"{shown}\" is not a regular file; point it at the file holding the secret"
        ));
    }
    if meta.len() > MAX_SECRET_FILE {
        return Err(format!(
            "\"{shown}\" is {} bytes, too large for a client secret (at most {MAX_SECRET_FILE}); is it the right file?",
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read \"{shown}\": {e}"))
}

/// A CIDR network or a single address.
fn parse_net(value: &str) -> Result<ipnet::IpNet, String> {
    let v = value.trim();
    v.parse::<ipnet::IpNet>()
        .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!(r#"{v:?} is not an IP network; use CIDR notation such as "10.20.0.0/16" or an address"#))
}

/// The value as the user wrote it, or the default in the same notation.
fn written(raw: Option<&str>, value: Duration) -> String {
    raw.map_or_else(
        || humantime::format_duration(value).to_string(),
        str::to_owned,
    )
}

fn unknown<'a>(kind: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&str> = known.map(String::as_str).collect();
    if known.is_empty() {
        format!(
            "no {kind} named {name:?} and no [{kind}s.NAME] tables are defined; \
             add [{kind}s.{name}]"
        )
    } else {
        format!("no {kind} named {name:?}; known: {}", known.join(", "))
    }
}

/// Expands `${VAR}`, `${VAR:-default}` (default also when VAR is empty, as in the shell) and
/// `$$`. Errors never quote `raw`, which may be a secret.
fn expand_vars(
    raw: &str,
    env: &dyn Fn(&str) -> Option<String>,
    unset_hint: &str,
) -> Result<String, String> {
    let syntax = "use ${NAME} or ${NAME:-default} for a variable and $$ for a literal $";
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let Some(body) = rest.strip_prefix('{') else {
            return Err(format!("contains a lone \"$\"; {syntax}"));
        };
        let Some(end) = body.find('}') else {
            return Err(format!(
                "contains \"${{\" without a closing \"}}\"; {syntax}"
            ));
        };
        let (name, default) = match body[..end].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&body[..end], None),
        };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("contains an invalid variable name; {syntax}"));
        }
        match (env(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set; {unset_hint}"
                ))
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Validates an absolute http(s) URL with a host and no credentials or fragment.
fn http_url(value: &str, example: &str) -> Result<Uri, String> {
    // Checked first, before any message quotes the value: userinfo may hold a password.
    let after_scheme = value.split_once("://").map_or(value, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "must not contain a user name or password (\"user:pass@\"); \
             the gateway authenticates with the client's credentials"
                .to_owned(),
        );
    }
    let not_http = || format!("{value:?} must be an http:// or https:// URL such as {example:?}");
    if value.contains('#') {
        return Err(format!(
            r##"{value:?} must not contain a fragment ("#...")"##
        ));
    }
    let uri: Uri = value.parse().map_err(|_| not_http())?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        _ => return Err(not_http()),
    }
    if !matches!(uri.host(), Some(h) if !h.is_empty()) {
        return Err(format!(
            "{value:?} has no host; use a URL such as {example:?}"
        ));
    }
    Ok(uri)
}

/// Splits an instance URL into scheme+authority (path `/`) and its path without trailing `/`.
fn base_url_parts(value: &str) -> Result<(Uri, String), String> {
    let uri = http_url(value, EXAMPLE_URL)?;
    if uri.query().is_some() {
        return Err(format!(
            "{value:?} must not have a query (\"?...\"); \
             use scheme, host and optional path such as {EXAMPLE_URL:?}"
        ));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    let url = Uri::from_parts(parts).map_err(|e| format!("{value:?} is not a valid URL: {e}"))?;
    Ok((url, base_path))
}

/// Validates a route prefix and removes a trailing `/`.
fn route_prefix(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err(format!(r#"{raw:?} must start with "/""#));
    }
    // RFC 3986 path characters minus `%`: incoming paths are matched as received, so an
    // encoded or non-ASCII prefix could never match reliably.
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@".contains(c);
    if let Some(c) = raw.chars().find(|&c| !allowed(c)) {
        let why = match c {
            '%' => "percent-encoding is not supported",
            '?' | '#' => "a prefix is a path, without query or fragment",
            _ => r#"use letters, digits, "/" and - . _ ~ ! $ & ' ( ) * + , ; = : @"#,
        };
        return Err(format!("{raw:?} contains {c:?}; {why}"));
    }
    if raw.contains("//") {
        return Err(format!(r#"{raw:?} contains "//"; use single slashes"#));
    }
    let prefix = match raw.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => raw,
    };
    if prefix.split('/').any(|s| s == "." || s == "..") {
        return Err(format!(
            r#"{raw:?} contains a "." or ".." segment; remove it"#
        ));
    }
    Ok(prefix.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    const SECRET: &str = "s3cr3t-Value-42";

    fn instance(name: &str) -> String {
        format!("[instances.{name}]\nurl = \"https://{name}.coupahost.com\"\n")
    }

    fn client(name: &str, instance: &str) -> String {
        format!(
            "[clients.{name}]\ninstance = \"{instance}\"\nclient_id = \"id-{name}\"\n\
             client_secret = \"{SECRET}\"\nscopes = [\"core.invoice.read\"]\n"
        )
    }

    fn route(prefix: &str, instance: &str) -> String {
        format!("[[routes]]\nprefix = \"{prefix}\"\ninstance = \"{instance}\"\n")
    }

    /// One instance `prod`, one client `prod-main`, one route `/prod`.
    fn minimal() -> String {
        instance("prod") + &client("prod-main", "prod") + &route("/prod", "prod")
    }

    fn parse_with(
        text: &str,
        vars: &[(&str, &str)],
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse(text, &|name: &str| vars.get(name).cloned(), base_dir)
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_with(text, &[], Path::new("."))
    }

    /// The rendered error; fails the test when `text` is valid.
    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[track_caller]
    fn assert_error(text: &str, expected: &[&str]) {
        let message = error(text);
        for part in expected {
            assert!(message.contains(part), "{part:?} not in:\n{message}");
        }
        assert!(!message.contains(SECRET), "secret leaked:\n{message}");
    }

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("coupa-gateway-config-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(&minimal()).expect("valid");
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.server.request_timeout, Duration::from_secs(120));
        assert_eq!(config.admin.listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(config.upstream.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.upstream.pool_idle_timeout, Duration::from_secs(50));
        assert_eq!(config.upstream.pool_max_idle_per_host, 1024);
        let prod = &config.instances["prod"];
        assert_eq!(prod.name, "prod");
        assert_eq!(prod.url.to_string(), "https://prod.coupahost.com/");
        assert_eq!(prod.base_path, "");
        assert_eq!(prod.token_url, "https://prod.coupahost.com/oauth2/token");
        assert_eq!(prod.token_timeout, Duration::from_secs(10));
        let main = &config.clients["prod-main"];
        assert_eq!(main.name, "prod-main");
        assert_eq!(main.instance, "prod");
        assert_eq!(main.client_id, "id-prod-main");
        assert_eq!(main.client_secret.expose_secret(), SECRET);
        assert_eq!(main.scopes, ["core.invoice.read"]);
        assert_eq!(main.refresh_after, Duration::from_secs(20 * 3600));
        assert_eq!(main.token_warmup, Duration::from_secs(5));
        let route = &config.routes[0];
        assert_eq!(route.prefix, "/prod");
        assert_eq!(route.instance, "prod");
        assert_eq!(
            route.client.as_deref(),
            Some("prod-main"),
            "the only client is picked"
        );
        assert_eq!(route.timeout, Duration::from_secs(120));
        assert_eq!(config.source, None);
    }

    #[test]
    fn full_config_uses_every_value() {
        let text = r#"
            [server]
            listen = "0.0.0.0:8000"
            request_timeout = "90s"
            [admin]
            listen = "[::1]:9999"
            [upstream]
            connect_timeout = "2s"
            pool_idle_timeout = "30s"
            pool_max_idle_per_host = 0
            [instances.prod]
            url = "https://acme.coupahost.com/coupa/"
            token_url = "https://login.example.com/token"
            token_timeout = "3s"
            [instances.test]
            url = "http://localhost:3000"
            [clients.prod-a]
            instance = "prod"
            client_id = "a"
            client_secret = "x"
            scopes = ["core.invoice.read", "core.supplier.read"]
            refresh_after = "1h 30m"
            token_warmup = "0s"
            [clients.prod-b]
            instance = "prod"
            client_id = "b"
            client_secret = "y"
            scopes = ["core.invoice.write"]
            [clients.test-main]
            instance = "test"
            client_id = "t"
            client_secret = "z"
            scopes = ["core.common.read"]
            [[routes]]
            prefix = "/prod/"
            instance = "prod"
            client = "prod-b"
            timeout = "5m"
            allow_anonymous = true
            [[routes]]
            prefix = "/"
            instance = "test"
            allow_anonymous = true
        "#;
        let config = parse(text).expect("valid");
        assert_eq!(config.server.listen, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(config.server.request_timeout, Duration::from_secs(90));
        assert_eq!(config.admin.listen, "[::1]:9999".parse().unwrap());
        assert_eq!(config.upstream.connect_timeout, Duration::from_secs(2));
        assert_eq!(config.upstream.pool_idle_timeout, Duration::from_secs(30));
        assert_eq!(config.upstream.pool_max_idle_per_host, 0);
        let prod = &config.instances["prod"];
        assert_eq!(prod.url.to_string(), "https://acme.coupahost.com/");
        assert_eq!(prod.base_path, "/coupa");
        assert_eq!(prod.token_url, "https://login.example.com/token");
        assert_eq!(prod.token_timeout, Duration::from_secs(3));
        let test = &config.instances["test"];
        assert_eq!(test.token_url, "http://localhost:3000/oauth2/token");
        let a = &config.clients["prod-a"];
        assert_eq!(a.scopes, ["core.invoice.read", "core.supplier.read"]);
        assert_eq!(a.refresh_after, Duration::from_secs(90 * 60));
        assert_eq!(a.token_warmup, Duration::ZERO);
        assert_eq!(config.routes[0].prefix, "/prod");
        assert_eq!(config.routes[0].client.as_deref(), Some("prod-b"));
        assert_eq!(config.routes[0].timeout, Duration::from_secs(300));
        assert_eq!(config.routes[1].prefix, "/");
        assert_eq!(config.routes[1].client.as_deref(), Some("test-main"));
        assert_eq!(config.routes[1].timeout, Duration::from_secs(90));
    }

    #[test]
    fn default_token_url_keeps_base_path() {
        let text = minimal().replace(
            "https://prod.coupahost.com",
            "https://prod.coupahost.com/sub/",
        );
        let config = parse(&text).expect("valid");
        assert_eq!(
            config.instances["prod"].token_url,
            "https://prod.coupahost.com/sub/oauth2/token"
        );
    }

    #[test]
    fn route_reference_errors() {
        let two = instance("prod")
            + &instance("test")
            + &client("prod-main", "prod")
            + &client("test-main", "test");
        assert_error(
            &format!(
                "{two}{}{}client = \"prod-mian\"\n",
                route("/prod", "prod"),
                route("/x", "prod")
            ),
            &[r#"routes[1].client: no client named "prod-mian"; known: prod-main, test-main"#],
        );
        assert_error(
            &format!("{two}{}client = \"test-main\"\n", route("/prod", "prod")),
            &[
                r#"routes[0].client: client "test-main" belongs to instance "test", but the route targets "prod""#,
            ],
        );
        assert_error(
            &format!("{two}{}", route("/prod", "prd")),
            &[r#"routes[0].instance: no instance named "prd"; known: prod, test"#],
        );
        let text = instance("prod")
            + &client("prod-a", "prod")
            + &client("prod-b", "prod")
            + &route("/prod", "prod");
        assert_error(
            &text,
            &[
                r#"routes[0]: instance "prod" has 2 clients (prod-a, prod-b); name one with client = "...""#,
            ],
        );
        assert_error(
            &(instance("prod") + &route("/prod", "prod")),
            &[
                r#"routes[0]: instance "prod" has no clients; add a [clients.NAME] table with instance = "prod""#,
            ],
        );
    }

    #[test]
    fn client_instance_must_exist() {
        let text = instance("prod")
            + &instance("test")
            + &client("prod-main", "prd")
            + &route("/prod", "test")
            + "client = \"prod-main\"\n";
        let message = error(&text);
        assert!(message
            .contains(r#"clients.prod-main.instance: no instance named "prd"; known: prod, test"#));
        assert_error(
            &(client("c", "prod") + &route("/p", "prod") + "client = \"c\"\n"),
            &[
                r#"clients.c.instance: no instance named "prod" and no [instances.NAME] tables are defined"#,
            ],
        );
    }

    #[test]
    fn route_prefix_errors() {
        let bad = [
            ("prod", r#"routes[0].prefix: "prod" must start with "/""#),
            ("/a//b", r#"routes[0].prefix: "/a//b" contains "//""#),
            (
                "/a/./b",
                r#"routes[0].prefix: "/a/./b" contains a "." or ".." segment"#,
            ),
            (
                "/a/..",
                r#"routes[0].prefix: "/a/.." contains a "." or ".." segment"#,
            ),
            ("/a?b", r#"routes[0].prefix: "/a?b" contains '?'"#),
            ("/a#b", r#"routes[0].prefix: "/a#b" contains '#'"#),
            (
                "/a%20",
                r#"routes[0].prefix: "/a%20" contains '%'; percent-encoding"#,
            ),
            ("/a b", r#"routes[0].prefix: "/a b" contains ' '"#),
            ("/a\\tb", r#"routes[0].prefix: "/a\tb" contains '\t'"#),
            (
                "/a\\u0001",
                r#"routes[0].prefix: "/a\u{1}" contains '\u{1}'"#,
            ),
            ("/prød", r#"routes[0].prefix: "/prød" contains 'ø'"#),
        ];
        for (prefix, expected) in bad {
            let text = minimal().replace("prefix = \"/prod\"", &format!("prefix = \"{prefix}\""));
            assert_error(&text, &[expected]);
        }
    }

    #[test]
    fn duplicate_prefixes_after_normalisation() {
        let text = minimal() + &route("/other", "prod") + &route("/prod/", "prod");
        assert_error(
            &text,
            &[
                r#"routes[2].prefix: "/prod/" (same as "/prod") is already used by routes[0]; prefixes must be unique"#,
            ],
        );
        let text = minimal() + &route("/prod", "prod");
        assert_error(
            &text,
            &[r#"routes[1].prefix: "/prod" is already used by routes[0]"#],
        );
    }

    #[test]
    fn routes_are_required() {
        let text = instance("prod") + &client("prod-main", "prod");
        assert_error(
            &text,
            &["routes: no routes defined; add a [[routes]] table"],
        );
        assert_error("", &["routes: no routes defined"]);
    }

    #[test]
    fn listen_and_duration_errors() {
        assert_error(
            &(minimal() + "[server]\nlisten = \"localhost:80x\"\n"),
            &[
                r#"server.listen: "localhost:80x" is not a socket address; use IP:PORT such as "127.0.0.1:8080""#,
            ],
        );
        assert_error(
            &(minimal() + "[admin]\nlisten = \"9090\"\n"),
            &[r#"admin.listen: "9090" is not a socket address"#],
        );
        let with_client_key = |key: &str, value: &str| {
            minimal().replace(
                "[clients.prod-main]\n",
                &format!("[clients.prod-main]\n{key} = \"{value}\"\n"),
            )
        };
        assert_error(
            &with_client_key("refresh_after", "twenty hours"),
            &[
                r#"clients.prod-main.refresh_after: "twenty hours" is not a duration; use forms like "20h", "90m", "5s""#,
            ],
        );
        assert_error(
            &with_client_key("refresh_after", "0s"),
            &[r#"clients.prod-main.refresh_after: "0s" must be greater than zero"#],
        );
        assert_error(
            &with_client_key("token_warmup", "1d"),
            &[r#"clients.prod-main.token_warmup: "1d" must be shorter than refresh_after ("20h")"#],
        );
        assert_error(
            &(minimal() + "[server]\nrequest_timeout = \"0ms\"\n"),
            &[r#"server.request_timeout: "0ms" must be greater than zero"#],
        );
        assert_error(
            &(minimal() + "[upstream]\nconnect_timeout = \"soon\"\n"),
            &[r#"upstream.connect_timeout: "soon" is not a duration"#],
        );
        assert_error(
            &(minimal() + "timeout = \"0s\"\n"),
            &[r#"routes[0].timeout: "0s" must be greater than zero"#],
        );
        assert_error(
            &minimal().replace(
                "[instances.prod]\n",
                "[instances.prod]\ntoken_timeout = \"-1s\"\n",
            ),
            &[r#"instances.prod.token_timeout: "-1s" is not a duration"#],
        );
    }

    #[test]
    fn url_errors() {
        let with_url = |url: &str| minimal().replace("https://prod.coupahost.com", url);
        let cases = [
            (
                "ftp://x",
                r#"instances.prod.url: "ftp://x" must be an http:// or https:// URL such as "https://acme.coupahost.com""#,
            ),
            (
                "acme.coupahost.com",
                r#"instances.prod.url: "acme.coupahost.com" must be an http:// or https:// URL"#,
            ),
            (
                "https://",
                r#"instances.prod.url: "https://" must be an http:// or https:// URL"#,
            ),
            (
                "http://:80",
                r#"instances.prod.url: "http://:80" has no host"#,
            ),
            (
                "https://a.com/?x=1",
                r#"instances.prod.url: "https://a.com/?x=1" must not have a query"#,
            ),
            (
                "https://a.com/#top",
                r#"instances.prod.url: "https://a.com/#top" must not contain a fragment"#,
            ),
            (
                "https://a b.com",
                r#"instances.prod.url: "https://a b.com" must be an http:// or https:// URL"#,
            ),
        ];
        for (url, expected) in cases {
            assert_error(&with_url(url), &[expected]);
        }
        // The password must not be echoed back.
        let message = error(&with_url("https://user:hunter2@a.com"));
        assert!(message.contains("instances.prod.url: must not contain a user name or password"));
        assert!(!message.contains("hunter2"), "{message}");
        let token_url = |t: &str| {
            minimal().replace(
                "[instances.prod]\n",
                &format!("[instances.prod]\ntoken_url = \"{t}\"\n"),
            )
        };
        assert_error(
            &token_url("/oauth2/token"),
            &[
                r#"instances.prod.token_url: "/oauth2/token" must be an http:// or https:// URL such as "https://acme.coupahost.com/oauth2/token""#,
            ],
        );
    }

    #[test]
    fn client_errors() {
        let both = minimal().replace(
            "[clients.prod-main]\n",
            "[clients.prod-main]\nclient_secret_file = \"s\"\n",
        );
        assert_error(
            &both,
            &["clients.prod-main: set either client_secret or client_secret_file, not both"],
        );
        let neither = minimal().replace(&format!("client_secret = \"{SECRET}\"\n"), "");
        assert_error(
            &neither,
            &["clients.prod-main: missing client secret; add client_secret"],
        );
        let empty = minimal().replace(SECRET, "");
        assert_error(&empty, &["clients.prod-main.client_secret: is empty"]);
        let empty_id = minimal().replace("id-prod-main", "");
        assert_error(&empty_id, &["clients.prod-main.client_id: is empty"]);
        let no_id = minimal().replace("client_id = \"id-prod-main\"\n", "");
        assert_error(
            &no_id,
            &["clients.prod-main.client_id: missing; add client_id"],
        );
    }

    #[test]
    fn scope_errors() {
        let with_scopes = |s: &str| {
            minimal().replace("scopes = [\"core.invoice.read\"]", &format!("scopes = {s}"))
        };
        assert_error(
            &with_scopes("[]"),
            &[
                r#"clients.prod-main.scopes: is empty; list the scopes"#,
                "Oidc Scopes",
            ],
        );
        assert_error(
            &minimal().replace("scopes = [\"core.invoice.read\"]\n", ""),
            &["clients.prod-main.scopes: missing; list the scopes"],
        );
        assert_error(
            &with_scopes(r#"["core.invoice.read, core.supplier.read"]"#),
            &[
                r#"clients.prod-main.scopes[0]: "core.invoice.read, core.supplier.read" contains a comma"#,
            ],
        );
        assert_error(
            &with_scopes(r#"["a", "core.invoice.read core.supplier.read"]"#),
            &[
                r#"clients.prod-main.scopes[1]: "core.invoice.read core.supplier.read" contains whitespace"#,
            ],
        );
        assert_error(
            &with_scopes(r#"["a", "b", "a"]"#),
            &[r#"clients.prod-main.scopes[2]: "a" is already listed as scopes[0]"#],
        );
        assert_error(
            &with_scopes(r#"["a", ""]"#),
            &["clients.prod-main.scopes[1]: is empty"],
        );
    }

    #[test]
    fn missing_keys_and_bad_names() {
        assert_error(
            "[instances.prod]\n[[routes]]\ninstance = \"prod\"\n",
            &[
                r#"instances.prod.url: missing; add url = "https://acme.coupahost.com""#,
                r#"routes[0].prefix: missing; add prefix = "/NAME""#,
            ],
        );
        assert_error(
            &(minimal() + "[[routes]]\nprefix = \"/b\"\nclient = \"prod-main\"\n"),
            &[r#"routes[1].instance: missing; add instance = "prod""#],
        );
        assert_error(
            &(minimal() + "[instances.\"my prod\"]\nurl = \"https://a.com\"\n"),
            &[r#"instances.my prod: "my prod" is not a valid name"#],
        );
    }

    #[test]
    fn unknown_keys_and_syntax_errors_keep_toml_details() {
        let message = error(&(minimal() + "[server]\nlisten = \"127.0.0.1:1\"\nlsiten = \"x\"\n"));
        assert!(message.contains("unknown field `lsiten`"), "{message}");
        assert!(message.contains("`listen`"), "expected names: {message}");
        assert!(message.contains("in `server`"), "{message}");
        assert!(message.contains("line "), "{message}");
        assert_error("[server\n", &["line 1, column 8"]);
        assert_error("[tls]\ncert = \"x\"\n", &["unknown field `tls`"]);
    }

    #[test]
    fn toml_errors_never_echo_a_secret_line() {
        let typo = minimal().replace("client_secret =", "client_secrett =");
        assert_error(
            &typo,
            &["unknown field `client_secrett`", "in `clients.prod-main`"],
        );
    }

    #[test]
    fn env_expansion() {
        let text = r#"
            [instances.prod]
            url = "https://${HOST}"
            token_url = "${TOKEN_URL:-https://login.example.com/token}"
            [clients.prod-main]
            instance = "prod"
            client_id = "${ID:-fallback}-$$x"
            client_secret = "${SECRET}"
            scopes = ["core.invoice.read"]
            [[routes]]
            prefix = "/prod"
            instance = "prod"
        "#;
        let vars = [
            ("HOST", "acme.coupahost.com"),
            ("ID", ""),
            ("SECRET", SECRET),
        ];
        let config = parse_with(text, &vars, Path::new(".")).expect("valid");
        assert_eq!(
            config.instances["prod"].url.to_string(),
            "https://acme.coupahost.com/"
        );
        assert_eq!(
            config.instances["prod"].token_url,
            "https://login.example.com/token"
        );
        assert_eq!(
            config.clients["prod-main"].client_id, "fallback-$x",
            "default on empty, $$"
        );
        assert_eq!(
            config.clients["prod-main"].client_secret.expose_secret(),
            SECRET
        );

        let vars = [("HOST", "acme.coupahost.com"), ("ID", "real")];
        let message = parse_with(text, &vars, Path::new("."))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "clients.prod-main.client_secret: environment variable SECRET is not set; \
             export it or use client_secret_file"
        );
        let config = parse_with(
            text,
            &[("HOST", "h"), ("ID", "real"), ("SECRET", "s")],
            Path::new("."),
        );
        assert_eq!(
            config.expect("valid").clients["prod-main"].client_id,
            "real-$x"
        );
    }

    #[test]
    fn env_expansion_errors() {
        let vars = [("EMPTY", "")];
        let with_id = |id: &str| minimal().replace("id-prod-main", id);
        let cases = [
            (
                "${NOPE}",
                "clients.prod-main.client_id: environment variable NOPE is not set",
            ),
            ("a$b", r#"clients.prod-main.client_id: contains a lone "$""#),
            (
                "${OPEN",
                r#"clients.prod-main.client_id: contains "${" without a closing "}""#,
            ),
            (
                "${1X}",
                "clients.prod-main.client_id: contains an invalid variable name",
            ),
            ("${EMPTY}", "clients.prod-main.client_id: is empty"),
        ];
        for (id, expected) in cases {
            let message = parse_with(&with_id(id), &vars, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{expected:?} not in {message}");
        }
        let url = minimal().replace("https://prod.coupahost.com", "${COUPA_URL}");
        let message = error(&url);
        assert!(message.contains("instances.prod.url: environment variable COUPA_URL is not set"));
        // A secret with a stray `$` must not be echoed back.
        let message = error(&minimal().replace(SECRET, &format!("{SECRET}$")));
        assert!(message.contains(r#"clients.prod-main.client_secret: contains a lone "$""#));
        assert!(!message.contains(SECRET));
    }

    #[test]
    fn secret_file_is_relative_to_base_dir() {
        let dir = TempDir::new("secret-file");
        std::fs::create_dir_all(dir.0.join("secrets")).expect("mkdir");
        std::fs::write(dir.0.join("secrets/prod"), format!("{SECRET}\r\n  \n")).expect("write");
        std::fs::write(dir.0.join("empty"), "\n").expect("write");
        let with_file = |file: &str| {
            minimal().replace(
                &format!("client_secret = \"{SECRET}\""),
                &format!("client_secret_file = \"{file}\""),
            )
        };
        let config = parse_with(&with_file("${DIR:-secrets}/prod"), &[], &dir.0).expect("valid");
        assert_eq!(
            config.clients["prod-main"].client_secret.expose_secret(),
            SECRET
        );

        let missing = parse_with(&with_file("nope"), &[], &dir.0)
            .unwrap_err()
            .to_string();
        let shown = dir.0.join("nope").display().to_string();
        assert!(
            missing.contains("clients.prod-main.client_secret_file: cannot read"),
            "{missing}"
        );
        assert!(missing.contains(&shown), "{missing}");

        let empty = parse_with(&with_file("empty"), &[], &dir.0)
            .unwrap_err()
            .to_string();
        assert!(
            empty.contains("clients.prod-main.client_secret_file: "),
            "{empty}"
        );
        assert!(empty.contains("is empty"), "{empty}");
    }

    #[test]
    fn from_file_sets_source_and_prefixes_errors() {
        let dir = TempDir::new("from-file");
        std::fs::write(dir.0.join("prod.secret"), SECRET).expect("write");
        let path = dir.0.join("proxy.toml");
        let text = minimal().replace(
            &format!("client_secret = \"{SECRET}\""),
            "client_secret_file = \"prod.secret\"",
        );
        std::fs::write(&path, &text).expect("write");
        let config = Config::from_file(&path).expect("valid");
        assert_eq!(config.source.as_deref(), Some(path.as_path()));
        assert_eq!(
            config.clients["prod-main"].client_secret.expose_secret(),
            SECRET
        );

        std::fs::write(
            &path,
            text.replace("/prod\"", "prod\"") + "[server]\nlisten = \"x\"\n",
        )
        .expect("write");
        let err = Config::from_file(&path).unwrap_err();
        assert_eq!(err.problems.len(), 2);
        for line in err.to_string().lines() {
            assert!(line.starts_with(&format!("{}: ", path.display())), "{line}");
        }

        let err = Config::from_file(&dir.0.join("absent.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("absent.toml: cannot read the configuration file"),
            "{err}"
        );
    }

    #[test]
    fn all_problems_are_collected() {
        let text = minimal()
            .replace("https://prod.coupahost.com", "ftp://x")
            .replace("/prod", "prod")
            .replace("core.invoice.read", "a,b")
            + "[server]\nlisten = \"nope\"\n";
        let err = parse(&text).unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
        assert_eq!(err.to_string().lines().count(), 4);
        for key in [
            "server.listen",
            "instances.prod.url",
            "clients.prod-main.scopes[0]",
            "routes[0].prefix",
        ] {
            assert!(
                err.problems.iter().any(|p| p.starts_with(key)),
                "{key} missing: {err}"
            );
        }
    }

    #[test]
    fn secret_never_in_debug_output() {
        let config = parse(&minimal()).expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!config.describe_routes().contains(SECRET));
        let err = parse(&(minimal() + "[server]\nlisten = \"x\"\n")).unwrap_err();
        assert!(!format!("{err:?}").contains(SECRET));
    }

    #[test]
    fn describe_routes_is_aligned() {
        let test_client =
            client("test-main", "test").replace("\"core.invoice.read\"", "\"a\", \"b\"");
        let text = minimal() + &instance("test") + &test_client + &route("/", "test");
        let config = parse(&text).expect("valid");
        let table = config.describe_routes();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert_eq!(
            lines[0],
            "/prod/...  ->  https://prod.coupahost.com/...  (mode oauth, instance prod, client prod-main, timeout 2m, scope_check warn, callers anyone, scopes core.invoice.read)"
        );
        assert_eq!(
            lines[1],
            "/...       ->  https://test.coupahost.com/...  (mode oauth, instance test, client test-main, timeout 2m, scope_check warn, callers anyone, scopes a b)"
        );
    }
    const HASH: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn integration(name: &str, extra: &str) -> String {
        format!("[[integrations]]\nname = \"{name}\"\n{extra}\n")
    }

    #[test]
    fn integrations_are_validated() {
        let ok = minimal()
            + &integration(
                "erp",
                &format!("key_sha256 = \"{HASH}\"\nroutes = [\"/prod/\"]"),
            )
            + &integration(
                "batch",
                "allow_ips = [\"10.1.0.0/16\", \"192.168.1.7\"]\nroutes = [\"/prod\"]",
            );
        let config = parse(&ok).expect("valid");
        assert_eq!(config.integrations.len(), 2);
        assert_eq!(
            config.integrations[0].routes,
            vec!["/prod".to_string()],
            "prefix normalised"
        );
        assert_eq!(config.integrations[1].allow_ips.len(), 2);
        assert!(!format!("{:?}", config.integrations[0]).contains(HASH));

        assert_error(
            &(minimal() + &integration("erp", "key_sha256 = \"abc\"\nroutes = [\"/prod\"]")),
            &["integrations[0].key_sha256", "coupa-gateway hash-key"],
        );
        assert_error(
            &(minimal() + &integration("erp", "routes = [\"/prod\"]")),
            &["integrations[0]", "add key_sha256", "allow_ips"],
        );
        assert_error(
            &(minimal()
                + &integration(
                    "erp",
                    &format!("key_sha256 = \"{HASH}\"\nroutes = [\"/prd\"]"),
                )),
            &["integrations[0].routes[0]", "\"/prd\"", "known: /prod"],
        );
        assert_error(
            &(minimal()
                + &integration("erp", "allow_ips = [\"10.0.0.0/33\"]\nroutes = [\"/prod\"]")),
            &["integrations[0].allow_ips[0]", "10.0.0.0/33", "CIDR"],
        );
        let twice = integration(
            "erp",
            &format!("key_sha256 = \"{HASH}\"\nroutes = [\"/prod\"]"),
        );
        assert_error(
            &(minimal() + &twice + &twice),
            &[
                "integrations[1].name",
                "already used by integrations[0]",
                "integrations[1].key_sha256",
            ],
        );
        assert_error(
            &(minimal() + &integration("erp", "allow_ips = [\"10.0.0.1\"]")),
            &["integrations[0].routes: missing"],
        );
    }

    #[test]
    fn a_raw_key_pasted_as_hash_is_not_echoed() {
        let key = "abcdefghijABCDEFGHIJabcdefghijABCDEFGHIJ";
        let message = error(
            &(minimal()
                + &integration(
                    "erp",
                    &format!("key_sha256 = \"{key}\"\nroutes = [\"/prod\"]"),
                )),
        );
        assert!(
            message.contains("integrations[0].key_sha256") && !message.contains(key),
            "{message}"
        );
    }

    #[test]
    fn route_modes_and_scope_checks() {
        let text = minimal().replace(
            "[[routes]]\nprefix = \"/prod\"\ninstance = \"prod\"\n",
            "[[routes]]\nprefix = \"/prod\"\ninstance = \"prod\"\nmode = \"passthrough\"\nscope_check = \"enforce\"\n",
        ) + "[[routes]]\nprefix = \"/old\"\ninstance = \"prod\"\nmode = \"blocked\"\nblocked_message = \"gone\"\n";
        let config = parse(&text).expect("valid");
        assert_eq!(config.routes[0].mode, Mode::Passthrough);
        assert_eq!(config.routes[0].scope_check, ScopeCheck::Enforce);
        assert_eq!(config.routes[1].mode, Mode::Blocked);
        assert_eq!(config.routes[1].blocked_message, "gone");
        assert_error(
            &(minimal() + "[[routes]]\nprefix = \"/x\"\ninstance = \"prod\"\nmode = \"proxy\"\nscope_check = \"strict\"\nblocked_message = \"m\"\n"),
            &["routes[1].mode: \"proxy\" is not a mode", "routes[1].scope_check: \"strict\"", "routes[1].blocked_message: only used with mode = \"blocked\""],
        );
        // A passthrough route needs no client even when its instance has several.
        let two_clients = instance("prod")
            + &client("a", "prod")
            + &client("b", "prod")
            + "[[routes]]\nprefix = \"/p\"\ninstance = \"prod\"\nmode = \"passthrough\"\n";
        assert_eq!(parse(&two_clients).expect("valid").routes[0].client, None);
        assert_error(
            &two_clients.replace("mode = \"passthrough\"\n", ""),
            &["routes[0]", "has 2 clients (a, b)"],
        );
    }

    #[test]
    fn anonymous_routes_on_a_network_listener_need_consent() {
        let exposed = "[server]\nlisten = \"0.0.0.0:8080\"\n".to_owned() + &minimal();
        assert_error(
            &exposed,
            &[
                "routes[0]",
                "0.0.0.0:8080",
                "not a loopback address",
                "allow_anonymous = true",
                "[[integrations]]",
            ],
        );
        let consented = exposed.replace(
            "[[routes]]\nprefix = \"/prod\"\ninstance = \"prod\"\n",
            "[[routes]]\nprefix = \"/prod\"\ninstance = \"prod\"\nallow_anonymous = true\n",
        );
        assert!(parse(&consented).is_ok());
        let restricted = exposed
            + &integration(
                "erp",
                &format!("key_sha256 = \"{HASH}\"\nroutes = [\"/prod\"]"),
            );
        assert!(
            parse(&restricted).is_ok(),
            "a route listed by an integration is not anonymous"
        );
        let loopback = minimal();
        assert!(parse(&loopback).is_ok(), "loopback listeners may stay open");
    }

    #[test]
    fn scope_rules_extend_the_table_with_indexed_errors() {
        let text = minimal()
            + "[[scope_rules]]\npath = \"/api/custom_objects/*\"\nmethods = [\"GET\"]\nscopes = [\"core.custom_objects.read_write\"]\n";
        let config = parse(&text).expect("valid");
        let needed = config
            .scopes
            .needed(&http::Method::GET, "/api/custom_objects/widgets")
            .expect("rule applies");
        assert_eq!(&*needed.label, "core.custom_objects.read_write");
        assert_error(
            &(minimal() + "[[scope_rules]]\npath = \"api/x\"\nscopes = [\"core.common.read\"]\n"),
            &["scope_rules[0].path", "api/x"],
        );
        assert_error(
            &(minimal() + "[[scope_rules]]\npath = \"/api/x\"\nmethods = [\"get\"]\n"),
            &[
                "scope_rules[0].methods[0]",
                "\"get\"",
                "scope_rules[0].scopes: missing",
            ],
        );
        assert_error(
            &(minimal() + "[migration]\nrevoke_after = \"soon\"\n"),
            &["migration.revoke_after", "soon"],
        );
    }
    #[test]
    fn limits_tls_proxy_and_rate_limits() {
        let dir = TempDir::new("limits");
        std::fs::write(dir.0.join("cert.pem"), "x").expect("write");
        std::fs::write(dir.0.join("key.pem"), "x").expect("write");
        std::fs::write(dir.0.join("ca.pem"), "x").expect("write");
        let text = minimal().replace(
            "[instances.prod]\n",
            "[instances.prod]\nrate_limit = { per_second = 10.5, burst = 5, max_queue_wait = \"2s\" }\n",
        ) + r#"
[server]
header_timeout = "10s"
idle_timeout = "2m"
max_header_bytes = "32KiB"
max_body_bytes = "250MB"
max_concurrent_requests = 100
shutdown_grace = "5s"
retry_body_limit = 2048
tls = { cert = "cert.pem", key = "key.pem" }
[upstream]
ca_file = "ca.pem"
proxy = "http://proxy.corp:3128"
no_proxy = ".corp,10.0.0.0/8"
"#;
        let c = parse_with(&text, &[], &dir.0).expect("valid");
        assert_eq!(c.server.header_timeout, Duration::from_secs(10));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.server.max_header_bytes, 32 * 1024);
        assert_eq!(c.server.max_body_bytes, Some(250_000_000));
        assert_eq!(
            c.routes[0].max_body_bytes,
            Some(250_000_000),
            "routes inherit the server limit"
        );
        assert_eq!(c.server.max_concurrent_requests, 100);
        assert_eq!(c.server.retry_body_limit, 2048);
        assert_eq!(c.server.tls.as_ref().unwrap().cert, dir.0.join("cert.pem"));
        assert_eq!(c.upstream.ca_file, Some(dir.0.join("ca.pem")));
        assert_eq!(
            c.upstream.proxy,
            OutboundProxy::Url {
                url: "http://proxy.corp:3128".into(),
                no_proxy: ".corp,10.0.0.0/8".into()
            }
        );
        let rl = c.instances["prod"].rate_limit.clone().unwrap();
        assert_eq!(
            (rl.per_second, rl.burst, rl.max_queue_wait),
            (10.5, 5, Duration::from_secs(2))
        );

        let d = parse(&minimal()).expect("valid");
        assert_eq!(
            d.instances["prod"].rate_limit,
            Some(RateLimit {
                per_second: 25.0,
                burst: 20,
                max_queue_wait: Duration::from_secs(30)
            })
        );
        assert_eq!(d.upstream.proxy, OutboundProxy::FromEnv);
        assert_eq!(d.server.max_body_bytes, None);
        let off = minimal().replace(
            "[instances.prod]\n",
            "[instances.prod]\nrate_limit = { enabled = false }\n",
        );
        assert_eq!(
            parse(&off).expect("valid").instances["prod"].rate_limit,
            None
        );

        assert_error(
            &(minimal() + "[server]\nmax_header_bytes = 1000\nmax_body_bytes = \"lots\"\nmax_concurrent_requests = 0\nworkers = 0\n"),
            &["server.max_header_bytes: 1000 is below", "server.max_body_bytes: \"lots\" is not a size", "server.max_concurrent_requests: 0", "server.workers: 0 is out of range; use 1 to 256"],
        );
        assert_eq!(
            d.server.workers,
            std::thread::available_parallelism().unwrap().get(),
            "one worker per CPU by default"
        );
        let three = parse(&(minimal() + "[server]\nworkers = 3\n")).expect("valid");
        assert_eq!(three.server.workers, 3);
        assert_error(
            &minimal().replace(
                "[instances.prod]\n",
                "[instances.prod]\nrate_limit = { per_second = 0, burst = 0 }\n",
            ),
            &[
                "instances.prod.rate_limit.per_second: 0",
                "instances.prod.rate_limit.burst: 0",
            ],
        );
        assert_error(
            &(minimal() + "[server]\ntls = { cert = \"missing.pem\" }\n"),
            &[
                "server.tls.key: missing",
                "server.tls.cert: cannot read",
                "missing.pem",
            ],
        );
        let message = error(&(minimal() + "[upstream]\nproxy = \"ftp://user:pw@x\"\n"));
        assert!(
            message.contains("upstream.proxy") && !message.contains("pw@"),
            "{message}"
        );
        assert_error(
            &(minimal() + "[upstream]\nno_proxy = \"x\"\n"),
            &["upstream.no_proxy: only used with upstream.proxy"],
        );
        assert_eq!(
            parse(&(minimal() + "[upstream]\nproxy = \"none\"\n"))
                .expect("valid")
                .upstream
                .proxy,
            OutboundProxy::Direct
        );
    }

    #[test]
    fn sizes_accept_decimal_and_binary_units() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("250MB"), Some(250_000_000));
        assert_eq!(parse_size("2gib"), Some(2 << 30));
        assert_eq!(parse_size("1.5MB"), None);
        assert_eq!(parse_size("MB"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }

    #[test]
    fn secret_files_must_be_small_regular_files() {
        let dir = TempDir::new("secret-kinds");
        std::fs::write(dir.0.join("big"), vec![b'x'; 70 * 1024]).expect("write");
        let with_file = |file: &str| {
            minimal().replace(
                &format!("client_secret = \"{SECRET}\""),
                &format!("client_secret_file = \"{file}\""),
            )
        };
        let err = parse_with(&with_file("big"), &[], &dir.0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clients.prod-main.client_secret_file") && err.contains("too large"),
            "{err}"
        );
        let err = parse_with(&with_file("/dev/null/x"), &[], &dir.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
        let err = parse_with(&with_file("."), &[], &dir.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
