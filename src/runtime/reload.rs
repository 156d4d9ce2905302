//! Hot reload: on SIGHUP or when the config file (or a file it names) changes, parse and
//! validate the whole file, mint tokens for new or changed clients, and swap the runtime in one
//! store. Anything that fails leaves the running configuration in force and is reported.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;

use crate::config::Config;
use crate::runtime::{Runtime, Shared};

/// How often the file watcher looks at the config and secret files. Polling rather than
/// inotify: Kubernetes ConfigMap and Secret volumes swap a symlink, which file watches miss.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// What an applied reload changed, for logs and tests.
#[derive(Debug, Default)]
pub struct Applied {
    /// Clients that got a new token cell (new, or token request changed).
    pub new_tokens: Vec<String>,
    /// Settings that need a restart to take effect.
    pub restart_required: Vec<String>,
}

/// Reads, validates and applies `path`.
pub async fn reload_file(shared: &Shared, path: &Path) -> Result<Applied, String> {
    match Config::from_file(path) {
        Ok(config) => apply(shared, config).await,
        Err(e) => {
            let message = e.to_string();
            refused(shared, &message);
            Err(message)
        }
    }
}

fn refused(shared: &Shared, message: &str) {
    tracing::error!(error = %message, "configuration reload refused; the previous configuration stays in force");
    let mut status = shared.reload.lock().unwrap_or_else(|p| p.into_inner());
    status.at = Some(SystemTime::now());
    status.error = Some(message.to_owned());
    status.refused += 1;
    drop(status);
    #[cfg(unix)]
    crate::ops::sd_notify::notify(
        "STATUS=configuration reload refused; the previous configuration stays in force",
    );
}

/// Applies a validated configuration. New or changed clients get their first token before the
/// new runtime goes live; if any cannot, the reload is refused with the reason. In-flight
/// requests keep the runtime they started with.
pub async fn apply(shared: &Shared, mut config: Config) -> Result<Applied, String> {
    let _one_at_a_time = shared.reload_lock.lock().await;
    let current = shared.runtime.load_full();
    let mut restart_required = Vec::new();
    // Listeners are bound once; show the running address and say a restart is needed.
    if config.server.listen != current.config.server.listen {
        restart_required.push(format!(
            "server.listen ({} -> {})",
            current.config.server.listen, config.server.listen
        ));
        config.server.listen = current.config.server.listen;
    }
    if config.admin.listen != current.config.admin.listen {
        restart_required.push(format!(
            "admin.listen ({} -> {})",
            current.config.admin.listen, config.admin.listen
        ));
        config.admin.listen = current.config.admin.listen;
    }
    if config.server.workers != current.config.server.workers {
        restart_required.push(format!(
            "server.workers ({} -> {})",
            current.config.server.workers, config.server.workers
        ));
        config.server.workers = current.config.server.workers;
    }
    if config.log.format != current.config.log.format {
        restart_required.push("log.format".to_owned());
    }
    // The ledger's store is opened once; moving it would split the evidence between two.
    if !config.state.store.same_as(&current.config.state.store)
        || config.state.flush_interval != current.config.state.flush_interval
    {
        restart_required.push("state".to_owned());
        config.state = current.config.state.clone();
    }
    // TLS files and the proxy setting are only checked here: config validation saw that the
    // files exist, not that they hold usable certificates.
    let (runtime, fresh) = match Runtime::build(
        config,
        &shared.metrics,
        &shared.tracker,
        &shared.budgets,
        Some(&current),
    ) {
        Ok(built) => built,
        Err(message) => {
            refused(shared, &message);
            return Err(message);
        }
    };

    let mut minting = JoinSet::new();
    for cell in &fresh {
        // The new runtime's client: a changed CA or proxy applies to the first token too.
        let (cell, http) = (cell.clone(), runtime.token_http.clone());
        minting.spawn(async move { (cell.name().to_owned(), cell.prime(&http).await) });
    }
    let mut failures = Vec::new();
    let mut publish_at = Instant::now();
    while let Some(done) = minting.join_next().await {
        match done {
            Ok((name, Ok(requested_at))) => {
                // A client that already had a valid token keeps it through the warm-up, as a
                // background refresh would.
                let replaces_valid = current
                    .tokens
                    .get(&name)
                    .is_some_and(|old| old.is_ready(Instant::now()));
                if replaces_valid {
                    let warmup = runtime.tokens[&name].warmup();
                    publish_at = publish_at.max(requested_at + warmup);
                }
            }
            Ok((name, Err(e))) => failures.push(format!(
                "clients.{name}: cannot get a token: {e}; {}",
                e.hint()
            )),
            Err(e) => failures.push(format!("token task failed: {e}")),
        }
    }
    if !failures.is_empty() {
        let message = failures.join("\n");
        refused(shared, &message);
        return Err(message);
    }
    tokio::time::sleep_until(publish_at.into()).await;
    for cell in &fresh {
        cell.start(runtime.token_http.clone());
    }
    let runtime = Arc::new(runtime);
    shared.runtime.store(runtime.clone());
    runtime.observe_modes();
    let applied = Applied {
        new_tokens: fresh.iter().map(|c| c.name().to_owned()).collect(),
        restart_required,
    };
    tracing::info!(
        new_tokens = ?applied.new_tokens,
        restart_required = ?applied.restart_required,
        "configuration reloaded"
    );
    let mut status = shared.reload.lock().unwrap_or_else(|p| p.into_inner());
    status.at = Some(SystemTime::now());
    status.error = None;
    status.restart_required = applied.restart_required.clone();
    status.applied += 1;
    drop(status);
    // Every client of the new configuration holds a token (it was minted above).
    #[cfg(unix)]
    crate::ops::sd_notify::notify(
        "READY=1\nSTATUS=configuration reloaded; every client holds a token",
    );
    Ok(applied)
}

/// A fingerprint of the config file and the other files the running config reads. `None`
/// when the config file cannot be read (a reload then reports why).
fn fingerprint(path: &Path, files: &[PathBuf]) -> Option<u64> {
    let mut h = DefaultHasher::new();
    std::fs::read(path).ok()?.hash(&mut h);
    for f in files {
        std::fs::read(f).ok().hash(&mut h);
    }
    Some(h.finish())
}

/// Secret files, the listener's certificate and key, and the extra CA bundle: replacing any of
/// them (cert-manager renewing a certificate, a rotated secret) reloads like an edit would.
fn watched_files(shared: &Shared) -> Vec<PathBuf> {
    let runtime = shared.runtime.load();
    let config = &runtime.config;
    let secrets = config
        .clients
        .values()
        .filter_map(|c| c.secret_file.clone());
    let tls = config
        .server
        .tls
        .iter()
        .flat_map(|t| [t.cert.clone(), t.key.clone()]);
    secrets
        .chain(config.admin.token.as_ref().and_then(|t| t.file.clone()))
        .chain(tls)
        .chain(config.upstream.ca_file.clone())
        .collect()
}

/// The change-detection state of a watched config: what the running config was read from.
pub struct Watch {
    path: PathBuf,
    last: Option<u64>,
}

impl Watch {
    /// Takes the fingerprint now, so a change made right after start-up is not missed.
    pub fn new(shared: &Shared, path: PathBuf) -> Self {
        let last = fingerprint(&path, &watched_files(shared));
        Self { path, last }
    }

    /// Polls every `every`; reloads when the files' content changes. Stops when the gateway
    /// is dropped.
    pub async fn run(mut self, shared: Weak<Shared>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let now = fingerprint(&self.path, &watched_files(&shared));
            if now != self.last {
                self.last = now;
                tracing::info!(path = %self.path.display(), "configuration changed; reloading");
                let _ = reload_file(&shared, &self.path).await;
            }
        }
    }
}

/// Reloads on every SIGHUP until the gateway is dropped. The handler is installed before this
/// returns, not when the task first runs: a SIGHUP arriving in between would otherwise get
/// the default action and end the process (a test or an operator may send one as soon as the
/// first token is minted).
#[cfg(unix)]
pub fn on_sighup(
    shared: Weak<Shared>,
    path: PathBuf,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let hup = signal(SignalKind::hangup());
    async move {
        let Ok(mut hup) = hup else {
            tracing::warn!("cannot install a SIGHUP handler; reload by editing the file instead");
            return;
        };
        while hup.recv().await.is_some() {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            tracing::info!("SIGHUP: reloading configuration");
            let _ = reload_file(&shared, &path).await;
        }
    }
}
