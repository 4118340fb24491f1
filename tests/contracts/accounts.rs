//! The account core called directly, as the portal and the proxy call it: the steps of a
//! sign-in (the pending second step held on the server, used once), the step-up, a
//! refresh whose principal comes from the token it minted, an account's mailed links
//! (registration, verification, reset) and the management of second factors (TOTP on and
//! off, passkeys removed) behind the step-up. The HTTP answers these map to are the API
//! stories' (`tests/api/login_api.rs`, `two_factor_api.rs`, `account_api.rs`).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::accounts::{
    AccountError, Client, PasskeyName, PendingId, Registration, ResetForm, SecondFactor, SignIn,
    StepUp, TotpEnable,
};
use portcullis::app::App;
use portcullis::auth::totp::TotpSecret;
use portcullis::domain::{Email, PasskeyId};
use portcullis::session::SessionId;
use portcullis::store::{NewUser, User, UserStore};

use crate::support::otp::totp;
use crate::support::smtp::ReceivedMail;
use crate::support::{Scratch, parse_config, test_config_text};

const PASSWORD: &str = "Amber-Lantern-Drift-7";

const CLIENT: Client<'static> = Client {
    ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
    user_agent: "core-test",
    language: "en",
};

/// An instance on SQLite and in-process sessions, with `max_failed_attempts = 3`.
fn app(scratch: &Scratch) -> Arc<App> {
    let text = test_config_text(scratch.dir.path(), "[lockout]\nmax_failed_attempts = 3\n");
    App::new(parse_config(&text)).expect("app state")
}

/// A connection of its own to the instance's database, as the operator's CLI opens it.
async fn store(app: &App) -> Arc<dyn UserStore> {
    portcullis::store::connect(&app.config.storage.url, 2)
        .await
        .expect("the instance's database")
}

async fn user(app: &App, email: &str) -> User {
    let hash = app.hasher.hash(PASSWORD).await.expect("hash");
    let new = NewUser {
        email: Email::parse(email).expect("email"),
        password_hash: hash,
        first_name: "Core".into(),
        last_name: "Test".into(),
        language: String::new(),
    };
    store(app).await.create_user(new).await.expect("user")
}

/// Turns TOTP on for `user`; the secret in base32.
async fn with_totp(app: &App, user: &User) -> String {
    let secret = TotpSecret::generate();
    let sealed = app
        .two_factor
        .secret_box()
        .seal_secret(user.id, &secret)
        .expect("seal");
    store(app)
        .await
        .set_two_factor(user.id, Some(sealed))
        .await
        .expect("2FA on");
    secret.to_base32()
}

fn sign_in<'a>(email: &'a str, password: &'a str, hold_pending: bool) -> SignIn<'a> {
    SignIn {
        email,
        password,
        remember_me: false,
        second: SecondFactor::Code(None),
        hold_pending,
    }
}

fn code(text: &str) -> SecondFactor {
    SecondFactor::Code(Some(text.to_owned()))
}

#[tokio::test]
async fn a_held_second_step_is_finished_once_and_a_wrong_code_gets_a_fresh_one() {
    let scratch = Scratch::new();
    let app = app(&scratch);
    let ada = user(&app, "ada@example.com").await;
    let secret = with_totp(&app, &ada).await;
    let accounts = &app.accounts;

    let Err(AccountError::SecondFactorRequired(step)) = accounts
        .sign_in(sign_in("ada@example.com", PASSWORD, true), &CLIENT)
        .await
    else {
        panic!("a right password asks for the second factor");
    };
    assert_eq!(step.methods, ["totp"]);
    let first = step.pending.expect("held for the page");

    let Err(AccountError::WrongSecondFactor(again)) = accounts
        .finish_sign_in(&first, code("000000"), &CLIENT)
        .await
    else {
        panic!("a wrong code is refused with a fresh step");
    };
    let second = again.pending.expect("a fresh id");
    assert_ne!(first.as_str(), second.as_str());
    assert!(
        matches!(
            accounts
                .finish_sign_in(&first, code(&totp(&secret, 0)), &CLIENT)
                .await,
            Err(AccountError::PendingExpired)
        ),
        "an id is used once"
    );

    let signed = accounts
        .finish_sign_in(&second, code(&totp(&secret, 0)), &CLIENT)
        .await
        .expect("the right code signs in");
    assert_eq!(signed.user.id, ada.id);
    assert!(
        matches!(
            accounts
                .finish_sign_in(&second, code(&totp(&secret, 0)), &CLIENT)
                .await,
            Err(AccountError::PendingExpired)
        ),
        "a finished step cannot sign in again"
    );
    for junk in [
        "",
        "AAAA",
        &"G".repeat(64),
        &format!(" {}0", second.as_str()),
    ] {
        assert!(
            matches!(junk.parse::<PendingId>(), Err(AccountError::PendingExpired)),
            "{junk:?}"
        );
    }
}

#[tokio::test]
async fn without_holding_nothing_is_held_and_wrong_codes_lock_the_account() {
    let scratch = Scratch::new();
    let app = app(&scratch);
    let bob = user(&app, "bob@example.com").await;
    let secret = with_totp(&app, &bob).await;
    let accounts = &app.accounts;

    let Err(AccountError::SecondFactorRequired(step)) = accounts
        .sign_in(sign_in("bob@example.com", PASSWORD, false), &CLIENT)
        .await
    else {
        panic!("a right password asks for the second factor");
    };
    assert!(step.pending.is_none(), "the API holds nothing");

    for _ in 0..3 {
        let mut input = sign_in("bob@example.com", PASSWORD, false);
        input.second = code("000000");
        assert!(matches!(
            accounts.sign_in(input, &CLIENT).await,
            Err(AccountError::InvalidCredentials)
        ));
    }
    let mut input = sign_in("bob@example.com", PASSWORD, false);
    input.second = code(&totp(&secret, 0));
    assert!(
        matches!(
            accounts.sign_in(input, &CLIENT).await,
            Err(AccountError::Locked)
        ),
        "three wrong codes lock, the right one then meets the lock"
    );
}

#[tokio::test]
async fn unknown_and_malformed_addresses_are_answered_as_wrong_passwords() {
    let scratch = Scratch::new();
    let app = app(&scratch);
    user(&app, "cy@example.com").await;
    for (email, password) in [
        ("cy@example.com", "Wrong-Password-1"),
        ("nobody@example.com", PASSWORD),
        ("not an address", PASSWORD),
    ] {
        let refused = app
            .accounts
            .sign_in(sign_in(email, password, true), &CLIENT)
            .await;
        assert!(
            matches!(refused, Err(AccountError::InvalidCredentials)),
            "{email}"
        );
    }
}

#[tokio::test]
async fn the_step_up_names_the_wrong_field_and_counts_toward_the_lock() {
    let scratch = Scratch::new();
    let app = app(&scratch);
    let dee = user(&app, "dee@example.com").await;
    let secret = with_totp(&app, &dee).await;
    let dee = store(&app)
        .await
        .find_by_id(dee.id)
        .await
        .expect("store")
        .expect("dee");
    let accounts = &app.accounts;
    let proof = |password, code| StepUp {
        password,
        password_field: "current_password",
        code,
    };
    let cases = [
        (proof("Wrong-Password-1", None), "current_password"),
        (proof(PASSWORD, Some("000000")), "two_factor_code"),
    ];
    for (step_up, field) in cases {
        match accounts.step_up(&dee, step_up, &CLIENT).await {
            Err(AccountError::Field { field: named, .. }) => assert_eq!(named, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let right = totp(&secret, 0);
    accounts
        .step_up(&dee, proof(PASSWORD, Some(&right)), &CLIENT)
        .await
        .expect("the password and a current code pass");
}

#[tokio::test]
async fn a_refresh_gives_the_principal_of_the_token_it_minted_and_a_reuse_ends_the_session() {
    let scratch = Scratch::new();
    let app = app(&scratch);
    let eve = user(&app, "eve@example.com").await;
    let accounts = &app.accounts;
    let signed = accounts
        .sign_in(sign_in("eve@example.com", PASSWORD, false), &CLIENT)
        .await
        .expect("signs in");
    let renewed = accounts
        .refresh(&signed.tokens.refresh_token, &CLIENT)
        .await
        .expect("renews");
    assert_eq!(renewed.principal.user_id(), eve.id);
    assert_eq!(renewed.principal.email(), "eve@example.com");
    let checked = app
        .access
        .check(&renewed.tokens.access_token)
        .await
        .expect("the minted token is accepted");
    assert_eq!(checked.session_id(), renewed.principal.session_id());

    // Within the grace window, a used token gets the same successor.
    let again = accounts
        .refresh(&signed.tokens.refresh_token, &CLIENT)
        .await
        .expect("within the grace window");
    assert_eq!(again.principal.session_id(), renewed.principal.session_id());
    for junk in ["", "x", "not.a-token"] {
        assert!(
            matches!(
                accounts.refresh(junk, &CLIENT).await,
                Err(AccountError::InvalidRefreshToken)
            ),
            "{junk:?}"
        );
    }
}

/// The token of the first mail under `subject` in the instance's outbox (10 s at most).
async fn mailed_token(scratch: &Scratch, subject: &str) -> String {
    let outbox = scratch.path("data/outbox");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for entry in std::fs::read_dir(&outbox).expect("outbox").flatten() {
            let Ok(raw) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let mail = ReceivedMail::from_eml(&raw);
            if mail.subject().as_deref() == Some(subject)
                && let Some(token) = mail.token()
            {
                return token;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no mail {subject:?} in {}", outbox.display());
}

#[tokio::test]
async fn a_registration_is_proven_by_its_mailed_link_once_and_then_signs_in() {
    let scratch = Scratch::new();
    let app = app(&scratch);
    let accounts = &app.accounts;
    let form = Registration {
        email: " Fay@Example.com ",
        password: PASSWORD,
        first_name: " Fay ",
        last_name: "Core",
    };
    let fay = accounts
        .register(form.parse().expect("fit"), &CLIENT)
        .await
        .expect("registers");
    assert_eq!(fay.email.as_str(), "fay@example.com");
    assert_eq!(fay.first_name, "Fay");
    assert!(!fay.is_verified);
    let again = accounts.register(form.parse().expect("fit"), &CLIENT).await;
    assert!(
        matches!(
            again,
            Err(AccountError::Store(
                portcullis::store::StoreError::DuplicateEmail
            ))
        ),
        "{again:?}"
    );

    // The address's owner is offered a reset link (the first registrant need not be them);
    // the verification link still works until the address is proven.
    mailed_token(&scratch, "Portcullis: Reset your password").await;
    let token = mailed_token(&scratch, "Portcullis: Confirm your email address").await;
    assert_eq!(accounts.verify_email(&token).await.expect("proves"), fay.id);
    for spent in [token.as_str(), "", "not a token"] {
        assert!(
            matches!(
                accounts.verify_email(spent).await,
                Err(AccountError::InvalidLink)
            ),
            "{spent:?}"
        );
    }
    let fay = store(&app).await.find_by_id(fay.id).await.unwrap().unwrap();
    assert!(fay.is_verified);
    assert!(matches!(
        accounts.resend_verification(&fay, &CLIENT).await,
        Err(AccountError::AlreadyVerified)
    ));
    accounts
        .sign_in(sign_in("fay@example.com", PASSWORD, false), &CLIENT)
        .await
        .expect("signs in");
}

#[test]
fn a_registration_names_every_field_at_fault_as_the_api_does() {
    let form = Registration {
        email: "not-an-email",
        password: "short",
        first_name: "",
        last_name: "\u{202E}evil",
    };
    let Err(AccountError::Invalid(errors)) = form.parse() else {
        panic!("refused");
    };
    let fields: HashSet<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        // The password is judged once the rest is valid: its strength is estimated against
        // the account's own address and names.
        HashSet::from(["email", "first_name", "last_name"])
    );
    assert!(
        errors
            .iter()
            .any(|e| e.field == "first_name" && e.message == "First name is required.")
    );
}

#[tokio::test]
async fn a_reset_link_sets_the_password_once_and_ends_every_session() {
    let scratch = Scratch::new();
    let app = app(&scratch);
    let gil = user(&app, "gil@example.com").await;
    let accounts = &app.accounts;
    for _ in 0..2 {
        accounts
            .sign_in(sign_in("gil@example.com", PASSWORD, false), &CLIENT)
            .await
            .expect("signs in");
    }
    // Unknown addresses are answered alike, and get nothing.
    for email in ["nobody@example.com", "gil@example.com"] {
        accounts.request_password_reset(Email::parse(email).unwrap(), &CLIENT);
    }
    let token = mailed_token(&scratch, "Portcullis: Reset your password").await;

    let new_password = "Quiet-Meadow-Ferry-42";
    let (token, password) = ResetForm {
        token: &token,
        password: new_password,
    }
    .parse()
    .expect("fit");
    let ended = accounts
        .reset_password(token, password.clone(), &CLIENT)
        .await
        .expect("resets");
    assert_eq!(ended, 2);
    assert!(accounts.sessions_of(&gil).await.unwrap().is_empty());
    assert!(matches!(
        accounts.reset_password(token, password, &CLIENT).await,
        Err(AccountError::InvalidLink)
    ));
    assert!(matches!(
        accounts
            .sign_in(sign_in("gil@example.com", PASSWORD, false), &CLIENT)
            .await,
        Err(AccountError::InvalidCredentials)
    ));
    accounts
        .sign_in(sign_in("gil@example.com", new_password, false), &CLIENT)
        .await
        .expect("the new password signs in");
}

/// `user` with a proven address, read afresh.
async fn verified(app: &App, user: &User) -> User {
    store(app)
        .await
        .mark_verified(user.id)
        .await
        .expect("verify");
    reread(app, user).await
}

async fn reread(app: &App, user: &User) -> User {
    let found = store(app).await.find_by_id(user.id).await.expect("store");
    found.expect("the account")
}

fn proof<'a>(password: &'a str, code: Option<&'a str>) -> StepUp<'a> {
    StepUp {
        password,
        password_field: "password",
        code,
    }
}

/// The fields an `Invalid` names, in order.
fn named(refused: Result<impl std::fmt::Debug, AccountError>) -> Vec<String> {
    match refused {
        Err(AccountError::Invalid(errors)) => errors.iter().map(|e| e.field.clone()).collect(),
        other => panic!("not a field refusal: {other:?}"),
    }
}

#[tokio::test]
async fn turning_totp_on_takes_the_password_then_every_sign_in_takes_a_code() {
    let scratch = Scratch::new();
    let app = app(&scratch);
    let fay = user(&app, "fay@example.com").await;
    let accounts = &app.accounts;
    assert!(matches!(
        accounts
            .setup_two_factor(&fay, proof("", None), &CLIENT)
            .await,
        Err(AccountError::EmailNotVerified(_))
    ));
    let fay = verified(&app, &fay).await;
    let before = accounts
        .sign_in(sign_in("fay@example.com", PASSWORD, false), &CLIENT)
        .await
        .expect("a password alone, for now");

    let setup = accounts
        .setup_two_factor(&fay, proof("", None), &CLIENT)
        .await
        .expect("a secret to scan");
    let enable = |code: String| TotpEnable {
        secret: TotpSecret::from_base32(&setup.secret_base32).expect("base32"),
        code,
    };
    let keep = SessionId::generate();
    let wrong = accounts
        .enable_two_factor(
            &fay,
            &keep,
            &enable(totp(&setup.secret_base32, 0)),
            proof("Wrong-Password-1", None),
            &CLIENT,
        )
        .await;
    assert!(
        matches!(
            wrong,
            Err(AccountError::Field {
                field: "password",
                ..
            })
        ),
        "{wrong:?}"
    );
    let stale = accounts
        .enable_two_factor(
            &fay,
            &keep,
            &enable("000000".into()),
            proof(PASSWORD, None),
            &CLIENT,
        )
        .await;
    assert!(
        matches!(stale, Err(AccountError::Field { field: "token", .. })),
        "{stale:?}"
    );
    let now = totp(&setup.secret_base32, 0);
    let codes = accounts
        .enable_two_factor(
            &fay,
            &keep,
            &enable(now.clone()),
            proof(PASSWORD, None),
            &CLIENT,
        )
        .await
        .expect("the password and the app's code turn it on");
    assert_eq!(codes.len(), 10);
    assert!(
        matches!(
            accounts
                .refresh(&before.tokens.refresh_token, &CLIENT)
                .await,
            Err(AccountError::InvalidRefreshToken)
        ),
        "a session that never passed the new factor has ended"
    );

    let Err(AccountError::SecondFactorRequired(step)) = accounts
        .sign_in(sign_in("fay@example.com", PASSWORD, false), &CLIENT)
        .await
    else {
        panic!("the password alone no longer signs in");
    };
    assert_eq!(step.methods, ["totp"]);
    let with = |code: &str| SignIn {
        second: SecondFactor::Code(Some(code.to_owned())),
        ..sign_in("fay@example.com", PASSWORD, false)
    };
    assert!(
        matches!(
            accounts.sign_in(with(&now), &CLIENT).await,
            Err(AccountError::CodeReplayed(_))
        ),
        "the code that turned it on is not replayed"
    );
    accounts
        .sign_in(with(&codes[0]), &CLIENT)
        .await
        .expect("a recovery code signs in");
}

#[tokio::test]
async fn turning_totp_off_or_replacing_it_takes_the_step_up_with_a_code() {
    let scratch = Scratch::new();
    let app = app(&scratch);
    let gus = user(&app, "gus@example.com").await;
    let gus = verified(&app, &gus).await;
    let secret = with_totp(&app, &gus).await;
    let gus = reread(&app, &gus).await;
    let accounts = &app.accounts;

    assert!(matches!(
        accounts
            .setup_two_factor(&gus, proof("", None), &CLIENT)
            .await,
        Err(AccountError::TwoFactorAlreadyEnabled)
    ));
    assert_eq!(
        named(
            accounts
                .setup_two_factor(&gus, proof(PASSWORD, None), &CLIENT)
                .await
        ),
        ["two_factor_code"],
        "a replacement takes a code"
    );
    assert_eq!(
        named(
            accounts
                .disable_two_factor(&gus, proof("", Some(" ")), &CLIENT)
                .await
        ),
        ["password", "two_factor_code"],
        "blanks are named before any guess counts"
    );
    let wrong = accounts
        .disable_two_factor(&gus, proof(PASSWORD, Some("000000")), &CLIENT)
        .await;
    assert!(
        matches!(
            wrong,
            Err(AccountError::Field {
                field: "two_factor_code",
                ..
            })
        ),
        "{wrong:?}"
    );
    accounts
        .disable_two_factor(&gus, proof(PASSWORD, Some(&totp(&secret, 0))), &CLIENT)
        .await
        .expect("the password and a current code turn it off");

    let gus = reread(&app, &gus).await;
    assert!(!gus.two_factor_enabled);
    assert!(matches!(
        accounts
            .disable_two_factor(&gus, proof(PASSWORD, None), &CLIENT)
            .await,
        Err(AccountError::TwoFactorNotEnabled)
    ));
    accounts
        .sign_in(sign_in("gus@example.com", PASSWORD, false), &CLIENT)
        .await
        .expect("the password alone signs in again");
}

#[tokio::test]
async fn removing_a_passkey_takes_the_step_up_before_anything_is_looked_up() {
    let scratch = Scratch::new();
    let app = app(&scratch);
    let hal = user(&app, "hal@example.com").await;
    let accounts = &app.accounts;
    let unknown = Some(PasskeyId::random());
    let wrong = accounts
        .remove_passkey(&hal, unknown, proof("Wrong-Password-1", None), &CLIENT)
        .await;
    assert!(
        matches!(
            wrong,
            Err(AccountError::Field {
                field: "password",
                ..
            })
        ),
        "{wrong:?}"
    );
    for id in [unknown, None] {
        assert!(matches!(
            accounts
                .remove_passkey(&hal, id, proof(PASSWORD, None), &CLIENT)
                .await,
            Err(AccountError::PasskeyNotFound)
        ));
    }
    let name = PasskeyName::parse("Laptop").expect("a fit name");
    assert!(matches!(
        accounts
            .rename_passkey(&hal, PasskeyId::random(), &name)
            .await,
        Err(AccountError::PasskeyNotFound)
    ));
    assert!(accounts.passkeys_of(&hal).await.expect("store").is_empty());
}
