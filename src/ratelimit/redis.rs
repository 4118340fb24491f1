//! The Redis limiter: one sorted set per `(scope, key)`, updated by one atomic Lua script
//! per check, so every gateway instance sees the same count.
//!
//! Keys are `{prefix}rl:{scope}:{key}`; the script sets a TTL of one window on every
//! write, so no key outlives its last hit. Time comes from the Redis server (`TIME`), not
//! from the instances, so clock skew between them cannot stretch or shrink a window.
//!
//! Every call runs on the runtime that [`RedisLimiter::open`] was called on: the
//! connection's socket and driver task live there, and a caller on another runtime (a
//! Pingora worker) only waits for the result.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::Decision;
use crate::backend::{Backend, BackendError};
use crate::domain::RateSpec;

/// Drops hits older than the window, counts the rest, records this hit when there is room,
/// and reports (allowed, hits in the window, microseconds until the oldest one expires).
///
/// KEYS[1] the log; ARGV: limit, window in µs, TTL in ms, a member suffix unique to this hit.
const SLIDING_LOG: &str = r"
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local allowed = 0
if count < limit then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, ARGV[3])
  count = count + 1
  allowed = 1
end
local reset = window
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
if oldest[2] then
  reset = tonumber(oldest[2]) + window - now
end
return {allowed, count, reset}
";

/// Why a Redis check got no answer; the fallback turns any of these into a local answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum RedisLimitError {
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the runtime that owns the Redis connection is gone")]
    RuntimeGone,
}

struct Inner {
    connection: ConnectionManager,
    script: Script,
    prefix: String,
    timeout: Duration,
    /// Makes sorted-set members unique across instances that hit in the same microsecond.
    instance: u64,
    sequence: AtomicU64,
}

/// A sliding-window limiter in Redis. Fallible: wrap it in the fallback.
#[derive(Clone)]
pub(super) struct RedisLimiter {
    inner: Arc<Inner>,
    backend: Backend,
}

impl RedisLimiter {
    /// Prepares a lazy connection on the current runtime; nothing is sent yet.
    ///
    /// Fails only for a URL the Redis client cannot use. The error never repeats the
    /// URL, which may carry a password.
    pub(super) fn open(url: &str, prefix: &str, timeout: Duration) -> Result<Self, String> {
        let backend = Backend::current()
            .ok_or_else(|| "the limiter must be built inside a tokio runtime".to_owned())?;
        let client = Client::open(url).map_err(|e| format!("{:?}", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnection is retried by the fallback's probe, not by piling up retries here.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(timeout);
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                script: Script::new(SLIDING_LOG),
                prefix: prefix.to_owned(),
                timeout,
                instance: uuid::Uuid::new_v4().as_u64_pair().0,
                sequence: AtomicU64::new(0),
            }),
            backend,
        })
    }

    /// Counts one hit in Redis.
    pub(super) async fn check(
        &self,
        scope: &str,
        key: &str,
        spec: &RateSpec,
    ) -> Result<Decision, RedisLimitError> {
        let redis_key = format!("{}rl:{scope}:{key}", self.inner.prefix);
        let spec = *spec;
        let inner = Arc::clone(&self.inner);
        self.on_owning_runtime(async move { inner.run_script(&redis_key, &spec).await })
            .await
    }

    /// The check used to see whether Redis is back: a real script run on a probe key,
    /// so a Redis that answers PING but refuses writes still counts as down.
    pub(super) async fn probe(&self) -> Result<(), RedisLimitError> {
        let key = format!("{}rl:probe", self.inner.prefix);
        let spec = RateSpec {
            limit: 1,
            window: Duration::from_secs(1),
        };
        let inner = Arc::clone(&self.inner);
        self.on_owning_runtime(async move { inner.run_script(&key, &spec).await.map(|_| ()) })
            .await
    }

    /// The runtime that owns the connection, for the fallback's probe task.
    pub(super) fn backend(&self) -> &Backend {
        &self.backend
    }

    async fn on_owning_runtime<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, RedisLimitError>> + Send + 'static,
    ) -> Result<T, RedisLimitError> {
        match self.backend.run_within(self.inner.timeout, call).await {
            Ok(result) => result,
            Err(BackendError::TimedOut(limit)) => Err(RedisLimitError::Timeout(limit)),
            Err(BackendError::Gone | BackendError::Panicked) => Err(RedisLimitError::RuntimeGone),
        }
    }
}

impl Inner {
    async fn run_script(&self, key: &str, spec: &RateSpec) -> Result<Decision, RedisLimitError> {
        let window_us = u64::try_from(spec.window.as_micros()).unwrap_or(u64::MAX);
        let ttl_ms = window_us.div_ceil(1000).max(1);
        let member = format!(
            "{:x}-{:x}",
            self.instance,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let mut connection = self.connection.clone();
        let (allowed, count, reset_us): (i64, i64, i64) = self
            .script
            .key(key)
            .arg(spec.limit)
            .arg(window_us)
            .arg(ttl_ms)
            .arg(member)
            .invoke_async(&mut connection)
            .await?;
        Ok(Decision::from_window(
            spec,
            allowed == 1,
            u64::try_from(count).unwrap_or(0),
            Duration::from_micros(u64::try_from(reset_us).unwrap_or(0)),
        ))
    }
}
