//! `{prefix}/oidc/{id}/start` and `{prefix}/oidc/{id}/callback`: the browser's half of a
//! sign-in through an identity provider. The flow and every rule are the account core's
//! (`accounts::federation`); this reads the query and the binding cookie and shows the outcome.

use minijinja::Value;

use http::StatusCode;

use super::super::{Feedback, Form, Page, Visit, to_value};
use crate::accounts::StepUp;
use crate::accounts::federation::{
    Callback, FederationError, Finished, Intent, new_browser_binding,
};
use crate::api::browser;
use crate::auth::secrets::is_token_shaped;

/// The cookie that ties a flow to the browser that started it (its hash is in the stash).
const BINDING_COOKIE: &str = "portcullis_federation";
/// The longest provider error text shown (characters).
const MAX_SHOWN_ERROR_CHARS: usize = 300;

/// Answers a GET under `{prefix}/oidc/`; `rest` is what follows it (`{id}/start`, …).
pub(in crate::portal) async fn get(v: &mut Visit<'_>, rest: &str) -> Page {
    match rest.split_once('/') {
        Some((id, "start")) => start(v, id).await,
        Some((id, "callback")) => callback(v, id).await,
        _ => v.not_found(),
    }
}

/// The binding cookie's value this browser sent, if well formed.
fn sent_binding(v: &Visit<'_>) -> Option<String> {
    browser::cookie(&v.request.headers, BINDING_COOKIE)
        .filter(|b| is_token_shaped(b))
        .map(str::to_owned)
}

/// Sets the binding cookie: sent only to `{prefix}/oidc/`, for the flow's life.
fn set_binding(v: &mut Visit<'_>, binding: &str) {
    // As long as the flow's stash lives.
    binding_cookie(v, binding, crate::accounts::federation::FLOW_TTL.as_secs());
}

/// Clears the binding cookie once a flow has finished (another flow of this browser that is
/// still at its provider then fails and is started again).
fn clear_binding(v: &mut Visit<'_>) {
    binding_cookie(v, "", 0);
}

/// The binding cookie's `Set-Cookie`: `value` for `max_age` seconds, only to `{prefix}/oidc/`.
fn binding_cookie(v: &mut Visit<'_>, value: &str, max_age: u64) {
    let secure = if v.app.serves_tls() { "; Secure" } else { "" };
    v.cookies.push(format!(
        "{BINDING_COOKIE}={value}; Path={}/oidc/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        v.portal.prefix
    ));
}

/// `GET …/start?return_to=`: the browser goes to the provider, with a binding cookie.
async fn start(v: &mut Visit<'_>, id: &str) -> Page {
    if let Err(refusal) = v.limit_sign_in().await {
        return v.failure(&refusal);
    }
    let return_to = v.return_to_query();
    let binding = sent_binding(v).unwrap_or_else(new_browser_binding);
    let accounts = &v.app.accounts;
    match accounts
        .begin_federated(id, &binding, return_to, Intent::SignIn)
        .await
    {
        Ok(url) => {
            set_binding(v, &binding);
            v.redirect(&url)
        }
        Err(e) => failed(v, e),
    }
}

/// `GET …/callback?state=&code=` (or `error=`): the flow finished by the account core.
async fn callback(v: &mut Visit<'_>, id: &str) -> Page {
    if let Err(refusal) = v.limit_sign_in().await {
        return v.failure(&refusal);
    }
    let binding = sent_binding(v);
    let query = v.query.clone();
    let Some(answer) = callback_of(&query) else {
        return failed(v, FederationError::InvalidCallback);
    };
    let accounts = &v.app.accounts;
    let result = accounts
        .finish_federated(id, answer, binding.as_deref(), &v.client())
        .await;
    if result.is_ok() {
        clear_binding(v);
    }
    match result {
        Ok(Finished::SignedIn { tokens, return_to }) => super::signed_in(v, &tokens, return_to),
        Ok(Finished::Linked { .. }) => {
            let account = format!("{}?done=identity_linked", v.path("/account"));
            v.redirect(&account)
        }
        Err(e) => failed(v, e),
    }
}

/// The parameters of an authorization response; `None` when one of them comes twice
/// (RFC 6749 §3.1: a parameter is sent once; two `state`s or `iss`es are an attempt to
/// have one checked and the other used).
fn callback_of(query: &[(String, String)]) -> Option<Callback<'_>> {
    let mut answer = Callback::default();
    for (name, value) in query {
        let slot = match name.as_str() {
            "state" => &mut answer.state,
            "code" => &mut answer.code,
            "error" => &mut answer.error,
            "error_description" => &mut answer.error_description,
            "iss" => &mut answer.iss,
            _ => continue,
        };
        if slot.replace(value.as_str()).is_some() {
            return None;
        }
    }
    Some(answer)
}

/// The page that explains a failed flow, in the page's language; a provider's own error
/// text is shown as text (escaped by the template), cut short.
fn failed(v: &mut Visit<'_>, e: FederationError) -> Page {
    if let FederationError::Account(e) = e {
        let response = v.refusal(e);
        return v.failure(&response);
    }
    let mut paragraphs = vec![v.t(e.catalogue_key())];
    if let FederationError::ProviderRefused { error, description } = &e {
        let said = match description {
            Some(d) => format!("{error}: {d}"),
            None => error.clone(),
        };
        paragraphs.push(
            said.chars()
                .filter(|c| !c.is_control())
                .take(MAX_SHOWN_ERROR_CHARS)
                .collect(),
        );
    }
    let link = serde_json::json!({"href": v.path("/login"), "text": v.t("back_to_sign_in")});
    v.render(
        "message.html",
        e.status(),
        "federation_title",
        Feedback::default(),
        vec![
            ("paragraphs", to_value(paragraphs)),
            ("link", to_value(link)),
        ],
    )
}

/// The sign-in page's buttons: one link per provider, keeping `return_to`.
pub(in crate::portal) fn buttons(v: &Visit<'_>, return_to: Option<&str>) -> Value {
    let buttons: Vec<serde_json::Value> = v
        .app
        .accounts
        .identity_providers()
        .into_iter()
        .map(|p| {
            let href = v.path_with_return(&format!("/oidc/{}/start", p.id), return_to);
            serde_json::json!({"name": p.name, "href": href})
        })
        .collect();
    to_value(buttons)
}

/// The account page's part: linked identities and the providers not linked yet.
pub(in crate::portal) async fn for_account(v: &Visit<'_>, user: &crate::store::User) -> Value {
    let linked = v
        .app
        .accounts
        .linked_identities(user)
        .await
        .unwrap_or_default();
    let unlinked: Vec<serde_json::Value> = v
        .app
        .accounts
        .identity_providers()
        .into_iter()
        .filter(|p| !linked.iter().any(|l| l.provider == p.id))
        .map(|p| serde_json::json!({"id": p.id, "name": p.name}))
        .collect();
    let linked: Vec<serde_json::Value> = linked
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::json!({
                "index": i, "provider": l.provider, "name": l.name, "subject": l.subject,
                "email": l.email, "linked_at": l.linked_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            })
        })
        .collect();
    to_value(serde_json::json!({"linked": linked, "unlinked": unlinked}))
}

fn proof(form: &Form) -> StepUp<'_> {
    StepUp {
        password: form.text("password"),
        password_field: "password",
        code: form.get("two_factor_code"),
    }
}

/// `POST /account/identities/link` and `/unlink`, the step-up first.
pub(in crate::portal) async fn account_action(
    v: &mut Visit<'_>,
    action: &str,
    token: &str,
    form: Form,
) -> Page {
    let caller = match v.caller(token).await {
        Ok(caller) => caller,
        Err(refusal) => return super::account_outcome(v, token, refusal, "", str::to_owned).await,
    };
    let provider = form.text("provider").to_owned();
    let client = v.client();
    let accounts = &v.app.accounts;
    match action {
        "/account/identities/link" => {
            let binding = sent_binding(v).unwrap_or_else(new_browser_binding);
            let (user, session) = (&caller.user, caller.session.id);
            let started = accounts
                .begin_link(user, session, &provider, proof(&form), &binding, &client)
                .await;
            match started {
                Ok(url) => {
                    set_binding(v, &binding);
                    v.redirect(&url)
                }
                Err(e) => refused(v, token, e, "link").await,
            }
        }
        "/account/identities/unlink" => {
            let done = accounts
                .unlink_identity(
                    &caller.user,
                    &provider,
                    form.text("subject"),
                    proof(&form),
                    &client,
                )
                .await;
            match done {
                Ok(()) => {
                    let target = format!("{}?done=identity_unlinked", v.path("/account"));
                    v.redirect(&target)
                }
                Err(e) => refused(v, token, e, "unlink").await,
            }
        }
        _ => v.not_found(),
    }
}

/// A refused link or unlink: a wrong step-up is shown beside its form's fields, anything
/// else as the flow's page.
async fn refused(v: &mut Visit<'_>, token: &str, e: FederationError, form: &'static str) -> Page {
    match e {
        FederationError::Account(e) => {
            let response = v.refusal(e);
            if response.status == StatusCode::OK {
                return v.failure(&response);
            }
            super::account_outcome(v, token, response, "", |f| format!("{form}_{f}")).await
        }
        other => failed(v, other),
    }
}
