//! The outbound proxy, end to end on loopback: a tiny forward proxy written here (plain HTTP or
//! TLS-terminating) that counts CONNECT tunnels, absolute-form requests and TLS handshakes;
//! tokens and API traffic through it, its credentials, `no_proxy`, and an `https://` proxy
//! trusted (or not) through `upstream.ca_file`.
//! Certificates are made at run time with rcgen; nothing is read from the system trust store
//! that these tests rely on.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use coupa_gateway::net::server::Gateway;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A forward proxy on loopback: CONNECT tunnels and absolute-form requests, optional Basic
/// authentication, counters. It only ever connects to loopback targets.
struct TestProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    /// `Basic …` the proxy requires, if any.
    required_auth: Option<String>,
    tunnels: AtomicU64,
    forwarded: AtomicU64,
    refused: AtomicU64,
    /// TLS handshakes completed / failed (an `https://` proxy only).
    tls_accepted: AtomicU64,
    tls_failed: AtomicU64,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestProxy {
    /// A plain-HTTP proxy (`http://127.0.0.1:port`).
    async fn start(credentials: Option<(&str, &str)>) -> TestProxy {
        Self::start_with(credentials, None).await
    }

    /// An `https://` proxy: every accepted connection is a TLS handshake with `leaf`'s
    /// certificate first (no ALPN: CONNECT and absolute-form requests are HTTP/1.1).
    async fn start_tls(credentials: Option<(&str, &str)>, leaf: &Leaf) -> TestProxy {
        let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Self::start_with(credentials, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(credentials: Option<(&str, &str)>, tls: Option<TlsAcceptor>) -> TestProxy {
        use base64_like::basic;
        let state = Arc::new(ProxyState {
            required_auth: credentials.map(|(u, p)| basic(u, p)),
            ..ProxyState::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let upstream: Client<HttpConnector, Incoming> =
                Client::builder(TokioExecutor::new()).build_http();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, upstream, tls) = (shared.clone(), upstream.clone(), tls.clone());
                tokio::spawn(async move {
                    let Some(tls) = tls else {
                        return serve_proxy(stream, state, upstream).await;
                    };
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), tls.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            state.tls_accepted.fetch_add(1, Ordering::Relaxed);
                            serve_proxy(stream, state, upstream).await;
                        }
                        _ => {
                            state.tls_failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        TestProxy { addr, state, task }
    }

    fn tunnels(&self) -> u64 {
        self.state.tunnels.load(Ordering::Relaxed)
    }

    fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::Relaxed)
    }

    fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::Relaxed)
    }

    fn tls_accepted(&self) -> u64 {
        self.state.tls_accepted.load(Ordering::Relaxed)
    }

    fn tls_failed(&self) -> u64 {
        self.state.tls_failed.load(Ordering::Relaxed)
    }
}

/// One client connection of the proxy, plain or already TLS.
async fn serve_proxy<S>(
    stream: S,
    state: Arc<ProxyState>,
    upstream: Client<HttpConnector, Incoming>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| proxy_request(state.clone(), upstream.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
}

fn answer(status: StatusCode) -> Response<TestBody> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = status;
    resp
}

async fn proxy_request(
    state: Arc<ProxyState>,
    upstream: Client<HttpConnector, Incoming>,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    if let Some(required) = &state.required_auth {
        let given = req.headers().get(http::header::PROXY_AUTHORIZATION);
        if given.and_then(|v| v.to_str().ok()) != Some(required.as_str()) {
            state.refused.fetch_add(1, Ordering::Relaxed);
            let mut resp = answer(StatusCode::PROXY_AUTHENTICATION_REQUIRED);
            resp.headers_mut().insert(
                http::header::PROXY_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"test\""),
            );
            return Ok(resp);
        }
    }
    let Some(authority) = req.uri().authority().cloned() else {
        // Origin form: whoever sent it did not treat us as a proxy.
        return Ok(answer(StatusCode::BAD_REQUEST));
    };
    if !matches!(authority.host(), "127.0.0.1" | "localhost") {
        return Ok(answer(StatusCode::FORBIDDEN));
    }
    if req.method() == Method::CONNECT {
        state.tunnels.fetch_add(1, Ordering::Relaxed);
        let target = format!("127.0.0.1:{}", authority.port_u16().unwrap_or(443));
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                return;
            };
            let Ok(mut server) = TcpStream::connect(target).await else {
                return;
            };
            let mut client = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
        return Ok(answer(StatusCode::OK));
    }
    state.forwarded.fetch_add(1, Ordering::Relaxed);
    // Hop-by-hop for the proxy: never passed on.
    req.headers_mut().remove(http::header::PROXY_AUTHORIZATION);
    req.headers_mut().remove("proxy-connection");
    match upstream.request(req).await {
        Ok(resp) => Ok(resp.map(|b| b.map_err(Into::into).boxed())),
        Err(_) => Ok(answer(StatusCode::BAD_GATEWAY)),
    }
}

/// `Basic base64(user:password)` without a base64 dependency (the test's own, to check the
/// gateway's encoding independently).
mod base64_like {
    pub fn basic(user: &str, password: &str) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let input = format!("{user}:{password}").into_bytes();
        let mut out = String::from("Basic ");
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn matches_rfc_7617_example() {
        assert_eq!(
            basic("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}

/// Waits for both clients' tokens and checks that prod's (https) used a CONNECT tunnel and
/// test's (http) an absolute-form request; returns those two counts.
async fn tokens_went_through(gw: &Gateway, proxy: &TestProxy) -> (u64, u64) {
    assert!(gw.wait_ready(Duration::from_secs(10)).await, "no tokens");
    let (tunnels, forwards) = (proxy.tunnels(), proxy.forwarded());
    assert!(tunnels >= 1, "prod's token did not use a tunnel");
    assert!(forwards >= 1, "test's token was not forwarded");
    (tunnels, forwards)
}

/// After [`tokens_went_through`]: prod's API request (https) goes through a tunnel of its own
/// and test's (http) is forwarded, both answered.
async fn api_went_through(gw: &Gateway, proxy: &TestProxy, (tunnels, forwards): (u64, u64)) {
    let http = Http::new();
    let r = http.get(&proxy_url(gw, "/prod/api/invoices/1"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        proxy.tunnels() > tunnels,
        "prod's API traffic skipped the proxy"
    );
    let r = http.get(&proxy_url(gw, "/test/api/invoices/1"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        proxy.forwarded() > forwards,
        "test's API traffic skipped the proxy"
    );
}

#[tokio::test]
async fn tokens_and_api_traffic_go_through_the_configured_proxy() {
    let pki = Pki::new("proxied");
    let prod = tls_mock("prod", &pki.leaf("coupa")).await;
    let test = mock("test").await;
    // The password holds a `:` (percent-encoded in the URL), as real ones do.
    let proxy = TestProxy::start(Some(("gw-user", "s3cr:et"))).await;
    let gw = gateway(
        &tls_test_toml(&prod, &test)
            .upstream_ca_file(&pki.ca_file)
            .upstream_proxy(&format!(
                "http://gw-user:s3cr%3Aet@127.0.0.1:{}",
                proxy.addr.port()
            )),
    )
    .await;
    // Token requests: https through a CONNECT tunnel, http as absolute-form requests.
    let for_tokens = tokens_went_through(&gw, &proxy).await;
    api_went_through(&gw, &proxy, for_tokens).await;
    assert_eq!(proxy.refused(), 0, "credentials were not sent every time");
    // Inside the tunnel, Coupa sees no proxy credentials.
    let seen = prod.requests();
    assert_eq!(seen.last().unwrap().header("proxy-authorization"), None);
    // And the password appears nowhere an operator looks.
    let status = status_text(&gw).await;
    assert!(!status.contains("s3cr"), "{status}");
    gw.shutdown();
}

#[tokio::test]
async fn wrong_proxy_credentials_fail_without_leaking_them() {
    let proxy = TestProxy::start(Some(("gw-user", "right"))).await;
    let prod = mock("prod").await;
    let test = mock("test").await;
    let gw = gateway(&tls_test_toml(&prod, &test).upstream_proxy(&format!(
        "http://gw-user:wrong-pw@127.0.0.1:{}",
        proxy.addr.port()
    )))
    .await;
    let client = client_status(&gw, "prod-main", |c| !c["last_error"].is_null()).await;
    assert!(!client["last_error"].is_null(), "{client}");
    assert!(proxy.refused() >= 1);
    assert_eq!(prod.stats().token_requests, 0);
    let status = status_text(&gw).await;
    assert!(!status.contains("wrong-pw"), "{status}");
    gw.shutdown();
}

#[tokio::test]
async fn no_proxy_hosts_bypass_the_proxy() {
    let pki = Pki::new("bypass");
    let prod = tls_mock("prod", &pki.leaf("coupa")).await;
    let test = mock("test").await;
    let proxy = TestProxy::start(None).await;
    let gw = gateway(
        &tls_test_toml(&prod, &test)
            .upstream_ca_file(&pki.ca_file)
            .upstream_proxy(&format!("http://127.0.0.1:{}", proxy.addr.port()))
            .upstream_no_proxy("localhost, 127.0.0.1"),
    )
    .await;
    assert!(gw.wait_ready(Duration::from_secs(10)).await, "no tokens");
    let http = Http::new();
    for path in ["/prod/api/invoices/1", "/test/api/invoices/1"] {
        let r = http.get(&proxy_url(&gw, path), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
    assert_eq!(proxy.tunnels(), 0);
    assert_eq!(proxy.forwarded(), 0);
    gw.shutdown();
}

#[tokio::test]
async fn an_https_proxy_is_reached_over_tls_for_tokens_and_api_traffic() {
    let pki = Pki::new("tls-proxy");
    let prod = tls_mock("prod", &pki.leaf("coupa")).await;
    let test = mock("test").await;
    // `localhost` is in the proxy's certificate (as is 127.0.0.1); the name is what the
    // gateway verifies it against.
    let proxy = TestProxy::start_tls(Some(("gw-user", "tls-pw")), &pki.leaf("proxy")).await;
    // One CA file trusts both the proxy's certificate and prod's.
    let gw = gateway(
        &tls_test_toml(&prod, &test)
            .upstream_ca_file(&pki.ca_file)
            .upstream_proxy(&format!(
                "https://gw-user:tls-pw@localhost:{}",
                proxy.addr.port()
            )),
    )
    .await;
    // Token requests: prod's (https) through a CONNECT tunnel inside TLS to the proxy, test's
    // (http) as absolute-form requests inside TLS to the proxy.
    let for_tokens = tokens_went_through(&gw, &proxy).await;
    assert!(prod.stats().tokens_issued >= 1 && test.stats().tokens_issued >= 1);
    let handshakes_for_tokens = proxy.tls_accepted();
    assert!(handshakes_for_tokens >= 2, "{handshakes_for_tokens}");
    api_went_through(&gw, &proxy, for_tokens).await;
    assert_eq!(prod.stats().api_requests, 1);
    assert_eq!(test.stats().api_requests, 1);
    // The pool opened its own connections to the proxy, over TLS too; no connection to the
    // proxy was plain or failed its handshake.
    assert!(proxy.tls_accepted() > handshakes_for_tokens);
    assert_eq!(proxy.tls_failed(), 0);
    assert_eq!(proxy.refused(), 0, "credentials were not sent every time");
    assert_eq!(
        prod.requests()
            .last()
            .unwrap()
            .header("proxy-authorization"),
        None
    );
    let status = status_text(&gw).await;
    assert!(!status.contains("tls-pw"), "{status}");
    gw.shutdown();
}

#[tokio::test]
async fn an_untrusted_https_proxy_fails_tokens_as_tls_and_api_traffic_as_502() {
    let pki = Pki::new("tls-proxy-untrusted");
    let proxy = TestProxy::start_tls(None, &pki.leaf("proxy")).await;
    // Plain-HTTP Coupa: the proxy's certificate is the only one the gateway checks.
    let api = mock("prod").await;
    let tokens = mock("prod").await;
    let test = mock("test").await;
    // prod's token endpoint bypasses the proxy (`no_proxy = "localhost"`), so prod gets a token
    // and its API traffic reaches the pool's connector; test goes through the proxy for both.
    let token_url = tokens.token_url().replace("127.0.0.1", "localhost");
    let gw = gateway(
        &tls_test_toml(&api, &test)
            .map_instance("prod", |i| i.token_url(&token_url))
            .upstream_proxy(&format!("https://127.0.0.1:{}", proxy.addr.port()))
            .upstream_no_proxy("localhost"),
    )
    .await;

    // The token request through the proxy fails its TLS handshake with the proxy.
    let client = client_status(&gw, "test-main", |c| !c["last_error"].is_null()).await;
    assert_eq!(client["last_error"]["kind"], "tls", "{client}");
    // rustls' reason, as for an untrusted Coupa certificate (the message cannot tell whose
    // certificate it was); the hint names both places to look.
    let message = client["last_error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("could not reach the token endpoint:")
            && message.ends_with("invalid peer certificate: UnknownIssuer"),
        "{client}"
    );
    let hint = client["last_error"]["hint"].as_str().unwrap();
    assert!(
        hint.contains("upstream.ca_file") && hint.contains("outbound proxy"),
        "{client}"
    );
    assert!(client["token"].is_null(), "{client}");
    assert_eq!(test.stats().token_requests, 0);
    assert!(!gw.wait_ready(Duration::from_millis(200)).await);
    let http = Http::new();
    let r = http.get(&proxy_url(&gw, "/test/api/invoices/1"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["error"], "token_unavailable");

    // prod has its token; its API request dies at the handshake with the proxy: a 502.
    let prod_client = client_status(&gw, "prod-main", |c| c["token"]["valid"] == true).await;
    assert_eq!(prod_client["token"]["valid"], true, "{prod_client}");
    let r = http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unreachable");
    assert_eq!(api.stats().api_requests, 0);

    // Every connection to the proxy failed its handshake (the token client's and the pool's;
    // the proxy's side may see the gateway's alert a moment after the 502 is out), and
    // nothing was tunnelled or forwarded.
    for _ in 0..500 {
        if proxy.tls_failed() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.tls_failed() >= 2, "{}", proxy.tls_failed());
    assert_eq!(proxy.tls_accepted(), 0);
    assert_eq!((proxy.tunnels(), proxy.forwarded()), (0, 0));
    gw.shutdown();
}
