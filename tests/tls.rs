//! TLS on both sides, end to end on loopback: the gateway's HTTPS listener (and its reload),
//! and HTTPS upstreams trusted through `upstream.ca_file` (or not). The outbound proxy, plain
//! or over TLS, is in `egress.rs`.
//! Certificates are made at run time with rcgen; nothing is read from the system trust store
//! that these tests rely on.

mod common;

use std::time::Duration;

use common::*;
use coupa_gateway::net::server::{Gateway, StartError};
use coupa_mock::MockCoupa;
use http::{Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A fresh HTTPS client (so a fresh connection and handshake) trusting only `ca_pem`.
fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(trusting(ca_pem))
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn https_get(ca_pem: &str, url: &str) -> Result<(StatusCode, String), String> {
    let resp = https_client(ca_pem)
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| coupa_gateway::errors::error_chain(&e))?;
    let status = resp.status();
    Ok((status, resp.text().await.unwrap_or_default()))
}

/// The test config, its listener serving HTTPS with `leaf`.
fn serving_https(prod: &MockCoupa, test: &MockCoupa, leaf: &Leaf) -> GatewayToml {
    tls_test_toml(prod, test)
        .server_tls_cert(&leaf.cert_file)
        .server_tls_key(&leaf.key_file)
}

/// The test config with the upstream CA file, if any, and no proxy: a proxy in the environment
/// the tests run in must not change what they test.
fn trusting_upstream(
    prod: &MockCoupa,
    test: &MockCoupa,
    ca_file: Option<&std::path::Path>,
) -> GatewayToml {
    let toml = tls_test_toml(prod, test);
    match ca_file {
        Some(ca) => toml.upstream_ca_file(ca),
        None => toml,
    }
    .upstream_proxy("none")
}

// ===== (a) the gateway's TLS listener =====

#[tokio::test]
async fn tls_listener_serves_https_and_tells_coupa_the_proto() {
    let pki = Pki::new("listener");
    let leaf = pki.leaf("gateway");
    let prod = mock("prod").await;
    let test = mock("test").await;
    let gw = gateway(&serving_https(&prod, &test, &leaf)).await;
    assert!(gw.wait_ready(Duration::from_secs(10)).await);
    let base = format!("https://127.0.0.1:{}", gw.addr().port());

    let (status, body) = https_get(&pki.ca_pem, &format!("{base}/prod/api/suppliers?limit=1"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = prod.requests();
    assert_eq!(
        seen.last().unwrap().header("x-forwarded-proto"),
        Some("https")
    );
    // `localhost` is in the certificate too.
    let (status, _) = https_get(
        &pki.ca_pem,
        &format!("https://localhost:{}/test/api/invoices/1", gw.addr().port()),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);

    // ALPN offers h2: a client that speaks it gets HTTP/2 over TLS.
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(trusting(&pki.ca_pem))
        .https_only()
        .enable_all_versions()
        .wrap_connector(http);
    let h2: Client<_, TestBody> = Client::builder(TokioExecutor::new()).build(connector);
    let req = Request::get(format!("{base}/prod/api/invoices/1"))
        .body(full(""))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), h2.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);

    // A client that does not trust the CA fails the handshake; the listener carries on.
    let other = Pki::new("stranger");
    let err = https_get(&other.ca_pem, &format!("{base}/prod/api/invoices/1"))
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let (status, _) = https_get(&pki.ca_pem, &format!("{base}/prod/api/invoices/1"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    gw.shutdown();
}

#[tokio::test]
async fn plain_http_to_the_tls_listener_fails_cleanly() {
    let pki = Pki::new("plain");
    let leaf = pki.leaf("gateway");
    let prod = mock("prod").await;
    let test = mock("test").await;
    let gw = gateway(&serving_https(&prod, &test, &leaf)).await;

    // An HTTP request line gets a plain-HTTP 400 that says what to change, then the close.
    let (status, text) = raw(
        gw.addr(),
        "GET /prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("https://"), "{text}");
    assert_eq!(prod.stats().api_requests, 0);

    // Bytes that are neither HTTP nor TLS: the connection is closed, nothing is answered.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"\x00\x01\x02\x03garbage\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("closed within 10 s")
        .ok();
    assert!(!out.starts_with(b"HTTP/"), "{out:?}");

    // And the listener still serves HTTPS.
    let (status, _) = https_get(
        &pki.ca_pem,
        &format!("https://127.0.0.1:{}/test/api/invoices/1", gw.addr().port()),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    gw.shutdown();
}

#[tokio::test]
async fn reload_serves_a_new_certificate_and_can_turn_tls_off_and_on() {
    let first = Pki::new("first");
    let second = Pki::new("second");
    let leaf1 = first.leaf("gateway");
    let leaf2 = second.leaf("gateway");
    let prod = mock("prod").await;
    let test = mock("test").await;
    let with_tls = |leaf: &Leaf| serving_https(&prod, &test, leaf).config();
    let gw = Gateway::start(with_tls(&leaf1))
        .await
        .expect("gateway starts");
    assert!(gw.wait_ready(Duration::from_secs(10)).await);
    let https = format!("https://127.0.0.1:{}/prod/api/invoices/1", gw.addr().port());
    let plain = format!("http://{}/prod/api/invoices/1", gw.addr());
    assert_eq!(https_get(&first.ca_pem, &https).await.unwrap().0, 200);

    // A renewed certificate (another CA, to tell them apart) is served to new connections.
    gw.reload(with_tls(&leaf2)).await.unwrap();
    assert_eq!(https_get(&second.ca_pem, &https).await.unwrap().0, 200);
    assert!(https_get(&first.ca_pem, &https).await.is_err());

    // A key that does not belong to the certificate is refused; the running one stays.
    let mismatched = tls_test_toml(&prod, &test)
        .server_tls_cert(&leaf2.cert_file)
        .server_tls_key(&leaf1.key_file);
    let err = gw.reload(mismatched.config()).await.unwrap_err();
    assert!(err.contains("server.tls.key"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    assert_eq!(https_get(&second.ca_pem, &https).await.unwrap().0, 200);

    // TLS off: the same socket now speaks plain HTTP...
    gw.reload(tls_test_toml(&prod, &test).config())
        .await
        .unwrap();
    let http = Http::new();
    assert_eq!(http.get(&plain, &[]).await.status, StatusCode::OK);
    assert!(https_get(&second.ca_pem, &https).await.is_err());
    assert_eq!(
        prod.requests().last().unwrap().header("x-forwarded-proto"),
        Some("http")
    );
    // ...and on again.
    gw.reload(with_tls(&leaf1)).await.unwrap();
    assert_eq!(https_get(&first.ca_pem, &https).await.unwrap().0, 200);
    let (status, _) = raw(
        gw.addr(),
        "GET /prod/api/invoices/1 HTTP/1.1\r\nHost: gw\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    gw.shutdown();
}

#[tokio::test]
async fn unusable_certificate_files_stop_the_start_with_the_key_named() {
    let pki = Pki::new("broken");
    let leaf = pki.leaf("gateway");
    let not_a_cert = pki.dir.file("notes.txt", "this is not a certificate\n");
    let prod = mock("prod").await;
    let test = mock("test").await;
    let tls = tls_test_toml(&prod, &test)
        .server_tls_cert(&not_a_cert)
        .server_tls_key(&leaf.key_file);
    let err = Gateway::start(tls.config())
        .await
        .err()
        .expect("start refused");
    assert!(matches!(err, StartError::Unusable(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("server.tls.cert:") && text.contains("notes.txt"),
        "{text}"
    );
}

// ===== (b) HTTPS upstreams =====

#[tokio::test]
async fn https_upstream_trusted_through_ca_file() {
    let pki = Pki::new("upstream");
    let prod = tls_mock("prod", &pki.leaf("coupa")).await;
    assert!(prod.url().starts_with("https://127.0.0.1:"));
    let test = mock("test").await;
    let gw = gateway(&trusting_upstream(&prod, &test, Some(&pki.ca_file))).await;
    assert!(gw.wait_ready(Duration::from_secs(10)).await, "no tokens");
    assert!(prod.stats().tokens_issued >= 1);
    let http = Http::new();
    let r = http
        .get(
            &proxy_url(&gw, "/prod/api/suppliers?limit=2"),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert_eq!(prod.stats().api_requests, 1);
    gw.shutdown();
}

#[tokio::test]
async fn untrusted_upstream_is_a_tls_token_failure_until_ca_file_is_added() {
    let pki = Pki::new("untrusted");
    let prod = tls_mock("prod", &pki.leaf("coupa")).await;
    let test = mock("test").await;
    let gw = gateway(&trusting_upstream(&prod, &test, None)).await;
    let client = client_status(&gw, "prod-main", |c| !c["last_error"].is_null()).await;
    assert_eq!(client["last_error"]["kind"], "tls", "{client}");
    assert!(
        client["last_error"]["hint"]
            .as_str()
            .unwrap()
            .contains("upstream.ca_file"),
        "{client}"
    );
    let http = Http::new();
    let r = http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["error"], "token_unavailable");
    assert_eq!(prod.stats().tokens_issued, 0);

    // Adding the CA is an upstream change: both outbound clients are rebuilt and every client
    // re-mints through them before the reload is applied.
    let applied = gw
        .reload(trusting_upstream(&prod, &test, Some(&pki.ca_file)).config())
        .await
        .unwrap();
    assert_eq!(applied.new_tokens, vec!["prod-main", "test-main"]);
    let r = http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.shutdown();
}

#[tokio::test]
async fn untrusted_api_host_with_a_reachable_token_endpoint_is_a_502() {
    let pki = Pki::new("api-only");
    let api = tls_mock("prod", &pki.leaf("coupa")).await;
    // Same client, plain HTTP: tokens work, the API host's certificate is not trusted.
    let tokens = mock("prod").await;
    let test = mock("test").await;
    let toml = trusting_upstream(&api, &test, None)
        .map_instance("prod", |i| i.token_url(&tokens.token_url()));
    let gw = gateway(&toml).await;
    assert!(gw.wait_ready(Duration::from_secs(10)).await, "no tokens");
    let r = Http::new()
        .get(&proxy_url(&gw, "/prod/api/invoices/1"), &[])
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unreachable");
    assert_eq!(api.stats().api_requests, 0);
    gw.shutdown();
}

#[tokio::test]
async fn a_ca_file_without_certificates_is_refused_naming_the_key() {
    let pki = Pki::new("empty-ca");
    let empty = pki.dir.file("empty.pem", "no certificates here\n");
    let prod = mock("prod").await;
    let test = mock("test").await;
    let err = Gateway::start(trusting_upstream(&prod, &test, Some(&empty)).config())
        .await
        .err()
        .expect("start refused")
        .to_string();
    assert!(
        err.starts_with("upstream.ca_file:") && err.contains("empty.pem"),
        "{err}"
    );
    assert!(err.contains("holds no certificate"), "{err}");
}
