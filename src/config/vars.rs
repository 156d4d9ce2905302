//! The two ways a value comes from outside the file: `${VAR}` expansion and secret files.

use std::path::Path;

/// Expands `${VAR}`, `${VAR:-default}` (default also when VAR is empty, as in the shell) and
/// `$$`. Errors never quote `raw`, which may be a secret.
pub(super) fn expand_vars(
    raw: &str,
    env: &dyn Fn(&str) -> Option<String>,
    unset_hint: &str,
) -> Result<String, String> {
    let syntax = "use ${NAME} or ${NAME:-default} for a variable and $$ for a literal $";
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let Some(body) = rest.strip_prefix('{') else {
            return Err(format!("contains a lone \"$\"; {syntax}"));
        };
        let Some(end) = body.find('}') else {
            return Err(format!(
                "contains \"${{\" without a closing \"}}\"; {syntax}"
            ));
        };
        let (name, default) = match body[..end].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&body[..end], None),
        };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("contains an invalid variable name; {syntax}"));
        }
        match (env(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set; {unset_hint}"
                ))
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Largest secret file read: a client secret is tens of bytes; a FIFO or a device named by
/// mistake must not hang or exhaust memory at start-up or on reload.
const MAX_SECRET_FILE: u64 = 64 * 1024;

pub(super) fn read_secret_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read \"{shown}\": {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "\"{shown}\" is not a regular file; point it at the file holding the secret"
        ));
    }
    if meta.len() > MAX_SECRET_FILE {
        return Err(format!(
            "\"{shown}\" is {} bytes, too large for a client secret (at most {MAX_SECRET_FILE}); is it the right file?",
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read \"{shown}\": {e}"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use secrecy::ExposeSecret;

    use crate::config::tests::*;

    #[test]
    fn env_expansion() {
        let text = r#"
            [instances.prod]
            url = "https://${HOST}"
            token_url = "${TOKEN_URL:-https://login.example.com/token}"
            [clients.prod-main]
            instance = "prod"
            client_id = "${ID:-fallback}-$$x"
            client_secret = "${SECRET}"
            scopes = ["core.invoice.read"]
            [[routes]]
            prefix = "/prod"
            instance = "prod"
        "#;
        let vars = [
            ("HOST", "acme.coupahost.com"),
            ("ID", ""),
            ("SECRET", SECRET),
        ];
        let config = parse_with(text, &vars, Path::new(".")).expect("valid");
        assert_eq!(
            config.instances["prod"].url.to_string(),
            "https://acme.coupahost.com/"
        );
        assert_eq!(
            config.instances["prod"].token_url,
            "https://login.example.com/token"
        );
        assert_eq!(
            config.clients["prod-main"].client_id, "fallback-$x",
            "default on empty, $$"
        );
        assert_eq!(
            config.clients["prod-main"].client_secret.expose_secret(),
            SECRET
        );

        let vars = [("HOST", "acme.coupahost.com"), ("ID", "real")];
        let message = parse_with(text, &vars, Path::new("."))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "clients.prod-main.client_secret: environment variable SECRET is not set; \
             export it or use client_secret_file"
        );
        let config = parse_with(
            text,
            &[("HOST", "h"), ("ID", "real"), ("SECRET", "s")],
            Path::new("."),
        );
        assert_eq!(
            config.expect("valid").clients["prod-main"].client_id,
            "real-$x"
        );
    }

    #[test]
    fn env_expansion_errors() {
        let vars = [("EMPTY", "")];
        let with_id = |id: &str| minimal().replace("id-prod-main", id);
        let cases = [
            (
                "${NOPE}",
                "clients.prod-main.client_id: environment variable NOPE is not set",
            ),
            ("a$b", r#"clients.prod-main.client_id: contains a lone "$""#),
            (
                "${OPEN",
                r#"clients.prod-main.client_id: contains "${" without a closing "}""#,
            ),
            (
                "${1X}",
                "clients.prod-main.client_id: contains an invalid variable name",
            ),
            ("${EMPTY}", "clients.prod-main.client_id: is empty"),
        ];
        for (id, expected) in cases {
            let message = parse_with(&with_id(id), &vars, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{expected:?} not in {message}");
        }
        let url = minimal().replace("https://prod.coupahost.com", "${COUPA_URL}");
        let message = error(&url);
        assert!(message.contains("instances.prod.url: environment variable COUPA_URL is not set"));
        // A secret with a stray `$` must not be echoed back.
        let message = error(&minimal().replace(SECRET, &format!("{SECRET}$")));
        assert!(message.contains(r#"clients.prod-main.client_secret: contains a lone "$""#));
        assert!(!message.contains(SECRET));
    }

    #[test]
    fn secret_files_must_be_small_regular_files() {
        let dir = TempDir::new("secret-kinds");
        std::fs::write(dir.0.join("big"), vec![b'x'; 70 * 1024]).expect("write");
        let with_file = |file: &str| {
            minimal().replace(
                &format!("client_secret = \"{SECRET}\""),
                &format!("client_secret_file = \"{file}\""),
            )
        };
        let err = parse_with(&with_file("big"), &[], &dir.0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clients.prod-main.client_secret_file") && err.contains("too large"),
            "{err}"
        );
        let err = parse_with(&with_file("/dev/null/x"), &[], &dir.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
        let err = parse_with(&with_file("."), &[], &dir.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
