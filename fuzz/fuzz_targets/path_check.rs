//! `path::check` against the policy restated independently: a path is refused exactly when
//! it does not start with `/`, holds a raw `\` or NUL, or has a segment with a malformed
//! escape, or one that decodes to `.`, `..`, or to something holding `/`, `\` or NUL.

#![no_main]

use coupa_gateway::proxy::path;
use libfuzzer_sys::fuzz_target;

/// Strict percent-decoding: `None` on a `%` not followed by two hex digits.
fn decode(raw: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            out.push(hex(*raw.get(i + 1)?)? << 4 | hex(*raw.get(i + 2)?)?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

fn is_dot_segment(seg: &[u8]) -> bool {
    seg == b"." || seg == b".."
}

fn policy_rejects(path: &str) -> bool {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') || raw.contains(&b'\\') || raw.contains(&0) {
        return true;
    }
    raw.split(|&b| b == b'/').any(|seg| match decode(seg) {
        None => true,
        Some(d) => is_dot_segment(&d) || d.iter().any(|b| matches!(b, b'/' | b'\\' | 0)),
    })
}

fuzz_target!(|data: &[u8]| {
    // Lossy, so that every input is a path: hyper hands the check a `&str`.
    let p = String::from_utf8_lossy(data);
    let verdict = path::check(&p);
    assert_eq!(
        verdict.is_some(),
        policy_rejects(&p),
        "path {p:?}: {verdict:?}"
    );
    if verdict.is_none() {
        // What Coupa sees after decoding has no segment that could climb out of a route.
        let decoded = decode(p.as_bytes()).expect("accepted paths decode");
        assert!(!decoded.split(|&b| b == b'/').any(is_dot_segment), "{p:?}");
    }
});
