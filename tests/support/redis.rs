//! Redis for tests: the server named by `PORTCULLIS_TEST_REDIS_URL` (required under `CI=true`),
//! a random key prefix per test with cleanup by `SCAN` of that prefix (never `FLUSHALL`), and
//! small TCP stand-ins to simulate Redis going away or hanging.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portcullis::config::SessionsConfig;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The test Redis URL, or `None` when unset outside CI (the Redis variants are skipped then).
pub fn redis_url() -> Option<String> {
    match std::env::var("PORTCULLIS_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if super::in_ci() => panic!(
            "CI=true but PORTCULLIS_TEST_REDIS_URL is not set: the Redis session tests must run under CI \
             (set it to e.g. redis://127.0.0.1:6379/0)"
        ),
        _ => None,
    }
}

/// A random prefix, so tests never see each other's keys.
pub fn random_prefix() -> String {
    format!("portcullis_test_{}:", uuid::Uuid::new_v4().simple())
}

/// A test's private corner of the shared Redis.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
    conn: MultiplexedConnection,
}

impl TestRedis {
    /// Connects to the test Redis with a fresh prefix; `None` when Redis tests are not enabled.
    /// Panics when the URL is set but Redis cannot be reached.
    pub async fn start() -> Option<Self> {
        let url = redis_url()?;
        let client = redis::Client::open(url.as_str())
            .unwrap_or_else(|e| panic!("PORTCULLIS_TEST_REDIS_URL is not a Redis URL: {e}"));
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("timed out connecting to the Redis in PORTCULLIS_TEST_REDIS_URL")
        })
        .unwrap_or_else(|e| {
            panic!("cannot reach the Redis in PORTCULLIS_TEST_REDIS_URL (is it running?): {e}")
        });
        Some(Self {
            url,
            prefix: random_prefix(),
            conn,
        })
    }

    /// A `[sessions]` section pointing at this Redis and prefix.
    pub fn config(&self) -> SessionsConfig {
        SessionsConfig {
            url: self.url.clone(),
            key_prefix: self.prefix.clone(),
            max_per_user: 5,
            ..SessionsConfig::default()
        }
    }

    /// A raw connection, for checks the store does not offer.
    pub fn conn(&self) -> MultiplexedConnection {
        self.conn.clone()
    }

    /// Every key under this test's prefix.
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    /// Milliseconds until `key` expires (-1: no TTL, -2: no such key).
    pub async fn pttl(&self, key: &str) -> i64 {
        let mut conn = self.conn.clone();
        conn.pttl(key).await.unwrap()
    }

    /// Publishes a raw message on this prefix's revocation channel.
    pub async fn publish_revocation(&self, message: &str) {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .publish(format!("{}revocations", self.prefix), message)
            .await
            .unwrap();
    }

    /// Asserts every key under the prefix has a TTL, then deletes them all.
    pub async fn check_ttls_and_clean(&self) {
        let keys = self.keys().await;
        let mut without_ttl = Vec::new();
        for key in &keys {
            if self.pttl(key).await == -1 {
                without_ttl.push(key.clone());
            }
        }
        self.delete(&keys).await;
        assert!(
            without_ttl.is_empty(),
            "keys without a TTL: {without_ttl:?}"
        );
    }

    /// Deletes every key under the prefix.
    pub async fn clean(&self) {
        let keys = self.keys().await;
        self.delete(&keys).await;
    }

    async fn delete(&self, keys: &[String]) {
        let mut conn = self.conn.clone();
        for chunk in keys.chunks(200) {
            let _: i64 = conn.del(chunk).await.unwrap();
        }
    }

    /// The host and port of the test Redis, for the relay.
    pub async fn address(&self) -> SocketAddr {
        let url = url::Url::parse(&self.url).unwrap();
        let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
        let port = url.port().unwrap_or(6379);
        tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap()
            .next()
            .unwrap()
    }

    /// The test URL with its host and port replaced by `addr` (db and credentials kept).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let mut url = url::Url::parse(&self.url).unwrap();
        url.set_host(Some(&addr.ip().to_string())).unwrap();
        url.set_port(Some(addr.port())).unwrap();
        url.to_string()
    }
}

/// Escapes the characters `SCAN MATCH` treats as a pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A TCP relay in front of Redis that can be switched off (dropping every connection and
/// refusing new ones) and on again, to simulate an outage without touching the real server.
pub struct Relay {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts relaying `127.0.0.1:<ephemeral>` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let task = tokio::spawn({
            let up = up.clone();
            let generation = generation.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let mut down = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let mut client = client;
                        tokio::select! {
                            _ = copy_bidirectional(&mut client, &mut server) => {}
                            _ = down.changed() => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            up,
            generation,
            task,
        }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn take_down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn bring_up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener that accepts connections and never answers: a hung Redis.
pub struct BlackHole {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    /// Starts listening on `127.0.0.1:<ephemeral>`.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Self { addr, task }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
