//! Rate-limiter conformance: the same stories on the in-process limiter and, when
//! `PORTCULLIS_TEST_REDIS_URL` names a server, on Redis; then what only Redis has:
//! instances sharing counts, key TTLs, outages and recovery, and calls from other runtimes.
//!
//! Each Redis test uses its own random key prefix and deletes its keys (by SCAN of that
//! prefix) at the end. Under `CI=true` an unset or unreachable Redis fails the test.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::in_ci;
use portcullis::config::SessionsConfig;
use portcullis::domain::RateSpec;
use portcullis::metrics::Metrics;
use portcullis::ratelimit::{self, Decision, Options, RateLimiter};

const REDIS_URL_VAR: &str = "PORTCULLIS_TEST_REDIS_URL";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The Redis server for tests, checked to answer; `None` (skip) only outside CI.
fn redis_url() -> Option<String> {
    let url = match std::env::var(REDIS_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ if in_ci() => panic!(
            "{REDIS_URL_VAR} is not set but CI=true: the Redis variants must run in CI \
             (e.g. {REDIS_URL_VAR}=redis://127.0.0.1:6379/0)"
        ),
        _ => return None,
    };
    let reachable = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    if let Err(e) = reachable {
        panic!("{REDIS_URL_VAR} is set but Redis does not answer PING: {e}");
    }
    Some(url)
}

/// A key prefix that belongs to one test; its keys are deleted when it is dropped.
struct TestRedis {
    url: String,
    prefix: String,
}

impl TestRedis {
    fn new() -> Option<Self> {
        let url = redis_url()?;
        let prefix = format!("portcullis_test_{}:", uuid::Uuid::new_v4().simple());
        Some(Self { url, prefix })
    }

    fn config(&self) -> SessionsConfig {
        sessions(&self.url, &self.prefix)
    }

    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Every key under this test's prefix.
    fn keys(&self) -> Vec<String> {
        let mut con = self.connection();
        let mut keys: Vec<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(format!("{}*", self.prefix))
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter(&mut con)
            .unwrap()
            .map(|k| k.unwrap())
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let keys = self.keys();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query(&mut self.connection())
                .unwrap();
        }
    }
}

fn sessions(url: &str, prefix: &str) -> SessionsConfig {
    SessionsConfig {
        url: url.to_owned(),
        key_prefix: prefix.to_owned(),
        ..SessionsConfig::default()
    }
}

fn fast_options() -> Options {
    Options {
        probe_interval: Duration::from_millis(100),
        ..Options::default()
    }
}

/// One backend under test, with the metrics its limiter reports to.
struct Backend {
    name: &'static str,
    limiter: Arc<dyn RateLimiter>,
    metrics: Metrics,
    /// Keeps the Redis prefix (and its cleanup) alive for the test.
    _redis: Option<TestRedis>,
}

/// The in-process limiter always; the Redis one too when configured.
async fn backends() -> Vec<Backend> {
    let mut out = Vec::new();
    let metrics = Metrics::new();
    let limiter = ratelimit::connect(&sessions("memory://", "unused:"), &metrics)
        .await
        .unwrap();
    out.push(Backend {
        name: "memory",
        limiter,
        metrics,
        _redis: None,
    });
    if let Some(redis) = TestRedis::new() {
        let metrics = Metrics::new();
        let limiter = ratelimit::connect(&redis.config(), &metrics).await.unwrap();
        out.push(Backend {
            name: "redis",
            limiter,
            metrics,
            _redis: Some(redis),
        });
    }
    out
}

fn per_second(limit: u32) -> RateSpec {
    RateSpec {
        limit,
        window: Duration::from_secs(1),
    }
}

/// The value of a counter line (`name{labels} value`) in the metrics text, 0 when absent.
fn counter(metrics: &Metrics, series: &str) -> u64 {
    let text = String::from_utf8(metrics.render()).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn fallbacks(metrics: &Metrics) -> u64 {
    counter(metrics, "portcullis_rate_limit_fallback_total ")
}

async fn hits(
    limiter: &dyn RateLimiter,
    scope: &str,
    key: &str,
    spec: &RateSpec,
    n: usize,
) -> Vec<Decision> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(limiter.check(scope, key, spec).await);
    }
    out
}

fn allowed(decisions: &[Decision]) -> usize {
    decisions.iter().filter(|d| d.allowed).count()
}

// ---------------------------------------------------------------------------------------
// Stories every backend must tell the same way
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn exactly_limit_hits_pass_then_one_is_refused_until_the_window_passes() {
    for b in backends().await {
        let spec = per_second(5);
        let first = hits(&*b.limiter, "login", "203.0.113.1", &spec, 5).await;
        for (i, d) in first.iter().enumerate() {
            assert!(d.allowed, "{}: hit {} of 5 refused: {d:?}", b.name, i + 1);
            assert_eq!(d.limit, 5, "{}", b.name);
            assert_eq!(
                d.remaining,
                4 - i as u32,
                "{}: remaining after hit {}",
                b.name,
                i + 1
            );
            assert_eq!(d.retry_after, None, "{}", b.name);
            assert!(d.reset_after <= spec.window, "{}: {d:?}", b.name);
        }

        let sixth = b.limiter.check("login", "203.0.113.1", &spec).await;
        assert!(!sixth.allowed, "{}: the 6th hit passed", b.name);
        assert_eq!(sixth.remaining, 0, "{}", b.name);
        let retry = sixth.retry_after.expect("a refusal says when to retry");
        assert!(
            !retry.is_zero() && retry <= spec.window,
            "{}: retry_after {retry:?} outside (0, window]",
            b.name
        );
        assert_eq!(
            counter(
                &b.metrics,
                "portcullis_rate_limited_total{scope=\"login\"} "
            ),
            1,
            "{}: the refusal is counted",
            b.name
        );

        // Still refused half-way through the wait; allowed once it has passed.
        tokio::time::sleep(retry / 2).await;
        assert!(
            !b.limiter.check("login", "203.0.113.1", &spec).await.allowed,
            "{}",
            b.name
        );
        tokio::time::sleep(retry / 2 + Duration::from_millis(60)).await;
        let again = b.limiter.check("login", "203.0.113.1", &spec).await;
        assert!(
            again.allowed,
            "{}: still refused after the window: {again:?}",
            b.name
        );
        assert_eq!(
            again.remaining, 4,
            "{}: a whole window is free again",
            b.name
        );
    }
}

#[tokio::test]
async fn window_slides_instead_of_resetting_at_a_boundary() {
    for b in backends().await {
        let spec = per_second(5);
        assert_eq!(
            allowed(&hits(&*b.limiter, "global", "198.51.100.7", &spec, 3).await),
            3
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            allowed(&hits(&*b.limiter, "global", "198.51.100.7", &spec, 3).await),
            2,
            "{}",
            b.name
        );

        // Once the first three have left the window, only their three slots are free:
        // the two later hits still count, where a fixed window would have reset to five.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let later = hits(&*b.limiter, "global", "198.51.100.7", &spec, 5).await;
        assert_eq!(allowed(&later), 3, "{}: {later:?}", b.name);
        assert!(!later[3].allowed && !later[4].allowed, "{}", b.name);
    }
}

#[tokio::test]
async fn different_clients_are_counted_apart() {
    for b in backends().await {
        let spec = per_second(2);
        assert_eq!(
            allowed(&hits(&*b.limiter, "register", "192.0.2.1", &spec, 3).await),
            2
        );
        let other = hits(&*b.limiter, "register", "192.0.2.2", &spec, 3).await;
        assert_eq!(
            allowed(&other),
            2,
            "{}: another client shares the count",
            b.name
        );
        assert_eq!(other[0].remaining, 1, "{}", b.name);
        let v6 = hits(&*b.limiter, "register", "2001:db8::/64", &spec, 2).await;
        assert_eq!(allowed(&v6), 2, "{}", b.name);
    }
}

#[tokio::test]
async fn different_scopes_are_counted_apart() {
    for b in backends().await {
        let spec = per_second(2);
        let ip = "192.0.2.50";
        assert_eq!(allowed(&hits(&*b.limiter, "login", ip, &spec, 3).await), 2);
        for scope in ["register", "password_reset", "route:app", "route:admin"] {
            let d = hits(&*b.limiter, scope, ip, &spec, 3).await;
            assert_eq!(
                allowed(&d),
                2,
                "{}: scope {scope} shares another's count",
                b.name
            );
        }
    }
}

#[tokio::test]
async fn headers_report_limit_remaining_reset_and_retry_after() {
    for b in backends().await {
        let spec = RateSpec {
            limit: 2,
            window: Duration::from_secs(30),
        };
        let header = |d: &Decision, name: &str| {
            ratelimit::headers(d)
                .into_iter()
                .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };

        let first = b.limiter.check("login", "192.0.2.9", &spec).await;
        assert_eq!(
            header(&first, "RateLimit-Limit").as_deref(),
            Some("2"),
            "{}",
            b.name
        );
        assert_eq!(
            header(&first, "RateLimit-Remaining").as_deref(),
            Some("1"),
            "{}",
            b.name
        );
        // The first hit expires a whole window from now: 30 s, rounded up.
        assert_eq!(
            header(&first, "RateLimit-Reset").as_deref(),
            Some("30"),
            "{}",
            b.name
        );
        assert_eq!(header(&first, "Retry-After"), None, "{}", b.name);
        assert_eq!(ratelimit::headers(&first).len(), 3);

        b.limiter.check("login", "192.0.2.9", &spec).await;
        let refused = b.limiter.check("login", "192.0.2.9", &spec).await;
        assert!(!refused.allowed);
        assert_eq!(
            header(&refused, "RateLimit-Remaining").as_deref(),
            Some("0"),
            "{}",
            b.name
        );
        let retry: u64 = header(&refused, "Retry-After").unwrap().parse().unwrap();
        let reset: u64 = header(&refused, "RateLimit-Reset")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (29..=30).contains(&retry),
            "{}: Retry-After {retry}",
            b.name
        );
        assert_eq!(retry, reset, "{}", b.name);

        let response = ratelimit::rejection(&refused);
        assert_eq!(response.status, http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.body_json()["code"], "rate_limited");
        assert!(
            response
                .headers
                .iter()
                .any(|(k, _)| k == http::header::RETRY_AFTER)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Redis only
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn instances_on_one_redis_share_the_count() {
    let Some(redis) = TestRedis::new() else {
        return;
    };
    let (ma, mb) = (Metrics::new(), Metrics::new());
    let a = ratelimit::connect(&redis.config(), &ma).await.unwrap();
    let b = ratelimit::connect(&redis.config(), &mb).await.unwrap();
    let spec = per_second(5);

    assert_eq!(
        allowed(&hits(&*a, "login", "203.0.113.5", &spec, 3).await),
        3
    );
    let on_b = hits(&*b, "login", "203.0.113.5", &spec, 3).await;
    assert!(on_b[0].allowed && on_b[1].allowed, "{on_b:?}");
    assert_eq!(on_b[1].remaining, 0);
    assert!(
        !on_b[2].allowed,
        "the 6th hit overall passed on the second instance"
    );
    assert!(!a.check("login", "203.0.113.5", &spec).await.allowed);

    // Another prefix is another deployment: it does not see these counts.
    let other = TestRedis {
        url: redis.url.clone(),
        prefix: format!("{}other:", redis.prefix),
    };
    let c = ratelimit::connect(&other.config(), &Metrics::new())
        .await
        .unwrap();
    assert!(c.check("login", "203.0.113.5", &spec).await.allowed);

    assert_eq!(
        fallbacks(&ma) + fallbacks(&mb),
        0,
        "Redis answered every check"
    );
}

#[tokio::test]
async fn every_redis_key_is_named_by_scope_and_client_and_expires() {
    let Some(redis) = TestRedis::new() else {
        return;
    };
    let metrics = Metrics::new();
    let limiter = ratelimit::connect(&redis.config(), &metrics).await.unwrap();
    let short = per_second(2);
    let long = RateSpec {
        limit: 3,
        window: Duration::from_secs(3600),
    };
    hits(&*limiter, "login", "203.0.113.7", &short, 3).await;
    hits(&*limiter, "password_reset", "203.0.113.7", &long, 4).await;
    hits(&*limiter, "route:app", "2001:db8::/64", &short, 1).await;

    let mut con = redis.connection();
    let keys: Vec<String> = redis
        .keys()
        .into_iter()
        .filter(|k| !k.ends_with("rl:probe"))
        .collect();
    let p = &redis.prefix;
    assert_eq!(
        keys,
        vec![
            format!("{p}rl:login:203.0.113.7"),
            format!("{p}rl:password_reset:203.0.113.7"),
            format!("{p}rl:route:app:2001:db8::/64"),
        ]
    );
    for key in redis.keys() {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
        let bound = if key.contains("password_reset") {
            3_600_000
        } else {
            1_000
        };
        assert!(ttl <= bound, "{key} outlives its window: {ttl} ms");
    }
    let members: i64 = redis::cmd("ZCARD")
        .arg(format!("{p}rl:password_reset:203.0.113.7"))
        .query(&mut con)
        .unwrap();
    assert_eq!(members, 3, "refused hits are not stored");

    // After the short window the short-lived logs are gone by themselves.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let left: Vec<String> = redis
        .keys()
        .into_iter()
        .filter(|k| !k.ends_with("rl:probe"))
        .collect();
    assert_eq!(left, vec![format!("{p}rl:password_reset:203.0.113.7")]);
}

/// Redis that was never there: every check is answered locally, and still limited.
#[tokio::test]
async fn unreachable_redis_degrades_to_local_limits() {
    let metrics = Metrics::new();
    let config = sessions("redis://127.0.0.1:1/0", "portcullis_test_down:");
    let limiter = ratelimit::connect_with(&config, &metrics, fast_options())
        .await
        .unwrap();
    let spec = per_second(3);

    let d = hits(&*limiter, "login", "203.0.113.9", &spec, 4).await;
    assert_eq!(allowed(&d), 3, "{d:?}");
    assert!(!d[3].allowed);
    assert_eq!(d[2].remaining, 0);
    assert!(limiter.check("login", "203.0.113.10", &spec).await.allowed);
    assert_eq!(fallbacks(&metrics), 5, "every check was answered locally");
    assert_eq!(
        counter(&metrics, "portcullis_rate_limited_total{scope=\"login\"} "),
        1
    );
}

#[tokio::test]
async fn a_malformed_redis_url_is_a_config_error_that_hides_the_password() {
    let config = sessions("redis://:hunter2@[bad/0", "p:");
    let Err(e) = ratelimit::connect(&config, &Metrics::new()).await else {
        panic!("a malformed URL was accepted");
    };
    let message = e.to_string();
    assert!(message.contains("sessions.url"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

/// A TCP relay in front of Redis that the test can cut, stall and restore.
struct Relay {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Forward bytes both ways.
    Up,
    /// Close every connection, existing and new.
    Cut,
    /// Accept connections but never answer (a hung Redis).
    Stall,
}

impl Relay {
    async fn start(redis_url: &str) -> Self {
        let target = redis::Client::open(redis_url).unwrap();
        let redis::ConnectionAddr::Tcp(host, port) = target.get_connection_info().addr().clone()
        else {
            panic!("the relay test needs a TCP Redis URL");
        };
        let upstream = format!("{host}:{port}");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Up);
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut rx = modes.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let current = *rx.borrow_and_update();
                    match current {
                        Mode::Cut => {}
                        Mode::Stall => {
                            let _ = rx.changed().await;
                            drop(client);
                        }
                        Mode::Up => {
                            let Ok(server) = TcpStream::connect(&upstream).await else {
                                return;
                            };
                            let (mut client, mut server) = (client, server);
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = rx.changed() => {}
                            }
                        }
                    }
                });
            }
        });
        Self { addr, mode }
    }

    fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Log lines written while a test runs on the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

/// Waits (up to 10 s) until a check is answered by Redis again, i.e. without a fallback.
async fn until_redis_answers(limiter: &dyn RateLimiter, metrics: &Metrics) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = fallbacks(metrics);
        limiter
            .check("recovery", "probe-client", &per_second(1_000))
            .await;
        if fallbacks(metrics) == before {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Redis never took over again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn outage_falls_back_locally_logs_once_and_recovers() {
    let Some(redis) = TestRedis::new() else {
        return;
    };
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The test runs on a current-thread runtime, so the probe task logs here too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let relay = Relay::start(&redis.url).await;
    let metrics = Metrics::new();
    let limiter = ratelimit::connect_with(
        &sessions(&relay.url(), &redis.prefix),
        &metrics,
        fast_options(),
    )
    .await
    .unwrap();
    let spec = RateSpec {
        limit: 3,
        window: Duration::from_secs(30),
    };

    // Healthy: counted in Redis.
    assert!(limiter.check("login", "203.0.113.20", &spec).await.allowed);
    assert_eq!(fallbacks(&metrics), 0);
    assert!(
        redis
            .keys()
            .contains(&format!("{}rl:login:203.0.113.20", redis.prefix))
    );

    // Cut: still answered, still limited, by the local limiter; warned once.
    relay.set(Mode::Cut);
    let during = hits(&*limiter, "login", "203.0.113.21", &spec, 5).await;
    assert_eq!(allowed(&during), 3, "{during:?}");
    assert!(fallbacks(&metrics) >= 5);
    assert!(
        !redis
            .keys()
            .contains(&format!("{}rl:login:203.0.113.21", redis.prefix)),
        "hits during the outage cannot have reached Redis"
    );
    const OUTAGE: &str = "Redis cannot answer rate-limit checks";
    assert_eq!(logs.count(OUTAGE), 1, "one warning per outage");
    assert!(logs.count("WARN") >= 1);

    // Back: Redis answers again by itself, and the counts there are the shared ones.
    relay.set(Mode::Up);
    until_redis_answers(&*limiter, &metrics).await;
    assert_eq!(logs.count("Redis is back"), 1);
    let shared = limiter.check("login", "203.0.113.20", &spec).await;
    assert_eq!(
        shared.remaining, 1,
        "the hit made before the outage still counts: {shared:?}"
    );

    // A hung Redis (accepts, never answers) is a second outage, with its own warning.
    relay.set(Mode::Stall);
    let stalled = hits(&*limiter, "login", "203.0.113.22", &spec, 4).await;
    assert_eq!(allowed(&stalled), 3, "{stalled:?}");
    assert_eq!(logs.count(OUTAGE), 2);

    relay.set(Mode::Up);
    until_redis_answers(&*limiter, &metrics).await;
    assert_eq!(logs.count("Redis is back"), 2);
}

/// The gateway builds the limiter on its backend runtime and calls it from Pingora's.
/// A runtime that made calls and then shut down must not take the connection with it.
#[test]
fn calls_from_other_runtimes_work_and_survive_their_shutdown() {
    let multi = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let owner = multi();
    let mut cases = vec![("memory", sessions("memory://", "unused:"), None)];
    if let Some(redis) = TestRedis::new() {
        cases.push(("redis", redis.config(), Some(redis)));
    }
    for (name, config, _redis) in cases {
        let metrics = Metrics::new();
        let limiter = owner
            .block_on(ratelimit::connect(&config, &metrics))
            .unwrap();
        let spec = RateSpec {
            limit: 4,
            window: Duration::from_secs(30),
        };

        let passing = multi();
        let first = passing.block_on(hits(&*limiter, "login", "203.0.113.30", &spec, 2));
        assert_eq!(allowed(&first), 2, "{name}");
        drop(passing);

        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let rest = current.block_on(hits(&*limiter, "login", "203.0.113.30", &spec, 3));
        assert_eq!(
            allowed(&rest),
            2,
            "{name}: counts from both runtimes add up: {rest:?}"
        );
        assert!(!rest[2].allowed, "{name}");
        assert_eq!(
            fallbacks(&metrics),
            0,
            "{name}: every check reached the backend"
        );
    }
}
