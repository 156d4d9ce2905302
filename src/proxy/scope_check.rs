//! The scope check: does the route's OAuth client hold a scope the request needs?

use super::ProxyError;
use crate::config::ScopeCheck;
use crate::migration::scopes::Needed;
use crate::runtime::{RouteTarget, Shared};

/// Compares what the request needs with the route's client. In enforce mode (oauth only: in
/// passthrough the client's token is not used) a gap is a 403 before Coupa is called; in
/// warn mode it is logged once per client and scope.
pub(super) fn check(
    shared: &Shared,
    route: &RouteTarget,
    needed: Option<&Needed>,
    method: &http::Method,
    caller: &str,
    oauth: bool,
) -> Result<(), ProxyError> {
    let (Some(needed), Some(client)) = (needed, &route.client) else {
        return Ok(());
    };
    if route.scope_check == ScopeCheck::Off
        || needed.any_of.is_empty()
        || route.client_has_any(&needed.any_of)
    {
        return Ok(());
    }
    if oauth && route.scope_check == ScopeCheck::Enforce {
        return Err(ProxyError::ScopeMissing {
            client: client.clone(),
            scope: needed.label.to_string(),
        });
    }
    shared.warn_missing_scope(client, &needed.label, method, caller);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::shared;

    #[tokio::test]
    async fn a_missing_scope_is_refused_only_when_enforced_on_oauth_routes() {
        // The client holds core.invoice.read only; suppliers need core.supplier.*.
        let shared = shared(
            r#"
[[routes]]
prefix = "/enforce"
instance = "prod"
client = "prod-main"
scope_check = "enforce"
[[routes]]
prefix = "/warn"
instance = "prod"
client = "prod-main"
scope_check = "warn"
"#,
        );
        let runtime = shared.runtime.load();
        let code = |path: &str, method: http::Method, oauth: bool| {
            let found = runtime.routes.find(path).unwrap();
            let needed = runtime.config.scopes.needed(&method, found.rest);
            check(&shared, found.route, needed, &method, "erp", oauth)
                .err()
                .map(|e| e.code())
        };
        use http::Method;
        assert_eq!(code("/enforce/api/invoices/1", Method::GET, true), None);
        assert_eq!(
            code("/enforce/api/suppliers/1", Method::GET, true),
            Some("scope_missing")
        );
        assert_eq!(
            code("/enforce/api/invoices/1", Method::PUT, true),
            Some("scope_missing"),
            "a write needs the write scope"
        );
        // Passthrough sends no token: the client's scopes do not matter yet.
        assert_eq!(code("/enforce/api/suppliers/1", Method::GET, false), None);
        // Warn mode logs once and lets the request go.
        assert_eq!(code("/warn/api/suppliers/1", Method::GET, true), None);
    }
}
