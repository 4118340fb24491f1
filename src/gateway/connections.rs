//! Slow and greedy clients on the main listener.
//!
//! Pingora bounds each read from a client, not the whole request head, so a client that
//! sends one header byte every few seconds holds its connection (and a file descriptor)
//! indefinitely; a few hundred such clients starve everyone, `/health` included
//! (slowloris). Two limits close that:
//! - a total deadline for a request head, counted from its first byte (an idle keep-alive
//!   connection is not on the clock; Pingora's keep-alive timeout covers it);
//! - a cap on the connections one client address holds at once. Peers in
//!   `server.trusted_proxies` are not capped: they speak for many clients.
//!
//! Both are applied by [`Guarded`], a `ServerApp` around the proxy that sees each
//! connection from accept to close, and [`HeadDeadline`], the stream it hands the proxy.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The limits, from `[server]`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The whole time a request head may take, from its first byte.
    pub head_deadline: Duration,
    /// The most bytes a request head may take.
    pub max_head_bytes: usize,
    /// Connections one address may hold; 0 for no limit.
    pub per_ip: usize,
    /// Peers that are not capped.
    pub trusted: Vec<IpNet>,
}

/// Open connections per client address.
#[derive(Debug, Default)]
struct OpenConnections(Mutex<HashMap<IpAddr, usize>>);

impl OpenConnections {
    /// Counts a new connection, unless `ip` already holds `cap`.
    fn admit(&self, ip: IpAddr, cap: usize) -> bool {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= cap {
            return false;
        }
        *count += 1;
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// Releases a counted connection however its handling ends.
struct Admitted<'a> {
    open: &'a OpenConnections,
    ip: IpAddr,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.open.release(self.ip);
    }
}

/// A `ServerApp` that applies [`Limits`] around another (the proxy).
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: Limits,
    open: OpenConnections,
}

impl<A> Guarded<A> {
    /// Wraps `inner`.
    pub fn new(inner: A, limits: Limits) -> Self {
        Self {
            inner: Arc::new(inner),
            limits,
            open: OpenConnections::default(),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
            .map(|ip| ip.to_canonical());
        let _admitted = match peer {
            Some(ip)
                if self.limits.per_ip > 0
                    && !self.limits.trusted.iter().any(|n| n.contains(&ip)) =>
            {
                if !self.open.admit(ip, self.limits.per_ip) {
                    tracing::debug!(client_ip = %ip, "connection refused: too many from this address");
                    return None;
                }
                Some(Admitted {
                    open: &self.open,
                    ip,
                })
            }
            _ => None,
        };
        let state = Arc::new(Mutex::new(HeadState::Waiting));
        let mut stream: Stream = Box::new(HeadDeadline {
            inner: stream,
            deadline: self.limits.head_deadline,
            max_bytes: self.limits.max_head_bytes,
            state: state.clone(),
        });
        // Keep-alive reuse is handled here rather than by the caller, so that the
        // connection stays counted between requests and each request head gets a deadline.
        loop {
            *state.lock().unwrap_or_else(|e| e.into_inner()) = HeadState::Waiting;
            stream = self.inner.process_new(stream, shutdown).await?;
            if *shutdown.borrow() {
                return None;
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Where a connection is in reading its current request head.
#[derive(Debug)]
enum HeadState {
    /// No byte of the head yet (an idle keep-alive connection is here).
    Waiting,
    /// Reading the head; it must end before the timer fires.
    Reading {
        timer: Pin<Box<Sleep>>,
        scan: HeadScan,
        /// Bytes of the head so far, against `server.max_header_bytes`.
        read: usize,
    },
    /// The head is complete: reads are the body's, with no deadline.
    Done,
}

/// The client stream, with a total deadline on each request head.
#[derive(Debug)]
pub struct HeadDeadline {
    inner: Stream,
    /// The whole time a head may take, from its first byte.
    deadline: Duration,
    /// The most bytes a head may take.
    max_bytes: usize,
    state: Arc<Mutex<HeadState>>,
}

/// Where the scan for the end of a request head stands between reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct HeadScan {
    /// The last bytes of the head so far (the end may straddle two reads).
    tail: [u8; 3],
    /// Whether a byte other than CR and LF has come: empty lines before the request-line
    /// are ignored (RFC 9112 §2.2), so they cannot end a head, nor keep one open for ever.
    content: bool,
}

impl HeadScan {
    /// Feeds `bytes`; `Some(n)` when the first `n` of them end the head: an empty line after
    /// the request-line, `\r\n\r\n` or, as lenient parsers accept, `\n\n` (RFC 9112 §2.2).
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if !self.content {
                if b == b'\r' || b == b'\n' {
                    continue;
                }
                self.content = true;
            }
            let [t0, t1, t2] = self.tail;
            if (t2 == b'\n' && b == b'\n') || [t0, t1, t2, b] == *b"\r\n\r\n" {
                return Some(i + 1);
            }
            self.tail = [t1, t2, b];
        }
        None
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let state = this.state.clone();
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        if let HeadState::Reading { timer, .. } = &mut *state
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not complete in time",
            )));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let bytes = &buf.filled()[before..];
            if bytes.is_empty() {
                return result;
            }
            let (timer, mut scan, read) = match std::mem::replace(&mut *state, HeadState::Done) {
                HeadState::Done => return result,
                HeadState::Waiting => (
                    Box::pin(tokio::time::sleep_until(Instant::now() + this.deadline)),
                    HeadScan::default(),
                    0,
                ),
                HeadState::Reading { timer, scan, read } => (timer, scan, read),
            };
            let ended = scan.feed(bytes);
            let read = read + ended.unwrap_or(bytes.len());
            if read > this.max_bytes {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head too large",
                )));
            }
            if ended.is_some() {
                return result;
            }
            let mut timer = timer;
            // A timer must be polled to be woken when it fires.
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not complete in time",
                )));
            }
            *state = HeadState::Reading { timer, scan, read };
        }
        result
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_a_head_across_reads() {
        let ends = |parts: &[&[u8]]| {
            let mut scan = HeadScan::default();
            parts.iter().any(|p| scan.feed(p).is_some())
        };
        assert!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]));
        assert!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n\r", b"\n"]));
        assert!(ends(&[b"GET / HTTP/1.0\n\n"]));
        assert!(!ends(&[b"GET / HTTP/1.1\r\n"]));
        assert!(!ends(&[b"x"]));
        // Empty lines before the request-line are not a head, however many.
        assert!(!ends(&[b"\r\n\r\n", b"\r\n", b"\n\n\r\n\r\n"]));
        assert!(ends(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]));
    }

    #[test]
    fn caps_connections_per_address() {
        let open = OpenConnections::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(open.admit(ip, 2));
        assert!(open.admit(ip, 2));
        assert!(!open.admit(ip, 2));
        open.release(ip);
        assert!(open.admit(ip, 2));
        open.release(ip);
        open.release(ip);
        assert!(open.0.lock().unwrap().is_empty());
    }
}
