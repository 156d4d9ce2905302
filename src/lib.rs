//! coupa-gateway: an authenticating reverse proxy that lets integrations written for Coupa's
//! retired `X-COUPA-API-KEY` keep working against the OAuth 2.0 client-credentials API.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library; tests, the demo and the benches
//! drive the same code through [`server::Gateway`] and `coupa_mock::MockCoupa`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod bounds;
pub mod commands;
pub mod config;
pub mod drain;
pub mod egress;
pub mod identity;
pub mod lenient;
pub mod metrics;
pub mod migration;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod route;
pub mod runtime;
pub mod scopes;
pub mod server;
pub mod status_page;
pub mod tls;
pub mod token;

/// An error and its causes on one line (`a: b: c`), skipping causes already quoted by the level
/// above. For logs and `/status`; classification walks `source()` by type instead.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}
