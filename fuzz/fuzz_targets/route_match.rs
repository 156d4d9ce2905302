//! The route table against a brute-force model: the match is the longest configured prefix
//! that ends on a segment boundary of the path, whatever order the routes were listed in.

#![no_main]

use arbitrary::Arbitrary;
use coupa_gateway::runtime::route_table::RouteTable;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    prefixes: Vec<String>,
    path: String,
}

fn table(prefixes: &[String]) -> RouteTable<String> {
    RouteTable::new(prefixes.iter().map(|p| (p.clone(), p.clone())))
}

fuzz_target!(|input: Input| {
    // `RouteTable::new` expects what config validation guarantees: `/`-led, unique, no
    // trailing `/` except the root. Other prefixes would be misuse, not a bug.
    let mut prefixes: Vec<String> = Vec::new();
    for p in input.prefixes {
        let valid = p.starts_with('/') && (p == "/" || !p.ends_with('/'));
        if valid && !prefixes.contains(&p) {
            prefixes.push(p);
        }
    }
    let path = input.path.as_str();
    let on_boundary = |p: &str| {
        p == "/"
            || path
                .strip_prefix(p)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    };
    let expected = prefixes
        .iter()
        .filter(|p| on_boundary(p))
        .max_by_key(|p| p.len());

    let t = table(&prefixes);
    let found = t.find(path);
    assert_eq!(found.as_ref().map(|m| m.route), expected, "path {path:?}");
    if let Some(m) = &found {
        if m.route == "/" {
            assert_eq!(m.rest, path);
        } else {
            let after = &path[m.route.len()..];
            assert_eq!(m.rest, if after.is_empty() { "/" } else { after });
        }
        // The proxy only routes paths that passed `path::check`, which start with `/`.
        if path.starts_with('/') {
            assert!(m.rest.starts_with('/'), "rest {:?}", m.rest);
        }
    }

    let reversed: Vec<String> = prefixes.iter().rev().cloned().collect();
    let again = table(&reversed);
    assert_eq!(
        again.find(path).map(|m| (m.route.clone(), m.rest)),
        found.map(|m| (m.route.clone(), m.rest)),
        "insertion order changed the result for {path:?}"
    );
});
