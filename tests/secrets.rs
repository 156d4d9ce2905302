//! No client secret, token or legacy API key may appear in logs (at trace level), `/status` or
//! `/metrics`, across a session with token refreshes and failures, nor when a token endpoint
//! echoes the secret back in an error, in whatever encoding.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use coupa_mock::DEMO_API_KEY;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROTATED: &str = "rotated-test-secret-value";
const WRONG: &str = "mistyped-test-secret-value";

// current_thread: every task runs on this thread, so the thread-local subscriber sees them all.
#[tokio::test(flavor = "current_thread")]
async fn no_secret_token_or_legacy_key_in_logs_status_or_metrics() {
    let (logs, _guard) = Captured::install(tracing::Level::TRACE);

    // The test instance also accepts a rotated secret, for the reload step.
    let prod = mock_with(mock_config("prod").expires_in(3)).await;
    let test = mock_with(mock_config("test").client(
        "demo-test-client",
        ROTATED,
        &["core.invoice.read", "core.supplier.read"],
    ))
    .await;
    let toml = GatewayToml::two_instances(&prod.url(), &test.url()).token_warmup("0s");
    let gw = ready_gateway(&toml).await;
    let http = Http::new();
    let base = proxy_url(&gw, "");
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
    let with_test_secret =
        |secret: &str| (toml.clone()).map_client("test-main", |c| c.secret(secret));
    gw.reload(with_test_secret(ROTATED).config())
        .await
        .expect("rotated secret reloads");
    assert!(gw.reload(with_test_secret(WRONG).config()).await.is_err());
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
    let status = status_text(&gw).await;
    let metrics = metrics(&gw).await;
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
    let logs = logs.text();
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

/// A secret with the characters that encodings change (`/`, `+`, `=`, `?`, `>`), whose base64
/// differs between the standard and URL-safe alphabets.
const ECHOED: &str = "S3cr3t/Pr0d+Key=?>";
/// With `:` 12 bytes, so that base64 of `id:secret` is base64 of `id:` then of the secret.
const ECHO_ID: &str = "echo-client";

/// Every way the tests below may see `ECHOED` spelt, and the first 8 characters of each. The
/// base64 values come from coreutils `base64`, not from this file's encoder.
const ECHOED_SPELLINGS: &[&str] = &[
    "S3cr3t/Pr0d+Key=?>",
    "S3cr3t%2FPr0d%2BKey%3D%3F%3E",
    "S3cr3t%2fPr0d%2bKey%3d%3f%3e",
    r"S3cr3t\/Pr0d+Key=?>",
    r"S3cr3t\u002FPr0d\u002BKey\u003D\u003F\u003E",
    "S3cr3t&#x2F;Pr0d&#43;Key&#61;&#63;&gt;",
    // base64 of the secret, and of it form-urlencoded; standard, URL-safe and unpadded.
    "UzNjcjN0L1ByMGQrS2V5PT8+",
    "UzNjcjN0L1ByMGQrS2V5PT8-",
    "UzNjcjN0JTJGUHIwZCUyQktleSUzRCUzRiUzRQ==",
    "UzNjcjN0JTJGUHIwZCUyQktleSUzRCUzRiUzRQ",
];

/// How the echoing endpoint answers at each path: status and body, given the form it got.
const ECHOES: &[&str] = &[
    "form",
    "form-lower",
    "decoded",
    "partial",
    "json",
    "json-unicode",
    "html",
    "basic",
    "oauth",
    "long",
    "long-form",
    "truncated",
    "truncated-escape",
];

fn echo(path: &str, form: &str) -> (u16, String) {
    let sent = |name: &str| {
        form.split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in {form}"))
    };
    let (id_sent, secret_sent) = (sent("client_id"), sent("client_secret"));
    let (id, secret) = (form_decode(id_sent), form_decode(secret_sent));
    assert_eq!((id.as_str(), secret.as_str()), (ECHO_ID, ECHOED));
    let at = form.find(secret_sent).unwrap();
    match path {
        "/form" => (400, format!("invalid request body: {form}")),
        "/form-lower" => (400, format!("invalid request body: {}", lower_hex(form))),
        "/decoded" => (500, format!("client_id={id} client_secret={secret} rejected")),
        // Some escapes decoded, some not, `+` left alone.
        "/partial" => (
            400,
            format!(
                "client_secret={} rejected",
                secret.replace('/', "%2f").replace('=', "%3D")
            ),
        ),
        "/json" => (
            500,
            format!(
                r#"{{"message":"bad form","form":{{"client_id":"{id}","client_secret":"{}"}}}}"#,
                secret.replace('/', r"\/")
            ),
        ),
        "/json-unicode" => (
            500,
            format!(r#"{{"message":"bad form","client_secret":"{}"}}"#, {
                secret
                    .chars()
                    .map(|c| match c.is_ascii_alphanumeric() {
                        true => c.to_string(),
                        false => format!("\\u{:04X}", u32::from(c)),
                    })
                    .collect::<String>()
            }),
        ),
        "/html" => (
            502,
            format!(
                "<html><body><h1>400 Bad Request</h1><pre>client_id={id}&amp;client_secret={}</pre></body></html>",
                secret
                    .replace('/', "&#x2F;")
                    .replace('+', "&#43;")
                    .replace('=', "&#61;")
                    .replace('?', "&#63;")
                    .replace('>', "&gt;")
            ),
        ),
        // An echoed Authorization header, of the pair as it is and form-urlencoded first
        // (RFC 6749 §2.3.1), in both alphabets, padded and not.
        "/basic" => (
            401,
            [
                base64(&format!("{id}:{secret}"), true),
                base64(&format!("{id}:{secret}"), false).replace('+', "-").replace('/', "_"),
                base64(&format!("{id_sent}:{secret_sent}"), true),
                base64(&format!("{id_sent}:{secret_sent}"), false),
            ]
            .map(|b| format!("Authorization: Basic {b}\n"))
            .concat(),
        ),
        "/oauth" => (
            400,
            serde_json::json!({
                "error": "invalid_client",
                "error_description": format!(
                    "client_secret {secret_sent} does not match (Basic {})",
                    base64(&format!("{id}:{secret}"), true)
                ),
            })
            .to_string(),
        ),
        // The secret, and the form, straddling the 300th character of the body.
        "/long" => (400, format!("{}{secret} and more", "x".repeat(290))),
        "/long-form" => (400, format!("{}{form} and more", "x".repeat(290 - at))),
        // A server that cut its own answer short inside the secret, and inside an escape.
        "/truncated" => (500, format!("request: {}", &form[..at + 10])),
        "/truncated-escape" => (500, format!("request: {}", &form[..at + 8])),
        other => panic!("no echo at {other}"),
    }
}

/// A token endpoint on `127.0.0.1:0` that refuses every request with [`echo`] of its form.
async fn echoing_token_endpoint() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream));
        }
    });
    addr
}

async fn answer(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("a form has a length");
    while buf.len() < head_end + len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let form = String::from_utf8(buf[head_end..head_end + len].to_vec()).unwrap();
    let path = head.split(' ').nth(1).unwrap();
    let (status, body) = echo(path, &form);
    let reply = format!(
        "HTTP/1.1 {status} Echo\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
}

/// `application/x-www-form-urlencoded` value decoding.
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// `%2F` to `%2f`.
fn lower_hex(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    for i in 0..b.len() {
        if b[i] == b'%' {
            for hex in b.iter_mut().skip(i + 1).take(2) {
                hex.make_ascii_lowercase();
            }
        }
    }
    String::from_utf8(b).unwrap()
}

fn base64(s: &str, pad: bool) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .chain([0, 0].iter())
            .take(3)
            .fold(0u32, |n, b| n << 8 | u32::from(*b));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_test_encoders_agree_with_coreutils() {
    assert_eq!(
        base64(&format!("{ECHO_ID}:{ECHOED}"), true),
        "ZWNoby1jbGllbnQ6UzNjcjN0L1ByMGQrS2V5PT8+"
    );
    assert_eq!(
        base64("S3cr3t%2FPr0d%2BKey%3D%3F%3E", false),
        "UzNjcjN0JTJGUHIwZCUyQktleSUzRCUzRiUzRQ"
    );
    assert_eq!(lower_hex("a%2FB%3D+%"), "a%2fB%3d+%");
    assert_eq!(form_decode("a%2Fb+c%2b"), "a/b c+");
}

// current_thread: every task runs on this thread, so the thread-local subscriber sees them all.
#[tokio::test(flavor = "current_thread")]
async fn a_secret_echoed_by_the_token_endpoint_reaches_neither_logs_nor_status() {
    let (logs, _guard) = Captured::install(tracing::Level::TRACE);

    let endpoint = echoing_token_endpoint().await;
    // One instance and client per echo, each with the token URL that answers with it.
    let mut toml = GatewayToml::new();
    for name in ECHOES {
        toml = toml
            .instance(name, &format!("http://{endpoint}"))
            .map_instance(name, |i| i.token_url(&format!("http://{endpoint}/{name}")))
            .client(
                ClientToml::new(name, ECHO_ID)
                    .secret(ECHOED)
                    .scopes(&["core.invoice.read"]),
            )
            .route(
                RouteToml::new(&format!("/{name}"))
                    .instance(name)
                    .client(name),
            );
    }
    let gw = gateway(&toml).await;
    let http = Http::new();
    let status_url = admin_url(&gw, "/status");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (status_text, status) = loop {
        let r = http.get(&status_url, &[]).await;
        let status = r.json();
        let failed = ECHOES
            .iter()
            .all(|name| !status_client(&status, name)["last_error"].is_null());
        if failed || tokio::time::Instant::now() > deadline {
            break (r.text(), status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    gw.shutdown();

    let logs = logs.text();
    let mut messages = Vec::new();
    for name in ECHOES {
        let error = &status_client(&status, name)["last_error"];
        let message = error["message"].as_str().unwrap_or_else(|| {
            panic!("{name}: no token failure in /status: {status_text}\nlogs:\n{logs}")
        });
        // The echo arrived (no transport error) and something was taken out of it (the
        // excerpt cut may fall inside the marker, never inside the secret).
        assert!(
            message.contains("[reda") && message.contains("HTTP"),
            "{name}: {message}"
        );
        messages.push(message.to_string());
    }
    assert!(
        logs.contains("[redacted]"),
        "failures were not logged:\n{logs}"
    );
    let messages = messages.join("\n");
    for (what, text) in [
        ("logs", &logs),
        ("/status", &status_text),
        ("/status messages", &messages),
    ] {
        for spelling in ECHOED_SPELLINGS {
            for leak in [spelling, &spelling[..8]] {
                assert!(
                    !text.contains(leak),
                    "{what} contains {leak:?} (of {spelling:?}):\n{text}"
                );
            }
        }
    }
}
