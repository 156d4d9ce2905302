//! The docs' configuration reference and the example `proxy.toml` against the code's defaults
//! (`src/config/defaults.rs`): a default changed on one side only fails here, naming the key,
//! the file and what each side says.

use std::collections::BTreeMap;
use std::path::Path;

use coupa_gateway::config::defaults::{self, Absent, Key, KEYS};

const DOCS: &str = "docs/configuration.md";
const EXAMPLE: &str = "proxy.toml";

fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A row of the reference table: the keys it documents and its "default" cell.
struct Row {
    line: usize,
    keys: Vec<String>,
    default: String,
}

/// The table under `## Configuration reference`: rows `| key | default | meaning |`.
fn reference_rows(markdown: &str) -> Vec<Row> {
    let mut lines = markdown.lines().enumerate();
    lines
        .by_ref()
        .find(|(_, l)| l.starts_with("## Configuration reference"))
        .unwrap_or_else(|| panic!("{DOCS}: no \"## Configuration reference\" heading"));
    let table: Vec<(usize, &str)> = lines
        .skip_while(|(_, l)| !l.starts_with('|'))
        .take_while(|(_, l)| l.starts_with('|'))
        .collect();
    let cells = |row: &str| -> Vec<String> {
        row.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let (_, header) = table
        .first()
        .unwrap_or_else(|| panic!("{DOCS}: no table under the reference heading"));
    assert_eq!(
        cells(header)[..3],
        ["key", "default", "meaning"],
        "{DOCS}: the reference table's columns"
    );
    table[2..]
        .iter()
        .map(|&(i, row)| {
            let cells = cells(row);
            Row {
                line: i + 1,
                keys: row_keys(&cells[0]),
                default: cells[1].clone(),
            }
        })
        .collect()
}

/// `` `server.tls.cert` / `server.tls.key` `` names two keys; so does
/// `` `clients.NAME.client_secret` / `client_secret_file` ``, the second beside the first.
fn row_keys(cell: &str) -> Vec<String> {
    let named: Vec<&str> = cell.split('`').skip(1).step_by(2).collect();
    let Some(first) = named.first() else {
        return Vec::new();
    };
    let parent = first.rsplit_once('.').map_or("", |(p, _)| p);
    named
        .iter()
        .map(|k| {
            if k.contains('.') {
                (*k).to_owned()
            } else {
                format!("{parent}.{k}")
            }
        })
        .collect()
}

/// The text inside a cell that is exactly one code span, e.g. `` `120s` ``.
fn code(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?
        .strip_suffix('`')
        .filter(|inner| !inner.contains('`'))
}

/// How the docs say "no default".
fn says_none(cell: &str) -> bool {
    cell.starts_with('—') || cell == "none" || cell == "all"
}

/// A scalar as the table's `shown` writes it: strings without quotes.
fn plain(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Keys documented by their parent's inline-table default rather than by a row.
fn in_a_table(key: &Key) -> bool {
    KEYS.iter().any(|parent| {
        parent.when_absent == Absent::Table && key.path.starts_with(&format!("{}.", parent.path))
    })
}

fn describe(absent: &Absent) -> String {
    match absent {
        Absent::Value { shown, .. } | Absent::Derived(shown) => format!("`{shown}`"),
        Absent::Described => "described in words".to_owned(),
        Absent::Nothing => "none".to_owned(),
        Absent::Table => "an inline table".to_owned(),
    }
}

fn check_row(row: &Row, path: &str, problems: &mut Vec<String>) {
    let at = format!("{DOCS}:{} `{path}`", row.line);
    let cell = row.default.as_str();
    let Some(key) = defaults::key(path) else {
        problems.push(format!(
            "{at}: no such key in src/config/defaults.rs (a key the code lacks, or a typo)"
        ));
        return;
    };
    match key.when_absent {
        Absent::Value { shown, .. } | Absent::Derived(shown) => {
            if code(cell) != Some(shown) {
                problems.push(format!("{at}: the docs say {cell}, the code `{shown}`"));
            }
        }
        Absent::Table => check_inline_table(&at, key, cell, problems),
        Absent::Described => {
            if cell.is_empty() || says_none(cell) {
                problems.push(format!(
                    "{at}: the docs say {cell:?}, but the code has a default (described in words)"
                ));
            }
        }
        Absent::Nothing => {
            if !says_none(cell) {
                problems.push(format!(
                    "{at}: the docs say {cell}, but the code has no default (write —, none or all)"
                ));
            }
        }
    }
}

/// `` `{ per_second = 25, burst = 20 }` ``: one field per defaulted key below `key`.
fn check_inline_table(at: &str, key: &Key, cell: &str, problems: &mut Vec<String>) {
    let parsed = code(cell).and_then(|t| toml::from_str::<toml::Table>(&format!("t = {t}")).ok());
    let Some(toml::Value::Table(shown)) = parsed.and_then(|mut t| t.remove("t")) else {
        problems.push(format!(
            "{at}: the docs say {cell}, not an inline TOML table"
        ));
        return;
    };
    let prefix = format!("{}.", key.path);
    for field in KEYS.iter().filter(|f| f.path.starts_with(&prefix)) {
        let name = &field.path[prefix.len()..];
        let Absent::Value {
            shown: code_says, ..
        } = field.when_absent
        else {
            continue;
        };
        match shown.get(name) {
            None => problems.push(format!(
                "{at}: the inline table lacks {name} (the code's default: {code_says})"
            )),
            Some(v) if plain(v) != code_says => problems.push(format!(
                "{at}: the docs say {name} = {v}, the code {code_says}"
            )),
            Some(_) => {}
        }
    }
    for name in shown.keys() {
        if defaults::key(&format!("{prefix}{name}")).is_none() {
            problems.push(format!("{at}: {name} is not a key of the table"));
        }
    }
}

#[test]
fn the_configuration_reference_shows_the_code_defaults() {
    let rows = reference_rows(&read(DOCS));
    assert!(rows.len() > 20, "{DOCS}: only {} rows found", rows.len());
    let mut problems = Vec::new();
    let mut documented: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        if row.keys.is_empty() {
            problems.push(format!("{DOCS}:{}: a row without a `key`", row.line));
        }
        for path in &row.keys {
            if let Some(first) = documented.insert(path.clone(), row.line) {
                problems.push(format!(
                    "{DOCS}:{} `{path}`: already documented at line {first}",
                    row.line
                ));
            }
            check_row(row, path, &mut problems);
        }
    }
    for key in KEYS.iter().filter(|k| !in_a_table(k)) {
        if !documented.contains_key(key.path) {
            problems.push(format!(
                "{DOCS}: no row for `{}` (the code's default: {})",
                key.path,
                describe(&key.when_absent)
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// `[server]` → `server`, `[instances.prod]` → `instances.NAME`, `[[routes]]` → `routes[]`;
/// also when commented out (`# [upstream]`).
fn section(line: &str) -> Option<String> {
    let line = line.trim_start_matches('#').trim();
    if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
        return Some(format!("{name}[]"));
    }
    let name = line.strip_prefix('[')?.strip_suffix(']')?;
    Some(match name.split_once('.') {
        Some((table @ ("instances" | "clients"), _)) => format!("{table}.NAME"),
        _ => name.to_owned(),
    })
}

/// `# key = value  # comment` → (`key`, value). Prose comments do not start with `word =`.
fn commented_setting(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let (key, value) = rest.split_once('=')?;
    let key = key.trim_end();
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    bare.then_some((key, value.trim()))
}

/// Inline tables become one key per field (`tls = { cert = … }` → `tls.cert`).
fn leaves(path: String, value: toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                leaves(format!("{path}.{k}"), v, out);
            }
        }
        v => out.push((path, v)),
    }
}

#[test]
fn the_example_file_shows_the_code_defaults() {
    let text = read(EXAMPLE);
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let at = format!("{EXAMPLE}:{}", i + 1);
        if let Some(s) = section(line) {
            current = Some(s);
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, commented_setting(line)) else {
            continue;
        };
        let value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").expect("parsed v"),
            Err(e) => {
                problems.push(format!("{at}: `{key} = {value}` is not TOML: {e}"));
                continue;
            }
        };
        let mut settings = Vec::new();
        leaves(format!("{section}.{key}"), value, &mut settings);
        for (path, value) in settings {
            match defaults::key(&path).map(|k| k.when_absent) {
                None => problems.push(format!("{at}: `{path}` is not a configuration key")),
                Some(Absent::Value { shown, .. }) => {
                    checked += 1;
                    if plain(&value) != shown {
                        problems.push(format!(
                            "{at}: `{path}` is shown as {value}, the code's default is {shown:?}"
                        ));
                    }
                }
                // An example value, not a default.
                Some(_) => {}
            }
        }
    }
    assert!(
        checked > 5,
        "{EXAMPLE}: only {checked} commented defaults found"
    );
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}
