//! Who the client is when the connection comes from a load balancer or proxy the operator
//! trusts (`server.trusted_proxies`): the right-most address in `X-Forwarded-For` (or, without
//! it, `Forwarded`, RFC 7239) that is not itself a trusted proxy. Each hop appends the address
//! it saw, so everything left of the last trusted hop's entry was written by the client and
//! may be forged; walking from the right and stopping at the first untrusted address takes
//! only what trusted hops vouch for (RFC 7239 §7.4, MDN's "X-Forwarded-For" security notes).
//!
//! From an untrusted peer the headers are ignored (and, when forwarded, appended to as
//! before), so a caller cannot pick its own address for `allow_ips`.
//!
//! PERF: with no trusted proxies (the default) this is one length check per request; from a
//! trusted peer the header is walked in place, without allocating.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, FORWARDED};

use super::headers::X_FORWARDED_FOR;
use crate::config::TrustedProxies;

/// The client's address: `peer` itself unless `peer` is a trusted proxy that says who it
/// forwards for.
#[inline]
pub fn client(trusted: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    from_headers(trusted, peer, headers)
}

#[cold]
fn from_headers(trusted: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if headers.contains_key(&X_FORWARDED_FOR) {
        // Several header lines are one list, in order (RFC 9110 §5.3).
        let entries = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|v| v.to_str().unwrap_or("").rsplit(','))
            .map(parse_xff_entry);
        walk(trusted, peer, entries)
    } else if headers.contains_key(FORWARDED) {
        let entries = headers
            .get_all(FORWARDED)
            .iter()
            .rev()
            .flat_map(|v| v.to_str().unwrap_or("").rsplit(','))
            .map(parse_forwarded_element);
        walk(trusted, peer, entries)
    } else {
        peer
    }
}

/// From the right: trusted hops are skipped, the first other address is the client. An entry
/// that is not an address (`unknown`, an obfuscated name, garbage) ends the walk at the last
/// trusted hop: nothing left of it can be vouched for. All trusted: the left-most.
fn walk(
    trusted: &TrustedProxies,
    peer: IpAddr,
    entries: impl Iterator<Item = Option<IpAddr>>,
) -> IpAddr {
    let mut last = peer;
    for entry in entries {
        let Some(ip) = entry else {
            return last;
        };
        if !trusted.contains(ip) {
            return ip;
        }
        last = ip;
    }
    last
}

/// `203.0.113.7`, `2001:db8::1`, and the forms some balancers send: `203.0.113.7:5123`,
/// `[2001:db8::1]:5123`, `[2001:db8::1]`.
fn parse_xff_entry(entry: &str) -> Option<IpAddr> {
    parse_addr(entry.trim())
}

fn parse_addr(s: &str) -> Option<IpAddr> {
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })?;
    Some(ip.to_canonical())
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.60;proto=http;by=203.0.113.43`,
/// `for="[2001:db8:cafe::17]:4711"`). An element without `for=` says nothing: `None`.
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    parse_addr(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_untrusted_peers_claims_are_ignored() {
        let lb = trusted(&["10.0.0.0/8"]);
        let spoofed = headers(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("forwarded", "for=192.0.2.2"),
        ]);
        assert_eq!(client(&lb, ip("203.0.113.9"), &spoofed), ip("203.0.113.9"));
        // Nothing trusted (the default): never read.
        assert_eq!(
            client(&TrustedProxies::default(), ip("10.1.1.1"), &spoofed),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let lb = trusted(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let peer = ip("10.0.0.5");
        // The client forged the first entry; the balancer appended what it saw.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7")]);
        assert_eq!(client(&lb, peer, &h), ip("198.51.100.7"));
        // A chain of trusted proxies, over two header lines.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 198.51.100.7"),
            ("x-forwarded-for", "10.2.0.1,10.3.0.1"),
        ]);
        assert_eq!(client(&lb, peer, &h), ip("198.51.100.7"));
        // IPv6, with brackets and ports, and IPv4-mapped addresses.
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:443, [2001:db8:ffff::1]")]);
        assert_eq!(client(&lb, peer, &h), ip("2001:db8::7"));
        let h = headers(&[("x-forwarded-for", "198.51.100.7:5123, ::ffff:10.9.9.9")]);
        assert_eq!(client(&lb, ip("::ffff:10.0.0.5"), &h), ip("198.51.100.7"));
        // Only trusted hops: the left-most of them.
        let h = headers(&[("x-forwarded-for", "10.7.0.1, 10.8.0.1")]);
        assert_eq!(client(&lb, peer, &h), ip("10.7.0.1"));
        // No header: the peer.
        assert_eq!(client(&lb, peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        let lb = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.7, not-an-ip, 10.2.0.1")]);
        assert_eq!(client(&lb, ip("10.0.0.5"), &h), ip("10.2.0.1"));
        let h = headers(&[("x-forwarded-for", "")]);
        assert_eq!(client(&lb, ip("10.0.0.5"), &h), ip("10.0.0.5"));
    }

    #[test]
    fn forwarded_is_read_when_x_forwarded_for_is_absent() {
        let lb = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.5");
        let h = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.1.0.1;by=10.0.0.5",
        )]);
        assert_eq!(client(&lb, peer, &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=unknown, for=10.1.0.1")]);
        assert_eq!(client(&lb, peer, &h), ip("10.1.0.1"));
        let h = headers(&[
            ("forwarded", "for=198.51.100.7"),
            ("x-forwarded-for", "203.0.113.1"),
        ]);
        assert_eq!(
            client(&lb, peer, &h),
            ip("203.0.113.1"),
            "X-Forwarded-For wins"
        );
    }
}
