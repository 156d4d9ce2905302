//! Request paths normalised the way Coupa's router sees them, split without allocating: the
//! scope lookup and the category lookup both match against these segments.

use std::cmp::Ordering;

/// Most segments any sensible Coupa path has, with room to spare; the stack array's size.
const MAX_SEGMENTS: usize = 32;

/// A path segment as received (maybe percent-encoded), compared to literals decoded.
#[derive(Debug, Clone, Copy)]
pub(super) struct PathSeg<'a> {
    raw: &'a str,
    /// Whether `raw` contains `%`: the slow, decoding comparison is needed only then.
    pct: bool,
}

impl<'a> PathSeg<'a> {
    const EMPTY: PathSeg<'static> = PathSeg {
        raw: "",
        pct: false,
    };

    fn new(raw: &'a str) -> Self {
        PathSeg {
            raw,
            pct: raw.bytes().any(|b| b == b'%'),
        }
    }

    /// Compares the decoded segment with `lit` byte-wise (the order `str` uses).
    pub(super) fn cmp_lit(self, lit: &str) -> Ordering {
        if self.pct {
            decoded(self.raw).cmp(lit.bytes())
        } else {
            self.raw.cmp(lit)
        }
    }

    /// PERF: `==`, not `cmp_lit`: unequal lengths answer without a `memcmp` call, and the
    /// constant `.`, `..` and `api` compile to a few compares. With the bucket order below:
    /// the scope lookup of a paged GET 1 200 → 680 instructions (callgrind).
    pub(super) fn is(self, lit: &str) -> bool {
        if self.pct {
            decoded(self.raw).eq(lit.bytes())
        } else {
            self.raw == lit
        }
    }

    /// Orders the decoded segment against `lit` by length, then byte-wise: the bucket order.
    /// PERF: most binary-search steps then decide on the lengths alone, without a `memcmp`.
    pub(super) fn cmp_len_first(self, lit: &str) -> Ordering {
        if self.pct {
            let len = decoded(self.raw).count();
            len.cmp(&lit.len())
                .then_with(|| decoded(self.raw).cmp(lit.bytes()))
        } else {
            self.raw
                .len()
                .cmp(&lit.len())
                .then_with(|| self.raw.cmp(lit))
        }
    }

    /// `abandon.json` → `abandon`: Rails routes take an optional `(.:format)` `[INF]`.
    #[allow(
        clippy::manual_pattern_char_comparison,
        reason = "PERF: as in `ParsedPath::parse`"
    )]
    fn without_format(self) -> Self {
        match self.raw.split_once(|c| c == '.') {
            Some((stem, ext))
                if !stem.is_empty()
                    && !ext.is_empty()
                    && ext.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                PathSeg::new(stem)
            }
            _ => self,
        }
    }
}

/// The bytes of `raw` with valid `%XX` escapes decoded; invalid ones are kept literally.
fn decoded(raw: &str) -> impl Iterator<Item = u8> + '_ {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = raw.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *bytes.get(i)?;
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                i += 3;
                return Some(h << 4 | l);
            }
        }
        i += 1;
        Some(b)
    })
}

/// A path split into normalised segments, on the stack.
pub(super) struct ParsedPath<'a> {
    segs: [PathSeg<'a>; MAX_SEGMENTS],
    len: usize,
}

impl<'a> ParsedPath<'a> {
    /// Normalises like RFC 3986 §5.2.4 plus Rails' `//` squeezing, so `/api//invoices/./5` and
    /// `/api/users/../invoices` are judged as the resource Coupa will actually serve.
    #[allow(
        clippy::manual_pattern_char_comparison,
        reason = "PERF: see the comment below"
    )]
    pub(super) fn parse(path: &'a str) -> Option<Self> {
        // PERF: closure patterns: a char pattern starts a memchr search per call, which costs
        // more than walking these few short segments (with proxy/path.rs: ~700 instructions
        // per request before, callgrind; benches/RESULTS.md).
        let path = path.split_once(|c| c == '?').map_or(path, |(p, _)| p);
        let rest = path.strip_prefix('/')?;
        let mut parsed = ParsedPath {
            segs: [PathSeg::EMPTY; MAX_SEGMENTS],
            len: 0,
        };
        for raw in rest.split(|c| c == '/') {
            let seg = PathSeg::new(raw);
            if raw.is_empty() || seg.is(".") {
                continue;
            }
            if seg.is("..") {
                parsed.len = parsed.len.saturating_sub(1);
                continue;
            }
            if parsed.len == MAX_SEGMENTS {
                return None;
            }
            parsed.segs[parsed.len] = seg;
            parsed.len += 1;
        }
        if parsed.len == 0 || !parsed.segs[0].is("api") {
            return None;
        }
        if parsed.len > 1 {
            let last = parsed.len - 1;
            parsed.segs[last] = parsed.segs[last].without_format();
        }
        Some(parsed)
    }

    /// The segments after `api`.
    pub(super) fn resource_segs(&self) -> &[PathSeg<'a>] {
        &self.segs[1..self.len]
    }
}
