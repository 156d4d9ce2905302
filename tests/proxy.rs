//! End-to-end behaviour of the request path against two mock Coupa instances.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn routes_by_prefix_to_two_instances_and_strips_the_prefix() {
    let env = Env::start().await;
    let r = env
        .http
        .get(
            &env.url("/prod/api/suppliers?limit=2"),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let r = env.http.get(&env.url("/test/api/invoices/1"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.text().starts_with("<?xml"),
        "Coupa answers XML by default: {}",
        r.text()
    );

    let prod = env.prod.requests();
    let test = env.test.requests();
    assert_eq!(prod.len(), 1);
    assert_eq!(test.len(), 1);
    assert_eq!(prod[0].target, "/api/suppliers?limit=2");
    assert_eq!(test[0].target, "/api/invoices/1");
}

#[tokio::test]
async fn query_strings_reach_coupa_byte_for_byte() {
    let env = Env::start().await;
    // Real integration queries: JSON in `fields` (raw brackets and braces; quotes as %22, since
    // hyper's request-target parser rejects a raw `"`), bracket filters, encoded `+` and `:`,
    // mixed-case escapes and a raw `|` — none may be decoded or re-encoded.
    let target = r#"/prod/api/invoices?fields=[%22id%22,{%22supplier%22:[%22name%22]}]&updated-at[gt]=2024-01-01T00%3a00%3A00%2B00%3A00&status[in]=approved,pending&q=a|b&exported=false"#;
    let (status, text) = raw(
        env.gw.addr(),
        &format!("GET {target} HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let seen = env.prod.requests();
    assert_eq!(
        seen.last().unwrap().target,
        target.strip_prefix("/prod").unwrap()
    );
}

#[tokio::test]
async fn raw_json_quotes_in_queries_are_accepted_and_percent_encoded() {
    let env = Env::start().await;
    // What string-concatenating scripts send (COUPA-API.md §11). hyper alone answers 400; the
    // gateway encodes only the bytes the URI grammar forbids (`"` `<` `>` here) and keeps every
    // other byte, existing escapes included.
    let sent = r#"/prod/api/coupa_pay/payments?exported=false&fields=["id",{"pay_from_account":["id",{"currency":["code"]}]}]&pay_to_account[type]=CoupaPay::SupplierPaymentAccount&status[in]=a,b&q=<x>%2B"#;
    let expected = sent
        .strip_prefix("/prod")
        .unwrap()
        .replace('"', "%22")
        .replace('<', "%3C")
        .replace('>', "%3E");
    // Two on one keep-alive connection: the second request's line is found and fixed too.
    let one = format!("GET {sent} HTTP/1.1\r\nHost: gw\r\n\r\n");
    let two = format!("GET {sent} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    let (status, text) = raw(env.gw.addr(), &(one + &two)).await;
    assert_eq!(status, 404, "the mock has no coupa_pay resource: {text}");
    assert_eq!(text.matches("HTTP/1.1 404").count(), 2, "{text}");
    let seen = env.prod.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|r| r.target == expected),
        "{:?} != {expected}",
        seen[0].target
    );
}

#[tokio::test]
async fn bearer_is_injected_and_caller_credentials_never_reach_coupa() {
    let env = Env::start().await;
    let r = env
        .http
        .get(
            &env.url("/prod/api/invoices?limit=1"),
            &[
                ("X-COUPA-API-KEY", "legacy-key-must-not-leak"),
                ("authorization", "Basic dXNlcjpwYXNz"),
                ("accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Lowercase spelling too, as in Coupa's own attachment examples.
    let r = env
        .http
        .get(
            &env.url("/prod/api/invoices?limit=1"),
            &[("x-coupa-api-key", "legacy-key-must-not-leak")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for req in env.prod.requests() {
        assert!(
            req.header("x-coupa-api-key").is_none(),
            "legacy key forwarded: {:?}",
            req.headers
        );
        let auths: Vec<_> = req.headers.get_all("authorization").iter().collect();
        assert_eq!(auths.len(), 1);
        let auth = auths[0].to_str().unwrap();
        assert!(auth.starts_with("Bearer ") && auth.len() > 30, "{auth}");
        assert_eq!(
            req.header("host"),
            Some(env.prod.addr().to_string().as_str())
        );
        assert_eq!(req.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(req.header("x-forwarded-proto"), Some("http"));
        assert!(req.header("x-request-id").is_some());
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_request_id_kept() {
    let env = Env::start().await;
    let r = env
        .http
        .get(
            &env.url("/prod/api/suppliers/1"),
            &[
                ("connection", "keep-alive, x-hop-secret"),
                ("x-hop-secret", "only for the gateway"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("te", "trailers"),
                ("x-request-id", "erp-run-42"),
                ("x-custom", "kept"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers["x-request-id"], "erp-run-42");
    let req = env.prod.requests().pop().unwrap();
    for gone in [
        "connection",
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
    ] {
        assert!(
            req.header(gone).is_none(),
            "{gone} reached Coupa: {:?}",
            req.headers
        );
    }
    assert_eq!(req.header("x-custom"), Some("kept"));
    assert_eq!(req.header("x-request-id"), Some("erp-run-42"));
}

#[tokio::test]
async fn unknown_prefix_is_404_json() {
    let env = Env::start().await;
    for path in ["/production/api/invoices", "/api/invoices", "/"] {
        let r = env.http.get(&env.url(path), &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        let j = r.json();
        assert_eq!(j["error"], "no_route");
        assert!(!j["request_id"].as_str().unwrap().is_empty());
    }
    assert!(env.prod.requests().is_empty() && env.test.requests().is_empty());
}

#[tokio::test]
async fn traversal_attempts_are_400_and_never_forwarded() {
    let env = Env::start().await;
    for target in [
        "/prod/../test/api/invoices",
        "/prod/%2e%2e/test/api/invoices",
        "/prod/api/..%2Finvoices",
        "/prod/api%2Finvoices",
        "/prod/api%5Cinvoices",
        "/prod/api/invoices/%00",
        "/prod/api/./invoices",
        // Path parameters (`..;` is `..` to Tomcat and Jetty), double encoding, overlong UTF-8.
        "/prod/..;/test/api/invoices",
        "/prod/%2e%2e;/test/api/invoices",
        "/prod/%252e%252e/test/api/invoices",
        "/prod/%c0%ae%c0%ae/test/api/invoices",
    ] {
        let (status, text) = raw(
            env.gw.addr(),
            &format!("GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{target}: {text}");
        assert!(text.contains("\"bad_request\""), "{text}");
    }
    assert!(env.prod.requests().is_empty() && env.test.requests().is_empty());
}

#[tokio::test]
async fn upstream_down_is_502() {
    let token_mock = mock("prod").await;
    let dead = dead_addr().await;
    // Tokens come from a live mock; the API host itself refuses connections.
    let gw = ready_gateway(
        &GatewayToml::new()
            .instance("prod", &format!("http://{dead}"))
            .map_instance("prod", |i| {
                (i.default_rate_limit()).token_url(&format!("{}/oauth2/token", token_mock.url()))
            })
            .client(ClientToml::prod().scopes(&["core.invoice.read"]))
            .route(RouteToml::new("/prod").instance("prod")),
    )
    .await;
    let r = Http::new()
        .get(&proxy_url(&gw, "/prod/api/invoices"), &[])
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unreachable");
}

#[tokio::test]
async fn upstream_slow_is_504() {
    let prod = mock("prod").await;
    let test = mock("test").await;
    let gw = ready_gateway(
        &GatewayToml::two_instances(&prod.url(), &test.url())
            .map_route("/prod", |r| r.timeout("300ms")),
    )
    .await;
    prod.faults().set_api_delay(Duration::from_secs(3));
    let started = std::time::Instant::now();
    let r = Http::new()
        .get(&proxy_url(&gw, "/prod/api/invoices"), &[])
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeout not applied"
    );
    // The other route has the default timeout and is unaffected.
    let r = Http::new()
        .get(&proxy_url(&gw, "/test/api/invoices/1"), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

const BIG: usize = 20 * 1024 * 1024;

#[tokio::test]
async fn twenty_megabyte_upload_streams_through_intact() {
    let env = Env::start().await;
    let (mut tx, body) =
        http_body_util::channel::Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(4);
    let req = Request::builder()
        .method(Method::POST)
        .uri(env.url("/prod/api/invoices/1/attachments"))
        .header("content-type", "application/octet-stream")
        .body(body.boxed())
        .unwrap();
    let http = env.http.clone();
    let reply = tokio::spawn(async move { http.send(req).await });

    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut hasher = Sha256::new();
    let mut sent = 0;
    while sent < BIG / 2 {
        tx.send_data(Bytes::from(chunk.clone())).await.unwrap();
        hasher.update(&chunk);
        sent += chunk.len();
    }
    // Half sent and the body not finished: a buffering proxy would not have forwarded a byte.
    let faults = env.prod.faults();
    assert!(
        eventually(Duration::from_secs(10), || faults.upload_bytes_received()
            >= (BIG / 4) as u64)
        .await,
        "Coupa saw only {} bytes while the caller was still sending: the gateway buffers uploads",
        faults.upload_bytes_received()
    );
    while sent < BIG {
        tx.send_data(Bytes::from(chunk.clone())).await.unwrap();
        hasher.update(&chunk);
        sent += chunk.len();
    }
    drop(tx);
    let r = reply.await.unwrap();
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let j = r.json();
    assert_eq!(j["file-size"].as_u64(), Some(BIG as u64));
    assert_eq!(j["sha256"].as_str().unwrap(), hex(&hasher.finalize()));
}

#[tokio::test]
async fn twenty_megabyte_download_streams_through_intact() {
    let env = Env::start().await;
    env.prod.faults().set_download_size(BIG as u64);
    env.prod.faults().hold_download_midway(true);
    let req = Request::builder()
        .uri(env.url("/prod/api/attachments/1"))
        .body(full(Bytes::new()))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<TestBody>();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let expected = resp.headers()["x-mock-sha256"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = resp.into_body();
    let mut hasher = Sha256::new();
    let mut got = 0usize;
    // Coupa holds the second half back: the first half must reach us anyway.
    while got < BIG / 2 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("first half arrives while Coupa holds the rest: the gateway buffers downloads")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            got += data.len();
            hasher.update(&data);
        }
    }
    env.prod.faults().release_download();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            got += data.len();
            hasher.update(&data);
        }
    }
    assert_eq!(got, BIG);
    assert_eq!(hex(&hasher.finalize()), expected);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn http2_callers_are_served_too() {
    let env = Env::start().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let req = Request::builder()
        .uri(env.url("/prod/api/suppliers?limit=3"))
        .header("accept", "application/json")
        .body(full(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let rows: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3);
    // Coupa is spoken to in HTTP/1.1 whatever the caller used.
    let seen = env.prod.requests().pop().unwrap();
    assert_eq!(seen.target, "/api/suppliers?limit=3");
    assert!(seen.header("authorization").unwrap().starts_with("Bearer "));
}

/// Sends `count` requests at once, each on its own connection, so every proxy worker accepts
/// some of them; returns the statuses.
async fn burst_of_fresh_connections(addr: std::net::SocketAddr, count: usize) -> Vec<u16> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..count {
        set.spawn(raw(
            addr,
            "GET /prod/api/suppliers/1 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        ));
    }
    let mut statuses = Vec::new();
    while let Some(done) = set.join_next().await {
        statuses.push(done.expect("request task").0);
    }
    statuses
}

#[tokio::test]
async fn every_worker_serves_and_a_reload_cannot_change_their_number() {
    let prod = mock("prod").await;
    let test = mock("test").await;
    let three = GatewayToml::two_instances(&prod.url(), &test.url()).server("workers = 3");
    let gw = ready_gateway(&three).await;
    let statuses = burst_of_fresh_connections(gw.addr(), 30).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    // New connections go to the worker holding the fewest: six open ones, two each. Closed
    // ones are counted out again.
    let open_per_worker = || async {
        let metrics = metrics(&gw).await;
        (0..3)
            .map(|w| {
                let line = format!("coupa_gateway_connections_open{{worker=\"{w}\"}} ");
                metrics
                    .lines()
                    .find_map(|l| l.strip_prefix(line.as_str()))
                    .unwrap_or_else(|| panic!("no {line} in {metrics}"))
                    .parse::<u64>()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let until_closed = || async {
        let mut seen = Vec::new();
        for _ in 0..250 {
            seen = open_per_worker().await;
            if seen == [0, 0, 0] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    };
    assert_eq!(
        until_closed().await,
        [0, 0, 0],
        "the burst's connections are counted out"
    );
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(tokio::net::TcpStream::connect(gw.addr()).await.unwrap());
    }
    let mut seen = Vec::new();
    for _ in 0..250 {
        seen = open_per_worker().await;
        if seen.iter().sum::<u64>() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, [2, 2, 2]);
    drop(held);
    assert_eq!(
        until_closed().await,
        [0, 0, 0],
        "closed connections are counted out"
    );

    // One worker fewer and new outbound settings (so new pooled clients are built): the worker
    // count is a restart-only setting, and the three running workers keep their clients.
    let fewer = GatewayToml::two_instances(&prod.url(), &test.url())
        .server("workers = 2")
        .upstream_connect_timeout("3s");
    let applied = gw.reload(fewer.config()).await.expect("reload applies");
    assert_eq!(
        applied.restart_required,
        ["server.workers (3 -> 2)"],
        "{applied:?}"
    );
    let statuses = burst_of_fresh_connections(gw.addr(), 30).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(prod.requests().len(), 60);

    // Dropping the handle stops the workers: the listening socket closes with the last one.
    let addr = gw.addr();
    drop(gw);
    let mut refused = false;
    for _ in 0..250 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "the proxy port still accepts after the gateway was dropped"
    );
}

#[tokio::test]
async fn methods_coupa_does_not_use_get_405_and_never_reach_coupa() {
    let env = Env::start().await;
    for (method, target) in [
        ("CONNECT", "/prod/api/invoices"),
        ("CONNECT", "/test/api/invoices/1"),
        ("CONNECT", "127.0.0.1:443"),
        ("TRACE", "/prod/api/invoices"),
        ("TRACK", "/prod/api/invoices"),
        ("PROPFIND", "/prod/api/invoices"),
        ("get", "/prod/api/invoices"),
    ] {
        let (status, text) = raw(
            env.gw.addr(),
            &format!(
                "{method} {target} HTTP/1.1\r\nHost: gw\r\nX-COUPA-API-KEY: k\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(status, 405, "{method} {target}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("\r\nallow: get, head, post, put, patch, delete, options\r\n"),
            "{method} {target}: {text}"
        );
        assert!(text.contains("\"method_not_allowed\""), "{text}");
    }
    assert!(env.prod.requests().is_empty() && env.test.requests().is_empty());
    assert_eq!(
        env.prod.stats().api_requests + env.test.stats().api_requests,
        0
    );
    // The methods Coupa's API uses still go through (the mock answers some with its own 405).
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let (status, text) = raw(
            env.gw.addr(),
            &format!(
                "{method} /prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(
            !text.contains("method_not_allowed"),
            "{method}: {status} {text}"
        );
        let seen = env.prod.requests().pop().expect("forwarded");
        assert_eq!(seen.method.as_str(), method);
    }
}

#[tokio::test]
async fn caller_address_claims_never_reach_coupa() {
    let env = Env::start().await;
    let r = env
        .http
        .get(
            &env.url("/prod/api/suppliers/1"),
            &[
                ("forwarded", "for=10.0.0.1;proto=https"),
                ("Forwarded", "for=\"[2001:db8::1]\""),
                ("x-real-ip", "10.0.0.1"),
                ("X-Forwarded-For", "192.0.2.7"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let req = env.prod.requests().pop().unwrap();
    assert!(req.header("forwarded").is_none(), "{:?}", req.headers);
    assert!(req.header("x-real-ip").is_none(), "{:?}", req.headers);
    // The gateway's own account of the client: the caller's chain with the peer appended.
    assert_eq!(req.header("x-forwarded-for"), Some("192.0.2.7, 127.0.0.1"));
}
