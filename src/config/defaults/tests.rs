use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::*;
use crate::config::tests::*;
use crate::config::units::{parse_duration, parse_size};

fn value_entries() -> impl Iterator<Item = (&'static str, &'static str, Value)> {
    KEYS.iter().filter_map(|k| match k.when_absent {
        Absent::Value { shown, value } => Some((k.path, shown, value)),
        _ => None,
    })
}

/// `shown` read back with the parser the configuration uses for that kind of value.
fn parse_shown(shown: &str, like: &Value) -> Option<Value> {
    Some(match like {
        Value::Duration(_) => Value::Duration(parse_duration(shown)?),
        Value::Bytes(_) => Value::Bytes(parse_size(shown)?),
        Value::Count(_) => Value::Count(shown.parse().ok()?),
        Value::Rate(_) => Value::Rate(shown.parse().ok()?),
        Value::Address(_) => Value::Address(shown.parse::<SocketAddr>().ok()?),
        Value::Flag(_) => Value::Flag(shown.parse().ok()?),
        Value::Word(_) => Value::Word(match shown {
            "oauth" => Mode::OAuth.as_str(),
            "warn" => ScopeCheck::Warn.as_str(),
            "text" => LogFormat::Text.as_str(),
            _ => return None,
        }),
    })
}

/// `shown` as a TOML value: durations, sizes, addresses and words are strings.
fn toml_value(shown: &str, like: &Value) -> String {
    match like {
        Value::Count(_) | Value::Rate(_) | Value::Flag(_) => shown.to_owned(),
        _ => format!("{shown:?}"),
    }
}

const SCOPE_RULE: &str = "[[scope_rules]]\npath = \"/api/x\"\nscopes = [\"core.common.read\"]\n";

/// The minimal file, plus `line` (`field = value`) in the table `path` belongs to. Without a
/// line, the same file with that table as it would be without the key.
fn file_with(path: &str, line: Option<&str>) -> String {
    let line = line.map(|l| format!("{l}\n")).unwrap_or_default();
    if path.starts_with("instances.NAME.rate_limit.") {
        let table = if line.is_empty() {
            String::new()
        } else {
            format!("rate_limit = {{ {} }}\n", line.trim_end())
        };
        return minimal().replace("[instances.prod]\n", &format!("[instances.prod]\n{table}"));
    }
    if path.starts_with("instances.NAME.") {
        return minimal().replace("[instances.prod]\n", &format!("[instances.prod]\n{line}"));
    }
    if path.starts_with("clients.NAME.") {
        return minimal().replace(
            "[clients.prod-main]\n",
            &format!("[clients.prod-main]\n{line}"),
        );
    }
    if path.starts_with("routes[].") {
        // `minimal()` ends with its route.
        return minimal() + &line;
    }
    if path.starts_with("scope_rules[].") {
        return minimal() + SCOPE_RULE + &line;
    }
    if path.starts_with("integrations[].") {
        return minimal() + "[[integrations]]\nname = \"erp\"\nroutes = [\"/prod\"]\nallow_ips = [\"10.0.0.0/8\"]\n" + &line;
    }
    if path.starts_with("state.") {
        // A `[state]` table must name its store.
        return minimal() + "[state]\nmemory = true\n" + &line;
    }
    let (section, _) = path.split_once('.').expect("section.key");
    format!("{}[{section}]\n{line}", minimal())
}

fn field(path: &str) -> &str {
    path.rsplit('.').next().expect("a key path has a field")
}

#[test]
fn paths_are_unique() {
    let mut seen = BTreeSet::new();
    for k in KEYS {
        assert!(seen.insert(k.path), "{} is listed twice", k.path);
        assert_eq!(key(k.path), Some(k));
    }
    assert_eq!(key("server.lisen"), None);
}

#[test]
fn shown_defaults_parse_to_the_constants() {
    for (path, shown, value) in value_entries() {
        assert_eq!(
            parse_shown(shown, &value),
            Some(value),
            "{path}: {shown:?} does not read back as the constant"
        );
    }
}

/// Writing a default out must change nothing: the validator uses the same constant, reads
/// the shown text as it, and accepts the key.
#[test]
fn writing_a_default_out_changes_nothing() {
    for (path, shown, value) in value_entries() {
        let line = format!("{} = {}", field(path), toml_value(shown, &value));
        let written = file_with(path, Some(&line));
        let left_out = file_with(path, None);
        let written = parse(&written).unwrap_or_else(|e| panic!("{path}: {line}: {e}"));
        let left_out = parse(&left_out).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            format!("{written:?}"),
            format!("{left_out:?}"),
            "{path}: `{line}` is not what leaving it out gives"
        );
    }
}

/// The tables the parser accepts keys in, each with a file that puts an unknown key `zzz`
/// into it: serde's error then lists every key the table accepts.
fn tables() -> Vec<(&'static str, String)> {
    let zzz = Some("zzz = 1");
    vec![
        ("server", file_with("server.x", zzz)),
        ("server.tls", minimal() + "[server]\ntls = { zzz = 1 }\n"),
        ("admin", file_with("admin.x", zzz)),
        ("upstream", file_with("upstream.x", zzz)),
        ("instances.NAME", file_with("instances.NAME.x", zzz)),
        (
            "instances.NAME.rate_limit",
            file_with("instances.NAME.rate_limit.x", zzz),
        ),
        ("clients.NAME", file_with("clients.NAME.x", zzz)),
        ("routes[]", file_with("routes[].x", zzz)),
        ("integrations[]", minimal() + "[[integrations]]\nzzz = 1\n"),
        ("scope_rules[]", file_with("scope_rules[].x", zzz)),
        ("log", file_with("log.x", zzz)),
        ("migration", file_with("migration.x", zzz)),
        ("state", file_with("state.x", zzz)),
    ]
}

/// Every key the parser accepts has an entry (so a row in the docs), and every entry is a key
/// the parser accepts.
#[test]
fn the_table_lists_exactly_the_accepted_keys() {
    let mut accepted = BTreeSet::new();
    for (table, text) in tables() {
        let message = error(&text);
        let expected = message
            .split_once("expected ")
            .and_then(|(_, rest)| rest.split(';').next())
            .unwrap_or_else(|| panic!("{table}: no list of expected keys in {message:?}"));
        for name in expected.split('`').skip(1).step_by(2) {
            accepted.insert(format!("{table}.{name}"));
        }
    }
    // `tls` and `rate_limit` are tables: their fields are the keys.
    for parent in ["server.tls", "instances.NAME.rate_limit"] {
        assert!(accepted.remove(parent), "{parent} is not accepted");
    }
    let listed: BTreeSet<String> = KEYS
        .iter()
        .filter(|k| k.when_absent != Absent::Table)
        .map(|k| k.path.to_owned())
        .collect();
    let unlisted: Vec<&String> = accepted.difference(&listed).collect();
    let unknown: Vec<&String> = listed.difference(&accepted).collect();
    assert!(
        unlisted.is_empty() && unknown.is_empty(),
        "accepted but not in KEYS: {unlisted:?}; in KEYS but not accepted: {unknown:?}"
    );
}

#[test]
fn derived_defaults_name_real_keys() {
    for k in KEYS {
        let Absent::Derived(formula) = k.when_absent else {
            continue;
        };
        if formula.starts_with('{') {
            assert_eq!(formula, format!("{{url}}{TOKEN_PATH}"), "{}", k.path);
        } else {
            assert!(key(formula).is_some(), "{}: no key {formula}", k.path);
        }
    }
}

#[test]
fn tables_have_fields_and_fields_have_values() {
    for k in KEYS.iter().filter(|k| k.when_absent == Absent::Table) {
        let prefix = format!("{}.", k.path);
        let fields: Vec<&Key> = KEYS
            .iter()
            .filter(|f| f.path.starts_with(&prefix))
            .collect();
        assert!(!fields.is_empty(), "{} has no fields", k.path);
        for f in fields {
            // The docs show one inline table: every field needs a value to show.
            assert!(
                matches!(f.when_absent, Absent::Value { .. }),
                "{}: a field of an inline-table default needs a value",
                f.path
            );
        }
    }
}
