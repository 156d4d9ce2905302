//! Listeners and the [`Gateway`] handle that tests, the demo and `serve` all start the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::lenient::LenientTargets;
use crate::metrics::Metrics;
use crate::migration::Tracker;
use crate::proxy::{self, ConnInfo};
use crate::runtime::{Runtime, Shared};
use crate::{admin, reload};

/// Slowloris guard: a client must finish sending request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A running gateway: proxy listener, admin listener and one token refresher per client.
pub struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Binds both listeners, starts every client's first token request concurrently, and
    /// serves. Requests arriving before a route's first token get 503 + `Retry-After`.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let proxy_listener = bind(config.server.listen, "server.listen").await?;
        let admin_listener = bind(config.admin.listen, "admin.listen").await?;
        let metrics = Metrics::default();
        let tracker = Tracker::default();
        let (runtime, fresh) =
            Runtime::build(config, &metrics, &tracker, None).map_err(StartError::Unusable)?;
        runtime.observe_modes();
        for cell in fresh {
            cell.start(runtime.token_http.clone());
        }
        let shared = Arc::new(Shared::new(runtime, metrics, tracker));
        let addr = proxy_listener
            .local_addr()
            .expect("bound socket has an address");
        let admin_addr = admin_listener
            .local_addr()
            .expect("bound socket has an address");
        let tasks = vec![
            tokio::spawn(serve_proxy(proxy_listener, shared.clone())),
            tokio::spawn(serve_admin(admin_listener, shared.clone())),
        ];
        tracing::info!(%addr, %admin_addr, "coupa-gateway listening");
        Ok(Gateway {
            shared,
            addr,
            admin_addr,
            tasks,
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

    /// Stops accepting and stops the token refreshers. Connections already accepted finish
    /// their current exchange.
    pub fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for cell in self.shared.runtime.load().tokens.values() {
            cell.stop();
        }
    }
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
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

async fn serve_proxy(listener: TcpListener, shared: Arc<Shared>) {
    let builder = Arc::new(connection_builder());
    loop {
        let (stream, peer) = accept(&listener).await;
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let conn = Arc::new(ConnInfo::new(peer));
            let svc = service_fn(move |req| proxy::handle(shared.clone(), conn.clone(), req));
            // Legacy scripts send raw `"` (JSON) in queries, which hyper's parser refuses.
            let io = TokioIo::new(LenientTargets::new(stream));
            if let Err(e) = builder.serve_connection(io, svc).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn serve_admin(listener: TcpListener, shared: Arc<Shared>) {
    let builder = Arc::new(connection_builder());
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
