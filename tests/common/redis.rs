//! A real `redis-server` (Debian's package) on a free loopback port, for the ledger shared by
//! replicas. Without the binary the tests that need it skip, unless `CI` is set: `.ci/run`
//! installs it, so there a missing server is a failure.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::TempDir;

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    /// Extra `redis-server` arguments.
    args: Vec<String>,
    /// `requirepass`, for `redis-cli`.
    password: Option<String>,
}

/// The `redis-server` binary, if installed.
fn binary() -> Option<&'static str> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

impl RedisServer {
    /// A fresh server with an append-only file fsync'd on every write, so a `kill -9` loses
    /// nothing the server acknowledged (the ledger's own guarantees are under test, not
    /// Redis's). `None`: not installed (outside CI).
    pub async fn start() -> Option<RedisServer> {
        Self::start_with(&[]).await
    }

    /// [`RedisServer::start`] with extra `redis-server` arguments (`--requirepass PW`).
    pub async fn start_with(args: &[&str]) -> Option<RedisServer> {
        if binary().is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed; .ci/run installs Debian's redis-server"
            );
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut server = RedisServer {
            child: None,
            port,
            dir: TempDir::new("redis"),
            args: args.iter().map(|a| a.to_string()).collect(),
            password: args
                .iter()
                .position(|a| *a == "--requirepass")
                .map(|i| args[i + 1].to_owned()),
        };
        server.run().await;
        Some(server)
    }

    async fn run(&mut self) {
        let child = Command::new(binary().unwrap())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let up = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if self.cli(&["PING"]).await.trim() == "PONG" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            up.is_ok(),
            "redis-server on port {} never answered",
            self.port
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli` on this server: its output.
    pub async fn cli(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--no-auth-warning", "-a", p.as_str()]),
            )
            .args(args)
            .output()
            .await
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kill -9`: the server is gone, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and files.
    pub async fn restart(&mut self) {
        self.kill();
        self.run().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
