//! The rate-budget bench: how fully and how fairly the gateway spends Coupa's budget, against
//! what a user would otherwise deploy (nginx `limit_req`), and across replicas sharing Redis.
//!
//! ```text
//! cargo bench --bench budget        # ~3 min; BUDGET_SECONDS=10 for a quick pass
//! ```
//!
//! Everything runs on loopback against the mock Coupa enforcing Coupa's documented limit (25
//! requests/s, burst 20, answering 429 beyond it). Scenarios:
//! 1. one gateway: a greedy integration (64 requests in flight, always) and two polite ones
//!    (one request every 500 ms each): what Coupa receives per second, Coupa's 429s, the polite
//!    integrations' latency, the greedy one's share;
//! 2. one gateway, two equal greedy integrations (32 in flight each): Jain's fairness index;
//! 3. scenario 1 through nginx with `limit_req rate=25r/s burst=20` (when nginx is on PATH);
//! 4. three gateways sharing a `redis-server` (when installed), the greedy load spread over
//!    them: Coupa's 429s and the budget used;
//! 5. the same with Redis killed for the middle third of the run.
//!
//! Knobs: `BUDGET_SECONDS` (per scenario, default 30). Prints a markdown report.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coupa_gateway::config::Config;
use coupa_gateway::net::server::Gateway;
use coupa_mock::{demo_instance, MockCoupa, MockRateLimit, DEMO_API_KEY};

const GREEDY: &str = "greedy-bulk-sync-key-00000000000000000001";
const GREEDY_2: &str = "greedy-second-sync-key-000000000000000002";
const POLITE: [&str; 2] = [
    "polite-ap-export-key-000000000000000000003",
    "polite-gl-export-key-000000000000000000004",
];
const COUPA_RATE: f64 = 25.0;

/// Something done a third of the way into a run (kill Redis) or two thirds (restart it).
type Action = Box<dyn FnOnce() + Send>;

fn sha256_hex(key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn coupa() -> MockCoupa {
    MockCoupa::start(
        demo_instance("prod", "127.0.0.1:0".parse().unwrap())
            .rate_limit(Some(MockRateLimit::new(COUPA_RATE, 20))),
    )
    .await
    .expect("mock starts")
}

async fn gateway(mock: &MockCoupa, state: &str) -> Gateway {
    let mut toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
[admin]
listen = "127.0.0.1:0"
[instances.prod]
url = "{url}"
# Coupa's 25/s; a burst below Coupa's 20 absorbs loopback jitter at the start of a burst.
rate_limit = {{ per_second = 25, burst = 15, max_queue_wait = "30s" }}
[clients.prod-main]
instance = "prod"
client_id = "demo-prod-client"
client_secret = "demo-prod-secret"
scopes = ["core.supplier.read"]
token_warmup = "0s"
[[routes]]
prefix = "/prod"
instance = "prod"
client = "prod-main"
"#,
        url = mock.url()
    );
    for (name, key) in [
        ("bulk", GREEDY),
        ("bulk-2", GREEDY_2),
        ("ap-export", POLITE[0]),
        ("gl-export", POLITE[1]),
    ] {
        toml += &format!(
            "[[integrations]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\nroutes = [\"/prod\"]\n",
            sha256_hex(key)
        );
    }
    toml += state;
    let config = Config::parse(&toml, &|_| None, Path::new(".")).expect("bench config");
    let gw = Gateway::start(config).await.expect("gateway starts");
    assert!(gw.wait_ready(Duration::from_secs(10)).await, "no token");
    gw
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    limited: AtomicU64,
    other: AtomicU64,
    latencies_ms: Mutex<Vec<f64>>,
}

impl Tally {
    fn record(&self, status: u16, took: Duration, keep_latency: bool) {
        match status {
            200 => &self.ok,
            429 | 503 => &self.limited,
            _ => &self.other,
        }
        .fetch_add(1, Ordering::Relaxed);
        if keep_latency {
            self.latencies_ms
                .lock()
                .unwrap()
                .push(took.as_secs_f64() * 1e3);
        }
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.latencies_ms.lock().unwrap().clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

async fn get(client: &reqwest::Client, url: &str, key: &str) -> u16 {
    match client
        .get(url)
        .header("X-COUPA-API-KEY", key)
        .timeout(Duration::from_secs(60))
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// `n` loops sending back to back with `key` to the `urls` in turn, until `stop`.
fn greedy(
    urls: Vec<String>,
    key: &'static str,
    n: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let (urls, stop, tally) = (urls.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut j = i;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let status = get(&client, &urls[j % urls.len()], key).await;
                    tally.record(status, started.elapsed(), false);
                    j += 1;
                    if status != 200 {
                        // A rejected caller backs off a little, as a real client would.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect()
}

/// One request every 500 ms with `key`, latency kept, until `stop`.
fn polite(
    url: String,
    key: &'static str,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let started = Instant::now();
            let status = get(&client, &url, key).await;
            tally.record(status, started.elapsed(), true);
        }
    })
}

struct Outcome {
    label: String,
    coupa_per_s: f64,
    coupa_429: u64,
    polite_p50: f64,
    polite_p99: f64,
    polite_refused: u64,
    greedy_share: f64,
    fairness: Option<f64>,
}

/// Scenario 1 or 3 or 4/5: greedy + two polite through `urls` (greedy spread over them).
async fn mixed(
    label: &str,
    mock: &MockCoupa,
    urls: Vec<String>,
    secs: u64,
    midway: Option<Action>,
    tail: Option<Action>,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Arc::new(Tally::default());
    let p = Arc::new(Tally::default());
    // The greedy load runs 3 s before the window opens: the opening burst is spent and the
    // queues are full, so the window sees the sustained rate.
    let mut tasks = greedy(urls.clone(), GREEDY, 64, stop.clone(), warm.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = mock.stats();
    let started = Instant::now();
    let warm_ok = warm.ok.load(Ordering::Relaxed);
    for (i, key) in POLITE.iter().enumerate() {
        tasks.push(polite(
            urls[i % urls.len()].clone(),
            key,
            stop.clone(),
            p.clone(),
        ));
    }
    let third = Duration::from_secs(secs) / 3;
    tokio::time::sleep(third).await;
    if let Some(f) = midway {
        f();
    }
    tokio::time::sleep(third).await;
    if let Some(f) = tail {
        f();
    }
    tokio::time::sleep(third).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let after = mock.stats();
    for t in tasks {
        t.abort();
    }
    let served =
        (after.api_requests - after.rate_limited) - (before.api_requests - before.rate_limited);
    let (gok, pok) = (
        (warm.ok.load(Ordering::Relaxed) - warm_ok) as f64,
        p.ok.load(Ordering::Relaxed) as f64,
    );
    Outcome {
        label: label.to_owned(),
        coupa_per_s: served as f64 / elapsed,
        coupa_429: after.rate_limited - before.rate_limited,
        polite_p50: p.percentile(0.5),
        polite_p99: p.percentile(0.99),
        polite_refused: p.limited.load(Ordering::Relaxed) + p.other.load(Ordering::Relaxed),
        greedy_share: gok / (gok + pok).max(1.0),
        fairness: None,
    }
}

/// Scenario 2: two equal greedy integrations on one gateway.
async fn two_greedy(mock: &MockCoupa, url: String, secs: u64) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let (a, b) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let mut tasks = greedy(vec![url.clone()], GREEDY, 32, stop.clone(), a.clone());
    tasks.extend(greedy(vec![url], GREEDY_2, 32, stop.clone(), b.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = mock.stats();
    let (a0, b0) = (a.ok.load(Ordering::Relaxed), b.ok.load(Ordering::Relaxed));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let after = mock.stats();
    for t in tasks {
        t.abort();
    }
    let (x, y) = (
        (a.ok.load(Ordering::Relaxed) - a0) as f64,
        (b.ok.load(Ordering::Relaxed) - b0) as f64,
    );
    let served =
        (after.api_requests - after.rate_limited) - (before.api_requests - before.rate_limited);
    Outcome {
        label: "two equal greedy integrations (32 in flight each), one gateway".into(),
        coupa_per_s: served as f64 / elapsed,
        coupa_429: after.rate_limited - before.rate_limited,
        polite_p50: f64::NAN,
        polite_p99: f64::NAN,
        polite_refused: 0,
        greedy_share: x / (x + y).max(1.0),
        fairness: Some((x + y).powi(2) / (2.0 * (x * x + y * y)).max(1.0)),
    }
}

fn nginx(mock: &MockCoupa, dir: &Path) -> Option<(Proc, String)> {
    let bin = on_path("nginx")?;
    let port = free_port();
    let upstream = mock.url().trim_start_matches("http://").to_owned();
    let d = dir.display();
    let conf = format!(
        r#"worker_processes 1;
daemon off;
# One process: killing it (the bench's Proc does, on drop) leaves no orphaned worker.
master_process off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    limit_req_zone $server_name zone=coupa:1m rate=25r/s;
    limit_req_status 429;
    upstream coupa {{ server {upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        # limit_req_zone's key: one budget for the instance (an empty key is not limited).
        server_name coupa;
        location /prod/ {{
            limit_req zone=coupa burst=20;
            proxy_pass http://coupa/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-COUPA-API-KEY "{DEMO_API_KEY}";
        }}
    }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).ok()?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    Some((
        Proc(child),
        format!("http://127.0.0.1:{port}/prod/api/suppliers/1"),
    ))
}

fn redis(dir: &Path, port: u16) -> Option<Proc> {
    let bin = on_path("redis-server")?;
    let child = Command::new(bin)
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    Some(Proc(child))
}

fn url(gw: &Gateway) -> String {
    format!("http://{}/prod/api/suppliers/1", gw.addr())
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.0}")
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The load clients are reqwest's (rustls, no provider of its own): ring, as the gateway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: u64 = std::env::var("BUDGET_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .clamp(3, 600);
    let dir = std::env::temp_dir().join(format!("coupa-budget-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let mut out = Vec::new();

    let mock = coupa().await;
    let gw = gateway(&mock, "").await;
    out.push(
        mixed(
            "gateway: greedy (64 in flight) + 2 polite (2 req/s each)",
            &mock,
            vec![url(&gw)],
            secs,
            None,
            None,
        )
        .await,
    );
    gw.shutdown();

    let mock = coupa().await;
    let gw = gateway(&mock, "").await;
    out.push(two_greedy(&mock, url(&gw), secs).await);
    gw.shutdown();

    let mock = coupa().await;
    match nginx(&mock, &dir) {
        Some((_proc, nginx_url)) => out.push(
            mixed(
                "nginx limit_req rate=25r/s burst=20: same load",
                &mock,
                vec![nginx_url],
                secs,
                None,
                None,
            )
            .await,
        ),
        None => eprintln!("nginx not on PATH: its scenario is skipped"),
    }

    let port = free_port();
    if let Some(server) = redis(&dir, port) {
        let server = Arc::new(Mutex::new(Some(server)));
        let state = format!("[state]\nredis = \"redis://127.0.0.1:{port}/0\"\nreplicas = 3\n");
        for killed in [false, true] {
            let mock = coupa().await;
            let gws = [
                gateway(&mock, &state).await,
                gateway(&mock, &state).await,
                gateway(&mock, &state).await,
            ];
            let urls: Vec<String> = gws.iter().map(url).collect();
            let (kill, restart): (Option<Action>, Option<Action>) = if killed {
                let (s1, s2, d) = (server.clone(), server.clone(), dir.clone());
                (
                    Some(Box::new(move || drop(s1.lock().unwrap().take()))),
                    Some(Box::new(move || *s2.lock().unwrap() = redis(&d, port))),
                )
            } else {
                (None, None)
            };
            let label = if killed {
                "3 gateways sharing Redis, Redis killed for the middle third"
            } else {
                "3 gateways sharing Redis, greedy load spread over them"
            };
            out.push(mixed(label, &mock, urls, secs, kill, restart).await);
            for gw in gws {
                gw.shutdown();
            }
        }
    } else {
        eprintln!("redis-server not installed: the fleet scenarios are skipped");
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\nBudget bench: {secs} s per scenario; mock Coupa enforcing 25 requests/s, burst 20.\n"
    );
    println!("| scenario | Coupa served/s (of 25) | Coupa 429s | polite p50 ms | polite p99 ms | polite refused | greedy share | Jain's index |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for o in &out {
        println!(
            "| {} | {:.1} ({:.0} %) | {} | {} | {} | {} | {:.3} | {} |",
            o.label,
            o.coupa_per_s,
            100.0 * o.coupa_per_s / COUPA_RATE,
            o.coupa_429,
            ms(o.polite_p50),
            ms(o.polite_p99),
            o.polite_refused,
            o.greedy_share,
            o.fairness.map_or("–".into(), |f| format!("{f:.3}")),
        );
    }
}
