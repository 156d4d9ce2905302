//! Per-request transforms of the gateway's hot path, one criterion group each, in ns/op.
//!
//! `cargo bench --bench micro` (add `-- --quick` for a fast pass). Results and the machine they
//! were measured on are in `benches/RESULTS.md`.
//!
//! Each group first prints `allocations/op` measured with a counting allocator (which adds one
//! relaxed atomic per allocation). What allocates (per call, on the measured path):
//! - `route_lookup`: nothing (a scan of a sorted `Vec`, borrowing the path).
//! - `rewrite_request` (`headers::request_headers`): two, the new `HeaderMap` sized for the
//!   result (its index table and its entries); the values themselves are static `HeaderName`s
//!   and `Bytes`-backed `HeaderValue` clones. A caller's own `X-Forwarded-For` adds a `Vec` and
//!   a `HeaderValue` (the joined list); a `Connection` header naming custom headers adds a
//!   `Vec<HeaderName>` and a name per token (`keep-alive`/`close` cost nothing). The setup (a
//!   head parsed the way hyper does it) and the drops are outside the timing
//!   (`iter_batched_ref`).
//!   The response side (`remove_hop_by_hop`) allocates nothing.
//! - `token_bearer`: nothing (an `ArcSwap` load and a refcount bump on the `Bytes` behind the
//!   prebuilt `Bearer …` value).
//! - `path_check`: nothing.
//! - `scope_needed`: nothing (the path is split into a stack array).
//! - `identify`: nothing (SHA-256 on the stack, 20 constant-time compares).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use coupa_gateway::config::{self, Config};
use coupa_gateway::migration::identity::{self, Caller, Integration};
use coupa_gateway::migration::scopes::ScopeTable;
use coupa_gateway::migration::Tracker;
use coupa_gateway::proxy::{headers, path};
use coupa_gateway::runtime::route_table::RouteTable;
use coupa_gateway::token::TokenCell;
use coupa_mock::{MockConfig, MockCoupa};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use sha2::{Digest, Sha256};

/// Counts heap allocations (and reallocations), so each group can print how many one call
/// makes. The count is one relaxed atomic add per allocation: noise next to the allocation.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Prints the allocations one call of `op` makes (averaged over 1000 calls; `setup` is not
/// counted).
fn report_allocations<S, T>(name: &str, mut setup: impl FnMut() -> S, mut op: impl FnMut(S) -> T) {
    const CALLS: u64 = 1000;
    let mut counted = 0;
    for _ in 0..CALLS {
        let input = setup();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let out = black_box(op(black_box(input)));
        counted += ALLOCATIONS.load(Ordering::Relaxed) - before;
        drop(out);
    }
    println!("allocations/op  {name}: {}", counted as f64 / CALLS as f64);
}

/// The request head as hyper hands it over: parsed into a map reserved for the parsed count.
fn as_parsed(h: &HeaderMap) -> HeaderMap {
    let mut parsed = HeaderMap::new();
    parsed.reserve(h.len());
    parsed.extend(h.clone());
    parsed
}

fn route_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [10usize, 200] {
        let table = RouteTable::new((0..n).map(|i| (format!("/instance{i:03}"), i)));
        // A route in the middle of the scan, and a path no route matches (full scan).
        let hit = format!("/instance{:03}/api/invoices", n / 2);
        report_allocations(
            &format!("route_lookup/{n}_routes_hit"),
            || (),
            |()| table.find(&hit).map(|m| *m.route),
        );
        g.bench_function(format!("{n}_routes_hit"), |b| {
            b.iter(|| black_box(table.find(black_box(&hit)).map(|m| *m.route)))
        });
        g.bench_function(format!("{n}_routes_miss"), |b| {
            b.iter(|| black_box(table.find(black_box("/nowhere/api/invoices")).is_none()))
        });
    }
    g.finish();
}

/// The head an integration typically sends: what curl/Java/.NET clients put on a GET.
fn integration_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::HOST,
        HeaderValue::from_static("gateway.internal:8080"),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static("erp-supplier-sync/4.2 (Java/17)"),
    );
    h.insert(
        "x-coupa-api-key",
        HeaderValue::from_static("0123456789abcdef0123456789abcdef01234567"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    h
}

/// A response head as Coupa (or the bench upstream) sends it.
fn coupa_response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1099"));
    h.insert(
        header::DATE,
        HeaderValue::from_static("Thu, 27 Nov 2026 20:00:00 GMT"),
    );
    h.insert(
        "x-request-id",
        HeaderValue::from_static("4f1c2a9e-0000000000000001"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h
}

fn rewrite_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("rewrite_request");
    let host = HeaderValue::from_static("acme.coupahost.com");
    let mut bearer = HeaderValue::from_static(
        "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkZW1vIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
    );
    bearer.set_sensitive(true);
    let peer = HeaderValue::from_static("10.20.30.40");
    let proto = HeaderValue::from_static("http");
    let request_id = HeaderValue::from_static("4f1c2a9e-0000000000000001");
    let outbound = headers::Outbound {
        host: &host,
        bearer: Some(&bearer),
        peer_ip: &peer,
        proto: &proto,
        request_id: &request_id,
        proxy_authorization: None,
    };
    // The caller's head is borrowed (it is also the copy a 401 replay is rebuilt from); the
    // measured work is building Coupa's head from it.
    let rewrite = |h: &HeaderMap| headers::request_headers(h, outbound);
    // As Java and .NET clients send it: `Connection: keep-alive`.
    let keep_alive = integration_headers();
    // As curl and hyper clients send it: no hop-by-hop header at all.
    let mut plain = integration_headers();
    plain.remove(header::CONNECTION);
    let mut forwarded = plain.clone();
    forwarded.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.7"));
    for (name, head) in [
        ("oauth_connection_keep_alive", &keep_alive),
        ("oauth_no_hop_by_hop", &plain),
        ("oauth_with_x_forwarded_for", &forwarded),
    ] {
        report_allocations(
            &format!("rewrite_request/{name}"),
            || as_parsed(head),
            |h| rewrite(&h),
        );
        g.bench_function(name, |b| {
            b.iter_batched_ref(|| as_parsed(head), |h| rewrite(h), BatchSize::SmallInput)
        });
    }
    // The response side: every Coupa response head passes through this.
    let response = coupa_response_headers();
    let strip = |mut h: HeaderMap| {
        headers::remove_hop_by_hop(&mut h);
        h
    };
    report_allocations(
        "rewrite_request/response_remove_hop_by_hop",
        || as_parsed(&response),
        strip,
    );
    g.bench_function("response_remove_hop_by_hop", |b| {
        b.iter_batched(|| as_parsed(&response), strip, BatchSize::SmallInput)
    });
    g.finish();
}

/// A token cell holding a token minted by the in-process mock (`TokenCell::prime`, the only
/// public way to publish one).
fn token_bearer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cell = rt.block_on(async {
        let mock = MockCoupa::start(
            MockConfig::new("prod")
                .listen("127.0.0.1:0".parse().expect("address"))
                .client("bench-client", "bench-secret", &["core.invoice.read"]),
        )
        .await
        .expect("mock starts");
        let toml = format!(
            r#"
[instances.prod]
url = "{url}"
[clients.bench]
instance = "prod"
client_id = "bench-client"
client_secret = "bench-secret"
scopes = ["core.invoice.read"]
[[routes]]
prefix = "/prod"
instance = "prod"
"#,
            url = mock.url()
        );
        let cfg = Config::parse(&toml, &|_| None, Path::new(".")).expect("bench config");
        let cell = TokenCell::new(&cfg.clients["bench"], &cfg.instances["prod"]);
        let tls = coupa_gateway::net::tls::client_config(None).expect("system roots load");
        let http = coupa_gateway::token::http_client(
            tls,
            &coupa_gateway::net::egress::ProxyRules::direct(),
        )
        .expect("token client builds");
        cell.prime(&http).await.expect("token minted");
        mock.shutdown().await;
        cell
    });
    let mut g = c.benchmark_group("token_bearer");
    let now = Instant::now();
    report_allocations("token_bearer/load", || (), |()| cell.bearer(now).is_ok());
    g.bench_function("load", |b| {
        b.iter(|| black_box(cell.bearer(black_box(now)).is_ok()))
    });
    // What the request path really pays, clock read included.
    g.bench_function("load_with_instant_now", |b| {
        b.iter(|| black_box(cell.bearer(Instant::now()).is_ok()))
    });
    g.finish();
}

fn path_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("path_check");
    report_allocations(
        "path_check/plain",
        || (),
        |()| path::check("/prod/api/invoices/12345/line_items"),
    );
    g.bench_function("plain", |b| {
        b.iter(|| {
            black_box(path::check(black_box(
                "/prod/api/invoices/12345/line_items",
            )))
        })
    });
    g.bench_function("percent_encoded", |b| {
        b.iter(|| {
            black_box(path::check(black_box(
                "/prod/api/lookup_values/Cost%20Center%20A%2FB%2dC",
            )))
        })
    });
    g.finish();
}

fn scope_needed(c: &mut Criterion) {
    let table = ScopeTable::builtin();
    let mut g = c.benchmark_group("scope_needed");
    report_allocations(
        "scope_needed/get_invoice",
        || (),
        |()| table.needed(&Method::GET, "/api/invoices/12345").is_some(),
    );
    g.bench_function("get_invoice", |b| {
        b.iter(|| {
            black_box(
                table
                    .needed(black_box(&Method::GET), black_box("/api/invoices/12345"))
                    .is_some(),
            )
        })
    });
    g.bench_function("put_supplier_action", |b| {
        b.iter(|| {
            black_box(
                table
                    .needed(
                        black_box(&Method::PUT),
                        black_box("/api/purchase_orders/77/issue_without_send"),
                    )
                    .is_some(),
            )
        })
    });
    g.finish();
}

fn identify(c: &mut Criterion) {
    let tracker = Tracker::default();
    let routes: Vec<config::Route> = Vec::new();
    let integrations: Vec<Integration> = (0..20)
        .map(|i| {
            let g = config::Integration {
                name: format!("integration-{i:02}"),
                key_sha256: Some(Sha256::digest(format!("legacy-key-{i:02}")).into()),
                allow_ips: Vec::new(),
                routes: Vec::new(),
                weight: 1,
            };
            Integration::new(&g, &routes, tracker.integration(&g.name))
        })
        .collect();
    let peer: IpAddr = "10.20.30.40".parse().expect("address");
    let known = Some(&HeaderValue::from_static("legacy-key-13"));
    let unknown = Some(&HeaderValue::from_static("not-a-known-key"));
    assert!(matches!(
        identity::identify(&integrations, known, peer),
        Caller::Known(_)
    ));
    let mut g = c.benchmark_group("identify");
    report_allocations(
        "identify/key_20_integrations",
        || (),
        |()| {
            matches!(
                identity::identify(&integrations, known, peer),
                Caller::Known(_)
            )
        },
    );
    g.bench_function("key_20_integrations", |b| {
        b.iter(|| {
            black_box(matches!(
                identity::identify(black_box(&integrations), black_box(known), peer),
                Caller::Known(_)
            ))
        })
    });
    g.bench_function("unknown_key_20_integrations", |b| {
        b.iter(|| {
            black_box(matches!(
                identity::identify(black_box(&integrations), black_box(unknown), peer),
                Caller::UnknownKey(_)
            ))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    route_lookup,
    rewrite_request,
    token_bearer,
    path_check,
    scope_needed,
    identify
);
criterion_main!(benches);
