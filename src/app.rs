//! The composition root: the shared state of one gateway instance (config, metrics,
//! backends, access control, the account core, mail, languages), built once at start.
//! The portal's pages and the gateway sit above it and hold their own state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http::StatusCode;
use prometheus::IntGauge;
use serde_json::{Map, Value, json};

use crate::access::Access;
use crate::access::cookies::CookieRules;
use crate::access::identity::IdentityHeaderNames;
use crate::accounts::{self, Accounts};
use crate::auth::jwt::KeyRing;
use crate::auth::password::PasswordHasher;
use crate::auth::totp::TwoFactor;
use crate::backend::{Backend, BackendRuntime};
use crate::config::{Config, MailUrl, redact_url};
use crate::i18n::Catalogs;
use crate::mail::{MailError, MailSite, Mailer};
use crate::metrics::Metrics;
use crate::passkeys::Passkeys;
use crate::ratelimit::{self, RateLimiter};
use crate::session::{self, SessionStore};
use crate::store::{self, UserStore};

/// How often expired and used mail tokens are deleted.
const TOKEN_PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// How long `/health` waits for a backend before calling it down.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the sessions and users gauges are read from the stores.
const GAUGE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Everything a request handler may need, built once at start.
pub struct App {
    /// The configuration, validated at load.
    pub config: Arc<Config>,
    /// The Prometheus registry and the gateway's own series.
    pub metrics: Metrics,
    /// The accounts (SQLite or PostgreSQL, as `storage.url` says). Private: accounts change
    /// through the core ([`Accounts`]) and [`Access`], never straight from a handler.
    store: Arc<dyn UserStore>,
    /// The sessions (in process or Redis, as `sessions.url` says). Private: a session ends
    /// only through `Access::revoke_*`, so that the caches of every instance hear of it.
    sessions: Arc<dyn SessionStore>,
    /// Outgoing mail, sent in the background.
    pub mailer: Arc<Mailer>,
    /// The keys that sign and verify access tokens and identity assertions.
    pub keys: Arc<KeyRing>,
    /// bcrypt on its own bounded pool, never on the proxy's threads.
    pub hasher: PasswordHasher,
    /// TOTP provisioning and the key that seals TOTP secrets at rest.
    pub two_factor: Arc<TwoFactor>,
    /// Per-client-IP limits, shared through Redis when sessions are.
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// Access control for both ways in: checks, policy, identity headers, revocation.
    pub access: Arc<Access>,
    /// The account core: sign-in, second factors, sessions (opened, renewed, ended).
    pub accounts: Accounts,
    /// The languages and their messages, for pages and mails.
    pub languages: Arc<Catalogs>,
    /// Runs work on the runtime that owns the backends' sockets (work that must finish after
    /// the answer has gone: a reset token written, then mailed).
    pub backend: Backend,
    /// The WebAuthn relying party (off when `server.public_url` cannot be one).
    pub passkeys: Arc<Passkeys>,
    /// Owns the database, Redis and SMTP connections (a socket stays with the runtime that
    /// made it); shared by every generation of the configuration, shut down with the last.
    backend_runtime: Arc<BackendRuntime>,
}

/// The gauges read from the stores (`portcullis_sessions_active`,
/// `portcullis_users_registered`) and where they are read from.
#[derive(Clone)]
struct CountGauges {
    store: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    sessions_active: IntGauge,
    users_registered: IntGauge,
}

impl CountGauges {
    fn new(
        store: &Arc<dyn UserStore>,
        sessions: &Arc<dyn SessionStore>,
        metrics: &Metrics,
    ) -> Self {
        Self {
            store: store.clone(),
            sessions: sessions.clone(),
            sessions_active: metrics.sessions_active.clone(),
            users_registered: metrics.users_registered.clone(),
        }
    }

    /// Reads both counts; a store that does not answer leaves its gauge as it was
    /// (`/health` is where an outage shows).
    async fn refresh(&self) {
        let (users, sessions) = tokio::join!(self.store.count_users(), self.sessions.count_live());
        match users {
            Ok(n) => self
                .users_registered
                .set(i64::try_from(n).unwrap_or(i64::MAX)),
            Err(e) => tracing::debug!(error = %e, "users gauge not refreshed"),
        }
        match sessions {
            Ok(n) => self
                .sessions_active
                .set(i64::try_from(n).unwrap_or(i64::MAX)),
            Err(e) => tracing::debug!(error = %e, "sessions gauge not refreshed"),
        }
    }

    /// Refreshes the gauges at once, then every [`GAUGE_REFRESH_INTERVAL`], on the backend
    /// runtime: off the proxy's threads, never per request.
    fn spawn(self, backend: &Backend) {
        backend.spawn(async move {
            let mut tick = tokio::time::interval(GAUGE_REFRESH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.refresh().await;
            }
        });
    }
}

/// Starts what runs for the life of the process on the backend runtime: the purger
/// (expired tokens, idle failure counts, audit events past `[audit] retention`), the
/// gatekeeper's followers and the count gauges' refresh.
fn start_background_tasks(
    backend: &Backend,
    store: &Arc<dyn UserStore>,
    access: &Access,
    config: &Config,
    gauges: CountGauges,
) {
    let audit_retention = config.audit.retention.map(|r| r.get());
    store::spawn_token_purger(
        backend,
        store.clone(),
        TOKEN_PURGE_INTERVAL,
        audit_retention,
    );
    access.spawn_followers(backend);
    gauges.spawn(backend);
}

impl App {
    /// Builds the application state from a validated config: keys, backends (migrations
    /// included) and mail. Safe to call from inside or outside a tokio runtime.
    pub fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        let metrics = Metrics::new();
        let identity_headers = IdentityHeaderNames::new(&config.identity_headers);
        let keys =
            Arc::new(KeyRing::load(&config.tokens).context("loading the token signing keys")?);
        let two_factor = Arc::new(
            TwoFactor::load(&config.two_factor).context("loading the two-factor encryption key")?,
        );
        let hasher = PasswordHasher::new(config.passwords.bcrypt_cost)
            .context("setting up password hashing")?;
        let languages = load_languages(&config)?;

        let passkeys = Arc::new(Passkeys::new(
            &config.server.public_url,
            config.two_factor.issuer.as_str(),
            &metrics,
        ));
        if let Some(reason) = passkeys.disabled_reason() {
            tracing::warn!("{reason}");
        }

        let runtime = BackendRuntime::start().context("starting the backend runtime")?;
        let (store, sessions, mailer, rate_limiter, backend) = runtime
            .block_on(|| async {
                let store = store::connect(&config.storage.url, config.storage.max_connections)
                    .await
                    .with_context(|| {
                        format!("opening storage {}", config.storage.url.redacted())
                    })?;
                let sessions = session::connect(&config.sessions).await.with_context(|| {
                    format!("opening sessions {}", redact_url(&config.sessions.url))
                })?;
                // The mailer's SMTP pool lives on this runtime too.
                let mailer = configured_mailer(&config, &metrics).context("setting up mail")?;
                let limiter = ratelimit::connect(&config.sessions, &metrics)
                    .await
                    .context("setting up rate limiting")?;
                let backend = Backend::current().context("the backend runtime is running")?;
                anyhow::Ok((store, sessions, Arc::new(mailer), limiter, backend))
            })
            .map_err(|_| anyhow::anyhow!("backend start-up panicked"))??;
        let access = Arc::new(Access::new(
            keys.clone(),
            sessions.clone(),
            store.clone(),
            identity_headers,
            CookieRules::new(
                &config.server.public_url,
                &config.sessions.cookie_domain,
                &config.portal.path_prefix,
            ),
        ));
        let gauges = CountGauges::new(&store, &sessions, &metrics);
        start_background_tasks(&backend, &store, &access, &config, gauges);
        let config = Arc::new(config);
        let accounts = Accounts::new(
            accounts::Parts {
                config: config.clone(),
                store: store.clone(),
                sessions: sessions.clone(),
                access: access.clone(),
                keys: keys.clone(),
                hasher: hasher.clone(),
                two_factor: two_factor.clone(),
                passkeys: passkeys.clone(),
                mailer: mailer.clone(),
                backend: backend.clone(),
            },
            &metrics,
        );
        Ok(Arc::new(Self {
            config,
            metrics,
            store,
            sessions,
            mailer,
            keys,
            hasher,
            two_factor,
            rate_limiter,
            access,
            accounts,
            languages,
            backend,
            passkeys,
            backend_runtime: Arc::new(runtime),
        }))
    }

    /// The next generation of this instance under `config`, a reloaded configuration whose
    /// restart settings are already the running ones (`Config::keep_restart_settings`): new
    /// keys (a new signing key signs; the verification keys listed still verify), languages,
    /// mail templates, identity header names and account core; the same stores, caches,
    /// background tasks, hasher, TOTP key and relying party. Nothing here touches the
    /// running generation, so a failure leaves it as it was.
    ///
    /// Errors: an unreadable key file, a broken catalogue or mail template.
    pub fn reconfigured(&self, config: Config) -> anyhow::Result<Arc<Self>> {
        let keys =
            Arc::new(KeyRing::load(&config.tokens).context("loading the token signing keys")?);
        let languages = load_languages(&config)?;
        let mailer = Arc::new(
            self.mailer
                .reconfigured(&config.mail)
                .context("setting up mail")?
                .with_site(mail_site(&config)),
        );
        let access = Arc::new(self.access.reconfigured(
            keys.clone(),
            IdentityHeaderNames::new(&config.identity_headers),
        ));
        let config = Arc::new(config);
        let accounts = Accounts::new(
            accounts::Parts {
                config: config.clone(),
                store: self.store.clone(),
                sessions: self.sessions.clone(),
                access: access.clone(),
                keys: keys.clone(),
                hasher: self.hasher.clone(),
                two_factor: self.two_factor.clone(),
                passkeys: self.passkeys.clone(),
                mailer: mailer.clone(),
                backend: self.backend.clone(),
            },
            &self.metrics,
        );
        Ok(Arc::new(Self {
            config,
            metrics: self.metrics.clone(),
            store: self.store.clone(),
            sessions: self.sessions.clone(),
            mailer,
            keys,
            hasher: self.hasher.clone(),
            two_factor: self.two_factor.clone(),
            rate_limiter: self.rate_limiter.clone(),
            access,
            accounts,
            languages,
            backend: self.backend.clone(),
            passkeys: self.passkeys.clone(),
            backend_runtime: self.backend_runtime.clone(),
        }))
    }

    /// Reads the sessions and users gauges from the stores now, as the background refresh
    /// does every 30 seconds (the tests read them without waiting for it).
    pub async fn refresh_gauges(&self) {
        CountGauges::new(&self.store, &self.sessions, &self.metrics)
            .refresh()
            .await;
    }

    /// The name of the browser's access cookie (see [`CookieRules`]).
    pub fn cookie_name(&self) -> &'static str {
        self.access.cookies().access
    }

    /// Where unauthenticated browsers are sent: `server.login_url`, else the portal's
    /// sign-in page; `None` when neither is set (they get a built-in 401 page).
    pub fn login_url(&self) -> Option<String> {
        let configured = &self.config.server.login_url;
        if configured.is_empty() {
            self.config.portal.login_page()
        } else {
            Some(configured.clone())
        }
    }

    /// Whether the public URL is HTTPS (a TLS terminator in front, or TLS here), as the
    /// cookie rules read `server.public_url` once at start.
    pub fn serves_tls(&self) -> bool {
        self.access.cookies().secure()
    }

    /// The health report: 200 when every dependency answers, 503 naming those that do not.
    pub async fn health(&self) -> (StatusCode, Value) {
        let (storage, sessions) = tokio::join!(
            tokio::time::timeout(HEALTH_TIMEOUT, self.store.ping()),
            tokio::time::timeout(HEALTH_TIMEOUT, self.sessions.ping()),
        );
        let mut checks = vec![
            (
                "storage",
                flatten(storage.map(|r| r.map_err(|e| e.to_string()))),
            ),
            (
                "sessions",
                flatten(sessions.map(|r| r.map_err(|e| e.to_string()))),
            ),
        ];
        for (name, dir) in written_dirs(&self.config) {
            // The caller's blocking pool, not the backend runtime: a file probe, no socket.
            let probe = tokio::task::spawn_blocking(move || probe_dir(&dir));
            let result = tokio::time::timeout(HEALTH_TIMEOUT, probe).await;
            checks.push((
                name,
                flatten(result.map(|r| r.unwrap_or_else(|e| Err(e.to_string())))),
            ));
        }
        let mut report = Map::new();
        let mut healthy = true;
        for (name, result) in checks {
            let value = match result {
                Ok(()) => json!("ok"),
                Err(e) => {
                    healthy = false;
                    json!({"status": "down", "error": e})
                }
            };
            report.insert(name.to_string(), value);
        }
        if healthy {
            (StatusCode::OK, json!({"status": "ok", "checks": report}))
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "degraded", "checks": report}),
            )
        }
    }
}

/// The directories the instance writes to while it runs, by `/health` check name: the log
/// files, the SQLite database and the mail outbox (each only when configured).
fn written_dirs(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let mut dirs = Vec::new();
    if !config.logging.dir.is_empty() {
        dirs.push(("log_dir", PathBuf::from(&config.logging.dir)));
    }
    if let Some(file) = config.storage.url.sqlite_file() {
        let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
        dirs.push((
            "data_dir",
            parent.map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        ));
    }
    if let MailUrl::File(outbox) = &config.mail.url {
        dirs.push(("mail_outbox", outbox.clone()));
    }
    dirs
}

/// Whether a directory still takes writes: a full disk, a read-only remount or a lost
/// mount fails here before it fails a registration or loses log lines. Writes, syncs and
/// removes a small file (a full disk refuses its first block).
fn probe_dir(dir: &Path) -> Result<(), String> {
    use std::io::Write;
    let path = dir.join(".portcullis-health-probe");
    let written = std::fs::File::create(&path)
        .and_then(|mut file| file.write_all(&[0; 4096]).and_then(|()| file.sync_all()));
    let _ = std::fs::remove_file(&path);
    written.map_err(|e| e.to_string())
}

fn flatten(result: Result<Result<(), String>, tokio::time::error::Elapsed>) -> Result<(), String> {
    result.unwrap_or_else(|_| Err("timed out".to_string()))
}

/// The mailer of `config`: links open the portal's pages when it is on, and mails carry
/// `portal.title` and `portal.accent_color`.
pub fn configured_mailer(config: &Config, metrics: &Metrics) -> Result<Mailer, MailError> {
    let mut mailer = Mailer::new(&config.mail, &config.server.public_url, metrics)?;
    if config.portal.enabled {
        mailer = mailer.with_pages_prefix(&config.portal.path_prefix);
    }
    Ok(mailer.with_site(mail_site(config)))
}

/// The portal's languages: the built-in catalogues and `portal.templates_dir`'s overrides.
fn load_languages(config: &Config) -> anyhow::Result<Arc<Catalogs>> {
    let dir = config
        .portal
        .templates_dir()
        .map_err(|e| anyhow::anyhow!(e))?;
    let languages = Catalogs::load(dir, &config.portal.default_language);
    Ok(Arc::new(languages.map_err(|e| anyhow::anyhow!(e))?))
}

/// The site mails speak for: `portal.title` and `portal.accent_color`.
fn mail_site(config: &Config) -> MailSite {
    MailSite {
        title: config.portal.title.clone(),
        accent: config.portal.accent_color.clone(),
    }
}
