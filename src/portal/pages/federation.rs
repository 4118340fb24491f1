//! `{prefix}/oidc/{id}/start` and `{prefix}/oidc/{id}/callback`: the browser's half of a
//! sign-in through an identity provider. The flow and every rule are the account core's
//! (`accounts::federation`); this reads the query and the binding cookie and shows the outcome.

use minijinja::Value;

use super::super::{Feedback, Page, Visit, to_value};
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
            let secure = if v.app.serves_tls() { "; Secure" } else { "" };
            v.cookies.push(format!(
                "{BINDING_COOKIE}={binding}; Path={}/oidc/; Max-Age=600; HttpOnly; SameSite=Lax{secure}",
                v.portal.prefix
            ));
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
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, value)| value.as_str())
    };
    let answer = Callback {
        state: param("state"),
        code: param("code"),
        error: param("error"),
        error_description: param("error_description"),
    };
    let accounts = &v.app.accounts;
    let result = accounts
        .finish_federated(id, answer, binding.as_deref(), &v.client())
        .await;
    match result {
        Ok(Finished::SignedIn { tokens, return_to }) => super::signed_in(v, &tokens, return_to),
        Ok(Finished::Linked { .. }) => {
            let account = format!("{}?done=identity_linked", v.path("/account"));
            v.redirect(&account)
        }
        Err(e) => failed(v, e),
    }
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
