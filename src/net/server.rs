//! Listeners and the [`Gateway`] handle that tests, the demo and `serve` all start the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::atomic::Ordering;
use tower::ServiceExt as _;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, StateStore};
use crate::migration::sync::LedgerSync;
use crate::migration::Tracker;
use crate::net::bounds::{IdleGoaway, StreamExecutor};
use crate::net::conn::{ActiveRequest, ConnLimits, ConnState, LenientTargets};
use crate::net::drain::{Drain, Watcher};
use crate::net::proxy_protocol;
use crate::ops::admin_stack;
use crate::ops::metrics::Metrics;
use crate::proxy::{self, ConnInfo};
use crate::runtime::reload;
use crate::runtime::{Runtime, Shared};
use crate::state::budget::fleet::Fleet;
use crate::state::budget::Budgets;

/// How long shutdown waits for the ledger's last write.
const LAST_FLUSH: Duration = Duration::from_secs(5);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("{key}: cannot listen on {addr}: {source}; choose a free port in proxy.toml or stop the process using it")]
    Bind {
        /// The config key of the address.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file validated, but something it names cannot be used: a TLS certificate, key or
    /// CA file, or the outbound proxy (from `upstream.proxy` or the environment). The message
    /// names the key or variable and says what to fix.
    #[error("{0}")]
    Unusable(String),
}

/// A running gateway: proxy workers, admin listener and one token refresher per client.
///
/// The proxy listener is served by `server.workers` threads, each running its own
/// single-threaded event loop and its own pool of connections to Coupa; everything else (admin
/// listener, token refreshers, config watcher) runs on the runtime that called
/// [`Gateway::start`]. Dropping the handle stops the workers at once, as [`Gateway::shutdown`]
/// does.
pub struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    /// One per proxy worker: resolves once the worker has stopped and drained.
    workers: Vec<oneshot::Receiver<()>>,
    /// Admin listener, watchers.
    tasks: Vec<JoinHandle<()>>,
    /// `true`: stop accepting and drain (SIGTERM).
    stop: watch::Sender<bool>,
    /// Sent or dropped: the workers close every connection and end.
    abort: watch::Sender<()>,
}

impl Gateway {
    /// Binds both listeners, starts every client's first token request concurrently, and
    /// serves. Requests arriving before a route's first token get 503 + `Retry-After`.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let proxy_listener = bind(config.server.listen, "server.listen").await?;
        let worker_count = config.server.workers;
        let admin_listener = bind(config.admin.listen, "admin.listen").await?;
        let metrics = Metrics::default();
        let tracker = Arc::new(Tracker::default());
        let fleet = match &config.state.store {
            StateStore::Redis(url) => Some(Fleet::new(url).map_err(|e| {
                StartError::Unusable(format!(
                    "state.redis: cannot share the rate budget: {}",
                    e.category()
                ))
            })?),
            _ => None,
        };
        let budgets = Budgets::new(fleet, config.state.replicas);
        let state = config.state.clone();
        let (runtime, fresh) = Runtime::build(config, &metrics, &tracker, &budgets, None)
            .map_err(StartError::Unusable)?;
        runtime.observe_modes();
        // After the runtime is built, so the first write already carries every configured
        // integration's modes; before anything is served, so an unusable store stops the start.
        let ledger = LedgerSync::open(&state, &tracker, SystemTime::now())
            .await
            .map_err(|e| StartError::Unusable(e.start_problem()))?;
        let ledger = Arc::new(ledger);
        let token_http = runtime.token_http.clone();
        let shared = Arc::new(Shared::new(
            runtime,
            budgets,
            metrics,
            tracker.clone(),
            ledger.clone(),
        ));
        let addr = proxy_listener
            .local_addr()
            .expect("bound socket has an address");
        let admin_addr = admin_listener
            .local_addr()
            .expect("bound socket has an address");
        let (stop, stopped) = watch::channel(false);
        let (abort, aborted) = watch::channel(());
        let mut queues = Vec::with_capacity(worker_count);
        let mut workers = Vec::with_capacity(worker_count);
        for index in 0..worker_count {
            let (queue, accepted) = mpsc::unbounded_channel();
            let worker = Worker {
                index,
                accepted,
                shared: shared.clone(),
                abort: aborted.clone(),
            };
            workers.push(worker.spawn().map_err(|e| {
                StartError::Unusable(format!(
                    "server.workers: cannot start proxy worker {index}: {e}; lower server.workers or raise the process's thread limit"
                ))
            })?);
            queues.push(queue);
        }
        // Only now, so that a failed start leaves no refresher behind.
        for cell in fresh {
            cell.start(token_http.clone());
        }
        let tasks = vec![
            tokio::spawn(dispatch(proxy_listener, shared.clone(), queues, stopped)),
            tokio::spawn(serve_admin(admin_listener, shared.clone())),
            tokio::spawn(ledger.run(tracker)),
        ];
        tracing::info!(%addr, %admin_addr, workers = worker_count, "coupa-gateway listening");
        if !admin_addr.ip().is_loopback() && shared.runtime.load().config.admin.token.is_none() {
            tracing::warn!(%admin_addr, "the admin listener is reachable from the network and admin.token is not set: /status and /metrics are open to anyone who can connect");
        }
        Ok(Gateway {
            shared,
            addr,
            admin_addr,
            workers,
            tasks,
            stop,
            abort,
        })
    }

    /// The proxy listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The shared state (runtime snapshot, metrics).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Reloads when the config file (or a secret file it names) changes, and on SIGHUP.
    pub fn watch_config(&mut self, path: PathBuf) {
        let weak = Arc::downgrade(&self.shared);
        let watch = reload::Watch::new(&self.shared, path.clone());
        self.tasks.push(tokio::spawn(
            watch.run(weak.clone(), reload::WATCH_INTERVAL),
        ));
        #[cfg(unix)]
        self.tasks.push(tokio::spawn(reload::on_sighup(weak, path)));
    }

    /// Applies `config` as a reload would (tests and embedders).
    pub async fn reload(&self, config: Config) -> Result<reload::Applied, String> {
        reload::apply(&self.shared, config).await
    }

    /// Waits until every client holds a valid token, or `timeout` passes. Returns readiness.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared.runtime.load().ready(Instant::now()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops at once: listeners, connections and token refreshers (tests, errors).
    pub fn shutdown(self) {
        let _ = self.abort.send(());
        for task in &self.tasks {
            task.abort();
        }
        for cell in self.shared.runtime.load().tokens.values() {
            cell.stop();
        }
    }

    /// SIGTERM behaviour: stop accepting, fail readiness, let in-flight requests finish for up
    /// to `server.shutdown_grace`, then close what is left. Returns true when everything
    /// finished in time. The admin listener answers (readiness 503) until the end.
    pub async fn shutdown_gracefully(mut self) -> bool {
        let grace = self.shared.runtime.load().config.server.shutdown_grace;
        self.shared.shutting_down.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let workers = std::mem::take(&mut self.workers);
        let all_stopped = async {
            for worker in workers {
                let _ = worker.await;
            }
        };
        let drained = tokio::time::timeout(grace, all_stopped).await.is_ok();
        if !drained {
            tracing::warn!(
                grace_s = grace.as_secs_f32(),
                "shutdown grace elapsed; closing the remaining connections"
            );
        }
        // What arrived since the last flush; bounded, so a dead store cannot hold the exit.
        let (ledger, tracker) = (&self.shared.ledger, &self.shared.tracker);
        match tokio::time::timeout(LAST_FLUSH, ledger.flush(tracker)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the last ledger write failed; observations since the previous write are lost")
            }
            Err(_) => tracing::warn!(
                timeout_s = LAST_FLUSH.as_secs(),
                "the last ledger write timed out; observations since the previous write are lost"
            ),
        }
        self.shutdown();
        drained
    }
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

/// The HTTP/1 and HTTP/2 connection settings of a listener.
///
/// hyper-util's auto builder would pick the protocol for us, but it cannot set HTTP/1's header
/// size limit apart from its buffer size: with `max_buf_size` doubling as the 431 limit, every
/// body read and write was capped at 64 KiB, and uploads ran at a third of direct speed. Here
/// the connection's first bytes choose the builder ([`LenientTargets::sniff_h2_preface`]).
pub(crate) struct Protocols {
    h1: http1::Builder,
    /// hyper's HTTP/1 header limit, fixed with the builder at start.
    max_header_bytes: usize,
}

impl Protocols {
    pub(crate) fn new(server: &crate::config::Server) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // No hyper header timer: `LenientTargets` (below) already closes a connection whose
            // head is slow (`header_timeout`) or that idles between requests (`idle_timeout`).
            // PERF: hyper's timer is dropped after every head and re-armed for the next one: a
            // boxed `Sleep`, a timer-wheel insert and removal and an extra read wake-up per
            // request (effect measured in benches/RESULTS.md).
            .header_read_timeout(None)
            // hyper answers 431 beyond this; Coupa JWTs are several KB, so keep headroom.
            .max_header_size(server.max_header_bytes)
            // The read and write buffer: hyper's default (8 KiB + 100 x 4 KiB), for body
            // throughput (upload 0.31x -> about 0.55x direct, benches/RESULTS.md), or more when the
            // header limit is set higher than that.
            .max_buf_size(server.max_header_bytes.max(8192 + 100 * 4096))
            .keep_alive(true);
        Self {
            h1,
            max_header_bytes: server.max_header_bytes,
        }
    }

    /// A new connection's bounds: the timeouts from `server` (the current snapshot, so a reload
    /// applies to the next connection), the header cap from the running builder.
    fn limits(&self, server: &crate::config::Server) -> ConnLimits {
        ConnLimits {
            header: server.header_timeout,
            idle: server.idle_timeout,
            write: server.write_timeout,
            max_head: self.max_header_bytes,
        }
    }

    /// The HTTP/2 settings of one connection. Made per connection (they are few and
    /// long-lived) so the stream guard's `write_timeout` follows reloads like the rest.
    fn h2(&self, limits: &ConnLimits) -> http2::Builder<StreamExecutor> {
        // Each stream's task runs under a guard that resets it when the client leaves its
        // flow-control window shut (net/bounds.rs).
        let mut h2 = http2::Builder::new(StreamExecutor {
            write_timeout: limits.write,
        });
        h2.timer(TokioTimer::new())
            .keep_alive_interval(Some(limits.idle))
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX));
        h2
    }

    /// Serves one connection with `svc` until it closes, watched for graceful shutdown when a
    /// watcher is given. The connection is wrapped in the wrapper that fixes request targets
    /// and applies `limits`; the idle bound also bounds the wait for the first bytes, and an
    /// HTTP/2 connection with no request in flight (`state`) for that long gets a GOAWAY.
    async fn serve<S, Svc, B>(
        &self,
        stream: S,
        svc: Svc,
        mut watcher: Option<Watcher>,
        state: Arc<ConnState>,
        limits: ConnLimits,
    ) -> Result<(), hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        Svc: hyper::service::HttpService<hyper::body::Incoming, ResBody = B> + Send + 'static,
        Svc::Future: Send + 'static,
        Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Before hyper has the connection, hyper cannot close it: a connection that has sent
        // nothing yet must not hold up a drain until its idle timeout.
        let drain_started = async {
            match &mut watcher {
                Some(w) => w.started().await,
                None => std::future::pending().await,
            }
        };
        let mut io = LenientTargets::with_limits(stream, state.clone(), limits);
        let idle_timeout = limits.idle;
        let sniffed = tokio::select! {
            sniffed = tokio::time::timeout(idle_timeout, io.sniff_h2_preface()) => sniffed,
            () = drain_started => return Ok(()),
        };
        // A connection that sends nothing, or fails, is closed as an idle one would be.
        let Ok(Ok(h2)) = sniffed else {
            return Ok(());
        };
        let io = TokioIo::new(io);
        match (h2, watcher) {
            (false, None) => self.h1.serve_connection(io, svc).await,
            (false, Some(w)) => {
                w.watch(
                    self.h1.serve_connection(io, svc),
                    http1::Connection::graceful_shutdown,
                )
                .await
            }
            (true, watcher) => {
                let conn = IdleGoaway::new(
                    self.h2(&limits).serve_connection(io, svc),
                    state,
                    idle_timeout,
                    http2::Connection::graceful_shutdown,
                );
                match watcher {
                    None => conn.await,
                    Some(w) => w.watch(conn, IdleGoaway::graceful_shutdown).await,
                }
            }
        }
    }
}

/// Accepts forever. An accept error (EMFILE, ECONNABORTED...) is logged and waited out, never
/// fatal: a listener that exits on the first EMFILE takes every integration down with it.
async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Nagle + delayed ACK would add ~40 ms to small responses (STYLE.md §5.3).
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// An accepted connection on its way to a worker.
type Accepted = (std::net::TcpStream, SocketAddr);

/// Accepts until `stop` flips (or the [`Gateway`] is dropped) and hands each connection to the
/// worker holding the fewest. Dropping the queues then tells every worker to drain and end.
///
/// Why one acceptor rather than every worker accepting on the shared socket: an idle worker
/// woken first takes a whole burst of connections (measured: 58 of 60 went to one of three
/// workers), and without work stealing an unbalanced worker stays unbalanced for the lifetime
/// of its keep-alive connections. The hand-over costs a channel send per connection, not per
/// request.
async fn dispatch(
    listener: TcpListener,
    shared: Arc<Shared>,
    queues: Vec<mpsc::UnboundedSender<Accepted>>,
    mut stop: watch::Receiver<bool>,
) {
    let open = &shared.worker_connections;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "accepted connection unusable");
                continue;
            }
        };
        let worker = (0..queues.len())
            .min_by_key(|&i| open[i].load(Ordering::Relaxed))
            .expect("server.workers is at least 1");
        open[worker].fetch_add(1, Ordering::Relaxed);
        if queues[worker].send((stream, peer)).is_err() {
            // The worker is gone (shutting down); the connection is dropped with the send.
            open[worker].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What a proxy worker thread starts from.
struct Worker {
    index: usize,
    accepted: mpsc::UnboundedReceiver<Accepted>,
    shared: Arc<Shared>,
    abort: watch::Receiver<()>,
}

impl Worker {
    /// Starts the worker's thread with its own current-thread runtime. The returned receiver
    /// resolves when the thread has ended.
    ///
    /// PERF: why threads with their own event loop rather than one work-stealing runtime
    /// (pingora's NoSteal, STYLE.md §5.5): a proxied request crosses from the serving task to
    /// the upstream connection's task and back through hyper's channels. On one loop those
    /// wake-ups are queue pushes; across work-stealing threads many become cross-thread
    /// notifications. Measured in benches/RESULTS.md (req/s x1.14 to x1.40 at 16 to 256
    /// connections).
    fn spawn(self) -> std::io::Result<oneshot::Receiver<()>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (done, finished) = oneshot::channel();
        // The subscriber of the thread that starts the gateway (the global one in the binary;
        // a test's or an embedder's scoped one otherwise) also gets the workers' events.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        std::thread::Builder::new()
            .name(format!("proxy-worker-{}", self.index))
            .spawn(move || {
                let _logging = tracing::dispatcher::set_default(&dispatch);
                let mut abort = self.abort.clone();
                runtime.block_on(async {
                    tokio::select! {
                        () = self.serve() => {}
                        _ = abort.changed() => {}
                    }
                });
                // Dropping the runtime cancels what is left on it: connections past the grace
                // period and the worker's idle pooled connections to Coupa.
                drop(runtime);
                let _ = done.send(());
            })?;
        Ok(finished)
    }

    /// Serves the connections the acceptor hands over until it stops, then lets them finish
    /// their current exchange (hyper's graceful shutdown: idle keep-alive connections close,
    /// busy ones finish). The connections live in a `JoinSet`, so dropping this future closes
    /// them all.
    async fn serve(mut self) {
        let worker = self.index;
        let builder = Arc::new(Protocols::new(&self.shared.runtime.load().config.server));
        let drain = Drain::new();
        let mut connections = JoinSet::new();
        while let Some((stream, peer)) = self.accepted.recv().await {
            while connections.try_join_next().is_some() {}
            let open = OpenConnection(self.shared.clone(), worker);
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(worker, error = %e, "cannot register an accepted connection");
                    continue;
                }
            };
            // Taken per connection from the current snapshot, so a reload that renews the
            // certificate or turns TLS on or off applies to the next connection (the listening
            // socket itself never changes).
            let (acceptor, limits, proxy_protocol) = {
                let runtime = self.shared.runtime.load();
                let server = &runtime.config.server;
                (
                    runtime.tls_acceptor.clone(),
                    builder.limits(server),
                    server
                        .proxy_protocol
                        .then(|| server.trusted_proxies.clone()),
                )
            };
            let shared = self.shared.clone();
            let builder = builder.clone();
            let watcher = drain.watcher();
            connections.spawn(async move {
                let _open = open;
                let mut stream = stream;
                // Before TLS: the balancer's header precedes the client's first byte.
                let peer = match proxy_protocol {
                    None => peer,
                    Some(trusted) => {
                        match proxy_protocol::accept(&mut stream, peer, &trusted, limits.header)
                            .await
                        {
                            Some(client) => client,
                            None => return,
                        }
                    }
                };
                match acceptor {
                    None => {
                        let conn = ConnInfo::new(peer, worker);
                        serve_http(&builder, shared, conn, stream, watcher, limits).await;
                    }
                    Some(acceptor) => {
                        // In the connection's task, so a slow handshake never holds up others.
                        let Some(tls) = handshake(&acceptor, stream, peer, limits.header).await
                        else {
                            return;
                        };
                        let conn = ConnInfo::https(peer, worker);
                        serve_http(&builder, shared, conn, tls, watcher, limits).await;
                    }
                }
            });
        }
        tracing::info!(
            worker,
            connections = connections.len(),
            "stopped accepting; draining connections"
        );
        drain.start();
        while connections.join_next().await.is_some() {}
    }
}

/// Counts a connection out of its worker's load when it ends, however it ends.
struct OpenConnection(Arc<Shared>, usize);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.worker_connections[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves HTTP/1 or h2 on an accepted (and possibly decrypted) connection, watched for
/// graceful shutdown.
async fn serve_http<S>(
    protocols: &Protocols,
    shared: Arc<Shared>,
    conn: ConnInfo,
    stream: S,
    watcher: Watcher,
    limits: ConnLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let conn = Arc::new(conn);
    // The wrapper `serve` puts around the stream fixes the raw `"` (JSON) legacy scripts send
    // in queries, which hyper's parser refuses, and enforces the connection's bounds. Inside
    // TLS, so the bytes it sees are the decrypted request lines.
    let state = conn.state.clone();
    let svc = service_fn(move |req| proxy::handle(shared.clone(), conn.clone(), req));
    let served = protocols.serve(stream, svc, Some(watcher), state, limits);
    if let Err(e) = served.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The body of the answer to a plain-HTTP request on a TLS listener: an integration still
/// pointed at `http://` learns why instead of seeing a reset connection.
const PLAIN_HTTP_ON_TLS: &str = "This port serves HTTPS; use https:// in the gateway's URL.\n";

/// How long a plain-HTTP caller on the TLS listener gets to read the 400 and close.
const LINGER: Duration = Duration::from_secs(1);

/// The TLS handshake, bounded by `server.header_timeout` (a client that connects and sends
/// nothing must not hold a task forever). Failures are logged at debug level only: port
/// scanners and health probes fail handshakes all day.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let result = tokio::time::timeout(timeout, async {
        // A TLS connection starts with a handshake record (0x16); an ASCII letter is an HTTP
        // method, i.e. a caller using http:// against an https listener.
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 1 && first[0].is_ascii_alphabetic() {
            let mut stream = stream;
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_ON_TLS}",
                PLAIN_HTTP_ON_TLS.len()
            );
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            // Lingering close: closing with the request still unread would send a reset,
            // which can destroy the answer before the client reads it.
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(LINGER, async {
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "plain HTTP on the TLS listener",
            ));
        }
        acceptor.accept(stream).await
    })
    .await;
    match result {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "TLS handshake timed out (server.header_timeout)");
            None
        }
    }
}

async fn serve_admin(listener: TcpListener, shared: Arc<Shared>) {
    let builder = Arc::new(Protocols::new(&shared.runtime.load().config.server));
    loop {
        let (stream, _peer) = accept(&listener).await;
        let shared = shared.clone();
        let builder = builder.clone();
        // The builder has no header timer of its own (see `Protocols::new`): the wrapper's
        // bounds protect the admin port too, taken per connection like the proxy's.
        let limits = builder.limits(&shared.runtime.load().config.server);
        tokio::spawn(async move {
            let state = Arc::new(ConnState::default());
            let in_flight = state.clone();
            let stack = admin_stack::service(shared);
            let svc = service_fn(move |req| {
                // Admin answers are built whole, so the handler's lifetime is the request's.
                let active = ActiveRequest::enter(in_flight.clone());
                let answer = stack.clone().oneshot(req);
                async move {
                    let answer = answer.await;
                    drop(active);
                    answer
                }
            });
            let _ = builder.serve(stream, svc, None, state, limits).await;
        });
    }
}
