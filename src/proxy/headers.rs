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
/// Spellings with `_` for any `-` are the same header to Coupa: see [`is_api_key_name`].
pub static COUPA_API_KEY: HeaderName = HeaderName::from_static("x-coupa-api-key");
/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`: passed through when the caller sends a sane one, created otherwise, sent to
/// Coupa and echoed in the response so a caller's log line can be matched with ours.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Is the caller's `X-Request-Id` one to keep? It is echoed to Coupa, in the response and its
/// JSON body and in every log line, so it must need no quoting anywhere: 1 to 200 bytes of
/// printable ASCII other than `"` and `\`, no spaces. Anything else is replaced by a fresh id.
pub fn usable_request_id(value: &HeaderValue) -> bool {
    // PERF: a fold without early exit vectorises: ~110 instructions for a 36-byte UUID
    // against ~450 for `all` (callgrind). Ids are short; a bad one gains nothing from an
    // early exit.
    (1..=200).contains(&value.len())
        && value.as_bytes().iter().fold(true, |ok, &b| {
            ok & b.is_ascii_graphic() & (b != b'"') & (b != b'\\')
        })
}

/// Is `name` (lowercase, as in a `HeaderName`) the legacy key header, `_` standing for any `-`?
/// Rack and CGI servers, Coupa's Rails among them, turn both into `HTTP_X_COUPA_API_KEY`, so
/// `X_COUPA_API_KEY` is the key to Coupa and must be to the gateway too: it identifies the
/// caller, and it is stripped with the dash spelling.
pub fn is_api_key_name(name: &str) -> bool {
    rack_alias(name, "x-coupa-api-key")
}

/// Is `name` the header `of` (lowercase, with dashes) to a Rack/CGI server, which reads `_`
/// and `-` alike?
fn rack_alias(name: &str, of: &str) -> bool {
    name.len() == of.len()
        && name
            .bytes()
            .zip(of.bytes())
            .all(|(b, k)| b == k || (b == b'_' && k == b'-'))
}

/// Headers the gateway sets or drops whose underscore spellings (`X_Forwarded_For`) a Rack
/// server would read as the real thing: they would override or join what the gateway states
/// (the class of Puma's CVE-2024-45614), so they are dropped.
const RACK_SHADOWED: [&str; 7] = [
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
    "x-real-ip",
    "client-ip",
    "true-client-ip",
];

/// The legacy key headers a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyKey<'a> {
    /// None.
    Absent,
    /// Exactly one: its value.
    One(&'a HeaderValue),
    /// More than one, in any spellings (the same one twice included). Which one Coupa uses
    /// depends on the servers on the way (one spelling wins, or the values are joined with a
    /// comma): the request is refused rather than identified by a key Coupa might not see.
    Several,
}

impl<'a> LegacyKey<'a> {
    /// The key, when there is exactly one.
    pub fn single(self) -> Option<&'a HeaderValue> {
        match self {
            LegacyKey::One(v) => Some(v),
            _ => None,
        }
    }
}

/// Finds the caller's legacy key headers in every spelling [`is_api_key_name`] accepts.
///
/// PERF: one walk over the head's names (a length compare for most), in place of the two
/// hashed lookups (presence, then value) it replaces.
pub fn legacy_key(headers: &HeaderMap) -> LegacyKey<'_> {
    let mut found = LegacyKey::Absent;
    for (name, value) in headers {
        if is_api_key_name(name.as_str()) {
            if found != LegacyKey::Absent {
                return LegacyKey::Several;
            }
            found = LegacyKey::One(value);
        }
    }
    found
}

/// `Connection`'s bit: `HOP_BY_HOP[0]`.
const CONNECTION_BIT: u16 = 1;

/// `1 << i` when `name` is `HOP_BY_HOP[i]`, else 0.
fn hop_bit(name: &HeaderName) -> u16 {
    match role(name) {
        Role::HopByHop(bit) => bit,
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
    // The same pass notes whether a `Connection` value lists any header: a typical upstream
    // response's `Connection: keep-alive` lists none, and seeing that here saves a hashed
    // `get_all` and a split (~350 instructions per response, callgrind).
    let mut lists_names = false;
    let present = headers.iter().fold(0u16, |bits, (name, value)| {
        let bit = hop_bit(name);
        if bit == CONNECTION_BIT && !lists_names {
            // PERF: the spellings servers send, matched exactly before the general split.
            lists_names = !matches!(
                value.as_bytes(),
                b"keep-alive" | b"Keep-Alive" | b"close" | b"Close"
            ) && listed_names(value).next().is_some();
        }
        bits | bit
    });
    if present == 0 {
        return;
    }
    // Names listed in Connection are per-hop by declaration (RFC 9110 §7.6.1).
    if lists_names {
        for name in connection_listed(headers) {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// What the gateway itself sets on every request it sends to Coupa.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// The instance's `Host`.
    pub host: &'a HeaderValue,
    /// `Authorization: Bearer ...` in oauth mode; `None` in passthrough mode, where the
    /// caller's `X-COUPA-API-KEY` and `Authorization` go through untouched.
    pub bearer: Option<&'a HeaderValue>,
    /// The caller's IP, appended to `X-Forwarded-For`.
    pub peer_ip: &'a HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'a HeaderValue,
    /// `X-Request-Id`, replacing any the caller sent.
    pub request_id: &'a HeaderValue,
    /// The route's egress proxy credentials (the caller's are hop-by-hop and never forwarded).
    pub proxy_authorization: Option<&'a HeaderValue>,
}

/// How a header is treated on its way through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Per-hop in both directions; the bit names its place in [`HOP_BY_HOP`].
    HopByHop(u16),
    Forward,
    Host,
    Credential,
    ForwardedFor,
    ForwardedHost,
    Replaced,
    /// The caller's own claims about the client address: `Forwarded` (RFC 7239), `X-Real-IP`,
    /// `Client-IP`, `True-Client-IP`, and underscore spellings of the headers the gateway
    /// sets. Coupa or a proxy on the way could take them for the client's address
    /// (allow-lists, audit logs); the gateway states the peer in `X-Forwarded-For` only.
    Dropped,
}

/// PERF: one `match` on the name's text (a length switch, then one compare) instead of a
/// `HeaderName` comparison per special name, per header.
fn role(name: &HeaderName) -> Role {
    match name.as_str() {
        "connection" => Role::HopByHop(CONNECTION_BIT),
        "keep-alive" => Role::HopByHop(1 << 1),
        "proxy-connection" => Role::HopByHop(1 << 2),
        "proxy-authenticate" => Role::HopByHop(1 << 3),
        "proxy-authorization" => Role::HopByHop(1 << 4),
        "te" => Role::HopByHop(1 << 5),
        "trailer" => Role::HopByHop(1 << 6),
        "upgrade" => Role::HopByHop(1 << 7),
        "transfer-encoding" => Role::HopByHop(1 << 8),
        "host" => Role::Host,
        "authorization" | "x-coupa-api-key" => Role::Credential,
        "x-forwarded-for" => Role::ForwardedFor,
        "x-forwarded-host" => Role::ForwardedHost,
        "x-forwarded-proto" | "x-request-id" => Role::Replaced,
        // Rails' `remote_ip` also reads `Client-IP`; CDNs set `True-Client-IP`.
        "forwarded" | "x-real-ip" | "client-ip" | "true-client-ip" => Role::Dropped,
        other if is_api_key_name(other) => Role::Credential,
        // PERF: only names of a shadowed length are compared further.
        other
            if matches!(other.len(), 9 | 12 | 14 | 15 | 16 | 17)
                && RACK_SHADOWED.iter().any(|of| rack_alias(other, of)) =>
        {
            Role::Dropped
        }
        _ => Role::Forward,
    }
}

/// The head sent to Coupa, built from the integration's: hop-by-hop headers out (with every
/// name `Connection` lists), `Host` set to the instance's with the caller's moved to
/// `X-Forwarded-Host`, the peer appended to `X-Forwarded-For`, `X-Forwarded-Proto` and
/// `X-Request-Id` set, the caller's `Forwarded` and `X-Real-IP` dropped, and with a bearer
/// (oauth mode) the caller's credentials replaced by the token. Everything else goes through
/// in order, byte for byte.
///
/// PERF: the caller's head is left untouched, so it doubles as the copy a 401 replay is
/// rebuilt from; and copying only what is forwarded into a map sized for the result costs
/// less than removing, replacing and growing in place (callgrind, paged GET: see
/// benches/RESULTS.md).
pub fn request_headers(caller: &HeaderMap, out: Outbound<'_>) -> HeaderMap {
    let listed = if caller.contains_key(header::CONNECTION) {
        connection_listed(caller)
    } else {
        Vec::new()
    };
    let forwarded = |name: &HeaderName| listed.is_empty() || !listed.contains(name);
    // `insert` semantics: the first Host the caller sent (unless it declared Host per-hop).
    let caller_host = caller
        .get(header::HOST)
        .filter(|_| forwarded(&header::HOST));
    let mut headers = HeaderMap::with_capacity(caller.len() + 7);
    let mut chain: Option<Vec<u8>> = None;
    for (name, value) in caller {
        let role = role(name);
        if matches!(role, Role::HopByHop(_)) || !forwarded(name) {
            continue;
        }
        match role {
            Role::Forward => {}
            Role::Credential if out.bearer.is_none() => {}
            Role::ForwardedHost if caller_host.is_none() => {}
            Role::ForwardedFor => {
                let joined = chain.get_or_insert_with(|| Vec::with_capacity(64));
                joined.extend_from_slice(value.as_bytes());
                joined.extend_from_slice(b", ");
                continue;
            }
            _ => continue,
        }
        headers.append(name.clone(), value.clone());
    }
    headers.append(header::HOST, out.host.clone());
    if let Some(host) = caller_host {
        headers.append(&X_FORWARDED_HOST, host.clone());
    }
    if let Some(bearer) = out.bearer {
        headers.append(header::AUTHORIZATION, bearer.clone());
    }
    let forwarded_for = match chain {
        None => Some(out.peer_ip.clone()),
        Some(mut joined) => {
            joined.extend_from_slice(out.peer_ip.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
    };
    if let Some(v) = forwarded_for {
        headers.append(&X_FORWARDED_FOR, v);
    }
    headers.append(&X_FORWARDED_PROTO, out.proto.clone());
    headers.append(&X_REQUEST_ID, out.request_id.clone());
    if let Some(auth) = out.proxy_authorization {
        headers.append(header::PROXY_AUTHORIZATION, auth.clone());
    }
    headers
}

/// The names `Connection` declares per-hop (RFC 9110 §7.6.1).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(listed_names)
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect()
}

/// The tokens of one `Connection` value that may name a header.
fn listed_names(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    // Split the raw bytes, not `to_str()`: one obs-text byte (which hyper accepts) in a value
    // must not hide the valid names listed beside it.
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        // `keep-alive` is hop-by-hop anyway and `close` names no header: skip them without
        // building a `HeaderName` (an allocation each, on every request of a Java client).
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"close")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(bearer: Option<&HeaderValue>) -> Outbound<'_> {
        static HOST: HeaderValue = HeaderValue::from_static("acme.coupahost.com");
        static PEER: HeaderValue = HeaderValue::from_static("10.1.2.3");
        static PROTO: HeaderValue = HeaderValue::from_static("http");
        static ID: HeaderValue = HeaderValue::from_static("req-1");
        Outbound {
            host: &HOST,
            bearer,
            peer_ip: &PEER,
            proto: &PROTO,
            request_id: &ID,
            proxy_authorization: None,
        }
    }

    fn rewrite(h: &HeaderMap) -> HeaderMap {
        request_headers(h, outbound(Some(&HeaderValue::from_static("Bearer T"))))
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
        let h = rewrite(&h);
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
    fn every_spelling_of_the_legacy_key_is_replaced_by_the_bearer() {
        let mut h = HeaderMap::new();
        h.insert("X_Coupa_Api_Key", HeaderValue::from_static("legacy"));
        h.insert("x-coupa_api-key", HeaderValue::from_static("legacy"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let out = rewrite(&h);
        assert_eq!(out.len(), 6, "{out:?}");
        assert_eq!(out[header::AUTHORIZATION], "Bearer T");
        assert!(!out.keys().any(|n| is_api_key_name(n.as_str())));
        // Passthrough: as sent.
        let out = request_headers(&h, outbound(None));
        assert_eq!(out["x_coupa_api_key"], "legacy");
        assert_eq!(out["x-coupa_api-key"], "legacy");
    }

    #[test]
    fn legacy_keys_are_counted_in_every_spelling() {
        let key = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.append(*name, HeaderValue::from_static(value));
            }
            match legacy_key(&h) {
                LegacyKey::Absent => "absent".to_owned(),
                LegacyKey::One(v) => v.to_str().unwrap().to_owned(),
                LegacyKey::Several => "several".to_owned(),
            }
        };
        assert_eq!(key(&[("accept-language", "en")]), "absent");
        assert_eq!(key(&[("accept", "*/*"), ("X-COUPA-API-KEY", "a")]), "a");
        assert_eq!(key(&[("X_COUPA_API_KEY", "b")]), "b");
        assert_eq!(
            key(&[("x-coupa_api-key", "c"), ("accept-encoding", "gzip")]),
            "c"
        );
        assert_eq!(
            key(&[("x-coupa-api-key", "a"), ("x-coupa-api-key", "a")]),
            "several"
        );
        assert_eq!(
            key(&[("x-coupa-api-key", "a"), ("x_coupa_api_key", "b")]),
            "several"
        );
    }

    #[test]
    fn passthrough_keeps_the_callers_credentials() {
        let mut h = HeaderMap::new();
        h.insert("x-coupa-api-key", HeaderValue::from_static("legacy"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let h = request_headers(&h, outbound(None));
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
    fn request_roles_follow_the_names() {
        assert_eq!(role(&header::HOST), Role::Host);
        assert_eq!(role(&header::AUTHORIZATION), Role::Credential);
        assert_eq!(role(&COUPA_API_KEY), Role::Credential);
        for spelling in ["x_coupa_api_key", "x-coupa_api-key", "x_coupa-api-key"] {
            assert_eq!(role(&HeaderName::from_static(spelling)), Role::Credential);
        }
        for near in [
            "x-coupa-api-keys",
            "x-coupa-api-ke",
            "x.coupa-api-key",
            "y_coupa_api_key",
        ] {
            assert_eq!(
                role(&HeaderName::from_static(near)),
                Role::Forward,
                "{near}"
            );
        }
        assert_eq!(role(&X_FORWARDED_FOR), Role::ForwardedFor);
        assert_eq!(role(&X_FORWARDED_HOST), Role::ForwardedHost);
        assert_eq!(role(&X_FORWARDED_PROTO), Role::Replaced);
        assert_eq!(role(&X_REQUEST_ID), Role::Replaced);
        assert_eq!(role(&header::FORWARDED), Role::Dropped);
        for shadow in [
            "x_forwarded_for",
            "x-forwarded_proto",
            "x_forwarded_host",
            "x_request_id",
            "x_real_ip",
            "client_ip",
            "client-ip",
            "true_client_ip",
        ] {
            assert_eq!(
                role(&HeaderName::from_static(shadow)),
                Role::Dropped,
                "{shadow}"
            );
        }
        for ordinary in [
            "accept-language",
            "accept_language",
            "content-length",
            "x-forwarded",
        ] {
            assert_eq!(
                role(&HeaderName::from_static(ordinary)),
                Role::Forward,
                "{ordinary}"
            );
        }
        assert_eq!(role(&HeaderName::from_static("x-real-ip")), Role::Dropped);
        assert_eq!(role(&header::ACCEPT), Role::Forward);
        assert_eq!(role(&HeaderName::from_static("x-hop")), Role::Forward);
    }

    #[test]
    fn the_gateway_sets_its_own_request_id_and_proxy_credentials() {
        let mut h = HeaderMap::new();
        h.append("x-request-id", HeaderValue::from_static("theirs-1"));
        h.append("x-request-id", HeaderValue::from_static("theirs-2"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic caller"),
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("ftp"));
        let egress = HeaderValue::from_static("Basic gateway");
        let out = Outbound {
            proxy_authorization: Some(&egress),
            ..outbound(None)
        };
        let h = request_headers(&h, out);
        assert_eq!(
            h.get_all("x-request-id").iter().collect::<Vec<_>>(),
            ["req-1"]
        );
        assert_eq!(
            h.get_all("proxy-authorization").iter().collect::<Vec<_>>(),
            ["Basic gateway"]
        );
        assert_eq!(
            h.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(),
            ["http"]
        );
    }

    #[test]
    fn caller_address_claims_are_dropped_in_both_modes() {
        let mut h = HeaderMap::new();
        h.append(header::FORWARDED, HeaderValue::from_static("for=10.9.9.9"));
        h.append("X-Real-IP", HeaderValue::from_static("10.9.9.9"));
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        for h in [rewrite(&h), request_headers(&h, outbound(None))] {
            assert!(h.get(header::FORWARDED).is_none());
            assert!(h.get("x-real-ip").is_none());
            assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        }
    }

    #[test]
    fn request_ids_needing_no_quotes_are_kept() {
        for kept in [
            "erp-run-42",
            "a",
            "0190b8c4-7f3e-7c1a-9d5e-3f0a1b2c3d4e",
            "job:7/x.y_z~1",
        ] {
            assert!(usable_request_id(&HeaderValue::from_static(kept)), "{kept}");
        }
        let long = "x".repeat(201);
        for replaced in ["", "two words", "a\"b", "a\\b", "tab\there", long.as_str()] {
            let v = HeaderValue::from_str(replaced).unwrap();
            assert!(!usable_request_id(&v), "{replaced:?}");
        }
        let obs = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        assert!(!usable_request_id(&obs));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        let h = rewrite(&h);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }
}
