//! The graceful drain of a worker's connections: one flag that flips once, and the wakers of
//! the connections to poke when it does. A watched HTTP connection then finishes its current
//! exchange and closes (hyper's `graceful_shutdown`); one that has not started HTTP yet just
//! closes.
//!
//! PERF: why not hyper-util's `GracefulShutdown`: its watcher polls a tokio `watch` channel
//! (a mutex and a waiter list) on every poll of every connection, ~300 instructions per
//! proxied request (callgrind, benches/RESULTS.md). Here a poll reads one atomic and checks
//! that the task's waker is the one already registered; the lock is taken only when a
//! connection first registers, when its waker changes, when it ends, and once at the drain.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// One worker's drain signal.
#[derive(Debug, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    started: AtomicBool,
    wakers: Mutex<Slots>,
}

/// Registered wakers; a connection's slot is reused after it ends.
#[derive(Debug, Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Inner {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drain {
    /// A signal that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// A watcher for one connection.
    pub fn watcher(&self) -> Watcher {
        Watcher {
            inner: self.inner.clone(),
            slot: None,
            registered: None,
        }
    }

    /// Starts the drain: every watcher sees it, now or at its next poll.
    pub fn start(&self) {
        // The flag before the lock: a watcher registering concurrently either finds its waker
        // taken here or, under the same lock, sees the flag (`Watcher::poll_started`).
        self.inner.started.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self
            .inner
            .slots()
            .wakers
            .iter_mut()
            .flat_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }
}

/// One connection's view of a [`Drain`].
#[derive(Debug)]
pub struct Watcher {
    inner: Arc<Inner>,
    slot: Option<usize>,
    /// The waker last stored in `slot`, to skip the lock while the task's waker stays the same
    /// (it does for a spawned task).
    registered: Option<Waker>,
}

impl Watcher {
    /// Ready once the drain has started; until then the task is woken when it starts.
    pub fn poll_started(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.started.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let mut slots = self.inner.slots();
        if self.inner.started.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        match self.slot {
            Some(i) => slots.wakers[i] = Some(waker.clone()),
            None => {
                let i = match slots.free.pop() {
                    Some(i) => i,
                    None => {
                        slots.wakers.push(None);
                        slots.wakers.len() - 1
                    }
                };
                slots.wakers[i] = Some(waker.clone());
                self.slot = Some(i);
            }
        }
        self.registered = Some(waker);
        Poll::Pending
    }

    /// Resolves once the drain has started.
    pub async fn started(&mut self) {
        std::future::poll_fn(|cx| self.poll_started(cx)).await;
    }

    /// Drives `conn`, calling `graceful(conn)` once when the drain starts (hyper's
    /// `graceful_shutdown`: finish the exchange in progress, then close).
    pub fn watch<C: Future>(self, conn: C, graceful: fn(Pin<&mut C>)) -> Watched<C> {
        Watched {
            conn,
            watcher: self,
            graceful,
            signalled: false,
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut slots = self.inner.slots();
            slots.wakers[i] = None;
            slots.free.push(i);
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection watched for the drain; see [`Watcher::watch`].
    pub struct Watched<C> {
        #[pin]
        conn: C,
        watcher: Watcher,
        graceful: fn(Pin<&mut C>),
        signalled: bool,
    }
}

impl<C: Future> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.signalled && this.watcher.poll_started(cx).is_ready() {
            *this.signalled = true;
            (this.graceful)(this.conn.as_mut());
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn a_registered_watcher_is_woken_once_and_then_sees_the_drain() {
        let drain = Drain::new();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut w = drain.watcher();
        assert!(w.poll_started(&mut cx).is_pending());
        assert!(
            w.poll_started(&mut cx).is_pending(),
            "a repeated poll stays pending"
        );
        drain.start();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(w.poll_started(&mut cx).is_ready());
        // A watcher made after the start sees it at once.
        assert!(drain.watcher().poll_started(&mut cx).is_ready());
    }

    #[test]
    fn a_new_waker_replaces_the_old_one_and_ended_watchers_are_not_woken() {
        let drain = Drain::new();
        let (old, old_waker) = counting();
        let (new, new_waker) = counting();
        let mut w = drain.watcher();
        assert!(w
            .poll_started(&mut Context::from_waker(&old_waker))
            .is_pending());
        assert!(w
            .poll_started(&mut Context::from_waker(&new_waker))
            .is_pending());
        let (gone, gone_waker) = counting();
        let mut ended = drain.watcher();
        assert!(ended
            .poll_started(&mut Context::from_waker(&gone_waker))
            .is_pending());
        drop(ended);
        // The ended watcher's slot is reused, not leaked.
        let (reuse, reuse_waker) = counting();
        let mut next = drain.watcher();
        assert!(next
            .poll_started(&mut Context::from_waker(&reuse_waker))
            .is_pending());
        assert_eq!(drain.inner.slots().wakers.len(), 2);
        drain.start();
        assert_eq!(old.0.load(Ordering::SeqCst), 0);
        assert_eq!(new.0.load(Ordering::SeqCst), 1);
        assert_eq!(gone.0.load(Ordering::SeqCst), 0);
        assert_eq!(reuse.0.load(Ordering::SeqCst), 1);
    }
}
