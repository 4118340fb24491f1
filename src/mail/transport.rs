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
use crate::config::{MailUrl, redact_url};

/// The seam between rendering a message and delivering it.
#[async_trait]
pub trait MailTransport: Send + Sync + fmt::Debug {
    /// Delivers one message (to the relay, or to a file).
    async fn send(&self, message: Message) -> Result<(), MailError>;

    /// Where messages go, fit for a log line: credentials are masked.
    fn describe(&self) -> String;
}

/// Builds the transport `url` names. The SMTP pool's housekeeping task is spawned on
/// `runtime`; the outbox directory is created when missing.
pub fn open(url: &MailUrl, runtime: &Handle) -> Result<Box<dyn MailTransport>, MailError> {
    match url {
        MailUrl::Smtp(url) => Ok(Box::new(SmtpTransport::open(url, runtime)?)),
        MailUrl::File(dir) => Ok(Box::new(FileTransport::open(dir)?)),
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
    fn errors_and_debug_never_show_the_password() {
        let url: MailUrl = "smtps://user:hunter2@mail.example.com".parse().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let transport = open(&url, runtime.handle()).unwrap();
        let shown = format!("{transport:?} {}", transport.describe());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("mail.example.com"), "{shown}");
        // Dropped here, outside the runtime's context: must not panic.
        drop(transport);
    }
}
