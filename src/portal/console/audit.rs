//! The audit trail in the console: newest first, filtered by an account's address, a kind
//! of event (`AuditKind::ALL`) and a period (whole days, UTC), in pages by cursor (the
//! last id shown: `before`).

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use http::StatusCode;
use serde_json::json;

use super::{Section, render};
use crate::accounts::admin::Administrator;
use crate::domain::{Email, UserId};
use crate::portal::{Feedback, Page, Visit, to_value};
use crate::store::{AuditEvent, AuditFilter, AuditKind};

/// Events per page.
const PAGE: u32 = 25;
/// The filter form's fields, in the order of the query string.
const FIELDS: [&str; 4] = ["email", "kind", "since", "until"];

/// `GET /admin/audit?email=…&kind=…&since=…&until=…&before=…`.
pub(super) async fn page(v: &mut Visit<'_>, admin: &Administrator) -> Page {
    let typed: Vec<(&str, String)> = FIELDS
        .iter()
        .map(|f| (*f, v.query(f).unwrap_or("").trim().to_owned()))
        .collect();
    let filter = match filter_of(v, &typed) {
        Ok(filter) => filter,
        Err(feedback) => {
            return render_trail(v, StatusCode::BAD_REQUEST, feedback, &typed, None);
        }
    };
    let found = v.app.accounts.audit_trail(admin, &filter).await;
    let mut events = match found {
        Ok(events) => events,
        Err(e) => {
            let refusal = v.refusal(e);
            return super::failure(v, &refusal);
        }
    };
    let more = events.len() > PAGE as usize;
    events.truncate(PAGE as usize);
    let names = actors(v, admin, &events).await;
    let rows: Vec<serde_json::Value> = events.iter().map(|e| row(v, e, &names)).collect();
    let link = |before: Option<i64>| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in typed.iter().filter(|(_, value)| !value.is_empty()) {
            query.append_pair(name, value);
        }
        if let Some(before) = before {
            query.append_pair("before", &before.to_string());
        }
        format!("{}?{}", v.path("/admin/audit"), query.finish())
    };
    let pages = json!({
        "older_href": events.last().filter(|_| more).map(|e| link(Some(e.id))),
        "newest_href": filter.before_id.map(|_| link(None)),
    });
    let list = Some((rows, pages));
    let feedback = Feedback::default();
    render_trail(v, StatusCode::OK, feedback, &typed, list)
}

/// The filter the form's values ask for (with the page's cursor and size), or what is
/// wrong with them, each next to its field.
fn filter_of(v: &Visit<'_>, typed: &[(&str, String)]) -> Result<AuditFilter, Feedback> {
    let value = |name: &str| {
        typed
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, value)| value.as_str())
    };
    let mut feedback = Feedback::default();
    let mut reject = |field: &str, message: String| {
        feedback
            .errors
            .entry(field.to_owned())
            .or_default()
            .push(message);
    };
    let email = match value("email") {
        "" => None,
        typed => Email::parse(typed)
            .map_err(|e| reject("email", v.field_message("email", &e.to_string())))
            .ok(),
    };
    let kind = match value("kind") {
        "" => None,
        typed => AuditKind::parse(typed).or_else(|| {
            reject("kind", v.t("admin_error_kind"));
            None
        }),
    };
    let mut day = |field: &str| match value(field) {
        "" => None,
        typed => NaiveDate::parse_from_str(typed, "%Y-%m-%d")
            .map_err(|_| reject(field, v.t("admin_error_date")))
            .ok(),
    };
    let (since, until) = (day("since"), day("until"));
    if since.zip(until).is_some_and(|(since, until)| since > until) {
        reject("until", v.t("admin_error_dates_order"));
    }
    if !feedback.errors.is_empty() {
        return Err(feedback);
    }
    Ok(AuditFilter {
        user: None,
        email,
        kind,
        since: since.map(start_of),
        // "Until" a day includes it: events before the next day began.
        until: until.and_then(|d| d.succ_opt()).map(start_of),
        before_id: v
            .query("before")
            .and_then(|b| b.parse().ok())
            .filter(|b| *b > 0),
        limit: PAGE + 1,
    })
}

/// The first instant of `day`, UTC.
fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The page: the filter form as typed, and the events with their page links when the
/// filter could be read.
fn render_trail(
    v: &mut Visit<'_>,
    status: StatusCode,
    feedback: Feedback,
    typed: &[(&str, String)],
    list: Option<(Vec<serde_json::Value>, serde_json::Value)>,
) -> Page {
    let values: serde_json::Map<String, serde_json::Value> = typed
        .iter()
        .map(|(name, value)| ((*name).to_owned(), json!(value)))
        .collect();
    let selected = typed
        .iter()
        .find(|(n, _)| *n == "kind")
        .map_or("", |(_, value)| value.as_str());
    let kinds: Vec<serde_json::Value> = AuditKind::ALL
        .iter()
        .map(|k| {
            json!({
                "value": k.as_str(),
                "label": v.t(&format!("audit_kind_{k}")),
                "selected": k.as_str() == selected,
            })
        })
        .collect();
    let (events, pages) = match list {
        Some((events, pages)) => (Some(events), pages),
        None => (None, json!({})),
    };
    render(
        v,
        "admin_audit.html",
        status,
        "admin_audit_title",
        Section::Audit,
        feedback,
        vec![
            ("values", to_value(values)),
            ("kinds", to_value(kinds)),
            ("events", to_value(events)),
            ("pages", to_value(pages)),
        ],
    )
}

/// The addresses of the acting accounts that are not the event's subject (whose address
/// the event carries) and still exist.
async fn actors(
    v: &Visit<'_>,
    admin: &Administrator,
    events: &[AuditEvent],
) -> HashMap<UserId, String> {
    let mut ids: Vec<UserId> = events
        .iter()
        .filter_map(|e| e.actor.user_id().filter(|id| Some(*id) != e.subject))
        .collect();
    ids.sort();
    ids.dedup();
    super::emails_of(v, admin, ids).await
}

/// One event as a row of the table.
fn row(v: &Visit<'_>, e: &AuditEvent, names: &HashMap<UserId, String>) -> serde_json::Value {
    let account = |id: UserId, email: Option<&str>| {
        email.map(|email| json!({"email": email, "href": v.path(&format!("/admin/users/{id}"))}))
    };
    let actor_account = e.actor.user_id().and_then(|id| {
        let email = match e.subject {
            Some(subject) if subject == id => e.subject_email.as_deref(),
            _ => names.get(&id).map(String::as_str),
        };
        account(id, email)
    });
    let subject = match e.subject {
        Some(id) => account(id, e.subject_email.as_deref()),
        None => e
            .subject_email
            .as_ref()
            .map(|email| json!({"email": email})),
    };
    // A kind this binary does not know (written by a newer one) is shown as stored.
    let kind = AuditKind::parse(&e.kind)
        .map_or_else(|| e.kind.clone(), |k| v.t(&format!("audit_kind_{k}")));
    json!({
        "at": e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
        "kind": kind,
        "outcome": v.t(&format!("audit_outcome_{}", e.outcome.as_str())),
        "actor": v.t(&format!("audit_actor_{}", e.actor.kind())),
        "actor_account": actor_account,
        "subject": subject,
        "ip": e.client_ip.as_deref().unwrap_or(""),
        "detail": e.detail,
    })
}
