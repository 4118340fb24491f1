//! The in-process limiter: one sliding-window log per `(scope, key)` in a bounded cache.
//!
//! Used on its own with `memory://`, and as the local answer while Redis is down.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use moka::policy::EvictionPolicy;

use super::{Decision, RateLimiter};
use crate::domain::RateSpec;

/// The allowed hits of one client in one scope, oldest first, in microseconds since the
/// limiter started. Never longer than the limit, because refused hits are not recorded.
struct Log {
    window: Duration,
    /// What the log can grow to, charged against the capacity when it is created.
    weight: u32,
    hits: Mutex<VecDeque<u64>>,
}

/// Forgets a log one window after its last use, when every hit in it has expired anyway.
struct IdleForAWindow;

impl Expiry<String, Arc<Log>> for IdleForAWindow {
    fn expire_after_create(
        &self,
        _key: &String,
        log: &Arc<Log>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(log.window)
    }

    fn expire_after_read(
        &self,
        _key: &String,
        log: &Arc<Log>,
        _read_at: std::time::Instant,
        _until_expiry: Option<Duration>,
        _last_modified_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(log.window)
    }
}

/// An exact sliding-window limiter held in this process, with bounded memory.
pub struct MemoryLimiter {
    logs: Cache<String, Arc<Log>>,
    epoch: Instant,
}

impl MemoryLimiter {
    /// A limiter that holds at most about `capacity` recorded hits in all.
    ///
    /// Each key is charged its full limit up front, so the bound holds however the logs
    /// fill. When it is reached the least recently used key is forgotten (which only
    /// gives that client a fresh window); plain LRU rather than moka's frequency-based
    /// admission, so a new client is always tracked.
    pub fn new(capacity: u64) -> Self {
        let logs = Cache::builder()
            .max_capacity(capacity)
            .weigher(|_key: &String, log: &Arc<Log>| log.weight)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(IdleForAWindow)
            .build();
        Self {
            logs,
            epoch: Instant::now(),
        }
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new(super::Options::default().memory_capacity)
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, scope: &str, key: &str, spec: &RateSpec) -> Decision {
        // A newline cannot occur in a scope or an address, so the pair stays unambiguous
        // even though IPv6 addresses and route scopes both contain ':'.
        let cache_key = format!("{scope}\n{key}");
        let log = self
            .logs
            .get_with(cache_key, async {
                Arc::new(Log {
                    window: spec.window,
                    // One unit for the key and the cache entry itself.
                    weight: spec.limit.saturating_add(1),
                    hits: Mutex::new(VecDeque::new()),
                })
            })
            .await;
        let now = self.now_micros();
        let window = u64::try_from(spec.window.as_micros()).unwrap_or(u64::MAX);
        let mut hits = log.hits.lock().unwrap_or_else(PoisonError::into_inner);
        record(&mut hits, now, window, spec)
    }
}

/// The sliding-window rule on one log; the Redis script implements the same steps.
fn record(hits: &mut VecDeque<u64>, now: u64, window: u64, spec: &RateSpec) -> Decision {
    // A hit at time t counts while now < t + window.
    while hits
        .front()
        .is_some_and(|&t| t.saturating_add(window) <= now)
    {
        hits.pop_front();
    }
    let allowed = hits.len() < spec.limit as usize;
    if allowed {
        hits.push_back(now);
    }
    let reset = hits
        .front()
        .map_or(window, |&oldest| oldest.saturating_add(window) - now);
    Decision::from_window(
        spec,
        allowed,
        hits.len() as u64,
        Duration::from_micros(reset),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_allows_limit_then_frees_the_oldest_slot() {
        let spec = RateSpec {
            limit: 3,
            window: Duration::from_micros(100),
        };
        let mut hits = VecDeque::new();
        for (i, now) in [0, 10, 20].into_iter().enumerate() {
            let d = record(&mut hits, now, 100, &spec);
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i as u32);
        }
        let d = record(&mut hits, 50, 100, &spec);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_micros(50)));
        assert_eq!(hits.len(), 3, "a refused hit is not recorded");
        // At 99 the first hit is still inside the window; at 100 it has left.
        assert!(!record(&mut hits, 99, 100, &spec).allowed);
        let d = record(&mut hits, 100, 100, &spec);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset_after, Duration::from_micros(10));
    }

    #[tokio::test]
    async fn memory_stays_within_capacity_however_many_clients() {
        let limiter = MemoryLimiter::new(100);
        let spec = RateSpec {
            limit: 9,
            window: Duration::from_secs(60),
        };
        for i in 0..1_000 {
            let d = limiter
                .check("global", &format!("10.0.{}.{}", i / 256, i % 256), &spec)
                .await;
            assert!(d.allowed, "a new client is always tracked and allowed");
        }
        limiter.logs.run_pending_tasks().await;
        assert!(
            limiter.logs.weighted_size() <= 100,
            "weighted size {} over capacity",
            limiter.logs.weighted_size()
        );
        // The most recent client is still tracked: its next hits count on.
        let last = limiter.check("global", "10.0.3.231", &spec).await;
        assert_eq!(last.remaining, 7);
    }
}
