//! The admin API over HTTP, on both backend pairs: who may use it (the admin role and a
//! second factor proven recently in the session; each refusal in the audit trail), the
//! step-up that makes a session fresh, and what each endpoint does, with the audit row it
//! writes.

use std::time::{Duration, Instant};

use portcullis::domain::{Email, UserId};
use portcullis::store::admin::{UserCommand, run_user_command};
use portcullis::store::{Actor, AuditEvent, AuditFilter, AuditOutcome, UserStore};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::EchoUpstream;
use crate::support::app::*;
use crate::support::otp::{current_step, totp_at, wrong_codes};

/// An administrator of a story: a verified account with the role `admin` and TOTP on.
struct Admin {
    id: UserId,
    email: String,
    secret: String,
    /// Unused recovery codes.
    codes: Vec<String>,
    /// TOTP steps already used (a code works once).
    used_steps: Vec<u64>,
    /// The token of the session that turned TOTP on: it never proved a second factor.
    unproven: String,
}

impl Admin {
    /// A TOTP code of a step not used yet (now or the next one; else waits for a new step).
    async fn code(&mut self) -> String {
        loop {
            let now = current_step();
            if let Some(step) = [now, now + 1]
                .into_iter()
                .find(|s| !self.used_steps.contains(s))
            {
                self.used_steps.push(step);
                return totp_at(&self.secret, step);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A new session, signed in with a recovery code: its second factor is proven now.
    async fn sign_in(&mut self, app: &TestApp) -> String {
        let code = self.codes.pop().expect("a recovery code left");
        let body = json!({"email": self.email, "password": PASSWORD, "two_factor_code": code});
        let r = app.post("/api/auth/login", body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        tokens_of(&r.body).access
    }
}

/// The id of `email`'s account.
async fn id_of(app: &TestApp, email: &str) -> UserId {
    app.store()
        .await
        .find_by_email(&Email::parse(email).unwrap())
        .await
        .unwrap()
        .expect("the account")
        .id
}

/// Grants `role` to `email`'s account as the operator's CLI does.
async fn grant(app: &TestApp, email: &str, role: &str) {
    let command = UserCommand::GrantRole {
        email: email.into(),
        role: role.into(),
    };
    run_user_command(&*app.store().await, command)
        .await
        .expect("role granted");
}

/// A verified account with the role `admin` and TOTP turned on through the API.
async fn admin_with_totp(app: &TestApp, email: &str) -> Admin {
    app.verified_user(email).await;
    grant(app, email, "admin").await;
    let t = app.login(email).await;
    let setup = app
        .post_as(&t.access, "/api/auth/setup-2fa", json!({}))
        .await;
    assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
    let secret = setup.body["data"]["secret"].as_str().unwrap().to_owned();
    let step = current_step();
    let enable = json!({"secret": secret, "token": totp_at(&secret, step), "password": PASSWORD});
    let r = app.post_as(&t.access, "/api/auth/enable-2fa", enable).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let codes = r.body["data"]["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    Admin {
        id: id_of(app, email).await,
        email: email.to_owned(),
        secret,
        codes,
        used_steps: vec![step],
        unproven: t.access,
    }
}

/// An account that holds the admin role but has no second factor: its access token.
async fn admin_without_two_factor(app: &TestApp, email: &str) -> String {
    app.verified_user(email).await;
    grant(app, email, "admin").await;
    app.login(email).await.access
}

/// The audit trail, newest first.
async fn trail(store: &dyn UserStore) -> Vec<AuditEvent> {
    let filter = AuditFilter {
        limit: 1000,
        ..AuditFilter::default()
    };
    store.audit_events(&filter).await.unwrap()
}

/// The first event `find` picks, waiting for it (some are written after the answer, in the
/// background); panics after five seconds naming `what`.
async fn event_where(
    store: &dyn UserStore,
    what: &str,
    find: impl Fn(&AuditEvent) -> bool,
) -> AuditEvent {
    let started = Instant::now();
    loop {
        let events = trail(store).await;
        if let Some(event) = events.iter().find(|e| find(e)) {
            return event.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no audit event for {what}: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whom an endpoint's audit row is about.
#[derive(Clone, Debug)]
enum Subject {
    /// The account with this id.
    Account(UserId),
    /// This address (an account not known by id yet, or an invitee).
    Address(&'static str),
}

/// One call of the access matrix: the endpoint, the concrete request, what a fresh
/// administrator gets, and the audit row it writes (kind, subject).
struct Case {
    method: Method,
    template: &'static str,
    id: Option<String>,
    body: Option<Value>,
    status: StatusCode,
    audit: Option<(&'static str, Subject)>,
}

impl Case {
    fn path(&self) -> String {
        match &self.id {
            Some(id) => self.template.replace("{id}", id),
            None => self.template.to_owned(),
        }
    }

    /// How the audit trail names the endpoint.
    fn name(&self) -> String {
        format!("{} {}", self.method, self.template)
    }
}

/// The accounts the matrix acts on.
struct Targets {
    /// An account every action is applied to, in turn (unverified, active).
    target: UserId,
    /// An account one of whose sessions is ended.
    other: UserId,
    other_session: String,
    /// The account that is deleted.
    doomed: UserId,
}

fn case(
    method: Method,
    template: &'static str,
    id: Option<&UserId>,
    body: Option<Value>,
    status: StatusCode,
    audit: Option<(&'static str, Subject)>,
) -> Case {
    Case {
        method,
        template,
        id: id.map(UserId::to_string),
        body,
        status,
        audit,
    }
}

/// Every admin endpoint but the step-up, in an order in which each one changes something.
fn cases(t: &Targets) -> Vec<Case> {
    use Subject::{Account, Address};
    let (ok, created) = (StatusCode::OK, StatusCode::CREATED);
    let target = Some(&t.target);
    let on_target = |kind| Some((kind, Account(t.target)));
    let role = Some(json!({"role": "ops"}));
    let mut end_session = case(
        Method::DELETE,
        "/api/admin/sessions/{id}",
        None,
        None,
        ok,
        Some(("session_end", Account(t.other))),
    );
    end_session.id = Some(t.other_session.clone());
    let guest = || Some(json!({"email": "guest@example.com", "roles": ["ops"]}));
    let new_user = json!({"email": "made@example.com", "roles": ["ops"], "password": PASSWORD});
    vec![
        case(Method::GET, "/api/admin/users", None, None, ok, None),
        case(
            Method::POST,
            "/api/admin/users",
            None,
            Some(new_user),
            created,
            Some(("user_create", Address("made@example.com"))),
        ),
        case(Method::GET, "/api/admin/users/{id}", target, None, ok, None),
        case(
            Method::GET,
            "/api/admin/users/{id}/sessions",
            target,
            None,
            ok,
            None,
        ),
        case(
            Method::POST,
            "/api/admin/users/{id}/deactivate",
            target,
            None,
            ok,
            on_target("user_deactivate"),
        ),
        case(
            Method::POST,
            "/api/admin/users/{id}/activate",
            target,
            None,
            ok,
            on_target("user_activate"),
        ),
        case(
            Method::POST,
            "/api/admin/users/{id}/unlock",
            target,
            None,
            ok,
            on_target("user_unlock"),
        ),
        case(
            Method::POST,
            "/api/admin/users/{id}/verify-email",
            target,
            None,
            ok,
            on_target("user_verify"),
        ),
        case(
            Method::POST,
            "/api/admin/users/{id}/grant-role",
            target,
            role.clone(),
            ok,
            on_target("role_grant"),
        ),
        case(
            Method::POST,
            "/api/admin/users/{id}/revoke-role",
            target,
            role,
            ok,
            on_target("role_revoke"),
        ),
        case(
            Method::POST,
            "/api/admin/users/{id}/unlink-identity",
            target,
            Some(json!({"provider": "idp", "subject": "target-at-idp"})),
            ok,
            on_target("identity_unlink"),
        ),
        case(
            Method::POST,
            "/api/admin/users/{id}/reset-2fa",
            target,
            None,
            ok,
            on_target("two_factor_reset"),
        ),
        case(
            Method::POST,
            "/api/admin/users/{id}/revoke-sessions",
            target,
            None,
            ok,
            on_target("sessions_revoke"),
        ),
        end_session,
        case(Method::GET, "/api/admin/invitations", None, None, ok, None),
        case(
            Method::POST,
            "/api/admin/invitations",
            None,
            guest(),
            created,
            Some(("invitation_create", Address("guest@example.com"))),
        ),
        case(
            Method::POST,
            "/api/admin/invitations/revoke",
            None,
            guest(),
            ok,
            Some(("invitation_revoke", Address("guest@example.com"))),
        ),
        case(Method::GET, "/api/admin/audit", None, None, ok, None),
        case(
            Method::DELETE,
            "/api/admin/users/{id}",
            Some(&t.doomed),
            None,
            ok,
            Some(("user_delete", Account(t.doomed))),
        ),
    ]
}

/// The matrix covers every admin endpoint of the endpoint table (the step-up aside).
fn assert_covers_every_endpoint(cases: &[Case]) {
    let tested: Vec<String> = cases.iter().map(Case::name).collect();
    let admin = portcullis::api::endpoints::ENDPOINTS
        .iter()
        .filter(|e| e.path.starts_with("/api/admin/") && e.path != "/api/admin/step-up");
    for endpoint in admin {
        let name = format!("{} {}", endpoint.method.as_ref().unwrap(), endpoint.path);
        assert!(tested.contains(&name), "the matrix misses {name}");
    }
}

/// Sends `case` as the holder of `token`.
async fn send(app: &TestApp, case: &Case, token: Option<&str>) -> Answer {
    app.call(case.method.clone(), &case.path(), token, case.body.clone())
        .await
}

/// Every case refused with `status` and `code` for `token`'s holder; when `refused_as` is
/// given (that account's id), each refusal is in the audit trail, with the endpoint and why.
async fn assert_refused(
    app: &TestApp,
    cases: &[Case],
    token: Option<&str>,
    (status, code): (StatusCode, &str),
    refused_as: Option<UserId>,
) {
    let backend = app.backend;
    for case in cases {
        let r = send(app, case, token).await;
        assert_eq!(r.status, status, "{backend:?} {}: {}", case.name(), r.body);
        assert_eq!(r.code(), code, "{backend:?} {}", case.name());
    }
    let Some(user) = refused_as else { return };
    let store = app.store().await;
    for case in cases {
        let detail = format!("{}: {code}", case.name());
        let event = event_where(&*store, &detail, |e| {
            e.kind == "admin_refused" && e.detail == detail && e.actor == Actor::User(user)
        })
        .await;
        assert_eq!(event.outcome, AuditOutcome::Refused, "{backend:?} {detail}");
        assert_eq!(event.subject, Some(user), "{backend:?} {detail}");
        assert_eq!(event.client_ip.as_deref(), Some("127.0.0.1"));
    }
}

/// Links the identity `subject` at the provider `idp` to `user`, as a sign-in would.
async fn link(app: &TestApp, user: UserId, subject: &str) {
    let identity = portcullis::store::NewLinkedIdentity {
        user_id: user,
        provider: "idp".into(),
        subject: subject.into(),
        email: format!("{subject}@idp.example"),
    };
    let linked = app.store().await.link_identity(&identity).await;
    assert!(linked.expect("the store answers"), "{subject} was linked");
}

/// The accounts the matrix acts on, made through the API.
async fn targets(app: &TestApp) -> Targets {
    let r = app.register("target@example.com").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    app.verified_user("other@example.com").await;
    let other = app.login("other@example.com").await;
    let sessions = app.get_as(&other.access, "/api/auth/sessions").await;
    app.verified_user("doomed@example.com").await;
    let target = id_of(app, "target@example.com").await;
    link(app, target, "target-at-idp").await;
    Targets {
        target,
        other: id_of(app, "other@example.com").await,
        other_session: sessions.body["data"]["sessions"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        doomed: id_of(app, "doomed@example.com").await,
    }
}

/// Calls every case as a fresh administrator: the answer, and the audit row with the
/// administrator as its actor.
async fn assert_done(app: &TestApp, cases: &[Case], token: &str, admin: UserId) {
    let backend = app.backend;
    let store = app.store().await;
    for case in cases {
        let before = trail(&*store).await.first().map_or(0, |e| e.id);
        let r = send(app, case, Some(token)).await;
        assert_eq!(
            r.status,
            case.status,
            "{backend:?} {}: {}",
            case.name(),
            r.body
        );
        assert_eq!(r.body["success"], true, "{}", r.body);
        // Whether an unlock, a reset or an end of sessions changed anything depends on the
        // target's state (`admin_invitations_die_with_their_inviter_and_answers_are_exact`).
        let stateful = ["/unlock", "/reset-2fa", "/revoke-sessions"]
            .iter()
            .any(|a| case.template.ends_with(a));
        if case.template.contains("/users/{id}/") && case.method == Method::POST && !stateful {
            assert_eq!(
                r.body["data"]["changed"],
                true,
                "{}: {}",
                case.name(),
                r.body
            );
        }
        let Some((kind, subject)) = &case.audit else {
            continue;
        };
        let event = event_where(&*store, &case.name(), |e| {
            e.id > before && e.kind == *kind && e.actor == Actor::Admin(admin)
        })
        .await;
        match subject {
            Subject::Account(id) => assert_eq!(event.subject, Some(*id), "{}", case.name()),
            Subject::Address(email) => {
                assert_eq!(
                    event.subject_email.as_deref(),
                    Some(*email),
                    "{}",
                    case.name()
                )
            }
        }
        assert_eq!(event.outcome, AuditOutcome::Success, "{}", case.name());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_answer_only_a_fresh_administrator_and_audit_what_they_do() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let t = targets(&app).await;
        let cases = cases(&t);
        assert_covers_every_endpoint(&cases);
        app.verified_user("plain@example.com").await;
        let plain = app.login("plain@example.com").await.access;
        let half = admin_without_two_factor(&app, "half@example.com").await;
        let mut admin = admin_with_totp(&app, "root@example.com").await;

        let unauthenticated = (StatusCode::UNAUTHORIZED, "authentication_required");
        assert_refused(&app, &cases, None, unauthenticated, None).await;
        let forbidden = (StatusCode::FORBIDDEN, "forbidden");
        let plain_id = id_of(&app, "plain@example.com").await;
        assert_refused(&app, &cases, Some(&plain), forbidden, Some(plain_id)).await;
        let stale = (StatusCode::FORBIDDEN, "step_up_required");
        let half_id = id_of(&app, "half@example.com").await;
        assert_refused(&app, &cases, Some(&half), stale, Some(half_id)).await;
        // The role with TOTP on, but no second factor proven in this session.
        assert_refused(&app, &cases, Some(&admin.unproven), stale, Some(admin.id)).await;

        let fresh = admin.sign_in(&app).await;
        assert_done(&app, &cases, &fresh, admin.id).await;
    }
}

/// `POST /api/admin/step-up` with `body` as the holder of `token`.
async fn step_up(app: &TestApp, token: Option<&str>, body: Value) -> Answer {
    app.call(Method::POST, "/api/admin/step-up", token, Some(body))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_a_stale_second_factor_is_refused_everywhere_until_the_step_up() {
    for backend in backends() {
        let config = "[admin]\nmax_auth_age = \"1s\"\n";
        let app = TestApp::spawn(backend, config).await;
        let t = Targets {
            target: UserId::random(),
            other: UserId::random(),
            other_session: "0123456789abcdef0123456789abcdef".into(),
            doomed: UserId::random(),
        };
        let cases = cases(&t);
        let mut admin = admin_with_totp(&app, "root@example.com").await;
        let token = admin.sign_in(&app).await;
        let r = app.get_as(&token, "/api/admin/users").await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: fresh: {}", r.body);

        tokio::time::sleep(Duration::from_millis(1300)).await;
        let stale = (StatusCode::FORBIDDEN, "step_up_required");
        assert_refused(&app, &cases, Some(&token), stale, Some(admin.id)).await;

        let code = admin.code().await;
        let r = step_up(&app, Some(&token), json!({"code": code})).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let r = app.get_as(&token, "/api/admin/users").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{backend:?}: after the step-up: {}",
            r.body
        );
        let store = app.store().await;
        let proven = event_where(&*store, "the step-up", |e| {
            e.kind == "step_up" && e.outcome == AuditOutcome::Success
        })
        .await;
        assert_eq!(proven.actor, Actor::User(admin.id));
        assert_eq!(proven.subject, Some(admin.id));
        assert!(!format!("{proven:?}").contains(&code));
    }
}

/// An RFC 3339 time in `data` of an answer.
fn time_in(r: &Answer, key: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let text = r.body["data"][key].as_str().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|_| panic!("{key}: {}", r.body))
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_step_up_asks_checks_and_counts_toward_the_lockout() {
    for backend in backends() {
        let config = "[lockout]\nmax_failed_attempts = 3\n\n[admin]\nmax_auth_age = \"10m\"\n";
        let app = TestApp::spawn(backend, config).await;
        app.verified_user("plain@example.com").await;
        let plain = app.login("plain@example.com").await.access;
        let half = admin_without_two_factor(&app, "half@example.com").await;
        let mut admin = admin_with_totp(&app, "root@example.com").await;

        let r = step_up(&app, None, json!({})).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: {}",
            r.body
        );
        let r = step_up(&app, Some(&plain), json!({"code": "123456"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{backend:?}: {}", r.body);
        assert_eq!(r.code(), "forbidden");
        let plain_id = id_of(&app, "plain@example.com").await;
        let store = app.store().await;
        event_where(&*store, "a refused step-up", |e| {
            e.kind == "admin_refused"
                && e.actor == Actor::User(plain_id)
                && e.detail == "POST /api/admin/step-up: forbidden"
        })
        .await;
        let r = step_up(&app, Some(&half), json!({})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}: {}", r.body);
        assert_eq!(r.code(), "two_factor_not_enabled");

        // Nothing sent: the challenge, as a sign-in's second step names it.
        for body in [json!({}), json!({"code": ""})] {
            let r = step_up(&app, Some(&admin.unproven), body).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{backend:?}: {}",
                r.body
            );
            assert_eq!(r.code(), "two_factor_required");
            assert_eq!(r.body["data"]["methods"], json!(["totp"]), "{}", r.body);
        }
        let r = app
            .http
            .post(app.url("/api/admin/step-up"))
            .bearer_auth(&admin.unproven)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "an empty body asks too"
        );
        let r = step_up(&app, Some(&admin.unproven), json!({"code": 123456})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}: {}", r.body);
        assert_eq!(r.body["errors"][0]["field"], "code", "{}", r.body);

        // A right code: the session is fresh for admin.max_auth_age.
        let code = admin.code().await;
        let r = step_up(&app, Some(&admin.unproven), json!({"code": code})).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let (at, until) = (time_in(&r, "second_factor_at"), time_in(&r, "valid_until"));
        assert_eq!((until - at).num_seconds(), 600, "{}", r.body);
        assert!((chrono::Utc::now() - at.to_utc()).num_seconds().abs() < 5);
        let r = app.get_as(&admin.unproven, "/api/admin/users").await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        // The same code again is a replay: wrong.
        let r = step_up(&app, Some(&admin.unproven), json!({"code": code})).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: {}",
            r.body
        );
        assert_eq!(r.code(), "invalid_credentials");
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("code"), "{}", r.body);

        // Wrong codes lock the account like wrong passwords: two more make three.
        for wrong in wrong_codes(&admin.secret, 2) {
            let r = step_up(&app, Some(&admin.unproven), json!({"code": wrong})).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{backend:?}: {}",
                r.body
            );
            assert_eq!(r.code(), "invalid_credentials");
        }
        // Locked: even a right code (here a recovery code) meets the 423.
        let code = admin.codes.pop().unwrap();
        let r = step_up(&app, Some(&admin.unproven), json!({"code": code})).await;
        assert_eq!(r.status, StatusCode::LOCKED, "{backend:?}: {}", r.body);
        let login =
            json!({"email": admin.email, "password": PASSWORD, "two_factor_code": admin.codes[0]});
        let r = app.post("/api/auth/login", login).await;
        assert_eq!(
            r.status,
            StatusCode::LOCKED,
            "{backend:?}: the account is locked"
        );
        let failures = trail(&*store)
            .await
            .into_iter()
            .filter(|e| e.kind == "step_up" && e.outcome == AuditOutcome::Failure)
            .count();
        assert_eq!(failures, 3, "{backend:?}");
        event_where(&*store, "the lockout", |e| {
            e.kind == "lockout" && e.subject == Some(admin.id)
        })
        .await;
    }
}

/// Routes that need a session (`/app`) and the role `ops` (`/ops`), to an echo upstream.
fn routes(upstream: &str) -> String {
    format!(
        "[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"{upstream}\"\n\
         policy = \"authenticated\"\n\n\
         [[routes]]\nname = \"ops\"\npath_prefix = \"/ops\"\nupstream = \"{upstream}\"\n\
         policy = \"authenticated\"\nroles = [\"ops\"]\n"
    )
}

/// The status of a proxied `GET path` with `token`, through `base`.
async fn proxied(app: &TestApp, base: &str, path: &str, token: &str) -> StatusCode {
    let r = app
        .http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    r.status()
}

/// Waits up to a second for `path` through `base` to answer `want` to `token`.
async fn within_a_second(app: &TestApp, base: &str, path: &str, token: &str, want: StatusCode) {
    let started = Instant::now();
    loop {
        let status = proxied(app, base, path, token).await;
        if status == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{base}{path} still answers {status}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_changes_hold_on_the_next_request() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let app = TestApp::spawn(backend, &routes(&up.url())).await;
        // With shared sessions a second instance sees the same tokens.
        let peer = (backend == Backend::Shared).then(|| app.spawn_peer());
        let here = app.gw.url();
        let mut admin = admin_with_totp(&app, "root@example.com").await;
        let token = admin.sign_in(&app).await;

        app.verified_user("worker@example.com").await;
        let worker = app.login("worker@example.com").await.access;
        let worker_id = id_of(&app, "worker@example.com").await;
        let mut bases = vec![here.clone()];
        bases.extend(peer.as_ref().map(|p| p.url()));
        for base in &bases {
            assert_eq!(
                proxied(&app, base, "/ops/x", &worker).await,
                StatusCode::FORBIDDEN
            );
        }
        let grant = format!("/api/admin/users/{worker_id}/grant-role");
        let r = app.post_as(&token, &grant, json!({"role": "ops"})).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        assert_eq!(
            proxied(&app, &here, "/ops/x", &worker).await,
            StatusCode::OK
        );
        for base in &bases {
            within_a_second(&app, base, "/ops/x", &worker, StatusCode::OK).await;
        }
        let revoke = format!("/api/admin/users/{worker_id}/revoke-role");
        let r = app.post_as(&token, &revoke, json!({"role": "ops"})).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        assert_eq!(
            proxied(&app, &here, "/ops/x", &worker).await,
            StatusCode::FORBIDDEN
        );
        for base in &bases {
            within_a_second(&app, base, "/ops/x", &worker, StatusCode::FORBIDDEN).await;
        }

        // A deleted account's sessions end at once: its token is refused right after.
        assert_eq!(
            proxied(&app, &here, "/app/x", &worker).await,
            StatusCode::OK
        );
        let profile = app.get_as(&worker, "/api/auth/profile").await;
        assert_eq!(profile.status, StatusCode::OK);
        let r = app
            .call(
                Method::DELETE,
                &format!("/api/admin/users/{worker_id}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        assert_eq!(
            proxied(&app, &here, "/app/x", &worker).await,
            StatusCode::UNAUTHORIZED
        );
        let profile = app.get_as(&worker, "/api/auth/profile").await;
        assert_eq!(profile.status, StatusCode::UNAUTHORIZED, "{}", profile.body);
        for base in &bases {
            within_a_second(&app, base, "/app/x", &worker, StatusCode::UNAUTHORIZED).await;
        }
        let gone = format!("/api/admin/users/{worker_id}");
        let r = app.get_as(&token, &gone).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        assert_eq!(r.code(), "user_not_found");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_own_account_bad_input_and_pages() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let mut admin = admin_with_totp(&app, "root@example.com").await;
        let token = admin.sign_in(&app).await;
        let me = admin.id;

        // What would lock the administrator out is refused on their own account.
        let own = [
            (Method::DELETE, format!("/api/admin/users/{me}"), None),
            (
                Method::POST,
                format!("/api/admin/users/{me}/deactivate"),
                None,
            ),
            (
                Method::POST,
                format!("/api/admin/users/{me}/reset-2fa"),
                None,
            ),
            (
                Method::POST,
                format!("/api/admin/users/{me}/revoke-role"),
                Some(json!({"role": "admin"})),
            ),
        ];
        for (method, path, body) in own {
            let r = app.call(method.clone(), &path, Some(&token), body).await;
            assert_eq!(
                r.status,
                StatusCode::CONFLICT,
                "{backend:?} {method} {path}: {}",
                r.body
            );
            assert_eq!(r.code(), "own_account");
        }
        let r = app
            .post_as(
                &token,
                &format!("/api/admin/users/{me}/grant-role"),
                json!({"role": "ops"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = app.get_as(&token, "/api/admin/users").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{backend:?}: still an administrator"
        );

        assert_bad_input_is_named(&app, &token).await;
        assert_accounts_are_shown_without_secrets(&app, &token).await;
        assert_pages_follow(&app, &token).await;
    }
}

/// Unknown parameters, bad values and ids: 400 naming each, or 404; never a 500.
async fn assert_bad_input_is_named(app: &TestApp, token: &str) {
    let backend = app.backend;
    let some_id = UserId::random();
    let bad_queries = [
        ("/api/admin/users?search=x&after=y", vec!["search", "after"]),
        ("/api/admin/users?limit=0", vec!["limit"]),
        ("/api/admin/users?limit=100", vec!["limit"]),
        ("/api/admin/users?page=0", vec!["page"]),
        ("/api/admin/users?page=one&limit=x", vec!["page", "limit"]),
        ("/api/admin/users?q=a&q=b", vec!["q"]),
        ("/api/admin/users?q=%00", vec!["q"]),
        ("/api/admin/users?q=a%0Ab", vec!["q"]),
        ("/api/admin/users?q=%1B%5B31m", vec!["q"]),
        ("/api/admin/audit?kind=sign-in", vec!["kind"]),
        (
            "/api/admin/audit?since=yesterday&until=2026-13-01",
            vec!["since", "until"],
        ),
        ("/api/admin/audit?user=42&email=x", vec!["user", "email"]),
        (
            "/api/admin/audit?before=0&limit=1001",
            vec!["before", "limit"],
        ),
        ("/api/admin/invitations?all=1", vec!["all"]),
    ];
    for (path, fields) in bad_queries {
        let r = app.get_as(token, path).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{backend:?} {path}: {}",
            r.body
        );
        assert_eq!(r.code(), "validation_error");
        let named: Vec<&str> = r.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{path}");
    }
    let unknown_param = format!("/api/admin/users/{some_id}/unlock?force=1");
    let r = app.post_as(token, &unknown_param, json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "force");

    let not_found = [
        (
            Method::GET,
            "/api/admin/users/not-a-uuid".to_owned(),
            "user_not_found",
        ),
        (
            Method::GET,
            format!("/api/admin/users/{some_id}"),
            "user_not_found",
        ),
        (
            Method::GET,
            format!("/api/admin/users/{some_id}/sessions"),
            "user_not_found",
        ),
        (
            Method::POST,
            format!("/api/admin/users/{some_id}/unlock"),
            "user_not_found",
        ),
        (
            Method::DELETE,
            "/api/admin/users/%E2%80%AE".to_owned(),
            "user_not_found",
        ),
        (
            Method::DELETE,
            "/api/admin/sessions/xyz".to_owned(),
            "session_not_found",
        ),
        (
            Method::DELETE,
            "/api/admin/sessions/0123456789abcdef0123456789abcdef".to_owned(),
            "session_not_found",
        ),
    ];
    for (method, path, code) in not_found {
        let r = app.call(method.clone(), &path, Some(token), None).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{backend:?} {method} {path}: {}",
            r.body
        );
        assert_eq!(r.code(), code, "{method} {path}");
    }

    let bad_bodies = [
        (
            "/api/admin/users",
            json!({"email": "nope", "roles": ["a,b"], "password": 5}),
            vec!["roles", "email", "password"],
        ),
        (
            "/api/admin/users",
            json!({"email": "weak@example.com", "password": "password123"}),
            vec!["password"],
        ),
        (
            "/api/admin/users",
            json!({"roles": "ops"}),
            vec!["roles", "email"],
        ),
        ("/api/admin/invitations", json!({"email": 5}), vec!["email"]),
        ("/api/admin/invitations/revoke", json!({}), vec!["email"]),
    ];
    for (path, body, fields) in bad_bodies {
        let r = app.post_as(token, path, body).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{backend:?} {path}: {}",
            r.body
        );
        let mut named: Vec<&str> = r.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        named.sort_unstable();
        named.dedup();
        let mut fields = fields.to_vec();
        fields.sort_unstable();
        assert_eq!(named, fields, "{path}: {}", r.body);
    }
    let me = id_of(app, "root@example.com").await;
    let unlink = format!("/api/admin/users/{me}/unlink-identity");
    let long = "s".repeat(256);
    let bad_identities = [
        (json!({}), vec!["provider", "subject"]),
        (
            json!({"provider": "Not A Slug", "subject": "s"}),
            vec!["provider"],
        ),
        (
            json!({"provider": "-idp", "subject": "s"}),
            vec!["provider"],
        ),
        (
            json!({"provider": "idp", "subject": "a\u{0}b"}),
            vec!["subject"],
        ),
        (
            json!({"provider": "idp", "subject": "a\u{1b}[31m"}),
            vec!["subject"],
        ),
        (json!({"provider": "idp", "subject": long}), vec!["subject"]),
        (
            json!({"provider": 5, "subject": ["s"]}),
            vec!["provider", "subject"],
        ),
    ];
    for (body, fields) in bad_identities {
        let r = app.post_as(token, &unlink, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        let named: Vec<&str> = r.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{body}: {}", r.body);
    }
    let unknown = format!("/api/admin/users/{some_id}/unlink-identity");
    let r = app
        .post_as(token, &unknown, json!({"provider": "idp", "subject": "s"}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(r.code(), "user_not_found");
    for body in [json!({}), json!({"role": "a b"}), json!({"role": ["ops"]})] {
        let r = app
            .post_as(token, &format!("/api/admin/users/{me}/grant-role"), body)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.body["errors"][0]["field"], "role", "{}", r.body);
    }
    let taken = json!({"email": "ROOT@example.com"});
    let r = app.post_as(token, "/api/admin/users", taken.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "email_taken");
    let r = app.post_as(token, "/api/admin/invitations", taken).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "email_taken");
}

/// An account as the admin API shows it: its state, never a hash or a secret; one made
/// without a password gets a reset link by mail.
async fn assert_accounts_are_shown_without_secrets(app: &TestApp, token: &str) {
    let backend = app.backend;
    let made = json!({"email": "Mailed@Example.com", "roles": ["ops", "billing"]});
    let r = app.post_as(token, "/api/admin/users", made).await;
    assert_eq!(r.status, StatusCode::CREATED, "{backend:?}: {}", r.body);
    let user = &r.body["data"]["user"];
    assert_eq!(user["email"], "mailed@example.com");
    assert_eq!(user["is_verified"], true);
    assert_eq!(user["roles"], json!(["billing", "ops"]));
    let mail = app.mail_to("mailed@example.com").await;
    assert!(mail.token().is_some(), "a reset link");
    let login = json!({"email": "mailed@example.com", "password": PASSWORD});
    let r = app.post("/api/auth/login", login).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no password works yet");

    let root = app
        .store()
        .await
        .find_by_email(&Email::parse("root@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    let r = app
        .get_as(token, &format!("/api/admin/users/{}", root.id))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let data = &r.body["data"];
    let user = &data["user"];
    for (key, want) in [
        ("email", json!("root@example.com")),
        ("is_verified", json!(true)),
        ("is_active", json!(true)),
        ("two_factor_enabled", json!(true)),
        ("is_locked", json!(false)),
        ("locked_until", Value::Null),
        ("failed_login_attempts", json!(0)),
        ("roles", json!(["admin", "ops"])),
    ] {
        assert_eq!(user[key], want, "{key}: {user}");
    }
    assert!(user["last_login"].is_string() && user["created_at"].is_string());
    let text = r.body.to_string();
    assert!(!text.contains(&root.password_hash) && !text.contains("password_hash"));
    assert!(!text.contains("two_factor_secret") && !text.contains("\"language\""));
    let sessions = data["sessions"].as_array().unwrap();
    assert!(
        sessions
            .iter()
            .any(|s| s["current"] == true && s["second_factor_at"].is_string())
    );
    assert_eq!(data["passkeys"], json!([]));
    assert_eq!(data["identities"], json!([]));
    assert_identities_are_shown_and_removed(app, token, root.id).await;
}

/// An account's linked identities are listed, and an administrator removes one — even the
/// account's last (it keeps its password) — audited with the administrator as the actor.
async fn assert_identities_are_shown_and_removed(app: &TestApp, token: &str, root: UserId) {
    link(app, root, "root-at-idp").await;
    let detail = format!("/api/admin/users/{root}");
    let r = app.get_as(token, &detail).await;
    let identities = r.body["data"]["identities"].as_array().unwrap().clone();
    assert_eq!(identities.len(), 1, "{}", r.body);
    let shown = &identities[0];
    assert_eq!(shown["provider"], "idp");
    assert_eq!(
        shown["name"], "idp",
        "no longer configured: named by its id"
    );
    assert_eq!(shown["subject"], "root-at-idp");
    assert_eq!(shown["email"], "root-at-idp@idp.example");
    assert!(shown["linked_at"].is_string(), "{shown}");

    let unlink = format!("/api/admin/users/{root}/unlink-identity");
    let body = json!({"provider": "idp", "subject": "root-at-idp"});
    let r = app.post_as(token, &unlink, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["changed"], true);
    let r = app.post_as(token, &unlink, body).await;
    assert_eq!(r.body["data"]["changed"], false, "{}", r.body);
    let r = app.get_as(token, &detail).await;
    assert_eq!(r.body["data"]["identities"], json!([]));
    let store = app.store().await;
    let event = event_where(&*store, "identity_unlink", |e| {
        e.kind == "identity_unlink" && e.subject == Some(root)
    })
    .await;
    assert_eq!(event.actor, Actor::Admin(root));
    assert_eq!(event.detail, "provider idp, subject root-at-idp");
    assert_eq!(event.client_ip.as_deref(), Some("127.0.0.1"));
    // The last identity gone, the password still signs in.
    let login = json!({"email": "root@example.com", "password": PASSWORD});
    let r = app.post("/api/auth/login", login).await;
    assert_eq!(r.code(), "two_factor_required", "{}", r.body);
}

/// `next_page` and `next_before` lead through every page.
async fn assert_pages_follow(app: &TestApp, token: &str) {
    for n in 0..5 {
        let body = json!({"email": format!("page{n}@example.com"), "password": PASSWORD});
        let r = app.post_as(token, "/api/admin/users", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let mut seen = Vec::new();
    let mut path = "/api/admin/users?q=PAGE&limit=2".to_owned();
    loop {
        let r = app.get_as(token, &path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        let users = r.body["data"]["users"].as_array().unwrap();
        seen.extend(
            users
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned()),
        );
        match r.body["data"]["next_page"].as_u64() {
            Some(next) => path = format!("/api/admin/users?q=PAGE&limit=2&page={next}"),
            None => break,
        }
    }
    let want: Vec<String> = (0..5).map(|n| format!("page{n}@example.com")).collect();
    assert_eq!(seen, want);

    let page0 = id_of(app, "page0@example.com").await;
    let mut ids = Vec::new();
    let mut path = "/api/admin/audit?kind=user_create&limit=2".to_owned();
    loop {
        let r = app.get_as(token, &path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        let events = r.body["data"]["events"].as_array().unwrap();
        for e in events {
            assert_eq!(e["kind"], "user_create");
            assert_eq!(e["actor"]["kind"], "admin", "{e}");
            ids.push(e["id"].as_i64().unwrap());
        }
        match r.body["data"]["next_before"].as_i64() {
            Some(before) => {
                path = format!("/api/admin/audit?kind=user_create&limit=2&before={before}")
            }
            None => break,
        }
    }
    assert_eq!(
        ids.len(),
        6,
        "the five pages and the mailed account: {ids:?}"
    );
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let r = app
        .get_as(
            token,
            &format!("/api/admin/audit?user={page0}&since=2000-01-01T00:00:00Z"),
        )
        .await;
    let events = r.body["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{}", r.body);
    assert_eq!(events[0]["subject"], page0.to_string());
    let r = app
        .get_as(
            token,
            "/api/admin/audit?email=page1%40example.com&until=2000-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(r.body["data"]["events"], json!([]), "{}", r.body);
    assert_eq!(r.body["data"]["next_before"], Value::Null);
}

/// What a red-team pass found, held: an administrator's pending invitations stop working
/// when they stop being one (deactivated, the role revoked, deleted); two `Authorization`
/// fields are no credentials; `changed` says whether anything changed; an invitation made
/// through the API carries the administrator's client address in the trail.
#[tokio::test(flavor = "multi_thread")]
async fn admin_invitations_die_with_their_inviter_and_answers_are_exact() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let mut root = admin_with_totp(&app, "root@example.com").await;
        let root_token = root.sign_in(&app).await;
        let store = app.store().await;
        for (n, undo) in ["deactivate", "revoke-role", "delete"].iter().enumerate() {
            let inviter = format!("inviter{n}@example.com");
            let mut other = admin_with_totp(&app, &inviter).await;
            let token = other.sign_in(&app).await;
            let invitee = format!("invitee{n}@example.com");
            let body = json!({"email": invitee, "roles": ["admin"]});
            let r = app.post_as(&token, "/api/admin/invitations", body).await;
            assert_eq!(r.status, StatusCode::CREATED, "{backend:?}: {}", r.body);
            let link = app.mail_to(&invitee).await.token().expect("a token");
            let path = match *undo {
                "delete" => format!("/api/admin/users/{}", other.id),
                action => format!("/api/admin/users/{}/{action}", other.id),
            };
            let method = if *undo == "delete" {
                Method::DELETE
            } else {
                Method::POST
            };
            let body = (*undo == "revoke-role").then(|| json!({"role": "admin"}));
            let r = app.call(method, &path, Some(&root_token), body).await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?} {undo}: {}", r.body);
            let accept =
                json!({"token": link, "password": PASSWORD, "first_name": "A", "last_name": "B"});
            let r = app.post("/api/auth/accept-invitation", accept).await;
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{backend:?} {undo}: {}",
                r.body
            );
            assert!(
                store
                    .find_by_email(&Email::parse(&invitee).unwrap())
                    .await
                    .unwrap()
                    .is_none(),
                "{backend:?} {undo}: no account"
            );
        }
        // The operator's invitations (no inviter) are not affected.
        let made = event_where(&*store, "an invitation by an administrator", |e| {
            e.kind == "invitation_create" && e.actor.kind() == "admin"
        })
        .await;
        assert_eq!(made.client_ip.as_deref(), Some("127.0.0.1"), "{backend:?}");

        // Two Authorization fields are no credentials, in either order.
        for pair in [[root_token.as_str(), "x"], ["x", root_token.as_str()]] {
            for path in ["/api/admin/users", "/api/auth/profile"] {
                let r = app
                    .http
                    .get(app.url(path))
                    .header("Authorization", format!("Bearer {}", pair[0]))
                    .header("Authorization", format!("Bearer {}", pair[1]))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{backend:?} {path}");
            }
        }

        // `changed` is false when there was nothing to change.
        app.verified_user("plain@example.com").await;
        let plain = id_of(&app, "plain@example.com").await;
        for action in ["unlock", "reset-2fa", "revoke-sessions"] {
            let path = format!("/api/admin/users/{plain}/{action}");
            let r = app.post_as(&root_token, &path, json!({})).await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?} {action}: {}", r.body);
            assert_eq!(
                r.body["data"]["changed"],
                json!(false),
                "{backend:?} {action}"
            );
        }
        let _signed_in = app.login("plain@example.com").await;
        let path = format!("/api/admin/users/{plain}/revoke-sessions");
        let r = app.post_as(&root_token, &path, json!({})).await;
        assert_eq!(
            r.body["data"]["changed"],
            json!(true),
            "{backend:?}: {}",
            r.body
        );
        let r = app.post_as(&root_token, &path, json!({})).await;
        assert_eq!(
            r.body["data"]["changed"],
            json!(false),
            "{backend:?}: {}",
            r.body
        );
    }
}
