//! The admin listener's human page (`GET /`): instances, clients and their tokens, routes and
//! their traffic, integrations and their migration verdicts, last reload.
//!
//! It is rendered from the `/status` JSON document ([`crate::ops::admin::status`]) and nothing else,
//! so the page and the JSON can never disagree, and a secret that is not in the JSON (none is)
//! cannot reach the page. Every dynamic string goes through [`escape_html`]. No JavaScript: the
//! page reloads itself every 5 s (`<meta http-equiv="refresh">`), so the admin listener can send
//! a `Content-Security-Policy` that forbids scripts altogether.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::Value;

/// Seconds between automatic reloads of the page.
pub const REFRESH_SECONDS: u32 = 5;

/// A token with less than this left is shown as expiring (the alert threshold in docs/operations.md).
const EXPIRING_SOON_S: u64 = 3600;

/// Escapes `s` for HTML text and for double- or single-quoted attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON scalar as escaped text; `—` for null or missing.
fn t(v: &Value) -> String {
    match v {
        Value::Null => "—".to_owned(),
        Value::String(s) => escape_html(s),
        other => escape_html(&other.to_string()),
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `1d 3h`, `19h 59m`, `4m 10s`, `42s`.
fn human_secs(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// An RFC 3339 timestamp from the JSON as "4m 10s ago" (or "in …"), with the exact time as a
/// tooltip; `—` when absent.
fn when(v: &Value, now: SystemTime) -> String {
    let Some(text) = v.as_str() else {
        return "—".to_owned();
    };
    let rel = match humantime::parse_rfc3339(text) {
        Ok(at) => match now.duration_since(at) {
            Ok(ago) => format!("{} ago", human_secs(ago.as_secs())),
            Err(ahead) => format!("in {}", human_secs(ahead.duration().as_secs())),
        },
        Err(_) => return escape_html(text),
    };
    format!(
        r#"<span title="{}">{}</span>"#,
        escape_html(text),
        escape_html(&rel)
    )
}

fn badge(class: &str, text: &str) -> String {
    format!(
        r#"<span class="badge {}">{}</span>"#,
        escape_html(class),
        escape_html(text)
    )
}

fn mode_badge(mode: &Value) -> String {
    let m = mode.as_str().unwrap_or("?");
    let class = match m {
        "oauth" => "ok",
        "passthrough" => "warn",
        _ => "muted",
    };
    badge(class, m)
}

/// The verdict label and its colour, as the report words it.
fn verdict_badge(verdict: &Value) -> String {
    match verdict.as_str() {
        Some("not_migrated") => badge("warn", "NOT MIGRATED"),
        Some("migrated") => badge("info", "MIGRATED"),
        Some("safe_to_revoke_key") => badge("ok", "SAFE TO REVOKE ITS API KEY"),
        Some(other) => badge("muted", other),
        None => badge("muted", "unrecognised callers"),
    }
}

fn chips(list: &[Value], class: &str) -> String {
    list.iter()
        .map(|s| format!(r#"<code class="{}">{}</code>"#, escape_html(class), t(s)))
        .collect::<Vec<_>>()
        .join(" ")
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2430;background:#f5f6f8}\
header{background:#1d2430;color:#fff;padding:12px 20px;display:flex;gap:16px;align-items:center;flex-wrap:wrap}\
header h1{font-size:18px;margin:0}header .meta{color:#c5cbd6;font-size:13px}\
main{padding:8px 20px 20px}section{margin-top:16px}h2{font-size:15px;margin:0 0 6px}\
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d9dde3}\
th,td{text-align:left;vertical-align:top;padding:5px 8px;border-bottom:1px solid #e6e9ee}\
th{background:#eef0f4;font-weight:600;font-size:12px;color:#4a5465}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#eef0f4;padding:1px 4px;border-radius:3px}\
pre{margin:0;font:12px ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap}\
code.missing{background:#fde2e1;color:#8a1c17}code.unused{color:#8a93a3}\
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;white-space:nowrap}\
.ok{background:#dcf3e3;color:#17612f}.warn{background:#fff0c9;color:#7a5300}.bad{background:#fde2e1;color:#8a1c17}\
.info{background:#dde9fb;color:#1b4b91}.muted{background:#eceef2;color:#5b6474}\
.nw{white-space:nowrap}.sub{color:#6b7484;font-size:12px}.err{color:#8a1c17}.empty{color:#6b7484;font-style:italic;padding:6px 0}\
footer{color:#6b7484;font-size:12px;padding:0 20px 16px}";

/// The whole page from a `/status` document. `now` turns timestamps into "… ago".
pub fn render(status: &Value, now: SystemTime) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let ready = status["ready"].as_bool().unwrap_or(false);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} coupa-gateway</title><style>{STYLE}</style></head><body>\n",
        if ready { "●" } else { "○" }
    );
    let _ = write!(
        out,
        "<header><h1>coupa-gateway <span class=\"meta\">{}</span></h1>{}\
         <span class=\"meta\">up {} · started {} · config {}</span></header>\n<main>\n",
        t(&status["version"]),
        if ready {
            badge("ok", "READY")
        } else {
            badge("bad", "NOT READY")
        } + if status["reload"]["last_error"].is_null() {
            ""
        } else {
            " <span class=\"badge bad\">LAST RELOAD REFUSED</span>"
        },
        escape_html(&human_secs(u(&status["uptime_s"]))),
        when(&status["started_at"], now),
        t(&status["config"]),
    );
    clients(&mut out, items(&status["clients"]), now);
    routes(&mut out, items(&status["routes"]));
    integrations(
        &mut out,
        items(&status["integrations"]),
        &status["ledger"],
        now,
    );
    discovered_keys(&mut out, status, now);
    instances(&mut out, items(&status["instances"]));
    reload(&mut out, &status["reload"], now);
    let _ = write!(
        out,
        "</main>\n<footer>The same data as <a href=\"/status\">/status</a> (JSON) · \
         <a href=\"/metrics\">/metrics</a> · reloads every {REFRESH_SECONDS} s · \
         migration figures come from the ledger ([state])</footer>\n</body></html>\n"
    );
    out
}

fn reload(out: &mut String, r: &Value, now: SystemTime) {
    let error = &r["last_error"];
    let restart = items(&r["restart_required"]);
    out.push_str("<section id=\"reload\"><h2>Configuration reloads</h2><table><tr><td>");
    let _ = write!(
        out,
        "{} applied · {} refused · last {}",
        u(&r["applied"]),
        u(&r["refused"]),
        when(&r["last_at"], now)
    );
    if !error.is_null() {
        let _ = write!(
            out,
            "<div>{} the running configuration stays in force: <span class=\"err\">{}</span></div>",
            badge("bad", "LAST RELOAD REFUSED"),
            t(error)
        );
    }
    if !restart.is_empty() {
        let what: Vec<String> = restart.iter().map(t).collect();
        let _ = write!(
            out,
            "<div>{} {}</div>",
            badge("warn", "RESTART REQUIRED"),
            what.join(", ")
        );
    }
    out.push_str("</td></tr></table></section>\n");
}

fn clients(out: &mut String, clients: &[Value], now: SystemTime) {
    out.push_str("<section id=\"clients\"><h2>OAuth clients</h2>\n");
    if clients.is_empty() {
        out.push_str("<p class=\"empty\">No OAuth clients configured.</p></section>\n");
        return;
    }
    out.push_str(
        "<table><tr><th>client</th><th>instance</th><th>token</th><th>last refresh</th>\
         <th>next refresh</th><th class=\"n\">refreshes ok / failed</th><th>last error</th>\
         <th>scopes</th></tr>\n",
    );
    for c in clients {
        let token = &c["token"];
        let token_cell = if token.is_null() {
            badge("bad", "NO TOKEN")
        } else {
            let left = u(&token["seconds_left"]);
            let b = if token["valid"].as_bool() != Some(true) {
                badge("bad", "EXPIRED")
            } else if left < EXPIRING_SOON_S {
                badge("warn", "EXPIRING")
            } else {
                badge("ok", "VALID")
            };
            format!(
                "{b} <span title=\"{} s; expires {}\">{} left</span>",
                left,
                t(&token["expires_at"]),
                escape_html(&human_secs(left))
            )
        };
        let err = &c["last_error"];
        let error_cell = if err.is_null() {
            "—".to_owned()
        } else {
            format!(
                "<span class=\"err\"><b>{}</b>: {}</span><div class=\"sub\">hint: {}</div>\
                 <div class=\"sub\">{} · {} consecutive failure(s)</div>",
                t(&err["kind"]),
                t(&err["message"]),
                t(&err["hint"]),
                when(&err["at"], now),
                u(&c["consecutive_failures"]),
            )
        };
        let next = match c["next_refresh_in_s"].as_u64() {
            Some(s) => format!("in {}", human_secs(s)),
            None => "—".to_owned(),
        };
        let report = &c["scope_report"];
        let mut scopes = chips(items(&c["scopes"]), "");
        let missing = items(&report["missing"]);
        if !missing.is_empty() {
            let _ = write!(
                scopes,
                "<div class=\"sub\">missing (tick in Coupa and add to scopes): {}</div>",
                chips(missing, "missing")
            );
        }
        let unused = items(&report["unused"]);
        if !unused.is_empty() {
            let _ = write!(
                scopes,
                "<div class=\"sub\">not used by traffic so far: {}</div>",
                chips(unused, "unused")
            );
        }
        let _ = writeln!(
            out,
            "<tr><td><b>{}</b><div class=\"sub\">{}</div></td><td>{}</td><td class=\"nw\">{token_cell}</td>\
             <td class=\"nw\">{}</td><td class=\"nw\">{}</td><td class=\"n\">{} / {}</td><td>{error_cell}</td><td>{scopes}</td></tr>",
            t(&c["name"]),
            t(&c["client_id"]),
            t(&c["instance"]),
            when(&c["last_refresh"], now),
            escape_html(&next),
            u(&c["refreshes"]["success"]),
            u(&c["refreshes"]["failure"]),
        );
    }
    out.push_str("</table></section>\n");
}

fn routes(out: &mut String, routes: &[Value]) {
    out.push_str("<section id=\"routes\"><h2>Routes</h2>\n");
    if routes.is_empty() {
        out.push_str("<p class=\"empty\">No routes configured.</p></section>\n");
        return;
    }
    out.push_str(
        "<table><tr><th>prefix</th><th>instance · client</th><th>mode</th><th>scope check</th>\
         <th>callers</th><th class=\"n\">2xx</th><th class=\"n\">3xx</th><th class=\"n\">4xx</th>\
         <th class=\"n\">5xx</th><th class=\"n\">total</th>\
         <th class=\"n\" title=\"share of responses with a 5xx status\">5xx rate</th><th class=\"n\">timeout</th></tr>\n",
    );
    for r in routes {
        let by = &r["responses"];
        let total: u64 = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .map(|c| u(&by[*c]))
            .sum();
        let rate = if total == 0 {
            "—".to_owned()
        } else {
            let pct = u(&by["5xx"]) as f64 * 100.0 / total as f64;
            let class = if pct >= 5.0 {
                "bad"
            } else if pct > 0.0 {
                "warn"
            } else {
                "ok"
            };
            badge(class, &format!("{pct:.1}%"))
        };
        let mut callers: Vec<String> = items(&r["integrations"]).iter().map(t).collect();
        if r["anonymous_allowed"].as_bool() == Some(true) {
            callers.push("<i>anyone</i>".to_owned());
        }
        let callers = if callers.is_empty() {
            "—".to_owned()
        } else {
            callers.join(", ")
        };
        let timeout = r["timeout_s"]
            .as_f64()
            .map(|s| human_secs(s.round() as u64))
            .unwrap_or_else(|| "—".to_owned());
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{} · {}</td><td>{}</td><td>{}</td><td>{callers}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{total}</td><td class=\"n\">{rate}</td><td class=\"n\">{}</td></tr>",
            t(&r["prefix"]),
            t(&r["instance"]),
            t(&r["client"]),
            mode_badge(&r["mode"]),
            t(&r["scope_check"]),
            u(&by["2xx"]),
            u(&by["3xx"]),
            u(&by["4xx"]),
            u(&by["5xx"]),
            escape_html(&timeout),
        );
    }
    out.push_str("</table></section>\n");
}

/// Where the migration figures come from, since when, and whether the store takes writes.
fn ledger(out: &mut String, l: &Value, now: SystemTime) {
    if l.is_null() {
        return;
    }
    let place = match l["store"].as_str() {
        Some("file") => format!("kept in {} across restarts", t(&l["location"])),
        Some("redis") => format!("shared by every replica through {}", t(&l["location"])),
        _ => "in this process's memory only: counters restart with it".to_owned(),
    };
    let health = if l["healthy"].as_bool() == Some(false) {
        format!(
            " {} <span class=\"sub\">since {}: {}; {} record(s) kept in memory until it is back</span>",
            badge("bad", "STORE FAILING"),
            when(&l["down_since"], now),
            t(&l["last_error"]),
            t(&l["pending_records"]),
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "<p class=\"meta\">Observed since {}; {place}.{health}</p>",
        when(&l["observed_since"], now)
    );
}

fn integrations(out: &mut String, list: &[Value], ledger_status: &Value, now: SystemTime) {
    out.push_str("<section id=\"integrations\"><h2>Integrations and migration</h2>\n");
    ledger(out, ledger_status, now);
    if list.is_empty() {
        out.push_str(
            "<p class=\"empty\">No [[integrations]] configured and no traffic from unrecognised \
             callers yet.</p></section>\n",
        );
        return;
    }
    out.push_str(
        "<table><tr><th>integration</th><th>verdict</th><th>routes (mode · 2xx/4xx/5xx · passthrough)</th>\
         <th class=\"n\">legacy-key requests</th><th>last seen</th><th>last passthrough</th></tr>\n",
    );
    for g in list {
        let mut verdict = verdict_badge(&g["verdict"]);
        if g["verdict"].as_str() == Some("migrated") {
            let _ = write!(
                verdict,
                "<div class=\"sub\">key safe to revoke {} if no passthrough traffic appears</div>",
                when(&g["safe_to_revoke_at"], now)
            );
        }
        let mut name = format!("<b>{}</b>", t(&g["name"]));
        if g["configured"].as_bool() == Some(false) && !g["verdict"].is_null() {
            name.push_str("<div class=\"sub\">no longer in the configuration</div>");
        }
        let routes: Vec<String> = items(&g["routes"])
            .iter()
            .map(|r| {
                let req = &r["requests"];
                format!(
                    "<div><code>{}</code> {} {}/{}/{} · {}{}</div>",
                    t(&r["prefix"]),
                    mode_badge(&r["mode"]),
                    u(&req["2xx"]),
                    u(&req["4xx"]),
                    u(&req["5xx"]),
                    u(&r["passthrough_requests"]),
                    if r["allowed"].as_bool() == Some(false) {
                        " <span class=\"err\">(not allowed)</span>"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let mut routes = if routes.is_empty() {
            "—".to_owned()
        } else {
            routes.concat()
        };
        for line in items(&g["oauth_readiness"]) {
            let class = if line.as_str().is_some_and(|l| l.contains("not ready")) {
                "err"
            } else {
                "sub"
            };
            let _ = write!(routes, "<div class=\"{class}\">{}</div>", t(line));
        }
        let _ = writeln!(
            out,
            "<tr><td>{name}</td><td>{verdict}</td><td>{routes}</td><td class=\"n\">{}</td>\
             <td>{}</td><td>{}</td></tr>",
            u(&g["legacy_key_requests"]),
            when(&g["last_seen"], now),
            when(&g["last_passthrough"], now),
        );
    }
    out.push_str("</table></section>\n");
}

/// Legacy keys no integration knows: the forgotten integrations, each with the entry that
/// would recognise it.
fn discovered_keys(out: &mut String, status: &Value, now: SystemTime) {
    out.push_str("<section id=\"discovered-keys\"><h2>Unrecognised API keys</h2>\n");
    let keys = items(&status["discovered_keys"]);
    let evicted = u(&status["discovered_keys_evicted"]);
    if evicted > 0 {
        let _ = writeln!(
            out,
            "<p class=\"sub\">{evicted} more key(s) dropped: only the most recently seen are kept.</p>"
        );
    }
    if keys.is_empty() {
        out.push_str(
            "<p class=\"empty\">No request with a key that no [[integrations]] entry knows.</p></section>\n",
        );
        return;
    }
    out.push_str(
        "<table><tr><th>key (SHA-256 prefix)</th><th>routes</th><th>last seen</th>\
         <th class=\"n\">2xx</th><th class=\"n\">3xx</th><th class=\"n\">4xx</th><th class=\"n\">5xx</th>\
         <th>sources</th><th>to recognise it, add to proxy.toml</th></tr>\n",
    );
    for k in keys {
        let req = &k["requests"];
        let mut sources = chips(items(&k["addresses"]), "");
        for agent in items(&k["user_agents"]) {
            let _ = write!(sources, "<div class=\"sub\">{}</div>", t(agent));
        }
        let _ = writeln!(
            out,
            "<tr><td><code title=\"{}\">{}</code><div class=\"sub\">first seen {}</div></td><td>{}</td>\
             <td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{sources}</td><td><pre>{}</pre></td></tr>",
            t(&k["key_sha256"]),
            t(&k["fingerprint"]),
            when(&k["first_seen"], now),
            chips(items(&k["routes"]), ""),
            when(&k["last_seen"], now),
            u(&req["2xx"]),
            u(&req["3xx"]),
            u(&req["4xx"]),
            u(&req["5xx"]),
            t(&k["stanza"]),
        );
    }
    out.push_str("</table></section>\n");
}

/// An instance's rate budget: rate, whose it is (the fleet's through Redis, or this
/// replica's), who is waiting for turns now, and the turns so far.
fn budget(b: &Value) -> String {
    if b.is_null() {
        return "off".to_owned();
    }
    let scope = match b["scope"].as_str() {
        Some("fleet") => badge("ok", "SHARED BY THE FLEET"),
        Some("fallback") => format!(
            "{} <div class=\"sub\">{}</div>",
            badge("bad", "LOCAL SHARE: REDIS FAILING"),
            t(&b["reason"])
        ),
        _ => "this replica's".to_owned(),
    };
    let waiting: Vec<String> = items(&b["waiting"])
        .iter()
        .map(|w| format!("{} {}", t(&w["integration"]), t(&w["requests"])))
        .collect();
    let turns = &b["turns"];
    format!(
        "{}/s, burst {} · {scope}<div class=\"sub\">waiting: {} · turns: {} at once, {} after waiting, {} refused (429)</div>",
        t(&b["per_second"]),
        t(&b["burst"]),
        if waiting.is_empty() { "nobody".to_owned() } else { waiting.join(", ") },
        t(&turns["immediate"]),
        t(&turns["after_waiting"]),
        t(&turns["rejected"]),
    )
}

fn instances(out: &mut String, list: &[Value]) {
    out.push_str("<section id=\"instances\"><h2>Coupa instances</h2>\n");
    if list.is_empty() {
        out.push_str("<p class=\"empty\">No instances configured.</p></section>\n");
        return;
    }
    out.push_str("<table><tr><th>instance</th><th>API</th><th>token endpoint</th><th>rate budget</th></tr>\n");
    for i in list {
        let _ = writeln!(
            out,
            "<tr><td><b>{}</b></td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
            t(&i["name"]),
            t(&i["url"]),
            t(&i["token_url"]),
            budget(&i["budget"]),
        );
    }
    out.push_str("</table></section>\n");
}

#[cfg(test)]
mod tests;
