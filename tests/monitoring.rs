//! The shipped monitoring (`deploy/monitoring/`) refers only to metrics the gateway exports:
//! a renamed metric fails here, not silently on a dashboard. The rules' syntax and alert
//! behaviour are checked by promtool in `.ci/check-deploy`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The gateway's and the process metrics named in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("coupa_gateway_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every sample name `/metrics` can carry, from its `# TYPE` lines (histograms as their
/// `_bucket`, `_sum` and `_count` series).
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_owned());
        }
    }
    names
}

/// Every PromQL expression in the dashboard (panel targets), which must parse as JSON.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("an expr").to_owned());
        }
    }
    exprs
}

#[tokio::test]
async fn dashboards_and_alerts_use_only_exported_metrics() {
    let prod = mock("prod").await;
    let gw = ready_gateway(
        &GatewayToml::prod(&prod.url()).integration(
            IntegrationToml::new("erp")
                .key("legacy-erp-key")
                .routes(&["/prod"]),
        ),
    )
    .await;
    let reply = Http::new()
        .get(
            &proxy_url(&gw, "/prod/api/suppliers"),
            &[("x-coupa-api-key", "legacy-erp-key")],
        )
        .await;
    assert_eq!(reply.status, 200);
    let exposition = metrics(&gw).await;
    let exported = exported(&exposition);
    // The families the issue asks for are there.
    for name in [
        "coupa_gateway_build_info",
        "coupa_gateway_request_duration_seconds_bucket",
        "coupa_gateway_token_request_duration_seconds_bucket",
        "coupa_gateway_integration_verdict",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            exported.contains(name),
            "{name} not exported:\n{exposition}"
        );
    }
    assert!(exposition.contains(
        "coupa_gateway_request_duration_seconds_count{route=\"/prod\",class=\"2xx\"} 1\n"
    ));
    assert!(exposition.contains(
        "coupa_gateway_integration_verdict{integration=\"erp\",verdict=\"migrated\"} 1\n"
    ));
    assert!(exposition.contains("coupa_gateway_token_request_duration_seconds_count{client=\"prod-main\",result=\"success\"} 1\n"));

    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut unknown = Vec::new();
    for (file, text) in [
        ("deploy/monitoring/grafana-dashboard.json", exprs.join("\n")),
        (
            "deploy/monitoring/prometheusrule.yaml",
            read("deploy/monitoring/prometheusrule.yaml"),
        ),
        (
            "deploy/monitoring/rules.test.yaml",
            read("deploy/monitoring/rules.test.yaml"),
        ),
    ] {
        for name in metric_names(&text) {
            if !exported.contains(&name) {
                unknown.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not exported by the gateway: {unknown:?}"
    );
}

#[test]
fn the_dashboard_covers_what_operators_watch() {
    let exprs = dashboard_exprs().join("\n");
    for needed in [
        "coupa_gateway_requests_total",
        "class=\"5xx\"",
        "coupa_gateway_request_duration_seconds_bucket",
        "coupa_gateway_token_expiry_seconds",
        "coupa_gateway_rate_limit_total",
        "coupa_gateway_integration_verdict",
    ] {
        assert!(
            exprs.contains(needed),
            "the dashboard shows nothing of {needed}"
        );
    }
}
