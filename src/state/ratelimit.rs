//! The per-instance request budget: Coupa allows 25 requests per second with a burst of 20 per
//! instance and answers 429 beyond it (docs/coupa-api.md §10). Integrations rarely retry 429s well,
//! so the gateway spaces requests itself: a request over the rate waits its turn (a bounded
//! wait, `max_queue_wait`) instead of collecting a 429 from Coupa.
//!
//! The algorithm is GCRA (the "virtual scheduling" form of a token bucket): one atomic
//! "theoretical arrival time" per instance, advanced by one emission interval per request.
//! A request's turn is `max(now, tat - tolerance)`; no queue structure, no task, no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// A shared limiter for one instance.
#[derive(Debug)]
pub struct Limiter {
    settings: RateLimit,
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// How far ahead of the sustained schedule a burst may run: (burst - 1) intervals.
    tolerance: u64,
    max_wait: u64,
    /// Theoretical arrival time, in nanoseconds since `epoch`.
    tat: AtomicU64,
    epoch: Instant,
    /// Requests that waited for their turn.
    pub queued: AtomicU64,
    /// Requests answered 429 by the gateway (queue wait exceeded).
    pub rejected: AtomicU64,
    /// 429/503 answers from Coupa that slowed the limiter.
    pub throttled: AtomicU64,
}

/// The limiter's answer for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Go now.
    Now,
    /// Wait until then (within `max_queue_wait`).
    At(Instant),
    /// Over budget even after `max_queue_wait`: answer 429 with this `Retry-After`.
    Rejected(Duration),
}

impl Limiter {
    /// A limiter with `settings`.
    pub fn new(settings: &RateLimit) -> Self {
        let interval = (1e9 / settings.per_second).max(1.0) as u64;
        Self {
            settings: settings.clone(),
            interval,
            tolerance: interval * u64::from(settings.burst.saturating_sub(1)),
            max_wait: settings.max_queue_wait.as_nanos().min(u128::from(u64::MAX)) as u64,
            tat: AtomicU64::new(0),
            epoch: Instant::now(),
            queued: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    /// The settings it was built with (a reload keeps a limiter whose settings are unchanged).
    pub fn settings(&self) -> &RateLimit {
        &self.settings
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Reserves the next turn for one request.
    pub fn acquire(&self, now: Instant) -> Turn {
        let now_ns = self.nanos(now);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.saturating_sub(self.tolerance).max(now_ns);
            let wait = start - now_ns;
            if wait > self.max_wait {
                // Not reserved: a rejected request must not push everyone else back.
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return Turn::Rejected(
                    Duration::from_nanos(wait - self.max_wait).max(Duration::from_secs(1)),
                );
            }
            let next = tat.max(now_ns) + self.interval;
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) if wait == 0 => return Turn::Now,
                Ok(_) => {
                    self.queued.fetch_add(1, Ordering::Relaxed);
                    return Turn::At(now + Duration::from_nanos(wait));
                }
                Err(actual) => tat = actual,
            }
        }
    }

    /// Coupa answered 429 or 503: hold every request to this instance until `until`.
    pub fn slow_down(&self, until: Instant) {
        let floor = self.nanos(until) + self.tolerance;
        self.tat.fetch_max(floor, Ordering::AcqRel);
    }

    /// Seconds until the next request could go (at least 1), for a `Retry-After` the gateway
    /// adds to a Coupa 429 that came without one.
    pub fn retry_after(&self, now: Instant) -> u64 {
        let tat = self.tat.load(Ordering::Relaxed);
        let start = tat.saturating_sub(self.tolerance);
        let wait = start.saturating_sub(self.nanos(now));
        Duration::from_nanos(wait).as_secs().max(1)
    }
}

/// The per-instance limiters of the process.
#[derive(Debug, Default)]
pub struct Limiters(Mutex<HashMap<String, Arc<Limiter>>>);

impl Limiters {
    /// The limiter for `instance`: the existing one if its settings are unchanged (so a
    /// reload does not hand out a fresh burst), a new one otherwise.
    pub fn get(&self, instance: &str, settings: &RateLimit) -> Arc<Limiter> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(instance) {
            Some(l) if l.settings() == settings => l.clone(),
            _ => {
                let l = Arc::new(Limiter::new(settings));
                map.insert(instance.to_owned(), l.clone());
                l
            }
        }
    }

    /// All limiters, for `/metrics`.
    pub fn all(&self) -> Vec<(String, Arc<Limiter>)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map.iter().map(|(k, l)| (k.clone(), l.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32, max_wait_ms: u64) -> Limiter {
        Limiter::new(&RateLimit {
            per_second,
            burst,
            max_queue_wait: Duration::from_millis(max_wait_ms),
        })
    }

    #[test]
    fn burst_goes_at_once_then_requests_are_spaced() {
        let l = limiter(25.0, 20, 30_000);
        let t0 = Instant::now();
        for i in 0..20 {
            assert_eq!(l.acquire(t0), Turn::Now, "request {i} is within the burst");
        }
        // The 21st waits one interval (40 ms), the 22nd two.
        assert_eq!(l.acquire(t0), Turn::At(t0 + Duration::from_millis(40)));
        assert_eq!(l.acquire(t0), Turn::At(t0 + Duration::from_millis(80)));
        // A second later the budget has refilled by 25 (capped at the burst).
        let t1 = t0 + Duration::from_secs(2);
        for _ in 0..20 {
            assert_eq!(l.acquire(t1), Turn::Now);
        }
    }

    #[test]
    fn waits_beyond_max_queue_wait_are_rejected_without_reserving() {
        let l = limiter(10.0, 1, 250);
        let t0 = Instant::now();
        assert_eq!(l.acquire(t0), Turn::Now);
        assert_eq!(l.acquire(t0), Turn::At(t0 + Duration::from_millis(100)));
        assert_eq!(l.acquire(t0), Turn::At(t0 + Duration::from_millis(200)));
        match l.acquire(t0) {
            Turn::Rejected(retry) => assert_eq!(retry, Duration::from_secs(1)),
            other => panic!("expected a rejection, got {other:?}"),
        }
        // The rejection reserved nothing: at 100 ms the next slot is still 300 ms.
        assert_eq!(
            l.acquire(t0 + Duration::from_millis(100)),
            Turn::At(t0 + Duration::from_millis(300))
        );
    }

    #[test]
    fn slow_down_holds_everyone_until_then() {
        let l = limiter(25.0, 20, 30_000);
        let t0 = Instant::now();
        l.slow_down(t0 + Duration::from_secs(3));
        assert_eq!(l.acquire(t0), Turn::At(t0 + Duration::from_secs(3)));
        assert!(l.retry_after(t0) >= 3);
        let short = limiter(25.0, 20, 1_000);
        short.slow_down(t0 + Duration::from_secs(3));
        assert!(matches!(short.acquire(t0), Turn::Rejected(_)));
    }
}
