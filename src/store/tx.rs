//! [`Tx`], the store's one way to run a transaction: a pooled connection goes back to the
//! pool only in a state the store knows, and an answer is "done" only after `COMMIT`
//! returned Ok.
//!
//! Why not sqlx's `Pool::begin`: its `Transaction` rolls back on drop and hands the
//! connection back to the pool whatever that rollback did. After some failures the
//! database has already ended the transaction itself (SQLite, on `SQLITE_FULL` or
//! `SQLITE_IOERR` at `COMMIT`, or a trigger's `RAISE(ROLLBACK)`); the drop-time `ROLLBACK`
//! then fails, and the connection's count of open transactions stays at one while the
//! database has none. The next transaction on that connection starts as a `SAVEPOINT`
//! (which opens a real transaction), a failure in it is undone by `ROLLBACK TO` (which
//! keeps that transaction open, with its write lock), and every later "commit" on the
//! connection only releases a savepoint inside it: answered as done, never written, and
//! every other connection meets "database is locked".

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, Pool};

use super::StoreError;

/// A transaction on a pooled connection of its own.
///
/// It ends by [`commit`](Self::commit) or [`rollback`](Self::rollback); when either
/// returns Ok the connection goes back to the pool. In every other case (an error in a
/// statement, at `BEGIN`, `COMMIT` or `ROLLBACK`, or the call dropped half-way) the
/// connection is closed instead, which ends whatever the database still holds for it
/// (the transaction, its locks), and the pool opens a fresh one when it needs one.
///
/// Statements run on `&mut *tx` (it dereferences to the driver's connection).
pub(super) struct Tx<DB: Database> {
    conn: PoolConnection<DB>,
    /// True until `COMMIT` or `ROLLBACK` returned Ok.
    open: bool,
}

impl<DB: Database> Tx<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Takes a connection from `pool` and starts a transaction on it (`BEGIN`: deferred on
    /// SQLite, so the first statement should write; READ COMMITTED on PostgreSQL).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no connection comes or `BEGIN` fails.
    pub(super) async fn begin(pool: &Pool<DB>) -> Result<Self, StoreError> {
        let conn = pool.acquire().await?;
        let mut tx = Self { conn, open: true };
        sqlx::raw_sql("BEGIN")
            .execute(&mut *tx.conn)
            .await
            .map_err(|e| unfinished("begin", e))?;
        Ok(tx)
    }

    /// Commits; Ok only when the database answered `COMMIT` with success.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for any failure at `COMMIT` (the statements were
    /// accepted; the database could not keep them), with nothing written.
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::raw_sql("COMMIT")
            .execute(&mut *self.conn)
            .await
            .map_err(|e| unfinished("commit", e))?;
        self.open = false;
        Ok(())
    }

    /// Rolls back (for an early answer that writes nothing), keeping the connection.
    ///
    /// # Errors
    /// The driver's error, mapped as any other; the connection is then closed.
    pub(super) async fn rollback(mut self) -> Result<(), StoreError> {
        sqlx::raw_sql("ROLLBACK").execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }
}

/// A `BEGIN` or `COMMIT` that failed: the request was fine, the database could not take it.
/// (sqlx errors name the failure, never bound values.)
fn unfinished(step: &str, e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("the database could not {step} a transaction: {e}"))
}

impl<DB: Database> Drop for Tx<DB> {
    fn drop(&mut self) {
        if self.open {
            // The state of the connection is not known: close it rather than pool it.
            self.conn.close_on_drop();
        }
    }
}

impl<DB: Database> Deref for Tx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: Database> DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}
