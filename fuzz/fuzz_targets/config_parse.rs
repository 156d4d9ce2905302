//! `Config::parse` on arbitrary text: it must answer `Ok` or a list of problems, never panic.
//! What it accepts must also satisfy what the request path assumes of routes.

#![no_main]

use std::path::Path;

use coupa_gateway::config::Config;
use coupa_gateway::proxy::path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // An empty environment: `${VAR}` without a default is reported, never read from the
    // fuzzer's own environment. A base directory that does not exist, so a relative
    // `client_secret_file` is never read. (An absolute one is: see README.md.)
    let env = |_: &str| None;
    let base = Path::new("/nonexistent/coupa-gateway-fuzz");
    let Ok(config) = Config::parse(text, &env, base) else {
        return;
    };
    let mut seen = Vec::new();
    for route in &config.routes {
        let p = route.prefix.as_str();
        // `RouteTable::new`'s preconditions.
        assert!(
            p.starts_with('/') && (p == "/" || !p.ends_with('/')),
            "prefix {p:?}"
        );
        assert!(!seen.contains(&p), "duplicate prefix {p:?}");
        seen.push(p);
        // A prefix the path check refuses could never be reached.
        assert_eq!(path::check(p), None, "prefix {p:?}");
    }
    let _ = config.describe_routes();
});
