//! New passwords are held to NIST SP 800-63B (`[passwords]`): a minimum length, bcrypt's
//! 72 bytes, no composition rules, and the zxcvbn estimate with the account's own address
//! and names as known words — on every way a password is set, over the API and the portal's
//! forms. A password set before keeps working: sign-in applies none of it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::app::*;
use crate::support::browser::Browser;
use portcullis::auth::PasswordHasher;
use portcullis::domain::Email;

/// What a new password meets: accepted, or refused with a message that contains this.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Accepted,
    Refused(&'static str),
}

/// The table: (password, what happens). `{email}` stands for the account's own address.
fn table() -> Vec<(String, Expect)> {
    use Expect::*;
    let guessable = "Password is too easy to guess.";
    vec![
        ("password123".into(), Refused(guessable)),
        ("qwertyuiop".into(), Refused(guessable)),
        (
            "asdfghjkl;".into(),
            Refused("Straight rows of keys are easy to guess."),
        ),
        ("{email}".into(), Refused(guessable)),
        // The account's names and the words of its address, whatever separates them.
        ("Grace Hopper".into(), Refused(guessable)),
        ("grace-hopper grace-hopper".into(), Refused(guessable)),
        // Typed in the Russian layout: a keyboard row, and "password" (the keys of "gfhjkm").
        ("йцукенгшщз".into(), Refused(guessable)),
        ("пароль12345".into(), Refused(guessable)),
        ("Съешь же ещё этих мягких булок".into(), Accepted),
        ("P@ssw0rd2024".into(), Refused("Predictable substitutions")),
        ("Sunsh1ne!2".into(), Refused(guessable)),
        // zxcvbn's dictionaries lack "troubadour": its estimate of XKCD's example passes.
        ("Tr0ub4dor&3".into(), Accepted),
        ("correct horse battery staple".into(), Accepted),
        ("alllowercase words without digits".into(), Accepted),
        ("x7#Kq2!".into(), Refused("at least 10 characters")),
        ("wq".repeat(36) + "z", Refused("72 bytes")),
        ("ж".repeat(37), Refused("72 bytes")),
    ]
}

fn messages_for(body: &Value, field: &str) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter(|e| e["field"] == field)
                .map(|e| e["message"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks one answer against its row: 2xx when accepted, else 400 naming `field` with
/// every message a sentence and the expected one among them.
fn check(answer: &Answer, field: &str, password: &str, expect: Expect) {
    match expect {
        Expect::Accepted => assert!(
            answer.status.is_success(),
            "{password:?}: {} {}",
            answer.status,
            answer.body
        ),
        Expect::Refused(fragment) => {
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{password:?}: {}",
                answer.body
            );
            assert_eq!(answer.code(), "validation_error");
            let messages = messages_for(&answer.body, field);
            assert!(
                messages.iter().any(|m| m.contains(fragment)),
                "{password:?}: {messages:?}"
            );
            let sentences = messages.iter().all(|m| portcullis::reply::is_sentence(m));
            assert!(sentences, "{password:?}: {messages:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_holds_new_passwords_to_the_policy() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    for (i, (password, expect)) in table().into_iter().enumerate() {
        let email = format!("grace.hopper{i}@example.org");
        let password = password.replace("{email}", &email);
        let body = json!({"email": email, "password": password, "first_name": "Grace", "last_name": "Hopper"});
        let answer = app.post("/api/auth/register", body).await;
        check(&answer, "password", &password, expect);
    }
    // The estimator's warning and suggestions come as more errors naming the field.
    let body = json!({"email": "w@example.org", "password": "qwertyuiop", "first_name": "A", "last_name": "B"});
    let weak = app.post("/api/auth/register", body).await;
    assert!(
        messages_for(&weak.body, "password").len() >= 2,
        "{}",
        weak.body
    );
    // One's own names are known words too.
    let body = json!({"email": "n@example.org", "password": "hoppergrace", "first_name": "Grace", "last_name": "Hopper"});
    let named = app.post("/api/auth/register", body).await;
    check(
        &named,
        "password",
        "hoppergrace",
        Expect::Refused("too easy"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_a_reset_and_an_invitation_are_held_to_it_too() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.verified_user("alan.turing@example.org").await;
    // A reset: the account's own address is refused, and the link survives the refusal.
    let body = json!({"email": "alan.turing@example.org"});
    app.post("/api/auth/request-password-reset", body).await;
    let token = app
        .mail_to("alan.turing@example.org")
        .await
        .token()
        .expect("a link");
    let own = json!({"token": token, "password": "alan.turing@example.org"});
    let refused = app.post("/api/auth/reset-password", own).await;
    check(
        &refused,
        "password",
        "own address",
        Expect::Refused("too easy"),
    );
    let fine = json!({"token": token, "password": PASSWORD});
    let reset = app.post("/api/auth/reset-password", fine).await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);

    let tokens = app.login("alan.turing@example.org").await;
    for (password, expect) in table() {
        let password = password.replace("{email}", "alan.turing@example.org");
        let body = json!({"current_password": PASSWORD, "new_password": password});
        let answer = app
            .post_as(&tokens.access, "/api/auth/change-password", body)
            .await;
        check(&answer, "new_password", &password, expect);
        if let Expect::Accepted = expect {
            // Back to the standard password for the next row.
            let body = json!({"current_password": password, "new_password": PASSWORD});
            let back = app
                .post_as(&tokens.access, "/api/auth/change-password", body)
                .await;
            assert_eq!(back.status, StatusCode::OK, "{}", back.body);
        }
    }

    // An invitation's answer.
    let email = Email::parse("ivy@example.org").unwrap();
    let accounts = &app.gw.app.accounts;
    let (_, token) = accounts.invite(email, &[], None, "en").await.unwrap();
    let weak =
        json!({"token": token, "password": "password123", "first_name": "Ivy", "last_name": "I"});
    let answer = app.post("/api/auth/accept-invitation", weak).await;
    check(
        &answer,
        "password",
        "password123",
        Expect::Refused("too easy"),
    );
    let fine = json!({"token": token, "password": PASSWORD, "first_name": "Ivy", "last_name": "I"});
    let answer = app.post("/api/auth/accept-invitation", fine).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_set_before_the_policy_still_signs_in() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.verified_user("old@example.org").await;
    let store = app.store().await;
    let user = store
        .find_by_email(&Email::parse("old@example.org").unwrap())
        .await
        .unwrap()
        .unwrap();
    let hash = PasswordHasher::new(4)
        .unwrap()
        .hash("password")
        .await
        .unwrap();
    store.set_password_hash(user.id, &hash).await.unwrap();
    app.login_with("old@example.org", "password").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registration_form_shows_the_estimators_feedback_in_both_languages() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    let cases = [
        ("en", "qwertyuiop", Some("Password is too easy to guess.")),
        ("ru", "qwertyuiop", Some("Такой пароль легко подобрать.")),
        (
            "en",
            "asdfghjkl;",
            Some("Straight rows of keys are easy to guess."),
        ),
        (
            "ru",
            "asdfghjkl;",
            Some("Ряды клавиш подряд легко подобрать."),
        ),
        ("ru", "{email}", Some("Такой пароль легко подобрать.")),
        (
            "en",
            "short",
            Some("Password must be at least 10 characters long."),
        ),
        (
            "ru",
            "short",
            Some("Пароль должен содержать не меньше 10 символов."),
        ),
        ("en", "correct horse battery staple", None),
    ];
    for (i, (lang, password, shown)) in cases.into_iter().enumerate() {
        let browser = Browser::new(&app.gw.url());
        let page = browser.get(&format!("/auth/register?lang={lang}")).await;
        assert!(page.body.contains("show-password"), "{}", page.body);
        let email = format!("form{i}@example.org");
        let password = password.replace("{email}", &email);
        let fields = [
            ("csrf_token", page.csrf()),
            ("email", email.clone()),
            ("password", password.clone()),
            ("first_name", "Ada".to_owned()),
            ("last_name", "Lovelace".to_owned()),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = browser.post("/auth/register", &fields).await;
        match shown {
            Some(text) => {
                assert_eq!(
                    answer.status,
                    StatusCode::BAD_REQUEST,
                    "{lang} {password:?}"
                );
                assert!(
                    answer.body.contains(text),
                    "{lang} {password:?}: {}",
                    answer.body
                );
                assert!(
                    answer.body.contains("id=\"password-error\""),
                    "{}",
                    answer.body
                );
            }
            None => assert!(answer.status.is_success() || answer.status.is_redirection()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_show_password_toggle_is_a_script_of_the_portals_own() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    let browser = Browser::new(&app.gw.url());
    let page = browser.get("/auth/register").await;
    // Hidden until the script unhides it: without it the field is an ordinary one.
    assert!(
        page.body.contains("<p class=\"show-password\" hidden><input type=\"checkbox\" id=\"password-show\" aria-controls=\"password\">"),
        "{}",
        page.body
    );
    let csp = page.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let script = browser.get("/auth/password.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.body.contains("field.type"), "{}", script.body);
    assert!(
        page.body.contains("password.js\" defer></script>"),
        "{}",
        page.body
    );
}
