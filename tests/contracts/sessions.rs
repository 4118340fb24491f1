//! The session store's contract, run on the in-memory store always and on Redis when
//! `PORTCULLIS_TEST_REDIS_URL` is set (required under `CI=true`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::support::redis::{BlackHole, Relay, TestRedis, random_prefix};
use chrono::{TimeDelta, Utc};
use portcullis::config::SessionsConfig;
use portcullis::domain::UserId;
use portcullis::session::{
    self, MemorySessionStore, NewSession, Revocation, RotateOutcome, Session, SessionError,
    SessionId, SessionLiveness, SessionStore,
};
use tokio::sync::broadcast;
use uuid::Uuid;

/// One store under test, plus what is needed to open a second instance on the same data.
struct Backend {
    store: Arc<dyn SessionStore>,
    redis: Option<TestRedis>,
}

impl Backend {
    async fn memory() -> Self {
        let config = SessionsConfig {
            url: "memory://".into(),
            ..SessionsConfig::default()
        };
        Self {
            store: session::connect(&config).await.unwrap(),
            redis: None,
        }
    }

    async fn redis() -> Option<Self> {
        let Some(redis) = TestRedis::start().await else {
            eprintln!("PORTCULLIS_TEST_REDIS_URL is not set: skipping the Redis variant");
            return None;
        };
        let store = session::connect(&redis.config()).await.unwrap();
        Some(Self {
            store,
            redis: Some(redis),
        })
    }

    /// Another gateway instance on the same data (the same store for the in-memory backend).
    async fn second_instance(&self) -> Arc<dyn SessionStore> {
        match &self.redis {
            Some(redis) => session::connect(&redis.config()).await.unwrap(),
            None => self.store.clone(),
        }
    }

    /// Waits until `rx` receives what is published from now on (the Redis subscriber
    /// connects in the background).
    async fn wait_subscribed(&self, rx: &mut broadcast::Receiver<Revocation>) {
        let Some(redis) = &self.redis else { return };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let probe = SessionId::generate();
            redis.publish_revocation(&format!("session:{probe}")).await;
            let seen = tokio::time::timeout(Duration::from_millis(200), async {
                loop {
                    match rx.recv().await {
                        Ok(Revocation::Session(id)) if id == probe => return,
                        Ok(_) => continue,
                        Err(e) => panic!("revocation channel: {e}"),
                    }
                }
            })
            .await;
            if seen.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the revocation subscriber never connected"
            );
        }
    }

    /// Checks that no key was left without a TTL, and removes this test's keys.
    async fn finish(self) {
        if let Some(redis) = &self.redis {
            redis.check_ttls_and_clean().await;
        }
    }
}

/// Runs each case against the in-memory store and (when configured) Redis.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = super::Backend::memory().await;
                    super::$case(&backend).await;
                    backend.finish().await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(backend) = super::Backend::redis().await else { return };
                    super::$case(&backend).await;
                    backend.finish().await;
                }
            )*
        }
    };
}

conformance!(
    create_get_and_list,
    duplicate_id_is_refused,
    sixth_login_evicts_the_oldest,
    cap_holds_under_concurrent_logins,
    revoke_ends_one_session,
    revoke_all_keeps_the_excepted_session,
    touch_slides_and_stops_at_the_absolute_expiry,
    sessions_expire,
    activity_keeps_a_session_alive,
    rotation_swaps_the_refresh_hash,
    concurrent_refresh_within_grace_gets_the_same_answer,
    racing_refreshes_rotate_once,
    previous_token_outside_grace_is_reuse,
    retired_token_is_reuse_and_ends_the_session,
    unknown_tokens_and_sessions_are_not_found,
    claim_once_is_once_per_ttl,
    revocations_reach_other_instances,
    every_key_has_a_ttl,
    liveness_agrees_with_get,
    second_factor_is_recorded_at_login_and_by_a_step_up,
    auth_time_moves_only_with_a_proof,
    a_providers_session_keeps_its_provider_and_no_factor_for_the_admin,
    the_live_count_follows_every_start_and_end,
);

/// `count_live` (the `portcullis_sessions_active` gauge) follows each way a session starts
/// and ends: logins, an eviction past the cap, a revocation, the end of a user's other
/// sessions and a reused refresh token; activity does not count twice.
async fn the_live_count_follows_every_start_and_end(b: &Backend) {
    let store = &b.store;
    assert_eq!(store.count_live().await.unwrap(), 0);
    let ada = UserId::random();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(store.create(login(ada)).await.unwrap().session);
    }
    let bob = UserId::random();
    let mut capped = login(bob);
    capped.max_per_user = 1;
    store.create(capped).await.unwrap();
    let mut capped = login(bob);
    capped.max_per_user = 1;
    let first_hash = capped.refresh_hash.clone();
    let bobs = store.create(capped).await.unwrap();
    assert_eq!(bobs.evicted.len(), 1);
    assert_eq!(store.count_live().await.unwrap(), 4);

    assert!(store.touch(&sessions[1].id, Utc::now()).await.unwrap());
    assert!(store.revoke(&sessions[0].id).await.unwrap());
    assert_eq!(store.count_live().await.unwrap(), 3);
    let ended = store.revoke_all(ada, Some(&sessions[1].id)).await.unwrap();
    assert_eq!(ended, [sessions[2].id]);
    assert_eq!(store.count_live().await.unwrap(), 2);

    let grace = Duration::from_millis(50);
    let bobs = bobs.session.id;
    let (second, third) = (hash(), hash());
    let rotated = store.rotate_refresh(&bobs, &first_hash, &second, grace);
    assert!(matches!(rotated.await.unwrap(), RotateOutcome::Rotated(_)));
    assert_eq!(store.count_live().await.unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reused = store.rotate_refresh(&bobs, &first_hash, &third, grace);
    assert!(matches!(
        reused.await.unwrap(),
        RotateOutcome::Reused { .. }
    ));
    assert_eq!(store.count_live().await.unwrap(), 1);
}

/// A session opened through an identity provider keeps the provider's id on every
/// instance; a second factor the provider vouched for counts for the session but records
/// no `second_factor_at` (the admin console and API take only a local step-up).
async fn a_providers_session_keeps_its_provider_and_no_factor_for_the_admin(b: &Backend) {
    let store = &b.store;
    let user = UserId::random();
    let mut through = login(user);
    through.two_factor = true;
    through.provider = Some("corp-sso".into());
    let created = store.create(through).await.unwrap().session;
    assert_eq!(created.provider.as_deref(), Some("corp-sso"));
    assert!(created.two_factor);
    assert_eq!(created.second_factor_at, None);
    let other = b.second_instance().await;
    let read = other.get(&created.id).await.unwrap().unwrap();
    assert_eq!(read.provider.as_deref(), Some("corp-sso"));
    assert!(read.two_factor);
    assert_eq!(read.second_factor_at, None);

    let local = store.create(login(user)).await.unwrap().session;
    assert_eq!(other.get(&local.id).await.unwrap().unwrap().provider, None);
    let at = Utc::now();
    assert!(store.prove_second_factor(&created.id, at).await.unwrap());
    let proven = other.get(&created.id).await.unwrap().unwrap();
    assert_eq!(
        proven.second_factor_at.map(|t| t.timestamp_micros()),
        Some(at.timestamp_micros())
    );
    assert_eq!(proven.provider.as_deref(), Some("corp-sso"));
}

const IDLE: Duration = Duration::from_secs(3600);
const ABSOLUTE: Duration = Duration::from_secs(7 * 86_400);

fn hash() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

fn login(user_id: UserId) -> NewSession {
    NewSession {
        id: SessionId::generate(),
        user_id,
        ip: "203.0.113.7".into(),
        user_agent: "Mozilla/5.0 (test)".into(),
        two_factor: false,
        passkey: portcullis::session::PasskeyUse::None,
        provider: None,
        auth_time: None,
        remember_me: false,
        refresh_hash: hash(),
        idle_ttl: IDLE,
        absolute_ttl: ABSOLUTE,
        max_per_user: 5,
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap()
}

/// The next revocation event (ignoring resync notices), or a failure after `within`.
async fn next_revocation(rx: &mut broadcast::Receiver<Revocation>, within: Duration) -> Revocation {
    tokio::time::timeout(within, async {
        loop {
            match rx.recv().await.unwrap() {
                Revocation::All => continue,
                event => return event,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no revocation event within {within:?}"))
}

async fn create_get_and_list(b: &Backend) {
    let store = &b.store;
    let user = UserId::random();
    let mut new = login(user);
    new.two_factor = true;
    new.remember_me = true;
    let refresh_hash = new.refresh_hash.clone();
    let first = store.create(new).await.unwrap();
    assert!(first.evicted.is_empty());
    let s = &first.session;
    assert_eq!(s.user_id, user);
    assert_eq!(s.ip, "203.0.113.7");
    assert_eq!(s.user_agent, "Mozilla/5.0 (test)");
    assert!(s.two_factor && s.remember_me);
    assert_eq!(s.last_seen_at, s.created_at);
    assert_eq!(s.expires_at, s.created_at + delta(IDLE));
    assert_eq!(s.absolute_expires_at, s.created_at + delta(ABSOLUTE));
    assert_eq!(s.refresh.current_hash, refresh_hash);
    assert_eq!(s.refresh.previous_hash, None);
    assert_eq!(s.refresh.rotated_at, None);
    assert_eq!(s.refresh.generation, 0);

    assert_eq!(store.get(&s.id).await.unwrap().as_ref(), Some(s));

    let second = store.create(login(user)).await.unwrap().session;
    let listed = store.list(user).await.unwrap();
    assert_eq!(listed, vec![second.clone(), s.clone()], "newest first");

    let stranger = store.create(login(UserId::random())).await.unwrap().session;
    assert_eq!(store.list(user).await.unwrap().len(), 2);
    assert_eq!(store.list(stranger.user_id).await.unwrap(), vec![stranger]);
    assert!(store.list(UserId::random()).await.unwrap().is_empty());
    assert_eq!(store.get(&SessionId::generate()).await.unwrap(), None);
}

async fn duplicate_id_is_refused(b: &Backend) {
    let new = login(UserId::random());
    b.store.create(new.clone()).await.unwrap();
    assert!(matches!(
        b.store.create(new.clone()).await,
        Err(SessionError::Duplicate)
    ));
    assert_eq!(b.store.list(new.user_id).await.unwrap().len(), 1);
}

async fn sixth_login_evicts_the_oldest(b: &Backend) {
    let store = &b.store;
    let mut rx = store.revocations();
    b.wait_subscribed(&mut rx).await;
    let user = UserId::random();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let created = store.create(login(user)).await.unwrap();
        assert!(created.evicted.is_empty());
        ids.push(created.session.id);
    }
    let sixth = store.create(login(user)).await.unwrap();
    assert_eq!(sixth.evicted, vec![ids[0]]);
    assert_eq!(store.get(&ids[0]).await.unwrap(), None);
    assert!(store.get(&ids[1]).await.unwrap().is_some());
    let listed: Vec<SessionId> = store
        .list(user)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    let mut expected: Vec<SessionId> = ids[1..].to_vec();
    expected.push(sixth.session.id);
    expected.reverse();
    assert_eq!(listed, expected);
    assert_eq!(
        next_revocation(&mut rx, Duration::from_secs(1)).await,
        Revocation::Session(ids[0])
    );

    // A smaller cap ends as many of the oldest as needed.
    let mut new = login(user);
    new.max_per_user = 2;
    let created = store.create(new).await.unwrap();
    assert_eq!(created.evicted, vec![ids[1], ids[2], ids[3], ids[4]]);
    assert_eq!(store.list(user).await.unwrap().len(), 2);
}

async fn cap_holds_under_concurrent_logins(b: &Backend) {
    let other = b.second_instance().await;
    let user = UserId::random();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 {
            b.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            store.create(login(user)).await.unwrap()
        }));
    }
    let mut created = Vec::new();
    let mut evicted = Vec::new();
    for task in tasks {
        let result = task.await.unwrap();
        created.push(result.session.id);
        evicted.extend(result.evicted);
    }
    let live = b.store.list(user).await.unwrap();
    assert_eq!(live.len(), 5);
    assert_eq!(evicted.len(), 15);
    let evicted: HashSet<SessionId> = evicted.into_iter().collect();
    assert_eq!(evicted.len(), 15, "each session is evicted once");
    for session in &live {
        assert!(!evicted.contains(&session.id));
    }
    for id in &evicted {
        assert_eq!(b.store.get(id).await.unwrap(), None);
    }
}

/// `auth_time` is the login's time, or a provider's earlier one (a later one is the
/// login's); a reauthentication or a step-up moves it (the reauthentication nothing else);
/// a refresh does not; a gone session is not brought back; another instance reads the same.
async fn auth_time_moves_only_with_a_proof(b: &Backend) {
    let store = &b.store;
    let user = UserId::random();
    let local = store.create(login(user)).await.unwrap().session;
    assert_eq!(local.auth_time, local.created_at);
    let earlier = Utc::now() - TimeDelta::seconds(90);
    let mut federated = login(user);
    federated.provider = Some("corp-sso".into());
    federated.auth_time = Some(earlier);
    let federated = store.create(federated).await.unwrap().session;
    let mut ahead = login(user);
    ahead.auth_time = Some(Utc::now() + TimeDelta::seconds(30));
    let ahead = store.create(ahead).await.unwrap().session;
    assert_eq!(ahead.auth_time, ahead.created_at, "never after the login");
    let other = b.second_instance().await;
    let read = other.get(&federated.id).await.unwrap().unwrap();
    assert_eq!(
        read.auth_time.timestamp_micros(),
        earlier.timestamp_micros()
    );

    // A refresh keeps it.
    let (h0, h1) = (local.refresh.current_hash.clone(), hash());
    let rotated = store
        .rotate_refresh(&local.id, &h0, &h1, Duration::from_secs(10))
        .await
        .unwrap();
    let RotateOutcome::Rotated(rotated) = rotated else {
        panic!("{rotated:?}");
    };
    assert_eq!(rotated.auth_time, local.auth_time);

    // A reauthentication moves it and nothing else.
    let at = Utc::now() + TimeDelta::seconds(2);
    assert!(store.prove_identity(&local.id, at).await.unwrap());
    let proven = other.get(&local.id).await.unwrap().unwrap();
    assert_eq!(proven.auth_time.timestamp_micros(), at.timestamp_micros());
    assert_eq!(proven.second_factor_at, None);
    assert!(!proven.two_factor);
    assert_eq!(proven.created_at, local.created_at);
    assert_eq!(proven.refresh.current_hash, h1);

    // A step-up is a proof too.
    let later = at + TimeDelta::seconds(1);
    assert!(store.prove_second_factor(&local.id, later).await.unwrap());
    let stepped = other.get(&local.id).await.unwrap().unwrap();
    assert_eq!(
        stepped.auth_time.timestamp_micros(),
        later.timestamp_micros()
    );

    assert!(store.revoke(&local.id).await.unwrap());
    assert!(
        !store.prove_identity(&local.id, at).await.unwrap(),
        "revoked"
    );
    assert!(
        store.get(&local.id).await.unwrap().is_none(),
        "not brought back"
    );
    let unknown = SessionId::generate();
    assert!(!store.prove_identity(&unknown, at).await.unwrap());
}

/// A login with a second factor records when it was proven; one without records nothing
/// until a step-up proves it, which also marks the session as having passed one. Gone or
/// expired sessions are not brought back; another instance reads the same time.
async fn second_factor_is_recorded_at_login_and_by_a_step_up(b: &Backend) {
    let store = &b.store;
    let user = UserId::random();
    let mut strong = login(user);
    strong.two_factor = true;
    let strong = store.create(strong).await.unwrap().session;
    assert_eq!(strong.second_factor_at, Some(strong.created_at));
    let read = store.get(&strong.id).await.unwrap().unwrap();
    assert_eq!(read.second_factor_at, Some(strong.created_at));

    let weak = store.create(login(user)).await.unwrap().session;
    assert_eq!(weak.second_factor_at, None);
    assert_eq!(
        store.get(&weak.id).await.unwrap().unwrap().second_factor_at,
        None
    );
    let at = Utc::now() + TimeDelta::seconds(3);
    assert!(store.prove_second_factor(&weak.id, at).await.unwrap());
    let other = b.second_instance().await;
    let proven = other.get(&weak.id).await.unwrap().unwrap();
    assert_eq!(
        proven.second_factor_at.map(|t| t.timestamp_micros()),
        Some(at.timestamp_micros())
    );
    assert!(
        proven.two_factor,
        "a proven second factor counts for the session"
    );
    assert!(other.liveness(&weak.id).await.unwrap().unwrap().two_factor);

    assert!(store.revoke(&weak.id).await.unwrap());
    assert!(
        !store.prove_second_factor(&weak.id, at).await.unwrap(),
        "revoked"
    );
    assert!(
        store.get(&weak.id).await.unwrap().is_none(),
        "not brought back"
    );
    assert!(
        !store
            .prove_second_factor(&SessionId::generate(), at)
            .await
            .unwrap()
    );

    let mut short = login(user);
    short.idle_ttl = Duration::from_millis(300);
    let short = store.create(short).await.unwrap().session;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !store.prove_second_factor(&short.id, at).await.unwrap(),
        "expired"
    );
    assert!(store.get(&short.id).await.unwrap().is_none());
}

async fn revoke_ends_one_session(b: &Backend) {
    let store = &b.store;
    let mut rx = store.revocations();
    b.wait_subscribed(&mut rx).await;
    let user = UserId::random();
    let a = store.create(login(user)).await.unwrap().session;
    let kept = store.create(login(user)).await.unwrap().session;
    assert!(store.revoke(&a.id).await.unwrap());
    assert!(!store.revoke(&a.id).await.unwrap(), "already gone");
    assert!(!store.revoke(&SessionId::generate()).await.unwrap());
    assert_eq!(store.get(&a.id).await.unwrap(), None);
    assert_eq!(store.list(user).await.unwrap(), vec![kept]);
    assert_eq!(
        next_revocation(&mut rx, Duration::from_secs(1)).await,
        Revocation::Session(a.id)
    );
}

async fn revoke_all_keeps_the_excepted_session(b: &Backend) {
    let store = &b.store;
    let mut rx = store.revocations();
    b.wait_subscribed(&mut rx).await;
    let user = UserId::random();
    let a = store.create(login(user)).await.unwrap().session;
    let c = store.create(login(user)).await.unwrap().session;
    let bystander = store.create(login(UserId::random())).await.unwrap().session;

    let ended = store.revoke_all(user, Some(&c.id)).await.unwrap();
    assert_eq!(ended, vec![a.id]);
    assert_eq!(store.list(user).await.unwrap(), vec![c.clone()]);
    assert_eq!(
        next_revocation(&mut rx, Duration::from_secs(1)).await,
        Revocation::Session(a.id)
    );

    let ended = store.revoke_all(user, None).await.unwrap();
    assert_eq!(ended, vec![c.id]);
    assert!(store.list(user).await.unwrap().is_empty());
    assert_eq!(store.get(&c.id).await.unwrap(), None);
    assert_eq!(
        next_revocation(&mut rx, Duration::from_secs(1)).await,
        Revocation::User(user)
    );

    assert!(store.revoke_all(user, None).await.unwrap().is_empty());
    assert_eq!(store.get(&bystander.id).await.unwrap(), Some(bystander));
}

async fn touch_slides_and_stops_at_the_absolute_expiry(b: &Backend) {
    let store = &b.store;
    let mut new = login(UserId::random());
    new.idle_ttl = Duration::from_secs(3600);
    new.absolute_ttl = Duration::from_secs(3 * 3600);
    let s = store.create(new).await.unwrap().session;
    assert_eq!(s.expires_at, s.created_at + TimeDelta::hours(1));

    let later = s.created_at + TimeDelta::minutes(30);
    assert!(store.touch(&s.id, later).await.unwrap());
    let got = store.get(&s.id).await.unwrap().unwrap();
    assert_eq!(got.last_seen_at, later);
    assert_eq!(got.expires_at, later + TimeDelta::hours(1));

    // An out-of-order (older) touch moves nothing back.
    assert!(
        store
            .touch(&s.id, s.created_at + TimeDelta::minutes(10))
            .await
            .unwrap()
    );
    assert_eq!(store.get(&s.id).await.unwrap().unwrap(), got);

    let hop = s.created_at + TimeDelta::minutes(80);
    assert!(store.touch(&s.id, hop).await.unwrap());
    let near_end = s.created_at + TimeDelta::minutes(130);
    assert!(store.touch(&s.id, near_end).await.unwrap());
    let got = store.get(&s.id).await.unwrap().unwrap();
    assert_eq!(got.last_seen_at, near_end);
    assert_eq!(
        got.expires_at, s.absolute_expires_at,
        "capped at the absolute expiry"
    );

    // Past its expiry (by the caller's clock) the session cannot be revived.
    assert!(
        !store
            .touch(&s.id, s.created_at + TimeDelta::hours(4))
            .await
            .unwrap()
    );
    assert!(
        !store
            .touch(&SessionId::generate(), Utc::now())
            .await
            .unwrap()
    );
}

async fn sessions_expire(b: &Backend) {
    let store = &b.store;
    let user = UserId::random();
    let mut idle = login(user);
    idle.idle_ttl = Duration::from_millis(300);
    let idle_hash = idle.refresh_hash.clone();
    let idle = store.create(idle).await.unwrap().session;
    let mut capped = login(user);
    capped.absolute_ttl = Duration::from_millis(300);
    let capped = store.create(capped).await.unwrap().session;
    assert_eq!(capped.expires_at, capped.absolute_expires_at);
    assert!(store.get(&idle.id).await.unwrap().is_some());
    assert_eq!(store.list(user).await.unwrap().len(), 2);

    tokio::time::sleep(Duration::from_millis(700)).await;
    for id in [idle.id, capped.id] {
        assert_eq!(store.get(&id).await.unwrap(), None);
        assert!(!store.touch(&id, Utc::now()).await.unwrap());
    }
    assert!(store.list(user).await.unwrap().is_empty());
    assert_eq!(
        store
            .rotate_refresh(&idle.id, &idle_hash, &hash(), Duration::from_secs(10))
            .await
            .unwrap(),
        RotateOutcome::NotFound
    );
    assert!(store.revoke_all(user, None).await.unwrap().is_empty());
    // Expired sessions do not count towards the cap.
    let mut new = login(user);
    new.max_per_user = 1;
    assert!(store.create(new).await.unwrap().evicted.is_empty());
}

/// The per-request check reads `liveness`, not `get`: both must say the same of live,
/// touched, two-factor, revoked, expired and unknown sessions.
async fn liveness_agrees_with_get(b: &Backend) {
    let store = &b.store;
    let user = UserId::random();
    let expected = |s: &Session| SessionLiveness {
        user_id: s.user_id,
        two_factor: s.two_factor,
        last_seen_at: s.last_seen_at,
    };
    let mut strong = login(user);
    strong.two_factor = true;
    let strong = store.create(strong).await.unwrap().session;
    let weak = store.create(login(user)).await.unwrap().session;
    for s in [&strong, &weak] {
        assert_eq!(store.liveness(&s.id).await.unwrap(), Some(expected(s)));
    }
    assert!(
        store
            .liveness(&strong.id)
            .await
            .unwrap()
            .unwrap()
            .two_factor
    );
    assert!(!store.liveness(&weak.id).await.unwrap().unwrap().two_factor);

    let later = Utc::now() + TimeDelta::seconds(5);
    assert!(store.touch(&weak.id, later).await.unwrap());
    let touched = store.get(&weak.id).await.unwrap().unwrap();
    assert_eq!(
        store.liveness(&weak.id).await.unwrap(),
        Some(expected(&touched))
    );

    assert!(store.revoke(&weak.id).await.unwrap());
    assert_eq!(store.liveness(&weak.id).await.unwrap(), None);
    assert_eq!(store.liveness(&SessionId::generate()).await.unwrap(), None);

    let mut brief = login(user);
    brief.idle_ttl = Duration::from_millis(300);
    let brief = store.create(brief).await.unwrap().session;
    assert!(store.liveness(&brief.id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.get(&brief.id).await.unwrap(), None);
    assert_eq!(store.liveness(&brief.id).await.unwrap(), None);
}

async fn activity_keeps_a_session_alive(b: &Backend) {
    let store = &b.store;
    let mut new = login(UserId::random());
    new.idle_ttl = Duration::from_millis(1500);
    let s = store.create(new).await.unwrap().session;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(store.touch(&s.id, Utc::now()).await.unwrap());
    }
    // 2 s after creation: alive only because it slid.
    assert!(store.get(&s.id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(store.get(&s.id).await.unwrap(), None);
}

async fn rotation_swaps_the_refresh_hash(b: &Backend) {
    let store = &b.store;
    let mut new = login(UserId::random());
    new.idle_ttl = Duration::from_secs(600);
    let h0 = new.refresh_hash.clone();
    let s = store.create(new).await.unwrap().session;
    let h1 = hash();
    let RotateOutcome::Rotated(r1) = store
        .rotate_refresh(&s.id, &h0, &h1, Duration::from_secs(10))
        .await
        .unwrap()
    else {
        panic!("expected a rotation");
    };
    assert_eq!(r1.refresh.current_hash, h1);
    assert_eq!(r1.refresh.previous_hash.as_deref(), Some(h0.as_str()));
    assert_eq!(r1.refresh.generation, 1);
    let rotated_at = r1.refresh.rotated_at.unwrap();
    assert!(rotated_at >= s.created_at);
    assert_eq!(r1.last_seen_at, rotated_at);
    assert_eq!(
        r1.expires_at,
        rotated_at + TimeDelta::minutes(10),
        "refresh slides"
    );
    assert_eq!(store.get(&s.id).await.unwrap(), Some(r1.clone()));

    let h2 = hash();
    let RotateOutcome::Rotated(r2) = store
        .rotate_refresh(&s.id, &h1, &h2, Duration::from_secs(10))
        .await
        .unwrap()
    else {
        panic!("expected a second rotation");
    };
    assert_eq!(r2.refresh.current_hash, h2);
    assert_eq!(r2.refresh.previous_hash.as_deref(), Some(h1.as_str()));
    assert_eq!(r2.refresh.generation, 2);
}

async fn concurrent_refresh_within_grace_gets_the_same_answer(b: &Backend) {
    let store = &b.store;
    let new = login(UserId::random());
    let h0 = new.refresh_hash.clone();
    let s = store.create(new).await.unwrap().session;
    let h1 = hash();
    let grace = Duration::from_secs(10);
    let RotateOutcome::Rotated(rotated) =
        store.rotate_refresh(&s.id, &h0, &h1, grace).await.unwrap()
    else {
        panic!("expected a rotation");
    };
    let again = store.rotate_refresh(&s.id, &h0, &h1, grace).await.unwrap();
    assert_eq!(again, RotateOutcome::AlreadyRotated(rotated.clone()));
    assert_eq!(store.get(&s.id).await.unwrap(), Some(rotated));

    // The same old token with a different new one is not a duplicate: it is reuse.
    let reused = store
        .rotate_refresh(&s.id, &h0, &hash(), grace)
        .await
        .unwrap();
    assert_eq!(reused, RotateOutcome::Reused { user_id: s.user_id });
    assert_eq!(store.get(&s.id).await.unwrap(), None);
}

async fn racing_refreshes_rotate_once(b: &Backend) {
    let other = b.second_instance().await;
    let new = login(UserId::random());
    let h0 = new.refresh_hash.clone();
    let s = b.store.create(new).await.unwrap().session;
    let h1 = hash();
    let grace = Duration::from_secs(10);
    let (left, right) = tokio::join!(
        b.store.rotate_refresh(&s.id, &h0, &h1, grace),
        other.rotate_refresh(&s.id, &h0, &h1, grace)
    );
    let outcomes = [left.unwrap(), right.unwrap()];
    let rotated = outcomes
        .iter()
        .filter(|o| matches!(o, RotateOutcome::Rotated(_)))
        .count();
    let repeated = outcomes
        .iter()
        .filter(|o| matches!(o, RotateOutcome::AlreadyRotated(_)))
        .count();
    assert_eq!((rotated, repeated), (1, 1), "{outcomes:?}");
    let live = b.store.get(&s.id).await.unwrap().unwrap();
    assert_eq!(live.refresh.generation, 1);
    assert_eq!(live.refresh.current_hash, h1);
}

async fn previous_token_outside_grace_is_reuse(b: &Backend) {
    let store = &b.store;
    let mut rx = store.revocations();
    b.wait_subscribed(&mut rx).await;
    let new = login(UserId::random());
    let h0 = new.refresh_hash.clone();
    let s = store.create(new).await.unwrap().session;
    let h1 = hash();
    let grace = Duration::from_millis(50);
    assert!(matches!(
        store.rotate_refresh(&s.id, &h0, &h1, grace).await.unwrap(),
        RotateOutcome::Rotated(_)
    ));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        store.rotate_refresh(&s.id, &h0, &h1, grace).await.unwrap(),
        RotateOutcome::Reused { user_id: s.user_id }
    );
    assert_eq!(store.get(&s.id).await.unwrap(), None);
    assert!(store.list(s.user_id).await.unwrap().is_empty());
    assert_eq!(
        next_revocation(&mut rx, Duration::from_secs(1)).await,
        Revocation::Session(s.id)
    );
    // The thief's fresh token is dead too.
    assert_eq!(
        store
            .rotate_refresh(&s.id, &h1, &hash(), grace)
            .await
            .unwrap(),
        RotateOutcome::NotFound
    );
}

async fn retired_token_is_reuse_and_ends_the_session(b: &Backend) {
    let store = &b.store;
    let new = login(UserId::random());
    let mut hashes = vec![new.refresh_hash.clone()];
    let s = store.create(new).await.unwrap().session;
    for _ in 0..5 {
        let next = hash();
        let outcome = store
            .rotate_refresh(
                &s.id,
                hashes.last().unwrap(),
                &next,
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert!(matches!(outcome, RotateOutcome::Rotated(_)));
        hashes.push(next);
    }
    // The very first token, four rotations ago, comes back.
    assert_eq!(
        store
            .rotate_refresh(&s.id, &hashes[0], &hash(), Duration::from_secs(10))
            .await
            .unwrap(),
        RotateOutcome::Reused { user_id: s.user_id }
    );
    assert_eq!(store.get(&s.id).await.unwrap(), None);
    assert_eq!(
        store
            .rotate_refresh(
                &s.id,
                hashes.last().unwrap(),
                &hash(),
                Duration::from_secs(10)
            )
            .await
            .unwrap(),
        RotateOutcome::NotFound
    );
}

async fn unknown_tokens_and_sessions_are_not_found(b: &Backend) {
    let store = &b.store;
    let new = login(UserId::random());
    let h0 = new.refresh_hash.clone();
    let s = store.create(new).await.unwrap().session;
    let grace = Duration::from_secs(10);
    // A hash that was never issued for this session does not end it (ids are not secrets).
    for junk in [hash(), String::new(), "a,b".into()] {
        assert_eq!(
            store
                .rotate_refresh(&s.id, &junk, &hash(), grace)
                .await
                .unwrap(),
            RotateOutcome::NotFound
        );
    }
    // A malformed new hash is refused without touching the session.
    assert_eq!(
        store.rotate_refresh(&s.id, &h0, "", grace).await.unwrap(),
        RotateOutcome::NotFound
    );
    assert_eq!(store.get(&s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(
        store
            .rotate_refresh(&SessionId::generate(), &h0, &hash(), grace)
            .await
            .unwrap(),
        RotateOutcome::NotFound
    );
}

async fn claim_once_is_once_per_ttl(b: &Backend) {
    let other = b.second_instance().await;
    let key = format!("totp:{}:123456", Uuid::new_v4());
    let ttl = Duration::from_millis(300);
    assert!(b.store.claim_once(&key, ttl).await.unwrap());
    assert!(!b.store.claim_once(&key, ttl).await.unwrap());
    assert!(
        !other.claim_once(&key, ttl).await.unwrap(),
        "shared by instances"
    );
    assert!(b.store.claim_once(&format!("{key}7"), ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        other.claim_once(&key, ttl).await.unwrap(),
        "claimable again after the ttl"
    );
}

async fn revocations_reach_other_instances(b: &Backend) {
    let other = b.second_instance().await;
    let mut rx = other.revocations();
    b.wait_subscribed(&mut rx).await;
    let user = UserId::random();
    let a = b.store.create(login(user)).await.unwrap().session;
    b.store.create(login(user)).await.unwrap();
    assert!(b.store.revoke(&a.id).await.unwrap());
    assert_eq!(
        next_revocation(&mut rx, Duration::from_secs(1)).await,
        Revocation::Session(a.id)
    );
    assert_eq!(other.get(&a.id).await.unwrap(), None);
    b.store.revoke_all(user, None).await.unwrap();
    assert_eq!(
        next_revocation(&mut rx, Duration::from_secs(1)).await,
        Revocation::User(user)
    );
}

async fn every_key_has_a_ttl(b: &Backend) {
    let store = &b.store;
    let user = UserId::random();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let new = login(user);
        let h0 = new.refresh_hash.clone();
        let s = store.create(new).await.unwrap().session;
        store
            .rotate_refresh(&s.id, &h0, &hash(), Duration::from_secs(10))
            .await
            .unwrap();
        store.touch(&s.id, Utc::now()).await.unwrap();
        ids.push(s.id);
    }
    store.revoke(&ids[0]).await.unwrap();
    store
        .claim_once("recovery:abc", Duration::from_secs(60))
        .await
        .unwrap();
    store.list(user).await.unwrap();
    if let Some(redis) = &b.redis {
        let keys = redis.keys().await;
        assert_eq!(
            keys.len(),
            5,
            "2 sessions, the user index, the live index and a claim: {keys:?}"
        );
        for key in &keys {
            let pttl = redis.pttl(key).await;
            assert!(pttl > 0, "{key} has PTTL {pttl}");
        }
        // The indexes live as long as the longest absolute expiry, not the sliding one.
        for index in [format!("user:{user}"), "live".to_owned()] {
            let index = format!("{}{index}", redis.prefix);
            assert!(redis.pttl(&index).await > 6 * 86_400 * 1000, "{index}");
        }
    }
}

// ---- Outages and runtimes ----

const GUARD: Duration = Duration::from_secs(15);

async fn assert_unavailable(store: &dyn SessionStore) {
    let id = SessionId::generate();
    let checks = async {
        assert!(matches!(
            store.ping().await,
            Err(SessionError::Unavailable(_))
        ));
        assert!(matches!(
            store.get(&id).await,
            Err(SessionError::Unavailable(_))
        ));
        assert!(matches!(
            store.create(login(UserId::random())).await,
            Err(SessionError::Unavailable(_))
        ));
        assert!(matches!(
            store.claim_once("k", Duration::from_secs(1)).await,
            Err(SessionError::Unavailable(_))
        ));
        assert!(matches!(
            store.touch(&id, Utc::now()).await,
            Err(SessionError::Unavailable(_))
        ));
    };
    tokio::time::timeout(GUARD, checks)
        .await
        .expect("calls against a dead Redis must fail, not hang");
}

#[tokio::test]
async fn connect_succeeds_while_redis_is_down_and_calls_are_unavailable() {
    let config = SessionsConfig {
        url: "redis://127.0.0.1:1/0".into(),
        key_prefix: random_prefix(),
        max_per_user: 5,
        ..SessionsConfig::default()
    };
    let store = session::connect(&config).await.unwrap();
    assert_eq!(store.backend(), "redis");
    assert_unavailable(store.as_ref()).await;
}

#[tokio::test]
async fn hung_redis_is_unavailable_not_a_hang() {
    let hole = BlackHole::start().await;
    let config = SessionsConfig {
        url: format!("redis://{}/0", hole.addr),
        key_prefix: random_prefix(),
        max_per_user: 5,
        ..SessionsConfig::default()
    };
    let store = session::connect(&config).await.unwrap();
    assert_unavailable(store.as_ref()).await;
}

#[tokio::test]
async fn unknown_scheme_is_a_config_error() {
    let config = SessionsConfig {
        url: "postgres://127.0.0.1/sessions".into(),
        ..SessionsConfig::default()
    };
    assert!(matches!(
        session::connect(&config).await,
        Err(SessionError::InvalidConfig(_))
    ));
}

#[tokio::test]
async fn full_memory_store_refuses_rather_than_forgets() {
    let store = MemorySessionStore::with_capacity(2, 1);
    store.create(login(UserId::random())).await.unwrap();
    store.create(login(UserId::random())).await.unwrap();
    assert!(matches!(
        store.create(login(UserId::random())).await,
        Err(SessionError::Unavailable(_))
    ));
    assert!(
        store
            .claim_once("a", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(matches!(
        store.claim_once("b", Duration::from_secs(60)).await,
        Err(SessionError::Unavailable(_))
    ));
    assert!(
        !store
            .claim_once("a", Duration::from_secs(60))
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_recovers_after_an_outage() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let relay = Relay::start(redis.address().await).await;
    let through_relay = SessionsConfig {
        url: redis.url_via(relay.addr),
        ..redis.config()
    };
    let direct = session::connect(&redis.config()).await.unwrap();
    let backend = Backend {
        store: session::connect(&through_relay).await.unwrap(),
        redis: Some(redis),
    };
    let store = &backend.store;
    let mut rx = store.revocations();
    backend.wait_subscribed(&mut rx).await;
    let s = store.create(login(UserId::random())).await.unwrap().session;

    relay.take_down();
    let during = tokio::time::timeout(GUARD, store.get(&s.id)).await.unwrap();
    assert!(
        matches!(during, Err(SessionError::Unavailable(_))),
        "{during:?}"
    );
    assert!(matches!(
        store.ping().await,
        Err(SessionError::Unavailable(_))
    ));

    relay.bring_up();
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        match store.get(&s.id).await {
            Ok(found) => {
                assert_eq!(found, Some(s.clone()));
                break;
            }
            Err(SessionError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    }
    store.ping().await.unwrap();

    // The subscriber came back too: it says events may have been missed, then relays again.
    let resync = tokio::time::timeout(GUARD, async {
        loop {
            if rx.recv().await.unwrap() == Revocation::All {
                return;
            }
        }
    })
    .await;
    assert!(
        resync.is_ok(),
        "no resync notice after the subscription came back"
    );
    assert!(direct.revoke(&s.id).await.unwrap());
    assert_eq!(
        next_revocation(&mut rx, Duration::from_secs(1)).await,
        Revocation::Session(s.id)
    );
    backend.finish().await;
}

/// Built on one runtime (kept alive, like the gateway's backend runtime), used from others,
/// including after one of those was dropped.
fn store_works_across_runtimes(config: SessionsConfig) {
    let owner = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = owner.block_on(session::connect(&config)).unwrap();
    let user = UserId::random();

    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = caller.block_on(async {
        let s = store.create(login(user)).await.unwrap().session;
        assert_eq!(store.get(&s.id).await.unwrap(), Some(s.clone()));
        store.ping().await.unwrap();
        s
    });
    drop(caller);

    let later = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    later.block_on(async {
        assert_eq!(store.get(&first.id).await.unwrap(), Some(first.clone()));
        assert!(store.touch(&first.id, Utc::now()).await.unwrap());
        let second = store.create(login(user)).await.unwrap().session;
        assert_eq!(store.list(user).await.unwrap().len(), 2);
        assert!(store.revoke(&second.id).await.unwrap());
        store.ping().await.unwrap();
    });
    drop(store);
}

#[test]
fn memory_store_works_across_runtimes() {
    store_works_across_runtimes(SessionsConfig::default());
}

#[test]
fn redis_store_works_across_runtimes() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let Some(redis) = setup.block_on(TestRedis::start()) else {
        return;
    };
    store_works_across_runtimes(redis.config());
    setup.block_on(redis.check_ttls_and_clean());
}
