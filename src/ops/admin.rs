//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/status` and the status page `/`,
//! all read-only, and `POST /ledger/forget?integration=NAME` (what `report --forget` sends).
//! It shares the runtime snapshot and token cells with the proxy and never prints a secret or
//! token.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::migration;
use crate::ops::metrics::escape;
use crate::ops::status_page;
use crate::ops::telemetry;
use crate::runtime::Shared;

/// Serves one admin request.
pub async fn handle<B>(
    shared: Arc<Shared>,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Only the head is needed; the body type need not outlive the awaits below (Send).
    let (method, uri) = (req.method().clone(), req.uri().clone());
    drop(req);
    if uri.path() == "/ledger/forget" {
        return Ok(forget(&shared, &method, &uri).await);
    }
    if method != Method::GET && method != Method::HEAD {
        return Ok(json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method_not_allowed", "message": "the admin endpoints are read-only; use GET"}),
        ));
    }
    let resp = match uri.path() {
        "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
        "/readyz" => readyz(&shared),
        "/metrics" => {
            let mut resp = Response::new(Full::new(Bytes::from(metrics(&shared).await)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/status" => json_response(StatusCode::OK, &status(&shared).await),
        "/" | "/index.html" => html_response(status_page::render(
            &status(&shared).await,
            SystemTime::now(),
        )),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": "admin endpoints: / (status page) /healthz /readyz /metrics /status"}),
        ),
    };
    Ok(resp)
}

/// `POST /ledger/forget?integration=NAME`: drops a removed or renamed integration's history.
async fn forget(shared: &Shared, method: &Method, uri: &http::Uri) -> Response<Full<Bytes>> {
    if *method != Method::POST {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method_not_allowed", "message": "use POST /ledger/forget?integration=NAME"}),
        );
    }
    let name = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|p| p.strip_prefix("integration="))
            .filter(|n| !n.is_empty())
    });
    let Some(name) = name else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "bad_request", "message": "name the integration: POST /ledger/forget?integration=NAME"}),
        );
    };
    // Names are bare TOML keys (letters, digits, '-', '_'): nothing to percent-decode.
    if shared
        .runtime
        .load()
        .config
        .integrations
        .iter()
        .any(|g| g.name == name)
    {
        return json_response(
            StatusCode::CONFLICT,
            &json!({"error": "still_configured", "message": format!("integration {name:?} is still in proxy.toml; remove or rename it there first, or its traffic would be recorded again")}),
        );
    }
    match shared.ledger.forget(name).await {
        Ok(found) => json_response(
            StatusCode::OK,
            &json!({"integration": name, "forgotten": found}),
        ),
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "store_unavailable", "message": e.to_string()}),
        ),
    }
}

/// A small JSON answer (`no-store`).
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The status page. The CSP forbids scripts, plugins, frames and every fetch: the page is
/// self-contained (inline CSS only), so even a missed escape could not run code.
fn html_response(page: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(page)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// 200 only when every client holds a valid token: a load balancer should not send traffic to
/// a replica that would answer 503 to all of it.
fn readyz(shared: &Shared) -> Response<Full<Bytes>> {
    if shared.shutting_down.load(Ordering::Relaxed) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "shutting_down": true}),
        );
    }
    let runtime = shared.runtime.load();
    let now = Instant::now();
    let waiting: Vec<&str> = runtime
        .tokens
        .values()
        .filter(|c| !c.is_ready(now))
        .map(|c| c.name())
        .collect();
    if waiting.is_empty() {
        json_response(StatusCode::OK, &json!({"ready": true}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "waiting_for_token": waiting}),
        )
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The `/status` document. Deliberately built field by field (no `Serialize` on the config
/// types) so that adding a secret field to the config can never leak it here.
pub async fn status(shared: &Shared) -> Value {
    let ledger = shared.ledger.view(&shared.tracker).await;
    let runtime = shared.runtime.load();
    let config = &runtime.config;
    let now = Instant::now();
    let instances: Vec<Value> = config
        .instances
        .values()
        .map(|i| {
            json!({
                "name": i.name,
                "url": format!("{}{}", i.url.to_string().trim_end_matches('/'), i.base_path),
                "token_url": i.token_url,
                "budget": crate::ops::budget::status(shared.budgets.find(&i.name).as_deref()),
            })
        })
        .collect();
    let (integrations, mut scope_reports) =
        migration::report(&runtime.config, &ledger, SystemTime::now());
    let clients: Vec<Value> = runtime
        .tokens
        .iter()
        .map(|(name, cell)| {
            let state = cell.state();
            let token = state.token.as_ref().map(|t| {
                json!({
                    "valid": t.is_valid_at(now),
                    "minted_at": rfc3339(t.minted_at),
                    "expires_at": rfc3339(t.expires_at),
                    "seconds_left": t.remaining(now).as_secs(),
                    "granted_scope": t.scope,
                })
            });
            let last_error = state.last_error.as_ref().map(|e| {
                json!({
                    "at": rfc3339(e.at),
                    "kind": e.kind.as_str(),
                    "message": e.message,
                    "hint": e.hint,
                })
            });
            let req = cell.request();
            json!({
                "name": name,
                "instance": cell.instance(),
                "client_id": req.client_id,
                "scopes": req.scopes,
                "token": token,
                "last_refresh": state.last_success.map(rfc3339),
                "last_error": last_error,
                "consecutive_failures": state.consecutive_failures,
                "next_refresh_in_s": state.next_attempt.map(|a| a.saturating_duration_since(now).as_secs()),
                "refreshes": {
                    "success": cell.refreshes_ok.load(Ordering::Relaxed),
                    "failure": cell.refreshes_failed.load(Ordering::Relaxed),
                },
                "scope_report": scope_reports.remove(name),
            })
        })
        .collect();
    let known_keys: Vec<String> = config
        .integrations
        .iter()
        .filter_map(|g| g.key_sha256.as_ref().map(migration::discovered::hex))
        .collect();
    let routes: Vec<Value> = runtime
        .routes
        .iter()
        .map(|(prefix, r)| {
            let by_class: serde_json::Map<String, Value> = r
                .metrics
                .responses
                .snapshot()
                .iter()
                .map(|(class, n)| (class.to_string(), json!(n)))
                .collect();
            let callers: Vec<&str> = config
                .integrations
                .iter()
                .filter(|g| g.routes.iter().any(|p| p == prefix))
                .map(|g| g.name.as_str())
                .collect();
            json!({
                "prefix": prefix,
                "instance": r.instance.name,
                "client": r.client,
                "mode": r.mode.as_str(),
                "scope_check": r.scope_check.as_str(),
                "anonymous_allowed": r.open,
                "integrations": callers,
                "timeout_s": r.timeout.as_secs_f64(),
                "responses": by_class,
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(shared.started_at),
        "uptime_s": shared.started.elapsed().as_secs(),
        "config": config.source.as_ref().map(|p| p.display().to_string()),
        "ready": runtime.ready(now),
        "instances": instances,
        "clients": clients,
        "routes": routes,
        "integrations": integrations,
        "ledger": shared.ledger.status(&ledger),
        "discovered_keys": migration::discovered::report(&ledger.keys, &known_keys),
        "discovered_keys_evicted": ledger.meta.keys_evicted,
        "reload": reload_status(shared),
    })
}

fn reload_status(shared: &Shared) -> Value {
    let r = shared
        .reload
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    json!({
        "last_at": r.at.map(rfc3339),
        "last_error": r.error,
        "restart_required": r.restart_required,
        "applied": r.applied,
        "refused": r.refused,
    })
}

/// The Prometheus text exposition.
pub async fn metrics(shared: &Shared) -> String {
    let runtime = shared.runtime.load();
    let now = Instant::now();
    let mut out = String::with_capacity(4096);
    shared.metrics.render_requests(&mut out);
    out.push_str(
        "# HELP coupa_gateway_token_refreshes_total Token requests by client and result.\n",
    );
    out.push_str("# TYPE coupa_gateway_token_refreshes_total counter\n");
    for (name, cell) in &runtime.tokens {
        let name = escape(name);
        let ok = cell.refreshes_ok.load(Ordering::Relaxed);
        let failed = cell.refreshes_failed.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "coupa_gateway_token_refreshes_total{{client=\"{name}\",result=\"success\"}} {ok}"
        );
        let _ = writeln!(
            out,
            "coupa_gateway_token_refreshes_total{{client=\"{name}\",result=\"failure\"}} {failed}"
        );
    }
    out.push_str("# HELP coupa_gateway_token_expiry_seconds Seconds until the client's token stops being used (0: no valid token).\n");
    out.push_str("# TYPE coupa_gateway_token_expiry_seconds gauge\n");
    for (name, cell) in &runtime.tokens {
        let left = cell
            .state()
            .token
            .as_ref()
            .map_or(0, |t| t.remaining(now).as_secs());
        let _ = writeln!(
            out,
            "coupa_gateway_token_expiry_seconds{{client=\"{}\"}} {left}",
            escape(name)
        );
    }
    out.push_str("# HELP coupa_gateway_upstream_unauthorized_total 401s from Coupa on oauth routes, by client and what the gateway did.\n");
    out.push_str("# TYPE coupa_gateway_upstream_unauthorized_total counter\n");
    for (name, cell) in &runtime.tokens {
        let name = escape(name);
        let replayed = cell.unauthorized_replayed.load(Ordering::Relaxed);
        let passed = cell.unauthorized_passed.load(Ordering::Relaxed);
        let _ = writeln!(out, "coupa_gateway_upstream_unauthorized_total{{client=\"{name}\",outcome=\"replayed\"}} {replayed}");
        let _ = writeln!(out, "coupa_gateway_upstream_unauthorized_total{{client=\"{name}\",outcome=\"passed_through\"}} {passed}");
    }
    crate::ops::budget::render_metrics(&shared.budgets, &mut out);
    out.push_str("# HELP coupa_gateway_requests_in_flight Requests being served now.\n");
    out.push_str("# TYPE coupa_gateway_requests_in_flight gauge\n");
    let _ = writeln!(
        out,
        "coupa_gateway_requests_in_flight {}",
        shared.inflight.load(Ordering::Relaxed)
    );
    out.push_str(
        "# HELP coupa_gateway_connections_open Client connections open, by proxy worker.\n",
    );
    out.push_str("# TYPE coupa_gateway_connections_open gauge\n");
    for (worker, open) in shared.worker_connections.iter().enumerate() {
        let _ = writeln!(
            out,
            "coupa_gateway_connections_open{{worker=\"{worker}\"}} {}",
            open.load(Ordering::Relaxed)
        );
    }
    migration::render_metrics(&shared.tracker, &mut out);
    shared.ledger.render_metrics(&mut out);
    let reload = shared
        .reload
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    out.push_str("# HELP coupa_gateway_config_reloads_total Configuration reloads by result.\n");
    out.push_str("# TYPE coupa_gateway_config_reloads_total counter\n");
    let _ = writeln!(
        out,
        "coupa_gateway_config_reloads_total{{result=\"applied\"}} {}",
        reload.applied
    );
    let _ = writeln!(
        out,
        "coupa_gateway_config_reloads_total{{result=\"refused\"}} {}",
        reload.refused
    );
    out.push_str("# HELP coupa_gateway_ready 1 when every client holds a valid token.\n");
    out.push_str("# TYPE coupa_gateway_ready gauge\n");
    let _ = writeln!(out, "coupa_gateway_ready {}", u8::from(runtime.ready(now)));
    out.push_str("# HELP coupa_gateway_uptime_seconds Seconds since the process started.\n");
    out.push_str("# TYPE coupa_gateway_uptime_seconds gauge\n");
    let _ = writeln!(
        out,
        "coupa_gateway_uptime_seconds {}",
        shared.started.elapsed().as_secs()
    );
    telemetry::render_token_durations(&mut out, runtime.tokens.iter());
    let ledger = shared.ledger.view(&shared.tracker).await;
    telemetry::render_verdicts(&mut out, &runtime.config, &ledger);
    telemetry::render_build_info(&mut out);
    telemetry::render_process(&mut out, SystemTime::now() - shared.started.elapsed());
    out
}
