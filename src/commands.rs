//! What each CLI subcommand does. `main.rs` only parses arguments and calls these; they return
//! `Err(message)` for the binary to print and exit non-zero.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[cfg(feature = "demo")]
use coupa_mock::{demo_instance, MockCoupa, DEMO_API_KEY};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{Config, LogFormat};
use crate::net::egress::ProxyRules;
use crate::net::server::Gateway;
use crate::net::upstream::OutboundSettings;
use crate::token::{self, FailureKind, TokenRequest};

/// Logs to stderr, as text or one JSON object per line; `RUST_LOG` sets the filter (default
/// `info`; `RUST_LOG=info,access=off` silences the access log).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Loads the config, then starts logging in the format the flag or the file asks for (a
/// config error is printed by `main` either way).
fn load_and_log(path: &Path, flag: Option<LogFormat>) -> Result<Config, String> {
    let config = load(path);
    let format = flag.unwrap_or_else(|| config.as_ref().map_or(LogFormat::Text, |c| c.log.format));
    init_logging(format);
    config
}

fn load(path: &Path) -> Result<Config, String> {
    Config::from_file(path).map_err(|e| e.to_string())
}

/// `coupa-gateway serve`: run until SIGINT/SIGTERM.
pub async fn serve(path: &Path, log_format: Option<LogFormat>) -> Result<(), String> {
    let config = load_and_log(path, log_format)?;
    let mut gateway = Gateway::start(config).await.map_err(|e| e.to_string())?;
    gateway.watch_config(path.to_path_buf());
    // One signal listener for the whole run: a second one made after readiness would leave a
    // moment in which a SIGTERM reaches no listener and is lost.
    let signal = wait_for_signal();
    tokio::pin!(signal);
    tokio::select! {
        ready = gateway.wait_ready(READY_WAIT) => {
            notify_ready(ready);
            (&mut signal).await;
        }
        () = &mut signal => {}
    }
    tracing::info!("signal received: shutting down gracefully");
    #[cfg(unix)]
    crate::ops::sd_notify::notify("STOPPING=1");
    if gateway.shutdown_gracefully().await {
        tracing::info!("all requests finished; bye");
    }
    Ok(())
}

/// How long `serve` waits for every client's first token before telling systemd it is ready
/// anyway: below systemd's default start timeout (90 s), so a Coupa outage at start does not
/// make systemd give up on a gateway whose passthrough routes work and whose `/readyz` says
/// what is missing.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Tells systemd (`Type=notify`) that the gateway is up.
fn notify_ready(every_client_has_a_token: bool) {
    let state = if every_client_has_a_token {
        "READY=1\nSTATUS=serving; every client holds a token"
    } else {
        tracing::warn!(
            wait_s = READY_WAIT.as_secs(),
            "not every client has a token yet; telling systemd the gateway is up anyway (see /readyz)"
        );
        "READY=1\nSTATUS=serving; some clients have no token yet, see /readyz"
    };
    #[cfg(unix)]
    crate::ops::sd_notify::notify(state);
    #[cfg(not(unix))]
    let _ = state;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `coupa-gateway check`: validate and print the routing table.
pub fn check(path: &Path) -> Result<(), String> {
    let config = load(path)?;
    println!("{}: OK\n", path.display());
    println!("{}", config.describe_routes());
    Ok(())
}

/// `coupa-gateway token CLIENT`: the migration guide's connectivity test.
pub async fn token(path: &Path, client: &str, show_token: bool) -> Result<(), String> {
    let config = load(path)?;
    let Some(c) = config.clients.get(client) else {
        let known: Vec<&str> = config.clients.keys().map(String::as_str).collect();
        return Err(format!(
            "no client named {client:?} in {}; known: {}",
            path.display(),
            known.join(", ")
        ));
    };
    let instance = &config.instances[&c.instance];
    let request = TokenRequest::new(c, instance);
    // The gateway's own outbound path: same CA file, same proxy (and proxy environment).
    let outbound = OutboundSettings::load(&config.upstream, &|name| std::env::var(name).ok())?;
    let tls = crate::net::tls::client_config(config.upstream.ca_file.as_deref())?;
    let http = token::http_client(tls, &outbound.proxy)?;
    println!("client:     {client}");
    println!("instance:   {} ({})", instance.name, instance.url);
    println!("token URL:  {}", request.token_url);
    println!("requesting: {}", request.scopes.join(" "));
    match token::fetch(&http, &request).await {
        Ok(minted) => {
            match &minted.scope {
                Some(s) => println!("granted:    {s}"),
                None => println!("granted:    (not echoed by the token endpoint)"),
            }
            let secs = minted.expires_in.as_secs();
            let assumed = if minted.expires_in_assumed {
                " (not sent; assumed)"
            } else {
                ""
            };
            println!(
                "expires_in: {secs} s ({}){assumed}",
                humantime::format_duration(Duration::from_secs(secs))
            );
            if show_token {
                println!("token:      {}", minted.access_token.expose_secret());
            } else {
                println!("token:      (hidden; add --show-token to print it)");
            }
            println!("\nOK: the client can mint tokens. Coupa advises waiting ~5 s before a new token's first use.");
            Ok(())
        }
        Err(err) => {
            let kind = err.kind();
            // A connect failure may be DNS: ask the resolver directly rather than parse text.
            if kind == FailureKind::Connect && !resolves(&request.token_url).await {
                return Err(format!(
                    "token request failed: cannot resolve the host of {} (DNS); check the instance URL and the machine's resolver",
                    request.token_url
                ));
            }
            Err(format!(
                "token request failed ({}): {err}\nhint: {}",
                kind.as_str(),
                err.hint()
            ))
        }
    }
}

async fn resolves(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else { return false };
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    tokio::net::lookup_host((host, port))
        .await
        .is_ok_and(|mut a| a.next().is_some())
}

/// `coupa-gateway hash-key`: the line to paste into an `[[integrations]]` entry.
pub fn hash_key() -> Result<(), String> {
    use std::io::Read;
    let mut key = String::new();
    std::io::stdin()
        .read_to_string(&mut key)
        .map_err(|e| format!("cannot read the key from standard input: {e}"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(
            "no key on standard input; e.g. `printf %s \"$KEY\" | coupa-gateway hash-key`".into(),
        );
    }
    println!("{}", crate::migration::identity::hash_key_line(key));
    Ok(())
}

/// Where `report` and `health` find the admin listener, and the token they send.
pub struct AdminTarget {
    base: String,
    token: Option<SecretString>,
}

impl AdminTarget {
    /// `--admin`, else the config file's `admin.listen`; `--admin-token` (or
    /// `COUPA_GATEWAY_ADMIN_TOKEN`), else the config file's `admin.token` / `token_file`.
    /// A config file that cannot be read leaves the defaults: no token, `127.0.0.1:9090`.
    pub fn new(admin: Option<String>, token: Option<String>, path: &Path) -> Self {
        let config = Config::from_file(path).ok();
        let token = token.map(SecretString::from).or_else(|| {
            config
                .as_ref()?
                .admin
                .token
                .as_ref()
                .map(|t| t.secret.clone())
        });
        Self {
            base: admin_base(admin.as_deref(), config.as_ref()),
            token,
        }
    }

    fn get(&self, client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
        self.authorised(client.get(url))
    }

    fn post(&self, client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
        self.authorised(client.post(url))
    }

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token.expose_secret()),
            None => request,
        }
    }
}

/// The admin listener's base URL: `--admin`, else `http://` + the config file's `admin.listen`
/// (an unspecified address such as `0.0.0.0` is reached on loopback), else the default
/// `127.0.0.1:9090`.
fn admin_base(admin: Option<&str>, config: Option<&Config>) -> String {
    if let Some(a) = admin {
        return a.trim_end_matches('/').to_owned();
    }
    let mut addr = config
        .map(|c| c.admin.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090)));
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// A client for the admin listener, which is private and close by: never through an
/// outbound proxy.
fn admin_client() -> Result<reqwest::Client, String> {
    token::http_client(crate::net::tls::client_config(None)?, &ProxyRules::direct())
}

/// `coupa-gateway health`: exit 0 when the admin listener answers 2xx on `/healthz` (or
/// `/readyz` with `ready`) within 5 s. For container health checks on images without curl.
pub async fn health(target: &AdminTarget, ready: bool) -> Result<(), String> {
    let base = &target.base;
    let url = format!("{base}/{}", if ready { "readyz" } else { "healthz" });
    let resp = target
        .get(&admin_client()?, &url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {}", crate::errors::error_chain(&e)))?;
    let status = resp.status();
    if status.is_success() {
        println!("{url}: {status}");
        return Ok(());
    }
    // /readyz names the clients still waiting for a token: worth showing.
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(512).collect();
    Err(format!("{url} answered {status}: {body}"))
}

/// `coupa-gateway report`: fetch `/status` from a running gateway and print it readably, or
/// with `json` its integrations and unrecognised keys as one JSON document.
pub async fn report(target: &AdminTarget, json: bool, forget: Option<&str>) -> Result<(), String> {
    if let Some(name) = forget {
        forget_integration(target, name).await?;
    }
    let base = &target.base;
    let url = format!("{base}/status");
    let resp = target
        .get(&admin_client()?, &url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot reach {url}: {}; is the gateway running? pass --admin URL",
                crate::errors::error_chain(&e)
            )
        })?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Err(format!(
            "{url} answered 401: the admin listener needs its token; pass --admin-token, set COUPA_GATEWAY_ADMIN_TOKEN, or run with the gateway's config file (admin.token)"
        ));
    }
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading {url}: {e}"))?;
    let status: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{url} did not answer a status document: {e}"))?;
    if json {
        let doc = serde_json::json!({
            "started_at": status["started_at"],
            "ledger": status["ledger"],
            "integrations": status["integrations"],
            "discovered_keys": status["discovered_keys"],
            "discovered_keys_evicted": status["discovered_keys_evicted"],
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", crate::migration::report::render_text(&status));
    }
    Ok(())
}

/// `report --forget NAME`: asks the gateway to drop an integration's history.
async fn forget_integration(target: &AdminTarget, name: &str) -> Result<(), String> {
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || !name.chars().all(bare) {
        return Err(format!(
            "--forget {name:?}: not an integration name (letters, digits, '-' and '_')"
        ));
    }
    let url = format!("{}/ledger/forget?integration={name}", target.base);
    let resp = target
        .post(&admin_client()?, &url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {}", crate::errors::error_chain(&e)))?;
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        return Err(format!(
            "--forget {name}: {}",
            body["message"].as_str().unwrap_or(status.as_str())
        ));
    }
    if body["forgotten"] == serde_json::Value::Bool(true) {
        eprintln!("forgot integration {name}: its history is removed from the ledger");
    } else {
        eprintln!("integration {name}: the ledger holds no history under that name");
    }
    Ok(())
}

#[cfg(feature = "demo")]
async fn start_mocks(prod: SocketAddr, test: SocketAddr) -> Result<(MockCoupa, MockCoupa), String> {
    let start = |name: &'static str, addr: SocketAddr| async move {
        MockCoupa::start(demo_instance(name, addr))
            .await
            .map_err(|e| {
                format!(
                    "mock {name}: cannot listen on {addr}: {e}; pass --{name} with a free address"
                )
            })
    };
    Ok((start("prod", prod).await?, start("test", test).await?))
}

/// `coupa-gateway mock`: the two demo instances until Ctrl-C.
#[cfg(feature = "demo")]
pub async fn mock(prod: SocketAddr, test: SocketAddr) -> Result<(), String> {
    let (p, t) = start_mocks(prod, test).await?;
    println!(
        "mock Coupa \"prod\" on {}  (client demo-prod-client / demo-prod-secret)",
        p.url()
    );
    println!(
        "mock Coupa \"test\" on {}  (client demo-test-client / demo-test-secret)",
        t.url()
    );
    println!("legacy API key accepted by both: {DEMO_API_KEY}");
    wait_for_signal().await;
    Ok(())
}

/// `coupa-gateway demo`: mock + gateway, then curl lines to paste.
#[cfg(feature = "demo")]
pub async fn demo(
    path: &Path,
    prod: SocketAddr,
    test: SocketAddr,
    log_format: Option<LogFormat>,
) -> Result<(), String> {
    let config = load_and_log(path, log_format)?;
    let (_p, _t) = start_mocks(prod, test).await?;
    let listen = config.server.listen;
    let routes: Vec<String> = config.routes.iter().map(|r| r.prefix.clone()).collect();
    let mut gateway = Gateway::start(config).await.map_err(|e| e.to_string())?;
    gateway.watch_config(path.to_path_buf());
    if !gateway.wait_ready(Duration::from_secs(10)).await {
        eprintln!(
            "warning: not every client has a token yet; see http://{}/status",
            gateway.admin_addr()
        );
    }
    let base = format!("http://{listen}");
    println!("\ncoupa-gateway demo: the mock Coupa is behind the gateway. Try:\n");
    for prefix in &routes {
        println!("  curl -s -H 'Accept: application/json' '{base}{prefix}/api/suppliers?limit=2'");
    }
    if let Some(prefix) = routes.first() {
        println!("  curl -s -H 'X-COUPA-API-KEY: {DEMO_API_KEY}' '{base}{prefix}/api/invoices/1'     # legacy key stripped, bearer injected");
        println!("  curl -sg -H 'Accept: application/json' '{base}{prefix}/api/invoices?fields=[\"id\",\"status\"]&updated-at[gt]=2024-01-01'");
    }
    println!("  curl -s http://{}/status", gateway.admin_addr());
    println!("  curl -s http://{}/metrics", gateway.admin_addr());
    println!("\nCtrl-C stops the demo.");
    wait_for_signal().await;
    gateway.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_base_prefers_the_flag_then_the_config() {
        let dir =
            std::env::temp_dir().join(format!("coupa-gateway-admin-base-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("proxy.toml");
        let toml = |admin: &str| {
            format!(
                "[admin]\nlisten = \"{admin}\"\n[instances.prod]\nurl = \"http://127.0.0.1:1\"\n\
                 [clients.c]\ninstance = \"prod\"\nclient_id = \"id\"\nclient_secret = \"s\"\n\
                 scopes = [\"core.common.read\"]\n[[routes]]\nprefix = \"/prod\"\ninstance = \"prod\"\n"
            )
        };
        let base =
            |admin: Option<&str>| AdminTarget::new(admin.map(str::to_owned), None, &file).base;
        assert_eq!(base(Some("http://h:1/")), "http://h:1");
        // No file: the default.
        assert_eq!(base(None), "http://127.0.0.1:9090");
        std::fs::write(&file, toml("127.0.0.1:9191")).unwrap();
        assert_eq!(base(None), "http://127.0.0.1:9191");
        // A container's 0.0.0.0 listener is reached on loopback.
        std::fs::write(&file, toml("0.0.0.0:9292")).unwrap();
        assert_eq!(base(None), "http://127.0.0.1:9292");
        std::fs::write(&file, toml("[::]:9393")).unwrap();
        assert_eq!(base(None), "http://[::1]:9393");
        // The token: the flag, else the file's.
        let with_token = toml("127.0.0.1:9191").replacen(
            "[admin]\n",
            "[admin]\ntoken = \"0123456789abcdef\"\n",
            1,
        );
        std::fs::write(&file, with_token).unwrap();
        let token = |flag: Option<&str>| {
            AdminTarget::new(None, flag.map(str::to_owned), &file)
                .token
                .map(|t| t.expose_secret().to_owned())
        };
        assert_eq!(token(None).as_deref(), Some("0123456789abcdef"));
        assert_eq!(
            token(Some("from-the-flag")).as_deref(),
            Some("from-the-flag")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
