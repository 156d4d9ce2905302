//! What the request path reads: one `ArcSwap` snapshot per client, so sending a token costs a
//! load and a refcount and never waits for the token endpoint. Only the refresher, and a 401's
//! `reject`, store a new snapshot.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;
use secrecy::ExposeSecret;
use tokio::sync::Notify;

use super::{FailureKind, Minted, TokenError, TokenRequest};
use crate::config;
use crate::ops::metrics::Histogram;

/// A token ready for the request path.
pub struct Token {
    /// `Bearer <token>`, marked sensitive so hyper and `Debug` never print it.
    header: HeaderValue,
    /// After this instant the token is not sent (expiry less a safety margin).
    pub(super) valid_until: Instant,
    /// Wall-clock expiry, for `/status`.
    pub expires_at: SystemTime,
    /// Wall-clock mint time, for `/status`.
    pub minted_at: SystemTime,
    /// Monotonic mint time (issue #4 uses it to recognise 401s inside the warm-up).
    pub minted_instant: Instant,
    /// The granted scope as echoed by the endpoint.
    pub scope: Option<String>,
    /// Increases with every token the cell publishes; tells a 401 on this token from one on
    /// its successor.
    pub generation: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expires_at", &self.expires_at)
            .field("minted_at", &self.minted_at)
            .finish_non_exhaustive()
    }
}

impl Token {
    pub(super) fn from_minted(m: &Minted) -> Result<Self, TokenError> {
        let mut header = HeaderValue::try_from(format!(
            "Bearer {}",
            m.access_token.expose_secret()
        ))
        .map_err(|_| {
            TokenError::BadResponse("access_token holds characters not allowed in a header".into())
        })?;
        header.set_sensitive(true);
        Ok(Self {
            header,
            valid_until: m.requested_at + m.expires_in - safety_margin(m.expires_in),
            expires_at: m.requested_at_wall + m.expires_in,
            minted_at: m.requested_at_wall,
            minted_instant: m.requested_at,
            scope: m.scope.clone(),
            generation: 0,
        })
    }

    /// True while the token may still be sent.
    pub fn is_valid_at(&self, now: Instant) -> bool {
        now < self.valid_until
    }

    /// Seconds left before the token stops being sent (0 when past).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.valid_until.saturating_duration_since(now)
    }
}

/// Stop sending a token a little before it expires so a request in flight does not arrive with
/// a dead token: 30 s for Coupa's 24 h tokens, a tenth of the lifetime for short test tokens.
fn safety_margin(expires_in: Duration) -> Duration {
    (expires_in / 10).min(Duration::from_secs(30))
}

/// The last failure, kept for `/status` and logs. Never holds a secret or token.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When it happened.
    pub at: SystemTime,
    /// Its class.
    pub kind: FailureKind,
    /// The error and its causes, one line.
    pub message: String,
    /// What to check.
    pub hint: &'static str,
}

/// One immutable snapshot of a client's token state. Only the refresher stores a new one.
#[derive(Debug, Default)]
pub struct TokenState {
    /// The token requests carry now, if any.
    pub token: Option<Arc<Token>>,
    /// When the last token was minted successfully.
    pub last_success: Option<SystemTime>,
    /// The last failure (cleared by the next success).
    pub last_error: Option<Failure>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// When the refresher will next call the token endpoint.
    pub next_attempt: Option<Instant>,
    /// The generation Coupa answered 401 to; a replacement is being minted.
    pub rejected: Option<u64>,
}

/// A token as the request path uses it.
#[derive(Debug, Clone)]
pub struct Bearer {
    /// `Bearer <token>` (sensitive).
    pub header: HeaderValue,
    /// The token's generation.
    pub generation: u64,
    /// When it was requested.
    pub minted: Instant,
    /// Coupa already rejected it; a replacement is on its way.
    pub rejected: bool,
}

impl TokenState {
    pub(super) fn cloned(&self) -> TokenState {
        TokenState {
            token: self.token.clone(),
            last_success: self.last_success,
            last_error: self.last_error.clone(),
            consecutive_failures: self.consecutive_failures,
            next_attempt: self.next_attempt,
            rejected: self.rejected,
        }
    }
}

/// Why the request path got no token.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable {
    /// Seconds until the refresher's next attempt (at least 1), for `Retry-After`.
    pub retry_after: u64,
}

/// The token of one configured client.
pub struct TokenCell {
    pub(super) name: String,
    pub(super) instance: String,
    pub(super) request: TokenRequest,
    pub(super) refresh_after: Duration,
    pub(super) warmup: Duration,
    pub(super) state: ArcSwap<TokenState>,
    /// Shared with the refresher, which must wait on it without holding the cell alive.
    pub(super) nudge: Arc<Notify>,
    /// Refresh outcomes, for `/metrics`.
    pub refreshes_ok: AtomicU64,
    /// Failed refreshes, for `/metrics`.
    pub refreshes_failed: AtomicU64,
    /// How long token requests took: `[success, failure]`.
    pub request_durations: [Histogram; 2],
    /// Coupa 401s answered by replaying the request with a new token.
    pub unauthorized_replayed: AtomicU64,
    /// Coupa 401s passed to the caller (body not replayable, or no new token in time).
    pub unauthorized_passed: AtomicU64,
    /// The generation of the latest published token; waiters for a replacement watch it.
    pub(super) generations: tokio::sync::watch::Sender<u64>,
    pub(super) task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for TokenCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCell")
            .field("client", &self.name)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Drop for TokenCell {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TokenCell {
    /// A cell with no token yet; call [`TokenCell::start`] to begin minting.
    pub fn new(client: &config::Client, instance: &config::Instance) -> Arc<Self> {
        Arc::new(Self {
            name: client.name.clone(),
            instance: instance.name.clone(),
            request: TokenRequest::new(client, instance),
            refresh_after: client.refresh_after,
            warmup: client.token_warmup,
            state: ArcSwap::from_pointee(TokenState::default()),
            nudge: Arc::new(Notify::new()),
            refreshes_ok: AtomicU64::new(0),
            refreshes_failed: AtomicU64::new(0),
            request_durations: Default::default(),
            unauthorized_replayed: AtomicU64::new(0),
            unauthorized_passed: AtomicU64::new(0),
            generations: tokio::sync::watch::Sender::new(0),
            task: Mutex::new(None),
        })
    }

    /// The client's name (`[clients.NAME]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instance the client belongs to.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The token request this cell makes.
    pub fn request(&self) -> &TokenRequest {
        &self.request
    }

    /// The current state snapshot.
    pub fn state(&self) -> arc_swap::Guard<Arc<TokenState>> {
        self.state.load()
    }

    /// The `Authorization` value to send now. This is the request path's whole token cost: one
    /// `ArcSwap` load and a `Bytes`-backed clone; it never waits for the token endpoint.
    #[inline]
    pub fn bearer(&self, now: Instant) -> Result<Bearer, Unavailable> {
        let state = self.state.load();
        match &state.token {
            Some(t) if t.is_valid_at(now) => Ok(Bearer {
                header: t.header.clone(),
                generation: t.generation,
                minted: t.minted_instant,
                rejected: state.rejected == Some(t.generation),
            }),
            _ => Err(Unavailable {
                retry_after: state
                    .next_attempt
                    .map(|at| at.saturating_duration_since(now).as_secs() + 1)
                    .unwrap_or(1),
            }),
        }
    }

    /// True when a token is held and valid now (readiness).
    pub fn is_ready(&self, now: Instant) -> bool {
        self.state
            .load()
            .token
            .as_ref()
            .is_some_and(|t| t.is_valid_at(now))
    }

    /// Asks the refresher to mint now instead of at its scheduled time.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Marks the token of `generation` as rejected by Coupa and asks for a replacement. Only
    /// the caller that flips the flag nudges the refresher, so a burst of 401s on one token
    /// costs one token request.
    pub fn reject(&self, generation: u64) {
        let mut flipped = false;
        self.state.rcu(|cur| {
            flipped = false;
            match &cur.token {
                Some(t) if t.generation == generation && cur.rejected != Some(generation) => {
                    flipped = true;
                    Arc::new(TokenState {
                        rejected: Some(generation),
                        ..cur.cloned()
                    })
                }
                _ => Arc::clone(cur),
            }
        });
        if flipped {
            tracing::warn!(client = %self.name, "Coupa rejected the current token (401); minting a new one");
            self.nudge();
        }
    }

    /// After Coupa answered 401 to `used`: the token to replay with, or `None` to give up.
    ///
    /// A 401 inside the token's warm-up is taken for Coupa's propagation delay
    /// (docs/coupa-api.md §5): wait the warm-up out and retry the same token, without minting.
    /// Otherwise the token is rejected (single-flight) and the replay waits for the
    /// replacement — and its warm-up — for at most the token timeout plus a second.
    pub async fn recover(&self, used: &Bearer) -> Option<Bearer> {
        let warm = used.minted + self.warmup;
        if Instant::now() < warm {
            tokio::time::sleep_until(warm.into()).await;
            return self.bearer(Instant::now()).ok();
        }
        self.reject(used.generation);
        self.replacement(used.generation).await
    }

    /// Waits for a token newer than `generation` (and its warm-up).
    pub async fn replacement(&self, generation: u64) -> Option<Bearer> {
        let mut rx = self.generations.subscribe();
        let wait = self.request.timeout + Duration::from_secs(1);
        match tokio::time::timeout(wait, rx.wait_for(|g| *g > generation)).await {
            Ok(Ok(_)) => {}
            _ => return None,
        }
        let fresh = self.bearer(Instant::now()).ok()?;
        let warm = fresh.minted + self.warmup;
        if Instant::now() < warm {
            tokio::time::sleep_until(warm.into()).await;
        }
        Some(fresh)
    }

    /// The warm-up this client waits before a new token replaces a valid one.
    pub fn warmup(&self) -> Duration {
        self.warmup
    }

    /// Stops the refresher (the token stays readable until it expires).
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }

    pub(super) fn store(&self, f: impl Fn(&TokenState) -> TokenState) {
        // The refresher is the main writer, but `reject` writes too (from the request path),
        // so every update is a read-copy-update that cannot lose the other's change.
        self.state.rcu(|cur| Arc::new(f(cur)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn safety_margin_is_thirty_seconds_or_a_tenth() {
        assert_eq!(
            safety_margin(Duration::from_secs(86399)),
            Duration::from_secs(30)
        );
        assert_eq!(
            safety_margin(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn token_header_is_sensitive_and_debug_hides_it() {
        let m = Minted {
            access_token: SecretString::from("tok-123".to_string()),
            expires_in: Duration::from_secs(100),
            expires_in_assumed: false,
            scope: None,
            requested_at: Instant::now(),
            requested_at_wall: SystemTime::now(),
        };
        let t = Token::from_minted(&m).unwrap();
        assert!(t.header.is_sensitive());
        assert!(!format!("{t:?}").contains("tok-123"));
        assert!(!format!("{:?}", t.header).contains("tok-123"));
        assert!(t.is_valid_at(Instant::now()));
        assert!(!t.is_valid_at(Instant::now() + Duration::from_secs(91)));
    }
}
