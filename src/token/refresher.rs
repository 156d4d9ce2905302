//! The background task that keeps one cell's token fresh: when to mint (schedule and jitter),
//! when to retry (back-off) and when a new token may replace the old one (warm-up), following
//! Coupa's timing as the `token` module doc explains.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use super::cell::{Failure, Token, TokenCell, TokenState};
use super::{fetch, Minted, TokenError};

/// Backoff after a failed token request: 1 s doubling, capped at 5 min.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// How long to wait after `failures` consecutive failures: 1 s doubling to 5 min, scaled by a
/// random factor in [0.75, 1.0] so many gateways do not retry in lockstep.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    exp.min(BACKOFF_CAP).mul_f64(rand::random_range(0.75..=1.0))
}

/// Back-off after a permanent failure (wrong secret, scope not granted): 1 min doubling to
/// 30 min. Someone has to change a setting; retrying every second would only fill Coupa's
/// logs and count against the instance's rate limit.
fn permanent_backoff(failures: u32) -> Duration {
    let exp = Duration::from_secs(60).saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    exp.min(Duration::from_secs(1800))
        .mul_f64(rand::random_range(0.75..=1.0))
}

/// When to mint again after a token minted at `requested_at` with `expires_in`: at
/// `refresh_after` but never later than 5/6 of the lifetime, a little earlier by a random
/// jitter (up to 5 % of the interval, at most 5 min) so replicas spread out.
pub(super) fn refresh_at(
    requested_at: Instant,
    expires_in: Duration,
    refresh_after: Duration,
) -> Instant {
    let interval = refresh_after.min(expires_in.mul_f64(5.0 / 6.0));
    let jitter = (interval / 20)
        .min(Duration::from_secs(300))
        .mul_f64(rand::random_range(0.0..=1.0));
    requested_at + interval - jitter
}

/// How long before the old token stops being sent its successor is published at the latest.
/// The timer fires up to a few milliseconds late; publishing exactly at the old token's end
/// left the cell without a valid token meanwhile, and requests got 503 (17 of ~140 000 in a
/// load-bench run with 3 s tokens).
const HANDOVER_LEAD: Duration = Duration::from_secs(1);

/// When a token requested at `requested_at` replaces one still valid until `old_valid`: once
/// warmed up, but never later than [`HANDOVER_LEAD`] before the old one stops being sent.
fn handover_at(requested_at: Instant, warmup: Duration, old_valid: Instant) -> Instant {
    let latest = old_valid.checked_sub(HANDOVER_LEAD).unwrap_or(old_valid);
    (requested_at + warmup).min(latest)
}

/// # Concurrency note
/// The task never holds a strong reference while it sleeps, so dropping the last `Arc` of a
/// cell (a reload removed or replaced the client) runs `Drop`, which aborts the task at once
/// instead of at its next wake-up up to 20 h later.
pub(super) async fn refresher(cell: Weak<TokenCell>, nudge: Arc<Notify>, http: reqwest::Client) {
    loop {
        // Wait for the scheduled time (none yet: mint at once) or a nudge.
        let next = match cell.upgrade() {
            Some(this) => this.state.load().next_attempt,
            None => return,
        };
        if let Some(at) = next.filter(|&at| at > Instant::now()) {
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = nudge.notified() => {}
            }
        }
        let Some(this) = cell.upgrade() else { return };
        let started = Instant::now();
        let result = fetch(&http, &this.request).await.and_then(|m| {
            let token = Token::from_minted(&m)?;
            Ok((m, token))
        });
        this.request_durations[usize::from(result.is_err())].observe(started.elapsed());
        match result {
            Ok((minted, token)) => {
                this.refreshes_ok.fetch_add(1, Ordering::Relaxed);
                if minted.expires_in_assumed {
                    tracing::warn!(client = %this.name, "token response has no expires_in; assuming 1 h");
                }
                let next = refresh_at(minted.requested_at, minted.expires_in, this.refresh_after);
                // Warm-up: Coupa may reject a token in its first seconds, so keep the old token
                // while it is still valid, but never past its own validity.
                let now = Instant::now();
                // A token Coupa rejected is replaced at once: keeping it would only fail.
                let state = this.state.load();
                let old_valid = state
                    .token
                    .as_ref()
                    .filter(|t| state.rejected != Some(t.generation))
                    .map(|t| t.valid_until);
                drop(state);
                if let Some(old_valid) = old_valid.filter(|&v| v > now) {
                    let publish_at = handover_at(minted.requested_at, this.warmup, old_valid);
                    drop(this);
                    tokio::time::sleep_until(publish_at.into()).await;
                    let Some(again) = cell.upgrade() else { return };
                    publish(&again, token, &minted, next);
                } else {
                    publish(&this, token, &minted, next);
                }
            }
            Err(err) => {
                this.refreshes_failed.fetch_add(1, Ordering::Relaxed);
                let failures = this.state.load().consecutive_failures + 1;
                let base = if err.is_permanent() {
                    permanent_backoff(failures)
                } else {
                    backoff(failures)
                };
                let delay = base.max(err.retry_after().unwrap_or_default());
                let failure = Failure {
                    at: SystemTime::now(),
                    kind: err.kind(),
                    message: err.to_string(),
                    hint: err.hint(),
                };
                if err.is_permanent() {
                    tracing::error!(
                        client = %this.name,
                        instance = %this.instance,
                        kind = failure.kind.as_str(),
                        error = %failure.message,
                        hint = failure.hint,
                        retry_in_s = delay.as_secs_f32(),
                        "token request refused by Coupa; fix the client settings (retrying slowly)"
                    );
                } else {
                    tracing::warn!(
                        client = %this.name,
                        instance = %this.instance,
                        kind = failure.kind.as_str(),
                        error = %failure.message,
                        hint = failure.hint,
                        retry_in_s = delay.as_secs_f32(),
                        "token refresh failed; the current token (if still valid) stays in use"
                    );
                }
                let next = Instant::now() + delay;
                this.store(|s| TokenState {
                    last_error: Some(failure.clone()),
                    consecutive_failures: failures,
                    next_attempt: Some(next),
                    ..s.cloned()
                });
            }
        }
    }
}

pub(super) fn publish(cell: &TokenCell, mut token: Token, minted: &Minted, next: Instant) {
    // Only one task publishes for a cell at a time (prime runs before the refresher starts).
    token.generation = *cell.generations.borrow() + 1;
    let generation = token.generation;
    let token = Arc::new(token);
    cell.store(|_| TokenState {
        token: Some(token.clone()),
        last_success: Some(minted.requested_at_wall),
        last_error: None,
        consecutive_failures: 0,
        next_attempt: Some(next),
        rejected: None,
    });
    cell.generations.send_replace(generation);
    // Logged once the token is in use: a caller (or a test) acting on this line must not
    // meet a 503 from a cell still holding no token (seen in tests/cli.rs).
    tracing::info!(
        client = %cell.name,
        instance = %cell.instance,
        expires_in_s = minted.expires_in.as_secs(),
        "token minted"
    );
}

/// The minting side of a cell, beside the refresher that does it in the background.
impl TokenCell {
    /// Mints a token now and publishes it at once (no warm-up: there is no older token to
    /// prefer), without starting the refresher. Used by reload, which must not publish a new
    /// client until it holds a token. Returns when the token was requested.
    pub async fn prime(&self, http: &reqwest::Client) -> Result<Instant, TokenError> {
        let started = Instant::now();
        let minted = fetch(http, &self.request).await;
        self.request_durations[usize::from(minted.is_err())].observe(started.elapsed());
        let minted = match minted {
            Ok(m) => m,
            Err(e) => {
                self.refreshes_failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let token = Token::from_minted(&minted)?;
        self.refreshes_ok.fetch_add(1, Ordering::Relaxed);
        let next = refresh_at(minted.requested_at, minted.expires_in, self.refresh_after);
        publish(self, token, &minted, next);
        Ok(minted.requested_at)
    }

    /// Starts the background refresher, which mints at once unless the cell was primed. The task holds only
    /// a weak reference and is aborted when the cell is dropped (e.g. after a reload removed
    /// the client), so cells never leak tasks.
    pub fn start(self: &Arc<Self>, http: reqwest::Client) {
        let weak = Arc::downgrade(self);
        let handle = tokio::spawn(refresher(weak, self.nudge.clone(), http));
        if let Ok(mut task) = self.task.lock() {
            if let Some(old) = task.replace(handle.abort_handle()) {
                old.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_takes_over_after_warmup_but_before_the_old_one_ends() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // Coupa: 24 h tokens, re-minted at 20 h; the warm-up decides.
        let old_valid = t0 + s(86399 - 30);
        assert_eq!(handover_at(t0 + s(72000), s(5), old_valid), t0 + s(72005));
        // Short tokens: the old one would stop before the warm-up ends; the new one is
        // published a second before, never in the gap after.
        let old_valid = t0 + s(10);
        assert_eq!(handover_at(t0 + s(8), s(5), old_valid), t0 + s(9));
        assert!(handover_at(t0 + s(8), s(5), old_valid) < old_valid);
    }

    #[test]
    fn refresh_happens_by_refresh_after_or_five_sixths_of_lifetime() {
        let t0 = Instant::now();
        let day = Duration::from_secs(86399);
        let at = refresh_at(t0, day, Duration::from_secs(20 * 3600));
        let d = at - t0;
        assert!(d <= Duration::from_secs(20 * 3600));
        assert!(d >= Duration::from_secs(20 * 3600 - 300));
        // Short-lived tokens: 5/6 of 60 s = 50 s, less up to 5 % jitter.
        let at = refresh_at(t0, Duration::from_secs(60), Duration::from_secs(20 * 3600));
        let d = at - t0;
        assert!(d <= Duration::from_secs(50) && d >= Duration::from_millis(47_500));
    }

    #[test]
    fn backoff_doubles_from_one_second_and_caps_at_five_minutes() {
        let b1 = backoff(1);
        assert!(b1 >= Duration::from_millis(750) && b1 <= Duration::from_secs(1));
        let b4 = backoff(4);
        assert!(b4 >= Duration::from_secs(6) && b4 <= Duration::from_secs(8));
        for n in [10, 20, 40, u32::MAX] {
            let b = backoff(n);
            assert!(
                b <= BACKOFF_CAP && b >= BACKOFF_CAP.mul_f64(0.75),
                "{n}: {b:?}"
            );
        }
    }
}
