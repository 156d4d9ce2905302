//! A runtime built from TOML for the stages' unit tests: no listener, no socket, no token.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::migration::sync::LedgerSync;
use crate::migration::Tracker;
use crate::ops::metrics::Metrics;
use crate::runtime::{Runtime, Shared};
use crate::state::budget::Budgets;

/// One instance (`prod`, at an address nothing is asked of), its client `prod-main` holding
/// `core.invoice.read`, and the routes and integrations in `rest`.
pub(super) fn shared(rest: &str) -> Arc<Shared> {
    let toml = format!(
        r#"
[instances.prod]
url = "http://127.0.0.1:9"
[clients.prod-main]
instance = "prod"
client_id = "id"
client_secret = "secret"
scopes = ["core.invoice.read"]
{rest}
"#
    );
    let config = Config::parse(&toml, &|_| None, Path::new(".")).expect("test config");
    let (metrics, tracker, budgets) = (
        Metrics::default(),
        Arc::new(Tracker::default()),
        Budgets::default(),
    );
    let ledger = Arc::new(LedgerSync::in_memory(std::time::SystemTime::now()));
    let (runtime, _fresh) =
        Runtime::build(config, &metrics, &tracker, &budgets, None).expect("test runtime");
    Arc::new(Shared::new(runtime, budgets, metrics, tracker, ledger))
}
