//! The Redis session store, shared by every gateway instance (`sessions.url = "redis://…"`).
//!
//! Keys (all under `sessions.key_prefix`, all with a TTL so nothing outlives its use):
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `{prefix}session:{id}` | hash | one session | until `expires_at` (slides) |
//! | `{prefix}user:{uuid}` | sorted set | the user's session ids, scored by creation | the longest absolute expiry of its members |
//! | `{prefix}live` | sorted set | every session id, scored by its `expires_at`: what [`SessionStore::count_live`] counts | the longest absolute expiry of its members |
//! | `{prefix}claim:{key}` | string | a one-time claim | the claim's ttl |
//!
//! Revocations are published on `{prefix}revocations` as `session:{id}` or `user:{uuid}`.
//! Every change touching more than one key runs as one Lua script, so concurrent logins on
//! several instances cannot exceed the per-user cap and a refresh token rotates exactly once.
//!
//! Connections belong to the runtime that called [`RedisSessionStore::connect`]: every call
//! runs there (spawned), so callers on other runtimes never create sockets on their own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisResult, Script};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::domain::UserId;

use super::memory::{RETIRED_HASHES, REVOCATION_BUFFER};
use super::{
    CreatedSession, NewSession, RefreshState, Revocation, RotateOutcome, Session, SessionError,
    SessionId, SessionLiveness, SessionStore, hashes_acceptable, micros, now_micros,
    truncate_micros,
};
use crate::backend::{Backend, BackendError};

/// The longest any one Redis call may take before the caller gets `Unavailable`.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
/// Time allowed to open a TCP (and TLS) connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How often the revocation subscriber checks that its connection still answers.
const SUBSCRIBER_PING_EVERY: Duration = Duration::from_secs(5);
/// Backoff bounds for re-establishing the revocation subscription.
const SUBSCRIBER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const SUBSCRIBER_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Sessions in Redis, shared by every instance that uses the same URL and key prefix.
pub struct RedisSessionStore {
    shared: Arc<Shared>,
    subscriber: tokio::task::JoinHandle<()>,
}

struct Shared {
    conn: ConnectionManager,
    /// The runtime that owns `conn`'s sockets; every call runs there.
    backend: Backend,
    prefix: String,
    channel: String,
    revocations: broadcast::Sender<Revocation>,
    scripts: Scripts,
}

struct Scripts {
    create: Script,
    touch: Script,
    prove: Script,
    rotate: Script,
    revoke: Script,
    revoke_all: Script,
    list: Script,
}

impl RedisSessionStore {
    /// Prepares the store without contacting Redis (it may be down at start); the first call
    /// connects, and a lost connection is re-established by itself.
    ///
    /// Must run inside the long-lived runtime that will own the connections.
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, SessionError> {
        if url.starts_with("rediss://") {
            // Both rustls backends may be compiled in (through other crates); pick one for
            // the process so building a TLS config cannot panic. Failing means one was set.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        // The error text can echo the URL, which may hold a password: keep it out.
        let client = Client::open(url).map_err(|_| {
            SessionError::InvalidConfig("sessions.url is not a valid Redis URL".into())
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            // Fail fast while Redis is down (callers answer 503); the next call reconnects.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| SessionError::InvalidConfig(format!("Redis client: {:?}", e.kind())))?;

        let backend = Backend::current().ok_or_else(|| {
            SessionError::InvalidConfig(
                "the session store must be opened inside a tokio runtime".into(),
            )
        })?;
        let channel = format!("{key_prefix}revocations");
        let (revocations, _) = broadcast::channel(REVOCATION_BUFFER);
        let subscriber = backend.spawn(relay_revocations(
            client,
            channel.clone(),
            revocations.clone(),
        ));
        Ok(Self {
            shared: Arc::new(Shared {
                conn,
                backend,
                prefix: key_prefix.to_owned(),
                channel,
                revocations,
                scripts: Scripts::new(),
            }),
            subscriber,
        })
    }

    /// Runs one Redis operation on the owning runtime, bounded by [`CALL_TIMEOUT`].
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, SessionError>
    where
        F: FnOnce(Arc<Shared>, ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, SessionError>> + Send + 'static,
        T: Send + 'static,
    {
        let shared = self.shared.clone();
        let conn = shared.conn.clone();
        let work = op(shared, conn);
        match self.shared.backend.run_within(CALL_TIMEOUT, work).await {
            Ok(result) => result,
            Err(BackendError::TimedOut(_)) => Err(SessionError::Unavailable(
                "Redis did not answer in time".into(),
            )),
            Err(BackendError::Gone) => Err(SessionError::Unavailable(
                "the runtime owning the Redis connection has shut down".into(),
            )),
            Err(BackendError::Panicked) => Err(SessionError::Unavailable(
                "a Redis call failed unexpectedly".into(),
            )),
        }
    }

    fn session_key(&self, id: &SessionId) -> String {
        session_key(&self.shared.prefix, id)
    }

    fn user_key(&self, user_id: UserId) -> String {
        format!("{}user:{}", self.shared.prefix, user_id)
    }

    /// The index of every session by its expiry, which [`SessionStore::count_live`] reads.
    fn live_key(&self) -> String {
        format!("{}live", self.shared.prefix)
    }
}

impl Drop for RedisSessionStore {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

fn session_key(prefix: &str, id: &SessionId) -> String {
    format!("{prefix}session:{id}")
}

/// Maps a Redis error to the caller's view: the store is unavailable.
fn unavailable(e: ::redis::RedisError) -> SessionError {
    // Redis error texts do not carry credentials; the kind plus detail helps operators.
    SessionError::Unavailable(format!("Redis: {e}"))
}

impl RedisSessionStore {
    /// Records a proof of identity at `at` in the live session `id`: `auth_time`, and with
    /// `second_factor` the second factor's time and flag too (`LUA_PROVE`).
    async fn prove(
        &self,
        id: &SessionId,
        at: DateTime<Utc>,
        second_factor: bool,
    ) -> Result<bool, SessionError> {
        let key = self.session_key(id);
        let at = truncate_micros(at).timestamp_micros();
        let proven: i64 = self
            .run(move |shared, mut conn| async move {
                shared
                    .scripts
                    .prove
                    .key(key)
                    .arg(at)
                    .arg(wall_micros())
                    .arg(flag(second_factor))
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        Ok(proven == 1)
    }
}

fn wall_micros() -> i64 {
    Utc::now().timestamp_micros()
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, new: NewSession) -> Result<CreatedSession, SessionError> {
        let now = now_micros();
        let max_per_user = new.max_per_user.max(1);
        let user_key = self.user_key(new.user_id);
        let session_key = self.session_key(&new.id);
        let idle = micros(new.idle_ttl);
        let session = new.start(now);
        let record = session.clone();
        let reply: Vec<String> = self
            .run(move |shared, mut conn| async move {
                shared
                    .scripts
                    .create
                    .key(user_key)
                    .key(session_key)
                    .arg(&shared.prefix)
                    .arg(record.id.to_string())
                    .arg(record.created_at.timestamp_micros())
                    .arg(max_per_user)
                    .arg(&shared.channel)
                    .arg(record.user_id.to_string())
                    .arg(record.expires_at.timestamp_micros())
                    .arg(record.absolute_expires_at.timestamp_micros())
                    .arg(idle)
                    .arg(&record.ip)
                    .arg(&record.user_agent)
                    .arg(flag(record.two_factor))
                    .arg(flag(record.remember_me))
                    .arg(&record.refresh.current_hash)
                    .arg(record.passkey.as_str())
                    .arg(record.provider.as_deref().unwrap_or(""))
                    .arg(
                        record
                            .second_factor_at
                            .map_or(String::new(), |at| at.timestamp_micros().to_string()),
                    )
                    .arg(record.auth_time.timestamp_micros())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        let mut reply = reply.into_iter();
        match reply.next().as_deref() {
            Some("ok") => {}
            Some("duplicate") => return Err(SessionError::Duplicate),
            _ => return Err(SessionError::Corrupt("unexpected reply to create".into())),
        }
        let evicted = reply
            .map(|id| id.parse().map_err(|_| corrupt_id(&id)))
            .collect::<Result<Vec<SessionId>, _>>()?;
        Ok(CreatedSession { session, evicted })
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        let key = self.session_key(id);
        let fields: HashMap<String, String> = self
            .run(move |_, mut conn| async move {
                ::redis::cmd("HGETALL")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let session = parse_session(*id, &fields)?;
        Ok((session.expires_at > Utc::now()).then_some(session))
    }

    async fn liveness(&self, id: &SessionId) -> Result<Option<SessionLiveness>, SessionError> {
        // Four fields with HMGET instead of every field of HGETALL and a map of them.
        let key = self.session_key(id);
        let fields: Vec<Option<String>> = self
            .run(move |_, mut conn| async move {
                ::redis::cmd("HMGET")
                    .arg(key)
                    .arg("uid")
                    .arg("tfa")
                    .arg("seen")
                    .arg("exp")
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        let [uid, tfa, seen, exp] = <[Option<String>; 4]>::try_from(fields).map_err(|_| {
            SessionError::Corrupt("HMGET answered the wrong number of fields".into())
        })?;
        let Some(uid) = uid else {
            return Ok(None);
        };
        let expires_at = time_field("exp", exp.as_deref())?;
        if expires_at <= Utc::now() {
            return Ok(None);
        }
        Ok(Some(SessionLiveness {
            user_id: parse_user_id(&uid)
                .ok_or_else(|| SessionError::Corrupt("session field uid is not a uuid".into()))?,
            two_factor: tfa.as_deref() == Some("1"),
            last_seen_at: time_field("seen", seen.as_deref())?,
        }))
    }

    async fn touch(&self, id: &SessionId, now: DateTime<Utc>) -> Result<bool, SessionError> {
        let key = self.session_key(id);
        let live = self.live_key();
        let id_text = id.to_string();
        let now = truncate_micros(now).timestamp_micros();
        let touched: i64 = self
            .run(move |shared, mut conn| async move {
                shared
                    .scripts
                    .touch
                    .key(key)
                    .key(live)
                    .arg(now)
                    .arg(wall_micros())
                    .arg(id_text)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        Ok(touched == 1)
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
        let key = self.session_key(id);
        let id_text = id.to_string();
        let presented = presented_hash.to_owned();
        let new = new_hash.to_owned();
        let grace = micros(grace);
        let reply: Vec<String> = self
            .run(move |shared, mut conn| async move {
                shared
                    .scripts
                    .rotate
                    .key(key)
                    .arg(&shared.prefix)
                    .arg(id_text)
                    .arg(&shared.channel)
                    .arg(presented)
                    .arg(new)
                    .arg(grace)
                    .arg(now_micros().timestamp_micros())
                    .arg(RETIRED_HASHES)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        let (tag, rest) = reply
            .split_first()
            .ok_or_else(|| SessionError::Corrupt("empty reply to rotate".into()))?;
        match tag.as_str() {
            "rotated" => Ok(RotateOutcome::Rotated(parse_session(*id, &pairs(rest))?)),
            "again" => Ok(RotateOutcome::AlreadyRotated(parse_session(
                *id,
                &pairs(rest),
            )?)),
            "reused" => {
                let user_id = rest
                    .first()
                    .and_then(|text| parse_user_id(text))
                    .ok_or_else(|| SessionError::Corrupt("reused without a user id".into()))?;
                Ok(RotateOutcome::Reused { user_id })
            }
            "none" => Ok(RotateOutcome::NotFound),
            _ => Err(SessionError::Corrupt("unexpected reply to rotate".into())),
        }
    }

    async fn prove_second_factor(
        &self,
        id: &SessionId,
        at: DateTime<Utc>,
    ) -> Result<bool, SessionError> {
        self.prove(id, at, true).await
    }

    async fn prove_identity(
        &self,
        id: &SessionId,
        at: DateTime<Utc>,
    ) -> Result<bool, SessionError> {
        self.prove(id, at, false).await
    }

    async fn revoke(&self, id: &SessionId) -> Result<bool, SessionError> {
        let key = self.session_key(id);
        let id_text = id.to_string();
        let removed: i64 = self
            .run(move |shared, mut conn| async move {
                shared
                    .scripts
                    .revoke
                    .key(key)
                    .arg(&shared.prefix)
                    .arg(id_text)
                    .arg(&shared.channel)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        Ok(removed == 1)
    }

    async fn revoke_all(
        &self,
        user_id: UserId,
        except: Option<&SessionId>,
    ) -> Result<Vec<SessionId>, SessionError> {
        let key = self.user_key(user_id);
        let except = except.map(SessionId::to_string).unwrap_or_default();
        let ended: Vec<String> = self
            .run(move |shared, mut conn| async move {
                shared
                    .scripts
                    .revoke_all
                    .key(key)
                    .arg(&shared.prefix)
                    .arg(except)
                    .arg(&shared.channel)
                    .arg(user_id.to_string())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        ended
            .into_iter()
            .map(|id| id.parse().map_err(|_| corrupt_id(&id)))
            .collect()
    }

    async fn list(&self, user_id: UserId) -> Result<Vec<Session>, SessionError> {
        let key = self.user_key(user_id);
        let records: Vec<Vec<String>> = self
            .run(move |shared, mut conn| async move {
                shared
                    .scripts
                    .list
                    .key(key)
                    .arg(&shared.prefix)
                    .arg(wall_micros())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        let mut sessions = records
            .iter()
            .map(|record| {
                let (id, fields) = record
                    .split_first()
                    .ok_or_else(|| SessionError::Corrupt("empty session in list".into()))?;
                let id = id.parse().map_err(|_| corrupt_id(id))?;
                parse_session(id, &pairs(fields))
            })
            .collect::<Result<Vec<Session>, _>>()?;
        // The script returns newest first by index order; a stable sort keeps that for ties.
        sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(sessions)
    }

    async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, SessionError> {
        let key = format!("{}claim:{key}", self.shared.prefix);
        let ttl_ms = i64::try_from(ttl.min(super::MAX_TTL).as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let reply: Option<String> = self
            .run(move |_, mut conn| async move {
                ::redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        Ok(reply.is_some())
    }

    async fn stash(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SessionError> {
        let key = format!("{}stash:{key}", self.shared.prefix);
        let value = value.to_owned();
        let ttl_ms = i64::try_from(ttl.min(super::MAX_TTL).as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        self.run(move |_, mut conn| async move {
            ::redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)
        })
        .await
    }

    async fn take_stash(&self, key: &str) -> Result<Option<String>, SessionError> {
        let key = format!("{}stash:{key}", self.shared.prefix);
        // GET and DEL in one transaction: of two instances racing, one gets the value.
        let (value, _): (Option<String>, i64) = self
            .run(move |_, mut conn| async move {
                ::redis::pipe()
                    .atomic()
                    .get(&key)
                    .del(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        Ok(value)
    }

    async fn count_live(&self) -> Result<u64, SessionError> {
        // Drops the ids whose sessions expired (their hashes are gone by TTL, and nothing
        // else would take them out of the index), then counts the rest: O(log n) each.
        let key = self.live_key();
        let (_, live): (i64, u64) = self
            .run(move |_, mut conn| async move {
                ::redis::pipe()
                    .atomic()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(wall_micros())
                    .cmd("ZCARD")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        Ok(live)
    }

    async fn ping(&self) -> Result<(), SessionError> {
        let _: String = self
            .run(|_, mut conn| async move {
                ::redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        Ok(())
    }

    fn revocations(&self) -> broadcast::Receiver<Revocation> {
        self.shared.revocations.subscribe()
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

fn flag(value: bool) -> &'static str {
    if value { "1" } else { "0" }
}

fn corrupt_id(text: &str) -> SessionError {
    SessionError::Corrupt(format!("stored session id {text:?} is malformed"))
}

/// A flat `[field, value, field, value, …]` reply as a map.
fn pairs(flat: &[String]) -> HashMap<String, String> {
    flat.chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect()
}

/// Reads a session hash back into a [`Session`].
/// A stored integer field of a session record.
fn number_field(name: &str, value: &str) -> Result<i64, SessionError> {
    value
        .parse()
        .map_err(|_| SessionError::Corrupt(format!("session field {name} is not a number")))
}

/// A stored time field of a session record (microseconds since the epoch).
fn time_field(name: &str, value: Option<&str>) -> Result<DateTime<Utc>, SessionError> {
    let value =
        value.ok_or_else(|| SessionError::Corrupt(format!("session field {name} is missing")))?;
    DateTime::from_timestamp_micros(number_field(name, value)?)
        .ok_or_else(|| SessionError::Corrupt(format!("session field {name} is out of range")))
}

fn parse_session(id: SessionId, fields: &HashMap<String, String>) -> Result<Session, SessionError> {
    let text = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| SessionError::Corrupt(format!("session field {name} is missing")))
    };
    let number = |name: &str| -> Result<i64, SessionError> { number_field(name, text(name)?) };
    let time = |name: &str| time_field(name, fields.get(name).map(String::as_str));
    let optional = |name: &str| fields.get(name).filter(|value| !value.is_empty());
    let user_id = parse_user_id(text("uid")?)
        .ok_or_else(|| SessionError::Corrupt("session field uid is not a uuid".into()))?;
    let rotated_at = match optional("rot") {
        Some(_) => Some(time("rot")?),
        None => None,
    };
    Ok(Session {
        id,
        user_id,
        created_at: time("created")?,
        last_seen_at: time("seen")?,
        expires_at: time("exp")?,
        absolute_expires_at: time("abs")?,
        ip: text("ip")?.clone(),
        user_agent: text("ua")?.clone(),
        two_factor: text("tfa")? == "1",
        second_factor_at: match optional("sfa") {
            Some(_) => Some(time("sfa")?),
            None => None,
        },
        // A record written before `at` existed: proven when it was created.
        auth_time: match optional("at") {
            Some(_) => time("at")?,
            None => time("created")?,
        },
        passkey: super::PasskeyUse::from_stored(optional("pk").map_or("", String::as_str)),
        provider: optional("idp").cloned(),
        remember_me: text("rem")? == "1",
        refresh: RefreshState {
            current_hash: text("cur")?.clone(),
            previous_hash: optional("prev").cloned(),
            rotated_at,
            generation: u64::try_from(number("gen")?)
                .map_err(|_| SessionError::Corrupt("session field gen is negative".into()))?,
        },
    })
}

/// Re-broadcasts what any instance published on the revocation channel, reconnecting with
/// backoff for as long as the store lives.
async fn relay_revocations(
    client: Client,
    channel: String,
    revocations: broadcast::Sender<Revocation>,
) {
    let mut backoff = SUBSCRIBER_BACKOFF_MIN;
    let mut ever_failed = false;
    loop {
        match subscribe(&client, &channel).await {
            Ok(pubsub) => {
                if ever_failed {
                    // Whatever was published while we were away is lost.
                    let _ = revocations.send(Revocation::All);
                }
                backoff = SUBSCRIBER_BACKOFF_MIN;
                listen(pubsub, &revocations).await;
                tracing::warn!(
                    target: "portcullis::session",
                    "revocation subscription lost; reconnecting"
                );
            }
            Err(e) => {
                tracing::warn!(
                    target: "portcullis::session",
                    error = %e,
                    "cannot subscribe to session revocations; retrying"
                );
            }
        }
        ever_failed = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(SUBSCRIBER_BACKOFF_MAX);
    }
}

async fn subscribe(client: &Client, channel: &str) -> Result<::redis::aio::PubSub, String> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        RedisResult::Ok(pubsub)
    };
    match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Forwards messages until the connection ends or stops answering pings.
async fn listen(pubsub: ::redis::aio::PubSub, revocations: &broadcast::Sender<Revocation>) {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(SUBSCRIBER_PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return };
                match parse_revocation(message.get_payload_bytes()) {
                    Some(event) => {
                        let _ = revocations.send(event);
                    }
                    None => tracing::warn!(
                        target: "portcullis::session",
                        "ignoring a malformed revocation message"
                    ),
                }
            }
            _ = ping.tick() => {
                let answered = tokio::time::timeout(CALL_TIMEOUT, sink.ping::<::redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

/// A user id as this store writes it (`UserId`'s hyphenated form); strict, nothing trimmed.
fn parse_user_id(text: &str) -> Option<UserId> {
    Uuid::parse_str(text).ok().map(UserId::from_uuid)
}

fn parse_revocation(payload: &[u8]) -> Option<Revocation> {
    let text = std::str::from_utf8(payload).ok()?;
    if let Some(id) = text.strip_prefix("session:") {
        return id.parse().ok().map(Revocation::Session);
    }
    if let Some(user) = text.strip_prefix("user:") {
        return parse_user_id(user).map(Revocation::User);
    }
    None
}

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{LUA_PRELUDE}\n{body}"));
        Self {
            create: script(LUA_CREATE),
            touch: script(LUA_TOUCH),
            prove: script(LUA_PROVE),
            rotate: script(LUA_ROTATE),
            revoke: script(LUA_REVOKE),
            revoke_all: script(LUA_REVOKE_ALL),
            list: script(LUA_LIST),
        }
    }
}

// Times are microseconds since the epoch (exact in Lua's doubles until the year 2255).
// Numbers handed back to Redis go through `int` because Lua's default conversion would
// print them as rounded floats. Key TTLs are relative to the caller's clock (`wall`), so
// a clock difference between instances and Redis does not shift expiry.
const LUA_PRELUDE: &str = r#"
local function int(n) return string.format('%d', n) end
local function expire_at(key, at, wall)
  local ms = math.ceil((at - wall) / 1000)
  if ms < 1 then ms = 1 end
  redis.call('PEXPIRE', key, int(ms))
end
local function extend_to(key, at, wall)
  local ms = math.ceil((at - wall) / 1000)
  if ms < 1 then ms = 1 end
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, int(ms)) end
end
local function live_members(ukey, prefix, now)
  local live = {}
  for _, id in ipairs(redis.call('ZRANGE', ukey, 0, -1)) do
    local skey = prefix .. 'session:' .. id
    local exp = redis.call('HGET', skey, 'exp')
    if exp and tonumber(exp) > now then
      live[#live + 1] = id
    else
      redis.call('DEL', skey)
      redis.call('ZREM', ukey, id)
      redis.call('ZREM', prefix .. 'live', id)
    end
  end
  return live
end
"#;

// KEYS: user index, session. ARGV: prefix, id, now, max, channel, uid, exp, abs, idle,
// ip, ua, tfa, rem, refresh hash, passkey use, identity provider ('' for none), when the
// second factor was proven ('' for never: `NewSession::start` decides), auth time.
const LUA_CREATE: &str = r#"
local ukey, skey = KEYS[1], KEYS[2]
local prefix, id, now, max, channel = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if redis.call('EXISTS', skey) == 1 then return {'duplicate'} end
local live = live_members(ukey, prefix, now)
local reply = {'ok'}
local first = 1
while #live - first + 1 >= max do
  local victim = live[first]
  redis.call('DEL', prefix .. 'session:' .. victim)
  redis.call('ZREM', ukey, victim)
  redis.call('ZREM', prefix .. 'live', victim)
  redis.call('PUBLISH', channel, 'session:' .. victim)
  reply[#reply + 1] = victim
  first = first + 1
end
-- A score above every member's keeps the creation order total even within one microsecond.
local score = now
local top = redis.call('ZRANGE', ukey, -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 1 end
redis.call('HSET', skey, 'uid', ARGV[6], 'created', ARGV[3], 'seen', ARGV[3], 'exp', ARGV[7],
  'abs', ARGV[8], 'idle', ARGV[9], 'ip', ARGV[10], 'ua', ARGV[11], 'tfa', ARGV[12],
  'rem', ARGV[13], 'cur', ARGV[14], 'prev', '', 'rot', '', 'gen', '0', 'retired', '',
  'pk', ARGV[15], 'idp', ARGV[16], 'sfa', ARGV[17], 'at', ARGV[18])
expire_at(skey, tonumber(ARGV[7]), now)
redis.call('ZADD', ukey, int(score), id)
extend_to(ukey, tonumber(ARGV[8]), now)
redis.call('ZADD', prefix .. 'live', ARGV[7], id)
extend_to(prefix .. 'live', tonumber(ARGV[8]), now)
return reply
"#;

// KEYS: session. ARGV: when the proof was made, wall clock, '1' when it was a second
// factor ('0': a reauthentication, only `at` changes). A session that has expired (by its
// own `exp`) is not brought back.
const LUA_PROVE: &str = r#"
local exp = redis.call('HGET', KEYS[1], 'exp')
if not exp or tonumber(exp) <= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'tfa', '1', 'sfa', ARGV[1], 'at', ARGV[1])
else
  redis.call('HSET', KEYS[1], 'at', ARGV[1])
end
return 1
"#;

// KEYS: session, the live index. ARGV: now (the caller's), wall clock, id.
const LUA_TOUCH: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'exp', 'abs', 'idle', 'seen')
if not f[1] then return 0 end
local now = tonumber(ARGV[1])
local exp = tonumber(f[1])
if exp <= now then return 0 end
local slid = math.min(now + tonumber(f[3]), tonumber(f[2]))
if slid > exp then
  redis.call('HSET', KEYS[1], 'exp', int(slid))
  expire_at(KEYS[1], slid, tonumber(ARGV[2]))
  redis.call('ZADD', KEYS[2], int(slid), ARGV[3])
  extend_to(KEYS[2], tonumber(f[2]), tonumber(ARGV[2]))
end
if now > tonumber(f[4]) then redis.call('HSET', KEYS[1], 'seen', ARGV[1]) end
return 1
"#;

// KEYS: session. ARGV: prefix, id, channel, presented, new, grace, now, retired cap.
// Plain string comparison is fine here: the values are hashes of high-entropy secrets,
// so timing reveals nothing usable about a token.
const LUA_ROTATE: &str = r#"
local skey = KEYS[1]
local prefix, id, channel, presented, new = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local grace, now, cap = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local flat = redis.call('HGETALL', skey)
if #flat == 0 then return {'none'} end
local h = {}
for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
if tonumber(h.exp) <= now then return {'none'} end
local function reply(tag)
  local out = {tag}
  for _, v in ipairs(redis.call('HGETALL', skey)) do out[#out + 1] = v end
  return out
end
if presented == h.cur then
  local retired = h.retired
  if h.prev ~= '' then
    local list = {}
    for old in string.gmatch(retired, '[^,]+') do list[#list + 1] = old end
    list[#list + 1] = h.prev
    while #list > cap do table.remove(list, 1) end
    retired = table.concat(list, ',')
  end
  local exp = math.max(tonumber(h.exp), math.min(now + tonumber(h.idle), tonumber(h.abs)))
  local seen = math.max(tonumber(h.seen), now)
  redis.call('HSET', skey, 'prev', h.cur, 'cur', new, 'rot', int(now), 'gen', int(tonumber(h.gen) + 1),
    'exp', int(exp), 'seen', int(seen), 'retired', retired)
  expire_at(skey, exp, now)
  redis.call('ZADD', prefix .. 'live', int(exp), id)
  extend_to(prefix .. 'live', tonumber(h.abs), now)
  return reply('rotated')
end
local is_previous = h.prev ~= '' and presented == h.prev
if is_previous and new == h.cur and h.rot ~= '' and now - tonumber(h.rot) <= grace then
  return reply('again')
end
local was_retired = string.find(',' .. h.retired .. ',', ',' .. presented .. ',', 1, true)
if presented ~= '' and (is_previous or was_retired) then
  redis.call('DEL', skey)
  redis.call('ZREM', prefix .. 'user:' .. h.uid, id)
  redis.call('ZREM', prefix .. 'live', id)
  redis.call('PUBLISH', channel, 'session:' .. id)
  return {'reused', h.uid}
end
return {'none'}
"#;

// KEYS: session. ARGV: prefix, id, channel.
const LUA_REVOKE: &str = r#"
local uid = redis.call('HGET', KEYS[1], 'uid')
if not uid then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. 'user:' .. uid, ARGV[2])
redis.call('ZREM', ARGV[1] .. 'live', ARGV[2])
redis.call('PUBLISH', ARGV[3], 'session:' .. ARGV[2])
return 1
"#;

// KEYS: user index. ARGV: prefix, except ('' for none), channel, uid.
// One user-wide event when every session ended; per-session events when one is kept,
// so caches keep the survivor.
const LUA_REVOKE_ALL: &str = r#"
local ukey, prefix, except, channel = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local ended = {}
for _, id in ipairs(redis.call('ZRANGE', ukey, 0, -1)) do
  if id ~= except then
    if redis.call('DEL', prefix .. 'session:' .. id) == 1 then ended[#ended + 1] = id end
    redis.call('ZREM', ukey, id)
    redis.call('ZREM', prefix .. 'live', id)
  end
end
if #ended > 0 then
  if except == '' then
    redis.call('PUBLISH', channel, 'user:' .. ARGV[4])
  else
    for _, id in ipairs(ended) do redis.call('PUBLISH', channel, 'session:' .. id) end
  end
end
return ended
"#;

// KEYS: user index. ARGV: prefix, now. Newest first; each entry is {id, field, value, …}.
const LUA_LIST: &str = r#"
local live = live_members(KEYS[1], ARGV[1], tonumber(ARGV[2]))
local out = {}
for i = #live, 1, -1 do
  local entry = {live[i]}
  for _, v in ipairs(redis.call('HGETALL', ARGV[1] .. 'session:' .. live[i])) do
    entry[#entry + 1] = v
  end
  out[#out + 1] = entry
end
return out
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_messages_parse() {
        let id = SessionId::generate();
        let user = UserId::random();
        assert_eq!(
            parse_revocation(format!("session:{id}").as_bytes()),
            Some(Revocation::Session(id))
        );
        assert_eq!(
            parse_revocation(format!("user:{user}").as_bytes()),
            Some(Revocation::User(user))
        );
        assert_eq!(parse_revocation(b"session:nope"), None);
        assert_eq!(parse_revocation(b"other"), None);
    }

    #[test]
    fn corrupt_records_are_reported_not_panicked_on() {
        let fields = pairs(&["uid".into(), "not-a-uuid".into()]);
        assert!(matches!(
            parse_session(SessionId::generate(), &fields),
            Err(SessionError::Corrupt(_))
        ));
    }
}
