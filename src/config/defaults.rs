//! Every configuration key and what the gateway does when the file leaves it out: the one place
//! a default is written. The validator uses the constants below; [`KEYS`] pairs each with the
//! text `docs/configuration.md` and `proxy.toml` show for it, and tests hold all three
//! together (`tests/defaults.rs` reads the two files), so a default changed here and not in
//! the docs, or the other way round, fails the build's tests.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::{LogFormat, Mode, RateLimit, ScopeCheck};

/// `server.listen`: loopback, so a gateway started without a configured listener is not
/// reachable from the network.
pub const SERVER_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8080));
/// `server.request_timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// `server.header_timeout`.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// `server.idle_timeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `server.body_timeout`.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// `server.write_timeout`.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// `server.max_header_bytes`: Coupa JWTs are several KB; integrations' own headers are small.
pub const MAX_HEADER_BYTES: u64 = 64 * 1024;
/// `server.max_concurrent_requests`.
pub const MAX_CONCURRENT_REQUESTS: usize = 4096;
/// `server.retry_body_limit`.
pub const RETRY_BODY_LIMIT: u64 = 1024 * 1024;
/// `server.shutdown_grace`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// `server.proxy_protocol`: off; a balancer must be set up to send the header, and a
/// listener expecting one refuses every connection without it.
pub const PROXY_PROTOCOL: bool = false;

/// `server.workers`: one per CPU the process may use.
pub fn workers() -> usize {
    // Unknown (some sandboxes) is rare; one worker still serves everything.
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `admin.listen`: loopback, as metrics and `/status` are for operators only.
pub const ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 9090));

/// `upstream.connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `upstream.pool_idle_timeout`: below the usual 60–75 s upstream keep-alive, so the gateway
/// closes an idle connection before the other side does and never reuses a dying one.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// `upstream.pool_max_idle_per_host`.
///
/// PERF: with 64, 256 requests in flight made the pool open ~2,300 connections/s; with 1024 it
/// opens one per request slot and req/s rose ×1.29, p99 fell ×0.68 (load bench A/B,
/// benches/RESULTS.md). See [`super::Upstream::pool_max_idle_per_host`].
pub const POOL_MAX_IDLE_PER_HOST: usize = 1024;

/// The path appended to `instances.NAME.url` (with its base path) when `token_url` is left out:
/// where Coupa serves its token endpoint.
pub const TOKEN_PATH: &str = "/oauth2/token";
/// `instances.NAME.token_timeout`.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// `instances.NAME.rate_limit.enabled`.
pub const RATE_LIMIT_ENABLED: bool = true;
/// `instances.NAME.rate_limit`: Coupa's documented budget, 25 requests per second with bursts
/// of 20, per instance.
pub const RATE_LIMIT: RateLimit = RateLimit {
    per_second: 25.0,
    burst: 20,
    max_queue_wait: Duration::from_secs(30),
};

/// `clients.NAME.refresh_after`: Coupa's advice for its 24 h tokens (docs/coupa-api.md).
pub const REFRESH_AFTER: Duration = Duration::from_secs(20 * 3600);
/// `clients.NAME.token_warmup`: Coupa advises waiting ~5 s before using a new token.
pub const TOKEN_WARMUP: Duration = Duration::from_secs(5);

/// `routes[].mode`.
pub const MODE: Mode = Mode::OAuth;
/// `routes[].scope_check`: see what would be refused before refusing it.
pub const SCOPE_CHECK: ScopeCheck = ScopeCheck::Warn;
/// `routes[].allow_anonymous`: secure by default.
pub const ALLOW_ANONYMOUS: bool = false;
/// `routes[].blocked_message`.
pub const BLOCKED_MESSAGE: &str =
    "this integration route has been retired; contact your Coupa integration team";

/// `scope_rules[].exact`.
pub const SCOPE_RULE_EXACT: bool = false;

/// `log.format`.
pub const LOG_FORMAT: LogFormat = LogFormat::Text;
/// `log.access`.
pub const LOG_ACCESS: bool = true;

/// `migration.revoke_after`.
pub const REVOKE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// `state.flush_interval`: a crash loses at most this much of the ledger; a write a second
/// is nothing for a file or a Redis server.
pub const STATE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// `routes[].shadow_sample`: off.
pub const SHADOW_SAMPLE: f64 = 0.0;
/// `state.replicas`: one gateway unless told otherwise.
pub const STATE_REPLICAS: u32 = 1;
/// `integrations[].weight`: equal shares.
pub const INTEGRATION_WEIGHT: u32 = 1;

/// One key of `proxy.toml` and what the gateway does without it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Key {
    /// The key path as the docs write it: `server.listen`, `instances.NAME.url`,
    /// `routes[].mode`, `instances.NAME.rate_limit.burst`.
    pub path: &'static str,
    /// What leaving it out means.
    pub when_absent: Absent,
}

/// What a key's absence means, and so what the docs' "default" column must say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Absent {
    /// A fixed default. The docs and `proxy.toml` show `shown`, which the configuration's own
    /// parsers read as `value`.
    Value {
        /// As the docs write it: `120s`, `64KiB`, `4096`, `127.0.0.1:8080`.
        shown: &'static str,
        /// The constant the validator uses.
        value: Value,
    },
    /// Derived from other keys; the docs show this formula: another key's path
    /// (`server.request_timeout`) or a template (`{url}/oauth2/token`).
    Derived(&'static str),
    /// Worked out when the file is read (from the machine, the environment or the other
    /// tables), or too long for the table; the docs say it in words.
    Described,
    /// No default: the key is required, or leaving it out leaves the feature off (no limit,
    /// no TLS, no extra CA). The docs show `—`, `none` or `all`.
    Nothing,
    /// An inline table whose fields have their own keys (`PATH.field`); the docs show the
    /// defaults of all of them as one inline TOML table.
    Table,
}

/// A default's typed value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A duration (`"120s"`).
    Duration(Duration),
    /// A byte size (`"64KiB"` or a number).
    Bytes(u64),
    /// A count (`4096`).
    Count(u64),
    /// A rate (`25`, per second).
    Rate(f64),
    /// A socket address (`"127.0.0.1:8080"`).
    Address(SocketAddr),
    /// A boolean.
    Flag(bool),
    /// One of an enumeration's TOML spellings (`"oauth"`).
    Word(&'static str),
}

const fn value(path: &'static str, shown: &'static str, value: Value) -> Key {
    Key {
        path,
        when_absent: Absent::Value { shown, value },
    }
}

const fn derived(path: &'static str, formula: &'static str) -> Key {
    Key {
        path,
        when_absent: Absent::Derived(formula),
    }
}

const fn described(path: &'static str) -> Key {
    Key {
        path,
        when_absent: Absent::Described,
    }
}

const fn nothing(path: &'static str) -> Key {
    Key {
        path,
        when_absent: Absent::Nothing,
    }
}

const fn table(path: &'static str) -> Key {
    Key {
        path,
        when_absent: Absent::Table,
    }
}

/// Every key `proxy.toml` accepts, in the docs' order.
// `as u64` only widens (usize is at most 64 bits); a const context has no `From`.
pub const KEYS: &[Key] = &[
    value(
        "server.listen",
        "127.0.0.1:8080",
        Value::Address(SERVER_LISTEN),
    ),
    value(
        "server.request_timeout",
        "120s",
        Value::Duration(REQUEST_TIMEOUT),
    ),
    value(
        "server.header_timeout",
        "30s",
        Value::Duration(HEADER_TIMEOUT),
    ),
    value("server.idle_timeout", "60s", Value::Duration(IDLE_TIMEOUT)),
    value("server.body_timeout", "60s", Value::Duration(BODY_TIMEOUT)),
    value(
        "server.write_timeout",
        "60s",
        Value::Duration(WRITE_TIMEOUT),
    ),
    value(
        "server.max_header_bytes",
        "64KiB",
        Value::Bytes(MAX_HEADER_BYTES),
    ),
    nothing("server.max_body_bytes"),
    value(
        "server.max_concurrent_requests",
        "4096",
        Value::Count(MAX_CONCURRENT_REQUESTS as u64),
    ),
    value(
        "server.retry_body_limit",
        "1MiB",
        Value::Bytes(RETRY_BODY_LIMIT),
    ),
    value(
        "server.shutdown_grace",
        "30s",
        Value::Duration(SHUTDOWN_GRACE),
    ),
    described("server.workers"),
    nothing("server.trusted_proxies"),
    value(
        "server.proxy_protocol",
        "false",
        Value::Flag(PROXY_PROTOCOL),
    ),
    nothing("server.tls.cert"),
    nothing("server.tls.key"),
    value(
        "admin.listen",
        "127.0.0.1:9090",
        Value::Address(ADMIN_LISTEN),
    ),
    nothing("admin.token"),
    nothing("admin.token_file"),
    value(
        "upstream.connect_timeout",
        "5s",
        Value::Duration(CONNECT_TIMEOUT),
    ),
    value(
        "upstream.pool_idle_timeout",
        "50s",
        Value::Duration(POOL_IDLE_TIMEOUT),
    ),
    nothing("upstream.ca_file"),
    described("upstream.proxy"),
    nothing("upstream.no_proxy"),
    value(
        "upstream.pool_max_idle_per_host",
        "1024",
        Value::Count(POOL_MAX_IDLE_PER_HOST as u64),
    ),
    nothing("instances.NAME.url"),
    derived("instances.NAME.token_url", "{url}/oauth2/token"),
    value(
        "instances.NAME.token_timeout",
        "10s",
        Value::Duration(TOKEN_TIMEOUT),
    ),
    table("instances.NAME.rate_limit"),
    value(
        "instances.NAME.rate_limit.enabled",
        "true",
        Value::Flag(RATE_LIMIT_ENABLED),
    ),
    value(
        "instances.NAME.rate_limit.per_second",
        "25",
        Value::Rate(RATE_LIMIT.per_second),
    ),
    value(
        "instances.NAME.rate_limit.burst",
        "20",
        Value::Count(RATE_LIMIT.burst as u64),
    ),
    value(
        "instances.NAME.rate_limit.max_queue_wait",
        "30s",
        Value::Duration(RATE_LIMIT.max_queue_wait),
    ),
    nothing("clients.NAME.instance"),
    nothing("clients.NAME.client_id"),
    nothing("clients.NAME.client_secret"),
    nothing("clients.NAME.client_secret_file"),
    nothing("clients.NAME.scopes"),
    value(
        "clients.NAME.refresh_after",
        "20h",
        Value::Duration(REFRESH_AFTER),
    ),
    value(
        "clients.NAME.token_warmup",
        "5s",
        Value::Duration(TOKEN_WARMUP),
    ),
    nothing("routes[].prefix"),
    nothing("routes[].instance"),
    described("routes[].client"),
    derived("routes[].timeout", "server.request_timeout"),
    derived("routes[].max_body_bytes", "server.max_body_bytes"),
    nothing("routes[].max_concurrent_requests"),
    value("routes[].shadow_sample", "0.0", Value::Rate(SHADOW_SAMPLE)),
    value("routes[].mode", "oauth", Value::Word(MODE.as_str())),
    described("routes[].blocked_message"),
    value(
        "routes[].allow_anonymous",
        "false",
        Value::Flag(ALLOW_ANONYMOUS),
    ),
    value(
        "routes[].scope_check",
        "warn",
        Value::Word(SCOPE_CHECK.as_str()),
    ),
    nothing("integrations[].name"),
    nothing("integrations[].key_sha256"),
    nothing("integrations[].allow_ips"),
    nothing("integrations[].routes"),
    value(
        "integrations[].weight",
        "1",
        Value::Count(INTEGRATION_WEIGHT as u64),
    ),
    nothing("scope_rules[].path"),
    nothing("scope_rules[].methods"),
    value(
        "scope_rules[].exact",
        "false",
        Value::Flag(SCOPE_RULE_EXACT),
    ),
    nothing("scope_rules[].scopes"),
    value("log.format", "text", Value::Word(LOG_FORMAT.as_str())),
    value("log.access", "true", Value::Flag(LOG_ACCESS)),
    value(
        "migration.revoke_after",
        "7d",
        Value::Duration(REVOKE_AFTER),
    ),
    nothing("state.path"),
    nothing("state.redis"),
    nothing("state.memory"),
    value(
        "state.flush_interval",
        "1s",
        Value::Duration(STATE_FLUSH_INTERVAL),
    ),
    value("state.replicas", "1", Value::Count(STATE_REPLICAS as u64)),
];

/// The entry for `path`, if the configuration has such a key.
pub fn key(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

#[cfg(test)]
mod tests;
