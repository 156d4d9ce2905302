//! `[upstream]`: the pooled client towards Coupa and the outbound proxy.

use http::Uri;

use super::Validator;
use crate::config::defaults;
use crate::config::raw::RawUpstream;
use crate::config::{OutboundProxy, Upstream};

impl Validator<'_> {
    pub(super) fn upstream(&mut self, raw: &RawUpstream) -> Upstream {
        Upstream {
            connect_timeout: self.positive(
                "upstream.connect_timeout",
                raw.connect_timeout.as_deref(),
                defaults::CONNECT_TIMEOUT,
            ),
            pool_idle_timeout: self.positive(
                "upstream.pool_idle_timeout",
                raw.pool_idle_timeout.as_deref(),
                defaults::POOL_IDLE_TIMEOUT,
            ),
            pool_max_idle_per_host: raw
                .pool_max_idle_per_host
                .unwrap_or(defaults::POOL_MAX_IDLE_PER_HOST),
            ca_file: raw
                .ca_file
                .as_deref()
                .and_then(|f| self.readable_file("upstream.ca_file", f)),
            proxy: self.outbound_proxy(raw),
        }
    }

    fn outbound_proxy(&mut self, raw: &RawUpstream) -> OutboundProxy {
        match raw.proxy.as_deref() {
            None => {
                if raw.no_proxy.is_some() {
                    self.problem("upstream.no_proxy", "only used with upstream.proxy = \"http://host:port\"; with the environment's proxy use NO_PROXY");
                }
                OutboundProxy::FromEnv
            }
            Some("none") => OutboundProxy::Direct,
            Some(url) => {
                let Some(url) =
                    self.expand("upstream.proxy", url, "export it or write the URL directly")
                else {
                    return OutboundProxy::FromEnv;
                };
                // Not echoed: a proxy URL may carry a password.
                let ok = url.parse::<Uri>().ok().filter(|u| {
                    matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some()
                });
                if ok.is_none() {
                    self.problem(
                        "upstream.proxy",
                        r#"is not a proxy URL; use "http://proxy.example.com:3128" or "none""#,
                    );
                }
                OutboundProxy::Url {
                    url,
                    no_proxy: raw.no_proxy.clone().unwrap_or_default(),
                }
            }
        }
    }
}
