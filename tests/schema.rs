//! `coupa-gateway schema`: the JSON Schema of `proxy.toml` that editors read through the
//! shipped file's `#:schema` line. It is derived from the parser's own types; these tests keep
//! the checked-in copy current and hold it to the configuration reference. (`.ci/check-deploy`
//! validates the shipped config files against it with a full JSON Schema validator.)

mod common;

use std::path::Path;

use common::*;
use coupa_gateway::config::defaults::{Absent, KEYS};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn checked_in() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("proxy.schema.json")).unwrap()
}

#[test]
fn the_checked_in_schema_is_the_commands_output() {
    assert!(
        checked_in() == coupa_gateway::config::json_schema(),
        "proxy.schema.json is stale: run `cargo run -- schema > proxy.schema.json`"
    );
    let proxy_toml = std::fs::read_to_string(Path::new(ROOT).join("proxy.toml")).unwrap();
    assert_eq!(
        proxy_toml.lines().next(),
        Some("#:schema ./proxy.schema.json"),
        "editors find the schema through the first line"
    );
}

#[tokio::test]
async fn the_command_prints_it() {
    let (code, out, err) = run(bin().arg("schema")).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, checked_in());
}

/// The schema of the value at `path` (`server.listen`, `instances.NAME.url`,
/// `routes[].mode`), following `$ref`s; `None` when the schema does not allow the key.
fn at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let resolve = |mut node: &'a Value| -> &'a Value {
        while let Some(r) = node["$ref"].as_str() {
            let name = r.strip_prefix("#/$defs/").unwrap();
            node = &root["$defs"][name];
        }
        // `Option<T>` and untagged enums: the object-typed alternative, if any.
        node["anyOf"]
            .as_array()
            .and_then(|alts| alts.iter().find(|a| a.get("$ref").is_some()))
            .map_or(node, |a| {
                let name = a["$ref"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("#/$defs/")
                    .unwrap();
                &root["$defs"][name]
            })
    };
    let mut node = resolve(root);
    for segment in path.split('.') {
        let (name, array) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        node = if name == "NAME" {
            resolve(&node["additionalProperties"])
        } else {
            resolve(node["properties"].get(name)?)
        };
        if array {
            node = resolve(&node["items"]);
        }
    }
    Some(node)
}

#[test]
fn every_documented_key_is_in_the_schema_and_nothing_else() {
    let schema: Value = serde_json::from_str(&checked_in()).unwrap();
    for key in KEYS {
        assert!(
            at(&schema, key.path).is_some(),
            "{} is not in the schema",
            key.path
        );
        if key.when_absent != Absent::Table {
            // Keys holding a value, not a table of their own, are closed to typos above them.
            let parent = key.path.rsplit_once('.').map_or("", |(p, _)| p);
            if !parent.is_empty() {
                let table = at(&schema, parent).unwrap();
                assert_eq!(
                    table["additionalProperties"],
                    Value::Bool(false),
                    "{parent} accepts unknown keys"
                );
            }
        }
    }
    assert!(at(&schema, "server.listn").is_none());
    assert!(at(&schema, "instances.NAME.rate_limit.burst").is_some());
}
