//! Coupa's rate budget spent fairly (a polite integration is not starved by a greedy one) and,
//! with `[state] redis`, shared by replicas: together they never exceed the instance's rate, a
//! Coupa 429 on one pauses the other, and with Redis killed each spends its share alone until
//! Redis is back. Replicas are two gateways in this process sharing a real `redis-server`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use coupa_gateway::net::server::Gateway;
use coupa_mock::{demo_instance, MockRateLimit};
use http::StatusCode;

const GREEDY_KEY: &str = "greedy-bulk-sync-key-0000000000000001";
const POLITE_KEY: &str = "polite-ap-export-key-0000000000000002";

fn toml(prod: &coupa_mock::MockCoupa, rate: &str, state: Option<&str>) -> GatewayToml {
    let mut t = GatewayToml::prod(&prod.url())
        .map_instance("prod", |i| i.rate_limit(rate))
        .integration(
            IntegrationToml::new("bulk")
                .key(GREEDY_KEY)
                .routes(&["/prod"]),
        )
        .integration(
            IntegrationToml::new("ap")
                .key(POLITE_KEY)
                .routes(&["/prod"]),
        );
    if let Some(state) = state {
        t = t.table(&format!("[state]\n{state}"));
    }
    t
}

/// `n` concurrent requests through `gw` with `key`; their statuses.
async fn burst(gw: &Gateway, key: &'static str, n: usize) -> Vec<StatusCode> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = proxy_url(gw, "/prod/api/suppliers/1");
            tokio::spawn(async move {
                Http::new()
                    .get(&url, &[("X-COUPA-API-KEY", key)])
                    .await
                    .status
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn all_ok(statuses: &[StatusCode]) -> bool {
    statuses.iter().all(|s| *s == StatusCode::OK)
}

fn limited_mock() -> coupa_mock::MockConfig {
    // Coupa's bucket: 24/s, burst 4. The gateways' shared budget: 20/s, burst 2.
    demo_instance("prod", "127.0.0.1:0".parse().unwrap())
        .rate_limit(Some(MockRateLimit::new(24.0, 4)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polite_integration_is_served_ahead_of_a_greedy_backlog() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&toml(
        &prod,
        "{ per_second = 10, burst = 1, max_queue_wait = \"30s\" }",
        None,
    ))
    .await;
    // The greedy backlog (20 requests at 10/s: two seconds) is queued; then the polite one.
    let polite = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let r = Http::new()
            .get(
                &proxy_url(&gw, "/prod/api/suppliers/1"),
                &[("X-COUPA-API-KEY", POLITE_KEY)],
            )
            .await;
        (r.status, started.elapsed())
    };
    let (greedy, (polite_status, waited)) = tokio::join!(burst(&gw, GREEDY_KEY, 20), polite);
    assert_eq!(polite_status, StatusCode::OK);
    assert!(
        waited < Duration::from_millis(1000),
        "the polite request waited {waited:?} behind a backlog it did not create"
    );
    assert!(all_ok(&greedy));
    let s = status(&gw).await;
    let budget = &s["instances"][0]["budget"];
    assert_eq!(budget["scope"], "local");
    let classes = budget["integrations"].as_array().unwrap();
    assert!(
        classes.iter().any(|c| c["integration"] == "bulk"),
        "{budget:#}"
    );
    let m = metrics(&gw).await;
    assert!(
        m.contains(
            r#"coupa_gateway_rate_limit_wait_seconds_count{instance="prod",integration="bulk"}"#
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_never_exceed_the_instance_budget_together() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let rate = "{ per_second = 20, burst = 2, max_queue_wait = \"20s\" }";
    let prod = mock_with(limited_mock()).await;
    let shared = format!("redis = \"{}\"\nreplicas = 2", redis.url());
    let cfg = toml(&prod, rate, Some(&shared));
    let (a, b) = tokio::join!(ready_gateway(&cfg), ready_gateway(&cfg));
    let started = Instant::now();
    let (ra, rb) = tokio::join!(burst(&a, GREEDY_KEY, 30), burst(&b, POLITE_KEY, 30));
    assert!(all_ok(&ra) && all_ok(&rb), "{ra:?} {rb:?}");
    assert_eq!(prod.stats().rate_limited, 0, "Coupa answered 429");
    // 58 requests beyond the burst at 20/s together: no sooner than 2.9 s.
    assert!(
        started.elapsed() >= Duration::from_millis(2800),
        "{:?}",
        started.elapsed()
    );
    let s = status(&a).await;
    assert_eq!(s["instances"][0]["budget"]["scope"], "fleet", "{s:#}");
    assert!(metrics(&b)
        .await
        .contains(r#"coupa_gateway_rate_limit_shared{instance="prod"} 1"#));

    // Each replica on its own budget (no Redis): together twice the rate, and Coupa says so.
    let prod = mock_with(limited_mock()).await;
    let cfg = toml(&prod, rate, None);
    let (a, b) = tokio::join!(ready_gateway(&cfg), ready_gateway(&cfg));
    let (ra, rb) = tokio::join!(burst(&a, GREEDY_KEY, 30), burst(&b, POLITE_KEY, 30));
    assert!(
        ra.contains(&StatusCode::TOO_MANY_REQUESTS) || rb.contains(&StatusCode::TOO_MANY_REQUESTS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coupa_429_on_one_replica_pauses_the_other() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let prod = mock("prod").await;
    let shared = format!("redis = \"{}\"\nreplicas = 2", redis.url());
    let cfg = toml(
        &prod,
        "{ per_second = 20, burst = 5, max_queue_wait = \"20s\" }",
        Some(&shared),
    );
    let (a, b) = tokio::join!(ready_gateway(&cfg), ready_gateway(&cfg));
    prod.faults().set_retry_after(Some(2));
    prod.faults().fail_api_with(Some(429));
    let r = Http::new()
        .get(
            &proxy_url(&a, "/prod/api/suppliers/1"),
            &[("X-COUPA-API-KEY", GREEDY_KEY)],
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    prod.faults().fail_api_with(None);
    // B saw no 429 itself, yet waits for the pause A learned of.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let r = Http::new()
        .get(
            &proxy_url(&b, "/prod/api/suppliers/1"),
            &[("X-COUPA-API-KEY", POLITE_KEY)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "replica b was not paused: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_each_replica_spends_its_share_then_the_fleet_budget_resumes() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let prod = mock("prod").await;
    let shared = format!("redis = \"{}\"\nreplicas = 2", redis.url());
    let cfg = toml(
        &prod,
        "{ per_second = 20, burst = 2, max_queue_wait = \"20s\" }",
        Some(&shared),
    );
    let gw = ready_gateway(&cfg).await;
    assert!(all_ok(&burst(&gw, GREEDY_KEY, 4).await));

    redis.kill();
    // Requests keep being served, at the local share: 20/s ÷ 2 replicas, burst 1.
    let started = Instant::now();
    assert!(all_ok(&burst(&gw, GREEDY_KEY, 12).await));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1000),
        "12 requests at 10/s took {elapsed:?}: not the fallback share"
    );
    let s = status(&gw).await;
    let budget = &s["instances"][0]["budget"];
    assert_eq!(budget["scope"], "fallback", "{budget:#}");
    assert!(budget["reason"].as_str().unwrap().contains("redis"));
    let m = metrics(&gw).await;
    assert!(
        m.contains(r#"coupa_gateway_rate_limit_shared{instance="prod"} 0"#),
        "{m}"
    );
    assert!(
        m.contains(r#"coupa_gateway_rate_limit_total{instance="prod",event="fleet_fallback"} 1"#)
    );

    redis.restart().await;
    // The replica asks Redis again every few seconds; traffic brings it back to the fleet.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(all_ok(&burst(&gw, GREEDY_KEY, 2).await));
        let s = status(&gw).await;
        if s["instances"][0]["budget"]["scope"] == "fleet" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never back on the fleet budget: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let budget_key = redis.cli(&["GET", "coupa-gateway:budget:prod"]).await;
    assert!(
        !budget_key.trim().is_empty(),
        "the shared schedule is in Redis again"
    );
}
