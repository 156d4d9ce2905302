//! Adds what the request path recorded to the ledger in the configured store, off the request
//! path: every `state.flush_interval`, before every report, and at shutdown.
//!
//! The [`Tracker`] keeps this process's running totals and is never reset (its counters also
//! feed `/metrics`). A flush takes the totals, subtracts those of the last flush and adds the
//! difference to `pending`; a write that succeeds empties `pending`, one that fails leaves it
//! there, so the next write carries both. Nothing observed is lost while the process lives;
//! a crash loses at most one interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::report::rfc3339;
use super::{lock, secs, Tracker};
use crate::config;
use crate::state::ledger::Ledger;
use crate::state::store::{Store, StoreError};

/// Longest pause between attempts while the store fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Books {
    /// The tracker's totals when last taken.
    taken: Ledger,
    /// Taken but not yet written.
    pending: Ledger,
    /// The store's contents at the last read, plus what was written since.
    stored: Ledger,
}

#[derive(Debug, Clone, Default)]
struct Health {
    down_since: Option<SystemTime>,
    last_error: Option<String>,
    last_write: Option<SystemTime>,
    pending_records: usize,
}

/// The ledger's writer and reader for this process.
pub struct LedgerSync {
    store: Store,
    started_at: SystemTime,
    interval: Duration,
    books: tokio::sync::Mutex<Books>,
    health: Mutex<Health>,
    /// Writes that failed.
    pub write_failures: AtomicU64,
}

impl LedgerSync {
    /// Opens the store, writes this process's start to it and reads it back: an unusable or
    /// unreadable store stops the start here rather than failing at the first flush.
    pub async fn open(
        state: &config::State,
        tracker: &Tracker,
        started_at: SystemTime,
    ) -> Result<LedgerSync, StoreError> {
        let sync = LedgerSync {
            store: Store::open(&state.store).await?,
            started_at,
            interval: state.flush_interval,
            books: tokio::sync::Mutex::default(),
            health: Mutex::default(),
            write_failures: AtomicU64::new(0),
        };
        {
            let mut books = sync.books.lock().await;
            sync.flush_locked(&mut books, tracker).await?;
            books.stored = sync.store.load().await?;
        }
        Ok(sync)
    }

    /// A ledger in this process's memory only (unit tests, embedders).
    pub fn in_memory(started_at: SystemTime) -> LedgerSync {
        LedgerSync {
            store: Store::Memory(Mutex::default()),
            started_at,
            interval: crate::config::defaults::STATE_FLUSH_INTERVAL,
            books: tokio::sync::Mutex::default(),
            health: Mutex::default(),
            write_failures: AtomicU64::new(0),
        }
    }

    /// The process start this ledger's observations count from.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// `memory`, `file` or `redis`.
    pub fn kind(&self) -> &'static str {
        self.store.kind()
    }

    /// True while writes succeed.
    pub fn healthy(&self) -> bool {
        lock(&self.health).down_since.is_none()
    }

    /// Records taken but not yet written.
    pub fn pending_records(&self) -> usize {
        lock(&self.health).pending_records
    }

    /// Writes what was recorded since the last write (and whatever earlier writes left).
    pub async fn flush(&self, tracker: &Tracker) -> Result<(), StoreError> {
        let mut books = self.books.lock().await;
        self.flush_locked(&mut books, tracker).await
    }

    async fn flush_locked(&self, books: &mut Books, tracker: &Tracker) -> Result<(), StoreError> {
        let totals = tracker.ledger(self.started_at);
        let delta = totals.since(&books.taken);
        books.pending.absorb(&delta);
        books.taken = totals;
        let result = if books.pending.is_empty() {
            Ok(())
        } else {
            self.store.apply(&books.pending).await
        };
        let mut health = lock(&self.health);
        match &result {
            Ok(()) => {
                let pending = std::mem::take(&mut books.pending);
                books.stored.absorb(&pending);
                if let Some(since) = health.down_since.take() {
                    tracing::info!(
                        store = self.kind(),
                        down_s = since.elapsed().map_or(0, |d| d.as_secs()),
                        "ledger store is back; the observations kept meanwhile are written"
                    );
                }
                health.last_write = Some(SystemTime::now());
            }
            Err(e) => {
                self.write_failures.fetch_add(1, Ordering::Relaxed);
                if health.down_since.is_none() {
                    health.down_since = Some(SystemTime::now());
                    tracing::warn!(store = self.kind(), error = %e, "cannot write the migration ledger; requests are unaffected, observations are kept in memory and written when the store is back");
                }
                health.last_error = Some(e.to_string());
            }
        }
        health.pending_records = books.pending.integrations.len() + books.pending.keys.len();
        result
    }

    /// The whole ledger as of now: the store's contents after writing this process's latest
    /// observations; while the store fails, its last contents plus what is pending.
    pub async fn view(&self, tracker: &Tracker) -> Ledger {
        let mut books = self.books.lock().await;
        if self.flush_locked(&mut books, tracker).await.is_ok() {
            match self.store.load().await {
                Ok(stored) => books.stored = stored,
                Err(e) => {
                    let mut health = lock(&self.health);
                    health.down_since.get_or_insert_with(SystemTime::now);
                    health.last_error = Some(e.to_string());
                }
            }
        }
        let mut view = books.stored.clone();
        view.absorb(&books.pending);
        view
    }

    /// Removes integration `name`'s history from the ledger; true when there was any.
    pub async fn forget(&self, name: &str) -> Result<bool, StoreError> {
        let mut books = self.books.lock().await;
        let stored = self.store.forget(name).await?;
        let pending = books.pending.integrations.remove(name).is_some();
        books.stored.integrations.remove(name);
        Ok(stored || pending)
    }

    /// Flushes every interval, backing off while the store fails, until the task is aborted.
    pub async fn run(self: Arc<Self>, tracker: Arc<Tracker>) {
        let mut delay = self.interval;
        loop {
            tokio::time::sleep(delay).await;
            delay = match self.flush(&tracker).await {
                Ok(()) => self.interval,
                Err(_) => (delay * 2).min(MAX_BACKOFF.max(self.interval)),
            };
        }
    }

    /// The store's health in Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let kind = self.kind();
        let _ = write!(
            out,
            "# HELP coupa_gateway_ledger_store_up 1 while writes to the migration ledger's store succeed.\n\
             # TYPE coupa_gateway_ledger_store_up gauge\n\
             coupa_gateway_ledger_store_up{{store=\"{kind}\"}} {}\n\
             # HELP coupa_gateway_ledger_write_failures_total Failed writes to the ledger's store (retried with back-off).\n\
             # TYPE coupa_gateway_ledger_write_failures_total counter\n\
             coupa_gateway_ledger_write_failures_total{{store=\"{kind}\"}} {}\n\
             # HELP coupa_gateway_ledger_pending_records Ledger records observed but not yet written.\n\
             # TYPE coupa_gateway_ledger_pending_records gauge\n\
             coupa_gateway_ledger_pending_records{{store=\"{kind}\"}} {}\n",
            u8::from(self.healthy()),
            self.write_failures.load(Ordering::Relaxed),
            self.pending_records(),
        );
    }

    /// The `ledger` part of `/status`.
    pub fn status(&self, view: &Ledger) -> Value {
        let health = lock(&self.health).clone();
        let at = |t: Option<SystemTime>| t.map(|t| rfc3339(secs(t)));
        json!({
            "store": self.kind(),
            "location": self.store.location(),
            "observed_since": view.meta.observed_since.map(rfc3339),
            "healthy": health.down_since.is_none(),
            "down_since": at(health.down_since),
            "last_error": health.last_error,
            "last_write": at(health.last_write),
            "pending_records": health.pending_records,
            "write_failures": self.write_failures.load(Ordering::Relaxed),
            "flush_interval_s": self.interval.as_secs_f64(),
        })
    }
}
