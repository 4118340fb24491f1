//! The sign-in portal: server-rendered pages for browsers under `portal.path_prefix`.
//!
//! Every page is a plain HTML form posted back here, usable without JavaScript. The pages
//! hold no rules of their own: each form is parsed into the account core's typed input and
//! answered by the same operation the API's handler calls ([`crate::accounts`]), after the
//! per-IP limits of the endpoint it stands for (`api::limit_client`), with the lockout
//! inside the core, so the browser and the API can never disagree. What the portal adds is
//! what a browser needs: cookies (see [`browser`]), CSRF protection ([`csrf`]), languages
//! ([`crate::i18n`]), and pages that never reveal whether an email address has an account.
//!
//! Templates are minijinja files built into the binary from `config/portal/templates/`,
//! each overridable from `portal.templates_dir`, like the mail templates.
//!
//! The admin console (`console`) is the portal's too: its pages under `{prefix}/admin`,
//! the same forms and checks, over the account core's admin operations.

pub mod assets;
mod console;
pub mod csrf;
mod devices;
mod pages;
pub mod refusals;
pub mod site;

pub use refusals::browser_answer;
use site::to_value;
pub use site::{Page, Portal};

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use minijinja::Value;
use serde_json::json;

use crate::access::credentials::Caller;
use crate::accounts::{AccountError, Client};
use crate::api::endpoints::Limit;
use crate::api::{ApiRequest, browser};
use crate::app::App;
use crate::auth::secrets::is_token_shaped;
use crate::i18n::{self, Catalog};
use crate::reply::Reply;

/// The parameters of an authorization response (RFC 6749 §4.1.2 and §4.1.2.1, RFC 9207,
/// OpenID Connect Session Management): one use each, and never repeated in a link.
const AUTHORIZATION_RESPONSE_PARAMS: [&str; 7] = [
    "code",
    "state",
    "iss",
    "error",
    "error_description",
    "error_uri",
    "session_state",
];

/// Seconds of life an access cookie must have left for a page to use it as it is; with
/// less, the page renews it first (seconds).
const RENEWAL_MARGIN_SECS: i64 = 10;

/// Answers one request under the portal's prefix. Never fails: every problem is a page.
pub async fn dispatch(app: &App, portal: &Portal, request: ApiRequest) -> Page {
    let sub = request
        .path
        .strip_prefix(portal.prefix.as_str())
        .unwrap_or("")
        .trim_end_matches('/')
        .to_owned();
    let is_get = request.method == Method::GET || request.method == Method::HEAD;
    if sub == "/portal.css" {
        if is_get {
            return portal.stylesheet_page();
        }
        let mut v = Visit::new(app, portal, &request);
        return v.method_not_allowed("GET, HEAD");
    }
    if let Some(image) = portal.assets.page_for(&sub) {
        if is_get {
            return image;
        }
        let mut v = Visit::new(app, portal, &request);
        return v.method_not_allowed("GET, HEAD");
    }
    if let Some(script) = portal.script_page(&sub) {
        if is_get {
            return script;
        }
        let mut v = Visit::new(app, portal, &request);
        return v.method_not_allowed("GET, HEAD");
    }
    let mut v = Visit::new(app, portal, &request);
    if console::owns(&sub) {
        return console::dispatch(&mut v, &sub).await;
    }
    if request.method == Method::POST {
        if !pages::POST_PATHS.contains(&sub.as_str()) {
            return if pages::GET_PATHS.contains(&sub.as_str()) {
                v.method_not_allowed("GET, HEAD")
            } else {
                v.not_found()
            };
        }
        let form = match v.read_form() {
            Ok(form) => form,
            Err(page) => return page,
        };
        return pages::post(&mut v, &sub, form).await;
    }
    // `/oidc/{id}/start` and `/oidc/{id}/callback`: one pair per `[[identity_providers]]`.
    if let Some(rest) = sub.strip_prefix("/oidc/") {
        return if is_get {
            pages::federation::get(&mut v, rest).await
        } else {
            v.method_not_allowed("GET, HEAD")
        };
    }
    if is_get && pages::GET_PATHS.contains(&sub.as_str()) {
        if v.language_chosen {
            v.remember_language().await;
        }
        return pages::get(&mut v, &sub).await;
    }
    if pages::GET_PATHS.contains(&sub.as_str()) || pages::POST_PATHS.contains(&sub.as_str()) {
        let allow = if pages::POST_PATHS.contains(&sub.as_str()) {
            if pages::GET_PATHS.contains(&sub.as_str()) {
                "GET, HEAD, POST"
            } else {
                "POST"
            }
        } else {
            "GET, HEAD"
        };
        return v.method_not_allowed(allow);
    }
    v.not_found()
}

/// The answer to `/favicon.ico`, which browsers ask for by themselves: the portal's icon
/// (whether or not the pages are on), never an upstream's 401.
pub fn favicon(portal: &Portal, method: &Method) -> Option<Page> {
    (method == Method::GET || method == Method::HEAD).then(|| portal.assets.favicon_ico())
}

/// The page for a request the gateway refused before the portal saw it (413, 408).
pub fn refusal_page(
    app: &App,
    portal: &Portal,
    request_headers: &HeaderMap,
    refusal: &Reply,
) -> Page {
    let catalog = refusals::language_of(app, request_headers);
    let mut page = refusals::minimal_page(catalog, refusal.status, "error_title", "error_bad_form");
    page.headers
        .push((http::header::CONTENT_SECURITY_POLICY, portal.csp.clone()));
    page
}

/// A form as posted: the first value of each field.
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field's value, `""` when absent.
    fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

/// Problems and news to show on a page.
#[derive(Default)]
pub(crate) struct Feedback {
    /// Messages per field id.
    errors: BTreeMap<String, Vec<String>>,
    /// One message for the whole form.
    form_error: Option<String>,
    /// Good news (`role="status"`).
    notice: Option<String>,
}

/// One request to the portal: who asks, in which language, and the cookies to set.
pub(crate) struct Visit<'a> {
    app: &'a App,
    portal: &'a Portal,
    request: &'a ApiRequest,
    lang: &'a Catalog,
    /// The CSRF cookie value the browser sent, if any.
    sent_csrf_cookie: Option<String>,
    /// The token forms carry this time.
    csrf_token: String,
    /// `Set-Cookie` values to send with the answer.
    cookies: Vec<String>,
    query: Vec<(String, String)>,
    /// The API's `Retry-After` (429, 503), passed on with the page that explains it.
    retry_after: Option<String>,
    /// Whether this request picked a language (`?lang=` naming one the portal has).
    language_chosen: bool,
    /// What [`Visit::signed_in`] found, once asked (a renewal must happen only once).
    signed_in: Option<Option<String>>,
}

impl<'a> Visit<'a> {
    fn new(app: &'a App, portal: &'a Portal, request: &'a ApiRequest) -> Self {
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(request.query.as_deref().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let explicit = query
            .iter()
            .find(|(k, _)| k == "lang")
            .map(|(_, v)| v.as_str());
        let headers = &request.headers;
        let lang = app.languages.negotiate(
            explicit,
            browser::cookie(headers, i18n::LANGUAGE_COOKIE),
            headers
                .get(http::header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok()),
        );
        // Copies of our cookies planted beside ours: none is read (`credentials::cookie`),
        // and every one is cleared before any cookie is set anew.
        let mut cookies = app
            .access
            .clear_ambiguous_cookies(headers, Some(&request.path))
            .unwrap_or_default();
        let language_chosen = explicit.is_some_and(|code| code.eq_ignore_ascii_case(&lang.code));
        if language_chosen {
            let secure = if app.serves_tls() { "; Secure" } else { "" };
            cookies.push(format!(
                "{}={}; Path=/; Max-Age=31536000; SameSite=Lax{secure}",
                i18n::LANGUAGE_COOKIE,
                lang.code
            ));
        }
        let sent_csrf_cookie = browser::cookie(headers, browser::csrf_cookie_name(app))
            .filter(|v| is_token_shaped(v))
            .map(str::to_owned);
        let csrf_cookie = match &sent_csrf_cookie {
            Some(value) => value.clone(),
            None => {
                let value = portal.csrf.new_cookie_value();
                cookies.push(browser::csrf_cookie(app, &value));
                value
            }
        };
        Self {
            app,
            portal,
            request,
            lang,
            sent_csrf_cookie,
            csrf_token: portal.csrf.token_for(&csrf_cookie),
            cookies,
            query,
            retry_after: None,
            language_chosen,
            signed_in: None,
        }
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn t(&self, key: &str) -> String {
        self.lang.text(key).to_owned()
    }

    fn path(&self, sub: &str) -> String {
        format!("{}{sub}", self.portal.prefix)
    }

    /// `{prefix}{sub}?return_to=…` (without the query when there is nothing to return to).
    fn path_with_return(&self, sub: &str, return_to: Option<&str>) -> String {
        match return_to {
            Some(target) => format!(
                "{}?{}",
                self.path(sub),
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("return_to", target)
                    .finish()
            ),
            None => self.path(sub),
        }
    }

    /// The validated `return_to` of the query string.
    fn return_to_query(&self) -> Option<String> {
        self.query("return_to")
            .and_then(|r| self.portal.safe_return_to(r))
    }

    /// Links to this page in every language, with this page's query but the language and
    /// a provider's authorization response (a spent code and state are never written into
    /// a page).
    fn language_links(&self) -> Value {
        let links: Vec<serde_json::Value> = self
            .app
            .languages
            .all()
            .iter()
            .map(|c| {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                let kept = |k: &str| k != "lang" && !AUTHORIZATION_RESPONSE_PARAMS.contains(&k);
                for (k, v) in self.query.iter().filter(|(k, _)| kept(k)) {
                    query.append_pair(k, v);
                }
                query.append_pair("lang", &c.code);
                json!({
                    "code": c.code,
                    "name": c.name,
                    "href": format!("{}?{}", self.request.path, query.finish()),
                    "current": c.code == self.lang.code,
                })
            })
            .collect();
        to_value(links)
    }

    /// Renders `template` with the shared values, `feedback` and `extra`.
    fn render(
        &mut self,
        template: &str,
        status: StatusCode,
        title_key: &str,
        feedback: Feedback,
        extra: Vec<(&'static str, Value)>,
    ) -> Page {
        let mut context = self
            .portal
            .shared_context(self.lang, self.lang.text(title_key));
        context.insert(
            "passkeys_enabled",
            Value::from(self.portal.passkeys_enabled),
        );
        context.insert("js_href", Value::from(self.path("/passkeys.js")));
        context.insert("languages", self.language_links());
        context.insert("csrf", Value::from(self.csrf_token.as_str()));
        let has_errors = !feedback.errors.is_empty() || feedback.form_error.is_some();
        // Field errors are announced once at the top too (WCAG 3.3.1), then shown by each field.
        let form_error = feedback.form_error.or_else(|| {
            (!feedback.errors.is_empty()).then(|| self.lang.text("error_fields").to_owned())
        });
        context.insert("has_errors", Value::from(has_errors));
        context.insert("errors", to_value(&feedback.errors));
        if let Some(error) = form_error {
            context.insert("form_error", Value::from(error));
        }
        if let Some(notice) = feedback.notice {
            context.insert("notice", Value::from(notice));
        }
        context.insert("values", to_value(json!({})));
        for (key, value) in extra {
            context.insert(key, value);
        }
        let rendered = self
            .portal
            .env
            .get_template(template)
            .and_then(|t| t.render(Value::from(context)));
        match rendered {
            Ok(html) => self.finish(status, Bytes::from(html)),
            Err(e) => {
                tracing::error!(template, error = %e, "a portal page did not render");
                let body = format!(
                    "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title></head>\
                     <body><main><h1>{}</h1><p>{}</p></main></body></html>",
                    self.lang.code,
                    self.lang.text("error_title"),
                    self.lang.text("error_title"),
                    self.lang.text("error_unavailable"),
                );
                self.finish(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(body))
            }
        }
    }

    /// Wraps a body with the portal's headers and the cookies gathered on the way.
    fn finish(&mut self, status: StatusCode, body: Bytes) -> Page {
        let mut headers = vec![
            (
                http::header::CONTENT_SECURITY_POLICY,
                self.portal.csp.clone(),
            ),
            // Only the origin, never a page's path and query (a mailed link's token), and not
            // `no-referrer`: browsers then send `Origin: null` with our own form posts.
            (http::header::REFERRER_POLICY, "strict-origin".to_owned()),
            (http::header::CONTENT_LANGUAGE, self.lang.code.clone()),
            (http::header::VARY, "Cookie, Accept-Language".to_owned()),
        ];
        // Over the gateway's own TLS its HSTS module sends `[tls]`'s value (or none, at
        // `hsts_max_age = "0s"`) on every answer; behind a proxy that terminates TLS
        // (`public_url` https, no `[tls]`), the portal's pages ask for https themselves.
        if self.app.serves_tls() && !self.app.config.tls.enabled() {
            headers.push((
                http::header::STRICT_TRANSPORT_SECURITY,
                "max-age=31536000".to_owned(),
            ));
        }
        for cookie in self.cookies.drain(..) {
            headers.push((http::header::SET_COOKIE, cookie));
        }
        if (status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE)
            && let Some(seconds) = self.retry_after.take()
        {
            headers.push((http::header::RETRY_AFTER, seconds));
        }
        Page {
            status,
            headers,
            content_type: "text/html; charset=utf-8",
            body,
        }
    }

    /// A 303 to `location` (after a post: the browser follows with a GET).
    fn redirect(&mut self, location: &str) -> Page {
        let mut page = self.finish(StatusCode::SEE_OTHER, Bytes::new());
        page.headers
            .push((http::header::LOCATION, location.to_owned()));
        page
    }

    /// A page of text with an optional link.
    fn message(
        &mut self,
        status: StatusCode,
        title_key: &str,
        paragraphs: &[&str],
        link: Option<(String, &str)>,
    ) -> Page {
        let paragraphs: Vec<String> = paragraphs.iter().map(|k| self.t(k)).collect();
        let link = link.map(|(href, key)| json!({"href": href, "text": self.t(key)}));
        self.render(
            "message.html",
            status,
            title_key,
            Feedback::default(),
            vec![
                ("paragraphs", to_value(paragraphs)),
                ("link", to_value(link)),
            ],
        )
    }

    fn not_found(&mut self) -> Page {
        let home = self.path("/login");
        self.message(
            StatusCode::NOT_FOUND,
            "error_not_found_title",
            &["error_not_found"],
            Some((home, "sign_in")),
        )
    }

    fn method_not_allowed(&mut self, allow: &str) -> Page {
        let mut page = self.message(
            StatusCode::METHOD_NOT_ALLOWED,
            "error_title",
            &["error_method"],
            None,
        );
        page.headers.push((http::header::ALLOW, allow.to_owned()));
        page
    }

    /// A page for an API answer that is not one the form can show next to its fields.
    fn failure(&mut self, response: &Reply) -> Page {
        let key = error_key(response);
        let back = self.path("/login");
        self.message(
            response.status,
            "error_title",
            &[key],
            Some((back, "back_to_sign_in")),
        )
    }

    /// Reads a posted form after the CSRF checks; the refusal is a page (403, 415).
    fn read_form(&mut self) -> Result<Form, Page> {
        if !csrf::same_origin(&self.request.headers, &self.portal.own_origins) {
            tracing::warn!(target: crate::telemetry::SECURITY, event = "portal_cross_site_post_refused", path = %self.request.path, client_ip = %self.request.client_ip);
            return Err(self.csrf_refusal());
        }
        let body = &self.request.body;
        let urlencoded = self
            .request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                mime.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !urlencoded && !body.is_empty() {
            return Err(self.message(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "error_title",
                &["error_bad_form"],
                None,
            ));
        }
        let form = Form(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        );
        if !self
            .portal
            .csrf
            .verify(self.sent_csrf_cookie.as_deref(), form.get(csrf::FIELD))
        {
            tracing::warn!(target: crate::telemetry::SECURITY, event = "portal_csrf_refused", path = %self.request.path, client_ip = %self.request.client_ip);
            return Err(self.csrf_refusal());
        }
        Ok(form)
    }

    /// A fresh CSRF cookie and token, at sign-in and sign-out: a token learnt before (or
    /// a cookie planted before) is worth nothing after.
    fn rotate_csrf(&mut self) {
        let value = self.portal.csrf.new_cookie_value();
        self.cookies.push(browser::csrf_cookie(self.app, &value));
        self.csrf_token = self.portal.csrf.token_for(&value);
    }

    /// Clears the cookies under other spellings of the gateway's names (another letter
    /// case, a prefix an earlier version used) that would otherwise sit beside the ones a
    /// sign-in sets and make the next request ambiguous.
    fn clear_stray_cookies(&mut self) {
        let rules = self.app.access.cookies();
        let strays = rules.clearing_strays(&self.request.headers, Some(&self.request.path));
        self.cookies.extend(strays);
    }

    /// Ends this browser's sign-in: clears the access and refresh cookies, rotates CSRF.
    fn end_sign_in(&mut self) {
        self.cookies.extend(browser::clearing_cookies(self.app));
        self.rotate_csrf();
    }

    fn csrf_refusal(&mut self) -> Page {
        let again = self.request.path.clone();
        self.message(
            StatusCode::FORBIDDEN,
            "error_title",
            &["error_csrf"],
            Some((again, "error_generic")),
        )
    }

    /// Keeps a refusal's `Retry-After` for the page that shows it (429, 503).
    fn note_retry_after(&mut self, response: &Reply) {
        self.retry_after = response
            .headers
            .iter()
            .find(|(name, _)| name == http::header::RETRY_AFTER)
            .map(|(_, value)| value.clone());
    }

    /// Where this visit comes from, as the account core takes it (mails in the page's
    /// language).
    fn client(&self) -> Client<'_> {
        Client {
            ip: self.request.client_ip,
            user_agent: &self.request.user_agent,
            language: &self.lang.code,
        }
    }

    /// The account core's refusal as the API would answer it: the page reads the same
    /// code (`AccountError::catalogue_key`) and the same field errors.
    fn refusal(&mut self, error: AccountError) -> Reply {
        let response = Reply::from(error);
        self.note_retry_after(&response);
        response
    }

    /// The signed-in account behind `token`, for a form the account core answers, after the
    /// API's per-IP `global` limit; the refusal as the API answers it (401, 403, 429, 503).
    async fn caller(&mut self, token: &str) -> Result<Caller, Reply> {
        self.caller_within(token, Limit::Global).await
    }

    /// As [`Visit::caller`], after the per-IP limits of `limit` (a form that stands for an
    /// endpoint with limits of its own).
    async fn caller_within(&mut self, token: &str, limit: Limit) -> Result<Caller, Reply> {
        let app = self.app;
        let limited = crate::api::limit_client(app, self.request.client_ip, limit)
            .await
            .map(drop);
        let caller = match limited {
            Ok(()) => app.access.authenticate_token(token).await,
            Err(refusal) => Err(refusal),
        };
        caller.inspect_err(|refusal| self.note_retry_after(refusal))
    }

    /// The per-IP limits of a sign-in form, as the API applies them to its sign-in.
    async fn limit_sign_in(&mut self) -> Result<(), Reply> {
        let limited = crate::api::limit_client(self.app, self.request.client_ip, Limit::Login)
            .await
            .map(drop);
        limited.inspect_err(|refusal| self.note_retry_after(refusal))
    }

    /// A per-IP limit's verdict (`crate::api::limit_*`), keeping a refusal's `Retry-After`
    /// for the page that explains it.
    fn limited(&mut self, verdict: Result<(), Reply>) -> Result<(), Reply> {
        verdict.inspect_err(|refusal| self.note_retry_after(refusal))
    }

    /// The browser's access token when it is signed in, renewed from the refresh cookie
    /// when the access cookie has expired (the new cookies go out with this answer).
    async fn signed_in(&mut self) -> Option<String> {
        if let Some(known) = &self.signed_in {
            return known.clone();
        }
        let found = self.find_sign_in().await;
        self.signed_in = Some(found.clone());
        found
    }

    /// A signed-in person who picks a language on a page gets their mails in it from then on.
    async fn remember_language(&mut self) {
        let Some(token) = self.signed_in().await else {
            return;
        };
        let app = self.app;
        let Ok(principal) = app.access.check(&token).await else {
            return;
        };
        let user = principal.user_id();
        if let Err(e) = app.accounts.set_language(user, &self.lang.code).await {
            tracing::warn!(error = ?e, "could not store the chosen language");
        }
    }

    /// Finds the browser's sign-in: its access cookie while that has more than
    /// [`RENEWAL_MARGIN_SECS`] to live, otherwise a renewal from the refresh cookie (and the
    /// still-valid access cookie when there is nothing to renew from).
    async fn find_sign_in(&mut self) -> Option<String> {
        let app = self.app;
        // A token about to expire is renewed now rather than refused by the API call this
        // page is about to make on its behalf (a form can take a bcrypt or two to answer).
        let mut expiring = None;
        if let Some(token) = browser::cookie(&self.request.headers, app.cookie_name())
            && let Ok(principal) = app.access.check(token).await
        {
            if principal.expires_at() - chrono::Utc::now().timestamp() > RENEWAL_MARGIN_SECS {
                return Some(token.to_owned());
            }
            expiring = Some(token.to_owned());
        }
        match browser::renew(app, &self.request.headers, self.request.client_ip).await {
            browser::Renewal::Renewed {
                access_token,
                cookies,
                ..
            } => {
                self.cookies.extend(cookies);
                Some(access_token)
            }
            browser::Renewal::Refused { cookies } => {
                self.cookies.extend(cookies);
                None
            }
            browser::Renewal::NoCookie | browser::Renewal::Unavailable(_) => expiring,
        }
    }

    /// The message of the request field `field` (an English sentence that names it, as
    /// the account core says it) in this language.
    fn field_message(&self, field: &str, english: &str) -> String {
        let label = crate::reply::field_label(field);
        self.lang.field_message(field, &label, english)
    }

    /// "`field` is required", in this language.
    fn field_required(&self, field: &str) -> String {
        self.field_message(field, &crate::reply::FieldError::required(field).message)
    }

    /// Field errors and the form-level message of a refused API call, in this language.
    /// `field_id` maps the API's field names to the ids of this page's inputs.
    fn feedback(&self, response: &Reply, field_id: impl Fn(&str) -> String) -> Feedback {
        let mut feedback = Feedback::default();
        if let Some(errors) = response.body_json()["errors"].as_array() {
            for error in errors {
                let (Some(field), Some(message)) =
                    (error["field"].as_str(), error["message"].as_str())
                else {
                    continue;
                };
                feedback
                    .errors
                    .entry(field_id(field))
                    .or_default()
                    .push(self.field_message(field, message));
            }
        }
        if feedback.errors.is_empty() {
            feedback.form_error = Some(self.t(error_key(response)));
        }
        feedback
    }
}

/// The catalogue key that explains a refused API call.
fn error_key(response: &Reply) -> &'static str {
    match response.body_json()["code"].as_str().unwrap_or("") {
        "invalid_credentials" => "error_invalid_credentials",
        "code_replayed" => "error_code_replayed",
        "account_locked" => "error_locked",
        "account_deactivated" => "error_deactivated",
        "registration_closed" => "error_registration_closed",
        "invitation_required" => "error_invitation_required",
        "rate_limited" => "error_rate_limited",
        "service_unavailable" => "error_unavailable",
        "invalid_token" => "link_invalid_text",
        "email_not_verified" => "two_factor_needs_verified_email",
        "two_factor_not_enabled" => "error_two_factor_not_enabled",
        "passkey_refused" | "ceremony_invalid" | "passkey_invalid" => "passkey_failed",
        _ if response.status == StatusCode::TOO_MANY_REQUESTS => "error_rate_limited",
        _ if response.status == StatusCode::SERVICE_UNAVAILABLE => "error_unavailable",
        _ => "error_generic",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::domain::Rgb;

    fn portal(extra: &str) -> Portal {
        let config =
            Config::load_from(Path::new("test.toml"), extra, Vec::new()).expect("valid config");
        let languages = crate::i18n::Catalogs::load(None, "en").expect("catalogues load");
        Portal::new(&config, std::sync::Arc::new(languages), &[3; 32]).expect("portal loads")
    }

    #[test]
    fn return_to_stays_on_site_or_on_allowed_hosts() {
        let p = portal(
            "[server]\npublic_url = \"https://auth.example.com\"\n\
             [portal]\nallowed_return_hosts = [\"app.example.com\", \"api.example.com:8443\"]\n",
        );
        let ok = [
            ("/app", "/app"),
            ("/app/page?x=1#top", "/app/page?x=1#top"),
            ("https://app.example.com/x", "https://app.example.com/x"),
            ("https://APP.example.com/x", "https://app.example.com/x"),
            ("https://app.example.com:443/x", "https://app.example.com/x"),
            (
                "https://api.example.com:8443/x",
                "https://api.example.com:8443/x",
            ),
            (
                "https://auth.example.com/auth/account",
                "https://auth.example.com/auth/account",
            ),
        ];
        for (input, expected) in ok {
            assert_eq!(
                p.safe_return_to(input).as_deref(),
                Some(expected),
                "{input}"
            );
        }
        let refused = [
            "",
            "//evil.example/x",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example/",
            "https://app.example.com.evil.example/",
            "https://evil.example@app.example.com/",
            "https://user:pw@app.example.com/",
            "javascript:alert(1)",
            "data:text/html,x",
            "ftp://app.example.com/",
            "http://app.example.com/",
            "http://auth.example.com/",
            "https://app.example.com:8443/",
            "https://auth.example.com:8443/",
            "https://api.example.com/",
            "https://api.example.com:443/",
            "http://api.example.com:8443/",
            "/x\r\nSet-Cookie: a=b",
            "/a b",
            "app.example.com/x",
            "/caf\u{e9}",
            "/a\u{7f}",
        ];
        for input in refused {
            assert_eq!(p.safe_return_to(input), None, "{input:?}");
        }
    }

    #[test]
    fn the_prefix_is_matched_by_whole_segments() {
        let p = portal("");
        assert!(p.owns("/auth"));
        assert!(p.owns("/auth/login"));
        assert!(!p.owns("/authx"));
        assert!(!p.owns("/app/auth"));
        let off = portal("[portal]\nenabled = false\n");
        assert!(!off.owns("/auth/login"));
        let config = |extra| Config::load_from(Path::new("t.toml"), extra, Vec::new()).unwrap();
        assert_eq!(
            config("[portal]\nenabled = false\n").portal.login_page(),
            None
        );
        let on = config("").portal;
        assert_eq!(on.login_page().as_deref(), Some("/auth/login"));
        assert_eq!(on.account_page().as_deref(), Some("/auth/account"));
    }

    #[test]
    fn a_broken_override_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("login.html"), "{% block content %}{{ oops(").unwrap();
        let text = format!(
            "[portal]\ntemplates_dir = {:?}\n",
            dir.path().display().to_string()
        );
        let config = Config::load_from(Path::new("t.toml"), &text, Vec::new()).unwrap();
        let dir = config.portal.templates_dir().unwrap();
        let languages = crate::i18n::Catalogs::load(dir, "en").unwrap();
        let err = Portal::new(&config, std::sync::Arc::new(languages), &[3; 32]).unwrap_err();
        assert!(err.contains("login.html"), "{err}");
    }

    #[test]
    fn the_stylesheet_carries_the_accent_colour() {
        let p = portal("[portal]\naccent_color = \"#123abc\"\n");
        let css = String::from_utf8(p.stylesheet.to_vec()).unwrap();
        assert!(css.contains("--accent: #123abc;"), "{css}");
        // The dark scheme's accent is the same hue, lightened to read on its boxes.
        let dark = Rgb::parse("#123abc")
            .unwrap()
            .lightened_against(Rgb::new(0x16, 0x1b, 0x22), 4.6);
        assert!(css.contains(&format!("--accent: {dark};")), "{css}");
        assert_ne!(dark.to_string(), "#123abc");
    }
}
