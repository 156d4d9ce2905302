//! `path::check` against the policy restated independently in `tests/model/path_policy.rs`
//! (no leading `/`; a raw `\`, NUL, CR, LF or `;`; a malformed escape; a segment decoding to
//! `.`, `..`, to something holding `/`, `\`, NUL, CR or LF, to bytes that are not UTF-8, or
//! to text still holding an escape).

#![no_main]

use coupa_gateway::proxy::path;
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/path_policy.rs"]
mod path_policy;
use path_policy::{decode, holds_escape, is_dot_segment, policy_rejects};

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
        // Coupa decodes once, to UTF-8; a second decode would change nothing.
        assert!(std::str::from_utf8(&decoded).is_ok(), "{p:?}");
        assert!(!holds_escape(&decoded), "{p:?}");
    }
});
