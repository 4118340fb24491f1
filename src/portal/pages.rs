//! The pages: one function per form, each turning the form into a call of the account core
//! (sign-in, sign-out, registration, verification, reset, sessions, the account page's
//! reads and forms, two-factor and passkey management), and the answer into the next page.

pub(super) mod federation;
mod invitation;
pub(super) mod passkeys;
mod reauth;
pub(super) mod second_factor;

use http::StatusCode;
use minijinja::Value;
use serde_json::json;

use super::{Feedback, Form, Page, Visit, to_value};
use crate::accounts::NewAccount;
use crate::accounts::fields::FieldErrors;
use crate::accounts::{
    AccountError, PasswordChange, PendingId, ProfileChange, Registration, ResetForm, SecondFactor,
    SecondStep, SignIn, StepUp, Tokens, verified_for_two_factor,
};
use crate::api::browser;
use crate::api::endpoints::Limit;
use crate::auth::secrets::is_token_shaped;
use crate::config::Refusal;
use crate::reply::Reply;
use crate::session::SessionId;
use crate::store::{StoreError, User};

/// Paths (below the prefix) that show a page.
pub(super) const GET_PATHS: &[&str] = &[
    "/reauthenticate",
    "",
    "/login",
    "/register",
    "/verify-email",
    "/forgot-password",
    "/reset-password",
    "/invitation",
    "/account",
    "/logout",
    "/second-factor",
];

/// Paths (below the prefix) that take a form.
pub(super) const POST_PATHS: &[&str] = &[
    "/reauthenticate",
    "/login",
    "/register",
    "/verify-email",
    "/forgot-password",
    "/reset-password",
    "/invitation",
    "/invitation/passkey",
    "/invitation/passkey/finish",
    "/logout",
    "/account/profile",
    "/account/password",
    "/account/sessions/revoke",
    "/account/logout-all",
    "/account/2fa/setup",
    "/account/2fa/enable",
    "/account/2fa/disable",
    "/account/2fa/recovery-codes",
    "/account/resend-verification",
    "/account/deactivate",
    "/login/passkey",
    "/account/passkeys/add",
    "/account/passkeys/register",
    "/account/passkeys/rename",
    "/account/passkeys/remove",
    "/account/identities/link",
    "/account/identities/unlink",
    "/second-factor",
];

/// Notices an account page may show after a form succeeded (`?done=`).
const NOTICES: &[(&str, &str)] = &[
    ("profile", "notice_profile"),
    ("password", "notice_password"),
    ("session", "notice_session"),
    ("two_factor_disabled", "notice_two_factor_disabled"),
    ("verification_sent", "notice_verification_sent"),
    ("passkey_added", "notice_passkey_added"),
    ("passkey_renamed", "notice_passkey_renamed"),
    ("passkey_removed", "notice_passkey_removed"),
    ("identity_linked", "notice_identity_linked"),
    ("identity_unlinked", "notice_identity_unlinked"),
];

/// Shows the page at `sub` (a member of [`GET_PATHS`]).
pub(super) async fn get(v: &mut Visit<'_>, sub: &str) -> Page {
    match sub {
        "" => {
            let account = v.path("/account");
            v.redirect(&account)
        }
        "/login" => login_page(v).await,
        "/reauthenticate" => reauth::page(v).await,
        "/register" => {
            let return_to = v.return_to_query();
            render_register(
                v,
                StatusCode::OK,
                Feedback::default(),
                return_to,
                &Form(vec![]),
            )
        }
        "/verify-email" => match v.query("token").filter(|t| is_token_shaped(t)) {
            Some(token) => {
                let token = token.to_owned();
                let return_to = v
                    .query("return_to")
                    .and_then(|r| v.portal.safe_return_to(r));
                v.render(
                    "verify_email.html",
                    StatusCode::OK,
                    "verify_email_title",
                    Feedback::default(),
                    vec![
                        ("token", Value::from(token)),
                        ("return_to", Value::from(return_to)),
                    ],
                )
            }
            None => link_invalid(v),
        },
        "/forgot-password" => v.render(
            "forgot_password.html",
            StatusCode::OK,
            "forgot_password_title",
            Feedback::default(),
            vec![],
        ),
        "/reset-password" => match v.query("token").filter(|t| is_token_shaped(t)) {
            Some(token) => {
                let token = token.to_owned();
                render_reset(v, StatusCode::OK, Feedback::default(), token)
            }
            None => link_invalid(v),
        },
        "/invitation" => invitation::page(v).await,
        "/account" => {
            let Some(token) = v.signed_in().await else {
                return to_sign_in(v);
            };
            let notice = v
                .query("done")
                .and_then(|d| NOTICES.iter().find(|(name, _)| *name == d))
                .map(|(_, key)| v.t(key));
            let feedback = Feedback {
                notice,
                ..Feedback::default()
            };
            account_page(v, &token, StatusCode::OK, feedback).await
        }
        "/logout" => v.render(
            "logout.html",
            StatusCode::OK,
            "logout_title",
            Feedback::default(),
            vec![],
        ),
        "/second-factor" => second_factor::page(v).await,
        _ => v.not_found(),
    }
}

/// Takes the form posted to `sub` (a member of [`POST_PATHS`]), CSRF already checked.
pub(super) async fn post(v: &mut Visit<'_>, sub: &str, form: Form) -> Page {
    match sub {
        "/login" => login(v, form).await,
        "/login/passkey" => passkeys::sign_in(v, form).await,
        "/reauthenticate" => reauth::prove(v, form).await,
        "/register" => register(v, form).await,
        "/verify-email" => verify_email(v, form).await,
        "/forgot-password" => forgot_password(v, form).await,
        "/reset-password" => reset_password(v, form).await,
        "/invitation" => invitation::accept(v, form).await,
        "/invitation/passkey" => invitation::begin_passkey(v, form).await,
        "/invitation/passkey/finish" => invitation::finish_passkey(v, form).await,
        "/logout" => logout(v).await,
        "/second-factor" => second_factor::prove(v, &form).await,
        account => {
            let Some(token) = v.signed_in().await else {
                return to_sign_in(v);
            };
            account_action(v, account, &token, form).await
        }
    }
}

/// Sends a browser that is not signed in to the sign-in page, to come back to its account.
fn to_sign_in(v: &mut Visit<'_>) -> Page {
    let account = v.path("/account");
    let login = v.path_with_return("/login", Some(&account));
    v.redirect(&login)
}

fn link_invalid(v: &mut Visit<'_>) -> Page {
    let login = v.path("/login");
    v.message(
        StatusCode::BAD_REQUEST,
        "link_invalid_title",
        &["link_invalid_text"],
        Some((login, "back_to_sign_in")),
    )
}

/// `GET /login`: straight on when the browser is (or can be renewed) signed in — unless it
/// presents a Bearer token of its own: the route refused that token, not the cookie, and
/// sending it back would bring it here again, round and round.
async fn login_page(v: &mut Visit<'_>) -> Page {
    let return_to = v.return_to_query();
    let own_token = crate::access::credentials::presents_bearer(&v.request.headers);
    if !own_token && v.signed_in().await.is_some() {
        let target = return_to.unwrap_or_else(|| v.path("/account"));
        return v.redirect(&target);
    }
    render_login(v, StatusCode::OK, Feedback::default(), return_to, "", false)
}

/// A sign-in the account core accepted: the browser gets its cookies and goes on to
/// `return_to` (the account page when there is none).
fn signed_in(v: &mut Visit<'_>, tokens: &Tokens, return_to: Option<String>) -> Page {
    let cookies = browser::cookies_of(v.app, tokens);
    v.clear_stray_cookies();
    v.cookies.extend(cookies);
    v.rotate_csrf();
    let target = return_to.unwrap_or_else(|| v.path("/account"));
    v.redirect(&target)
}

fn render_login(
    v: &mut Visit<'_>,
    status: StatusCode,
    feedback: Feedback,
    return_to: Option<String>,
    email: &str,
    remember_me: bool,
) -> Page {
    // No way to sign up: no link to a page without a form.
    let register_href = match v.app.config.registration.refuses_everyone() {
        Some(_) => String::new(),
        None => v.path_with_return("/register", return_to.as_deref()),
    };
    let providers = federation::buttons(v, return_to.as_deref());
    v.render(
        "login.html",
        status,
        "sign_in_title",
        feedback,
        vec![
            ("return_to", Value::from(return_to.unwrap_or_default())),
            ("register_href", Value::from(register_href)),
            ("providers", providers),
            (
                "values",
                to_value(json!({"email": email, "remember_me": remember_me})),
            ),
        ],
    )
}

/// The second sign-in step: the methods the account has, a passkey challenge when it has
/// passkeys, and the pending step's id (a field of every form; the password stays on the
/// server).
fn render_two_factor(
    v: &mut Visit<'_>,
    status: StatusCode,
    feedback: Feedback,
    return_to: Option<String>,
    step: SecondStep,
) -> Page {
    let Some(pending) = &step.pending else {
        return v.failure(&Reply::internal("the second sign-in step", &"not held"));
    };
    let mut values = second_step_values(&step);
    values.push(("return_to", Value::from(return_to.unwrap_or_default())));
    values.push(("ticket", Value::from(pending.as_str())));
    v.render(
        "two_factor.html",
        status,
        "two_factor_title",
        feedback,
        values,
    )
}

/// What a form for a second factor shows of `step`: whether it takes a TOTP code (`totp`),
/// the passkey challenge (`passkey`: its ceremony and options) and those options as the
/// JSON text of the form's `data-options` attribute (`passkey_options`), HTML-escaped like
/// every value.
pub(super) fn second_step_values(step: &SecondStep) -> Vec<(&'static str, Value)> {
    let totp = step.methods.contains(&"totp");
    let passkey = step.passkey.as_ref().map(|challenge| {
        json!({
            "ceremony_id": challenge.ceremony.as_str(),
            "options": serde_json::to_value(&challenge.options).unwrap_or_default(),
        })
    });
    let passkey_options = passkey
        .as_ref()
        .map(|p| p["options"].to_string())
        .unwrap_or_default();
    vec![
        ("totp", Value::from(totp)),
        ("passkey", to_value(passkey)),
        ("passkey_options", Value::from(passkey_options)),
    ]
}

/// `POST /login`: the first step (email, password, remember_me) or, with the
/// `login_ticket` of a pending second step, the second (two_factor_code or a passkey).
async fn login(v: &mut Visit<'_>, form: Form) -> Page {
    let return_to = form
        .get("return_to")
        .and_then(|r| v.portal.safe_return_to(r));
    let email = form.text("email").trim().to_owned();
    let remember_me = form.get("remember_me").is_some();
    if let Err(refusal) = v.limit_sign_in().await {
        let feedback = v.feedback(&refusal, str::to_owned);
        return render_login(v, refusal.status, feedback, return_to, &email, remember_me);
    }
    let accounts = &v.app.accounts;
    let result = match form.get("login_ticket") {
        Some(ticket) => match ticket.parse::<PendingId>() {
            Ok(pending) => {
                let second = passkeys::second_factor_answer(&form).unwrap_or_else(|| {
                    SecondFactor::Code(Some(form.text("two_factor_code").to_owned()))
                });
                accounts.finish_sign_in(&pending, second, &v.client()).await
            }
            Err(expired) => Err(expired),
        },
        None => {
            let input = SignIn {
                email: &email,
                password: form.text("password"),
                remember_me,
                second: SecondFactor::Code(None),
                hold_pending: true,
            };
            accounts.sign_in(input, &v.client()).await
        }
    };
    match result {
        Ok(signed) => signed_in(v, &signed.tokens, return_to),
        Err(AccountError::SecondFactorRequired(step)) => {
            render_two_factor(v, StatusCode::OK, Feedback::default(), return_to, *step)
        }
        Err(AccountError::WrongSecondFactor(step)) => {
            // The password was right a minute ago: the second factor is what failed. The
            // step comes again, with a new passkey challenge.
            let mut feedback = Feedback::default();
            if form.get("passkey_credential").is_some() {
                feedback.form_error = Some(v.t("passkey_failed"));
            } else {
                feedback
                    .errors
                    .insert("two_factor_code".into(), vec![v.t("error_wrong_code")]);
            }
            render_two_factor(v, StatusCode::UNAUTHORIZED, feedback, return_to, *step)
        }
        Err(AccountError::CodeReplayed(Some(step))) => {
            let mut feedback = Feedback::default();
            let replayed = vec![v.t("error_code_replayed")];
            feedback.errors.insert("two_factor_code".into(), replayed);
            render_two_factor(v, StatusCode::UNAUTHORIZED, feedback, return_to, *step)
        }
        Err(AccountError::PendingExpired) => {
            let feedback = Feedback {
                form_error: Some(v.t("error_ticket")),
                ..Feedback::default()
            };
            render_login(v, StatusCode::BAD_REQUEST, feedback, return_to, "", false)
        }
        Err(refused) => {
            let response = v.refusal(refused);
            let feedback = v.feedback(&response, str::to_owned);
            render_login(v, response.status, feedback, return_to, &email, remember_me)
        }
    }
}

fn render_register(
    v: &mut Visit<'_>,
    status: StatusCode,
    feedback: Feedback,
    return_to: Option<String>,
    form: &Form,
) -> Page {
    let login_href = v.path_with_return("/login", return_to.as_deref());
    // Closed or by invitation: no form, and why.
    let closed = v
        .app
        .config
        .registration
        .refuses_everyone()
        .map(|refusal| match refusal {
            Refusal::InvitationRequired => v.t("register_invite_only_text"),
            Refusal::Closed | Refusal::DomainNotAllowed => v.t("register_closed_text"),
        });
    v.render(
        "register.html",
        status,
        "register_title",
        feedback,
        vec![
            ("return_to", Value::from(return_to.unwrap_or_default())),
            ("login_href", Value::from(login_href)),
            ("closed", to_value(closed)),
            (
                "values",
                to_value(json!({
                    "email": form.text("email"),
                    "first_name": form.text("first_name"),
                    "last_name": form.text("last_name"),
                })),
            ),
        ],
    )
}

/// `POST /register`: a taken address gets the same "check your mail" page as a new one.
async fn register(v: &mut Visit<'_>, form: Form) -> Page {
    let return_to = form
        .get("return_to")
        .and_then(|r| v.portal.safe_return_to(r));
    let app = v.app;
    let limit = crate::api::limit_client(app, v.request.client_ip, Limit::Register)
        .await
        .map(drop);
    let registered = match v.limited(limit) {
        Ok(()) => match registration(&form).parse() {
            Ok(account) => {
                let return_to = return_to.clone();
                let account = NewAccount {
                    return_to,
                    ..account
                };
                app.accounts.register(account, &v.client()).await.map(drop)
            }
            Err(invalid) => Err(invalid),
        }
        .map_err(|e| match e {
            AccountError::Store(StoreError::DuplicateEmail) => None,
            e => Some(v.refusal(e)),
        }),
        Err(refusal) => Err(Some(refusal)),
    };
    match registered {
        // A taken address: the same page, so it tells nothing of who has an account.
        Ok(()) | Err(None) => {
            let login = v.path_with_return("/login", return_to.as_deref());
            v.message(
                StatusCode::OK,
                "check_email_title",
                &["check_email_text"],
                Some((login, "back_to_sign_in")),
            )
        }
        Err(Some(refusal)) => {
            let feedback = v.feedback(&refusal, str::to_owned);
            render_register(v, refusal.status, feedback, return_to, &form)
        }
    }
}

/// The registration form's fields, as typed.
fn registration(form: &Form) -> Registration<'_> {
    Registration {
        email: form.text("email"),
        password: form.text("password"),
        first_name: form.text("first_name"),
        last_name: form.text("last_name"),
    }
}

/// `POST /verify-email`: the mailed link's page posts its token here.
async fn verify_email(v: &mut Visit<'_>, form: Form) -> Page {
    let app = v.app;
    let limit = crate::api::limit_client(app, v.request.client_ip, Limit::Global)
        .await
        .map(drop);
    if let Err(refusal) = v.limited(limit) {
        return v.failure(&refusal);
    }
    match app.accounts.verify_email(form.text("token").trim()).await {
        Ok(_) => {
            // The page the registration began for, carried through the mailed link; else
            // the account page.
            let target = form
                .get("return_to")
                .and_then(|r| v.portal.safe_return_to(r))
                .unwrap_or_else(|| v.path("/account"));
            let login = v.path_with_return("/login", Some(&target));
            v.message(
                StatusCode::OK,
                "email_confirmed_title",
                &["email_confirmed_text"],
                Some((login, "sign_in")),
            )
        }
        Err(AccountError::InvalidLink) => link_invalid(v),
        Err(e) => {
            let refusal = v.refusal(e);
            v.failure(&refusal)
        }
    }
}

/// `POST /forgot-password`: the same page whether or not the address has an account.
async fn forgot_password(v: &mut Visit<'_>, form: Form) -> Page {
    let email = form.text("email").trim().to_owned();
    let app = v.app;
    let limit = crate::api::limit_client(app, v.request.client_ip, Limit::PasswordReset)
        .await
        .map(drop);
    let requested = v.limited(limit).and_then(|()| {
        let mut found = FieldErrors::default();
        let parsed = found.email("email", &email);
        let parsed = found.finish_with(parsed).map_err(|e| v.refusal(e))?;
        app.accounts.request_password_reset(parsed, &v.client());
        Ok(())
    });
    if let Err(refusal) = requested {
        let feedback = v.feedback(&refusal, str::to_owned);
        return v.render(
            "forgot_password.html",
            refusal.status,
            "forgot_password_title",
            feedback,
            vec![("values", to_value(json!({"email": email})))],
        );
    }
    let login = v.path("/login");
    v.message(
        StatusCode::OK,
        "reset_sent_title",
        &["reset_sent_text"],
        Some((login, "back_to_sign_in")),
    )
}

fn render_reset(v: &mut Visit<'_>, status: StatusCode, feedback: Feedback, token: String) -> Page {
    v.render(
        "reset_password.html",
        status,
        "reset_password_title",
        feedback,
        vec![("token", Value::from(token))],
    )
}

/// `POST /reset-password`: every session ends, this browser's included.
async fn reset_password(v: &mut Visit<'_>, form: Form) -> Page {
    let token = form.text("token").to_owned();
    let app = v.app;
    let limit = crate::api::limit_client(app, v.request.client_ip, Limit::Global)
        .await
        .map(drop);
    let reset = match v.limited(limit) {
        Ok(()) => {
            let form = ResetForm {
                token: &token,
                password: form.text("password"),
            };
            match form.parse() {
                Ok((token, password)) => {
                    let client = v.client();
                    app.accounts.reset_password(token, password, &client).await
                }
                Err(invalid) => Err(invalid),
            }
            .map_err(|e| match e {
                AccountError::InvalidLink => None,
                e => Some(v.refusal(e)),
            })
        }
        Err(refusal) => Err(Some(refusal)),
    };
    match reset {
        Ok(_) => {
            v.end_sign_in();
            let login = v.path("/login");
            v.message(
                StatusCode::OK,
                "password_reset_title",
                &["password_reset_text"],
                Some((login, "sign_in")),
            )
        }
        Err(None) => link_invalid(v),
        Err(Some(refusal)) => {
            let feedback = v.feedback(&refusal, str::to_owned);
            render_reset(v, refusal.status, feedback, token)
        }
    }
}

/// `POST /logout`: ends this browser's session (if any) and its cookies.
async fn logout(v: &mut Visit<'_>) -> Page {
    let mut provider_sign_out = None;
    if let Some(token) = v.signed_in().await {
        let app = v.app;
        let ended = match app.access.authenticate_token(&token).await {
            Ok(caller) => {
                let ended = app
                    .accounts
                    .logout(&caller.user, &caller.session.id, &v.client())
                    .await
                    .map_err(Reply::from);
                if ended.is_ok() {
                    let back = format!(
                        "{}{}",
                        app.config.server.public_url.origin(),
                        v.path("/login")
                    );
                    provider_sign_out = app
                        .accounts
                        .provider_sign_out_url(&caller.session.id, &back)
                        .await;
                }
                ended
            }
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = ended
            && refusal.status == StatusCode::SERVICE_UNAVAILABLE
        {
            return v.failure(&refusal);
        }
    }
    v.end_sign_in();
    // Signed in through a provider with `end_session`: sign out there too.
    if let Some(url) = provider_sign_out {
        return v.redirect(&url);
    }
    let login = v.path("/login");
    v.message(
        StatusCode::OK,
        "signed_out_title",
        &["signed_out_text"],
        Some((login, "sign_in")),
    )
}

/// A time as the account page shows it: "2025-01-31 14:05 UTC".
pub(super) fn short_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The account page: profile, password, 2FA, sessions, deactivation.
async fn account_page(
    v: &mut Visit<'_>,
    token: &str,
    status: StatusCode,
    feedback: Feedback,
) -> Page {
    let app = v.app;
    let caller = match app.access.authenticate_token(token).await {
        Ok(caller) => caller,
        Err(refusal) if refusal.status.is_client_error() => {
            v.end_sign_in();
            return to_sign_in(v);
        }
        Err(refusal) => return v.failure(&refusal),
    };
    let (user, current) = (&caller.user, caller.session.id);
    // A session list that cannot be read leaves the list empty, not the page.
    let sessions = app.accounts.sessions_of(user).await.unwrap_or_default();
    let now = chrono::Utc::now();
    let sessions: Vec<serde_json::Value> = sessions
        .iter()
        .map(|s| super::devices::session_view(s, s.id == current, now, v.lang))
        .collect();
    let user_view = json!({
        "email": user.email.as_str(),
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_verified": user.is_verified,
        "two_factor_enabled": user.two_factor_enabled,
    });
    let passkeys = passkeys::for_account(v, user).await;
    let recovery = recovery_codes_left(v, user).await;
    // An administrator finds the console from here (the console asks the rest).
    let console = app.accounts.is_admin(user).then(|| v.path("/admin"));
    let identities = federation::for_account(v, user).await;
    v.render(
        "account.html",
        status,
        "account_title",
        feedback,
        vec![
            ("user", to_value(user_view)),
            ("sessions", to_value(sessions)),
            ("passkeys", passkeys),
            ("recovery", recovery),
            ("console_href", to_value(console)),
            ("identities", identities),
        ],
    )
}

/// How many unused recovery codes leave the account page warning that they run out.
const FEW_RECOVERY_CODES: u64 = 3;

/// What the account page's two-factor section says of the recovery codes left: `left`,
/// the count in the page's language and its plural form, and `few`, whether that is
/// [`FEW_RECOVERY_CODES`] or fewer. None without TOTP, or when the count cannot be read
/// (the page shows without it).
async fn recovery_codes_left(v: &Visit<'_>, user: &User) -> Value {
    if !user.two_factor_enabled {
        return Value::from(());
    }
    match v.app.accounts.recovery_codes_remaining(user).await {
        Ok(n) => to_value(json!({
            "count": n,
            "left": v.lang.counted("recovery_codes_left", n),
            "few": n <= FEW_RECOVERY_CODES,
            "none": n == 0,
        })),
        Err(_) => Value::from(()),
    }
}

/// After a form on the account page: back to it with a notice, or the page again with the
/// problems next to the form's fields.
async fn account_outcome(
    v: &mut Visit<'_>,
    token: &str,
    response: Reply,
    done: &str,
    field_id: impl Fn(&str) -> String,
) -> Page {
    if response.status == StatusCode::OK {
        let target = format!("{}?done={done}", v.path("/account"));
        return v.redirect(&target);
    }
    if response.status == StatusCode::UNAUTHORIZED {
        v.end_sign_in();
        return to_sign_in(v);
    }
    let feedback = v.feedback(&response, field_id);
    account_page(v, token, response.status, feedback).await
}

/// The forms of the account page, one function each.
async fn account_action(v: &mut Visit<'_>, action: &str, token: &str, form: Form) -> Page {
    match action {
        "/account/profile" => update_profile(v, token, form).await,
        "/account/password" => change_password(v, token, form).await,
        "/account/sessions/revoke" => revoke_session(v, token, form).await,
        "/account/logout-all" => logout_all(v, token).await,
        "/account/2fa/setup" => setup_two_factor(v, token, &form).await,
        "/account/2fa/enable" => enable_two_factor(v, token, form).await,
        "/account/2fa/disable" => disable_two_factor(v, token, form).await,
        "/account/2fa/recovery-codes" => regenerate_recovery_codes(v, token, form).await,
        "/account/resend-verification" => resend_verification(v, token).await,
        "/account/deactivate" => deactivate(v, token, form).await,
        identity if identity.starts_with("/account/identities/") => {
            federation::account_action(v, identity, token, form).await
        }
        passkey if passkey.starts_with("/account/passkeys/") => {
            passkeys::account_action(v, passkey, token, form).await
        }
        _ => v.not_found(),
    }
}

/// `POST /account/profile`: Changes the name on the account.
async fn update_profile(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let app = v.app;
    let updated = match v.caller(token).await {
        Ok(caller) => {
            let change = ProfileChange {
                first_name: Some(form.text("first_name")),
                last_name: Some(form.text("last_name")),
            };
            match change.parse() {
                Ok(names) => app.accounts.update_profile(&caller.user, names).await,
                Err(invalid) => Err(invalid),
            }
            .map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    let r = updated.map_or_else(|refusal| refusal, |_| Reply::empty(StatusCode::OK));
    account_outcome(v, token, r, "profile", str::to_owned).await
}

/// `POST /account/password`: Changes the password; the other sessions end.
async fn change_password(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let app = v.app;
    let changed = match v.caller(token).await {
        Ok(caller) => {
            let change = PasswordChange {
                current_password: form.text("current_password"),
                new_password: form.text("new_password"),
            };
            match change.parse() {
                Ok((current, new)) => {
                    let proof = StepUp {
                        password: &current,
                        password_field: "current_password",
                        code: None,
                    };
                    let (user, keep, client) = (&caller.user, &caller.session.id, v.client());
                    let changed = app
                        .accounts
                        .change_password(user, keep, proof, new, &client);
                    changed.await
                }
                Err(invalid) => Err(invalid),
            }
            .map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    let r = changed.map_or_else(|refusal| refusal, |_| Reply::empty(StatusCode::OK));
    account_outcome(v, token, r, "password", str::to_owned).await
}

/// `POST /account/sessions/revoke`: Ends one of the account's other sessions.
async fn revoke_session(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let app = v.app;
    let ended = match v.caller(token).await {
        Ok(caller) => {
            let ended = match form.text("session_id").parse::<SessionId>() {
                Ok(id) => {
                    app.accounts
                        .end_session(&caller.user, &id, &v.client())
                        .await
                }
                Err(_) => Err(AccountError::SessionNotFound),
            };
            ended.map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    let r = ended.map_or_else(|refusal| refusal, |()| Reply::empty(StatusCode::OK));
    account_outcome(v, token, r, "session", str::to_owned).await
}

/// `POST /account/logout-all`: Ends every session of the account, this one included.
async fn logout_all(v: &mut Visit<'_>, token: &str) -> Page {
    let app = v.app;
    let ended = match v.caller(token).await {
        Ok(caller) => {
            let ended = app.accounts.logout_all(&caller.user, &v.client()).await;
            ended.map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    if let Err(refusal) = ended {
        return v.failure(&refusal);
    }
    v.end_sign_in();
    let login = v.path("/login");
    v.message(
        StatusCode::OK,
        "signed_out_title",
        &["signed_out_everywhere_text"],
        Some((login, "sign_in")),
    )
}

/// `POST /account/2fa/setup`: A fresh TOTP secret to scan; nothing is stored yet. A
/// `return_to` (from the second-factor step) rides along to the recovery codes.
async fn setup_two_factor(v: &mut Visit<'_>, token: &str, form: &Form) -> Page {
    let app = v.app;
    let return_to = setup_return_to(v, form);
    let setup = match v.caller(token).await {
        Ok(caller) => {
            // No proof comes with this form: with TOTP on, the core asks for one (409).
            let proof = StepUp {
                password: "",
                password_field: "password",
                code: None,
            };
            let client = v.client();
            let setup = app.accounts.setup_two_factor(&caller.user, proof, &client);
            setup.await.map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    match setup {
        Ok(p) => {
            let feedback = Feedback::default();
            let (secret, qr) = (p.secret_base32, p.qr_code_data_url);
            render_setup(v, StatusCode::OK, feedback, (secret, qr), return_to)
        }
        Err(r) => account_outcome(v, token, r, "", str::to_owned).await,
    }
}

/// `POST /account/2fa/enable`: Turns TOTP on and shows the recovery codes once; a wrong code shows the same secret again.
async fn enable_two_factor(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let app = v.app;
    let caller = match v.caller(token).await {
        Ok(caller) => caller,
        Err(refusal) => return account_outcome(v, token, refusal, "", str::to_owned).await,
    };
    let secret = form.text("secret").trim().to_owned();
    let return_to = setup_return_to(v, &form);
    // An unproven address is refused before the form is read, as the API refuses it.
    let input = verified_for_two_factor(&caller.user)
        .and_then(|()| crate::api::totp_enable(&secret, form.text("token")));
    let enabled = match input {
        Ok(input) => {
            let proof = StepUp {
                password: form.text("password"),
                password_field: "password",
                code: form.get("two_factor_code"),
            };
            let (client, keep) = (v.client(), &caller.session.id);
            let enabled = app
                .accounts
                .enable_two_factor(&caller.user, keep, &input, proof, &client)
                .await;
            enabled.map_err(|e| v.refusal(e))
        }
        Err(invalid) => Err(v.refusal(invalid)),
    };
    let r = match enabled {
        Ok(codes) => {
            // Set up from the step: the code just checked proves the new factor in this
            // session, so the step sends it straight on to the page.
            if return_to.is_some() {
                app.accounts.proven_by_enabling(&caller.session.id).await;
            }
            let next = return_to.map(|r| v.path_with_return(second_factor::STEP, Some(&r)));
            return v.render(
                "recovery_codes.html",
                StatusCode::OK,
                "recovery_codes_title",
                Feedback::default(),
                vec![
                    ("codes", to_value(json!(codes))),
                    ("continue_href", to_value(next)),
                ],
            );
        }
        Err(r) => r,
    };
    if r.status != StatusCode::BAD_REQUEST {
        return account_outcome(v, token, r, "", str::to_owned).await;
    }
    // The same secret again, with its QR code, and the problem next to the code.
    let provisioning = crate::auth::totp::TotpSecret::from_base32(&secret)
        .ok()
        .and_then(|s| app.accounts.totp_provisioning(&caller.user, &s).ok());
    let Some(provisioning) = provisioning else {
        return account_outcome(v, token, r, "", str::to_owned).await;
    };
    let feedback = v.feedback(&r, str::to_owned);
    let shown = (provisioning.secret_base32, provisioning.qr_code_data_url);
    render_setup(v, StatusCode::BAD_REQUEST, feedback, shown, return_to)
}

/// The `return_to` a setup form carries from the second-factor step, held to that step's
/// rules; `None` when it carries none.
fn setup_return_to(v: &Visit<'_>, form: &Form) -> Option<String> {
    form.get("return_to")
        .filter(|r| !r.is_empty())
        .map(|r| second_factor::target(v, Some(r)))
}

/// `POST /account/2fa/disable`: Turns TOTP off (the password and a code, like the API).
async fn disable_two_factor(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let app = v.app;
    let disabled = match v.caller(token).await {
        Ok(caller) => {
            // Turning the second factor off takes the second factor too.
            let proof = StepUp {
                password: form.text("password"),
                password_field: "password",
                code: Some(form.text("two_factor_code")),
            };
            let client = v.client();
            let disabled = app
                .accounts
                .disable_two_factor(&caller.user, proof, &client);
            disabled.await.map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    let r = disabled.map_or_else(|refusal| refusal, |()| Reply::empty(StatusCode::OK));
    account_outcome(v, token, r, "two_factor_disabled", |f| match f {
        "password" => "disable_password".into(),
        "two_factor_code" => "disable_two_factor_code".into(),
        other => other.to_owned(),
    })
    .await
}

/// `POST /account/2fa/recovery-codes`: Replaces the recovery codes (the password and a
/// code, like the API) and shows the new ones once; a refusal shows the account page again
/// with the problem next to the field.
async fn regenerate_recovery_codes(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let app = v.app;
    let made = match v.caller(token).await {
        Ok(caller) => {
            let proof = StepUp {
                password: form.text("password"),
                password_field: "password",
                code: Some(form.text("two_factor_code")),
            };
            let client = v.client();
            let made = app
                .accounts
                .regenerate_recovery_codes(&caller.user, proof, &client);
            made.await.map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    match made {
        Ok(codes) => v.render(
            "recovery_codes.html",
            StatusCode::OK,
            "recovery_codes_title",
            Feedback::default(),
            vec![
                ("codes", to_value(json!(codes))),
                ("regenerated", Value::from(true)),
            ],
        ),
        Err(r) => {
            account_outcome(v, token, r, "", |f| match f {
                "password" => "recovery_password".into(),
                "two_factor_code" => "recovery_two_factor_code".into(),
                other => other.to_owned(),
            })
            .await
        }
    }
}

/// `POST /account/resend-verification`: Mails a fresh verification link.
async fn resend_verification(v: &mut Visit<'_>, token: &str) -> Page {
    let app = v.app;
    let sent = match v.caller(token).await {
        Ok(caller) => {
            let client = v.client();
            let sent = app
                .accounts
                .resend_verification(&caller.user, &client)
                .await;
            sent.map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    let r = sent.map_or_else(|refusal| refusal, |()| Reply::empty(StatusCode::OK));
    account_outcome(v, token, r, "verification_sent", str::to_owned).await
}

/// `POST /account/deactivate`: Deactivates the account; every session ends.
async fn deactivate(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let app = v.app;
    let done = match v.caller(token).await {
        Ok(caller) => {
            let proof = StepUp {
                password: form.text("password"),
                password_field: "password",
                code: None,
            };
            let client = v.client();
            let done = app.accounts.deactivate(&caller.user, proof, &client).await;
            done.map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    if let Err(r) = done {
        return account_outcome(v, token, r, "", |f| {
            if f == "password" {
                "deactivate_password".into()
            } else {
                f.to_owned()
            }
        })
        .await;
    }
    v.end_sign_in();
    v.message(
        StatusCode::OK,
        "deactivated_title",
        &["deactivated_text"],
        None,
    )
}

/// The setup page: the secret `(text, QR code)` to scan and the form that turns it on.
fn render_setup(
    v: &mut Visit<'_>,
    status: StatusCode,
    feedback: Feedback,
    (secret, qr_code): (String, String),
    return_to: Option<String>,
) -> Page {
    v.render(
        "two_factor_setup.html",
        status,
        "two_factor_setup_title",
        feedback,
        vec![
            ("secret", Value::from(secret)),
            ("qr_code", Value::from(qr_code)),
            ("return_to", Value::from(return_to.unwrap_or_default())),
        ],
    )
}
