//! Discovery of legacy keys no `[[integrations]]` entry knows: listed by SHA-256 in `/status`,
//! the status page, `report` and `report --json`, and the key itself nowhere.

mod common;

use std::time::Duration;

use common::*;
use coupa_gateway::migration::identity::hash_key_line;
use coupa_mock::DEMO_API_KEY;
use http::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const FORGOTTEN_KEY: &str = "forgotten-integration-key-3333333333333333333";
const AGENT: &str = "legacy-sync/1.0";

fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn report(gw: &coupa_gateway::net::server::Gateway, json: bool) -> String {
    let mut cmd = bin();
    cmd.args(["report", "--admin", &admin_url(gw, "")]);
    if json {
        cmd.arg("--json");
    }
    let (code, out, err) = run(&mut cmd).await;
    assert_eq!(code, 0, "{err}");
    out
}

// current_thread: the gateway's workers inherit this thread's subscriber (the access log).
#[tokio::test(flavor = "current_thread")]
async fn unknown_keys_are_listed_by_hash_and_the_key_appears_nowhere() {
    let (logs, _guard) = Captured::install(tracing::Level::INFO);
    let prod = mock("prod").await;
    let route = |p: &str| RouteToml::new(p).instance("prod").client("prod-main");
    let gw = ready_gateway(
        &GatewayToml::new()
            .instance("prod", &prod.url())
            .client(ClientToml::prod())
            .route(route("/prod"))
            .route(route("/open"))
            .integration(
                IntegrationToml::new("erp")
                    .key(DEMO_API_KEY)
                    .routes(&["/prod"]),
            ),
    )
    .await;
    let http = Http::new();
    let call = |path: &'static str, key: &'static str| {
        let http = http.clone();
        let url = proxy_url(&gw, path);
        async move {
            http.get(&url, &[("x-coupa-api-key", key), ("user-agent", AGENT)])
                .await
                .status
        }
    };
    // `/open` admits anyone; `/prod` only erp.
    assert_eq!(
        call("/open/api/invoices/1", FORGOTTEN_KEY).await,
        StatusCode::OK
    );
    assert_eq!(
        call("/open/api/invoices/2", FORGOTTEN_KEY).await,
        StatusCode::OK
    );
    assert_eq!(
        call("/prod/api/invoices/1", FORGOTTEN_KEY).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call("/prod/api/invoices/1", DEMO_API_KEY).await,
        StatusCode::OK
    );

    let hex = sha256_hex(FORGOTTEN_KEY);
    let fingerprint = &hex[..12];
    let s = status(&gw).await;
    let keys = s["discovered_keys"].as_array().expect("discovered_keys");
    assert_eq!(keys.len(), 1, "only the unknown key: {keys:?}");
    let k = &keys[0];
    assert_eq!(k["key_sha256"], hex);
    assert_eq!(k["fingerprint"], fingerprint);
    assert_eq!(k["routes"], json!(["/open", "/prod"]));
    assert_eq!(k["requests_by_route"], json!({"/open": 2, "/prod": 1}));
    assert_eq!(
        k["requests"],
        json!({"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 0})
    );
    assert_eq!(k["addresses"], json!(["127.0.0.1"]));
    assert_eq!(k["user_agents"], json!([AGENT]));
    assert!(k["first_seen"].is_string() && k["last_seen"].is_string());
    let stanza = k["stanza"].as_str().unwrap();
    assert!(stanza.contains(&hash_key_line(FORGOTTEN_KEY)), "{stanza}");
    assert!(stanza.contains(&format!("name = \"unknown-{fingerprint}\"")));
    assert_eq!(s["discovered_keys_evicted"], 0);

    let page = Http::new().get(&admin_url(&gw, "/"), &[]).await.text();
    assert!(page.contains(fingerprint) && page.contains(&hex), "{page}");

    let text = report(&gw, false).await;
    assert!(text.contains("UNRECOGNISED API KEYS"), "{text}");
    assert!(
        text.contains(&format!("key {fingerprint}  2xx 2")),
        "{text}"
    );
    assert!(text.contains(&hash_key_line(FORGOTTEN_KEY)), "{text}");
    // The sections before are as they were.
    assert!(text.contains("INTEGRATIONS\n  anonymous"), "{text}");

    let json_out = report(&gw, true).await;
    let doc: Value = serde_json::from_str(&json_out).expect("report --json is JSON");
    assert_eq!(doc["discovered_keys"][0]["key_sha256"], hex);
    assert!(doc["integrations"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));

    // Each request has its access line; the unknown key's carry its fingerprint.
    assert!(
        eventually(Duration::from_secs(5), || logs
            .text()
            .matches(" access: ")
            .count()
            >= 4)
        .await
    );
    let log = logs.text();
    let access: Vec<&str> = log.lines().filter(|l| l.contains(" access: ")).collect();
    let with_key = access
        .iter()
        .filter(|l| l.contains(&format!("key={fingerprint}")))
        .count();
    assert_eq!(with_key, 3, "{access:#?}");
    assert!(
        access.iter().all(|l| l.contains("peer=127.0.0.1")),
        "{access:#?}"
    );

    let everything = [
        s.to_string(),
        status_text(&gw).await,
        page,
        text,
        json_out,
        log,
    ];
    for (i, out) in everything.iter().enumerate() {
        assert!(!out.contains(FORGOTTEN_KEY), "the key is in output {i}");
        assert!(!out.contains(DEMO_API_KEY), "a known key is in output {i}");
    }
}
