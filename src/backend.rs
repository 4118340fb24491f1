//! The runtime that owns the backends' sockets, and the one way to run work on it.
//!
//! A tokio socket belongs to the runtime that created it, and a connection pool opens new
//! sockets on whichever runtime happens to ask. The gateway is called from Pingora's
//! runtimes, which are not the one that opened the database, Redis and SMTP pools; if a
//! connection were opened there and that runtime later stopped, the pool would keep a dead
//! socket. So every call that may touch a socket is spawned onto the owning runtime with
//! [`Backend::run`] (or [`Backend::run_within`]) and awaited from wherever it came from.
//!
//! A side benefit: a caller that gives up half-way (a client disconnecting) does not cancel
//! the backend work in the middle, so a statement is either sent and finished or never sent.
//!
//! Invariant: this is the only module that spawns onto the backend runtime; the stores, the
//! Redis session store, the Redis limiter and the mailer each hold a [`Backend`] and map
//! [`BackendError`] to their own error once. The long-lived tasks go through
//! [`Backend::spawn`] too: the token purger, the gatekeeper's revocation listener and
//! change-feed follower, the in-memory session sweeper, the Redis revocation relay, the
//! limiter's outage probe and mail deliveries. Clients that spawn their own housekeeping
//! (lettre's SMTP pool) are built inside [`Backend::handle`]. Work that is not the
//! backend's runs on the caller's runtime and says so where it is spawned: bcrypt and the
//! health check's directory probe use that runtime's blocking pool.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// Why work sent to the backend runtime gave no result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The runtime has shut down (the instance is stopping).
    #[error("the backend runtime has shut down")]
    Gone,
    /// No result within the given bound.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// The task panicked: a bug.
    #[error("a backend task panicked")]
    Panicked,
}

/// A handle on the runtime that owns the backends' sockets.
#[derive(Clone, Debug)]
pub struct Backend {
    handle: Handle,
}

impl Backend {
    /// The runtime the caller runs on, which becomes the owner; `None` outside a runtime.
    pub fn current() -> Option<Self> {
        Handle::try_current().ok().map(|handle| Self { handle })
    }

    /// Runs `work` on the owning runtime and waits for it.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, BackendError> {
        self.handle.spawn(work).await.map_err(join_error)
    }

    /// Runs `work` on the owning runtime, bounded by `limit` there; waits at most twice
    /// `limit` here, which only matters when the owning runtime is too busy to run it.
    pub async fn run_within<T: Send + 'static>(
        &self,
        limit: Duration,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, BackendError> {
        let task = self
            .handle
            .spawn(async move { tokio::time::timeout(limit, work).await });
        match tokio::time::timeout(limit * 2, task).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(_))) | Err(_) => Err(BackendError::TimedOut(limit)),
            Ok(Err(join)) => Err(join_error(join)),
        }
    }

    /// Starts `work` on the owning runtime without waiting (deliveries, subscribers,
    /// probes).
    pub fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        self.handle.spawn(work)
    }

    /// The runtime's handle, for clients that open their sockets themselves.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

fn join_error(e: tokio::task::JoinError) -> BackendError {
    if e.is_cancelled() {
        BackendError::Gone
    } else {
        BackendError::Panicked
    }
}

/// The long-lived runtime the backends are opened on: one worker thread, started with the
/// instance and shut down (without blocking) when it is dropped.
pub struct BackendRuntime(Option<Runtime>);

impl BackendRuntime {
    /// Starts the runtime.
    pub fn start() -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portcullis-backend")
            .enable_all()
            .build()
            .map(|runtime| Self(Some(runtime)))
    }

    /// Runs the future `work` makes to completion on this runtime, from a plain thread
    /// (`block_on` cannot run inside another runtime, as in tests or when embedded).
    pub fn block_on<T: Send, F: Future<Output = T>>(
        &self,
        work: impl FnOnce() -> F + Send,
    ) -> Result<T, BackendError> {
        let runtime = self.runtime();
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(work()))
                .join()
                .map_err(|_| BackendError::Panicked)
        })
    }

    /// Enters the runtime, so `tokio::spawn` and [`Backend::current`] land on it.
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.runtime().enter()
    }

    fn runtime(&self) -> &Runtime {
        // Only `drop` takes the runtime out.
        self.0.as_ref().expect("the backend runtime is running")
    }
}

impl Drop for BackendRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; this form never blocks.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_the_owning_runtime_and_errors_are_mapped() {
        let owner = BackendRuntime::start().expect("runtime");
        let backend = owner
            .block_on(|| async { Backend::current().expect("inside") })
            .expect("no panic");
        let caller = tokio::runtime::Runtime::new().expect("caller runtime");
        caller.block_on(async {
            let name = backend
                .run(async { std::thread::current().name().map(str::to_owned) })
                .await
                .expect("ran");
            assert_eq!(name.as_deref(), Some("portcullis-backend"));
            let slow = backend
                .run_within(
                    Duration::from_millis(10),
                    tokio::time::sleep(Duration::from_secs(5)),
                )
                .await;
            assert_eq!(slow, Err(BackendError::TimedOut(Duration::from_millis(10))));
        });
        drop(owner);
        caller.block_on(async {
            assert_eq!(backend.run(async { 1 }).await, Err(BackendError::Gone));
        });
    }
}
