//! Outgoing mail: verification, password reset and security notices, rendered from
//! overridable templates and delivered over SMTP or into an `.eml` outbox.
//!
//! The account API calls [`Mailer::send_in_background`], so a slow or broken relay never
//! delays or fails a response; failures are logged (without the link or token) and counted
//! in `portcullis_mail_failed_total{kind}`.
//!
//! All delivery runs on the tokio runtime the [`Mailer`] was built in: lettre's SMTP pool
//! spawns its housekeeping there and its sockets belong there. Build the mailer inside the
//! gateway's long-lived backend runtime; it may then be called from any other runtime.

mod templates;
mod transport;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::{Address, Message};
use minijinja::Value;
use prometheus::{IntCounterVec, Opts};

use crate::backend::{Backend, BackendError};
use crate::config::MailConfig;
use crate::metrics::Metrics;

pub use templates::{Rendered, Templates};
pub use transport::{FileTransport, MailTransport, SmtpTransport};

/// The page (under `server.public_url` and the portal's prefix, when the portal is on)
/// that confirms an email address.
pub const VERIFY_EMAIL_PATH: &str = "/verify-email";
/// The page (under `server.public_url`) where a user picks a new password.
pub const RESET_PASSWORD_PATH: &str = "/reset-password";
/// The page (under `server.public_url` and the portal's prefix) where an invitee chooses
/// their password.
pub const INVITATION_PATH: &str = "/invitation";

/// The site mails speak for: `portal.title` and `portal.accent_color`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailSite {
    /// The site's name, in every mail's footer.
    pub title: String,
    /// The colour of a mail's button (a CSS colour, checked at load).
    pub accent: String,
}

impl Default for MailSite {
    fn default() -> Self {
        Self {
            title: "Portcullis".to_owned(),
            accent: "#1d4ed8".to_owned(),
        }
    }
}

/// Why a mail could not be set up, rendered or delivered. No variant carries a token or link.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// `mail.url` is not a transport this build can use.
    #[error("invalid value for `mail.url` ({url}): {reason}")]
    InvalidUrl {
        /// The URL with any password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `mail.from` is not an address like `Name <user@example.com>`.
    #[error("invalid value for `mail.from` ({value:?}): {reason}")]
    InvalidFrom {
        /// The configured value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The recipient is not a valid address.
    #[error("the recipient is not a valid email address: {0}")]
    InvalidRecipient(String),
    /// `mail.templates_dir` cannot be used.
    #[error("invalid value for `mail.templates_dir` ({}): {reason}", dir.display())]
    TemplatesDir {
        /// The configured directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A template does not compile or render.
    #[error("mail template {file}: {message}")]
    Template {
        /// The template file at fault.
        file: String,
        /// The engine's account of the problem, with the line.
        message: String,
    },
    /// The `file://` outbox directory cannot be created.
    #[error("cannot create the mail outbox {}: {source}", dir.display())]
    Outbox {
        /// The outbox directory.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// lettre refused to assemble the message.
    #[error("cannot assemble the mail: {0}")]
    Build(String),
    /// The relay refused or could not be reached, or the file could not be written.
    #[error("mail delivery failed: {0}")]
    Delivery(String),
    /// [`Mailer::new`] was called outside a tokio runtime.
    #[error("the mailer must be built inside a tokio runtime")]
    NoRuntime,
    /// The runtime the mailer was built in has shut down.
    #[error("the runtime that delivers mail has shut down")]
    RuntimeGone,
}

/// One mail to send, with what its template needs beyond the recipient.
#[derive(Clone)]
pub enum MailKind {
    /// Confirms the address after registration (or on request).
    Verification {
        /// The raw single-use token; only its hash is stored.
        token: String,
        /// How long the token is accepted.
        expires_in: Duration,
        /// Where the portal's sign-in leads once the address is proven (a target the
        /// portal already held to its `return_to` rule; it checks it again on the page).
        return_to: Option<String>,
    },
    /// Lets the user choose a new password.
    PasswordReset {
        /// The raw single-use token; only its hash is stored.
        token: String,
        /// How long the token is accepted.
        expires_in: Duration,
    },
    /// An invitation to create an account for the recipient's address.
    Invitation {
        /// The raw single-use token; only its hash is stored.
        token: String,
        /// How long the token is accepted.
        expires_in: Duration,
    },
    /// The password was changed or reset.
    PasswordChanged,
    /// A sign-in from a device or address not seen before.
    LoginNotification {
        /// The client address of the sign-in.
        ip: String,
        /// The client's `User-Agent`.
        user_agent: String,
        /// When the sign-in happened.
        time: DateTime<Utc>,
    },
    /// Two-factor authentication was turned on.
    TwoFactorEnabled,
    /// Two-factor authentication was turned off.
    TwoFactorDisabled,
    /// New recovery codes replaced the old ones.
    RecoveryCodesRegenerated,
    /// A passkey was added to the account.
    PasskeyAdded {
        /// The name the user gave it.
        name: String,
    },
    /// A passkey was removed from the account.
    PasskeyRemoved {
        /// The name it had.
        name: String,
    },
}

impl fmt::Debug for MailKind {
    // Tokens are credentials: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Verification { expires_in, .. }
            | Self::PasswordReset { expires_in, .. }
            | Self::Invitation { expires_in, .. } => f
                .debug_struct(self.name())
                .field("token", &"<redacted>")
                .field("expires_in", expires_in)
                .finish(),
            Self::LoginNotification {
                ip,
                user_agent,
                time,
            } => f
                .debug_struct(self.name())
                .field("ip", ip)
                .field("user_agent", user_agent)
                .field("time", time)
                .finish(),
            _ => f.write_str(self.name()),
        }
    }
}

impl MailKind {
    /// Every kind's name, as used in template file names and the `kind` metric label.
    pub const NAMES: [&'static str; 10] = [
        "verification",
        "password_reset",
        "invitation",
        "password_changed",
        "login_notification",
        "two_factor_enabled",
        "two_factor_disabled",
        "recovery_codes_regenerated",
        "passkey_added",
        "passkey_removed",
    ];

    /// The kind's name: the template file prefix and the metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Verification { .. } => "verification",
            Self::PasswordReset { .. } => "password_reset",
            Self::Invitation { .. } => "invitation",
            Self::PasswordChanged => "password_changed",
            Self::LoginNotification { .. } => "login_notification",
            Self::TwoFactorEnabled => "two_factor_enabled",
            Self::TwoFactorDisabled => "two_factor_disabled",
            Self::RecoveryCodesRegenerated => "recovery_codes_regenerated",
            Self::PasskeyAdded { .. } => "passkey_added",
            Self::PasskeyRemoved { .. } => "passkey_removed",
        }
    }

    /// One value of every kind, with made-up data, to check templates against.
    pub fn samples() -> Vec<MailKind> {
        vec![
            Self::Verification {
                token: "sample-token".into(),
                expires_in: Duration::from_secs(24 * 3600),
                return_to: Some("/app".into()),
            },
            Self::PasswordReset {
                token: "sample-token".into(),
                expires_in: Duration::from_secs(3600),
            },
            Self::Invitation {
                token: "sample-token".into(),
                expires_in: Duration::from_secs(7 * 86_400),
            },
            Self::PasswordChanged,
            Self::LoginNotification {
                ip: "192.0.2.1".into(),
                user_agent: "Mozilla/5.0".into(),
                time: Utc::now(),
            },
            Self::TwoFactorEnabled,
            Self::TwoFactorDisabled,
            Self::RecoveryCodesRegenerated,
            Self::PasskeyAdded {
                name: "Laptop".into(),
            },
            Self::PasskeyRemoved {
                name: "Laptop".into(),
            },
        ]
    }
}

/// Renders and delivers the gateway's mails.
pub struct Mailer {
    from: Mailbox,
    message_id_domain: String,
    public_url: String,
    /// Where the pages that mailed links open live: `public_url` plus the portal's prefix.
    pages_url: String,
    /// The site's title and accent colour, for footers and buttons.
    site: MailSite,
    templates: Templates,
    transport: Arc<dyn MailTransport>,
    backend: Backend,
    login_notifications: bool,
    sent: IntCounterVec,
    failed: IntCounterVec,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("transport", &self.transport.describe())
            .field("login_notifications", &self.login_notifications)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Builds the mailer on the current tokio runtime, which must outlive it and keep running
    /// (deliveries are spawned there). Fails on a bad `mail.url` or `mail.from`, an outbox that
    /// cannot be created, or any template that does not compile or render.
    pub fn new(
        config: &MailConfig,
        public_url: &str,
        metrics: &Metrics,
    ) -> Result<Mailer, MailError> {
        let backend = Backend::current().ok_or(MailError::NoRuntime)?;
        let from = parse_from(&config.from)?;
        let templates = Templates::load(templates_dir(config))?;
        let transport: Arc<dyn MailTransport> =
            Arc::from(transport::open(&config.url, backend.handle())?);

        let (sent, failed) = counters();
        metrics.register(Box::new(sent.clone()));
        metrics.register(Box::new(failed.clone()));

        tracing::info!(transport = %transport.describe(), "mail transport ready");
        Ok(Mailer {
            message_id_domain: from.email.domain().to_owned(),
            from,
            public_url: public_url.trim_end_matches('/').to_owned(),
            pages_url: public_url.trim_end_matches('/').to_owned(),
            site: MailSite::default(),
            templates,
            transport,
            backend,
            login_notifications: config.login_notifications,
            sent,
            failed,
        })
    }

    /// The mailer under a reloaded `[mail]`: the sender, templates and notification switch
    /// from `config`, the transport, its runtime and counters shared with `self` (`mail.url`
    /// takes a restart). Fails as [`Mailer::new`] does on a bad sender or template.
    pub fn reconfigured(&self, config: &MailConfig) -> Result<Mailer, MailError> {
        let from = parse_from(&config.from)?;
        Ok(Mailer {
            message_id_domain: from.email.domain().to_owned(),
            from,
            public_url: self.public_url.clone(),
            pages_url: self.pages_url.clone(),
            templates: Templates::load(templates_dir(config))?,
            transport: self.transport.clone(),
            backend: self.backend.clone(),
            login_notifications: config.login_notifications,
            sent: self.sent.clone(),
            failed: self.failed.clone(),
            site: self.site.clone(),
        })
    }

    /// Checks `[mail]` as [`Mailer::new`] would, without a runtime, network or outbox: for
    /// `portcullis check-config`.
    pub fn check_config(config: &MailConfig) -> Result<(), MailError> {
        parse_from(&config.from)?;
        Templates::load(templates_dir(config))?;
        Ok(())
    }

    /// Links in mails open the portal's pages under `prefix` (`/auth/verify-email?token=…`)
    /// rather than directly under `server.public_url`.
    pub fn with_pages_prefix(mut self, prefix: &str) -> Self {
        self.pages_url = format!("{}{}", self.public_url, prefix.trim_end_matches('/'));
        self
    }

    /// Mails carry `site`'s title in their footers and its accent colour on their buttons.
    pub fn with_site(mut self, site: MailSite) -> Self {
        self.site = site;
        self
    }

    /// The link a verification mail carries for `token`.
    pub fn verification_link(&self, token: &str) -> String {
        link(&self.pages_url, VERIFY_EMAIL_PATH, token)
    }

    /// The link a password-reset mail carries for `token`.
    pub fn reset_link(&self, token: &str) -> String {
        link(&self.pages_url, RESET_PASSWORD_PATH, token)
    }

    /// The link an invitation mail carries for `token`.
    pub fn invitation_link(&self, token: &str) -> String {
        link(&self.pages_url, INVITATION_PATH, token)
    }

    /// Whether sign-ins from new devices are mailed (`mail.login_notifications`).
    pub fn login_notifications(&self) -> bool {
        self.login_notifications
    }

    /// Renders and delivers one mail in English, counting the outcome. A login notification
    /// is skipped (and `Ok`) when `mail.login_notifications` is off.
    pub async fn send(&self, to: &str, first_name: &str, mail: MailKind) -> Result<(), MailError> {
        self.send_in("en", to, first_name, mail).await
    }

    /// As [`Mailer::send`], in `language` (English where the templates have no such language).
    pub async fn send_in(
        &self,
        language: &str,
        to: &str,
        first_name: &str,
        mail: MailKind,
    ) -> Result<(), MailError> {
        let kind = mail.name();
        if matches!(mail, MailKind::LoginNotification { .. }) && !self.login_notifications {
            tracing::debug!(kind, "login notifications are off; mail not sent");
            return Ok(());
        }
        let result = self
            .render_and_deliver(language, to, first_name, &mail)
            .await;
        match &result {
            Ok(()) => {
                self.sent.with_label_values(&[kind]).inc();
                tracing::debug!(kind, "mail sent");
            }
            Err(_) => self.failed.with_label_values(&[kind]).inc(),
        }
        result
    }

    /// Sends on the mailer's runtime without waiting: failures are logged and counted, never
    /// returned, so a response never waits for or fails on mail.
    pub fn send_in_background(self: &Arc<Self>, to: &str, first_name: &str, mail: MailKind) {
        self.send_in_background_in("en", to, first_name, mail);
    }

    /// As [`Mailer::send_in_background`], in `language` (a code such as `ru`).
    pub fn send_in_background_in(
        self: &Arc<Self>,
        language: &str,
        to: &str,
        first_name: &str,
        mail: MailKind,
    ) {
        let this = Arc::clone(self);
        let to = to.to_owned();
        let first_name = first_name.to_owned();
        let language = language.to_owned();
        self.backend.spawn(async move {
            let kind = mail.name();
            if let Err(e) = this.send_in(&language, &to, &first_name, mail).await {
                tracing::warn!(kind, error = %e, "mail not sent");
            }
        });
    }

    async fn render_and_deliver(
        &self,
        language: &str,
        to: &str,
        first_name: &str,
        mail: &MailKind,
    ) -> Result<(), MailError> {
        let context = template_context(
            (&self.site, &self.public_url, &self.pages_url),
            to,
            first_name,
            mail,
            &Utc::now(),
            language,
        );
        let rendered = self.templates.render_in(mail.name(), language, &context)?;
        let message = self.build_message(to, first_name, rendered)?;
        let transport = Arc::clone(&self.transport);
        // Deliver on the mailer's own runtime: the SMTP pool and its sockets live there,
        // whatever runtime the caller is on.
        match self
            .backend
            .run(async move { transport.send(message).await })
            .await
        {
            Ok(result) => result,
            Err(BackendError::Panicked) => {
                Err(MailError::Delivery("the delivery task panicked".into()))
            }
            Err(_) => Err(MailError::RuntimeGone),
        }
    }

    fn build_message(
        &self,
        to: &str,
        first_name: &str,
        rendered: Rendered,
    ) -> Result<Message, MailError> {
        let address: Address = to
            .trim()
            .parse()
            .map_err(|e: lettre::address::AddressError| {
                MailError::InvalidRecipient(e.to_string())
            })?;
        // A display name is cosmetic; drop control characters rather than trust lettre to
        // encode every odd byte a user typed into their name.
        let name: String = first_name.chars().filter(|c| !c.is_control()).collect();
        let name = name.trim();
        let to = Mailbox::new((!name.is_empty()).then(|| name.to_owned()), address);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!(
                "<{}@{}>",
                uuid::Uuid::new_v4().simple(),
                self.message_id_domain
            )))
            .date_now()
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|e| MailError::Build(e.to_string()))
    }
}

/// `mail_sent_total{kind}` and `mail_failed_total{kind}`, every kind present from the start so
/// that dashboards and alerts see zeros rather than missing series.
fn counters() -> (IntCounterVec, IntCounterVec) {
    let make = |name: &str, help: &str| {
        let vec = IntCounterVec::new(Opts::new(name, help), &["kind"])
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        for kind in MailKind::NAMES {
            vec.with_label_values(&[kind]);
        }
        vec
    };
    (
        make("mail_sent_total", "Mails handed to the transport, by kind"),
        make(
            "mail_failed_total",
            "Mails that could not be rendered or delivered, by kind",
        ),
    )
}

fn parse_from(value: &str) -> Result<Mailbox, MailError> {
    value
        .parse::<Mailbox>()
        .map_err(|e| MailError::InvalidFrom {
            value: value.to_owned(),
            reason: e.to_string(),
        })
}

fn templates_dir(config: &MailConfig) -> Option<&Path> {
    let dir = config.templates_dir.trim();
    (!dir.is_empty()).then(|| Path::new(dir))
}

/// `{public_url}{path}?token={token}`, the token percent-encoded.
fn link(public_url: &str, path: &str, token: &str) -> String {
    let token: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    format!("{public_url}{path}?token={token}")
}

/// The variables a template of `mail`'s kind sees (documented in `config/templates/README.md`).
/// The sender is the site (its title and accent), `public_url`, and `pages_url`, below
/// which links point.
pub(crate) fn template_context(
    (site, public_url, pages_url): (&MailSite, &str, &str),
    email: &str,
    first_name: &str,
    mail: &MailKind,
    now: &DateTime<Utc>,
    language: &str,
) -> Value {
    let mut vars: BTreeMap<&'static str, Value> = BTreeMap::from([
        ("first_name", Value::from(first_name)),
        ("email", Value::from(email)),
        ("site_title", Value::from(site.title.as_str())),
        ("accent", Value::from(site.accent.as_str())),
        ("public_url", Value::from(public_url)),
        ("time", Value::from(format_time(now))),
    ]);
    match mail {
        MailKind::Verification {
            token,
            expires_in,
            return_to,
        } => {
            let mut href = link(pages_url, VERIFY_EMAIL_PATH, token);
            if let Some(target) = return_to {
                let target: String =
                    url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
                href = format!("{href}&return_to={target}");
            }
            vars.insert("link", Value::from(href));
            vars.insert(
                "expires_in",
                Value::from(human_duration_in(*expires_in, language)),
            );
        }
        MailKind::PasswordReset { token, expires_in } => {
            vars.insert(
                "link",
                Value::from(link(pages_url, RESET_PASSWORD_PATH, token)),
            );
            vars.insert(
                "expires_in",
                Value::from(human_duration_in(*expires_in, language)),
            );
        }
        MailKind::Invitation { token, expires_in } => {
            vars.insert("link", Value::from(link(pages_url, INVITATION_PATH, token)));
            vars.insert(
                "expires_in",
                Value::from(human_duration_in(*expires_in, language)),
            );
        }
        MailKind::LoginNotification {
            ip,
            user_agent,
            time,
        } => {
            vars.insert("ip", Value::from(ip.as_str()));
            // The header is the client's own text: the built-in templates show the device
            // it names; `user_agent` stays for templates that want it, made fit to show.
            let device = crate::domain::Device::of(user_agent).to_string();
            vars.insert("device", Value::from(device));
            let shown = crate::domain::text::shown_text(user_agent, 200);
            vars.insert("user_agent", Value::from(shown));
            vars.insert("time", Value::from(format_time(time)));
        }
        MailKind::PasskeyAdded { name } | MailKind::PasskeyRemoved { name } => {
            vars.insert("passkey_name", Value::from(name.as_str()));
        }
        MailKind::PasswordChanged
        | MailKind::TwoFactorEnabled
        | MailKind::TwoFactorDisabled
        | MailKind::RecoveryCodesRegenerated => {}
    }
    Value::from(vars)
}

fn format_time(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// [`human_duration`] in `language`: Russian has its own words and plural forms
/// (1 час, 2 часа, 5 часов); other languages read English.
fn human_duration_in(duration: Duration, language: &str) -> String {
    if language != "ru" {
        return human_duration(duration);
    }
    let secs = duration.as_secs();
    let (n, forms) = if secs >= 2 * 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, ["день", "дня", "дней"])
    } else if secs > 0 && secs.is_multiple_of(3600) {
        (secs / 3600, ["час", "часа", "часов"])
    } else if secs > 0 && secs.is_multiple_of(60) {
        (secs / 60, ["минуту", "минуты", "минут"])
    } else {
        (secs, ["секунду", "секунды", "секунд"])
    };
    let form = match (n % 10, n % 100) {
        (1, h) if h != 11 => forms[0],
        (2..=4, h) if !(12..=14).contains(&h) => forms[1],
        _ => forms[2],
    };
    format!("{n} {form}")
}

/// "24 hours", "1 hour", "30 minutes": the largest unit that states the duration exactly.
fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    // "24 hours" rather than "1 day": that is how link lifetimes are usually stated.
    let (n, unit) = if secs >= 2 * 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs > 0 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs > 0 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(Duration::from_secs(24 * 3600)), "24 hours");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(2 * 3600)), "2 hours");
        assert_eq!(human_duration(Duration::from_secs(30 * 60)), "30 minutes");
        assert_eq!(human_duration(Duration::from_secs(90 * 60)), "90 minutes");
        assert_eq!(human_duration(Duration::from_secs(7 * 86_400)), "7 days");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 seconds");
    }

    #[test]
    fn russian_durations_take_the_right_plural() {
        let ru = |secs| human_duration_in(Duration::from_secs(secs), "ru");
        assert_eq!(ru(3600), "1 час");
        assert_eq!(ru(2 * 3600), "2 часа");
        assert_eq!(ru(24 * 3600), "24 часа");
        assert_eq!(ru(11 * 3600), "11 часов");
        assert_eq!(ru(21 * 60), "21 минуту");
        assert_eq!(ru(7 * 86_400), "7 дней");
        assert_eq!(human_duration_in(Duration::from_secs(3600), "de"), "1 hour");
    }

    #[test]
    fn links_carry_the_token_percent_encoded() {
        assert_eq!(
            link("https://auth.example.com", VERIFY_EMAIL_PATH, "a+b/c=d"),
            "https://auth.example.com/verify-email?token=a%2Bb%2Fc%3Dd"
        );
        assert_eq!(
            link("http://127.0.0.1:8080", RESET_PASSWORD_PATH, "AbC-_9"),
            "http://127.0.0.1:8080/reset-password?token=AbC-_9"
        );
    }

    #[test]
    fn debug_output_hides_tokens() {
        let mail = MailKind::PasswordReset {
            token: "s3cr3t-token".into(),
            expires_in: Duration::from_secs(3600),
        };
        let shown = format!("{mail:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("password_reset"), "{shown}");
    }

    #[test]
    fn names_match_the_kinds() {
        let names: Vec<&str> = MailKind::samples().iter().map(MailKind::name).collect();
        assert_eq!(names, MailKind::NAMES);
    }

    #[test]
    fn check_config_needs_no_runtime_and_rejects_a_bad_sender() {
        let mut config = MailConfig {
            url: crate::config::MailUrl::Smtp("smtp://127.0.0.1:2525".into()),
            ..MailConfig::default()
        };
        Mailer::check_config(&config).unwrap();
        config.from = "not an address".into();
        let err = Mailer::check_config(&config).unwrap_err();
        assert!(err.to_string().contains("mail.from"), "{err}");
    }

    #[test]
    fn new_outside_a_runtime_says_so() {
        let config = MailConfig {
            url: crate::config::MailUrl::Smtp("smtp://127.0.0.1:2525".into()),
            ..MailConfig::default()
        };
        let err = Mailer::new(&config, "http://127.0.0.1:8080", &Metrics::new()).unwrap_err();
        assert!(matches!(err, MailError::NoRuntime), "{err}");
    }
}
