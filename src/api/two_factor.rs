//! TOTP second factor: setup, enable and disable, and new recovery codes, over the account
//! core (`Accounts::{setup_two_factor, enable_two_factor, disable_two_factor,
//! regenerate_recovery_codes}`, where the rules live: a verified address, the step-up,
//! recovery codes, the sessions that end). These handlers read the JSON and the caller and
//! answer the envelope.

use http::StatusCode;
use serde_json::json;

use super::{ApiRequest, Fields, Reply};
use crate::access::credentials::Caller;
use crate::accounts::{AccountError, StepUp, TotpEnable, verified_for_two_factor};
use crate::app::App;
use crate::auth::totp::TotpSecret;
use crate::store::User;

/// The step-up fields of a request as sent: `password` and, when `user` has TOTP on,
/// `two_factor_code` (the core says which are required and names the missing ones).
#[derive(Default)]
pub(super) struct Proof {
    password: String,
    code: Option<String>,
}

impl Proof {
    /// Reads the proof from the body; a 400 when a field is not a string.
    pub(super) fn read(request: &ApiRequest, user: &User) -> Result<Self, Reply> {
        let mut f = Fields::from_request(request)?;
        let password = f.optional_raw("password").unwrap_or_default();
        let code = if user.two_factor_enabled {
            f.optional("two_factor_code")
        } else {
            None
        };
        f.finish()?;
        Ok(Self { password, code })
    }

    /// The proof as the account core takes it.
    pub(super) fn step_up(&self) -> StepUp<'_> {
        StepUp {
            password: &self.password,
            password_field: "password",
            code: self.code.as_deref(),
        }
    }
}

/// The `secret` being turned on (base32) and the `token` the app shows for it.
fn read_enable(f: &mut Fields) -> Option<TotpEnable> {
    let secret = f.required("secret");
    let token = f.required("token");
    let secret = secret.and_then(|s| match TotpSecret::from_base32(&s) {
        Ok(secret) => Some(secret),
        Err(e) => {
            f.reject("secret", e.to_string());
            None
        }
    });
    secret
        .zip(token)
        .map(|(secret, code)| TotpEnable { secret, code })
}

/// The secret and code of a form that turns TOTP on, read as the API reads its body;
/// `Invalid` naming each field at fault. The portal's form reads them here.
pub(crate) fn totp_enable(secret: &str, token: &str) -> Result<TotpEnable, AccountError> {
    let fields = [("secret", secret), ("token", token)]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), serde_json::Value::from(value)))
        .collect();
    let mut f = Fields::of_object(fields);
    let input = read_enable(&mut f);
    f.into_values(input).map_err(AccountError::Invalid)
}

/// A signed-in caller whose address is proven, or the refusal (401, 403 `email_not_verified`).
async fn verified_caller(app: &App, request: &ApiRequest) -> Result<Caller, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    verified_for_two_factor(&caller.user)?;
    Ok(caller)
}

/// `POST /api/auth/setup-2fa` — a fresh secret to scan; nothing is stored yet.
pub async fn setup(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = verified_caller(app, request).await?;
    // Only a replacement needs a proof: without TOTP on, the body is not read.
    let proof = if caller.user.two_factor_enabled {
        Proof::read(request, &caller.user)?
    } else {
        Proof::default()
    };
    let client = super::client(app, request);
    let setup = app
        .accounts
        .setup_two_factor(&caller.user, proof.step_up(), &client)
        .await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "Scan the QR code with your authenticator app, then confirm with a code.",
        Some(json!({
            "secret": setup.secret_base32,
            "otpauth_url": setup.otpauth_url,
            "qr_code": setup.qr_code_data_url,
        })),
    ))
}

/// `POST /api/auth/enable-2fa` `{secret, token, password}` (and `two_factor_code` to
/// replace a second factor) — turns 2FA on and returns recovery codes once.
pub async fn enable(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = verified_caller(app, request).await?;
    let mut f = Fields::from_request(request)?;
    let input = read_enable(&mut f);
    let input = f.finish_with(input)?;
    // Turning a second factor on takes the password; replacing one, a current code too.
    let proof = Proof::read(request, &caller.user)?;
    let client = super::client(app, request);
    let (user, keep) = (&caller.user, &caller.session.id);
    let codes = app
        .accounts
        .enable_two_factor(user, keep, &input, proof.step_up(), &client)
        .await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "Two-factor authentication enabled. Store the recovery codes safely: they are shown once.",
        Some(json!({"recovery_codes": codes})),
    ))
}

/// `POST /api/auth/disable-2fa` `{password, two_factor_code}` — turns 2FA off and forgets
/// the secret and codes; the code (a current or recovery code) is required while 2FA is on.
pub async fn disable(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = verified_caller(app, request).await?;
    let proof = Proof::read(request, &caller.user)?;
    let client = super::client(app, request);
    app.accounts
        .disable_two_factor(&caller.user, proof.step_up(), &client)
        .await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "Two-factor authentication was turned off.",
        None,
    ))
}

/// `POST /api/auth/2fa/recovery-codes` `{password, two_factor_code}` — replaces every
/// recovery code with ten new ones, returned once; only while 2FA is on (400
/// `two_factor_not_enabled` otherwise), after the step-up with a current or recovery code.
pub async fn regenerate_recovery_codes(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = verified_caller(app, request).await?;
    let proof = Proof::read(request, &caller.user)?;
    let client = super::client(app, request);
    let codes = app
        .accounts
        .regenerate_recovery_codes(&caller.user, proof.step_up(), &client)
        .await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "New recovery codes made; the old ones no longer work. Store them safely: they are shown once.",
        Some(json!({"recovery_codes": codes})),
    ))
}
