//! Token lifecycle seen from outside: background refresh, startup without a token endpoint,
//! readiness, `/status` and `/metrics`.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;

#[tokio::test]
async fn tokens_refresh_in_the_background_without_failing_a_request() {
    // 6 s tokens: the gateway re-mints at ~5 s and stops sending a token at 5.4 s, so over 13 s
    // at least two refreshes happen while requests keep flowing.
    let prod = mock_with(mock_config("prod").expires_in(6)).await;
    let test = mock("test").await;
    let gw =
        ready_gateway(&GatewayToml::two_instances(&prod.url(), &test.url()).token_warmup("100ms"))
            .await;

    let url = proxy_url(&gw, "/prod/api/suppliers?limit=1");
    let ok = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (url, ok) = (url.clone(), ok.clone());
        workers.push(tokio::spawn(async move {
            let http = Http::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(13);
            while tokio::time::Instant::now() < deadline {
                let r = http.get(&url, &[("accept", "application/json")]).await;
                assert_eq!(
                    r.status,
                    StatusCode::OK,
                    "request failed across a refresh: {}",
                    r.text()
                );
                ok.fetch_add(1, Ordering::Relaxed);
                // ~60 req/s in all: the mock keeps the last 1000 requests, enough for the whole run.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    assert!(ok.load(Ordering::Relaxed) > 100);
    assert!(
        prod.stats().tokens_issued >= 3,
        "tokens issued: {}",
        prod.stats().tokens_issued
    );
    let bearers: HashSet<String> = prod
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert!(
        bearers.len() >= 3,
        "requests used {} distinct tokens",
        bearers.len()
    );
}

#[tokio::test]
async fn token_endpoint_down_at_start_gives_503_then_recovers_by_itself() {
    let prod = mock("prod").await;
    let test = mock("test").await;
    prod.faults()
        .fail_token_with(Some((503, "temporarily_unavailable")));
    let gw = gateway(&GatewayToml::two_instances(&prod.url(), &test.url())).await;
    let http = Http::new();
    let admin = |p: &str| admin_url(&gw, p);

    assert!(eventually(Duration::from_secs(5), || prod.stats().token_requests >= 1).await);
    let r = http.get(&admin("/readyz"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json()["waiting_for_token"],
        serde_json::json!(["prod-main"])
    );
    let r = http.get(&admin("/healthz"), &[]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "liveness does not depend on tokens"
    );

    let r = http.get(&proxy_url(&gw, "/prod/api/invoices"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=301).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.json()["error"], "token_unavailable");
    assert_eq!(
        prod.stats().api_requests,
        0,
        "a request went to Coupa without a token"
    );
    // The other instance's route is unaffected.
    let r = http.get(&proxy_url(&gw, "/test/api/invoices/1"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);

    let status = http.get(&admin("/status"), &[]).await.json();
    let client = status_client(&status, "prod-main");
    assert_eq!(client["token"], serde_json::Value::Null);
    assert!(client["consecutive_failures"].as_u64().unwrap() >= 1);
    assert!(client["last_error"]["message"]
        .as_str()
        .unwrap()
        .contains("temporarily_unavailable"));

    prod.faults().fail_token_with(None);
    assert!(
        gw.wait_ready(Duration::from_secs(10)).await,
        "did not recover without a restart"
    );
    let r = http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = http.get(&admin("/readyz"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let status = http.get(&admin("/status"), &[]).await.json();
    let client = status_client(&status, "prod-main");
    assert_eq!(client["last_error"], serde_json::Value::Null);
    assert_eq!(client["token"]["valid"], true);
}

#[tokio::test]
async fn wrong_secret_is_reported_with_a_hint_and_never_echoed() {
    let prod = mock("prod").await;
    let test = mock("test").await;
    let gw = gateway(
        &GatewayToml::two_instances(&prod.url(), &test.url())
            .map_client("prod-main", |c| c.secret("wrong-secret-value")),
    )
    .await;
    let http = Http::new();
    let admin = admin_url(&gw, "/status");
    assert!(eventually(Duration::from_secs(5), || prod.stats().token_requests >= 1).await);
    let mut client = serde_json::Value::Null;
    for _ in 0..100 {
        let status = http.get(&admin, &[]).await.json();
        client = status_client(&status, "prod-main");
        if !client["last_error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client["last_error"]["kind"], "invalid_client");
    assert!(client["last_error"]["hint"]
        .as_str()
        .unwrap()
        .contains("client_secret"));
    let body = http.get(&admin, &[]).await.text();
    assert!(!body.contains("wrong-secret-value"));
    assert!(!body.contains(TEST_SECRET));
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_expiry() {
    let env = Env::start().await;
    for _ in 0..3 {
        env.http.get(&env.url("/prod/api/invoices/1"), &[]).await;
    }
    env.http.get(&env.url("/nowhere"), &[]).await;
    let r = env.http.get(&env.admin("/metrics"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let m = r.text();
    assert!(
        m.contains("coupa_gateway_requests_total{route=\"/prod\",class=\"2xx\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("coupa_gateway_requests_total{route=\"\",class=\"4xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("coupa_gateway_upstream_latency_seconds_count{route=\"/prod\"} 3"),
        "{m}"
    );
    assert!(
        m.contains(
            "coupa_gateway_token_refreshes_total{client=\"prod-main\",result=\"success\"} 1"
        ),
        "{m}"
    );
    assert!(m.contains("coupa_gateway_ready 1"), "{m}");
    let expiry: f64 = m
        .lines()
        .find(|l| l.starts_with("coupa_gateway_token_expiry_seconds{client=\"prod-main\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(expiry > 80_000.0, "a fresh 24 h token: {expiry}");
}
