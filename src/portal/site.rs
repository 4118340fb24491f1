//! The portal's state, built once at start: templates (with overrides), language
//! catalogues, the CSRF key, and where its pages live.
//!
//! Below `app.rs` (which holds a [`Portal`]); the pages that drive the account API are in
//! the parent module, above `api/`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, StatusCode};
use minijinja::{Environment, Value};
use serde_json::json;

use super::assets::Assets;
use super::csrf::CsrfKey;
use crate::auth::secrets::derive_key;
use crate::config::Config;
use crate::domain::{PasswordPolicy, Rgb};
use crate::i18n::{Catalog, Catalogs};

/// Every template file, with its built-in text.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "layout.html",
        include_str!("../../config/portal/templates/layout.html"),
    ),
    (
        "forms.html",
        include_str!("../../config/portal/templates/forms.html"),
    ),
    (
        "login.html",
        include_str!("../../config/portal/templates/login.html"),
    ),
    (
        "two_factor.html",
        include_str!("../../config/portal/templates/two_factor.html"),
    ),
    (
        "register.html",
        include_str!("../../config/portal/templates/register.html"),
    ),
    (
        "verify_email.html",
        include_str!("../../config/portal/templates/verify_email.html"),
    ),
    (
        "forgot_password.html",
        include_str!("../../config/portal/templates/forgot_password.html"),
    ),
    (
        "reset_password.html",
        include_str!("../../config/portal/templates/reset_password.html"),
    ),
    (
        "invitation.html",
        include_str!("../../config/portal/templates/invitation.html"),
    ),
    (
        "invitation_passkey.html",
        include_str!("../../config/portal/templates/invitation_passkey.html"),
    ),
    (
        "account.html",
        include_str!("../../config/portal/templates/account.html"),
    ),
    (
        "two_factor_setup.html",
        include_str!("../../config/portal/templates/two_factor_setup.html"),
    ),
    (
        "recovery_codes.html",
        include_str!("../../config/portal/templates/recovery_codes.html"),
    ),
    (
        "logout.html",
        include_str!("../../config/portal/templates/logout.html"),
    ),
    (
        "message.html",
        include_str!("../../config/portal/templates/message.html"),
    ),
    (
        "passkey_add.html",
        include_str!("../../config/portal/templates/passkey_add.html"),
    ),
    (
        "admin_users.html",
        include_str!("../../config/portal/templates/admin_users.html"),
    ),
    (
        "admin_user.html",
        include_str!("../../config/portal/templates/admin_user.html"),
    ),
    (
        "admin_invitations.html",
        include_str!("../../config/portal/templates/admin_invitations.html"),
    ),
    (
        "admin_audit.html",
        include_str!("../../config/portal/templates/admin_audit.html"),
    ),
    (
        "admin_step_up.html",
        include_str!("../../config/portal/templates/admin_step_up.html"),
    ),
    (
        "reauthenticate.html",
        include_str!("../../config/portal/templates/reauthenticate.html"),
    ),
    (
        "second_factor.html",
        include_str!("../../config/portal/templates/second_factor.html"),
    ),
    (
        "refusal.html",
        include_str!("../../config/portal/templates/refusal.html"),
    ),
    ("portal.css", include_str!("../../config/portal/portal.css")),
    (
        "favicon.svg",
        include_str!("../../config/portal/favicon.svg"),
    ),
];

/// The passkey forms' script: it calls `navigator.credentials`.
const PASSKEYS_SCRIPT: &str = include_str!("../../config/portal/passkeys.js");

/// The show-password toggles' script: it unhides each toggle the pages render hidden, so
/// that without it a password field stays as it was.
const PASSWORD_SCRIPT: &str = include_str!("../../config/portal/password.js");

/// The page templates a browser is shown: each is rendered
/// once at start so that a broken override stops the server, naming the file.
const PAGES: &[&str] = &[
    "login.html",
    "reauthenticate.html",
    "two_factor.html",
    "register.html",
    "verify_email.html",
    "forgot_password.html",
    "reset_password.html",
    "invitation.html",
    "invitation_passkey.html",
    "account.html",
    "two_factor_setup.html",
    "recovery_codes.html",
    "logout.html",
    "message.html",
    "passkey_add.html",
    "admin_users.html",
    "admin_user.html",
    "admin_invitations.html",
    "admin_audit.html",
    "admin_step_up.html",
    "second_factor.html",
    "refusal.html",
];

/// `public`'s scheme, and the hosts `return_to` may name with their one port: `public`'s
/// own, then each entry of `portal.allowed_return_hosts` (validated at load).
fn return_hosts(public: &url::Url, allowed: &[String]) -> (String, Vec<(String, u16)>) {
    let scheme = public.scheme().to_owned();
    // `server.public_url` is http or https (checked at load).
    let scheme_port = if scheme == "https" { 443 } else { 80 };
    let mut hosts = vec![(
        public.host_str().unwrap_or("").to_ascii_lowercase(),
        public.port_or_known_default().unwrap_or(scheme_port),
    )];
    for (host, port) in allowed.iter().filter_map(|e| crate::config::return_host(e)) {
        hosts.push((host.to_owned(), port.unwrap_or(scheme_port)));
    }
    (scheme, hosts)
}

/// The background of the dark scheme's boxes (`--surface` in `portal.css`): the accent
/// is lightened until it reads on it.
const DARK_SURFACE: Rgb = Rgb::new(0x16, 0x1b, 0x22);

/// The contrast the dark scheme's accent keeps with [`DARK_SURFACE`]: WCAG 2.2 AA's 4.5:1
/// (1.4.3), with a margin for rounding.
const DARK_ACCENT_CONTRAST: f64 = 4.6;

/// Renders the template `name` (the stylesheet, the icon) with `accent` (light pages:
/// `portal.accent_color`, checked at load) and `accent_dark` (dark pages: it lightened).
fn render_with_accents(env: &Environment<'_>, name: &str, accent: &str) -> Result<String, String> {
    let light = Rgb::parse(accent).ok_or_else(|| format!("portal.accent_color {accent:?}"))?;
    let dark = light.lightened_against(DARK_SURFACE, DARK_ACCENT_CONTRAST);
    env.get_template(name)
        .and_then(|t| {
            t.render(minijinja::context! {
                accent => light.to_string(), accent_dark => dark.to_string(),
            })
        })
        .map_err(|e| format!("portal template {name}: {e}"))
}

/// `scheme://host[:port]`, the port left out when it is the scheme's default (RFC 6454 §6.2).
fn origin(scheme: &str, host: &str, port: u16) -> String {
    match (scheme, port) {
        ("http", 80) | ("https", 443) => format!("{scheme}://{host}"),
        _ => format!("{scheme}://{host}:{port}"),
    }
}

/// Any serializable value as a template value.
pub(super) fn to_value<T: serde::Serialize>(value: T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

/// A page (or the stylesheet) to send: status, headers, body.
#[derive(Clone, Debug)]
pub struct Page {
    /// The response status.
    pub status: StatusCode,
    /// The page's own headers (CSP, `Set-Cookie`, `Location`...), replacing the defaults.
    pub headers: Vec<(HeaderName, String)>,
    /// The `Content-Type` value, e.g. `text/html; charset=utf-8`.
    pub content_type: &'static str,
    /// The rendered page; empty for a redirect.
    pub body: Bytes,
}

/// The portal of one gateway: templates, languages, keys, built once at start.
pub struct Portal {
    pub(super) enabled: bool,
    pub(super) prefix: String,
    pub(super) env: Environment<'static>,
    pub(super) catalogs: Arc<Catalogs>,
    pub(super) csrf: CsrfKey,
    pub(super) stylesheet: Bytes,
    pub(super) csp: String,
    /// The origins that are the portal's own (RFC 6454): `server.public_url`'s, then each
    /// of `portal.allowed_return_hosts` with the public URL's scheme. Never the request's
    /// `Host`, which the client writes.
    pub(super) own_origins: Vec<String>,
    /// `server.public_url`'s scheme: the only one `return_to` may name.
    scheme: String,
    /// The hosts `return_to` may name, each with the one port it may have (the default
    /// port of `scheme` when the entry names none): the public URL's first.
    return_hosts: Vec<(String, u16)>,
    pub(super) title: String,
    pub(super) logo_url: String,
    /// The site's icon and logo, served from the prefix.
    pub(super) assets: Assets,
    /// `server.public_url` can be a WebAuthn relying party: the passkey controls show.
    pub(super) passkeys_enabled: bool,
    /// What new passwords are held to, for the hint beside a new password's field.
    password_policy: PasswordPolicy,
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("enabled", &self.enabled)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Portal {
    /// Loads the templates (with overrides), checks each against every catalogue and
    /// derives the portal's keys from `master` (the refresh-rotation key, shared by every
    /// instance). Fails naming the template at fault.
    pub fn new(
        config: &Config,
        catalogs: Arc<Catalogs>,
        master: &[u8; 32],
    ) -> Result<Self, String> {
        let p = &config.portal;
        let dir = config.portal.templates_dir()?;
        let mut env = Environment::new();
        // Pages share one layout and show optional parts (`errors.email`, `values.email`)
        // only when present: a missing value is empty, not an error.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, built_in) in BUILT_IN {
            let source = match dir.map(|d| d.join(name)) {
                Some(path) if path.is_file() => std::fs::read_to_string(&path)
                    .map_err(|e| format!("portal template {}: {e}", path.display()))?,
                _ => (*built_in).to_owned(),
            };
            env.add_template_owned(*name, source)
                .map_err(|e| format!("portal template {name}: {e}"))?;
        }
        let stylesheet = render_with_accents(&env, "portal.css", &p.accent_color)?;
        let assets = Assets::load(
            p,
            render_with_accents(&env, "favicon.svg", &p.accent_color)?,
        )?;
        let logo_url = match &assets.logo {
            Some(logo) => logo.href().to_owned(),
            None => p.logo_url.clone(),
        };
        let public = url::Url::parse(&config.server.public_url)
            .map_err(|e| format!("server.public_url: {e}"))?;
        let (scheme, return_hosts) = return_hosts(&public, &p.allowed_return_hosts);
        let own_origins: Vec<String> = return_hosts
            .iter()
            .map(|(host, port)| origin(&scheme, host, *port))
            .collect();

        let mut img_src = String::from("'self' data:");
        if let Ok(logo) = url::Url::parse(&p.logo_url) {
            img_src.push(' ');
            img_src.push_str(&logo.origin().ascii_serialization());
        }
        // Chrome applies form-action to the redirect after a post: list the return hosts.
        let mut form_action = String::from("'self'");
        for own in own_origins.iter().skip(1) {
            form_action.push(' ');
            form_action.push_str(own);
        }
        let passkeys_enabled = crate::passkeys::relying_party_of(&config.server.public_url).is_ok();
        // The scripts are files of ours (no inline script); the passkey script fetches
        // the options of a passwordless sign-in from the API on the same origin.
        let scripts = if passkeys_enabled {
            " script-src 'self'; connect-src 'self';"
        } else {
            " script-src 'self';"
        };
        let csp = format!(
            "default-src 'none';{scripts} style-src 'self'; img-src {img_src}; \
             form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
        );
        let portal = Self {
            enabled: p.enabled,
            prefix: p.path_prefix.clone(),
            env,
            catalogs,
            csrf: CsrfKey::new(derive_key(master, "portcullis/portal-csrf/v1")),
            stylesheet: Bytes::from(stylesheet),
            csp,
            own_origins,
            scheme,
            return_hosts,
            title: p.title.clone(),
            logo_url,
            assets,
            passkeys_enabled,
            password_policy: config.passwords.policy(),
        };
        portal.check_templates()?;
        Ok(portal)
    }

    /// Renders every page once with sample values, so a broken override fails the start.
    pub(super) fn check_templates(&self) -> Result<(), String> {
        for catalog in self.catalogs.all() {
            for page in PAGES {
                let mut context = self.sample_context(catalog);
                context.insert("ticket", Value::from("sample"));
                self.env
                    .get_template(page)
                    .and_then(|t| t.render(Value::from(context)))
                    .map_err(|e| format!("portal template {page} ({}): {e}", catalog.code))?;
            }
        }
        Ok(())
    }

    /// What every page's template is given: its language and texts, the site's title and
    /// logo, the stylesheet, the prefix, and `page_title`; no language links (a page adds
    /// them when it can be asked for again in another language), no script.
    pub(super) fn shared_context(
        &self,
        catalog: &Catalog,
        page_title: &str,
    ) -> BTreeMap<&'static str, Value> {
        let mut context = BTreeMap::new();
        context.insert("lang", Value::from(catalog.code.as_str()));
        context.insert("t", catalog.value());
        let icon = &self.assets.favicon;
        context.insert(
            "site",
            to_value(json!({"title": self.title, "logo_url": self.logo_url,
                "icon_href": icon.href(), "icon_type": icon.content_type()})),
        );
        context.insert(
            "css_href",
            Value::from(format!("{}/portal.css", self.prefix)),
        );
        context.insert("prefix", Value::from(self.prefix.as_str()));
        context.insert("password_hint", Value::from(self.password_hint(catalog)));
        context.insert(
            "password_js_href",
            Value::from(format!("{}/password.js", self.prefix)),
        );
        context.insert("languages", Value::from(Vec::<Value>::new()));
        context.insert("passkeys_enabled", Value::from(false));
        context.insert("page_title", Value::from(page_title));
        context
    }

    /// The hint beside a new password's field: `[passwords]`'s minimum, and the
    /// composition rule when an operator keeps it.
    fn password_hint(&self, catalog: &Catalog) -> String {
        let policy = &self.password_policy;
        let hint = catalog
            .text("password_rules")
            .replace("{min}", &policy.min_chars.to_string());
        match policy.require_classes {
            true => format!("{hint} {}", catalog.text("password_rules_classes")),
            false => hint,
        }
    }

    pub(super) fn sample_context(&self, catalog: &Catalog) -> BTreeMap<&'static str, Value> {
        let mut context = self.shared_context(catalog, "sample");
        context.insert("csrf", Value::from("sample"));
        context.insert("text", Value::from("sample"));
        context.insert("link", to_value(json!({"href": "/app", "text": "sample"})));
        context.insert("status", Value::from(403));
        context.insert("setup", Value::from(true));
        context.insert(
            "user",
            to_value(json!({"email": "ada@example.com", "first_name": "Ada",
                "last_name": "Lovelace", "is_verified": false, "two_factor_enabled": false})),
        );
        context.insert(
            "sessions",
            to_value(json!([{"id": "s", "ip": "192.0.2.1", "user_agent": "",
                "created_at": "", "last_seen_at": "", "current": false}])),
        );
        context.insert("codes", to_value(json!(["abcd-efgh-ijkl"])));
        context.insert("passkeys_enabled", Value::from(true));
        context.insert(
            "js_href",
            Value::from(format!("{}/passkeys.js", self.prefix)),
        );
        context.insert(
            "passkeys",
            to_value(json!([{"id": "p", "name": "Laptop", "created_at": "", "last_used_at": ""}])),
        );
        context.insert(
            "passkey",
            to_value(json!({"ceremony_id": "c", "options": {"publicKey": {}}})),
        );
        context.insert("totp", Value::from(true));
        context.insert("options", Value::from("{\"publicKey\": {}}"));
        context.insert("passkey_options", Value::from("{\"publicKey\": {}}"));
        context.insert("ceremony_id", Value::from("sample"));
        context.insert("name", Value::from("Laptop"));
        context.insert("errors", to_value(json!({"email": ["sample"]})));
        context.insert("values", to_value(json!({"email": "ada@example.com"})));
        context.insert("paragraphs", to_value(json!(["sample"])));
        Self::console_sample(&mut context);
        context
    }

    /// The console pages' sample values: one of each row, every optional part shown.
    fn console_sample(context: &mut BTreeMap<&'static str, Value>) {
        let account = json!({"email": "ada@example.com", "href": "/auth/admin/users/u"});
        context.insert(
            "console_nav",
            to_value(json!([{"href": "/auth/admin", "text": "Users", "current": true}])),
        );
        context.insert("wide", Value::from(true));
        context.insert(
            "users",
            to_value(
                json!([{"href": "/auth/admin/users/u", "email": "ada@example.com",
                "name": "Ada", "roles": "admin", "is_verified": true, "is_active": true,
                "two_factor_enabled": true, "locked_until": "2025-01-31 14:05 UTC"}]),
            ),
        );
        context.insert("next_href", Value::from("/auth/admin?after=x"));
        context.insert("first_href", Value::from("/auth/admin"));
        context.insert(
            "account",
            to_value(
                json!({"href": "/auth/admin/users/u", "id": "u", "email": "ada@example.com",
                "name": "Ada", "created_at": "", "last_login": null, "is_verified": false,
                "is_active": false, "two_factor_enabled": true, "failed_login_attempts": 2,
                "locked_until": "2025-01-31 14:05 UTC", "is_self": false,
                "roles": [{"name": "admin", "revocable": true}],
                "sessions": [{"id": "s", "ip": "192.0.2.1", "user_agent": "", "created_at": "",
                    "last_seen_at": "", "second_factor": true, "current": true}],
                "passkeys": [{"name": "Laptop", "created_at": "", "last_used_at": null}]}),
            ),
        );
        context.insert(
            "invitations",
            to_value(
                json!([{"email": "ada@example.com", "roles": "", "state": "pending",
                "pending": true, "expires_at": "", "inviter": account}]),
            ),
        );
        context.insert(
            "kinds",
            to_value(json!([{"value": "sign_in", "label": "Sign-in", "selected": true}])),
        );
        context.insert(
            "events",
            to_value(json!([{"at": "", "kind": "sign_in", "outcome": "success",
                "actor": "admin", "actor_account": account, "subject": account,
                "ip": "192.0.2.1", "detail": ""}])),
        );
        context.insert(
            "pages",
            to_value(json!({"older_href": "/auth/admin/audit?before=2",
                "newest_href": "/auth/admin/audit"})),
        );
        context.insert("return_to", Value::from("/auth/admin"));
    }

    /// Whether the portal answers `path` (canonical).
    pub fn owns(&self, path: &str) -> bool {
        self.enabled && crate::config::is_under(path, &self.prefix, false)
    }

    /// The `return_to` a browser may be sent on to: a path on this site, or an URL with
    /// `server.public_url`'s scheme on its host and port, or on a host of
    /// `portal.allowed_return_hosts` and the port the entry names (the scheme's default
    /// when none; an explicit `:443` is the same as none). Anything else (`//host`,
    /// `/\host`, another scheme or port, userinfo, non-ASCII or control characters) is
    /// refused. The URL comes back as the WHATWG URL parser serialises it.
    pub fn safe_return_to(&self, raw: &str) -> Option<String> {
        let raw = raw.trim();
        // Visible ASCII only: it goes into a Location header as it is (browsers send
        // anything else percent-encoded), and no control character or space hides in it.
        if raw.is_empty()
            || raw.len() > 2048
            || raw.contains('\\')
            || !raw.bytes().all(|b| b.is_ascii_graphic())
        {
            return None;
        }
        if raw.starts_with('/') {
            return (!raw.starts_with("//")).then(|| raw.to_owned());
        }
        let url = url::Url::parse(raw).ok()?;
        if url.scheme() != self.scheme || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?.to_ascii_lowercase();
        let port = url.port_or_known_default()?;
        self.return_hosts
            .iter()
            .any(|(h, p)| *h == host && *p == port)
            .then(|| url.to_string())
    }

    /// The script at `sub` (`/passkeys.js` while passkeys are on, `/password.js`), if any.
    pub(super) fn script_page(&self, sub: &str) -> Option<Page> {
        let script = match sub {
            "/passkeys.js" if self.passkeys_enabled => PASSKEYS_SCRIPT,
            "/password.js" => PASSWORD_SCRIPT,
            _ => return None,
        };
        Some(Page {
            status: StatusCode::OK,
            headers: vec![(
                http::header::CACHE_CONTROL,
                "public, max-age=3600".to_owned(),
            )],
            content_type: "text/javascript; charset=utf-8",
            body: Bytes::from_static(script.as_bytes()),
        })
    }

    pub(super) fn stylesheet_page(&self) -> Page {
        Page {
            status: StatusCode::OK,
            headers: vec![(
                http::header::CACHE_CONTROL,
                "public, max-age=3600".to_owned(),
            )],
            content_type: "text/css; charset=utf-8",
            body: self.stylesheet.clone(),
        }
    }
}
