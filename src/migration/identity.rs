//! Who is calling: the `[[integrations]]` a request belongs to, recognised by the legacy API key
//! it already sends (kept only as a SHA-256, compared in constant time) and/or its source
//! address, and whether it may use the route it asked for.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config;
use crate::migration::{IntegrationStats, RouteUsage};

/// A configured integration, ready for matching.
pub struct Integration {
    /// Its name.
    pub name: String,
    /// Its share of an instance's rate budget while callers wait.
    pub weight: u32,
    key_sha256: Option<[u8; 32]>,
    allow_ips: Vec<ipnet::IpNet>,
    /// `allowed[i]`: may it use `config.routes[i]`?
    allowed: Vec<bool>,
    /// Its traffic record (survives reloads).
    pub stats: Arc<IntegrationStats>,
    /// `usage[i]`: its record for `config.routes[i]`, resolved once per runtime so the request
    /// path locks one small mutex instead of looking names up.
    pub usage: Vec<Arc<Mutex<RouteUsage>>>,
}

impl Integration {
    /// Builds the matcher for `g` over the route list of the same config.
    pub fn new(
        g: &config::Integration,
        routes: &[config::Route],
        stats: Arc<IntegrationStats>,
    ) -> Self {
        Self {
            name: g.name.clone(),
            weight: g.weight,
            key_sha256: g.key_sha256,
            allow_ips: g.allow_ips.clone(),
            allowed: routes
                .iter()
                .map(|r| g.routes.contains(&r.prefix))
                .collect(),
            usage: routes.iter().map(|r| stats.route(&r.prefix)).collect(),
            stats,
        }
    }

    /// True when the integration may use route number `index`.
    pub fn may_use(&self, index: usize) -> bool {
        self.allowed.get(index).copied().unwrap_or(false)
    }

    fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.allow_ips.iter().any(|n| n.contains(&ip))
    }
}

/// The outcome of identification.
pub enum Caller<'a> {
    /// A configured integration.
    Known(&'a Integration),
    /// Sent a legacy key that no integration has; its SHA-256, for discovery.
    UnknownKey([u8; 32]),
    /// The key matches, but the address is not in the integration's `allow_ips`.
    WrongAddress(&'a Integration),
    /// No key, and no address-only integration matched.
    Anonymous,
}

/// Identifies the caller of a request from `peer` that sent legacy `key` (the one key
/// [`crate::proxy::headers::legacy_key`] found, in whatever spelling).
///
/// The key is hashed once and compared with every integration's hash without stopping at the
/// first match, so timing reveals neither which entry matched nor how many bytes did.
pub fn identify<'a>(
    integrations: &'a [Integration],
    key: Option<&HeaderValue>,
    peer: IpAddr,
) -> Caller<'a> {
    // PERF: with no integrations configured nothing is identified, and hashing every key for
    // discovery cost +4,750 instructions per request (+10 %, callgrind, paged GET with a key):
    // past the load bench's noise. Discovery starts with the first `[[integrations]]` entry.
    if integrations.is_empty() {
        return Caller::Anonymous;
    }
    if let Some(key) = key {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for g in integrations {
            if let Some(h) = &g.key_sha256 {
                if bool::from(h.ct_eq(&digest)) {
                    found = Some(g);
                }
            }
        }
        return match found {
            Some(g) if g.allow_ips.is_empty() || g.ip_allowed(peer) => Caller::Known(g),
            Some(g) => Caller::WrongAddress(g),
            None => Caller::UnknownKey(digest),
        };
    }
    // Integrations with a key must present it; address-only ones are recognised by address.
    integrations
        .iter()
        .find(|g| g.key_sha256.is_none() && g.ip_allowed(peer))
        .map_or(Caller::Anonymous, Caller::Known)
}

/// The `key_sha256` line for `key`, as `coupa-gateway hash-key` prints it.
pub fn hash_key_line(key: &str) -> String {
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    format!("key_sha256 = \"{}\"", super::discovered::hex(&digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::Tracker;

    fn integration(
        name: &str,
        key: Option<&str>,
        ips: &[&str],
        routes: &[&str],
    ) -> config::Integration {
        config::Integration {
            name: name.into(),
            key_sha256: key.map(|k| Sha256::digest(k.as_bytes()).into()),
            allow_ips: ips.iter().map(|n| n.parse().unwrap()).collect(),
            routes: routes.iter().map(|r| r.to_string()).collect(),
            weight: 1,
        }
    }

    fn route(prefix: &str) -> config::Route {
        config::Route {
            prefix: prefix.into(),
            instance: "prod".into(),
            client: None,
            timeout: std::time::Duration::from_secs(1),
            mode: config::Mode::OAuth,
            blocked_message: String::new(),
            allow_anonymous: false,
            scope_check: config::ScopeCheck::Warn,
            max_body_bytes: None,
            max_concurrent_requests: None,
            shadow_sample: 0.0,
        }
    }

    fn key(key: Option<&str>) -> Option<HeaderValue> {
        key.map(|k| k.parse().unwrap())
    }

    #[test]
    fn keys_and_addresses_identify_integrations() {
        let tracker = Tracker::default();
        let routes = [route("/prod"), route("/test")];
        let all: Vec<Integration> = [
            integration("erp", Some("erp-key"), &[], &["/prod"]),
            integration("mw", Some("mw-key"), &["10.1.0.0/16"], &["/prod", "/test"]),
            integration("batch", None, &["192.168.5.7/32"], &["/test"]),
        ]
        .iter()
        .map(|g| Integration::new(g, &routes, tracker.integration(&g.name)))
        .collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let name = |c: Caller<'_>| match c {
            Caller::Known(g) => format!("known:{}", g.name),
            Caller::UnknownKey(d) => {
                assert_eq!(d, <[u8; 32]>::from(Sha256::digest(b"nope")));
                "unknown-key".into()
            }
            Caller::WrongAddress(g) => format!("wrong-address:{}", g.name),
            Caller::Anonymous => "anonymous".into(),
        };
        assert_eq!(
            name(identify(&all, key(Some("erp-key")).as_ref(), ip("8.8.8.8"))),
            "known:erp"
        );
        assert_eq!(
            name(identify(&all, key(Some("mw-key")).as_ref(), ip("10.1.2.3"))),
            "known:mw"
        );
        assert_eq!(
            name(identify(&all, key(Some("mw-key")).as_ref(), ip("10.2.0.1"))),
            "wrong-address:mw"
        );
        assert_eq!(
            name(identify(&all, key(Some("nope")).as_ref(), ip("10.1.2.3"))),
            "unknown-key"
        );
        assert_eq!(
            name(identify(&all, key(None).as_ref(), ip("192.168.5.7"))),
            "known:batch"
        );
        // A keyed integration is not recognised by address alone.
        assert_eq!(
            name(identify(&all, key(None).as_ref(), ip("10.1.2.3"))),
            "anonymous"
        );
        assert!(all[0].may_use(0) && !all[0].may_use(1));
        assert!(all[2].may_use(1) && !all[2].may_use(0));
    }

    #[test]
    fn hash_key_line_is_pasteable() {
        assert_eq!(
            hash_key_line("abc"),
            "key_sha256 = \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
        );
    }
}
