//! Property tests for the parts of the request path that see raw client input (issue #4):
//! the route matcher, the path check, the lenient request-target wrapper, header rewriting and
//! the scope table; and for the redaction of a client secret a token endpoint echoes back.
//!
//! Each property compares the code with a small model written here, independently of the
//! implementation, so a shared misunderstanding does not pass silently. Case counts are kept
//! modest so the file runs in seconds in a debug build; `PROPTEST_CASES=5000` digs deeper
//! (a minute or two of CPU).

use std::collections::{HashSet, VecDeque};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use coupa_gateway::migration::scopes::ScopeTable;
use coupa_gateway::net::conn::{ConnLimits, LenientTargets};
use coupa_gateway::proxy::headers::{remove_hop_by_hop, request_headers, Outbound};
use coupa_gateway::proxy::path;
use coupa_gateway::runtime::route_table::RouteTable;
use coupa_gateway::token::redact::{redact, MARKER};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// `n` cases per property unless `PROPTEST_CASES` is set, and shrinking bounded in time:
/// header maps shrink slowly, and a failure should be reported in seconds, not minutes.
fn config(n: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = n;
    }
    config.max_shrink_time = 20_000;
    config
}

// ----- route matcher -------------------------------------------------------

/// Segments from a tiny alphabet, so that generated prefixes and paths collide often and
/// `/ab` vs `/abc` (the `/prod` vs `/production` shape) comes up all the time.
fn route_segment() -> impl Strategy<Value = String> {
    "[abc]{1,3}"
}

/// A validated-looking prefix: `/`-led, no trailing `/`, or the root `/`.
fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("/".to_owned()),
        8 => vec(route_segment(), 1..4).prop_map(|segs| format!("/{}", segs.join("/"))),
    ]
}

/// Paths, half of them built on top of one of `prefixes` so that matches are common.
fn route_path(prefixes: Vec<String>) -> impl Strategy<Value = String> {
    let tail = "[abc/]{0,8}";
    prop_oneof![
        (select(prefixes), tail).prop_map(|(p, t)| format!("{p}{t}")),
        tail.prop_map(|t| format!("/{t}")),
    ]
}

fn route_case() -> impl Strategy<Value = (Vec<String>, Vec<String>, String)> {
    proptest::collection::btree_set(prefix(), 1..7).prop_flat_map(|set| {
        let prefixes: Vec<String> = set.into_iter().collect();
        (
            Just(prefixes.clone()),
            Just(prefixes.clone()).prop_shuffle(),
            route_path(prefixes),
        )
    })
}

/// The model: does `prefix` match `path` on a segment boundary?
fn boundary_match(prefix: &str, path: &str) -> bool {
    prefix == "/" || path == prefix || path.starts_with(&format!("{prefix}/"))
}

fn table(prefixes: &[String]) -> RouteTable<String> {
    RouteTable::new(prefixes.iter().map(|p| (p.clone(), p.clone())))
}

/// `(matched prefix, rest)` for `path`.
fn lookup(t: &RouteTable<String>, path: &str) -> Option<(String, String)> {
    t.find(path).map(|m| (m.route.clone(), m.rest.to_owned()))
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn route_match_is_the_longest_segment_boundary_prefix(
        (prefixes, shuffled, path) in route_case()
    ) {
        let found = lookup(&table(&prefixes), &path);
        let expected = prefixes
            .iter()
            .filter(|p| boundary_match(p, &path))
            .max_by_key(|p| p.len());
        prop_assert_eq!(found.as_ref().map(|(p, _)| p), expected);
        if let Some((prefix, rest)) = &found {
            prop_assert!(boundary_match(prefix, &path));
            prop_assert!(rest.starts_with('/'), "rest {:?}", rest);
            // The rest is exactly what follows the prefix; a bare prefix maps to `/`.
            let after = if prefix == "/" { &path[..] } else { &path[prefix.len()..] };
            prop_assert_eq!(rest.as_str(), if after.is_empty() { "/" } else { after });
        }
        // The table sorts itself: the order routes are listed in must not matter.
        prop_assert_eq!(lookup(&table(&shuffled), &path), found);
    }

    #[test]
    fn a_prefix_never_matches_a_longer_segment(
        (prefixes, _, _) in route_case(),
        extra in "[a-z0-9._~-]{1,4}",
        tail in "(/[abc]{0,3}){0,2}",
    ) {
        // `/prod` + `uction/...`: the matched route, if any, is never one that ends inside
        // the first segment past it.
        for p in prefixes.iter().filter(|p| *p != "/") {
            let path = format!("{p}{extra}{tail}");
            if let Some((matched, _)) = lookup(&table(&prefixes), &path) {
                prop_assert_ne!(&matched, p, "{} matched {}", p, path);
            }
            prop_assert_eq!(lookup(&table(std::slice::from_ref(p)), &path), None);
        }
    }
}

// ----- path check ----------------------------------------------------------

// The policy `path::check` must implement, restated independently; shared with the fuzz
// target `fuzz/fuzz_targets/path_check.rs`.
#[path = "model/path_policy.rs"]
mod path_policy;
use path_policy::{decode, holds_escape, is_dot_segment, policy_rejects};

/// Strings dense in the bytes the check cares about, so generated cases hit every branch
/// instead of being plain text that is trivially fine.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%".to_owned()),
        Just("\\".to_owned()),
        Just("\0".to_owned()),
        select(vec![
            "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%00", "%0d", "%0A", "%25", "%41", "%zz",
            "%2", "%3b", "%252e", "%2541", ";", "\n",
        ])
        .prop_map(str::to_owned),
        // UTF-8, encoded: well-formed (é, U+2028, an emoji), overlong `.` and `/`, lone lead
        // and continuation bytes, a surrogate, past U+10FFFF. Split pieces (`%c3` then `%a9`)
        // also meet across piece boundaries.
        select(vec![
            "%c3%a9",
            "%C3",
            "%a9",
            "%e2%80%a8",
            "%f0%9f%93%84",
            "%c0%ae",
            "%C0%AF",
            "%e0%80%ae",
            "%80",
            "%ed%a0%80",
            "%f4%90%80%80",
            "%ff",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9_~é-]{1,3}",
    ];
    (any::<bool>(), vec(piece, 0..12)).prop_map(|(lead, pieces)| {
        let body = pieces.concat();
        if lead {
            format!("/{body}")
        } else {
            body
        }
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn path_check_never_panics(s in any::<String>(), bytes in vec(any::<u8>(), 0..64)) {
        let _ = path::check(&s);
        let _ = path::check(&format!("/{s}"));
        let _ = path::check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn path_check_rejects_exactly_the_policy(p in tricky_path()) {
        let rejected = path::check(&p).is_some();
        prop_assert_eq!(rejected, policy_rejects(&p), "path {:?}", p);
    }

    #[test]
    fn path_check_rejects_dot_segments_however_encoded(
        head in vec("[a-z0-9]{1,4}", 0..3),
        dots in prop_oneof![Just(1usize), Just(2usize)],
        encode in vec(0u8..3, 2),
        tail in vec("[a-z0-9]{0,4}", 0..3),
    ) {
        // Each dot written as `.`, `%2e` or `%2E`.
        let forms = [".", "%2e", "%2E"];
        let seg: String = (0..dots).map(|i| forms[usize::from(encode[i])]).collect();
        let mut segs = head;
        segs.push(seg);
        segs.extend(tail);
        let p = format!("/{}", segs.join("/"));
        prop_assert!(path::check(&p).is_some(), "accepted {:?}", p);
    }

    #[test]
    fn path_check_rejects_encoded_separators_and_nul_in_a_segment(
        before in "[a-z0-9.]{0,4}",
        sep in select(vec!["%2f", "%2F", "%5c", "%5C", "%00"]),
        after in "[a-z0-9.]{0,4}",
        prefix in "(/[a-z]{1,4}){0,2}",
    ) {
        let p = format!("{prefix}/{before}{sep}{after}");
        prop_assert!(path::check(&p).is_some(), "accepted {:?}", p);
    }

    #[test]
    fn path_check_rejects_path_parameters_double_encoding_and_non_utf8(
        before in "[a-z0-9.]{0,4}",
        bad in select(vec![
            ";", ";x=1", "%252e", "%252F", "%2541", "%25%32%65", "%c0%ae", "%C0%AF", "%80",
            "%c3", "%ed%a0%80", "%f4%90%80%80", "%fe",
        ]),
        after in "[g-z.]{0,4}",
        prefix in "(/[a-z]{1,4}){0,2}",
    ) {
        let p = format!("{prefix}/{before}{bad}{after}");
        prop_assert!(path::check(&p).is_some(), "accepted {:?}", p);
    }

    #[test]
    fn accepted_paths_decode_without_dot_segments(p in tricky_path()) {
        if path::check(&p).is_none() {
            let decoded = decode(p.as_bytes());
            prop_assert!(decoded.is_some(), "accepted malformed escape in {:?}", p);
            let decoded = decoded.unwrap();
            prop_assert!(
                !decoded.split(|&b| b == b'/').any(is_dot_segment),
                "{:?} decodes to a dot segment", p
            );
            prop_assert!(!decoded.contains(&b'\\') && !decoded.contains(&0));
            // Coupa decodes once, to UTF-8; a second decode would change nothing.
            prop_assert!(std::str::from_utf8(&decoded).is_ok(), "{:?} is not UTF-8", p);
            prop_assert!(!holds_escape(&decoded), "{:?} is double-encoded", p);
            prop_assert!(!p.contains(';'), "{:?} holds a path parameter", p);
        }
    }

    #[test]
    fn safe_paths_are_accepted(
        segs in vec("[A-Za-z0-9_.-]{0,8}", 0..8),
        trailing in any::<bool>(),
    ) {
        // Dots are fine inside a name (`a.json`, `...`); only `.` and `..` alone are not.
        let segs: Vec<String> = segs.into_iter().filter(|s| !is_dot_segment(s.as_bytes())).collect();
        let mut p = format!("/{}", segs.join("/"));
        if trailing && p != "/" {
            p.push('/');
        }
        prop_assert_eq!(path::check(&p), None, "path {:?}", p);
    }
}

// ----- lenient request targets ---------------------------------------------

/// Visible ASCII: every byte a legacy integration might paste into a URL unencoded.
fn visible() -> impl Strategy<Value = u8> {
    0x21u8..=0x7e
}

/// A request target: origin-form, or absolute-form with a plain authority. The path holds
/// anything visible but `?` and `#`; the query (if any) anything visible, `?` and `#` included.
fn target() -> impl Strategy<Value = (Vec<u8>, usize)> {
    let path = vec(
        visible().prop_filter("path byte", |b| *b != b'?' && *b != b'#'),
        0..16,
    );
    let query = proptest::option::of(vec(visible(), 0..24));
    let origin = prop_oneof![
        4 => Just(String::new()),
        1 => Just("http://coupa.example".to_owned()),
        1 => Just("https://acme.coupahost.com:443".to_owned()),
    ];
    (origin, path, query).prop_map(|(origin, path, query)| {
        let authority_len = origin.len();
        let mut t = origin.into_bytes();
        t.push(b'/');
        t.extend(path);
        if let Some(q) = query {
            t.push(b'?');
            t.extend(q);
        }
        (t, authority_len)
    })
}

/// The model of what hyper needs: in the path `<`, `>`, `` ` ``; in the query `"`, `<`, `>`
/// percent-encoded (upper-case hex); from a `#` on, everything as sent.
fn encode_target(target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() * 3);
    let mut in_query = false;
    for (i, &b) in target.iter().enumerate() {
        if b == b'#' {
            out.extend_from_slice(&target[i..]);
            break;
        }
        let refused: &[u8] = if in_query { b"\"<>" } else { b"<>`" };
        if refused.contains(&b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
        in_query |= b == b'?';
    }
    out
}

#[derive(Debug, Clone)]
enum Body {
    None,
    Fixed(Vec<u8>),
    Chunked {
        /// Non-empty chunk payloads.
        chunks: Vec<Vec<u8>>,
        upper_hex: bool,
        leading_zeros: usize,
        extension: Option<String>,
        trailers: Vec<String>,
    },
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    target: Vec<u8>,
    /// Length of `scheme://authority` in front of the path, which is never rewritten.
    authority_len: usize,
    /// Extra headers; values carry quotes and brackets that must stay as sent.
    headers: Vec<(String, String)>,
    /// Header-name spelling for the framing header.
    framing_name: usize,
    body: Body,
}

/// Body bytes: random, plus fragments that look like requests and chunk framing, which a
/// framing bug would mistake for the next head.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => vec(any::<u8>(), 0..24),
        1 => select(vec![
            "GET /x?\"y\" HTTP/1.1\r\n\r\n",
            "\r\n\r\n",
            "0\r\n\r\n",
            "POST /z?<a> HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            "5\r\nhello\r\n",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    vec(piece, 0..4).prop_map(|pieces| pieces.concat())
}

/// Splits `data` into non-empty chunks at the given cut points.
fn cut(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| c % (data.len() + 1))
        .chain([0, data.len()])
        .collect();
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| data[w[0]..w[1]].to_vec())
        .collect()
}

fn body() -> impl Strategy<Value = Body> {
    let chunked = (
        body_bytes(),
        vec(any::<usize>(), 0..4),
        any::<bool>(),
        0usize..3,
        proptest::option::of(prop_oneof![
            Just(";last".to_owned()),
            "[a-z]{1,4}=\"[ -~&&[^\"\\\\]]{0,6}\"".prop_map(|e| format!(";{e}")),
        ]),
        vec("X-[A-Za-z]{1,6}: [ -~]{0,12}", 0..3),
    )
        .prop_map(
            |(data, cuts, upper_hex, leading_zeros, extension, trailers)| Body::Chunked {
                chunks: cut(&data, &cuts),
                upper_hex,
                leading_zeros,
                extension,
                trailers,
            },
        );
    prop_oneof![
        Just(Body::None),
        body_bytes().prop_map(Body::Fixed),
        chunked,
    ]
}

fn request() -> impl Strategy<Value = Req> {
    (
        // CONNECT and Upgrade included: the gateway never switches protocols, so the wrapper
        // frames them like any other request (and keeps every bound on the connection).
        select(vec![
            "GET", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS",
        ]),
        target(),
        vec(
            prop_oneof![
                4 => ("X-[A-Za-z]{1,8}", "[ -~]{0,16}"),
                1 => Just(("Upgrade".to_owned(), "websocket".to_owned())),
                1 => Just(("Connection".to_owned(), "Upgrade".to_owned())),
            ],
            0..3,
        ),
        0usize..3,
        body(),
    )
        .prop_map(
            |(method, (target, authority_len), headers, framing_name, body)| Req {
                method,
                target,
                authority_len,
                headers,
                framing_name,
                body,
            },
        )
}

impl Req {
    /// The request as the client sends it, with the target written as `target`.
    fn write(&self, target: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target);
        out.extend_from_slice(b" HTTP/1.1\r\nHost: coupa\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        match &self.body {
            Body::None => out.extend_from_slice(b"\r\n"),
            Body::Fixed(data) => {
                let name =
                    ["Content-Length", "content-length", "CONTENT-LENGTH"][self.framing_name];
                out.extend_from_slice(format!("{name}: {}\r\n\r\n", data.len()).as_bytes());
                out.extend_from_slice(data);
            }
            Body::Chunked {
                chunks,
                upper_hex,
                leading_zeros,
                extension,
                trailers,
            } => {
                let name = [
                    "Transfer-Encoding",
                    "transfer-encoding",
                    "TRANSFER-ENCODING",
                ][self.framing_name];
                out.extend_from_slice(format!("{name}: chunked\r\n\r\n").as_bytes());
                let ext = extension.as_deref().unwrap_or("");
                let zeros = "0".repeat(*leading_zeros);
                for chunk in chunks {
                    let size = if *upper_hex {
                        format!("{:X}", chunk.len())
                    } else {
                        format!("{:x}", chunk.len())
                    };
                    out.extend_from_slice(format!("{zeros}{size}{ext}\r\n").as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(format!("0{ext}\r\n").as_bytes());
                for t in trailers {
                    out.extend_from_slice(format!("{t}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// The target as hyper must see it.
    fn fixed_target(&self) -> Vec<u8> {
        let (authority, rest) = self.target.split_at(self.authority_len);
        [authority, &encode_target(rest)].concat()
    }
}

/// An in-memory connection that delivers `chunks` as separate reads, answering `Pending`
/// (and waking itself) before the reads flagged in `stalls`.
struct Scripted {
    chunks: VecDeque<Vec<u8>>,
    stalls: VecDeque<bool>,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stalls.pop_front() == Some(true) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let Some(chunk) = self.chunks.front_mut() else {
            return Poll::Ready(Ok(()));
        };
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        Poll::Ready(Ok(()))
    }
}

/// Everything a reader with `out_size`-byte reads gets from the wrapper when the connection
/// delivers `input` in reads of `sizes` (cycled).
fn through_wrapper(input: &[u8], sizes: &[usize], stalls: &[bool], out_size: usize) -> Vec<u8> {
    let mut chunks = VecDeque::new();
    let mut pos = 0;
    for &size in sizes.iter().cycle() {
        if pos >= input.len() {
            break;
        }
        let end = (pos + size).min(input.len());
        chunks.push_back(input[pos..end].to_vec());
        pos = end;
    }
    let conn = Scripted {
        chunks,
        stalls: stalls.iter().copied().collect(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut wrapper = LenientTargets::new(conn);
        let mut out = Vec::new();
        let mut buf = vec![0; out_size];
        loop {
            let n = wrapper.read(&mut buf).await.expect("in-memory read");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn lenient_rewrites_only_request_targets_for_any_read_split(
        requests in vec(request(), 1..5),
        sizes in vec(1usize..97, 1..8),
        stalls in vec(any::<bool>(), 0..16),
        out_size in prop_oneof![1usize..64, Just(8192usize)],
    ) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for req in &requests {
            req.write(&req.target, &mut input);
            req.write(&req.fixed_target(), &mut expected);
        }
        // The generated read pattern, then the same stream in one read and byte by byte: the
        // read pattern must not matter.
        for (what, sizes, stalls, out_size) in [
            ("generated reads", &sizes[..], &stalls[..], out_size),
            ("one read", &[input.len()][..], &[][..], 8192),
            ("byte by byte", &[1][..], &[][..], out_size),
        ] {
            let got = through_wrapper(&input, sizes, stalls, out_size);
            prop_assert!(
                got == expected,
                "{} ({:?}, out {}):\n got {:?}\nwant {:?}",
                what, sizes, out_size, show(&got), show(&expected)
            );
        }
    }
}

/// A client that sends `data` and then goes silent, never closing.
struct ThenSilent(Vec<u8>);

impl AsyncRead for ThenSilent {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.0.is_empty() {
            return Poll::Pending;
        }
        let n = self.0.len().min(buf.remaining());
        buf.put_slice(&self.0[..n]);
        self.0.drain(..n);
        Poll::Ready(Ok(()))
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Wherever a client stops — mid-head, mid-body, between requests, after a head the
    /// wrapper refuses, after `Upgrade` or `CONNECT` — a silent connection with no request in
    /// flight is ended by the header or idle bound (virtual time).
    #[test]
    fn a_silent_client_is_cut_off_in_every_framing_state(
        requests in vec(request(), 1..4),
        garbage in prop_oneof![
            3 => Just(Vec::new()),
            1 => vec(any::<u8>(), 1..64),
        ],
        cut in any::<prop::sample::Index>(),
    ) {
        let mut input = Vec::new();
        for req in &requests {
            req.write(&req.target, &mut input);
        }
        input.extend(garbage);
        let sent = input[..cut.index(input.len() + 1)].to_vec();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let bounds = ConnLimits {
            header: std::time::Duration::from_secs(1),
            idle: std::time::Duration::from_secs(2),
            write: std::time::Duration::from_secs(1),
            max_head: 16 * 1024,
        };
        let outcome = rt.block_on(async {
            let mut wrapper =
                LenientTargets::with_limits(ThenSilent(sent), Default::default(), bounds);
            let mut sink = vec![0; 4096];
            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                loop {
                    match wrapper.read(&mut sink).await {
                        Ok(0) => return Ok(()),
                        Ok(_) => {}
                        Err(e) => return Err(e.kind()),
                    }
                }
            })
            .await
        });
        prop_assert_eq!(outcome, Ok(Err(io::ErrorKind::TimedOut)));
    }
}

// ----- header rewrite ------------------------------------------------------

/// The hop-by-hop headers (RFC 9110 §7.6.1 plus the non-standard ones old clients send) and
/// `Transfer-Encoding`, which hyper re-frames per hop.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
];

/// Names the rewrite sets itself, whatever the caller sent.
const SET_BY_GATEWAY: [&str; 7] = [
    "authorization",
    "x-coupa-api-key",
    "host",
    "x-forwarded-host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
];

/// The caller's claims about the client address, never forwarded (the gateway sets
/// `X-Forwarded-For` itself).
const DROPPED: [&str; 4] = ["forwarded", "x-real-ip", "client-ip", "true-client-ip"];

/// Headers whose `_` spellings a Rack server reads as the real thing, so the gateway drops
/// those spellings: the ones it sets, and the address claims.
const SHADOWED: [&str; 7] = [
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
    "x-real-ip",
    "client-ip",
    "true-client-ip",
];

/// Is `name` an underscore spelling of a shadowed header?
fn is_shadow(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.contains('_') && SHADOWED.contains(&n.replace('_', "-").as_str())
}

/// `name` in a random mix of upper and lower case.
fn random_case(name: &'static str) -> impl Strategy<Value = String> {
    vec(any::<bool>(), name.len()).prop_map(move |upper| {
        name.chars()
            .zip(upper)
            .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

/// The legacy key header with `_` for some of its dashes, in random case: Rack and CGI
/// servers (Coupa's Rails) read every such spelling as the key.
fn key_spelling() -> impl Strategy<Value = String> {
    rack_spelling("x-coupa-api-key")
}

/// `name` with `_` for some of its dashes, in random case.
fn rack_spelling(name: &'static str) -> impl Strategy<Value = String> {
    (
        vec(any::<bool>(), name.len()),
        vec(any::<bool>(), name.len()),
    )
        .prop_map(move |(upper, underscore)| {
            name.chars()
                .zip(upper.into_iter().zip(underscore))
                .map(|(c, (upper, underscore))| match c {
                    '-' if underscore => '_',
                    c if upper => c.to_ascii_uppercase(),
                    c => c,
                })
                .collect()
        })
}

/// Is `name` the legacy key in some spelling?
fn is_key_spelling(name: &HeaderName) -> bool {
    name.as_str().replace('_', "-") == "x-coupa-api-key"
}

/// Header names: random tokens (some short enough to collide), hop-by-hop names, the
/// credentials (the key in its `_` spellings too) and the forwarding headers, all in random
/// case.
fn header_name() -> impl Strategy<Value = String> {
    let special: Vec<&'static str> = HOP_BY_HOP
        .iter()
        .chain(&SET_BY_GATEWAY)
        .chain(&DROPPED)
        .copied()
        .collect();
    prop_oneof![
        2 => "[a-zA-Z][a-zA-Z0-9-]{0,6}",
        2 => select(special).prop_flat_map(random_case),
        1 => key_spelling(),
        1 => select(SHADOWED.to_vec()).prop_flat_map(rack_spelling),
    ]
}

/// Header values: visible ASCII with spaces and tabs, sometimes obs-text (bytes ≥ 0x80),
/// which hyper accepts from clients.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    let byte = prop_oneof![8 => 0x20u8..=0x7e, 1 => Just(b'\t'), 1 => 0x80u8..=0xff];
    vec(byte, 0..16).prop_map(|mut v| {
        // Leading and trailing whitespace is legal in a HeaderValue but not on the wire.
        while v.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            v.pop();
        }
        HeaderValue::from_bytes(&v).expect("valid header value bytes")
    })
}

/// A `Connection` value: a list of names (random or ones present), with odd spacing, empty
/// elements and now and then an element that is not a token at all.
fn connection_value(names: Vec<String>) -> impl Strategy<Value = HeaderValue> {
    let element = prop_oneof![
        4 => select(names),
        2 => header_name(),
        1 => Just(String::new()),
        1 => Just("close".to_owned()),
        1 => Just("\"quoted\"".to_owned()),
        1 => Just("caf\u{e9}".to_owned()),
    ];
    (
        vec(element, 1..5),
        select(vec![",", ", ", " , ", ",\t"]),
        any::<bool>(),
    )
        .prop_map(|(elements, sep, latin1)| {
            let text = elements.join(sep);
            // `é` either as UTF-8 or as the single obs-text byte an old client would send.
            let bytes: Vec<u8> = if latin1 {
                text.chars()
                    .flat_map(|c| match u8::try_from(u32::from(c)) {
                        Ok(b) => vec![b],
                        Err(_) => c.to_string().into_bytes(),
                    })
                    .collect()
            } else {
                text.into_bytes()
            };
            HeaderValue::from_bytes(&bytes).expect("valid header value bytes")
        })
}

fn header_case() -> impl Strategy<Value = HeaderMap> {
    vec((header_name(), header_value()), 0..12).prop_flat_map(|entries| {
        let mut names: Vec<String> = entries.iter().map(|(n, _)| n.clone()).collect();
        names.push("x-listed".to_owned());
        (
            Just(entries),
            vec(connection_value(names), 0..3),
            vec(header_value(), 0..3),
        )
            .prop_map(|(entries, connection, authorization)| {
                let mut h = HeaderMap::new();
                for (name, value) in entries {
                    let name = HeaderName::from_bytes(name.as_bytes()).expect("token name");
                    h.append(name, value);
                }
                for v in connection {
                    h.append(http::header::CONNECTION, v);
                }
                for v in authorization {
                    h.append(http::header::AUTHORIZATION, v);
                }
                h
            })
    })
}

/// The names `Connection` declares hop-by-hop, parsed from the raw bytes: a list of tokens
/// separated by commas and optional whitespace (RFC 9110 §5.6.1, §7.6.1).
fn connection_listed(h: &HeaderMap) -> HashSet<HeaderName> {
    h.get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|e| HeaderName::from_bytes(e.trim_ascii()).ok())
        .collect()
}

fn values(h: &HeaderMap, name: &HeaderName) -> Vec<HeaderValue> {
    h.get_all(name).iter().cloned().collect()
}

fn rewritten(before: &HeaderMap, bearer: Option<&HeaderValue>) -> HeaderMap {
    request_headers(
        before,
        Outbound {
            host: &HeaderValue::from_static("acme.coupahost.com"),
            bearer,
            peer_ip: &HeaderValue::from_static("10.1.2.3"),
            proto: &HeaderValue::from_static("https"),
            request_id: &HeaderValue::from_static("gw-1"),
            proxy_authorization: None,
        },
    )
}

/// Checks what every rewrite guarantees, bearer or not; returns the names it removed.
fn check_common(
    before: &HeaderMap,
    after: &HeaderMap,
) -> Result<HashSet<HeaderName>, TestCaseError> {
    let mut removed = connection_listed(before);
    removed.extend(HOP_BY_HOP.iter().map(|n| HeaderName::from_static(n)));
    removed.extend(DROPPED.iter().map(|n| HeaderName::from_static(n)));
    removed.extend(before.keys().filter(|n| is_shadow(n)).cloned());
    let gateway: Vec<HeaderName> = SET_BY_GATEWAY
        .iter()
        .map(|n| HeaderName::from_static(n))
        .collect();
    // Every spelling of the key is a credential, removed or kept with `Authorization`.
    let gateway = |n: &HeaderName| gateway.contains(n) || is_key_spelling(n);
    // A name the gateway sets itself may be listed too; it is removed, then set anew.
    for name in removed.iter().filter(|n| !gateway(n)) {
        prop_assert!(!after.contains_key(name), "{} survived", name);
    }
    for name in before.keys() {
        if !removed.contains(name) && !gateway(name) {
            prop_assert_eq!(
                values(after, name),
                values(before, name),
                "{} changed",
                name
            );
        }
    }
    for name in after.keys() {
        prop_assert!(
            before.contains_key(name) || gateway(name),
            "{} appeared",
            name
        );
    }
    prop_assert_eq!(
        values(after, &http::header::HOST),
        vec![HeaderValue::from_static("acme.coupahost.com")]
    );
    prop_assert_eq!(
        values(after, &HeaderName::from_static("x-forwarded-proto")),
        vec![HeaderValue::from_static("https")]
    );
    prop_assert_eq!(
        values(after, &HeaderName::from_static("x-request-id")),
        vec![HeaderValue::from_static("gw-1")]
    );
    // The caller's Host (first one, unless declared hop-by-hop) moves to X-Forwarded-Host.
    let host = (!removed.contains(&http::header::HOST))
        .then(|| before.get(http::header::HOST))
        .flatten();
    let xfh = HeaderName::from_static("x-forwarded-host");
    match host {
        Some(host) => prop_assert_eq!(values(after, &xfh), vec![host.clone()]),
        None if removed.contains(&xfh) => prop_assert!(!after.contains_key(&xfh)),
        None => prop_assert_eq!(values(after, &xfh), values(before, &xfh)),
    }
    // The peer is appended to whatever forwarding chain survives, as one folded value.
    let xff = HeaderName::from_static("x-forwarded-for");
    let mut chain: Vec<&[u8]> = if removed.contains(&xff) {
        Vec::new()
    } else {
        before
            .get_all(&xff)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    };
    chain.push(b"10.1.2.3");
    prop_assert_eq!(
        values(after, &xff),
        vec![HeaderValue::from_bytes(&chain.join(&b", "[..])).unwrap()]
    );
    Ok(removed)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn rewrite_with_a_bearer_leaves_only_the_gateways_credentials(
        before in header_case(),
        token in "[A-Za-z0-9._~+/-]{1,24}",
    ) {
        let bearer = HeaderValue::try_from(format!("Bearer {token}")).unwrap();
        let after = rewritten(&before, Some(&bearer));
        check_common(&before, &after)?;
        prop_assert!(!after.keys().any(is_key_spelling), "a key spelling survived");
        prop_assert_eq!(values(&after, &http::header::AUTHORIZATION), vec![bearer]);
    }

    #[test]
    fn rewrite_without_a_bearer_keeps_the_callers_credentials(before in header_case()) {
        let after = rewritten(&before, None);
        let removed = check_common(&before, &after)?;
        let credentials = before
            .keys()
            .filter(|n| is_key_spelling(n))
            .chain([&http::header::AUTHORIZATION]);
        for name in credentials {
            if !removed.contains(name) {
                prop_assert_eq!(values(&after, name), values(&before, name), "{}", name);
            }
        }
    }

    #[test]
    fn responses_lose_every_hop_by_hop_header(before in header_case()) {
        // The same list applies to Coupa's responses on their way back.
        let mut after = before.clone();
        remove_hop_by_hop(&mut after);
        let mut removed = connection_listed(&before);
        removed.extend(HOP_BY_HOP.iter().map(|n| HeaderName::from_static(n)));
        for name in before.keys() {
            if removed.contains(name) {
                prop_assert!(!after.contains_key(name), "{} survived", name);
            } else {
                prop_assert_eq!(values(&after, name), values(&before, name));
            }
        }
    }
}

// ----- scope table ---------------------------------------------------------

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        select(vec![
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::CONNECT,
            Method::TRACE,
        ]),
        "[A-Za-z!#$%&'*+.^_`|~-]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

/// Paths shaped like Coupa's (`/api/<resource>/...`) with dot segments, escapes, format
/// suffixes, empty segments and more than the 32 segments the parser keeps on its stack.
fn scope_path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        select(vec![
            "api",
            "invoices",
            "suppliers",
            "users",
            "abandon",
            "attachments",
            ".",
            "..",
            "",
            "%2e%2e",
            "%61pi",
            "12",
            "x.json",
            ".json",
            "a.",
            "%",
            "%zz",
            "*",
        ])
        .prop_map(str::to_owned),
        "[a-z0-9_.%-]{1,6}",
        any::<String>(),
    ];
    (vec(seg, 0..40), proptest::option::of("[ -~]{0,8}")).prop_map(|(segs, query)| {
        let mut p = format!("/{}", segs.join("/"));
        if let Some(q) = query {
            p.push('?');
            p.push_str(&q);
        }
        p
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn scope_lookup_never_panics(
        m in method(),
        p in prop_oneof![scope_path(), any::<String>()],
    ) {
        // Built once: the table is immutable and costs a few hundred rules to build.
        thread_local!(static TABLE: ScopeTable = ScopeTable::builtin());
        TABLE.with(|t| {
            let _ = t.needed(&m, &p);
        });
        let _ = ScopeTable::category(&p);
    }
}

// ----- secret redaction ------------------------------------------------------

/// How a server may spell a secret, one character at a time (so that a cut between two
/// characters, or inside one's escape, is easy to place). Written from the specifications,
/// not from `token::redact`.
#[derive(Debug, Clone, Copy)]
enum Spelling {
    Raw,
    /// `application/x-www-form-urlencoded`, as reqwest sends it (upper or lower hex).
    Form {
        lower: bool,
    },
    /// Every byte outside RFC 3986's unreserved set as `%XX`, space as `%20`.
    Strict,
    /// JSON as a serialiser that escapes `/` writes it.
    Json,
    /// JSON with every non-alphanumeric character as `\u00XX`.
    JsonUnicode,
    /// HTML: hex or decimal references for every non-alphanumeric character but `&` and `<`,
    /// which get their names.
    Html {
        hex: bool,
    },
}

fn spelling() -> impl Strategy<Value = Spelling> {
    prop_oneof![
        Just(Spelling::Raw),
        any::<bool>().prop_map(|lower| Spelling::Form { lower }),
        Just(Spelling::Strict),
        Just(Spelling::Json),
        Just(Spelling::JsonUnicode),
        any::<bool>().prop_map(|hex| Spelling::Html { hex }),
    ]
}

/// Each character of `secret` (printable ASCII) as `how` spells it.
fn spell(secret: &str, how: Spelling) -> Vec<String> {
    secret
        .chars()
        .map(|c| {
            let alnum = c.is_ascii_alphanumeric();
            let n = u32::from(c);
            match how {
                Spelling::Raw => c.to_string(),
                Spelling::Form { .. } if alnum || "*-._".contains(c) => c.to_string(),
                Spelling::Form { .. } if c == ' ' => "+".into(),
                Spelling::Form { lower: false } => format!("%{n:02X}"),
                Spelling::Form { lower: true } => format!("%{n:02x}"),
                Spelling::Strict if alnum || "-._~".contains(c) => c.to_string(),
                Spelling::Strict => format!("%{n:02X}"),
                Spelling::Json => match c {
                    '"' | '\\' | '/' => format!("\\{c}"),
                    _ => c.to_string(),
                },
                Spelling::JsonUnicode if alnum => c.to_string(),
                Spelling::JsonUnicode => format!("\\u{n:04x}"),
                Spelling::Html { .. } if alnum => c.to_string(),
                Spelling::Html { .. } if c == '&' => "&amp;".into(),
                Spelling::Html { .. } if c == '<' => "&lt;".into(),
                Spelling::Html { hex: true } => format!("&#x{n:X};"),
                Spelling::Html { hex: false } => format!("&#{n};"),
            }
        })
        .collect()
}

/// Standard base64, padded or not, and the URL-safe alphabet.
fn base64(data: &[u8], url_safe: bool, pad: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = (0..3).fold(0u32, |n, i| n << 8 | u32::from(*chunk.get(i).unwrap_or(&0)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Surrounding text: anything printable, escape characters included.
fn filler() -> impl Strategy<Value = String> {
    "[ -~]{0,40}"
}

/// What separates an echo from the text around it in real bodies (`=`/`&` in a form, quotes
/// in JSON, tags in HTML, white space in prose). Without one, text before it could take over
/// the echo's first escape (a `\` before `\u002F...` reads as `\\` then `u002F...`), and the
/// echo would not read as the secret to anyone either.
fn separator() -> impl Strategy<Value = &'static str> {
    select(&[" ", "\n", "\"", "=", "&", ": ", "<td>", "(", "'"][..])
}

/// The pieces of `text` that survived redaction.
fn unredacted(text: &str) -> Vec<&str> {
    text.split(MARKER).collect()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn no_spelling_of_a_secret_survives_redaction(
        secret in "[ -~]{1,24}",
        how in spelling(),
        // A second layer: the spelt secret quoted again, e.g. JSON inside a URL.
        again in proptest::option::of(spelling()),
        (before, sep1, sep2, after) in (filler(), separator(), separator(), filler()),
    ) {
        let mut echo = spell(&secret, how).concat();
        if let Some(again) = again {
            echo = spell(&echo, again).concat();
        }
        let text = format!("{before}{sep1}{echo}{sep2}{after}");
        let out = redact(&text, &secret);
        for piece in unredacted(&out) {
            prop_assert!(!piece.contains(&echo), "{echo:?} in {out:?}");
            prop_assert!(!piece.contains(&secret), "{secret:?} in {out:?}");
        }
    }

    #[test]
    fn no_base64_of_id_and_secret_survives_redaction(
        id in "[A-Za-z0-9-]{0,12}",
        secret in "[ -~]{1,24}",
        urlencoded in any::<bool>(),
        (url_safe, pad) in (any::<bool>(), any::<bool>()),
        // The Basic value quoted again: in JSON (`\/`) or a URL (`%2B`, `%2F`, `%3D`).
        again in proptest::option::of(prop_oneof![
            Just(Spelling::Json),
            Just(Spelling::Strict)
        ]),
        (before, after) in (filler(), filler()),
    ) {
        // RFC 6749 §2.3.1: form-urlencode id and secret, then base64 of `id:secret`.
        let form = |s: &str| spell(s, Spelling::Form { lower: false }).concat();
        let (id_sent, secret_sent) = if urlencoded {
            (form(&id), form(&secret))
        } else {
            (id.clone(), secret.clone())
        };
        let blob = base64(format!("{id_sent}:{secret_sent}").as_bytes(), url_safe, pad);
        // From the group of four that holds the first byte of the secret on.
        let secret_part = &blob[(id_sent.len() + 1) / 3 * 4..];
        let secret_part = &secret_part[..secret_part.len().min(8)];
        let quote = |s: &str| match again {
            Some(how) => spell(s, how).concat(),
            None => s.to_string(),
        };
        let (echo, secret_part) = (quote(&blob), quote(secret_part));
        let text = format!("{before} Authorization: Basic {echo}\n{after}");
        let out = redact(&text, &secret);
        for piece in unredacted(&out) {
            prop_assert!(!piece.contains(&secret_part), "{echo:?} in {out:?}");
        }
    }

    #[test]
    fn a_secret_cut_short_at_the_end_leaves_at_most_three_bytes(
        secret in "[ -~]{5,24}",
        how in spelling(),
        keep in 4usize..24,
        partial in 0usize..8,
        (before, sep) in (filler(), separator()),
    ) {
        // The first `keep` characters whole, then part of the next one's spelling.
        let pieces = spell(&secret, how);
        let keep = keep.min(secret.len() - 1);
        let next = &pieces[keep];
        let cut = format!("{}{}", pieces[..keep].concat(), &next[..partial.min(next.len() - 1)]);
        let text = format!("{before}{sep}{cut}");
        let out = redact(&text, &secret);
        prop_assert!(out.ends_with(MARKER), "{cut:?}: {out:?}");
        let first4 = pieces[..4].concat();
        let last = unredacted(&out).into_iter().rev().nth(1).unwrap_or_default();
        prop_assert!(!last.contains(&first4), "{cut:?}: {out:?}");
    }
}
