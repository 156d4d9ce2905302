//! The command line and the shipped `proxy.toml`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use coupa_gateway::config::{Config, StateStore};
use coupa_gateway::net::server::Gateway;

#[tokio::test]
async fn shipped_proxy_toml_works_against_the_demo_mocks() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let mut cfg = Config::from_file(path.as_ref()).unwrap_or_else(|e| panic!("{e}"));
    // Same file, ephemeral ports: proves its client ids, secrets and scopes match the demo.
    let prod = mock("prod").await;
    let test = mock("test").await;
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.admin.listen = "127.0.0.1:0".parse().unwrap();
    // The shipped file keeps its ledger next to itself; a test keeps its own.
    let dir = TempDir::new("shipped");
    assert!(
        matches!(cfg.state.store, StateStore::File(_)),
        "the shipped file keeps a ledger"
    );
    cfg.state.store = StateStore::File(dir.path().join("state/ledger.redb"));
    for (name, m) in [("prod", &prod), ("test", &test)] {
        let mut inst = (*cfg.instances[name]).clone();
        inst.url = m.url().parse().unwrap();
        inst.token_url = m.token_url();
        cfg.instances.insert(name.to_string(), inst.into());
    }
    let gw = Gateway::start(cfg).await.unwrap();
    assert!(
        gw.wait_ready(Duration::from_secs(10)).await,
        "demo clients cannot mint tokens"
    );
    for prefix in ["/prod", "/test"] {
        let r = Http::new()
            .get(
                &format!("http://{}{prefix}/api/suppliers?limit=1", gw.addr()),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{prefix}: {}", r.text());
    }
}

#[tokio::test]
async fn check_prints_the_routing_table_or_every_problem() {
    let (code, out, err) = run(bin().args([
        "check",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"),
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("/prod/...") && out.contains("client prod-main"),
        "{out}"
    );
    assert!(!out.contains("demo-prod-secret"));

    let dir = TempDir::new("check");
    let bad = dir.file(
        "bad.toml",
        &GatewayToml::two_instances("http://127.0.0.1:1", "http://127.0.0.1:2")
            .map_route("/test", |r| r.client("test-mian"))
            .build(),
    );
    let (code, _out, err) = run(bin()
        .args(["check", "--config"])
        .arg(&bad)
        .env("PROD_SECRET", "x"))
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("routes[1].client") && err.contains("test-mian"),
        "{err}"
    );
    assert!(
        err.contains("TEST_SECRET"),
        "the missing variable is named too: {err}"
    );
}

#[tokio::test]
async fn token_command_is_a_connectivity_test() {
    let prod = mock("prod").await;
    let dir = TempDir::new("token");
    let toml = format!(
        r#"
[instances.prod]
url = "{}"
[clients.good]
instance = "prod"
client_id = "demo-prod-client"
client_secret_file = "secret.txt"
scopes = ["core.invoice.read", "core.supplier.read"]
[clients.bad-secret]
instance = "prod"
client_id = "demo-prod-client"
client_secret = "not-the-secret"
scopes = ["core.invoice.read"]
[clients.bad-scope]
instance = "prod"
client_id = "demo-prod-client"
client_secret_file = "secret.txt"
scopes = ["core.budget.write"]
[[routes]]
prefix = "/prod"
instance = "prod"
client = "good"
"#,
        prod.url()
    );
    let cfg = dir.file("proxy.toml", &toml);
    dir.file("secret.txt", &format!("{PROD_SECRET}\n"));

    let (code, out, err) = run(bin().args(["token", "good", "--config"]).arg(&cfg)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("granted:    core.invoice.read core.supplier.read"),
        "{out}"
    );
    assert!(out.contains("expires_in: 86399 s"), "{out}");
    assert!(out.contains("(hidden"), "{out}");
    let (code, shown, _) = run(bin()
        .args(["token", "good", "--show-token", "--config"])
        .arg(&cfg))
    .await;
    assert_eq!(code, 0);
    let token_line = shown.lines().find(|l| l.starts_with("token:")).unwrap();
    assert!(
        token_line.len() > 40 && !token_line.contains("hidden"),
        "{token_line}"
    );

    let (code, _, err) = run(bin().args(["token", "bad-secret", "--config"]).arg(&cfg)).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("invalid_client") && err.contains("client_secret"),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "{err}");
    let (code, _, err) = run(bin().args(["token", "bad-scope", "--config"]).arg(&cfg)).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("invalid_scope") && err.contains("core.budget.write"),
        "{err}"
    );
    let (code, _, err) = run(bin().args(["token", "nobody", "--config"]).arg(&cfg)).await;
    assert_eq!(code, 1);
    assert!(err.contains("known: bad-scope, bad-secret, good"), "{err}");

    let dead = dead_addr().await;
    let (code, _, err) = run(bin().args(["token", "good", "--config"]).arg(dir.file(
        "dead.toml",
        &toml.replace(&prod.url(), &format!("http://{dead}")),
    )))
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("(connect)"), "{err}");
}

#[tokio::test]
async fn serve_exits_0_on_sigterm_and_reloads_on_sighup() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let prod = mock("prod").await;
    let dir = TempDir::new("serve");
    let cfg = dir.file("proxy.toml", &serve_toml(&prod).build_for_file());
    // systemd's side of Type=notify.
    let notify_path = dir.path().join("notify.sock");
    let systemd = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let notified = || async {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(20), systemd.recv(&mut buf))
            .await
            .expect("a notification within 20 s")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut child = serve(&[], &cfg)
        .env("NO_COLOR", "1")
        .env("NOTIFY_SOCKET", &notify_path)
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let wait_for = |needle: &'static str| {
        let log = log.clone();
        async move {
            let found = tokio::time::timeout(Duration::from_secs(20), async {
                while !log.lock().unwrap().contains(needle) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert!(found.is_ok(), "no {needle:?} in:\n{}", log.lock().unwrap());
        }
    };
    wait_for("token minted").await;
    assert_eq!(
        notified().await,
        "READY=1\nSTATUS=serving; every client holds a token"
    );
    let pid = child.id().unwrap().to_string();
    let kill = |sig: &'static str| {
        let pid = pid.clone();
        async move {
            assert!(tokio::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .await
                .unwrap()
                .success());
        }
    };
    kill("-HUP").await;
    wait_for("configuration reloaded").await;
    assert!(notified()
        .await
        .starts_with("READY=1\nSTATUS=configuration reloaded"));
    kill("-TERM").await;
    wait_for("shutting down gracefully").await;
    assert_eq!(notified().await, "STOPPING=1");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn version_names_the_commit() {
    let (code, out, _) = run(bin().arg("--version")).await;
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!(
            "coupa-gateway {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            coupa_gateway::ops::telemetry::COMMIT
        )
    );
    let commit = coupa_gateway::ops::telemetry::COMMIT;
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
}

#[tokio::test]
async fn json_logs_carry_one_access_line_per_request_without_query_values() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let prod = mock("prod").await;
    let dir = TempDir::new("jsonlog");
    let cfg = dir.file("proxy.toml", &serve_toml(&prod).build_for_file());
    let mut child = serve(&["--log-format", "json"], &cfg).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // The first token may be minted before or after the listener logs: wait for both.
    let (mut addr, mut minted) = (None, false);
    while addr.is_none() || !minted {
        let v = next_json(&mut lines).await;
        if v["message"] == "coupa-gateway listening" {
            addr = Some(v["addr"].as_str().unwrap().to_string());
        }
        minted |= v["message"] == "token minted";
    }
    let addr = addr.unwrap();
    let r = Http::new()
        .get(
            &format!(
                "http://{addr}/prod/api/invoices?status=approved&supplier[name]=Secret%20Supplier"
            ),
            &[
                ("x-request-id", "erp-42"),
                ("x-coupa-api-key", "legacy-key-value"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let access = loop {
        let v = next_json(&mut lines).await;
        if v["target"] == "access" {
            break v;
        }
    };
    assert_eq!(access["request_id"], "erp-42");
    assert_eq!(access["integration"], "anonymous");
    assert_eq!(access["route"], "/prod");
    assert_eq!(access["instance"], "prod");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["status"], 200);
    assert_eq!(access["path"], "/prod/api/invoices?status&supplier[name]");
    assert!(access["response_bytes"].as_u64().unwrap() > 0);
    assert!(access["upstream_ms"].as_f64().is_some());
    let text = access.to_string();
    assert!(
        !text.contains("Secret")
            && !text.contains("approved")
            && !text.contains("legacy-key-value")
    );
}

#[tokio::test]
async fn json_access_lines_carry_caller_strings_exactly() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    // The format from the file this time, not the flag.
    let prod = mock("prod").await;
    let dir = TempDir::new("jsonlog-escape");
    let toml = serve_toml(&prod).table("[log]\nformat = \"json\"");
    let cfg = dir.file("proxy.toml", &toml.build_for_file());
    let mut child = serve(&[], &cfg).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let v = next_json(&mut lines).await;
        if v["message"] == "coupa-gateway listening" {
            break v["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    // Raw UTF-8 line and paragraph separators, NBSP, quotes, a backslash-free escape-looking
    // text; and request ids kept and refused.
    for (path, id, kept) in [
        ("/prod/api/x\u{2028}y\u{2029}z", "erp-42", true),
        ("/prod/api/x\u{a0}status=200", "job:7/x.y_z~1", true),
        (
            "/prod/api/x\"status=200\"}{\"a\":1",
            "a\" status=200",
            false,
        ),
        ("/nowhere/%22\u{85}", "spaced id", false),
    ] {
        let (status, _) = raw(
            addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        // Every line parses on its own (next_json), and the access line's fields are the
        // request's, exactly.
        let access = loop {
            let v = next_json(&mut lines).await;
            if v["target"] == "access" {
                break v;
            }
        };
        assert_eq!(access["path"], path, "{access}");
        assert_eq!(access["status"], status, "{access}");
        assert_eq!(access["method"], "GET");
        assert_eq!(access["request_id"] == id, kept, "{access}");
    }
}

async fn next_json<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> serde_json::Value {
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("a log line in time")
        .unwrap()
        .expect("stderr open");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
}

#[tokio::test]
async fn running_out_of_file_descriptors_does_not_stop_the_listener() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let prod = mock("prod").await;
    let dir = TempDir::new("emfile");
    let cfg = dir.file("proxy.toml", &serve_toml(&prod).build_for_file());
    // A low descriptor limit, so a handful of idle clients exhaust it (EMFILE on accept).
    let mut child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec '{}' serve --log-format json --config '{}'",
            env!("CARGO_BIN_EXE_coupa-gateway"),
            cfg.display()
        ))
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let v = next_json(&mut lines).await;
        if v["message"] == "coupa-gateway listening" {
            break v["addr"]
                .as_str()
                .unwrap()
                .parse::<std::net::SocketAddr>()
                .unwrap();
        }
    };
    let mut idle = Vec::new();
    for _ in 0..80 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    loop {
        if next_json(&mut lines).await["message"] == "accept failed; retrying" {
            break;
        }
    }
    // Descriptors come back: the listener is still there and serves.
    idle.clear();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        Http::new().get(&format!("http://{addr}/prod/api/invoices/1"), &[]),
    )
    .await
    .expect("served after the descriptor shortage");
    assert_eq!(r.status, 200);
}

/// `coupa-gateway serve {args} --config {cfg}`, logging at `info` to a piped stderr, killed on
/// drop: how the `serve` tests start it.
fn serve(args: &[&str], cfg: &Path) -> tokio::process::Command {
    let mut cmd = bin();
    cmd.arg("serve")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A one-route config file in front of `prod`, listeners on ephemeral ports (for `serve`).
fn serve_toml(prod: &coupa_mock::MockCoupa) -> GatewayToml {
    GatewayToml::new()
        .instance("prod", &prod.url())
        .map_instance("prod", InstanceToml::default_rate_limit)
        .client(ClientToml::prod().scopes(&["core.invoice.read"]))
        .route(RouteToml::new("/prod").instance("prod"))
}
