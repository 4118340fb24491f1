//! Tracing setup: stdout (pretty or JSON) plus JSON-lines files.
//!
//! `combined.log` gets everything at the configured level, `error.log` only errors, and
//! `security.log` only events with the [`SECURITY`] target, which the auth code writes for
//! logins, lockouts, revocations and spoofing attempts.
//!
//! Pingora's own debug and trace lines print whole requests (the request target with its
//! query string, which can carry tokens, and the headers), so they are dropped whatever
//! `logging.level` says: no log line may carry a secret.

use std::path::Path;

use tracing::Level;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LoggingConfig};

/// The tracing target of security events: `tracing::warn!(target: SECURITY, …)`.
pub const SECURITY: &str = "security";

/// Whether an event is one of Pingora's debug or trace lines (which print whole requests),
/// or one of webauthn-rs's own lines: it logs a client's malformed or refused answer at
/// ERROR, which would let anyone write to `error.log`; the refusal is security-logged by
/// the passkey endpoints instead.
fn is_request_dump(meta: &tracing::Metadata<'_>) -> bool {
    (meta.target().starts_with("pingora") && *meta.level() > Level::INFO)
        || meta.target().starts_with("webauthn_rs")
}

/// Keeps the background log writers alive; drop it last so buffered lines are flushed.
pub struct LogGuards(#[allow(dead_code)] Vec<WorkerGuard>);

/// Installs the global subscriber. Call once, from `main`.
pub fn init(config: &LoggingConfig) -> anyhow::Result<LogGuards> {
    let mut guards = Vec::new();
    let level = || EnvFilter::new(&config.level);

    let stdout = match config.format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_filter(level())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_filter(level())
            .boxed(),
    };

    let mut layers = vec![stdout];
    if !config.dir.is_empty() {
        let dir = Path::new(&config.dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))?;
        let mut file = |name: &str| {
            let appender = tracing_appender::rolling::never(dir, name);
            let (writer, guard) = tracing_appender::non_blocking(appender);
            guards.push(guard);
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_ansi(false)
                .with_writer(writer)
        };
        layers.push(file("combined.log").with_filter(level()).boxed());
        layers.push(file("error.log").with_filter(LevelFilter::ERROR).boxed());
        layers.push(
            file("security.log")
                .with_filter(Targets::new().with_target(SECURITY, Level::TRACE))
                .with_filter(filter_fn(|meta| meta.target() == SECURITY))
                .boxed(),
        );
    }
    tracing_subscriber::registry()
        .with(layers.with_filter(filter_fn(|meta| !is_request_dump(meta))))
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
