//! The mock's records: deterministic seed rows, the in-memory store, and list queries
//! (offset/limit paging, exact-match filters, ordering).
//!
//! Rows are `serde_json::Value` objects with Coupa's hyphenated keys (`invoice-number`,
//! `updated-at`); XML is rendered from the same values, so both formats always agree.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Map, Value};

use super::{codec, scopes::RESOURCE_TABLE};

/// Coupa's page size cap (docs/coupa-api.md §11): larger `limit`s are clamped to this.
pub(super) const MAX_LIMIT: usize = 50;

/// Query parameters that steer the listing itself and are therefore never field filters.
const RESERVED_PARAMS: &[&str] = &[
    "offset",
    "limit",
    "order_by",
    "dir",
    "return_object",
    "fields",
    "filter",
];

/// 2024-01-01T00:00:00Z, the start of the seed data's timeline.
const SEED_EPOCH: u64 = 1_704_067_200;

const COMPANIES: &[&str] = &[
    "Acme Corp",
    "Globex",
    "Initech",
    "Johnson & Johnson",
    "Umbrella <Ltd>",
    "Stark Industries",
    "Wayne Enterprises",
    "Hooli",
    "Soylent",
    "Tyrell",
];

struct Table {
    rows: BTreeMap<u64, Value>,
    next_id: u64,
}

/// All tables of one instance behind one std mutex: every operation is a short, synchronous
/// critical section, never held across an `.await`.
pub(super) struct Store {
    tables: Mutex<BTreeMap<&'static str, Table>>,
}

/// A parsed list request.
#[derive(Debug, Default)]
pub(super) struct ListQuery {
    offset: usize,
    limit: usize,
    filters: Vec<(String, String)>,
    order_by: Option<String>,
    descending: bool,
}

impl ListQuery {
    /// Parses the raw query string. Unknown, malformed or operator parameters
    /// (`updated-at[gt]=…`, `fields=[…]`) are ignored, never rejected: the mock must accept
    /// whatever real clients send.
    pub(super) fn parse(raw: Option<&str>) -> Self {
        let mut q = ListQuery {
            limit: MAX_LIMIT,
            ..ListQuery::default()
        };
        for (k, v) in codec::parse_pairs(raw.unwrap_or("")) {
            match k.as_str() {
                "offset" => q.offset = v.trim().parse().unwrap_or(0),
                "limit" => q.limit = v.trim().parse().unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
                "order_by" => q.order_by = Some(v),
                "dir" => q.descending = v.eq_ignore_ascii_case("desc"),
                _ if RESERVED_PARAMS.contains(&k.as_str()) || k.contains('[') => {}
                _ => q.filters.push((k, v)),
            }
        }
        q
    }
}

impl Store {
    /// Builds every table, seeding `rows` rows into the seeded resources.
    pub(super) fn seeded(rows: usize) -> Self {
        let mut tables = BTreeMap::new();
        for res in RESOURCE_TABLE {
            let n = if res.seeded { rows } else { 0 };
            let rows = (1..=n as u64)
                .map(|id| (id, seed_row(res.name, id, n as u64)))
                .collect();
            tables.insert(
                res.name,
                Table {
                    rows,
                    next_id: n as u64 + 1,
                },
            );
        }
        Store {
            tables: Mutex::new(tables),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<&'static str, Table>) -> T) -> T {
        // A panic inside a critical section cannot leave a table half-written in a way that
        // matters to a mock, so a poisoned lock is simply taken over.
        let mut guard = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// One page of `resource` matching `q`.
    pub(super) fn list(&self, resource: &str, q: &ListQuery) -> Vec<Value> {
        self.with(|tables| {
            let Some(table) = tables.get(resource) else {
                return Vec::new();
            };
            // A filter only applies if some row has that field (with Coupa's `_` → `-`), so a
            // parameter the mock does not understand is ignored instead of emptying the list.
            let filters: Vec<(String, &str)> = q
                .filters
                .iter()
                .filter_map(|(k, v)| {
                    [k.clone(), k.replace('_', "-")]
                        .into_iter()
                        .find(|key| table.rows.values().any(|r| r.get(key).is_some()))
                        .map(|key| (key, v.as_str()))
                })
                .collect();
            let mut rows: Vec<&Value> = table
                .rows
                .values()
                .filter(|row| {
                    filters
                        .iter()
                        .all(|(k, v)| row.get(k).and_then(scalar_text).as_deref() == Some(*v))
                })
                .collect();
            if let Some(key) = &q.order_by {
                let key = key.replace('_', "-");
                rows.sort_by(|a, b| compare(a.get(&key), b.get(&key)));
            }
            if q.descending {
                rows.reverse();
            }
            rows.into_iter()
                .skip(q.offset)
                .take(q.limit)
                .cloned()
                .collect()
        })
    }

    /// One row by id.
    pub(super) fn get(&self, resource: &str, id: u64) -> Option<Value> {
        self.with(|t| t.get(resource)?.rows.get(&id).cloned())
    }

    /// Creates a row from `fields` (any `id` in them is replaced by the next id) and returns it.
    /// `stamp` adds `created-at` / `updated-at`.
    pub(super) fn create(
        &self,
        resource: &str,
        mut fields: Map<String, Value>,
        stamp: bool,
    ) -> Value {
        self.with(|tables| {
            let table = tables.entry(static_name(resource)).or_insert(Table {
                rows: BTreeMap::new(),
                next_id: 1,
            });
            let id = table.next_id;
            table.next_id += 1;
            fields.insert("id".into(), json!(id));
            if stamp {
                let now = codec::format_timestamp(now_secs());
                fields
                    .entry("created-at")
                    .or_insert_with(|| json!(now.clone()));
                fields.insert("updated-at".into(), json!(now));
            }
            let row = Value::Object(fields);
            table.rows.insert(id, row.clone());
            row
        })
    }

    /// Merges `fields` into a row (top level only; `id` is kept) and applies an
    /// `?exported=` flag; `None` if there is no such row.
    pub(super) fn update(
        &self,
        resource: &str,
        id: u64,
        fields: Map<String, Value>,
        exported: Option<bool>,
    ) -> Option<Value> {
        self.with(|tables| {
            let row = tables.get_mut(resource)?.rows.get_mut(&id)?;
            let obj = row.as_object_mut()?;
            let now = codec::format_timestamp(now_secs());
            if !fields.is_empty() {
                obj.insert("updated-at".into(), json!(now.clone()));
            }
            for (k, v) in fields {
                if k != "id" {
                    obj.insert(k, v);
                }
            }
            if let Some(flag) = exported {
                obj.insert("exported".into(), json!(flag));
                if flag {
                    obj.insert("last-exported-at".into(), json!(now));
                }
            }
            Some(row.clone())
        })
    }

    /// Removes a row, returning it.
    pub(super) fn delete(&self, resource: &str, id: u64) -> Option<Value> {
        self.with(|t| t.get_mut(resource)?.rows.remove(&id))
    }
}

/// Maps a resource name onto the `'static` key of the table (every resource is in
/// `RESOURCE_TABLE`; an unknown one would have been answered 404 before reaching the store).
fn static_name(resource: &str) -> &'static str {
    RESOURCE_TABLE
        .iter()
        .find(|r| r.name == resource)
        .map_or("unknown", |r| r.name)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The text a query value is compared with: strings as-is, numbers and booleans as printed.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    match (a.and_then(Value::as_f64), b.and_then(Value::as_f64)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => {
            let text = |v: Option<&Value>| v.and_then(scalar_text).unwrap_or_default();
            text(a).cmp(&text(b))
        }
    }
}

fn company(id: u64) -> &'static str {
    COMPANIES[(id as usize - 1) % COMPANIES.len()]
}

/// A deterministic small row. Foreign ids (`supplier.id`, …) stay within `1..=n` so they point
/// at seeded rows. Amounts are strings, as Coupa's JSON renders decimals.
fn seed_row(resource: &str, id: u64, n: u64) -> Value {
    let updated = codec::format_timestamp(SEED_EPOCH + id * 7 * 3600);
    let created = codec::format_timestamp(SEED_EPOCH + id * 3600);
    let other = |k: u64| (id * k) % n.max(1) + 1;
    let pick = |opts: &[&'static str]| opts[(id as usize - 1) % opts.len()];
    let amount = format!("{}.{:02}", 100 + id * 37 % 900, id * 13 % 100);
    match resource {
        "invoices" => json!({
            "id": id,
            "invoice-number": format!("INV-{id:06}"),
            "status": pick(&["approved", "pending_approval", "draft", "disputed"]),
            "total": amount,
            "currency": {"code": pick(&["USD", "EUR", "GBP"])},
            "supplier": {"id": other(3), "name": company(other(3))},
            "exported": id % 3 == 0,
            "invoice-date": &created[..10],
            "created-at": created,
            "updated-at": updated,
        }),
        "suppliers" => json!({
            "id": id,
            "name": format!("{} {id}", company(id)),
            "number": format!("SUP-{id:05}"),
            "status": pick(&["active", "active", "inactive"]),
            "created-at": created,
            "updated-at": updated,
        }),
        "purchase_orders" => json!({
            "id": id,
            "po-number": format!("{}", 1000 + id),
            "status": pick(&["issued", "draft", "closed", "cancelled"]),
            "total": amount,
            "supplier": {"id": other(7), "name": company(other(7))},
            "exported": id % 2 == 0,
            "created-at": created,
            "updated-at": updated,
        }),
        "users" => json!({
            "id": id,
            "login": format!("user{id}"),
            "email": format!("user{id}@example.com"),
            "firstname": pick(&["Ada", "Grace", "Alan", "Edsger", "Barbara"]),
            "lastname": pick(&["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth"]),
            "active": id % 5 != 0,
            "updated-at": updated,
        }),
        "lookup_values" => json!({
            "id": id,
            "name": format!("CC-{id:04}"),
            "description": format!("Cost centre {id}"),
            "active": true,
            "lookup": {"id": id % 4 + 1, "name": pick(&["Cost Center", "Project", "Region", "GL"])},
            "updated-at": updated,
        }),
        "exchange_rates" => json!({
            "id": id,
            "from-currency": {"code": pick(&["USD", "EUR", "GBP", "JPY"])},
            "to-currency": {"code": "USD"},
            "rate": format!("1.{:04}", id * 97 % 10_000),
            "rate-date": &created[..10],
            "updated-at": updated,
        }),
        "accounts" => json!({
            "id": id,
            "name": format!("Account {id}"),
            "code": format!("{:04}-{:03}", 6000 + id, id % 1000),
            "active": id % 7 != 0,
            "account-type": {"id": id % 3 + 1, "name": pick(&["Main COA", "EU COA", "US COA"])},
            "updated-at": updated,
        }),
        "requisitions" => json!({
            "id": id,
            "status": pick(&["pending_approval", "approved", "ordered", "draft"]),
            "total": amount,
            "requested-by": {"id": other(5), "login": format!("user{}", other(5))},
            "exported": false,
            "created-at": created,
            "updated-at": updated,
        }),
        "receiving_transactions" => json!({
            "id": id,
            "type": "ReceivingQuantityConsumption",
            "status": pick(&["created", "voided"]),
            "quantity": format!("{}.0", id % 9 + 1),
            "order-line": {"id": other(11)},
            "exported": id % 4 == 0,
            "updated-at": updated,
        }),
        "expense_reports" => json!({
            "id": id,
            "title": format!("Trip {id}"),
            "status": pick(&["approved", "pending_approval", "draft", "paid"]),
            "total": amount,
            "exported": id % 2 == 1,
            "updated-at": updated,
        }),
        _ => json!({ "id": id, "updated-at": updated }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_deterministic_and_paged() {
        let a = Store::seeded(120);
        let b = Store::seeded(120);
        let q = ListQuery::parse(Some("limit=500&offset=100"));
        let page = a.list("invoices", &q);
        assert_eq!(page.len(), 20);
        assert_eq!(page[0]["id"], 101);
        assert_eq!(page, b.list("invoices", &q));
        assert_eq!(a.list("invoices", &ListQuery::parse(None)).len(), MAX_LIMIT);
        assert!(a.list("currencies", &ListQuery::parse(None)).is_empty());
    }

    #[test]
    fn filters_ignore_what_they_do_not_understand() {
        let s = Store::seeded(120);
        let q = ListQuery::parse(Some(
            "status=approved&fields=[\"id\",{\"supplier\":[\"name\"]}]&updated-at[gt]=2024-01-01&bogus=1&limit=50",
        ));
        let rows = s.list("invoices", &q);
        assert_eq!(rows.len(), 30);
        assert!(rows.iter().all(|r| r["status"] == "approved"));
        let q = ListQuery::parse(Some("exported=true&invoice_number=INV-000003"));
        let rows = s.list("invoices", &q);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["id"], 3);
        let q = ListQuery::parse(Some("order_by=id&dir=desc&limit=2"));
        let ids: Vec<_> = s
            .list("suppliers", &q)
            .iter()
            .map(|r| r["id"].clone())
            .collect();
        assert_eq!(ids, vec![json!(120), json!(119)]);
    }

    #[test]
    fn create_update_delete() {
        let s = Store::seeded(2);
        let mut fields = Map::new();
        fields.insert("name".into(), json!("New"));
        fields.insert("id".into(), json!(999));
        let row = s.create("suppliers", fields, true);
        assert_eq!(row["id"], 3);
        let mut patch = Map::new();
        patch.insert("status".into(), json!("inactive"));
        let row = s.update("suppliers", 3, patch, Some(true)).unwrap();
        assert_eq!(row["status"], "inactive");
        assert_eq!(row["exported"], true);
        assert_eq!(row["name"], "New");
        assert!(s.delete("suppliers", 3).is_some());
        assert!(s.get("suppliers", 3).is_none());
        assert!(s.update("suppliers", 3, Map::new(), None).is_none());
    }
}
