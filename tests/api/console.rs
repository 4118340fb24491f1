//! The admin console over real HTTP: a browser-like client with a cookie jar against the
//! gateway, posting the console's forms with their CSRF tokens, on both backend pairs.
//! Who gets in (signed out, no role, a stale or missing second factor, a fresh one), every
//! page and every form, and what each change does to the account it is made to.

use std::time::Duration;

use crate::support::app::*;
use crate::support::authenticator::SoftAuthenticator;
use crate::support::browser::{Browser, Html, unescape, urlencode};
use crate::support::otp::{totp, wrong_codes};
use portcullis::store::{AuditFilter, AuditKind, User};
use reqwest::StatusCode;
use serde_json::json;

/// A short lock threshold, for the lock story.
const CONFIG: &str = "[lockout]\nmax_failed_attempts = 3\n";

/// The account of `email`, as stored now.
async fn account(app: &TestApp, email: &str) -> User {
    let store = app.store().await;
    store
        .find_by_email(&email.parse().unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no account {email}"))
}

/// A verified account with the admin role and TOTP on: its secret and recovery codes.
async fn administrator(app: &TestApp, email: &str) -> (String, Vec<String>) {
    app.verified_user(email).await;
    app.grant_role(email, "admin").await;
    app.enable_totp(email).await
}

/// Signs in through the pages with the password and then `code`; the answer to the code.
async fn sign_in_with_code(browser: &Browser, email: &str, code: &str, return_to: &str) -> Html {
    let step = browser.sign_in(email, PASSWORD, return_to).await;
    assert_eq!(step.status, StatusCode::OK, "{}", step.body);
    let ticket = step.input("login_ticket").expect("a second step");
    browser
        .post(
            "/auth/login",
            &[
                ("csrf_token", &step.csrf()),
                ("return_to", return_to),
                ("login_ticket", &ticket),
                ("two_factor_code", code),
            ],
        )
        .await
}

/// A browser signed in as the administrator `email` with a code just proven.
async fn signed_in_admin(app: &TestApp, email: &str, secret: &str) -> Browser {
    let browser = Browser::new(&app.gw.url());
    let signed_in = sign_in_with_code(&browser, email, &totp(secret, 0), "/auth/admin").await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.location(), "/auth/admin");
    browser
}

/// `GET path`, which must answer 200.
async fn page(browser: &Browser, path: &str) -> Html {
    let page = browser.get(path).await;
    assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
    page
}

/// Posts `fields` (and the CSRF token of `from`) to `path`.
async fn submit(browser: &Browser, from: &Html, path: &str, fields: &[(&str, &str)]) -> Html {
    let csrf = from.csrf();
    let mut all = vec![("csrf_token", csrf.as_str())];
    all.extend_from_slice(fields);
    browser.post(path, &all).await
}

/// Posts a form that must succeed: a 303 to `expected` (a path with its notice), whose
/// page is returned.
async fn submit_ok(
    browser: &Browser,
    from: &Html,
    path: &str,
    fields: &[(&str, &str)],
    expected: &str,
) -> Html {
    let done = submit(browser, from, path, fields).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{path}: {}", done.body);
    assert_eq!(done.location(), expected, "{path}");
    page(browser, expected).await
}

/// How many identities are linked to `user`.
async fn linked_to(app: &TestApp, user: &User) -> usize {
    let linked = app.store().await.linked_identities(user.id).await;
    linked.expect("the store answers").len()
}

/// The rows of the page's table (`<th scope="row">`).
fn rows(page: &Html) -> usize {
    page.body.matches("<th scope=\"row\">").count()
}

/// Waits until the audit trail holds an event of `kind` for `email`.
async fn audited(app: &TestApp, kind: AuditKind, email: &str) {
    let store = app.store().await;
    let filter = AuditFilter {
        kind: Some(kind),
        email: Some(email.parse().unwrap()),
        limit: 10,
        ..AuditFilter::default()
    };
    for _ in 0..100 {
        if !store.audit_events(&filter).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {kind} event for {email}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_opens_only_to_an_administrator_with_a_recent_second_factor() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "[admin]\nmax_auth_age = \"3s\"\n").await;
        let (secret, codes) = administrator(&app, "root@example.com").await;
        let root = account(&app, "root@example.com").await;
        let root_page = format!("/auth/admin/users/{}", root.id);

        // Signed out: the sign-in page, coming back to the page asked for.
        let stranger = Browser::new(&app.gw.url());
        let r = stranger.get(&format!("{root_page}?done=created")).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{backend:?}");
        let back = urlencode(&format!("{root_page}?done=created"));
        assert_eq!(r.location(), format!("/auth/login?return_to={back}"));
        let login = page(&stranger, r.location()).await;
        let r = submit(
            &stranger,
            &login,
            "/auth/admin/users",
            &[("email", "x@example.com")],
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(r.location(), "/auth/login?return_to=%2Fauth%2Fadmin");

        // Signed in without the role: a 403 page that says why, in the audit trail too.
        app.verified_user("user@example.com").await;
        let user = Browser::new(&app.gw.url());
        let r = user
            .sign_in("user@example.com", PASSWORD, "/auth/admin")
            .await;
        assert_eq!(r.location(), "/auth/admin", "{}", r.body);
        let refused = user.get("/auth/admin").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{backend:?}");
        assert!(
            refused.body.contains("For administrators only"),
            "{}",
            refused.body
        );
        assert!(refused.headers["cache-control"] == "no-store");
        audited(&app, AuditKind::AdminRefused, "user@example.com").await;
        let account_page = page(&user, "/auth/account").await;
        assert!(!unescape(&account_page.body).contains("href=\"/auth/admin\""));

        // The role and a code just proven: in, and the account page links here.
        let admin = signed_in_admin(&app, "root@example.com", &secret).await;
        let users = page(&admin, "/auth/admin").await;
        assert!(users.body.contains("root@example.com"));
        let account_page = page(&admin, "/auth/account").await;
        assert!(unescape(&account_page.body).contains("href=\"/auth/admin\""));

        // Later than admin.max_auth_age: the step-up, then back to the page asked for.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let asked = "/auth/admin/audit?kind=sign_in";
        let r = admin.get(asked).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{backend:?}: {}", r.body);
        let step_up = format!("/auth/admin/step-up?return_to={}", urlencode(asked));
        assert_eq!(r.location(), step_up);
        let form = page(&admin, &step_up).await;
        assert_eq!(form.input("return_to").as_deref(), Some(asked));
        assert!(form.body.contains("id=\"two_factor_code\""));
        assert!(!form.body.contains("data-passkey"), "no passkey here");
        // A form posted while stale goes to the step-up too, back to its page.
        let r = submit(
            &admin,
            &form,
            "/auth/admin/invitations",
            &[("email", "a@example.com")],
        )
        .await;
        assert_eq!(
            r.location(),
            "/auth/admin/step-up?return_to=%2Fauth%2Fadmin%2Finvitations"
        );

        // A blank code, then a wrong one (counted against the lock), then the right one.
        let blank = submit(
            &admin,
            &form,
            "/auth/admin/step-up",
            &[("return_to", asked)],
        )
        .await;
        assert_eq!(blank.status, StatusCode::BAD_REQUEST, "{}", blank.body);
        assert!(blank.body.contains("id=\"two_factor_code-error\""));
        let wrong = &wrong_codes(&secret, 1)[0];
        let fields = [("return_to", asked), ("two_factor_code", wrong.as_str())];
        let r = submit(&admin, &form, "/auth/admin/step-up", &fields).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: {}",
            r.body
        );
        assert!(r.body.contains("That code is not right"), "{}", r.body);
        assert_eq!(
            account(&app, "root@example.com")
                .await
                .failed_login_attempts,
            1
        );
        assert_eq!(admin.get(asked).await.status, StatusCode::SEE_OTHER);
        let fields = [("return_to", asked), ("two_factor_code", &totp(&secret, 1))];
        let r = submit(&admin, &form, "/auth/admin/step-up", &fields).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{backend:?}: {}", r.body);
        assert_eq!(r.location(), asked);
        let audit = page(&admin, asked).await;
        assert!(audit.body.contains("Sign-in"));
        assert_eq!(
            account(&app, "root@example.com")
                .await
                .failed_login_attempts,
            0
        );

        // A step-up goes on only to a console page: anything else is the console's first.
        let elsewhere = [
            "/auth/account",
            "https://evil.example/auth/admin",
            "//evil.example/auth/admin",
            "/auth/admin/../account",
            "/auth/admin/%2e%2e/account",
            "/auth/admin/step-up",
        ];
        for (target, code) in elsewhere.iter().zip(&codes) {
            let asked = format!("/auth/admin/step-up?return_to={}", urlencode(target));
            let form = page(&admin, &asked).await;
            assert_eq!(
                form.input("return_to").as_deref(),
                Some("/auth/admin"),
                "{target}"
            );
            let fields = [("return_to", *target), ("two_factor_code", code.as_str())];
            let r = submit(&admin, &form, "/auth/admin/step-up", &fields).await;
            assert_eq!(r.status, StatusCode::SEE_OTHER, "{target}: {}", r.body);
            assert_eq!(r.location(), "/auth/admin", "{target}");
        }
        // A recovery code works once.
        let form = page(&admin, "/auth/admin/step-up").await;
        let fields = [("two_factor_code", codes[0].as_str())];
        let r = submit(&admin, &form, "/auth/admin/step-up", &fields).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);

        // An administrator without any second factor is sent to set one up...
        app.verified_user("new-admin@example.com").await;
        app.grant_role("new-admin@example.com", "admin").await;
        let newcomer = Browser::new(&app.gw.url());
        let r = newcomer
            .sign_in("new-admin@example.com", PASSWORD, "/auth/admin")
            .await;
        assert_eq!(r.location(), "/auth/admin", "{}", r.body);
        let r = newcomer.get("/auth/admin").await;
        assert_eq!(
            r.location(),
            "/auth/admin/step-up?return_to=%2Fauth%2Fadmin"
        );
        let r = newcomer.get(r.location()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{backend:?}");
        assert!(
            r.body.contains("Set up a second factor first"),
            "{}",
            r.body
        );
        assert!(unescape(&r.body).contains("href=\"/auth/account\""));
        // ...and once it has one, this session proves it and gets in.
        let account_page = page(&newcomer, "/auth/account").await;
        let setup = submit(&newcomer, &account_page, "/auth/account/2fa/setup", &[]).await;
        let new_secret = setup.input("secret").expect("a secret");
        let fields = [
            ("secret", new_secret.as_str()),
            ("token", &totp(&new_secret, -1)),
            ("password", PASSWORD),
        ];
        let enabled = submit(&newcomer, &setup, "/auth/account/2fa/enable", &fields).await;
        assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
        let form = page(&newcomer, "/auth/admin/step-up?return_to=%2Fauth%2Fadmin").await;
        let fields = [
            ("return_to", "/auth/admin"),
            ("two_factor_code", &totp(&new_secret, 0)),
        ];
        let r = submit(&newcomer, &form, "/auth/admin/step-up", &fields).await;
        assert_eq!(r.location(), "/auth/admin", "{}", r.body);
        page(&newcomer, "/auth/admin").await;
    }
}

/// The `href` of the first link whose tag holds `marker` (`rel="next"`), unescaped.
fn link_to(page: &Html, marker: &str) -> Option<String> {
    let body = unescape(&page.body);
    let at = body.find(marker)?;
    let tag = &body[body[..at].rfind("<a ")?..];
    let href = tag.split("href=\"").nth(1)?;
    Some(href[..href.find('"')?].to_owned())
}

/// The id in a location such as `/auth/admin/users/{id}?done=created`.
fn user_id_in(location: &str) -> String {
    let rest = location
        .strip_prefix("/auth/admin/users/")
        .unwrap_or_else(|| panic!("not an account page: {location}"));
    rest.split(['?', '/']).next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_administrator_uses_every_console_page_and_form() {
    for backend in backends() {
        let app = TestApp::spawn(backend, CONFIG).await;
        let (secret, _) = administrator(&app, "root@example.com").await;
        let admin = signed_in_admin(&app, "root@example.com", &secret).await;
        users_are_listed_searched_paged_and_created(&app, &admin).await;
        one_account_is_changed_form_by_form(&app, &admin).await;
        the_administrator_cannot_lock_themselves_out(&app, &admin).await;
        invitations_are_sent_listed_and_revoked(&app, &admin).await;
        the_audit_trail_is_filtered_and_paged(&admin).await;
        forms_need_the_token_the_method_and_a_known_path(&app, &admin).await;
    }
}

async fn users_are_listed_searched_paged_and_created(app: &TestApp, admin: &Browser) {
    let users = page(admin, "/auth/admin").await;
    // The portal's headers: its policy (no fetch without passkeys), never cached.
    let csp = users.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("form-action 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(users.headers["cache-control"], "no-store");
    assert_eq!(users.headers["x-frame-options"], "DENY");
    assert!(users.body.contains("<caption id=\"users-caption\">"));
    assert!(users.body.contains("aria-current=\"page\""));
    assert!(users.body.contains("root@example.com"));

    // With a password: it works at once; the address counts as proven.
    let fields = [
        ("email", "Made@Example.com"),
        ("roles", "ops, billing"),
        ("password", PASSWORD),
    ];
    let made = submit(admin, &users, "/auth/admin/users", &fields).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let id = user_id_in(made.location());
    assert_eq!(
        made.location(),
        format!("/auth/admin/users/{id}?done=created")
    );
    let made_page = page(admin, made.location()).await;
    assert!(made_page.body.contains("The account has been created."));
    assert!(made_page.body.contains("made@example.com"));
    assert!(
        made_page.body.contains("<span>billing</span>")
            && made_page.body.contains("<span>ops</span>")
    );
    let token = app.login("made@example.com").await.access;
    let profile = app.get_as(&token, "/api/auth/profile").await;
    assert_eq!(profile.body["data"]["user"]["is_verified"], true);

    // Without one: a link to choose it is mailed.
    let fields = [
        ("email", "nopass@example.com"),
        ("roles", ""),
        ("password", ""),
    ];
    let r = submit(admin, &users, "/auth/admin/users", &fields).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let mail = app.mail_to("nopass@example.com").await;
    assert!(mail.link().unwrap().contains("/auth/reset-password?token="));

    // Refusals come back next to their fields, with what was typed (but the password).
    for (fields, status, error) in [
        (
            [("email", "not-an-address"), ("roles", ""), ("password", "")],
            StatusCode::BAD_REQUEST,
            "id=\"email-error\"",
        ),
        (
            [
                ("email", "x@example.com"),
                ("roles", "fine bad/role"),
                ("password", ""),
            ],
            StatusCode::BAD_REQUEST,
            "id=\"roles-error\"",
        ),
        (
            [
                ("email", "x@example.com"),
                ("roles", ""),
                ("password", "weak"),
            ],
            StatusCode::BAD_REQUEST,
            "id=\"password-error\"",
        ),
        (
            [
                ("email", "made@example.com"),
                ("roles", ""),
                ("password", ""),
            ],
            StatusCode::CONFLICT,
            "exists already",
        ),
    ] {
        let r = submit(admin, &users, "/auth/admin/users", &fields).await;
        assert_eq!(r.status, status, "{fields:?}: {}", r.body);
        assert!(r.body.contains(error), "{fields:?}: {}", r.body);
        assert!(
            r.body.contains("Some fields need your attention"),
            "{}",
            r.body
        );
        let typed = unescape(&r.body);
        assert!(
            typed.contains(&format!("value=\"{}\"", fields[0].1)),
            "{typed}"
        );
        assert!(!typed.contains("value=\"weak\""));
    }
    let store = app.store().await;
    let nobody = store.find_by_email(&"x@example.com".parse().unwrap()).await;
    assert!(
        nobody.unwrap().is_none(),
        "no account is made of a refused form"
    );

    // A search, any case; pages of 25 by cursor.
    let found = page(admin, "/auth/admin?q=MADE").await;
    assert!(found.body.contains("made@example.com") && !found.body.contains("nopass@"));
    assert_eq!(rows(&found), 1);
    let users = page(admin, "/auth/admin").await;
    for n in 0..26 {
        let email = format!("page-{n:02}@example.com");
        let fields = [
            ("email", email.as_str()),
            ("roles", ""),
            ("password", PASSWORD),
        ];
        let r = submit(admin, &users, "/auth/admin/users", &fields).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    }
    let first = page(admin, "/auth/admin?q=page-").await;
    assert_eq!(rows(&first), 25);
    assert!(!first.body.contains("First page"));
    let next = link_to(&first, "rel=\"next\"").expect("a next page");
    assert_eq!(next, "/auth/admin?q=page-&page=2");
    let second = page(admin, &next).await;
    assert_eq!(rows(&second), 1);
    assert!(second.body.contains("page-25@example.com") && second.body.contains("First page"));
    assert!(!second.body.contains("rel=\"next\""));
    // In Russian too.
    let russian = page(admin, "/auth/admin?lang=ru").await;
    assert!(russian.body.contains("Учётные записи"), "{}", russian.body);
    page(admin, "/auth/admin?lang=en").await;
}

async fn one_account_is_changed_form_by_form(app: &TestApp, admin: &Browser) {
    let email = "target@example.com";
    let r = app.register(email).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let target = account(app, email).await;
    let path = format!("/auth/admin/users/{}", target.id);
    let at = |done: &str| format!("{path}?done={done}");
    let form = |action: &str| format!("{path}/{action}");
    let user = page(admin, &path).await;
    assert!(user.body.contains(email) && user.body.contains("not confirmed yet"));
    assert!(user.body.contains("<title>Account: target@example.com"));

    // The address, proven by the administrator's word; again changes nothing.
    let user = submit_ok(admin, &user, &form("verify"), &[], &at("verified")).await;
    assert!(
        user.body
            .contains("The email address now counts as confirmed.")
    );
    assert!(!user.body.contains("not confirmed yet"));
    let r = submit(admin, &user, &form("verify"), &[]).await;
    assert_eq!(r.location(), at("unchanged"));

    // Roles: granted, refused when no role name, revoked.
    let user = submit_ok(
        admin,
        &user,
        &form("grant-role"),
        &[("role", "editors")],
        &at("role_granted"),
    )
    .await;
    assert!(user.body.contains("<span>editors</span>"));
    assert_eq!(account(app, email).await.roles, ["editors"]);
    for bad in ["", "bad/role"] {
        let r = submit(admin, &user, &form("grant-role"), &[("role", bad)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", r.body);
        assert!(r.body.contains("id=\"grant_role-error\""), "{}", r.body);
    }
    let user = submit_ok(
        admin,
        &user,
        &form("revoke-role"),
        &[("role", "editors")],
        &at("role_revoked"),
    )
    .await;
    assert!(!user.body.contains("<span>editors</span>"));

    // Sessions: one ended, then all; each token dies at once.
    let first = app.login(email).await.access;
    let second = app.login(email).await.access;
    let user = page(admin, &path).await;
    assert_eq!(user.body.matches("name=\"session_id\"").count(), 2);
    let session = user.input("session_id").unwrap();
    let user = submit_ok(
        admin,
        &user,
        &form("end-session"),
        &[("session_id", &session)],
        &at("session_ended"),
    )
    .await;
    assert_eq!(user.body.matches("name=\"session_id\"").count(), 1);
    let statuses = [
        app.get_as(&first, "/api/auth/profile").await.status,
        app.get_as(&second, "/api/auth/profile").await.status,
    ];
    assert!(
        statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let gone = submit(
        admin,
        &user,
        &form("end-session"),
        &[("session_id", &session)],
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    assert!(gone.body.contains("That session has already ended."));
    let user = submit_ok(
        admin,
        &user,
        &form("end-sessions"),
        &[],
        &at("sessions_ended"),
    )
    .await;
    assert!(user.body.contains("No live sessions."));
    assert_eq!(
        app.get_as(&first, "/api/auth/profile").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_as(&second, "/api/auth/profile").await.status,
        StatusCode::UNAUTHORIZED
    );

    // The lock: three wrong passwords lock the account; unlocked, the right one works.
    for _ in 0..3 {
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": email, "password": "Wr0ng-pass!"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let user = page(admin, &path).await;
    assert!(
        user.body.contains("Locked after failed attempts until"),
        "{}",
        user.body
    );
    let right = json!({"email": email, "password": PASSWORD});
    assert_eq!(
        app.post("/api/auth/login", right.clone()).await.status,
        StatusCode::LOCKED
    );
    let user = submit_ok(admin, &user, &form("unlock"), &[], &at("unlocked")).await;
    assert!(user.body.contains("Not locked."));
    assert_eq!(
        app.post("/api/auth/login", right.clone()).await.status,
        StatusCode::OK
    );

    // Second factors reset: TOTP goes, and sign-in takes the password alone again.
    app.enable_totp(email).await;
    let user = page(admin, &path).await;
    assert!(user.body.contains("An authenticator app (TOTP) is set up"));
    let r = app.post("/api/auth/login", right.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a code is asked for");
    let user = submit_ok(
        admin,
        &user,
        &form("reset-2fa"),
        &[],
        &at("two_factor_reset"),
    )
    .await;
    assert!(user.body.contains("No authenticator app is set up."));
    assert!(!account(app, email).await.two_factor_enabled);
    assert_eq!(
        app.post("/api/auth/login", right.clone()).await.status,
        StatusCode::OK
    );

    // Deactivated, no sign-in; activated, sign-in again.
    let user = submit_ok(admin, &user, &form("deactivate"), &[], &at("deactivated")).await;
    assert!(user.body.contains("Deactivated: cannot sign in"));
    assert_eq!(
        app.post("/api/auth/login", right.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    submit_ok(admin, &user, &form("activate"), &[], &at("activated")).await;
    assert_eq!(
        app.post("/api/auth/login", right.clone()).await.status,
        StatusCode::OK
    );

    // A linked identity: listed, removed only with its box ticked, audited.
    let identity = portcullis::store::NewLinkedIdentity {
        user_id: target.id,
        provider: "corp".into(),
        subject: "target-at-corp".into(),
        email: "target@corp.example".into(),
    };
    assert!(app.store().await.link_identity(&identity).await.unwrap());
    let user = page(admin, &path).await;
    assert!(
        user.body.contains("<code>target-at-corp</code>"),
        "{}",
        user.body
    );
    assert!(user.body.contains("target@corp.example"));
    let ru = page(admin, &format!("{path}?lang=ru")).await;
    assert!(ru.body.contains("Сервисы входа") && ru.body.contains("Да, отвязать"));
    let user = page(admin, &format!("{path}?lang=en")).await;
    let which = [("provider", "corp"), ("subject", "target-at-corp")];
    let r = submit(admin, &user, &form("unlink-identity"), &which).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("id=\"confirm_unlink-error\""), "{}", r.body);
    assert_eq!(linked_to(app, &target).await, 1);
    let confirmed = [which[0], which[1], ("confirm", "yes")];
    let user = submit_ok(
        admin,
        &user,
        &form("unlink-identity"),
        &confirmed,
        &at("identity_unlinked"),
    )
    .await;
    assert!(
        user.body
            .contains("The sign-in service has been removed from the account.")
    );
    assert!(!user.body.contains("target-at-corp"));
    assert_eq!(linked_to(app, &target).await, 0);
    audited(app, AuditKind::IdentityUnlink, email).await;
    let r = submit(admin, &user, &form("unlink-identity"), &confirmed).await;
    assert_eq!(r.location(), at("unchanged"));

    // Deleted only with the box ticked; then gone, its page says so.
    let r = submit(admin, &user, &form("delete"), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("id=\"confirm_delete-error\""), "{}", r.body);
    let list = submit_ok(
        admin,
        &user,
        &form("delete"),
        &[("confirm", "yes")],
        "/auth/admin?done=deleted",
    )
    .await;
    assert!(list.body.contains("The account has been deleted."));
    assert!(!list.body.contains(email));
    let gone = admin.get(&path).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.body.contains("No such account"));
    let r = submit(admin, &list, &form("unlock"), &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.post("/api/auth/login", right).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn the_administrator_cannot_lock_themselves_out(app: &TestApp, admin: &Browser) {
    let own = account(app, "root@example.com").await;
    let path = format!("/auth/admin/users/{}", own.id);
    let mine = page(admin, &path).await;
    assert!(mine.body.contains("This is your own account"));
    let html = unescape(&mine.body);
    assert!(!html.contains("/deactivate\"") && !html.contains("/reset-2fa\""));
    assert!(!html.contains("/activate\"") && !html.contains("confirm_delete"));
    assert!(!html.contains("aria-label=\"Revoke: admin\""));
    assert!(mine.body.contains("(this browser)"));
    for (action, fields) in [
        ("deactivate", vec![]),
        ("reset-2fa", vec![]),
        ("revoke-role", vec![("role", "admin")]),
        ("delete", vec![("confirm", "yes")]),
    ] {
        let r = submit(admin, &mine, &format!("{path}/{action}"), &fields).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{action}: {}", r.body);
        assert!(
            r.body.contains("cannot do this to their own account"),
            "{action}"
        );
    }
    let still = account(app, "root@example.com").await;
    assert!(still.is_active && still.two_factor_enabled && still.roles == ["admin"]);
    page(admin, "/auth/admin").await;
}

async fn invitations_are_sent_listed_and_revoked(app: &TestApp, admin: &Browser) {
    let list = page(admin, "/auth/admin/invitations").await;
    assert!(list.body.contains("No invitations yet."));
    let fields = [("email", "guest@example.com"), ("roles", "viewers")];
    let list = submit_ok(
        admin,
        &list,
        "/auth/admin/invitations",
        &fields,
        "/auth/admin/invitations?done=invited",
    )
    .await;
    assert!(list.body.contains("The invitation is on its way."));
    let mail = app.mail_to("guest@example.com").await;
    assert!(mail.link().unwrap().contains("/auth/invitation?token="));
    assert!(
        list.body
            .contains("<th scope=\"row\">guest@example.com</th>")
    );
    assert!(list.body.contains("viewers") && list.body.contains("Pending"));
    let root = account(app, "root@example.com").await;
    let html = unescape(&list.body);
    assert!(html.contains("action=\"/auth/admin/invitations/revoke\""));
    assert!(html.contains(&format!(
        "<a href=\"/auth/admin/users/{}\">root@example.com</a>",
        root.id
    )));

    for (fields, status, error) in [
        (
            [("email", "made@example.com"), ("roles", "")],
            StatusCode::CONFLICT,
            "exists already",
        ),
        (
            [("email", "nobody"), ("roles", "")],
            StatusCode::BAD_REQUEST,
            "id=\"email-error\"",
        ),
        (
            [("email", "x@example.com"), ("roles", "bad/role")],
            StatusCode::BAD_REQUEST,
            "id=\"roles-error\"",
        ),
    ] {
        let r = submit(admin, &list, "/auth/admin/invitations", &fields).await;
        assert_eq!(r.status, status, "{fields:?}: {}", r.body);
        assert!(r.body.contains(error), "{fields:?}: {}", r.body);
    }

    let fields = [("email", "guest@example.com")];
    let list = submit_ok(
        admin,
        &list,
        "/auth/admin/invitations/revoke",
        &fields,
        "/auth/admin/invitations?done=invitation_revoked",
    )
    .await;
    assert!(list.body.contains("Revoked") && !list.body.contains("Pending"));
    assert!(!unescape(&list.body).contains("/auth/admin/invitations/revoke\""));
    let again = submit(admin, &list, "/auth/admin/invitations/revoke", &fields).await;
    assert_eq!(again.location(), "/auth/admin/invitations?done=unchanged");
    let bad = submit(
        admin,
        &list,
        "/auth/admin/invitations/revoke",
        &[("email", "nobody")],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

async fn the_audit_trail_is_filtered_and_paged(admin: &Browser) {
    let trail = page(admin, "/auth/admin/audit").await;
    assert_eq!(rows(&trail), 25);
    assert!(trail.body.contains("<caption id=\"events-caption\">"));
    assert!(
        !trail.body.contains(">None<"),
        "an absent value shows as nothing"
    );
    // 28 accounts were made here: one page of 25, then 3.
    let created = page(admin, "/auth/admin/audit?kind=user_create").await;
    assert_eq!(rows(&created), 25);
    assert_eq!(
        created
            .body
            .matches("<th scope=\"row\">Account created</th>")
            .count(),
        25
    );
    assert!(
        created
            .body
            .contains("<option value=\"user_create\" selected>")
    );
    let older = link_to(&created, "rel=\"next\"").expect("older events");
    assert!(
        older.starts_with("/auth/admin/audit?kind=user_create&before="),
        "{older}"
    );
    let rest = page(admin, &older).await;
    assert_eq!(rows(&rest), 3);
    assert!(rest.body.contains("Newest events") && !rest.body.contains("rel=\"next\""));

    // By address: what happened to one account, and who did it.
    let made = page(admin, "/auth/admin/audit?email=made%40example.com").await;
    assert!(made.body.contains("Account created") && made.body.contains("An administrator"));
    assert!(unescape(&made.body).contains(">root@example.com</a>"));
    assert!(!made.body.contains("page-01@example.com"));

    // By period: today holds them, yesterday none.
    let today = chrono::Utc::now().date_naive();
    let yesterday = today.pred_opt().unwrap();
    let r = page(
        admin,
        &format!("/auth/admin/audit?since={today}&until={today}&kind=user_create"),
    )
    .await;
    assert_eq!(rows(&r), 25);
    let r = page(admin, &format!("/auth/admin/audit?until={yesterday}")).await;
    assert!(r.body.contains("No events match."));

    // A filter that cannot be read is named next to its field.
    for (query, field) in [
        ("kind=bogus", "kind"),
        ("email=nobody", "email"),
        ("since=2020-13-01", "since"),
        ("since=2021-01-02&until=2021-01-01", "until"),
    ] {
        let r = admin.get(&format!("/auth/admin/audit?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            r.body.contains(&format!("id=\"{field}-error\"")),
            "{query}: {}",
            r.body
        );
        assert_eq!(rows(&r), 0);
    }
}

async fn forms_need_the_token_the_method_and_a_known_path(app: &TestApp, admin: &Browser) {
    let users = page(admin, "/auth/admin").await;
    let fields = [
        ("email", "csrf@example.com"),
        ("roles", ""),
        ("password", ""),
    ];
    let forged = [("csrf_token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")];
    for (what, form, headers) in [
        (
            "no token",
            fields.to_vec(),
            vec![("sec-fetch-site", "same-origin")],
        ),
        (
            "a forged token",
            [&forged[..], &fields[..]].concat(),
            vec![("sec-fetch-site", "same-origin")],
        ),
        (
            "another site",
            [&[("csrf_token", users.csrf().as_str())][..], &fields[..]].concat(),
            vec![("sec-fetch-site", "cross-site")],
        ),
    ] {
        for path in [
            "/auth/admin/users",
            "/auth/admin/step-up",
            "/auth/admin/invitations/revoke",
        ] {
            let r = admin.post_with(path, &form, &headers).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{what} {path}: {}", r.body);
            assert!(r.body.contains("reload the page"), "{what} {path}");
        }
    }
    let root = account(app, "root@example.com").await;
    let unlock = format!("/auth/admin/users/{}/unlock", root.id);
    let r = admin.post_with(&unlock, &[], &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    for (method, path, status, allow) in [
        (
            reqwest::Method::GET,
            "/auth/admin/users",
            StatusCode::METHOD_NOT_ALLOWED,
            "POST",
        ),
        (
            reqwest::Method::POST,
            "/auth/admin/audit",
            StatusCode::METHOD_NOT_ALLOWED,
            "GET, HEAD",
        ),
        (
            reqwest::Method::DELETE,
            "/auth/admin/invitations",
            StatusCode::METHOD_NOT_ALLOWED,
            "GET, HEAD, POST",
        ),
        (
            reqwest::Method::GET,
            "/auth/admin/nothing",
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            reqwest::Method::GET,
            "/auth/admin/users/not-an-id",
            StatusCode::NOT_FOUND,
            "",
        ),
    ] {
        let r = admin
            .http
            .request(method.clone(), format!("{}{path}", admin.base))
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        let allowed = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(allowed.as_deref().unwrap_or(""), allow, "{method} {path}");
    }
    let head = admin
        .http
        .head(format!("{}/auth/admin", admin.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passkey_proves_the_step_up_through_the_same_form() {
    for backend in backends() {
        // WebAuthn needs a name, not an address: the gateway is reached as localhost.
        let app = TestApp::spawn_with(backend, "", |c| {
            c.server.public_url = format!("http://localhost:{}", c.server.listen.port())
                .parse()
                .unwrap();
        })
        .await;
        let origin = app.gw.app.config.server.public_url.to_string();
        let email = "keyholder@example.com";
        app.verified_user(email).await;
        app.grant_role(email, "admin").await;
        let token = app.login(email).await.access;
        let options = app
            .post_as(
                &token,
                "/api/auth/passkeys/register/options",
                json!({"password": PASSWORD}),
            )
            .await;
        assert_eq!(options.status, StatusCode::OK, "{}", options.body);
        let mut key = SoftAuthenticator::new();
        let credential = key.create(&options.body["data"]["options"], &origin);
        let body = json!({"ceremony_id": options.body["data"]["ceremony_id"], "name": "Laptop", "credential": credential});
        let added = app
            .post_as(&token, "/api/auth/passkeys/register", body)
            .await;
        assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);

        // The password and the passkey: in.
        let browser = Browser::new(origin.trim_end_matches('/'));
        let step = browser.sign_in(email, PASSWORD, "/auth/admin").await;
        let answer = key.get(&step.data_options(), &origin);
        let fields = [
            ("return_to", "/auth/admin"),
            ("login_ticket", &step.input("login_ticket").unwrap()),
            ("passkey_ceremony", &step.input("passkey_ceremony").unwrap()),
            ("passkey_credential", &answer.to_string()),
        ];
        let r = submit(&browser, &step, "/auth/login", &fields).await;
        assert_eq!(r.location(), "/auth/admin", "{backend:?}: {}", r.body);
        let me = account(&app, email).await;
        let mine = page(&browser, &format!("/auth/admin/users/{}", me.id)).await;
        assert!(
            mine.body.contains("<th scope=\"row\">Laptop</th>"),
            "{}",
            mine.body
        );

        // The step-up offers the passkey (with the script) and no code field: this account
        // has no authenticator app, and without JavaScript the page says what it needs.
        let form = page(
            &browser,
            "/auth/admin/step-up?return_to=%2Fauth%2Fadmin%2Faudit",
        )
        .await;
        assert!(form.body.contains("data-passkey=\"second-factor\""));
        assert!(!form.body.contains("id=\"two_factor_code\""));
        assert!(form.body.contains("<noscript>"));
        // The passkey script and the show-password toggles' one.
        assert_eq!(form.body.matches("<script").count(), 2);
        assert_eq!(
            form.body.matches("passkeys.js\" defer></script>").count(),
            1
        );
        let answer = key.get(&form.data_options(), &origin);
        let fields = [
            ("return_to", "/auth/admin/audit"),
            ("passkey_ceremony", &form.input("passkey_ceremony").unwrap()),
            ("passkey_credential", &answer.to_string()),
        ];
        let r = submit(&browser, &form, "/auth/admin/step-up", &fields).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{backend:?}: {}", r.body);
        assert_eq!(r.location(), "/auth/admin/audit");
        // The same answer again: refused, the form comes back with a new challenge.
        let again = submit(&browser, &form, "/auth/admin/step-up", &fields).await;
        assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.body);
        assert!(again.body.contains("The passkey could not be used"));
        assert_ne!(
            again.input("passkey_ceremony"),
            form.input("passkey_ceremony")
        );
    }
}
