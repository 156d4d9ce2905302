//! Where the migration ledger is kept: in memory (gone with the process), in one local file,
//! or in Redis (shared by replicas). All three hold the records of [`crate::state::ledger`]
//! and add to them with the same merge, so the choice changes durability and reach, never
//! the numbers.

pub mod file;
pub mod redis;

use std::sync::Mutex;

use crate::config::StateStore;
use crate::state::ledger::{Corrupt, Ledger, INTEGRATION, MAX_KEYS};

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state file.
    #[error("state file \"{path}\": {source}")]
    File {
        /// The file.
        path: String,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// The Redis server. The client's error is kept as text, with the password redacted,
    /// rather than as a source: its chain is printed whole in logs and `/status`.
    #[error("redis {url}: {detail}")]
    Redis {
        /// The URL without its password.
        url: String,
        /// What failed.
        detail: String,
    },
    /// A record this version cannot read.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
}

impl StoreError {
    /// The start error: the `[state]` key at fault and the fix for what went wrong.
    pub fn start_problem(&self) -> String {
        use std::io::ErrorKind;
        let (key, fix) = match self {
            StoreError::Corrupt(_) => (
                "state",
                "move the damaged file aside or empty the Redis database (the history in it is lost), or point [state] elsewhere",
            ),
            StoreError::File { source, .. } => match source {
                redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => (
                    "state.path",
                    "another process has the file open: one gateway per file (replicas share a ledger through [state] redis)",
                ),
                redb::Error::Io(io) if io.kind() == ErrorKind::PermissionDenied => (
                    "state.path",
                    "make the file and its directory writable by the gateway's user (systemd: StateDirectory=; containers: a writable volume)",
                ),
                redb::Error::Io(io) if io.kind() == ErrorKind::InvalidData => (
                    "state.path",
                    "the file is not a ledger (or is damaged): move it aside and the gateway creates a new one, or choose another path",
                ),
                redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_) => (
                    "state.path",
                    "the file is damaged or from another redb version: move it aside and the gateway creates a new one",
                ),
                _ => (
                    "state.path",
                    "choose a path whose directory exists or can be created, on a writable file system",
                ),
            },
            StoreError::Redis { .. } => (
                "state.redis",
                "check the host, port, password and database number, and that the server runs Redis 6 or newer",
            ),
        };
        format!("{key}: cannot use the migration ledger: {self}; {fix}")
    }
}

/// An open store.
pub enum Store {
    /// In this process only.
    Memory(Mutex<Ledger>),
    /// `[state] path`.
    File(file::FileStore),
    /// `[state] redis`.
    Redis(redis::RedisStore),
}

impl Store {
    /// Opens (and for files creates) the configured store, checking that it can be used.
    pub async fn open(config: &StateStore) -> Result<Store, StoreError> {
        Ok(match config {
            StateStore::Memory => Store::Memory(Mutex::default()),
            StateStore::File(path) => {
                let path = path.clone();
                let store = tokio::task::spawn_blocking(move || file::FileStore::open(&path))
                    .await
                    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
                Store::File(store)
            }
            StateStore::Redis(url) => {
                use secrecy::ExposeSecret;
                Store::Redis(redis::RedisStore::open(url.expose_secret()).await?)
            }
        })
    }

    /// `memory`, `file` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::File(_) => "file",
            Store::Redis(_) => "redis",
        }
    }

    /// The file or the URL (without password); `None` in memory.
    pub fn location(&self) -> Option<String> {
        match self {
            Store::Memory(_) => None,
            Store::File(f) => Some(f.path().display().to_string()),
            Store::Redis(r) => Some(r.shown().to_owned()),
        }
    }

    /// Adds what a writer saw since its last write.
    pub async fn apply(&self, delta: &Ledger) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                let mut total = m.lock().unwrap_or_else(|p| p.into_inner());
                total.absorb(delta);
                total.evict_keys(MAX_KEYS);
                Ok(())
            }
            Store::File(f) => f.apply(delta).await,
            Store::Redis(r) => r.apply(delta).await,
        }
    }

    /// Everything stored, every writer's traffic together.
    pub async fn load(&self) -> Result<Ledger, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            Store::File(f) => f.load().await,
            Store::Redis(r) => r.load().await,
        }
    }

    /// Removes integration `name`'s history; true when there was any.
    pub async fn forget(&self, name: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .integrations
                .remove(name)
                .is_some()),
            Store::File(f) => f.forget(format!("{INTEGRATION}{name}")).await,
            Store::Redis(r) => r.forget(name).await,
        }
    }
}
