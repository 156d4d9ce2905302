//! Running the `coupa-gateway` binary, and the scratch directories its config files go in.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The binary, with no config from the environment, logging at `warn`, killed if the test
/// drops it (a test that panics leaves no process behind).
pub fn bin() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_coupa-gateway"));
    cmd.env_remove("COUPA_GATEWAY_CONFIG")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

/// [`run_within`] 60 s.
pub async fn run(cmd: &mut tokio::process::Command) -> (i32, String, String) {
    run_within(Duration::from_secs(60), cmd).await
}

/// Runs `cmd` to the end within `timeout`: its exit code (-1 when a signal ended it), stdout
/// and stderr.
pub async fn run_within(
    timeout: Duration,
    cmd: &mut tokio::process::Command,
) -> (i32, String, String) {
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .expect("command finishes")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh directory under the system temp dir, removed on drop. The name carries the
/// process id and a random part, so tests running at once never share one.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "coupa-gateway-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to the file `name` in the directory; returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
