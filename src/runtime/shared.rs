//! What lives as long as the process, across runtime snapshots: the current snapshot itself,
//! counters, the migration tracker, the rate budgets, reload status and the drain flag.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

use super::Runtime;
use crate::migration::sync::LedgerSync;
use crate::migration::Tracker;
use crate::ops::metrics::Metrics;
use crate::state::budget::Budgets;

/// The outcome of the last reload, for `/status` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// When the last attempt finished.
    pub at: Option<SystemTime>,
    /// Its error, if it was refused (the previous configuration stays in force).
    pub error: Option<String>,
    /// Settings that changed in the file but only take effect after a restart.
    pub restart_required: Vec<String>,
    /// Reloads applied.
    pub applied: u64,
    /// Reloads refused.
    pub refused: u64,
}

/// State shared by the proxy and admin listeners for the life of the process.
pub struct Shared {
    /// The current runtime snapshot.
    pub runtime: ArcSwap<Runtime>,
    /// Counters that outlive snapshots.
    pub metrics: Metrics,
    /// Per-integration traffic records of this process (the request path writes here).
    pub tracker: Arc<Tracker>,
    /// Writes the tracker's records to the ledger's store and reads the ledger back.
    pub ledger: Arc<LedgerSync>,
    /// Process start, for uptime.
    pub started: Instant,
    /// Wall-clock process start.
    pub started_at: SystemTime,
    /// The last reload.
    pub reload: Mutex<ReloadStatus>,
    /// Serialises reloads (SIGHUP, file watcher and tests may race).
    pub reload_lock: tokio::sync::Mutex<()>,
    /// (client, scope) pairs already warned about, so a misconfiguration logs once.
    warned_scopes: Mutex<HashSet<(String, Arc<str>)>>,
    /// Requests in flight, all routes.
    pub inflight: AtomicUsize,
    /// Open client connections per proxy worker (`server.workers` at start); the acceptor
    /// hands each new connection to the worker with the fewest.
    pub worker_connections: Box<[AtomicUsize]>,
    /// Rate budgets by instance; kept across reloads while their settings are unchanged.
    pub budgets: Budgets,
    /// Set on SIGTERM: readiness fails while in-flight requests drain.
    pub shutting_down: AtomicBool,
}

impl Shared {
    /// Shared state around a first runtime.
    pub fn new(
        runtime: Runtime,
        budgets: Budgets,
        metrics: Metrics,
        tracker: Arc<Tracker>,
        ledger: Arc<LedgerSync>,
    ) -> Self {
        let workers = runtime.config.server.workers;
        Self {
            worker_connections: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            tracker,
            started: Instant::now(),
            started_at: ledger.started_at(),
            ledger,
            reload: Mutex::default(),
            reload_lock: tokio::sync::Mutex::new(()),
            warned_scopes: Mutex::default(),
            inflight: AtomicUsize::new(0),
            budgets,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Logs, once per client and scope, that traffic needs a scope the client lacks.
    pub fn warn_missing_scope(
        &self,
        client: &str,
        scope: &Arc<str>,
        method: &http::Method,
        integration: &str,
    ) {
        let mut warned = self.warned_scopes.lock().unwrap_or_else(|p| p.into_inner());
        if warned.insert((client.to_owned(), scope.clone())) {
            tracing::warn!(
                client,
                scope = scope.as_ref(),
                %method,
                integration,
                "traffic needs a scope the client is not configured with; add it in Coupa and to clients.{client}.scopes before enforcing"
            );
        }
    }
}
