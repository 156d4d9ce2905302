//! Lenient request targets and connection-level time bounds for the HTTP/1 listener.
//!
//! hyper parses the request target with the `http` crate, which refuses a few
//! visible ASCII bytes (a raw `"` in the query, `<`, `>`, a backtick in the
//! path) and answers `400 Bad Request` before any handler runs. Coupa takes
//! JSON in query strings, and legacy integrations build such URLs by string
//! concatenation, so they send those bytes raw. Percent-encoding them is
//! equivalent for any RFC 3986 server, so [`LenientTargets`] does exactly that
//! to each request line on the inbound byte stream, before hyper sees it.
//!
//! To rewrite request lines and never body bytes, the wrapper follows HTTP/1.1
//! message framing (RFC 9112 §6) the way hyper does: `Content-Length` bodies
//! are counted, chunked bodies are walked with hyper's own chunk grammar.
//! It never stops following: the gateway never switches protocols (it strips
//! `Upgrade` and answers `CONNECT` with 405), so a head with `Upgrade` or
//! `CONNECT` is framed like any other. A head it cannot follow — one httparse
//! refuses, over the size cap, conflicting lengths, a coding hyper refuses, a
//! malformed chunk — is handed to hyper (which answers 400 or 431) and
//! nothing after it is: the connection reads as ended from there. A request
//! it cannot examine is refused, never waved through.
//!
//! The same wrapper bounds the connection's phases that only the byte stream
//! shows (see `net/bounds.rs` for the table of every phase): a started head must
//! complete within `header_timeout`; a connection with no request in flight
//! idles for at most `idle_timeout`; a write the client does not drain fails
//! after `write_timeout`. These apply in every state, HTTP/2 included for writes.

mod framing;
mod target;
#[cfg(test)]
mod tests;

use framing::{Framer, HeadStep, State};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Largest head buffered for inspection when no larger `max_header_bytes` is configured.
/// hyper refuses request targets over 64 KiB, so a maximal target plus ordinary headers fits.
/// A longer head is handed to hyper, whose own limit (never above the cap, see
/// [`ConnLimits::max_head`]) answers it with 431, and nothing after it is.
const MAX_HEAD: usize = 80 * 1024;

/// Scratch buffers larger than this are released once drained, so one large
/// head does not pin memory for the lifetime of a keep-alive connection.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Wraps an accepted connection; percent-encodes the bytes hyper's URI parser
/// refuses in each HTTP/1 request line.
///
/// Only the request target of each request head is changed: in the path `<`,
/// `>` and `` ` `` become `%3C`, `%3E` and `%60`; in the query `"`, `<` and
/// `>` become `%22`, `%3C` and `%3E`. Existing escapes (`%`) and everything
/// from a `#` on are left byte-exact. Bodies pass through unchanged.
///
/// A request head is held back until it is complete, so hyper only ever sees
/// whole (possibly rewritten) heads. Writes go straight to the inner stream.
#[derive(Debug)]
pub struct LenientTargets<T> {
    io: T,
    /// Connection timeouts, when enabled with [`LenientTargets::with_limits`].
    limits: Option<Limits>,
    framer: Framer,
    /// Bytes read from `io` that the framer has not looked at yet: whatever
    /// followed a head that had to be buffered in the same read.
    unread: Vec<u8>,
    unread_pos: usize,
    /// Read position in `framer.out`.
    out_pos: usize,
}

/// What the connection's service and the wrapper share.
#[derive(Debug)]
pub struct ConnState {
    /// Requests being served, from the head until their response body is sent or dropped
    /// (see [`ActiveRequest`]). While any is, the connection is not idle, however long Coupa
    /// takes.
    active: AtomicUsize,
    /// When `active` last fell to 0, in milliseconds since `opened`.
    idle_at_ms: AtomicU64,
    opened: Instant,
    /// A request head on this connection carried both `Content-Length` and
    /// `Transfer-Encoding`; hyper accepts that (chunked wins), the gateway refuses it.
    conflicting_framing: AtomicBool,
}

impl Default for ConnState {
    fn default() -> Self {
        Self {
            active: AtomicUsize::new(0),
            idle_at_ms: AtomicU64::new(0),
            opened: Instant::now(),
            conflicting_framing: AtomicBool::new(false),
        }
    }
}

impl ConnState {
    /// True when a request head on this connection carried both `Content-Length` and
    /// `Transfer-Encoding` (RFC 9112 §6.1: the shape of request smuggling).
    pub fn conflicting_framing(&self) -> bool {
        self.conflicting_framing.load(Ordering::Acquire)
    }

    /// Since when no request has been in flight; `None` while one is.
    ///
    /// Accepted race: a request ending as another starts can briefly show the older idle
    /// time. The worst outcome is an HTTP/2 GOAWAY a moment early, which RFC 9113 §6.8 makes
    /// safe: streams above its last-stream id were not processed and are retried by clients.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_at_ms.load(Ordering::Acquire);
        Some(self.opened + Duration::from_millis(ms))
    }

    fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }
}

/// Counts a request as in flight on its connection until dropped. The proxy hands it to the
/// response body, so a long download keeps the connection busy and a cancelled request (client
/// gone) still counts out.
#[derive(Debug)]
pub struct ActiveRequest(Arc<ConnState>);

impl ActiveRequest {
    /// Counts a request in.
    pub fn enter(state: Arc<ConnState>) -> Self {
        state.active.fetch_add(1, Ordering::AcqRel);
        Self(state)
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let state = &self.0;
        if state.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ms = u64::try_from(state.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
            state.idle_at_ms.store(ms, Ordering::Release);
        }
    }
}

/// The connection bounds the wrapper applies (`[server]` keys).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// `header_timeout`: a started request head must be complete within this.
    pub header: Duration,
    /// `idle_timeout`: with no request in flight, the connection may be silent this long.
    pub idle: Duration,
    /// `write_timeout`: a write the client does not take for this long ends the connection.
    pub write: Duration,
    /// hyper's `max_header_size`: heads are buffered up to one byte more than this, so hyper
    /// always sees a head too large for it and answers 431 itself.
    pub max_head: usize,
}

/// Connection-level timeouts. hyper-util's HTTP/1-or-2 detection has none, and hyper's own
/// header timer cannot tell an idle keep-alive connection from a slow head; the wrapper sees
/// both.
#[derive(Debug)]
struct Limits {
    state: Arc<ConnState>,
    bounds: ConnLimits,
    /// The last byte read or written.
    last_activity: Instant,
    /// When the head in progress started arriving (a head spanning reads).
    head_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    /// When the pending write started waiting for the client to read.
    write_since: Option<Instant>,
    /// Made at the first write that has to wait: most connections never need it.
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl Limits {
    /// The read deadline that applies now, if any: a started head must complete within
    /// `header`; with no request in flight, the connection may idle for `idle` (this also
    /// bounds hyper draining a body nobody reads). While a request is in flight its own
    /// bounds apply (`net/bounds.rs`); an HTTP/2 connection's idleness is judged by its requests,
    /// not its bytes (pings), in `net/server.rs`.
    fn deadline(&self, framer: &Framer) -> Option<Instant> {
        match framer.state {
            State::H2 => None,
            State::Head(_) if self.head_since.is_some() => {
                self.head_since.map(|since| since + self.bounds.header)
            }
            _ => (!self.state.is_active()).then(|| self.last_activity + self.bounds.idle),
        }
    }
}

impl<T> LenientTargets<T> {
    /// Wraps a freshly accepted connection, positioned at the start of the
    /// first request.
    pub fn new(io: T) -> Self {
        Self {
            io,
            limits: None,
            framer: Framer::new(MAX_HEAD),
            unread: Vec::new(),
            unread_pos: 0,
            out_pos: 0,
        }
    }

    /// Like [`LenientTargets::new`], and also applies `bounds`: a read or write that passes
    /// its deadline fails with `io::ErrorKind::TimedOut`, which ends the connection. `state` is
    /// shared with the connection's service.
    pub fn with_limits(io: T, state: Arc<ConnState>, bounds: ConnLimits) -> Self {
        let now = Instant::now();
        let mut this = Self::new(io);
        this.framer.max_head = MAX_HEAD.max(bounds.max_head.saturating_add(1));
        this.limits = Some(Limits {
            state,
            bounds,
            last_activity: now,
            head_since: None,
            timer: Box::pin(tokio::time::sleep_until(now + bounds.idle)),
            write_since: None,
            write_timer: None,
        });
        this
    }

    /// After reading: note activity, a head that started, and conflicting framing.
    fn after_read(&mut self, got_bytes: bool) {
        let Some(limits) = &mut self.limits else {
            return;
        };
        let now = Instant::now();
        if got_bytes {
            limits.last_activity = now;
        }
        if self.framer.conflicting {
            limits
                .state
                .conflicting_framing
                .store(true, Ordering::Release);
        }
        limits.head_since = match (
            self.framer.in_head() && !self.framer.head.is_empty(),
            limits.head_since,
        ) {
            (true, None) => Some(now),
            (true, since) => since,
            (false, _) => None,
        };
    }

    /// Before returning `Pending` from a read: arm the timer for the deadline that applies, or
    /// fail the read if it has passed.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(limits) = &mut self.limits else {
            return Ok(());
        };
        let Some(deadline) = limits.deadline(&self.framer) else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            let what = if limits.head_since.is_some() {
                "request head not complete (server.header_timeout)"
            } else {
                "idle (server.idle_timeout)"
            };
            return Err(io::Error::new(io::ErrorKind::TimedOut, what));
        }
        if limits.timer.deadline() != deadline {
            limits.timer.as_mut().reset(deadline);
        }
        // Registers the waker; when it fires, the next poll re-checks (a request may have
        // started in the meantime).
        let _ = limits.timer.as_mut().poll(cx);
        Ok(())
    }

    /// A write (or flush) had to wait: fail it once the client has not taken a byte for
    /// `write_timeout`, else make sure the task wakes to check again.
    fn write_waits(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(limits) = &mut self.limits else {
            return Ok(());
        };
        let now = Instant::now();
        let deadline = *limits.write_since.get_or_insert(now) + limits.bounds.write;
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading (server.write_timeout)",
            ));
        }
        let timer = limits
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let _ = timer.as_mut().poll(cx);
        Ok(())
    }

    /// Notes a write's (or flush's) outcome: progress, or a wait bounded by `write_timeout`.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                self.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.write_waits(cx)?;
                Poll::Pending
            }
        }
    }

    /// A write or flush went through: the client is reading, and the connection is not idle.
    fn wrote(&mut self, n: usize) {
        if let Some(limits) = &mut self.limits {
            if n > 0 {
                limits.last_activity = Instant::now();
            }
            limits.write_since = None;
        }
    }

    /// Reads the connection's first bytes until they show whether the client speaks HTTP/2
    /// with prior knowledge (the RFC 9113 §3.4 preface) and keeps them for the next reads, so
    /// the caller can pick the protocol before handing the connection to hyper. Returns false
    /// at EOF. Only valid before the first read; it sets no timer, so bound it.
    pub async fn sniff_h2_preface(&mut self) -> io::Result<bool>
    where
        T: AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        debug_assert!(self.unread.is_empty() && self.framer.in_head());
        let mut chunk = [0u8; 2048];
        while self.unread.len() < PREFACE.len() && PREFACE.starts_with(&self.unread) {
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            self.unread.extend_from_slice(&chunk[..n]);
        }
        if let Some(limits) = &mut self.limits {
            limits.last_activity = Instant::now();
        }
        let h2 = self.unread.starts_with(PREFACE);
        if h2 {
            self.framer.state = State::H2;
        }
        Ok(h2)
    }

    /// Returns the wrapped connection. Bytes already read from it but not yet
    /// returned to the reader (a partial head, say) are dropped.
    pub fn into_inner(self) -> T {
        self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for LenientTargets<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Reading into a full buffer must not look like EOF from the inner
        // stream, and there is nothing to hand over anyway.
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            // 1. A finished head (possibly rewritten) goes out first: it
            //    precedes everything still unread.
            if this.out_pos < this.framer.out.len() {
                let out = &this.framer.out[this.out_pos..];
                let n = out.len().min(buf.remaining());
                buf.put_slice(&out[..n]);
                this.out_pos += n;
                if this.out_pos == this.framer.out.len() {
                    this.out_pos = 0;
                    recycle(&mut this.framer.out);
                }
                return Poll::Ready(Ok(()));
            }

            // After a head hyper will refuse, nothing more reaches it: what the client
            // still sends is read and dropped (so its EOF is still seen, and a reset does not
            // destroy the answer), and the read deadlines keep applying.
            if this.framer.is_refused() {
                this.unread = Vec::new();
                this.unread_pos = 0;
                return this.discard(cx, buf);
            }

            // 2. Bytes that followed a buffered head in an earlier read.
            if this.unread_pos < this.unread.len() {
                let rest = &this.unread[this.unread_pos..];
                let passed = if this.framer.in_head() {
                    this.unread_pos += match this.framer.feed_head(rest) {
                        HeadStep::InPlace(n) => {
                            this.framer.out.extend_from_slice(&rest[..n]);
                            n
                        }
                        HeadStep::Taken(n) => n,
                    };
                    // Sniffed or left-over bytes count like fresh ones for framing flags
                    // and the header timer.
                    this.after_read(false);
                    false
                } else {
                    let window = &rest[..rest.len().min(buf.remaining())];
                    let n = this.framer.pass_len(window);
                    buf.put_slice(&window[..n]);
                    this.unread_pos += n;
                    n > 0
                };
                if this.unread_pos == this.unread.len() {
                    this.unread_pos = 0;
                    recycle(&mut this.unread);
                }
                if passed {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }

            // 3. Fresh bytes, read straight into the caller's buffer so that
            //    body bytes are never copied by us.
            let start = buf.filled().len();
            if Pin::new(&mut this.io).poll_read(cx, buf)?.is_pending() {
                this.check_deadline(cx)?;
                return Poll::Pending;
            }
            let end = buf.filled().len();
            let got_bytes = end > start;
            if end == start {
                // EOF. A partial head goes to hyper as is; it reports it.
                if this.framer.flush_partial_head() {
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let mut pos = start;
            while pos < end {
                if this.framer.is_refused() {
                    // Bytes after a refused head are dropped.
                    buf.set_filled(pos);
                    break;
                }
                if !this.framer.in_head() {
                    pos += this.framer.pass_len(&buf.filled()[pos..end]);
                    continue;
                }
                match this.framer.feed_head(&buf.filled()[pos..end]) {
                    HeadStep::InPlace(n) => pos += n,
                    HeadStep::Taken(n) => {
                        // The framer holds bytes that precede the rest of this
                        // read, so the rest waits in `unread` until they are out.
                        this.unread.extend_from_slice(&buf.filled()[pos + n..end]);
                        buf.set_filled(pos);
                        break;
                    }
                }
            }
            this.after_read(got_bytes);
            if buf.filled().len() > start {
                return Poll::Ready(Ok(()));
            }
            // Everything went into the framer: hand out what it produced, or
            // read on until a head is complete or the stream is Pending.
        }
    }
}

impl<T: AsyncRead + Unpin> LenientTargets<T> {
    /// Reads and drops the client's bytes until EOF (returned as EOF) or `Pending` (bounded by
    /// the read deadline). Dropped bytes are not activity: a client cannot keep a refused
    /// connection open by sending more.
    fn discard(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        loop {
            if Pin::new(&mut self.io).poll_read(cx, buf)?.is_pending() {
                self.check_deadline(cx)?;
                return Poll::Pending;
            }
            let got = buf.filled().len() > start;
            buf.set_filled(start);
            if !got {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LenientTargets<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.after_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx).map_ok(|()| 0);
        this.after_write(cx, polled).map_ok(drop)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shut = Pin::new(&mut this.io).poll_shutdown(cx);
        if shut.is_pending() {
            // A TLS close_notify the client never reads must not hold the task either.
            this.write_waits(cx)?;
        }
        shut
    }
}

/// Empties a scratch buffer, keeping its allocation unless it grew large.
fn recycle(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_CAPACITY {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}
