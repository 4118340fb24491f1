//! The client stream under a [`super::Guarded`] listener: what one connection reads, with the
//! head deadline, the head size cap (answered 431/414/400), the idle timeout, a way for the
//! listener to close it while it is idle, and what the client sent ahead of the request
//! being served.
//!
//! A request head is held here until it is complete and within the limits, and only then
//! handed to the HTTP session. A head refused, cut off by its deadline or abandoned by its
//! client ends the connection as if the client had closed it before sending a byte, so the
//! HTTP session has no read error to report (a client's mistake is not the gateway's error).
//! The bytes after a head are handed on as far as its body goes (`Content-Length`, or the
//! chunked framing, RFC 9112 §6.3, §7.1) and held from there: they are the next pipelined
//! request (RFC 9112 §9.3.2), whose head then goes through the same limits as any other.
//! A request asking for an upgrade hands on everything after its head (the connection
//! becomes a tunnel or closes after the answer).

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
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
use crate::telemetry::{self, AccessRecord};

/// The most header fields Pingora 0.9 parses in a head (its `MAX_HEADERS`); it answers a bare
/// 400 to more, so the guard answers 431 first.
const MAX_FIELDS: usize = 256;

/// The most bytes of empty lines taken before a request-line (RFC 9112 §2.2 asks a server
/// to ignore at least one): more is not a request, and is answered 400.
const MAX_BLANK: usize = 64;

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
    /// When the connection last became idle (opened, or answered): the oldest idle one is
    /// closed first at a cap.
    idle_since: Instant,
    /// The reader to wake when an idle connection is closed from outside.
    waker: Option<Waker>,
    /// Closed from outside while idle: the connection ends at its next read, unless a request
    /// has already arrived, which is then served, and the connection ends after it.
    closing: bool,
    /// Read from the client, not handed to the HTTP session yet: the head being read, then
    /// what came after it (the start of its body, the next requests).
    held: BytesMut,
    /// How many bytes at the front of `held` may be handed over (a complete head, body).
    ready: usize,
    /// A request's body went on unframed (an upgrade): what follows it is not known, so the
    /// connection is not reused.
    unframed: bool,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for a request's first byte, on a new or a kept-alive connection; the timer is
    /// the idle timeout.
    Idle,
    /// Reading a request head (held); the timer is its deadline.
    Head { scan: HeadScan, started: Instant },
    /// The head was handed over: its body, if any, then the answer, with no deadline of ours.
    Busy(Body),
    /// Answering a head over the limit, then lingering; the timer ends the lingering.
    Refusing(Refusal),
    /// Closed while idle (timeout, room for another connection, shutdown): reads see the end.
    Closed,
}

/// A 431/414/400 on its way out.
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
        let now = Instant::now();
        Arc::new(Self(Mutex::new(State {
            phase: Phase::Idle,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            idle_since: now,
            waker: None,
            closing: false,
            held: BytesMut::new(),
            ready: 0,
            unframed: false,
        })))
    }

    /// Since when the connection is idle, or `None` when it is not (or already closing).
    pub(super) fn idle_since(&self) -> Option<Instant> {
        let state = lock(&self.0);
        (matches!(state.phase, Phase::Idle) && !state.closing).then_some(state.idle_since)
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

    /// Between requests, unless the listener is `stopping` (then false: the connection
    /// closes): reading the next head when the client already sent some of it (pipelined),
    /// for at most `deadline`, else idle for at most `idle`.
    pub(super) fn wait_for_request(
        &self,
        idle: Duration,
        deadline: Duration,
        stopping: &AtomicBool,
    ) -> bool {
        let mut state = lock(&self.0);
        // Checked under the lock `Registry::stop` takes to close idle connections, so a
        // connection is either seen idle there or sees `stopping` here.
        if stopping.load(Ordering::SeqCst)
            || state.closing
            || state.unframed
            || !matches!(state.phase, Phase::Busy(_))
        {
            return false;
        }
        let now = Instant::now();
        if state.held.is_empty() {
            state.phase = Phase::Idle;
            state.idle_since = now;
            state.timer.as_mut().reset(now + idle);
        } else {
            state.start_head(now, deadline);
        }
        true
    }

    #[cfg(test)]
    pub(super) fn start_request_for_test(&self) {
        lock(&self.0).phase = Phase::Busy(Body::Length(0));
    }

    #[cfg(test)]
    pub(super) fn is_closed_for_test(&self) -> bool {
        let state = lock(&self.0);
        state.closing || matches!(state.phase, Phase::Closed)
    }
}

/// What scanning the held head bytes led to.
enum Progress {
    /// More head to come.
    Reading,
    /// The head ends after this many held bytes.
    Complete(usize),
    /// Over the limit: this answer, then close.
    Refuse(Reply),
}

impl State {
    fn start_head(&mut self, now: Instant, deadline: Duration) {
        self.phase = Phase::Head {
            scan: HeadScan::default(),
            started: now,
        };
        self.timer.as_mut().reset(now + deadline);
    }

    /// Scans the held bytes not scanned yet for the end of the head, within `max` bytes.
    fn scan_head(&mut self, max: usize) -> Progress {
        let Phase::Head { scan, .. } = &mut self.phase else {
            return Progress::Reading;
        };
        let from = scan.seen;
        let ended = scan.feed(&self.held[from..]);
        if scan.blank > MAX_BLANK {
            return Progress::Refuse(not_a_request());
        }
        if scan.seen > max || scan.fields > MAX_FIELDS {
            return Progress::Refuse(if scan.line.is_some_and(|line| line <= max) {
                header_too_large()
            } else {
                uri_too_long()
            });
        }
        match ended {
            Some(n) => Progress::Complete(from + n),
            None => Progress::Reading,
        }
    }

    /// Moves up to `ready` held bytes into `buf`.
    fn hand_over(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.ready.min(buf.remaining());
        buf.put_slice(&self.held[..n]);
        self.held.advance(n);
        self.ready -= n;
        if self.held.is_empty() {
            // An idle connection keeps no buffer.
            self.held = BytesMut::new();
        }
    }

    /// Writes the refusal, closes the sending side, discards what the client still sends
    /// for a while, then ends the connection (a read that sees its end).
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
        Poll::Ready(Ok(()))
    }
}

/// 400 (RFC 9112 §2.2): nothing but empty lines, more than a request may start with.
fn not_a_request() -> Reply {
    Reply::error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "The request has no request line.",
    )
}

/// 431 (RFC 6585 §5): the header fields are over `server.max_header_bytes` or too many.
fn header_too_large() -> Reply {
    Reply::error(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "header_too_large",
        "The request header fields are too large.",
    )
}

/// 414 (RFC 9110 §15.5.15): the request-line alone is over `server.max_header_bytes`.
fn uri_too_long() -> Reply {
    Reply::error(
        StatusCode::URI_TOO_LONG,
        "uri_too_long",
        "The request target is too long.",
    )
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
    /// The peer's address, for the access log of a refusal.
    client: IpAddr,
    /// Whether refusals are written to the access log.
    access_log: bool,
}

impl GuardedStream {
    pub(super) fn new(inner: Stream, shared: Arc<Shared>, limits: &Limits, client: IpAddr) -> Self {
        Self {
            inner,
            shared,
            deadline: limits.head_deadline,
            max_bytes: limits.max_head_bytes,
            client,
            access_log: limits.access_log,
        }
    }

    /// Reads from the client into `held` (through `buf`'s free space, left as it was).
    fn read_held(
        &mut self,
        state: &mut State,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        state.held.extend_from_slice(&buf.filled()[before..]);
        buf.set_filled(before);
        result.map_ok(|()| got)
    }

    /// Starts answering `reply` and closing, and writes its access-log line.
    fn refuse(&self, state: &mut State, reply: &Reply) {
        let (scan, started) = match &state.phase {
            Phase::Head { scan, started } => (*scan, *started),
            _ => return,
        };
        tracing::debug!(status = reply.status.as_u16(), "request head refused");
        if self.access_log {
            // A request-line over the limit (414) is not read, even when it has ended.
            let line = (scan.line)
                .filter(|&end| end <= self.max_bytes)
                .and_then(|end| state.held.get(scan.blank..end));
            let (method, path) = line.and_then(request_line).unwrap_or(("", ""));
            telemetry::access(&AccessRecord {
                client: self.client,
                method,
                path,
                route: super::super::LOCAL_ROUTE,
                status: reply.status.as_u16(),
                upstream: None,
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                bytes: reply.body_bytes().len(),
                user_id: None,
            });
        }
        state.phase = Phase::Refusing(Refusal {
            answer: respond::closing_answer_bytes(reply),
            written: 0,
            shut: false,
            discarded: 0,
        });
        state.held = BytesMut::new();
        state.ready = 0;
        state.timer.as_mut().reset(Instant::now() + LINGER);
    }

    /// Reading a head: scans what is held, then reads more until it is complete.
    fn poll_head(
        &mut self,
        state: &mut State,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match state.scan_head(self.max_bytes) {
                Progress::Complete(end) => {
                    let body = Body::of_head(&state.held[..end]);
                    state.ready = end;
                    state.phase = Phase::Busy(body);
                    return Poll::Ready(Ok(()));
                }
                Progress::Refuse(reply) => {
                    self.refuse(state, &reply);
                    return Poll::Ready(Ok(()));
                }
                Progress::Reading => {}
            }
            if state.timer.as_mut().poll(cx).is_ready() {
                tracing::debug!("request head not complete in time: connection closed");
                state.phase = Phase::Closed;
                return Poll::Ready(Ok(()));
            }
            match self.read_held(state, cx, buf) {
                Poll::Ready(Ok(n)) if n > 0 => continue,
                Poll::Pending => return Poll::Pending,
                // The client went away mid-head: its business, not an error of ours.
                Poll::Ready(_) => {
                    tracing::debug!("client closed the connection mid-head");
                    state.phase = Phase::Closed;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// Waiting for a request: the first byte starts a head.
    fn poll_idle(
        &mut self,
        state: &mut State,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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
        let closing = state.closing;
        match self.read_held(state, cx, buf) {
            Poll::Ready(Ok(n)) if n > 0 => {
                state.start_head(Instant::now(), self.deadline);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if !closing => Poll::Pending,
            // Closed from outside, or by the client (a reset included).
            _ => {
                state.phase = Phase::Closed;
                Poll::Ready(Ok(()))
            }
        }
    }

    /// A head was handed over: its body's bytes go on, and what comes after is held.
    fn poll_busy(
        &mut self,
        state: &mut State,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Phase::Busy(body) = &mut state.phase else {
            return Poll::Ready(Ok(()));
        };
        if *body == Body::Unframed {
            state.unframed = true;
            if !state.held.is_empty() {
                state.ready = state.held.len();
                state.hand_over(buf);
                return Poll::Ready(Ok(()));
            }
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if !body.done() {
            if !state.held.is_empty() {
                state.ready = body.take(&state.held);
                state.hand_over(buf);
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let result = Pin::new(&mut self.inner).poll_read(cx, buf);
            let part = body.take(&buf.filled()[before..]);
            let rest = &buf.filled()[before + part..];
            if !rest.is_empty() {
                state.held.extend_from_slice(rest);
                buf.set_filled(before + part);
            }
            return result;
        }
        // Whatever comes now is the next request, held for it: one read's worth, then no
        // more reading (the session only probes for the client closing; it has nothing to
        // read, and a probe that pends is what it expects of a pipelining client).
        if !state.held.is_empty() {
            return Poll::Pending;
        }
        match self.read_held(state, cx, buf) {
            Poll::Ready(Ok(n)) if n > 0 => Poll::Pending,
            other => other.map_ok(|_| ()),
        }
    }
}

/// The method and the path (without its query) of a request-line (RFC 9112 §3), when it
/// reads as one; for the access log.
fn request_line(line: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(line)
        .ok()?
        .trim_end_matches(['\r', '\n']);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if parts.next().is_some()
        || !token(method)
        || !version.starts_with("HTTP/")
        || !target.starts_with('/')
        || !target.bytes().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or("")))
}

/// Where a request's body ends, as its head frames it (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    /// This many bytes to go (none: no body).
    Length(u64),
    /// A chunked body, where its scan stands.
    Chunked(Chunked),
    /// Whatever follows (an upgrade, or framing the HTTP session will refuse).
    Unframed,
}

impl Body {
    /// The framing of a complete head: `Transfer-Encoding` over `Content-Length`, none
    /// without either; an upgrade's tunnel has no end.
    fn of_head(head: &[u8]) -> Self {
        let mut body = Body::Length(0);
        let mut chunked = None;
        for line in head
            .split(|&b| b == b'\n')
            .skip_while(|l| l.trim_ascii().is_empty())
            .skip(1)
        {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"upgrade") {
                return Body::Unframed;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let last = value
                    .rsplit(|&b| b == b',')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"content-length") {
                body = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .map_or(Body::Unframed, Body::Length);
            }
        }
        match chunked {
            Some(true) => Body::Chunked(Chunked::default()),
            Some(false) => Body::Unframed,
            None => body,
        }
    }

    fn done(&self) -> bool {
        matches!(self, Body::Length(0) | Body::Chunked(Chunked::Done))
    }

    /// How many of `bytes` (the next ones read) belong to the body.
    fn take(&mut self, bytes: &[u8]) -> usize {
        match self {
            Body::Length(left) => {
                let n = usize::try_from(*left).map_or(bytes.len(), |l| l.min(bytes.len()));
                *left -= n as u64;
                n
            }
            Body::Chunked(scan) => scan.feed(bytes).unwrap_or(bytes.len()),
            Body::Unframed => bytes.len(),
        }
    }
}

/// Where the scan of a chunked body (RFC 9112 §7.1) stands between reads: enough to find
/// its end. Malformed framing is the HTTP session's to refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    /// In a chunk-size line: the size so far, and whether its extensions have begun.
    Size { size: u64, ext: bool },
    /// In chunk data: this many bytes to go.
    Data(u64),
    /// After chunk data, up to its line end.
    DataEnd,
    /// In the trailer section: whether the current line is empty so far.
    Trailer { empty: bool },
    /// The body has ended.
    Done,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::Size {
            size: 0,
            ext: false,
        }
    }
}

impl Chunked {
    /// Feeds `bytes`; `Some(n)` when the body ends after the first `n` of them.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            if let Chunked::Data(left) = self {
                let n = usize::try_from(*left).map_or(bytes.len() - i, |l| l.min(bytes.len() - i));
                i += n;
                *left -= n as u64;
                if *left == 0 {
                    *self = Chunked::DataEnd;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            *self = match *self {
                Chunked::Size { .. } => self.size_byte(b),
                Chunked::DataEnd if b == b'\n' => Chunked::default(),
                Chunked::Trailer { empty: true } if b == b'\n' => Chunked::Done,
                Chunked::Trailer { .. } if b == b'\n' => Chunked::Trailer { empty: true },
                Chunked::Trailer { empty } => Chunked::Trailer {
                    empty: empty && b == b'\r',
                },
                Chunked::Done => return Some(i - 1),
                other => other,
            };
            if *self == Chunked::Done {
                return Some(i);
            }
        }
        (*self == Chunked::Done).then_some(0)
    }

    fn size_byte(self, b: u8) -> Self {
        let Chunked::Size { size, ext } = self else {
            return self;
        };
        match b {
            b'\n' if size == 0 => Chunked::Trailer { empty: true },
            b'\n' => Chunked::Data(size),
            _ if !ext && b.is_ascii_hexdigit() => {
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                Chunked::Size {
                    size: size.saturating_mul(16).saturating_add(digit),
                    ext,
                }
            }
            _ => Chunked::Size { size, ext: true },
        }
    }
}

/// Where the scan for the end of a request head stands between reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct HeadScan {
    /// The last bytes of the head so far (the end may straddle two reads).
    tail: [u8; 3],
    /// Whether a byte other than CR and LF has come: empty lines before the request-line
    /// are ignored (RFC 9112 §2.2), so they cannot end a head.
    content: bool,
    /// Bytes of empty lines before the request-line.
    blank: usize,
    /// Bytes scanned so far.
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
                    self.blank += 1;
                    continue;
                }
                self.content = true;
            }
            let [_, t1, t2] = self.tail;
            // An empty line: LF right after a line's LF, or after its LF and a CR.
            if b == b'\n' && (t2 == b'\n' || (t1 == b'\n' && t2 == b'\r')) {
                self.seen += i + 1;
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
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let this = &mut *self;
        let shared = this.shared.clone();
        let mut guard = lock(&shared.0);
        let state = &mut *guard;
        loop {
            if state.ready > 0 {
                state.hand_over(buf);
                return Poll::Ready(Ok(()));
            }
            let step = match state.phase {
                Phase::Closed => return Poll::Ready(Ok(())),
                Phase::Refusing(_) => return state.poll_refusal(&mut this.inner, cx),
                Phase::Idle => this.poll_idle(state, cx, buf),
                Phase::Head { .. } => this.poll_head(state, cx, buf),
                Phase::Busy(_) => return this.poll_busy(state, cx, buf),
            };
            // `Ready(Ok)` from these: the phase moved on, go on in the next.
            if !matches!(step, Poll::Ready(Ok(()))) {
                return step;
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

    #[test]
    fn finds_the_end_of_a_chunked_body_across_reads() {
        // (body in parts, where it ends counting from the start of the first part)
        let cases: [(&[&[u8]], Option<usize>); 8] = [
            (&[b"0\r\n\r\nGET"], Some(5)),
            (&[b"5\r\nhello\r\n0\r\n\r\n"], Some(15)),
            (&[b"5\r\nhel", b"lo\r\n0\r", b"\n\r\nnext"], Some(15)),
            (&[b"a;name=v\r\n0123456789\r\n0\r\n\r\n"], Some(27)),
            (&[b"A\n0123456789\n0\n\n"], Some(16)),
            (&[b"1\r\nx\r\n0\r\nTrailer: 1\r\n\r\nGET /"], Some(23)),
            (&[b"5\r\nhello\r\n"], None),
            (&[b"0\r\nTrailer: 1\r\n"], None),
        ];
        for (parts, expected) in cases {
            let mut scan = Chunked::default();
            let mut offset = 0;
            let mut ended = None;
            for part in parts {
                if let Some(n) = scan.feed(part) {
                    ended = Some(offset + n);
                    break;
                }
                offset += part.len();
            }
            assert_eq!(ended, expected, "{parts:?}");
        }
    }

    #[test]
    fn a_heads_body_framing() {
        let head = |fields: &str| format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
        let cases = [
            ("", Body::Length(0)),
            ("Content-Length: 12\r\n", Body::Length(12)),
            ("content-length:7\r\n", Body::Length(7)),
            ("Content-Length: x\r\n", Body::Unframed),
            (
                "Transfer-Encoding: gzip, chunked\r\n",
                Body::Chunked(Chunked::default()),
            ),
            (
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                Body::Chunked(Chunked::default()),
            ),
            ("Transfer-Encoding: gzip\r\n", Body::Unframed),
            (
                "Upgrade: websocket\r\nConnection: upgrade\r\n",
                Body::Unframed,
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(Body::of_head(head(fields).as_bytes()), expected, "{fields}");
        }
        // Empty lines before the request-line, and a request-line that looks like a field.
        assert_eq!(
            Body::of_head(b"\r\n\r\nGET /a:b HTTP/1.1\r\nContent-Length: 2\r\n\r\n"),
            Body::Length(2)
        );
    }

    #[test]
    fn reads_a_request_line_for_the_access_log_or_nothing() {
        type Case = (&'static [u8], Option<(&'static str, &'static str)>);
        let cases: [Case; 7] = [
            (b"GET /a/b?token=x HTTP/1.1\r\n", Some(("GET", "/a/b"))),
            (b"POST / HTTP/1.0\n", Some(("POST", "/"))),
            (b"GET nowhere HTTP/1.1\r\n", None),
            (b"GET /a b HTTP/1.1\r\n", None),
            (b"G(T /a HTTP/1.1\r\n", None),
            (b"GET /a FTP/1.1\r\n", None),
            (b"GET /\xff HTTP/1.1\r\n", None),
        ];
        for (line, expected) in cases {
            assert_eq!(request_line(line), expected, "{line:?}");
        }
    }
}
