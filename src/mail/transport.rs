//! Where rendered messages go: an SMTP relay or a directory of `.eml` files, chosen by
//! `mail.url`.
//!
//! lettre's SMTP transport keeps a connection pool whose housekeeping task is spawned on the
//! runtime that builds it, and its sockets belong to the runtime that opens them. So both
//! transports are built and driven on one long-lived runtime (see [`super::Mailer`]), and the
//! SMTP transport is dropped inside that runtime's context.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::runtime::Handle;

use super::MailError;
use crate::config::redact_url;

/// The seam between rendering a message and delivering it.
#[async_trait]
pub trait MailTransport: Send + Sync + fmt::Debug {
    /// Delivers one message (to the relay, or to a file).
    async fn send(&self, message: Message) -> Result<(), MailError>;

    /// Where messages go, fit for a log line: credentials are masked.
    fn describe(&self) -> String;
}

/// What `mail.url` asks for, parsed but not yet connected.
#[derive(Clone, PartialEq, Eq)]
pub enum TransportSpec {
    /// `smtp://…` or `smtps://…`, in lettre's URL conventions.
    Smtp(String),
    /// `file://DIR`: one `.eml` file per message in DIR.
    File(PathBuf),
}

impl fmt::Debug for TransportSpec {
    // The SMTP URL may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Smtp(url) => write!(f, "Smtp({})", redact_url(url)),
            Self::File(dir) => write!(f, "File({})", dir.display()),
        }
    }
}

impl TransportSpec {
    /// Parses `mail.url` without touching the network or the file system.
    pub fn parse(url: &str) -> Result<Self, MailError> {
        let invalid = |reason: &str| MailError::InvalidUrl {
            url: redact_url(url),
            reason: reason.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("file://") {
            // `file://data/outbox` is relative to the working directory and `file:///var/mail`
            // absolute, which is what an operator writing a path expects (and not what a strict
            // URL parser would make of the first: a host named `data`).
            let path = rest.split(['?', '#']).next().unwrap_or_default();
            if path.is_empty() {
                return Err(invalid("names no directory (write file://DIR)"));
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        if url.starts_with("smtp://") || url.starts_with("smtps://") {
            let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(invalid("names no host"));
            }
            // Fail at start on what lettre would only reject when building the transport.
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map_err(|e| invalid(&e.to_string()))?;
            return Ok(Self::Smtp(url.to_owned()));
        }
        Err(invalid("is not smtp://, smtps:// or file://DIR"))
    }

    /// Builds the transport. The SMTP pool's housekeeping task is spawned on `runtime`; the
    /// outbox directory is created when missing.
    pub fn open(&self, runtime: &Handle) -> Result<Box<dyn MailTransport>, MailError> {
        match self {
            Self::Smtp(url) => Ok(Box::new(SmtpTransport::open(url, runtime)?)),
            Self::File(dir) => Ok(Box::new(FileTransport::open(dir)?)),
        }
    }
}

/// Delivers through an SMTP relay (plain, STARTTLS or implicit TLS, as the URL says).
pub struct SmtpTransport {
    // An `Option` only so that `Drop` can move it out and drop it inside the runtime.
    inner: Option<AsyncSmtpTransport<Tokio1Executor>>,
    runtime: Handle,
    redacted_url: String,
}

impl SmtpTransport {
    /// Builds the pooled transport on `runtime`; connections are opened on first use.
    pub fn open(url: &str, runtime: &Handle) -> Result<Self, MailError> {
        let redacted_url = redact_url(url);
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|e| {
            MailError::InvalidUrl {
                url: redacted_url.clone(),
                reason: e.to_string(),
            }
        })?;
        // The pool spawns its cleanup task with `tokio::spawn`, which needs a runtime context.
        let inner = {
            let _entered = runtime.enter();
            builder.build::<Tokio1Executor>()
        };
        Ok(Self {
            inner: Some(inner),
            runtime: runtime.clone(),
            redacted_url,
        })
    }
}

impl Drop for SmtpTransport {
    fn drop(&mut self) {
        // Dropping the pool spawns its shutdown; without a runtime context that would panic
        // when the last owner is dropped on a plain thread.
        if let Some(inner) = self.inner.take() {
            let _entered = self.runtime.enter();
            drop(inner);
        }
    }
}

impl fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("url", &self.redacted_url)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MailTransport for SmtpTransport {
    async fn send(&self, message: Message) -> Result<(), MailError> {
        let Some(inner) = &self.inner else {
            return Err(MailError::Delivery(
                "the SMTP transport was shut down".into(),
            ));
        };
        inner
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Delivery(format!("SMTP via {}: {e}", self.redacted_url)))
    }

    fn describe(&self) -> String {
        self.redacted_url.clone()
    }
}

/// Writes each message as `<uuid>.eml` into a directory: the zero-setup outbox.
pub struct FileTransport {
    inner: AsyncFileTransport<Tokio1Executor>,
    dir: PathBuf,
}

impl FileTransport {
    /// Creates `dir` (and its parents) when missing.
    pub fn open(dir: &Path) -> Result<Self, MailError> {
        std::fs::create_dir_all(dir).map_err(|source| MailError::Outbox {
            dir: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            inner: AsyncFileTransport::new(dir),
            dir: dir.to_path_buf(),
        })
    }
}

impl fmt::Debug for FileTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileTransport")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MailTransport for FileTransport {
    async fn send(&self, message: Message) -> Result<(), MailError> {
        self.inner
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Delivery(format!("writing to {}: {e}", self.dir.display())))
    }

    fn describe(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_paths_relative_to_the_working_directory() {
        assert_eq!(
            TransportSpec::parse("file://data/outbox").unwrap(),
            TransportSpec::File(PathBuf::from("data/outbox"))
        );
        assert_eq!(
            TransportSpec::parse("file:///var/spool/portcullis").unwrap(),
            TransportSpec::File(PathBuf::from("/var/spool/portcullis"))
        );
        assert!(TransportSpec::parse("file://").is_err());
    }

    #[test]
    fn smtp_urls_follow_lettre_conventions() {
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://mail.example.com:587?tls=required",
            "smtp://mail.example.com?tls=opportunistic",
            "smtps://user:secret@mail.example.com",
            "smtps://user:secret@mail.example.com:2465",
        ] {
            assert!(
                matches!(TransportSpec::parse(url), Ok(TransportSpec::Smtp(_))),
                "{url}"
            );
        }
        assert!(TransportSpec::parse("smtp://host?tls=sometimes").is_err());
        assert!(TransportSpec::parse("smtp://").is_err());
        assert!(TransportSpec::parse("imap://host").is_err());
    }

    #[test]
    fn errors_and_debug_never_show_the_password() {
        let err = TransportSpec::parse("smtp://user:hunter2@host?tls=bogus").unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");

        let spec = TransportSpec::parse("smtps://user:hunter2@mail.example.com").unwrap();
        assert!(!format!("{spec:?}").contains("hunter2"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let transport = spec.open(runtime.handle()).unwrap();
        let shown = format!("{transport:?} {}", transport.describe());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("mail.example.com"), "{shown}");
        // Dropped here, outside the runtime's context: must not panic.
        drop(transport);
    }
}
