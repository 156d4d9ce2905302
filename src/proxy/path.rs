//! Request-path safety checks, done before routing on the raw (still percent-encoded) path.
//!
//! Coupa (Rails behind a load balancer) and any intermediate may decode or normalise what the
//! gateway forwards verbatim, so anything that could climb out of a route prefix or be read
//! differently by two parsers is refused: dot segments, also percent-encoded (`%2e`), encoded
//! slashes and backslashes (`%2F`, `%5C`), raw backslashes, NUL, CR and LF, encoded CR/LF
//! (header injection if anything downstream decodes into a header or log line).
//!
//! Three more are refused because Coupa gives them no meaning while other parsers on the way
//! give them one (the `..;/` and double-decoding bypasses of Java-stack proxies and WAFs):
//! a raw `;` (Tomcat and Jetty strip `;params` from each segment, so `..;` is `..` to them;
//! Rails keeps `;` as data), an escape that is still an escape after one decode (`%252e`:
//! `%2e` to Rails, `.` to a proxy that decodes twice), and escapes that do not decode to
//! well-formed UTF-8 (the overlong `%c0%ae` is `.` to lenient decoders; Rails refuses
//! non-UTF-8 path parameters with a 400 anyway). The query is not checked: Coupa queries
//! legitimately carry JSON and brackets, and they cannot change the route.

/// Raw bytes refused anywhere in the path; `;` has its own message.
static REFUSED_RAW: [bool; 256] = {
    let mut table = [false; 256];
    table[b'\\' as usize] = true;
    table[0] = true;
    table[b'\r' as usize] = true;
    table[b'\n' as usize] = true;
    table[b';' as usize] = true;
    table
};

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
    // PERF: one table lookup per byte, however many bytes are refused.
    if let Some(&b) = bytes.iter().find(|&&b| REFUSED_RAW[usize::from(b)]) {
        return Some(if b == b';' {
            "semicolons (path parameters) are not allowed in the path"
        } else {
            "backslashes, NUL, CR and LF are not allowed in the path"
        });
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
        let mut utf8 = Utf8::default();
        // How much of a `%XX` the decoded bytes end with (3: the segment is double-encoded).
        let mut escape = 0u8;
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
            escape = match decoded {
                b'%' => 1,
                d if escape > 0 && d.is_ascii_hexdigit() => escape + 1,
                _ => 0,
            };
            if escape == 3 {
                return Some(
                    "double percent-encoding (%25 followed by two hex digits) is not allowed in the path",
                );
            }
            if !utf8.push(decoded) {
                return Some(NOT_UTF8);
            }
            len += 1;
        }
        if !utf8.is_complete() {
            return Some(NOT_UTF8);
        }
        if dots_only && (len == 1 || len == 2) {
            return Some(
                "dot segments (. and ..) are not allowed in the path, also when percent-encoded",
            );
        }
    }
    None
}

const NOT_UTF8: &str =
    "percent-encoded bytes in the path must decode to UTF-8 (overlong forms such as %C0%AE are not)";

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let hi = (pair[0] as char).to_digit(16)?;
    let lo = (pair[1] as char).to_digit(16)?;
    Some((hi * 16 + lo) as u8)
}

/// Incremental UTF-8 validation of a decoded segment, byte by byte and without a buffer:
/// the well-formed sequences of Unicode's Table 3-7, so overlong forms (`C0 AE` for `.`),
/// surrogates, code points past U+10FFFF and stray or missing continuation bytes are refused.
#[derive(Default)]
struct Utf8 {
    /// Continuation bytes still expected.
    need: u8,
    /// The range the next continuation byte must be in (narrower than `80..=BF` only right
    /// after `E0`, `ED`, `F0` and `F4`).
    lo: u8,
    hi: u8,
}

impl Utf8 {
    fn push(&mut self, b: u8) -> bool {
        if self.need > 0 {
            if !(self.lo..=self.hi).contains(&b) {
                return false;
            }
            self.need -= 1;
            (self.lo, self.hi) = (0x80, 0xbf);
            return true;
        }
        (self.need, self.lo, self.hi) = match b {
            0x00..=0x7f => return true,
            0xc2..=0xdf => (1, 0x80, 0xbf),
            0xe0 => (2, 0xa0, 0xbf),
            0xe1..=0xec | 0xee..=0xef => (2, 0x80, 0xbf),
            0xed => (2, 0x80, 0x9f),
            0xf0 => (3, 0x90, 0xbf),
            0xf1..=0xf3 => (3, 0x80, 0xbf),
            0xf4 => (3, 0x80, 0x8f),
            _ => return false,
        };
        true
    }

    fn is_complete(&self) -> bool {
        self.need == 0
    }
}

#[cfg(test)]
mod tests {
    use super::{check, Utf8};

    #[test]
    fn utf8_validation_agrees_with_std() {
        // Every 1- and 2-byte sequence, and 3- and 4-byte ones over the bytes where the
        // well-formedness table changes.
        let edges = [
            0x00, 0x2e, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xae, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf,
            0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff,
        ];
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for a in 0..=255u8 {
            cases.push(vec![a]);
            for b in 0..=255u8 {
                cases.push(vec![a, b]);
            }
        }
        for &a in &edges {
            for &b in &edges {
                for &c in &edges {
                    cases.push(vec![a, b, c]);
                    for &d in &edges {
                        cases.push(vec![a, b, c, d]);
                    }
                }
            }
        }
        for bytes in cases {
            let mut v = Utf8::default();
            let ours = bytes.iter().all(|&b| v.push(b)) && v.is_complete();
            assert_eq!(ours, std::str::from_utf8(&bytes).is_ok(), "{bytes:02x?}");
        }
    }

    #[test]
    fn ordinary_coupa_paths_pass() {
        for p in [
            "/prod/api/invoices",
            "/prod/api/invoices/12/attachments",
            "/prod/api/suppliers/",
            "/prod/api/look%20ups",
            "/prod/api/a.b/c..d/...",
            "/prod/api/%2e%2e%2e",
            "/prod/api/100%25",
            "/prod/api/%25zz",
            "/prod/api/caf%C3%A9",
            "/prod/api/caf\u{e9}",
            "/prod/api/%E2%80%A8",
            "/prod/api/%F0%9F%93%84",
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
            // `;` starts path parameters on Java servers (Tomcat, Jetty): `..;` is `..`.
            "/prod/..;/test/api/invoices",
            "/prod/%2e%2e;/test",
            "/prod/api/invoices;jsessionid=x",
            "/prod/api/x\r",
            // Double encoding: a second decode turns these into `..` or `/`.
            "/prod/%252e%252e/test",
            "/prod/api%252Finvoices",
            "/prod/api/%25%32%65",
            "/prod/api/%%2541",
            // Not UTF-8 once decoded: overlong `.` and `/`, lone continuation or lead bytes,
            // surrogates, past U+10FFFF.
            "/prod/%c0%ae%c0%ae/test",
            "/prod/api%c0%af",
            "/prod/api/%ae",
            "/prod/api/%c3",
            "/prod/api/%c3x",
            "/prod/api/%ed%a0%80",
            "/prod/api/%f4%90%80%80",
            "/prod/api/%e0%80%ae",
            "/prod/api/%f0%80%80%ae",
            "/prod/api/%ff",
        ] {
            assert!(check(p).is_some(), "{p} should be rejected");
        }
    }
}
