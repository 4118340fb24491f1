//! A small real SMTP server for tests: it listens on `127.0.0.1:0`, speaks enough ESMTP for
//! lettre (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), keeps every message it receives and
//! lets a test wait for one and read its parts and the `token=` in its link.
//!
//! It runs on a thread and runtime of its own, so it answers whatever runtime (or none) the
//! test and the gateway under test run on.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

/// The longest command or data line accepted (RFC 5321 asks for 1000; lettre stays far below).
const MAX_LINE: usize = 64 * 1024;
/// The largest message accepted, advertised with `SIZE`.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// A running SMTP sink; it stops when dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    /// Messages not yet taken by a `wait_for*` call.
    inbox: Mutex<VecDeque<ReceivedMail>>,
    /// Every message received, taken or not.
    all: Mutex<Vec<ReceivedMail>>,
    arrived: Notify,
    reject_recipients: AtomicBool,
}

impl Shared {
    fn inbox(&self) -> MutexGuard<'_, VecDeque<ReceivedMail>> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn all(&self) -> MutexGuard<'_, Vec<ReceivedMail>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_first(&self, pred: &dyn Fn(&ReceivedMail) -> bool) -> Option<ReceivedMail> {
        let mut inbox = self.inbox();
        let index = inbox.iter().position(pred)?;
        inbox.remove(index)
    }
}

impl SmtpSink {
    /// Binds `127.0.0.1:0` and starts answering at once. Callable from sync or async code.
    pub fn start() -> SmtpSink {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the SMTP sink");
        let addr = listener.local_addr().expect("SMTP sink address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking SMTP sink socket");
        let shared = Arc::new(Shared::default());
        let (shutdown, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("smtp-sink".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(listener, shared, stopped)
            })
            .expect("spawn the SMTP sink thread");
        SmtpSink {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `smtp://127.0.0.1:PORT`, for `mail.url`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The address the sink listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes every later `RCPT TO` fail with `550`, to test delivery failures.
    pub fn reject_recipients(&self, reject: bool) {
        self.shared
            .reject_recipients
            .store(reject, Ordering::SeqCst);
    }

    /// Takes the oldest message not yet taken, waiting up to `timeout` for one to arrive.
    pub async fn wait_for_message(&self, timeout: Duration) -> Option<ReceivedMail> {
        self.wait_for(|_| true, timeout).await
    }

    /// Takes the oldest message not yet taken whose envelope goes to `to` (case-insensitive).
    pub async fn wait_for_mail_to(&self, to: &str, timeout: Duration) -> Option<ReceivedMail> {
        let to = to.to_ascii_lowercase();
        self.wait_for(
            move |m| m.rcpt_to.iter().any(|r| r.to_ascii_lowercase() == to),
            timeout,
        )
        .await
    }

    /// Takes the oldest message not yet taken that matches `pred`, waiting up to `timeout`.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&ReceivedMail) -> bool,
        timeout: Duration,
    ) -> Option<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register for the next arrival before looking, so none slips in between.
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(mail) = self.shared.take_first(&pred) {
                return Some(mail);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.shared.take_first(&pred);
            }
        }
    }

    /// Every message received so far, taken or not, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.all().clone()
    }

    /// How many messages have been received so far.
    pub fn count(&self) -> usize {
        self.shared.all().len()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(listener: std::net::TcpListener, shared: Arc<Shared>, mut stopped: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("SMTP sink runtime");
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("SMTP sink listener");
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&shared);
                        tokio::spawn(async move {
                            // A client that hangs up mid-dialogue is not the sink's problem.
                            let _ = serve(stream, shared).await;
                        });
                    }
                    // Too many open files and the like: back off, keep serving.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
            }
        }
    });
    // Dropping the runtime ends the connections still open.
}

/// One SMTP dialogue.
async fn serve(stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(b"220 127.0.0.1 portcullis test sink ESMTP ready\r\n")
        .await?;

    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    loop {
        let Some(line) = read_line(&mut reader).await? else {
            return Ok(());
        };
        let Some(line) = line else {
            write.write_all(b"500 5.5.2 line too long\r\n").await?;
            return Ok(());
        };
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb.to_ascii_uppercase(), arg.trim()),
            None => (line.trim().to_ascii_uppercase(), ""),
        };
        let reply: String = match verb.as_str() {
            "EHLO" => {
                mail_from = None;
                rcpt_to.clear();
                format!(
                    "250-127.0.0.1 greets {}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE {MAX_MESSAGE}\r\n250 HELP\r\n",
                    if arg.is_empty() { "client" } else { arg }
                )
            }
            "HELO" => {
                mail_from = None;
                rcpt_to.clear();
                "250 127.0.0.1\r\n".into()
            }
            "MAIL" => match path_after(arg, "FROM:") {
                Some(from) => {
                    mail_from = Some(from);
                    rcpt_to.clear();
                    "250 2.1.0 OK\r\n".into()
                }
                None => "501 5.5.4 syntax: MAIL FROM:<address>\r\n".into(),
            },
            "RCPT" => match (&mail_from, path_after(arg, "TO:")) {
                (None, _) => "503 5.5.1 MAIL first\r\n".into(),
                (Some(_), None) => "501 5.5.4 syntax: RCPT TO:<address>\r\n".into(),
                (Some(_), Some(_)) if shared.reject_recipients.load(Ordering::SeqCst) => {
                    "550 5.1.1 mailbox unavailable\r\n".into()
                }
                (Some(_), Some(to)) if to.is_empty() => "501 5.1.3 empty recipient\r\n".into(),
                (Some(_), Some(to)) => {
                    rcpt_to.push(to);
                    "250 2.1.5 OK\r\n".into()
                }
            },
            "DATA" => {
                let (Some(from), false) = (&mail_from, rcpt_to.is_empty()) else {
                    write.write_all(b"503 5.5.1 RCPT first\r\n").await?;
                    continue;
                };
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let Some(data) = read_data(&mut reader).await? else {
                    return Ok(());
                };
                let reply = match data {
                    Some(data) => {
                        let mail = ReceivedMail {
                            mail_from: from.clone(),
                            rcpt_to: std::mem::take(&mut rcpt_to),
                            data,
                        };
                        shared.all().push(mail.clone());
                        shared.inbox().push_back(mail);
                        shared.arrived.notify_waiters();
                        "250 2.0.0 OK queued\r\n"
                    }
                    None => "552 5.3.4 message too big\r\n",
                };
                mail_from = None;
                rcpt_to.clear();
                reply.into()
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                "250 2.0.0 OK\r\n".into()
            }
            "NOOP" => "250 2.0.0 OK\r\n".into(),
            "VRFY" => "252 2.5.0 cannot verify, will accept\r\n".into(),
            "STARTTLS" => "454 4.7.0 TLS not available\r\n".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => "500 5.5.2 command not recognized\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// The next line without its line ending: `None` at end of input, `Some(None)` when the line
/// is longer than [`MAX_LINE`].
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> io::Result<Option<Option<String>>> {
    let mut buf = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if !buf.ends_with(b"\n") {
        if buf.len() > MAX_LINE {
            return Ok(Some(None));
        }
        // The client hung up in the middle of a line.
        return Ok(None);
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(Some(String::from_utf8_lossy(&buf).into_owned())))
}

/// The message after `DATA`, dot-unstuffed, lines joined with CRLF: `None` at end of input,
/// `Some(None)` when it is too big (read to the end all the same, to stay in step).
async fn read_data<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> io::Result<Option<Option<String>>> {
    let mut data = String::new();
    let mut too_big = false;
    loop {
        let line = match read_line(reader).await? {
            None => return Ok(None),
            Some(None) => {
                too_big = true;
                continue;
            }
            Some(Some(line)) => line,
        };
        if line == "." {
            return Ok(Some((!too_big).then_some(data)));
        }
        // RFC 5321 4.5.2: a leading dot was doubled by the client.
        let line = line.strip_prefix('.').unwrap_or(&line);
        if data.len() + line.len() + 2 > MAX_MESSAGE {
            too_big = true;
        }
        if !too_big {
            data.push_str(line);
            data.push_str("\r\n");
        }
    }
}

/// `<addr>` (or a bare `addr`) after `FROM:`/`TO:`, ignoring ESMTP parameters.
fn path_after(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    if let Some(rest) = rest.strip_prefix('<') {
        let end = rest.find('>')?;
        return Some(rest[..end].to_owned());
    }
    Some(
        rest.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// One message as the sink received it.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`), empty for the null sender or an `.eml` file.
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`).
    pub rcpt_to: Vec<String>,
    /// The message as transmitted, dot-unstuffed, with CRLF line endings.
    pub data: String,
}

impl ReceivedMail {
    /// Wraps a message read from elsewhere (an `.eml` file), with no envelope.
    pub fn from_eml(raw: &str) -> ReceivedMail {
        ReceivedMail {
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            data: raw.to_owned(),
        }
    }

    /// The top-level headers, unfolded, in order, values as transmitted.
    pub fn headers(&self) -> Vec<(String, String)> {
        split_entity(&normalize(&self.data)).0
    }

    /// A top-level header's value (first of that name, case-insensitive), with RFC 2047
    /// encoded words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        header_in(&self.headers(), name).map(|v| decode_words(&v))
    }

    /// The decoded `Subject`.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    /// Every leaf part as (lower-case media type, decoded text), in order.
    pub fn parts(&self) -> Vec<(String, String)> {
        let data = normalize(&self.data);
        let (headers, body) = split_entity(&data);
        let mut out = Vec::new();
        collect_leaves(&headers, body, &mut out);
        out
    }

    /// The first `text/plain` part, decoded.
    pub fn text_body(&self) -> Option<String> {
        self.part("text/plain")
    }

    /// The first `text/html` part, decoded.
    pub fn html_body(&self) -> Option<String> {
        self.part("text/html")
    }

    /// The first URL in the text part that carries `token=`.
    pub fn link(&self) -> Option<String> {
        let text = self.text_body()?;
        text.split_whitespace()
            .map(|w| w.trim_matches(|c| matches!(c, '<' | '>' | '(' | ')' | '"' | '\'')))
            .find(|w| {
                (w.starts_with("http://") || w.starts_with("https://")) && w.contains("token=")
            })
            .map(str::to_owned)
    }

    /// The `token` query value of [`Self::link`], percent-decoded.
    pub fn token(&self) -> Option<String> {
        let link = self.link()?;
        let query = link.split_once('?')?.1;
        let query = query.split('#').next().unwrap_or_default();
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| percent_decode(v))
    }

    fn part(&self, media_type: &str) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|(t, _)| t == media_type)
            .map(|(_, body)| body)
    }
}

/// Line endings as `\n`, which makes the MIME walk below simpler.
fn normalize(raw: &str) -> String {
    raw.replace("\r\n", "\n")
}

/// Splits an entity into its unfolded headers and its body.
fn split_entity(entity: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = match entity.find("\n\n") {
        Some(i) => (&entity[..i], &entity[i + 2..]),
        None => (entity, ""),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (headers, body)
}

fn header_in(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// A parameter of a structured header value: `boundary` of `multipart/alternative; boundary="x"`.
fn header_param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (key, val) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| val.trim().trim_matches('"').to_owned())
    })
}

fn collect_leaves(headers: &[(String, String)], body: &str, out: &mut Vec<(String, String)>) {
    let content_type = header_in(headers, "Content-Type").unwrap_or_else(|| "text/plain".into());
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media_type.starts_with("multipart/") {
        let Some(boundary) = header_param(&content_type, "boundary") else {
            return;
        };
        let delimiter = format!("--{boundary}");
        let close = format!("--{boundary}--");
        let mut current: Option<Vec<&str>> = None;
        for line in body.split('\n') {
            let trimmed = line.trim_end();
            if trimmed == close || trimmed == delimiter {
                if let Some(lines) = current.take() {
                    let part = lines.join("\n");
                    let (part_headers, part_body) = split_entity(&part);
                    collect_leaves(&part_headers, part_body, out);
                }
                if trimmed == close {
                    break;
                }
                current = Some(Vec::new());
            } else if let Some(lines) = current.as_mut() {
                lines.push(line);
            }
        }
        return;
    }
    let encoding = header_in(headers, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .unwrap_or_default()
        }
        _ => body.as_bytes().to_vec(),
    };
    out.push((media_type, String::from_utf8_lossy(&bytes).into_owned()));
}

fn decode_quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            // A soft line break: `=` at the end of a line (trailing blanks allowed).
            let mut j = i + 1;
            while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'\n' {
                i = j + 1;
                continue;
            }
            if j == bytes.len() {
                break;
            }
            if let Some(byte) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`); blanks between two
/// adjacent encoded words are dropped, as the RFC says.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        match decode_word(candidate) {
            Some((decoded, used)) => {
                if !(after_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = &candidate[used..];
                after_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &candidate[2..];
                after_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `s`: its text and how many bytes it spans.
fn decode_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (_charset, rest) = inner.split_once('?')?;
    let (encoding, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let text = &rest[..end];
    if text.contains(char::is_whitespace) {
        return None;
    }
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "q" | "Q" => decode_quoted_printable(&text.replace('_', " ")),
        _ => return None,
    };
    let used = s.len() - rest.len() + end + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), used))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
