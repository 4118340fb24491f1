//! Per-client rate limits (DESIGN section 5): one [`RateLimiter`] trait, an in-process
//! backend and a Redis backend shared by every gateway instance.
//!
//! Both backends keep an exact sliding-window log: a hit is allowed when fewer than
//! `limit` allowed hits happened in the last `window`. Refused hits are not recorded, so a
//! client that keeps hammering gets its next slot exactly when its oldest allowed hit
//! leaves the window. There is no fixed-window boundary at which a client could fit two
//! windows' worth of requests.
//!
//! [`connect`] picks the backend from `sessions.url`: `memory://` stays in-process;
//! `redis://…` counts in Redis with one atomic Lua script per check and falls back to an
//! in-process limiter while Redis cannot answer (see `fallback.rs`), so an outage neither
//! refuses all traffic nor lets all of it through.

mod fallback;
mod memory;
mod redis;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderName, StatusCode};
use prometheus::{IntCounter, IntCounterVec, Opts};

pub use memory::MemoryLimiter;

use crate::config::{SessionBackend, SessionsConfig};
use crate::domain::RateSpec;
use crate::metrics::Metrics;
use crate::reply::Reply;
use crate::telemetry::SECURITY;

/// The answer to one [`RateLimiter::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether this hit may proceed.
    pub allowed: bool,
    /// The limit of the window that was applied.
    pub limit: u32,
    /// How many more hits the window allows right now.
    pub remaining: u32,
    /// Time until the oldest counted hit leaves the window, freeing a slot.
    pub reset_after: Duration,
    /// When refused, how long the client should wait before a retry can succeed.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// Builds a decision from a backend's raw answer: whether the hit was counted, how many
    /// hits the window now holds, and when its oldest one expires.
    fn from_window(spec: &RateSpec, allowed: bool, count: u64, reset_after: Duration) -> Self {
        let remaining = if allowed {
            u64::from(spec.limit).saturating_sub(count)
        } else {
            0
        };
        Self {
            allowed,
            limit: spec.limit,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_after,
            retry_after: (!allowed).then_some(reset_after),
        }
    }
}

/// Counts hits per `(scope, key)` and says whether each one is allowed.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one hit for `key` under `spec` and says whether it is allowed.
    ///
    /// `scope` is a short fixed name (`global`, `register`, `login`, `password_reset`,
    /// `route:<name>`) and `key` identifies the client, normally [`ip_key`]. Infallible on
    /// purpose: a backend failure is absorbed by the fallback, never turned into an error
    /// the hot path would have to decide about.
    async fn check(&self, scope: &str, key: &str, spec: &RateSpec) -> Decision;
}

/// Why [`connect`] could not build a limiter; only bad configuration, never an outage.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// `sessions.url` is neither `memory://` nor a Redis URL the client understands.
    #[error(
        "sessions.url: cannot use {scheme:?} for rate limits ({reason}); \
         use \"memory://\" or \"redis://host:port/db\""
    )]
    InvalidUrl {
        /// The URL's scheme only: the rest may hold a password.
        scheme: String,
        /// What the Redis client said about it.
        reason: String,
    },
}

/// Tuning knobs; the defaults suit production, tests shorten them.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Upper bound of the in-process limiter's memory, in recorded hits (8 bytes each,
    /// plus a small per-key overhead counted as one hit).
    pub memory_capacity: u64,
    /// How long a Redis check may take before it is answered locally instead.
    pub redis_timeout: Duration,
    /// How often Redis is tried again during an outage.
    pub probe_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            memory_capacity: 4_000_000,
            redis_timeout: Duration::from_millis(250),
            probe_interval: Duration::from_secs(1),
        }
    }
}

/// Builds the limiter that `sessions.url` asks for, with default [`Options`].
///
/// Call it on the long-lived runtime that owns the backends: the Redis connection lives
/// there, and checks made from any other runtime are run on it. Redis need not be up:
/// checks are answered locally until it is.
pub async fn connect(
    config: &SessionsConfig,
    metrics: &Metrics,
) -> Result<Arc<dyn RateLimiter>, RateLimitError> {
    connect_with(config, metrics, Options::default()).await
}

/// [`connect`] with explicit [`Options`].
pub async fn connect_with(
    config: &SessionsConfig,
    metrics: &Metrics,
    options: Options,
) -> Result<Arc<dyn RateLimiter>, RateLimitError> {
    let counters = Counters::register(metrics);
    let url = config.url.trim();
    let scheme = || url.split_once("://").map_or(url, |(s, _)| s).to_owned();
    let inner: Arc<dyn RateLimiter> = match config.backend() {
        Ok(SessionBackend::Memory) => Arc::new(MemoryLimiter::new(options.memory_capacity)),
        Err(reason) => {
            return Err(RateLimitError::InvalidUrl {
                scheme: scheme(),
                reason,
            });
        }
        Ok(SessionBackend::Redis(url)) => {
            let primary = redis::RedisLimiter::open(url, &config.key_prefix, options.redis_timeout)
                .map_err(|reason| RateLimitError::InvalidUrl {
                    scheme: scheme(),
                    reason,
                })?;
            let local = MemoryLimiter::new(options.memory_capacity);
            Arc::new(
                fallback::FallbackLimiter::start(
                    primary,
                    local,
                    counters.fallback.clone(),
                    options.probe_interval,
                )
                .await,
            )
        }
    };
    Ok(Arc::new(Counted::new(inner, counters.refused)))
}

/// The rate-limit metrics, registered once per [`connect`].
struct Counters {
    refused: IntCounterVec,
    fallback: IntCounter,
}

impl Counters {
    fn register(metrics: &Metrics) -> Self {
        let refused = IntCounterVec::new(
            Opts::new(
                "rate_limited_total",
                "Requests refused by a rate limit, by scope",
            ),
            &["scope"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let fallback = IntCounter::new(
            "rate_limit_fallback_total",
            "Rate-limit checks answered in-process because Redis could not answer",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        metrics.register(Box::new(refused.clone()));
        metrics.register(Box::new(fallback.clone()));
        Self { refused, fallback }
    }
}

/// Counts refusals and writes them to the security log, whatever the backend.
struct Counted {
    inner: Arc<dyn RateLimiter>,
    refused: IntCounterVec,
    /// Keys whose refusal was logged in the last minute: a flood of refused requests
    /// must not turn into a flood of log lines.
    recently_logged: moka::future::Cache<String, ()>,
}

impl Counted {
    fn new(inner: Arc<dyn RateLimiter>, refused: IntCounterVec) -> Self {
        let recently_logged = moka::future::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(60))
            .build();
        Self {
            inner,
            refused,
            recently_logged,
        }
    }
}

#[async_trait]
impl RateLimiter for Counted {
    async fn check(&self, scope: &str, key: &str, spec: &RateSpec) -> Decision {
        let decision = self.inner.check(scope, key, spec).await;
        if !decision.allowed {
            self.refused.with_label_values(&[scope]).inc();
            let logged_key = format!("{scope}\n{key}");
            if !self.recently_logged.contains_key(&logged_key) {
                self.recently_logged.insert(logged_key, ()).await;
                tracing::warn!(
                    target: SECURITY,
                    scope,
                    client = key,
                    limit = spec.limit,
                    window_secs = spec.window.as_secs(),
                    "rate limit exceeded"
                );
            }
        }
        decision
    }
}

/// The `RateLimit-*` headers for any answer, plus `Retry-After` when refused.
///
/// Seconds are rounded up, so a client that waits as long as told is never early.
pub fn headers(decision: &Decision) -> Vec<(HeaderName, String)> {
    let mut out = Vec::with_capacity(4);
    out.push((
        HeaderName::from_static("ratelimit-limit"),
        decision.limit.to_string(),
    ));
    out.push((
        HeaderName::from_static("ratelimit-remaining"),
        decision.remaining.to_string(),
    ));
    out.push((
        HeaderName::from_static("ratelimit-reset"),
        ceil_secs(decision.reset_after).to_string(),
    ));
    if let Some(retry) = decision.retry_after {
        // Never "0": a refused client retrying at once would only be refused again.
        out.push((
            http::header::RETRY_AFTER,
            ceil_secs(retry).max(1).to_string(),
        ));
    }
    out
}

/// The 429 envelope for a refused decision, with [`headers`] attached.
pub fn rejection(decision: &Decision) -> Reply {
    let mut response = Reply::error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many requests. Try again later.",
    );
    response.headers.extend(headers(decision));
    response
}

/// The rate-limit key of a client address.
///
/// IPv4 addresses count one by one. IPv6 addresses count per /64, the block one
/// subscriber usually gets: limiting single IPv6 addresses would give anyone 2^64 tries.
pub fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(limit: u32) -> RateSpec {
        RateSpec {
            limit,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn allowed_decision_counts_down() {
        let d = Decision::from_window(&spec(5), true, 2, Duration::from_millis(9_500));
        assert_eq!(d.remaining, 3);
        assert_eq!(d.retry_after, None);
        let d = Decision::from_window(&spec(5), true, 5, Duration::from_millis(1));
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn refused_decision_says_when_to_retry() {
        let d = Decision::from_window(&spec(5), false, 5, Duration::from_millis(1_200));
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Some(Duration::from_millis(1_200)));
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2_001)), 3);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), "2001:db8:1:2::/64");
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        assert_eq!(ip_key("203.0.113.9".parse().unwrap()), "203.0.113.9");
        assert_eq!(ip_key("::ffff:203.0.113.9".parse().unwrap()), "203.0.113.9");
    }

    #[test]
    fn rejection_is_a_429_envelope_with_retry_after() {
        let d = Decision::from_window(&spec(3), false, 3, Duration::from_millis(2_500));
        let r = rejection(&d);
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.body_json()["success"], false);
        assert_eq!(r.body_json()["code"], "rate_limited");
        let get = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k.as_str() == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("retry-after").as_deref(), Some("3"));
        assert_eq!(get("ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(get("ratelimit-remaining").as_deref(), Some("0"));
        assert_eq!(get("ratelimit-reset").as_deref(), Some("3"));
    }
}
