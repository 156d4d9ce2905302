//! Which resources the mock knows, their XML names, and the OAuth scope each request needs.
//!
//! The rule is docs/coupa-api.md §9: resource → scope base, GET/HEAD/OPTIONS → `.read`, anything
//! else → `.write`. Deviations, all deliberate:
//! - `POST /api/invoices` and `POST /api/invoices/{id}/attachments` also accept
//!   `core.invoice.create` (Coupa: "create: core.invoice.create (or .write)").
//! - `/api/{parent}/{id}/attachments` needs the parent's scope; `/api/attachments/{id}` names no
//!   parent, so it needs `core.common.read` / `core.common.write`.
//! - `/api/invoices/{id}/image_scan` (PUT) needs `core.invoice.write`.

use http::Method;

/// One resource under `/api`.
pub(super) struct Resource {
    /// Path segment, e.g. `invoices`.
    pub(super) name: &'static str,
    /// Scope base, e.g. `core.invoice` (→ `core.invoice.read` / `.write`).
    pub(super) scope: &'static str,
    /// XML list element, e.g. `invoice-headers`.
    pub(super) xml_plural: &'static str,
    /// XML record element, e.g. `invoice-header`.
    pub(super) xml_singular: &'static str,
    /// Whether the store seeds `seed_rows` rows for it (the others start empty).
    pub(super) seeded: bool,
}

const fn res(
    name: &'static str,
    scope: &'static str,
    xml_plural: &'static str,
    xml_singular: &'static str,
    seeded: bool,
) -> Resource {
    Resource {
        name,
        scope,
        xml_plural,
        xml_singular,
        seeded,
    }
}

/// The resource table. XML names follow Coupa where known (invoices are `invoice-header`,
/// purchase orders `order-header`, requisitions `requisition-header`).
pub(super) const RESOURCE_TABLE: &[Resource] = &[
    res(
        "invoices",
        "core.invoice",
        "invoice-headers",
        "invoice-header",
        true,
    ),
    res("suppliers", "core.supplier", "suppliers", "supplier", true),
    res(
        "purchase_orders",
        "core.purchase_order",
        "order-headers",
        "order-header",
        true,
    ),
    res("users", "core.user", "users", "user", true),
    res(
        "lookup_values",
        "core.common",
        "lookup-values",
        "lookup-value",
        true,
    ),
    res(
        "exchange_rates",
        "core.common",
        "exchange-rates",
        "exchange-rate",
        true,
    ),
    res("accounts", "core.accounting", "accounts", "account", true),
    res(
        "requisitions",
        "core.requisition",
        "requisition-headers",
        "requisition-header",
        true,
    ),
    res(
        "receiving_transactions",
        "core.inventory.receiving",
        "receiving-transactions",
        "receiving-transaction",
        true,
    ),
    res(
        "expense_reports",
        "core.expense",
        "expense-reports",
        "expense-report",
        true,
    ),
    // Known to the scope map but not seeded: they list as empty until something is POSTed.
    res("lookups", "core.common", "lookups", "lookup", false),
    res("currencies", "core.common", "currencies", "currency", false),
    res(
        "departments",
        "core.common",
        "departments",
        "department",
        false,
    ),
    res("addresses", "core.common", "addresses", "address", false),
    res(
        "payment_terms",
        "core.common",
        "payment-terms",
        "payment-term",
        false,
    ),
    res(
        "account_types",
        "core.accounting",
        "account-types",
        "account-type",
        false,
    ),
    res(
        "purchase_order_lines",
        "core.purchase_order",
        "order-lines",
        "order-line",
        false,
    ),
    res(
        "requisition_lines",
        "core.requisition",
        "requisition-lines",
        "requisition-line",
        false,
    ),
    res(
        "inventory_transactions",
        "core.inventory.receiving",
        "inventory-transactions",
        "inventory-transaction",
        false,
    ),
    res("contracts", "core.contract", "contracts", "contract", false),
    res("approvals", "core.approval", "approvals", "approval", false),
    res("comments", "core.comment", "comments", "comment", false),
    res(
        "user_groups",
        "core.user_group",
        "user-groups",
        "user-group",
        false,
    ),
];

/// Attachments are not a table of their own (they hang off a parent record), but listing a
/// parent's attachments renders them like one.
pub(super) const ATTACHMENTS: Resource = res(
    "attachments",
    "core.common",
    "attachments",
    "attachment",
    false,
);

/// Resources the mock seeds with `seed_rows` deterministic rows each.
pub const RESOURCES: &[&str] = &[
    "invoices",
    "suppliers",
    "purchase_orders",
    "users",
    "lookup_values",
    "exchange_rates",
    "accounts",
    "requisitions",
    "receiving_transactions",
    "expense_reports",
];

/// Looks a resource up by its path segment.
pub(super) fn resource(name: &str) -> Option<&'static Resource> {
    RESOURCE_TABLE.iter().find(|r| r.name == name)
}

/// Every scope the mock can ask for (what `GET /oauth2/scopes` lists): `.read` and `.write` for
/// each scope base, `core.invoice.create`, and the OIDC scopes Coupa also offers.
pub fn known_scopes() -> Vec<String> {
    let mut bases: Vec<&str> = RESOURCE_TABLE.iter().map(|r| r.scope).collect();
    bases.sort_unstable();
    bases.dedup();
    let mut scopes: Vec<String> = bases
        .iter()
        .flat_map(|b| [format!("{b}.read"), format!("{b}.write")])
        .collect();
    scopes.push("core.invoice.create".to_owned());
    scopes.extend(
        ["openid", "profile", "email", "login", "offline_access"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    scopes
}

/// The scope a request needs, by the rule in the module docs; `None` if the path names no
/// resource the mock knows (the mock answers 404). `path` is the URI path, e.g.
/// `/api/invoices/3`. When several scopes would do (`core.invoice.create` for invoice creation),
/// this returns the primary one (`.write`).
pub fn required_scope(method: &Method, path: &str) -> Option<String> {
    let segments: Vec<&str> = path
        .strip_prefix("/api")?
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    accepted_scopes(method, &segments).map(|mut v| v.swap_remove(0))
}

/// All scopes that would satisfy the request (any one suffices), primary first; `None` for an
/// unknown resource. `segments` are the path segments after `/api`.
pub(super) fn accepted_scopes(method: &Method, segments: &[&str]) -> Option<Vec<String>> {
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let right = if read { "read" } else { "write" };
    let first = *segments.first()?;
    if first == "attachments" {
        return Some(vec![format!("core.common.{right}")]);
    }
    let base = resource(first)?.scope;
    let mut scopes = vec![format!("{base}.{right}")];
    let creates =
        *method == Method::POST && (segments.len() == 1 || segments.get(2) == Some(&"attachments"));
    if base == "core.invoice" && creates {
        scopes.push("core.invoice.create".to_owned());
    }
    Some(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_rule() {
        let cases = [
            (Method::GET, "/api/invoices", Some("core.invoice.read")),
            (Method::HEAD, "/api/invoices/1", Some("core.invoice.read")),
            (Method::PUT, "/api/invoices/1", Some("core.invoice.write")),
            (
                Method::DELETE,
                "/api/suppliers/1",
                Some("core.supplier.write"),
            ),
            (Method::GET, "/api/lookup_values", Some("core.common.read")),
            (Method::POST, "/api/currencies", Some("core.common.write")),
            (Method::GET, "/api/accounts", Some("core.accounting.read")),
            (
                Method::PATCH,
                "/api/receiving_transactions/2",
                Some("core.inventory.receiving.write"),
            ),
            (
                Method::GET,
                "/api/requisitions",
                Some("core.requisition.read"),
            ),
            (
                Method::GET,
                "/api/expense_reports",
                Some("core.expense.read"),
            ),
            (
                Method::POST,
                "/api/purchase_orders/1/attachments",
                Some("core.purchase_order.write"),
            ),
            (Method::GET, "/api/attachments/7", Some("core.common.read")),
            (
                Method::PUT,
                "/api/invoices/1/image_scan",
                Some("core.invoice.write"),
            ),
            (Method::GET, "/api/nonsense", None),
            (Method::GET, "/api", None),
            (Method::GET, "/other", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                required_scope(&method, path).as_deref(),
                want,
                "{method} {path}"
            );
        }
        assert_eq!(
            accepted_scopes(&Method::POST, &["invoices"]).unwrap(),
            vec!["core.invoice.write", "core.invoice.create"]
        );
        assert_eq!(
            accepted_scopes(&Method::PUT, &["invoices", "1"]).unwrap(),
            vec!["core.invoice.write"]
        );
    }

    #[test]
    fn every_seeded_resource_is_in_the_table() {
        for name in RESOURCES {
            assert!(resource(name).is_some_and(|r| r.seeded), "{name}");
        }
        assert_eq!(
            RESOURCE_TABLE.iter().filter(|r| r.seeded).count(),
            RESOURCES.len()
        );
        assert!(known_scopes().contains(&"core.inventory.receiving.read".to_owned()));
    }
}
