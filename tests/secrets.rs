//! No client secret, token or legacy API key may appear in logs (at trace level), `/status` or
//! `/metrics`, across a session with token refreshes and failures.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use coupa_gateway::commands::{demo_instance, DEMO_API_KEY};
use coupa_gateway::server::Gateway;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const ROTATED: &str = "rotated-test-secret-value";
const WRONG: &str = "mistyped-test-secret-value";

// current_thread: every task runs on this thread, so the thread-local subscriber sees them all.
#[tokio::test(flavor = "current_thread")]
async fn no_secret_token_or_legacy_key_in_logs_status_or_metrics() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // The test instance also accepts a rotated secret, for the reload step.
    let prod = mock_with(
        demo_instance("prod", "127.0.0.1:0".parse().unwrap())
            .rate_limit(None)
            .expires_in(3),
    )
    .await;
    let test = mock_with(
        demo_instance("test", "127.0.0.1:0".parse().unwrap())
            .rate_limit(None)
            .client(
                "demo-test-client",
                ROTATED,
                &["core.invoice.read", "core.supplier.read"],
            ),
    )
    .await;
    let toml = two_instance_toml(&prod.url(), &test.url(), "token_warmup = \"0s\"");
    let gw = Gateway::start(config(&toml)).await.unwrap();
    assert!(gw.wait_ready(Duration::from_secs(10)).await);
    let http = Http::new();
    let base = format!("http://{}", gw.addr());
    let send_all = || async {
        for path in [
            "/prod/api/invoices/1",
            "/test/api/suppliers/1",
            "/prod/api/nothing",
            "/nowhere",
            "/prod/../x",
        ] {
            http.get(
                &format!("{base}{path}"),
                &[
                    ("x-coupa-api-key", DEMO_API_KEY),
                    ("authorization", "Basic c2VjcmV0"),
                ],
            )
            .await;
        }
    };
    send_all().await;
    // 401 recovery: Coupa revokes the tokens; the gateway re-mints and replays.
    test.faults().revoke_all_tokens();
    send_all().await;
    // Reload with a rotated secret (new token), then a broken reload.
    let rotated = toml.replace("${TEST_SECRET}", ROTATED);
    gw.reload(config(&rotated))
        .await
        .expect("rotated secret reloads");
    let wrong = toml.replace("${TEST_SECRET}", WRONG);
    assert!(gw.reload(config(&wrong)).await.is_err());
    send_all().await;
    // A refresh succeeds (3 s tokens), then the endpoint starts refusing the client.
    assert!(eventually(Duration::from_secs(10), || prod.stats().tokens_issued >= 2).await);
    prod.faults().fail_token_with(Some((401, "invalid_client")));
    assert!(
        eventually(Duration::from_secs(10), || prod.stats().token_requests
            > prod.stats().tokens_issued)
        .await
    );
    http.get(&format!("{base}/prod/api/invoices/1"), &[]).await;
    let status = http
        .get(&format!("http://{}/status", gw.admin_addr()), &[])
        .await
        .text();
    let metrics = http
        .get(&format!("http://{}/metrics", gw.admin_addr()), &[])
        .await
        .text();
    gw.shutdown();

    let mut tokens: Vec<String> = prod
        .requests()
        .iter()
        .chain(test.requests().iter())
        .filter_map(|r| r.header("authorization"))
        .map(|a| a.trim_start_matches("Bearer ").to_string())
        .collect();
    tokens.sort();
    tokens.dedup();
    assert!(
        tokens.len() >= 2,
        "expected several tokens in the session: {tokens:?}"
    );
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("token minted"),
        "logging was not captured:\n{logs}"
    );
    for event in [
        "token request refused by Coupa",
        "Coupa rejected the current token",
        "configuration reloaded",
        "configuration reload refused",
    ] {
        assert!(logs.contains(event), "{event:?} was not logged:\n{logs}");
    }
    for (what, text) in [
        ("logs", &logs),
        ("/status", &status),
        ("/metrics", &metrics),
    ] {
        for secret in [
            PROD_SECRET,
            TEST_SECRET,
            ROTATED,
            WRONG,
            DEMO_API_KEY,
            "c2VjcmV0",
        ] {
            assert!(
                !text.contains(secret),
                "{what} contains the secret {secret:?}"
            );
        }
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "{what} contains a token");
        }
    }
}
