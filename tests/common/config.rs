//! Gateway configuration files for tests, built from named parts: what a test changes from the
//! usual set-up is spelled out (`.token_warmup("0s")`, `RouteToml::prod().mode("passthrough")`)
//! instead of hiding in the third of five positional strings or in a `.replace()` on the text.

use std::path::{Path, PathBuf};

use coupa_gateway::config::Config;
use coupa_gateway::migration::identity::hash_key_line;

/// Secrets of the mock clients, as the test configs use them (`${PROD_SECRET}`,
/// `${TEST_SECRET}`; [`config`] supplies them).
pub const PROD_SECRET: &str = "demo-prod-secret";
pub const TEST_SECRET: &str = "demo-test-secret";

/// Parses test TOML with the two mock secrets in its environment.
pub fn config(toml: &str) -> Config {
    let env = |name: &str| match name {
        "PROD_SECRET" => Some(PROD_SECRET.to_string()),
        "TEST_SECRET" => Some(TEST_SECRET.to_string()),
        _ => None,
    };
    Config::parse(toml, &env, Path::new(".")).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// A gateway configuration: listeners on `127.0.0.1:0`, then whatever instances, clients,
/// routes, integrations and tables are added, in the order added.
#[derive(Clone)]
pub struct GatewayToml {
    server: Vec<String>,
    server_tls_cert: Option<PathBuf>,
    server_tls_key: Option<PathBuf>,
    admin_listen: String,
    admin: Vec<String>,
    instances: Vec<InstanceToml>,
    clients: Vec<ClientToml>,
    routes: Vec<RouteToml>,
    integrations: Vec<IntegrationToml>,
    upstream: Vec<String>,
    tables: Vec<String>,
}

impl Default for GatewayToml {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayToml {
    /// Listeners on ephemeral ports and nothing else.
    pub fn new() -> Self {
        GatewayToml {
            server: Vec::new(),
            server_tls_cert: None,
            server_tls_key: None,
            admin_listen: "127.0.0.1:0".into(),
            admin: Vec::new(),
            instances: Vec::new(),
            clients: Vec::new(),
            routes: Vec::new(),
            integrations: Vec::new(),
            upstream: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// Instance `prod` at `prod_url`, its client `prod-main` and the oauth route `/prod`.
    pub fn prod(prod_url: &str) -> Self {
        Self::new()
            .instance("prod", prod_url)
            .client(ClientToml::prod())
            .route(RouteToml::prod())
    }

    /// [`GatewayToml::prod`], and the same for `test` at `test_url` (client `test-main`, route
    /// `/test`).
    pub fn two_instances(prod_url: &str, test_url: &str) -> Self {
        Self::prod(prod_url)
            .instance("test", test_url)
            .client(ClientToml::test())
            .route(RouteToml::test())
    }

    /// A `key = value` line for `[server]`, replacing the line for the same key if there is one
    /// (a test changes one of a set of settings that way).
    pub fn server(mut self, line: &str) -> Self {
        let key = |l: &str| l.split('=').next().unwrap_or_default().trim().to_owned();
        match self.server.iter().position(|l| key(l) == key(line)) {
            Some(i) => self.server[i] = line.to_owned(),
            None => self.server.push(line.to_owned()),
        }
        self
    }

    /// `[server.tls] cert`.
    pub fn server_tls_cert(mut self, path: &Path) -> Self {
        self.server_tls_cert = Some(path.to_owned());
        self
    }

    /// `[server.tls] key`.
    pub fn server_tls_key(mut self, path: &Path) -> Self {
        self.server_tls_key = Some(path.to_owned());
        self
    }

    /// A `key = value` line for `[admin]` besides `listen`.
    pub fn admin(mut self, line: &str) -> Self {
        self.admin.push(line.to_owned());
        self
    }

    pub fn admin_listen(mut self, addr: &str) -> Self {
        self.admin_listen = addr.to_owned();
        self
    }

    /// `[instances.{name}]` at `url`, with the gateway's own rate limiter off (it has its own
    /// tests; elsewhere it must not slow load down): see [`InstanceToml`] for the rest.
    pub fn instance(mut self, name: &str, url: &str) -> Self {
        self.instances.push(InstanceToml::new(name, url));
        self
    }

    /// Changes the instance `name` added before.
    pub fn map_instance(
        mut self,
        name: &str,
        f: impl FnOnce(InstanceToml) -> InstanceToml,
    ) -> Self {
        let i = position(&self.instances, |i| i.name == name, "instance", name);
        let instance = self.instances.remove(i);
        self.instances.insert(i, f(instance));
        self
    }

    pub fn client(mut self, client: ClientToml) -> Self {
        self.clients.push(client);
        self
    }

    /// Changes the client `name` added before.
    pub fn map_client(mut self, name: &str, f: impl FnOnce(ClientToml) -> ClientToml) -> Self {
        let i = position(&self.clients, |c| c.name == name, "client", name);
        let client = self.clients.remove(i);
        self.clients.insert(i, f(client));
        self
    }

    /// `token_warmup` of every client added so far.
    pub fn token_warmup(mut self, duration: &str) -> Self {
        self.clients = (self.clients.into_iter())
            .map(|c| c.token_warmup(duration))
            .collect();
        self
    }

    pub fn route(mut self, route: RouteToml) -> Self {
        self.routes.push(route);
        self
    }

    /// Changes the route `prefix` added before.
    pub fn map_route(mut self, prefix: &str, f: impl FnOnce(RouteToml) -> RouteToml) -> Self {
        let i = position(&self.routes, |r| r.prefix == prefix, "route", prefix);
        let route = self.routes.remove(i);
        self.routes.insert(i, f(route));
        self
    }

    pub fn integration(mut self, integration: IntegrationToml) -> Self {
        self.integrations.push(integration);
        self
    }

    /// `[upstream] ca_file`.
    pub fn upstream_ca_file(mut self, path: &Path) -> Self {
        self.upstream.push(format!("ca_file = {path:?}"));
        self
    }

    /// `[upstream] proxy` (`"none"`, or a proxy URL).
    pub fn upstream_proxy(mut self, proxy: &str) -> Self {
        self.upstream.push(format!("proxy = \"{proxy}\""));
        self
    }

    /// `[upstream] no_proxy`.
    pub fn upstream_no_proxy(mut self, hosts: &str) -> Self {
        self.upstream.push(format!("no_proxy = \"{hosts}\""));
        self
    }

    /// `[upstream] connect_timeout`.
    pub fn upstream_connect_timeout(mut self, duration: &str) -> Self {
        self.upstream
            .push(format!("connect_timeout = \"{duration}\""));
        self
    }

    /// Any other table, as written (e.g. `[log]` or `[migration]` with its keys).
    pub fn table(mut self, text: &str) -> Self {
        self.tables.push(text.to_owned());
        self
    }

    /// The TOML text; client secrets as `${PROD_SECRET}`/`${TEST_SECRET}` unless set.
    pub fn build(&self) -> String {
        let mut out = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
        for line in &self.server {
            out += &format!("{line}\n");
        }
        if self.server_tls_cert.is_some() || self.server_tls_key.is_some() {
            out += "[server.tls]\n";
            if let Some(cert) = &self.server_tls_cert {
                out += &format!("cert = {cert:?}\n");
            }
            if let Some(key) = &self.server_tls_key {
                out += &format!("key = {key:?}\n");
            }
        }
        out += &format!("[admin]\nlisten = \"{}\"\n", self.admin_listen);
        for line in &self.admin {
            out += &format!("{line}\n");
        }
        for i in &self.instances {
            out += &format!("[instances.{}]\nurl = \"{}\"\n", i.name, i.url);
            if let Some(token_url) = &i.token_url {
                out += &format!("token_url = \"{token_url}\"\n");
            }
            if let Some(rate_limit) = &i.rate_limit {
                out += &format!("rate_limit = {rate_limit}\n");
            }
        }
        for c in &self.clients {
            out += &format!(
                "[clients.{}]\ninstance = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\nscopes = {}\n",
                c.name,
                c.instance,
                c.id,
                c.secret,
                list(&c.scopes)
            );
            if let Some(warmup) = &c.token_warmup {
                out += &format!("token_warmup = \"{warmup}\"\n");
            }
        }
        for r in &self.routes {
            out += &format!("[[routes]]\nprefix = \"{}\"\n", r.prefix);
            if let Some(instance) = &r.instance {
                out += &format!("instance = \"{instance}\"\n");
            }
            if let Some(client) = &r.client {
                out += &format!("client = \"{client}\"\n");
            }
            for line in &r.lines {
                out += &format!("{line}\n");
            }
        }
        for i in &self.integrations {
            out += &format!("[[integrations]]\nname = \"{}\"\n", i.name);
            if let Some(key) = &i.key {
                out += &format!("{}\n", hash_key_line(key));
            }
            if let Some(ips) = &i.allow_ips {
                out += &format!("allow_ips = {}\n", list(ips));
            }
            out += &format!("routes = {}\n", list(&i.routes));
        }
        if !self.upstream.is_empty() {
            out += "[upstream]\n";
            for line in &self.upstream {
                out += &format!("{line}\n");
            }
        }
        for table in &self.tables {
            out += &format!("{table}\n");
        }
        out
    }

    /// [`GatewayToml::build`] with the test secrets written in: for a file read without the
    /// test environment (`Config::from_file`, the binary).
    pub fn build_for_file(&self) -> String {
        self.build()
            .replace("${PROD_SECRET}", PROD_SECRET)
            .replace("${TEST_SECRET}", TEST_SECRET)
    }

    /// The parsed configuration ([`config`]).
    pub fn config(&self) -> Config {
        config(&self.build())
    }
}

fn position<T>(items: &[T], is: impl Fn(&T) -> bool, what: &str, name: &str) -> usize {
    (items.iter().position(is)).unwrap_or_else(|| panic!("no {what} {name:?} to change"))
}

/// `["a", "b"]`.
fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `[instances.NAME]`.
#[derive(Clone)]
pub struct InstanceToml {
    name: String,
    url: String,
    token_url: Option<String>,
    /// `None`: the gateway's default limiter.
    rate_limit: Option<String>,
}

impl InstanceToml {
    fn new(name: &str, url: &str) -> Self {
        InstanceToml {
            name: name.to_owned(),
            url: url.to_owned(),
            token_url: None,
            rate_limit: Some("{ enabled = false }".into()),
        }
    }

    pub fn token_url(mut self, url: &str) -> Self {
        self.token_url = Some(url.to_owned());
        self
    }

    /// `rate_limit = {value}`, e.g. `{ per_second = 2, burst = 1 }`.
    pub fn rate_limit(mut self, value: &str) -> Self {
        self.rate_limit = Some(value.to_owned());
        self
    }

    /// No `rate_limit` key: the gateway's default limiter.
    pub fn default_rate_limit(mut self) -> Self {
        self.rate_limit = None;
        self
    }
}

/// `[clients.NAME]`.
#[derive(Clone)]
pub struct ClientToml {
    name: String,
    instance: String,
    id: String,
    secret: String,
    scopes: Vec<String>,
    token_warmup: Option<String>,
}

impl ClientToml {
    /// The demo's prod client `prod-main` with all four of its scopes and `${PROD_SECRET}`.
    pub fn prod() -> Self {
        ClientToml {
            name: "prod-main".into(),
            instance: "prod".into(),
            id: "demo-prod-client".into(),
            secret: "${PROD_SECRET}".into(),
            scopes: strings(&[
                "core.invoice.read",
                "core.invoice.write",
                "core.supplier.read",
                "core.common.read",
            ]),
            token_warmup: None,
        }
    }

    /// The demo's test client `test-main` with two scopes and `${TEST_SECRET}`.
    pub fn test() -> Self {
        ClientToml {
            name: "test-main".into(),
            instance: "test".into(),
            id: "demo-test-client".into(),
            secret: "${TEST_SECRET}".into(),
            scopes: strings(&["core.invoice.read", "core.supplier.read"]),
            token_warmup: None,
        }
    }

    /// A client `name` of instance `name` (same name), with `client_id` `id`.
    pub fn new(name: &str, id: &str) -> Self {
        ClientToml {
            name: name.to_owned(),
            instance: name.to_owned(),
            id: id.to_owned(),
            secret: String::new(),
            scopes: Vec::new(),
            token_warmup: None,
        }
    }

    /// `client_secret`: the value, or `${VAR}`.
    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = secret.to_owned();
        self
    }

    pub fn scopes(mut self, scopes: &[&str]) -> Self {
        self.scopes = strings(scopes);
        self
    }

    pub fn token_warmup(mut self, duration: &str) -> Self {
        self.token_warmup = Some(duration.to_owned());
        self
    }
}

/// `[[routes]]`.
#[derive(Clone)]
pub struct RouteToml {
    prefix: String,
    instance: Option<String>,
    client: Option<String>,
    lines: Vec<String>,
}

impl RouteToml {
    /// `/prod` to instance `prod` with client `prod-main`.
    pub fn prod() -> Self {
        Self::new("/prod").instance("prod").client("prod-main")
    }

    /// `/test` to instance `test` with client `test-main`.
    pub fn test() -> Self {
        Self::new("/test").instance("test").client("test-main")
    }

    pub fn new(prefix: &str) -> Self {
        RouteToml {
            prefix: prefix.to_owned(),
            instance: None,
            client: None,
            lines: Vec::new(),
        }
    }

    pub fn instance(mut self, instance: &str) -> Self {
        self.instance = Some(instance.to_owned());
        self
    }

    pub fn client(mut self, client: &str) -> Self {
        self.client = Some(client.to_owned());
        self
    }

    /// `mode`: `oauth`, `passthrough` or `blocked`.
    pub fn mode(self, mode: &str) -> Self {
        self.line(format!("mode = \"{mode}\""))
    }

    pub fn blocked_message(self, message: &str) -> Self {
        self.line(format!("blocked_message = \"{message}\""))
    }

    /// `scope_check`: `off`, `warn` or `enforce`.
    pub fn scope_check(self, check: &str) -> Self {
        self.line(format!("scope_check = \"{check}\""))
    }

    /// The route's upstream `timeout`.
    pub fn timeout(self, duration: &str) -> Self {
        self.line(format!("timeout = \"{duration}\""))
    }

    /// `shadow_sample`: the share of passthrough reads sent again with the token.
    pub fn shadow_sample(self, share: f64) -> Self {
        self.line(format!("shadow_sample = {share:?}"))
    }

    fn line(mut self, line: String) -> Self {
        self.lines.push(line);
        self
    }
}

/// `[[integrations]]`.
#[derive(Clone)]
pub struct IntegrationToml {
    name: String,
    key: Option<String>,
    allow_ips: Option<Vec<String>>,
    routes: Vec<String>,
}

impl IntegrationToml {
    pub fn new(name: &str) -> Self {
        IntegrationToml {
            name: name.to_owned(),
            key: None,
            allow_ips: None,
            routes: Vec::new(),
        }
    }

    /// The legacy API key it sends (written as its `key_sha256`).
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    pub fn allow_ips(mut self, nets: &[&str]) -> Self {
        self.allow_ips = Some(strings(nets));
        self
    }

    pub fn routes(mut self, prefixes: &[&str]) -> Self {
        self.routes = strings(prefixes);
        self
    }
}
