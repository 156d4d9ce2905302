//! The outbound proxy (`upstream.proxy` / `upstream.no_proxy`, or the environment) for both
//! clients that leave the gateway: the pooled API client and the token client.
//!
//! [`ProxyRules`] decides, per destination, whether to connect directly or through a proxy; it
//! is built once per configuration (the environment is read then, through an injectable lookup
//! so tests never touch the process environment) and used three ways:
//!
//! * [`ProxyConnector`], the pool's connector: `https://` upstreams go through an HTTP `CONNECT`
//!   tunnel (TLS stays end to end, the proxy sees only the host name), with
//!   `Proxy-Authorization: Basic` when the proxy URL carries `user:password`; plain `http://`
//!   upstreams are sent to the proxy as absolute-form requests (`GET http://host/path`), the way
//!   curl and reqwest do it. `CONNECT` to a plain-HTTP port is refused by common proxy defaults
//!   (squid allows it only to 443), absolute form is what every forward proxy accepts.
//! * [`ProxyRules::forward_authorization`]: the `Proxy-Authorization` header such absolute-form
//!   requests carry (hyper's pool does not add one), precomputed per route.
//! * [`ProxyRules::apply_to`]: the same rules for reqwest (token endpoint), which would otherwise
//!   read the environment on its own (see there).
//!
//! Proxy URLs may hold a password: they are never logged or put in an error message; only the
//! name of the setting or environment variable that holds one is.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Scheme;
use http::{HeaderValue, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::config::OutboundProxy;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Where proxies for `https://` destinations come from, in order of precedence (hyper-util's
/// and reqwest's order, which is curl's for these).
const HTTPS_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];
/// The same for `http://` destinations.
const HTTP_VARS: [&str; 4] = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];
/// Hosts reached directly.
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// One proxy URL and where it was configured.
#[derive(Clone, PartialEq, Eq)]
struct ProxyUrl {
    /// `scheme://[user:password@]host:port`, scheme added when the setting had none.
    url: String,
    /// `upstream.proxy` or the environment variable's name, for error messages.
    origin: &'static str,
    /// `host:port` only, safe to log.
    display: String,
}

/// Which destinations go through which proxy. Equal rules mean equal behaviour, which is what
/// the runtime compares to decide whether the outbound clients can be kept on reload.
pub struct ProxyRules {
    http: Option<ProxyUrl>,
    https: Option<ProxyUrl>,
    no_proxy: String,
    matcher: Option<Matcher>,
}

impl PartialEq for ProxyRules {
    fn eq(&self, other: &Self) -> bool {
        // The matcher is built from the other three.
        self.http == other.http && self.https == other.https && self.no_proxy == other.no_proxy
    }
}

impl fmt::Debug for ProxyRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl ProxyRules {
    /// No proxy for any destination.
    pub fn direct() -> Self {
        Self {
            http: None,
            https: None,
            no_proxy: String::new(),
            matcher: None,
        }
    }

    /// The rules for `setting`. With [`OutboundProxy::FromEnv`], `env` is asked for
    /// `HTTPS_PROXY`/`https_proxy` (https destinations), `HTTP_PROXY`/`http_proxy` (http
    /// destinations), `ALL_PROXY`/`all_proxy` (either, when the specific one is unset) and
    /// `NO_PROXY`/`no_proxy` (curl syntax: host names match themselves and their subdomains, a
    /// leading `.` is optional, IP addresses and CIDRs match addresses, `*` matches everything);
    /// the first non-empty variable of each group wins. `Direct` ignores the environment; `Url`
    /// uses that proxy for both schemes except for the hosts in its `no_proxy`.
    ///
    /// Errors name the setting or variable, never its value (it may hold a password).
    pub fn new(
        setting: &OutboundProxy,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let (http, https, no_proxy) = match setting {
            OutboundProxy::Direct => return Ok(Self::direct()),
            OutboundProxy::Url { url, no_proxy } => {
                let proxy = proxy_url(url, "upstream.proxy")?;
                (proxy.clone(), proxy, no_proxy.clone())
            }
            OutboundProxy::FromEnv => {
                let first = |names: &[&'static str]| {
                    names.iter().find_map(|&name| {
                        env(name)
                            .filter(|v| !v.trim().is_empty())
                            .map(|v| (name, v))
                    })
                };
                let from = |names: &[&'static str]| match first(names) {
                    Some((name, value)) => proxy_url(&value, name),
                    None => Ok(None),
                };
                let no = first(&NO_PROXY_VARS).map(|(_, v)| v).unwrap_or_default();
                (from(&HTTP_VARS)?, from(&HTTPS_VARS)?, no)
            }
        };
        let matcher = (http.is_some() || https.is_some()).then(|| {
            let url = |p: &Option<ProxyUrl>| p.as_ref().map(|p| p.url.clone()).unwrap_or_default();
            Matcher::builder()
                .http(url(&http))
                .https(url(&https))
                .no(no_proxy.clone())
                .build()
        });
        Ok(Self {
            http,
            https,
            no_proxy,
            matcher,
        })
    }

    /// True when no destination goes through a proxy.
    pub fn is_direct(&self) -> bool {
        self.matcher.is_none()
    }

    /// The proxy for `dst`, or `None` to connect directly.
    pub fn intercept(&self, dst: &Uri) -> Option<Intercept> {
        self.matcher.as_ref()?.intercept(dst)
    }

    /// The `Proxy-Authorization` value an absolute-form request to `dst` must carry: only for
    /// `http://` destinations that go through a proxy whose URL has credentials. (`https://`
    /// destinations authenticate once, on the `CONNECT`, and the tunnelled requests must not
    /// carry the header to Coupa.) Marked sensitive.
    pub fn forward_authorization(&self, dst: &Uri) -> Option<HeaderValue> {
        if dst.scheme() != Some(&Scheme::HTTP) {
            return None;
        }
        let mut auth = self.intercept(dst)?.basic_auth()?.clone();
        auth.set_sensitive(true);
        Some(auth)
    }

    /// The same rules for reqwest. By default (`system-proxy` feature off, as here) a reqwest
    /// client reads `HTTP(S)_PROXY`, `ALL_PROXY` and `NO_PROXY` itself when it is built, unless
    /// the builder gets an explicit proxy or `.no_proxy()`. So `Direct` must call
    /// `.no_proxy()`, and the other settings pass these rules explicitly, which also keeps the
    /// token client and the pool from ever disagreeing.
    pub fn apply_to(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, String> {
        builder = builder.no_proxy();
        let no_proxy = reqwest::NoProxy::from_string(&self.no_proxy);
        if let Some(p) = &self.https {
            let proxy = reqwest::Proxy::https(p.url.as_str()).map_err(|_| unusable(p.origin))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
        }
        if let Some(p) = &self.http {
            let proxy = reqwest::Proxy::http(p.url.as_str()).map_err(|_| unusable(p.origin))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy));
        }
        Ok(builder)
    }

    /// One line for logs and errors, without credentials.
    pub fn describe(&self) -> String {
        let one = |p: &Option<ProxyUrl>| match p {
            Some(p) => format!("{} (from {})", p.display, p.origin),
            None => "direct".to_owned(),
        };
        if self.is_direct() {
            return "direct".to_owned();
        }
        let mut out = format!(
            "https via {}, http via {}",
            one(&self.https),
            one(&self.http)
        );
        if !self.no_proxy.is_empty() {
            out.push_str(&format!(", bypassed for {:?}", self.no_proxy));
        }
        out
    }
}

fn unusable(origin: &str) -> String {
    format!(
        "{origin}: is not a usable proxy URL; use \"http://proxy.example.com:3128\" (with user:password@ if it needs them), or set upstream.proxy = \"none\""
    )
}

/// Validates one proxy URL the way hyper-util will read it (a missing scheme means `http://`),
/// so a typo is an error at start or reload instead of a silent direct connection.
fn proxy_url(raw: &str, origin: &'static str) -> Result<Option<ProxyUrl>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let url = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let uri: Uri = url.parse().map_err(|_| unusable(origin))?;
    let (Some(scheme), Some(authority), Some(host)) =
        (uri.scheme_str(), uri.authority(), uri.host())
    else {
        return Err(unusable(origin));
    };
    if !matches!(scheme, "http" | "https") {
        return Err(format!(
            "{origin}: only http:// and https:// proxies are supported (this one is {scheme}://); use an HTTP proxy, or set upstream.proxy = \"none\""
        ));
    }
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Ok(Some(ProxyUrl {
        display: format!("{scheme}://{host}:{port}"),
        url,
        origin,
    }))
}

/// The pool's connector: a direct TCP connection, a `CONNECT` tunnel through the proxy (https
/// destinations), or a connection to the proxy marked as proxied so hyper sends absolute-form
/// requests (http destinations). TLS to the destination is added on top by hyper-rustls; TLS to
/// an `https://` proxy is done here.
#[derive(Clone)]
pub struct ProxyConnector {
    direct: HttpConnector,
    to_proxy: HttpsConnector<HttpConnector>,
    rules: Arc<ProxyRules>,
    connect_timeout: Duration,
}

impl ProxyConnector {
    /// Wraps `http` (TCP settings for every connection). `tls` verifies `https://` proxies;
    /// `connect_timeout` bounds reaching the proxy and its answer to `CONNECT`.
    pub fn new(
        http: HttpConnector,
        tls: Arc<rustls::ClientConfig>,
        rules: Arc<ProxyRules>,
        connect_timeout: Duration,
    ) -> Self {
        let to_proxy = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http.clone());
        Self {
            direct: http,
            to_proxy,
            rules,
            connect_timeout,
        }
    }
}

/// Why a `CONNECT` tunnel could not be opened. Names the proxy by host and port only.
#[derive(Debug, thiserror::Error)]
pub enum TunnelFailed {
    /// The proxy refused or broke the tunnel (the source says how: 407, another status, EOF).
    #[error("CONNECT through the outbound proxy {proxy} failed")]
    Refused {
        /// `scheme://host:port` of the proxy.
        proxy: String,
        /// hyper-util's tunnel error.
        #[source]
        source: BoxError,
    },
    /// No tunnel within `upstream.connect_timeout`.
    #[error("CONNECT through the outbound proxy {proxy} timed out")]
    TimedOut {
        /// `scheme://host:port` of the proxy.
        proxy: String,
        /// An `io::ErrorKind::TimedOut`, so the request path answers 504 like for a direct
        /// connect timeout.
        #[source]
        source: std::io::Error,
    },
}

type Connecting = Pin<Box<dyn Future<Output = Result<EgressStream, BoxError>> + Send>>;

impl Service<Uri> for ProxyConnector {
    type Response = EgressStream;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both inner connectors are always ready (HttpConnector resolves per call).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let Some(proxy) = self.rules.intercept(&dst) else {
            let mut direct = self.direct.clone();
            return Box::pin(async move {
                let io = direct.call(dst).await?;
                Ok(EgressStream {
                    io: MaybeHttpsStream::Http(io),
                    proxied: false,
                })
            });
        };
        let display = display_of(proxy.uri());
        if dst.scheme() == Some(&Scheme::HTTPS) {
            let mut tunnel = Tunnel::new(proxy.uri().clone(), self.to_proxy.clone());
            if let Some(auth) = proxy.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            let timeout = self.connect_timeout;
            Box::pin(async move {
                // A proxy that accepts and then never answers the CONNECT would otherwise hold
                // the request until the route timeout.
                match tokio::time::timeout(timeout, tunnel.call(dst)).await {
                    Ok(Ok(io)) => Ok(EgressStream { io, proxied: false }),
                    Ok(Err(e)) => Err(TunnelFailed::Refused {
                        proxy: display,
                        source: e.into(),
                    }
                    .into()),
                    Err(_) => Err(TunnelFailed::TimedOut {
                        proxy: display,
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no tunnel within {timeout:?} (upstream.connect_timeout)"),
                        ),
                    }
                    .into()),
                }
            })
        } else {
            let mut to_proxy = self.to_proxy.clone();
            let uri = proxy.uri().clone();
            Box::pin(async move {
                let io = to_proxy.call(uri).await?;
                Ok(EgressStream { io, proxied: true })
            })
        }
    }
}

fn display_of(uri: &Uri) -> String {
    // Intercept URIs never hold credentials (hyper-util moves them into the auth value).
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map(|a| a.as_str()).unwrap_or("?")
    )
}

/// A connection made by [`ProxyConnector`]: TCP, possibly TLS to an `https://` proxy, and the
/// fact whether hyper must send absolute-form requests on it.
pub struct EgressStream {
    io: MaybeHttpsStream<TokioIo<TcpStream>>,
    proxied: bool,
}

impl fmt::Debug for EgressStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressStream")
            .field("proxied", &self.proxied)
            .finish_non_exhaustive()
    }
}

impl Connection for EgressStream {
    fn connected(&self) -> Connected {
        // PERF: not `self.io.connected()`: hyper-util's TCP stream attaches an `HttpInfo` (the
        // socket addresses) that the pooled client then copies into the extensions of every
        // response, a map allocated and freed per response that nothing here reads (callgrind:
        // benches/RESULTS.md). The TLS to an https:// proxy offers no ALPN, so the inner
        // stream has nothing else to report.
        let connected = Connected::new();
        if self.proxied {
            // Makes hyper's pool send `GET http://host/path` instead of `GET /path`.
            connected.proxy(true)
        } else {
            connected
        }
    }
}

impl Read for EgressStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for EgressStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn via(rules: &ProxyRules, dst: &str) -> Option<String> {
        rules.intercept(&uri(dst)).map(|i| display_of(i.uri()))
    }

    #[test]
    fn from_env_follows_the_scheme_specific_variables_and_no_proxy() {
        let rules = ProxyRules::new(
            &OutboundProxy::FromEnv,
            &env(&[
                ("HTTPS_PROXY", "http://tls-proxy:3128"),
                ("http_proxy", "plain-proxy:8080"),
                ("NO_PROXY", "internal.corp, 10.0.0.0/8"),
            ]),
        )
        .unwrap();
        assert_eq!(
            via(&rules, "https://acme.coupahost.com/api"),
            Some("http://tls-proxy:3128".into())
        );
        assert_eq!(
            via(&rules, "http://acme.example/api"),
            Some("http://plain-proxy:8080".into())
        );
        assert_eq!(via(&rules, "https://coupa.internal.corp/"), None);
        assert_eq!(via(&rules, "https://internal.corp/"), None);
        assert_eq!(via(&rules, "https://10.1.2.3/"), None);
        assert_eq!(
            via(&rules, "https://notinternal.corp/"),
            Some("http://tls-proxy:3128".into())
        );
    }

    #[test]
    fn from_env_precedence_uppercase_then_lowercase_then_all_proxy() {
        let rules = ProxyRules::new(
            &OutboundProxy::FromEnv,
            &env(&[
                ("HTTPS_PROXY", ""),
                ("https_proxy", "http://lower:1"),
                ("ALL_PROXY", "http://all:2"),
            ]),
        )
        .unwrap();
        // An empty variable counts as unset.
        assert_eq!(
            via(&rules, "https://x.example/"),
            Some("http://lower:1".into())
        );
        assert_eq!(
            via(&rules, "http://x.example/"),
            Some("http://all:2".into())
        );

        let rules = ProxyRules::new(
            &OutboundProxy::FromEnv,
            &env(&[
                ("HTTPS_PROXY", "http://upper:1"),
                ("https_proxy", "http://lower:2"),
            ]),
        )
        .unwrap();
        assert_eq!(
            via(&rules, "https://x.example/"),
            Some("http://upper:1".into())
        );
        assert_eq!(via(&rules, "http://x.example/"), None);

        let none = ProxyRules::new(&OutboundProxy::FromEnv, &env(&[])).unwrap();
        assert!(none.is_direct());
        assert_eq!(none, ProxyRules::direct());
    }

    #[test]
    fn direct_ignores_the_environment() {
        let rules = ProxyRules::new(
            &OutboundProxy::Direct,
            &env(&[
                ("HTTPS_PROXY", "http://proxy:3128"),
                ("ALL_PROXY", "http://p:1"),
            ]),
        )
        .unwrap();
        assert!(rules.is_direct());
        assert_eq!(via(&rules, "https://acme.coupahost.com/"), None);
    }

    #[test]
    fn a_configured_url_applies_to_both_schemes_except_no_proxy() {
        let rules = ProxyRules::new(
            &OutboundProxy::Url {
                url: "http://user:p%40ss@proxy.corp:3128".into(),
                no_proxy: ".test.coupahost.com,127.0.0.1".into(),
            },
            &env(&[("HTTPS_PROXY", "http://ignored:1")]),
        )
        .unwrap();
        assert_eq!(
            via(&rules, "https://acme.coupahost.com/"),
            Some("http://proxy.corp:3128".into())
        );
        assert_eq!(
            via(&rules, "http://acme.coupahost.com/"),
            Some("http://proxy.corp:3128".into())
        );
        assert_eq!(via(&rules, "https://acme.test.coupahost.com/"), None);
        assert_eq!(via(&rules, "http://127.0.0.1:8081/"), None);
        let auth = rules
            .intercept(&uri("https://acme.coupahost.com/"))
            .unwrap()
            .basic_auth()
            .cloned()
            .unwrap();
        // "user:p@ss", percent-decoded as curl does.
        assert_eq!(auth, "Basic dXNlcjpwQHNz");
        // Only plain-HTTP destinations carry the header on the request itself.
        let fwd = rules
            .forward_authorization(&uri("http://acme.coupahost.com/"))
            .unwrap();
        assert!(fwd.is_sensitive());
        assert_eq!(
            rules.forward_authorization(&uri("https://acme.coupahost.com/")),
            None
        );
        assert_eq!(
            rules.forward_authorization(&uri("http://127.0.0.1:8081/")),
            None
        );
        // Never the password in logs.
        let text = format!("{rules:?}");
        assert!(!text.contains("p%40ss") && !text.contains("user"), "{text}");
        assert!(text.contains("proxy.corp:3128"), "{text}");
    }

    #[test]
    fn unusable_proxy_variables_are_errors_naming_the_variable_not_the_value() {
        let e = ProxyRules::new(
            &OutboundProxy::FromEnv,
            &env(&[("ALL_PROXY", "socks5://user:secret@socks:1080")]),
        )
        .unwrap_err();
        assert!(e.starts_with("ALL_PROXY:") && e.contains("socks5"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        let e = ProxyRules::new(
            &OutboundProxy::FromEnv,
            &env(&[("https_proxy", "http://us er:secret@bad host")]),
        )
        .unwrap_err();
        assert!(
            e.starts_with("https_proxy:") && !e.contains("secret"),
            "{e}"
        );
    }

    #[test]
    fn equal_settings_give_equal_rules() {
        let a = ProxyRules::new(&OutboundProxy::FromEnv, &env(&[("HTTPS_PROXY", "p:1")])).unwrap();
        let b = ProxyRules::new(&OutboundProxy::FromEnv, &env(&[("HTTPS_PROXY", "p:1")])).unwrap();
        let c = ProxyRules::new(&OutboundProxy::FromEnv, &env(&[("HTTPS_PROXY", "p:2")])).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn reqwest_gets_the_same_rules() {
        for setting in [
            OutboundProxy::Direct,
            OutboundProxy::Url {
                url: "http://u:p@proxy:3128".into(),
                no_proxy: "localhost".into(),
            },
        ] {
            let rules = ProxyRules::new(&setting, &env(&[])).unwrap();
            let tls = crate::net::tls::client_config(None).unwrap();
            let builder = reqwest::Client::builder().tls_backend_preconfigured((*tls).clone());
            assert!(rules.apply_to(builder).unwrap().build().is_ok());
        }
    }
}
