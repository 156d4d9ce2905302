//! OAuth readiness before the flip: passthrough GETs sampled and sent again with the route's
//! client's token, their statuses compared, and the caller never the wiser.

mod common;

use std::time::{Duration, Instant};

use common::*;
use coupa_gateway::net::server::Gateway;
use coupa_mock::{MockCoupa, DEMO_API_KEY};
use http::{Method, StatusCode};
use serde_json::Value;

/// `/prod` in passthrough mode for the demo key's integration, sampling `sample` of its reads.
fn gateway_toml(prod: &MockCoupa, sample: f64, scopes: &[&str], rate: Option<&str>) -> GatewayToml {
    let mut t = GatewayToml::new()
        .instance("prod", &prod.url())
        .client(ClientToml::prod().scopes(scopes))
        .route(RouteToml::prod().mode("passthrough").shadow_sample(sample))
        .integration(
            IntegrationToml::new("erp")
                .key(DEMO_API_KEY)
                .routes(&["/prod"]),
        );
    if let Some(rate) = rate {
        t = t.map_instance("prod", |i| i.rate_limit(rate));
    }
    t
}

async fn send(gw: &Gateway, method: Method, path: &str) -> Reply {
    Http::new()
        .request(
            method,
            &proxy_url(gw, path),
            &[
                ("X-COUPA-API-KEY", DEMO_API_KEY),
                ("Accept", "application/json"),
            ],
            bytes::Bytes::new(),
        )
        .await
}

fn route_shadow(status: &Value) -> Value {
    let erp = status["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "erp")
        .unwrap();
    erp["routes"][0]["shadow"].clone()
}

async fn shadow_when(gw: &Gateway, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = route_shadow(&status(gw).await);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_sampled_read_reaches_coupa_twice_and_writes_once() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&gateway_toml(
        &prod,
        1.0,
        &[
            "core.supplier.read",
            "core.invoice.read",
            "core.invoice.write",
        ],
        None,
    ))
    .await;
    let direct = Http::new()
        .get(
            &format!("{}/api/suppliers/1", prod.url()),
            &[
                ("X-COUPA-API-KEY", DEMO_API_KEY),
                ("Accept", "application/json"),
            ],
        )
        .await;
    let r = send(&gw, Method::GET, "/prod/api/suppliers/1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body, direct.body,
        "the caller gets the passthrough answer byte for byte"
    );
    send(&gw, Method::POST, "/prod/api/invoices").await;
    send(&gw, Method::DELETE, "/prod/api/invoices/1").await;
    let s = shadow_when(&gw, |s| s["sent"] == 1).await;
    assert_eq!(s["same"], 1, "{s:#}");
    let recorded = prod.requests();
    let to = |m: &Method, p: &str| {
        recorded
            .iter()
            .filter(|r| r.method == *m && r.target == p)
            .collect::<Vec<_>>()
    };
    let gets = to(&Method::GET, "/api/suppliers/1");
    // The direct request above, the caller's passthrough and the shadow.
    assert_eq!(gets.len(), 3);
    let shadow = gets
        .iter()
        .find(|r| r.header("authorization").is_some())
        .expect("a shadow with the token");
    assert!(
        shadow.header("x-coupa-api-key").is_none(),
        "no key with the token"
    );
    assert!(shadow
        .header("user-agent")
        .unwrap()
        .contains("coupa-gateway-shadow"));
    assert!(shadow.header("x-request-id").unwrap().ends_with("-shadow"));
    assert_eq!(shadow.header("accept"), Some("application/json"));
    let passthrough: Vec<_> = gets
        .iter()
        .filter(|r| r.header("authorization").is_none())
        .collect();
    assert!(passthrough
        .iter()
        .all(|r| r.header("x-coupa-api-key") == Some(DEMO_API_KEY)));
    assert_eq!(
        to(&Method::POST, "/api/invoices").len(),
        1,
        "writes are never shadowed"
    );
    assert_eq!(to(&Method::DELETE, "/api/invoices/1").len(), 1);
}

#[tokio::test]
async fn a_client_lacking_a_scope_shows_200_then_403_with_the_scope_named() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&gateway_toml(&prod, 1.0, &["core.invoice.read"], None)).await;
    for _ in 0..3 {
        let r = send(
            &gw,
            Method::GET,
            "/prod/api/suppliers/1?fields=%5B%22id%22%5D",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "the caller is served by its key");
    }
    let s = shadow_when(&gw, |s| s["sent"] == 3).await;
    assert_eq!(s["different"]["200 -> 403"], 3, "{s:#}");
    let d = &s["recent_differences"][0];
    assert_eq!(d["path"], "/prod/api/suppliers/1?fields");
    assert_eq!(d["scope"], "core.supplier.read");
    assert!(
        d["error"].as_str().unwrap().contains("core.supplier.read"),
        "{d:#}"
    );
    let st = status(&gw).await;
    let erp = st["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "erp")
        .unwrap();
    let line = erp["oauth_readiness"][0].as_str().unwrap();
    assert!(
        line.contains("not ready: 3 read(s) answered 403 with the token (core.supplier.read?)"),
        "{line}"
    );
    let (code, text, err) = run(bin().args(["report", "--admin", &admin_url(&gw, "")])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("not ready") && text.contains("200 -> 403"),
        "{text}"
    );
    let m = metrics(&gw).await;
    assert!(
        m.contains(
            r#"coupa_gateway_shadow_total{integration="erp",route="/prod",outcome="different"} 3"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn a_busy_budget_drops_shadows_and_never_delays_a_real_request() {
    let prod = mock("prod").await;
    // Two turns a second, burst 1: the callers' own requests use them all.
    let gw = ready_gateway(&gateway_toml(
        &prod,
        1.0,
        &["core.supplier.read"],
        Some("{ per_second = 2, burst = 1, max_queue_wait = \"10s\" }"),
    ))
    .await;
    let started = Instant::now();
    for _ in 0..4 {
        assert_eq!(
            send(&gw, Method::GET, "/prod/api/suppliers/1").await.status,
            StatusCode::OK
        );
    }
    // Four requests at 2/s after a burst of 1: 1.5 s, shadows or not.
    let took = started.elapsed();
    // Were shadows spending turns, 4 requests plus up to 3 shadows would take 3 s.
    assert!(took < Duration::from_millis(2700), "{took:?}");
    let s = shadow_when(&gw, |s| {
        s["sent"].as_u64().unwrap() + s["dropped"].as_u64().unwrap() == 4
    })
    .await;
    assert!(s["dropped"].as_u64().unwrap() >= 3, "{s:#}");
}

#[tokio::test]
async fn a_sample_of_a_tenth_sends_about_a_tenth() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&gateway_toml(&prod, 0.1, &["core.supplier.read"], None)).await;
    for _ in 0..300 {
        send(&gw, Method::GET, "/prod/api/suppliers/1").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = route_shadow(&status(&gw).await);
    let n = s["sent"].as_u64().unwrap()
        + s["dropped"].as_u64().unwrap()
        + s["failed"].as_u64().unwrap();
    // Binomial(300, 0.1): mean 30, standard deviation 5.2; 10..=55 is beyond 3.8 sigma.
    assert!((10..=55).contains(&n), "{n} shadows of 300");
}

#[tokio::test]
async fn a_token_refused_on_the_shadow_path_is_replaced_and_nothing_is_replayed() {
    let prod = mock("prod").await;
    let gw =
        ready_gateway(&gateway_toml(&prod, 1.0, &["core.supplier.read"], None).token_warmup("0s"))
            .await;
    let minted = prod.stats().tokens_issued;
    prod.faults().revoke_all_tokens();
    let r = send(&gw, Method::GET, "/prod/api/suppliers/1").await;
    assert_eq!(r.status, StatusCode::OK, "the caller is served by its key");
    let s = shadow_when(&gw, |s| s["sent"] == 1).await;
    assert_eq!(s["different"]["200 -> 401"], 1, "{s:#}");
    // The usual recovery: the rejected token is replaced...
    let deadline = Instant::now() + Duration::from_secs(10);
    while prod.stats().tokens_issued == minted {
        assert!(
            Instant::now() < deadline,
            "the refused token was never replaced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and no request is sent a third time: one passthrough, one shadow.
    let gets = prod
        .requests()
        .iter()
        .filter(|r| r.target == "/api/suppliers/1")
        .count();
    assert_eq!(gets, 2);
}
