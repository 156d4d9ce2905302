//! What the phased migration needs to know: per integration and route, the traffic seen (status
//! classes, legacy-key use, passthrough use) and the scopes it needed; per integration a verdict
//! (not migrated / migrated / safe to revoke its API key); per client the scopes configured,
//! needed, missing and never used.
//!
//! Records live in a [`Tracker`] keyed by integration name and route prefix, so they survive
//! reloads. They are in memory: a restart starts the observation window again, and a verdict of
//! "safe to revoke" is only given after a full window observed by this process.

pub mod discovered;
pub mod identity;
pub mod scopes;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::config::{Config, Mode};
use crate::migration::scopes::Needed;
use crate::ops::metrics::escape;

/// The name traffic from unrecognised callers is recorded under.
pub const ANONYMOUS: &str = "anonymous";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a counter lock leaves plain counters behind: keep using them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How often and how recently one scope requirement was seen.
#[derive(Debug, Clone)]
pub struct ScopeSeen {
    /// Requests that needed it.
    pub count: u64,
    /// The last one.
    pub last_seen: SystemTime,
    /// The scopes that satisfy it (any one).
    pub any_of: Arc<[Arc<str>]>,
}

/// Traffic of one integration on one route.
#[derive(Debug, Default)]
pub struct RouteUsage {
    /// Responses by status class (1xx..5xx).
    pub by_class: [u64; 5],
    /// The last request.
    pub last_seen: Option<SystemTime>,
    /// Requests that carried `X-COUPA-API-KEY`.
    pub legacy_key: u64,
    /// Requests forwarded in passthrough mode (the legacy key went to Coupa).
    pub passthrough: u64,
    /// The last passthrough request.
    pub last_passthrough: Option<SystemTime>,
    /// Scope requirements seen, by label.
    pub scopes: BTreeMap<Arc<str>, ScopeSeen>,
    /// Requests whose scope the table does not know.
    pub unknown_scope: u64,
}

/// One request, as recorded.
pub struct Observation<'a> {
    /// Final status.
    pub status: u16,
    /// The route's mode when it was served.
    pub mode: Mode,
    /// Whether it carried the legacy key.
    pub legacy_key: bool,
    /// What it needed, if the scope table knows.
    pub needed: Option<&'a Needed>,
    /// When.
    pub at: SystemTime,
}

impl RouteUsage {
    /// Records one request.
    pub fn record(&mut self, o: &Observation<'_>) {
        let class = usize::from(o.status / 100).clamp(1, 5) - 1;
        self.by_class[class] += 1;
        self.last_seen = Some(o.at);
        if o.legacy_key {
            self.legacy_key += 1;
        }
        if o.mode == Mode::Passthrough {
            self.passthrough += 1;
            self.last_passthrough = Some(o.at);
        }
        match o.needed {
            Some(n) if !n.any_of.is_empty() => {
                // Only the first sighting of a requirement allocates (the map entry).
                if let Some(seen) = self.scopes.get_mut(&n.label) {
                    seen.count += 1;
                    seen.last_seen = o.at;
                } else {
                    self.scopes.insert(
                        n.label.clone(),
                        ScopeSeen {
                            count: 1,
                            last_seen: o.at,
                            any_of: n.any_of.clone(),
                        },
                    );
                }
            }
            _ => self.unknown_scope += 1,
        }
    }
}

/// Everything recorded for one integration (or for anonymous callers).
#[derive(Debug)]
pub struct IntegrationStats {
    /// The integration's name.
    pub name: String,
    routes: Mutex<BTreeMap<String, Arc<Mutex<RouteUsage>>>>,
    /// Since when every route it may use has been in oauth (or blocked) mode, as seen by this
    /// process; `None` while any is in passthrough.
    oauth_since: Mutex<Option<SystemTime>>,
}

impl IntegrationStats {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            routes: Mutex::default(),
            oauth_since: Mutex::default(),
        }
    }

    /// The record for `prefix`, created on first use (when a runtime is built).
    pub fn route(&self, prefix: &str) -> Arc<Mutex<RouteUsage>> {
        lock(&self.routes)
            .entry(prefix.to_owned())
            .or_default()
            .clone()
    }

    /// Notes the modes of the integration's routes in a newly published runtime.
    pub fn observe_modes(&self, all_oauth: bool, now: SystemTime) {
        let mut since = lock(&self.oauth_since);
        match (all_oauth, *since) {
            (true, None) => *since = Some(now),
            (false, Some(_)) => *since = None,
            _ => {}
        }
    }

    fn snapshot(&self) -> Vec<(String, RouteSnapshot)> {
        lock(&self.routes)
            .iter()
            .map(|(p, u)| {
                let u = lock(u);
                (
                    p.clone(),
                    RouteSnapshot {
                        by_class: u.by_class,
                        last_seen: u.last_seen,
                        legacy_key: u.legacy_key,
                        passthrough: u.passthrough,
                        last_passthrough: u.last_passthrough,
                        scopes: u.scopes.clone(),
                        unknown_scope: u.unknown_scope,
                    },
                )
            })
            .collect()
    }
}

struct RouteSnapshot {
    by_class: [u64; 5],
    last_seen: Option<SystemTime>,
    legacy_key: u64,
    passthrough: u64,
    last_passthrough: Option<SystemTime>,
    scopes: BTreeMap<Arc<str>, ScopeSeen>,
    unknown_scope: u64,
}

impl RouteSnapshot {
    fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }
}

/// All integration records of the process.
#[derive(Debug, Default)]
pub struct Tracker {
    integrations: Mutex<BTreeMap<String, Arc<IntegrationStats>>>,
    /// Legacy keys no integration knows.
    pub discovered: discovered::Discovered,
}

impl Tracker {
    /// The record of integration `name` (or [`ANONYMOUS`]), created on first use.
    pub fn integration(&self, name: &str) -> Arc<IntegrationStats> {
        lock(&self.integrations)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(IntegrationStats::new(name)))
            .clone()
    }

    fn all(&self) -> Vec<Arc<IntegrationStats>> {
        lock(&self.integrations).values().cloned().collect()
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn classes(by_class: &[u64; 5]) -> Value {
    let map: serde_json::Map<String, Value> = CLASSES
        .iter()
        .zip(by_class)
        .map(|(c, n)| (c.to_string(), json!(n)))
        .collect();
    Value::Object(map)
}

/// An integration's migration state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// At least one of its routes is in passthrough mode.
    NotMigrated,
    /// All its routes inject tokens, but passthrough traffic was seen (or observation began)
    /// less than `revoke_after` ago.
    Migrated,
    /// No passthrough traffic for a whole `revoke_after` window: its API key can be revoked.
    SafeToRevokeKey,
}

impl Verdict {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::NotMigrated => "not_migrated",
            Verdict::Migrated => "migrated",
            Verdict::SafeToRevokeKey => "safe_to_revoke_key",
        }
    }
}

/// The verdict for an integration whose routes are all in oauth/blocked mode since
/// `oauth_since` (None: some route is passthrough) and whose last passthrough request was
/// `last_passthrough`. Returns the verdict and, when migrated, when revoking becomes safe.
pub fn verdict(
    oauth_since: Option<SystemTime>,
    last_passthrough: Option<SystemTime>,
    window: Duration,
    now: SystemTime,
) -> (Verdict, Option<SystemTime>) {
    let Some(since) = oauth_since else {
        return (Verdict::NotMigrated, None);
    };
    let quiet_since = last_passthrough.map_or(since, |p| p.max(since));
    let safe_at = quiet_since + window;
    if now >= safe_at {
        (Verdict::SafeToRevokeKey, None)
    } else {
        (Verdict::Migrated, Some(safe_at))
    }
}

/// The migration part of `/status`: `integrations` and, per client, its scope report.
pub fn report(
    config: &Config,
    tracker: &Tracker,
    now: SystemTime,
) -> (Value, BTreeMap<String, Value>) {
    let mode_of = |prefix: &str| {
        config
            .routes
            .iter()
            .find(|r| r.prefix == prefix)
            .map(|r| r.mode.as_str())
            .unwrap_or("removed")
    };
    // Scope requirements seen per route prefix, across every caller.
    let mut needs_by_route: BTreeMap<String, BTreeMap<Arc<str>, ScopeSeen>> = BTreeMap::new();
    let mut integrations = Vec::new();
    let configured: BTreeMap<&str, &crate::config::Integration> = config
        .integrations
        .iter()
        .map(|g| (g.name.as_str(), g))
        .collect();
    for stats in tracker.all() {
        let snapshot = stats.snapshot();
        let cfg = configured.get(stats.name.as_str());
        if cfg.is_none()
            && stats.name != ANONYMOUS
            && snapshot.iter().all(|(_, r)| r.requests() == 0)
        {
            continue;
        }
        let mut routes = Vec::new();
        let mut last_seen: Option<SystemTime> = None;
        let mut last_passthrough: Option<SystemTime> = None;
        let mut legacy_key = 0;
        for (prefix, r) in &snapshot {
            let allowed = cfg.is_some_and(|g| g.routes.contains(prefix));
            if r.requests() == 0 && !allowed {
                continue;
            }
            let needs = needs_by_route.entry(prefix.clone()).or_default();
            for (label, seen) in &r.scopes {
                let e = needs.entry(label.clone()).or_insert_with(|| ScopeSeen {
                    count: 0,
                    ..seen.clone()
                });
                e.count += seen.count;
                e.last_seen = e.last_seen.max(seen.last_seen);
            }
            last_seen = last_seen.max(r.last_seen);
            last_passthrough = last_passthrough.max(r.last_passthrough);
            legacy_key += r.legacy_key;
            routes.push(json!({
                "prefix": prefix,
                "mode": mode_of(prefix),
                "allowed": allowed || stats.name == ANONYMOUS,
                "requests": classes(&r.by_class),
                "last_seen": r.last_seen.map(rfc3339),
                "legacy_key_requests": r.legacy_key,
                "passthrough_requests": r.passthrough,
                "last_passthrough": r.last_passthrough.map(rfc3339),
                "scopes_needed": r.scopes.iter().map(|(label, s)| json!({
                    "scope": label.as_ref(),
                    "count": s.count,
                    "last_seen": rfc3339(s.last_seen),
                })).collect::<Vec<_>>(),
                "unknown_scope_requests": r.unknown_scope,
            }));
        }
        let (v, safe_at) = if stats.name == ANONYMOUS {
            (None, None)
        } else {
            let since = *lock(&stats.oauth_since);
            let (v, at) = verdict(since, last_passthrough, config.migration.revoke_after, now);
            (Some(v.as_str()), at)
        };
        integrations.push(json!({
            "name": stats.name,
            "configured": cfg.is_some(),
            "verdict": v,
            "safe_to_revoke_at": safe_at.map(rfc3339),
            "last_seen": last_seen.map(rfc3339),
            "legacy_key_requests": legacy_key,
            "last_passthrough": last_passthrough.map(rfc3339),
            "routes": routes,
        }));
    }

    let mut clients = BTreeMap::new();
    for (name, client) in &config.clients {
        let mut needed: BTreeMap<Arc<str>, ScopeSeen> = BTreeMap::new();
        for route in config
            .routes
            .iter()
            .filter(|r| r.client.as_deref() == Some(name.as_str()))
        {
            for (label, seen) in needs_by_route.get(&route.prefix).into_iter().flatten() {
                let e = needed.entry(label.clone()).or_insert_with(|| ScopeSeen {
                    count: 0,
                    ..seen.clone()
                });
                e.count += seen.count;
            }
        }
        let has = |s: &str| client.scopes.iter().any(|c| c == s);
        let missing: Vec<&str> = needed
            .iter()
            .filter(|(_, s)| !s.any_of.iter().any(|a| has(a)))
            .map(|(label, _)| label.as_ref())
            .collect();
        let used: BTreeSet<&str> = needed
            .values()
            .flat_map(|s| s.any_of.iter().map(|a| a.as_ref()))
            .collect();
        let unused: Vec<&str> = client
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|s| !used.contains(s))
            .collect();
        clients.insert(
            name.clone(),
            json!({
                "configured": client.scopes,
                "needed": needed.iter().map(|(label, s)| json!({"scope": label.as_ref(), "count": s.count})).collect::<Vec<_>>(),
                "missing": missing,
                "unused": unused,
            }),
        );
    }
    (Value::Array(integrations), clients)
}

/// Per-integration request counters in Prometheus text.
pub fn render_metrics(tracker: &Tracker, out: &mut String) {
    out.push_str("# HELP coupa_gateway_integration_requests_total Responses by integration, route and status class.\n");
    out.push_str("# TYPE coupa_gateway_integration_requests_total counter\n");
    let all = tracker.all();
    let snapshots: Vec<_> = all.iter().map(|s| (s.name.clone(), s.snapshot())).collect();
    for (name, routes) in &snapshots {
        for (prefix, r) in routes {
            for (class, n) in CLASSES.iter().zip(r.by_class) {
                let _ = writeln!(
                    out,
                    "coupa_gateway_integration_requests_total{{integration=\"{}\",route=\"{}\",class=\"{class}\"}} {n}",
                    escape(name),
                    escape(prefix)
                );
            }
        }
    }
    out.push_str("# HELP coupa_gateway_integration_passthrough_total Requests forwarded with the legacy key (passthrough mode).\n");
    out.push_str("# TYPE coupa_gateway_integration_passthrough_total counter\n");
    for (name, routes) in &snapshots {
        for (prefix, r) in routes {
            let _ = writeln!(
                out,
                "coupa_gateway_integration_passthrough_total{{integration=\"{}\",route=\"{}\"}} {}",
                escape(name),
                escape(prefix),
                r.passthrough
            );
        }
    }
}

/// `items` joined by `sep`, or `-` when there are none (the report's empty value).
pub(crate) fn joined_or_dash(items: &[String], sep: &str) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(sep)
    }
}

/// A JSON array of strings as one space-separated report value.
pub(crate) fn text_list(v: &Value) -> String {
    let items: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i.as_str().unwrap_or("-").to_owned())
        .collect();
    joined_or_dash(&items, " ")
}

/// The migration report as text, from a `/status` document (what `coupa-gateway report`
/// prints). Works on the JSON so it can read any gateway's admin endpoint.
pub fn render_text(status: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let _ = writeln!(
        out,
        "Migration report (observed since {}; counters reset on restart)\n",
        s(&status["started_at"])
    );
    out.push_str("INTEGRATIONS\n");
    let integrations = status["integrations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if integrations.is_empty() {
        out.push_str("  (no traffic and no [[integrations]] configured)\n");
    }
    for g in &integrations {
        let verdict = match g["verdict"].as_str() {
            Some("not_migrated") => {
                "NOT MIGRATED (a route it uses is in passthrough mode)".to_owned()
            }
            Some("migrated") => format!(
                "MIGRATED (revoke its API key in Coupa after {} if no passthrough traffic appears)",
                s(&g["safe_to_revoke_at"])
            ),
            Some("safe_to_revoke_key") => "SAFE TO REVOKE ITS API KEY in Coupa".to_owned(),
            _ => "(unrecognised callers)".to_owned(),
        };
        let _ = writeln!(out, "  {}  {verdict}", s(&g["name"]));
        let _ = writeln!(
            out,
            "    last seen {}   legacy-key requests {}",
            s(&g["last_seen"]),
            g["legacy_key_requests"]
        );
        for r in g["routes"].as_array().into_iter().flatten() {
            let req = &r["requests"];
            let _ = writeln!(
                out,
                "    {:<16} {:<12} 2xx {:<6} 4xx {:<6} 5xx {:<6} passthrough {:<6} last {}{}",
                s(&r["prefix"]),
                s(&r["mode"]),
                req["2xx"],
                req["4xx"],
                req["5xx"],
                r["passthrough_requests"],
                s(&r["last_seen"]),
                if r["allowed"] == Value::Bool(false) {
                    "  (not allowed)"
                } else {
                    ""
                }
            );
            let scopes: Vec<String> = r["scopes_needed"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| format!("{} ({})", s(&n["scope"]), n["count"]))
                .collect();
            if !scopes.is_empty() {
                let _ = writeln!(out, "      scopes needed: {}", scopes.join(", "));
            }
        }
    }
    out.push_str("\nCLIENTS\n");
    for c in status["clients"].as_array().into_iter().flatten() {
        let r = &c["scope_report"];
        let list = text_list;
        let needed: Vec<String> = r["needed"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| format!("{} ({})", s(&n["scope"]), n["count"]))
            .collect();
        let _ = writeln!(out, "  {} (instance {})", s(&c["name"]), s(&c["instance"]));
        let _ = writeln!(out, "    configured: {}", list(&r["configured"]));
        let _ = writeln!(out, "    needed:     {}", joined_or_dash(&needed, ", "));
        let _ = writeln!(
            out,
            "    missing:    {}{}",
            list(&r["missing"]),
            if list(&r["missing"]) == "-" {
                ""
            } else {
                "   <- tick in Coupa (Setup > OAuth2/OpenID Connect Clients) and add to scopes"
            }
        );
        let _ = writeln!(
            out,
            "    unused:     {}{}",
            list(&r["unused"]),
            if list(&r["unused"]) == "-" {
                ""
            } else {
                "   <- not needed by observed traffic (least privilege)"
            }
        );
    }
    discovered::render_text(status, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_follows_modes_and_the_quiet_window() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let week = 7 * day;
        assert_eq!(verdict(None, None, week, t0).0, Verdict::NotMigrated);
        // Flipped to oauth 2 days ago, no passthrough since: migrated, safe in 5 days.
        let (v, at) = verdict(Some(t0 - 2 * day), None, week, t0);
        assert_eq!(v, Verdict::Migrated);
        assert_eq!(at, Some(t0 + 5 * day));
        // Passthrough traffic after the flip (another replica, a stale config) restarts the wait.
        let (v, at) = verdict(Some(t0 - 10 * day), Some(t0 - day), week, t0);
        assert_eq!(v, Verdict::Migrated);
        assert_eq!(at, Some(t0 + 6 * day));
        assert_eq!(
            verdict(Some(t0 - 8 * day), Some(t0 - 9 * day), week, t0).0,
            Verdict::SafeToRevokeKey
        );
    }

    #[test]
    fn observe_modes_keeps_the_first_flip_time() {
        let s = IntegrationStats::new("erp");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        s.observe_modes(true, t0);
        s.observe_modes(true, t0 + Duration::from_secs(50));
        assert_eq!(*lock(&s.oauth_since), Some(t0));
        s.observe_modes(false, t0 + Duration::from_secs(60));
        assert_eq!(*lock(&s.oauth_since), None);
    }
}
