//! The metrics that are not request counters: what is running (`coupa_gateway_build_info`),
//! the standard process metrics from `/proc/self` (the names and meanings of the Prometheus
//! client libraries, so existing dashboards and alerts apply), and the token endpoint's
//! latency per client.
//!
//! Read when `/metrics` is scraped, never on the request path.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::config::Config;
use crate::migration::{self, Verdict};
use crate::ops::metrics::escape;
use crate::state::ledger::Ledger;
use crate::token::TokenCell;

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`build.rs`), or "unknown".
pub const COMMIT: &str = env!("COUPA_GATEWAY_COMMIT");
/// What `coupa-gateway --version` prints after the name.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("COUPA_GATEWAY_COMMIT"),
    ")"
);

/// Linux reports process times in USER_HZ, 100 on every architecture it runs containers on
/// (reading `sysconf(_SC_CLK_TCK)` would need libc and unsafe code for a constant).
const USER_HZ: f64 = 100.0;

/// `coupa_gateway_build_info`.
pub fn render_build_info(out: &mut String) {
    out.push_str("# HELP coupa_gateway_build_info The running version and the git commit it was built from (always 1).\n");
    out.push_str("# TYPE coupa_gateway_build_info gauge\n");
    let _ = writeln!(
        out,
        "coupa_gateway_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        escape(VERSION),
        escape(COMMIT)
    );
}

/// `coupa_gateway_token_request_duration_seconds` for each client.
pub fn render_token_durations<'a>(
    out: &mut String,
    cells: impl Iterator<Item = (&'a String, &'a std::sync::Arc<TokenCell>)>,
) {
    out.push_str("# HELP coupa_gateway_token_request_duration_seconds Time a token request took, by client and result.\n");
    out.push_str("# TYPE coupa_gateway_token_request_duration_seconds histogram\n");
    for (name, cell) in cells {
        let name = escape(name);
        for (result, h) in [
            ("success", &cell.request_durations[0]),
            ("failure", &cell.request_durations[1]),
        ] {
            let labels = format!("client=\"{name}\",result=\"{result}\"");
            h.render(out, "coupa_gateway_token_request_duration_seconds", &labels);
        }
    }
}

/// `coupa_gateway_integration_verdict`: 1 for each integration's current migration verdict, 0
/// for the others (so a dashboard sees a verdict change as one series falling and another
/// rising). Derived from the same report as `/status`.
pub fn render_verdicts(out: &mut String, config: &Config, ledger: &Ledger) {
    const VERDICTS: [Verdict; 3] = [
        Verdict::NotMigrated,
        Verdict::Migrated,
        Verdict::SafeToRevokeKey,
    ];
    out.push_str("# HELP coupa_gateway_integration_verdict The integration's migration verdict (1 for the current one).\n");
    out.push_str("# TYPE coupa_gateway_integration_verdict gauge\n");
    let (integrations, _) = migration::report(config, ledger, SystemTime::now());
    for g in integrations.as_array().into_iter().flatten() {
        let (Some(name), Some(current)) = (g["name"].as_str(), g["verdict"].as_str()) else {
            continue;
        };
        let name = escape(name);
        for v in VERDICTS {
            let _ = writeln!(
                out,
                "coupa_gateway_integration_verdict{{integration=\"{name}\",verdict=\"{}\"}} {}",
                v.as_str(),
                u8::from(v.as_str() == current)
            );
        }
    }
}

/// What `/proc/self` says about this process.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: f64,
    open_fds: u64,
    max_fds: Option<u64>,
}

/// The `process_*` metrics, where `/proc` exists (Linux); nothing elsewhere. `started`
/// stands in for the start time when `/proc/stat` (the boot time) is hidden, as systemd's
/// `ProcSubset=pid` does.
pub fn render_process(out: &mut String, started: SystemTime) {
    let Some(mut p) = read_process() else {
        return;
    };
    if p.start_time_seconds == 0.0 {
        p.start_time_seconds = started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
    }
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds.to_string(),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes.to_string(),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_bytes.to_string(),
    );
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds.to_string(),
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds.to_string(),
    );
    if let Some(max) = p.max_fds {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max.to_string(),
        );
    }
}

fn read_process() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut p = parse(&stat, &status, &boot)?;
    p.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    p.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| max_open_files(&l));
    Some(p)
}

/// `/proc/self/stat` (CPU times and start time), `/proc/self/status` (memory) and `/proc/stat`
/// (boot time), as proc(5) describes them. Without the boot time the start time is 0.
fn parse(stat: &str, status: &str, boot: &str) -> Option<Process> {
    // The command name (field 2) may hold spaces and parentheses: fields count from the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // fields[0] is field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime, start_ticks) = (field(14)?, field(15)?, field(22)?);
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()
    };
    let btime = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|b| b.trim().parse::<u64>().ok());
    Some(Process {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        resident_bytes: kb("VmRSS:")? * 1024,
        virtual_bytes: kb("VmSize:")? * 1024,
        start_time_seconds: btime.map_or(0.0, |b| b as f64 + start_ticks as f64 / USER_HZ),
        open_fds: 0,
        max_fds: None,
    })
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Seconds since the Unix epoch, for tests comparing the start time with now.
#[cfg(test)]
fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_proc5_describes_them() {
        let stat = "4242 (coupa (gw) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        let status = "Name:\tcoupa-gateway\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let p = parse(stat, status, boot).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.resident_bytes, 2048 * 1024);
        assert_eq!(p.virtual_bytes, 123456 * 1024);
        assert_eq!(p.start_time_seconds, 1_700_000_000.0 + 1234.56);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        // /proc/stat hidden (systemd's ProcSubset=pid): no start time from it.
        assert_eq!(parse(stat, status, "").unwrap().start_time_seconds, 0.0);
    }

    #[test]
    fn this_process_is_measured_where_proc_exists() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let p = read_process().expect("/proc/self parses");
        assert!(p.resident_bytes > 0 && p.open_fds > 0);
        // Started in the past, and after the machine booted (a wrong USER_HZ would not be).
        assert!(p.start_time_seconds <= now_seconds() + 1.0);
        assert!(p.start_time_seconds > now_seconds() - 30.0 * 24.0 * 3600.0);
        let mut out = String::new();
        render_process(&mut out, std::time::SystemTime::now());
        assert!(out.contains("\nprocess_open_fds "), "{out}");
        assert!(
            out.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{out}"
        );
    }
}
