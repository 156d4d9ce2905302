//! The fleet-wide half of the rate budget: each instance's GCRA state ("theoretical arrival
//! time") in Redis, advanced by a Lua script in one atomic round trip per turn, on Redis's own
//! clock (`TIME`), so replicas with skewed clocks still share one schedule. A Coupa 429/503
//! seen by one replica pushes the shared schedule back for all.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use secrecy::{ExposeSecret, SecretString};

/// How long a replica waits for Redis before spending its local share instead. A turn is
/// 40 ms at Coupa's 25/s: Redis must answer well within one.
pub const TIMEOUT: Duration = Duration::from_millis(250);

/// Reserve the next turn: returns `{1, wait_us}`, or `{0, excess_us}` when the wait would pass
/// `max_wait` (nothing reserved, as in the local limiter).
const RESERVE: &str = r"
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat - tolerance, now)
local wait = start - now
if wait > max_wait then
  return {0, wait - max_wait}
end
local nxt = math.max(tat, now) + interval
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor((nxt - now) / 1000) + 1000)
return {1, wait}
";

/// Hold every turn until `pause_us` from now: the schedule's floor rises to then (plus the
/// burst tolerance, so the burst does not fire at once when the pause ends).
const PAUSE: &str = r"
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local floor = now + tonumber(ARGV[1]) + tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if floor > tat then
  redis.call('SET', KEYS[1], string.format('%.0f', floor), 'PX', math.floor((floor - now) / 1000) + 1000)
end
return 1
";

/// A reserved turn, or none.
#[derive(Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Go after this wait.
    After(Duration),
    /// The fleet is over budget by more than the wait allowed: this much over.
    Over(Duration),
}

/// The connection every instance's budget shares (commands are multiplexed; no `WATCH`).
pub struct Fleet {
    conn: ConnectionManager,
    reserve: Script,
    pause: Script,
}

impl Fleet {
    /// Prepares the connection; it is made on first use and remade after failures.
    pub fn new(url: &SecretString) -> Result<Fleet, redis::RedisError> {
        let client = redis::Client::open(url.expose_secret())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(TIMEOUT);
        Ok(Fleet {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            reserve: Script::new(RESERVE),
            pause: Script::new(PAUSE),
        })
    }

    fn key(instance: &str) -> String {
        format!("coupa-gateway:budget:{instance}")
    }

    /// Reserves the instance's next turn across the fleet.
    pub async fn reserve(
        &self,
        instance: &str,
        interval: Duration,
        tolerance: Duration,
        max_wait: Duration,
    ) -> Result<Reservation, redis::RedisError> {
        let micros = |d: Duration| d.as_micros().min(u128::from(u64::MAX / 2)) as u64;
        let mut conn = self.conn.clone();
        let (granted, us): (u8, i64) = self
            .reserve
            .key(Self::key(instance))
            .arg(micros(interval))
            .arg(micros(tolerance))
            .arg(micros(max_wait))
            .invoke_async(&mut conn)
            .await?;
        let d = Duration::from_micros(us.max(0) as u64);
        Ok(if granted == 1 {
            Reservation::After(d)
        } else {
            Reservation::Over(d)
        })
    }

    /// Pauses the instance for the whole fleet.
    pub async fn pause(
        &self,
        instance: &str,
        pause: Duration,
        tolerance: Duration,
    ) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        self.pause
            .key(Self::key(instance))
            .arg(pause.as_micros() as u64)
            .arg(tolerance.as_micros() as u64)
            .invoke_async::<()>(&mut conn)
            .await
    }
}
