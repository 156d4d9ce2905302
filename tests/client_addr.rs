//! The client address behind a load balancer: `server.trusted_proxies` with `X-Forwarded-For`
//! and `Forwarded`, and `server.proxy_protocol` (PROXY v1/v2) for L4 balancers. The address
//! drives `allow_ips`, the access log and what Coupa sees in `X-Forwarded-For`.

mod common;

use std::time::Duration;

use common::*;
use coupa_gateway::net::server::Gateway;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Route `/prod` admits only the integration `erp`, recognised by its address alone; any
/// other address is an anonymous caller (401).
fn toml(prod: &str, allow: &[&str]) -> GatewayToml {
    GatewayToml::prod(prod).integration(
        IntegrationToml::new("erp")
            .allow_ips(allow)
            .routes(&["/prod"]),
    )
}

async fn get(gw: &Gateway, headers: &[(&str, &str)]) -> StatusCode {
    Http::new()
        .get(&proxy_url(gw, "/prod/api/suppliers"), headers)
        .await
        .status
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_caller() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &toml(&prod.url(), &["198.51.100.7", "2001:db8::7"])
            .server(r#"trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]"#),
    )
    .await;
    // The balancer (127.0.0.1) appended the client it saw; the client forged the first entry.
    let xff = [("x-forwarded-for", "203.0.113.1, 198.51.100.7")];
    assert_eq!(get(&gw, &xff).await, StatusCode::OK);
    // A chain: an inner trusted proxy (10.x) between the client and the balancer.
    let chain = [("x-forwarded-for", "198.51.100.7, 10.1.2.3")];
    assert_eq!(get(&gw, &chain).await, StatusCode::OK);
    // IPv6 in `Forwarded`, quoted with a port.
    let fwd = [("forwarded", r#"for="[2001:db8::7]:4711";proto=https"#)];
    assert_eq!(get(&gw, &fwd).await, StatusCode::OK);
    // The allowed address forged to the left of someone else: that someone is the caller.
    let forged = [("x-forwarded-for", "198.51.100.7, 203.0.113.1")];
    assert_eq!(get(&gw, &forged).await, StatusCode::UNAUTHORIZED);
    // No claim: the balancer itself, not allowed.
    assert_eq!(get(&gw, &[]).await, StatusCode::UNAUTHORIZED);
    // Coupa sees the chain with the balancer appended, as before; `Forwarded` is dropped, not
    // turned into `X-Forwarded-For`.
    let seen = prod.requests();
    assert_eq!(seen.len(), 3, "the refused requests never reached Coupa");
    assert_eq!(
        seen[0].headers["x-forwarded-for"],
        "203.0.113.1, 198.51.100.7, 127.0.0.1"
    );
    assert_eq!(seen[2].headers["x-forwarded-for"], "127.0.0.1");
    assert!(seen[2].headers.get("forwarded").is_none());
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_address() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &toml(&prod.url(), &["198.51.100.7"]).server(r#"trusted_proxies = ["10.0.0.0/8"]"#),
    )
    .await;
    for spoof in [
        ("x-forwarded-for", "198.51.100.7"),
        ("forwarded", "for=198.51.100.7"),
        ("x-real-ip", "198.51.100.7"),
    ] {
        assert_eq!(
            get(&gw, &[spoof]).await,
            StatusCode::UNAUTHORIZED,
            "{spoof:?}"
        );
    }
    // The default (no trusted proxies) ignores them too.
    let gw = ready_gateway(&toml(&prod.url(), &["198.51.100.7"])).await;
    let spoof = [("x-forwarded-for", "198.51.100.7")];
    assert_eq!(get(&gw, &spoof).await, StatusCode::UNAUTHORIZED);
}

/// Sends `prefix` then a GET on one connection; the status, or `None` when the gateway closed
/// the connection without answering.
async fn through_proxy_protocol(gw: &Gateway, prefix: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(prefix).await.unwrap();
    // The gateway may already have closed: a refused write is the same answer.
    let _ = s
        .write_all(b"GET /prod/api/suppliers HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let _ = read.expect("the gateway answers or closes within 10 s");
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}

fn v2_tcp6(src: &str) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x21, 0, 36]);
    out.extend_from_slice(&src.parse::<std::net::Ipv6Addr>().unwrap().octets());
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&[0x12, 0x34, 0x01, 0xbb]);
    out
}

#[tokio::test]
async fn the_proxy_protocol_names_the_client() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &toml(&prod.url(), &["198.51.100.7", "2001:db8::7"]).server("proxy_protocol = true"),
    )
    .await;
    let v1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 51000 8080\r\n";
    assert_eq!(through_proxy_protocol(&gw, v1).await, Some(200));
    assert_eq!(
        prod.requests().last().unwrap().headers["x-forwarded-for"],
        "198.51.100.7",
        "Coupa sees the client, not the balancer"
    );
    assert_eq!(
        through_proxy_protocol(&gw, &v2_tcp6("2001:db8::7")).await,
        Some(200)
    );
    let other = b"PROXY TCP4 203.0.113.1 10.0.0.1 51000 8080\r\n";
    assert_eq!(through_proxy_protocol(&gw, other).await, Some(401));
    // The balancer's own health check: the TCP peer (not allowed here, but served).
    assert_eq!(
        through_proxy_protocol(&gw, b"PROXY UNKNOWN\r\n").await,
        Some(401)
    );
    // No header, or a malformed one: closed without an answer.
    for bad in [
        &b""[..],
        b"PROXY TCP4 198.51.100.7 10.0.0.1 51000\r\n",
        b"PROXY TCP4 999.1.1.1 10.0.0.1 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04abcd",
    ] {
        assert_eq!(
            through_proxy_protocol(&gw, bad).await,
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[tokio::test]
async fn the_proxy_protocol_is_accepted_only_from_trusted_proxies_when_they_are_set() {
    let prod = mock("prod").await;
    let v1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 51000 8080\r\n";
    let only_10 = toml(&prod.url(), &["198.51.100.7"])
        .server("proxy_protocol = true")
        .server(r#"trusted_proxies = ["10.0.0.0/8"]"#);
    let gw = ready_gateway(&only_10).await;
    assert_eq!(through_proxy_protocol(&gw, v1).await, None);
    let loopback = only_10.server(r#"trusted_proxies = ["127.0.0.0/8"]"#);
    let gw = ready_gateway(&loopback).await;
    assert_eq!(through_proxy_protocol(&gw, v1).await, Some(200));
}

#[test]
fn bad_trusted_proxies_name_the_key_and_value() {
    let e = coupa_gateway::config::Config::parse(
        &GatewayToml::new().build().replace(
            "[server]\n",
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.300\"]\n",
        ),
        &|_| None,
        std::path::Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("server.trusted_proxies[1]") && e.contains("10.0.0.300"),
        "{e}"
    );
}
