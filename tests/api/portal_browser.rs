//! The portal in a real headless Chromium, driven over WebDriver, with axe-core checking
//! every page for accessibility problems.
//!
//! Needs Debian's `chromium` and `chromium-driver`, and `npm` to fetch axe-core into the
//! test's own directory (`.ci/run` installs all three). Without Chromium the test is
//! skipped, unless `CI=true`, where it fails.

use std::path::PathBuf;

use crate::support::EchoUpstream;
use crate::support::app::*;
use crate::support::in_ci;
use crate::support::otp::totp;
use crate::support::webdriver::{self, Browser, ChromeDriver};
use serde_json::{Value, json};

/// `axe.min.js`, installed from npm into the test's own directory when missing.
pub(crate) fn axe_source() -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("axe");
    let script = dir.join("node_modules/axe-core/axe.min.js");
    if !script.exists() {
        std::fs::create_dir_all(&dir).expect("axe directory");
        let status = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg("axe-core@4")
            .status()
            .expect("npm runs (apt-get install npm)");
        assert!(status.success(), "npm install axe-core failed");
    }
    std::fs::read_to_string(&script).expect("axe.min.js")
}

/// Runs axe-core on the current page; panics on any serious or critical violation.
pub(crate) async fn check_accessibility(browser: &Browser, axe: &str, page: &str) {
    let result = axe_violations(browser, axe).await;
    let serious: Vec<&Value> = result
        .as_array()
        .expect("violations")
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    assert!(
        serious.is_empty(),
        "{page}: axe found {serious:#?}\nall: {result:#}"
    );
}

/// Runs axe-core on the current page; panics on any violation at all, whatever its impact.
pub(crate) async fn check_no_violations(browser: &Browser, axe: &str, page: &str) {
    let result = axe_violations(browser, axe).await;
    let found = result.as_array().expect("violations");
    assert!(found.is_empty(), "{page}: axe found {result:#}");
}

/// axe-core's violations on the current page: `{id, impact, help, nodes}` each.
async fn axe_violations(browser: &Browser, axe: &str) -> Value {
    browser
        .execute(&format!("{axe}\n;return typeof window.axe;"), json!([]))
        .await;
    browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             window.axe.run(document, {resultTypes: ['violations']})
               .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                   nodes: v.nodes.map(n => n.target.join(' '))}))))
               .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));",
            json!([]),
        )
        .await
}

/// Saves a screenshot when `PORTCULLIS_SCREENSHOTS` names a directory (for the README).
pub(crate) async fn screenshot(browser: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("PORTCULLIS_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        std::fs::write(
            PathBuf::from(dir).join(format!("{name}.png")),
            browser.screenshot().await,
        )
        .expect("screenshot written");
    }
}

pub(crate) async fn sign_in(browser: &Browser, email: &str) {
    browser.type_into("#email", email).await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("form button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_signs_up_uses_two_factor_stays_signed_in_and_resets_a_password_in_chromium() {
    if !webdriver::available() {
        assert!(!in_ci(), "CI=true but chromium or chromedriver is missing");
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    }
    let axe = axe_source();
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(
        Backend::Embedded,
        &format!(
            "[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"{}\"\npolicy = \"authenticated\"\n",
            up.url()
        ),
        |c| c.tokens.access_ttl = "3s".parse().expect("duration"),
    )
    .await;
    let base = app.gw.url();
    let driver = ChromeDriver::start().await;
    let browser = driver.session("en-US").await;
    let email = "grace@example.com";

    // A protected page sends the browser to sign in, and on to register.
    browser.goto(&format!("{base}/app/home")).await;
    let url = browser.wait_for_url("/auth/login").await;
    assert!(url.contains("return_to=%2Fapp%2Fhome"), "{url}");
    check_accessibility(&browser, &axe, "sign-in").await;
    screenshot(&browser, "login-en").await;
    browser.click("a[href^='/auth/register']").await;
    browser.wait_for_url("/auth/register").await;
    check_accessibility(&browser, &axe, "register").await;
    screenshot(&browser, "register-en").await;
    // A weak password is explained next to its field.
    browser.type_into("#first_name", "Grace").await;
    browser.type_into("#last_name", "Hopper").await;
    browser.type_into("#email", email).await;
    browser.type_into("#password", "weakpass").await;
    browser.click("form button[type=submit]").await;
    browser.find("#password-error").await;
    check_accessibility(&browser, &axe, "register with errors").await;
    screenshot(&browser, "register-errors-en").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("Check your mail").await;
    check_accessibility(&browser, &axe, "check your mail").await;

    // The link in the mail confirms the address.
    let link = app.mail_to(email).await.link().expect("verification link");
    browser.goto(&link).await;
    check_accessibility(&browser, &axe, "verify email").await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("Email address confirmed").await;
    check_accessibility(&browser, &axe, "email confirmed").await;

    // Signed in, the app sees who it is.
    browser.goto(&format!("{base}/app/home")).await;
    browser.wait_for_url("/auth/login").await;
    sign_in(&browser, email).await;
    browser.wait_for_url("/app/home").await;
    let source = browser.source().await;
    assert!(
        source.contains("x-user-email") && source.contains(email),
        "{source}"
    );

    // Two-factor set-up from the account page.
    browser.goto(&format!("{base}/auth/account")).await;
    browser.find("#profile-heading").await;
    check_accessibility(&browser, &axe, "account").await;
    screenshot(&browser, "account-en").await;
    browser
        .click("form[action='/auth/account/2fa/setup'] button")
        .await;
    let secret = browser.text("#secret").await;
    check_accessibility(&browser, &axe, "two-factor set-up").await;
    screenshot(&browser, "two-factor-setup-en").await;
    browser.type_into("#token", &totp(&secret, 0)).await;
    browser.type_into("#enable_password", PASSWORD).await;
    browser.click("form button[type=submit]").await;
    browser.find("ul.codes").await;
    check_accessibility(&browser, &axe, "recovery codes").await;
    let recovery_codes: Vec<String> = browser
        .execute(
            "return Array.from(document.querySelectorAll('ul.codes code')).map(c => c.textContent);",
            json!([]),
        )
        .await
        .as_array()
        .expect("codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    assert_eq!(recovery_codes.len(), 10);

    // Sign out, and back in with a code.
    browser.goto(&format!("{base}/auth/logout")).await;
    check_accessibility(&browser, &axe, "sign-out").await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("You are signed out").await;
    browser.goto(&format!("{base}/app/home")).await;
    browser.wait_for_url("/auth/login").await;
    sign_in(&browser, email).await;
    browser.find("#two_factor_code").await;
    check_accessibility(&browser, &axe, "second step").await;
    screenshot(&browser, "two-factor-en").await;
    browser
        .type_into("#two_factor_code", &totp(&secret, 1))
        .await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_url("/app/home").await;

    // The access token lives 3 s here: the browser stays signed in past it.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    browser.goto(&format!("{base}/app/home?later=1")).await;
    let url = browser.url().await;
    assert!(url.contains("/app/home?later=1"), "{url}");
    assert!(browser.source().await.contains(email));

    // Another device (signed in with a recovery code) is signed out from the account page.
    let other = app
        .post(
            "/api/auth/login",
            json!({"email": email, "password": PASSWORD, "two_factor_code": recovery_codes[0]}),
        )
        .await;
    assert_eq!(other.status, reqwest::StatusCode::OK, "{}", other.body);
    let other_access = other.body["data"]["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    browser.goto(&format!("{base}/auth/account")).await;
    browser
        .click("form[action='/auth/account/sessions/revoke'] button")
        .await;
    browser.wait_for_url("done=session").await;
    browser
        .wait_for_text("That device has been signed out")
        .await;
    check_accessibility(&browser, &axe, "account with a notice").await;
    let r = app.get_as(&other_access, "/api/auth/profile").await;
    assert_eq!(r.status, reqwest::StatusCode::UNAUTHORIZED);

    // A forgotten password is reset from the mailed link.
    browser.goto(&format!("{base}/auth/logout")).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("You are signed out").await;
    browser.goto(&format!("{base}/auth/forgot-password")).await;
    check_accessibility(&browser, &axe, "forgot password").await;
    browser.type_into("#email", email).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("the password is on its way").await;
    let mail = app
        .smtp
        .wait_for(
            |m| m.subject().as_deref() == Some("Portcullis: Reset your password"),
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("reset mail");
    browser.goto(&mail.link().expect("reset link")).await;
    check_accessibility(&browser, &axe, "reset password").await;
    let new_password = "An0ther-Secret!";
    browser.type_into("#password", new_password).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("Password changed").await;

    // Back in with the new password and a recovery code, by keyboard-reachable controls only.
    browser.goto(&format!("{base}/app/home")).await;
    browser.wait_for_url("/auth/login").await;
    browser.type_into("#email", email).await;
    browser.type_into("#password", new_password).await;
    browser.click("form button[type=submit]").await;
    browser.click("details summary").await;
    browser
        .type_into("#recovery_code", &recovery_codes[1])
        .await;
    browser.click("details form button[type=submit]").await;
    browser.wait_for_url("/app/home").await;

    // The same account page in Russian, switched from the page itself.
    browser.goto(&format!("{base}/auth/account")).await;
    browser.click("a[hreflang=ru]").await;
    browser.wait_for_url("lang=ru").await;
    browser.wait_for_text("Ваша учётная запись").await;
    check_accessibility(&browser, &axe, "account (ru)").await;
    screenshot(&browser, "account-ru").await;
    browser.quit().await;

    // A Russian browser gets Russian pages from the start.
    let russian = driver.session("ru-RU").await;
    russian.goto(&format!("{base}/auth/login")).await;
    let source = russian.source().await;
    assert!(source.contains("lang=\"ru\""), "{source}");
    check_accessibility(&russian, &axe, "sign-in (ru)").await;
    screenshot(&russian, "login-ru").await;
    russian.goto(&format!("{base}/auth/register")).await;
    check_accessibility(&russian, &axe, "register (ru)").await;
    screenshot(&russian, "register-ru").await;
    russian.goto(&format!("{base}/auth/forgot-password")).await;
    check_accessibility(&russian, &axe, "forgot password (ru)").await;
    russian.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_adds_a_passkey_and_signs_in_with_it_with_and_without_a_password_in_chromium() {
    if !webdriver::available() {
        assert!(!in_ci(), "CI=true but chromium or chromedriver is missing");
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    }
    let axe = axe_source();
    for backend in backends() {
        let up = EchoUpstream::start().await;
        // Browsers allow WebAuthn on http only for localhost: the gateway is reached by name.
        let app = TestApp::spawn_with(
            backend,
            &format!(
                "[[routes]]\nname = \"secure\"\npath_prefix = \"/secure\"\nupstream = \"{}\"\npolicy = \"two_factor\"\n",
                up.url()
            ),
            |c| c.server.public_url = format!("http://localhost:{}", c.server.listen.port()).parse().unwrap(),
        )
        .await;
        let base = app.gw.app.config.server.public_url.clone();
        let email = "ada.passkey@example.com";
        app.verified_user(email).await;
        let driver = ChromeDriver::start().await;
        let browser = driver.session("en-US").await;
        let authenticator = browser.add_virtual_authenticator().await;

        // Signed in with the password, a passkey is added from the account page.
        browser.goto(&format!("{base}/auth/login")).await;
        check_accessibility(&browser, &axe, "sign-in with passkeys").await;
        sign_in(&browser, email).await;
        browser.wait_for_url("/auth/account").await;
        browser.find("#passkeys-heading").await;
        browser.type_into("#passkey_name", "Laptop").await;
        browser.type_into("#passkey_password", PASSWORD).await;
        browser
            .click("form[action='/auth/account/passkeys/add'] button[type=submit]")
            .await;
        browser
            .find("form[data-passkey=register]:not([hidden])")
            .await;
        check_accessibility(&browser, &axe, "add a passkey").await;
        browser.click("[data-passkey-start]").await;
        browser.wait_for_url("done=passkey_added").await;
        browser.wait_for_text("Your passkey has been added.").await;
        browser.wait_for_text("Laptop").await;
        check_accessibility(&browser, &axe, "account with a passkey").await;
        let held = browser.virtual_credentials(&authenticator).await;
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(
            held[0]["isResidentCredential"], true,
            "a discoverable credential"
        );

        // Signed out, a two_factor page is reached with the passkey alone: the sign-in page
        // offers it in the email field's autofill (conditional mediation), which the virtual
        // authenticator accepts at once.
        browser.goto(&format!("{base}/auth/logout")).await;
        browser.click("form button[type=submit]").await;
        browser.wait_for_text("You are signed out").await;
        browser.goto(&format!("{base}/secure/home")).await;
        browser.wait_for_url("/secure/home").await;
        browser.wait_for_text("x-user-email").await;
        let source = browser.source().await;
        assert!(source.contains(email), "{backend:?}: {source}");
        // Reached through the sign-in page, whose address (its query may carry a mailed
        // token on other pages) the upstream never sees: the Referer is the origin alone.
        assert!(
            source.contains(&format!("[\"referer\",\"{base}/\"]")),
            "{backend:?}: the Referer is the portal's origin only: {source}"
        );
        assert!(!source.contains("return_to"), "{backend:?}: {source}");
        let held = browser.virtual_credentials(&authenticator).await;
        assert!(
            held[0]["signCount"].as_u64().unwrap() >= 1,
            "the passkey signed this sign-in: {held:?}"
        );
        browser.quit().await;

        // Another browser holds the same key as a non-discoverable credential (a security key
        // without storage): no autofill, so the password comes first and the passkey second.
        let other = driver.session("en-US").await;
        let key = other.add_virtual_authenticator().await;
        let mut credential = held[0].clone();
        credential["isResidentCredential"] = json!(false);
        credential.as_object_mut().unwrap().remove("userHandle");
        other.add_virtual_credential(&key, credential).await;
        other.goto(&format!("{base}/secure/home")).await;
        other.wait_for_url("/auth/login").await;
        sign_in(&other, email).await;
        other
            .find("form[data-passkey=second-factor]:not([hidden])")
            .await;
        check_accessibility(&other, &axe, "second step with a passkey").await;
        other.click("[data-passkey-start]").await;
        other.wait_for_url("/secure/home").await;
        other.wait_for_text("x-user-email").await;
        assert!(other.source().await.contains(email));
        other.quit().await;
    }
}

/// An invitation accepted in Chromium, in English and Russian, with axe-core on every page:
/// the form, the form with errors, "account created", and a link that does not work.
#[tokio::test(flavor = "multi_thread")]
async fn an_invitee_creates_their_account_on_the_invitation_page_in_chromium() {
    if !webdriver::available() {
        assert!(!in_ci(), "CI=true but chromium or chromedriver is missing");
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    }
    let axe = axe_source();
    let app = TestApp::spawn(Backend::Embedded, "[registration]\nmode = \"invite\"\n").await;
    let base = app.gw.url();
    let invite = |email: &str| {
        let email = portcullis::domain::Email::parse(email).unwrap();
        let app = std::sync::Arc::clone(&app.gw.app);
        async move { app.accounts.invite(email, &[], None, "en").await.unwrap().1 }
    };
    let driver = ChromeDriver::start().await;
    let browser = driver.session("en-US").await;
    let token = invite("invitee@example.com").await;
    browser
        .goto(&format!("{base}/auth/invitation?token={token}"))
        .await;
    browser.wait_for_text("invitee@example.com").await;
    check_accessibility(&browser, &axe, "invitation").await;
    browser.type_into("#first_name", "Ivy").await;
    browser.type_into("#last_name", "Invitee").await;
    browser.type_into("#password", "weak").await;
    browser.click("form button[type=submit]").await;
    browser
        .wait_for_text("Some fields need your attention")
        .await;
    check_accessibility(&browser, &axe, "invitation with errors").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("Account created").await;
    check_accessibility(&browser, &axe, "account created").await;
    browser
        .goto(&format!("{base}/auth/invitation?token={token}"))
        .await;
    browser.wait_for_text("This invitation does not work").await;
    check_accessibility(&browser, &axe, "invitation refused").await;
    browser.quit().await;

    let russian = driver.session("ru-RU").await;
    let token = invite("priglashenie@example.com").await;
    russian
        .goto(&format!("{base}/auth/invitation?token={token}"))
        .await;
    russian.wait_for_text("Создать учётную запись").await;
    check_accessibility(&russian, &axe, "invitation (ru)").await;
    russian.quit().await;
}

/// The accounts a console walk meets: the administrator's recovery codes (one per sign-in
/// and step-up) and the account the walk changes.
struct ConsoleWorld {
    base: String,
    codes: Vec<String>,
    target: String,
    own: String,
}

/// Signs in through the pages (the password, then a recovery code when `code` is given),
/// starting from a console page, and waits to be back on it.
async fn sign_in_to_console(browser: &Browser, base: &str, email: &str, code: Option<&str>) {
    browser.goto(&format!("{base}/auth/admin")).await;
    browser.wait_for_url("/auth/login").await;
    sign_in(browser, email).await;
    if let Some(code) = code {
        browser.type_into("#two_factor_code", code).await;
        browser
            .click("form:not([data-passkey]) button[type=submit]")
            .await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while browser.url().await.contains("/auth/login") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            browser.source().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Every console page (and the pages that refuse it) in one language, each checked by
/// axe-core: none may have any violation.
async fn walk_the_console(driver: &ChromeDriver, axe: &str, world: &ConsoleWorld, lang: &str) {
    let base = &world.base;
    let name = |page: &str| format!("console: {page} ({lang})");
    let (accept, codes) = match lang {
        "ru" => ("ru-RU", &world.codes[2..4]),
        _ => ("en-US", &world.codes[0..2]),
    };

    // Signed in without the role: the 403 page.
    let user = driver.session(accept).await;
    sign_in_to_console(&user, base, "user@example.com", None).await;
    user.find("main a[href='/auth/account']").await;
    assert!(user.source().await.contains(&format!("lang=\"{lang}\"")));
    check_no_violations(&user, axe, &name("403")).await;
    user.quit().await;

    // The role but no second factor: told to set one up.
    let bare = driver.session(accept).await;
    sign_in_to_console(&bare, base, "bare@example.com", None).await;
    bare.wait_for_url("/auth/admin/step-up").await;
    bare.find("main a[href='/auth/account']").await;
    check_no_violations(&bare, axe, &name("no second factor")).await;
    bare.quit().await;

    let admin = driver.session(accept).await;
    sign_in_to_console(&admin, base, "root@example.com", Some(&codes[0])).await;
    walk_users(&admin, axe, world, lang).await;
    walk_account(&admin, axe, world, lang).await;
    walk_invitations_and_audit(&admin, axe, world, lang).await;

    // The step-up page, and back to the page asked for.
    admin
        .goto(&format!(
            "{base}/auth/admin/step-up?return_to=%2Fauth%2Fadmin%2Finvitations"
        ))
        .await;
    admin.find("#two_factor_code").await;
    check_no_violations(&admin, axe, &name("step-up")).await;
    admin.type_into("#two_factor_code", &codes[1]).await;
    admin
        .click("form:not([data-passkey]) button[type=submit]")
        .await;
    admin.wait_for_url("/auth/admin/invitations").await;

    // The account page leads here.
    admin.goto(&format!("{base}/auth/account")).await;
    admin.find("#console-heading").await;
    admin.click("a[href='/auth/admin']").await;
    admin.find("#users-heading").await;
    admin.quit().await;
}

async fn walk_users(admin: &Browser, axe: &str, world: &ConsoleWorld, lang: &str) {
    let name = |page: &str| format!("console: {page} ({lang})");
    admin.find("#users-heading").await;
    check_no_violations(admin, axe, &name("users")).await;
    if lang == "en" {
        screenshot(admin, "console-users-en").await;
    }
    admin.type_into("#q", "example").await;
    admin.click("form[role=search] button").await;
    admin.wait_for_url("q=example").await;
    admin.find("a[rel=next]").await;
    check_no_violations(admin, axe, &name("users, searched")).await;
    admin.click("a[rel=next]").await;
    admin.wait_for_url("page=2").await;
    check_no_violations(admin, axe, &name("users, second page")).await;

    // The new-account form: refused (the address is taken), then accepted.
    admin.goto(&format!("{}/auth/admin", world.base)).await;
    admin.type_into("#email", "target@example.com").await;
    admin
        .click("form[action='/auth/admin/users'] button[type=submit]")
        .await;
    admin.find("#email-error").await;
    check_no_violations(admin, axe, &name("users, form refused")).await;
    admin
        .type_into("#email", &format!("made-{lang}@example.com"))
        .await;
    admin.type_into("#roles", "ops, billing").await;
    admin.type_into("#password", PASSWORD).await;
    admin
        .click("form[action='/auth/admin/users'] button[type=submit]")
        .await;
    admin.wait_for_url("done=created").await;
    admin.find(".notice").await;
    check_no_violations(admin, axe, &name("new account")).await;
}

async fn walk_account(admin: &Browser, axe: &str, world: &ConsoleWorld, lang: &str) {
    let name = |page: &str| format!("console: {page} ({lang})");
    let base = &world.base;
    admin
        .goto(&format!("{base}/auth/admin/users/{}", world.target))
        .await;
    admin.find("#sessions-caption").await;
    admin.find("#identities-caption").await;
    check_no_violations(admin, axe, &name("account")).await;
    if lang == "ru" {
        screenshot(admin, "console-account-ru").await;
    }
    admin.type_into("#grant_role", "bad/role").await;
    admin.click("form[action$='/grant-role'] button").await;
    admin.find("#grant_role-error").await;
    check_no_violations(admin, axe, &name("account, form refused")).await;
    admin
        .type_into("#grant_role", &format!("editors-{lang}"))
        .await;
    admin.click("form[action$='/grant-role'] button").await;
    admin.wait_for_url("done=role_granted").await;
    admin.find(".notice").await;
    check_no_violations(admin, axe, &name("account, role granted")).await;
    admin
        .goto(&format!("{base}/auth/admin/users/{}", world.own))
        .await;
    admin.find("#sessions-caption").await;
    check_no_violations(admin, axe, &name("own account")).await;
}

async fn walk_invitations_and_audit(admin: &Browser, axe: &str, world: &ConsoleWorld, lang: &str) {
    let name = |page: &str| format!("console: {page} ({lang})");
    let base = &world.base;
    admin.goto(&format!("{base}/auth/admin/invitations")).await;
    admin.find("#invite-heading").await;
    check_no_violations(admin, axe, &name("invitations")).await;
    admin
        .type_into("#email", &format!("guest-{lang}@example.com"))
        .await;
    admin.type_into("#roles", "viewers").await;
    admin
        .click("form[action='/auth/admin/invitations'] button")
        .await;
    admin.wait_for_url("done=invited").await;
    admin.find("#invitations-caption").await;
    check_no_violations(admin, axe, &name("invitations, one sent")).await;

    admin.goto(&format!("{base}/auth/admin/audit")).await;
    admin.find("#events-caption").await;
    check_no_violations(admin, axe, &name("audit trail")).await;
    if lang == "en" {
        screenshot(admin, "console-audit-en").await;
    }
    admin.click("#kind option[value=user_create]").await;
    admin.click("form.filters button").await;
    admin.wait_for_url("kind=user_create").await;
    admin.find("#events-caption").await;
    check_no_violations(admin, axe, &name("audit trail, filtered")).await;
    admin
        .goto(&format!(
            "{base}/auth/admin/audit?since=2021-01-02&until=2021-01-01"
        ))
        .await;
    admin.find("#until-error").await;
    check_no_violations(admin, axe, &name("audit trail, filter refused")).await;
}

/// Every console page in Chromium, in English and Russian, with axe-core finding no
/// violation at all on any of them; and a passkey proving the step-up through the
/// portal's script.
#[tokio::test(flavor = "multi_thread")]
async fn an_administrator_uses_the_console_in_english_and_russian_in_chromium() {
    if !webdriver::available() {
        assert!(!in_ci(), "CI=true but chromium or chromedriver is missing");
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    }
    let axe = axe_source();
    for backend in backends() {
        // Browsers allow WebAuthn on http only for localhost: the gateway is reached by name.
        let app = TestApp::spawn_with(backend, "", |c| {
            c.server.public_url = format!("http://localhost:{}", c.server.listen.port())
                .parse()
                .unwrap()
        })
        .await;
        let base = app.gw.app.config.server.public_url.to_string();
        let base = base.trim_end_matches('/').to_owned();
        app.verified_user("root@example.com").await;
        app.grant_role("root@example.com", "admin").await;
        let (_, codes) = app.enable_totp("root@example.com").await;
        app.verified_user("bare@example.com").await;
        app.grant_role("bare@example.com", "admin").await;
        app.verified_user("user@example.com").await;
        app.register("target@example.com").await;
        app.login("target@example.com").await;
        for n in 0..26 {
            app.register(&format!("page-{n:02}@example.com")).await;
        }
        let store = app.store().await;
        let id_of = |email: &'static str| {
            let store = std::sync::Arc::clone(&store);
            async move {
                let email = email.parse().unwrap();
                store
                    .find_by_email(&email)
                    .await
                    .unwrap()
                    .unwrap()
                    .id
                    .to_string()
            }
        };
        let world = ConsoleWorld {
            base: base.clone(),
            codes,
            target: id_of("target@example.com").await,
            own: id_of("root@example.com").await,
        };
        // The target's page lists a linked identity, with its remove form.
        let identity = portcullis::store::NewLinkedIdentity {
            user_id: world.target.parse().unwrap(),
            provider: "corp".into(),
            subject: "target-at-corp".into(),
            email: "target@corp.example".into(),
        };
        assert!(store.link_identity(&identity).await.unwrap());
        let driver = ChromeDriver::start().await;
        walk_the_console(&driver, &axe, &world, "en").await;
        walk_the_console(&driver, &axe, &world, "ru").await;
        step_up_with_a_passkey(&driver, &axe, &world).await;
    }
}

/// A passkey added on the account page proves the step-up through `passkeys.js`.
async fn step_up_with_a_passkey(driver: &ChromeDriver, axe: &str, world: &ConsoleWorld) {
    let base = &world.base;
    let admin = driver.session("en-US").await;
    admin.add_virtual_authenticator().await;
    sign_in_to_console(&admin, base, "root@example.com", Some(&world.codes[4])).await;
    admin.goto(&format!("{base}/auth/account")).await;
    admin.type_into("#passkey_name", "Laptop").await;
    admin.type_into("#passkey_password", PASSWORD).await;
    admin
        .type_into("#passkey_two_factor_code", &world.codes[5])
        .await;
    admin
        .click("form[action='/auth/account/passkeys/add'] button[type=submit]")
        .await;
    admin
        .find("form[data-passkey=register]:not([hidden])")
        .await;
    admin.click("[data-passkey-start]").await;
    admin.wait_for_url("done=passkey_added").await;

    admin
        .goto(&format!(
            "{base}/auth/admin/step-up?return_to=%2Fauth%2Fadmin%2Faudit"
        ))
        .await;
    admin
        .find("form[data-passkey=second-factor]:not([hidden])")
        .await;
    check_no_violations(&admin, axe, "console: step-up with a passkey").await;
    admin.click("[data-passkey-start]").await;
    admin.wait_for_url("/auth/admin/audit").await;
    admin.find("#events-caption").await;
    admin.quit().await;
}

/// A signed-in browser refused a page for want of a role sees a page in its language; sent
/// to a `two_factor` page, it is offered the setup, sets TOTP up (which proves it in this
/// session) and lands on the page. Every page on the way is checked with axe-core.
#[tokio::test(flavor = "multi_thread")]
async fn refused_pages_and_the_second_factor_step_in_chromium() {
    if !webdriver::available() {
        assert!(!in_ci(), "CI=true but chromium or chromedriver is missing");
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    }
    let axe = axe_source();
    let up = EchoUpstream::start().await;
    let u = up.url();
    let app = TestApp::spawn(
        Backend::Embedded,
        &format!(
            "[[routes]]\nname = \"ops\"\npath_prefix = \"/ops\"\nupstream = \"{u}\"\n\
             policy = \"authenticated\"\nroles = [\"ops\"]\n\
             [[routes]]\nname = \"secure\"\npath_prefix = \"/secure\"\nupstream = \"{u}\"\n\
             policy = \"two_factor\"\n"
        ),
    )
    .await;
    let base = app.gw.url();
    let driver = ChromeDriver::start().await;
    for (session_language, email, title) in [
        ("en-US", "refused@example.com", "You do not have access"),
        ("ru-RU", "otkaz@example.com", "Нет доступа"),
    ] {
        app.verified_user(email).await;
        let browser = driver.session(session_language).await;
        browser.goto(&format!("{base}/ops/page")).await;
        browser.wait_for_url("/auth/login").await;
        sign_in(&browser, email).await;
        browser.wait_for_text(title).await;
        check_accessibility(&browser, &axe, &format!("refused ({session_language})")).await;
        browser.goto(&format!("{base}/secure/page")).await;
        browser.wait_for_url("/auth/second-factor").await;
        check_accessibility(&browser, &axe, &format!("setup offer ({session_language})")).await;
        if session_language == "ru-RU" {
            browser.quit().await;
            continue;
        }
        browser.click("form button[type=submit]").await;
        browser.wait_for_url("/auth/account/2fa/setup").await;
        let secret = browser.text("#secret").await;
        browser.type_into("#token", &totp(&secret, -1)).await;
        browser.type_into("#enable_password", PASSWORD).await;
        browser.click("form button[type=submit]").await;
        browser.wait_for_text("second-factor?return_to").await;
        // The code that turned TOTP on proved it in this session: the step sends the
        // browser straight on to the page.
        browser.click("a[href^='/auth/second-factor']").await;
        browser.wait_for_url("/secure/page").await;
        browser.wait_for_text("\"path\":\"/secure/page\"").await;
        browser.quit().await;
    }
}

/// A route with `max_auth_age`: a browser signed in longer ago than the window is sent to the
/// reauthentication page (axe-clean), proves itself with the password and lands back on the
/// page it asked for.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_sign_in_proves_itself_again_and_lands_on_the_page_in_chromium() {
    if !webdriver::available() {
        assert!(!in_ci(), "CI=true but chromium or chromedriver is missing");
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    }
    let axe = axe_source();
    let up = EchoUpstream::start().await;
    let driver = ChromeDriver::start().await;
    for backend in backends() {
        stale_sign_in_in(backend, &driver, &axe, &up.url()).await;
    }
}

async fn stale_sign_in_in(backend: Backend, driver: &ChromeDriver, axe: &str, upstream: &str) {
    let app = TestApp::spawn(
        backend,
        &format!(
            "[[routes]]\nname = \"recent\"\npath_prefix = \"/recent\"\nupstream = \"{upstream}\"\n\
             policy = \"authenticated\"\nmax_auth_age = \"2s\"\n"
        ),
    )
    .await;
    let base = app.gw.url();
    let email = "stale@example.com";
    app.verified_user(email).await;
    let browser = driver.session("en-US").await;
    browser.goto(&format!("{base}/recent/page")).await;
    browser.wait_for_url("/auth/login").await;
    sign_in(&browser, email).await;
    browser.wait_for_text("\"path\":\"/recent/page\"").await;

    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
    browser.goto(&format!("{base}/recent/page")).await;
    let url = browser.wait_for_url("/auth/reauthenticate").await;
    assert!(url.contains("return_to=%2Frecent%2Fpage"), "{url}");
    browser.find("#password").await;
    check_no_violations(&browser, axe, "reauthenticate").await;
    screenshot(&browser, "reauthenticate-en").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_url("/recent/page").await;
    browser.wait_for_text("\"path\":\"/recent/page\"").await;
    browser.quit().await;
}
