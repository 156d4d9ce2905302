//! The file's shape as serde reads it. Every table denies unknown keys, so a misspelt key is an
//! error naming it rather than a setting silently left at its default.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

// No `Debug` derive on purpose: `RawClient` holds the secret as a plain String.

/// `proxy.toml`, the coupa-gateway configuration. Every key, its default and meaning:
/// docs/configuration.md. `coupa-gateway check` validates a file completely (this schema only
/// its shape).
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "coupa-gateway proxy.toml")]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) instances: BTreeMap<String, RawInstance>,
    #[serde(default)]
    pub(super) clients: BTreeMap<String, RawClient>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) integrations: Vec<RawIntegration>,
    #[serde(default)]
    pub(super) migration: RawMigration,
    #[serde(default)]
    pub(super) scope_rules: Vec<RawScopeRule>,
    #[serde(default)]
    pub(super) log: RawLog,
    pub(super) state: Option<RawState>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) path: Option<String>,
    pub(super) redis: Option<String>,
    pub(super) memory: Option<bool>,
    pub(super) flush_interval: Option<String>,
    pub(super) replicas: Option<i64>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) access: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScopeRule {
    pub(super) path: Option<String>,
    pub(super) methods: Option<Vec<String>>,
    pub(super) exact: Option<bool>,
    pub(super) scopes: Option<Vec<String>>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) request_timeout: Option<String>,
    pub(super) header_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) body_timeout: Option<String>,
    pub(super) write_timeout: Option<String>,
    pub(super) max_header_bytes: Option<RawSize>,
    pub(super) max_body_bytes: Option<RawSize>,
    pub(super) max_concurrent_requests: Option<usize>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) retry_body_limit: Option<RawSize>,
    pub(super) tls: Option<RawServerTls>,
    pub(super) workers: Option<usize>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) proxy_protocol: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
}

/// A byte size: a number, or a string with a unit ("64KiB", "250MB").
#[derive(Deserialize, Clone, JsonSchema)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) enabled: Option<bool>,
    pub(super) per_second: Option<f64>,
    pub(super) burst: Option<u32>,
    pub(super) max_queue_wait: Option<String>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
    pub(super) token: Option<String>,
    pub(super) token_file: Option<String>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) connect_timeout: Option<String>,
    pub(super) pool_idle_timeout: Option<String>,
    pub(super) pool_max_idle_per_host: Option<usize>,
    pub(super) ca_file: Option<String>,
    pub(super) proxy: Option<String>,
    pub(super) no_proxy: Option<String>,
}

// Required keys are `Option` too so that a missing one is reported with its key path alongside
// every other problem, rather than aborting deserialisation.

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInstance {
    pub(super) url: Option<String>,
    pub(super) token_url: Option<String>,
    pub(super) token_timeout: Option<String>,
    pub(super) rate_limit: Option<RawRateLimit>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub(super) instance: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<String>,
    pub(super) client_secret_file: Option<String>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) refresh_after: Option<String>,
    pub(super) token_warmup: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) prefix: Option<String>,
    pub(super) instance: Option<String>,
    pub(super) client: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) mode: Option<String>,
    pub(super) blocked_message: Option<String>,
    pub(super) allow_anonymous: Option<bool>,
    pub(super) scope_check: Option<String>,
    pub(super) max_body_bytes: Option<RawSize>,
    pub(super) max_concurrent_requests: Option<usize>,
    pub(super) shadow_sample: Option<f64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIntegration {
    pub(super) name: Option<String>,
    pub(super) key_sha256: Option<String>,
    pub(super) allow_ips: Option<Vec<String>>,
    pub(super) routes: Option<Vec<String>>,
    pub(super) weight: Option<i64>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMigration {
    pub(super) revoke_after: Option<String>,
}
