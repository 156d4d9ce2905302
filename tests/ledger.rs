//! The migration ledger on real storage: a redb file that survives restarts and crashes, and a
//! real `redis-server` shared by two gateway processes, killed mid-run. The gateway runs as its
//! own process here (`coupa-gateway serve`): only a process can be restarted or killed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What the integration `erp` sends.
const ERP_KEY: &str = "erp-legacy-key-Hq7c1x90aa";
/// What a forgotten integration sends: no `[[integrations]]` entry knows it.
const STRAY_KEY: &str = "stray-legacy-key-Zp4t8w22bb";

fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `/prod` in oauth mode for the integration `erp`, the ledger as `state` says, written every
/// 200 ms, and a short revoke window so a test can see it close.
fn config_file(dir: &TempDir, prod: &coupa_mock::MockCoupa, state: &str) -> std::path::PathBuf {
    let toml = GatewayToml::prod(&prod.url())
        .integration(IntegrationToml::new("erp").key(ERP_KEY).routes(&["/prod"]))
        .table(&format!("[state]\n{state}\nflush_interval = \"200ms\""))
        .table("[migration]\nrevoke_after = \"8s\"")
        .build_for_file();
    dir.file("proxy.toml", &toml)
}

/// `n` requests with `key` through `gw`; every answer must be `status`.
async fn send(gw: &Served, key: &str, n: usize, status: u16) {
    let http = Http::new();
    for _ in 0..n {
        let r = http
            .get(
                &format!("http://{}/prod/api/invoices/1", gw.addr),
                &[("X-COUPA-API-KEY", key), ("User-Agent", "erp-sync/2.1")],
            )
            .await;
        assert_eq!(r.status.as_u16(), status, "{}", r.text());
    }
}

fn integration<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no integration {name} in {status:#}"))
}

fn lists(status: &Value, name: &str) -> bool {
    status["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == name)
}

fn requests_2xx(status: &Value, name: &str) -> u64 {
    let g = integration(status, name);
    g["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"]["2xx"].as_u64().unwrap())
        .sum()
}

fn stray(status: &Value) -> Option<&Value> {
    status["discovered_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_sha256"] == sha256_hex(STRAY_KEY))
}

/// Polls `/status` until `done` holds (other replicas write every 200 ms).
async fn status_when(gw: &Served, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = gw.status().await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn report(gw: &Served, args: &[&str]) -> String {
    let (code, out, err) = run(bin()
        .args(["report", "--admin", &format!("http://{}", gw.admin)])
        .args(args))
    .await;
    assert_eq!(code, 0, "{err}");
    out
}

/// Neither key, in any place an operator or attacker could read.
fn assert_no_key(text: &str, what: &str) {
    for key in [ERP_KEY, STRAY_KEY] {
        assert!(!text.contains(key), "{what} holds a legacy key");
    }
}

#[tokio::test]
async fn the_file_ledger_survives_restarts_and_crashes_with_the_revoke_window_intact() {
    let prod = mock("prod").await;
    let dir = TempDir::new("ledger-file");
    let cfg = config_file(&dir, &prod, "path = \"state/ledger.redb\"");

    let first = Served::start(&cfg).await;
    send(&first, ERP_KEY, 3, 200).await;
    // Only erp may use /prod: the stray key is refused (401), and discovered.
    send(&first, STRAY_KEY, 1, 401).await;
    let before = first.status().await;
    let erp = integration(&before, "erp").clone();
    assert_eq!(erp["verdict"], "migrated", "{erp:#}");
    assert_eq!(before["ledger"]["store"], "file");
    let file = dir.path().join("state/ledger.redb");
    assert_eq!(
        before["ledger"]["location"].as_str(),
        Some(file.to_str().unwrap())
    );
    let first_log = first.log();
    assert_eq!(first.stop().await, Some(0), "{first_log}");

    // A restart: same counts, same window start, same observation start.
    let second = Served::start(&cfg).await;
    let after = second.status().await;
    assert_eq!(requests_2xx(&after, "erp"), 3, "{after:#}");
    let erp_after = integration(&after, "erp");
    assert_eq!(erp_after["oauth_since"], erp["oauth_since"]);
    assert_eq!(erp_after["safe_to_revoke_at"], erp["safe_to_revoke_at"]);
    assert_eq!(
        after["ledger"]["observed_since"],
        before["ledger"]["observed_since"]
    );
    let key = stray(&after).expect("the discovered key survives the restart");
    assert_eq!(key["requests"]["4xx"], 1);
    assert_eq!(key["fingerprint"], sha256_hex(STRAY_KEY)[..12]);
    assert_eq!(key["user_agents"][0], "erp-sync/2.1");

    // A crash loses at most one flush interval: wait past it, then kill -9.
    send(&second, ERP_KEY, 2, 200).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    second.crash().await;

    let third = Served::start(&cfg).await;
    let s = third.status().await;
    assert_eq!(requests_2xx(&s, "erp"), 5, "{s:#}");
    // The window closes when it would have without any restart.
    let s = status_when(&third, "safe to revoke", |s| {
        integration(s, "erp")["verdict"] == "safe_to_revoke_key"
    })
    .await;
    let text = report(&third, &[]).await;
    assert!(
        text.contains("kept in") && text.contains("ledger.redb"),
        "{text}"
    );
    assert!(text.contains("SAFE TO REVOKE"), "{text}");
    let json = report(&third, &["--json"]).await;
    let parsed: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["ledger"]["store"], "file");

    for (what, text) in [
        ("/status", s.to_string()),
        ("the report", text),
        ("report --json", json),
        ("the first process's log", first_log.clone()),
        ("the third process's log", third.log()),
        (
            "the state file",
            String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned(),
        ),
    ] {
        assert_no_key(&text, what);
    }
    assert!(
        first_log.contains(&sha256_hex(STRAY_KEY)[..12]),
        "the access log names the unknown key by its fingerprint"
    );
    third.stop().await;
}

async fn start_fails(cfg: &Path) -> String {
    let (code, _, err) = run(bin().args(["serve", "--config"]).arg(cfg)).await;
    assert_eq!(code, 1, "{err}");
    err
}

#[tokio::test]
async fn an_unusable_state_file_stops_the_start_naming_the_key() {
    let prod = mock("prod").await;
    let dir = TempDir::new("ledger-bad");

    dir.file("blocker", "a file where a directory should be");
    let cfg = config_file(&dir, &prod, "path = \"blocker/ledger.redb\"");
    let err = start_fails(&cfg).await;
    assert!(
        err.contains("state.path: cannot use the migration ledger") && err.contains("blocker"),
        "{err}"
    );

    dir.file("ledger.redb", &"not a ledger at all\n".repeat(500));
    let cfg = config_file(&dir, &prod, "path = \"ledger.redb\"");
    let err = start_fails(&cfg).await;
    assert!(
        err.contains("state.path") && err.contains("ledger.redb") && err.contains("not a ledger"),
        "{err}"
    );

    // One file, one process: a second gateway on the same file is refused, not corrupting it.
    let cfg = config_file(&dir, &prod, "path = \"shared.redb\"");
    let running = Served::start(&cfg).await;
    let err = start_fails(&cfg).await;
    assert!(
        err.contains("state.path") && err.contains("another process"),
        "{err}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_damaged_record_stops_the_start_with_the_record_named() {
    // The file is readable redb, but a record in it is not the ledger's JSON.
    let prod = mock("prod").await;
    let dir = TempDir::new("ledger-damaged");
    let path = dir.path().join("ledger.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("ledger");
            let mut table = txn.open_table(def).unwrap();
            table
                .insert("integration:erp", b"{not json".as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let cfg = config_file(&dir, &prod, "path = \"ledger.redb\"");
    let err = start_fails(&cfg).await;
    assert!(
        err.contains("state: cannot use the migration ledger")
            && err.contains("\"integration:erp\""),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_or_refusing_redis_stops_the_start_without_showing_the_password() {
    let prod = mock("prod").await;
    let dir = TempDir::new("ledger-redis-bad");
    let dead = dead_addr().await;
    let cfg = config_file(&dir, &prod, &format!("redis = \"redis://{dead}/0\""));
    let err = start_fails(&cfg).await;
    assert!(
        err.contains("state.redis: cannot use the migration ledger")
            && err.contains(&format!("redis://{dead}/0")),
        "{err}"
    );

    let Some(redis) = RedisServer::start_with(&["--requirepass", "right-password-77"]).await else {
        return;
    };
    let wrong = redis
        .url()
        .replace("redis://", "redis://:wrong-password-99@");
    let cfg = config_file(&dir, &prod, &format!("redis = \"{wrong}\""));
    let err = start_fails(&cfg).await;
    assert!(err.contains("state.redis") && err.contains("***@"), "{err}");
    assert!(!err.contains("wrong-password-99"), "{err}");
}

#[tokio::test]
async fn replicas_sharing_redis_each_report_the_whole_fleet() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let prod = mock("prod").await;
    let dir = TempDir::new("ledger-fleet");
    let cfg = config_file(&dir, &prod, &format!("redis = \"{}\"", redis.url()));
    let (a, b) = tokio::join!(Served::start(&cfg), Served::start(&cfg));
    tokio::join!(send(&a, ERP_KEY, 3, 200), send(&b, ERP_KEY, 4, 200));
    tokio::join!(send(&a, STRAY_KEY, 1, 401), send(&b, STRAY_KEY, 2, 401));
    for gw in [&a, &b] {
        let s = status_when(gw, "the fleet's sum", |s| {
            requests_2xx(s, "erp") == 7 && stray(s).is_some_and(|k| k["requests"]["4xx"] == 3)
        })
        .await;
        assert_eq!(s["ledger"]["store"], "redis");
        assert_eq!(s["ledger"]["location"], redis.url());
        assert_no_key(&s.to_string(), "/status");
    }
    let text = report(&b, &[]).await;
    assert!(text.contains("every replica sharing redis://"), "{text}");
    assert_no_key(&text, "the report");
    // What Redis holds: every record, none with a key in it.
    let keys = redis.cli(&["--scan"]).await;
    assert!(
        keys.contains("coupa-gateway:ledger:integration:erp"),
        "{keys}"
    );
    for k in keys
        .lines()
        .filter(|k| k.starts_with("coupa-gateway:ledger:"))
    {
        assert_no_key(&redis.cli(&["GET", k]).await, k);
    }
    assert_no_key(&a.log(), "a's log");
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test]
async fn redis_down_mid_run_fails_no_request_and_loses_no_count() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let prod = mock("prod").await;
    let dir = TempDir::new("ledger-redis-down");
    let cfg = config_file(&dir, &prod, &format!("redis = \"{}\"", redis.url()));
    let gw = Served::start(&cfg).await;
    send(&gw, ERP_KEY, 2, 200).await;
    status_when(&gw, "2 requests written", |s| requests_2xx(s, "erp") == 2).await;

    redis.kill();
    send(&gw, ERP_KEY, 5, 200).await;
    let s = status_when(&gw, "the store reported down", |s| {
        s["ledger"]["healthy"] == false
    })
    .await;
    assert!(s["ledger"]["last_error"]
        .as_str()
        .unwrap()
        .contains("redis"));
    // What this gateway saw stays visible while the store is down.
    assert_eq!(requests_2xx(&s, "erp"), 7, "{s:#}");
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("coupa_gateway_ledger_store_up{store=\"redis\"} 0"),
        "{metrics}"
    );
    assert!(!metrics.contains("coupa_gateway_ledger_write_failures_total{store=\"redis\"} 0\n"));
    let text = report(&gw, &[]).await;
    assert!(
        text.contains("WARNING: the ledger store is failing"),
        "{text}"
    );

    redis.restart().await;
    send(&gw, ERP_KEY, 1, 200).await;
    let s = status_when(&gw, "the store back with every count", |s| {
        s["ledger"]["healthy"] == true && requests_2xx(s, "erp") == 8
    })
    .await;
    assert_eq!(s["ledger"]["pending_records"], 0);
    // Redis itself holds the total, not only this process's memory.
    let stored: Value = serde_json::from_str(
        redis
            .cli(&["GET", "coupa-gateway:ledger:integration:erp"])
            .await
            .trim(),
    )
    .unwrap();
    assert_eq!(stored["routes"]["/prod"]["by_class"][1], 8, "{stored:#}");
    gw.stop().await;
}

#[tokio::test]
async fn a_removed_integration_keeps_its_history_until_forgotten() {
    let prod = mock("prod").await;
    let dir = TempDir::new("ledger-forget");
    let cfg = config_file(&dir, &prod, "path = \"ledger.redb\"");
    let gw = Served::start(&cfg).await;
    send(&gw, ERP_KEY, 2, 200).await;
    let out = run(bin()
        .args(["report", "--admin", &format!("http://{}", gw.admin)])
        .args(["--forget", "erp"]))
    .await;
    assert_eq!(out.0, 1);
    assert!(out.2.contains("still in proxy.toml"), "{}", out.2);

    // Renamed in the file: the old name's history stays, marked as no longer configured.
    let renamed = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("name = \"erp\"", "name = \"erp-v2\"");
    std::fs::write(&cfg, renamed).unwrap();
    let s = status_when(&gw, "the rename applied", |s| lists(s, "erp-v2")).await;
    assert_eq!(integration(&s, "erp")["configured"], false);
    assert_eq!(requests_2xx(&s, "erp"), 2);

    let text = report(&gw, &["--forget", "erp"]).await;
    assert!(!text.contains("\n  erp  "), "{text}");
    let s = gw.status().await;
    assert!(!lists(&s, "erp"), "{s:#}");
    // Gone from the file too: a restart does not bring it back.
    gw.stop().await;
    let gw = Served::start(&cfg).await;
    let s = gw.status().await;
    assert!(!lists(&s, "erp"), "{s:#}");
    gw.stop().await;
}
