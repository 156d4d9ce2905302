//! The request-target rewrite: which bytes hyper's URI parser refuses, and their
//! percent-encoding.

use std::ops::Range;

/// Bytes that `http::uri::PathAndQuery` refuses in the path (before `?`) and
/// that are visible ASCII, so percent-encoding them is lossless.
/// `tests::tables_match_http_crate` re-derives this from the `http` crate.
pub(super) const PATH_REFUSED: [bool; 256] = byte_table(b"<>`");

/// Bytes that `http::uri::PathAndQuery` refuses in the query; see
/// [`PATH_REFUSED`].
pub(super) const QUERY_REFUSED: [bool; 256] = byte_table(b"\"<>");

pub(super) const fn byte_table(bytes: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
}

/// Offset in a request target where its path-and-query begins, if it has one
/// we may touch: origin-form starts with it; in absolute-form it follows the
/// authority. Asterisk- and authority-form have none.
pub(super) fn path_start(target: &[u8]) -> Option<usize> {
    if target.first() == Some(&b'/') {
        return Some(0);
    }
    let sep = target.windows(3).position(|w| w == b"://")?;
    let scheme = &target[..sep];
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return None;
    }
    // The authority ends where the `http` crate ends it.
    let authority = sep + 3;
    let len = target[authority..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))?;
    Some(authority + len)
}

/// Walks a path-and-query, calling `f` with each byte and whether it must be
/// percent-encoded. Stops at `#`: the `http` crate drops the fragment
/// unchecked, so whatever follows is left alone.
pub(super) fn walk_target(target: &[u8], mut f: impl FnMut(u8, bool)) -> usize {
    let mut in_query = false;
    for (i, &b) in target.iter().enumerate() {
        if b == b'#' {
            return i;
        }
        let refused = if in_query {
            QUERY_REFUSED[usize::from(b)]
        } else {
            in_query = b == b'?';
            PATH_REFUSED[usize::from(b)]
        };
        f(b, refused);
    }
    target.len()
}

pub(super) fn count_refused(target: &[u8]) -> usize {
    let mut count = 0;
    walk_target(target, |_, refused| count += usize::from(refused));
    count
}

/// Copies `head` into `out` with the refused bytes in `target` (a range of
/// `head` holding a path-and-query) percent-encoded.
pub(super) fn rewrite_into(head: &[u8], target: Range<usize>, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let part = &head[target.clone()];
    out.reserve(head.len() + 2 * count_refused(part));
    out.extend_from_slice(&head[..target.start]);
    let walked = walk_target(part, |b, refused| {
        if refused {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.push(b);
        }
    });
    out.extend_from_slice(&part[walked..]);
    out.extend_from_slice(&head[target.end..]);
}
