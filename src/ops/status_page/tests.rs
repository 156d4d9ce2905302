use super::*;
use serde_json::json;
use std::time::Duration;

fn at(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap()
}

fn sample() -> Value {
    json!({
        "version": "0.1.0",
        "started_at": "2026-01-01T00:00:00Z",
        "uptime_s": 3725,
        "config": "/etc/coupa-gateway/proxy.toml",
        "ready": true,
        "instances": [{"name": "prod", "url": "https://acme.coupahost.com", "token_url": "https://acme.coupahost.com/oauth2/token"}],
        "clients": [{
            "name": "prod-main", "instance": "prod", "client_id": "acme-erp",
            "scopes": ["core.invoice.read", "core.user.read"],
            "token": {"valid": true, "minted_at": "2026-01-01T00:00:05Z", "expires_at": "2026-01-02T00:00:05Z",
                      "seconds_left": 7200, "granted_scope": "core.invoice.read core.user.read"},
            "last_refresh": "2026-01-01T00:00:05Z",
            "last_error": {"at": "2026-01-01T01:00:00Z", "kind": "invalid_client",
                           "message": "Client authentication failed <b>", "hint": "check client_id & secret"},
            "consecutive_failures": 2, "next_refresh_in_s": 60,
            "refreshes": {"success": 1, "failure": 2},
            "scope_report": {"configured": ["core.invoice.read", "core.user.read"], "needed": [],
                             "missing": ["core.supplier.write"], "unused": ["core.user.read"]},
        }],
        "routes": [{
            "prefix": "/prod", "instance": "prod", "client": "prod-main", "mode": "oauth",
            "scope_check": "enforce", "anonymous_allowed": false, "integrations": ["erp"],
            "timeout_s": 120.0,
            "responses": {"1xx": 0, "2xx": 95, "3xx": 0, "4xx": 0, "5xx": 5},
        }, {
            "prefix": "/legacy", "instance": "prod", "client": "prod-main", "mode": "passthrough",
            "scope_check": "warn", "anonymous_allowed": true, "integrations": [],
            "timeout_s": 30.0,
            "responses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
        }],
        "integrations": [{
            "name": "<script>alert(\"pwned\")</script>", "configured": true, "verdict": "not_migrated",
            "safe_to_revoke_at": null, "last_seen": "2026-01-01T01:00:00Z", "legacy_key_requests": 3,
            "last_passthrough": "2026-01-01T01:00:00Z",
            "routes": [{"prefix": "/legacy", "mode": "passthrough", "allowed": true,
                        "requests": {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 0, "5xx": 0},
                        "passthrough_requests": 3}],
        }, {
            "name": "erp", "configured": true, "verdict": "migrated",
            "safe_to_revoke_at": "2026-01-08T00:00:00Z", "last_seen": null, "legacy_key_requests": 0,
            "last_passthrough": null, "routes": [],
        }, {
            "name": "old-sync", "configured": true, "verdict": "safe_to_revoke_key",
            "safe_to_revoke_at": null, "last_seen": null, "legacy_key_requests": 0,
            "last_passthrough": null, "routes": [],
        }, {
            "name": "anonymous", "configured": false, "verdict": null, "routes": [],
        }],
        "reload": {"last_at": null, "last_error": null, "restart_required": [], "applied": 0, "refused": 0},
    })
}

#[test]
fn the_ledger_line_says_where_the_figures_come_from_and_a_failing_store() {
    let now = at("2026-01-01T02:00:00Z");
    let mut status = sample();
    status["ledger"] = json!({"store": "redis", "location": "redis://***@cache:6379/0",
        "observed_since": "2026-01-01T00:00:00Z", "healthy": false,
        "down_since": "2026-01-01T01:59:00Z", "last_error": "redis <down>", "pending_records": 3});
    let page = render(&status, now);
    assert!(
        page.contains("shared by every replica through redis://***@cache:6379/0"),
        "{page}"
    );
    assert!(page.contains("STORE FAILING"));
    assert!(page.contains("redis &lt;down&gt;") && !page.contains("<down>"));
    status["ledger"] =
        json!({"store": "memory", "healthy": true, "observed_since": "2026-01-01T00:00:00Z"});
    let page = render(&status, now);
    assert!(page.contains("memory only") && !page.contains("STORE FAILING"));
}

#[test]
fn each_instance_shows_its_budget_and_who_waits() {
    let now = at("2026-01-01T02:00:00Z");
    let mut status = sample();
    status["instances"][0]["budget"] = json!({"scope": "fallback", "reason": "redis: <timeout>",
        "per_second": 25.0, "burst": 20, "waiting": [{"integration": "bulk", "requests": 12}],
        "turns": {"immediate": 5, "after_waiting": 40, "rejected": 1}});
    let page = render(&status, now);
    assert!(page.contains("LOCAL SHARE: REDIS FAILING"), "{page}");
    assert!(page.contains("redis: &lt;timeout&gt;"));
    assert!(page.contains("waiting: bulk 12"));
    assert!(page.contains("40 after waiting"));
}

#[test]
fn oauth_readiness_lines_are_shown() {
    let now = at("2026-01-01T02:00:00Z");
    let mut status = sample();
    let list = status["integrations"].as_array_mut().unwrap();
    list[0]["oauth_readiness"] = json!(["/prod: not ready: 3 read(s) answered 403 with the token (core.supplier.read?); 0 of 3 sampled reads matched"]);
    let page = render(&status, now);
    assert!(
        page.contains("<div class=\"err\">/prod: not ready: 3 read(s) answered 403"),
        "{page}"
    );
}

#[test]
fn escape_html_covers_text_and_attributes() {
    assert_eq!(
        escape_html(r#"<a href="x" title='y'>&amp;</a>"#),
        "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
    );
    assert_eq!(escape_html("prod-main"), "prod-main");
}

#[test]
fn hostile_strings_are_escaped() {
    let page = render(&sample(), at("2026-01-01T02:00:00Z"));
    assert!(!page.contains("<script>"), "{page}");
    assert!(!page.contains("<b>\""));
    assert!(page.contains("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;"));
    assert!(page.contains("Client authentication failed &lt;b&gt;"));
    assert!(page.contains("hint: check client_id &amp; secret"));
    // The only tags are ours: no attribute was broken out of.
    assert!(!page.contains("\"pwned\""));
}

#[test]
fn verdicts_modes_tokens_and_rates_are_shown() {
    let page = render(&sample(), at("2026-01-01T02:00:00Z"));
    for text in [
        "NOT MIGRATED",
        "MIGRATED</span><div class=\"sub\">key safe to revoke",
        "SAFE TO REVOKE ITS API KEY",
        "unrecognised callers",
        "READY",
        "VALID",
        "2h 0m left",
        "in 1m 0s",
        "5.0%",
        "invalid_client",
        "core.supplier.write",
        "passthrough",
        "<i>anyone</i>",
        "https://acme.coupahost.com/oauth2/token",
        "up 1h 2m",
        "1h 0m ago",
        "content=\"5\"",
    ] {
        assert!(page.contains(text), "missing {text:?} in\n{page}");
    }
    assert!(!page.contains("NOT READY"));
}

#[test]
fn expiring_and_missing_tokens_stand_out() {
    let mut s = sample();
    s["clients"][0]["token"]["seconds_left"] = json!(1800);
    s["ready"] = json!(false);
    let page = render(&s, SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    assert!(page.contains("EXPIRING"));
    assert!(page.contains("30m 0s left"));
    assert!(page.contains("NOT READY"));
    s["clients"][0]["token"] = Value::Null;
    assert!(render(&s, SystemTime::now()).contains("NO TOKEN"));
}

#[test]
fn empty_states() {
    let mut s = sample();
    for key in ["clients", "routes", "integrations", "instances"] {
        s[key] = json!([]);
    }
    let page = render(&s, SystemTime::now());
    assert!(page.contains("No OAuth clients configured."));
    assert!(page.contains("No routes configured."));
    assert!(page.contains("No [[integrations]] configured"));
    assert!(page.contains("No instances configured."));
    // A document missing everything still renders.
    let bare = render(&json!({}), SystemTime::now());
    assert!(bare.contains("NOT READY") && bare.ends_with("</html>\n"));
}

#[test]
fn refused_reload_is_shown() {
    let mut s = sample();
    s["reload"] = json!({"last_at": "2026-01-01T01:59:00Z", "last_error": "routes[0].client: no client named \"x\"",
                         "restart_required": ["admin.listen (a -> b)"], "applied": 1, "refused": 1});
    let page = render(&s, at("2026-01-01T02:00:00Z"));
    assert!(page.contains("LAST RELOAD REFUSED"));
    assert!(page.contains("no client named &quot;x&quot;"));
    assert!(page.contains("RESTART REQUIRED"));
    assert!(page.contains("admin.listen (a -&gt; b)"));
    assert!(page.contains("1m 0s ago"));
}

#[test]
fn discovered_keys_are_listed_with_their_stanza() {
    let mut s = sample();
    s["discovered_keys"] = json!([{
        "fingerprint": "0123456789ab", "key_sha256": "0123456789ab<x>",
        "routes": ["/prod"], "requests": {"2xx": 7, "3xx": 0, "4xx": 2, "5xx": 0},
        "first_seen": "2026-01-01T00:00:00Z", "last_seen": "2026-01-01T01:59:00Z",
        "addresses": ["10.0.0.1"], "user_agents": ["curl/8 <i>"],
        "stanza": "[[integrations]]\nname = \"unknown-0123456789ab\"\n",
    }]);
    s["discovered_keys_evicted"] = json!(3);
    let page = render(&s, at("2026-01-01T02:00:00Z"));
    for text in [
        "Unrecognised API keys",
        ">0123456789ab</code>",
        "<td class=\"n\">7</td>",
        "1m 0s ago",
        "10.0.0.1",
        "curl/8 &lt;i&gt;",
        "name = &quot;unknown-0123456789ab&quot;",
        "3 more key(s) dropped",
    ] {
        assert!(page.contains(text), "missing {text:?} in\n{page}");
    }
    assert!(!page.contains("<i>\""));
    s["discovered_keys"] = json!([]);
    assert!(render(&s, SystemTime::now()).contains("No request with a key"));
}

#[test]
fn durations_read_naturally() {
    assert_eq!(human_secs(0), "0s");
    assert_eq!(human_secs(59), "59s");
    assert_eq!(human_secs(61), "1m 1s");
    assert_eq!(human_secs(72_000), "20h 0m");
    assert_eq!(human_secs(90_000), "1d 1h");
}
