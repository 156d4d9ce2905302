//! The access log cannot be forged: in text lines every caller-influenced field is escaped, so
//! a path or request id cannot end a field or a line early or pass for another field.

mod common;

use std::time::Duration;

use common::*;

/// The access lines written so far (split on `\n` only, as a log shipper would).
fn access_lines(logs: &Captured) -> Vec<String> {
    logs.text()
        .split('\n')
        .filter(|l| l.contains(" access: "))
        .map(str::to_owned)
        .collect()
}

/// Characters some log viewer or parser takes for a line or field break.
const BREAKS: [char; 8] = [
    '\r', '\u{b}', '\u{c}', '\u{85}', '\u{a0}', '\u{2028}', '\u{2029}', '\t',
];

// current_thread: the gateway's workers inherit this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn text_access_lines_cannot_be_forged() {
    let (logs, _guard) = Captured::install(tracing::Level::INFO);
    let env = Env::start().await;

    // Raw UTF-8 in the request line (percent-encoded would already be harmless), quotes,
    // and request ids with quotes and spaces; routed and unrouted.
    let cases = [
        ("/prod/api/x\u{2028}status=200", ""),
        ("/prod/api/x\u{2029}status=200", ""),
        ("/prod/api/x\u{a0}status=200", ""),
        ("/prod/api/x\u{85}status=200", ""),
        ("/prod/api/x\"status=200\"", ""),
        ("/nowhere/x\u{2028}status=200\"", ""),
        ("/prod/api/x", "X-Request-Id: a\" status=200 b=\"\r\n"),
        ("/prod/api/x", "X-Request-Id: spaced status=200\r\n"),
        ("/nowhere", "X-Request-Id: a\\\" status=200\r\n"),
    ];
    for (target, header) in cases {
        let before = access_lines(&logs).len();
        let (status, text) = raw(
            env.gw.addr(),
            &format!("GET {target} HTTP/1.1\r\nHost: gw\r\n{header}Connection: close\r\n\r\n"),
        )
        .await;
        assert!(
            eventually(Duration::from_secs(5), || access_lines(&logs).len()
                > before)
            .await,
            "{target:?}: no access line"
        );
        let lines = access_lines(&logs);
        assert_eq!(lines.len(), before + 1, "{target:?}: {lines:#?}");
        let line = &lines[before];
        let statuses: Vec<&str> = line
            .split(' ')
            .filter_map(|field| field.strip_prefix("status="))
            .collect();
        assert_eq!(
            statuses,
            [status.to_string()],
            "{target:?} {header:?}: {line}"
        );
        for c in BREAKS {
            assert!(
                !line.contains(c),
                "{target:?} {header:?}: raw {c:?} in {line:?}"
            );
        }
        // Every quote is an escaped one: none can open or close a field.
        assert!(
            line.match_indices('"')
                .all(|(i, _)| line[..i].ends_with('\\')),
            "{target:?} {header:?}: {line}"
        );
        if !header.is_empty() {
            let echoed = text
                .lines()
                .find_map(|l| l.strip_prefix("x-request-id: "))
                .expect("a request id is echoed");
            assert!(!header.contains(echoed), "{header:?} was kept: {text}");
        }
    }
}

// current_thread, like the test above.
#[tokio::test(flavor = "current_thread")]
async fn behind_a_trusted_proxy_the_line_names_the_client_and_the_trace() {
    let (logs, _guard) = Captured::install(tracing::Level::INFO);
    let prod = mock("prod").await;
    let gw =
        ready_gateway(&GatewayToml::prod(&prod.url()).server(r#"trusted_proxies = ["127.0.0.1"]"#))
            .await;
    let xff = [
        ("x-forwarded-for", "203.0.113.1, 198.51.100.7"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    let reply = Http::new()
        .get(&proxy_url(&gw, "/prod/api/suppliers"), &xff)
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || access_lines(&logs)
            .iter()
            .any(|l| l.contains("198.51.100.7")))
        .await,
        "{}",
        logs.text()
    );
    let lines = access_lines(&logs);
    assert!(
        !lines.iter().any(|l| l.contains("203.0.113.1")),
        "the forged entry is not the client: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736")),
        "{lines:?}"
    );
}
