//! Shared test harness: mock Coupa instances and a gateway on `127.0.0.1:0`, the gateway's
//! configuration built from named parts, an HTTP client that sends request targets exactly as
//! written (no URL normalisation), the CLI, scratch directories and run-time certificates.
#![allow(dead_code)]

mod cli;
mod client;
mod config;
mod gateway;
mod pki;
mod redis;
mod served;

// Each test binary uses some of these; the rest would warn in every one.
#[allow(unused_imports)]
pub use {cli::*, client::*, config::*, gateway::*, pki::*, redis::*, served::*};

use std::time::Duration;

use coupa_gateway::net::server::Gateway;
use coupa_mock::demo_instance;
use coupa_mock::{MockConfig, MockCoupa};

/// A mock instance like the demo's, on an ephemeral port, with no rate limit (the gateway's
/// own limiter is tested separately; here load must not collect 429s).
pub async fn mock(name: &str) -> MockCoupa {
    mock_with(mock_config(name)).await
}

/// The configuration [`mock`] starts, to change before starting it with [`mock_with`].
pub fn mock_config(name: &str) -> MockConfig {
    demo_instance(name, "127.0.0.1:0".parse().unwrap()).rate_limit(None)
}

pub async fn mock_with(cfg: MockConfig) -> MockCoupa {
    MockCoupa::start(cfg).await.expect("mock starts")
}

/// Two mock instances and a ready gateway in front of them.
pub struct Env {
    pub prod: MockCoupa,
    pub test: MockCoupa,
    pub gw: Gateway,
    pub http: Http,
}

impl Env {
    pub async fn start() -> Env {
        let prod = mock("prod").await;
        let test = mock("test").await;
        let gw = ready_gateway(&GatewayToml::two_instances(&prod.url(), &test.url())).await;
        Env {
            prod,
            test,
            gw,
            http: Http::new(),
        }
    }

    /// `http://127.0.0.1:PORT{path}` on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        proxy_url(&self.gw, path)
    }

    /// The same on the admin listener.
    pub fn admin(&self, path: &str) -> String {
        admin_url(&self.gw, path)
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// A loopback address nothing listens on (bound, then released).
pub async fn dead_addr() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// Log output from a tracing subscriber installed for the current thread (text format, no
/// colours). The gateway's workers inherit the subscriber of the thread that starts it, so a
/// `current_thread` test sees every line.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures everything up to `level` until the guard is dropped.
    pub fn install(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
        let logs = Captured::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
