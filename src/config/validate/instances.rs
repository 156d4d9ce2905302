//! `[instances.NAME]`: Coupa's URLs and each instance's request budget.

use http::Uri;

use super::Validator;
use crate::config::defaults::{self, TOKEN_PATH};
use crate::config::raw::{RawInstance, RawRateLimit};
use crate::config::{Instance, RateLimit};

const EXAMPLE_URL: &str = "https://acme.coupahost.com";

impl Validator<'_> {
    pub(super) fn instance(&mut self, name: &str, raw: &RawInstance) -> Instance {
        let key = format!("instances.{name}");
        self.name(&key, name);
        let hint = "export it or write the value directly";
        let url_key = format!("{key}.url");
        let (url, base_path) = self
            .required(&url_key, &raw.url, &format!(r#"url = "{EXAMPLE_URL}""#))
            .and_then(|u| self.expand(&url_key, u, hint))
            .and_then(|u| self.check(&url_key, base_url_parts(&u)))
            .unwrap_or_default();
        let token_url_key = format!("{key}.token_url");
        let token_url = match &raw.token_url {
            Some(t) => self
                .expand(&token_url_key, t, hint)
                .and_then(|t| {
                    self.check(
                        &token_url_key,
                        http_url(&t, &format!("{EXAMPLE_URL}{TOKEN_PATH}")).map(|_| t),
                    )
                })
                .unwrap_or_default(),
            None => format!(
                "{}://{}{base_path}{TOKEN_PATH}",
                url.scheme_str().unwrap_or("https"),
                url.authority().map_or("", |a| a.as_str())
            ),
        };
        Instance {
            name: name.to_owned(),
            url,
            base_path,
            token_url,
            token_timeout: self.positive(
                &format!("{key}.token_timeout"),
                raw.token_timeout.as_deref(),
                defaults::TOKEN_TIMEOUT,
            ),
            rate_limit: self.rate_limit(&format!("{key}.rate_limit"), raw.rate_limit.as_ref()),
        }
    }

    fn rate_limit(&mut self, key: &str, raw: Option<&RawRateLimit>) -> Option<RateLimit> {
        let default = defaults::RATE_LIMIT;
        let Some(raw) = raw else {
            return defaults::RATE_LIMIT_ENABLED.then_some(default);
        };
        if !raw.enabled.unwrap_or(defaults::RATE_LIMIT_ENABLED) {
            if raw.per_second.is_some() || raw.burst.is_some() || raw.max_queue_wait.is_some() {
                self.problem(
                    key,
                    "enabled = false ignores the other settings; remove them or enable the limit",
                );
            }
            return None;
        }
        let per_second = raw.per_second.unwrap_or(default.per_second);
        if !(per_second.is_finite() && per_second > 0.0) {
            self.problem(
                format!("{key}.per_second"),
                format!("{per_second} must be a positive number of requests per second, e.g. 25"),
            );
        }
        let burst = raw.burst.unwrap_or(default.burst);
        if burst == 0 {
            self.problem(
                format!("{key}.burst"),
                "0 would refuse every request; use at least 1 (Coupa documents 20)",
            );
        }
        Some(RateLimit {
            per_second: if per_second.is_finite() && per_second > 0.0 {
                per_second
            } else {
                default.per_second
            },
            burst: burst.max(1),
            max_queue_wait: self.duration(
                &format!("{key}.max_queue_wait"),
                raw.max_queue_wait.as_deref(),
                default.max_queue_wait,
            ),
        })
    }
}

/// Validates an absolute http(s) URL with a host and no credentials or fragment.
fn http_url(value: &str, example: &str) -> Result<Uri, String> {
    // Checked first, before any message quotes the value: userinfo may hold a password.
    let after_scheme = value.split_once("://").map_or(value, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "must not contain a user name or password (\"user:pass@\"); \
             the gateway authenticates with the client's credentials"
                .to_owned(),
        );
    }
    let not_http = || format!("{value:?} must be an http:// or https:// URL such as {example:?}");
    if value.contains('#') {
        return Err(format!(
            r##"{value:?} must not contain a fragment ("#...")"##
        ));
    }
    let uri: Uri = value.parse().map_err(|_| not_http())?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        _ => return Err(not_http()),
    }
    if !matches!(uri.host(), Some(h) if !h.is_empty()) {
        return Err(format!(
            "{value:?} has no host; use a URL such as {example:?}"
        ));
    }
    Ok(uri)
}

/// Splits an instance URL into scheme+authority (path `/`) and its path without trailing `/`.
fn base_url_parts(value: &str) -> Result<(Uri, String), String> {
    let uri = http_url(value, EXAMPLE_URL)?;
    if uri.query().is_some() {
        return Err(format!(
            "{value:?} must not have a query (\"?...\"); \
             use scheme, host and optional path such as {EXAMPLE_URL:?}"
        ));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    let url = Uri::from_parts(parts).map_err(|e| format!("{value:?} is not a valid URL: {e}"))?;
    Ok((url, base_path))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;

    #[test]
    fn default_token_url_keeps_base_path() {
        let text = minimal().replace(
            "https://prod.coupahost.com",
            "https://prod.coupahost.com/sub/",
        );
        let config = parse(&text).expect("valid");
        assert_eq!(
            config.instances["prod"].token_url,
            "https://prod.coupahost.com/sub/oauth2/token"
        );
    }

    #[test]
    fn url_errors() {
        let with_url = |url: &str| minimal().replace("https://prod.coupahost.com", url);
        let cases = [
            (
                "ftp://x",
                r#"instances.prod.url: "ftp://x" must be an http:// or https:// URL such as "https://acme.coupahost.com""#,
            ),
            (
                "acme.coupahost.com",
                r#"instances.prod.url: "acme.coupahost.com" must be an http:// or https:// URL"#,
            ),
            (
                "https://",
                r#"instances.prod.url: "https://" must be an http:// or https:// URL"#,
            ),
            (
                "http://:80",
                r#"instances.prod.url: "http://:80" has no host"#,
            ),
            (
                "https://a.com/?x=1",
                r#"instances.prod.url: "https://a.com/?x=1" must not have a query"#,
            ),
            (
                "https://a.com/#top",
                r#"instances.prod.url: "https://a.com/#top" must not contain a fragment"#,
            ),
            (
                "https://a b.com",
                r#"instances.prod.url: "https://a b.com" must be an http:// or https:// URL"#,
            ),
        ];
        for (url, expected) in cases {
            assert_error(&with_url(url), &[expected]);
        }
        // The password must not be echoed back.
        let message = error(&with_url("https://user:hunter2@a.com"));
        assert!(message.contains("instances.prod.url: must not contain a user name or password"));
        assert!(!message.contains("hunter2"), "{message}");
        let token_url = |t: &str| {
            minimal().replace(
                "[instances.prod]\n",
                &format!("[instances.prod]\ntoken_url = \"{t}\"\n"),
            )
        };
        assert_error(
            &token_url("/oauth2/token"),
            &[
                r#"instances.prod.token_url: "/oauth2/token" must be an http:// or https:// URL such as "https://acme.coupahost.com/oauth2/token""#,
            ],
        );
    }
}
