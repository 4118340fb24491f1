//! What a browser is shown when the gateway refuses to pass its navigation on: the one
//! mapping from a [`Refusal`] to a browser's answer ([`browser_answer`]).
//!
//! A missing sign-in goes to the sign-in page and a missing second factor to the portal's
//! second-factor step, each with `return_to`; every other refusal is a page in the
//! visitor's language (the portal's language cookie, then `Accept-Language`) that keeps the
//! API answer's status and headers (`Retry-After`, `Allow`, `Set-Cookie`), drawn with the
//! portal's `refusal.html` (overridable from `portal.templates_dir`). With the portal off,
//! a minimal built-in page without links. API clients get the API answer, unchanged.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use minijinja::Value;
use serde_json::json;

use super::site::to_value;
use super::{Page, Portal};
use crate::access::policy::same_site_target;
use crate::access::refusal::{Refusal, is_navigation};
use crate::api::browser;
use crate::app::App;
use crate::config::Unmet;
use crate::i18n::{self, Catalog};
use crate::reply::Reply;

/// The portal's path (below its prefix) of the second-factor step.
pub(super) const SECOND_FACTOR_PATH: &str = "/second-factor";

/// A link a refusal page offers.
#[derive(Clone, Copy)]
enum Link {
    /// None.
    None,
    /// The account page (the portal's).
    Account,
    /// The page asked for, again.
    Retry,
}

/// What a refusal page says: its title, its text and the link it offers.
struct Shown {
    title: &'static str,
    text: &'static str,
    link: Link,
}

/// The browser's answer to `refusal` of a navigation to `target` (the canonical path and
/// query); `None` when the request is no navigation ([`is_navigation`]) and `api`, the API
/// client's answer, is to be sent as it is. The one place a refusal becomes a page or a
/// redirect: a new refusal is one arm here.
pub fn browser_answer(
    app: &App,
    portal: &Portal,
    headers: &HeaderMap,
    refusal: Refusal,
    api: &Reply,
    target: &str,
) -> Option<Page> {
    if !is_navigation(headers) {
        return None;
    }
    let target = same_site_target(target);
    let shown = match refusal {
        Refusal::SignIn(_) => match app.login_url().filter(|url| !url.is_empty()) {
            Some(login) => return Some(redirect(&with_return_to(&login, target), api)),
            None => shown("refusal_sign_in_title", "refusal_sign_in_text", Link::None),
        },
        Refusal::SecondFactor if portal.enabled => {
            let step = format!("{}{SECOND_FACTOR_PATH}", portal.prefix);
            return Some(redirect(&with_return_to(&step, target), api));
        }
        Refusal::Reauthentication => match app.config.portal.reauthenticate_page() {
            Some(page) => return Some(redirect(&with_return_to(&page, target), api)),
            None => shown(
                "refusal_reauthentication_title",
                "refusal_reauthentication_text",
                Link::None,
            ),
        },
        Refusal::SecondFactor => shown(
            "refusal_two_factor_title",
            "refusal_two_factor_text",
            Link::None,
        ),
        Refusal::EmailUnverified => shown(
            "refusal_unverified_title",
            "refusal_unverified_text",
            Link::Account,
        ),
        Refusal::Condition(unmet) => condition(unmet),
        Refusal::Denied => shown("refusal_denied_title", "refusal_denied_text", Link::None),
        Refusal::RateLimited => shown(
            "refusal_rate_limited_title",
            "refusal_rate_limited_text",
            Link::Retry,
        ),
        Refusal::Unavailable => shown(
            "refusal_unavailable_title",
            "refusal_unavailable_text",
            Link::Retry,
        ),
        Refusal::UpstreamDown => shown(
            "refusal_upstream_down_title",
            "refusal_upstream_down_text",
            Link::Retry,
        ),
        Refusal::UpstreamTimeout => shown(
            "refusal_upstream_timeout_title",
            "refusal_upstream_timeout_text",
            Link::Retry,
        ),
    };
    let catalog = language_of(app, headers);
    let page = if portal.enabled {
        portal_page(portal, catalog, api.status, &shown, target)
    } else {
        minimal_page(catalog, api.status, shown.title, shown.text)
    };
    Some(with_api_headers(page, api, portal, catalog))
}

fn shown(title: &'static str, text: &'static str, link: Link) -> Shown {
    Shown { title, text, link }
}

/// What an unmet route condition says.
fn condition(unmet: Unmet) -> Shown {
    match unmet {
        Unmet::Method => shown("refusal_method_title", "refusal_method_text", Link::None),
        Unmet::Network => shown("refusal_network_title", "refusal_network_text", Link::None),
        Unmet::User | Unmet::EmailDomain => shown(
            "refusal_forbidden_title",
            "refusal_user_text",
            Link::Account,
        ),
        Unmet::Role => shown(
            "refusal_forbidden_title",
            "refusal_role_text",
            Link::Account,
        ),
    }
}

/// The visitor's language: the portal's language cookie, then `Accept-Language` (a proxied
/// URL's query belongs to its application: no `?lang=` here).
pub(super) fn language_of<'a>(app: &'a App, headers: &HeaderMap) -> &'a Catalog {
    app.languages.negotiate(
        None,
        browser::cookie(headers, i18n::LANGUAGE_COOKIE),
        headers
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// `page?return_to=target` (`&` when `page` has a query already).
fn with_return_to(page: &str, target: &str) -> String {
    let separator = if page.contains('?') { '&' } else { '?' };
    let encoded: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
    format!("{page}{separator}return_to={encoded}")
}

/// A 302 to `location`, with the cookies the decision set (a renewal's rotated refresh
/// token must reach the browser whatever it is answered).
fn redirect(location: &str, api: &Reply) -> Page {
    let mut headers = vec![(http::header::LOCATION, location.to_owned())];
    headers.extend(
        api.headers
            .iter()
            .filter(|(name, _)| name == http::header::SET_COOKIE)
            .cloned(),
    );
    Page {
        status: StatusCode::FOUND,
        headers,
        content_type: "text/html; charset=utf-8",
        body: Bytes::new(),
    }
}

/// The page in the portal's look, from `refusal.html`.
fn portal_page(
    portal: &Portal,
    catalog: &Catalog,
    status: StatusCode,
    shown: &Shown,
    target: &str,
) -> Page {
    let link = match shown.link {
        Link::None => None,
        Link::Account => Some((format!("{}/account", portal.prefix), "refusal_account_link")),
        Link::Retry => Some((target.to_owned(), "refusal_try_again")),
    };
    let link = link.map(|(href, key)| json!({"href": href, "text": catalog.text(key)}));
    let mut context = portal.shared_context(catalog, catalog.text(shown.title));
    context.insert("text", Value::from(catalog.text(shown.text)));
    context.insert("link", to_value(link));
    context.insert("status", Value::from(status.as_u16()));
    let rendered = portal
        .env
        .get_template("refusal.html")
        .and_then(|t| t.render(Value::from(context)));
    match rendered {
        Ok(html) => Page {
            status,
            headers: Vec::new(),
            content_type: "text/html; charset=utf-8",
            body: Bytes::from(html),
        },
        Err(e) => {
            tracing::error!(error = %e, "the refusal page did not render");
            minimal_page(catalog, status, shown.title, shown.text)
        }
    }
}

/// A page of a title and a paragraph, built in: no stylesheet, no link.
pub(super) fn minimal_page(
    catalog: &Catalog,
    status: StatusCode,
    title_key: &str,
    text_key: &str,
) -> Page {
    let title = escape(catalog.text(title_key));
    let body = format!(
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{title}</title></head><body><main><h1>{title}</h1><p>{}</p></main></body></html>",
        escape(&catalog.code),
        escape(catalog.text(text_key)),
    );
    Page {
        status,
        headers: Vec::new(),
        content_type: "text/html; charset=utf-8",
        body: Bytes::from(body),
    }
}

/// Text as HTML text or attribute value.
fn escape(text: &str) -> String {
    minijinja::HtmlEscape(text).to_string()
}

/// The API answer's own headers on the page (`Set-Cookie`, `Retry-After`, `Allow`,
/// `WWW-Authenticate`, the rate-limit fields), then the portal's CSP and the page's
/// language; `Cache-Control: no-store` comes with every answer the gateway writes.
fn with_api_headers(mut page: Page, api: &Reply, portal: &Portal, catalog: &Catalog) -> Page {
    page.headers.extend(api.headers.iter().cloned());
    page.headers.extend([
        (http::header::CONTENT_SECURITY_POLICY, portal.csp.clone()),
        (http::header::CONTENT_LANGUAGE, catalog.code.clone()),
        (http::header::VARY, "Cookie, Accept-Language".to_owned()),
    ]);
    page
}
