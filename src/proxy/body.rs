//! The response body the request path hands to hyper: Coupa's streamed through, or a small one
//! the gateway wrote itself. It carries what must last as long as the response does: the
//! request's in-flight mark on its connection, the bound on Coupa's pauses, and (with access
//! logging) the record written when the last byte has gone.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::net::bounds::{self, Stall};
use crate::net::conn::ActiveRequest;
use crate::ops::access_log::AccessRecord;

use super::shadow::ShadowJob;

pin_project! {
    /// Response bodies: Coupa's streamed through, or a small one the gateway wrote itself;
    /// with access logging, bytes are counted and the line is written at the end (or when the
    /// client goes away first, marked `complete=false`).
    pub struct Body {
        #[pin]
        inner: Either<Incoming, Full<Bytes>>,
        log: Option<Box<AccessRecord>>,
        sent: u64,
        // Coupa's body may pause for at most the route's timeout between frames.
        stall: Option<Stall>,
        // The request stays in flight on its connection until its response is sent.
        active: Option<ActiveRequest>,
        // A shadow request to send once the response is sent (OAuth readiness).
        shadow: Option<Box<ShadowJob>>,
    }

    impl PinnedDrop for Body {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let complete = this.inner.is_end_stream();
            if let Some(record) = this.log.take() {
                record.emit(*this.sent, complete);
            }
            if let (Some(job), true) = (this.shadow.take(), complete) {
                job.launch();
            }
        }
    }
}

/// Coupa sent nothing of its response body for the route's timeout.
#[derive(Debug, thiserror::Error)]
#[error("Coupa sent no response body bytes for {0:?} (the route's timeout)")]
pub struct UpstreamStalled(pub Duration);

use http_body::Body as _;

impl Body {
    /// Coupa's response body, failed when Coupa pauses for longer than `timeout`.
    pub fn upstream(body: Incoming, timeout: Duration) -> Self {
        Self {
            inner: Either::Left(body),
            log: None,
            sent: 0,
            stall: Some(Stall::new(timeout)),
            active: None,
            shadow: None,
        }
    }

    /// A body the gateway wrote.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            inner: Either::Right(Full::new(bytes)),
            log: None,
            sent: 0,
            stall: None,
            active: None,
            shadow: None,
        }
    }

    /// Sends `job` once this body has been sent whole (never when the client went away).
    pub fn then_shadow(mut self, job: Box<ShadowJob>) -> Self {
        self.shadow = Some(job);
        self
    }

    /// Keeps `active` (the request's in-flight mark on its connection) until this body is
    /// sent or dropped.
    pub fn holding(mut self, active: ActiveRequest) -> Self {
        self.active = Some(active);
        self
    }

    /// Writes `record` once this body has been sent.
    pub fn logged(mut self, record: AccessRecord) -> Self {
        self.log = Some(Box::new(record));
        self
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                bounds::note_response_poll(false);
                if let Some(stall) = this.stall {
                    if stall.poll_expired(cx).is_ready() {
                        return Poll::Ready(Some(Err(UpstreamStalled(stall.after()).into())));
                    }
                }
                return Poll::Pending;
            }
        };
        bounds::note_response_poll(true);
        if let Some(stall) = this.stall {
            stall.progress();
        }
        if this.log.is_some() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        *this.sent += data.len() as u64;
                    }
                }
                None => {
                    if let Some(record) = this.log.take() {
                        record.emit(*this.sent, true);
                    }
                }
                Some(Err(_)) => {}
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
