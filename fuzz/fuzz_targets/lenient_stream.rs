//! Arbitrary bytes through `LenientTargets`, delivered in an arbitrary pattern of reads and
//! stalls and read out in arbitrary sizes. Checks that it never panics or stalls; that the
//! output is the input with some bytes replaced by their `%XX` escapes, each of them inside
//! the target of a line shaped like an HTTP/1 request line and refused by hyper in that part
//! of the target; that it may end early (after a head it hands to hyper to refuse) but never
//! adds or reorders bytes; and that the read pattern changes nothing.

#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use arbitrary::Arbitrary;
use coupa_gateway::net::conn::LenientTargets;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Sizes of the connection's reads, cycled; 0 stalls (`Pending`) once.
    reads: Vec<u8>,
    /// Size of the reader's buffer, less one.
    out_size: u8,
    /// The bytes the client sends.
    stream: Vec<u8>,
}

/// An in-memory connection following a script of read sizes.
struct Scripted<'a> {
    data: &'a [u8],
    reads: &'a [u8],
    next: usize,
    stalled: bool,
}

impl AsyncRead for Scripted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let size = match self.reads {
            [] => usize::MAX,
            reads => usize::from(reads[self.next % reads.len()]),
        };
        self.next += 1;
        // Never two stalls in a row, so every script makes progress.
        if size == 0 && !self.stalled {
            self.stalled = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.stalled = false;
        let n = size.max(1).min(buf.remaining()).min(self.data.len());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Everything the wrapper yields for `stream`, polled by hand (no runtime needed).
fn filter(stream: &[u8], reads: &[u8], out_size: usize) -> Vec<u8> {
    let conn = Scripted {
        data: stream,
        reads,
        next: 0,
        stalled: false,
    };
    let mut wrapper = LenientTargets::new(conn);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = vec![0; out_size];
    // Each poll yields output, reaches EOF, or passes on one stall of the script; output is
    // at most three times the input. More polls than that means the wrapper is stuck.
    let limit = 8 * stream.len() + 64;
    for _ in 0..limit {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut wrapper).poll_read(&mut cx, &mut rb) {
            Poll::Pending => {}
            Poll::Ready(Err(e)) => panic!("in-memory read failed: {e}"),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return out,
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
        }
    }
    panic!("no EOF after {limit} polls");
}

/// Whether `stream[i]`, percent-encoded, is a legitimate rewrite: inside the target of a
/// line ending in ` HTTP/1.0` or ` HTTP/1.1`, in its path-and-query (not the authority, not
/// the fragment), and refused by hyper there.
fn rewritable(stream: &[u8], i: usize) -> bool {
    let start = stream[..i]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let end = stream[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(stream.len(), |p| i + p);
    let line = &stream[start..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(before_version) = line
        .strip_suffix(b" HTTP/1.1")
        .or_else(|| line.strip_suffix(b" HTTP/1.0"))
    else {
        return false;
    };
    let Some(space) = before_version.iter().rposition(|&b| b == b' ') else {
        return false;
    };
    let target_start = start + space + 1;
    let target = &stream[target_start..start + before_version.len()];
    let Some(at) = i.checked_sub(target_start).filter(|&at| at < target.len()) else {
        return false;
    };
    let path_start = if target.first() == Some(&b'/') {
        0
    } else {
        let Some(sep) = target.windows(3).position(|w| w == b"://") else {
            return false;
        };
        match target[sep + 3..]
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        {
            Some(len) => sep + 3 + len,
            None => return false,
        }
    };
    let part = &target[path_start..];
    let Some(at) = at.checked_sub(path_start) else {
        return false;
    };
    if part[..at].contains(&b'#') {
        return false;
    }
    let refused: &[u8] = if part[..at].contains(&b'?') {
        b"\"<>"
    } else {
        b"<>`"
    };
    refused.contains(&part[at])
}

fuzz_target!(|input: Input| {
    let stream = &input.stream;
    let out = filter(stream, &input.reads, usize::from(input.out_size) + 1);

    // Align output with input: equal bytes, or one input byte as its upper-case escape. The
    // output may stop short of the input: nothing after a refused head reaches hyper.
    let (mut i, mut j) = (0, 0);
    while i < stream.len() && j < out.len() {
        if out.get(j) == Some(&stream[i]) {
            j += 1;
        } else {
            let escape = format!("%{:02X}", stream[i]);
            assert_eq!(
                out.get(j..j + 3),
                Some(escape.as_bytes()),
                "byte {i} ({:?}) changed into something other than its escape",
                stream[i] as char
            );
            assert!(
                rewritable(stream, i),
                "byte {i} rewritten outside a request target"
            );
            j += 3;
        }
        i += 1;
    }
    assert_eq!(j, out.len(), "output longer than the rewritten input");

    // One read into a large buffer must give exactly the same bytes.
    assert!(
        out == filter(stream, &[], 1 << 16),
        "the read pattern changed the output"
    );
});
