//! Request-path safety checks, done before routing on the raw (still percent-encoded) path.
//!
//! Coupa (Rails behind a load balancer) and any intermediate may decode or normalise what the
//! gateway forwards verbatim, so anything that could climb out of a route prefix or be read
//! differently by two parsers is refused: dot segments, also percent-encoded (`%2e`), encoded
//! slashes and backslashes (`%2F`, `%5C`), raw backslashes and NUL, encoded CR/LF (header
//! injection if anything downstream decodes into a header or log line). The query is not checked:
//! Coupa queries legitimately carry JSON and brackets, and they cannot change the route.

/// Returns why `path` is unsafe, or `None` when it may be forwarded.
#[allow(
    clippy::manual_pattern_char_comparison,
    reason = "PERF: a closure pattern walks the bytes; a char pattern starts a memchr search per segment"
)]
pub fn check(path: &str) -> Option<&'static str> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Some("the path must start with /");
    }
    if bytes.iter().any(|&b| b == b'\\' || b == 0) {
        return Some("backslashes and NUL are not allowed in the path");
    }
    // PERF: byte and closure patterns, not `split('/')`/`contains('%')`: a char pattern
    // starts a memchr search per call, which costs more than walking a short segment.
    for segment in path.split(|c| c == '/') {
        if !segment.bytes().any(|b| b == b'%') {
            if segment == "." || segment == ".." {
                return Some("dot segments (. and ..) are not allowed in the path");
            }
            continue;
        }
        let mut dots_only = true;
        let mut len = 0;
        let seg = segment.as_bytes();
        let mut i = 0;
        while i < seg.len() {
            let decoded = if seg[i] == b'%' {
                let Some(byte) = seg.get(i + 1..i + 3).and_then(hex_byte) else {
                    return Some("malformed percent-encoding in the path");
                };
                i += 3;
                byte
            } else {
                i += 1;
                seg[i - 1]
            };
            match decoded {
                b'/' | b'\\' => {
                    return Some(
                        "encoded slashes and backslashes (%2F, %5C) are not allowed in the path",
                    )
                }
                0 => return Some("encoded NUL (%00) is not allowed in the path"),
                b'\r' | b'\n' => {
                    return Some("encoded CR or LF (%0D, %0A) is not allowed in the path")
                }
                b'.' => {}
                _ => dots_only = false,
            }
            len += 1;
        }
        if dots_only && (len == 1 || len == 2) {
            return Some(
                "dot segments (. and ..) are not allowed in the path, also when percent-encoded",
            );
        }
    }
    None
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let hi = (pair[0] as char).to_digit(16)?;
    let lo = (pair[1] as char).to_digit(16)?;
    Some((hi * 16 + lo) as u8)
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn ordinary_coupa_paths_pass() {
        for p in [
            "/prod/api/invoices",
            "/prod/api/invoices/12/attachments",
            "/prod/api/suppliers/",
            "/prod/api/look%20ups",
            "/prod/api/a.b/c..d/...",
            "/prod/api/%2e%2e%2e",
            "/",
        ] {
            assert_eq!(check(p), None, "{p}");
        }
    }

    #[test]
    fn traversal_and_ambiguous_encodings_are_rejected() {
        for p in [
            "/prod/../test/api/invoices",
            "/prod/./api",
            "/prod/api/..",
            "/prod/%2e%2e/test",
            "/prod/%2E./test",
            "/prod/.%2e/test",
            "/prod/%2e/api",
            "/prod%2f..%2ftest",
            "/prod/api%2Finvoices",
            "/prod/api%5cinvoices",
            "/prod/api\\invoices",
            "/prod/api/%00",
            "/prod/api/x%0d%0aHost:evil",
            "/prod/api/%0A",
            "/prod/api/%zz",
            "/prod/api/%2",
            "prod/api",
        ] {
            assert!(check(p).is_some(), "{p} should be rejected");
        }
    }
}
