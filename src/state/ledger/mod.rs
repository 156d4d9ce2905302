//! The migration ledger's records as they are stored, and the one rule for combining them.
//!
//! Every store (memory, file, Redis) holds the same records under the same keys, as JSON, and
//! every writer adds to them with [`Change::merged`]: counts add, first-seen times keep the
//! earliest, last-seen times the latest, recent lists put the newer values first. Adding is
//! commutative enough that replicas (and a restarted process) can each send what they saw
//! since their last write, in any order, and the totals are the sum of everyone's traffic.
//!
//! Times are whole Unix seconds: the report shows seconds, and integers survive every store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Unix time in seconds.
pub type Secs = u64;

/// Distinct unrecognised keys a ledger keeps; the least recently seen go first.
pub const MAX_KEYS: usize = 1000;
/// Recent source addresses and `User-Agent` values kept per unrecognised key.
pub const RECENT: usize = 3;

/// The key of the record holding [`Meta`].
pub const META: &str = "meta";
/// Prefix of the keys of [`IntegrationRecord`]s (then the integration's name).
pub const INTEGRATION: &str = "integration:";
/// Prefix of the keys of [`KeyRecord`]s (then the key's SHA-256 in hex).
pub const KEY: &str = "key:";

/// Facts about the ledger as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The earliest start of any process that wrote to it: the observation window's start.
    #[serde(default)]
    pub observed_since: Option<Secs>,
    /// Unrecognised keys dropped to stay within [`MAX_KEYS`].
    #[serde(default)]
    pub keys_evicted: u64,
}

/// Whether every route an integration may use injects tokens, as last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oauth {
    /// Nothing reported yet.
    #[default]
    Unknown,
    /// A route it may use forwards the legacy key.
    Passthrough,
    /// All its routes in oauth or blocked mode since then.
    Since(Secs),
}

/// One scope requirement seen on a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRecord {
    /// Requests that needed it.
    pub count: u64,
    /// The last of them.
    pub last_seen: Secs,
    /// The scopes that satisfy it (any one).
    #[serde(default)]
    pub any_of: Vec<String>,
}

/// Shadow requests of passthrough traffic sent again with the client's token (OAuth
/// readiness): how many, and how Coupa's answers compared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowRecord {
    /// Sent with the token and answered.
    pub sent: u64,
    /// Not sent: the budget had no spare turn, or too many were in flight.
    pub dropped: u64,
    /// Sent but not answered (timeout, connection error) or no token to send.
    pub failed: u64,
    /// Answered in the same status class as the caller's passthrough request.
    pub same: u64,
    /// Answered differently, by pair (`200 -> 403`).
    pub different: BTreeMap<String, u64>,
    /// The last differences, newest first (at most [`RECENT_DIFFERENCES`]).
    pub recent: Vec<ShadowDifference>,
}

/// Differences kept per integration and route.
pub const RECENT_DIFFERENCES: usize = 5;

/// One shadow request that Coupa answered differently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowDifference {
    /// When.
    pub at: Secs,
    /// `200 -> 403`.
    pub pair: String,
    /// The caller's path with query names only (as in the access log).
    pub path: String,
    /// The scope the path needs, per the scope table.
    pub scope: Option<String>,
    /// Coupa's error text for a 401/403 (it may name the missing scope), cut short.
    pub error: Option<String>,
}

impl ShadowRecord {
    fn absorb(&mut self, newer: &ShadowRecord) {
        self.sent += newer.sent;
        self.dropped += newer.dropped;
        self.failed += newer.failed;
        self.same += newer.same;
        for (pair, n) in &newer.different {
            *self.different.entry(pair.clone()).or_default() += n;
        }
        let mut recent: Vec<ShadowDifference> = newer.recent.clone();
        for d in &self.recent {
            if !recent.contains(d) {
                recent.push(d.clone());
            }
        }
        recent.sort_by_key(|d| std::cmp::Reverse(d.at));
        recent.truncate(RECENT_DIFFERENCES);
        self.recent = recent;
    }

    fn since(&self, before: &ShadowRecord) -> ShadowRecord {
        ShadowRecord {
            sent: self.sent.saturating_sub(before.sent),
            dropped: self.dropped.saturating_sub(before.dropped),
            failed: self.failed.saturating_sub(before.failed),
            same: self.same.saturating_sub(before.same),
            different: self
                .different
                .iter()
                .map(|(p, n)| {
                    (
                        p.clone(),
                        n.saturating_sub(before.different.get(p).copied().unwrap_or(0)),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            recent: self
                .recent
                .iter()
                .filter(|d| !before.recent.contains(d))
                .cloned()
                .collect(),
        }
    }

    /// Records one shadow request's outcome.
    pub fn record(
        &mut self,
        caller: u16,
        shadow: u16,
        difference: impl FnOnce() -> ShadowDifference,
    ) {
        self.sent += 1;
        if caller / 100 == shadow / 100 {
            self.same += 1;
            return;
        }
        let d = difference();
        *self.different.entry(d.pair.clone()).or_default() += 1;
        self.recent.insert(0, d);
        self.recent.truncate(RECENT_DIFFERENCES);
    }
}

/// The traffic of one integration on one route prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteRecord {
    /// Responses by status class, 1xx..5xx.
    pub by_class: [u64; 5],
    /// Requests carrying `X-COUPA-API-KEY`.
    pub legacy_key: u64,
    /// Requests forwarded with the legacy key.
    pub passthrough: u64,
    /// Requests whose scope the table does not know.
    pub unknown_scope: u64,
    /// The first request.
    pub first_seen: Option<Secs>,
    /// The last request.
    pub last_seen: Option<Secs>,
    /// The last passthrough request.
    pub last_passthrough: Option<Secs>,
    /// Scope requirements by label.
    pub scopes: BTreeMap<String, ScopeRecord>,
    /// Shadow requests (OAuth readiness) of its passthrough traffic.
    pub shadow: ShadowRecord,
}

impl RouteRecord {
    /// All requests.
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }

    fn absorb(&mut self, newer: &RouteRecord) {
        add(&mut self.by_class, &newer.by_class);
        self.legacy_key += newer.legacy_key;
        self.passthrough += newer.passthrough;
        self.unknown_scope += newer.unknown_scope;
        self.first_seen = earliest(self.first_seen, newer.first_seen);
        self.last_seen = self.last_seen.max(newer.last_seen);
        self.last_passthrough = self.last_passthrough.max(newer.last_passthrough);
        for (label, s) in &newer.scopes {
            let e = self.scopes.entry(label.clone()).or_default();
            e.count += s.count;
            e.last_seen = e.last_seen.max(s.last_seen);
            if e.any_of.is_empty() {
                e.any_of.clone_from(&s.any_of);
            }
        }
        self.shadow.absorb(&newer.shadow);
    }

    /// What `self` (a process's running totals) added since `before` (its totals at the last
    /// write); `None` when nothing did. Times are sent whole: their merge keeps extremes, so
    /// sending one twice changes nothing.
    fn since(&self, before: &RouteRecord) -> Option<RouteRecord> {
        if self == before {
            return None;
        }
        let mut by_class = self.by_class;
        for (n, b) in by_class.iter_mut().zip(before.by_class) {
            *n = n.saturating_sub(b);
        }
        let scopes = self
            .scopes
            .iter()
            .filter_map(|(label, s)| {
                let b = before.scopes.get(label);
                let count = s.count.saturating_sub(b.map_or(0, |b| b.count));
                (count > 0).then(|| {
                    let record = ScopeRecord { count, ..s.clone() };
                    (label.clone(), record)
                })
            })
            .collect();
        Some(RouteRecord {
            by_class,
            legacy_key: self.legacy_key.saturating_sub(before.legacy_key),
            passthrough: self.passthrough.saturating_sub(before.passthrough),
            unknown_scope: self.unknown_scope.saturating_sub(before.unknown_scope),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            last_passthrough: self.last_passthrough,
            scopes,
            shadow: self.shadow.since(&before.shadow),
        })
    }
}

/// Everything recorded for one integration (or for anonymous callers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IntegrationRecord {
    /// Its routes' modes, as last reported.
    pub oauth: Oauth,
    /// Its traffic by route prefix.
    pub routes: BTreeMap<String, RouteRecord>,
}

impl IntegrationRecord {
    fn absorb(&mut self, newer: &IntegrationRecord) {
        self.oauth = match (self.oauth, newer.oauth) {
            (old, Oauth::Unknown) => old,
            // Still (or again) all oauth: the window keeps its start, whoever reports it.
            (Oauth::Since(old), Oauth::Since(new)) => Oauth::Since(old.min(new)),
            (_, new) => new,
        };
        for (prefix, r) in &newer.routes {
            self.routes.entry(prefix.clone()).or_default().absorb(r);
        }
    }

    fn since(&self, before: Option<&IntegrationRecord>) -> Option<IntegrationRecord> {
        let empty = IntegrationRecord::default();
        let before = before.unwrap_or(&empty);
        let routes: BTreeMap<String, RouteRecord> = self
            .routes
            .iter()
            .filter_map(|(p, r)| {
                let b = before.routes.get(p).cloned().unwrap_or_default();
                Some((p.clone(), r.since(&b)?))
            })
            .collect();
        let oauth = if self.oauth == before.oauth {
            Oauth::Unknown
        } else {
            self.oauth
        };
        (oauth != Oauth::Unknown || !routes.is_empty())
            .then_some(IntegrationRecord { oauth, routes })
    }
}

/// What is known of one legacy key that no integration is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyRecord {
    /// Requests by route prefix.
    pub routes: BTreeMap<String, u64>,
    /// Responses by status class, 1xx..5xx.
    pub by_class: [u64; 5],
    /// The first request.
    pub first_seen: Secs,
    /// The last request.
    pub last_seen: Secs,
    /// Source addresses, most recent first.
    pub addresses: Vec<String>,
    /// `User-Agent` values, most recent first.
    pub user_agents: Vec<String>,
}

impl KeyRecord {
    fn absorb(&mut self, newer: &KeyRecord) {
        for (route, n) in &newer.routes {
            *self.routes.entry(route.clone()).or_default() += n;
        }
        add(&mut self.by_class, &newer.by_class);
        self.first_seen = if self.first_seen == 0 {
            newer.first_seen
        } else {
            self.first_seen.min(newer.first_seen)
        };
        self.last_seen = self.last_seen.max(newer.last_seen);
        self.addresses = recent_first(&newer.addresses, &self.addresses);
        self.user_agents = recent_first(&newer.user_agents, &self.user_agents);
    }

    fn since(&self, before: Option<&KeyRecord>) -> Option<KeyRecord> {
        let Some(before) = before else {
            return Some(self.clone());
        };
        if self == before {
            return None;
        }
        let mut by_class = self.by_class;
        for (n, b) in by_class.iter_mut().zip(before.by_class) {
            *n = n.saturating_sub(b);
        }
        let routes = self
            .routes
            .iter()
            .map(|(r, n)| {
                let b = before.routes.get(r).copied().unwrap_or(0);
                (r.clone(), n.saturating_sub(b))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        Some(KeyRecord {
            routes,
            by_class,
            ..self.clone()
        })
    }
}

fn add(total: &mut [u64; 5], more: &[u64; 5]) {
    for (t, m) in total.iter_mut().zip(more) {
        *t += m;
    }
}

fn earliest(a: Option<Secs>, b: Option<Secs>) -> Option<Secs> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `newer` then `older`, without repeats, at most [`RECENT`].
fn recent_first(newer: &[String], older: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(RECENT);
    for v in newer.iter().chain(older) {
        if out.len() == RECENT {
            break;
        }
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

/// A whole ledger, or what one writer adds to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Facts about the whole.
    pub meta: Meta,
    /// By integration name ([`crate::state`] does not know which are configured).
    pub integrations: BTreeMap<String, IntegrationRecord>,
    /// Unrecognised keys by SHA-256 in hex.
    pub keys: BTreeMap<String, KeyRecord>,
}

/// One record to add to a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// To [`META`].
    Meta(Meta),
    /// To `integration:NAME`.
    Integration(String, IntegrationRecord),
    /// To `key:HEX`.
    Key(String, KeyRecord),
}

/// A stored record that is not what this version writes.
#[derive(Debug, thiserror::Error)]
#[error("ledger record {key:?} is unreadable ({source}); the store was written by something else or is damaged")]
pub struct Corrupt {
    /// Its key.
    pub key: String,
    /// The parse error.
    #[source]
    pub source: serde_json::Error,
}

fn parse<T: for<'de> Deserialize<'de> + Default>(
    key: &str,
    stored: Option<&[u8]>,
) -> Result<T, Corrupt> {
    stored.map_or(Ok(T::default()), |bytes| {
        serde_json::from_slice(bytes).map_err(|source| Corrupt {
            key: key.to_owned(),
            source,
        })
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("ledger records serialise")
}

impl Change {
    /// The store key.
    pub fn key(&self) -> String {
        match self {
            Change::Meta(_) => META.to_owned(),
            Change::Integration(name, _) => format!("{INTEGRATION}{name}"),
            Change::Key(hex, _) => format!("{KEY}{hex}"),
        }
    }

    /// The record `stored` (none yet: `None`) with this change added, encoded; `None` when
    /// adding it changes nothing (so a store need not write).
    pub fn merged(&self, stored: Option<&[u8]>) -> Result<Option<Vec<u8>>, Corrupt> {
        let key = self.key();
        Ok(match self {
            Change::Meta(m) => {
                let mut total: Meta = parse(&key, stored)?;
                let before = total.clone();
                total.observed_since = earliest(total.observed_since, m.observed_since);
                total.keys_evicted += m.keys_evicted;
                (total != before || stored.is_none()).then(|| encode(&total))
            }
            Change::Integration(_, r) => {
                let mut total: IntegrationRecord = parse(&key, stored)?;
                total.absorb(r);
                Some(encode(&total))
            }
            Change::Key(_, r) => {
                let mut total: KeyRecord = parse(&key, stored)?;
                total.absorb(r);
                Some(encode(&total))
            }
        })
    }
}

impl Ledger {
    /// True when adding it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.meta == Meta::default() && self.integrations.is_empty() && self.keys.is_empty()
    }

    /// Adds `newer` (what a writer saw since) to this.
    pub fn absorb(&mut self, newer: &Ledger) {
        self.meta.observed_since = earliest(self.meta.observed_since, newer.meta.observed_since);
        self.meta.keys_evicted += newer.meta.keys_evicted;
        for (name, r) in &newer.integrations {
            self.integrations.entry(name.clone()).or_default().absorb(r);
        }
        for (hex, r) in &newer.keys {
            self.keys.entry(hex.clone()).or_default().absorb(r);
        }
    }

    /// What `self` (running totals) added since `before` (the totals last written).
    pub fn since(&self, before: &Ledger) -> Ledger {
        Ledger {
            meta: Meta {
                // Sent until written once; after that it would only repeat itself.
                observed_since: self
                    .meta
                    .observed_since
                    .filter(|_| self.meta.observed_since != before.meta.observed_since),
                keys_evicted: self
                    .meta
                    .keys_evicted
                    .saturating_sub(before.meta.keys_evicted),
            },
            integrations: self
                .integrations
                .iter()
                .filter_map(|(n, r)| Some((n.clone(), r.since(before.integrations.get(n))?)))
                .collect(),
            keys: self
                .keys
                .iter()
                .filter_map(|(h, r)| Some((h.clone(), r.since(before.keys.get(h))?)))
                .collect(),
        }
    }

    /// The records to add to a store.
    pub fn changes(&self) -> Vec<Change> {
        let mut out = vec![Change::Meta(self.meta.clone())];
        out.extend(
            self.integrations
                .iter()
                .map(|(n, r)| Change::Integration(n.clone(), r.clone())),
        );
        out.extend(
            self.keys
                .iter()
                .map(|(h, r)| Change::Key(h.clone(), r.clone())),
        );
        out
    }

    /// A ledger from a store's records (key, JSON); unknown keys are skipped, so a newer
    /// version's records do not stop an older one.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Ledger, Corrupt> {
        let mut ledger = Ledger::default();
        for (key, bytes) in records {
            if key == META {
                ledger.meta = parse(key, Some(bytes))?;
            } else if let Some(name) = key.strip_prefix(INTEGRATION) {
                ledger
                    .integrations
                    .insert(name.to_owned(), parse(key, Some(bytes))?);
            } else if let Some(hex) = key.strip_prefix(KEY) {
                ledger.keys.insert(hex.to_owned(), parse(key, Some(bytes))?);
            }
        }
        Ok(ledger)
    }

    /// Drops the least recently seen unrecognised keys beyond `max`, counting them; returns
    /// their hex digests.
    pub fn evict_keys(&mut self, max: usize) -> Vec<String> {
        if self.keys.len() <= max {
            return Vec::new();
        }
        let mut by_age: Vec<(Secs, String)> = self
            .keys
            .iter()
            .map(|(h, k)| (k.last_seen, h.clone()))
            .collect();
        by_age.sort();
        let gone: Vec<String> = by_age
            .into_iter()
            .take(self.keys.len() - max)
            .map(|(_, h)| h)
            .collect();
        for h in &gone {
            self.keys.remove(h);
        }
        self.meta.keys_evicted += gone.len() as u64;
        gone
    }
}

#[cfg(test)]
mod tests;
