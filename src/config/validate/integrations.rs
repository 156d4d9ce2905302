//! `[[integrations]]`: the known callers, by key hash and/or address.

use super::routes::route_prefix;
use super::Validator;
use crate::config::defaults;
use crate::config::raw::RawIntegration;
use crate::config::{Integration, Route};

impl Validator<'_> {
    pub(super) fn integrations(
        &mut self,
        raw: &[RawIntegration],
        routes: &[Route],
    ) -> Vec<Integration> {
        let mut out: Vec<Integration> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let key = format!("integrations[{i}]");
            let name = self
                .required(
                    &format!("{key}.name"),
                    &r.name,
                    r#"name = "erp-invoices" (shown in logs, metrics and /status)"#,
                )
                .unwrap_or_default()
                .to_owned();
            if !name.is_empty() {
                self.name(&format!("{key}.name"), &name);
                if let Some(j) = out.iter().position(|o| o.name == name) {
                    self.problem(
                        format!("{key}.name"),
                        format!(
                            "{name:?} is already used by integrations[{j}]; names must be unique"
                        ),
                    );
                }
            }
            let key_sha256 = r.key_sha256.as_deref().and_then(|h| {
                let parsed = parse_sha256(h);
                self.check(&format!("{key}.key_sha256"), parsed)
            });
            if let Some(hash) = key_sha256 {
                if let Some(j) = out.iter().position(|o| o.key_sha256 == Some(hash)) {
                    self.problem(
                        format!("{key}.key_sha256"),
                        format!("the same key is already integrations[{j}]'s; one key identifies one integration"),
                    );
                }
            }
            let mut allow_ips = Vec::new();
            for (j, net) in r.allow_ips.iter().flatten().enumerate() {
                let parsed = parse_net(net);
                if let Some(net) = self.check(&format!("{key}.allow_ips[{j}]"), parsed) {
                    allow_ips.push(net);
                }
            }
            if r.key_sha256.is_none() && r.allow_ips.as_ref().is_none_or(|a| a.is_empty()) {
                self.problem(
                    &key,
                    "no way to recognise it; add key_sha256 (from `coupa-gateway hash-key`) and/or allow_ips",
                );
            }
            let mut allowed = Vec::new();
            match &r.routes {
                None => self.problem(
                    format!("{key}.routes"),
                    r#"missing; list the route prefixes it may use, e.g. routes = ["/prod"]"#,
                ),
                Some(list) if list.is_empty() => self.problem(
                    format!("{key}.routes"),
                    r#"is empty; list the route prefixes it may use, e.g. routes = ["/prod"]"#,
                ),
                Some(list) => {
                    for (j, p) in list.iter().enumerate() {
                        let normalised = route_prefix(p).unwrap_or_else(|_| p.clone());
                        if routes.iter().any(|rt| rt.prefix == normalised) {
                            allowed.push(normalised);
                        } else {
                            let known: Vec<&str> =
                                routes.iter().map(|rt| rt.prefix.as_str()).collect();
                            self.problem(
                                format!("{key}.routes[{j}]"),
                                format!("no route with prefix {p:?}; known: {}", known.join(", ")),
                            );
                        }
                    }
                }
            }
            let weight = self.weight(&format!("{key}.weight"), r.weight);
            out.push(Integration {
                name,
                key_sha256,
                allow_ips,
                routes: allowed,
                weight,
            });
        }
        out
    }
}

impl Validator<'_> {
    fn weight(&mut self, key: &str, raw: Option<i64>) -> u32 {
        match raw {
            None => defaults::INTEGRATION_WEIGHT,
            Some(w) if (1..=1000).contains(&w) => w as u32,
            Some(w) => {
                self.problem(
                    key,
                    format!("{w} is not a weight; use a whole number from 1 to 1000 (2 gets twice the turns of 1 while both wait)"),
                );
                defaults::INTEGRATION_WEIGHT
            }
        }
    }
}

/// A hex SHA-256 as `coupa-gateway hash-key` prints it.
fn parse_sha256(value: &str) -> Result<[u8; 32], String> {
    let hint = "use the 64 hex digits `coupa-gateway hash-key` prints for the key";
    let v = value.trim();
    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        // Never echo the value: someone may have pasted the key itself.
        return Err(format!(
            "is not a SHA-256 in hex ({} characters); {hint}",
            v.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in v.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).map_err(|_| hint.to_owned())?;
        out[i] = u8::from_str_radix(hex, 16).map_err(|_| hint.to_owned())?;
    }
    Ok(out)
}

/// A CIDR network or a single address.
pub(super) fn parse_net(value: &str) -> Result<ipnet::IpNet, String> {
    let v = value.trim();
    v.parse::<ipnet::IpNet>()
        .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!(r#"{v:?} is not an IP network; use CIDR notation such as "10.20.0.0/16" or an address"#))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;

    #[test]
    fn integrations_are_validated() {
        let ok = minimal()
            + &integration(
                "erp",
                &format!("key_sha256 = \"{HASH}\"\nroutes = [\"/prod/\"]"),
            )
            + &integration(
                "batch",
                "allow_ips = [\"10.1.0.0/16\", \"192.168.1.7\"]\nroutes = [\"/prod\"]",
            );
        let config = parse(&ok).expect("valid");
        assert_eq!(config.integrations.len(), 2);
        assert_eq!(
            config.integrations[0].routes,
            vec!["/prod".to_string()],
            "prefix normalised"
        );
        assert_eq!(config.integrations[1].allow_ips.len(), 2);
        assert!(!format!("{:?}", config.integrations[0]).contains(HASH));

        assert_error(
            &(minimal() + &integration("erp", "key_sha256 = \"abc\"\nroutes = [\"/prod\"]")),
            &["integrations[0].key_sha256", "coupa-gateway hash-key"],
        );
        assert_error(
            &(minimal() + &integration("erp", "routes = [\"/prod\"]")),
            &["integrations[0]", "add key_sha256", "allow_ips"],
        );
        assert_error(
            &(minimal()
                + &integration(
                    "erp",
                    &format!("key_sha256 = \"{HASH}\"\nroutes = [\"/prd\"]"),
                )),
            &["integrations[0].routes[0]", "\"/prd\"", "known: /prod"],
        );
        assert_error(
            &(minimal()
                + &integration("erp", "allow_ips = [\"10.0.0.0/33\"]\nroutes = [\"/prod\"]")),
            &["integrations[0].allow_ips[0]", "10.0.0.0/33", "CIDR"],
        );
        let twice = integration(
            "erp",
            &format!("key_sha256 = \"{HASH}\"\nroutes = [\"/prod\"]"),
        );
        assert_error(
            &(minimal() + &twice + &twice),
            &[
                "integrations[1].name",
                "already used by integrations[0]",
                "integrations[1].key_sha256",
            ],
        );
        assert_error(
            &(minimal() + &integration("erp", "allow_ips = [\"10.0.0.1\"]")),
            &["integrations[0].routes: missing"],
        );
    }

    #[test]
    fn a_raw_key_pasted_as_hash_is_not_echoed() {
        let key = "abcdefghijABCDEFGHIJabcdefghijABCDEFGHIJ";
        let message = error(
            &(minimal()
                + &integration(
                    "erp",
                    &format!("key_sha256 = \"{key}\"\nroutes = [\"/prod\"]"),
                )),
        );
        assert!(
            message.contains("integrations[0].key_sha256") && !message.contains(key),
            "{message}"
        );
    }
}
