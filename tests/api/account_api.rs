//! Account stories over HTTP: registration, verification, password reset, profile, plumbing.

use crate::support::app::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn register_mails_a_link_that_verifies_once() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let r = app.register("Ada@Example.com").await;
        assert_eq!(r.status, StatusCode::CREATED, "{backend:?}: {}", r.body);
        assert_eq!(r.body["success"], true);
        let user = &r.body["data"]["user"];
        assert_eq!(user["email"], "ada@example.com");
        assert_eq!(user["is_verified"], false);
        assert!(
            r.body["data"].get("tokens").is_none(),
            "registration issues no tokens"
        );

        let mail = app.mail_to("ada@example.com").await;
        let link = mail.link().expect("a link");
        assert!(
            link.starts_with(app.gw.app.config.server.public_url.as_str()),
            "{link}"
        );
        assert!(link.contains("?token="), "{link}");
        let token = mail.token().expect("token");
        assert!(mail.html_body().is_some() && mail.text_body().is_some());

        let r = app
            .post("/api/auth/verify-email", json!({"token": token}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let again = app
            .post("/api/auth/verify-email", json!({"token": token}))
            .await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        assert_eq!(again.code(), "invalid_token");

        let tokens = app.login("ada@example.com").await;
        let profile = app.get_as(&tokens.access, "/api/auth/profile").await;
        assert_eq!(profile.body["data"]["user"]["is_verified"], true);

        // Only the hash of the token is stored, and the password is a bcrypt hash.
        let user = app
            .store()
            .await
            .find_by_email(&"ada@example.com".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(user.password_hash.starts_with("$2"), "bcrypt hash stored");
        assert!(!user.password_hash.contains(PASSWORD));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_email_in_any_case_is_409() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        assert_eq!(
            app.register("dup@example.com").await.status,
            StatusCode::CREATED
        );
        let r = app.register("DUP@Example.COM").await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{backend:?}: {}", r.body);
        assert_eq!(r.code(), "email_taken");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_validation_error_is_listed_by_field() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    let r = app
        .post(
            "/api/auth/register",
            json!({"email": "not-an-email", "password": "", "first_name": "", "last_name": 7}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "validation_error");
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in ["email", "password", "first_name", "last_name"] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }

    for (password, why) in [
        ("short", "short"),
        ("password123", "common"),
        (&format!("Aa1!{}", "x".repeat(69)), "73 bytes"),
    ] {
        let r = app
            .post(
                "/api/auth/register",
                json!({"email": "p@example.com", "password": password, "first_name": "A", "last_name": "B"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(r.body["errors"][0]["field"], "password", "{why}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn names_that_would_pose_as_others_are_refused() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    // Direction overrides, isolates, zero-width and byte-order marks: a name shown in a
    // mail or on a page could read as another (Unicode TR #36 §2.2).
    for (first, last) in [
        ("\u{202E}evil", "B"),
        ("A", "a\u{200B}b"),
        ("\u{2066}x\u{2069}", "B"),
        ("A", "\u{FEFF}k"),
    ] {
        let r = app
            .post(
                "/api/auth/register",
                json!({"email": "n@example.com", "password": "Str0ng-Passw0rd!", "first_name": first, "last_name": last}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{first:?} {last:?}: {}",
            r.body
        );
        let field = if first == "A" {
            "last_name"
        } else {
            "first_name"
        };
        assert_eq!(r.body["errors"][0]["field"], field, "{}", r.body);
    }
    let r = app
        .post(
            "/api/auth/register",
            json!({"email": "n@example.com", "password": "Str0ng-Passw0rd!", "first_name": "Анна-Мария", "last_name": "O'Brien"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn body_plumbing_refuses_bad_input_with_the_envelope() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    let url = app.url("/api/auth/register");

    let r = app
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "invalid_json");

    // max_body_bytes is 65536 by default: declared and streamed (chunked) bodies both stop.
    let big = format!("{{\"email\":\"{}\"}}", "a".repeat(70_000));
    let r = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(8192)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    let r = app
        .http
        .post(app.url("/api/auth/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_continue_is_answered_before_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(Backend::Embedded, "").await;
    let body = br#"{"email":"x@example.com"}"#;
    let mut s = tokio::net::TcpStream::connect(app.gw.addr).await.unwrap();
    let head = format!(
        "POST /api/auth/request-password-reset HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(body).await.unwrap();
    let mut text = String::new();
    while !text.contains("\"success\"") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(text.contains("HTTP/1.1 200"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn password_reset_flow_replaces_the_password_once() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("reset@example.com").await;
        let before = app.login("reset@example.com").await;

        let unknown = app
            .post(
                "/api/auth/request-password-reset",
                json!({"email": "nobody@example.com"}),
            )
            .await;
        let known = app
            .post(
                "/api/auth/request-password-reset",
                json!({"email": "RESET@example.com"}),
            )
            .await;
        assert_eq!(unknown.status, StatusCode::OK);
        assert_eq!(
            unknown.body, known.body,
            "same answer whether or not the account exists"
        );

        let token = app
            .mail_to("reset@example.com")
            .await
            .token()
            .expect("reset token");
        let new_password = "N3w-Passw0rd!!";
        let weak = app
            .post(
                "/api/auth/reset-password",
                json!({"token": token, "password": "weak"}),
            )
            .await;
        assert_eq!(weak.status, StatusCode::BAD_REQUEST);
        let r = app
            .post(
                "/api/auth/reset-password",
                json!({"token": token, "password": new_password}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let reuse = app
            .post(
                "/api/auth/reset-password",
                json!({"token": token, "password": "An0ther-Pass!"}),
            )
            .await;
        assert_eq!(reuse.status, StatusCode::BAD_REQUEST);
        assert_eq!(reuse.code(), "invalid_token");

        // Every session ended; the old password no longer works; the new one does.
        let old = app.get_as(&before.access, "/api/auth/profile").await;
        assert_eq!(old.status, StatusCode::UNAUTHORIZED);
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": "reset@example.com", "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": "reset@example.com", "password": new_password}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let changed = app.mail_to("reset@example.com").await;
        assert!(
            changed
                .subject()
                .unwrap_or_default()
                .to_lowercase()
                .contains("password")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bogus_tokens_are_refused() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    for token in [
        "",
        "x",
        "not a token at all",
        &"A".repeat(43),
        &"A".repeat(5000),
    ] {
        let r = app
            .post("/api/auth/verify-email", json!({"token": token}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{token}");
        let r = app
            .post(
                "/api/auth/reset-password",
                json!({"token": token, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{token}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn profile_can_be_read_and_updated() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("prof@example.com").await;
        let t = app.login("prof@example.com").await;
        let r = app.get_as(&t.access, "/api/auth/profile").await;
        assert_eq!(r.status, StatusCode::OK);
        let user = &r.body["data"]["user"];
        for key in [
            "id",
            "email",
            "first_name",
            "last_name",
            "is_verified",
            "is_active",
            "two_factor_enabled",
            "roles",
            "last_login",
            "created_at",
        ] {
            assert!(user.get(key).is_some(), "{key} missing in {user}");
        }
        let r = app
            .call(
                reqwest::Method::PATCH,
                "/api/auth/profile",
                Some(&t.access),
                Some(json!({"first_name": "Grace"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["data"]["user"]["first_name"], "Grace");
        assert_eq!(r.body["data"]["user"]["last_name"], "Lovelace");
        let r = app
            .call(
                reqwest::Method::PATCH,
                "/api/auth/profile",
                Some(&t.access),
                Some(json!({"last_name": "x".repeat(101)})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = app
            .call(reqwest::Method::GET, "/api/auth/profile", None, None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.headers.contains_key("www-authenticate"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resend_verification_sends_a_fresh_working_link() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.register("again@example.com").await;
    let first = app.mail_to("again@example.com").await.token().unwrap();
    let t = app.login("again@example.com").await;
    let r = app
        .post_as(&t.access, "/api/auth/resend-verification", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let second = app
        .smtp
        .wait_for(
            |m| m.token().is_some_and(|t| t != first),
            std::time::Duration::from_secs(10),
        )
        .await;
    let second = second.expect("a second mail").token().unwrap();
    let stale = app
        .post("/api/auth/verify-email", json!({"token": first}))
        .await;
    assert_eq!(
        stale.status,
        StatusCode::BAD_REQUEST,
        "the older link stops working"
    );
    let r = app
        .post("/api/auth/verify-email", json!({"token": second}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post_as(&t.access, "/api/auth/resend-verification", json!({}))
        .await;
    assert_eq!(r.code(), "already_verified");
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_failure_never_fails_the_request() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.smtp.reject_recipients(true);
    let r = app.register("bounce@example.com").await;
    assert_eq!(r.status, StatusCode::CREATED);
    crate::support::metrics_containing(
        &app.gw.admin_url(),
        &["portcullis_mail_failed_total{kind=\"verification\"} 1"],
    )
    .await;
}

/// Makes every insert into `verification_tokens` of the test's own database sleep, so a
/// registration can be caught between its account and its token.
const STALL_TOKENS: [&str; 2] = [
    "CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS \
     $$ BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$",
    "CREATE TRIGGER test_stall BEFORE INSERT ON verification_tokens \
     FOR EACH ROW EXECUTE FUNCTION test_stall()",
];

/// Ends the connection stalled in the trigger, if there is one yet; the number ended.
const KILL_STALLED: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
     WHERE datname = current_database() AND wait_event = 'PgSleep'";

#[tokio::test(flavor = "multi_thread")]
async fn a_registration_cut_off_mid_way_leaves_no_account() {
    let Some(db) = crate::support::db::TestDb::postgres().await else {
        eprintln!("skipped: PostgreSQL is not configured");
        return;
    };
    let url = db.url().parse().expect("the test database's URL");
    let app = TestApp::spawn_with(Backend::Embedded, "", |c| c.storage.url = url).await;
    for statement in STALL_TOKENS {
        db.execute(statement).await.expect("trigger created");
    }
    let kill = async {
        for _ in 0..500 {
            if db.execute(KILL_STALLED).await.expect("pg_stat_activity") > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the registration never reached its token");
    };
    let (r, ()) = tokio::join!(app.register("cut@example.com"), kill);
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.code(), "service_unavailable");
    assert_eq!(
        db.count_rows("users").await,
        0,
        "no account without its token"
    );
    assert_eq!(db.count_rows("verification_tokens").await, 0);

    db.execute("DROP TRIGGER test_stall ON verification_tokens")
        .await
        .expect("trigger dropped");
    let r = app.register("cut@example.com").await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "the address is free: {}",
        r.body
    );
    let token = app.mail_to("cut@example.com").await.token().expect("token");
    let mails = app.smtp.messages().len();
    assert_eq!(
        mails, 1,
        "nothing was mailed for the registration that failed"
    );
    let r = app
        .post("/api/auth/verify-email", json!({"token": token}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// `[registration]` as a table: each mode and domain spelling, the answer it gets, and, when
/// refused, no account, no token and no mail.
#[tokio::test(flavor = "multi_thread")]
async fn registration_follows_the_configured_policy() {
    const DOMAINS: &str = "[registration]\nmode = \"domains\"\nallowed_domains = [\"example.com\", \"*.example.org\", \"münchen.de\"]\n";
    // (config, address, status, code)
    let table: &[(&str, &str, u16, &str)] = &[
        ("", "anyone@elsewhere.test", 201, ""),
        (
            "[registration]\nmode = \"closed\"\n",
            "bob@example.com",
            403,
            "registration_closed",
        ),
        (
            "[registration]\nmode = \"invite\"\n",
            "bob@example.com",
            403,
            "invitation_required",
        ),
        (DOMAINS, "Bob@EXAMPLE.com", 201, ""),
        (DOMAINS, "bob+tag@example.com", 201, ""),
        (DOMAINS, "bob@team.example.org", 201, ""),
        (DOMAINS, "bob@xn--mnchen-3ya.de", 201, ""),
        (DOMAINS, "bob@example.org", 403, "registration_closed"),
        (DOMAINS, "bob@mail.example.com", 403, "registration_closed"),
        (
            DOMAINS,
            "bob@example.com.evil.test",
            403,
            "registration_closed",
        ),
        (DOMAINS, "bob@evil-example.com", 403, "registration_closed"),
        (DOMAINS, "example.com@evil.test", 403, "registration_closed"),
        // Malformed before any policy is asked.
        (DOMAINS, "bob@example.com.", 400, "validation_error"),
    ];
    for backend in backends() {
        for (config, address, status, code) in table {
            let app = TestApp::spawn(backend, config).await;
            let r = app.register(address).await;
            assert_eq!(
                r.status.as_u16(),
                *status,
                "{backend:?} {config} {address}: {}",
                r.body
            );
            let users = app.store().await.list_users().await.unwrap();
            if *status == 201 {
                assert_eq!(users.len(), 1);
                app.mail_to(users[0].email.as_str()).await;
                continue;
            }
            assert_eq!(r.code(), *code, "{address}: {}", r.body);
            assert!(users.is_empty(), "{address}: an account was written");
            if let Some(db) = &app.db {
                assert_eq!(db.count_rows("verification_tokens").await, 0);
            }
            // A refused body is never read: closed and invite answer before parsing it.
            if !config.contains("domains") {
                let r = app.post("/api/auth/register", json!({})).await;
                assert_eq!(r.code(), *code, "{}", r.body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            assert_eq!(app.smtp.count(), 0, "{address}: a mail went out");
            if *status != 403 {
                continue;
            }
            // Audited as refused, with the reason and without the address.
            let filter = portcullis::store::AuditFilter {
                kind: Some(portcullis::store::AuditKind::Registration),
                limit: 10,
                ..Default::default()
            };
            let events = app.store().await.audit_events(&filter).await.unwrap();
            assert!(!events.is_empty(), "{address}: no audit event");
            for event in &events {
                assert_eq!(event.outcome, portcullis::store::AuditOutcome::Refused);
                assert_eq!(event.detail, *code, "{address}");
                assert_eq!(event.subject_email, None, "{address}");
                assert_eq!(event.client_ip.as_deref(), Some("127.0.0.1"), "{address}");
            }
        }
    }
}
