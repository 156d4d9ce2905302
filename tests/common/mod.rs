//! Shared test harness: mock Coupa instances and a gateway on `127.0.0.1:0`, plus an HTTP
//! client that sends request targets exactly as written (no URL normalisation).
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use coupa_gateway::commands::demo_instance;
use coupa_gateway::config::Config;
use coupa_gateway::server::Gateway;
use coupa_mock::{MockConfig, MockCoupa};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Secrets of the mock clients, as the default test config uses them.
pub const PROD_SECRET: &str = "demo-prod-secret";
pub const TEST_SECRET: &str = "demo-test-secret";

/// A mock instance like the demo's, on an ephemeral port, with no rate limit (the gateway's
/// own limiter is tested separately; here load must not collect 429s).
pub async fn mock(name: &str) -> MockCoupa {
    mock_with(demo_instance(name, "127.0.0.1:0".parse().unwrap()).rate_limit(None)).await
}

pub async fn mock_with(cfg: MockConfig) -> MockCoupa {
    MockCoupa::start(cfg).await.expect("mock starts")
}

/// The TOML for a gateway in front of `prod` and `test` (any URLs), listeners on port 0.
/// `client_extra` is appended to both client tables (e.g. `token_warmup = "0s"`).
pub fn two_instance_toml(prod_url: &str, test_url: &str, client_extra: &str) -> String {
    let prod = instance_toml("prod", prod_url);
    let test = instance_toml("test", test_url);
    let prod_client = prod_client_toml(client_extra);
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"

# The gateway's own rate limiter has its own tests; here it must not slow load down.
{prod}{test}
{prod_client}
[clients.test-main]
instance = "test"
client_id = "demo-test-client"
client_secret = "${{TEST_SECRET}}"
scopes = ["core.invoice.read", "core.supplier.read"]
{client_extra}

[[routes]]
prefix = "/prod"
instance = "prod"
client = "prod-main"

[[routes]]
prefix = "/test"
instance = "test"
client = "test-main"
"#
    )
}

/// `[instances.{name}]` at `url` with the gateway's own rate limiter off (it has its own
/// tests; elsewhere it must not slow load down).
pub fn instance_toml(name: &str, url: &str) -> String {
    format!("[instances.{name}]\nurl = \"{url}\"\nrate_limit = {{ enabled = false }}\n")
}

/// `[clients.prod-main]`: the demo prod client with all four of its scopes, its secret from
/// `PROD_SECRET`, then `client_extra`.
pub fn prod_client_toml(client_extra: &str) -> String {
    format!(
        r#"[clients.prod-main]
instance = "prod"
client_id = "demo-prod-client"
client_secret = "${{PROD_SECRET}}"
scopes = ["core.invoice.read", "core.invoice.write", "core.supplier.read", "core.common.read"]
{client_extra}
"#
    )
}

/// Parses test TOML with the two mock secrets in its environment.
pub fn config(toml: &str) -> Config {
    let env = |name: &str| match name {
        "PROD_SECRET" => Some(PROD_SECRET.to_string()),
        "TEST_SECRET" => Some(TEST_SECRET.to_string()),
        _ => None,
    };
    Config::parse(toml, &env, Path::new(".")).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// The entry of client `name` in a `/status` document's `clients` list (panics if absent).
pub fn status_client(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone()
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
        Self::start_with("").await
    }

    pub async fn start_with(client_extra: &str) -> Env {
        let prod = mock("prod").await;
        let test = mock("test").await;
        let cfg = config(&two_instance_toml(&prod.url(), &test.url(), client_extra));
        let gw = Gateway::start(cfg).await.expect("gateway starts");
        assert!(
            gw.wait_ready(Duration::from_secs(10)).await,
            "gateway not ready"
        );
        Env {
            prod,
            test,
            gw,
            http: Http::new(),
        }
    }

    /// `http://127.0.0.1:PORT{path}` on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.addr(), path)
    }

    /// The same on the admin listener.
    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.admin_addr(), path)
    }
}

/// A pooled hyper client that sends URIs as given.
#[derive(Clone)]
pub struct Http(Client<HttpConnector, TestBody>);

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

impl Http {
    pub fn new() -> Self {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }

    pub async fn send(&self, req: Request<TestBody>) -> Reply {
        let resp = tokio::time::timeout(Duration::from_secs(30), self.0.request(req))
            .await
            .expect("response within 30 s")
            .expect("request succeeds");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::GET, url, headers, Bytes::new()).await
    }

    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(full(body)).unwrap()).await
    }
}

/// Sends `raw` bytes on a fresh connection and returns the status code and the raw response:
/// for request targets no client library would send unmodified.
pub async fn raw(addr: std::net::SocketAddr, raw: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("raw response within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// Runs `cmd` to the end within `timeout`: its exit code (-1 when a signal ended it), stdout
/// and stderr.
pub async fn run_within(
    timeout: Duration,
    cmd: &mut tokio::process::Command,
) -> (i32, String, String) {
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .expect("command finishes")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
