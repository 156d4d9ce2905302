//! One pass over the raw file that checks values and cross-references and collects every
//! problem, each starting with its key path. This file holds the pass's core (value helpers,
//! problem collection, the order sections are checked in); each section has its own file.

mod clients;
mod instances;
mod integrations;
mod routes;
mod scope_rules;
mod server;
mod state;
mod upstream;

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::defaults;
use super::raw::{RawConfig, RawSize};
use super::units::{parse_duration, parse_size};
use super::vars::expand_vars;
use super::{Config, Log, LogFormat, Migration};

const DURATION_HINT: &str = r#"use forms like "20h", "90m", "5s""#;

/// Validates `raw` completely; on failure, every problem found, section by section.
pub(super) fn validate(
    raw: &RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: &Path,
) -> Result<Config, Vec<String>> {
    let mut v = Validator {
        env,
        base_dir,
        problems: Vec::new(),
    };
    let config = v.config(raw);
    if v.problems.is_empty() {
        Ok(config)
    } else {
        Err(v.problems)
    }
}

/// One validation pass. Invalid values are replaced by placeholders so checking can go on;
/// the resulting `Config` is discarded whenever `problems` is non-empty.
struct Validator<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: &'a Path,
    problems: Vec<String>,
}

impl Validator<'_> {
    fn problem(&mut self, key: impl Display, message: impl Display) {
        self.problems.push(format!("{key}: {message}"));
    }

    fn check<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|m| self.problem(key, m)).ok()
    }

    fn required<'r>(
        &mut self,
        key: &str,
        value: &'r Option<String>,
        hint: &str,
    ) -> Option<&'r str> {
        if value.is_none() {
            self.problem(key, format!("missing; add {hint}"));
        }
        value.as_deref()
    }

    fn listen(&mut self, key: &str, raw: Option<&str>, default: SocketAddr) -> SocketAddr {
        let Some(raw) = raw else { return default };
        let parsed = raw.parse().map_err(|_| {
            format!(r#"{raw:?} is not a socket address; use IP:PORT such as "{default}""#)
        });
        self.check(key, parsed).unwrap_or(default)
    }

    /// Parses a duration that may be zero.
    fn duration(&mut self, key: &str, raw: Option<&str>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        let parsed = parse_duration(raw)
            .ok_or_else(|| format!("{raw:?} is not a duration; {DURATION_HINT}"));
        self.check(key, parsed).unwrap_or(default)
    }

    /// Parses a duration that must be positive (timeouts, refresh intervals).
    fn positive(&mut self, key: &str, raw: Option<&str>, default: Duration) -> Duration {
        let d = self.duration(key, raw, default);
        if d.is_zero() {
            self.problem(
                key,
                format!("{:?} must be greater than zero", raw.unwrap_or("0s")),
            );
            return default;
        }
        d
    }

    fn expand(&mut self, key: &str, raw: &str, unset_hint: &str) -> Option<String> {
        let expanded = expand_vars(raw, self.env, unset_hint);
        self.check(key, expanded)
    }

    fn config(&mut self, raw: &RawConfig) -> Config {
        let server = self.server(&raw.server);
        let admin = self.admin(&raw.admin);
        let upstream = self.upstream(&raw.upstream);
        let instances = raw
            .instances
            .iter()
            .map(|(name, i)| (name.clone(), Arc::new(self.instance(name, i))))
            .collect();
        let clients = raw
            .clients
            .iter()
            .map(|(name, c)| (name.clone(), Arc::new(self.client(name, c, raw))))
            .collect();
        let routes = self.routes(raw, &server);
        let integrations = self.integrations(&raw.integrations, &routes);
        self.anonymous_exposure(server.listen, &routes, &integrations);
        let migration = Migration {
            revoke_after: self.positive(
                "migration.revoke_after",
                raw.migration.revoke_after.as_deref(),
                defaults::REVOKE_AFTER,
            ),
        };
        let state = self.state(raw.state.as_ref());
        let scopes = Arc::new(self.scope_table(&raw.scope_rules));
        let log = Log {
            format: match raw.log.format.as_deref() {
                None => defaults::LOG_FORMAT,
                Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    self.problem(
                        "log.format",
                        format!(r#"{other:?} is not a log format; use "text" or "json""#),
                    );
                    defaults::LOG_FORMAT
                }
            },
            access: raw.log.access.unwrap_or(defaults::LOG_ACCESS),
        };
        Config {
            server,
            admin,
            upstream,
            instances,
            clients,
            routes,
            integrations,
            migration,
            log,
            state,
            scopes,
            source: None,
        }
    }

    fn size(&mut self, key: &str, raw: Option<&RawSize>, default: u64) -> u64 {
        match raw {
            None => default,
            Some(RawSize::Bytes(n)) => *n,
            Some(RawSize::Text(t)) => {
                let parsed = parse_size(t).ok_or_else(|| {
                    format!(r#"{t:?} is not a size; use a number of bytes or forms like "64KiB", "1MiB", "250MB""#)
                });
                self.check(key, parsed).unwrap_or(default)
            }
        }
    }

    fn readable_file(&mut self, key: &str, raw: &str) -> Option<PathBuf> {
        let expanded = self.expand(key, raw, "export it or write the path directly")?;
        let path = self.base_dir.join(expanded);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Some(path),
            Ok(_) => {
                self.problem(key, format!("\"{}\" is not a file", path.display()));
                None
            }
            Err(e) => {
                self.problem(key, format!("cannot read \"{}\": {e}", path.display()));
                None
            }
        }
    }

    fn non_empty(&mut self, key: &str, value: String, hint: &str) -> Option<String> {
        if value.is_empty() {
            self.problem(key, format!("is empty; {hint}"));
            return None;
        }
        Some(value)
    }

    /// Table keys end up in key paths, logs and metric labels, so keep them to bare TOML keys.
    fn name(&mut self, key: &str, name: &str) {
        let bare = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if name.is_empty() || !name.chars().all(bare) {
            self.problem(
                key,
                format!(r#"{name:?} is not a valid name; use letters, digits, "-" and "_""#),
            );
        }
    }
}

fn unknown<'a>(kind: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&str> = known.map(String::as_str).collect();
    if known.is_empty() {
        format!(
            "no {kind} named {name:?} and no [{kind}s.NAME] tables are defined; \
             add [{kind}s.{name}]"
        )
    } else {
        format!("no {kind} named {name:?}; known: {}", known.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;

    #[test]
    fn listen_and_duration_errors() {
        assert_error(
            &(minimal() + "[server]\nlisten = \"localhost:80x\"\n"),
            &[
                r#"server.listen: "localhost:80x" is not a socket address; use IP:PORT such as "127.0.0.1:8080""#,
            ],
        );
        assert_error(
            &(minimal() + "[admin]\nlisten = \"9090\"\n"),
            &[r#"admin.listen: "9090" is not a socket address"#],
        );
        let with_client_key = |key: &str, value: &str| {
            minimal().replace(
                "[clients.prod-main]\n",
                &format!("[clients.prod-main]\n{key} = \"{value}\"\n"),
            )
        };
        assert_error(
            &with_client_key("refresh_after", "twenty hours"),
            &[
                r#"clients.prod-main.refresh_after: "twenty hours" is not a duration; use forms like "20h", "90m", "5s""#,
            ],
        );
        assert_error(
            &with_client_key("refresh_after", "0s"),
            &[r#"clients.prod-main.refresh_after: "0s" must be greater than zero"#],
        );
        assert_error(
            &with_client_key("token_warmup", "1d"),
            &[r#"clients.prod-main.token_warmup: "1d" must be shorter than refresh_after ("20h")"#],
        );
        assert_error(
            &(minimal() + "[server]\nrequest_timeout = \"0ms\"\n"),
            &[r#"server.request_timeout: "0ms" must be greater than zero"#],
        );
        assert_error(
            &(minimal() + "[upstream]\nconnect_timeout = \"soon\"\n"),
            &[r#"upstream.connect_timeout: "soon" is not a duration"#],
        );
        assert_error(
            &(minimal() + "timeout = \"0s\"\n"),
            &[r#"routes[0].timeout: "0s" must be greater than zero"#],
        );
        assert_error(
            &minimal().replace(
                "[instances.prod]\n",
                "[instances.prod]\ntoken_timeout = \"-1s\"\n",
            ),
            &[r#"instances.prod.token_timeout: "-1s" is not a duration"#],
        );
    }

    #[test]
    fn missing_keys_and_bad_names() {
        assert_error(
            "[instances.prod]\n[[routes]]\ninstance = \"prod\"\n",
            &[
                r#"instances.prod.url: missing; add url = "https://acme.coupahost.com""#,
                r#"routes[0].prefix: missing; add prefix = "/NAME""#,
            ],
        );
        assert_error(
            &(minimal() + "[[routes]]\nprefix = \"/b\"\nclient = \"prod-main\"\n"),
            &[r#"routes[1].instance: missing; add instance = "prod""#],
        );
        assert_error(
            &(minimal() + "[instances.\"my prod\"]\nurl = \"https://a.com\"\n"),
            &[r#"instances.my prod: "my prod" is not a valid name"#],
        );
    }

    #[test]
    fn all_problems_are_collected() {
        let text = minimal()
            .replace("https://prod.coupahost.com", "ftp://x")
            .replace("/prod", "prod")
            .replace("core.invoice.read", "a,b")
            + "[server]\nlisten = \"nope\"\n";
        let err = parse(&text).unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
        assert_eq!(err.to_string().lines().count(), 4);
        for key in [
            "server.listen",
            "instances.prod.url",
            "clients.prod-main.scopes[0]",
            "routes[0].prefix",
        ] {
            assert!(
                err.problems.iter().any(|p| p.starts_with(key)),
                "{key} missing: {err}"
            );
        }
    }
}
