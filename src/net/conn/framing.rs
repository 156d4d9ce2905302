//! Where the inbound byte stream is in terms of HTTP/1.1 message framing (RFC 9112 §6), decided
//! the way hyper's server decides it, so that request targets are rewritten in heads and never
//! in bodies.

use std::ops::Range;

use super::recycle;
use super::target::{count_refused, path_start, rewrite_into};

/// Header slots for parsing a head: hyper's default limit is 100, and a head
/// with more than this is refused rather than misread.
pub(super) const MAX_HEADERS: usize = 128;

/// Where the inbound stream is, in terms of HTTP/1.1 message framing.
#[derive(Debug, Clone, Copy)]
pub(super) enum State {
    /// Accumulating a request head.
    Head(HeadScan),
    /// Inside a `Content-Length` body; the count of bytes still to come.
    Fixed(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// An HTTP/2 connection (the preface was sniffed): bytes pass unchanged, and hyper's h2
    /// and `net/bounds.rs` own its framing and timeouts.
    H2,
    /// A head hyper will refuse (or one the wrapper cannot follow) has been handed over;
    /// nothing after it is.
    Refused,
}

impl State {
    pub(super) fn head() -> Self {
        State::Head(HeadScan::default())
    }
}

/// Result of offering bytes to a head in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeadStep {
    /// The first `n` offered bytes are to be forwarded exactly as they are,
    /// from where they are; nothing was copied.
    InPlace(usize),
    /// The first `n` offered bytes were taken; whatever is ready to forward
    /// is in `Framer::out`.
    Taken(usize),
}

/// The framing state machine, separate from I/O.
#[derive(Debug)]
pub(super) struct Framer {
    pub(super) state: State,
    /// The head in progress, when it spans reads.
    pub(super) head: Vec<u8>,
    /// Processed bytes ready to forward: a complete (possibly rewritten) head,
    /// or a partial head being given up on.
    pub(super) out: Vec<u8>,
    /// A head carried both `Content-Length` and `Transfer-Encoding`.
    pub(super) conflicting: bool,
    /// The longest head buffered for inspection.
    pub(super) max_head: usize,
}

impl Framer {
    pub(super) fn new(max_head: usize) -> Self {
        Self {
            state: State::head(),
            head: Vec::new(),
            out: Vec::new(),
            conflicting: false,
            max_head,
        }
    }

    pub(super) fn in_head(&self) -> bool {
        matches!(self.state, State::Head(_))
    }

    pub(super) fn is_refused(&self) -> bool {
        matches!(self.state, State::Refused)
    }

    /// Offers bytes to the head in progress. Only valid in the `Head` state
    /// and with `out` drained, so that output keeps stream order.
    pub(super) fn feed_head(&mut self, data: &[u8]) -> HeadStep {
        debug_assert!(self.out.is_empty());
        let State::Head(scan) = &mut self.state else {
            unreachable!("feed_head outside a head");
        };
        let window = &data[..data.len().min(self.max_head - self.head.len())];
        let Some(last) = scan.find_end(window) else {
            if window.len() == data.len() {
                self.head.extend_from_slice(data);
                return HeadStep::Taken(data.len());
            }
            // Over the cap, which is above hyper's header limit: hyper answers 431 for the
            // capped head it gets, and nothing after it reaches hyper.
            self.state = State::Refused;
            if self.head.is_empty() {
                return HeadStep::InPlace(window.len());
            }
            self.head.extend_from_slice(window);
            std::mem::swap(&mut self.head, &mut self.out);
            return HeadStep::Taken(window.len());
        };
        let end = last + 1;
        if self.head.is_empty() {
            // The whole head arrived in one piece: the common case, which
            // costs no copy unless the target needs rewriting.
            let head = &data[..end];
            let verdict = examine(head);
            self.state = verdict.next;
            self.conflicting |= verdict.conflicting;
            return match verdict.rewrite {
                None => HeadStep::InPlace(end),
                Some(target) => {
                    rewrite_into(head, target, &mut self.out);
                    HeadStep::Taken(end)
                }
            };
        }
        self.head.extend_from_slice(&data[..end]);
        let verdict = examine(&self.head);
        self.state = verdict.next;
        self.conflicting |= verdict.conflicting;
        match verdict.rewrite {
            None => std::mem::swap(&mut self.head, &mut self.out),
            Some(target) => {
                rewrite_into(&self.head, target, &mut self.out);
                recycle(&mut self.head);
            }
        }
        HeadStep::Taken(end)
    }

    /// Counts the leading bytes of `data` that belong to the current body (or
    /// to an HTTP/2 stream) and advances past them. Returns less than
    /// `data.len()` only when a message ended inside `data` (a head follows)
    /// or the body turned out malformed (the state is then `Refused`); it
    /// never returns 0 for non-empty `data` in a body or HTTP/2 state.
    pub(super) fn pass_len(&mut self, data: &[u8]) -> usize {
        match &mut self.state {
            State::Head(_) => unreachable!("pass_len inside a head"),
            State::Refused => 0,
            State::H2 => data.len(),
            State::Fixed(remaining) => {
                let n = usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.state = State::head();
                }
                n
            }
            State::Chunked(chunk) => {
                let (n, next) = chunk.advance(data);
                match next {
                    ChunkNext::More(c) => *chunk = c,
                    // hyper answers a request with both lengths and closes: what follows
                    // is never read as a request (the gateway refuses it anyway).
                    ChunkNext::Done if self.conflicting => self.state = State::Refused,
                    ChunkNext::Done => self.state = State::head(),
                    // hyper fails this body at the same byte and closes the connection.
                    ChunkNext::Bad => self.state = State::Refused,
                }
                n
            }
        }
    }

    /// At EOF: moves a partial head to `out` unchanged, so hyper sees what the
    /// client sent. Returns whether there was one.
    pub(super) fn flush_partial_head(&mut self) -> bool {
        if self.head.is_empty() {
            return false;
        }
        self.state = State::Refused;
        std::mem::swap(&mut self.head, &mut self.out);
        true
    }
}

/// Incremental search for the blank line that ends a head.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HeadScan {
    line: Line,
    /// Whether a non-blank line has started. httparse skips blank lines
    /// before the request line (RFC 9112 §2.2), so those end nothing.
    content: bool,
}

/// What the current line holds so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Line {
    #[default]
    Empty,
    Cr,
    Text,
}

impl HeadScan {
    /// Returns the index of the `\n` that ends the head, if `data` holds it.
    /// Like httparse, accepts both `\r\n` and bare `\n` line endings.
    pub(super) fn find_end(&mut self, data: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < data.len() {
            if self.line == Line::Text {
                // Nothing inside a line matters; jump to its end.
                let nl = data[i..].iter().position(|&b| b == b'\n')?;
                i += nl + 1;
                self.line = Line::Empty;
                continue;
            }
            match data[i] {
                b'\n' if self.content => return Some(i),
                b'\n' => self.line = Line::Empty,
                b'\r' if self.line == Line::Empty => self.line = Line::Cr,
                _ => {
                    self.line = Line::Text;
                    self.content = true;
                }
            }
            i += 1;
        }
        None
    }
}

/// What to do with a complete head.
#[derive(Debug)]
pub(super) struct Verdict {
    /// State for the bytes after the head.
    next: State,
    /// Range of the head to percent-encode, if it holds any refused byte.
    rewrite: Option<Range<usize>>,
    /// Both `Content-Length` and `Transfer-Encoding` were present.
    conflicting: bool,
}

/// Parses a complete head the way hyper does and decides how to forward it
/// and what follows it.
pub(super) fn examine(head: &[u8]) -> Verdict {
    let refused = Verdict {
        next: State::Refused,
        rewrite: None,
        conflicting: false,
    };
    // PERF: uninitialised slots, as hyper parses: `[EMPTY_HEADER; 128]` would write 4 KiB
    // of stack on every request head.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    // Anything but a clean parse that ends exactly at our blank line (a
    // malformed head, too many headers) goes to hyper, which refuses it too.
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        _ => return refused,
    }
    let (Some(target), Some(version)) = (req.path, req.version) else {
        return refused;
    };
    let has = |name: &[u8]| {
        req.headers
            .iter()
            .any(|h| h.name.as_bytes().eq_ignore_ascii_case(name))
    };
    let conflicting = has(b"transfer-encoding") && has(b"content-length");
    let next = framing(version, req.headers);
    let target = target.as_bytes();
    // httparse hands back a subslice of `head`; its offset locates the target.
    let offset = target.as_ptr() as usize - head.as_ptr() as usize;
    debug_assert_eq!(&head[offset..offset + target.len()], target);
    let rewrite = path_start(target)
        .filter(|&start| count_refused(&target[start..]) > 0)
        .map(|start| offset + start..offset + target.len());
    Verdict {
        next,
        rewrite,
        conflicting,
    }
}

/// The framing of the body after a request head, mirroring hyper's server
/// (RFC 9112 §6.3): `Transfer-Encoding` ending in `chunked`, else a
/// `Content-Length`, else no body. `Upgrade` and `CONNECT` change nothing: the
/// gateway never answers 101 or a 2xx to CONNECT, so hyper keeps reading
/// HTTP/1. A head whose framing hyper refuses is `Refused`.
pub(super) fn framing(version: u8, headers: &[httparse::Header<'_>]) -> State {
    let mut chunked = None;
    let mut length = None;
    let mut bad_length = false;
    for header in headers {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // hyper decides on the last Transfer-Encoding line.
            chunked = Some(is_chunked(header.value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            match (parse_digits(header.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(prev)) if n == prev => {}
                _ => bad_length = true,
            }
        }
    }
    match chunked {
        // Chunked is HTTP/1.1 only, must be the last coding, and beside a
        // malformed length hyper's verdict depends on header order: refused.
        Some(_) if version != 1 || bad_length => State::Refused,
        Some(false) => State::Refused,
        // With a Content-Length too (the shape of request smuggling), hyper
        // goes by chunked; the gateway answers 400 and `pass_len` stops after
        // the body.
        Some(true) => State::Chunked(Chunk::Start),
        None if bad_length => State::Refused,
        None => match length {
            Some(0) | None => State::head(),
            Some(n) => State::Fixed(n),
        },
    }
}

/// hyper's test: the last comma-separated coding is `chunked`.
pub(super) fn is_chunked(value: &[u8]) -> bool {
    // hyper needs the value as visible ASCII; anything else is not chunked.
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return false;
    }
    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// A `Content-Length` value as hyper reads it: ASCII digits only, no sign,
/// no list, no overflow.
pub(super) fn parse_digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| match b {
        b'0'..=b'9' => acc.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// Position in a chunked body, following hyper's decoder state for state so
/// that both agree on where the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Expecting the first hex digit of a chunk size.
    Start,
    /// In the chunk size; the value so far.
    Size(u64),
    /// In whitespace after the chunk size.
    SizeLws(u64),
    /// In a chunk extension.
    Ext(u64),
    /// Expecting the `\n` of the chunk-size line.
    SizeLf(u64),
    /// In chunk data; the count of bytes still to come (never 0).
    Data(u64),
    /// Expecting the `\r` after chunk data.
    DataCr,
    /// Expecting the `\n` after chunk data.
    DataLf,
    /// After the last chunk or a trailer line: a blank line or a trailer.
    EndCr,
    /// In a trailer line.
    Trailer,
    /// Expecting the `\n` of a trailer line.
    TrailerLf,
    /// Expecting the `\n` of the final blank line.
    EndLf,
}

/// Where a chunked body goes after some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkNext {
    /// Still inside the body.
    More(Chunk),
    /// The body ended.
    Done,
    /// Not a chunked body hyper would accept.
    Bad,
}

impl Chunk {
    /// Consumes bytes of `data` up to the end of the body. Returns how many
    /// were consumed and where that leaves the body.
    pub(super) fn advance(self, data: &[u8]) -> (usize, ChunkNext) {
        let mut state = self;
        let mut i = 0;
        while i < data.len() {
            if let Chunk::Data(remaining) = state {
                // Chunk data is skipped in bulk; it is only counted.
                let n =
                    usize::try_from(remaining).map_or(data.len() - i, |r| r.min(data.len() - i));
                i += n;
                state = match remaining - n as u64 {
                    0 => Chunk::DataCr,
                    left => Chunk::Data(left),
                };
                continue;
            }
            let next = state.step(data[i]);
            i += 1;
            match next {
                ChunkNext::More(s) => state = s,
                end => return (i, end),
            }
        }
        (i, ChunkNext::More(state))
    }

    /// One byte of chunk framing, with hyper's grammar: CRLF required after
    /// size lines and data, bare LF refused in extensions, trailers end at CR.
    pub(super) fn step(self, b: u8) -> ChunkNext {
        use ChunkNext::{Bad, Done, More};
        match (self, b) {
            (Chunk::Start, _) => hex_digit(b).map_or(Bad, |d| More(Chunk::Size(d))),
            (Chunk::Size(size), _) if b.is_ascii_hexdigit() => size
                .checked_mul(16)
                .zip(hex_digit(b))
                .and_then(|(s, d)| s.checked_add(d))
                .map_or(Bad, |s| More(Chunk::Size(s))),
            (Chunk::Size(size) | Chunk::SizeLws(size), b'\t' | b' ') => More(Chunk::SizeLws(size)),
            (Chunk::Size(size) | Chunk::SizeLws(size), b';') => More(Chunk::Ext(size)),
            (Chunk::Size(size) | Chunk::SizeLws(size) | Chunk::Ext(size), b'\r') => {
                More(Chunk::SizeLf(size))
            }
            (Chunk::Size(_) | Chunk::SizeLws(_), _) => Bad,
            (Chunk::Ext(_), b'\n') => Bad,
            (Chunk::Ext(size), _) => More(Chunk::Ext(size)),
            (Chunk::SizeLf(0), b'\n') => More(Chunk::EndCr),
            (Chunk::SizeLf(size), b'\n') => More(Chunk::Data(size)),
            (Chunk::SizeLf(_), _) => Bad,
            (Chunk::Data(_), _) => unreachable!("chunk data is skipped in bulk"),
            (Chunk::DataCr, b'\r') => More(Chunk::DataLf),
            (Chunk::DataLf, b'\n') => More(Chunk::Start),
            (Chunk::DataCr | Chunk::DataLf, _) => Bad,
            (Chunk::EndCr, b'\r') => More(Chunk::EndLf),
            (Chunk::Trailer, b'\r') => More(Chunk::TrailerLf),
            (Chunk::EndCr | Chunk::Trailer, _) => More(Chunk::Trailer),
            (Chunk::TrailerLf, b'\n') => More(Chunk::EndCr),
            (Chunk::EndLf, b'\n') => Done,
            (Chunk::TrailerLf | Chunk::EndLf, _) => Bad,
        }
    }
}

pub(super) fn hex_digit(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}
