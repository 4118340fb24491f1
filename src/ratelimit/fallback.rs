//! Keeps limiting when Redis cannot answer.
//!
//! Refusing every request during a Redis outage would turn it into a full outage of the
//! gateway; allowing every request would switch brute-force protection off exactly when
//! someone might be causing the outage. So while Redis is down each instance limits on
//! its own, in process, with the same rules (a client spread over N instances may then
//! get up to N times its limit).
//!
//! The first failure opens the outage: it is logged once at warn, and from then on checks
//! go straight to the local limiter, so no request waits for a dead Redis. A background
//! task on the runtime that owns the connection retries Redis every probe interval and
//! closes the outage (logged at info) as soon as a real check succeeds. Counts made
//! locally during the outage are not copied to Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use prometheus::IntCounter;

use super::memory::MemoryLimiter;
use super::redis::{RedisLimitError, RedisLimiter};
use super::{Decision, RateLimiter};
use crate::domain::RateSpec;

/// A Redis limiter that answers from a local one while Redis is down.
pub(super) struct FallbackLimiter {
    primary: RedisLimiter,
    local: MemoryLimiter,
    state: Arc<Outage>,
    fallback_total: IntCounter,
}

/// Whether an outage is open, shared with the probe task.
struct Outage {
    down: AtomicBool,
    probe_interval: Duration,
}

impl FallbackLimiter {
    /// Wraps `primary`, trying it once so that a Redis that is down at start opens an
    /// outage (and its warning) right away rather than on the first request.
    pub(super) async fn start(
        primary: RedisLimiter,
        local: MemoryLimiter,
        fallback_total: IntCounter,
        probe_interval: Duration,
    ) -> Self {
        let limiter = Self {
            primary,
            local,
            state: Arc::new(Outage {
                down: AtomicBool::new(false),
                probe_interval,
            }),
            fallback_total,
        };
        match limiter.primary.probe().await {
            Ok(()) => tracing::info!("rate limits are counted in Redis"),
            Err(e) => limiter.open_outage(&e),
        }
        limiter
    }

    /// Marks Redis down; the caller that flips the flag logs and starts the probe, so an
    /// outage is reported once however many requests noticed it.
    fn open_outage(&self, error: &RedisLimitError) {
        if self.state.down.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            error = %error,
            "Redis cannot answer rate-limit checks; limiting in process until it is back"
        );
        let primary = self.primary.clone();
        // Weak, so a limiter that is dropped during an outage also ends its probe.
        let state: Weak<Outage> = Arc::downgrade(&self.state);
        // On the owning runtime, which lives as long as the gateway; if it is already
        // gone, the handle's task is simply never run and limits stay local.
        self.primary.backend().spawn(async move {
            loop {
                let Some(interval) = state.upgrade().map(|s| s.probe_interval) else {
                    return;
                };
                tokio::time::sleep(interval).await;
                match primary.probe().await {
                    Ok(()) => {
                        if let Some(state) = state.upgrade() {
                            state.down.store(false, Ordering::Release);
                        }
                        tracing::info!("Redis is back; rate limits are shared again");
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "Redis still unavailable"),
                }
            }
        });
    }

    async fn local_check(&self, scope: &str, key: &str, spec: &RateSpec) -> Decision {
        self.fallback_total.inc();
        self.local.check(scope, key, spec).await
    }
}

#[async_trait]
impl RateLimiter for FallbackLimiter {
    async fn check(&self, scope: &str, key: &str, spec: &RateSpec) -> Decision {
        if self.state.down.load(Ordering::Acquire) {
            return self.local_check(scope, key, spec).await;
        }
        match self.primary.check(scope, key, spec).await {
            Ok(decision) => decision,
            Err(e) => {
                self.open_outage(&e);
                self.local_check(scope, key, spec).await
            }
        }
    }
}
