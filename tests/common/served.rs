//! The gateway as its own process (`coupa-gateway serve`), for what only a process shows:
//! restarts, crashes, replicas.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::bin;

/// A running `serve` with JSON logs collected, its listeners' addresses known.
pub struct Served {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `serve --config cfg` and waits until it listens and is ready.
    pub async fn start(cfg: &Path) -> Served {
        let mut child = bin()
            .args(["serve", "--log-format", "json", "--config"])
            .arg(cfg)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(v) = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .filter(|v| v["message"] == "coupa-gateway listening")
                {
                    let addr = |k: &str| v[k].as_str().unwrap().parse::<SocketAddr>().unwrap();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((addr("addr"), addr("admin_addr")));
                    }
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let (addr, admin) = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .unwrap_or_else(|_| panic!("no listening line in:\n{}", log.lock().unwrap()))
            .unwrap_or_else(|_| panic!("serve exited:\n{}", log.lock().unwrap()));
        let served = Served {
            child,
            addr,
            admin,
            log,
        };
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while served.admin_get("/readyz").await.0 != 200 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "not ready:\n{}", served.log());
        served
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `GET path` on the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = super::Http::new()
            .get(&format!("http://{}{path}", self.admin), &[])
            .await;
        (r.status.as_u16(), r.text())
    }

    /// The `/status` document.
    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = self.admin_get("/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// SIGTERM, and the exit code.
    pub async fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        status.code()
    }

    /// SIGKILL: a crash, nothing flushed.
    pub async fn crash(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait().await;
    }
}
