//! The invitations page: every invitation (address, roles, state, expiry, inviter), the form
//! that invites an address (the mail goes out in the page's language), and the revocation
//! of an address's pending invitations.

use std::collections::HashMap;

use chrono::Utc;
use http::StatusCode;
use serde_json::json;

use super::{Section, render, role_names};
use crate::accounts::admin::Administrator;
use crate::accounts::fields::FieldErrors;
use crate::domain::UserId;
use crate::portal::{Feedback, Form, Page, Visit, to_value};
use crate::store::{Invitation, InvitationState};

/// `GET /admin/invitations`.
pub(super) async fn page(v: &mut Visit<'_>, admin: &Administrator) -> Page {
    let feedback = super::notice(v);
    render_list(v, admin, StatusCode::OK, feedback, json!({})).await
}

/// `POST /admin/invitations`: invites the form's address with its roles.
pub(super) async fn create(v: &mut Visit<'_>, admin: &Administrator, form: &Form) -> Page {
    let roles = role_names(form.text("roles"));
    let mut found = FieldErrors::default();
    let email = found.email("email", form.text("email"));
    let invited = match found.finish_with(email) {
        Ok(email) => {
            let client = v.client();
            let accounts = &v.app.accounts;
            accounts.invite_as(admin, email, &roles, &client).await
        }
        Err(invalid) => Err(invalid),
    };
    match invited {
        Ok(_) => super::done(v, "/admin/invitations", "invited"),
        Err(e) => {
            let (status, feedback) = super::refused_form(v, e, str::to_owned);
            let values = json!({"email": form.text("email"), "roles": form.text("roles")});
            render_list(v, admin, status, feedback, values).await
        }
    }
}

/// `POST /admin/invitations/revoke`: revokes the pending invitations of the form's address.
pub(super) async fn revoke(v: &mut Visit<'_>, admin: &Administrator, form: &Form) -> Page {
    let mut found = FieldErrors::default();
    let email = found.email("email", form.text("email"));
    let revoked = match found.finish_with(email) {
        Ok(email) => {
            let client = v.client();
            v.app
                .accounts
                .revoke_invitations_as(admin, &email, &client)
                .await
        }
        Err(invalid) => Err(invalid),
    };
    match revoked {
        Ok(0) => super::done(v, "/admin/invitations", "unchanged"),
        Ok(_) => super::done(v, "/admin/invitations", "invitation_revoked"),
        Err(e) => {
            let refusal = v.refusal(e);
            let feedback = Feedback {
                form_error: Some(v.t(super::super::error_key(&refusal))),
                ..Feedback::default()
            };
            render_list(v, admin, refusal.status, feedback, json!({})).await
        }
    }
}

/// The page with `feedback` and the invitation form's `values`.
async fn render_list(
    v: &mut Visit<'_>,
    admin: &Administrator,
    status: StatusCode,
    feedback: Feedback,
    values: serde_json::Value,
) -> Page {
    let invitations = match v.app.accounts.list_invitations().await {
        Ok(invitations) => invitations,
        Err(e) => {
            let refusal = v.refusal(e);
            return super::failure(v, &refusal);
        }
    };
    let inviters = inviters(v, admin, &invitations).await;
    let rows: Vec<serde_json::Value> = invitations.iter().map(|i| row(v, i, &inviters)).collect();
    render(
        v,
        "admin_invitations.html",
        status,
        "admin_invitations_title",
        Section::Invitations,
        feedback,
        vec![
            ("invitations", to_value(rows)),
            ("values", to_value(values)),
        ],
    )
}

/// The addresses of the inviting accounts that still exist.
async fn inviters(
    v: &Visit<'_>,
    admin: &Administrator,
    invitations: &[Invitation],
) -> HashMap<UserId, String> {
    let mut ids: Vec<UserId> = invitations.iter().filter_map(|i| i.created_by).collect();
    ids.sort();
    ids.dedup();
    super::emails_of(v, admin, ids).await
}

/// One invitation as a row of the table.
fn row(v: &Visit<'_>, i: &Invitation, inviters: &HashMap<UserId, String>) -> serde_json::Value {
    let state = i.state(Utc::now());
    let inviter = i.created_by.and_then(|id| {
        let email = inviters.get(&id)?;
        let href = v.path(&format!("/admin/users/{id}"));
        Some(json!({"email": email, "href": href}))
    });
    json!({
        "email": i.email.as_str(),
        "roles": i.roles.join(", "),
        "state": v.t(&format!("admin_state_{}", state.as_str())),
        "pending": state == InvitationState::Pending,
        "expires_at": super::short_time(i.expires_at),
        "inviter": inviter,
    })
}
