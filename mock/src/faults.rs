//! Fault knobs a test flips while the mock runs, and the counters behind [`super::Stats`].
//!
//! Plain atomics and tiny mutexes: the knobs are read once per request, so there is nothing to
//! gain from anything cleverer, and a test can change them from any thread at any time.

use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use tokio::sync::watch;

/// Live-changeable misbehaviour of one mock instance (see [`super::MockCoupa::faults`]).
///
/// # Concurrency note
/// Each knob is independent; a request reads each one once, so a request racing a change may
/// see the old value of one knob and the new value of another. Tests that need a clean cut
/// set the knobs before sending.
#[derive(Debug)]
pub struct Faults {
    token_failure: Mutex<Option<(u16, String)>>,
    token_delay_ns: AtomicU64,
    expires_in: AtomicU64,
    /// Tokens remember the generation they were minted in; bumping it revokes them all.
    token_generation: AtomicU64,
    /// New tokens answer 401 until they are this old (Coupa's "wait ~5 s" window).
    token_activation_ns: AtomicU64,
    api_delay_ns: AtomicU64,
    /// 0 = no injected failure (0 is not a valid HTTP status, so it is free as a sentinel).
    api_failure: AtomicU32,
    retry_after: Mutex<Option<u32>>,
    download_size: AtomicU64,
    /// `true` while downloads must stop at their midpoint. A watch channel (not a flag plus a
    /// `Notify`) so a download reaching the midpoint after the release cannot miss it.
    download_hold: watch::Sender<bool>,
    upload_bytes: AtomicU64,
}

/// Default body size of `GET /api/attachments/{id}`.
pub const DEFAULT_DOWNLOAD_SIZE: u64 = 1024;

impl Faults {
    pub(super) fn new(expires_in: u64) -> Self {
        Faults {
            token_failure: Mutex::new(None),
            token_delay_ns: AtomicU64::new(0),
            expires_in: AtomicU64::new(expires_in),
            token_generation: AtomicU64::new(0),
            token_activation_ns: AtomicU64::new(0),
            api_delay_ns: AtomicU64::new(0),
            api_failure: AtomicU32::new(0),
            retry_after: Mutex::new(None),
            download_size: AtomicU64::new(DEFAULT_DOWNLOAD_SIZE),
            download_hold: watch::Sender::new(false),
            upload_bytes: AtomicU64::new(0),
        }
    }

    /// Makes `POST /oauth2/token` answer `status` with the RFC 6749 §5.2 body
    /// `{"error": error, …}` (e.g. `(500, "server_error")`, `(401, "invalid_client")`);
    /// `None` restores normal behaviour. Token requests are still counted.
    pub fn fail_token_with(&self, failure: Option<(u16, &str)>) {
        *lock(&self.token_failure) = failure.map(|(s, e)| (s, e.to_owned()));
    }

    /// Delays every token response by `delay` (0 = none).
    pub fn set_token_delay(&self, delay: Duration) {
        self.token_delay_ns.store(nanos(delay), Ordering::Relaxed);
    }

    /// Sets `expires_in` (seconds) for tokens minted from now on; tokens already issued keep
    /// theirs. 0 mints tokens that are already expired.
    pub fn set_expires_in(&self, secs: u64) {
        self.expires_in.store(secs, Ordering::Relaxed);
    }

    /// Revokes every token issued so far: they answer 401 from now on. Tokens minted after
    /// this call work.
    pub fn revoke_all_tokens(&self) {
        self.token_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Makes tokens answer 401 until they are `delay` old, as Coupa may in the first seconds
    /// after minting (docs/coupa-api.md §5). 0 = usable at once.
    pub fn set_token_activation_delay(&self, delay: Duration) {
        self.token_activation_ns
            .store(nanos(delay), Ordering::Relaxed);
    }

    pub(super) fn token_activation_delay(&self) -> Duration {
        Duration::from_nanos(self.token_activation_ns.load(Ordering::Relaxed))
    }

    /// Delays every `/api` response head by `delay` (0 = none). Applied after the rate-limit
    /// check and before authentication.
    pub fn set_api_delay(&self, delay: Duration) {
        self.api_delay_ns.store(nanos(delay), Ordering::Relaxed);
    }

    /// Makes every `/api` request (past the rate limiter) answer `status` with a small
    /// Coupa-style error body, whatever its credentials; `None` restores normal behaviour.
    /// A status outside 100..=999 is answered as 500.
    pub fn fail_api_with(&self, status: Option<u16>) {
        self.api_failure
            .store(status.map_or(0, u32::from), Ordering::Relaxed);
    }

    /// Adds `Retry-After: <secs>` to 429 answers (and to injected 429/503 failures). Off by
    /// default, because whether Coupa sends
    /// it is disputed (docs/coupa-api.md §10).
    pub fn set_retry_after(&self, secs: Option<u32>) {
        *lock(&self.retry_after) = secs;
    }

    /// Sets the body size of `GET /api/attachments/{id}` (default 1024 bytes).
    pub fn set_download_size(&self, bytes: u64) {
        self.download_size.store(bytes, Ordering::Relaxed);
    }

    /// While `true`, a download that reaches its midpoint sends nothing more until
    /// [`Faults::release_download`] (or `hold_download_midway(false)`). Checked when a download
    /// reaches the midpoint, so it also catches downloads already under way.
    pub fn hold_download_midway(&self, hold: bool) {
        self.download_hold.send_replace(hold);
    }

    /// Lets held downloads finish and clears the hold for later ones.
    pub fn release_download(&self) {
        self.download_hold.send_replace(false);
    }

    /// Bytes received so far across all uploads (attachments and image scans), updated per
    /// body frame while uploads stream in.
    pub fn upload_bytes_received(&self) -> u64 {
        self.upload_bytes.load(Ordering::SeqCst)
    }

    /// The current download body size.
    pub fn download_size(&self) -> u64 {
        self.download_size.load(Ordering::Relaxed)
    }

    /// The `expires_in` new tokens get.
    pub fn expires_in(&self) -> u64 {
        self.expires_in.load(Ordering::Relaxed)
    }

    pub(super) fn token_failure(&self) -> Option<(u16, String)> {
        lock(&self.token_failure).clone()
    }

    pub(super) fn token_delay(&self) -> Duration {
        Duration::from_nanos(self.token_delay_ns.load(Ordering::Relaxed))
    }

    pub(super) fn token_generation(&self) -> u64 {
        self.token_generation.load(Ordering::SeqCst)
    }

    pub(super) fn api_delay(&self) -> Duration {
        Duration::from_nanos(self.api_delay_ns.load(Ordering::Relaxed))
    }

    pub(super) fn api_failure(&self) -> Option<u16> {
        match self.api_failure.load(Ordering::Relaxed) {
            0 => None,
            s => Some(u16::try_from(s).unwrap_or(500)),
        }
    }

    pub(super) fn retry_after(&self) -> Option<u32> {
        *lock(&self.retry_after)
    }

    pub(super) fn download_gate(&self) -> watch::Receiver<bool> {
        self.download_hold.subscribe()
    }

    pub(super) fn add_upload_bytes(&self, n: u64) {
        self.upload_bytes.fetch_add(n, Ordering::SeqCst);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Takes the lock even if a panicking holder poisoned it: every value behind these mutexes is
/// a plain replaceable knob, so poisoning carries no meaning here.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
