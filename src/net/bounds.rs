//! Time bounds for the phases of a request that the byte stream alone cannot judge.
//!
//! Every phase of every request has a bound, on HTTP/1 and HTTP/2 alike:
//!
//! | phase | HTTP/1 | HTTP/2 | key |
//! |---|---|---|---|
//! | TLS handshake, first bytes | `net/server.rs` | `net/server.rs` | `header_timeout`, `idle_timeout` |
//! | request head | `net/conn.rs` (read deadline) | counts as idle: no request yet | `header_timeout` / `idle_timeout` |
//! | request body | [`RequestBody`] | [`RequestBody`] | `body_timeout` |
//! | rate-limit queue | `proxy` | `proxy` | `max_queue_wait` |
//! | Coupa's response head | `proxy` (`dispatch`) | same | route `timeout` |
//! | Coupa's response body | [`Stall`] in the response body | same | route `timeout` |
//! | writing to the client | `net/conn.rs` (write deadline) | [`StreamGuard`] per stream, `net/conn.rs` for the socket | `write_timeout` |
//! | idle connection | `net/conn.rs` (read deadline) | [`IdleGoaway`] | `idle_timeout` |
//!
//! The HTTP/2 rows need more than the socket: a client can keep an idle connection busy with
//! pings, and can stall one stream by never opening its flow-control window (RFC 9113 §5.2)
//! while the socket itself keeps moving.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::net::conn::ConnState;

/// A no-progress timer: expires when the watched side has been waited on for `after` without
/// a frame in between. The `Sleep` is made at the first wait (PERF: most bodies are read
/// without ever waiting, and then cost no timer at all).
#[derive(Debug)]
pub struct Stall {
    after: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

impl Stall {
    /// A timer that expires after `after` without progress.
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            timer: None,
            progressed: false,
        }
    }

    /// The bound.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// A frame arrived.
    pub fn progress(&mut self) {
        self.progressed = true;
    }

    /// The watched side is pending: `Ready` once it has made no progress for `after`.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let after = self.after;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        if std::mem::take(&mut self.progressed) {
            timer.as_mut().reset(Instant::now() + after);
        }
        timer.as_mut().poll(cx)
    }
}

/// A request body that sent nothing for `server.body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body bytes for {0:?} (server.body_timeout)")]
pub struct BodyTimeout(pub Duration);

pin_project! {
    /// The caller's request body, failed with [`BodyTimeout`] when it stalls. Without it, a
    /// head declaring a body that never comes holds its in-flight slot for as long as the
    /// client keeps the connection open.
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        stall: Stall,
    }
}

impl<B> RequestBody<B> {
    /// Bounds `inner` by `after` without progress.
    pub fn new(inner: B, after: Duration) -> Self {
        Self {
            inner,
            stall: Stall::new(after),
        }
    }
}

impl<B> http_body::Body for RequestBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stall.progress();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.stall.poll_expired(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(this.stall.after).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the response body did in the current poll of its HTTP/2 stream task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyPoll {
    /// Not polled: hyper is waiting for something else (flow-control capacity).
    NotPolled,
    /// Waiting for Coupa; the response body's own [`Stall`] bounds that.
    Waiting,
    /// Handed a frame to hyper.
    Yielded,
}

thread_local! {
    /// Set by [`note_response_poll`] while [`StreamGuard`] polls a stream task: the body is
    /// polled synchronously inside that task, on this thread, so no other link is needed.
    static RESPONSE_POLL: Cell<BodyPoll> = const { Cell::new(BodyPoll::NotPolled) };
}

/// Called by the response body on every poll (outside a [`StreamGuard`] it is a no-op store).
pub fn note_response_poll(yielded: bool) {
    RESPONSE_POLL.set(if yielded {
        BodyPoll::Yielded
    } else {
        BodyPoll::Waiting
    });
}

/// The executor of the HTTP/2 server: runs each stream's task under a [`StreamGuard`].
#[derive(Debug, Clone, Copy)]
pub struct StreamExecutor {
    /// `server.write_timeout`.
    pub write_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        tokio::spawn(StreamGuard {
            task,
            timer: tokio::time::sleep(self.write_timeout),
            write_timeout: self.write_timeout,
            armed: false,
        });
    }
}

pin_project! {
    /// One HTTP/2 stream's task (hyper's `H2Stream`), ended when the client has not taken
    /// any of its response for `write_timeout`: hyper stops polling a body whose stream has
    /// no flow-control window, so nothing inside the body can notice. Ending the task drops
    /// the stream, which resets it (RST_STREAM CANCEL) and releases Coupa's connection.
    pub struct StreamGuard<F> {
        #[pin]
        task: F,
        #[pin]
        timer: Sleep,
        write_timeout: Duration,
        // Counting only once the response body has yielded a frame and is not waiting for
        // Coupa: before that, the request's own bounds apply.
        armed: bool,
    }
}

impl<F: Future<Output = ()>> Future for StreamGuard<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        RESPONSE_POLL.set(BodyPoll::NotPolled);
        if this.task.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        match RESPONSE_POLL.get() {
            BodyPoll::NotPolled => {}
            BodyPoll::Waiting => *this.armed = false,
            BodyPoll::Yielded => {
                *this.armed = true;
                this.timer
                    .as_mut()
                    .reset(Instant::now() + *this.write_timeout);
            }
        }
        if *this.armed && this.timer.poll(cx).is_ready() {
            tracing::debug!(
                write_timeout = ?this.write_timeout,
                "HTTP/2 client took none of a response; resetting the stream (server.write_timeout)"
            );
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

pin_project! {
    /// An HTTP/2 connection, shut down gracefully (GOAWAY) once no request has been in flight
    /// for `idle`. A client answering the server's pings keeps the socket busy, so idleness is
    /// judged by requests ([`ConnState::idle_since`]), not bytes.
    pub struct IdleGoaway<C> {
        #[pin]
        conn: C,
        #[pin]
        timer: Sleep,
        state: Arc<ConnState>,
        idle: Duration,
        graceful: fn(Pin<&mut C>),
        closing: bool,
    }
}

impl<C: Future> IdleGoaway<C> {
    /// Watches `conn`; `graceful` starts its graceful shutdown.
    pub fn new(conn: C, state: Arc<ConnState>, idle: Duration, graceful: fn(Pin<&mut C>)) -> Self {
        Self {
            conn,
            timer: tokio::time::sleep(idle),
            state,
            idle,
            graceful,
            closing: false,
        }
    }

    /// Starts the graceful shutdown now (a drain), once.
    pub fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.project();
        if !std::mem::replace(this.closing, true) {
            (this.graceful)(this.conn);
        }
    }
}

impl<C: Future> Future for IdleGoaway<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.closing {
            let idle_since = this.state.idle_since();
            // Became idle earlier than the next check: move the check forward.
            if let Some(since) = idle_since {
                if since + *this.idle < this.timer.deadline() {
                    this.timer.as_mut().reset(since + *this.idle);
                }
            }
            while this.timer.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                match this.state.idle_since() {
                    Some(since) if since + *this.idle <= now => {
                        *this.closing = true;
                        (this.graceful)(this.conn.as_mut());
                        break;
                    }
                    Some(since) => this.timer.as_mut().reset(since + *this.idle),
                    // Busy: look again in a while (the check above catches an earlier end).
                    None => this.timer.as_mut().reset(now + *this.idle),
                }
            }
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::channel::Channel;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_timeout_and_a_trickling_one_does_not() {
        let (mut tx, rx) = Channel::<Bytes, std::io::Error>::new(4);
        let mut body = RequestBody::new(rx, Duration::from_secs(10));
        // Trickling: a byte every 6 s never trips a 10 s bound.
        let sender = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                tx.send_data(Bytes::from_static(b"x")).await.unwrap();
            }
            // Then nothing, with the body still open.
            std::future::pending::<()>().await;
        });
        for _ in 0..5 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"x"));
        }
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<BodyTimeout>(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        sender.abort();
    }
}
