//! `path::check`'s policy restated independently of `src/proxy/path.rs`: a path is refused
//! exactly when it does not start with `/`, holds a raw `\` or NUL, or has a segment with a
//! malformed escape, or one that decodes to `.`, `..`, or to something holding `/`, `\` or
//! NUL. Included by `tests/properties.rs` and the fuzz target `path_check`.

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Strict percent-decoding: `None` on a `%` not followed by two hex digits.
pub fn decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hi = hex(*raw.get(i + 1)?)?;
            let lo = hex(*raw.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

pub fn is_dot_segment(seg: &[u8]) -> bool {
    seg == b"." || seg == b".."
}

/// The policy, restated: what `path::check` must refuse.
pub fn policy_rejects(path: &str) -> bool {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') || raw.contains(&b'\\') || raw.contains(&0) {
        return true;
    }
    raw.split(|&b| b == b'/').any(|seg| match decode(seg) {
        None => true,
        Some(d) => is_dot_segment(&d) || d.iter().any(|b| matches!(b, b'/' | b'\\' | 0)),
    })
}
