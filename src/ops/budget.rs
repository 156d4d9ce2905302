//! The rate budgets as operators see them: per instance whether the budget is the fleet's or
//! this replica's (and why), who waits for turns, and the turns and waits per integration, in
//! Prometheus text and in `/status`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::ops::metrics::escape;
use crate::state::budget::{Budget, Budgets, WAIT_BUCKETS};

/// The `budget` of one instance in `/status` (`null` without a rate limit).
pub fn status(budget: Option<&Budget>) -> Value {
    let Some(b) = budget else {
        return Value::Null;
    };
    let scope = b.scope();
    let s = b.settings();
    json!({
        "scope": scope.mode,
        "reason": scope.reason,
        "since": scope.since.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        "per_second": s.per_second,
        "burst": s.burst,
        "max_queue_wait_s": s.max_queue_wait.as_secs_f64(),
        "waiting": b.waiting().into_iter().map(|(integration, n)| json!({"integration": integration, "requests": n})).collect::<Vec<_>>(),
        "turns": {
            "immediate": b.immediate.load(Ordering::Relaxed),
            "after_waiting": b.queued_turns.load(Ordering::Relaxed),
            "rejected": b.rejected.load(Ordering::Relaxed),
            "coupa_throttled": b.throttled.load(Ordering::Relaxed),
        },
        "integrations": b.classes().into_iter().map(|(name, c)| json!({
            "integration": name,
            "turns_after_waiting": c.turns,
            "mean_wait_s": if c.turns == 0 { 0.0 } else { c.wait_sum / c.turns as f64 },
        })).collect::<Vec<_>>(),
    })
}

/// Every budget's metrics.
pub fn render_metrics(budgets: &Budgets, out: &mut String) {
    let all = budgets.all();
    out.push_str("# HELP coupa_gateway_rate_limit_total Turns of the instance's budget: taken at once, given after waiting, refused (429 from the gateway), and Coupa 429/503 answers that paused it.\n");
    out.push_str("# TYPE coupa_gateway_rate_limit_total counter\n");
    for (instance, b) in &all {
        let instance = escape(instance);
        for (what, n) in [
            ("immediate", &b.immediate),
            ("queued", &b.queued_turns),
            ("rejected", &b.rejected),
            ("coupa_throttled", &b.throttled),
            ("fleet_fallback", &b.fallbacks),
            ("shadow", &b.spare),
        ] {
            let _ = writeln!(
                out,
                "coupa_gateway_rate_limit_total{{instance=\"{instance}\",event=\"{what}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
    out.push_str("# HELP coupa_gateway_rate_limit_shared 1 while the instance's budget is shared by the fleet through Redis, 0 while this replica spends its local share (Redis failing); absent without [state] redis.\n");
    out.push_str("# TYPE coupa_gateway_rate_limit_shared gauge\n");
    for (instance, b) in &all {
        let scope = b.scope();
        if scope.mode != "local" {
            let _ = writeln!(
                out,
                "coupa_gateway_rate_limit_shared{{instance=\"{}\"}} {}",
                escape(instance),
                u8::from(scope.mode == "fleet")
            );
        }
    }
    out.push_str(
        "# HELP coupa_gateway_rate_limit_waiting Requests waiting for a turn, by integration.\n",
    );
    out.push_str("# TYPE coupa_gateway_rate_limit_waiting gauge\n");
    for (instance, b) in &all {
        for (integration, n) in b.waiting() {
            let _ = writeln!(
                out,
                "coupa_gateway_rate_limit_waiting{{instance=\"{}\",integration=\"{}\"}} {n}",
                escape(instance),
                escape(&integration)
            );
        }
    }
    out.push_str("# HELP coupa_gateway_rate_limit_wait_seconds How long requests that waited for a turn waited, by integration.\n");
    out.push_str("# TYPE coupa_gateway_rate_limit_wait_seconds histogram\n");
    for (instance, b) in &all {
        let instance = escape(instance);
        for (integration, c) in b.classes() {
            let integration = escape(&integration);
            let labels = format!("instance=\"{instance}\",integration=\"{integration}\"");
            let mut cumulative = 0;
            for (le, n) in WAIT_BUCKETS.iter().zip(c.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "coupa_gateway_rate_limit_wait_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "coupa_gateway_rate_limit_wait_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                 coupa_gateway_rate_limit_wait_seconds_sum{{{labels}}} {}\n\
                 coupa_gateway_rate_limit_wait_seconds_count{{{labels}}} {}",
                c.turns, c.wait_sum, c.turns
            );
        }
    }
}
