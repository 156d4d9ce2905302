//! Removes a client secret that a token endpoint echoes back in an error.
//!
//! Token endpoints, and the proxies and error pages in front of them, sometimes quote the
//! request they refused. The secret then comes back in whatever encoding that server used:
//! form-urlencoded as reqwest sent it (`%2F`, or `%2f`, `+` for a space), JSON-escaped (`\/`,
//! `\u002B`), as HTML character references (`&#x2F;`, `&amp;`), inside a base64
//! `Authorization: Basic` value (of `id:secret`, or of the form-urlencoded pair as RFC 6749
//! §2.3.1 asks), several of these at once, and possibly cut short. A literal search finds none
//! of these, and a list of encoded spellings is never complete.
//!
//! So the text is read in several *decoded views* instead: the text with one kind of escape
//! decoded, or a chain of up to three kinds (JSON inside a URL, a Basic value inside JSON).
//! Every byte of a view remembers which bytes of the original it came from. The secret is
//! searched for as plain bytes in every view, and the original bytes behind every match are
//! replaced. Hex case, which characters a server chose to escape, the base64 alphabet, its
//! padding and where the secret falls in a base64 blob all disappear in the decoding. This is
//! the error path: clarity over speed, with the input bounded by [`MAX_INPUT`].

/// What replaces the secret.
pub const MARKER: &str = "[redacted]";

/// Only this many bytes of a text are searched, and kept: an error body is shown as a short
/// excerpt, and decoding a huge one a few hundred times over would cost more than it shows.
pub const MAX_INPUT: usize = 64 * 1024;

/// The longest chain of decodings tried on one view. Two covers the usual double encodings
/// (JSON then percent); three covers a base64 Basic value of the form-urlencoded pair, itself
/// JSON- or percent-escaped.
const MAX_CHAIN: usize = 3;

/// A text cut short inside the secret leaks what comes before the cut; the shortest such
/// prefix redacted is this many bytes (or the whole secret, if shorter). Shorter prefixes
/// would redact common words that happen to start the secret.
const MIN_PREFIX: usize = 4;

/// The longest escape looked for at the end of a text cut short (`&#x0001F;` is 9 bytes).
const MAX_ESCAPE: usize = 10;

/// Returns `text` with every occurrence of `secret` replaced by [`MARKER`], in any of the
/// encodings above, including a prefix of the secret (at least four bytes) where the
/// text ends, as when a server truncates its error body in the middle of the secret.
///
/// Only the first [`MAX_INPUT`] bytes of `text` are kept; if it is longer, the result ends
/// with `…`. An empty `secret` redacts nothing.
pub fn redact(text: &str, secret: &str) -> String {
    let mut keep = text.len().min(MAX_INPUT);
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let kept = &text[..keep];
    let mut out = if secret.is_empty() {
        kept.to_string()
    } else {
        let mut search = Search {
            secret: secret.as_bytes(),
            text_len: kept.len(),
            found: Vec::new(),
        };
        search.view_and_decodings(&View::of(kept), 0, false);
        replace(kept, search.found)
    };
    if keep < text.len() {
        out.push('…');
    }
    out
}

/// A reading of the text: `bytes[i]` came from the original bytes `spans[i].0..spans[i].1`.
/// Spans never move backwards, so the bytes `i..j` of a view came from
/// `spans[i].0..spans[j - 1].1`.
struct View {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl View {
    /// The text as it is.
    fn of(text: &str) -> View {
        View {
            bytes: text.as_bytes().to_vec(),
            spans: (0..text.len()).map(|i| (i, i + 1)).collect(),
        }
    }

    fn with_capacity(n: usize) -> View {
        View {
            bytes: Vec::with_capacity(n),
            spans: Vec::with_capacity(n),
        }
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The original bytes behind this view's bytes `from..to`.
    fn span(&self, from: usize, to: usize) -> (usize, usize) {
        (self.spans[from].0, self.spans[to - 1].1)
    }

    fn push(&mut self, byte: u8, span: (usize, usize)) {
        self.bytes.push(byte);
        self.spans.push(span);
    }

    /// Appends byte `i` of `other` unchanged.
    fn copy(&mut self, other: &View, i: usize) {
        self.push(other.bytes[i], other.spans[i]);
    }
}

/// One kind of escape a server may have applied.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Decoding {
    /// `%XX`, hex in either case; `+` stays `+` (servers that print a URL, or that decode
    /// only some escapes).
    Percent,
    /// `%XX`, and `+` as a space: `application/x-www-form-urlencoded`, as the request went out.
    Form,
    /// JSON and JavaScript string escapes: `\/`, `\"`, `\uXXXX` (with surrogate pairs), `\xXX`.
    Backslash,
    /// HTML character references: `&#47;`, `&#x2F;`, `&sol;`, `&amp;`.
    Html,
    /// Base64 in either alphabet, padded or not, decoded from `skip` characters into each run
    /// of base64 characters: a blob need not start where its run does (`Basic%20...` leaves
    /// `20` in front of it), and one of the four skips lines up with it.
    Base64 { skip: usize },
}

const DECODINGS: [Decoding; 8] = [
    Decoding::Percent,
    Decoding::Form,
    Decoding::Backslash,
    Decoding::Html,
    Decoding::Base64 { skip: 0 },
    Decoding::Base64 { skip: 1 },
    Decoding::Base64 { skip: 2 },
    Decoding::Base64 { skip: 3 },
];

impl Decoding {
    /// `view` decoded, or `None` if it holds nothing to decode (the result would read the same
    /// as `view`, which is searched already).
    fn apply(self, view: &View) -> Option<View> {
        match self {
            Decoding::Percent => unescape(view, percent),
            Decoding::Form => unescape(view, |s, out| match s {
                [b'+', ..] => {
                    out.push(b' ');
                    Some(1)
                }
                _ => percent(s, out),
            }),
            Decoding::Backslash => unescape(view, backslash),
            Decoding::Html => unescape(view, html),
            Decoding::Base64 { skip } => base64(view, skip),
        }
    }
}

/// The secret being looked for, and the spans of the original text found to hold it.
struct Search<'a> {
    secret: &'a [u8],
    text_len: usize,
    found: Vec<(usize, usize)>,
}

impl Search<'_> {
    /// Searches `view` and every chain of decodings of it up to [`MAX_CHAIN`] long. Base64 is
    /// decoded at most once in a chain: a base64 reading of decoded base64 is noise, while the
    /// other decodings stop by themselves when a view holds no escape.
    fn view_and_decodings(&mut self, view: &View, depth: usize, base64_done: bool) {
        self.view(view);
        if depth == MAX_CHAIN {
            return;
        }
        for decoding in DECODINGS {
            let is_base64 = matches!(decoding, Decoding::Base64 { .. });
            if base64_done && is_base64 {
                continue;
            }
            if let Some(decoded) = decoding.apply(view) {
                self.view_and_decodings(&decoded, depth + 1, base64_done || is_base64);
            }
        }
    }

    /// Notes every occurrence of the secret in `view`, and a prefix of it where the view ends,
    /// from the prefix to the end of the text: whatever follows it there is the rest of a cut
    /// escape or the server's mark of the cut.
    fn view(&mut self, view: &View) {
        let secret = self.secret;
        for (i, window) in view.bytes.windows(secret.len()).enumerate() {
            if window == secret {
                self.found.push(view.span(i, i + secret.len()));
            }
        }
        // Proper prefixes only: the whole secret is found above, with nothing after it.
        let shortest = secret.len().min(MIN_PREFIX);
        for end in cut_ends(&view.bytes) {
            for len in shortest..secret.len().min(end + 1) {
                if view.bytes[end - len..end] == secret[..len] {
                    self.found.push((view.spans[end - len].0, self.text_len));
                }
            }
        }
    }
}

/// Where a text cut short may have stopped inside the secret: its end; its end less what
/// servers add after a cut (white space, `...`, `…`, and the U+FFFD of a character split by
/// the cut), unless the secret holds those itself; and that, less an escape cut in the middle
/// (`%2`, `\u00`, `&#x2`), which no decoding completes.
fn cut_ends(bytes: &[u8]) -> [usize; 3] {
    let mut end = bytes.len();
    loop {
        let rest = &bytes[..end];
        if rest.ends_with("…".as_bytes()) || rest.ends_with("\u{FFFD}".as_bytes()) {
            end -= 3;
        } else if rest
            .last()
            .is_some_and(|b| b.is_ascii_whitespace() || *b == b'.')
        {
            end -= 1;
        } else {
            break;
        }
    }
    let last = end.saturating_sub(MAX_ESCAPE);
    let escape = bytes[last..end]
        .iter()
        .rposition(|b| matches!(b, b'%' | b'\\' | b'&'))
        .map(|at| last + at)
        .filter(|&at| cut_escape(bytes[at], &bytes[at + 1..end]));
    [bytes.len(), end, escape.unwrap_or(end)]
}

/// True if `intro` followed by `rest` can be the start of an escape cut short.
fn cut_escape(intro: u8, rest: &[u8]) -> bool {
    let hex_up_to = |s: &[u8], n: usize| s.len() <= n && s.iter().all(u8::is_ascii_hexdigit);
    match (intro, rest) {
        (b'%', digits) => hex_up_to(digits, 1),
        (b'\\', []) => true,
        (b'\\', [b'u', digits @ ..]) => hex_up_to(digits, 3),
        (b'\\', [b'x', digits @ ..]) => hex_up_to(digits, 1),
        (b'&', [b'#', b'x' | b'X', digits @ ..]) => digits.iter().all(u8::is_ascii_hexdigit),
        (b'&', [b'#', digits @ ..]) => digits.iter().all(u8::is_ascii_digit),
        (b'&', name) => name.iter().all(u8::is_ascii_alphanumeric),
        _ => false,
    }
}

/// Replaces the original bytes under `spans` (merged where they overlap or touch, widened to
/// whole characters) with [`MARKER`].
fn replace(text: &str, mut spans: Vec<(usize, usize)>) -> String {
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut pending: Option<(usize, usize)> = None;
    let mut flush = |out: &mut String, (start, end): (usize, usize)| {
        out.push_str(&text[copied..start]);
        out.push_str(MARKER);
        copied = end;
    };
    for (mut start, mut end) in spans {
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        while !text.is_char_boundary(end) {
            end += 1;
        }
        pending = match pending {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some(done) => {
                flush(&mut out, done);
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some(done) = pending {
        flush(&mut out, done);
    }
    out.push_str(&text[copied..]);
    out
}

/// Decodes `view` with `escape`, which, given the bytes from some position on, appends what
/// the escape starting there stands for to `out` and returns the escape's length, or returns
/// `None` if no escape starts there. `None` if the view holds no escape at all.
fn unescape(view: &View, escape: impl Fn(&[u8], &mut Vec<u8>) -> Option<usize>) -> Option<View> {
    let mut out = View::with_capacity(view.len());
    let mut decoded = Vec::new();
    let mut any = false;
    let mut i = 0;
    while i < view.len() {
        decoded.clear();
        match escape(&view.bytes[i..], &mut decoded) {
            Some(n) => {
                let span = view.span(i, i + n);
                for &b in &decoded {
                    out.push(b, span);
                }
                any = true;
                i += n;
            }
            None => {
                out.copy(view, i);
                i += 1;
            }
        }
    }
    any.then_some(out)
}

fn percent(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let [b'%', rest @ ..] = s else { return None };
    out.push(hex(rest, 2)? as u8);
    Some(3)
}

fn backslash(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let [b'\\', kind, rest @ ..] = s else {
        return None;
    };
    let simple = match kind {
        b'"' | b'\\' | b'/' | b'\'' => Some(*kind),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        _ => None,
    };
    if let Some(b) = simple {
        out.push(b);
        return Some(2);
    }
    match kind {
        b'x' => {
            out.push(hex(rest, 2)? as u8);
            Some(4)
        }
        b'u' => {
            let unit = hex(rest, 4)?;
            let (code, len) = if (0xD800..0xDC00).contains(&unit) {
                // A high surrogate means something only with the low one after it.
                let [b'\\', b'u', low @ ..] = &rest[4..] else {
                    return None;
                };
                let low = hex(low, 4).filter(|low| (0xDC00..0xE000).contains(low))?;
                (0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00), 12)
            } else {
                (unit, 6)
            };
            push_char(out, char::from_u32(code)?);
            Some(len)
        }
        _ => None,
    }
}

fn html(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let [b'&', rest @ ..] = s else { return None };
    let (c, len) = match rest {
        [b'#', b'x' | b'X', digits @ ..] => number(digits, 16).map(|(c, n)| (c, 3 + n))?,
        [b'#', digits @ ..] => number(digits, 10).map(|(c, n)| (c, 2 + n))?,
        _ => {
            let n = rest
                .iter()
                .take(MAX_ESCAPE)
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            (named(&rest[..n])?, 1 + n)
        }
    };
    // Browsers accept `&amp` and `&#47` without their `;`, so pages are sent that way too.
    let len = len + usize::from(s.get(len) == Some(&b';'));
    push_char(out, c);
    Some(len)
}

/// The character of a numeric character reference's digits, and how many digits it took.
/// Digits that run to the end of the text are not taken: `&#x3` may be `&#x3E;` cut short,
/// and decoding it as U+0003 would hide the cut from [`cut_ends`].
fn number(digits: &[u8], radix: u32) -> Option<(char, usize)> {
    let n = digits
        .iter()
        .take(MAX_ESCAPE - 3)
        .take_while(|b| char::from(**b).is_digit(radix))
        .count();
    if n == digits.len() {
        return None;
    }
    let value = digits[..n].iter().try_fold(0u32, |v, b| {
        v.checked_mul(radix)?
            .checked_add(char::from(*b).to_digit(radix)?)
    });
    Some((char::from_u32(value.filter(|_| n > 0)?)?, n))
}

/// The named references for ASCII punctuation (HTML's full list has 2 000; a secret is
/// printable ASCII in practice, and these are the names servers use for it).
fn named(name: &[u8]) -> Option<char> {
    Some(match name {
        b"amp" | b"AMP" => '&',
        b"lt" | b"LT" => '<',
        b"gt" | b"GT" => '>',
        b"quot" | b"QUOT" => '"',
        b"apos" => '\'',
        b"sol" => '/',
        b"bsol" => '\\',
        b"plus" => '+',
        b"equals" => '=',
        b"percnt" => '%',
        b"num" => '#',
        b"excl" => '!',
        b"dollar" => '$',
        b"lpar" => '(',
        b"rpar" => ')',
        b"ast" | b"midast" => '*',
        b"comma" => ',',
        b"period" => '.',
        b"colon" => ':',
        b"semi" => ';',
        b"quest" => '?',
        b"commat" => '@',
        b"lsqb" | b"lbrack" => '[',
        b"rsqb" | b"rbrack" => ']',
        b"lowbar" | b"UnderBar" => '_',
        b"grave" => '`',
        b"lcub" | b"lbrace" => '{',
        b"rcub" | b"rbrace" => '}',
        b"verbar" | b"vert" => '|',
        b"Hat" => '^',
        b"nbsp" => '\u{a0}',
        _ => return None,
    })
}

/// Decodes the runs of base64 characters in `view`, each from `skip` characters in, four
/// characters to three bytes; the characters skipped and any other byte stay as they are.
/// Each decoded byte keeps the span of its whole group of four, so a match also covers the
/// characters it shares with its neighbours. A run's last group may be short (no padding, or
/// a blob cut short): two or three characters still give one or two bytes.
fn base64(view: &View, skip: usize) -> Option<View> {
    let mut out = View::with_capacity(view.len());
    let mut any = false;
    let mut i = 0;
    while i < view.len() {
        let run = view.bytes[i..]
            .iter()
            .take_while(|b| sextet(**b).is_some())
            .count();
        if run == 0 {
            out.copy(view, i);
            i += 1;
            continue;
        }
        let end = i + run;
        let start = (i + skip).min(end);
        for j in i..start {
            out.copy(view, j);
        }
        let mut group = start;
        while end - group >= 2 {
            let chars = &view.bytes[group..end.min(group + 4)];
            // A single character after this group holds no whole byte: the blob was cut
            // there. It joins the group's span, so that the view ends with the bytes before it.
            let to = if end - group == 5 {
                end
            } else {
                group + chars.len()
            };
            let bits = chars
                .iter()
                .filter_map(|c| sextet(*c))
                .fold(0u32, |acc, s| acc << 6 | u32::from(s))
                << (6 * (4 - chars.len()));
            let span = view.span(group, to);
            for k in 0..chars.len() - 1 {
                out.push((bits >> (16 - 8 * k)) as u8, span);
            }
            any = true;
            group = to;
        }
        if group < end {
            // A run of one character.
            out.copy(view, group);
        }
        i = end;
    }
    any.then_some(out)
}

/// The value of a base64 character, in either alphabet (`+/` standard, `-_` URL-safe).
fn sextet(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    })
}

/// The value of the first `n` bytes of `s` read as hex digits (either case).
fn hex(s: &[u8], n: usize) -> Option<u32> {
    s.get(..n)?
        .iter()
        .try_fold(0u32, |v, b| Some(v << 4 | char::from(*b).to_digit(16)?))
}

fn push_char(out: &mut Vec<u8>, c: char) {
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

#[cfg(test)]
mod tests;
