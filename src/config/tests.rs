//! Tests of `Config` as a whole (parsing, defaults, `from_file`, what is shown), and the
//! helpers every section's tests build their files with.

use std::collections::HashMap;

use secrecy::ExposeSecret;

use super::*;

pub(super) const SECRET: &str = "s3cr3t-Value-42";

pub(super) fn instance(name: &str) -> String {
    format!("[instances.{name}]\nurl = \"https://{name}.coupahost.com\"\n")
}

pub(super) fn client(name: &str, instance: &str) -> String {
    format!(
        "[clients.{name}]\ninstance = \"{instance}\"\nclient_id = \"id-{name}\"\n\
         client_secret = \"{SECRET}\"\nscopes = [\"core.invoice.read\"]\n"
    )
}

pub(super) fn route(prefix: &str, instance: &str) -> String {
    format!("[[routes]]\nprefix = \"{prefix}\"\ninstance = \"{instance}\"\n")
}

/// One instance `prod`, one client `prod-main`, one route `/prod`.
pub(super) fn minimal() -> String {
    instance("prod") + &client("prod-main", "prod") + &route("/prod", "prod")
}

pub(super) fn parse_with(
    text: &str,
    vars: &[(&str, &str)],
    base_dir: &Path,
) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::parse(text, &|name: &str| vars.get(name).cloned(), base_dir)
}

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with(text, &[], Path::new("."))
}

/// The rendered error; fails the test when `text` is valid.
pub(super) fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
pub(super) fn assert_error(text: &str, expected: &[&str]) {
    let message = error(text);
    for part in expected {
        assert!(message.contains(part), "{part:?} not in:\n{message}");
    }
    assert!(!message.contains(SECRET), "secret leaked:\n{message}");
}

/// A directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("coupa-gateway-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) const HASH: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

pub(super) fn integration(name: &str, extra: &str) -> String {
    format!("[[integrations]]\nname = \"{name}\"\n{extra}\n")
}

#[test]
fn minimal_config_gets_defaults() {
    let config = parse(&minimal()).expect("valid");
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.server.request_timeout, Duration::from_secs(120));
    assert_eq!(config.admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(config.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.upstream.pool_idle_timeout, Duration::from_secs(50));
    assert_eq!(config.upstream.pool_max_idle_per_host, 1024);
    let prod = &config.instances["prod"];
    assert_eq!(prod.name, "prod");
    assert_eq!(prod.url.to_string(), "https://prod.coupahost.com/");
    assert_eq!(prod.base_path, "");
    assert_eq!(prod.token_url, "https://prod.coupahost.com/oauth2/token");
    assert_eq!(prod.token_timeout, Duration::from_secs(10));
    let main = &config.clients["prod-main"];
    assert_eq!(main.name, "prod-main");
    assert_eq!(main.instance, "prod");
    assert_eq!(main.client_id, "id-prod-main");
    assert_eq!(main.client_secret.expose_secret(), SECRET);
    assert_eq!(main.scopes, ["core.invoice.read"]);
    assert_eq!(main.refresh_after, Duration::from_secs(20 * 3600));
    assert_eq!(main.token_warmup, Duration::from_secs(5));
    let route = &config.routes[0];
    assert_eq!(route.prefix, "/prod");
    assert_eq!(route.instance, "prod");
    assert_eq!(
        route.client.as_deref(),
        Some("prod-main"),
        "the only client is picked"
    );
    assert_eq!(route.timeout, Duration::from_secs(120));
    assert_eq!(config.source, None);
}

#[test]
fn full_config_uses_every_value() {
    let text = r#"
        [server]
        listen = "0.0.0.0:8000"
        request_timeout = "90s"
        [admin]
        listen = "[::1]:9999"
        [upstream]
        connect_timeout = "2s"
        pool_idle_timeout = "30s"
        pool_max_idle_per_host = 0
        [instances.prod]
        url = "https://acme.coupahost.com/coupa/"
        token_url = "https://login.example.com/token"
        token_timeout = "3s"
        [instances.test]
        url = "http://localhost:3000"
        [clients.prod-a]
        instance = "prod"
        client_id = "a"
        client_secret = "x"
        scopes = ["core.invoice.read", "core.supplier.read"]
        refresh_after = "1h 30m"
        token_warmup = "0s"
        [clients.prod-b]
        instance = "prod"
        client_id = "b"
        client_secret = "y"
        scopes = ["core.invoice.write"]
        [clients.test-main]
        instance = "test"
        client_id = "t"
        client_secret = "z"
        scopes = ["core.common.read"]
        [[routes]]
        prefix = "/prod/"
        instance = "prod"
        client = "prod-b"
        timeout = "5m"
        allow_anonymous = true
        [[routes]]
        prefix = "/"
        instance = "test"
        allow_anonymous = true
    "#;
    let config = parse(text).expect("valid");
    assert_eq!(config.server.listen, "0.0.0.0:8000".parse().unwrap());
    assert_eq!(config.server.request_timeout, Duration::from_secs(90));
    assert_eq!(config.admin.listen, "[::1]:9999".parse().unwrap());
    assert_eq!(config.upstream.connect_timeout, Duration::from_secs(2));
    assert_eq!(config.upstream.pool_idle_timeout, Duration::from_secs(30));
    assert_eq!(config.upstream.pool_max_idle_per_host, 0);
    let prod = &config.instances["prod"];
    assert_eq!(prod.url.to_string(), "https://acme.coupahost.com/");
    assert_eq!(prod.base_path, "/coupa");
    assert_eq!(prod.token_url, "https://login.example.com/token");
    assert_eq!(prod.token_timeout, Duration::from_secs(3));
    let test = &config.instances["test"];
    assert_eq!(test.token_url, "http://localhost:3000/oauth2/token");
    let a = &config.clients["prod-a"];
    assert_eq!(a.scopes, ["core.invoice.read", "core.supplier.read"]);
    assert_eq!(a.refresh_after, Duration::from_secs(90 * 60));
    assert_eq!(a.token_warmup, Duration::ZERO);
    assert_eq!(config.routes[0].prefix, "/prod");
    assert_eq!(config.routes[0].client.as_deref(), Some("prod-b"));
    assert_eq!(config.routes[0].timeout, Duration::from_secs(300));
    assert_eq!(config.routes[1].prefix, "/");
    assert_eq!(config.routes[1].client.as_deref(), Some("test-main"));
    assert_eq!(config.routes[1].timeout, Duration::from_secs(90));
}

#[test]
fn unknown_keys_and_syntax_errors_keep_toml_details() {
    let message = error(&(minimal() + "[server]\nlisten = \"127.0.0.1:1\"\nlsiten = \"x\"\n"));
    assert!(message.contains("unknown field `lsiten`"), "{message}");
    assert!(message.contains("`listen`"), "expected names: {message}");
    assert!(message.contains("in `server`"), "{message}");
    assert!(message.contains("line "), "{message}");
    assert_error("[server\n", &["line 1, column 8"]);
    assert_error("[tls]\ncert = \"x\"\n", &["unknown field `tls`"]);
}

#[test]
fn toml_errors_never_echo_a_secret_line() {
    let typo = minimal().replace("client_secret =", "client_secrett =");
    assert_error(
        &typo,
        &["unknown field `client_secrett`", "in `clients.prod-main`"],
    );
}

#[test]
fn from_file_sets_source_and_prefixes_errors() {
    let dir = TempDir::new("from-file");
    std::fs::write(dir.0.join("prod.secret"), SECRET).expect("write");
    let path = dir.0.join("proxy.toml");
    let text = minimal().replace(
        &format!("client_secret = \"{SECRET}\""),
        "client_secret_file = \"prod.secret\"",
    );
    std::fs::write(&path, &text).expect("write");
    let config = Config::from_file(&path).expect("valid");
    assert_eq!(config.source.as_deref(), Some(path.as_path()));
    assert_eq!(
        config.clients["prod-main"].client_secret.expose_secret(),
        SECRET
    );

    std::fs::write(
        &path,
        text.replace("/prod\"", "prod\"") + "[server]\nlisten = \"x\"\n",
    )
    .expect("write");
    let err = Config::from_file(&path).unwrap_err();
    assert_eq!(err.problems.len(), 2);
    for line in err.to_string().lines() {
        assert!(line.starts_with(&format!("{}: ", path.display())), "{line}");
    }

    let err = Config::from_file(&dir.0.join("absent.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("absent.toml: cannot read the configuration file"),
        "{err}"
    );
}

#[test]
fn secret_never_in_debug_output() {
    let config = parse(&minimal()).expect("valid");
    let debug = format!("{config:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(!config.describe_routes().contains(SECRET));
    let err = parse(&(minimal() + "[server]\nlisten = \"x\"\n")).unwrap_err();
    assert!(!format!("{err:?}").contains(SECRET));
}

#[test]
fn describe_routes_is_aligned() {
    let test_client = client("test-main", "test").replace("\"core.invoice.read\"", "\"a\", \"b\"");
    let text = minimal() + &instance("test") + &test_client + &route("/", "test");
    let config = parse(&text).expect("valid");
    let table = config.describe_routes();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert_eq!(
        lines[0],
        "/prod/...  ->  https://prod.coupahost.com/...  (mode oauth, instance prod, client prod-main, timeout 2m, scope_check warn, callers anyone, scopes core.invoice.read)"
    );
    assert_eq!(
        lines[1],
        "/...       ->  https://test.coupahost.com/...  (mode oauth, instance test, client test-main, timeout 2m, scope_check warn, callers anyone, scopes a b)"
    );
}
