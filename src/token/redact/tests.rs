//! Unit tests of the redaction: each encoding, chains of them, texts cut short.

use super::*;

const SECRET: &str = "S3cr3t/Pr0d+Key=?>";

fn r(text: &str) -> String {
    redact(text, SECRET)
}

#[test]
fn the_secret_as_it_is() {
    assert_eq!(
        r("bad secret S3cr3t/Pr0d+Key=?> given"),
        "bad secret [redacted] given"
    );
    assert_eq!(r("S3cr3t/Pr0d+Key=?>S3cr3t/Pr0d+Key=?>"), "[redacted]");
}

#[test]
fn percent_encoded_in_either_case_and_partly() {
    for echo in [
        "client_secret=S3cr3t%2FPr0d%2BKey%3D%3F%3E&scope=x",
        "client_secret=S3cr3t%2fPr0d%2bKey%3d%3f%3e&scope=x",
        "client_secret=S3cr3t%2FPr0d+Key%3d?%3E&scope=x",
        "client_secret=%53%33%63%72%33%74%2F%50%72%30%64%2B%4B%65%79%3D%3F%3E&scope=x",
    ] {
        assert_eq!(r(echo), "client_secret=[redacted]&scope=x", "{echo}");
    }
}

#[test]
fn plus_for_space() {
    let secret = "my secret+key";
    for echo in [
        "s=my+secret%2Bkey&",
        "s=my%20secret%2Bkey&",
        "s=my secret+key&",
    ] {
        assert_eq!(redact(echo, secret), "s=[redacted]&", "{echo}");
    }
}

#[test]
fn json_escaped() {
    for echo in [
        r#"{"client_secret":"S3cr3t\/Pr0d+Key=?>"}"#,
        r#"{"client_secret":"S3cr3t\u002FPr0d\u002bKey\u003D?\u003e"}"#,
        r#"{"client_secret":"\u0053\u0033\u0063r3t/Pr0d+Key=?>"}"#,
    ] {
        assert_eq!(r(echo), r#"{"client_secret":"[redacted]"}"#, "{echo}");
    }
    let secret = "quote\"back\\slash";
    assert_eq!(
        redact(r#"{"s":"quote\"back\\slash"}"#, secret),
        r#"{"s":"[redacted]"}"#
    );
}

#[test]
fn html_character_references() {
    for echo in [
        "<td>S3cr3t&#x2F;Pr0d&#43;Key&#61;?&gt;</td>",
        "<td>S3cr3t&#47;Pr0d&plus;Key&equals;&quest;&#X3e;</td>",
        "<td>S3cr3t&sol;Pr0d+Key=?&gt</td>",
    ] {
        assert_eq!(r(echo), "<td>[redacted]</td>", "{echo}");
    }
    assert_eq!(redact("<p>a&amp;b&lt;c</p>", "a&b<c"), "<p>[redacted]</p>");
}

#[test]
fn two_encodings_in_a_row() {
    for echo in [
        // JSON in a URL, a URL in JSON, a URL in HTML, a URL encoded twice.
        "q=%7B%22s%22%3A%22S3cr3t%5C%2FPr0d%2BKey%3D%3F%3E%22%7D end",
        r#"{"body":"client_secret=S3cr3t%2FPr0d%2BKey%3D%3F%3E\u0026scope=x"} end"#,
        "<a href=\"/t?client_secret=S3cr3t%2FPr0d%2BKey%3D%3F%3E&amp;x=1\">x</a> end",
        "client_secret=S3cr3t%252FPr0d%252BKey%253D%253F%253E end",
    ] {
        let out = r(echo);
        assert!(out.contains(MARKER), "{echo} -> {out}");
        for leak in ["S3cr3t", "Pr0d", "Key"] {
            assert!(!out.contains(leak), "{echo} -> {out}");
        }
    }
}

/// `Authorization: Basic` of `id:secret`, and of the two form-urlencoded first as RFC 6749
/// §2.3.1 asks; standard and URL-safe alphabet, with and without padding. The expected
/// values come from coreutils `base64`, not from the code under test.
#[test]
fn base64_of_id_and_secret() {
    for (echo, visible) in [
        // echo-client:S3cr3t/Pr0d+Key=?>
        (
            "Basic ZWNoby1jbGllbnQ6UzNjcjN0L1ByMGQrS2V5PT8+",
            "ZWNoby1jbGllbnQ6",
        ),
        (
            "Basic ZWNoby1jbGllbnQ6UzNjcjN0L1ByMGQrS2V5PT8-",
            "ZWNoby1jbGllbnQ6",
        ),
        // echo-client:S3cr3t%2FPr0d%2BKey%3D%3F%3E
        (
            "Basic ZWNoby1jbGllbnQ6UzNjcjN0JTJGUHIwZCUyQktleSUzRCUzRiUzRQ==",
            "ZWNoby1jbGllbnQ6",
        ),
        (
            "Basic ZWNoby1jbGllbnQ6UzNjcjN0JTJGUHIwZCUyQktleSUzRCUzRiUzRQ",
            "ZWNoby1jbGllbnQ6",
        ),
        // id:S3cr3t/Pr0d+Key=?> (the secret starts inside a group of four)
        ("Basic aWQ6UzNjcjN0L1ByMGQrS2V5PT8+", "aWQ6"),
        // S3cr3t/Pr0d+Key=?> alone, quoted in JSON with `\/`
        (r#"{"h":"Basic UzNjcjN0L1ByMGQrS2V5PT8+"}"#, ""),
        // echo-client:S3cr3t/Pr0d+Key=?> after `Basic%20`, as a URL would carry it
        (
            "Basic%20ZWNoby1jbGllbnQ6UzNjcjN0L1ByMGQrS2V5PT8%2B",
            "ZWNoby1jbGllbnQ6",
        ),
    ] {
        let out = r(echo);
        assert!(out.contains(MARKER), "{echo} -> {out}");
        assert!(out.contains(visible), "{echo} -> {out}: over-redacted");
        for leak in ["UzNjcjN0", "L1ByMGQr", "JTJGUHIw", "S2V5PT8", "zNjcjN0L1By"] {
            assert!(!out.contains(leak), "{echo} -> {out}");
        }
    }
}

#[test]
fn a_prefix_where_the_text_ends() {
    for echo in [
        "client_secret=S3cr3t/Pr0",
        "client_secret=S3cr3t%2FPr0",
        "client_secret=S3cr3t%2",
        "client_secret=S3cr3t%",
        "client_secret=S3cr3t\\u00",
        "client_secret=S3cr3t&#x2",
        "client_secret=S3cr3t/Pr0d+K...",
        "client_secret=S3cr3t/Pr0d+K… \n",
        "client_secret=S3cr",
    ] {
        assert_eq!(r(echo), "client_secret=[redacted]", "{echo}");
    }
    // Basic id:secret cut short, at each length of the last group.
    for cut in [
        "UzNjcjN0L1ByMGQr",
        "UzNjcjN0L1ByMGQrS",
        "UzNjcjN0L1ByMGQrS2",
    ] {
        let echo = format!("Basic ZWNoby1jbGllbnQ6{cut}");
        assert_eq!(r(&echo), "Basic ZWNoby1jbGllbnQ6[redacted]", "{echo}");
    }
    // Found by the properties in tests/properties.rs: the secret's own `.` and space look
    // like the mark of a cut; `&#x5` at the end is `&#x5B;` cut short, not U+0005.
    assert_eq!(redact("x A A.", "A A. b"), "x [redacted]");
    assert_eq!(redact("x a0 b&#x5", "a0 b["), "x [redacted]");
    assert_eq!(redact("x a0 b&#x5", "a0 b\u{5}"), "x [redacted]");
    // Three bytes are not enough to tell the secret from a word; nor is a prefix followed by
    // more text.
    assert_eq!(r("client_secret=S3c"), "client_secret=S3c");
    assert_eq!(r("S3cr3t and more"), "S3cr3t and more");
    // A short secret is redacted only whole.
    assert_eq!(redact("abc ab", "abc"), "[redacted] ab");
}

#[test]
fn unrelated_text_is_untouched() {
    for text in [
        "",
        "{\"error\":\"invalid_client\",\"error_description\":\"Client authentication failed\"}",
        "<html><body><h1>502 Bad Gateway</h1><p>a &amp; b &#x2F; c</p></body></html>",
        "grant_type=client_credentials&client_id=echo-client&scope=core.invoice.read%20x",
        "Basic ZWNoby1jbGllbnQ6 aGVsbG8gd29ybGQ= \\u00e9 %zz %4 &bogus; \\q",
        "ünïcödé ✓ text… with S3cr3t-like words: S3cr3ts",
    ] {
        assert_eq!(r(text), text);
    }
    assert_eq!(redact("S3cr3t/Pr0d+Key=?>", ""), "S3cr3t/Pr0d+Key=?>");
}

#[test]
fn whole_characters_are_replaced() {
    // Escapes are ASCII and raw characters stay whole in every view, so matches fall on
    // character boundaries; should one not, the replacement still takes whole characters.
    assert_eq!(replace("naïve", vec![(3, 4)]), "na[redacted]ve");
    assert_eq!(replace("naïve", vec![(0, 1), (1, 3)]), "[redacted]ve");
    assert_eq!(redact("x %C3é y", "é"), "x %C3[redacted] y");
    assert_eq!(redact("x %C3%A9 y", "é"), "x [redacted] y");
}

#[test]
fn only_the_start_of_a_long_text_is_kept() {
    let long = format!("{}S3cr3t/Pr0d+Key=?>", "x".repeat(MAX_INPUT - 6));
    let out = r(&long);
    assert!(out.ends_with("x[redacted]…"), "{}", &out[out.len() - 40..]);
    assert!(out.len() < MAX_INPUT + 20);
    // Cut inside a character: the cut moves back to a boundary.
    let wide = format!("{}é and more", "x".repeat(MAX_INPUT - 1));
    assert!(r(&wide).ends_with("x…"));
}
