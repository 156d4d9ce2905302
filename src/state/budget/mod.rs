//! Each Coupa instance's request budget (Coupa allows 25 requests/s, burst 20, per instance,
//! whatever runs in front of it), spent fully and fairly.
//!
//! Turns come from a GCRA schedule ([`gcra`]): this process's own, or with `[state] redis` the
//! fleet's ([`fleet`]), so replicas together never exceed the instance's rate and a Coupa
//! 429 seen by one pauses all. A request whose turn is free and that nobody waits before goes
//! at once (one atomic, locally). Otherwise it waits in its integration's queue, and a
//! dispatcher task hands each turn, as it comes due, to the next waiter in weighted fair order
//! ([`fair`]): a caller that sends little is served within about one turn while another's
//! backlog queues, and a waiter that gives up is skipped, so its turn goes to someone else.
//!
//! Redis unreachable or slow (no answer within [`fleet::TIMEOUT`]): the replica spends
//! `per_second / state.replicas` on its own, says so (log, metric, `/status`), and asks Redis
//! again every few seconds; no request fails because Redis did.

pub mod fair;
pub mod fleet;
pub mod gcra;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, Notify};

use crate::config::RateLimit;
use fair::FairQueue;
use fleet::{Fleet, Reservation};
use gcra::Limiter;

/// How often a replica on its local share asks Redis again.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// Upper bounds (seconds) of the wait-time histogram.
pub const WAIT_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A waiter: when it was queued, and where its answer goes (`Err`: 429 with this
/// `Retry-After`).
type Waiter = (Instant, oneshot::Sender<Result<(), Duration>>);

/// What one integration got from one instance's budget after waiting.
#[derive(Debug, Clone, Default)]
pub struct ClassStats {
    /// Turns granted after waiting.
    pub turns: u64,
    /// Waits by [`WAIT_BUCKETS`] (the last slot: longer).
    pub buckets: [u64; WAIT_BUCKETS.len() + 1],
    /// Sum of the waits, seconds.
    pub wait_sum: f64,
}

/// Whether the budget is the fleet's or this replica's, and why.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `local` (no Redis), `fleet`, or `fallback` (Redis configured but failing).
    pub mode: &'static str,
    /// Why it is on its fallback.
    pub reason: Option<String>,
    /// Since when.
    pub since: Option<SystemTime>,
}

struct FleetBudget {
    fleet: Arc<Fleet>,
    instance: String,
    /// `per_second / replicas`, spent alone while Redis fails.
    fallback: Limiter,
    state: Mutex<FleetState>,
}

struct FleetState {
    on_fallback: bool,
    reason: Option<String>,
    since: Option<SystemTime>,
    next_probe: Instant,
}

enum Turn {
    Granted,
    Over(Duration),
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("settings", &self.settings)
            .field("scope", &self.scope().mode)
            .finish_non_exhaustive()
    }
}

/// One instance's budget.
pub struct Budget {
    settings: RateLimit,
    local: Limiter,
    fleet: Option<FleetBudget>,
    queue: Mutex<FairQueue<Waiter>>,
    /// Queued entries (given-up ones included until skipped): the fast path's one check.
    queued: AtomicUsize,
    wake: Arc<Notify>,
    dispatcher: AtomicBool,
    runtime: Option<tokio::runtime::Handle>,
    /// Turns taken at once, without waiting.
    pub immediate: AtomicU64,
    /// Turns granted after waiting.
    pub queued_turns: AtomicU64,
    /// Requests answered 429 by the gateway (the wait would pass `max_queue_wait`).
    pub rejected: AtomicU64,
    /// 429/503 answers from Coupa that paused the instance.
    pub throttled: AtomicU64,
    /// Switches from the fleet's budget to the local share.
    pub fallbacks: AtomicU64,
    /// Spare turns given to shadow requests.
    pub spare: AtomicU64,
    classes: Mutex<BTreeMap<String, ClassStats>>,
}

impl Budget {
    fn new(
        instance: &str,
        settings: &RateLimit,
        fleet: Option<&Arc<Fleet>>,
        replicas: u32,
    ) -> Self {
        let fleet = fleet.map(|f| {
            let share = f64::from(replicas.max(1));
            FleetBudget {
                fleet: f.clone(),
                instance: instance.to_owned(),
                fallback: Limiter::new(&RateLimit {
                    per_second: settings.per_second / share,
                    burst: ((f64::from(settings.burst) / share).ceil() as u32).max(1),
                    max_queue_wait: settings.max_queue_wait,
                }),
                state: Mutex::new(FleetState {
                    on_fallback: false,
                    reason: None,
                    since: None,
                    next_probe: Instant::now(),
                }),
            }
        });
        Budget {
            settings: settings.clone(),
            local: Limiter::new(settings),
            fleet,
            queue: Mutex::default(),
            queued: AtomicUsize::new(0),
            wake: Arc::new(Notify::new()),
            dispatcher: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::try_current().ok(),
            immediate: AtomicU64::new(0),
            queued_turns: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            spare: AtomicU64::new(0),
            classes: Mutex::default(),
        }
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &RateLimit {
        &self.settings
    }

    /// Waits for a turn for a request of integration `class` (of `weight`): `Err` is the
    /// `Retry-After` of a 429 when the wait would pass `max_queue_wait`.
    pub async fn wait_turn(self: &Arc<Self>, class: &str, weight: u32) -> Result<(), Duration> {
        let now = Instant::now();
        // PERF: the common case, a free turn and nobody waiting, is one load and one CAS.
        if self.fleet.is_none()
            && self.queued.load(Ordering::Acquire) == 0
            && self.local.acquire_now(now)
        {
            self.immediate.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.wait_in_queue(class, weight, now).await
    }

    /// A turn nobody wants, for the lowest priority (shadow requests): only when nobody waits
    /// and one is free now; never a wait, never ahead of a real request.
    pub async fn try_spare(&self) -> bool {
        if self.queued.load(Ordering::Acquire) != 0 {
            return false;
        }
        let taken = match &self.fleet {
            None => self.local.acquire_now(Instant::now()),
            Some(f) if lock(&f.state).on_fallback => f.fallback.acquire_now(Instant::now()),
            Some(f) => matches!(
                tokio::time::timeout(
                    fleet::TIMEOUT,
                    f.fleet.reserve(
                        &f.instance,
                        self.local.interval(),
                        self.local.tolerance(),
                        Duration::ZERO,
                    ),
                )
                .await,
                Ok(Ok(Reservation::After(wait))) if wait.is_zero()
            ),
        };
        if taken {
            self.spare.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    #[cold]
    async fn wait_in_queue(
        self: &Arc<Self>,
        class: &str,
        weight: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let max_wait = self.settings.max_queue_wait;
        let (tx, rx) = oneshot::channel();
        {
            let mut queue = lock(&self.queue);
            if self.fleet.is_none() {
                // Refuse at once what fair order could not serve in time, as the plain
                // limiter did (the fleet's schedule is Redis's to judge).
                let ahead = queue.turns_before(class, weight) - 1.0;
                let wait = self.local.next_free(now).saturating_duration_since(now)
                    + self.local.interval().mul_f64(ahead.max(0.0));
                if wait > max_wait {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    return Err((wait - max_wait).max(Duration::from_secs(1)));
                }
            }
            queue.push(class, weight, (now, tx));
            self.queued.store(queue.len(), Ordering::Release);
        }
        self.ensure_dispatcher();
        self.wake.notify_one();
        match tokio::time::timeout(max_wait + Duration::from_millis(100), rx).await {
            Ok(Ok(answer)) => answer,
            // The dispatcher is gone (the budget was replaced mid-wait): try again later.
            Ok(Err(_)) => Err(Duration::from_secs(1)),
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(Duration::from_secs(1))
            }
        }
    }

    fn ensure_dispatcher(self: &Arc<Self>) {
        if self.dispatcher.swap(true, Ordering::AcqRel) {
            return;
        }
        self.spawn(dispatch(Arc::downgrade(self), self.wake.clone()));
    }

    /// Runs `task` on the runtime the budget was made on (the gateway's main one), else on
    /// the caller's.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        match &self.runtime {
            Some(handle) => drop(handle.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }

    /// Hands the next turn to the next waiter; returns when that is done.
    async fn serve_one(&self) {
        let turn = match &self.fleet {
            None => local_turn(&self.local).await,
            Some(f) => self.fleet_turn(f).await,
        };
        let answer = match turn {
            Turn::Granted => Ok(()),
            Turn::Over(excess) => Err(excess.max(Duration::from_secs(1))),
        };
        let mut queue = lock(&self.queue);
        while let Some((class, (queued_at, tx))) = queue.pop() {
            self.queued.store(queue.len(), Ordering::Release);
            if tx.send(answer).is_ok() {
                if answer.is_ok() {
                    self.queued_turns.fetch_add(1, Ordering::Relaxed);
                    self.record_wait(&class, queued_at.elapsed());
                } else {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
        self.queued.store(0, Ordering::Release);
        // Everyone gave up: the turn goes back (locally; a fleet turn cannot be recalled).
        if answer.is_ok() {
            match &self.fleet {
                None => self.local.release(),
                Some(f) if lock(&f.state).on_fallback => f.fallback.release(),
                Some(_) => {}
            }
        }
    }

    async fn fleet_turn(&self, f: &FleetBudget) -> Turn {
        let probe = {
            let s = lock(&f.state);
            !s.on_fallback || Instant::now() >= s.next_probe
        };
        if !probe {
            return local_turn(&f.fallback).await;
        }
        let reserved = tokio::time::timeout(
            fleet::TIMEOUT,
            f.fleet.reserve(
                &f.instance,
                self.local.interval(),
                self.local.tolerance(),
                self.settings.max_queue_wait,
            ),
        )
        .await;
        match reserved {
            Ok(Ok(r)) => {
                self.fleet_back(f);
                match r {
                    Reservation::After(wait) => {
                        tokio::time::sleep(wait).await;
                        Turn::Granted
                    }
                    Reservation::Over(excess) => Turn::Over(excess),
                }
            }
            Ok(Err(e)) => {
                self.fleet_failed(f, format!("redis: {}", e.category()));
                local_turn(&f.fallback).await
            }
            Err(_) => {
                self.fleet_failed(f, format!("redis: no answer within {:?}", fleet::TIMEOUT));
                local_turn(&f.fallback).await
            }
        }
    }

    fn fleet_failed(&self, f: &FleetBudget, reason: String) {
        let mut s = lock(&f.state);
        s.next_probe = Instant::now() + PROBE_EVERY;
        if !s.on_fallback {
            s.on_fallback = true;
            s.since = Some(SystemTime::now());
            // No burst at the switch: the fleet may just have spent it at Coupa.
            f.fallback.slow_down(Instant::now());
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                instance = f.instance,
                reason,
                per_second = f.fallback.interval().as_secs_f64().recip(),
                "the fleet-wide rate budget is unreachable; this replica spends its share alone until Redis answers"
            );
        }
        s.reason = Some(reason);
    }

    fn fleet_back(&self, f: &FleetBudget) {
        let mut s = lock(&f.state);
        if s.on_fallback {
            s.on_fallback = false;
            s.since = Some(SystemTime::now());
            s.reason = None;
            // A Redis that lost its state would hand out a fresh burst while Coupa's bucket is
            // still empty from the replicas' local shares: start the shared schedule without
            // one (raising a floor is idempotent, whichever replica comes back first).
            let (fleet, instance, tolerance) =
                (f.fleet.clone(), f.instance.clone(), self.local.tolerance());
            self.spawn(async move {
                let _ = tokio::time::timeout(
                    fleet::TIMEOUT,
                    fleet.pause(&instance, Duration::ZERO, tolerance),
                )
                .await;
            });
            tracing::info!(instance = f.instance, "the fleet-wide rate budget is back");
        }
    }

    fn record_wait(&self, class: &str, waited: Duration) {
        let secs = waited.as_secs_f64();
        let mut classes = lock(&self.classes);
        let c = if let Some(c) = classes.get_mut(class) {
            c
        } else {
            classes.entry(class.to_owned()).or_default()
        };
        c.turns += 1;
        c.wait_sum += secs;
        let slot = WAIT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(WAIT_BUCKETS.len());
        c.buckets[slot] += 1;
    }

    /// Coupa answered 429 or 503: hold every turn of this instance until `until`, on this
    /// replica at once and, with Redis, on every replica.
    pub fn slow_down(self: &Arc<Self>, until: Instant) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        self.local.slow_down(until);
        if let Some(f) = &self.fleet {
            f.fallback.slow_down(until);
            let pause = until.saturating_duration_since(Instant::now());
            let (fleet, instance, tolerance) =
                (f.fleet.clone(), f.instance.clone(), self.local.tolerance());
            self.spawn(async move {
                if let Ok(Err(e)) =
                    tokio::time::timeout(fleet::TIMEOUT, fleet.pause(&instance, pause, tolerance))
                        .await
                {
                    tracing::debug!(instance, error = %e, "cannot pause the fleet's budget");
                }
            });
        }
    }

    /// Seconds until the next turn (at least 1), for a `Retry-After` on a Coupa 429 without one.
    pub fn retry_after(&self, now: Instant) -> u64 {
        self.local.retry_after(now)
    }

    /// Where its turns come from.
    pub fn scope(&self) -> Scope {
        match &self.fleet {
            None => Scope {
                mode: "local",
                reason: None,
                since: None,
            },
            Some(f) => {
                let s = lock(&f.state);
                Scope {
                    mode: if s.on_fallback { "fallback" } else { "fleet" },
                    reason: s.reason.clone(),
                    since: s.since,
                }
            }
        }
    }

    /// Requests waiting now, by integration (those that gave up are dropped first).
    pub fn waiting(&self) -> Vec<(String, usize)> {
        let mut queue = lock(&self.queue);
        queue.retain(|(_, tx)| !tx.is_closed());
        self.queued.store(queue.len(), Ordering::Release);
        queue
            .waiting()
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect()
    }

    /// Turns and waits by integration, after waiting.
    pub fn classes(&self) -> BTreeMap<String, ClassStats> {
        lock(&self.classes).clone()
    }
}

/// Takes a turn from `limiter`, sleeping until one is free.
async fn local_turn(limiter: &Limiter) -> Turn {
    loop {
        let now = Instant::now();
        if limiter.acquire_now(now) {
            return Turn::Granted;
        }
        tokio::time::sleep_until(limiter.next_free(now).into()).await;
    }
}

/// One task per budget with waiters: turns in, waiters out, until the budget is dropped.
async fn dispatch(budget: Weak<Budget>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(b) = budget.upgrade() else { return };
        if b.queued.load(Ordering::Acquire) == 0 {
            drop(b);
            notified.await;
            continue;
        }
        b.serve_one().await;
    }
}

/// Every instance's budget, kept across reloads while its settings are unchanged (a reload
/// must not hand out a fresh burst).
#[derive(Default)]
pub struct Budgets {
    map: Mutex<HashMap<String, Arc<Budget>>>,
    fleet: Option<Arc<Fleet>>,
    replicas: u32,
}

impl Budgets {
    /// Budgets shared through `fleet` (with `[state] redis`), or this process's own.
    pub fn new(fleet: Option<Fleet>, replicas: u32) -> Self {
        Budgets {
            map: Mutex::default(),
            fleet: fleet.map(Arc::new),
            replicas,
        }
    }

    /// The budget for `instance`.
    pub fn get(&self, instance: &str, settings: &RateLimit) -> Arc<Budget> {
        let mut map = lock(&self.map);
        match map.get(instance) {
            Some(b) if b.settings() == settings => b.clone(),
            _ => {
                let b = Arc::new(Budget::new(
                    instance,
                    settings,
                    self.fleet.as_ref(),
                    self.replicas,
                ));
                map.insert(instance.to_owned(), b.clone());
                b
            }
        }
    }

    /// The budget of `instance`, if it has one.
    pub fn find(&self, instance: &str) -> Option<Arc<Budget>> {
        lock(&self.map).get(instance).cloned()
    }

    /// All budgets by instance, for `/metrics` and `/status`.
    pub fn all(&self) -> Vec<(String, Arc<Budget>)> {
        let map = lock(&self.map);
        let mut v: Vec<_> = map.iter().map(|(k, b)| (k.clone(), b.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests;
