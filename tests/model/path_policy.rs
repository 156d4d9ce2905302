//! `path::check`'s policy restated independently of `src/proxy/path.rs`: a path is refused
//! exactly when it does not start with `/`, holds a raw `\`, NUL, CR, LF or `;`, or has a
//! segment with a malformed escape, or one that decodes to `.`, `..`, to something holding
//! `/`, `\`, NUL, CR or LF, to bytes that are not UTF-8, or to text that still holds an escape
//! (`%` and two hex digits: double encoding). Included by `tests/properties.rs` and the fuzz
//! target `path_check`.

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

/// Would a second decode change `decoded`? True when it holds `%` and two hex digits.
pub fn holds_escape(decoded: &[u8]) -> bool {
    decoded
        .windows(3)
        .any(|w| w[0] == b'%' && hex(w[1]).is_some() && hex(w[2]).is_some())
}

/// The policy, restated: what `path::check` must refuse.
pub fn policy_rejects(path: &str) -> bool {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/')
        || raw
            .iter()
            .any(|b| matches!(b, b'\\' | 0 | b'\r' | b'\n' | b';'))
    {
        return true;
    }
    raw.split(|&b| b == b'/').any(|seg| match decode(seg) {
        None => true,
        Some(d) => {
            is_dot_segment(&d)
                || d.iter()
                    .any(|b| matches!(b, b'/' | b'\\' | 0 | b'\r' | b'\n'))
                || std::str::from_utf8(&d).is_err()
                || holds_escape(&d)
        }
    })
}
