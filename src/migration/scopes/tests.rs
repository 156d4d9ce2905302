//! Unit tests of the scope table, the built-in rules and the categories.

use super::category::CATEGORIES;
use super::*;

fn scopes(t: &ScopeTable, m: Method, path: &str) -> Option<Vec<String>> {
    t.needed(&m, path)
        .map(|n| n.any_of.iter().map(|s| s.to_string()).collect())
}

fn one(t: &ScopeTable, m: Method, path: &str) -> String {
    let got = scopes(t, m.clone(), path).unwrap_or_else(|| panic!("{m} {path}: no rule"));
    assert_eq!(got.len(), 1, "{m} {path}: {got:?}");
    got.into_iter().next().unwrap()
}

fn cfg(index: usize, pattern: &str, methods: Option<&[&str]>, scopes: &[&str]) -> ScopeRule {
    ScopeRule {
        pattern: pattern.into(),
        methods: methods.map(|ms| ms.iter().map(|m| parse_method(m).unwrap()).collect()),
        exact: false,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        source: RuleSource::Config { index },
    }
}

#[test]
fn read_write_split_for_every_group() {
    let t = ScopeTable::builtin();
    let cases: &[(&str, &str)] = &[
        ("/api/invoices/7", "core.invoice"),
        ("/api/tax_registrations/3", "core.invoice"),
        ("/api/invoice_emails", "core.supplier"),
        ("/api/suppliers/4/addresses", "core.supplier"),
        ("/api/supplier_information/9", "core.supplier"),
        ("/api/supplier_invites", "core.supplier"),
        ("/api/supplier_sites/2", "core.supplier_sites"),
        ("/api/suppliers/4/supplier_sites/1", "core.supplier_sites"),
        ("/api/purchase_orders/1", "core.purchase_order"),
        ("/api/purchase_order_lines/1", "core.purchase_order"),
        ("/api/purchase_order_changes", "core.purchase_order"),
        ("/api/purchase_order_revisions", "core.purchase_order"),
        ("/api/requisitions/5", "core.requisition"),
        ("/api/requisition_lines/5", "core.requisition"),
        ("/api/users/5/addresses", "core.user"),
        ("/api/user_groups/5", "core.user_group"),
        ("/api/user_group_memberships", "core.user_group"),
        ("/api/exchange_rates", "core.common"),
        ("/api/currencies", "core.common"),
        ("/api/departments/1", "core.common"),
        ("/api/addresses/1", "core.common"),
        ("/api/commodities/1", "core.common"),
        ("/api/payment_terms", "core.common"),
        ("/api/shipping_terms", "core.common"),
        ("/api/tax_codes", "core.common"),
        ("/api/business_groups", "core.common"),
        ("/api/roles", "core.common"),
        ("/api/custom_objects/my_object/5", "core.common"),
        ("/api/announcements", "core.common"),
        ("/api/notifications", "core.common"),
        ("/api/accounts/3", "core.accounting"),
        ("/api/account_types/3", "core.accounting"),
        ("/api/account_validation_rules", "core.accounting"),
        ("/api/account_groups", "core.accounting"),
        ("/api/receiving_transactions/8", "core.inventory.receiving"),
        ("/api/asn/headers/1", "core.inventory.asn"),
        ("/api/asn/lines", "core.inventory.asn"),
        ("/api/contracts/1", "core.contract"),
        ("/api/contract_terms", "core.contract"),
        ("/api/legal_documents", "core.contract"),
        ("/api/expense_reports/1", "core.expense"),
        ("/api/expense_lines", "core.expense"),
        ("/api/expense_artifacts", "core.expense"),
        ("/api/approvals/1", "core.approval"),
        ("/api/coupa_pay/payments/1", "core.pay.payments"),
        ("/api/coupa_pay/statements", "core.pay.statements"),
        ("/api/charges", "core.pay.charges"),
        ("/api/supplier_items/1", "core.catalog"),
        ("/api/budget_lines", "core.budget"),
        ("/api/budget_line_adjustments", "core.budget"),
        ("/api/integrations", "core.integration"),
        ("/api/integration_runs/1", "core.integration"),
        ("/api/integration_history_records", "core.integration"),
        ("/api/integration_errors", "core.integration"),
        ("/api/integration_contacts", "core.integration"),
        ("/api/data_file_sources", "core.integration"),
        ("/api/comments/1", "core.comment"),
        ("/api/projects", "core.project"),
        ("/api/tasks/1", "core.project"),
        ("/api/project_memberships", "core.project"),
        ("/api/business_entities/1", "core.business_entity"),
        ("/api/legal_entities", "core.legal_entity"),
        (
            "/api/financial_counterparties",
            "core.financial_counterparty",
        ),
        ("/api/quote_requests/1", "core.sourcing"),
        ("/api/quote_responses/1", "core.sourcing.response"),
        ("/api/easy_form_responses", "core.easy_form_response"),
        ("/api/order_pads", "core.order_pad"),
    ];
    for &(path, base) in cases {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(one(&t, m, path), format!("{base}.read"), "{path}");
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(one(&t, m, path), format!("{base}.write"), "{path}");
        }
    }
}

#[test]
fn alternatives() {
    let t = ScopeTable::builtin();
    let s = |m, p| scopes(&t, m, p).unwrap();
    assert_eq!(
        s(Method::GET, "/api/lookup_values/3"),
        ["core.common.read", "core.lookups.read_write"]
    );
    assert_eq!(
        s(Method::PUT, "/api/lookups/3"),
        ["core.common.write", "core.lookups.read_write"]
    );
    assert_eq!(
        s(Method::GET, "/api/uoms"),
        ["core.common.read", "core.uom.read"]
    );
    assert_eq!(
        s(Method::GET, "/api/items/1"),
        ["core.item.read", "core.catalog.read"]
    );
    assert_eq!(s(Method::POST, "/api/items"), ["core.item.write"]);
    assert_eq!(
        s(Method::GET, "/api/inventory_transactions"),
        [
            "core.inventory.receiving.read",
            "core.inventory.transaction.read"
        ]
    );
}

#[test]
fn special_actions_beat_the_resource_rule() {
    let t = ScopeTable::builtin();
    let cases: &[(Method, &str, &str)] = &[
        (
            Method::PUT,
            "/api/invoices/5/abandon",
            "core.invoice.delete",
        ),
        (Method::PUT, "/api/invoices/5/void", "core.invoice.delete"),
        (
            Method::PUT,
            "/api/invoices/5/add_approver",
            "core.invoice.approval.write",
        ),
        (
            Method::PUT,
            "/api/invoices/5/remove_approval",
            "core.invoice.approval.write",
        ),
        (
            Method::PUT,
            "/api/invoices/5/restart_approvals",
            "core.invoice.approval.write",
        ),
        (
            Method::PUT,
            "/api/invoices/5/bypass_approvals",
            "core.invoice.approval.bypass",
        ),
        (
            Method::PUT,
            "/api/invoices/5/image_scan",
            "core.invoice.write",
        ),
        (
            Method::GET,
            "/api/invoices/5/image_scan",
            "core.invoice.read",
        ),
        (
            Method::GET,
            "/api/invoices/5/retrieve_image_scan",
            "core.invoice.read",
        ),
        (
            Method::POST,
            "/api/invoices/5/retrieve_legal_invoice_pdf",
            "core.invoice.read",
        ),
        (
            Method::PUT,
            "/api/purchase_orders/5/issue",
            "core.purchase_order.write",
        ),
        (
            Method::GET,
            "/api/purchase_orders/5/cancel",
            "core.purchase_order.write",
        ),
        (
            Method::PUT,
            "/api/purchase_orders/5/close",
            "core.purchase_order.write",
        ),
        (
            Method::PUT,
            "/api/purchase_orders/5/reopen",
            "core.purchase_order.write",
        ),
        (
            Method::POST,
            "/api/requisitions/submit_for_approval",
            "core.requisition.write",
        ),
        (
            Method::POST,
            "/api/requisitions/new/submit_for_approval",
            "core.requisition.write",
        ),
        (
            Method::GET,
            "/api/accounts/validate_account",
            "core.accounting.write",
        ),
        (
            Method::PUT,
            "/api/receiving_transactions/3/void",
            "core.inventory.receiving.write",
        ),
        (
            Method::PUT,
            "/api/inventory_transactions/3/void",
            "core.inventory.receiving.write",
        ),
        (
            Method::PUT,
            "/api/approvals/3/approve",
            "core.approval.write",
        ),
        (
            Method::PUT,
            "/api/approvals/3/reject",
            "core.approval.write",
        ),
        (Method::PUT, "/api/approvals/3/hold", "core.approval.write"),
        (Method::GET, "/api/invoices/5/comments", "core.comment.read"),
        (
            Method::POST,
            "/api/requisitions/5/comments",
            "core.comment.write",
        ),
        (Method::GET, "/api/attachments/12", "core.common.read"),
    ];
    for (m, path, want) in cases {
        assert_eq!(one(&t, m.clone(), path), *want, "{m} {path}");
    }
    // The matched rule is the action's, not the resource's.
    let n = t.needed(&Method::PUT, "/api/invoices/5/abandon").unwrap();
    assert_eq!(t.rules()[n.rule].pattern, "/api/invoices/*/abandon");
}

#[test]
fn invoice_create_update_and_attachments() {
    let t = ScopeTable::builtin();
    let create = ["core.invoice.create", "core.invoice.write"];
    assert_eq!(scopes(&t, Method::POST, "/api/invoices").unwrap(), create);
    assert_eq!(scopes(&t, Method::POST, "/api/invoices/").unwrap(), create);
    let n = t.needed(&Method::POST, "/api/invoices").unwrap();
    assert!(t.rules()[n.rule].exact);
    // The exact rule does not reach below /api/invoices.
    assert_eq!(
        one(&t, Method::PUT, "/api/invoices/5"),
        "core.invoice.write"
    );
    assert_eq!(
        one(&t, Method::POST, "/api/invoices/5/invoice_lines"),
        "core.invoice.write"
    );
    assert_eq!(
        scopes(&t, Method::POST, "/api/invoices/5/attachments").unwrap(),
        create
    );
    assert_eq!(
        one(&t, Method::GET, "/api/invoices/5/attachments"),
        "core.invoice.read"
    );
    assert_eq!(
        one(&t, Method::DELETE, "/api/invoices/5/attachments/2"),
        "core.invoice.write"
    );
    // Other parents' attachments follow the parent.
    assert_eq!(
        one(&t, Method::POST, "/api/contracts/5/attachments"),
        "core.contract.write"
    );
    assert_eq!(
        one(&t, Method::GET, "/api/users/5/attachments"),
        "core.user.read"
    );
    assert_eq!(one(&t, Method::GET, "/api/invoices"), "core.invoice.read");
}

#[test]
fn undetermined_paths() {
    let t = ScopeTable::builtin();
    let g = t.needed(&Method::POST, "/api/graphql").unwrap();
    assert!(g.is_undetermined());
    assert!(t
        .needed(&Method::DELETE, "/api/attachments/3")
        .unwrap()
        .is_undetermined());
    assert!(!t
        .needed(&Method::GET, "/api/invoices")
        .unwrap()
        .is_undetermined());
}

#[test]
fn path_normalisation() {
    let t = ScopeTable::builtin();
    let read = Some(vec!["core.invoice.read".to_string()]);
    for p in [
        "/api/invoices/",
        "/api/invoices/5/",
        "/api//invoices",
        "/api/./invoices/5",
        "/api/users/../invoices/5",
        "/api/users/%2E%2e/invoices/5",
        "/api/%2e/invoices/5",
        "/api/%69nvoices/5",
        "/api/invoices.json",
        "/api/invoices/5.xml",
        "/api/invoices?offset=50&status[in]=a,b",
    ] {
        assert_eq!(scopes(&t, Method::GET, p), read, "{p}");
    }
    assert_eq!(
        one(&t, Method::PUT, "/api/invoices/5/abandon.json"),
        "core.invoice.delete"
    );
    assert_eq!(
        one(&t, Method::PUT, "/api/invoices/5/%61bandon"),
        "core.invoice.delete"
    );
    assert_eq!(
        one(&t, Method::PUT, "/api/users/5/../../invoices/5/void"),
        "core.invoice.delete"
    );
    // An encoded "/" is part of a segment, not a separator.
    assert_eq!(scopes(&t, Method::GET, "/api/invoices%2F5"), None);
    // Too deep to be a Coupa path.
    let deep = format!("/api/invoices{}", "/x".repeat(40));
    assert_eq!(scopes(&t, Method::GET, &deep), None);
}

#[test]
fn unknown_and_outside_api() {
    let t = ScopeTable::builtin();
    for p in [
        "/api/no_such_resource",
        "/api/no_such_resource/5/comments",
        "/api/payables/invoices",
        "/api/asn",
        "/api",
        "/api/",
        "/oauth2/token",
        "/",
        "",
        "api/invoices",
        "/apis/invoices",
        "/API/invoices",
        "/api/../invoices",
        "/v1/api/invoices",
    ] {
        assert_eq!(scopes(&t, Method::GET, p), None, "{p}");
    }
    // No built-in rule covers TRACE or extension methods.
    assert_eq!(scopes(&t, Method::TRACE, "/api/invoices"), None);
    let ext = Method::from_bytes(b"PURGE").unwrap();
    assert_eq!(scopes(&t, ext, "/api/invoices"), None);
}

#[test]
fn overrides_replace_equal_specificity() {
    let t = ScopeTable::new(vec![
        cfg(0, "/api/invoices", Some(&["GET"]), &["custom.invoice.read"]),
        cfg(
            1,
            "/api/invoices/*/abandon",
            None,
            &["custom.invoice.abandon"],
        ),
        cfg(2, "/api/widgets", None, &["custom.widget"]),
    ])
    .unwrap();
    let n = t.needed(&Method::GET, "/api/invoices/5").unwrap();
    assert_eq!(&*n.any_of[0], "custom.invoice.read");
    assert_eq!(n.rule, 0);
    assert_eq!(t.rules()[0].source, RuleSource::Config { index: 0 });
    // Methods the override does not list keep the built-in rule.
    assert_eq!(
        one(&t, Method::PUT, "/api/invoices/5"),
        "core.invoice.write"
    );
    assert_eq!(
        one(&t, Method::PUT, "/api/invoices/5/abandon"),
        "custom.invoice.abandon"
    );
    // New resources become known.
    assert_eq!(one(&t, Method::DELETE, "/api/widgets/1"), "custom.widget");
    assert_eq!(ScopeTable::category("/api/widgets"), None);
}

/// A more specific built-in rule still beats a less specific override: overriding
/// `/api/invoices` does not change the special actions or the exact create rule.
#[test]
fn more_specific_builtin_beats_broad_override() {
    let t = ScopeTable::new(vec![cfg(0, "/api/invoices", None, &["custom.inv"])]).unwrap();
    assert_eq!(one(&t, Method::GET, "/api/invoices/5"), "custom.inv");
    assert_eq!(one(&t, Method::PUT, "/api/invoices/5"), "custom.inv");
    assert_eq!(
        one(&t, Method::PUT, "/api/invoices/5/void"),
        "core.invoice.delete"
    );
    assert_eq!(
        scopes(&t, Method::POST, "/api/invoices").unwrap(),
        ["core.invoice.create", "core.invoice.write"]
    );
    // Overriding the exact rule itself does win.
    let mut exact = cfg(0, "/api/invoices", Some(&["POST"]), &["custom.create"]);
    exact.exact = true;
    let t = ScopeTable::new(vec![exact]).unwrap();
    assert_eq!(one(&t, Method::POST, "/api/invoices"), "custom.create");
    // A catch-all override only fills gaps.
    let t = ScopeTable::new(vec![cfg(0, "/api", None, &["core.common.read"])]).unwrap();
    assert_eq!(
        one(&t, Method::GET, "/api/no_such_resource/1"),
        "core.common.read"
    );
    assert_eq!(one(&t, Method::GET, "/api/invoices/1"), "core.invoice.read");
    assert_eq!(
        one(&t, Method::TRACE, "/api/invoices/1"),
        "core.common.read"
    );
    // A wildcard-resource override sits in every bucket, ordered by specificity.
    let t = ScopeTable::new(vec![cfg(0, "/api/*/*/notes", None, &["custom.notes"])]).unwrap();
    assert_eq!(
        one(&t, Method::GET, "/api/invoices/1/notes"),
        "custom.notes"
    );
    assert_eq!(one(&t, Method::GET, "/api/nothing/1/notes"), "custom.notes");
    assert_eq!(
        one(&t, Method::GET, "/api/invoices/1/abandon"),
        "core.invoice.delete"
    );
}

#[test]
fn bad_overrides_are_rejected_with_their_index() {
    let cases: &[(&str, &str)] = &[
        (
            "api/x",
            r#"scope_rules[3].path: "api/x" must start with "/api/""#,
        ),
        ("/apix", "must start with"),
        ("/api/invoices/", "ends with \"/\"; write \"/api/invoices\""),
        ("/api//invoices", "empty segment"),
        ("/api/invoices?x=1", "query"),
        ("/api/invoices#x", "query or fragment"),
        ("/api/in%20voices", "\"%\""),
        ("/api/inv*", "whole segment"),
        ("/api/invoices/../x", "\".\""),
        ("/api/invoices.json", "\".\""),
        ("/api/in voices", "whitespace"),
    ];
    for &(pattern, want) in cases {
        let mut rules = vec![cfg(0, "/api/a", None, &["a.read"])];
        rules.extend((1..3).map(|i| cfg(i, &format!("/api/b{i}"), None, &["b.read"])));
        rules.push(cfg(3, pattern, None, &["core.invoice.read"]));
        let e = ScopeTable::new(rules).unwrap_err();
        assert_eq!(e.index, 3, "{pattern}");
        assert!(e.message.contains(want), "{pattern}: {}", e.message);
        assert!(e.to_string().starts_with("scope_rules[3]."), "{e}");
    }

    let e = ScopeTable::new(vec![cfg(0, "/api/x", None, &["core.x.read", "Core.X"])]).unwrap_err();
    assert!(
        e.message
            .starts_with("scope_rules[0].scopes[1]: \"Core.X\""),
        "{e}"
    );
    let e = ScopeTable::new(vec![cfg(0, "/api/x", None, &[])]).unwrap_err();
    assert!(
        e.message.starts_with("scope_rules[0].scopes: is empty"),
        "{e}"
    );
    let e = ScopeTable::new(vec![cfg(0, "/api/x", Some(&[]), &["a"])]).unwrap_err();
    assert!(
        e.message.starts_with("scope_rules[0].methods: is empty"),
        "{e}"
    );
    let mut ext = cfg(0, "/api/x", None, &["a"]);
    ext.methods = Some(vec![Method::GET, Method::from_bytes(b"PURGE").unwrap()]);
    let e = ScopeTable::new(vec![ext]).unwrap_err();
    assert!(
        e.message
            .starts_with("scope_rules[0].methods[1]: \"PURGE\""),
        "{e}"
    );
    // Duplicates with overlapping methods are rejected, disjoint methods are fine.
    let e = ScopeTable::new(vec![
        cfg(0, "/api/x/*", Some(&["GET", "PUT"]), &["a"]),
        cfg(1, "/api/x/*", Some(&["PUT"]), &["b"]),
    ])
    .unwrap_err();
    assert_eq!(e.index, 1);
    assert!(e.message.contains("repeats scope_rules[0]"), "{e}");
    ScopeTable::new(vec![
        cfg(0, "/api/x/*", Some(&["GET"]), &["a"]),
        cfg(1, "/api/x/*", Some(&["PUT"]), &["b"]),
    ])
    .unwrap();
    // "/api" alone and "*" segments are fine.
    ScopeTable::new(vec![
        cfg(0, "/api", None, &["a"]),
        cfg(1, "/api/*/x", None, &["a"]),
    ])
    .unwrap();
}

#[test]
fn builtin_rules_are_valid_and_not_duplicated() {
    let rules = builtin_rules();
    assert!(rules.len() > 150, "{}", rules.len());
    let mut seen: Vec<(Vec<PatSeg>, bool, u16)> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let segs = validate(i, r).unwrap_or_else(|e| panic!("{e}"));
        let m = methods_mask(r.methods.as_deref());
        assert!(
            !seen
                .iter()
                .any(|(s, e, sm)| *s == segs && *e == r.exact && sm & m != 0),
            "duplicate built-in rule {}",
            r.pattern
        );
        for s in &r.scopes {
            assert!(is_valid_scope_name(s), "{s}");
        }
        // Every built-in resource has a §12 category, except GraphQL.
        if r.pattern != "/api/graphql" {
            assert!(ScopeTable::category(&r.pattern).is_some(), "{}", r.pattern);
        }
        seen.push((segs, r.exact, m));
    }
}

#[test]
fn categories() {
    assert!(
        CATEGORIES.windows(2).all(|w| w[0].0 < w[1].0),
        "CATEGORIES unsorted"
    );
    let cat = |p| ScopeTable::category(p);
    for p in [
        "/api/suppliers/5",
        "/api/users",
        "/api/accounts/1",
        "/api/lookup_values",
        "/api/exchange_rates/",
    ] {
        assert_eq!(cat(p), Some(Category::Master), "{p}");
    }
    for p in [
        "/api/invoices/5/invoice_lines",
        "/api/purchase_orders",
        "/api/receiving_transactions/1",
        "/api/requisitions",
        "/api/invoices/5/attachments",
    ] {
        assert_eq!(cat(p), Some(Category::Transactional), "{p}");
    }
    for p in ["/api/attachments/3", "/api/comments"] {
        assert_eq!(cat(p), Some(Category::Shared), "{p}");
    }
    for p in ["/api/graphql", "/api/nope", "/api", "/other"] {
        assert_eq!(cat(p), None, "{p}");
    }
    assert_eq!(Category::Master.as_str(), "master");
    assert_eq!(Category::Transactional.to_string(), "transactional");
    assert_eq!(Category::Shared.as_str(), "shared");
}

#[test]
fn scope_names_and_methods() {
    for ok in [
        "core.invoice.read",
        "openid",
        "core.inventory.asn.write",
        "a_1.b2",
    ] {
        assert!(is_valid_scope_name(ok), "{ok}");
    }
    for bad in [
        "",
        ".core",
        "core.",
        "core..read",
        "Core.read",
        "core read",
        "core-x",
        "ü",
    ] {
        assert!(!is_valid_scope_name(bad), "{bad}");
    }
    assert_eq!(parse_method("PATCH"), Some(Method::PATCH));
    assert_eq!(parse_method("get"), None);
    assert_eq!(parse_method("PURGE"), None);
}

/// `needed` returns a reference into the table: the same `Needed` every time, no copy made,
/// and the parse uses a stack array, so a lookup allocates nothing.
#[test]
fn needed_borrows_from_the_table() {
    let t = ScopeTable::builtin();
    let a = t.needed(&Method::GET, "/api/invoices/1").unwrap();
    let b = t.needed(&Method::HEAD, "/api/invoices/2/").unwrap();
    assert!(std::ptr::eq(a, b));
    assert!(t.compiled.iter().any(|c| std::ptr::eq(&c.needed, a)));
    // Scope strings are interned: one allocation per distinct name.
    let c = t.needed(&Method::GET, "/api/tax_registrations").unwrap();
    assert!(Arc::ptr_eq(&a.any_of[0], &c.any_of[0]));
}
