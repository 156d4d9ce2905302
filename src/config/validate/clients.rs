//! `[clients.NAME]`: OAuth client credentials and scopes.

use secrecy::SecretString;

use super::{unknown, Validator};
use crate::config::defaults;
use crate::config::raw::{RawClient, RawConfig};
use crate::config::units::written;
use crate::config::vars::{expand_vars, read_secret_file};
use crate::config::Client;

const SCOPES_HINT: &str = "list each scope as its own string, \
    e.g. scopes = [\"core.invoice.read\", \"core.supplier.read\"]";

impl Validator<'_> {
    pub(super) fn client(&mut self, name: &str, raw: &RawClient, all: &RawConfig) -> Client {
        let key = format!("clients.{name}");
        self.name(&key, name);
        let instance_key = format!("{key}.instance");
        let instance = self
            .required(
                &instance_key,
                &raw.instance,
                r#"instance = "NAME" naming an [instances.NAME] table"#,
            )
            .unwrap_or_default()
            .to_owned();
        if raw.instance.is_some() && !all.instances.contains_key(&instance) {
            self.problem(
                &instance_key,
                unknown("instance", &instance, all.instances.keys()),
            );
        }
        let id_key = format!("{key}.client_id");
        let client_id = self
            .required(
                &id_key,
                &raw.client_id,
                r#"client_id = "..." from the client's page in Coupa"#,
            )
            .and_then(|id| self.expand(&id_key, id, "export it or write the value directly"))
            .and_then(|id| {
                self.non_empty(&id_key, id, "set it to the client's identifier from Coupa")
            })
            .unwrap_or_default();
        let client_secret = SecretString::from(self.secret(&key, raw).unwrap_or_default());
        let scopes = self.scopes(&key, raw.scopes.as_deref());
        let refresh_key = format!("{key}.refresh_after");
        let refresh_after = self.positive(
            &refresh_key,
            raw.refresh_after.as_deref(),
            defaults::REFRESH_AFTER,
        );
        let warmup_key = format!("{key}.token_warmup");
        let token_warmup = self.duration(
            &warmup_key,
            raw.token_warmup.as_deref(),
            defaults::TOKEN_WARMUP,
        );
        if token_warmup >= refresh_after {
            self.problem(
                warmup_key,
                format!(
                    "{:?} must be shorter than refresh_after ({:?})",
                    written(raw.token_warmup.as_deref(), token_warmup),
                    written(raw.refresh_after.as_deref(), refresh_after),
                ),
            );
        }
        // Already expanded (and any problem reported) by `secret`; kept for change detection.
        let secret_file = raw
            .client_secret_file
            .as_deref()
            .and_then(|f| expand_vars(f, self.env, "").ok())
            .map(|f| self.base_dir.join(f));
        Client {
            name: name.to_owned(),
            instance,
            client_id,
            client_secret,
            scopes,
            refresh_after,
            token_warmup,
            secret_file,
        }
    }

    /// The secret from `client_secret` or `client_secret_file`. Messages name keys and file
    /// paths only, never the value.
    fn secret(&mut self, key: &str, raw: &RawClient) -> Option<String> {
        let secret_key = format!("{key}.client_secret");
        let file_key = format!("{key}.client_secret_file");
        match (&raw.client_secret, &raw.client_secret_file) {
            (Some(_), Some(_)) => {
                self.problem(
                    key,
                    "set either client_secret or client_secret_file, not both",
                );
                None
            }
            (None, None) => {
                let hint = "missing client secret; add client_secret = \"${VAR}\" \
                    or client_secret_file = \"/path/to/file\"";
                self.problem(key, hint);
                None
            }
            (Some(secret), None) => {
                let secret =
                    self.expand(&secret_key, secret, "export it or use client_secret_file")?;
                self.non_empty(
                    &secret_key,
                    secret,
                    "set it to the client's secret from Coupa",
                )
            }
            (None, Some(file)) => {
                let file = self.expand(&file_key, file, "export it or write the path directly")?;
                let path = self.base_dir.join(file);
                let read = read_secret_file(&path);
                let secret = self.check(&file_key, read)?.trim_end().to_owned();
                let hint = format!(
                    "\"{}\" is empty; write the client's secret into it",
                    path.display()
                );
                if secret.is_empty() {
                    self.problem(&file_key, hint);
                    return None;
                }
                Some(secret)
            }
        }
    }

    fn scopes(&mut self, key: &str, raw: Option<&[String]>) -> Vec<String> {
        let key = format!("{key}.scopes");
        let list_them = "list the scopes this client may use, as shown under \"Oidc Scopes\" \
            on its page in Coupa, e.g. scopes = [\"core.invoice.read\"]";
        let scopes = raw.unwrap_or_default();
        match raw {
            None => self.problem(&key, format!("missing; {list_them}")),
            Some([]) => self.problem(&key, format!("is empty; {list_them}")),
            Some(_) => {}
        }
        for (i, scope) in scopes.iter().enumerate() {
            let scope_key = format!("{key}[{i}]");
            let message = if scope.is_empty() {
                "is empty; remove it".to_owned()
            } else if scope.contains(',') {
                format!("{scope:?} contains a comma; {SCOPES_HINT}")
            } else if scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
                format!("{scope:?} contains whitespace; {SCOPES_HINT}")
            } else if let Some(j) = scopes[..i].iter().position(|s| s == scope) {
                format!("{scope:?} is already listed as scopes[{j}]; remove the duplicate")
            } else {
                continue;
            };
            self.problem(scope_key, message);
        }
        scopes.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use crate::config::tests::*;

    #[test]
    fn client_instance_must_exist() {
        let text = instance("prod")
            + &instance("test")
            + &client("prod-main", "prd")
            + &route("/prod", "test")
            + "client = \"prod-main\"\n";
        let message = error(&text);
        assert!(message
            .contains(r#"clients.prod-main.instance: no instance named "prd"; known: prod, test"#));
        assert_error(
            &(client("c", "prod") + &route("/p", "prod") + "client = \"c\"\n"),
            &[
                r#"clients.c.instance: no instance named "prod" and no [instances.NAME] tables are defined"#,
            ],
        );
    }

    #[test]
    fn client_errors() {
        let both = minimal().replace(
            "[clients.prod-main]\n",
            "[clients.prod-main]\nclient_secret_file = \"s\"\n",
        );
        assert_error(
            &both,
            &["clients.prod-main: set either client_secret or client_secret_file, not both"],
        );
        let neither = minimal().replace(&format!("client_secret = \"{SECRET}\"\n"), "");
        assert_error(
            &neither,
            &["clients.prod-main: missing client secret; add client_secret"],
        );
        let empty = minimal().replace(SECRET, "");
        assert_error(&empty, &["clients.prod-main.client_secret: is empty"]);
        let empty_id = minimal().replace("id-prod-main", "");
        assert_error(&empty_id, &["clients.prod-main.client_id: is empty"]);
        let no_id = minimal().replace("client_id = \"id-prod-main\"\n", "");
        assert_error(
            &no_id,
            &["clients.prod-main.client_id: missing; add client_id"],
        );
    }

    #[test]
    fn scope_errors() {
        let with_scopes = |s: &str| {
            minimal().replace("scopes = [\"core.invoice.read\"]", &format!("scopes = {s}"))
        };
        assert_error(
            &with_scopes("[]"),
            &[
                r#"clients.prod-main.scopes: is empty; list the scopes"#,
                "Oidc Scopes",
            ],
        );
        assert_error(
            &minimal().replace("scopes = [\"core.invoice.read\"]\n", ""),
            &["clients.prod-main.scopes: missing; list the scopes"],
        );
        assert_error(
            &with_scopes(r#"["core.invoice.read, core.supplier.read"]"#),
            &[
                r#"clients.prod-main.scopes[0]: "core.invoice.read, core.supplier.read" contains a comma"#,
            ],
        );
        assert_error(
            &with_scopes(r#"["a", "core.invoice.read core.supplier.read"]"#),
            &[
                r#"clients.prod-main.scopes[1]: "core.invoice.read core.supplier.read" contains whitespace"#,
            ],
        );
        assert_error(
            &with_scopes(r#"["a", "b", "a"]"#),
            &[r#"clients.prod-main.scopes[2]: "a" is already listed as scopes[0]"#],
        );
        assert_error(
            &with_scopes(r#"["a", ""]"#),
            &["clients.prod-main.scopes[1]: is empty"],
        );
    }

    #[test]
    fn secret_file_is_relative_to_base_dir() {
        let dir = TempDir::new("secret-file");
        std::fs::create_dir_all(dir.0.join("secrets")).expect("mkdir");
        std::fs::write(dir.0.join("secrets/prod"), format!("{SECRET}\r\n  \n")).expect("write");
        std::fs::write(dir.0.join("empty"), "\n").expect("write");
        let with_file = |file: &str| {
            minimal().replace(
                &format!("client_secret = \"{SECRET}\""),
                &format!("client_secret_file = \"{file}\""),
            )
        };
        let config = parse_with(&with_file("${DIR:-secrets}/prod"), &[], &dir.0).expect("valid");
        assert_eq!(
            config.clients["prod-main"].client_secret.expose_secret(),
            SECRET
        );

        let missing = parse_with(&with_file("nope"), &[], &dir.0)
            .unwrap_err()
            .to_string();
        let shown = dir.0.join("nope").display().to_string();
        assert!(
            missing.contains("clients.prod-main.client_secret_file: cannot read"),
            "{missing}"
        );
        assert!(missing.contains(&shown), "{missing}");

        let empty = parse_with(&with_file("empty"), &[], &dir.0)
            .unwrap_err()
            .to_string();
        assert!(
            empty.contains("clients.prod-main.client_secret_file: "),
            "{empty}"
        );
        assert!(empty.contains("is empty"), "{empty}");
    }
}
