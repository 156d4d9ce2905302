//! The local turn schedule of an instance's budget ([`super::Budget`]). Coupa allows 25
//! requests per second with a burst of 20 per instance and answers 429 beyond it
//! (docs/coupa-api.md §10); integrations rarely retry 429s well, so the gateway spaces requests
//! itself.
//!
//! The algorithm is GCRA (the "virtual scheduling" form of a token bucket): one atomic
//! "theoretical arrival time" per instance, advanced by one emission interval per turn. A turn
//! is free once `now >= tat - tolerance`; no queue structure, no task, no lock. Who gets the
//! turn is the fair queue's business ([`super::fair`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// A shared limiter for one instance.
#[derive(Debug)]
pub struct Limiter {
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// How far ahead of the sustained schedule a burst may run: (burst - 1) intervals.
    tolerance: u64,
    /// Theoretical arrival time, in nanoseconds since `epoch`.
    tat: AtomicU64,
    epoch: Instant,
}

impl Limiter {
    /// A limiter with `settings`.
    pub fn new(settings: &RateLimit) -> Self {
        let interval = (1e9 / settings.per_second).max(1.0) as u64;
        Self {
            interval,
            tolerance: interval * u64::from(settings.burst.saturating_sub(1)),
            tat: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Takes a turn only if one is free now (no reservation otherwise): the fair queue's fast
    /// path and its dispatcher, which grant turns in their own order.
    pub fn acquire_now(&self, now: Instant) -> bool {
        let now_ns = self.nanos(now);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            if tat.saturating_sub(self.tolerance) > now_ns {
                return false;
            }
            let next = tat.max(now_ns) + self.interval;
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }

    /// When the next turn is free (`now` if one is).
    pub fn next_free(&self, now: Instant) -> Instant {
        let start = self
            .tat
            .load(Ordering::Relaxed)
            .saturating_sub(self.tolerance);
        now + Duration::from_nanos(start.saturating_sub(self.nanos(now)))
    }

    /// Gives back a turn taken with [`Limiter::acquire_now`] that nobody used (its waiter
    /// gave up between the grant and the send).
    pub fn release(&self) {
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(self.interval))
            });
    }

    /// How far ahead of the sustained schedule a burst may run.
    pub fn tolerance(&self) -> Duration {
        Duration::from_nanos(self.tolerance)
    }

    /// The time between two turns at the sustained rate.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
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
    fn burst_goes_at_once_then_turns_are_spaced() {
        let l = limiter(25.0, 20, 30_000);
        let t0 = Instant::now();
        for i in 0..20 {
            assert!(l.acquire_now(t0), "turn {i} is within the burst");
        }
        // The 21st is free one interval (40 ms) later.
        assert!(!l.acquire_now(t0));
        assert_eq!(l.next_free(t0), t0 + Duration::from_millis(40));
        // Two seconds later the budget has refilled (capped at the burst).
        let t1 = t0 + Duration::from_secs(2);
        for _ in 0..20 {
            assert!(l.acquire_now(t1));
        }
        assert!(!l.acquire_now(t1));
    }

    #[test]
    fn slow_down_holds_everyone_until_then() {
        let l = limiter(25.0, 20, 30_000);
        let t0 = Instant::now();
        l.slow_down(t0 + Duration::from_secs(3));
        assert!(!l.acquire_now(t0));
        assert_eq!(l.next_free(t0), t0 + Duration::from_secs(3));
        assert!(l.retry_after(t0) >= 3);
    }

    #[test]
    fn acquire_now_takes_only_a_free_turn_and_release_gives_it_back() {
        let l = limiter(10.0, 2, 30_000);
        let t0 = Instant::now();
        assert!(l.acquire_now(t0) && l.acquire_now(t0), "the burst of 2");
        assert!(!l.acquire_now(t0), "no free turn: nothing reserved");
        assert_eq!(l.next_free(t0), t0 + Duration::from_millis(100));
        l.release();
        assert!(l.acquire_now(t0), "the released turn is free again");
        assert!(l.acquire_now(t0 + Duration::from_millis(200)));
    }
}
