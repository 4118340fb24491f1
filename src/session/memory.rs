//! The in-process session store for a single instance (`sessions.url = "memory://"`).
//!
//! One mutex guards everything, so every multi-step change (cap eviction, rotation) is atomic
//! for free; no `.await` happens while it is held. Expired entries are ignored on read and
//! dropped by a periodic sweep, and both maps are bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::domain::UserId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;
use tokio::sync::broadcast;

use super::{
    CreatedSession, NewSession, Revocation, RotateOutcome, Session, SessionError, SessionId,
    SessionLiveness, SessionStore, add, hashes_acceptable, now_micros, truncate_micros,
};

/// Default bound on stored sessions; far above what one instance serves.
const DEFAULT_MAX_SESSIONS: usize = 1_000_000;
/// Default bound on live one-time claims.
const DEFAULT_MAX_CLAIMS: usize = 1_000_000;
/// How often the background sweep drops expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// How many superseded refresh hashes (besides `previous`) are kept to recognise reuse.
pub(super) const RETIRED_HASHES: usize = 16;
/// Revocation events buffered for slow receivers before they see `Lagged`.
pub(super) const REVOCATION_BUFFER: usize = 1024;

/// Sessions, claims and revocation events held in this process.
pub struct MemorySessionStore {
    inner: Arc<Mutex<Inner>>,
    revocations: broadcast::Sender<Revocation>,
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

struct Inner {
    sessions: HashMap<SessionId, Entry>,
    /// Each user's session ids, oldest first.
    by_user: HashMap<UserId, VecDeque<SessionId>>,
    /// One-time claims and when they lapse.
    claims: HashMap<String, Instant>,
    /// Stashed values (ceremony states) and when they lapse; they count against `max_claims`.
    stashes: HashMap<String, (String, Instant)>,
    max_sessions: usize,
    max_claims: usize,
}

struct Entry {
    session: Session,
    idle_ttl: Duration,
    /// Older refresh hashes, newest last; presenting one is reuse.
    retired: VecDeque<String>,
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySessionStore {
    /// A store with the default bounds; sweeps in the background when built inside a tokio
    /// runtime (through [`Backend::current`]: in the gateway, the backend runtime).
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_MAX_SESSIONS, DEFAULT_MAX_CLAIMS)
    }

    /// A store holding at most `max_sessions` sessions and `max_claims` one-time claims;
    /// beyond that (after dropping expired entries) writes answer `Unavailable`.
    pub fn with_capacity(max_sessions: usize, max_claims: usize) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            sessions: HashMap::new(),
            by_user: HashMap::new(),
            claims: HashMap::new(),
            stashes: HashMap::new(),
            max_sessions,
            max_claims,
        }));
        let (revocations, _) = broadcast::channel(REVOCATION_BUFFER);
        // The sweep only frees memory early; reads already ignore expired entries, so a
        // store built outside a runtime (or outliving it) stays correct.
        let sweeper = Backend::current()
            .map(|backend| backend.spawn(sweep_periodically(Arc::downgrade(&inner))));
        Self {
            inner,
            revocations,
            sweeper,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // breaks later calls (each call re-checks what it reads), so keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn announce(&self, event: Revocation) {
        // No receiver is fine: nobody caches.
        let _ = self.revocations.send(event);
    }
}

impl Drop for MemorySessionStore {
    fn drop(&mut self) {
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.abort();
        }
    }
}

async fn sweep_periodically(inner: Weak<Mutex<Inner>>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let mut guard = inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.sweep(Utc::now(), Instant::now());
    }
}

impl Inner {
    /// Drops expired sessions and claims.
    fn sweep(&mut self, now: DateTime<Utc>, instant: Instant) {
        self.sessions
            .retain(|_, entry| entry.session.expires_at > now);
        let sessions = &self.sessions;
        self.by_user.retain(|_, ids| {
            ids.retain(|id| sessions.contains_key(id));
            !ids.is_empty()
        });
        self.claims.retain(|_, until| *until > instant);
        self.stashes.retain(|_, (_, until)| *until > instant);
    }

    /// The live entry for `id`; an expired one is removed on the way.
    fn live(&mut self, id: &SessionId, now: DateTime<Utc>) -> Option<&mut Entry> {
        let expired = self.sessions.get(id)?.session.expires_at <= now;
        if expired {
            self.remove(id);
            return None;
        }
        self.sessions.get_mut(id)
    }

    /// Removes a session and its index entry; returns it when it was there.
    fn remove(&mut self, id: &SessionId) -> Option<Entry> {
        let entry = self.sessions.remove(id)?;
        let user_id = entry.session.user_id;
        if let Some(ids) = self.by_user.get_mut(&user_id) {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                self.by_user.remove(&user_id);
            }
        }
        Some(entry)
    }

    /// The user's live session ids, oldest first, dropping expired ones.
    fn live_ids(&mut self, user_id: UserId, now: DateTime<Utc>) -> Vec<SessionId> {
        let ids: Vec<SessionId> = self
            .by_user
            .get(&user_id)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        ids.into_iter()
            .filter(|id| self.live(id, now).is_some())
            .collect()
    }
}

fn hash_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn create(&self, new: NewSession) -> Result<CreatedSession, SessionError> {
        let now = now_micros();
        let user_id = new.user_id;
        let max_per_user = new.max_per_user;
        let idle_ttl = new.idle_ttl;
        let session = new.start(now);

        let mut inner = self.lock();
        if inner.live(&session.id, now).is_some() {
            return Err(SessionError::Duplicate);
        }
        let mut live = inner.live_ids(user_id, now);
        let keep = max_per_user.max(1) - 1;
        let mut evicted = Vec::new();
        while live.len() > keep {
            let oldest = live.remove(0);
            inner.remove(&oldest);
            evicted.push(oldest);
        }
        if inner.sessions.len() >= inner.max_sessions {
            inner.sweep(now, Instant::now());
            if inner.sessions.len() >= inner.max_sessions {
                return Err(SessionError::Unavailable(
                    "the in-memory session store is full".into(),
                ));
            }
        }
        inner.sessions.insert(
            session.id,
            Entry {
                session: session.clone(),
                idle_ttl,
                retired: VecDeque::new(),
            },
        );
        inner
            .by_user
            .entry(session.user_id)
            .or_default()
            .push_back(session.id);
        drop(inner);

        for id in &evicted {
            self.announce(Revocation::Session(*id));
        }
        Ok(CreatedSession { session, evicted })
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        let now = Utc::now();
        Ok(self.lock().live(id, now).map(|entry| entry.session.clone()))
    }

    async fn liveness(&self, id: &SessionId) -> Result<Option<SessionLiveness>, SessionError> {
        // Copies three fields instead of cloning the record and its four strings.
        let now = Utc::now();
        Ok(self.lock().live(id, now).map(|entry| SessionLiveness {
            user_id: entry.session.user_id,
            two_factor: entry.session.two_factor,
            last_seen_at: entry.session.last_seen_at,
        }))
    }

    async fn touch(&self, id: &SessionId, now: DateTime<Utc>) -> Result<bool, SessionError> {
        let now = truncate_micros(now);
        let mut inner = self.lock();
        // `now` is the caller's clock: judge liveness by it, but leave removal to real time.
        match inner.sessions.get_mut(id) {
            Some(entry) if entry.session.expires_at > now => {
                slide(entry, now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn rotate_refresh(
        &self,
        id: &SessionId,
        presented_hash: &str,
        new_hash: &str,
        grace: Duration,
    ) -> Result<RotateOutcome, SessionError> {
        if !hashes_acceptable(presented_hash, new_hash) {
            return Ok(RotateOutcome::NotFound);
        }
        let now = now_micros();
        let mut inner = self.lock();
        let Some(entry) = inner.live(id, now) else {
            return Ok(RotateOutcome::NotFound);
        };
        let refresh = &entry.session.refresh;

        if hash_eq(presented_hash, &refresh.current_hash) {
            let entry_refresh = &mut entry.session.refresh;
            let replaced = std::mem::replace(&mut entry_refresh.current_hash, new_hash.to_owned());
            if let Some(older) = entry_refresh.previous_hash.replace(replaced) {
                entry.retired.push_back(older);
                while entry.retired.len() > RETIRED_HASHES {
                    entry.retired.pop_front();
                }
            }
            entry_refresh.rotated_at = Some(now);
            entry_refresh.generation += 1;
            slide(entry, now);
            return Ok(RotateOutcome::Rotated(entry.session.clone()));
        }

        let is_previous = refresh
            .previous_hash
            .as_deref()
            .is_some_and(|previous| hash_eq(presented_hash, previous));
        let within_grace = refresh
            .rotated_at
            .is_some_and(|at| now.signed_duration_since(at) <= chrono_delta(grace));
        if is_previous && within_grace && hash_eq(new_hash, &refresh.current_hash) {
            return Ok(RotateOutcome::AlreadyRotated(entry.session.clone()));
        }

        // Check every retired hash so the time taken does not say which one matched.
        let was_retired = entry
            .retired
            .iter()
            .fold(false, |found, old| found | hash_eq(presented_hash, old));
        if !(is_previous || was_retired) {
            return Ok(RotateOutcome::NotFound);
        }
        let user_id = entry.session.user_id;
        inner.remove(id);
        drop(inner);
        self.announce(Revocation::Session(*id));
        Ok(RotateOutcome::Reused { user_id })
    }

    async fn prove_second_factor(
        &self,
        id: &SessionId,
        at: DateTime<Utc>,
    ) -> Result<bool, SessionError> {
        let mut inner = self.lock();
        let Some(entry) = inner.live(id, Utc::now()) else {
            return Ok(false);
        };
        entry.session.two_factor = true;
        entry.session.second_factor_at = Some(truncate_micros(at));
        entry.session.auth_time = truncate_micros(at);
        Ok(true)
    }

    async fn prove_identity(
        &self,
        id: &SessionId,
        at: DateTime<Utc>,
    ) -> Result<bool, SessionError> {
        let mut inner = self.lock();
        let Some(entry) = inner.live(id, Utc::now()) else {
            return Ok(false);
        };
        entry.session.auth_time = truncate_micros(at);
        Ok(true)
    }

    async fn revoke(&self, id: &SessionId) -> Result<bool, SessionError> {
        let removed = self.lock().remove(id).is_some();
        if removed {
            self.announce(Revocation::Session(*id));
        }
        Ok(removed)
    }

    async fn revoke_all(
        &self,
        user_id: UserId,
        except: Option<&SessionId>,
    ) -> Result<Vec<SessionId>, SessionError> {
        let now = Utc::now();
        let mut inner = self.lock();
        let ended: Vec<SessionId> = inner
            .live_ids(user_id, now)
            .into_iter()
            .filter(|id| Some(id) != except)
            .collect();
        for id in &ended {
            inner.remove(id);
        }
        drop(inner);
        announce_user(self, user_id, except, &ended);
        Ok(ended)
    }

    async fn list(&self, user_id: UserId) -> Result<Vec<Session>, SessionError> {
        let now = Utc::now();
        let mut inner = self.lock();
        let ids = inner.live_ids(user_id, now);
        let mut sessions: Vec<Session> = ids
            .iter()
            .rev()
            .filter_map(|id| inner.sessions.get(id).map(|entry| entry.session.clone()))
            .collect();
        // Newest first; the index order (creation order) breaks ties.
        sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(sessions)
    }

    async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, SessionError> {
        let instant = Instant::now();
        let until = instant.checked_add(ttl).unwrap_or(instant + super::MAX_TTL);
        let mut inner = self.lock();
        if inner.claims.get(key).is_some_and(|lapse| *lapse > instant) {
            return Ok(false);
        }
        if inner.claims.len() >= inner.max_claims && !inner.claims.contains_key(key) {
            inner.sweep(Utc::now(), instant);
            if inner.claims.len() >= inner.max_claims {
                // Refusing is safer than forgetting a claim: it guards against replays.
                return Err(SessionError::Unavailable(
                    "the in-memory claim store is full".into(),
                ));
            }
        }
        inner.claims.insert(key.to_owned(), until);
        Ok(true)
    }

    async fn stash(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SessionError> {
        let instant = Instant::now();
        let until = instant.checked_add(ttl).unwrap_or(instant + super::MAX_TTL);
        let mut inner = self.lock();
        if inner.stashes.len() >= inner.max_claims && !inner.stashes.contains_key(key) {
            inner.sweep(Utc::now(), instant);
            if inner.stashes.len() >= inner.max_claims {
                return Err(SessionError::Unavailable(
                    "the in-memory stash is full".into(),
                ));
            }
        }
        inner
            .stashes
            .insert(key.to_owned(), (value.to_owned(), until));
        Ok(())
    }

    async fn take_stash(&self, key: &str) -> Result<Option<String>, SessionError> {
        let instant = Instant::now();
        Ok(self
            .lock()
            .stashes
            .remove(key)
            .filter(|(_, until)| *until > instant)
            .map(|(value, _)| value))
    }

    async fn count_live(&self) -> Result<u64, SessionError> {
        // The map's size, not a walk through a million entries under the lock: an ended
        // session leaves it at once, an expired one at the next sweep (`SWEEP_EVERY`).
        let stored = self.lock().sessions.len();
        Ok(u64::try_from(stored).unwrap_or(u64::MAX))
    }

    async fn ping(&self) -> Result<(), SessionError> {
        Ok(())
    }

    fn revocations(&self) -> broadcast::Receiver<Revocation> {
        self.revocations.subscribe()
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

/// Announces the end of a user's sessions: one user-wide event when all ended,
/// otherwise one event per session so the kept one stays cached.
fn announce_user(
    store: &MemorySessionStore,
    user_id: UserId,
    except: Option<&SessionId>,
    ended: &[SessionId],
) {
    if ended.is_empty() {
        return;
    }
    match except {
        None => store.announce(Revocation::User(user_id)),
        Some(_) => {
            for id in ended {
                store.announce(Revocation::Session(*id));
            }
        }
    }
}

/// Moves `expires_at` to `now + idle` (capped at the absolute end; never backwards).
fn slide(entry: &mut Entry, now: DateTime<Utc>) {
    let session = &mut entry.session;
    let slid = add(now, entry.idle_ttl).min(session.absolute_expires_at);
    session.expires_at = session.expires_at.max(slid);
    session.last_seen_at = session.last_seen_at.max(now);
}

fn chrono_delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::microseconds(super::micros(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user_id: UserId, ttl: Duration) -> NewSession {
        NewSession {
            id: SessionId::generate(),
            user_id,
            ip: "192.0.2.1".into(),
            user_agent: "test".into(),
            two_factor: false,
            passkey: crate::session::PasskeyUse::None,
            provider: None,
            auth_time: None,
            remember_me: false,
            refresh_hash: "00".into(),
            idle_ttl: ttl,
            absolute_ttl: ttl,
            max_per_user: 5,
        }
    }

    #[tokio::test]
    async fn sweep_drops_expired_sessions_and_claims() {
        let store = MemorySessionStore::new();
        let user = UserId::random();
        let short = store
            .create(login(user, Duration::from_millis(1)))
            .await
            .unwrap();
        let long = store
            .create(login(user, Duration::from_secs(60)))
            .await
            .unwrap();
        store
            .claim_once("short", Duration::from_millis(1))
            .await
            .unwrap();
        store
            .claim_once("long", Duration::from_secs(60))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;

        let mut inner = store.lock();
        inner.sweep(Utc::now(), Instant::now());
        assert!(!inner.sessions.contains_key(&short.session.id));
        assert!(inner.sessions.contains_key(&long.session.id));
        assert_eq!(
            inner.by_user.get(&user).map(|ids| ids.len()),
            Some(1),
            "the index forgets swept sessions"
        );
        assert!(!inner.claims.contains_key("short"));
        assert!(inner.claims.contains_key("long"));
    }
}
