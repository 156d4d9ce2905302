//! Small hand-written codecs the mock needs: percent-decoding, form/query pairs, base64 for HTTP
//! Basic, hex, timestamps and a generic JSON → Coupa-style XML serializer.
//!
//! Written by hand because the mock must stay dependency-light and each is a few dozen lines.
//! The decoders are lenient (never panic, never reject): the mock must not fail on the messy
//! query strings real Coupa clients send (docs/coupa-api.md §11).

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Decodes `%XX` escapes, and `+` as a space when `plus_as_space` (the
/// `application/x-www-form-urlencoded` rule). A `%` not followed by two hex digits is kept
/// literally rather than rejected; invalid UTF-8 becomes U+FFFD.
pub(super) fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // `get` handles a `%` at the very end: it stays literal.
                match (hex_val(bytes.get(i + 1)), hex_val(bytes.get(i + 2))) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: Option<&u8>) -> Option<u8> {
    match b? {
        b @ b'0'..=b'9' => Some(b - b'0'),
        b @ b'a'..=b'f' => Some(b - b'a' + 10),
        b @ b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `a=1&b=2` into decoded pairs (form rules: `+` is a space). Empty segments are skipped
/// and a segment without `=` yields an empty value, so nothing a client sends makes this fail.
pub(super) fn parse_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| {
            let (k, v) = seg.split_once('=').unwrap_or((seg, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Decodes standard base64 (RFC 4648 §4) with optional padding, as used by HTTP Basic
/// (RFC 7617). Returns `None` on any character outside the alphabet.
pub(super) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            // Truncation intended: take the next complete byte off the top of the accumulator.
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Encodes bytes as standard padded base64; only the tests need it (to build Basic headers),
/// but keeping it next to the decoder keeps the pair honest.
#[cfg(test)]
pub(super) fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Lowercase hex of a digest.
pub(super) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Formats Unix seconds as Coupa does in JSON and XML: ISO 8601 with an explicit offset
/// (`2024-01-01T00:00:00+00:00`). Uses Howard Hinnant's days-to-civil algorithm so the mock
/// needs no date crate.
pub(super) fn format_timestamp(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// Renders a list the way Coupa does: `<invoice-headers type="array"><invoice-header>…`.
pub(super) fn xml_list(plural: &str, singular: &str, rows: &[Value]) -> String {
    let mut out = String::from(XML_DECL);
    let _ = write!(out, "<{plural} type=\"array\">");
    for row in rows {
        write_element(&mut out, singular, row);
    }
    let _ = writeln!(out, "</{plural}>");
    out
}

/// Renders one record under its singular element name.
pub(super) fn xml_one(singular: &str, row: &Value) -> String {
    let mut out = String::from(XML_DECL);
    write_element(&mut out, singular, row);
    out.push('\n');
    out
}

/// Coupa's XML error shape (docs/coupa-api.md §1): `<errors><error>msg</error></errors>`.
pub(super) fn xml_errors(message: &str) -> String {
    format!(
        "{XML_DECL}<errors><error>{}</error></errors>\n",
        xml_escape(message)
    )
}

/// Writes one element with Rails-style type attributes (`type="integer"`, `nil="true"`, …),
/// which is what Coupa's XML looks like. Keys ending in `-at` are timestamps, as in Coupa.
fn write_element(out: &mut String, key: &str, value: &Value) {
    let name = xml_name(key);
    match value {
        Value::Null => {
            let _ = write!(out, "<{name} nil=\"true\"/>");
        }
        Value::Bool(b) => {
            let _ = write!(out, "<{name} type=\"boolean\">{b}</{name}>");
        }
        Value::Number(n) => {
            let ty = if n.is_f64() { "decimal" } else { "integer" };
            let _ = write!(out, "<{name} type=\"{ty}\">{n}</{name}>");
        }
        Value::String(s) => {
            let attr = if key.ends_with("-at") {
                " type=\"dateTime\""
            } else {
                ""
            };
            let _ = write!(out, "<{name}{attr}>{}</{name}>", xml_escape(s));
        }
        Value::Array(items) => {
            let _ = write!(out, "<{name} type=\"array\">");
            let item_name = singular_of(&name);
            for item in items {
                write_element(out, &item_name, item);
            }
            let _ = write!(out, "</{name}>");
        }
        Value::Object(map) => {
            let _ = write!(out, "<{name}>");
            write_fields(out, map);
            let _ = write!(out, "</{name}>");
        }
    }
}

fn write_fields(out: &mut String, map: &Map<String, Value>) {
    for (k, v) in map {
        write_element(out, k, v);
    }
}

/// Escapes the five XML special characters.
pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Turns an arbitrary JSON key (rows created by POST can carry anything) into a valid XML name:
/// `_` becomes `-` as in Coupa, other invalid characters become `-`, and a name that would not
/// start with a letter gets a leading `x-`.
fn xml_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "x-");
    }
    name
}

/// Naive English singular for array items (`invoice-lines` → `invoice-line`,
/// `currencies` → `currency`); good enough for the mock's own data.
fn singular_of(name: &str) -> String {
    if let Some(stem) = name.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = name.strip_suffix('s') {
        stem.to_owned()
    } else {
        format!("{name}-item")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_is_lenient() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a%20b+c", false), "a b+c");
        assert_eq!(percent_decode("%2B00:00", false), "+00:00");
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%zz%4", true), "%zz%4");
        assert_eq!(percent_decode("%e2%82%ac", true), "€");
    }

    #[test]
    fn pairs_never_fail() {
        let pairs = parse_pairs("fields=[\"id\",{\"supplier\":[\"name\"]}]&&x&updated-at[gt]=1");
        assert_eq!(
            pairs,
            vec![
                ("fields".into(), "[\"id\",{\"supplier\":[\"name\"]}]".into()),
                ("x".into(), String::new()),
                ("updated-at[gt]".into(), "1".into()),
            ]
        );
    }

    #[test]
    fn base64_round_trip() {
        for s in ["", "a", "ab", "abc", "abcd", "client:s3cr3t+/=", "é:ü"] {
            let enc = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&enc).unwrap(), s.as_bytes(), "{s} / {enc}");
        }
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(format_timestamp(1_704_067_200), "2024-01-01T00:00:00+00:00");
        assert_eq!(format_timestamp(1_709_210_096), "2024-02-29T12:34:56+00:00");
    }

    #[test]
    fn xml_shapes() {
        let row = serde_json::json!({
            "id": 1, "name": "Johnson & <Sons>", "active": true, "rate": 1.5,
            "updated-at": "2024-01-01T00:00:00+00:00", "supplier": {"id": 2}, "gone": null,
            "tags": ["a"], "9lives": "x", "snake_case": "y"
        });
        let xml = xml_one("supplier", &row);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<supplier>"));
        for part in [
            "<id type=\"integer\">1</id>",
            "<name>Johnson &amp; &lt;Sons&gt;</name>",
            "<active type=\"boolean\">true</active>",
            "<rate type=\"decimal\">1.5</rate>",
            "<updated-at type=\"dateTime\">2024-01-01T00:00:00+00:00</updated-at>",
            "<supplier><id type=\"integer\">2</id></supplier>",
            "<gone nil=\"true\"/>",
            "<tags type=\"array\"><tag>a</tag></tags>",
            "<x-9lives>x</x-9lives>",
            "<snake-case>y</snake-case>",
        ] {
            assert!(xml.contains(part), "{part} missing in {xml}");
        }
        assert_eq!(xml_escape("'\""), "&apos;&quot;");
    }
}
