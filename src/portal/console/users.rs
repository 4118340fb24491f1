//! The console's first page: the accounts in address order, a search (a GET form), pages
//! by cursor (the last address shown), and the form that creates an account.

use http::StatusCode;
use minijinja::Value;
use serde_json::json;

use super::{Section, render, role_names};
use crate::accounts::AccountError;
use crate::accounts::admin::Administrator;
use crate::accounts::fields::FieldErrors;
use crate::domain::{Email, NewPassword};
use crate::portal::{Feedback, Form, Page, Visit, to_value};
use crate::store::{User, UserSearch};

/// Accounts per page.
const PAGE: u32 = 25;
/// The most characters of a search that are used.
const MAX_SEARCH_CHARS: usize = 100;

/// The highest page number read from a query (a larger one is that page).
const MAX_PAGE: u32 = 100_000;

/// `GET /admin?q=…&page=…`: one page of accounts (`page` from 1; anything else is 1).
pub(super) async fn page(v: &mut Visit<'_>, admin: &Administrator) -> Page {
    let text: String = v
        .query("q")
        .unwrap_or("")
        .trim()
        .chars()
        .take(MAX_SEARCH_CHARS)
        .collect();
    let page = v
        .query("page")
        .and_then(|p| p.parse::<u32>().ok())
        .map_or(1, |p| p.clamp(1, MAX_PAGE));
    let search = UserSearch {
        text,
        offset: (page - 1) * PAGE,
        limit: PAGE + 1,
    };
    let feedback = super::notice(v);
    render_list(v, admin, StatusCode::OK, feedback, search, json!({})).await
}

/// `POST /admin/users`: creates an account (address proven, with its roles); without a
/// password, the address is mailed a link to choose one. On to the new account's page.
pub(super) async fn create(v: &mut Visit<'_>, admin: &Administrator, form: &Form) -> Page {
    let roles = role_names(form.text("roles"));
    let created = match new_account(form) {
        Ok((email, password)) => {
            let client = v.client();
            let accounts = &v.app.accounts;
            let created = accounts.create_account(admin, email, &roles, password, &client);
            created.await
        }
        Err(invalid) => Err(invalid),
    };
    match created {
        Ok(user) => super::done(v, &format!("/admin/users/{}", user.id), "created"),
        Err(e) => {
            let (status, feedback) = super::refused_form(v, e, str::to_owned);
            // The form comes back as typed, but for the password.
            let values = json!({"email": form.text("email"), "roles": form.text("roles")});
            let search = UserSearch {
                text: String::new(),
                offset: 0,
                limit: PAGE + 1,
            };
            render_list(v, admin, status, feedback, search, values).await
        }
    }
}

/// The new account's address and optional password, by the rules every form holds them to.
fn new_account(form: &Form) -> Result<(Email, Option<NewPassword>), AccountError> {
    let mut found = FieldErrors::default();
    let email = found.email("email", form.text("email"));
    let password = match form.text("password") {
        "" => Some(None),
        typed => found.new_password("password", typed).map(Some),
    };
    found.finish_with(email.zip(password))
}

/// The page: the search, the accounts `search` finds (one more asked for, to know whether
/// there is a next page), the form with `values`.
async fn render_list(
    v: &mut Visit<'_>,
    admin: &Administrator,
    status: StatusCode,
    feedback: Feedback,
    search: UserSearch,
    values: serde_json::Value,
) -> Page {
    let found = v.app.accounts.find_accounts(admin, &search).await;
    let mut users = match found {
        Ok(users) => users,
        Err(e) => {
            let refusal = v.refusal(e);
            return super::failure(v, &refusal);
        }
    };
    let more = users.len() > PAGE as usize;
    users.truncate(PAGE as usize);
    let page = search.offset / PAGE + 1;
    let link = |page: u32| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if !search.text.is_empty() {
            query.append_pair("q", &search.text);
        }
        if page > 1 {
            query.append_pair("page", &page.to_string());
        }
        let query = query.finish();
        match query.as_str() {
            "" => v.path("/admin"),
            query => format!("{}?{query}", v.path("/admin")),
        }
    };
    let next_href = more.then(|| link(page + 1));
    let first_href = (page > 1).then(|| link(1));
    let rows: Vec<serde_json::Value> = users.iter().map(|u| row(v, u)).collect();
    render(
        v,
        "admin_users.html",
        status,
        "admin_users_title",
        Section::Users,
        feedback,
        vec![
            ("users", to_value(rows)),
            ("q", Value::from(search.text.as_str())),
            ("next_href", to_value(next_href)),
            ("first_href", to_value(first_href)),
            ("values", to_value(values)),
        ],
    )
}

/// One account as a row of the table.
fn row(v: &Visit<'_>, user: &User) -> serde_json::Value {
    json!({
        "href": v.path(&format!("/admin/users/{}", user.id)),
        "email": user.email.as_str(),
        "name": super::full_name(user),
        "roles": user.roles.join(", "),
        "is_verified": user.is_verified,
        "is_active": user.is_active,
        "two_factor_enabled": user.two_factor_enabled,
        "locked_until": super::locked_until(user),
    })
}
