//! Failure behaviour: 401 recovery, rate limits, token-endpoint failures, limits, graceful
//! shutdown and request-framing safety, with faults injected through the mock Coupa.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use coupa_gateway::net::server::Gateway;
use coupa_mock::demo_instance;
use coupa_mock::MockRateLimit;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_the_request_replayed() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&GatewayToml::prod(&prod.url()).token_warmup("0s")).await;
    let http = Http::new();
    assert_eq!(
        http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[])
            .await
            .status,
        StatusCode::OK
    );
    let issued = prod.stats().tokens_issued;

    prod.faults().revoke_all_tokens();
    // A burst of requests all meet the 401: one token request serves them all.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (http, u) = (http.clone(), proxy_url(&gw, "/prod/api/invoices/1"));
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                http.get(&u, &[]).await.status
            } else {
                http.request(
                    Method::PUT,
                    &u,
                    &[("content-type", "application/json")],
                    r#"{"status":"approved"}"#,
                )
                .await
                .status
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK, "a 401 reached the caller");
    }
    assert_eq!(
        prod.stats().tokens_issued,
        issued + 1,
        "single-flight: one new token for the burst"
    );
    let m = metrics(&gw).await;
    let replayed: u64 = m
        .lines()
        .find(|l| l.starts_with(r#"coupa_gateway_upstream_unauthorized_total{client="prod-main",outcome="replayed"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!((1..=12).contains(&replayed), "{m}");
}

#[tokio::test]
async fn a_replay_carries_the_same_rewritten_head_with_the_new_token() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&GatewayToml::prod(&prod.url()).token_warmup("0s")).await;
    let http = Http::new();
    let u = proxy_url(&gw, "/prod/api/invoices/1");
    assert_eq!(http.get(&u, &[]).await.status, StatusCode::OK);
    prod.faults().revoke_all_tokens();
    prod.clear_requests();
    let resp = http
        .get(
            &u,
            &[
                ("x-coupa-api-key", "legacy-key"),
                ("connection", "x-hop"),
                ("x-hop", "1"),
                ("x-forwarded-for", "10.0.0.1"),
                ("accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let seen = prod.requests();
    assert_eq!(
        seen.len(),
        2,
        "the refused attempt and the replay: {seen:?}"
    );
    let (first, replay) = (&seen[0], &seen[1]);
    assert_ne!(
        first.header("authorization"),
        replay.header("authorization"),
        "the replay carries the new token"
    );
    for r in [first, replay] {
        assert!(r.header("x-coupa-api-key").is_none(), "{r:?}");
        assert!(r.header("x-hop").is_none(), "{r:?}");
        assert!(r.header("connection").is_none(), "{r:?}");
        assert_eq!(r.header("x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
        assert_eq!(r.header("accept"), Some("application/json"));
        assert_eq!(r.target, "/api/invoices/1");
    }
    let without_token = |r: &coupa_mock::RecordedRequest| {
        let mut h = r.headers.clone();
        h.remove("authorization");
        h
    };
    assert_eq!(without_token(first), without_token(replay));
}

#[tokio::test]
async fn a_large_body_is_not_replayed_but_the_next_request_gets_a_new_token() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &GatewayToml::prod(&prod.url())
            .server("retry_body_limit = 1024")
            .token_warmup("0s"),
    )
    .await;
    let http = Http::new();
    prod.faults().revoke_all_tokens();
    let big = vec![b'x'; 4096];
    let r = http
        .request(
            Method::POST,
            &proxy_url(&gw, "/prod/api/invoices/1/attachments"),
            &[("content-type", "application/octet-stream")],
            big,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "Coupa's 401 passes through when the body cannot be replayed"
    );
    assert!(
        eventually(Duration::from_secs(5), || prod.stats().tokens_issued >= 2).await,
        "the rejected token was not replaced"
    );
    assert_eq!(
        http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[])
            .await
            .status,
        StatusCode::OK
    );
    assert!(metrics(&gw).await.contains(r#"coupa_gateway_upstream_unauthorized_total{client="prod-main",outcome="passed_through"} 1"#));
}

#[tokio::test]
async fn a_401_inside_the_warm_up_waits_instead_of_re_minting() {
    let prod = mock("prod").await;
    // Coupa refuses tokens for their first 600 ms; the gateway's warm-up is 1 s.
    prod.faults()
        .set_token_activation_delay(Duration::from_millis(600));
    let gw = ready_gateway(&GatewayToml::prod(&prod.url()).token_warmup("1s")).await;
    let r = Http::new()
        .get(&proxy_url(&gw, "/prod/api/invoices/1"), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        prod.stats().tokens_issued,
        1,
        "a fresh token's 401 must not trigger a re-mint"
    );
}

#[tokio::test]
async fn requests_over_the_rate_wait_their_turn_instead_of_collecting_429s() {
    // Coupa's bucket here is 20/s with a burst of 5; the gateway keeps a margin below it
    // (16/s, burst 4): network jitter can bunch requests spaced exactly at the limit.
    let limited = || {
        demo_instance("prod", "127.0.0.1:0".parse().unwrap())
            .rate_limit(Some(MockRateLimit::new(20.0, 5)))
    };
    let prod = mock_with(limited()).await;
    let gw = ready_gateway(&GatewayToml::prod(&prod.url()).map_instance("prod", |i| {
        i.rate_limit("{ per_second = 16, burst = 4, max_queue_wait = \"10s\" }")
    }))
    .await;
    let started = Instant::now();
    let statuses = burst(&gw, 30).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(prod.stats().rate_limited, 0);
    // 26 requests beyond the burst at 16/s cannot finish sooner than 1.6 s.
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(metrics(&gw)
        .await
        .contains(r#"coupa_gateway_rate_limit_total{instance="prod",event="queued"}"#));

    // Without the gateway's limiter, the same burst collects 429s: the test can fail.
    let prod = mock_with(limited()).await;
    let gw = ready_gateway(&GatewayToml::prod(&prod.url())).await;
    let statuses = burst(&gw, 30).await;
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS));
}

async fn burst(gw: &Gateway, n: usize) -> Vec<StatusCode> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let u = proxy_url(gw, "/prod/api/suppliers/1");
        tasks.push(tokio::spawn(async move {
            Http::new().get(&u, &[]).await.status
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn beyond_the_queue_wait_the_gateway_answers_429_itself() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&GatewayToml::prod(&prod.url()).map_instance("prod", |i| {
        i.rate_limit("{ per_second = 2, burst = 1, max_queue_wait = \"100ms\" }")
    }))
    .await;
    let statuses = burst(&gw, 4).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    let r = Http::new()
        .get(&proxy_url(&gw, "/prod/api/suppliers/1"), &[])
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["error"], "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(
        prod.stats().api_requests,
        1,
        "refused requests never reach Coupa"
    );
}

#[tokio::test]
async fn coupa_429s_pass_through_with_retry_after_and_slow_the_instance() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &GatewayToml::prod(&prod.url()).map_instance("prod", InstanceToml::default_rate_limit),
    )
    .await;
    let http = Http::new();
    prod.faults().fail_api_with(Some(429));
    let r = http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.headers.contains_key("retry-after"),
        "the gateway adds a Retry-After Coupa did not send"
    );
    prod.faults().set_retry_after(Some(2));
    let r = http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[]).await;
    assert_eq!(
        r.headers["retry-after"], "2",
        "Coupa's own Retry-After is kept"
    );
    // The instance is now paused ~2 s: the next request waits instead of hitting Coupa.
    prod.faults().fail_api_with(None);
    let started = Instant::now();
    assert_eq!(
        http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[])
            .await
            .status,
        StatusCode::OK
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(metrics(&gw)
        .await
        .contains(r#"coupa_gateway_rate_limit_total{instance="prod",event="coupa_throttled"} 2"#));
}

#[tokio::test]
async fn permanent_token_errors_back_off_for_minutes_transient_ones_retry() {
    let bad = mock("prod").await;
    bad.faults().fail_token_with(Some((401, "invalid_client")));
    let flaky = mock("prod").await;
    flaky.faults().fail_token_with(Some((500, "server_error")));
    let g1 = gateway(&GatewayToml::prod(&bad.url())).await;
    let g2 = gateway(&GatewayToml::prod(&flaky.url())).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        bad.stats().token_requests,
        1,
        "a wrong secret must not hammer Coupa"
    );
    assert!(
        flaky.stats().token_requests >= 2,
        "transient failures retry within seconds"
    );
    let status = status(&g1).await;
    let next = status["clients"][0]["next_refresh_in_s"].as_u64().unwrap();
    assert!(
        next >= 40,
        "permanent failures wait about a minute, got {next} s"
    );
    assert_eq!(status["clients"][0]["last_error"]["kind"], "invalid_client");
    drop((g1, g2));
}

#[tokio::test]
async fn token_expired_while_the_endpoint_is_down_gives_503_then_recovers() {
    let prod = mock_with(mock_config("prod").expires_in(2)).await;
    let gw = ready_gateway(&GatewayToml::prod(&prod.url()).token_warmup("0s")).await;
    prod.faults()
        .fail_token_with(Some((503, "temporarily_unavailable")));
    let http = Http::new();
    // The 2 s token stops being sent at 1.8 s; refreshes keep failing.
    let mut saw_503 = false;
    for _ in 0..100 {
        let r = http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[]).await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.json()["error"], "token_unavailable");
            assert!(r.headers.contains_key("retry-after"));
            saw_503 = true;
            break;
        }
        assert_eq!(r.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_503, "an expired token was still used");
    prod.faults().fail_token_with(None);
    assert!(
        gw.wait_ready(Duration::from_secs(15)).await,
        "no recovery without a restart"
    );
    assert_eq!(
        http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[])
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn body_and_concurrency_limits() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &GatewayToml::prod(&prod.url())
            .server("max_body_bytes = \"1KiB\"")
            .server("max_concurrent_requests = 1"),
    )
    .await;
    let http = Http::new();
    let r = http
        .request(
            Method::POST,
            &proxy_url(&gw, "/prod/api/invoices"),
            &[("content-type", "application/json")],
            vec![b'x'; 2048],
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"], "body_too_large");
    assert_eq!(prod.stats().api_requests, 0);

    prod.faults().set_api_delay(Duration::from_millis(800));
    let slow = {
        let u = proxy_url(&gw, "/prod/api/invoices/1");
        tokio::spawn(async move { Http::new().get(&u, &[]).await.status })
    };
    assert!(eventually(Duration::from_secs(5), || prod.stats().api_requests >= 1).await);
    let r = http.get(&proxy_url(&gw, "/prod/api/invoices/2"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"], "overloaded");
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    assert_eq!(
        http.get(&proxy_url(&gw, "/prod/api/invoices/2"), &[])
            .await
            .status,
        StatusCode::OK,
        "the slot is released"
    );
}

#[tokio::test]
async fn oversized_headers_and_slow_headers_are_cut_off() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &GatewayToml::prod(&prod.url())
            .server("max_header_bytes = \"16KiB\"")
            .server("header_timeout = \"1s\"")
            .server("idle_timeout = \"1s\""),
    )
    .await;
    let huge = "a".repeat(20 * 1024);
    let (status, _) = raw(gw.addr(), &format!("GET /prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\nX-Big: {huge}\r\nConnection: close\r\n\r\n")).await;
    assert_eq!(status, 431);
    // A client that starts a request and stalls is disconnected.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a stalled header was not cut off");
    // An idle keep-alive connection is closed too.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "an idle connection was kept open");
}

#[tokio::test]
async fn smuggling_shapes_and_foreign_absolute_targets_are_refused() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&GatewayToml::prod(&prod.url())).await;
    let (status, text) = raw(
        gw.addr(),
        "POST /prod/api/invoices HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = raw(gw.addr(), "GET http://evil.example/prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 400, "{text}");
    let host = gw.addr().to_string();
    let (status, text) = raw(
        gw.addr(),
        &format!("GET http://{host}/prod/api/invoices/1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(
        status, 200,
        "absolute-form for the gateway itself is fine (RFC 9112 §3.2.2): {text}"
    );
    assert_eq!(prod.stats().api_requests, 1);
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&GatewayToml::prod(&prod.url()).server("shutdown_grace = \"5s\"")).await;
    let (addr, admin) = (gw.addr(), gw.admin_addr());
    // An idle keep-alive connection (one exchange done) is closed by the drain at once, not
    // after idle_timeout (60 s) or the grace (5 s).
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut first))
        .await
        .expect("an answer on the keep-alive connection")
        .unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &first[..n]);
    prod.faults().set_api_delay(Duration::from_millis(700));
    // A connection that never sends a byte (a load balancer's TCP check, a client that stalls)
    // must not hold up the drain: idle_timeout is 60 s, the grace 5 s.
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let slow = tokio::spawn(async move {
        Http::new()
            .get(&format!("http://{addr}/prod/api/invoices/1"), &[])
            .await
            .status
    });
    assert!(eventually(Duration::from_secs(5), || prod.stats().api_requests >= 2).await);
    let shutdown = tokio::spawn(gw.shutdown_gracefully());
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_))),
        "the idle keep-alive connection was not closed by the drain: {closed:?}"
    );
    // Readiness fails at once, new connections are refused, the slow request completes.
    let ready = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let r = Http::new()
                .get(&format!("http://{admin}/readyz"), &[])
                .await;
            if r.status == StatusCode::SERVICE_UNAVAILABLE {
                return r.json();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("readiness failed during shutdown");
    assert_eq!(ready["shutting_down"], true);
    assert!(
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(
            addr
        )
        .is_err())
        .await,
        "still accepting after shutdown began"
    );
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    assert!(shutdown.await.unwrap(), "drained within the grace period");
    drop(silent);
}

#[tokio::test]
async fn shutdown_grace_bounds_the_wait() {
    let prod = mock("prod").await;
    let gw =
        ready_gateway(&GatewayToml::prod(&prod.url()).server("shutdown_grace = \"300ms\"")).await;
    let addr = gw.addr();
    prod.faults().set_api_delay(Duration::from_secs(5));
    let slow = tokio::spawn(async move {
        let req = http::Request::get(format!("http://{addr}/prod/api/invoices/1"))
            .body(full(Bytes::new()))
            .unwrap();
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<TestBody>()
            .request(req)
            .await
            .is_err()
    });
    assert!(eventually(Duration::from_secs(5), || prod.stats().api_requests >= 1).await);
    let started = Instant::now();
    assert!(!gw.shutdown_gracefully().await, "reported as not drained");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        slow.await.unwrap(),
        "the unfinished request's connection was closed"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing_behind() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&GatewayToml::prod(&prod.url())).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"POST /prod/api/invoices/1/attachments HTTP/1.1\r\nHost: gw\r\nContent-Length: 10000000\r\n\r\n").await.unwrap();
    s.write_all(&vec![b'y'; 2 * 1024 * 1024]).await.unwrap();
    let faults = prod.faults();
    assert!(
        eventually(Duration::from_secs(5), || faults.upload_bytes_received()
            > 0)
        .await
    );
    drop(s);
    let shared = Arc::clone(gw.shared());
    assert!(
        eventually(Duration::from_secs(5), || shared
            .inflight
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0)
        .await,
        "a request stayed in flight after its client left"
    );
    assert_eq!(
        Http::new()
            .get(&proxy_url(&gw, "/prod/api/invoices/1"), &[])
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_admin_port_closes_stalled_and_idle_connections_too() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &GatewayToml::prod(&prod.url())
            .server("header_timeout = \"1s\"")
            .server("idle_timeout = \"1s\""),
    )
    .await;
    let mut buf = Vec::new();
    let mut s = tokio::net::TcpStream::connect(gw.admin_addr())
        .await
        .unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a stalled admin request was not cut off");
    let mut s = tokio::net::TcpStream::connect(gw.admin_addr())
        .await
        .unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "an idle admin connection was kept open");
}
