//! The demo instances: what `coupa-gateway demo` and `mock` start, and what the gateway's own
//! `proxy.toml` is written for (client `demo-{name}-client`, secret `demo-{name}-secret`).

use std::net::SocketAddr;

use crate::{MockClient, MockConfig};

/// Scopes the demo clients are granted: the master-data and transactional resources the mock
/// serves, read and write.
pub const DEMO_SCOPES: &[&str] = &[
    "core.accounting.read",
    "core.accounting.write",
    "core.common.read",
    "core.common.write",
    "core.expense.read",
    "core.inventory.receiving.read",
    "core.invoice.read",
    "core.invoice.write",
    "core.purchase_order.read",
    "core.purchase_order.write",
    "core.requisition.read",
    "core.supplier.read",
    "core.supplier.write",
    "core.user.read",
    "core.user.write",
];

/// The legacy API key the demo instances still accept (the gateway strips it).
pub const DEMO_API_KEY: &str = "demo-legacy-api-key-0000000000000000000000";

/// The mock instance `name` with the client the default `proxy.toml` uses.
pub fn demo_instance(name: &str, listen: SocketAddr) -> MockConfig {
    let mut cfg = MockConfig::new(name);
    cfg.listen = listen;
    cfg.clients.push(MockClient {
        id: format!("demo-{name}-client"),
        secret: format!("demo-{name}-secret"),
        scopes: DEMO_SCOPES.iter().map(|s| s.to_string()).collect(),
    });
    cfg.api_keys.push(DEMO_API_KEY.to_string());
    cfg
}
