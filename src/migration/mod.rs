//! What the phased migration needs to know: per integration and route, the traffic seen (status
//! classes, legacy-key use, passthrough use) and the scopes it needed; per integration a verdict
//! (not migrated / migrated / safe to revoke its API key); per client the scopes configured,
//! needed, missing and never used.
//!
//! The request path records into a [`Tracker`] (in memory, keyed by integration name and
//! route prefix, so records survive reloads); [`sync`] adds what it recorded to the ledger in
//! the configured store every `state.flush_interval`, and [`mod@report`] builds every view
//! (`/status`, `report`, the status page) from the ledger, so with a file or Redis neither a
//! restart nor a replica change resets the evidence.

pub mod discovered;
pub mod identity;
pub mod report;
pub mod scopes;
pub mod sync;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::config::Mode;
use crate::migration::scopes::Needed;
use crate::ops::metrics::escape;
use crate::state::ledger::{
    IntegrationRecord, Ledger, Oauth, RouteRecord, ScopeRecord, Secs, ShadowRecord,
};
pub use report::{report, verdict, Verdict};

/// The name traffic from unrecognised callers is recorded under.
pub const ANONYMOUS: &str = "anonymous";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a counter lock leaves plain counters behind: keep using them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `t` as the ledger's whole Unix seconds (times before 1970 do not occur here).
pub fn secs(t: SystemTime) -> Secs {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
    /// The first request.
    pub first_seen: Option<SystemTime>,
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
    /// Shadow requests of its passthrough traffic (OAuth readiness).
    pub shadow: ShadowRecord,
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
        self.first_seen.get_or_insert(o.at);
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
    /// process.
    oauth: Mutex<Oauth>,
}

impl IntegrationStats {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            routes: Mutex::default(),
            oauth: Mutex::default(),
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
        let mut oauth = lock(&self.oauth);
        match (all_oauth, *oauth) {
            (true, Oauth::Since(_)) => {}
            (true, _) => *oauth = Oauth::Since(secs(now)),
            (false, _) => *oauth = Oauth::Passthrough,
        }
    }

    /// Its records as the ledger keeps them (this process's totals).
    fn record(&self) -> IntegrationRecord {
        let routes = lock(&self.routes)
            .iter()
            .map(|(p, u)| (p.clone(), lock(u).to_record()))
            .collect();
        IntegrationRecord {
            oauth: *lock(&self.oauth),
            routes,
        }
    }
}

impl RouteUsage {
    fn to_record(&self) -> RouteRecord {
        RouteRecord {
            by_class: self.by_class,
            legacy_key: self.legacy_key,
            passthrough: self.passthrough,
            unknown_scope: self.unknown_scope,
            first_seen: self.first_seen.map(secs),
            last_seen: self.last_seen.map(secs),
            last_passthrough: self.last_passthrough.map(secs),
            scopes: self
                .scopes
                .iter()
                .map(|(label, s)| {
                    let record = ScopeRecord {
                        count: s.count,
                        last_seen: secs(s.last_seen),
                        any_of: s.any_of.iter().map(|a| a.to_string()).collect(),
                    };
                    (label.to_string(), record)
                })
                .collect(),
            shadow: self.shadow.clone(),
        }
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

    /// Everything recorded since `started_at`, as ledger records: what [`sync`] compares with
    /// the last write to find what to add.
    pub fn ledger(&self, started_at: SystemTime) -> Ledger {
        let mut ledger = Ledger::default();
        ledger.meta.observed_since = Some(secs(started_at));
        ledger.meta.keys_evicted = self.discovered.evicted();
        ledger.integrations = self
            .all()
            .iter()
            .map(|s| (s.name.clone(), s.record()))
            .collect();
        ledger.keys = self.discovered.records();
        ledger
    }
}

/// Per-integration request counters in Prometheus text.
pub fn render_metrics(tracker: &Tracker, out: &mut String) {
    out.push_str("# HELP coupa_gateway_integration_requests_total Responses by integration, route and status class.\n");
    out.push_str("# TYPE coupa_gateway_integration_requests_total counter\n");
    let all = tracker.all();
    let snapshots: Vec<_> = all
        .iter()
        .map(|s| (s.name.clone(), s.record().routes))
        .collect();
    for (name, routes) in &snapshots {
        for (prefix, r) in routes {
            for (class, n) in report::CLASSES.iter().zip(r.by_class) {
                let _ = writeln!(
                    out,
                    "coupa_gateway_integration_requests_total{{integration=\"{}\",route=\"{}\",class=\"{class}\"}} {n}",
                    escape(name),
                    escape(prefix)
                );
            }
        }
    }
    out.push_str("# HELP coupa_gateway_shadow_total Shadow requests (OAuth readiness) by integration, route and outcome: same or different status class, dropped (no spare budget), failed.\n");
    out.push_str("# TYPE coupa_gateway_shadow_total counter\n");
    for (name, routes) in &snapshots {
        for (prefix, r) in routes {
            let s = &r.shadow;
            if s.sent + s.dropped + s.failed == 0 {
                continue;
            }
            let different: u64 = s.different.values().sum();
            for (outcome, n) in [
                ("same", s.same),
                ("different", different),
                ("dropped", s.dropped),
                ("failed", s.failed),
            ] {
                let _ = writeln!(
                    out,
                    "coupa_gateway_shadow_total{{integration=\"{}\",route=\"{}\",outcome=\"{outcome}\"}} {n}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_modes_keeps_the_first_flip_time() {
        let s = IntegrationStats::new("erp");
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        s.observe_modes(true, t0);
        s.observe_modes(true, t0 + std::time::Duration::from_secs(50));
        assert_eq!(*lock(&s.oauth), Oauth::Since(100));
        s.observe_modes(false, t0 + std::time::Duration::from_secs(60));
        assert_eq!(*lock(&s.oauth), Oauth::Passthrough);
    }
}
