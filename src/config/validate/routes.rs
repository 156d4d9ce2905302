//! `[[routes]]`: prefixes, their instance, client and mode, and who may use them.

use std::net::SocketAddr;
use std::time::Duration;

use super::{unknown, Validator};
use crate::config::defaults;
use crate::config::raw::{RawConfig, RawRoute};
use crate::config::{Integration, Mode, Route, ScopeCheck, Server};

impl Validator<'_> {
    /// Every route, in file order; a prefix used twice is reported at its second use.
    pub(super) fn routes(&mut self, raw: &RawConfig, server: &Server) -> Vec<Route> {
        if raw.routes.is_empty() {
            let hint = "no routes defined; \
                add a [[routes]] table with prefix = \"/NAME\" and instance = \"NAME\"";
            self.problem("routes", hint);
        }
        let mut routes: Vec<Route> = Vec::new();
        for (i, r) in raw.routes.iter().enumerate() {
            let route = self.route(i, r, raw, server.request_timeout, server.max_body_bytes);
            // An invalid prefix is left empty; it was reported already.
            let earlier = routes.iter().position(|o| o.prefix == route.prefix);
            if let (false, Some(j)) = (route.prefix.is_empty(), earlier) {
                let written = r.prefix.as_deref().unwrap_or_default();
                let shown = if written == route.prefix {
                    format!("{written:?}")
                } else {
                    format!("{written:?} (same as {:?})", route.prefix)
                };
                self.problem(
                    format!("routes[{i}].prefix"),
                    format!("{shown} is already used by routes[{j}]; prefixes must be unique"),
                );
            }
            routes.push(route);
        }
        routes
    }

    /// Secure by default: a gateway reachable from the network must not hand out Coupa access
    /// (with a real token) to whoever connects, unless the route says so.
    pub(super) fn anonymous_exposure(
        &mut self,
        listen: SocketAddr,
        routes: &[Route],
        integrations: &[Integration],
    ) {
        if listen.ip().is_loopback() {
            return;
        }
        for (i, r) in routes.iter().enumerate() {
            let restricted = integrations.iter().any(|g| g.routes.contains(&r.prefix));
            if !restricted && !r.allow_anonymous && r.mode != Mode::Blocked {
                self.problem(
                    format!("routes[{i}]"),
                    format!(
                        "server.listen {listen} is not a loopback address and no [[integrations]] entry lists \
                         route {:?}, so anyone who can reach the port could use it; add an \
                         [[integrations]] entry with key_sha256 or allow_ips and routes = [{:?}], or set \
                         allow_anonymous = true on the route to accept that",
                        r.prefix, r.prefix
                    ),
                );
            }
        }
    }

    fn route(
        &mut self,
        i: usize,
        raw: &RawRoute,
        all: &RawConfig,
        default_timeout: Duration,
        default_max_body: Option<u64>,
    ) -> Route {
        let key = format!("routes[{i}]");
        let prefix_key = format!("{key}.prefix");
        let prefix = self
            .required(&prefix_key, &raw.prefix, r#"prefix = "/NAME""#)
            .and_then(|p| self.check(&prefix_key, route_prefix(p)))
            .unwrap_or_default();
        let instance = raw.instance.clone().unwrap_or_default();
        let instance_key = format!("{key}.instance");
        // Client checks against an unknown instance would only repeat the same mistake.
        let instance_ok = match &raw.instance {
            None => {
                let hint = raw
                    .client
                    .as_ref()
                    .and_then(|c| all.clients.get(c)?.instance.as_deref())
                    .unwrap_or("NAME");
                self.problem(&instance_key, format!("missing; add instance = {hint:?}"));
                false
            }
            Some(name) if !all.instances.contains_key(name) => {
                self.problem(
                    &instance_key,
                    unknown("instance", name, all.instances.keys()),
                );
                false
            }
            Some(_) => true,
        };
        let mode_key = format!("{key}.mode");
        let mode = match raw.mode.as_deref() {
            None => defaults::MODE,
            Some("oauth") => Mode::OAuth,
            Some("passthrough") => Mode::Passthrough,
            Some("blocked") => Mode::Blocked,
            Some(other) => {
                self.problem(
                    &mode_key,
                    format!(r#"{other:?} is not a mode; use "oauth", "passthrough" or "blocked""#),
                );
                defaults::MODE
            }
        };
        let scope_check = match raw.scope_check.as_deref() {
            None => defaults::SCOPE_CHECK,
            Some("warn") => ScopeCheck::Warn,
            Some("enforce") => ScopeCheck::Enforce,
            Some("off") => ScopeCheck::Off,
            Some(other) => {
                self.problem(
                    format!("{key}.scope_check"),
                    format!(r#"{other:?} is not a scope check; use "enforce", "warn" or "off""#),
                );
                defaults::SCOPE_CHECK
            }
        };
        if raw.blocked_message.is_some() && mode != Mode::Blocked {
            self.problem(
                format!("{key}.blocked_message"),
                r#"only used with mode = "blocked"; remove it or set the mode"#,
            );
        }
        let client = match &raw.client {
            Some(name) => {
                let client_key = format!("{key}.client");
                match all.clients.get(name).map(|c| c.instance.as_deref()) {
                    None => self.problem(client_key, unknown("client", name, all.clients.keys())),
                    Some(Some(owner)) if instance_ok && owner != instance => {
                        let message = format!(
                            "client {name:?} belongs to instance {owner:?}, \
                             but the route targets {instance:?}"
                        );
                        self.problem(client_key, message);
                    }
                    Some(_) => {}
                }
                Some(name.clone())
            }
            None if !instance_ok => None,
            None => {
                let candidates: Vec<&str> = all
                    .clients
                    .iter()
                    .filter(|(_, c)| c.instance.as_deref() == Some(instance.as_str()))
                    .map(|(n, _)| n.as_str())
                    .collect();
                match candidates[..] {
                    [only] => Some(only.to_owned()),
                    // Without a token, a route needs no client; one may be named later.
                    _ if mode != Mode::OAuth => None,
                    [] => {
                        let message = format!(
                            "instance {instance:?} has no clients; \
                             add a [clients.NAME] table with instance = {instance:?}"
                        );
                        self.problem(&key, message);
                        None
                    }
                    _ => {
                        let message = format!(
                            "instance {instance:?} has {} clients ({}); \
                             name one with client = \"...\"",
                            candidates.len(),
                            candidates.join(", ")
                        );
                        self.problem(&key, message);
                        None
                    }
                }
            }
        };
        let shadow_sample = match raw.shadow_sample {
            None => defaults::SHADOW_SAMPLE,
            Some(p) if (0.0..=1.0).contains(&p) => {
                if p > 0.0 && client.is_none() {
                    self.problem(
                        format!("{key}.shadow_sample"),
                        "shadow requests carry the route's client's token; name the client the route will move to with client = \"...\"",
                    );
                }
                p
            }
            Some(p) => {
                self.problem(
                    format!("{key}.shadow_sample"),
                    format!(
                        "{p} is not a share; use 0.0 (off) to 1.0 (every GET and HEAD), e.g. 0.1"
                    ),
                );
                defaults::SHADOW_SAMPLE
            }
        };
        Route {
            prefix,
            instance,
            client,
            shadow_sample,
            timeout: self.positive(
                &format!("{key}.timeout"),
                raw.timeout.as_deref(),
                default_timeout,
            ),
            mode,
            blocked_message: raw
                .blocked_message
                .clone()
                .unwrap_or_else(|| defaults::BLOCKED_MESSAGE.to_owned()),
            allow_anonymous: raw.allow_anonymous.unwrap_or(defaults::ALLOW_ANONYMOUS),
            scope_check,
            max_body_bytes: match &raw.max_body_bytes {
                Some(s) => Some(self.size(&format!("{key}.max_body_bytes"), Some(s), 0)),
                None => default_max_body,
            },
            max_concurrent_requests: match raw.max_concurrent_requests {
                Some(0) => {
                    self.problem(
                        format!("{key}.max_concurrent_requests"),
                        "0 would refuse every request; use a positive number or remove it",
                    );
                    None
                }
                v => v,
            },
        }
    }
}

/// Validates a route prefix and removes a trailing `/`.
pub(super) fn route_prefix(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err(format!(r#"{raw:?} must start with "/""#));
    }
    // RFC 3986 path characters minus `%`: incoming paths are matched as received, so an
    // encoded or non-ASCII prefix could never match reliably.
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@".contains(c);
    if let Some(c) = raw.chars().find(|&c| !allowed(c)) {
        let why = match c {
            '%' => "percent-encoding is not supported",
            '?' | '#' => "a prefix is a path, without query or fragment",
            _ => r#"use letters, digits, "/" and - . _ ~ ! $ & ' ( ) * + , ; = : @"#,
        };
        return Err(format!("{raw:?} contains {c:?}; {why}"));
    }
    if raw.contains("//") {
        return Err(format!(r#"{raw:?} contains "//"; use single slashes"#));
    }
    let prefix = match raw.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => raw,
    };
    if prefix.split('/').any(|s| s == "." || s == "..") {
        return Err(format!(
            r#"{raw:?} contains a "." or ".." segment; remove it"#
        ));
    }
    Ok(prefix.to_owned())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;
    use crate::config::{Mode, ScopeCheck};

    #[test]
    fn route_reference_errors() {
        let two = instance("prod")
            + &instance("test")
            + &client("prod-main", "prod")
            + &client("test-main", "test");
        assert_error(
            &format!(
                "{two}{}{}client = \"prod-mian\"\n",
                route("/prod", "prod"),
                route("/x", "prod")
            ),
            &[r#"routes[1].client: no client named "prod-mian"; known: prod-main, test-main"#],
        );
        assert_error(
            &format!("{two}{}client = \"test-main\"\n", route("/prod", "prod")),
            &[
                r#"routes[0].client: client "test-main" belongs to instance "test", but the route targets "prod""#,
            ],
        );
        assert_error(
            &format!("{two}{}", route("/prod", "prd")),
            &[r#"routes[0].instance: no instance named "prd"; known: prod, test"#],
        );
        let text = instance("prod")
            + &client("prod-a", "prod")
            + &client("prod-b", "prod")
            + &route("/prod", "prod");
        assert_error(
            &text,
            &[
                r#"routes[0]: instance "prod" has 2 clients (prod-a, prod-b); name one with client = "...""#,
            ],
        );
        assert_error(
            &(instance("prod") + &route("/prod", "prod")),
            &[
                r#"routes[0]: instance "prod" has no clients; add a [clients.NAME] table with instance = "prod""#,
            ],
        );
    }

    #[test]
    fn route_prefix_errors() {
        let bad = [
            ("prod", r#"routes[0].prefix: "prod" must start with "/""#),
            ("/a//b", r#"routes[0].prefix: "/a//b" contains "//""#),
            (
                "/a/./b",
                r#"routes[0].prefix: "/a/./b" contains a "." or ".." segment"#,
            ),
            (
                "/a/..",
                r#"routes[0].prefix: "/a/.." contains a "." or ".." segment"#,
            ),
            ("/a?b", r#"routes[0].prefix: "/a?b" contains '?'"#),
            ("/a#b", r#"routes[0].prefix: "/a#b" contains '#'"#),
            (
                "/a%20",
                r#"routes[0].prefix: "/a%20" contains '%'; percent-encoding"#,
            ),
            ("/a b", r#"routes[0].prefix: "/a b" contains ' '"#),
            ("/a\\tb", r#"routes[0].prefix: "/a\tb" contains '\t'"#),
            (
                "/a\\u0001",
                r#"routes[0].prefix: "/a\u{1}" contains '\u{1}'"#,
            ),
            ("/prød", r#"routes[0].prefix: "/prød" contains 'ø'"#),
        ];
        for (prefix, expected) in bad {
            let text = minimal().replace("prefix = \"/prod\"", &format!("prefix = \"{prefix}\""));
            assert_error(&text, &[expected]);
        }
    }

    #[test]
    fn duplicate_prefixes_after_normalisation() {
        let text = minimal() + &route("/other", "prod") + &route("/prod/", "prod");
        assert_error(
            &text,
            &[
                r#"routes[2].prefix: "/prod/" (same as "/prod") is already used by routes[0]; prefixes must be unique"#,
            ],
        );
        let text = minimal() + &route("/prod", "prod");
        assert_error(
            &text,
            &[r#"routes[1].prefix: "/prod" is already used by routes[0]"#],
        );
    }

    #[test]
    fn routes_are_required() {
        let text = instance("prod") + &client("prod-main", "prod");
        assert_error(
            &text,
            &["routes: no routes defined; add a [[routes]] table"],
        );
        assert_error("", &["routes: no routes defined"]);
    }

    #[test]
    fn route_modes_and_scope_checks() {
        let text = minimal().replace(
            "[[routes]]\nprefix = \"/prod\"\ninstance = \"prod\"\n",
            "[[routes]]\nprefix = \"/prod\"\ninstance = \"prod\"\nmode = \"passthrough\"\nscope_check = \"enforce\"\n",
        ) + "[[routes]]\nprefix = \"/old\"\ninstance = \"prod\"\nmode = \"blocked\"\nblocked_message = \"gone\"\n";
        let config = parse(&text).expect("valid");
        assert_eq!(config.routes[0].mode, Mode::Passthrough);
        assert_eq!(config.routes[0].scope_check, ScopeCheck::Enforce);
        assert_eq!(config.routes[1].mode, Mode::Blocked);
        assert_eq!(config.routes[1].blocked_message, "gone");
        assert_error(
            &(minimal() + "[[routes]]\nprefix = \"/x\"\ninstance = \"prod\"\nmode = \"proxy\"\nscope_check = \"strict\"\nblocked_message = \"m\"\n"),
            &["routes[1].mode: \"proxy\" is not a mode", "routes[1].scope_check: \"strict\"", "routes[1].blocked_message: only used with mode = \"blocked\""],
        );
        // A passthrough route needs no client even when its instance has several.
        let two_clients = instance("prod")
            + &client("a", "prod")
            + &client("b", "prod")
            + "[[routes]]\nprefix = \"/p\"\ninstance = \"prod\"\nmode = \"passthrough\"\n";
        assert_eq!(parse(&two_clients).expect("valid").routes[0].client, None);
        assert_error(
            &two_clients.replace("mode = \"passthrough\"\n", ""),
            &["routes[0]", "has 2 clients (a, b)"],
        );
    }

    #[test]
    fn anonymous_routes_on_a_network_listener_need_consent() {
        let exposed = "[server]\nlisten = \"0.0.0.0:8080\"\n".to_owned() + &minimal();
        assert_error(
            &exposed,
            &[
                "routes[0]",
                "0.0.0.0:8080",
                "not a loopback address",
                "allow_anonymous = true",
                "[[integrations]]",
            ],
        );
        let consented = exposed.replace(
            "[[routes]]\nprefix = \"/prod\"\ninstance = \"prod\"\n",
            "[[routes]]\nprefix = \"/prod\"\ninstance = \"prod\"\nallow_anonymous = true\n",
        );
        assert!(parse(&consented).is_ok());
        let restricted = exposed
            + &integration(
                "erp",
                &format!("key_sha256 = \"{HASH}\"\nroutes = [\"/prod\"]"),
            );
        assert!(
            parse(&restricted).is_ok(),
            "a route listed by an integration is not anonymous"
        );
        let loopback = minimal();
        assert!(parse(&loopback).is_ok(), "loopback listeners may stay open");
    }
}
