//! `[server]` and `[admin]`: the two listeners.

use super::Validator;
use crate::config::defaults;
use crate::config::raw::{RawAdmin, RawServer, RawServerTls};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::config::vars::read_secret_file;
use crate::config::{Admin, AdminToken, Server, ServerTls, TrustedProxies};

/// Shorter admin tokens can be guessed; 16 characters of `openssl rand -hex` are 64 bits.
const MIN_ADMIN_TOKEN: usize = 16;

impl Validator<'_> {
    pub(super) fn server(&mut self, raw: &RawServer) -> Server {
        Server {
            listen: self.listen(
                "server.listen",
                raw.listen.as_deref(),
                defaults::SERVER_LISTEN,
            ),
            request_timeout: self.positive(
                "server.request_timeout",
                raw.request_timeout.as_deref(),
                defaults::REQUEST_TIMEOUT,
            ),
            header_timeout: self.positive(
                "server.header_timeout",
                raw.header_timeout.as_deref(),
                defaults::HEADER_TIMEOUT,
            ),
            idle_timeout: self.positive(
                "server.idle_timeout",
                raw.idle_timeout.as_deref(),
                defaults::IDLE_TIMEOUT,
            ),
            body_timeout: self.positive(
                "server.body_timeout",
                raw.body_timeout.as_deref(),
                defaults::BODY_TIMEOUT,
            ),
            write_timeout: self.positive(
                "server.write_timeout",
                raw.write_timeout.as_deref(),
                defaults::WRITE_TIMEOUT,
            ),
            max_header_bytes: {
                let key = "server.max_header_bytes";
                let v = self.size(
                    key,
                    raw.max_header_bytes.as_ref(),
                    defaults::MAX_HEADER_BYTES,
                );
                if v < 8192 {
                    self.problem(key, format!("{v} is below the minimum of 8 KiB (8192); Coupa tokens alone are several KB"));
                }
                v.max(8192) as usize
            },
            max_body_bytes: raw
                .max_body_bytes
                .as_ref()
                .map(|s| self.size("server.max_body_bytes", Some(s), 0)),
            max_concurrent_requests: match raw.max_concurrent_requests {
                Some(0) => {
                    self.problem(
                        "server.max_concurrent_requests",
                        "0 would refuse every request; use a positive number",
                    );
                    defaults::MAX_CONCURRENT_REQUESTS
                }
                v => v.unwrap_or(defaults::MAX_CONCURRENT_REQUESTS),
            },
            shutdown_grace: self.duration(
                "server.shutdown_grace",
                raw.shutdown_grace.as_deref(),
                defaults::SHUTDOWN_GRACE,
            ),
            retry_body_limit: self.size(
                "server.retry_body_limit",
                raw.retry_body_limit.as_ref(),
                defaults::RETRY_BODY_LIMIT,
            ),
            tls: raw.tls.as_ref().and_then(|t| self.server_tls(t)),
            workers: match raw.workers {
                Some(n @ (0 | 257..)) => {
                    self.problem(
                        "server.workers",
                        format!(
                            "{n} is out of range; use 1 to 256, or leave it out for one per CPU"
                        ),
                    );
                    1
                }
                Some(n) => n,
                None => defaults::workers(),
            },
            trusted_proxies: {
                let mut nets = Vec::new();
                for (i, net) in raw.trusted_proxies.iter().flatten().enumerate() {
                    let parsed = super::integrations::parse_net(net);
                    if let Some(net) = self.check(&format!("server.trusted_proxies[{i}]"), parsed) {
                        nets.push(net);
                    }
                }
                TrustedProxies::new(nets)
            },
            proxy_protocol: raw.proxy_protocol.unwrap_or(defaults::PROXY_PROTOCOL),
        }
    }

    pub(super) fn admin(&mut self, raw: &RawAdmin) -> Admin {
        Admin {
            listen: self.listen(
                "admin.listen",
                raw.listen.as_deref(),
                defaults::ADMIN_LISTEN,
            ),
            token: self.admin_token(raw),
        }
    }

    /// `admin.token` or `admin.token_file`, with the rules of client secrets (`${VAR}`, a
    /// file relative to the config file). Messages never show the value.
    fn admin_token(&mut self, raw: &RawAdmin) -> Option<AdminToken> {
        let (token, file) = match (&raw.token, &raw.token_file) {
            (None, None) => return None,
            (Some(_), Some(_)) => {
                self.problem("admin", "set either token or token_file, not both");
                return None;
            }
            (Some(token), None) => {
                let token = self.expand("admin.token", token, "export it or use token_file")?;
                (token, None)
            }
            (None, Some(file)) => {
                let key = "admin.token_file";
                let file = self.expand(key, file, "export it or write the path directly")?;
                let path = self.base_dir.join(file);
                let read = read_secret_file(&path);
                let token = self.check(key, read)?.trim_end().to_owned();
                (token, Some(path))
            }
        };
        let key = if file.is_some() {
            "admin.token_file"
        } else {
            "admin.token"
        };
        let length = token.chars().count();
        if length < MIN_ADMIN_TOKEN {
            self.problem(
                key,
                format!("the token is {length} characters long; use at least {MIN_ADMIN_TOKEN} random ones, e.g. from `openssl rand -hex 32`"),
            );
            return None;
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            self.problem(
                key,
                "the token has spaces or characters that cannot be sent in an HTTP header; use printable ASCII, e.g. from `openssl rand -hex 32`",
            );
            return None;
        }
        Some(AdminToken {
            sha256: Sha256::digest(token.as_bytes()).into(),
            secret: SecretString::from(token),
            file,
        })
    }

    fn server_tls(&mut self, raw: &RawServerTls) -> Option<ServerTls> {
        let cert = self
            .required(
                "server.tls.cert",
                &raw.cert,
                r#"cert = "/path/to/fullchain.pem""#,
            )
            .map(str::to_owned);
        let key = self
            .required(
                "server.tls.key",
                &raw.key,
                r#"key = "/path/to/privkey.pem""#,
            )
            .map(str::to_owned);
        let cert = cert.and_then(|c| self.readable_file("server.tls.cert", &c));
        let key = key.and_then(|k| self.readable_file("server.tls.key", &k));
        Some(ServerTls {
            cert: cert?,
            key: key?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::*;
    use crate::config::{OutboundProxy, RateLimit};

    #[test]
    fn limits_tls_proxy_and_rate_limits() {
        let dir = TempDir::new("limits");
        std::fs::write(dir.0.join("cert.pem"), "x").expect("write");
        std::fs::write(dir.0.join("key.pem"), "x").expect("write");
        std::fs::write(dir.0.join("ca.pem"), "x").expect("write");
        let text = minimal().replace(
            "[instances.prod]\n",
            "[instances.prod]\nrate_limit = { per_second = 10.5, burst = 5, max_queue_wait = \"2s\" }\n",
        ) + r#"
[server]
header_timeout = "10s"
idle_timeout = "2m"
max_header_bytes = "32KiB"
max_body_bytes = "250MB"
max_concurrent_requests = 100
shutdown_grace = "5s"
retry_body_limit = 2048
tls = { cert = "cert.pem", key = "key.pem" }
[upstream]
ca_file = "ca.pem"
proxy = "http://proxy.corp:3128"
no_proxy = ".corp,10.0.0.0/8"
"#;
        let c = parse_with(&text, &[], &dir.0).expect("valid");
        assert_eq!(c.server.header_timeout, Duration::from_secs(10));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.server.max_header_bytes, 32 * 1024);
        assert_eq!(c.server.max_body_bytes, Some(250_000_000));
        assert_eq!(
            c.routes[0].max_body_bytes,
            Some(250_000_000),
            "routes inherit the server limit"
        );
        assert_eq!(c.server.max_concurrent_requests, 100);
        assert_eq!(c.server.retry_body_limit, 2048);
        assert_eq!(c.server.tls.as_ref().unwrap().cert, dir.0.join("cert.pem"));
        assert_eq!(c.upstream.ca_file, Some(dir.0.join("ca.pem")));
        assert_eq!(
            c.upstream.proxy,
            OutboundProxy::Url {
                url: "http://proxy.corp:3128".into(),
                no_proxy: ".corp,10.0.0.0/8".into()
            }
        );
        let rl = c.instances["prod"].rate_limit.clone().unwrap();
        assert_eq!(
            (rl.per_second, rl.burst, rl.max_queue_wait),
            (10.5, 5, Duration::from_secs(2))
        );

        let d = parse(&minimal()).expect("valid");
        assert_eq!(
            d.instances["prod"].rate_limit,
            Some(RateLimit {
                per_second: 25.0,
                burst: 20,
                max_queue_wait: Duration::from_secs(30)
            })
        );
        assert_eq!(d.upstream.proxy, OutboundProxy::FromEnv);
        assert_eq!(d.server.max_body_bytes, None);
        let off = minimal().replace(
            "[instances.prod]\n",
            "[instances.prod]\nrate_limit = { enabled = false }\n",
        );
        assert_eq!(
            parse(&off).expect("valid").instances["prod"].rate_limit,
            None
        );

        assert_error(
            &(minimal() + "[server]\nmax_header_bytes = 1000\nmax_body_bytes = \"lots\"\nmax_concurrent_requests = 0\nworkers = 0\n"),
            &["server.max_header_bytes: 1000 is below", "server.max_body_bytes: \"lots\" is not a size", "server.max_concurrent_requests: 0", "server.workers: 0 is out of range; use 1 to 256"],
        );
        assert_eq!(
            d.server.workers,
            std::thread::available_parallelism().unwrap().get(),
            "one worker per CPU by default"
        );
        let three = parse(&(minimal() + "[server]\nworkers = 3\n")).expect("valid");
        assert_eq!(three.server.workers, 3);
        assert_error(
            &minimal().replace(
                "[instances.prod]\n",
                "[instances.prod]\nrate_limit = { per_second = 0, burst = 0 }\n",
            ),
            &[
                "instances.prod.rate_limit.per_second: 0",
                "instances.prod.rate_limit.burst: 0",
            ],
        );
        assert_error(
            &(minimal() + "[server]\ntls = { cert = \"missing.pem\" }\n"),
            &[
                "server.tls.key: missing",
                "server.tls.cert: cannot read",
                "missing.pem",
            ],
        );
        let message = error(&(minimal() + "[upstream]\nproxy = \"ftp://user:pw@x\"\n"));
        assert!(
            message.contains("upstream.proxy") && !message.contains("pw@"),
            "{message}"
        );
        assert_error(
            &(minimal() + "[upstream]\nno_proxy = \"x\"\n"),
            &["upstream.no_proxy: only used with upstream.proxy"],
        );
        assert_eq!(
            parse(&(minimal() + "[upstream]\nproxy = \"none\"\n"))
                .expect("valid")
                .upstream
                .proxy,
            OutboundProxy::Direct
        );
    }
}
