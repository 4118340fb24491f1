//! Slow, idle and greedy clients on both listeners, and a shutdown that waits only for what
//! is in flight.
//!
//! Pingora bounds each read from a client, not the whole request head, so a client that
//! sends one header byte every few seconds holds its connection (and a file descriptor)
//! indefinitely; a few hundred such clients starve everyone, `/health` included
//! (slowloris). Keep-alive connections wait for their next request for as long as the client
//! likes once an answer was proxied. [`Guarded`], a `ServerApp` around either listener's HTTP
//! app, sees each connection from accept to close and runs its HTTP/1.1 keep-alive loop
//! itself, so it knows at any moment which connections are idle (between requests) and which
//! are busy. It applies, per listener:
//! - a total deadline for a request head, from its first byte, and a size cap: a head over
//!   `server.max_header_bytes` (or with more fields than Pingora parses) is answered 431, or
//!   414 when the request-line alone is over (RFC 6585 §5, RFC 9110 §15.5.15), and one of
//!   nothing but empty lines 400 (RFC 9112 §2.2), with `Connection: close`, then closed; each
//!   such answer has its access-log line. A head is handed to the HTTP session only once
//!   whole and within the limits, so a client's mistake (a head refused, left unfinished or
//!   out of time) reaches it as a clean close, not as a read error it would log at ERROR;
//! - pipelining (RFC 9112 §9.3.2): requests sent before the previous answer are answered in
//!   order, each head under the same limits (what a head's body does not take is held for
//!   the next request, see `stream.rs`);
//! - an idle timeout: a connection waiting for a request (its first, or the next after any
//!   answer, local or proxied) longer than `server.keepalive_timeout` is closed;
//! - a cap on the connections one address holds and on the listener's total. At a cap the
//!   connection idle the longest (by when it last became idle: its last answer, or its
//!   opening; of that address, or of any for the total) is closed to admit the new one, so
//!   idle connections cannot lock an address out; with none idle the new one is closed at
//!   once. Peers in `server.trusted_proxies` have no per-address cap (they speak
//!   for many clients);
//! - shutdown: when its listener stops accepting, idle connections close at once and busy
//!   ones after their answer, which says `Connection: close` (`respond::keep_alive`).
//!   Closing an idle connection (here or at a cap) still serves a request already on the
//!   wire but not yet read, then closes.
//!   [`Drain`] counts what is open on every listener, so the process exits as soon as
//!   nothing is left rather than after the whole grace period.
//!
//! - TLS (the main listener with `[tls]`): the handshake runs here, after the connection is
//!   counted and within the head deadline, so an unfinished handshake is held to the limits
//!   of an unfinished head; a failed one is the client's mistake, logged at DEBUG.
//!
//! The stream each HTTP session reads is `stream::GuardedStream` (over the TLS stream, when
//! there is one). Only HTTP/1.x is served: ALPN offers `http/1.1` alone, and no h2c.

mod stream;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use ipnet::IpNet;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::server::ShutdownWatch;

use stream::{GuardedStream, Shared};

/// Keep-alive as the HTTP sessions under a [`Guarded`] are told: on, with no timer of
/// Pingora's (`Some(0)`), since the guard's idle timeout is the one that closes.
pub const KEEP_ALIVE: Option<u64> = Some(0);

/// How long shutdown watches for a connection accepted just before the listener stopped
/// whose task has not started yet, before calling the listeners drained.
const SETTLE: Duration = Duration::from_millis(100);

/// One listener's limits, from `[server]`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The whole time a request head may take, from its first byte.
    pub head_deadline: Duration,
    /// The most bytes a request head may take.
    pub max_head_bytes: usize,
    /// How long a connection may wait for a request before it is closed.
    pub idle: Duration,
    /// Connections one address may hold; 0 for no limit.
    pub per_ip: usize,
    /// Connections the listener holds at once; 0 for no limit.
    pub total: usize,
    /// Peers with no per-address cap: `server.trusted_proxies`, shared with the reload,
    /// which stores the next list here.
    pub trusted: Arc<ArcSwap<Vec<IpNet>>>,
    /// Whether the guard's own answers (431, 414, 400) are written to the access log.
    pub access_log: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A listener's open connections, by client address, oldest first.
#[derive(Debug, Default)]
struct Registry {
    open: Mutex<Open>,
    /// Set when the listener stops accepting: no connection becomes idle again.
    stopping: AtomicBool,
}

#[derive(Debug, Default)]
struct Open {
    by_ip: HashMap<IpAddr, BTreeMap<u64, Arc<Shared>>>,
    total: usize,
    next_id: u64,
}

impl Registry {
    /// Counts `conn` unless a cap is reached with nothing idle to close; its id if counted.
    fn admit(&self, ip: IpAddr, per_ip: usize, total: usize, conn: &Arc<Shared>) -> Option<u64> {
        let mut open = lock(&self.open);
        if self.stopping.load(Ordering::SeqCst) {
            return None;
        }
        let held = open.by_ip.get(&ip).map_or(0, BTreeMap::len);
        if per_ip > 0 && held >= per_ip && !open.close_idle(Some(ip)) {
            return None;
        }
        if total > 0 && open.total >= total && !open.close_idle(None) {
            return None;
        }
        let id = open.next_id;
        open.next_id += 1;
        open.by_ip.entry(ip).or_default().insert(id, conn.clone());
        open.total += 1;
        Some(id)
    }

    fn release(&self, ip: IpAddr, id: u64) {
        lock(&self.open).remove(ip, id);
    }

    /// Stops making room or admitting, and closes every idle connection.
    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let open = lock(&self.open);
        for conn in open.by_ip.values().flat_map(BTreeMap::values) {
            conn.close_if_idle();
        }
    }
}

impl Open {
    fn remove(&mut self, ip: IpAddr, id: u64) -> bool {
        let Some(conns) = self.by_ip.get_mut(&ip) else {
            return false;
        };
        let removed = conns.remove(&id).is_some();
        if conns.is_empty() {
            self.by_ip.remove(&ip);
        }
        if removed {
            self.total -= 1;
        }
        removed
    }

    /// Closes the connection of `ip` (of any address when `None`) idle the longest (since
    /// its last answer, or since it opened if it never spoke) and frees its place; false
    /// when none is idle. The candidates are looked at only here, at a cap, so that
    /// becoming idle or busy stays free of the registry's lock; at the total cap that is
    /// one pass over the listener's connections.
    fn close_idle(&mut self, ip: Option<IpAddr>) -> bool {
        let addresses: Box<dyn Iterator<Item = _>> = match ip {
            Some(ip) => Box::new(self.by_ip.get_key_value(&ip).into_iter()),
            None => Box::new(self.by_ip.iter()),
        };
        let mut idle: Vec<_> = addresses
            .flat_map(|(at, conns)| conns.iter().map(move |(id, conn)| (*at, *id, conn)))
            .filter_map(|(at, id, conn)| Some((conn.idle_since()?, id, at, conn.clone())))
            .collect();
        idle.sort_unstable_by_key(|(since, id, ..)| (*since, *id));
        let closed = idle
            .into_iter()
            .find(|(.., conn)| conn.close_if_idle())
            .map(|(_, id, at, _)| (at, id));
        closed.is_some_and(|(ip, id)| self.remove(ip, id))
    }
}

/// What every listener has open, for a shutdown that ends when the last connection closes.
///
/// Shared by the listeners' [`Guarded`]s; [`Drain::wait`] blocks until every listener has
/// stopped accepting and no connection is open (or the server has returned by itself).
#[derive(Debug, Default)]
pub struct Drain {
    state: Mutex<DrainState>,
    changed: Condvar,
    stopping: AtomicBool,
}

#[derive(Debug, Default)]
struct DrainState {
    listeners: usize,
    stopped: usize,
    open: usize,
    finished: bool,
}

impl DrainState {
    fn drained(&self) -> bool {
        self.listeners > 0 && self.stopped == self.listeners && self.open == 0
    }
}

impl Drain {
    /// Whether a listener has stopped accepting: answers from now on close their connection.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Marks the server as returned (a fast stop, or the grace period over): `wait` returns.
    pub fn finish(&self) {
        lock(&self.state).finished = true;
        self.changed.notify_all();
    }

    /// Blocks until every listener has stopped and nothing is open, or [`Drain::finish`].
    pub fn wait(&self) {
        loop {
            let mut state = lock(&self.state);
            while !state.finished && !state.drained() {
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.finished {
                return;
            }
            drop(state);
            std::thread::sleep(SETTLE);
            let state = lock(&self.state);
            if state.finished || state.drained() {
                return;
            }
        }
    }

    fn update(&self, change: impl FnOnce(&mut DrainState)) {
        let mut state = lock(&self.state);
        change(&mut state);
        if state.drained() {
            self.changed.notify_all();
        }
    }
}

/// Releases a counted connection however its handling ends.
struct Admitted<'a> {
    registry: &'a Registry,
    drain: &'a Drain,
    ip: IpAddr,
    id: u64,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.registry.release(self.ip, self.id);
        self.drain.update(|s| s.open -= 1);
    }
}

/// A `ServerApp` that applies [`Limits`] around an HTTP app (the proxy, the admin app).
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: Limits,
    registry: Registry,
    drain: Arc<Drain>,
    tls: Option<Acceptor>,
}

impl<A> Guarded<A> {
    /// Wraps `inner`; `drain` is shared by every listener of the server.
    pub fn new(inner: A, limits: Limits, drain: Arc<Drain>) -> Self {
        drain.update(|s| s.listeners += 1);
        Self {
            inner: Arc::new(inner),
            limits,
            registry: Registry::default(),
            drain,
            tls: None,
        }
    }

    /// Speaks TLS on every connection, by `config` (see `gateway::tls`).
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(Acceptor::from_server_config(config));
        self
    }

    /// The TLS handshake of a counted connection, within the head deadline; `None` (the
    /// connection closes) when it fails or takes longer.
    async fn handshake(&self, acceptor: &Acceptor, stream: Stream, ip: IpAddr) -> Option<Stream> {
        // The listener is plain TCP: its streams are Pingora's L4 streams.
        let Ok(tcp) = stream.into_any().downcast::<L4Stream>() else {
            tracing::error!("a TLS listener's connection is not a TCP stream");
            return None;
        };
        let handshake = acceptor.tls_handshake(*tcp);
        match tokio::time::timeout(self.limits.head_deadline, handshake).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::debug!(client_ip = %ip, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(client_ip = %ip, "TLS handshake not finished in time");
                None
            }
        }
    }

    /// Counts a new connection from `ip`, or says why not.
    fn admit(&self, ip: IpAddr, conn: &Arc<Shared>) -> Option<Admitted<'_>> {
        let trusted = self.limits.trusted.load().iter().any(|n| n.contains(&ip));
        let per_ip = if trusted { 0 } else { self.limits.per_ip };
        let Some(id) = self.registry.admit(ip, per_ip, self.limits.total, conn) else {
            tracing::debug!(client_ip = %ip, "connection refused: connection cap reached, none idle");
            return None;
        };
        self.drain.update(|s| s.open += 1);
        Some(Admitted {
            registry: &self.registry,
            drain: &self.drain,
            ip,
            id,
        })
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ip| ip.to_canonical());
        let conn = Shared::new(self.limits.idle);
        let _admitted = self.admit(ip, &conn)?;
        let stream = match &self.tls {
            Some(acceptor) => self.handshake(acceptor, stream, ip).await?,
            None => stream,
        };
        let mut stream: Stream =
            Box::new(GuardedStream::new(stream, conn.clone(), &self.limits, ip));
        let mut settings = None;
        // Pingora's own keep-alive loop, here so that the guard sees where each request ends.
        loop {
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings.take() {
                pingora::apps::HttpPersistentSettings::apply_to_session(settings, &mut session);
            }
            session.set_keepalive(KEEP_ALIVE);
            // Requests the client sent ahead are answered in order (RFC 9112 §9.3.2): the
            // session carries the bytes it read past its request into the next one.
            session.set_pipelining_enabled(true);
            let reused = self.inner.process_new_http(session, shutdown).await?;
            (stream, settings) = reused.consume();
            if *shutdown.borrow()
                || !conn.wait_for_request(
                    self.limits.idle,
                    self.limits.head_deadline,
                    &self.registry.stopping,
                )
            {
                return None;
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
        self.registry.stop();
        self.drain.stopping.store(true, Ordering::Release);
        self.drain.update(|s| s.stopped += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Arc<Shared> {
        Shared::new(Duration::from_secs(60))
    }

    #[tokio::test]
    async fn at_its_cap_an_address_closes_its_oldest_idle_connection() {
        let registry = Registry::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (idle, busy) = (conn(), conn());
        busy.start_request_for_test();
        let first = registry.admit(ip, 2, 0, &busy).unwrap();
        registry.admit(ip, 2, 0, &idle).unwrap();
        // The busy one stays; the idle one makes room.
        assert!(registry.admit(ip, 2, 0, &conn()).is_some());
        assert!(idle.is_closed_for_test() && !busy.is_closed_for_test());
        // Nothing idle left but the newcomer, which makes room in its turn.
        assert!(registry.admit(ip, 2, 0, &conn()).is_some());
        let busy2 = conn();
        busy2.start_request_for_test();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(registry.admit(other, 2, 0, &busy2).is_some());
        registry.release(ip, first);
        let open = lock(&registry.open);
        assert_eq!(open.total, 2);
        assert_eq!(open.by_ip[&ip].len(), 1);
    }

    #[tokio::test]
    async fn a_full_listener_closes_any_idle_connection_or_refuses() {
        let registry = Registry::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let busy = conn();
        busy.start_request_for_test();
        assert!(registry.admit(a, 0, 1, &busy).is_some());
        assert!(registry.admit(b, 0, 1, &conn()).is_none());
        // An idle connection of another address makes room.
        registry.release(a, 0);
        let idle = conn();
        assert!(registry.admit(a, 0, 1, &idle).is_some());
        assert!(registry.admit(b, 0, 1, &conn()).is_some());
        assert!(idle.is_closed_for_test());
        registry.stop();
        assert!(
            registry.admit(b, 0, 0, &conn()).is_none(),
            "admitted while stopping"
        );
    }
}
