//! What the upstream pool's connections know about themselves: whether a request went out on a
//! *reused* connection, and how long the far end said it keeps an idle connection.
//!
//! The keep-alive race (hyperium/hyper#2136): Coupa's side closes an idle connection just as
//! the pool hands it to the next request, which then fails before any response byte. Such a
//! request is safe to send again on a fresh connection when its body can be replayed (pingora's
//! "reused only" rule), but hyper-util's pool does not say whether the connection was reused.
//! [`Tracking`] wraps every connection the pool opens in an [`Exchange`] that counts response
//! bytes per request/response exchange; when an exchange on a connection that already carried
//! a response fails before its own first response byte, the I/O error it returns carries a
//! [`StaleConnection`], which the request path finds by walking the error's causes. A failure on
//! a fresh connection is never marked, so it is never retried.
//!
//! `Keep-Alive: timeout=N` (RFC 2068 §19.7.1, sent by Apache and others): once a response that
//! carried it has been read to its end, the connection ends itself after a little less than
//! `N` idle seconds (an EOF hyper sees while idle), so the pool never hands out a connection
//! the far end is about to close.
//!
//! PERF: wrapping costs a few field updates per read and write. Only a connection's first
//! response head is scanned for `Keep-Alive:` (the far end sends it on all of a connection's
//! responses or on none), and a head is only parsed when the scan finds it. Nothing here
//! allocates except the one timer of a connection whose peer sends `Keep-Alive: timeout`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request went out on a pooled connection that had already carried a response, and the
/// connection failed before any byte of this request's response arrived: the far end most
/// likely closed it while it sat idle in the pool.
#[derive(Debug, thiserror::Error)]
#[error("the pooled connection was closed by Coupa's side before it answered (keep-alive race)")]
pub struct StaleConnection {
    /// The I/O error seen (none for a plain end of stream).
    #[source]
    source: Option<io::Error>,
}

fn stale(source: Option<io::Error>) -> io::Error {
    let kind = source
        .as_ref()
        .map_or(io::ErrorKind::UnexpectedEof, io::Error::kind);
    io::Error::new(kind, StaleConnection { source })
}

/// A connector whose connections are [`PooledStream`]s.
#[derive(Clone, Debug)]
pub struct Tracking<C> {
    inner: C,
}

impl<C> Tracking<C> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        Self { inner }
    }
}

impl<C> Service<Uri> for Tracking<C>
where
    C: Service<Uri>,
    C::Response: Read + Write + Connection + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = PooledStream<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        Box::pin(async move {
            let io = connecting.await.map_err(Into::into)?;
            Ok(PooledStream(TokioIo::new(Exchange::new(io))))
        })
    }
}

/// A pooled connection (see the module docs). The double [`TokioIo`] lets [`Exchange`] see the
/// bytes read (tokio's `ReadBuf` exposes them, hyper's cursor does not) without unsafe code.
pub struct PooledStream<T>(TokioIo<Exchange<T>>);

impl<T> std::fmt::Debug for PooledStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PooledStream")
    }
}

impl<T: Connection> Connection for PooledStream<T> {
    fn connected(&self) -> Connected {
        self.0.inner().io.inner().connected()
    }
}

impl<T: Read + Write + Unpin> Read for PooledStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: Read + Write + Unpin> Write for PooledStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

/// How much of the current response's body is still to come, when its head said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLeft {
    /// The head was not seen whole in one read, or gave no length: the end is not known.
    Unknown,
    /// `Content-Length` bytes still to read.
    Bytes(u64),
    /// `Transfer-Encoding: chunked`: ends with the last chunk.
    Chunked,
    /// The response has been read to its end.
    Done,
}

/// One connection's request/response exchanges, as seen in its bytes (HTTP/1.1: one exchange
/// at a time, a request's first write starts one, its response's first byte answers it).
struct Exchange<S> {
    io: TokioIo<S>,
    /// Some exchange before the current one got response bytes: the connection is reused.
    carried_response: bool,
    /// A request is out and no byte of its response has arrived.
    awaiting: bool,
    /// This exchange started on a connection that had carried a response.
    reused: bool,
    body: BodyLeft,
    /// When the far end's keep-alive runs out (from its `Keep-Alive: timeout`).
    close_at: Option<Pin<Box<Sleep>>>,
}

impl<S> Exchange<S> {
    fn new(io: S) -> Self {
        Self {
            io: TokioIo::new(io),
            carried_response: false,
            awaiting: false,
            reused: false,
            body: BodyLeft::Unknown,
            close_at: None,
        }
    }

    fn start_if_new(&mut self) {
        if !self.awaiting {
            self.awaiting = true;
            self.reused = self.carried_response;
            self.body = BodyLeft::Unknown;
        }
    }

    /// An error of this exchange, marked when it is the keep-alive race.
    fn failed(&self, e: Option<io::Error>) -> io::Error {
        if self.awaiting && self.reused {
            stale(e)
        } else {
            e.unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into())
        }
    }

    /// Notes `bytes`, just read.
    fn read(&mut self, bytes: &[u8]) {
        if self.awaiting {
            // The first bytes of a response: its head, usually whole in this one read.
            let first = !self.carried_response;
            self.awaiting = false;
            self.carried_response = true;
            self.body = BodyLeft::Unknown;
            // PERF: a server that sends `Keep-Alive` sends it on every response of a
            // connection, one that does not never does: the head is only looked at on a
            // connection's first response and, if that had it, on the ones after.
            if !first && self.close_at.is_none() {
                return;
            }
            if let Some(head) = keep_alive_head(bytes) {
                let window = keep_alive_window(head.timeout);
                match &mut self.close_at {
                    Some(sleep) => sleep.as_mut().reset(Instant::now() + window),
                    None => self.close_at = Some(Box::pin(tokio::time::sleep(window))),
                }
                self.body = head.body;
                self.consume(&bytes[head.len..]);
            } else {
                // A response without the header: the far end's previous promise is void.
                self.close_at = None;
            }
        } else {
            self.consume(bytes);
        }
    }

    fn consume(&mut self, body: &[u8]) {
        self.body = match self.body {
            BodyLeft::Bytes(n) => {
                let n = n.saturating_sub(body.len() as u64);
                if n == 0 {
                    BodyLeft::Done
                } else {
                    BodyLeft::Bytes(n)
                }
            }
            // The last chunk and an empty trailer; a read that splits them leaves the end
            // unknown, which only means the connection is not ended early.
            BodyLeft::Chunked if body.ends_with(b"0\r\n\r\n") => BodyLeft::Done,
            other => other,
        };
    }

    /// The far end's keep-alive has run out and the connection is idle.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.awaiting || self.body != BodyLeft::Done {
            return false;
        }
        match &mut self.close_at {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }
}

impl<S: Read + Write + Unpin> AsyncRead for Exchange<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.expired(cx) {
            // End of stream: hyper drops an idle connection that sees it.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    if this.awaiting && this.reused {
                        return Poll::Ready(Err(this.failed(None)));
                    }
                } else {
                    this.read(new);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.failed(Some(e)))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: Read + Write + Unpin> AsyncWrite for Exchange<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.start_if_new();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.failed(Some(e)))),
            other => other,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.start_if_new();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.failed(Some(e)))),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.failed(Some(e)))),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What a response head with a `Keep-Alive: timeout` says.
#[derive(Debug, PartialEq, Eq)]
struct KeepAliveHead {
    /// Length of the head, blank line included.
    len: usize,
    /// Seconds the far end keeps the connection idle.
    timeout: u64,
    body: BodyLeft,
}

/// Parses `bytes` as a response head when it holds a whole one with a `Keep-Alive: timeout=N`
/// header. PERF: most responses have no such header; a scan for it comes first, and only a
/// head that has one is parsed.
fn keep_alive_head(bytes: &[u8]) -> Option<KeepAliveHead> {
    if !mentions_keep_alive(bytes) {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = resp.parse(bytes).ok()? else {
        return None;
    };
    let code = resp.code?;
    let mut timeout = None;
    let mut body = if code == 204 || code == 304 {
        BodyLeft::Done
    } else {
        BodyLeft::Unknown
    };
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).ok()?;
        if h.name.eq_ignore_ascii_case("keep-alive") {
            // `timeout=5, max=100`
            timeout = value.split(',').find_map(|param| {
                let (k, v) = param.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("timeout")
                    .then(|| v.trim().parse::<u64>().ok())
                    .flatten()
            });
        } else if body != BodyLeft::Done && h.name.eq_ignore_ascii_case("content-length") {
            body = match value.trim().parse::<u64>().ok()? {
                0 => BodyLeft::Done,
                n => BodyLeft::Bytes(n),
            };
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().trim_end().ends_with("chunked")
        {
            body = BodyLeft::Chunked;
        }
    }
    Some(KeepAliveHead {
        len,
        timeout: timeout?,
        body,
    })
}

/// Whether a header line of the head at the start of `bytes` is `Keep-Alive:`. Looks at the
/// first bytes of each line only and stops at the blank line, so the body that follows the
/// head in the same read is not scanned.
fn mentions_keep_alive(bytes: &[u8]) -> bool {
    const NAME: &[u8] = b"keep-alive:";
    let mut rest = bytes;
    while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
        rest = &rest[newline + 1..];
        if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            return false;
        }
        if rest.len() >= NAME.len() && rest[..NAME.len()].eq_ignore_ascii_case(NAME) {
            return true;
        }
    }
    false
}

/// How long the gateway keeps a connection idle when the far end said `timeout`: a margin
/// less, since its clock started when it finished writing, a little after ours.
fn keep_alive_window(timeout: u64) -> Duration {
    let said = Duration::from_secs(timeout);
    said.saturating_sub(Duration::from_secs(1)).max(said / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_heads_are_found_and_read() {
        let head =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5, max=100\r\n\r\nhello";
        assert_eq!(
            keep_alive_head(head),
            Some(KeepAliveHead {
                len: head.len() - 5,
                timeout: 5,
                body: BodyLeft::Bytes(5)
            })
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nkeep-alive: max=9,timeout=2\r\n\r\n";
        assert_eq!(keep_alive_head(chunked).unwrap().body, BodyLeft::Chunked);
        assert_eq!(keep_alive_head(chunked).unwrap().timeout, 2);
        let no_content = b"HTTP/1.1 204 No Content\r\nKeep-Alive: timeout=3\r\n\r\n";
        assert_eq!(keep_alive_head(no_content).unwrap().body, BodyLeft::Done);
        // No header, no timeout in it, or a head cut by the read: nothing is promised.
        assert_eq!(
            keep_alive_head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            None
        );
        assert_eq!(
            keep_alive_head(b"HTTP/1.1 200 OK\r\nKeep-Alive: max=5\r\n\r\n"),
            None
        );
        assert_eq!(
            keep_alive_head(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\n"),
            None
        );
        // `Connection: keep-alive` is not the header, nor is a body line after the head.
        assert_eq!(
            keep_alive_head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"),
            None
        );
        assert!(!mentions_keep_alive(
            b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n\nKeep-Alive: 1"
        ));
    }

    #[test]
    fn the_window_is_a_margin_below_the_far_ends_timeout() {
        assert_eq!(keep_alive_window(5), Duration::from_secs(4));
        assert_eq!(keep_alive_window(2), Duration::from_secs(1));
        assert_eq!(keep_alive_window(1), Duration::from_millis(500));
        assert_eq!(keep_alive_window(0), Duration::ZERO);
    }

    #[tokio::test]
    async fn bodies_are_followed_to_their_end() {
        let mut x = Exchange::new(());
        x.start_if_new();
        x.read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nKeep-Alive: timeout=5\r\n\r\nhello");
        assert_eq!(x.body, BodyLeft::Bytes(5));
        x.read(b"world");
        assert_eq!(x.body, BodyLeft::Done);
        assert!(x.carried_response && !x.awaiting);
        // The next request on it is on a reused connection; its failure is marked.
        x.start_if_new();
        assert!(x.reused && x.awaiting);
        let e = x.failed(None);
        assert!(crate::errors::is_caused_by::<StaleConnection>(&e));
        // A response without the header drops the promise.
        x.read(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(x.close_at.is_none());
        // And then the connection's heads are no longer looked at.
        x.start_if_new();
        x.read(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nKeep-Alive: timeout=5\r\n\r\n");
        assert!(x.close_at.is_none());
    }

    #[test]
    fn a_fresh_connections_failure_is_not_marked() {
        let mut x = Exchange::new(());
        x.start_if_new();
        assert!(!x.reused);
        let e = x.failed(Some(io::ErrorKind::ConnectionReset.into()));
        assert!(!crate::errors::is_caused_by::<StaleConnection>(&e));
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }
}
