//! Listeners and the [`Gateway`] handle that tests, the demo and `serve` all start the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::Config;
use crate::lenient::LenientTargets;
use crate::metrics::Metrics;
use crate::migration::Tracker;
use crate::proxy::{self, ConnInfo};
use crate::runtime::{Limiters, Runtime, Shared};
use crate::{admin, reload, tls, token};

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
}

/// A running gateway: proxy listener, admin listener and one token refresher per client.
pub struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    /// The proxy listener's task; it finishes once stopped and drained.
    proxy: JoinHandle<()>,
    /// Admin listener, watchers.
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Gateway {
    /// Binds both listeners, starts every client's first token request concurrently, and
    /// serves. Requests arriving before a route's first token get 503 + `Retry-After`.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let proxy_listener = bind(config.server.listen, "server.listen").await?;
        let admin_listener = bind(config.admin.listen, "admin.listen").await?;
        let tls = tls::client_config();
        let token_http = token::http_client(tls.clone());
        let metrics = Metrics::default();
        let tracker = Tracker::default();
        let limiters = Limiters::default();
        let (runtime, fresh) = Runtime::build(config, &metrics, &tracker, &limiters, &tls, None);
        runtime.observe_modes();
        let shared = Arc::new(Shared::new(
            runtime, limiters, metrics, tracker, tls, token_http,
        ));
        for cell in fresh {
            cell.start(shared.token_http.clone());
        }
        let addr = proxy_listener
            .local_addr()
            .expect("bound socket has an address");
        let admin_addr = admin_listener
            .local_addr()
            .expect("bound socket has an address");
        let (stop, stopped) = watch::channel(false);
        let proxy = tokio::spawn(serve_proxy(proxy_listener, shared.clone(), stopped));
        let tasks = vec![tokio::spawn(serve_admin(admin_listener, shared.clone()))];
        tracing::info!(%addr, %admin_addr, "coupa-gateway listening");
        Ok(Gateway {
            shared,
            addr,
            admin_addr,
            proxy,
            tasks,
            stop,
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
        self.proxy.abort();
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
        let drained = tokio::time::timeout(grace, &mut self.proxy).await.is_ok();
        if !drained {
            tracing::warn!(
                grace_s = grace.as_secs_f32(),
                "shutdown grace elapsed; closing the remaining connections"
            );
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

fn connection_builder(server: &crate::config::Server) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // No hyper header timer: `LenientTargets` (below) already closes a connection whose
        // head is slow (`header_timeout`) or that idles between requests (`idle_timeout`).
        // PERF: hyper's timer is dropped after every head and re-armed for the next one: a
        // boxed `Sleep`, a timer-wheel insert and removal and an extra read wake-up per
        // request (effect measured in benches/RESULTS.md).
        .header_read_timeout(None)
        // hyper answers 431 beyond this; Coupa JWTs are several KB, so keep headroom.
        .max_buf_size(server.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(server.idle_timeout))
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
    builder
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

/// Accepts until `stop` flips, then lets the open connections finish their current exchange
/// (hyper's graceful shutdown: idle keep-alive connections close, busy ones finish). The
/// connections live in a `JoinSet`, so aborting this task closes them all.
async fn serve_proxy(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let builder = Arc::new(connection_builder(&shared.runtime.load().config.server));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = stop.changed() => break,
        };
        while connections.try_join_next().is_some() {}
        let server = &shared.runtime.load().config.server;
        let (header_timeout, idle_timeout) = (server.header_timeout, server.idle_timeout);
        let conn = Arc::new(ConnInfo::new(peer));
        // Legacy scripts send raw `"` (JSON) in queries, which hyper's parser refuses; the
        // same wrapper enforces the header and idle timeouts.
        let io = TokioIo::new(LenientTargets::with_limits(
            stream,
            conn.state.clone(),
            header_timeout,
            idle_timeout,
        ));
        let shared = shared.clone();
        let svc = service_fn(move |req| proxy::handle(shared.clone(), conn.clone(), req));
        let serving = graceful.watch(builder.serve_connection(io, svc).into_owned());
        connections.spawn(async move {
            if let Err(e) = serving.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting; draining connections"
    );
    graceful.shutdown().await;
    while connections.join_next().await.is_some() {}
}

async fn serve_admin(listener: TcpListener, shared: Arc<Shared>) {
    let builder = Arc::new(connection_builder(&shared.runtime.load().config.server));
    loop {
        let (stream, _peer) = accept(&listener).await;
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| admin::handle(shared.clone(), req));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
