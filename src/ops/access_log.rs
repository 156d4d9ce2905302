//! One access-log line per request (tracing target `access`), written when the response body
//! has been sent, so it carries the real byte count and duration, like nginx's.
//!
//! The record is built only when the line will be printed (`[log] access` and the tracing
//! filter both allow it): with access logs off, the request path pays one branch.
//!
//! Text lines write fields unquoted (`path=/x status=200`), so every string the caller can
//! influence is escaped there (see `Field`): a path or request id cannot end its field or
//! its line early and pass for another field (a forged `status=200`) or another line.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method};

use crate::migration::discovered::FINGERPRINT_LEN;

/// Everything an access-log line says about one request.
#[derive(Debug)]
pub struct AccessRecord {
    /// `X-Request-Id`.
    pub request_id: HeaderValue,
    /// The trace id of the caller's W3C `traceparent`, to find the request in its traces.
    pub trace_id: Option<[u8; 32]>,
    /// The integration's name, or `anonymous`.
    pub integration: String,
    /// The peer's address.
    pub peer: IpAddr,
    /// The fingerprint of a legacy key no integration knows (never the key).
    pub key: Option<[u8; FINGERPRINT_LEN]>,
    /// The matched route prefix (empty when none matched).
    pub route: String,
    /// The instance the route targets.
    pub instance: String,
    /// The route's mode.
    pub mode: &'static str,
    /// Request method.
    pub method: Method,
    /// Path and query keys, without query values (they may hold business data).
    pub path: String,
    /// Response status.
    pub status: u16,
    /// The gateway's error code when it answered itself.
    pub error: Option<&'static str>,
    /// Time to Coupa's response head, when Coupa was called.
    pub upstream: Option<Duration>,
    /// Declared request body size.
    pub request_bytes: Option<u64>,
    /// When the request arrived.
    pub started: Instant,
}

impl AccessRecord {
    /// Writes the line: `response_bytes` were sent, and the body ended (`complete`) or the
    /// client went away first.
    pub fn emit(&self, response_bytes: u64, complete: bool) {
        let escape = !json_fields();
        let field = |text| Field { text, escape };
        let mut peer = StackText::new();
        let _ = write!(peer, "{}", self.peer);
        let key = self
            .key
            .as_ref()
            .map(|k| std::str::from_utf8(k).unwrap_or("-"));
        // Validated as lowercase hex: no escaping needed.
        let trace_id = self
            .trace_id
            .as_ref()
            .and_then(|t| std::str::from_utf8(t).ok());
        tracing::info!(
            target: "access",
            request_id = %field(self.request_id.to_str().unwrap_or("-")),
            trace_id = trace_id.map(tracing::field::display),
            integration = %field(&self.integration),
            peer = %field(peer.as_str()),
            key = key.map(|text| tracing::field::display(field(text))),
            route = %field(&self.route),
            instance = %field(&self.instance),
            mode = %self.mode,
            method = %self.method,
            path = %field(&self.path),
            status = self.status,
            error = self.error.map(tracing::field::display),
            upstream_ms = self.upstream.map(|d| d.as_secs_f64() * 1e3),
            duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
            request_bytes = self.request_bytes,
            response_bytes,
            complete,
        );
    }
}

/// The trace id of a W3C Trace Context `traceparent` header
/// (`00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`): 32 lowercase hex digits, not
/// all zero, under a version other than `ff` (W3C Trace Context §3.2). Anything else is not a
/// trace id and is left out rather than logged.
pub fn trace_id(headers: &http::HeaderMap) -> Option<[u8; 32]> {
    let value = headers.get("traceparent")?.as_bytes();
    let (version, rest) = value.split_first_chunk::<3>()?;
    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if !version[..2].iter().all(hex) || &version[..2] == b"ff" || version[2] != b'-' {
        return None;
    }
    let (id, rest) = rest.split_first_chunk::<32>()?;
    // Version 00 is exactly 55 bytes; later versions may append fields after a '-'.
    if !id.iter().all(hex) || id.iter().all(|&b| b == b'0') || rest.first() != Some(&b'-') {
        return None;
    }
    if &version[..2] == b"00" && value.len() != 55 {
        return None;
    }
    Some(*id)
}

/// Does the current subscriber format fields as JSON? Its encoder escapes strings itself, so
/// there [`Field`] writes them as they are and a JSON line carries the exact path. Any other
/// formatter gets escaped fields. (`fmt` layers can be downcast to their field formatter;
/// the binary installs exactly one, text or JSON.)
fn json_fields() -> bool {
    tracing::dispatcher::get_default(|d| d.is::<tracing_subscriber::fmt::format::JsonFields>())
}

/// A caller-influenced string as an access-log field value. In text lines printable ASCII other
/// than `"` and `\` is written as is, `"` and `\` as `\"` and `\\`, and every other
/// character (space, controls, DEL, all non-ASCII: U+00A0, U+2028, …) as `\u{hex}`, Rust's
/// notation for its code point (`\u{20}`, `\u{2028}`). The value is then one token of
/// printable ASCII, and decodes back to exactly what was sent.
struct Field<'a> {
    text: &'a str,
    escape: bool,
}

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.escape {
            return f.write_str(self.text);
        }
        let mut rest = self.text;
        // PERF: a usual value is all plain and written in one call. The first byte that is
        // not plain is ASCII or a UTF-8 lead byte, so always on a char boundary.
        while let Some(i) = rest.bytes().position(|b| !is_plain(b)) {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Text formatted on the stack: an address needs no allocation to be written as a [`Field`].
/// 48 bytes hold any IP address (39 at most as Rust writes them); a write that does not fit
/// fails and leaves the text before it.
struct StackText {
    buf: [u8; 48],
    len: usize,
}

impl StackText {
    fn new() -> Self {
        Self {
            buf: [0; 48],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("-")
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'"' && b != b'\\'
}

/// `path?key1&key2`: the query's parameter names without their values.
pub fn redact_query(path: &str, query: Option<&str>) -> String {
    let Some(q) = query else {
        return path.to_owned();
    };
    let mut out = String::with_capacity(path.len() + q.len().min(128) + 1);
    out.push_str(path);
    out.push('?');
    for (i, pair) in q.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(pair.split('=').next().unwrap_or(""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let id = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("traceparent", HeaderValue::from_str(v).unwrap());
            trace_id(&h).map(|t| String::from_utf8(t.to_vec()).unwrap())
        };
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            id(good).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        // A later version may add fields.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(id(v1).is_some());
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736x",
            "zz",
            "",
        ] {
            assert_eq!(id(bad), None, "{bad}");
        }
    }

    #[test]
    fn text_fields_are_one_token_of_printable_ascii() {
        let escaped = |text| Field { text, escape: true }.to_string();
        for plain in [
            "/prod/api/invoices?fields&updated-at[gt]",
            "erp-42",
            "-",
            "",
        ] {
            assert_eq!(escaped(plain), plain);
        }
        assert_eq!(escaped("/x\u{2028}status=200"), "/x\\u{2028}status=200");
        assert_eq!(escaped("/caf\u{e9}\u{a0}"), "/caf\\u{e9}\\u{a0}");
        assert_eq!(
            escaped("a\" status=200 \\"),
            "a\\\"\\u{20}status=200\\u{20}\\\\"
        );
        assert_eq!(
            escaped("\r\n\t\u{0}\u{7f}\u{1f4c4}"),
            "\\u{d}\\u{a}\\u{9}\\u{0}\\u{7f}\\u{1f4c4}"
        );
        let raw = Field {
            text: "/x\u{2028}\"",
            escape: false,
        };
        assert_eq!(raw.to_string(), "/x\u{2028}\"");
    }

    #[test]
    fn query_values_are_dropped_keys_kept() {
        assert_eq!(redact_query("/api/invoices", None), "/api/invoices");
        assert_eq!(
            redact_query(
                "/api/invoices",
                Some(
                    r#"fields=["id"]&updated-at[gt]=2024-01-01&supplier[name]=Acme%20Corp&exported"#
                )
            ),
            "/api/invoices?fields&updated-at[gt]&supplier[name]&exported"
        );
    }
}
