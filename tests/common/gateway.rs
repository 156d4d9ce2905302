//! Starting a gateway on a test config, and reading its admin listener.

use std::time::Duration;

use coupa_gateway::net::server::Gateway;

use super::{config::GatewayToml, Http};

/// A gateway on `toml`, started; its clients may still be waiting for tokens.
pub async fn gateway(toml: &GatewayToml) -> Gateway {
    Gateway::start(toml.config()).await.expect("gateway starts")
}

/// A gateway on `toml` whose clients all hold a token (within 10 s).
pub async fn ready_gateway(toml: &GatewayToml) -> Gateway {
    let gw = gateway(toml).await;
    assert!(
        gw.wait_ready(Duration::from_secs(10)).await,
        "gateway not ready"
    );
    gw
}

/// `http://127.0.0.1:PORT{path}` on the proxy listener.
pub fn proxy_url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.addr())
}

/// The same on the admin listener.
pub fn admin_url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.admin_addr())
}

/// The admin `/metrics` text.
pub async fn metrics(gw: &Gateway) -> String {
    Http::new()
        .get(&admin_url(gw, "/metrics"), &[])
        .await
        .text()
}

/// The admin `/status` document.
pub async fn status(gw: &Gateway) -> serde_json::Value {
    Http::new().get(&admin_url(gw, "/status"), &[]).await.json()
}

/// The admin `/status` document as text, to check what it must not show.
pub async fn status_text(gw: &Gateway) -> String {
    Http::new().get(&admin_url(gw, "/status"), &[]).await.text()
}

/// The entry of client `name` in a `/status` document's `clients` list (panics if absent).
pub fn status_client(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone()
}

/// The `/status` entry of client `name`, once `cond` holds for it (or after 10 s).
pub async fn client_status(
    gw: &Gateway,
    name: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let http = Http::new();
    let url = admin_url(gw, "/status");
    let mut client = serde_json::Value::Null;
    for _ in 0..500 {
        let status = http.get(&url, &[]).await.json();
        client = status_client(&status, name);
        if cond(&client) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client
}
