//! Request counters and latency histograms, recorded with relaxed atomics on the hot path and
//! rendered as Prometheus text by the admin listener.
//!
//! Hand-rolled rather than a metrics crate: every label set is known when the runtime is built
//! (one entry per route), so the request path indexes a precomputed array instead of hashing a
//! label set per request, which is what `prometheus`/`prometheus-client` families do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the upstream latency buckets: Coupa answers in tens of ms to
/// several seconds for large "full" payloads, and attachment uploads can take minutes.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Counts by status class (1xx..5xx).
#[derive(Debug, Default)]
pub struct StatusCounters([AtomicU64; 5]);

impl StatusCounters {
    /// Counts one response with `status`.
    #[inline]
    pub fn record(&self, status: u16) {
        self.0[status_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// `(label, count)` per class.
    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        std::array::from_fn(|i| (CLASSES[i], self.0[i].load(Ordering::Relaxed)))
    }
}

/// A fixed-bucket histogram (cumulative on render, per-bucket when recording).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Total observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Writes the histogram's `_bucket`, `_sum` and `_count` lines for `labels`
    /// (`route="/prod"`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Response counts and durations by status class.
#[derive(Debug, Default)]
pub struct Responses {
    /// Responses by status class.
    pub counts: StatusCounters,
    /// Time from the request head to the response head, by status class (index: class - 1).
    pub durations: [Histogram; 5],
}

impl Responses {
    /// Counts one response with `status`, `took` after its request arrived.
    #[inline]
    pub fn record(&self, status: u16, took: Duration) {
        self.counts.record(status);
        self.durations[status_index(status)].observe(took);
    }

    /// `(label, count)` per class.
    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        self.counts.snapshot()
    }

    fn render_durations(&self, out: &mut String, route: &str) {
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        for (class, h) in CLASSES.iter().zip(&self.durations) {
            // A class appears once it has been seen, like a label set of a client library.
            if h.count() > 0 {
                let labels = format!("route=\"{route}\",class=\"{class}\"");
                h.render(out, "coupa_gateway_request_duration_seconds", &labels);
            }
        }
    }
}

#[inline]
fn status_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// Everything recorded for one route.
#[derive(Debug)]
pub struct RouteMetrics {
    /// The route's prefix (the `route` label).
    pub prefix: String,
    /// Responses by status class and their durations, the gateway's own error answers
    /// included.
    pub responses: Responses,
    /// Time from sending upstream to Coupa's response head.
    pub upstream_latency: Histogram,
    /// Requests sent again on a new connection after the keep-alive race.
    pub upstream_retries: Counter,
}

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn record(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// All metrics of one gateway process. Route entries are keyed by prefix and survive reloads,
/// so counters stay monotonic as Prometheus expects.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests that matched no route or were rejected before routing (bad path).
    pub unrouted: Responses,
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
}

impl Metrics {
    /// The entry for `prefix`, created on first use. Called when a runtime is built, never
    /// on the request path.
    pub fn route(&self, prefix: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes
            .entry(prefix.to_string())
            .or_insert_with(|| {
                Arc::new(RouteMetrics {
                    prefix: prefix.to_string(),
                    responses: Responses::default(),
                    upstream_latency: Histogram::default(),
                    upstream_retries: Counter::default(),
                })
            })
            .clone()
    }

    /// Renders the request metrics in the Prometheus text format (0.0.4).
    pub fn render_requests(&self, out: &mut String) {
        let routes: Vec<Arc<RouteMetrics>> = self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        out.push_str(
            "# HELP coupa_gateway_requests_total Responses sent, by route and status class.\n",
        );
        out.push_str("# TYPE coupa_gateway_requests_total counter\n");
        for r in &routes {
            for (class, n) in r.responses.counts.snapshot() {
                let _ = writeln!(
                    out,
                    "coupa_gateway_requests_total{{route=\"{}\",class=\"{class}\"}} {n}",
                    escape(&r.prefix)
                );
            }
        }
        for (class, n) in self.unrouted.counts.snapshot() {
            let _ = writeln!(
                out,
                "coupa_gateway_requests_total{{route=\"\",class=\"{class}\"}} {n}"
            );
        }
        out.push_str("# HELP coupa_gateway_request_duration_seconds Time from a request's head to its response head, the gateway's own answers included, by route and status class.\n");
        out.push_str("# TYPE coupa_gateway_request_duration_seconds histogram\n");
        for r in &routes {
            r.responses.render_durations(out, &escape(&r.prefix));
        }
        self.unrouted.render_durations(out, "");
        out.push_str("# HELP coupa_gateway_upstream_retries_total Requests sent again on a new connection because the pooled one had been closed by Coupa's side (keep-alive race).\n");
        out.push_str("# TYPE coupa_gateway_upstream_retries_total counter\n");
        for r in &routes {
            let _ = writeln!(
                out,
                "coupa_gateway_upstream_retries_total{{route=\"{}\"}} {}",
                escape(&r.prefix),
                r.upstream_retries.get()
            );
        }
        out.push_str("# HELP coupa_gateway_upstream_latency_seconds Time from forwarding a request to Coupa's response head.\n");
        out.push_str("# TYPE coupa_gateway_upstream_latency_seconds histogram\n");
        for r in &routes {
            let labels = format!("route=\"{}\"", escape(&r.prefix));
            r.upstream_latency
                .render(out, "coupa_gateway_upstream_latency_seconds", &labels);
        }
    }
}

/// Escapes a label value per the Prometheus text format.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_and_cumulative_buckets() {
        let m = Metrics::default();
        let r = m.route("/prod");
        r.responses.record(200, Duration::from_millis(2));
        r.responses.record(204, Duration::from_millis(20));
        r.responses.record(503, Duration::from_secs(2));
        r.upstream_latency.observe(Duration::from_millis(3));
        r.upstream_latency.observe(Duration::from_millis(700));
        r.upstream_latency.observe(Duration::from_secs(1000));
        m.unrouted.record(404, Duration::from_millis(1));
        let mut out = String::new();
        m.render_requests(&mut out);
        assert!(out.contains("coupa_gateway_requests_total{route=\"/prod\",class=\"2xx\"} 2"));
        assert!(out.contains("coupa_gateway_requests_total{route=\"/prod\",class=\"5xx\"} 1"));
        assert!(out.contains("coupa_gateway_requests_total{route=\"\",class=\"4xx\"} 1"));
        assert!(out.contains("le=\"0.005\"} 1\n"));
        assert!(out.contains("le=\"0.5\"} 1\n"));
        assert!(out.contains("le=\"1\"} 2\n"));
        assert!(out.contains("le=\"300\"} 2\n"));
        assert!(out.contains("le=\"+Inf\"} 3\n"));
        assert!(out.contains("coupa_gateway_upstream_latency_seconds_count{route=\"/prod\"} 3"));
        assert!(out.contains(
            "coupa_gateway_request_duration_seconds_bucket{route=\"/prod\",class=\"2xx\",le=\"0.005\"} 1\n"
        ));
        assert!(out.contains(
            "coupa_gateway_request_duration_seconds_count{route=\"/prod\",class=\"5xx\"} 1\n"
        ));
        assert!(out.contains(
            "coupa_gateway_request_duration_seconds_count{route=\"\",class=\"4xx\"} 1\n"
        ));
        assert!(
            !out.contains("class=\"3xx\",le="),
            "unseen classes have no series"
        );
        // The same prefix maps to the same counters (reloads keep counting).
        assert_eq!(m.route("/prod").upstream_latency.count(), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
