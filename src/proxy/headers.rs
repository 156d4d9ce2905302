//! Header rewriting between the integration and Coupa.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the non-standard `Keep-Alive` and
/// `Proxy-Connection` that old clients still send), and `Transfer-Encoding`: hyper re-frames
/// the body for its own hop. Static so `remove` does not parse names. At most 16 (a bit each
/// in [`remove_hop_by_hop`]).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
];

/// The legacy Coupa API key header; `HeaderName`s are lowercase, so removal is case-insensitive.
pub static COUPA_API_KEY: HeaderName = HeaderName::from_static("x-coupa-api-key");
/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// `1 << i` when `name` is `HOP_BY_HOP[i]`, else 0. PERF: one `match` on the name's text
/// (a length switch, then one compare) instead of nine `HeaderName` comparisons per header.
fn hop_bit(name: &HeaderName) -> u16 {
    match name.as_str() {
        "connection" => 1,
        "keep-alive" => 1 << 1,
        "proxy-connection" => 1 << 2,
        "proxy-authenticate" => 1 << 3,
        "proxy-authorization" => 1 << 4,
        "te" => 1 << 5,
        "trailer" => 1 << 6,
        "upgrade" => 1 << 7,
        "transfer-encoding" => 1 << 8,
        _ => 0,
    }
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // PERF: one pass over the head's few names finds which of these it carries (bit i:
    // `HOP_BY_HOP[i]`), and only those are removed: a hashed `remove` of an absent name costs
    // as much as of a present one. Most heads carry none (keep-alive is HTTP/1.1's default,
    // so hyper clients send no `Connection`), and a typical upstream response carries just
    // `Connection: keep-alive`: one removal instead of nine. Measured in benches/RESULTS.md.
    let present = headers.keys().fold(0u16, |bits, name| bits | hop_bit(name));
    if present == 0 {
        return;
    }
    // Names listed in Connection are per-hop by declaration (RFC 9110 §7.6.1); without
    // `Connection` there are none.
    if present & 1 != 0 {
        // Split the raw bytes, not `to_str()`: one obs-text byte (which hyper accepts) in a
        // value must not hide the valid names listed beside it.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            // `keep-alive` goes below anyway and `close` names no header: skip them without
            // building a `HeaderName` (an allocation each, on every request of a Java client).
            .filter(|t| !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close"))
            .filter_map(|name| HeaderName::from_bytes(name).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Rewrites the integration's request headers for Coupa in place: hop-by-hop out, forwarding
/// headers in, and with `bearer` (oauth mode) the caller's credentials replaced by the token.
/// Without it (passthrough mode) `X-COUPA-API-KEY` and `Authorization` go through untouched.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    upstream_host: &HeaderValue,
    bearer: Option<HeaderValue>,
    peer_ip: &HeaderValue,
    proto: &HeaderValue,
) {
    remove_hop_by_hop(headers);
    if let Some(bearer) = bearer {
        headers.remove(&COUPA_API_KEY);
        // `insert` replaces every Authorization value the caller sent.
        headers.insert(header::AUTHORIZATION, bearer);
    }
    // `insert` drops every Host the caller sent and returns the first, as `remove` would.
    if let Some(host) = headers.insert(header::HOST, upstream_host.clone()) {
        headers.insert(&X_FORWARDED_HOST, host);
    }
    append_forwarded_for(headers, peer_ip);
    headers.insert(&X_FORWARDED_PROTO, proto.clone());
}

/// Appends the peer to `X-Forwarded-For`, folding repeated headers into one list.
fn append_forwarded_for(headers: &mut HeaderMap, peer_ip: &HeaderValue) {
    let mut existing = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(&X_FORWARDED_FOR, peer_ip.clone());
        return;
    }
    let mut joined = Vec::with_capacity(64);
    for v in existing {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(peer_ip.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(mut h: HeaderMap) -> HeaderMap {
        rewrite_request(
            &mut h,
            &HeaderValue::from_static("acme.coupahost.com"),
            Some(HeaderValue::from_static("Bearer T")),
            &HeaderValue::from_static("10.1.2.3"),
            &HeaderValue::from_static("http"),
        );
        h
    }

    #[test]
    fn credentials_and_hop_by_hop_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("X-Coupa-Api-Key", HeaderValue::from_static("legacy"));
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer other"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert(header::HOST, HeaderValue::from_static("gateway.local:8080"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let h = rewrite(h);
        assert!(h.get("x-coupa-api-key").is_none());
        assert_eq!(h.get_all(header::AUTHORIZATION).iter().count(), 1);
        assert_eq!(h[header::AUTHORIZATION], "Bearer T");
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
        ] {
            assert!(h.get(gone).is_none(), "{gone} should be removed");
        }
        assert_eq!(h[header::HOST], "acme.coupahost.com");
        assert_eq!(h["x-forwarded-host"], "gateway.local:8080");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h[header::ACCEPT], "application/json");
    }

    #[test]
    fn connection_names_go_even_beside_non_ascii_elements() {
        // Found by tests/properties.rs: a Connection value holding a byte >= 0x80 anywhere
        // used to be skipped whole, so the names it listed were forwarded.
        for value in [
            &b"x-hop, caf\xe9"[..],
            "x-hop, café".as_bytes(),
            b"\xff,x-hop",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_bytes(value).unwrap());
            h.insert("x-hop", HeaderValue::from_static("1"));
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            remove_hop_by_hop(&mut h);
            assert!(h.get("x-hop").is_none(), "{value:?}");
            assert!(h.get(header::CONNECTION).is_none());
            assert_eq!(h[header::ACCEPT], "*/*");
        }
    }

    #[test]
    fn passthrough_keeps_the_callers_credentials() {
        let mut h = HeaderMap::new();
        h.insert("x-coupa-api-key", HeaderValue::from_static("legacy"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        rewrite_request(
            &mut h,
            &HeaderValue::from_static("acme.coupahost.com"),
            None,
            &HeaderValue::from_static("10.1.2.3"),
            &HeaderValue::from_static("http"),
        );
        assert_eq!(h["x-coupa-api-key"], "legacy");
        assert_eq!(h[header::AUTHORIZATION], "Basic abc");
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h[header::HOST], "acme.coupahost.com");
    }

    #[test]
    fn heads_without_hop_by_hop_headers_are_left_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        h.insert("Keep-Alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
    }

    #[test]
    fn hop_bits_follow_the_table() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_bit(name), 1 << i, "{name}");
        }
        assert_eq!(hop_bit(&header::ACCEPT), 0);
        assert_eq!(hop_bit(&HeaderName::from_static("x-connection")), 0);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        let h = rewrite(h);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }
}
