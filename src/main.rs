//! The `coupa-gateway` command line: argument parsing only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coupa_gateway::commands;
use coupa_gateway::config::LogFormat;

#[derive(Parser)]
#[command(
    name = "coupa-gateway",
    version = coupa_gateway::ops::telemetry::VERSION_LINE,
    about = "Authenticating reverse proxy: legacy Coupa API-key integrations in, OAuth 2.0 bearer tokens out"
)]
struct Cli {
    /// The configuration file (every command that reads one).
    #[arg(
        long,
        short,
        global = true,
        default_value = "proxy.toml",
        env = "COUPA_GATEWAY_CONFIG"
    )]
    config: PathBuf,
    /// Log line format: "text" or "json" (default: [log] format in the config, else text).
    #[arg(long, global = true, env = "COUPA_GATEWAY_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Where the mock Coupa instances listen.
#[cfg(feature = "demo")]
#[derive(clap::Args)]
struct MockAddrs {
    /// Address of the mock "prod" instance.
    #[arg(long, default_value = "127.0.0.1:8081")]
    prod: std::net::SocketAddr,
    /// Address of the mock "test" instance.
    #[arg(long, default_value = "127.0.0.1:8082")]
    test: std::net::SocketAddr,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve,
    /// Validate the configuration and print the routing table; exits non-zero on error.
    Check,
    /// Connectivity test: fetch a token for CLIENT and print instance, granted scope and lifetime.
    Token {
        /// The client's name (`[clients.NAME]`).
        client: String,
        /// Also print the access token (it grants API access: handle with care).
        #[arg(long)]
        show_token: bool,
    },
    /// Read an API key on standard input and print the `key_sha256` line for `[[integrations]]`.
    HashKey,
    /// Print a JSON Schema of proxy.toml (for editors: proxy.toml's `#:schema` line).
    Schema,
    /// The migration report: integrations, their routes' modes and verdicts, scopes per client,
    /// and the API keys no integration knows.
    Report {
        /// The admin listener's base URL (default: from the config file's admin.listen).
        #[arg(long)]
        admin: Option<String>,
        /// The admin token (default: the config file's admin.token / admin.token_file).
        #[arg(long, env = "COUPA_GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Print the integrations and unrecognised keys as JSON, for scripts.
        #[arg(long)]
        json: bool,
        /// Remove a removed or renamed integration's history from the ledger (then print
        /// the report). The integration must no longer be in proxy.toml.
        #[arg(long, value_name = "INTEGRATION")]
        forget: Option<String>,
    },
    /// Exit 0 when the running gateway's admin listener answers /healthz (or /readyz with
    /// --ready) with 2xx within 5 s; for container health checks on images without curl.
    Health {
        /// The admin listener's base URL (default: from the config file's admin.listen).
        #[arg(long)]
        admin: Option<String>,
        /// The admin token (default: the config file's admin.token / admin.token_file).
        #[arg(long, env = "COUPA_GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Check readiness (every client holds a valid token) instead of liveness.
        #[arg(long)]
        ready: bool,
    },
    /// Run the built-in mock Coupa (instances "prod" and "test") on its own.
    #[cfg(feature = "demo")]
    Mock {
        #[command(flatten)]
        mocks: MockAddrs,
    },
    /// The mock Coupa and the gateway in one process, with ready-to-paste curl lines.
    #[cfg(feature = "demo")]
    Demo {
        #[command(flatten)]
        mocks: MockAddrs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format.as_deref().map(|f| match f {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    });
    // serve and demo read the format from the config file when no flag is given.
    let reads_config_format = match cli.command {
        Command::Serve => true,
        #[cfg(feature = "demo")]
        Command::Demo { .. } => true,
        _ => false,
    };
    if !reads_config_format {
        commands::init_logging(log_format.unwrap_or(LogFormat::Text));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let config = &cli.config;
        match cli.command {
            Command::Serve => commands::serve(config, log_format).await,
            Command::Check => commands::check(config),
            Command::Token { client, show_token } => {
                commands::token(config, &client, show_token).await
            }
            Command::HashKey => commands::hash_key(),
            Command::Schema => {
                print!("{}", coupa_gateway::config::json_schema());
                Ok(())
            }
            Command::Report {
                admin,
                admin_token,
                json,
                forget,
            } => {
                let target = commands::AdminTarget::new(admin, admin_token, config);
                commands::report(&target, json, forget.as_deref()).await
            }
            Command::Health {
                admin,
                admin_token,
                ready,
            } => {
                let target = commands::AdminTarget::new(admin, admin_token, config);
                commands::health(&target, ready).await
            }
            #[cfg(feature = "demo")]
            Command::Mock { mocks } => commands::mock(mocks.prod, mocks.test).await,
            #[cfg(feature = "demo")]
            Command::Demo { mocks } => {
                commands::demo(config, mocks.prod, mocks.test, log_format).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
