//! The PROXY protocol (HAProxy, versions 1 and 2; <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>):
//! an L4 load balancer (AWS NLB, HAProxy in TCP mode) that cannot add `X-Forwarded-For`
//! prefixes each connection with a small header naming the client's address, before any TLS.
//!
//! With `server.proxy_protocol = true` every connection to the proxy listener must start with
//! one; a connection without a valid header is closed (a listener that guessed would let a
//! client that reaches it directly write its own address). Only what the header needs is
//! read, so the bytes after it are the TLS handshake or the HTTP request, untouched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::TrustedProxies;

/// The version 2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 line is at most 107 bytes, `\r\n` included.
const V1_MAX: usize = 107;
/// Version 2 addresses and TLVs are bounded by the protocol's 16-bit length; a balancer's
/// TLVs (AWS: VPC endpoint id, TLS details) stay far below this, so anything larger is refused
/// rather than buffered.
const V2_MAX_LEN: usize = 4096;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadProxyHeader {
    /// The first bytes are neither `PROXY ` nor the version 2 signature.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// A version 1 line that does not parse.
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    /// A version 2 header that does not parse.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
    /// The connection ended or failed inside the header.
    #[error("the connection ended inside the PROXY header")]
    Truncated,
}

/// The address a connection from `peer` serves, when the listener expects PROXY headers:
/// the client the header names (or `peer` for the balancer's own connections), or `None` when
/// the connection must be closed: `peer` is not in `trusted` (when that list is set), or the
/// header is missing, malformed or not complete within `timeout` (`server.header_timeout`).
pub async fn accept<R: AsyncRead + Unpin>(
    io: &mut R,
    peer: SocketAddr,
    trusted: &TrustedProxies,
    timeout: Duration,
) -> Option<SocketAddr> {
    if !trusted.is_empty() && !trusted.contains(peer.ip()) {
        tracing::debug!(%peer, "PROXY protocol connection from outside server.trusted_proxies; closed");
        return None;
    }
    match tokio::time::timeout(timeout, read_header(io)).await {
        Ok(Ok(client)) => Some(client.unwrap_or(peer)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "PROXY protocol header refused; connection closed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "no PROXY protocol header within server.header_timeout");
            None
        }
    }
}

/// Reads the PROXY header at the start of `io` and returns the client address it names:
/// `None` when the header says the connection is the balancer's own (v1 `UNKNOWN`, v2
/// `LOCAL`, or an address family other than TCP over IPv4/IPv6), so the TCP peer stands.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<SocketAddr>, BadProxyHeader> {
    let mut start = [0u8; 12];
    io.read_exact(&mut start)
        .await
        .map_err(|_| BadProxyHeader::Truncated)?;
    if start == V2_SIGNATURE {
        let mut fixed = [0u8; 4];
        io.read_exact(&mut fixed)
            .await
            .map_err(|_| BadProxyHeader::Truncated)?;
        let len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        if len > V2_MAX_LEN {
            return Err(BadProxyHeader::V2("longer than 4096 bytes"));
        }
        let mut rest = vec![0u8; len];
        io.read_exact(&mut rest)
            .await
            .map_err(|_| BadProxyHeader::Truncated)?;
        return parse_v2(fixed[0], fixed[1], &rest);
    }
    if !start.starts_with(b"PROXY ") {
        return Err(BadProxyHeader::Missing);
    }
    // Byte by byte up to the line end: reading further would take the request's bytes.
    let mut line = Vec::with_capacity(V1_MAX);
    line.extend_from_slice(&start);
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(BadProxyHeader::V1("no CRLF within 107 bytes"));
        }
        let byte = io.read_u8().await.map_err(|_| BadProxyHeader::Truncated)?;
        line.push(byte);
    }
    parse_v1(&line[..line.len() - 2])
}

/// `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443` (without the CRLF).
fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, BadProxyHeader> {
    let line = std::str::from_utf8(line).map_err(|_| BadProxyHeader::V1("not ASCII"))?;
    let mut parts = line.split(' ');
    let _proxy = parts.next();
    let family = parts.next().ok_or(BadProxyHeader::V1("no protocol"))?;
    if family == "UNKNOWN" {
        // The balancer's own connection (health check); the rest of the line is ignored.
        return Ok(None);
    }
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(BadProxyHeader::V1(
            "expected PROXY TCP4|TCP6 SRC DST SPORT DPORT",
        ));
    };
    let src: IpAddr = match family {
        "TCP4" => src
            .parse::<Ipv4Addr>()
            .map_err(|_| BadProxyHeader::V1("source is not an IPv4 address"))?
            .into(),
        "TCP6" => src
            .parse::<Ipv6Addr>()
            .map_err(|_| BadProxyHeader::V1("source is not an IPv6 address"))?
            .into(),
        _ => return Err(BadProxyHeader::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let port = |p: &str| {
        // No sign, no leading zeros (the spec's form); u16 bounds the value.
        if p.starts_with('+') || (p.len() > 1 && p.starts_with('0')) {
            return None;
        }
        p.parse::<u16>().ok()
    };
    let (Some(sport), Some(_)) = (port(sport), port(dport)) else {
        return Err(BadProxyHeader::V1("port is not a number 0-65535"));
    };
    if dst.parse::<IpAddr>().is_err() {
        return Err(BadProxyHeader::V1("destination is not an address"));
    }
    Ok(Some(SocketAddr::new(src, sport)))
}

/// The version 2 header after the signature: version and command, family and transport,
/// then the addresses (and TLVs, ignored).
fn parse_v2(
    version_command: u8,
    family: u8,
    body: &[u8],
) -> Result<Option<SocketAddr>, BadProxyHeader> {
    if version_command >> 4 != 2 {
        return Err(BadProxyHeader::V2("version is not 2"));
    }
    match version_command & 0x0f {
        // LOCAL: the balancer's own connection (health check); addresses are to be ignored.
        0 => return Ok(None),
        1 => {}
        _ => return Err(BadProxyHeader::V2("command is neither LOCAL nor PROXY")),
    }
    match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a: &[u8; 12] = body
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(BadProxyHeader::V2("too short for IPv4 addresses"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        0x21 => {
            let a: &[u8; 36] = body
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(BadProxyHeader::V2("too short for IPv6 addresses"))?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&a[..16]);
            Ok(Some(SocketAddr::new(
                Ipv6Addr::from(src).into(),
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        // UNSPEC, UDP or UNIX sockets: nothing usable as a client address; the peer stands.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, BadProxyHeader>, Vec<u8>) {
        let mut io = bytes;
        let result = read_header(&mut io).await;
        (result, io.to_vec())
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn version_1_names_the_client_and_leaves_the_request() {
        let (addr, rest) =
            read(b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(addr, Ok(Some("192.0.2.1:56324".parse().unwrap())));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (addr, _) = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 443\r\n").await;
        assert_eq!(addr, Ok(Some("[2001:db8::1]:1".parse().unwrap())));
        let (addr, rest) = read(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n\x16\x03").await;
        assert_eq!(addr, Ok(None));
        assert_eq!(rest, b"\x16\x03");
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.0, Ok(None));
    }

    #[tokio::test]
    async fn malformed_version_1_headers_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.1 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.1 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.1 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 nope 1 2\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.1 1 2\r\n",
        ] {
            let (result, _) = read(bad).await;
            assert!(
                matches!(result, Err(BadProxyHeader::V1(_))),
                "{:?}: {result:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        assert!(matches!(
            read(long.as_bytes()).await.0,
            Err(BadProxyHeader::V1(_))
        ));
        assert_eq!(
            read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.0,
            Err(BadProxyHeader::Missing)
        );
        assert_eq!(
            read(b"PROXY TCP4 192.0.2.1").await.0,
            Err(BadProxyHeader::Truncated)
        );
        assert_eq!(read(b"PROX").await.0, Err(BadProxyHeader::Truncated));
    }

    #[tokio::test]
    async fn version_2_names_the_client_and_skips_tlvs() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb];
        body.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'i']); // a TLV
        let mut bytes = v2(1, 0x11, &body);
        bytes.extend_from_slice(b"GET /");
        let (addr, rest) = read(&bytes).await;
        assert_eq!(addr, Ok(Some("192.0.2.1:56324".parse().unwrap())));
        assert_eq!(rest, b"GET /");

        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[0, 80, 1, 187]);
        let (addr, _) = read(&v2(1, 0x21, &body)).await;
        assert_eq!(addr, Ok(Some("[2001:db8::7]:80".parse().unwrap())));

        // LOCAL (a health check) and UNIX sockets: the TCP peer stands.
        assert_eq!(read(&v2(0, 0x00, &[])).await.0, Ok(None));
        assert_eq!(read(&v2(1, 0x31, &[0; 216])).await.0, Ok(None));
    }

    #[tokio::test]
    async fn malformed_version_2_headers_are_refused() {
        // Addresses shorter than the family needs.
        assert!(matches!(
            read(&v2(1, 0x11, &[1, 2, 3])).await.0,
            Err(BadProxyHeader::V2(_))
        ));
        assert!(matches!(
            read(&v2(1, 0x21, &[0; 12])).await.0,
            Err(BadProxyHeader::V2(_))
        ));
        // Unknown command; wrong version.
        assert!(matches!(
            read(&v2(5, 0x11, &[0; 12])).await.0,
            Err(BadProxyHeader::V2(_))
        ));
        let mut v1_in_v2 = v2(1, 0x11, &[0; 12]);
        v1_in_v2[12] = 0x11;
        assert!(matches!(
            read(&v1_in_v2).await.0,
            Err(BadProxyHeader::V2(_))
        ));
        // Length beyond what arrives, or beyond the cap.
        let mut cut = v2(1, 0x11, &[0; 12]);
        cut.truncate(20);
        assert_eq!(read(&cut).await.0, Err(BadProxyHeader::Truncated));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(read(&huge).await.0, Err(BadProxyHeader::V2(_))));
    }
}
