//! `admin.token`: the admin listener's status, metrics and page need `Authorization: Bearer`,
//! the probes stay open, and the CLI sends the token.

mod common;

use common::*;
use http::{Method, StatusCode};

const TOKEN: &str = "s3cret-admin-token-0123456789";

#[tokio::test]
async fn with_a_token_only_the_probes_are_open() {
    let prod = mock("prod").await;
    let toml = GatewayToml::prod(&prod.url()).admin(&format!("token = \"{TOKEN}\""));
    let gw = ready_gateway(&toml).await;
    let http = Http::new();
    let bearer = format!("Bearer {TOKEN}");
    for path in ["/status", "/metrics", "/", "/index.html", "/nowhere"] {
        let url = admin_url(&gw, path);
        let none = http.get(&url, &[]).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{path}");
        let challenges: Vec<_> = none.headers.get_all("www-authenticate").iter().collect();
        assert_eq!(
            challenges,
            [
                "Bearer realm=\"coupa-gateway admin\"",
                "Basic realm=\"coupa-gateway admin\", charset=\"UTF-8\""
            ]
        );
        assert_eq!(none.json()["error"], "unauthorized");
        assert!(!none.text().contains("prod-main"), "{path}: nothing leaks");
        let wrong = http
            .get(
                &url,
                &[("authorization", "Bearer s3cret-admin-token-012345678")],
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
        let basic = http.get(&url, &[("authorization", TOKEN)]).await;
        assert_eq!(basic.status, StatusCode::UNAUTHORIZED, "{path}");
        let ok = http.get(&url, &[("authorization", &bearer)]).await;
        let expected = if path == "/nowhere" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(ok.status, expected, "{path}");
        assert_eq!(ok.headers["x-content-type-options"], "nosniff");
    }
    // A browser's Basic credentials, the token as the password.
    let basic = format!("Basic {}", base64_of(&format!("ops:{TOKEN}")));
    let page = http
        .get(&admin_url(&gw, "/"), &[("authorization", &basic)])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let wrong = format!("Basic {}", base64_of(&format!("{TOKEN}:x")));
    let page = http
        .get(&admin_url(&gw, "/"), &[("authorization", &wrong)])
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    // The scheme in any case (RFC 9110 §11.1).
    let lower = format!("bearer {TOKEN}");
    let ok = http
        .get(&admin_url(&gw, "/status"), &[("authorization", &lower)])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    // Probes carry no credentials.
    for path in ["/healthz", "/readyz"] {
        let open = http.get(&admin_url(&gw, path), &[]).await;
        assert_eq!(open.status, StatusCode::OK, "{path}");
        assert_eq!(open.headers["x-frame-options"], "DENY");
    }
    // The endpoints take no body: refused before the token is even looked at.
    let big = http
        .request(
            Method::POST,
            &admin_url(&gw, "/status"),
            &[("authorization", &bearer)],
            vec![b'x'; 4096],
        )
        .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn without_a_token_the_admin_listener_is_open_as_before() {
    let prod = mock("prod").await;
    let gw = ready_gateway(&GatewayToml::prod(&prod.url())).await;
    let reply = Http::new().get(&admin_url(&gw, "/status"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn a_token_file_is_read_and_a_reload_rotates_it() {
    let dir = TempDir::new("admin-token");
    let file = dir.file("admin-token", &format!("{TOKEN}\n"));
    let prod = mock("prod").await;
    let toml = GatewayToml::prod(&prod.url()).admin(&format!("token_file = {file:?}"));
    let gw = ready_gateway(&toml).await;
    let http = Http::new();
    let url = admin_url(&gw, "/metrics");
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        http.get(&url, &[("authorization", &bearer)]).await.status,
        StatusCode::OK
    );
    let next = "rotated-admin-token-9876543210";
    std::fs::write(&file, next).unwrap();
    gw.reload(toml.config()).await.expect("reload applies");
    let rotated = format!("Bearer {next}");
    assert_eq!(
        http.get(&url, &[("authorization", &rotated)]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        http.get(&url, &[("authorization", &bearer)]).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn admin_token_errors_name_the_key_and_never_the_value() {
    let parse = |admin: &str| {
        coupa_gateway::config::Config::parse(
            &GatewayToml::new().admin(admin).build(),
            &|name| (name == "ADMIN").then(|| "short".to_owned()),
            std::path::Path::new("."),
        )
        .unwrap_err()
        .to_string()
    };
    let e = parse("token = \"${ADMIN}\"");
    assert!(
        e.contains("admin.token: the token is 5 characters long"),
        "{e}"
    );
    assert!(!e.contains("short"), "{e}");
    let e = parse("token = \"${MISSING}\"");
    assert!(e.contains("admin.token") && e.contains("MISSING"), "{e}");
    let e = parse(&format!("token = \"{TOKEN}\"\ntoken_file = \"f\""));
    assert!(e.contains("admin: set either token or token_file"), "{e}");
    let e = parse("token_file = \"/nonexistent/admin-token\"");
    assert!(e.contains("admin.token_file: cannot read"), "{e}");
    let e = parse("token = \"spaces in the admin token\"");
    assert!(e.contains("admin.token: the token has spaces"), "{e}");
}

#[tokio::test]
async fn report_and_health_send_the_token() {
    let dir = TempDir::new("admin-cli");
    let prod = mock("prod").await;
    let toml = GatewayToml::prod(&prod.url()).admin(&format!("token = \"{TOKEN}\""));
    let gw = ready_gateway(&toml).await;
    let base = admin_url(&gw, "");
    // No config file to read the token from: the flag, the environment, or a 401.
    let missing = dir.path().join("none.toml");
    let missing = missing.to_str().unwrap();
    let (code, _, err) = run(bin().args(["--config", missing, "report", "--admin", &base])).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("401") && err.contains("--admin-token"),
        "{err}"
    );
    let (code, out, err) = run(bin().args([
        "--config",
        missing,
        "report",
        "--admin",
        &base,
        "--admin-token",
        TOKEN,
    ]))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(bin()
        .args(["--config", missing, "report", "--admin", &base])
        .env("COUPA_GATEWAY_ADMIN_TOKEN", TOKEN))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    // From the gateway's own config file.
    let cfg = dir.file("proxy.toml", &toml.build_for_file());
    let (code, out, err) = run(bin().args([
        "--config",
        cfg.to_str().unwrap(),
        "report",
        "--admin",
        &base,
    ]))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    // health: the probes are open anyway, with or without the token.
    let (code, out, err) =
        run(bin().args(["--config", missing, "health", "--ready", "--admin", &base])).await;
    assert_eq!(code, 0, "{out}{err}");
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
