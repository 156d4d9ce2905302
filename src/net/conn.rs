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

use std::future::Future;
use std::io;
use std::ops::Range;
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

/// Header slots for parsing a head: hyper's default limit is 100, and a head
/// with more than this is refused rather than misread.
const MAX_HEADERS: usize = 128;

/// Scratch buffers larger than this are released once drained, so one large
/// head does not pin memory for the lifetime of a keep-alive connection.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Bytes that `http::uri::PathAndQuery` refuses in the path (before `?`) and
/// that are visible ASCII, so percent-encoding them is lossless.
/// `tests::tables_match_http_crate` re-derives this from the `http` crate.
const PATH_REFUSED: [bool; 256] = byte_table(b"<>`");

/// Bytes that `http::uri::PathAndQuery` refuses in the query; see
/// [`PATH_REFUSED`].
const QUERY_REFUSED: [bool; 256] = byte_table(b"\"<>");

const fn byte_table(bytes: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
}

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

/// Where the inbound stream is, in terms of HTTP/1.1 message framing.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Accumulating a request head.
    Head(HeadScan),
    /// Inside a `Content-Length` body; the count of bytes still to come.
    Fixed(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// An HTTP/2 connection (the preface was sniffed): bytes pass unchanged, and hyper's h2
    /// and `net/bounds.rs` own its framing and timeouts.
    H2,
    /// A head hyper will refuse (or one the wrapper cannot follow) has been handed over;
    /// nothing after it is.
    Refused,
}

impl State {
    fn head() -> Self {
        State::Head(HeadScan::default())
    }
}

/// Result of offering bytes to a head in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadStep {
    /// The first `n` offered bytes are to be forwarded exactly as they are,
    /// from where they are; nothing was copied.
    InPlace(usize),
    /// The first `n` offered bytes were taken; whatever is ready to forward
    /// is in `Framer::out`.
    Taken(usize),
}

/// The framing state machine, separate from I/O.
#[derive(Debug)]
struct Framer {
    state: State,
    /// The head in progress, when it spans reads.
    head: Vec<u8>,
    /// Processed bytes ready to forward: a complete (possibly rewritten) head,
    /// or a partial head being given up on.
    out: Vec<u8>,
    /// A head carried both `Content-Length` and `Transfer-Encoding`.
    conflicting: bool,
    /// The longest head buffered for inspection.
    max_head: usize,
}

impl Framer {
    fn new(max_head: usize) -> Self {
        Self {
            state: State::head(),
            head: Vec::new(),
            out: Vec::new(),
            conflicting: false,
            max_head,
        }
    }

    fn in_head(&self) -> bool {
        matches!(self.state, State::Head(_))
    }

    fn is_refused(&self) -> bool {
        matches!(self.state, State::Refused)
    }

    /// Offers bytes to the head in progress. Only valid in the `Head` state
    /// and with `out` drained, so that output keeps stream order.
    fn feed_head(&mut self, data: &[u8]) -> HeadStep {
        debug_assert!(self.out.is_empty());
        let State::Head(scan) = &mut self.state else {
            unreachable!("feed_head outside a head");
        };
        let window = &data[..data.len().min(self.max_head - self.head.len())];
        let Some(last) = scan.find_end(window) else {
            if window.len() == data.len() {
                self.head.extend_from_slice(data);
                return HeadStep::Taken(data.len());
            }
            // Over the cap, which is above hyper's header limit: hyper answers 431 for the
            // capped head it gets, and nothing after it reaches hyper.
            self.state = State::Refused;
            if self.head.is_empty() {
                return HeadStep::InPlace(window.len());
            }
            self.head.extend_from_slice(window);
            std::mem::swap(&mut self.head, &mut self.out);
            return HeadStep::Taken(window.len());
        };
        let end = last + 1;
        if self.head.is_empty() {
            // The whole head arrived in one piece: the common case, which
            // costs no copy unless the target needs rewriting.
            let head = &data[..end];
            let verdict = examine(head);
            self.state = verdict.next;
            self.conflicting |= verdict.conflicting;
            return match verdict.rewrite {
                None => HeadStep::InPlace(end),
                Some(target) => {
                    rewrite_into(head, target, &mut self.out);
                    HeadStep::Taken(end)
                }
            };
        }
        self.head.extend_from_slice(&data[..end]);
        let verdict = examine(&self.head);
        self.state = verdict.next;
        self.conflicting |= verdict.conflicting;
        match verdict.rewrite {
            None => std::mem::swap(&mut self.head, &mut self.out),
            Some(target) => {
                rewrite_into(&self.head, target, &mut self.out);
                recycle(&mut self.head);
            }
        }
        HeadStep::Taken(end)
    }

    /// Counts the leading bytes of `data` that belong to the current body (or
    /// to an HTTP/2 stream) and advances past them. Returns less than
    /// `data.len()` only when a message ended inside `data` (a head follows)
    /// or the body turned out malformed (the state is then `Refused`); it
    /// never returns 0 for non-empty `data` in a body or HTTP/2 state.
    fn pass_len(&mut self, data: &[u8]) -> usize {
        match &mut self.state {
            State::Head(_) => unreachable!("pass_len inside a head"),
            State::Refused => 0,
            State::H2 => data.len(),
            State::Fixed(remaining) => {
                let n = usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.state = State::head();
                }
                n
            }
            State::Chunked(chunk) => {
                let (n, next) = chunk.advance(data);
                match next {
                    ChunkNext::More(c) => *chunk = c,
                    // hyper answers a request with both lengths and closes: what follows
                    // is never read as a request (the gateway refuses it anyway).
                    ChunkNext::Done if self.conflicting => self.state = State::Refused,
                    ChunkNext::Done => self.state = State::head(),
                    // hyper fails this body at the same byte and closes the connection.
                    ChunkNext::Bad => self.state = State::Refused,
                }
                n
            }
        }
    }

    /// At EOF: moves a partial head to `out` unchanged, so hyper sees what the
    /// client sent. Returns whether there was one.
    fn flush_partial_head(&mut self) -> bool {
        if self.head.is_empty() {
            return false;
        }
        self.state = State::Refused;
        std::mem::swap(&mut self.head, &mut self.out);
        true
    }
}

/// Incremental search for the blank line that ends a head.
#[derive(Debug, Clone, Copy, Default)]
struct HeadScan {
    line: Line,
    /// Whether a non-blank line has started. httparse skips blank lines
    /// before the request line (RFC 9112 §2.2), so those end nothing.
    content: bool,
}

/// What the current line holds so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Line {
    #[default]
    Empty,
    Cr,
    Text,
}

impl HeadScan {
    /// Returns the index of the `\n` that ends the head, if `data` holds it.
    /// Like httparse, accepts both `\r\n` and bare `\n` line endings.
    fn find_end(&mut self, data: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < data.len() {
            if self.line == Line::Text {
                // Nothing inside a line matters; jump to its end.
                let nl = data[i..].iter().position(|&b| b == b'\n')?;
                i += nl + 1;
                self.line = Line::Empty;
                continue;
            }
            match data[i] {
                b'\n' if self.content => return Some(i),
                b'\n' => self.line = Line::Empty,
                b'\r' if self.line == Line::Empty => self.line = Line::Cr,
                _ => {
                    self.line = Line::Text;
                    self.content = true;
                }
            }
            i += 1;
        }
        None
    }
}

/// What to do with a complete head.
#[derive(Debug)]
struct Verdict {
    /// State for the bytes after the head.
    next: State,
    /// Range of the head to percent-encode, if it holds any refused byte.
    rewrite: Option<Range<usize>>,
    /// Both `Content-Length` and `Transfer-Encoding` were present.
    conflicting: bool,
}

/// Parses a complete head the way hyper does and decides how to forward it
/// and what follows it.
fn examine(head: &[u8]) -> Verdict {
    let refused = Verdict {
        next: State::Refused,
        rewrite: None,
        conflicting: false,
    };
    // PERF: uninitialised slots, as hyper parses: `[EMPTY_HEADER; 128]` would write 4 KiB
    // of stack on every request head.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    // Anything but a clean parse that ends exactly at our blank line (a
    // malformed head, too many headers) goes to hyper, which refuses it too.
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        _ => return refused,
    }
    let (Some(target), Some(version)) = (req.path, req.version) else {
        return refused;
    };
    let has = |name: &[u8]| {
        req.headers
            .iter()
            .any(|h| h.name.as_bytes().eq_ignore_ascii_case(name))
    };
    let conflicting = has(b"transfer-encoding") && has(b"content-length");
    let next = framing(version, req.headers);
    let target = target.as_bytes();
    // httparse hands back a subslice of `head`; its offset locates the target.
    let offset = target.as_ptr() as usize - head.as_ptr() as usize;
    debug_assert_eq!(&head[offset..offset + target.len()], target);
    let rewrite = path_start(target)
        .filter(|&start| count_refused(&target[start..]) > 0)
        .map(|start| offset + start..offset + target.len());
    Verdict {
        next,
        rewrite,
        conflicting,
    }
}

/// The framing of the body after a request head, mirroring hyper's server
/// (RFC 9112 §6.3): `Transfer-Encoding` ending in `chunked`, else a
/// `Content-Length`, else no body. `Upgrade` and `CONNECT` change nothing: the
/// gateway never answers 101 or a 2xx to CONNECT, so hyper keeps reading
/// HTTP/1. A head whose framing hyper refuses is `Refused`.
fn framing(version: u8, headers: &[httparse::Header<'_>]) -> State {
    let mut chunked = None;
    let mut length = None;
    let mut bad_length = false;
    for header in headers {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // hyper decides on the last Transfer-Encoding line.
            chunked = Some(is_chunked(header.value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            match (parse_digits(header.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(prev)) if n == prev => {}
                _ => bad_length = true,
            }
        }
    }
    match chunked {
        // Chunked is HTTP/1.1 only, must be the last coding, and beside a
        // malformed length hyper's verdict depends on header order: refused.
        Some(_) if version != 1 || bad_length => State::Refused,
        Some(false) => State::Refused,
        // With a Content-Length too (the shape of request smuggling), hyper
        // goes by chunked; the gateway answers 400 and `pass_len` stops after
        // the body.
        Some(true) => State::Chunked(Chunk::Start),
        None if bad_length => State::Refused,
        None => match length {
            Some(0) | None => State::head(),
            Some(n) => State::Fixed(n),
        },
    }
}

/// hyper's test: the last comma-separated coding is `chunked`.
fn is_chunked(value: &[u8]) -> bool {
    // hyper needs the value as visible ASCII; anything else is not chunked.
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return false;
    }
    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// A `Content-Length` value as hyper reads it: ASCII digits only, no sign,
/// no list, no overflow.
fn parse_digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| match b {
        b'0'..=b'9' => acc.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// Offset in a request target where its path-and-query begins, if it has one
/// we may touch: origin-form starts with it; in absolute-form it follows the
/// authority. Asterisk- and authority-form have none.
fn path_start(target: &[u8]) -> Option<usize> {
    if target.first() == Some(&b'/') {
        return Some(0);
    }
    let sep = target.windows(3).position(|w| w == b"://")?;
    let scheme = &target[..sep];
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return None;
    }
    // The authority ends where the `http` crate ends it.
    let authority = sep + 3;
    let len = target[authority..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))?;
    Some(authority + len)
}

/// Walks a path-and-query, calling `f` with each byte and whether it must be
/// percent-encoded. Stops at `#`: the `http` crate drops the fragment
/// unchecked, so whatever follows is left alone.
fn walk_target(target: &[u8], mut f: impl FnMut(u8, bool)) -> usize {
    let mut in_query = false;
    for (i, &b) in target.iter().enumerate() {
        if b == b'#' {
            return i;
        }
        let refused = if in_query {
            QUERY_REFUSED[usize::from(b)]
        } else {
            in_query = b == b'?';
            PATH_REFUSED[usize::from(b)]
        };
        f(b, refused);
    }
    target.len()
}

fn count_refused(target: &[u8]) -> usize {
    let mut count = 0;
    walk_target(target, |_, refused| count += usize::from(refused));
    count
}

/// Copies `head` into `out` with the refused bytes in `target` (a range of
/// `head` holding a path-and-query) percent-encoded.
fn rewrite_into(head: &[u8], target: Range<usize>, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let part = &head[target.clone()];
    out.reserve(head.len() + 2 * count_refused(part));
    out.extend_from_slice(&head[..target.start]);
    let walked = walk_target(part, |b, refused| {
        if refused {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.push(b);
        }
    });
    out.extend_from_slice(&part[walked..]);
    out.extend_from_slice(&head[target.end..]);
}

/// Position in a chunked body, following hyper's decoder state for state so
/// that both agree on where the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting the first hex digit of a chunk size.
    Start,
    /// In the chunk size; the value so far.
    Size(u64),
    /// In whitespace after the chunk size.
    SizeLws(u64),
    /// In a chunk extension.
    Ext(u64),
    /// Expecting the `\n` of the chunk-size line.
    SizeLf(u64),
    /// In chunk data; the count of bytes still to come (never 0).
    Data(u64),
    /// Expecting the `\r` after chunk data.
    DataCr,
    /// Expecting the `\n` after chunk data.
    DataLf,
    /// After the last chunk or a trailer line: a blank line or a trailer.
    EndCr,
    /// In a trailer line.
    Trailer,
    /// Expecting the `\n` of a trailer line.
    TrailerLf,
    /// Expecting the `\n` of the final blank line.
    EndLf,
}

/// Where a chunked body goes after some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkNext {
    /// Still inside the body.
    More(Chunk),
    /// The body ended.
    Done,
    /// Not a chunked body hyper would accept.
    Bad,
}

impl Chunk {
    /// Consumes bytes of `data` up to the end of the body. Returns how many
    /// were consumed and where that leaves the body.
    fn advance(self, data: &[u8]) -> (usize, ChunkNext) {
        let mut state = self;
        let mut i = 0;
        while i < data.len() {
            if let Chunk::Data(remaining) = state {
                // Chunk data is skipped in bulk; it is only counted.
                let n =
                    usize::try_from(remaining).map_or(data.len() - i, |r| r.min(data.len() - i));
                i += n;
                state = match remaining - n as u64 {
                    0 => Chunk::DataCr,
                    left => Chunk::Data(left),
                };
                continue;
            }
            let next = state.step(data[i]);
            i += 1;
            match next {
                ChunkNext::More(s) => state = s,
                end => return (i, end),
            }
        }
        (i, ChunkNext::More(state))
    }

    /// One byte of chunk framing, with hyper's grammar: CRLF required after
    /// size lines and data, bare LF refused in extensions, trailers end at CR.
    fn step(self, b: u8) -> ChunkNext {
        use ChunkNext::{Bad, Done, More};
        match (self, b) {
            (Chunk::Start, _) => hex_digit(b).map_or(Bad, |d| More(Chunk::Size(d))),
            (Chunk::Size(size), _) if b.is_ascii_hexdigit() => size
                .checked_mul(16)
                .zip(hex_digit(b))
                .and_then(|(s, d)| s.checked_add(d))
                .map_or(Bad, |s| More(Chunk::Size(s))),
            (Chunk::Size(size) | Chunk::SizeLws(size), b'\t' | b' ') => More(Chunk::SizeLws(size)),
            (Chunk::Size(size) | Chunk::SizeLws(size), b';') => More(Chunk::Ext(size)),
            (Chunk::Size(size) | Chunk::SizeLws(size) | Chunk::Ext(size), b'\r') => {
                More(Chunk::SizeLf(size))
            }
            (Chunk::Size(_) | Chunk::SizeLws(_), _) => Bad,
            (Chunk::Ext(_), b'\n') => Bad,
            (Chunk::Ext(size), _) => More(Chunk::Ext(size)),
            (Chunk::SizeLf(0), b'\n') => More(Chunk::EndCr),
            (Chunk::SizeLf(size), b'\n') => More(Chunk::Data(size)),
            (Chunk::SizeLf(_), _) => Bad,
            (Chunk::Data(_), _) => unreachable!("chunk data is skipped in bulk"),
            (Chunk::DataCr, b'\r') => More(Chunk::DataLf),
            (Chunk::DataLf, b'\n') => More(Chunk::Start),
            (Chunk::DataCr | Chunk::DataLf, _) => Bad,
            (Chunk::EndCr, b'\r') => More(Chunk::EndLf),
            (Chunk::Trailer, b'\r') => More(Chunk::TrailerLf),
            (Chunk::EndCr | Chunk::Trailer, _) => More(Chunk::Trailer),
            (Chunk::TrailerLf, b'\n') => More(Chunk::EndCr),
            (Chunk::EndLf, b'\n') => Done,
            (Chunk::TrailerLf | Chunk::EndLf, _) => Bad,
        }
    }
}

fn hex_digit(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::VecDeque;
    use std::future::Future;
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::{TcpListener, TcpStream};

    /// Bounds every async test, so a framing bug shows up as a failure rather
    /// than a hang.
    async fn bounded<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("test timed out")
    }

    // ----- the byte sets ---------------------------------------------------

    /// Re-derives the refused sets from the `http` crate itself, so an
    /// upgrade that changes them fails here instead of in production.
    #[test]
    fn tables_match_http_crate() {
        let accepts = |target: Vec<u8>| {
            let uri_ok = http::Uri::from_maybe_shared(Bytes::from(target.clone())).is_ok();
            let pq_ok = http::uri::PathAndQuery::from_maybe_shared(Bytes::from(target)).is_ok();
            assert_eq!(uri_ok, pq_ok, "Uri and PathAndQuery disagree");
            uri_ok
        };
        let mut path_refused = Vec::new();
        let mut query_refused = Vec::new();
        for b in 0x21..=0x7e_u8 {
            if !accepts([b"/a".as_slice(), &[b], b"b"].concat()) {
                path_refused.push(b);
            }
            if !accepts([b"/a?b".as_slice(), &[b], b"c"].concat()) {
                query_refused.push(b);
            }
        }
        assert_eq!(path_refused, b"<>`");
        assert_eq!(query_refused, b"\"<>");
        for b in 0..=255_u8 {
            let i = usize::from(b);
            assert_eq!(
                PATH_REFUSED[i],
                path_refused.contains(&b),
                "path byte {b:#x}"
            );
            assert_eq!(
                QUERY_REFUSED[i],
                query_refused.contains(&b),
                "query byte {b:#x}"
            );
        }
        // And the rewritten forms are accepted.
        for b in path_refused.iter().chain(&query_refused) {
            let encoded = format!("/a%{b:02X}b?c%{b:02X}d");
            assert!(accepts(encoded.into_bytes()));
        }
    }

    // ----- pure framing over scripted reads --------------------------------

    /// Yields the given chunks as separate reads, with a `Pending` before each
    /// one so the wrapper also meets a stalled stream mid-head and mid-body.
    struct Script {
        chunks: VecDeque<Vec<u8>>,
        stall: bool,
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.stall {
                self.stall = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.stall = true;
            let Some(chunk) = self.chunks.front_mut() else {
                return Poll::Ready(Ok(()));
            };
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.chunks.pop_front();
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Everything a reader with `out_size`-byte reads gets out of the wrapper
    /// when the connection delivers `chunks`. With `sniff`, the listener's
    /// protocol sniff reads first (its bytes must come out like any others).
    async fn filter_sniffed(chunks: Vec<Vec<u8>>, out_size: usize, sniff: bool) -> Vec<u8> {
        let script = Script {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            stall: false,
        };
        let mut wrapper = LenientTargets::new(script);
        if sniff {
            wrapper.sniff_h2_preface().await.expect("scripted read");
        }
        let mut out = Vec::new();
        let mut buf = vec![0; out_size];
        loop {
            let n = wrapper.read(&mut buf).await.expect("scripted read");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    async fn filter(chunks: Vec<Vec<u8>>, out_size: usize) -> Vec<u8> {
        filter_sniffed(chunks, out_size, false).await
    }

    /// Checks the output for the whole input in one read, one byte per read,
    /// and every split into two reads, with small and large reader buffers;
    /// the splits also after the protocol sniff.
    async fn check_all_splits(input: &[u8], expected: &[u8]) {
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        for out_size in [1, 5, 8192] {
            let whole = filter(vec![input.to_vec()], out_size).await;
            assert_eq!(
                show(&whole),
                show(expected),
                "one read, out_size {out_size}"
            );
        }
        let bytes = input.iter().map(|&b| vec![b]).collect();
        assert_eq!(
            show(&filter(bytes, 8192).await),
            show(expected),
            "byte by byte"
        );
        for split in 1..input.len() {
            for (out_size, sniff) in [(3, false), (8192, false), (8192, true)] {
                let chunks = vec![input[..split].to_vec(), input[split..].to_vec()];
                let got = filter_sniffed(chunks, out_size, sniff).await;
                assert_eq!(
                    show(&got),
                    show(expected),
                    "split at {split}, out_size {out_size}, sniff {sniff}"
                );
            }
        }
    }

    /// Checks a few representative read patterns; for the passthrough cases.
    async fn check(input: &[u8], expected: &[u8]) {
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let bytes = input.iter().map(|&b| vec![b]).collect();
        assert_eq!(
            show(&filter(bytes, 8192).await),
            show(expected),
            "byte by byte"
        );
        assert_eq!(
            show(&filter(vec![input.to_vec()], 8192).await),
            show(expected),
            "one read"
        );
        let mid = input.len() / 2;
        let halves = vec![input[..mid].to_vec(), input[mid..].to_vec()];
        assert_eq!(show(&filter(halves, 7).await), show(expected), "halves");
    }

    /// A chunked body: the chunks, each with an extension, a trailer section
    /// and quotes everywhere a rewriter must not look.
    fn chunked_body(chunks: &[&str]) -> String {
        let mut body = String::new();
        for (i, data) in chunks.iter().enumerate() {
            body += &format!("{:x};n=\"{i}\"\r\n{data}\r\n", data.len());
        }
        body + "0;last\r\nX-Checksum: \"abc\"\r\nX-Note: <x> GET /t?\"u\" HTTP/1.1\r\n\r\n"
    }

    /// Several keep-alive requests, as sent and as hyper must receive them.
    fn keep_alive_stream() -> (String, String) {
        let cl_body = "GET /x?\"y\" HTTP/1.1\r\n\r\n{\"a\":\"<b>\"}";
        let chunks = [
            "\"q\"<a>",
            "\r\n\r\nGET /y?\"z\" HTTP/1.1\r\nHost: h\r\n\r\n",
        ];
        let mut input = String::new();
        let mut expected = String::new();
        let mut both = |sent: &str, seen: &str| {
            input += sent;
            expected += seen;
        };
        both(
            "GET /api/invoices?fields=[\"id\",{\"supplier\":[\"name\"]}]&updated-at[gt]=2024-01-01T00:00:00%2B00:00 HTTP/1.1\r\nHost: coupa\r\n\r\n",
            "GET /api/invoices?fields=[%22id%22,{%22supplier%22:[%22name%22]}]&updated-at[gt]=2024-01-01T00:00:00%2B00:00 HTTP/1.1\r\nHost: coupa\r\n\r\n",
        );
        both(
            &format!("POST /api/notes?tag=\"n\" HTTP/1.1\r\nHost: coupa\r\nContent-Length: {}\r\n\r\n{cl_body}", cl_body.len()),
            &format!("POST /api/notes?tag=%22n%22 HTTP/1.1\r\nHost: coupa\r\nContent-Length: {}\r\n\r\n{cl_body}", cl_body.len()),
        );
        let body = chunked_body(&chunks);
        both(
            &format!("POST /api/batch?mode=\"c\" HTTP/1.1\r\nHost: coupa\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{body}"),
            &format!("POST /api/batch?mode=%22c%22 HTTP/1.1\r\nHost: coupa\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{body}"),
        );
        // Blank lines before a request line, bare-LF line endings, a path
        // that needs encoding too, and a fragment that must stay as sent.
        both(
            "\r\n\nGET /p<1>/`q`?a=\"b\"&c=%22#frag\"<> HTTP/1.1\nHost: coupa\n\n",
            "\r\n\nGET /p%3C1%3E/%60q%60?a=%22b%22&c=%22#frag\"<> HTTP/1.1\nHost: coupa\n\n",
        );
        both(
            "GET http://coupa.example/api/x?y=\"1\" HTTP/1.1\r\nHost: coupa\r\n\r\n",
            "GET http://coupa.example/api/x?y=%221%22 HTTP/1.1\r\nHost: coupa\r\n\r\n",
        );
        // Duplicate but equal lengths are fine for hyper, so for us too.
        both(
            "PUT /v?{\"k\":1} HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n\"x\"",
            "PUT /v?{%22k%22:1} HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n\"x\"",
        );
        both(
            "GET /plain?x=1 HTTP/1.1\r\nHost: coupa\r\n\r\n",
            "GET /plain?x=1 HTTP/1.1\r\nHost: coupa\r\n\r\n",
        );
        both(
            "GET /last?q=<\"z\"> HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            "GET /last?q=%3C%22z%22%3E HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        );
        (input, expected)
    }

    #[tokio::test]
    async fn rewrites_only_request_lines_for_every_read_split() {
        let (input, expected) = keep_alive_stream();
        bounded(check_all_splits(input.as_bytes(), expected.as_bytes())).await;
    }

    #[tokio::test]
    async fn rewrites_only_request_lines_for_random_read_patterns() {
        let (input, expected) = keep_alive_stream();
        let input = input.into_bytes();
        // A fixed LCG: reproducible, and no extra dependency.
        let mut seed = 0x2545_f491_u64;
        let mut next = move |bound: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize % bound
        };
        bounded(async {
            for _ in 0..300 {
                let mut chunks = Vec::new();
                let mut pos = 0;
                while pos < input.len() {
                    let len = 1 + next(40).min(input.len() - pos - 1);
                    chunks.push(input[pos..pos + len].to_vec());
                    pos += len;
                }
                let out_size = 1 + next(64);
                assert_eq!(filter(chunks, out_size).await, expected.as_bytes());
            }
        })
        .await;
    }

    #[test]
    fn a_clean_head_in_one_piece_is_not_copied() {
        let mut framer = Framer::new(MAX_HEAD);
        let head = b"GET /a?b=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nxyGET";
        assert_eq!(framer.feed_head(head), HeadStep::InPlace(head.len() - 5));
        assert!(framer.out.is_empty());
        assert!(matches!(framer.state, State::Fixed(2)));
        assert_eq!(framer.pass_len(b"xyGET"), 2);
        assert!(framer.in_head());
    }

    /// After a head the wrapper cannot follow, hyper gets that head and nothing more.
    async fn check_refused_after(first_sent: &str, first_seen: &str, rest: &str) {
        let follow = format!("{rest}GET /after?q=\"never seen\" HTTP/1.1\r\n\r\n");
        check(
            format!("{first_sent}{follow}").as_bytes(),
            first_seen.as_bytes(),
        )
        .await;
    }

    #[tokio::test]
    async fn upgrade_and_connect_heads_are_framed_like_any_other() {
        // The gateway never switches protocols, so hyper keeps reading HTTP/1 after these:
        // the next head must still be fixed (and, with limits, timed).
        let next = (
            "GET /n?q=\"1\" HTTP/1.1\r\n\r\n",
            "GET /n?q=%221%22 HTTP/1.1\r\n\r\n",
        );
        bounded(async {
            for (head, seen) in [
                (
                    "GET /ws?t=\"1\" HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                    "GET /ws?t=%221%22 HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                ),
                (
                    "CONNECT coupa.example:443 HTTP/1.1\r\nHost: coupa.example:443\r\n\r\n",
                    "CONNECT coupa.example:443 HTTP/1.1\r\nHost: coupa.example:443\r\n\r\n",
                ),
                (
                    "CONNECT /prod/api/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                    "CONNECT /prod/api/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                ),
            ] {
                let sent = format!("{head}{}", next.0);
                let expected = format!("{seen}{}", next.1);
                check(sent.as_bytes(), expected.as_bytes()).await;
            }
        })
        .await;
    }

    #[tokio::test]
    async fn framing_hyper_refuses_ends_what_reaches_hyper() {
        bounded(async {
            // The HTTP/2 preface without the sniff (the listener sniffs first): not HTTP/1.
            check_refused_after(
                "PRI * HTTP/2.0\r\n\r\n",
                "PRI * HTTP/2.0\r\n\r\n",
                "SM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
            )
            .await;
            // Request-smuggling shapes: hyper goes by chunked; so does the wrapper, up to
            // the end of that body and no further (the gateway answers 400 and closes).
            for both in [
                "POST /s HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                "POST /s HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            ] {
                let seen = format!("{both}0\r\n\r\n");
                check_refused_after(both, &seen, "0\r\n\r\n").await;
            }
            for refused in [
                "POST /s HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                "POST /s HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
                "POST /s HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
                "POST /s HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                "POST /s HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "POST /s HTTP/1.1\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                // A head httparse refuses (header without a colon, two spaces) stays as sent.
                "GET /a?b=\"c\" HTTP/1.1\r\nNo colon here\r\n\r\n",
                "GET /a?b=\"c\"  HTTP/1.1\r\n\r\n",
            ] {
                check_refused_after(refused, refused, "hello").await;
            }
            // A chunked body hyper would refuse passes up to the byte hyper fails on.
            let chunked = "POST /s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
            for (body, seen) in [
                ("5\nhello\r\n0\r\n\r\n", "5\n"),
                ("5\r\nhelloX\r\n0\r\n\r\n", "5\r\nhelloX"),
                ("fffffffffffffffff\r\n", "fffffffffffffffff"),
            ] {
                check_refused_after(chunked, &format!("{chunked}{seen}"), body).await;
            }
        })
        .await;
    }

    #[tokio::test]
    async fn partial_and_oversized_heads_end_what_reaches_hyper() {
        bounded(async {
            let partial = "GET /a?b=\"c\" HTTP/1.1\r\nHost: x\r\n";
            check(partial.as_bytes(), partial.as_bytes()).await;
            let partial = "POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
            check(partial.as_bytes(), partial.as_bytes()).await;
            // Over the cap: hyper gets the first MAX_HEAD bytes, unchanged, and no more.
            let huge = format!(
                "GET /a?b=\"c\" HTTP/1.1\r\nX-Big: {}\r\n\r\nGET /d?\"e\" HTTP/1.1\r\n\r\n",
                "a".repeat(MAX_HEAD)
            );
            check(huge.as_bytes(), &huge.as_bytes()[..MAX_HEAD]).await;
            // Just under the cap is still rewritten.
            let line = "GET /a?b=\"c\" HTTP/1.1\r\nX-Big: ";
            let filler = "a".repeat(MAX_HEAD - line.len() - 4);
            let near = format!("{line}{filler}\r\n\r\n");
            let fixed = format!("GET /a?b=%22c%22 HTTP/1.1\r\nX-Big: {filler}\r\n\r\n");
            assert_eq!(near.len(), MAX_HEAD);
            check(near.as_bytes(), fixed.as_bytes()).await;
        })
        .await;
    }

    #[tokio::test]
    async fn sniff_tells_the_h2_preface_and_keeps_every_byte() {
        bounded(async {
            let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04".to_vec();
            let get = b"GET /a?b=\"c\" HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
            let fixed = b"GET /a?b=%22c%22 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
            let partial = b"PRI * HTTP/2.0\r\n".to_vec();
            // (input, is h2, what the reader gets: the preface passes through unchanged)
            let cases = [
                (preface.clone(), true, preface),
                (get, false, fixed),
                (partial.clone(), false, partial), // EOF inside the preface
                (Vec::new(), false, Vec::new()),
            ];
            for (input, h2, expected) in cases {
                let one_by_one: Vec<Vec<u8>> = input.iter().map(|&b| vec![b]).collect();
                for chunks in [vec![input.clone()], one_by_one] {
                    let script = Script {
                        chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
                        stall: false,
                    };
                    let mut wrapper = LenientTargets::new(script);
                    assert_eq!(wrapper.sniff_h2_preface().await.unwrap(), h2);
                    let mut out = Vec::new();
                    wrapper.read_to_end(&mut out).await.unwrap();
                    assert_eq!(out, expected, "{}", String::from_utf8_lossy(&input));
                }
            }
        })
        .await;
    }

    // ----- end to end through hyper ----------------------------------------

    async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let uri = req.uri().to_string();
        let body = req.into_body().collect().await?.to_bytes();
        Ok(Response::new(Full::new(Bytes::from(format!(
            "{uri} {}",
            body.len()
        )))))
    }

    /// An HTTP/1 server whose handler answers `<uri> <body length>`.
    async fn server(lenient: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let conn = http1::Builder::new();
                    // Errors are the point of some tests; the client sees them.
                    let _ = if lenient {
                        let io = TokioIo::new(LenientTargets::new(tcp));
                        conn.serve_connection(io, service_fn(echo)).await
                    } else {
                        conn.serve_connection(TokioIo::new(tcp), service_fn(echo))
                            .await
                    };
                });
            }
        });
        addr
    }

    struct Client {
        rd: BufReader<OwnedReadHalf>,
        wr: OwnedWriteHalf,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> Self {
            let (rd, wr) = TcpStream::connect(addr)
                .await
                .expect("connect")
                .into_split();
            Self {
                rd: BufReader::new(rd),
                wr,
            }
        }

        async fn send(&mut self, bytes: &str) {
            self.wr.write_all(bytes.as_bytes()).await.expect("send");
        }

        /// The next response's status and body; `None` once the server closed.
        async fn response(&mut self) -> Option<(u16, String)> {
            let mut line = String::new();
            if self.rd.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let status = line.split(' ').nth(1)?.parse().ok()?;
            let mut length = 0;
            loop {
                line.clear();
                self.rd.read_line(&mut line).await.ok()?;
                let header = line.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':')?;
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().ok()?;
                }
            }
            let mut body = vec![0; length];
            self.rd.read_exact(&mut body).await.ok()?;
            Some((status, String::from_utf8(body).ok()?))
        }
    }

    const JSON_QUERY: &str =
        "/api/invoices?fields=[\"id\",{\"supplier\":[\"name\"]}]&updated-at[gt]=2024-01-01T00:00:00%2B00:00";

    #[tokio::test]
    async fn hyper_serves_raw_json_queries_on_one_keep_alive_connection() {
        bounded(async {
            let mut client = Client::connect(server(true).await).await;

            client.send(&format!("GET {JSON_QUERY} HTTP/1.1\r\nHost: coupa\r\n\r\n")).await;
            let encoded = JSON_QUERY.replace('"', "%22");
            assert_eq!(client.response().await, Some((200, format!("{encoded} 0"))));

            let body = chunked_body(&["{\"a\":\"<b>\"}", "GET /x?\"y\" HTTP/1.1\r\n\r\n"]);
            client
                .send(&format!(
                    "POST /api/batch?m=\"c\" HTTP/1.1\r\nHost: coupa\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
                ))
                .await;
            let len = "{\"a\":\"<b>\"}GET /x?\"y\" HTTP/1.1\r\n\r\n".len();
            assert_eq!(client.response().await, Some((200, format!("/api/batch?m=%22c%22 {len}"))));

            let body = "{\"note\":\"GET /z?\\\"q\\\" HTTP/1.1\"}";
            client
                .send(&format!(
                    "POST /api/notes HTTP/1.1\r\nHost: coupa\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ))
                .await;
            assert_eq!(client.response().await, Some((200, format!("/api/notes {}", body.len()))));

            client.send("GET /api/search?q=<a>&p=\"b\" HTTP/1.1\r\nHost: coupa\r\n\r\n").await;
            assert_eq!(
                client.response().await,
                Some((200, "/api/search?q=%3Ca%3E&p=%22b%22 0".to_owned()))
            );
        })
        .await;
    }

    /// Documents why the wrapper exists: plain hyper refuses the same request.
    #[tokio::test]
    async fn hyper_alone_refuses_raw_quotes() {
        bounded(async {
            let mut client = Client::connect(server(false).await).await;
            client
                .send(&format!("GET {JSON_QUERY} HTTP/1.1\r\nHost: coupa\r\n\r\n"))
                .await;
            let (status, _) = client.response().await.expect("a response");
            assert_eq!(status, 400);
        })
        .await;
    }

    #[tokio::test]
    async fn expect_continue_works_through_the_wrapper() {
        bounded(async {
            let mut client = Client::connect(server(true).await).await;
            // The body looks like a request line; it must arrive untouched.
            let body = "GET /?\"a\" HTTP/1.1\r\n\r\n";
            client
                .send(&format!(
                    "POST /api/up?x=\"1\" HTTP/1.1\r\nHost: coupa\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                ))
                .await;
            assert_eq!(client.response().await, Some((100, String::new())));
            client.send(body).await;
            let echoed = format!("/api/up?x=%221%22 {}", body.len());
            assert_eq!(client.response().await, Some((200, echoed)));
            client.send("GET /next?\"n\" HTTP/1.1\r\nHost: coupa\r\n\r\n").await;
            assert_eq!(client.response().await, Some((200, "/next?%22n%22 0".to_owned())));
        })
        .await;
    }

    #[tokio::test]
    async fn smuggling_shaped_requests_never_get_their_body_rewritten() {
        bounded(async {
            let mut client = Client::connect(server(true).await).await;
            // Content-Length covers the hidden request; chunked framing ends
            // before it. hyper goes by chunked and closes afterwards.
            let hidden = "GET /hidden?q=\"x\" HTTP/1.1\r\nHost: coupa\r\n\r\n";
            let body = format!("0\r\n\r\n{hidden}");
            client
                .send(&format!(
                    "POST /s HTTP/1.1\r\nHost: coupa\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
                    body.len()
                ))
                .await;
            assert_eq!(client.response().await, Some((200, "/s 0".to_owned())));
            // Whatever else hyper answers, the hidden request was never
            // rewritten into something it would serve.
            while let Some((status, body)) = client.response().await {
                assert!(!body.starts_with("/hidden"), "served {status} {body}");
            }
        })
        .await;
    }
}
