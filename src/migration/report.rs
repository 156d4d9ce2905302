//! Every view of the migration (`/status`, `coupa-gateway report`, the status page's data)
//! built from the ledger's totals: per integration and route the traffic and verdict, per
//! client the scopes configured, needed, missing and never used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{discovered, ANONYMOUS};
use crate::config::Config;
use crate::state::ledger::{Ledger, Oauth, ScopeRecord, Secs, ShadowRecord};

/// Unix seconds as the system time they stand for.
pub fn at(s: Secs) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(s)
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(s: Secs) -> String {
    humantime::format_rfc3339_seconds(at(s)).to_string()
}

/// The status classes, in the ledger's order.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Counts by class as a JSON object.
pub fn classes(by_class: &[u64; 5]) -> Value {
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
    ledger: &Ledger,
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
    let mut needs_by_route: BTreeMap<String, BTreeMap<String, ScopeRecord>> = BTreeMap::new();
    let mut integrations = Vec::new();
    let configured: BTreeMap<&str, &crate::config::Integration> = config
        .integrations
        .iter()
        .map(|g| (g.name.as_str(), g))
        .collect();
    // Every configured integration, with its allowed routes, whether or not traffic was seen;
    // and every name the ledger has, configured or not (a removed integration keeps its
    // history until `report --forget`).
    let empty = Default::default();
    let mut names: BTreeSet<&str> = ledger.integrations.keys().map(String::as_str).collect();
    names.extend(configured.keys());
    names.insert(ANONYMOUS);
    for name in names {
        let record = ledger.integrations.get(name).unwrap_or(&empty);
        let cfg = configured.get(name);
        let mut seen = record.routes.clone();
        for prefix in cfg.iter().flat_map(|g| &g.routes) {
            seen.entry(prefix.clone()).or_default();
        }
        if cfg.is_none() && name != ANONYMOUS && seen.values().all(|r| r.requests() == 0) {
            continue;
        }
        let mut routes = Vec::new();
        let mut readiness: Vec<String> = Vec::new();
        let mut last_seen: Option<Secs> = None;
        let mut last_passthrough: Option<Secs> = None;
        let mut legacy_key = 0;
        for (prefix, r) in &seen {
            let allowed = cfg.is_some_and(|g| g.routes.contains(prefix));
            if r.requests() == 0 && !allowed {
                continue;
            }
            let needs = needs_by_route.entry(prefix.clone()).or_default();
            for (label, scope) in &r.scopes {
                let e = needs.entry(label.clone()).or_insert_with(|| ScopeRecord {
                    count: 0,
                    ..scope.clone()
                });
                e.count += scope.count;
                e.last_seen = e.last_seen.max(scope.last_seen);
            }
            last_seen = last_seen.max(r.last_seen);
            last_passthrough = last_passthrough.max(r.last_passthrough);
            legacy_key += r.legacy_key;
            routes.push(json!({
                "prefix": prefix,
                "mode": mode_of(prefix),
                "allowed": allowed || name == ANONYMOUS,
                "requests": classes(&r.by_class),
                "first_seen": r.first_seen.map(rfc3339),
                "last_seen": r.last_seen.map(rfc3339),
                "legacy_key_requests": r.legacy_key,
                "passthrough_requests": r.passthrough,
                "last_passthrough": r.last_passthrough.map(rfc3339),
                "scopes_needed": r.scopes.iter().map(|(label, s)| json!({
                    "scope": label,
                    "count": s.count,
                    "last_seen": rfc3339(s.last_seen),
                })).collect::<Vec<_>>(),
                "unknown_scope_requests": r.unknown_scope,
                "shadow": shadow_json(&r.shadow),
            }));
            if mode_of(prefix) == "passthrough" && r.shadow.sent > 0 {
                readiness.push(readiness_text(prefix, &r.shadow));
            }
        }
        let oauth_since = match record.oauth {
            Oauth::Since(t) => Some(t),
            Oauth::Unknown | Oauth::Passthrough => None,
        };
        let (v, safe_at) = if name == ANONYMOUS {
            (None, None)
        } else {
            let (v, safe) = verdict(
                oauth_since.map(at),
                last_passthrough.map(at),
                config.migration.revoke_after,
                now,
            );
            (Some(v.as_str()), safe)
        };
        integrations.push(json!({
            "name": name,
            "configured": cfg.is_some(),
            "verdict": v,
            "oauth_since": oauth_since.map(rfc3339),
            "safe_to_revoke_at": safe_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            "last_seen": last_seen.map(rfc3339),
            "legacy_key_requests": legacy_key,
            "last_passthrough": last_passthrough.map(rfc3339),
            "oauth_readiness": readiness,
            "routes": routes,
        }));
    }

    let mut clients = BTreeMap::new();
    for (name, client) in &config.clients {
        let mut needed: BTreeMap<String, ScopeRecord> = BTreeMap::new();
        for route in config
            .routes
            .iter()
            .filter(|r| r.client.as_deref() == Some(name.as_str()))
        {
            for (label, seen) in needs_by_route.get(&route.prefix).into_iter().flatten() {
                let e = needed.entry(label.clone()).or_insert_with(|| ScopeRecord {
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
            .map(|(label, _)| label.as_str())
            .collect();
        let used: BTreeSet<&str> = needed
            .values()
            .flat_map(|s| s.any_of.iter().map(String::as_str))
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
                "needed": needed.iter().map(|(label, s)| json!({"scope": label, "count": s.count})).collect::<Vec<_>>(),
                "missing": missing,
                "unused": unused,
            }),
        );
    }
    (Value::Array(integrations), clients)
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
    source_text(status, &mut out);
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
        for line in g["oauth_readiness"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "    {}", s(line));
        }
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
            let shadow = &r["shadow"];
            if shadow["sent"].as_u64().unwrap_or(0) + shadow["dropped"].as_u64().unwrap_or(0) > 0 {
                let _ = writeln!(
                    out,
                    "      shadow with the token: {} sent, {} same, {} dropped, {} failed",
                    shadow["sent"], shadow["same"], shadow["dropped"], shadow["failed"]
                );
                for d in shadow["recent_differences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let _ = writeln!(
                        out,
                        "        {}  {}  {}{}",
                        s(&d["pair"]),
                        s(&d["path"]),
                        d["scope"]
                            .as_str()
                            .map_or(String::new(), |sc| format!("needs {sc}  ")),
                        s(&d["error"])
                    );
                }
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

/// A route's shadow record in `/status`.
fn shadow_json(s: &ShadowRecord) -> Value {
    json!({
        "sent": s.sent,
        "dropped": s.dropped,
        "failed": s.failed,
        "same": s.same,
        "different": s.different,
        "recent_differences": s.recent.iter().map(|d| json!({
            "at": rfc3339(d.at),
            "pair": d.pair,
            "path": d.path,
            "scope": d.scope,
            "error": d.error,
        })).collect::<Vec<_>>(),
    })
}

/// The OAuth-readiness line for a passthrough route with shadow evidence: ready when every
/// sampled read answered alike with the token.
pub fn readiness_text(prefix: &str, s: &ShadowRecord) -> String {
    if s.same == s.sent {
        return format!(
            "{prefix}: OAuth ready: {} of {} sampled reads matched",
            s.same, s.sent
        );
    }
    let (pair, n) = s
        .different
        .iter()
        .max_by_key(|(_, n)| **n)
        .map_or(("?", 0), |(p, n)| (p.as_str(), *n));
    let answered = pair.rsplit(' ').next().unwrap_or("?");
    let scope = s
        .recent
        .iter()
        .find(|d| d.pair == pair)
        .and_then(|d| d.scope.as_deref())
        .map_or(String::new(), |sc| format!(" ({sc}?)"));
    format!(
        "{prefix}: not ready: {n} read(s) answered {answered} with the token{scope}; {} of {} sampled reads matched",
        s.same, s.sent
    )
}

/// Where the report's figures come from, and since when.
fn source_text(status: &Value, out: &mut String) {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let ledger = &status["ledger"];
    let since = s(&ledger["observed_since"]);
    let _ = match ledger["store"].as_str() {
        Some("file") => writeln!(
            out,
            "Migration report: observed since {since}, kept in {} across restarts",
            s(&ledger["location"])
        ),
        Some("redis") => writeln!(
            out,
            "Migration report: observed since {since}, every replica sharing {}",
            s(&ledger["location"])
        ),
        Some(_) => writeln!(
            out,
            "Migration report: observed since {since} by this process only (ledger in memory: \
             counters reset on restart; set [state] path or redis to keep them)"
        ),
        // A gateway from before the ledger.
        None => writeln!(
            out,
            "Migration report (observed since {}; counters reset on restart)",
            s(&status["started_at"])
        ),
    };
    if ledger["healthy"] == Value::Bool(false) {
        let _ = writeln!(
            out,
            "WARNING: the ledger store is failing since {} ({}); shown: its last contents plus \
             what this gateway saw since, kept in memory until the store is back",
            s(&ledger["down_since"]),
            s(&ledger["last_error"])
        );
    }
    out.push('\n');
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
}
