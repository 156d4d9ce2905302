//! `[state] path`: the ledger in one redb file. Each flush is one write transaction, committed
//! with an fsync, so a crash loses at most what arrived since the last flush and never leaves
//! a half-written record (redb's commits are copy-on-write).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::StoreError;
use crate::state::ledger::{Change, Ledger, KEY, MAX_KEYS};

/// Record key -> JSON record, as [`crate::state::ledger`] defines them.
const RECORDS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("ledger");

/// An open state file (redb holds an exclusive lock on it while open).
pub struct FileStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl FileStore {
    /// Opens `path`, creating it (and its directory) when missing.
    pub fn open(path: &Path) -> Result<FileStore, StoreError> {
        let fail = in_file(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(redb::StorageError::Io(e).into()))?;
        }
        let db = Database::create(path).map_err(|e| fail(e.into()))?;
        // Creating the table proves the file writable now, not at the first flush.
        let txn = db.begin_write().map_err(|e| fail(e.into()))?;
        txn.open_table(RECORDS).map_err(|e| fail(e.into()))?;
        txn.commit().map_err(|e| fail(e.into()))?;
        Ok(FileStore {
            db: Arc::new(db),
            path: path.to_owned(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `delta` in one transaction.
    pub async fn apply(&self, delta: &Ledger) -> Result<(), StoreError> {
        let changes = delta.changes();
        let (db, fail) = (self.db.clone(), in_file(&self.path));
        blocking(move || {
            let txn = db.begin_write().map_err(|e| fail(e.into()))?;
            {
                let mut table = txn.open_table(RECORDS).map_err(|e| fail(e.into()))?;
                let mut new_key = false;
                for change in &changes {
                    let key = change.key();
                    let stored = table.get(key.as_str()).map_err(|e| fail(e.into()))?;
                    new_key |= stored.is_none() && matches!(change, Change::Key(..));
                    let merged = change.merged(stored.as_ref().map(|g| g.value()))?;
                    drop(stored);
                    if let Some(bytes) = merged {
                        table
                            .insert(key.as_str(), bytes.as_slice())
                            .map_err(|e| fail(e.into()))?;
                    }
                }
                if new_key {
                    evict(&mut table).map_err(|e| match e {
                        Evict::Store(e) => fail(e),
                        Evict::Corrupt(c) => StoreError::Corrupt(c),
                    })?;
                }
            }
            txn.commit().map_err(|e| fail(e.into()))
        })
        .await
    }

    /// Everything stored.
    pub async fn load(&self) -> Result<Ledger, StoreError> {
        let (db, fail) = (self.db.clone(), in_file(&self.path));
        blocking(move || {
            let txn = db.begin_read().map_err(|e| fail(e.into()))?;
            let table = txn.open_table(RECORDS).map_err(|e| fail(e.into()))?;
            let mut records = Vec::new();
            for entry in table.iter().map_err(|e| fail(e.into()))? {
                let (k, v) = entry.map_err(|e| fail(e.into()))?;
                records.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(Ledger::from_records(
                records.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            )?)
        })
        .await
    }

    /// Removes integration `name`'s record; true when there was one.
    pub async fn forget(&self, key: String) -> Result<bool, StoreError> {
        let (db, fail) = (self.db.clone(), in_file(&self.path));
        let result = blocking(move || {
            let txn = db.begin_write()?;
            let removed = {
                let mut table = txn.open_table(RECORDS)?;
                let removed = table.remove(key.as_str())?.is_some();
                removed
            };
            txn.commit()?;
            Ok::<bool, redb::Error>(removed)
        })
        .await;
        result.map_err(fail)
    }
}

/// redb's errors, with the file they concern.
fn in_file(path: &Path) -> impl Fn(redb::Error) -> StoreError + Send + 'static {
    let path = path.display().to_string();
    move |source| StoreError::File {
        path: path.clone(),
        source,
    }
}

enum Evict {
    Store(redb::Error),
    Corrupt(crate::state::ledger::Corrupt),
}

/// Keeps at most [`MAX_KEYS`] unrecognised keys, dropping the least recently seen.
fn evict(table: &mut redb::Table<'_, &str, &[u8]>) -> Result<(), Evict> {
    let store = |e: redb::StorageError| Evict::Store(e.into());
    // "key;" is the first string after every "key:..." (';' follows ':').
    let end = format!("{};", KEY.trim_end_matches(':'));
    let mut keys = Vec::new();
    for entry in table.range(KEY..end.as_str()).map_err(store)? {
        let (k, v) = entry.map_err(store)?;
        keys.push((k.value().to_owned(), v.value().to_vec()));
    }
    if keys.len() <= MAX_KEYS {
        return Ok(());
    }
    let mut ledger = Ledger::from_records(keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
        .map_err(Evict::Corrupt)?;
    let gone = ledger.evict_keys(MAX_KEYS);
    for hex in &gone {
        table
            .remove(format!("{KEY}{hex}").as_str())
            .map_err(store)?;
    }
    let counted = Change::Meta(crate::state::ledger::Meta {
        observed_since: None,
        keys_evicted: gone.len() as u64,
    });
    let meta_key = counted.key();
    let stored = table.get(meta_key.as_str()).map_err(store)?;
    let merged = counted
        .merged(stored.as_ref().map(|g| g.value()))
        .map_err(Evict::Corrupt)?;
    drop(stored);
    if let Some(bytes) = merged {
        table
            .insert(meta_key.as_str(), bytes.as_slice())
            .map_err(store)?;
    }
    Ok(())
}

/// Runs redb's blocking I/O off the async workers.
async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
