//! Loopback load bench: the gateway against a direct baseline, nginx and HAProxy.
//!
//! ```sh
//! cargo build --release                 # the gateway runs as its own process: target/release/coupa-gateway
//! cargo bench --bench load              # ~4 min; LOAD_SECONDS=1 LOAD_ROUNDS=1 for a quick pass
//! ```
//!
//! Everything runs on this machine, on 127.0.0.1 only, and stops by itself:
//! - a fast upstream (hyper, keep-alive, ~1 KB JSON; streams and swallows large bodies) on its
//!   own runtime in this process, and the mock Coupa (token endpoint) on the load runtime;
//! - the gateway as a child process (`coupa-gateway serve --config <tmp>`), so its RSS is its own;
//! - nginx and HAProxy, when found on PATH, configured as the same proxy (static bearer, legacy
//!   key dropped, upstream keep-alive, as many workers as the gateway has runtime threads);
//! - a closed-loop hyper client (N connections, no pipelining, non-2xx counted as errors),
//!   and `wrk` when found on PATH as a second load generator at 64 connections;
//! - each proxy's own CPU time per request (user + system from `/proc/<pid>/stat` over the
//!   measured window, nginx's workers included), which moves less between runs than req/s.
//!
//! Targets are measured in turn, interleaved (A B C D, then B C D A, ...) and repeated, so slow
//! drift of a noisy machine hits them all; ratios are the median of per-round ratios.
//!
//! Knobs (environment): `LOAD_SECONDS` (measured seconds per sample, default 3), `LOAD_ROUNDS`
//! (default 3), `LOAD_CONNS` (default `1,16,64,256`), `LOAD_BIG_MB` (default 100),
//! `LOAD_IDLE_CONNS` (default 1000), `LOAD_WRK=0` (skip wrk), `LOAD_PROXIES=0` (gateway and
//! direct only), `LOAD_RESULTS` (markdown output; default `benches/RESULTS.md`, `-` for none),
//! `LOAD_GATEWAY_BIN` (the gateway binary; default `target/release/coupa-gateway`),
//! `LOAD_SCENARIOS` (default `memory,small,wrk,big,refresh`),
//! `LOAD_COMPARE_BIN` (a second gateway binary, measured interleaved as `gateway-b`: A/B
//! ratios of two builds in one run), `LOAD_STATE` / `LOAD_COMPARE_STATE` (the migration
//! ledger of `gateway` / `gateway-b`: `memory`, `file`, or a `redis://` URL; default: no
//! `[state]` table, i.e. memory): with the same binary twice, the A/B ratio is the store's cost.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coupa_mock::{MockConfig, MockCoupa};
use hdrhistogram::Histogram;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

/// The static token nginx and HAProxy send; the gateway sends the mock's (same length class).
const STATIC_BEARER: &str = "Bearer 6c7f1e0b2d3a4c5e8f90a1b2c3d4e5f6a7b8c9d0e1f2a3b4";
/// The legacy key integrations send (and every proxy must drop).
const LEGACY_KEY: &str = "0123456789abcdef0123456789abcdef01234567";
/// Threads per proxy: the gateway's runtime uses one worker per core.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// === settings ===

struct Settings {
    seconds: Duration,
    warmup: Duration,
    rounds: usize,
    conns: Vec<usize>,
    big_bytes: u64,
    idle_conns: usize,
    wrk: bool,
    proxies: bool,
    results: Option<PathBuf>,
    scenarios: Vec<String>,
}

impl Settings {
    fn runs(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let num = |name: &str, default: f64| {
            var(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
            })
        };
        let seconds = num("LOAD_SECONDS", 3.0).clamp(0.2, 60.0);
        let conns = var("LOAD_CONNS").map_or_else(
            || vec![1, 16, 64, 256],
            |v| {
                v.split(',')
                    .map(|c| {
                        c.trim()
                            .parse()
                            .unwrap_or_else(|_| panic!("LOAD_CONNS={v:?}: {c:?} is not a number"))
                    })
                    .collect()
            },
        );
        let results = match var("LOAD_RESULTS") {
            Some(v) if v == "-" => None,
            Some(v) => Some(PathBuf::from(v)),
            None => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/RESULTS.md")),
        };
        Settings {
            seconds: Duration::from_secs_f64(seconds),
            warmup: Duration::from_secs_f64((seconds / 10.0).clamp(0.1, 0.3)),
            rounds: num("LOAD_ROUNDS", 3.0).clamp(1.0, 20.0) as usize,
            conns,
            big_bytes: (num("LOAD_BIG_MB", 100.0).clamp(1.0, 4096.0) as u64) << 20,
            idle_conns: num("LOAD_IDLE_CONNS", 1000.0).clamp(0.0, 10_000.0) as usize,
            wrk: var("LOAD_WRK").as_deref() != Some("0"),
            proxies: var("LOAD_PROXIES").as_deref() != Some("0"),
            results,
            scenarios: var("LOAD_SCENARIOS")
                .unwrap_or_else(|| "memory,small,wrk,big,refresh".into())
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
        }
    }
}

// === bodies ===

/// `left` bytes of `chunk` repeated: the 1 KB JSON page, a 100 MB download or upload.
/// Exact size hint, so hyper sends `Content-Length`.
struct Repeat {
    chunk: Bytes,
    left: u64,
}

impl Repeat {
    fn new(chunk: Bytes, len: u64) -> Self {
        Repeat { chunk, left: len }
    }
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A Coupa-like page of invoices, about 1 KB.
fn json_page() -> Bytes {
    let mut s = String::from("[");
    for i in 0..6 {
        if i > 0 {
            s.push(',');
        }
        write!(
            s,
            r#"{{"id":{id},"invoice-number":"INV-{id:06}","status":"approved","total":"{t}.50","currency":{{"code":"USD"}},"supplier":{{"id":{sid},"name":"Supplier {sid}"}},"updated-at":"2026-01-0{d}T10:00:00Z"}}"#,
            id = 1000 + i,
            t = 100 * (i + 1),
            sid = 40 + i,
            d = i + 1
        )
        .expect("write to String");
    }
    s.push(']');
    Bytes::from(s)
}

// === the upstream ===

/// The fast upstream. It checks what every proxy must do (bearer present, legacy key gone;
/// otherwise 401, which the load generator counts as an error), answers the JSON page, swallows
/// POST bodies and streams `/download`.
struct Upstream {
    page: Bytes,
    chunk: Bytes,
    download: u64,
    /// 0: accept every bearer; 1: take the next bearer on `/rv` as revoked; 2: reject it.
    revocation: AtomicU8,
    revoked: Mutex<Option<HeaderValue>>,
    rejected_401: AtomicU64,
    /// Connections accepted: a proxy whose pool works opens few.
    accepted: AtomicU64,
}

impl Upstream {
    fn new(download: u64) -> Arc<Self> {
        Arc::new(Upstream {
            page: json_page(),
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
            download,
            revocation: AtomicU8::new(0),
            revoked: Mutex::new(None),
            rejected_401: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        })
    }

    /// The next bearer seen on `/rv/...` is revoked: Coupa's answer to it becomes 401.
    fn revoke_next(&self) {
        *self.revoked.lock().expect("lock") = None;
        self.revocation.store(1, Ordering::SeqCst);
    }

    fn accept_all(&self) {
        self.revocation.store(0, Ordering::SeqCst);
        *self.revoked.lock().expect("lock") = None;
    }

    fn rejects(&self, req: &Request<Incoming>, auth: &HeaderValue) -> bool {
        let mut revoked = self.revoked.lock().expect("lock");
        if self.revocation.load(Ordering::Acquire) == 1 && req.uri().path().starts_with("/rv/") {
            *revoked = Some(auth.clone());
            self.revocation.store(2, Ordering::Release);
        }
        revoked.as_ref() == Some(auth)
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Repeat>, Infallible> {
        let unauthorized = || {
            let mut r = Response::new(Repeat::new(Bytes::new(), 0));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            Ok(r)
        };
        let h = req.headers();
        let Some(auth) = h.get(header::AUTHORIZATION) else {
            return unauthorized();
        };
        if !auth.as_bytes().starts_with(b"Bearer ") || h.contains_key("x-coupa-api-key") {
            return unauthorized();
        }
        if self.revocation.load(Ordering::Relaxed) != 0 && self.rejects(&req, auth) {
            self.rejected_401.fetch_add(1, Ordering::Relaxed);
            return unauthorized();
        }
        let body = if req.method() == Method::POST {
            let mut body = req.into_body();
            let mut received = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => received += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            let text = Bytes::from(format!("{{\"received\":{received}}}"));
            let len = text.len() as u64;
            Repeat::new(text, len)
        } else if req.uri().path().ends_with("/download") {
            Repeat::new(self.chunk.clone(), self.download)
        } else {
            Repeat::new(self.page.clone(), self.page.len() as u64)
        };
        let mut resp = Response::new(body);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        Ok(resp)
    }
}

async fn serve_upstream(listener: TcpListener, up: Arc<Upstream>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        up.accepted.fetch_add(1, Ordering::Relaxed);
        let up = up.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| up.clone().handle(req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// === child processes ===

/// Pids the panic hook must kill: a failed bench must not leave proxies running.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Direct children of `pid` (nginx's workers), from `/proc/*/stat`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // Fields after the `(comm)`: state, ppid, ...
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
}

fn mem_of(pid: u32) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU time of `pid` (all its threads), in µs.
fn cpu_us_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state (3), ..., utime (14), stime (15).
    let ticks: f64 = stat
        .rfind(')')
        .map(|i| {
            stat[i + 2..]
                .split(' ')
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    ticks / clock_ticks() * 1e6
}

/// A proxy process (and its workers), stopped on drop.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let log = std::fs::File::create(log).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        CHILDREN.lock().expect("lock").push(child.id());
        Proc { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// RSS of the process and its children (nginx: master + workers), in kB.
    fn mem(&self) -> Mem {
        let mut pids = vec![self.pid()];
        pids.extend(children_of(self.pid()));
        pids.iter()
            .map(|&p| mem_of(p))
            .fold(Mem::default(), |a, m| Mem {
                rss_kb: a.rss_kb + m.rss_kb,
                hwm_kb: a.hwm_kb + m.hwm_kb,
            })
    }

    /// CPU time used so far by the process and its children (nginx: master + workers), in µs.
    fn cpu_us(&self) -> f64 {
        let mut pids = vec![self.pid()];
        pids.extend(children_of(self.pid()));
        pids.iter().map(|&p| cpu_us_of(p)).sum()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.pid();
        let workers = children_of(pid);
        signal(pid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for w in workers {
            signal(w, "-KILL");
        }
        CHILDREN.lock().expect("lock").retain(|&p| p != pid);
    }
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn tool_version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

/// Waits until `GET path` on `addr` answers 200 (or the process died / 15 s passed).
async fn wait_serving(
    name: &str,
    proc: &mut Proc,
    addr: SocketAddr,
    path: &str,
    headers: &HeaderMap,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if !proc.alive() {
            panic!("{name} exited at start; see its log in the bench's temp dir");
        }
        if let Ok(status) = one_request(addr, path, headers).await {
            if status.is_success() {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!("{name} did not answer 200 on {addr}{path} within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn one_request(
    addr: SocketAddr,
    path: &str,
    headers: &HeaderMap,
) -> Result<StatusCode, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.uri_mut() = path.parse()?;
    *req.headers_mut() = headers.clone();
    let resp = send.send_request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    Ok(status)
}

// === targets ===

/// Something the load generator can drive.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// The paged GET, as an integration would send it to this target.
    uri: Uri,
    /// Where large bodies go (`…/upload`, `…/download` appended).
    big: &'static str,
    headers: HeaderMap,
    proc: Option<Proc>,
}

fn caller_headers(direct: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("gateway.internal"));
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static("erp-supplier-sync/4.2"),
    );
    if direct {
        // A migrated integration talking to Coupa itself.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static(STATIC_BEARER),
        );
    } else {
        h.insert("x-coupa-api-key", HeaderValue::from_static(LEGACY_KEY));
    }
    h
}

const PAGE: &str = "/api/invoices?offset=50&limit=50&order_by=id";

fn proxied(addr: SocketAddr, name: &'static str, proc: Proc) -> Target {
    Target {
        name,
        addr,
        uri: format!("/prod{PAGE}").parse().expect("uri"),
        big: "/big",
        headers: caller_headers(false),
        proc: Some(proc),
    }
}

fn gateway_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("LOAD_GATEWAY_BIN") {
        return PathBuf::from(bin);
    }
    // The bench runs as target/release/deps/load-HASH; the binary sits in target/release.
    let exe = std::env::current_exe().expect("bench executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("coupa-gateway"))
        .expect("bench executable has a grandparent directory");
    if !bin.is_file() {
        panic!(
            "{} not found: run `cargo build --release` first (the gateway runs as its own process so its RSS can be measured)",
            bin.display()
        );
    }
    bin
}

/// The main gateway's routes: the paged GETs and the large bodies, one client each.
fn gw_routes(mock: &MockCoupa) -> [GatewayRoute<'_>; 2] {
    [
        GatewayRoute {
            prefix: "/prod",
            base: "",
            mock,
            warmup: "5s",
        },
        GatewayRoute {
            prefix: "/big",
            base: "",
            mock,
            warmup: "5s",
        },
    ]
}

struct GatewayRoute<'a> {
    prefix: &'a str,
    /// Base path on the upstream (tells routes apart there).
    base: &'a str,
    mock: &'a MockCoupa,
    warmup: &'a str,
}

async fn start_gateway(
    name: &'static str,
    bin: &Path,
    dir: &Path,
    upstream: SocketAddr,
    routes: &[GatewayRoute<'_>],
) -> (SocketAddr, SocketAddr, Proc) {
    let port = free_port();
    let admin = free_port();
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace = \"1s\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"
    );
    for (i, r) in routes.iter().enumerate() {
        write!(
            toml,
            r#"
[instances.i{i}]
url = "http://{upstream}{base}"
token_url = "{token_url}"
rate_limit = {{ enabled = false }}
[clients.c{i}]
instance = "i{i}"
client_id = "bench-client"
client_secret = "bench-secret"
scopes = ["core.invoice.read"]
token_warmup = "{warmup}"
[[routes]]
prefix = "{prefix}"
instance = "i{i}"
client = "c{i}"
"#,
            base = r.base,
            token_url = r.mock.token_url(),
            warmup = r.warmup,
            prefix = r.prefix,
        )
        .expect("write to String");
    }
    let state = if name == "gateway-b" {
        "LOAD_COMPARE_STATE"
    } else {
        "LOAD_STATE"
    };
    match std::env::var(state).ok().as_deref() {
        None => {}
        Some("memory") => toml.push_str("[state]\nmemory = true\n"),
        Some("file") => {
            let file = dir.join(format!("{name}-ledger.redb"));
            let _ = std::fs::remove_file(&file);
            writeln!(toml, "[state]\npath = {:?}", file.display().to_string()).expect("write");
        }
        Some(url) if url.starts_with("redis://") => {
            writeln!(toml, "[state]\nredis = {url:?}").expect("write to String");
        }
        Some(other) => panic!("{state}={other:?}: use memory, file or a redis:// URL"),
    }
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).expect("write gateway config");
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn");
    let mut proc = Proc::spawn(cmd, &dir.join(format!("{name}.log")));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin).into();
    let path = format!("{}{PAGE}", routes[0].prefix);
    wait_serving(name, &mut proc, addr, &path, &caller_headers(false)).await;
    (addr, admin, proc)
}

fn nginx_conf(dir: &Path, port: u16, upstream: SocketAddr) -> String {
    let d = dir.display();
    let location = |prefix: &str, extra: &str| {
        format!(
            r#"
        location {prefix}/ {{
            proxy_pass http://coupa/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {upstream};
            proxy_set_header Authorization "{STATIC_BEARER}";
            proxy_set_header X-COUPA-API-KEY "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Request-Id $request_id;
            add_header X-Request-Id $request_id always;{extra}
        }}"#
        )
    };
    format!(
        r#"# Generated by benches/load.rs: nginx as the equivalent proxy.
worker_processes {workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-body;
    proxy_temp_path {d}/nginx-proxy;
    fastcgi_temp_path {d}/nginx-fastcgi;
    uwsgi_temp_path {d}/nginx-uwsgi;
    scgi_temp_path {d}/nginx-scgi;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    upstream coupa {{
        server {upstream};
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        {prod}
        {big}
    }}
}}
"#,
        workers = cores(),
        prod = location("/prod", ""),
        // Large bodies stream both ways, as the gateway does (nginx would spool them to disk).
        big = location(
            "/big",
            "\n            client_max_body_size 0;\n            proxy_request_buffering off;\n            proxy_buffering off;"
        ),
    )
}

fn haproxy_conf(port: u16, upstream: SocketAddr) -> String {
    format!(
        r#"# Generated by benches/load.rs: HAProxy as the equivalent proxy.
global
    nbthread {threads}
    # Two descriptors per connection must fit the 20000-fd limit.
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 120s
    timeout http-keep-alive 60s
    unique-id-format %{{+X}}o%ci:%cp_%fp_%Ts_%rt:%pid
frontend fe
    bind 127.0.0.1:{port}
    default_backend coupa
backend coupa
    http-reuse always
    option forwardfor
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Request-Id %[unique-id]
    http-request set-header Authorization "{STATIC_BEARER}"
    http-request del-header X-COUPA-API-KEY
    http-request set-header Host {upstream}
    http-request replace-path ^/(prod|big)(/.*)?$ \2
    http-response set-header X-Request-Id %[unique-id]
    server up {upstream}
"#,
        threads = cores(),
    )
}

// === load generation ===

/// One sample: what one target did for one measured window.
struct Sample {
    ok: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
    /// CPU time the proxy process used during the measured window, in µs (None: direct).
    cpu_us: Option<f64>,
}

impl Sample {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    /// The proxy's CPU cost per request: on a box where the load generator, the upstream and
    /// the proxy share the cores, this moves less between runs than req/s does.
    fn cpu_per_request(&self) -> Option<f64> {
        Some(self.cpu_us? / self.ok.max(1) as f64)
    }
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Option<Sender> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(send)
}

/// Closed loop: `conns` connections, each sending its next request when the previous response
/// has been read to the end. Requests completing inside `[start + warmup, + seconds]` count.
/// `during` runs once, halfway through the measured window (token revocation).
async fn hyper_sample(
    target: &Target,
    conns: usize,
    warmup: Duration,
    seconds: Duration,
    during: Option<&(dyn Fn() + Sync)>,
) -> Sample {
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(connect(target.addr).await);
    }
    let start = Instant::now();
    let from = start + warmup;
    let end = from + seconds;
    let mut tasks = tokio::task::JoinSet::new();
    for sender in senders {
        let (uri, headers, addr) = (target.uri.clone(), target.headers.clone(), target.addr);
        tasks.spawn(async move {
            let mut sender = sender;
            let mut hist = histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < end {
                let Some(send) = sender.as_mut() else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    sender = connect(addr).await;
                    continue;
                };
                let mut req = Request::new(Empty::<Bytes>::new());
                *req.uri_mut() = uri.clone();
                *req.headers_mut() = headers.clone();
                let sent = Instant::now();
                let result = async {
                    send.ready().await?;
                    let resp = send.send_request(req).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    Ok::<_, hyper::Error>(status)
                }
                .await;
                let done = Instant::now();
                let counted = sent >= from && done <= end;
                match result {
                    Ok(status) if status.is_success() => {
                        if counted {
                            ok += 1;
                            let us = done.duration_since(sent).as_micros() as u64;
                            hist.saturating_record(us.max(1));
                        }
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        sender = connect(addr).await;
                    }
                }
            }
            (ok, errors, hist)
        });
    }
    let proc = target.proc.as_ref();
    tokio::time::sleep_until(from.into()).await;
    let cpu_from = proc.map(Proc::cpu_us);
    if let Some(f) = during {
        tokio::time::sleep_until((from + seconds / 2).into()).await;
        f();
    }
    tokio::time::sleep_until(end.into()).await;
    let cpu_us = proc.map(Proc::cpu_us).zip(cpu_from).map(|(b, a)| b - a);
    let mut sample = Sample {
        ok: 0,
        errors: 0,
        secs: seconds.as_secs_f64(),
        hist: histogram(),
        cpu_us,
    };
    while let Some(r) = tasks.join_next().await {
        let (ok, errors, hist) = r.expect("load task");
        sample.ok += ok;
        sample.errors += errors;
        sample.hist.add(&hist).expect("same histogram bounds");
    }
    sample
}

/// wrk's view of one sample (latencies in µs, as wrk reports them).
struct WrkSample {
    rps: f64,
    /// The proxy's CPU µs per request over the whole wrk run (None: direct).
    cpu: Option<f64>,
    errors: u64,
    p50: f64,
    p99: f64,
    p999: f64,
}

fn wrk_sample(
    wrk: &Path,
    dir: &Path,
    target: &Target,
    conns: usize,
    seconds: Duration,
) -> WrkSample {
    let script = dir.join(format!("{}.lua", target.name));
    let mut lua = String::from("wrk.method = \"GET\"\n");
    for (name, value) in &target.headers {
        if name != header::HOST {
            writeln!(
                lua,
                "wrk.headers[\"{name}\"] = \"{}\"",
                value.to_str().expect("ascii header")
            )
            .expect("write to String");
        }
    }
    lua.push_str(
        r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d %.1f %.1f %.1f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#,
    );
    std::fs::write(&script, lua).expect("write wrk script");
    let threads = cores().min(conns);
    let cpu_from = target.proc.as_ref().map(Proc::cpu_us);
    let out = Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}s", seconds.as_secs().max(1)))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{}{}", target.addr, target.uri))
        .stdin(Stdio::null())
        .output()
        .expect("run wrk");
    let cpu_us = target.proc.as_ref().map(Proc::cpu_us).zip(cpu_from);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("wrk printed no result: {text}"));
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().expect("wrk number"))
        .collect();
    WrkSample {
        rps: f[0] / (f[1] / 1e6),
        cpu: cpu_us.map(|(b, a)| (b - a) / f[0].max(1.0)),
        errors: f[2..7].iter().sum::<f64>() as u64,
        p50: f[7],
        p99: f[8],
        p999: f[9],
    }
}

// === large bodies ===

type BigSender = hyper::client::conn::http1::SendRequest<Repeat>;

/// Seconds to upload `bytes` (response read) or download them, on a fresh connection.
async fn transfer(target: &Target, chunk: &Bytes, bytes: u64, upload: bool) -> f64 {
    let stream = TcpStream::connect(target.addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (mut send, conn): (BigSender, _) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let (method, path, body) = if upload {
        (Method::POST, "upload", Repeat::new(chunk.clone(), bytes))
    } else {
        (Method::GET, "download", Repeat::new(Bytes::new(), 0))
    };
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = format!("{}/{path}", target.big).parse().expect("uri");
    *req.headers_mut() = target.headers.clone();
    let started = Instant::now();
    let resp = send.send_request(req).await.expect("big request");
    assert!(
        resp.status().is_success(),
        "{}: {path} answered {}",
        target.name,
        resp.status()
    );
    let mut body = resp.into_body();
    let mut received = 0u64;
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.expect("big body").data_ref() {
            received += d.len() as u64;
            if upload {
                text.extend_from_slice(d);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if upload {
        let expect = format!("{{\"received\":{bytes}}}");
        assert_eq!(
            String::from_utf8_lossy(&text),
            expect,
            "{}: upload truncated",
            target.name
        );
    } else {
        assert_eq!(received, bytes, "{}: download truncated", target.name);
    }
    secs
}

// === statistics and output ===

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median CPU µs per request, or a dash for the direct baseline (no proxy process).
fn cpu_cell(per_round: &[f64]) -> String {
    if per_round.is_empty() {
        "–".into()
    } else {
        format!("{:.1}", median(per_round.to_vec()))
    }
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// Results of one target at one connection count, over the rounds.
#[derive(Default)]
struct Row {
    rps: Vec<f64>,
    errors: u64,
    /// Upstream connections opened during the samples.
    opened: u64,
    hist: Option<Histogram<u64>>,
    p99s: Vec<f64>,
    /// Proxy CPU µs per request, one per round.
    cpu: Vec<f64>,
}

impl Row {
    fn add(&mut self, s: &Sample) {
        self.rps.push(s.rps());
        self.cpu.extend(s.cpu_per_request());
        self.errors += s.errors;
        self.p99s.push(s.hist.value_at_quantile(0.99) as f64);
        match &mut self.hist {
            Some(h) => h.add(&s.hist).expect("same bounds"),
            None => self.hist = Some(s.hist.clone()),
        }
    }
    fn q(&self, q: f64) -> f64 {
        self.hist
            .as_ref()
            .map_or(f64::NAN, |h| h.value_at_quantile(q) as f64)
    }
}

struct Report {
    md: String,
}

impl Report {
    fn line(&mut self, s: &str) {
        println!("{s}");
        self.md.push_str(s);
        self.md.push('\n');
    }
}

/// Per-round ratio of `a` to `b` (rounds are interleaved, so each pair saw the same machine),
/// then the median.
fn paired(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| x / y).collect())
}

/// [`paired`], with the lowest and highest per-round ratio: how far one round can move it.
fn paired_spread(a: &[f64], b: &[f64]) -> String {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if ratios.len() < 2 {
        return format!("{:.2}", median(ratios));
    }
    format!("{:.2} ({lo:.2}–{hi:.2})", median(ratios))
}

fn main() {
    let settings = Settings::from_env();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        for pid in CHILDREN.lock().map(|c| c.clone()).unwrap_or_default() {
            for w in children_of(pid) {
                signal(w, "-KILL");
            }
            signal(pid, "-KILL");
        }
        default_hook(info);
    }));
    let dir = std::env::temp_dir().join(format!("coupa-gateway-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .thread_name("upstream")
        .enable_all()
        .build()
        .expect("upstream runtime");
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .thread_name("load")
        .enable_all()
        .build()
        .expect("load runtime");
    let upstream = Upstream::new(settings.big_bytes);
    let up_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let up_addr = up_listener.local_addr().expect("upstream address");
    up_listener.set_nonblocking(true).expect("nonblocking");
    {
        let _guard = upstream_rt.enter();
        let listener = TcpListener::from_std(up_listener).expect("upstream listener");
        upstream_rt.spawn(serve_upstream(listener, upstream.clone()));
    }
    let started = Instant::now();
    let outcome = load_rt.block_on(run(&settings, &dir, up_addr, &upstream));
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = outcome;
    report.line(&format!(
        "\nTotal bench time: {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    if let Some(path) = &settings.results {
        write_results(path, &report.md);
        println!("written to {}", path.display());
    }
    upstream_rt.shutdown_background();
    load_rt.shutdown_background();
}

/// Replaces the generated part of RESULTS.md (between the markers), keeping the hand-written
/// analysis around it.
fn write_results(path: &Path, generated: &str) {
    const BEGIN: &str = "<!-- load-bench:begin -->";
    const END: &str = "<!-- load-bench:end -->";
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{BEGIN}\n{generated}{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("{old}\n{block}\n"),
    };
    if let Err(e) = std::fs::write(path, new) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(String::new(), |kb| format!("{} GiB", kb / 1024 / 1024));
    let mut out = format!(
        "- date: {}\n- nproc: {}; CPU: {cpu}; memory: {mem}; kernel: {}\n- rustc: {}\n",
        tool_version("date", "-u"),
        cores(),
        kernel.trim(),
        tool_version("rustc", "-V"),
    );
    for (tool, arg) in [("nginx", "-v"), ("haproxy", "-v"), ("wrk", "-v")] {
        let v = if on_path(tool).is_some() {
            tool_version(tool, arg)
        } else {
            "not on PATH (skipped)".into()
        };
        writeln!(out, "- {tool}: {v}").expect("write to String");
    }
    out
}

async fn run(s: &Settings, dir: &Path, up_addr: SocketAddr, upstream: &Arc<Upstream>) -> Report {
    let mut r = Report { md: String::new() };
    let command = format!(
        "LOAD_SECONDS={} LOAD_ROUNDS={} cargo bench --bench load",
        s.seconds.as_secs_f64(),
        s.rounds
    );
    r.line("## Load bench (generated by `benches/load.rs`)\n");
    r.line(&format!("Command: `cargo build --release && {command}`\n"));
    r.line(&machine());
    r.line(&format!(
        "Everything on one machine over loopback: upstream ({} threads) and load generator ({} threads) in the bench process, each proxy with {} worker threads/processes. Closed loop, one request in flight per connection, {} s measured per sample after {} ms warm-up, {} interleaved rounds; req/s is the median over rounds, latencies come from the merged rounds, ratios are medians of per-round ratios.\n",
        cores(), cores(), cores(), s.seconds.as_secs_f64(), s.warmup.as_millis(), s.rounds
    ));

    let mock = MockCoupa::start(
        MockConfig::new("prod")
            .listen("127.0.0.1:0".parse().expect("address"))
            .client("bench-client", "bench-secret", &["core.invoice.read"])
            .rate_limit(None),
    )
    .await
    .expect("mock starts");

    // --- the targets ---
    let mut targets = vec![Target {
        name: "direct",
        addr: up_addr,
        uri: PAGE.parse().expect("uri"),
        big: "",
        headers: caller_headers(true),
        proc: None,
    }];
    let (gw_addr, _gw_admin, gw) = start_gateway(
        "gateway",
        &gateway_binary(),
        dir,
        up_addr,
        &gw_routes(&mock),
    )
    .await;
    targets.push(proxied(gw_addr, "gateway", gw));
    // A/B runs of two builds of the gateway: `LOAD_COMPARE_BIN=/path/to/older/coupa-gateway`.
    let compare = std::env::var_os("LOAD_COMPARE_BIN").map(PathBuf::from);
    if let Some(bin) = &compare {
        let (addr, _admin, proc) =
            start_gateway("gateway-b", bin, dir, up_addr, &gw_routes(&mock)).await;
        targets.push(proxied(addr, "gateway-b", proc));
    }
    if s.proxies {
        if let Some(nginx) = on_path("nginx") {
            let port = free_port();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, nginx_conf(dir, port, up_addr)).expect("nginx.conf");
            let mut cmd = Command::new(nginx);
            cmd.arg("-p").arg(dir).arg("-c").arg(&conf);
            let mut proc = Proc::spawn(cmd, &dir.join("nginx.log"));
            let addr = ([127, 0, 0, 1], port).into();
            wait_serving(
                "nginx",
                &mut proc,
                addr,
                &format!("/prod{PAGE}"),
                &caller_headers(false),
            )
            .await;
            targets.push(proxied(addr, "nginx", proc));
        }
        if let Some(haproxy) = on_path("haproxy") {
            let port = free_port();
            let conf = dir.join("haproxy.cfg");
            std::fs::write(&conf, haproxy_conf(port, up_addr)).expect("haproxy.cfg");
            let mut cmd = Command::new(haproxy);
            cmd.arg("-db").arg("-f").arg(&conf);
            let mut proc = Proc::spawn(cmd, &dir.join("haproxy.log"));
            let addr = ([127, 0, 0, 1], port).into();
            wait_serving(
                "haproxy",
                &mut proc,
                addr,
                &format!("/prod{PAGE}"),
                &caller_headers(false),
            )
            .await;
            targets.push(proxied(addr, "haproxy", proc));
        }
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();

    // --- memory: idle, then holding idle keep-alive connections ---
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut mem_table: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    for t in targets
        .iter()
        .filter(|t| t.proc.is_some() && s.runs("memory"))
    {
        let idle = t.proc.as_ref().map(Proc::mem).unwrap_or_default();
        let mut held = Vec::with_capacity(s.idle_conns);
        for batch in 0..s.idle_conns.div_ceil(50) {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..50.min(s.idle_conns - batch * 50) {
                let (addr, uri, headers) = (t.addr, t.uri.clone(), t.headers.clone());
                set.spawn(async move {
                    let mut send = connect(addr).await?;
                    let mut req = Request::new(Empty::<Bytes>::new());
                    *req.uri_mut() = uri;
                    *req.headers_mut() = headers;
                    let resp = send.send_request(req).await.ok()?;
                    let ok = resp.status().is_success();
                    resp.into_body().collect().await.ok()?;
                    ok.then_some(send)
                });
            }
            while let Some(c) = set.join_next().await {
                if let Some(send) = c.expect("connect task") {
                    held.push(send);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let holding = t.proc.as_ref().map(Proc::mem).unwrap_or_default();
        assert_eq!(
            held.len(),
            s.idle_conns,
            "{}: not every idle connection could be opened",
            t.name
        );
        drop(held);
        mem_table.insert(t.name, [idle.rss_kb, holding.rss_kb, 0]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // --- throughput and latency, hyper client ---
    r.line("### Small requests: paged GET, ~1 KB JSON (hyper closed-loop client)\n");
    r.line("| conns | target | req/s | p50 ms | p99 ms | p99.9 ms | errors | upstream connections opened | proxy CPU µs/request |");
    r.line("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut ratio_lines = Vec::new();
    let mut ab_lines = Vec::new();
    let small_conns = if s.runs("small") { &s.conns[..] } else { &[] };
    for &conns in small_conns {
        let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
        for round in 0..s.rounds {
            for k in 0..targets.len() {
                let t = &targets[(k + round) % targets.len()];
                let opened = upstream.accepted.load(Ordering::Relaxed);
                let sample = hyper_sample(t, conns, s.warmup, s.seconds, None).await;
                let row = rows.entry(t.name).or_default();
                row.add(&sample);
                row.opened += upstream.accepted.load(Ordering::Relaxed) - opened;
            }
        }
        for name in &names {
            let row = &rows[name];
            r.line(&format!(
                "| {conns} | {name} | {:.0} | {} | {} | {} | {} | {} | {} |",
                median(row.rps.clone()),
                ms(row.q(0.5)),
                ms(row.q(0.99)),
                ms(row.q(0.999)),
                row.errors,
                row.opened,
                cpu_cell(&row.cpu),
            ));
        }
        let gw = &rows["gateway"];
        let mut line = format!("| {conns} | {:.2} |", paired(&gw.rps, &rows["direct"].rps));
        for other in ["nginx", "haproxy"] {
            match rows.get(other) {
                Some(o) => write!(
                    line,
                    " {} | {} | {} |",
                    paired_spread(&gw.rps, &o.rps),
                    paired_spread(&gw.p99s, &o.p99s),
                    paired_spread(&gw.cpu, &o.cpu)
                ),
                None => write!(line, " – | – | – |"),
            }
            .expect("write to String");
        }
        ratio_lines.push(line);
        if let Some(b) = rows.get("gateway-b") {
            ab_lines.push(format!(
                "| {conns} | {:.3} | {:.3} | {:.3} |",
                paired(&gw.rps, &b.rps),
                paired(&gw.p99s, &b.p99s),
                paired(&gw.cpu, &b.cpu)
            ));
        }
    }
    r.line("\nRatios (gateway ÷ other; req/s: higher is better, p99 and CPU per request: lower is better; median of the per-round ratios, lowest and highest round in brackets):\n");
    r.line("| conns | req/s vs direct | req/s vs nginx | p99 vs nginx | CPU/request vs nginx | req/s vs HAProxy | p99 vs HAProxy | CPU/request vs HAProxy |");
    r.line("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in ratio_lines {
        r.line(&l);
    }
    if let Some(bin) = &compare {
        r.line(&format!(
            "\nA/B: gateway ÷ gateway-b (`LOAD_COMPARE_BIN={}`):\n",
            bin.display()
        ));
        r.line("| conns | req/s | p99 | CPU/request |");
        r.line("|---:|---:|---:|---:|");
        for l in ab_lines {
            r.line(&l);
        }
    }

    // --- the same with wrk, at 64 connections ---
    if let (true, Some(wrk)) = (s.wrk && s.runs("wrk"), on_path("wrk")) {
        let conns = 64;
        let mut rows: BTreeMap<&str, Vec<WrkSample>> = BTreeMap::new();
        for round in 0..s.rounds {
            for k in 0..targets.len() {
                let t = &targets[(k + round) % targets.len()];
                let w = wrk_sample(&wrk, dir, t, conns, s.seconds);
                rows.entry(t.name).or_default().push(w);
            }
        }
        r.line(&format!(
            "\n### Cross-check with wrk ({conns} connections, {} threads; medians over rounds)\n",
            cores().min(conns)
        ));
        r.line("| target | req/s | p50 ms | p99 ms | p99.9 ms | errors (socket + non-2xx) | proxy CPU µs/request | req/s ratio gateway ÷ target | p99 ratio | CPU/request ratio |");
        r.line("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let gw_rps: Vec<f64> = rows["gateway"].iter().map(|w| w.rps).collect();
        let gw_p99: Vec<f64> = rows["gateway"].iter().map(|w| w.p99).collect();
        let gw_cpu: Vec<f64> = rows["gateway"].iter().filter_map(|w| w.cpu).collect();
        for name in &names {
            let v = &rows[name];
            let rps: Vec<f64> = v.iter().map(|w| w.rps).collect();
            let p99: Vec<f64> = v.iter().map(|w| w.p99).collect();
            let cpu: Vec<f64> = v.iter().filter_map(|w| w.cpu).collect();
            let cpu_ratio = if cpu.is_empty() {
                "–".to_string()
            } else {
                format!("{:.2}", paired(&gw_cpu, &cpu))
            };
            r.line(&format!(
                "| {name} | {:.0} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {cpu_ratio} |",
                median(rps.clone()),
                ms(median(v.iter().map(|w| w.p50).collect())),
                ms(median(p99.clone())),
                ms(median(v.iter().map(|w| w.p999).collect())),
                v.iter().map(|w| w.errors).sum::<u64>(),
                cpu_cell(&cpu),
                paired(&gw_rps, &rps),
                paired(&gw_p99, &p99),
            ));
        }
    }

    // --- large bodies ---
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let mut big: BTreeMap<&str, [Vec<f64>; 2]> = BTreeMap::new();
    let gw_big_rss = Arc::new(AtomicU64::new(0));
    let gw_before = targets[1].proc.as_ref().map(Proc::mem).unwrap_or_default();
    let big_rounds = if s.runs("big") { s.rounds } else { 0 };
    for round in 0..big_rounds {
        for k in 0..targets.len() {
            let t = &targets[(k + round) % targets.len()];
            for (i, upload) in [true, false].into_iter().enumerate() {
                // The gateway's RSS is sampled every 20 ms while the body streams through.
                let sampler = (t.name == "gateway").then(|| {
                    let pid = t.proc.as_ref().map(Proc::pid).expect("gateway pid");
                    let max = gw_big_rss.clone();
                    tokio::spawn(async move {
                        loop {
                            max.fetch_max(mem_of(pid).rss_kb, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    })
                });
                let secs = transfer(t, &chunk, s.big_bytes, upload).await;
                if let Some(h) = sampler {
                    h.abort();
                }
                big.entry(t.name).or_default()[i].push(s.big_bytes as f64 / secs / 1e6);
            }
        }
    }
    if s.runs("big") {
        let gw_after = targets[1].proc.as_ref().map(Proc::mem).unwrap_or_default();
        r.line(&format!(
            "\n### Large bodies: {} MB upload and download, one connection (MB/s, median over rounds)\n",
            s.big_bytes >> 20
        ));
        r.line("| target | upload MB/s | download MB/s | upload ÷ direct | download ÷ direct |");
        r.line("|---|---:|---:|---:|---:|");
        for name in &names {
            let [up, down] = &big[name];
            let [dup, ddown] = &big["direct"];
            r.line(&format!(
                "| {name} | {:.0} | {:.0} | {:.2} | {:.2} |",
                median(up.clone()),
                median(down.clone()),
                paired(up, dup),
                paired(down, ddown)
            ));
        }
        r.line(&format!(
            "\nGateway RSS: {} MB before the transfers, at most {} MB while they streamed (sampled every 20 ms), {} MB after.",
            mb(gw_before.rss_kb),
            mb(gw_big_rss.load(Ordering::Relaxed)),
            mb(gw_after.rss_kb)
        ));
    }

    // --- memory table ---
    if s.runs("memory") {
        r.line("\n### Memory (RSS, MB; nginx: master + workers summed)\n");
        r.line(&format!(
        "| proxy | idle | holding {} idle keep-alive connections | peak over the whole run (VmHWM) |",
        s.idle_conns
    ));
        r.line("|---|---:|---:|---:|");
        for t in targets
            .iter()
            .filter(|t| t.proc.is_some() && s.runs("memory"))
        {
            let m = mem_table.get_mut(t.name).expect("measured");
            m[2] = t.proc.as_ref().map(Proc::mem).unwrap_or_default().hwm_kb;
            r.line(&format!(
                "| {} | {} | {} | {} |",
                t.name,
                mb(m[0]),
                mb(m[1]),
                mb(m[2])
            ));
        }
    }
    drop(targets);

    // --- token refresh ---
    if s.runs("refresh") {
        refresh_scenario(s, dir, up_addr, upstream, &mut r).await;
    }
    mock.shutdown().await;
    r
}

/// p99 while the token changes: a proactive refresh (the mock's tokens live 3 s, so the gateway
/// re-mints about every 2.5 s: every sample contains at least one) and the 401 path (halfway
/// through a sample the upstream starts rejecting the current token; the gateway re-mints and
/// replays), each against a route whose token never changes, in one gateway process.
async fn refresh_scenario(
    s: &Settings,
    dir: &Path,
    up_addr: SocketAddr,
    upstream: &Arc<Upstream>,
    r: &mut Report,
) {
    let mock = |expires_in| {
        MockCoupa::start(
            MockConfig::new("prod")
                .listen("127.0.0.1:0".parse().expect("address"))
                .client("bench-client", "bench-secret", &["core.invoice.read"])
                .expires_in(expires_in)
                .rate_limit(None),
        )
    };
    let steady_mock = mock(86_399).await.expect("mock");
    let expiring_mock = mock(3).await.expect("mock");
    let revoked_mock = mock(86_399).await.expect("mock");
    let (addr, _admin, proc) = start_gateway(
        "gateway-refresh",
        &gateway_binary(),
        dir,
        up_addr,
        &[
            GatewayRoute {
                prefix: "/steady",
                base: "/s",
                mock: &steady_mock,
                warmup: "5s",
            },
            GatewayRoute {
                prefix: "/expiring",
                base: "/e",
                mock: &expiring_mock,
                warmup: "5s",
            },
            // No warm-up: with one, the replay would wait it out (5 s by default) by design.
            GatewayRoute {
                prefix: "/revoked",
                base: "/rv",
                mock: &revoked_mock,
                warmup: "0s",
            },
        ],
    )
    .await;
    let target = |prefix: &str, name: &'static str| Target {
        name,
        addr,
        uri: format!("{prefix}{PAGE}").parse().expect("uri"),
        big: "",
        headers: caller_headers(false),
        proc: None,
    };
    let steady = target("/steady", "steady");
    let expiring = target("/expiring", "expiring");
    let revoked = target("/revoked", "revoked");
    let conns = 64;
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    let before = (expiring_mock.stats(), revoked_mock.stats());
    let revoke = || upstream.revoke_next();
    for round in 0..s.rounds {
        let order = [&steady, &expiring, &steady, &revoked];
        for k in 0..order.len() {
            let t = order[(k + round) % order.len()];
            let during: Option<&(dyn Fn() + Sync)> = if t.name == "revoked" {
                Some(&revoke)
            } else {
                None
            };
            let sample = hyper_sample(t, conns, s.warmup, s.seconds, during).await;
            upstream.accept_all();
            rows.entry(t.name).or_default().add(&sample);
        }
    }
    let minted = (
        expiring_mock.stats().tokens_issued - before.0.tokens_issued,
        revoked_mock.stats().tokens_issued - before.1.tokens_issued,
    );
    r.line(&format!(
        "\n### Token refresh ({conns} connections, one gateway process, three routes; hyper client)\n"
    ));
    r.line(
        "| route | what happens | req/s | p50 ms | p99 ms | p99.9 ms | errors | p99 ÷ steady p99 |",
    );
    r.line("|---|---|---:|---:|---:|---:|---:|---:|");
    let st = &rows["steady"];
    for (name, what) in [
        ("steady", "token never changes".to_string()),
        (
            "expiring",
            format!("tokens live 3 s: {} proactive refreshes during the run", minted.0),
        ),
        (
            "revoked",
            format!(
                "Coupa starts answering 401 to the token mid-sample: {} re-mints, {} upstream 401s replayed",
                minted.1,
                upstream.rejected_401.load(Ordering::Relaxed)
            ),
        ),
    ] {
        let row = &rows[name];
        // Steady ran twice per round; pair each sample with the mean of that round's two.
        let steady_p99: Vec<f64> = st.p99s.chunks(2).map(|c| c.iter().sum::<f64>() / c.len() as f64).collect();
        r.line(&format!(
            "| {name} | {what} | {:.0} | {} | {} | {} | {} | {:.2} |",
            median(row.rps.clone()),
            ms(row.q(0.5)),
            ms(row.q(0.99)),
            ms(row.q(0.999)),
            row.errors,
            if name == "steady" { 1.0 } else { paired(&row.p99s, &steady_p99) },
        ));
    }
    drop(proc);
    steady_mock.shutdown().await;
    expiring_mock.shutdown().await;
    revoked_mock.shutdown().await;
}
