//! Tracing setup: stdout (pretty or JSON) plus JSON-lines files.
//!
//! `combined.log` gets everything at the configured level, `error.log` only errors,
//! `security.log` only events with the [`SECURITY`] target, which the auth code writes for
//! logins, lockouts, revocations and spoofing attempts, and `access.log` one line per
//! proxied request (the [`ACCESS`] target, written by [`access`]).
//!
//! Pingora's own debug and trace lines print whole requests (the request target with its
//! query string, which can carry tokens, and the headers), so they are dropped whatever
//! `logging.level` says: no log line may carry a secret.
//!
//! Every JSON line (stdout with `logging.format = "json"`, and the files) is written by
//! the format in `json.rs`, which keeps build-machine source paths of bridged `log` records out.
//! The pretty format colours its lines only when stdout is a terminal.
//!
//! Warnings and errors that repeat (a store outage refuses every request with the same
//! line) are throttled per call site ([`throttle::Throttle`]), so `error.log` stays fit for alerting;
//! the security and access logs keep every line. Files are reopened by [`reopen_files`]
//! (on `SIGHUP`), so logrotate can move them away.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Level;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LoggingConfig};

mod json;
pub mod throttle;

/// The tracing target of security events: `tracing::warn!(target: SECURITY, …)`.
pub const SECURITY: &str = "security";

/// The tracing target of the access log's lines: see [`access`].
pub const ACCESS: &str = "access";

/// Whether an event is one of Pingora's debug or trace lines (which print whole requests),
/// or one of webauthn-rs's own lines: it logs a client's malformed or refused answer at
/// ERROR, which would let anyone write to `error.log`; the refusal is security-logged by
/// the passkey endpoints instead.
fn is_request_dump(meta: &tracing::Metadata<'_>) -> bool {
    (meta.target().starts_with("pingora") && *meta.level() > Level::INFO)
        || meta.target().starts_with("webauthn_rs")
}

/// Pingora's and rustls's ERROR and WARN lines that are no fault of ours, by the record's
/// target and the start of its message: an upstream closed a kept-alive connection and
/// Pingora opens a new one (normal under load, tens of lines a second); a client sent
/// something that is not HTTP or left before its answer (the client's doing — and the read
/// error quotes the raw request, cookies and `Authorization` included, so it must never be
/// written); a client's TLS hello named an IP address or an invalid name as its SNI (rustls
/// warns once per connection, so anyone could fill the logs; the default certificate serves).
const PINGORA_NOISE: &[(&str, &str)] = &[
    (
        "pingora_core::connectors",
        "failed to acquire reusable stream",
    ),
    (
        "pingora_core::apps::http_app",
        "HTTP server fails to read from downstream",
    ),
    (
        "pingora_core::apps::http_app",
        "HTTP server fails to write to downstream",
    ),
    ("rustls::", "Illegal SNI"),
];

/// Whether an event is one of [`PINGORA_NOISE`]. Pingora and rustls write through the `log`
/// crate, whose bridge gives every record of a level one call site and carries the record's
/// target as a `log.target` field; only ERROR and WARN events are looked into.
fn is_pingora_noise(event: &tracing::Event<'_>) -> bool {
    if *event.metadata().level() > Level::WARN {
        return false;
    }
    let mut fields = LogRecord::default();
    event.record(&mut fields);
    PINGORA_NOISE.iter().any(|(target, message)| {
        fields.target.starts_with(target) && fields.message.starts_with(message)
    })
}

/// What [`is_pingora_noise`] reads of a bridged record: its target and message.
#[derive(Default)]
struct LogRecord {
    target: String,
    message: String,
}

impl tracing::field::Visit for LogRecord {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "log.target" {
            self.target = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

/// Keeps the background log writers alive; drop it last so buffered lines are flushed.
pub struct LogGuards(#[allow(dead_code)] Vec<WorkerGuard>);

/// Installs the global subscriber. Call once, from `main`.
pub fn init(config: &LoggingConfig) -> anyhow::Result<LogGuards> {
    let mut guards = Vec::new();
    let level = || EnvFilter::new(&config.level);
    let not_access = || filter_fn(|meta| meta.target() != ACCESS);

    let stdout = match config.format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(stdout_is_terminal())
            .with_filter(level())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(json::JsonLines)
            .with_filter(level())
            .boxed(),
    };

    // Lines for operators (throttled when they repeat) and records (every line kept).
    let mut general = vec![stdout.with_filter(not_access()).boxed()];
    let mut records = Vec::new();
    if !config.dir.is_empty() {
        let dir = Path::new(&config.dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))?;
        let mut file = |name: &str| -> anyhow::Result<_> {
            let file = ReopeningFile::open(dir.join(name))?;
            let (writer, guard) = tracing_appender::non_blocking(file);
            guards.push(guard);
            Ok(tracing_subscriber::fmt::layer()
                .event_format(json::JsonLines)
                .with_ansi(false)
                .with_writer(writer))
        };
        general.push(
            file("combined.log")?
                .with_filter(level())
                .with_filter(not_access())
                .boxed(),
        );
        general.push(file("error.log")?.with_filter(LevelFilter::ERROR).boxed());
        records.push(
            file("security.log")?
                .with_filter(Targets::new().with_target(SECURITY, Level::TRACE))
                .with_filter(filter_fn(|meta| meta.target() == SECURITY))
                .boxed(),
        );
        if config.access_log {
            records.push(
                file("access.log")?
                    .with_filter(filter_fn(|meta| meta.target() == ACCESS))
                    .boxed(),
            );
        }
    }
    tracing_subscriber::registry()
        .with(
            general
                .with_filter(throttle::Filter)
                // No layer at all rather than an empty list: an empty list under a filter
                // that drops an event leaves tracing-subscriber's per-layer filter state
                // unbalanced (a debug assertion aborts the process at the first dropped line).
                .and_then((!records.is_empty()).then_some(records))
                .with_filter(filter_fn(|meta| !is_request_dump(meta))),
        )
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    // Records of the `log` crate (Pingora, rustls, lettre) are bridged into tracing, and the
    // bridge admits every level because the security layer listens at TRACE: Pingora's
    // per-request `debug!` lines were built and then dropped, about 13k instructions a
    // proxied request. Cap them at the configured level, where `log`'s own check stops them.
    log::set_max_level(match level().max_level_hint() {
        Some(LevelFilter::OFF) => log::LevelFilter::Off,
        Some(LevelFilter::ERROR) => log::LevelFilter::Error,
        Some(LevelFilter::WARN) => log::LevelFilter::Warn,
        Some(LevelFilter::INFO) => log::LevelFilter::Info,
        Some(LevelFilter::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    });
    install_panic_hook();
    Ok(LogGuards(guards))
}

/// Whether stdout is a terminal: colours only there, never in a file or a pipe.
fn stdout_is_terminal() -> bool {
    use std::io::IsTerminal;
    io::stdout().is_terminal()
}

/// One proxied request, as the access log records it: no query string, no email, no token.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    /// The client's address (after `server.trusted_proxies`).
    pub client: IpAddr,
    /// The request method.
    pub method: &'a str,
    /// The canonical path, without its query.
    pub path: &'a str,
    /// The route's name, `local` or `unmatched`.
    pub route: &'a str,
    /// The answer's status; 0 when none was sent.
    pub status: u16,
    /// The upstream's address, when the request was proxied.
    pub upstream: Option<SocketAddr>,
    /// From the first byte of the request to the end of the answer, in milliseconds.
    pub duration_ms: f64,
    /// Body bytes sent to the client.
    pub bytes: usize,
    /// The user's id, when the request was authenticated.
    pub user_id: Option<&'a str>,
}

/// Writes one access-log line (`access.log`, JSON) for a request.
pub fn access(record: &AccessRecord<'_>) {
    tracing::info!(
        target: ACCESS,
        client = %record.client,
        method = record.method,
        path = record.path,
        route = record.route,
        status = record.status,
        upstream = record.upstream.map(tracing::field::display),
        duration_ms = record.duration_ms,
        bytes = record.bytes,
        user_id = record.user_id.unwrap_or(""),
    );
}

/// Bumped by [`reopen_files`]; each log file reopens its path when it sees a new value.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes every log file reopen its path before its next line: after logrotate moved a file
/// away (`postrotate … kill -HUP`), lines go to a new file of the same name.
pub fn reopen_files() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// A log file that reopens its path (append, create) when [`reopen_files`] was called.
/// Owned by its background writer thread, so a reopen never blocks a request.
struct ReopeningFile {
    path: PathBuf,
    file: File,
    generation: u64,
}

impl ReopeningFile {
    fn open(path: PathBuf) -> anyhow::Result<Self> {
        let file = append(&path)
            .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", path.display()))?;
        Ok(Self {
            path,
            file,
            generation: GENERATION.load(Ordering::Relaxed),
        })
    }

    /// Reopens when asked to; keeps the old file if the path cannot be opened (a line in a
    /// moved file beats a lost one).
    fn follow_reopen(&mut self) {
        let generation = GENERATION.load(Ordering::Relaxed);
        if generation != self.generation {
            self.generation = generation;
            if let Ok(file) = append(&self.path) {
                self.file = file;
            }
        }
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for ReopeningFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.follow_reopen();
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Logs a panic as one ERROR line with where it happened, and nothing of its message: a
/// message may quote the input that caused it (a path, a header), and the logs never
/// carry request data. Pingora survives a panicking request; the line makes it visible in
/// `error.log` instead of a backtrace on stderr per request.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
        tracing::error!(location = %location, "panic (its message is not logged: it may quote request data)");
    }));
}
