//! `token::redact::redact` on any text and secret: it never panics, and no piece of its output
//! outside the markers holds the secret, raw or form-urlencoded as the token request sent it,
//! where the text quotes it (set off by spaces, as an echo is in a real body).

#![no_main]

use arbitrary::Arbitrary;
use coupa_gateway::token::redact::{redact, MARKER, MAX_INPUT};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    text: String,
    secret: String,
    /// Where in `text` (as a fraction of 256) to quote the secret, form-urlencoded.
    quote_at: Option<u8>,
}

/// `application/x-www-form-urlencoded`, as reqwest (`form_urlencoded`) writes a value.
fn form(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let Input {
        mut text,
        secret,
        quote_at,
    } = input;
    // With its spaces: without them, text around it may make the same characters mean something
    // else (`%0D%0D` holds `0D%0D` but reads as two CRs).
    let quoted = format!(" {} ", form(&secret));
    if let Some(at) = quote_at {
        let mut at = text.len() * usize::from(at) / 256;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, &quoted);
    }
    let out = redact(&text, &secret);
    if secret.is_empty() || text.len() > MAX_INPUT {
        return;
    }
    for piece in out.split(MARKER) {
        assert!(!piece.contains(&secret), "{secret:?} in {out:?}");
        if quote_at.is_some() {
            assert!(!piece.contains(&quoted), "{quoted:?} in {out:?}");
        }
    }
});
