//! The built-in path → scope rules (docs/coupa-api.md §9). Data, kept apart from the matching
//! so that the table can follow each Coupa release without crowding the logic.

use http::Method;

use super::{RuleSource, ScopeRule};

/// §9: GET reads. HEAD and OPTIONS change nothing either, so they go with GET.
static READ: [Method; 3] = [Method::GET, Method::HEAD, Method::OPTIONS];
/// §9/§11: POST creates, PUT updates (and sets export flags), PATCH appears in the specs, and
/// the few DELETEs (attachments, requisition lines, supplier sites) change data too.
static WRITE: [Method; 4] = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// Collects the built-in rules.
#[derive(Default)]
struct Builtins(Vec<ScopeRule>);

impl Builtins {
    fn push(&mut self, pattern: &str, methods: Option<&[Method]>, exact: bool, scopes: &[&str]) {
        self.0.push(ScopeRule {
            pattern: pattern.to_owned(),
            methods: methods.map(<[Method]>::to_vec),
            exact,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            source: RuleSource::BuiltIn,
        });
    }

    /// §9's default: reads take `<base>.read`, writes `<base>.write`.
    fn rw(&mut self, pattern: &str, base: &str) {
        let (read, write) = (format!("{base}.read"), format!("{base}.write"));
        self.rw_any(pattern, &[&read], &[&write]);
    }

    /// Reads and writes with explicit alternatives.
    fn rw_any(&mut self, pattern: &str, read: &[&str], write: &[&str]) {
        self.push(pattern, Some(&READ), false, read);
        self.push(pattern, Some(&WRITE), false, write);
    }

    /// A special action: its scope whatever the method.
    fn action(&mut self, pattern: &str, scopes: &[&str]) {
        self.push(pattern, None, false, scopes);
    }
}

/// The built-in map, docs/coupa-api.md §9 (sources there: SCOPES-R34, Swagger R39, UiPath, POSTHOG).
pub(super) fn builtin_rules() -> Vec<ScopeRule> {
    let mut b = Builtins::default();

    // Invoices. Sub-resources (invoice_lines, payments via PUT, ...) follow by prefix.
    b.rw("/api/invoices", "core.invoice");
    b.push(
        "/api/invoices",
        Some(&[Method::POST]),
        true,
        &["core.invoice.create", "core.invoice.write"],
    );
    for action in ["abandon", "void"] {
        b.action(
            &format!("/api/invoices/*/{action}"),
            &["core.invoice.delete"],
        );
    }
    for action in ["add_approver", "remove_approval", "restart_approvals"] {
        b.action(
            &format!("/api/invoices/*/{action}"),
            &["core.invoice.approval.write"],
        );
    }
    b.action(
        "/api/invoices/*/bypass_approvals",
        &["core.invoice.approval.bypass"],
    );
    // §11: multipart PUT; other methods fall back to the invoice rules.
    b.push(
        "/api/invoices/*/image_scan",
        Some(&[Method::PUT]),
        false,
        &["core.invoice.write"],
    );
    for action in ["retrieve_image_scan", "retrieve_legal_invoice_pdf"] {
        b.action(&format!("/api/invoices/*/{action}"), &["core.invoice.read"]);
    }
    // §9: core.invoice.create includes attachment create. Reads and other writes on an
    // invoice's attachments, and every other parent's attachments, take the parent's read/write
    // through the parent's prefix rule (so they also follow an override of the parent).
    b.push(
        "/api/invoices/*/attachments",
        Some(&[Method::POST]),
        false,
        &["core.invoice.create", "core.invoice.write"],
    );
    // §9 pairs these oddly but explicitly: tax_registrations → invoice,
    // invoice_emails → supplier.
    b.rw("/api/tax_registrations", "core.invoice");
    b.rw("/api/invoice_emails", "core.supplier");

    // Suppliers.
    for r in ["suppliers", "supplier_information", "supplier_invites"] {
        b.rw(&format!("/api/{r}"), "core.supplier");
    }
    b.rw("/api/supplier_sites", "core.supplier_sites");
    b.rw("/api/suppliers/*/supplier_sites", "core.supplier_sites"); // [INF] nested form

    // Purchase orders.
    for r in [
        "purchase_orders",
        "purchase_order_lines",
        "purchase_order_changes",
        "purchase_order_revisions",
    ] {
        b.rw(&format!("/api/{r}"), "core.purchase_order");
    }
    for action in ["issue", "cancel", "close", "reopen"] {
        b.action(
            &format!("/api/purchase_orders/*/{action}"),
            &["core.purchase_order.write"],
        );
    }

    // Requisitions; submit_for_approval is a write whatever the method (§11 special actions).
    b.rw("/api/requisitions", "core.requisition");
    b.rw("/api/requisition_lines", "core.requisition");
    b.push(
        "/api/requisitions/submit_for_approval",
        None,
        true,
        &["core.requisition.write"],
    );
    b.action(
        "/api/requisitions/new/submit_for_approval",
        &["core.requisition.write"],
    );

    // Users.
    b.rw("/api/users", "core.user");
    b.rw("/api/user_groups", "core.user_group");
    b.rw("/api/user_group_memberships", "core.user_group");

    // Common setup data. [INF] §9: newer instances may also offer core.lookups.read_write.
    for r in ["lookups", "lookup_values"] {
        b.rw_any(
            &format!("/api/{r}"),
            &["core.common.read", "core.lookups.read_write"],
            &["core.common.write", "core.lookups.read_write"],
        );
    }
    // currencies, announcements and notifications are read-only in Coupa; a write is mapped
    // anyway so the request reaches Coupa and gets Coupa's own answer.
    for r in [
        "exchange_rates",
        "currencies",
        "departments",
        "addresses",
        "commodities",
        "payment_terms",
        "shipping_terms",
        "tax_codes",
        "business_groups",
        "roles",
        "custom_objects",
        "announcements",
        "notifications",
    ] {
        b.rw(&format!("/api/{r}"), "core.common");
    }
    // §9 maps /uoms to core.common; §8's catalogue also has core.uom.{read,write} [INF].
    b.rw_any(
        "/api/uoms",
        &["core.common.read", "core.uom.read"],
        &["core.common.write", "core.uom.write"],
    );

    // Accounting.
    for r in [
        "accounts",
        "account_types",
        "account_validation_rules",
        "account_groups",
    ] {
        b.rw(&format!("/api/{r}"), "core.accounting");
    }
    b.action("/api/accounts/validate_account", &["core.accounting.write"]);

    // Inventory / receipts.
    b.rw("/api/receiving_transactions", "core.inventory.receiving");
    b.action(
        "/api/receiving_transactions/*/void",
        &["core.inventory.receiving.write"],
    );
    // §9: receiving.read in R34, core.inventory.transaction.read on newer instances [INF].
    b.rw_any(
        "/api/inventory_transactions",
        &[
            "core.inventory.receiving.read",
            "core.inventory.transaction.read",
        ],
        &["core.inventory.receiving.write"],
    );
    b.push(
        "/api/inventory_transactions/*/void",
        Some(&[Method::PUT]),
        false,
        &["core.inventory.receiving.write"],
    );
    b.rw("/api/asn/headers", "core.inventory.asn");
    b.rw("/api/asn/lines", "core.inventory.asn");

    // Contracts, expenses, approvals.
    for r in ["contracts", "contract_terms", "legal_documents"] {
        b.rw(&format!("/api/{r}"), "core.contract");
    }
    for r in ["expense_reports", "expense_lines", "expense_artifacts"] {
        b.rw(&format!("/api/{r}"), "core.expense");
    }
    b.rw("/api/approvals", "core.approval");
    for action in ["approve", "reject", "hold"] {
        b.action(
            &format!("/api/approvals/*/{action}"),
            &["core.approval.write"],
        );
    }

    // Coupa Pay. §9 lists /charges under "respective pay scopes" [INF: core.pay.charges].
    b.rw("/api/coupa_pay/payments", "core.pay.payments");
    b.rw("/api/coupa_pay/statements", "core.pay.statements");
    b.rw("/api/charges", "core.pay.charges");

    // Items and catalogues: §9 accepts core.item.read or core.catalog.read for item reads.
    b.rw_any(
        "/api/items",
        &["core.item.read", "core.catalog.read"],
        &["core.item.write"],
    );
    b.rw("/api/supplier_items", "core.catalog");

    // Budgets, integrations, comments, projects.
    b.rw("/api/budget_lines", "core.budget");
    b.rw("/api/budget_line_adjustments", "core.budget");
    for r in [
        "integrations",
        "integration_runs",
        "integration_history_records",
        "integration_errors",
        "integration_contacts",
        "data_file_sources",
    ] {
        b.rw(&format!("/api/{r}"), "core.integration");
    }
    b.rw("/api/comments", "core.comment");
    // §9: `/{parent}/:id/comments` take core.comment, not the parent's scope. Which parents
    // carry comments is [INF]; unknown parents stay unknown rather than guessed.
    for parent in [
        "contracts",
        "expense_reports",
        "invoices",
        "purchase_orders",
        "quote_requests",
        "requisitions",
        "supplier_information",
        "suppliers",
    ] {
        b.rw(&format!("/api/{parent}/*/comments"), "core.comment");
    }
    for r in ["projects", "tasks", "project_memberships"] {
        b.rw(&format!("/api/{r}"), "core.project");
    }

    // Entities, sourcing, forms, order pads.
    b.rw("/api/business_entities", "core.business_entity");
    b.rw("/api/legal_entities", "core.legal_entity");
    b.rw(
        "/api/financial_counterparties",
        "core.financial_counterparty",
    );
    b.rw("/api/quote_requests", "core.sourcing");
    b.rw("/api/quote_responses", "core.sourcing.response");
    b.rw("/api/easy_form_responses", "core.easy_form_response");
    b.rw("/api/order_pads", "core.order_pad");

    // `GET /api/attachments/:id[?attachable_type=...]` (§11): the parent is in the query, not
    // the path, so §9's "parent's read" cannot be applied; core.common.read is the minimum
    // scope connectors grant (§8) [INF]. Writes there: parent unknown, undetermined.
    b.rw_any("/api/attachments", &["core.common.read"], &[]);

    // GraphQL (§9, §11): a POST that only reads, but what it reads is in the body, so the path
    // cannot tell. Empty = undetermined.
    b.action("/api/graphql", &[]);

    b.0
}
