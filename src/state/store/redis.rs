//! `[state] redis`: the ledger in Redis, shared by every replica that names the same server and
//! database. Records are JSON strings under `coupa-gateway:ledger:` + the record key; a set
//! indexes them and a sorted set orders the unrecognised keys by last sighting for eviction.
//!
//! A flush adds its records under `WATCH`: read, merge in Rust (the same merge every store
//! uses), write in `MULTI`/`EXEC`; a replica that wrote a watched record meanwhile makes `EXEC`
//! fail and the flush reads again. One merge rule in one language, at the cost of three round
//! trips a second per replica, off the request path. `WATCH` state belongs to a connection, so
//! this store's commands go through one connection one at a time (the mutex), never shared.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use tokio::sync::Mutex;

use super::StoreError;
use crate::config::redis_url_shown as shown_url;
use crate::state::ledger::{Change, Ledger, Meta, INTEGRATION, KEY, MAX_KEYS};

const PREFIX: &str = "coupa-gateway:ledger:";
const INDEX: &str = "coupa-gateway:ledger-index";
const KEYS_BY_AGE: &str = "coupa-gateway:ledger-keys-by-age";
const EVICTED: &str = "coupa-gateway:ledger-keys-evicted";
/// Attempts before a flush gives up for this round (its records stay pending).
const TRIES: usize = 5;
/// Every command's bound: a slow Redis delays a flush, never a request, but a report waits.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to the shared ledger.
pub struct RedisStore {
    conn: Mutex<ConnectionManager>,
    /// The URL without its password, for messages.
    shown: String,
    /// Redacted from every message (the server does not echo it, but a proxy might).
    password: Option<String>,
}

impl RedisStore {
    /// Connects and checks that the server answers (and accepts the password).
    pub async fn open(url: &str) -> Result<RedisStore, StoreError> {
        let shown = shown_url(url);
        let client = redis::Client::open(url).map_err(|e| StoreError::Redis {
            url: shown.clone(),
            detail: format!("not a usable Redis URL ({})", e.category()),
        })?;
        let password = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_owned);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(TIMEOUT);
        let store = RedisStore {
            conn: Mutex::new(
                ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
                    StoreError::Redis {
                        url: shown.clone(),
                        detail: e.to_string(),
                    }
                })?,
            ),
            shown,
            password,
        };
        let mut conn = store.conn.lock().await;
        let pong: String = redis::cmd("PING")
            .query_async(&mut *conn)
            .await
            .map_err(|e| store.error(&e))?;
        drop(conn);
        if pong != "PONG" {
            return Err(StoreError::Redis {
                url: store.shown.clone(),
                detail: format!("answered PING with {pong:?}; is this a Redis server?"),
            });
        }
        Ok(store)
    }

    /// Where the ledger is, without the password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn error(&self, e: &redis::RedisError) -> StoreError {
        let mut detail = e.to_string();
        if let Some(p) = self.password.as_deref().filter(|p| !p.is_empty()) {
            detail = detail.replace(p, "***");
        }
        StoreError::Redis {
            url: self.shown.clone(),
            detail,
        }
    }

    /// Adds `delta`, retrying when another replica wrote the same records meanwhile.
    pub async fn apply(&self, delta: &Ledger) -> Result<(), StoreError> {
        let changes = delta.changes();
        let keys: Vec<String> = changes
            .iter()
            .map(|c| format!("{PREFIX}{}", c.key()))
            .collect();
        let mut conn = self.conn.lock().await;
        for _ in 0..TRIES {
            redis::cmd("WATCH")
                .arg(&keys)
                .query_async::<()>(&mut *conn)
                .await
                .map_err(|e| self.error(&e))?;
            let stored: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut *conn)
                .await
                .map_err(|e| self.error(&e))?;
            let mut tx = redis::pipe();
            tx.atomic();
            let mut writes = 0;
            let mut new_keys = false;
            for ((change, key), old) in changes.iter().zip(&keys).zip(&stored) {
                // A corrupt record ends the attempt; the WATCH left behind is harmless (the
                // next attempt's WATCH adds to it, and EXEC or UNWATCH clears it).
                let Some(bytes) = change.merged(old.as_deref())? else {
                    continue;
                };
                tx.set(key, bytes).ignore();
                tx.sadd(INDEX, change.key()).ignore();
                if let Change::Key(hex, record) = change {
                    new_keys |= old.is_none();
                    let last_seen = match old {
                        Some(old) => serde_json::from_slice::<crate::state::ledger::KeyRecord>(old)
                            .map_or(record.last_seen, |o| o.last_seen.max(record.last_seen)),
                        None => record.last_seen,
                    };
                    tx.zadd(KEYS_BY_AGE, hex, last_seen).ignore();
                }
                writes += 1;
            }
            if writes == 0 {
                redis::cmd("UNWATCH")
                    .query_async::<()>(&mut *conn)
                    .await
                    .map_err(|e| self.error(&e))?;
                return Ok(());
            }
            let done: Option<()> = tx
                .query_async(&mut *conn)
                .await
                .map_err(|e| self.error(&e))?;
            if done.is_some() {
                if new_keys {
                    self.evict(&mut conn).await?;
                }
                return Ok(());
            }
        }
        Err(StoreError::Redis {
            url: self.shown.clone(),
            detail: format!("other replicas wrote the same records during each of {TRIES} attempts; the records stay pending"),
        })
    }

    async fn evict(&self, conn: &mut ConnectionManager) -> Result<(), StoreError> {
        let count: usize = conn.zcard(KEYS_BY_AGE).await.map_err(|e| self.error(&e))?;
        if count <= MAX_KEYS {
            return Ok(());
        }
        // ZPOPMIN is atomic: two replicas evicting at once drop different keys.
        let gone: Vec<(String, f64)> = conn
            .zpopmin(KEYS_BY_AGE, (count - MAX_KEYS) as isize)
            .await
            .map_err(|e| self.error(&e))?;
        let mut tx = redis::pipe();
        for (hex, _) in &gone {
            let record = format!("{KEY}{hex}");
            tx.del(format!("{PREFIX}{record}")).ignore();
            tx.srem(INDEX, record).ignore();
        }
        tx.incr(EVICTED, gone.len()).ignore();
        tx.query_async::<()>(conn).await.map_err(|e| self.error(&e))
    }

    /// Everything stored.
    pub async fn load(&self) -> Result<Ledger, StoreError> {
        let mut conn = self.conn.lock().await;
        let index: Vec<String> = conn.smembers(INDEX).await.map_err(|e| self.error(&e))?;
        let evicted: Option<u64> = conn.get(EVICTED).await.map_err(|e| self.error(&e))?;
        let mut records = Vec::with_capacity(index.len());
        // MGET in slices: one command per thousand records keeps each reply small.
        for chunk in index.chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|k| format!("{PREFIX}{k}")).collect();
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut *conn)
                .await
                .map_err(|e| self.error(&e))?;
            records.extend(
                chunk
                    .iter()
                    .zip(values)
                    .filter_map(|(k, v)| Some((k.clone(), v?))),
            );
        }
        drop(conn);
        let mut ledger =
            Ledger::from_records(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        ledger.meta = Meta {
            keys_evicted: ledger.meta.keys_evicted + evicted.unwrap_or(0),
            ..ledger.meta
        };
        Ok(ledger)
    }

    /// Removes integration `name`'s record; true when there was one.
    pub async fn forget(&self, name: &str) -> Result<bool, StoreError> {
        let record = format!("{INTEGRATION}{name}");
        let mut conn = self.conn.lock().await;
        let (removed, _): (u64, u64) = redis::pipe()
            .atomic()
            .del(format!("{PREFIX}{record}"))
            .srem(INDEX, &record)
            .query_async(&mut *conn)
            .await
            .map_err(|e| self.error(&e))?;
        Ok(removed > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::redis_url_shown as shown_url;

    #[test]
    fn the_shown_url_has_no_password() {
        assert_eq!(
            shown_url("redis://:s3cret@cache:6379/2"),
            "redis://***@cache:6379/2"
        );
        assert_eq!(
            shown_url("rediss://user:p@ss@cache/0"),
            "rediss://***@cache/0"
        );
        assert_eq!(shown_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(shown_url("cache:6379"), "(not a URL)");
    }
}
