//! Phased migration end to end: integration identity, route modes, scope awareness, hot
//! reload and the migration report, against the mock Coupa.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use coupa_gateway::config::Config;
use coupa_gateway::migration::identity::hash_key_line;
use coupa_gateway::net::server::Gateway;
use coupa_mock::MockCoupa;
use coupa_mock::DEMO_API_KEY;
use http::{Method, StatusCode};
use serde_json::Value;

const OTHER_KEY: &str = "other-integration-key-1111111111111111111";

/// One instance (`prod`), its client `prod-main` with a 200 ms token warm-up, and no routes.
fn prod_only(prod: &MockCoupa) -> GatewayToml {
    GatewayToml::new()
        .instance("prod", &prod.url())
        .client(ClientToml::prod().token_warmup("200ms"))
}

/// A route `prefix` to `prod` with its client.
fn route(prefix: &str) -> RouteToml {
    RouteToml::new(prefix).instance("prod").client("prod-main")
}

/// GET `url` with `key` in the legacy `X-COUPA-API-KEY` header.
async fn get_with_key(http: &Http, url: &str, key: &str) -> Reply {
    http.get(url, &[("x-coupa-api-key", key)]).await
}

/// The `Authorization` header of the last request `prod` received: the token it was sent.
fn last_authorization(prod: &MockCoupa) -> String {
    prod.requests()
        .pop()
        .unwrap()
        .header("authorization")
        .unwrap()
        .to_string()
}

fn find<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|v| v[key] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

#[tokio::test]
async fn integrations_are_recognised_by_key_and_limited_to_their_routes() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &prod_only(&prod)
            .route(route("/prod"))
            .route(route("/prod-admin"))
            .integration(
                IntegrationToml::new("erp-invoices")
                    .key(DEMO_API_KEY)
                    .routes(&["/prod"]),
            )
            .integration(
                IntegrationToml::new("hr-sync")
                    .key(OTHER_KEY)
                    .routes(&["/prod-admin"]),
            ),
    )
    .await;
    let http = Http::new();
    let url = |p: &str| proxy_url(&gw, p);

    let r = get_with_key(&http, &url("/prod/api/invoices/1"), DEMO_API_KEY).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let r = get_with_key(&http, &url("/prod/api/invoices/1"), "wrong-key").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "unauthenticated");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("X-COUPA-API-KEY"));
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("X-COUPA-API-KEY"));
    let r = http.get(&url("/prod/api/invoices/1"), &[]).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "no key on a restricted route"
    );

    let r = get_with_key(&http, &url("/prod-admin/api/suppliers/1"), DEMO_API_KEY).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let j = r.json();
    assert_eq!(j["error"], "route_forbidden");
    let msg = j["message"].as_str().unwrap();
    assert!(
        msg.contains("erp-invoices") && msg.contains("/prod-admin"),
        "{msg}"
    );

    let r = get_with_key(&http, &url("/prod-admin/api/suppliers/1"), OTHER_KEY).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Only the recognised requests reached Coupa, with the bearer and without the key.
    let seen = prod.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|r| r.header("x-coupa-api-key").is_none()));

    let s = status(&gw).await;
    let erp = find(&s["integrations"], "name", "erp-invoices");
    let prod_route = find(&erp["routes"], "prefix", "/prod");
    assert_eq!(prod_route["requests"]["2xx"], 1);
    assert_eq!(prod_route["legacy_key_requests"], 1);
    let forbidden = find(&erp["routes"], "prefix", "/prod-admin");
    assert_eq!(forbidden["requests"]["4xx"], 1);
    assert_eq!(forbidden["allowed"], false);
    let m = metrics(&gw).await;
    assert!(m.contains(r#"coupa_gateway_integration_requests_total{integration="erp-invoices",route="/prod",class="2xx"} 1"#), "{m}");
    assert!(m.contains(r#"coupa_gateway_integration_requests_total{integration="anonymous",route="/prod",class="4xx"} 2"#), "{m}");
    for text in [s.to_string(), m] {
        assert!(!text.contains(DEMO_API_KEY) && !text.contains(OTHER_KEY));
    }
}

#[tokio::test]
async fn address_only_integrations_and_allow_ips() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &prod_only(&prod)
            .route(route("/prod"))
            .route(route("/prod-net"))
            .integration(
                IntegrationToml::new("batch")
                    .allow_ips(&["127.0.0.0/8"])
                    .routes(&["/prod"]),
            )
            .integration(
                IntegrationToml::new("remote")
                    .key(OTHER_KEY)
                    .allow_ips(&["10.9.0.0/16"])
                    .routes(&["/prod-net"]),
            ),
    )
    .await;
    let http = Http::new();
    let r = http.get(&proxy_url(&gw, "/prod/api/invoices/1"), &[]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "recognised by address: {}",
        r.text()
    );
    let r = get_with_key(
        &http,
        &proxy_url(&gw, "/prod-net/api/invoices/1"),
        OTHER_KEY,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "right key, wrong network");
    assert_eq!(r.json()["error"], "address_forbidden");
    let s = status(&gw).await;
    let batch = find(&s["integrations"], "name", "batch");
    assert_eq!(
        find(&batch["routes"], "prefix", "/prod")["requests"]["2xx"],
        1
    );
}

#[tokio::test]
async fn passthrough_forwards_the_legacy_key_and_blocked_answers_403() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &prod_only(&prod)
            .route(route("/prod").mode("passthrough"))
            .route(
                route("/old")
                    .mode("blocked")
                    .blocked_message("the AP export moved to /prod on 2026-10-01"),
            ),
    )
    .await;
    let http = Http::new();
    let r = http
        .get(
            &proxy_url(&gw, "/prod/api/invoices/1"),
            &[
                ("x-coupa-api-key", DEMO_API_KEY),
                ("connection", "keep-alive"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = prod.requests().pop().unwrap();
    assert_eq!(seen.header("x-coupa-api-key"), Some(DEMO_API_KEY));
    assert!(
        seen.header("authorization").is_none(),
        "no token in passthrough mode"
    );
    assert!(seen.header("connection").is_none());

    let r = http.get(&proxy_url(&gw, "/old/api/invoices/1"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"], "route_blocked");
    assert_eq!(
        r.json()["message"],
        "the AP export moved to /prod on 2026-10-01"
    );
    assert_eq!(
        prod.requests().len(),
        1,
        "blocked requests never reach Coupa"
    );
}

#[tokio::test]
async fn phase_flip_under_load_loses_no_request() {
    let prod = mock("prod").await;
    let with_mode = |mode: &str| {
        prod_only(&prod)
            .route(route("/prod").mode(mode))
            .integration(
                IntegrationToml::new("erp")
                    .key(DEMO_API_KEY)
                    .routes(&["/prod"]),
            )
    };
    let (passthrough, oauth) = (with_mode("passthrough"), with_mode("oauth"));
    let gw = ready_gateway(&passthrough).await;
    let url = proxy_url(&gw, "/prod/api/suppliers/1");
    let ok = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (url, ok, stop) = (url.clone(), ok.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let http = Http::new();
            while stop.load(Ordering::Relaxed) == 0 {
                let r = http.get(&url, &[("x-coupa-api-key", DEMO_API_KEY)]).await;
                assert_eq!(
                    r.status,
                    StatusCode::OK,
                    "request failed during a phase flip: {}",
                    r.text()
                );
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let token_requests = prod.stats().token_requests;
    // The mock keeps only its last RECORDED_REQUESTS requests, fewer than an optimised build
    // makes in this test: look at them at the end of every phase.
    let mut seen = Vec::new();
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        seen.extend(prod.requests());
        let next = if i % 2 == 0 { &oauth } else { &passthrough };
        let applied = gw.reload(next.config()).await.expect("reload applies");
        assert!(
            applied.new_tokens.is_empty(),
            "unchanged client keeps its token cell"
        );
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(1, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(ok.load(Ordering::Relaxed) > 50);
    assert_eq!(
        prod.stats().token_requests,
        token_requests,
        "a mode flip mints no token"
    );
    seen.extend(prod.requests());
    assert!(
        seen.iter().any(|r| r.header("authorization").is_some()),
        "oauth phase seen"
    );
    assert!(
        seen.iter().any(|r| r.header("x-coupa-api-key").is_some()),
        "passthrough phase seen"
    );
    assert!(seen
        .iter()
        .all(|r| r.header("authorization").is_some() != r.header("x-coupa-api-key").is_some()));
}

#[tokio::test]
async fn a_broken_config_file_leaves_the_old_one_serving() {
    let prod = mock("prod").await;
    let good = prod_only(&prod).route(route("/prod"));
    let dir = TempDir::new("broken");
    let file = dir.file("proxy.toml", &good.build_for_file());
    let mut gw = Gateway::start(Config::from_file(&file).unwrap())
        .await
        .unwrap();
    assert!(gw.wait_ready(Duration::from_secs(10)).await);
    gw.watch_config(file.clone());
    let http = Http::new();
    let url = proxy_url(&gw, "/prod/api/invoices/1");

    // A typo in a route: the watcher notices, validation fails, the old config keeps serving.
    let typo = good.clone().map_route("/prod", |r| r.client("prod-mian"));
    dir.file("proxy.toml", &typo.build_for_file());
    let mut last_error = Value::Null;
    for _ in 0..300 {
        last_error = status(&gw).await["reload"]["last_error"].clone();
        if !last_error.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let msg = last_error
        .as_str()
        .expect("reload error reported in /status");
    assert!(
        msg.contains("routes[0].client") && msg.contains("prod-mian"),
        "{msg}"
    );
    assert_eq!(http.get(&url, &[]).await.status, StatusCode::OK);
    let m = metrics(&gw).await;
    assert!(
        m.contains("coupa_gateway_config_reloads_total{result=\"refused\"} 1"),
        "{m}"
    );

    // Fixed again, with a second route: applied without a restart.
    dir.file("proxy.toml", &good.route(route("/prod2")).build_for_file());
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            http.get(&proxy_url(&gw, "/prod2/api/invoices/1"), &[])
                .await
                .status
                == StatusCode::OK
        })
        .await,
        "the fixed file was not applied"
    );
    assert!(status(&gw).await["reload"]["last_error"].is_null());
}

async fn eventually_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_changed_secret_gets_a_fresh_token_and_a_bad_one_is_refused() {
    // Coupa keeps the old secret valid for a while after regenerating: both work here.
    let prod = mock_with(mock_config("prod").client(
        "demo-prod-client",
        "rotated-secret",
        &[
            "core.invoice.read",
            "core.invoice.write",
            "core.supplier.read",
            "core.common.read",
        ],
    ))
    .await;
    let before = prod_only(&prod).route(route("/prod"));
    let gw = ready_gateway(&before).await;
    let http = Http::new();
    let url = proxy_url(&gw, "/prod/api/invoices/1");
    assert_eq!(http.get(&url, &[]).await.status, StatusCode::OK);
    let old_token = last_authorization(&prod);

    let rotated = (before.clone()).map_client("prod-main", |c| c.secret("rotated-secret"));
    let applied = gw
        .reload(rotated.config())
        .await
        .expect("rotated secret reloads");
    assert_eq!(applied.new_tokens, vec!["prod-main".to_string()]);
    assert_eq!(http.get(&url, &[]).await.status, StatusCode::OK);
    let new_token = last_authorization(&prod);
    assert_ne!(
        old_token, new_token,
        "requests use the token minted with the new secret"
    );

    // A secret Coupa rejects: the reload is refused with the reason; the running one stays.
    let bad = before.map_client("prod-main", |c| c.secret("typo-secret"));
    let err = gw.reload(bad.config()).await.expect_err("refused");
    assert!(
        err.contains("clients.prod-main") && err.contains("invalid_client"),
        "{err}"
    );
    assert!(!err.contains("typo-secret"));
    assert_eq!(http.get(&url, &[]).await.status, StatusCode::OK);
    assert_eq!(last_authorization(&prod), new_token);

    // Listener changes need a restart: reported, not silently ignored.
    let moved = rotated.admin_listen("127.0.0.1:1");
    let applied = gw.reload(moved.config()).await.unwrap();
    assert_eq!(
        applied.restart_required.len(),
        1,
        "{:?}",
        applied.restart_required
    );
    assert!(applied.restart_required[0].starts_with("admin.listen"));
    let s = status(&gw).await;
    assert!(s["reload"]["restart_required"][0]
        .as_str()
        .unwrap()
        .starts_with("admin.listen"));
}

#[tokio::test]
async fn enforce_mode_names_the_missing_scope_without_calling_coupa() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&prod_only(&prod).route(route("/prod").scope_check("enforce"))).await;
    let http = Http::new();
    let r = http
        .request(
            Method::PUT,
            &proxy_url(&gw, "/prod/api/suppliers/1"),
            &[("content-type", "application/json")],
            r#"{"name":"Acme"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error"], "scope_missing");
    let msg = j["message"].as_str().unwrap();
    for part in [
        "core.supplier.write",
        "prod-main",
        "Setup > OAuth2/OpenID Connect Clients",
    ] {
        assert!(msg.contains(part), "{part} missing from {msg}");
    }
    assert!(prod.requests().is_empty());
    // What the client has passes.
    let r = http
        .get(&proxy_url(&gw, "/prod/api/suppliers/1"), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn passthrough_traffic_shows_which_scopes_to_tick() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &prod_only(&prod)
            .route(route("/prod").mode("passthrough"))
            .integration(
                IntegrationToml::new("erp")
                    .key(DEMO_API_KEY)
                    .routes(&["/prod"]),
            ),
    )
    .await;
    let http = Http::new();
    let key = [("x-coupa-api-key", DEMO_API_KEY)];
    for _ in 0..3 {
        http.get(&proxy_url(&gw, "/prod/api/invoices?limit=1"), &key)
            .await;
    }
    let r = http
        .request(
            Method::PUT,
            &proxy_url(&gw, "/prod/api/users/2"),
            &[key[0], ("content-type", "application/json")],
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = status(&gw).await;
    let erp = find(&s["integrations"], "name", "erp");
    let needed = &find(&erp["routes"], "prefix", "/prod")["scopes_needed"];
    assert_eq!(find(needed, "scope", "core.invoice.read")["count"], 3);
    assert_eq!(find(needed, "scope", "core.user.write")["count"], 1);
    let report = &find(&s["clients"], "name", "prod-main")["scope_report"];
    assert_eq!(report["missing"], serde_json::json!(["core.user.write"]));
    let unused: Vec<&str> = report["unused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        unused.contains(&"core.supplier.read") && !unused.contains(&"core.invoice.read"),
        "{unused:?}"
    );
}

#[tokio::test]
async fn report_verdicts_follow_the_traffic() {
    let prod = mock("prod").await;
    let with_route = |route: RouteToml| {
        prod_only(&prod)
            .route(route)
            .integration(
                IntegrationToml::new("erp")
                    .key(DEMO_API_KEY)
                    .routes(&["/prod"]),
            )
            .table("[migration]\nrevoke_after = \"1s\"")
    };
    let passthrough = with_route(route("/prod").mode("passthrough"));
    let oauth = with_route(route("/prod"));
    let gw = ready_gateway(&passthrough).await;
    let http = Http::new();
    let call = || async {
        http.get(
            &proxy_url(&gw, "/prod/api/invoices/1"),
            &[("x-coupa-api-key", DEMO_API_KEY)],
        )
        .await
        .status
    };
    let verdict =
        || async { find(&status(&gw).await["integrations"], "name", "erp")["verdict"].clone() };

    assert_eq!(call().await, StatusCode::OK);
    assert_eq!(verdict().await, "not_migrated");
    gw.reload(oauth.config()).await.unwrap();
    assert_eq!(call().await, StatusCode::OK);
    assert_eq!(verdict().await, "migrated");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(verdict().await, "safe_to_revoke_key");

    // The readable report says the same.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_coupa-gateway"))
        .args(["report", "--admin", &admin_url(&gw, "")])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("erp  SAFE TO REVOKE ITS API KEY"), "{text}");
    assert!(text.contains("prod-main (instance prod)"), "{text}");

    // Rolled back: not migrated again, instantly.
    gw.reload(passthrough.config()).await.unwrap();
    assert_eq!(call().await, StatusCode::OK);
    assert_eq!(verdict().await, "not_migrated");
}

#[tokio::test]
async fn hash_key_prints_the_line_the_gateway_matches() {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coupa-gateway"))
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{DEMO_API_KEY}\n").as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(line.trim(), hash_key_line(DEMO_API_KEY));
    assert!(!line.contains(DEMO_API_KEY));
}

#[tokio::test]
async fn a_removed_client_is_dropped_with_its_refresher() {
    let prod = mock("prod").await;
    let test = mock("test").await;
    let gw = ready_gateway(&GatewayToml::two_instances(&prod.url(), &test.url())).await;
    let cell = Arc::downgrade(&gw.shared().runtime.load().tokens["test-main"]);
    let prod_only = GatewayToml::prod(&prod.url());
    gw.reload(prod_only.config()).await.expect("reload applies");
    // The refresher sleeps ~20 h until its next refresh; it must not keep the cell alive.
    assert!(
        eventually(Duration::from_secs(2), || cell.upgrade().is_none()).await,
        "the removed client's token cell is still alive"
    );
    let r = Http::new()
        .get(&proxy_url(&gw, "/test/api/invoices/1"), &[])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        Http::new()
            .get(&proxy_url(&gw, "/prod/api/invoices/1"), &[])
            .await
            .status,
        StatusCode::OK
    );
}

/// Is `name` the legacy key header in some spelling (`_` for `-`, any case)?
fn is_key_spelling(name: &str) -> bool {
    name.replace('_', "-")
        .eq_ignore_ascii_case("x-coupa-api-key")
}

#[tokio::test]
async fn the_legacy_key_is_one_header_whatever_its_spelling() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &prod_only(&prod)
            .route(route("/prod"))
            .route(route("/legacy").mode("passthrough"))
            .integration(
                IntegrationToml::new("erp")
                    .key(DEMO_API_KEY)
                    .routes(&["/prod", "/legacy"]),
            ),
    )
    .await;
    let get = |prefix: &str, head: &str| {
        format!(
            "GET {prefix}/api/invoices/1 HTTP/1.1\r\nHost: gw\r\n{head}Connection: close\r\n\r\n"
        )
    };
    // Rack and CGI servers (Coupa's Rails among them) read `X_COUPA_API_KEY` as the same
    // header: it identifies the caller, and on an oauth route no spelling reaches Coupa.
    for name in [
        "X_COUPA_API_KEY",
        "x-coupa_api-key",
        "X-Coupa-Api_Key",
        "X-COUPA-API-KEY",
    ] {
        let (status, text) = raw(
            gw.addr(),
            &get("/prod", &format!("{name}: {DEMO_API_KEY}\r\n")),
        )
        .await;
        assert_eq!(status, 200, "{name}: {text}");
        let seen = prod.requests().pop().unwrap();
        assert!(
            !seen.headers.keys().any(|n| is_key_spelling(n.as_str())),
            "{name} reached Coupa: {:?}",
            seen.headers
        );
        assert!(seen.header("authorization").unwrap().starts_with("Bearer "));
    }
    // In passthrough the one key goes through as sent.
    let (_, text) = raw(
        gw.addr(),
        &get("/legacy", &format!("X_COUPA_API_KEY: {DEMO_API_KEY}\r\n")),
    )
    .await;
    assert!(!text.contains("\"error\""), "{text}");
    let seen = prod.requests().pop().unwrap();
    assert_eq!(seen.header("x_coupa_api_key"), Some(DEMO_API_KEY));
    assert!(seen.header("x-coupa-api-key").is_none());

    // Two keys, whatever their spellings (or the same name twice): which one would Coupa
    // use? Refused before identification, on every route, and never forwarded.
    let forwarded = prod.requests().len();
    for (first, second) in [
        ("X-COUPA-API-KEY", "X-COUPA-API-KEY"),
        ("X-COUPA-API-KEY", "X_COUPA_API_KEY"),
        ("x-coupa_api-key", "X_Coupa_Api_Key"),
    ] {
        for (prefix, other) in [
            ("/prod", OTHER_KEY),
            ("/legacy", DEMO_API_KEY),
            ("/nowhere", OTHER_KEY),
        ] {
            let head = format!("{first}: {DEMO_API_KEY}\r\n{second}: {other}\r\n");
            let (status, text) = raw(gw.addr(), &get(prefix, &head)).await;
            assert_eq!(status, 400, "{prefix} {first} + {second}: {text}");
            assert!(text.contains("\"duplicate_api_key\""), "{text}");
            assert!(text.contains("exactly one X-COUPA-API-KEY"), "{text}");
        }
    }
    assert_eq!(prod.requests().len(), forwarded);
}
