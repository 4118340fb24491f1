//! The client stream under a [`super::Guarded`] listener: what one connection reads, with the
//! head deadline, the head size cap (answered 431/414), the idle timeout and a way for the
//! listener to close it while it is idle.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::Limits;
use crate::gateway::respond;
use crate::reply::Reply;

/// The most header fields Pingora 0.9 parses in a head (its `MAX_HEADERS`); it answers a bare
/// 400 to more, so the guard answers 431 first.
const MAX_FIELDS: usize = 256;

/// How long a refused connection keeps discarding what its client still sends after the
/// answer, and how much: closing with unread bytes would reset the connection and could
/// destroy the answer before the client reads it (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// The state of one connection, shared by its stream and its listener's registry.
#[derive(Debug)]
pub(super) struct Shared(Mutex<State>);

#[derive(Debug)]
struct State {
    phase: Phase,
    /// The idle, head or linger deadline, by phase: one timer per connection, reset in place.
    timer: Pin<Box<Sleep>>,
    /// The reader to wake when an idle connection is closed from outside.
    waker: Option<Waker>,
    /// Closed from outside while idle: the connection ends at its next read, unless a request
    /// has already arrived, which is then served, and the connection ends after it.
    closing: bool,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for a request's first byte, on a new or a kept-alive connection; the timer is
    /// the idle timeout.
    Idle,
    /// Reading a request head; the timer is its deadline.
    Head { scan: HeadScan, read: usize },
    /// The head is complete: the body and the answer, with no deadline of ours.
    Busy,
    /// Answering a head over the limit, then lingering; the timer ends the lingering.
    Refusing(Refusal),
    /// Closed while idle (timeout, room for another connection, shutdown): reads see the end.
    Closed,
}

/// A 431/414 on its way out.
#[derive(Debug)]
struct Refusal {
    answer: Bytes,
    written: usize,
    shut: bool,
    discarded: usize,
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// A new connection: idle, for at most `idle`, until its first byte.
    pub(super) fn new(idle: Duration) -> Arc<Self> {
        Arc::new(Self(Mutex::new(State {
            phase: Phase::Idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            waker: None,
            closing: false,
        })))
    }

    /// Closes the connection if it is idle; whether it was. A request already on the wire
    /// but not read yet is still served (a client sending at that moment loses nothing).
    pub(super) fn close_if_idle(&self) -> bool {
        let mut state = lock(&self.0);
        if !matches!(state.phase, Phase::Idle) || state.closing {
            return false;
        }
        state.closing = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        true
    }

    /// Between requests: idle again for at most `idle`, unless the listener is `stopping`
    /// (then false: the connection closes).
    pub(super) fn wait_for_request(&self, idle: Duration, stopping: &AtomicBool) -> bool {
        let mut state = lock(&self.0);
        // Checked under the lock `Registry::stop` takes to close idle connections, so a
        // connection is either seen idle there or sees `stopping` here.
        if stopping.load(Ordering::SeqCst) || state.closing || matches!(state.phase, Phase::Closed)
        {
            return false;
        }
        state.phase = Phase::Idle;
        state.timer.as_mut().reset(Instant::now() + idle);
        true
    }

    #[cfg(test)]
    pub(super) fn start_request_for_test(&self) {
        lock(&self.0).phase = Phase::Busy;
    }

    #[cfg(test)]
    pub(super) fn is_closed_for_test(&self) -> bool {
        let state = lock(&self.0);
        state.closing || matches!(state.phase, Phase::Closed)
    }
}

/// What reading some head bytes led to.
enum Progress {
    /// Not a head (a body, or the head is complete): pass the bytes on.
    Pass,
    /// More head to come.
    Reading,
    /// Over the limit: this answer, then close.
    Refuse(Reply),
}

impl State {
    fn on_bytes(&mut self, bytes: &[u8], deadline: Duration, max: usize) -> Progress {
        let (mut scan, read) = match std::mem::replace(&mut self.phase, Phase::Busy) {
            Phase::Idle => {
                self.timer.as_mut().reset(Instant::now() + deadline);
                (HeadScan::default(), 0)
            }
            Phase::Head { scan, read } => (scan, read),
            other => {
                self.phase = other;
                return Progress::Pass;
            }
        };
        let ended = scan.feed(bytes);
        let read = read + ended.unwrap_or(bytes.len());
        if read > max || scan.fields > MAX_FIELDS {
            return Progress::Refuse(if scan.line.is_some_and(|line| line <= max) {
                header_too_large()
            } else {
                uri_too_long()
            });
        }
        if ended.is_some() {
            return Progress::Pass;
        }
        self.phase = Phase::Head { scan, read };
        Progress::Reading
    }

    /// Writes the refusal, closes the sending side, discards what the client still sends
    /// for a while, then fails the read (and the connection with it).
    fn poll_refusal(&mut self, inner: &mut Stream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let State { phase, timer, .. } = self;
        let Phase::Refusing(refusal) = phase else {
            return Poll::Ready(Ok(()));
        };
        while refusal.written < refusal.answer.len() {
            match Pin::new(&mut *inner).poll_write(cx, &refusal.answer[refusal.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                Poll::Ready(Ok(n)) => refusal.written += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        if !refusal.shut {
            if Pin::new(&mut *inner).poll_flush(cx).is_pending()
                || Pin::new(&mut *inner).poll_shutdown(cx).is_pending()
            {
                return Poll::Pending;
            }
            refusal.shut = true;
        }
        let mut scratch = [0u8; 4096];
        while refusal.discarded < LINGER_BYTES && timer.as_mut().poll(cx).is_pending() {
            let mut discard = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *inner).poll_read(cx, &mut discard) {
                Poll::Ready(Ok(())) if !discard.filled().is_empty() => {
                    refusal.discarded += discard.filled().len();
                }
                Poll::Ready(_) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        *phase = Phase::Closed;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request head too large",
        )))
    }
}

/// 431 (RFC 6585 §5): the header fields are over `server.max_header_bytes` or too many.
fn header_too_large() -> Reply {
    Reply::error(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "header_too_large",
        "The request header fields are too large",
    )
}

/// 414 (RFC 9110 §15.5.15): the request-line alone is over `server.max_header_bytes`.
fn uri_too_long() -> Reply {
    Reply::error(
        StatusCode::URI_TOO_LONG,
        "uri_too_long",
        "The request target is too long",
    )
}

fn timed_out() -> Poll<io::Result<()>> {
    Poll::Ready(Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "request head not complete in time",
    )))
}

/// The client stream of a guarded connection.
#[derive(Debug)]
pub struct GuardedStream {
    inner: Stream,
    shared: Arc<Shared>,
    /// The whole time a head may take, from its first byte.
    deadline: Duration,
    /// The most bytes a head may take.
    max_bytes: usize,
}

impl GuardedStream {
    pub(super) fn new(inner: Stream, shared: Arc<Shared>, limits: &Limits) -> Self {
        Self {
            inner,
            shared,
            deadline: limits.head_deadline,
            max_bytes: limits.max_head_bytes,
        }
    }
}

/// Where the scan for the end of a request head stands between reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct HeadScan {
    /// The last bytes of the head so far (the end may straddle two reads).
    tail: [u8; 3],
    /// Whether a byte other than CR and LF has come: empty lines before the request-line
    /// are ignored (RFC 9112 §2.2), so they cannot end a head, nor keep one open for ever.
    content: bool,
    /// Bytes fed before this read.
    seen: usize,
    /// Bytes up to the end of the request-line, once it has ended.
    line: Option<usize>,
    /// Header field lines ended so far.
    fields: usize,
}

impl HeadScan {
    /// Feeds `bytes`; `Some(n)` when the first `n` of them end the head: an empty line after
    /// the request-line, whether its lines end in CRLF or, as lenient parsers accept, in a
    /// bare LF (RFC 9112 §2.2).
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if !self.content {
                if b == b'\r' || b == b'\n' {
                    continue;
                }
                self.content = true;
            }
            let [_, t1, t2] = self.tail;
            // An empty line: LF right after a line's LF, or after its LF and a CR.
            if b == b'\n' && (t2 == b'\n' || (t1 == b'\n' && t2 == b'\r')) {
                return Some(i + 1);
            }
            if b == b'\n' {
                match self.line {
                    None => self.line = Some(self.seen + i + 1),
                    Some(_) => self.fields += 1,
                }
            }
            self.tail = [t1, t2, b];
        }
        self.seen += bytes.len();
        None
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let mut guard = lock(&this.shared.0);
        let state = &mut *guard;
        let mut closing = false;
        match state.phase {
            Phase::Closed => return Poll::Ready(Ok(())),
            Phase::Refusing(_) => return state.poll_refusal(&mut this.inner, cx),
            Phase::Idle => {
                if state.timer.as_mut().poll(cx).is_ready() {
                    state.phase = Phase::Closed;
                    return Poll::Ready(Ok(()));
                }
                if !state
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    state.waker = Some(cx.waker().clone());
                }
                closing = state.closing;
            }
            Phase::Head { .. } if state.timer.as_mut().poll(cx).is_ready() => return timed_out(),
            Phase::Head { .. } | Phase::Busy => {}
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if closing && result.is_pending() {
            state.phase = Phase::Closed;
            return Poll::Ready(Ok(()));
        }
        let bytes = &buf.filled()[before..];
        if !matches!(result, Poll::Ready(Ok(()))) || bytes.is_empty() {
            return result;
        }
        match state.on_bytes(bytes, this.deadline, this.max_bytes) {
            Progress::Pass => result,
            // A timer must be polled to be woken when it fires.
            Progress::Reading if state.timer.as_mut().poll(cx).is_ready() => timed_out(),
            Progress::Reading => result,
            Progress::Refuse(reply) => {
                tracing::debug!(status = reply.status.as_u16(), "request head refused");
                state.phase = Phase::Refusing(Refusal {
                    answer: respond::closing_answer_bytes(&reply),
                    written: 0,
                    shut: false,
                    discarded: 0,
                });
                state.timer.as_mut().reset(Instant::now() + LINGER);
                state.poll_refusal(&mut this.inner, cx)
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
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
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
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

impl GetTimingDigest for GuardedStream {
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

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for GuardedStream {
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
        assert!(ends(&[b"GET / HTTP/1.1\nHost: a\n\r\n"]));
        assert!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\n"]));
        assert!(!ends(&[b"GET / HTTP/1.1\r\n"]));
        assert!(!ends(&[b"x"]));
        // Empty lines before the request-line are not a head, however many.
        assert!(!ends(&[b"\r\n\r\n", b"\r\n", b"\n\n\r\n\r\n"]));
        assert!(ends(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]));
    }

    #[test]
    fn measures_the_request_line_and_counts_fields_across_reads() {
        let mut scan = HeadScan::default();
        assert_eq!(scan.feed(b"GET /abc HT"), None);
        assert_eq!(scan.line, None);
        assert_eq!(scan.feed(b"TP/1.1\r\nA: 1\r\nB: 2\r"), None);
        assert_eq!(scan.line, Some(19));
        assert_eq!(scan.feed(b"\nC: 3\n"), None);
        assert_eq!(scan.fields, 3);
        assert_eq!(scan.feed(b"\r\nrest"), Some(2));
    }
}
