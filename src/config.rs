//! The configuration schema: one TOML file plus `PORTCULLIS_<SECTION>__<KEY>` overrides.
//!
//! Everything is parsed into types here, at start, so the rest of the code never
//! re-validates a setting or reads an environment variable.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use http::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;

use crate::domain::password::MIN_PASSWORD_FLOOR;
use crate::domain::rate::deserialize_optional_rate;
use crate::domain::{HumanDuration, PasswordPolicy, RateSpec, Rgb};

mod identity_providers;
mod registration;
mod restart;
mod route_checks;
mod rules;
mod tls;

pub use identity_providers::{
    ClientSecret, IdentityProviderConfig, ProviderId, ProviderKind, check_endpoint_url,
};
pub use registration::{DomainPattern, Refusal, RegistrationMode, RegistrationPolicy};
pub use route_checks::HostPattern;
pub use rules::{
    Account, EmailDomain, EmailEntry, MethodName, Network, RouteGuard, Rules, Unmet, UserEntry,
};
pub use tls::{CertificateFiles, KeyedPair, TlsConfig};

/// Where the config file is looked for when neither `--config` nor `PORTCULLIS_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "config/portcullis.toml";

/// `config/portcullis.toml` as built into the binary: what runs when no config file was
/// named and [`DEFAULT_CONFIG_PATH`] does not exist (see [`Config::locate`]).
pub const EMBEDDED_DEFAULTS: &str = include_str!("../config/portcullis.toml");

/// Where the configuration in use came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file: the one named by `--config` or `PORTCULLIS_CONFIG`, or [`DEFAULT_CONFIG_PATH`].
    File(PathBuf),
    /// [`EMBEDDED_DEFAULTS`], because no file was named and the default path has none.
    Embedded,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Embedded => f.write_str("the embedded default configuration"),
        }
    }
}

/// The prefix of environment overrides: `PORTCULLIS_SERVER__LISTEN=…`.
pub const ENV_PREFIX: &str = "PORTCULLIS_";

/// A configuration that could not be loaded, with the key and the source it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist or cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Unreadable {
        /// The file asked for.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value of the right type that does not make sense.
    #[error("invalid value for `{key}` (from {source_name}): {message}")]
    Invalid {
        /// The key, as written in the file (`server.threads`, `routes[2].upstream`).
        key: String,
        /// The file's name, or the environment variable that set the value.
        source_name: String,
        /// What is wrong with the value.
        message: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listeners, public address, limits and timeouts.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[tls]`: TLS on the main listener, HSTS, the redirect listener.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `[logging]`: stdout format, level and log files.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// `[storage]`: the user database.
    #[serde(default)]
    pub storage: StorageConfig,
    /// `[sessions]`: the session store, also holding rate-limit counters.
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// `[tokens]`: access and refresh tokens.
    #[serde(default)]
    pub tokens: TokensConfig,
    /// `[passwords]`: password hashing.
    #[serde(default)]
    pub passwords: PasswordsConfig,
    /// `[lockout]`: the brute-force lock on an account.
    #[serde(default)]
    pub lockout: LockoutConfig,
    /// `[mail]`: outgoing mail.
    #[serde(default)]
    pub mail: MailConfig,
    /// `[two_factor]`: TOTP.
    #[serde(default)]
    pub two_factor: TwoFactorConfig,
    /// `[rate_limits]`: per-address limits of the account API.
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    /// `[identity_headers]`: the names upstreams read the identity from.
    #[serde(default)]
    pub identity_headers: IdentityHeadersConfig,
    /// `[cors]`: cross-origin access to the account API.
    #[serde(default)]
    pub cors: CorsConfig,
    /// `[portal]`: the sign-in pages.
    #[serde(default)]
    pub portal: PortalConfig,
    /// `[registration]`: who may create an account by themselves.
    #[serde(default)]
    pub registration: RegistrationPolicy,
    /// `[audit]`: how long the audit trail is kept.
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[admin]`: who may use the admin API and console.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[[identity_providers]]`: the OpenID Connect and GitHub sign-ins the portal offers.
    #[serde(default)]
    pub identity_providers: Vec<IdentityProviderConfig>,
    /// `[[routes]]`: what is proxied where, under which policy; empty proxies nothing.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// `PORTCULLIS_` variables that name no key (one underscore where two belong): not
    /// an error, as the environment holds more than this process's settings, but said.
    #[serde(skip)]
    stray_variables: Vec<String>,
}

/// `[server]`: listeners, public address and proxy behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address of the gateway: the account API, the portal and proxied routes.
    pub listen: SocketAddr,
    /// The address of `/metrics` and `/health`; a port of its own, kept private.
    pub admin_listen: SocketAddr,
    /// The `http(s)://host[:port]` browsers reach the gateway at: links in mails, cookie
    /// scope (`Secure` when https), the passkeys' relying party. Checked at load.
    pub public_url: PublicUrl,
    /// Worker threads of the proxy (1 to 1024).
    pub threads: usize,
    /// Networks whose peers are believed when they send `X-Forwarded-For` and the other
    /// `proxy_headers`; empty trusts no one.
    pub trusted_proxies: Vec<IpNet>,
    /// The most bytes of a request body the account API and the portal read (413 above it);
    /// at least 1. Proxied bodies are not capped.
    pub max_body_bytes: usize,
    /// Where browsers without a session are sent: a path (`/login`) or an http(s) URL; `""`
    /// means the portal's sign-in page (when the portal is on).
    pub login_url: String,
    /// How long in-flight requests get to finish after SIGTERM.
    pub shutdown_grace: HumanDuration,
    /// Time allowed to open a connection to an upstream before answering 502.
    pub upstream_connect_timeout: HumanDuration,
    /// Time allowed between bytes from an upstream before answering 504.
    pub upstream_timeout: HumanDuration,
    /// How often upstream names are resolved again (at least 1 s); an address that changed
    /// is used from the next request on, a name that stops resolving keeps its last one.
    pub upstream_resolve_interval: HumanDuration,
    /// Headers only a proxy in `trusted_proxies` may send; removed from every other
    /// client's request. Case and `_`/`-` do not matter; a final `*` matches a prefix.
    pub proxy_headers: Vec<String>,
    /// Headers removed from every request before it is forwarded, trusted proxies' too;
    /// the same spelling rules as `proxy_headers`.
    pub strip_headers: Vec<String>,
    /// The whole time a client gets to send a request's headers, from its first byte.
    pub header_read_timeout: HumanDuration,
    /// The most bytes a request head (request-line and header fields) may take.
    pub max_header_bytes: usize,
    /// The whole time a client gets to send the body of an account-API request.
    pub body_read_timeout: HumanDuration,
    /// Open connections one client address may hold on the main listener; 0 for no limit.
    /// Peers in `trusted_proxies` are not limited (they speak for many clients).
    pub max_connections_per_ip: usize,
    /// Open connections the main listener holds at once, all addresses together; 0 for no
    /// limit. Keep it below the open-files limit (`ulimit -n`).
    pub max_connections: usize,
    /// Open connections one address may hold on the admin listener; 0 for no limit.
    pub admin_max_connections_per_ip: usize,
    /// Open connections the admin listener holds at once; 0 for no limit.
    pub admin_max_connections: usize,
    /// How long a client connection may sit between requests (or before its first) before
    /// it is closed, on both listeners.
    pub keepalive_timeout: HumanDuration,
}

/// The headers only a trusted proxy may send, by default: the forwarding headers
/// (RFC 7239 `Forwarded`, the `X-Forwarded-*` family and its older spellings) and the
/// client-address claims of CDNs and load balancers.
pub const DEFAULT_PROXY_HEADERS: &[&str] = &[
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "x-forwarded-*",
    "x-host",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
];

/// The headers no client may send upstream, trusted proxies included, by default: they
/// would make an upstream serve another path or method than the policy checked (IIS, Symfony
/// and Laravel honour `X-Original-URL`; frameworks honour method overrides; Next.js trusted
/// `X-Middleware-Subrequest`, CVE-2025-29927), or claim an identity for upstreams set up
/// behind other authentication proxies (Authelia's `Remote-*`, oauth2-proxy's
/// `X-Auth-Request-*` and `X-Forwarded-User`); `Cookie2` is obsolete (RFC 6265).
pub const DEFAULT_STRIP_HEADERS: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-original-host",
    "x-original-method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-middleware-subrequest",
    "remote-*",
    "x-remote-*",
    "x-auth-request-*",
    "x-webauth-*",
    "x-authenticated-user",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "cookie2",
];

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            public_url: "http://localhost:8080"
                .parse()
                .expect("the default public URL is one"),
            threads: 2,
            trusted_proxies: Vec::new(),
            max_body_bytes: 65536,
            login_url: String::new(),
            shutdown_grace: HumanDuration::from_secs(5),
            upstream_connect_timeout: HumanDuration::from_secs(5),
            upstream_timeout: HumanDuration::from_secs(60),
            upstream_resolve_interval: HumanDuration::from_secs(30),
            proxy_headers: DEFAULT_PROXY_HEADERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            strip_headers: DEFAULT_STRIP_HEADERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            header_read_timeout: HumanDuration::from_secs(10),
            max_header_bytes: 65536,
            body_read_timeout: HumanDuration::from_secs(30),
            max_connections_per_ip: 256,
            max_connections: 10000,
            admin_max_connections_per_ip: 8,
            admin_max_connections: 64,
            keepalive_timeout: HumanDuration::from_secs(75),
        }
    }
}

/// `server.public_url`, parsed at load: an `http://` or `https://` URL with a host, where
/// browsers reach the gateway. Reads as the text it was written as (`Deref<Target = str>`,
/// `Display`), so links can be built on it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PublicUrl {
    text: String,
    https: bool,
    host: String,
    domain: Option<String>,
    port: u16,
    origin: String,
}

impl PublicUrl {
    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it is `https://` (a TLS terminator in front, or TLS here).
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host, lower case (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host when it is a DNS name (lower case); `None` for an IP address.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The port, the scheme's default (80, 443) when none is written.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The origin (RFC 6454 §6.2): `scheme://host`, plus `:port` when not the default.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl std::str::FromStr for PublicUrl {
    type Err = String;

    /// Takes an `http(s)://` URL with a host; `Err` says what is wrong.
    fn from_str(text: &str) -> Result<Self, String> {
        let url = parse_http_url(text)?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or_default();
        Ok(Self {
            text: text.to_owned(),
            https: url.scheme() == "https",
            host,
            domain: url.domain().map(str::to_owned),
            port,
            origin: url.origin().ascii_serialization(),
        })
    }
}

impl TryFrom<String> for PublicUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl std::ops::Deref for PublicUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::fmt::Debug for PublicUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// Log output format on stdout.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[logging]`: stdout format, level filter and the directory of the JSON-lines files.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// The format of the lines on stdout (the files are always JSON lines).
    pub format: LogFormat,
    /// A `tracing` filter such as `"info"` or `"info,portcullis=debug"`.
    pub level: String,
    /// Where `combined.log`, `error.log`, `security.log` and `access.log` go; `""` disables
    /// the files.
    pub dir: String,
    /// Whether `access.log` gets one JSON line per request (client, method, path without
    /// query, route, status, upstream, duration, bytes, user id).
    pub access_log: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
            dir: "logs".into(),
            access_log: true,
        }
    }
}

/// `[storage]`: the user database.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where accounts live: `sqlite:PATH`, `sqlite://PATH`, `sqlite::memory:` or
    /// `postgres://…` (see [`StorageUrl`]).
    pub url: StorageUrl,
    /// The most database connections this instance opens at once (at least 1).
    pub max_connections: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: StorageUrl::Sqlite("sqlite://data/portcullis.db".into()),
            max_connections: 10,
        }
    }
}

/// `storage.url`, parsed at load: which database, with the URL its driver opens as written
/// (it may hold a password: [`StorageUrl::redacted`] is what messages show).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum StorageUrl {
    /// `sqlite:PATH`, `sqlite://PATH` or `sqlite::memory:`, with sqlx's `?mode=…` options.
    Sqlite(String),
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
}

impl StorageUrl {
    /// The URL as written, for the database driver.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Sqlite(url) | Self::Postgres(url) => url,
        }
    }

    /// The URL with any password masked, for messages and logs.
    pub fn redacted(&self) -> String {
        redact_url(self.as_str())
    }

    /// The database file of a SQLite URL; `None` for PostgreSQL and in-memory databases.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        let Self::Sqlite(url) = self else {
            return None;
        };
        let rest = url.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or(rest);
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }
}

impl std::str::FromStr for StorageUrl {
    type Err = String;

    /// Picks the database by scheme; `Err` names what is accepted, the password masked.
    fn from_str(url: &str) -> Result<Self, String> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(url.to_owned()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.to_owned()))
        } else {
            Err(format!(
                "{} is neither sqlite://PATH nor postgres://…",
                redact_url(url)
            ))
        }
    }
}

impl TryFrom<String> for StorageUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        url.parse()
    }
}

impl std::fmt::Debug for StorageUrl {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `[sessions]`: the session store (also used for rate limits and lockout counters).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// `memory://` (this process only; sessions end at a restart) or `redis://…` /
    /// `rediss://…` (shared by every instance); read through [`SessionsConfig::backend`].
    pub url: String,
    /// Prepended to every Redis key, so instances of different deployments can share one
    /// Redis; unused with `memory://`.
    pub key_prefix: String,
    /// Sessions one account may hold at once (at least 1); the oldest ends when another
    /// starts.
    pub max_per_user: usize,
    /// The hard end of a session however active it is; activity slides it only until then.
    pub max_lifetime: HumanDuration,
    /// The `Domain` of the browser cookies, to share a sign-in across sibling hosts
    /// (`example.com` covers `app.example.com`); `""` keeps them on the gateway's own host.
    pub cookie_domain: String,
}

/// Where sessions (and rate-limit counters) live, as `sessions.url` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionBackend<'a> {
    /// `memory://`: in this process.
    Memory,
    /// `redis://…` or `rediss://…` (TLS): the full URL, shared by every instance.
    Redis(&'a str),
}

impl SessionsConfig {
    /// The one reading of `sessions.url` (surrounding spaces ignored, schemes in any case);
    /// `Err` names what is accepted.
    pub fn backend(&self) -> Result<SessionBackend<'_>, String> {
        let url = self.url.trim();
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        if scheme.eq_ignore_ascii_case("memory") && url.len() == "memory://".len() {
            Ok(SessionBackend::Memory)
        } else if scheme.eq_ignore_ascii_case("redis") || scheme.eq_ignore_ascii_case("rediss") {
            // The Redis client's own rules, checked at load so check-config says what `serve`
            // would: a host, a port in range, and a database number as the only path.
            let parsed = url::Url::parse(url)
                .map_err(|e| format!("{} is not a Redis URL: {e}", redact_url(url)))?;
            let db = parsed.path().trim_start_matches('/');
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(format!("{} names no Redis host", redact_url(url)));
            }
            if !db.is_empty() && db.parse::<u32>().is_err() {
                return Err(format!(
                    "{}: the path must be a database number like /0",
                    redact_url(url)
                ));
            }
            Ok(SessionBackend::Redis(url))
        } else {
            Err(format!(
                "{} is neither memory:// nor redis://… / rediss://…",
                redact_url(url)
            ))
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            url: "memory://".into(),
            key_prefix: "portcullis:".into(),
            max_per_user: 5,
            max_lifetime: HumanDuration::from_secs(90 * 86400),
            cookie_domain: String::new(),
        }
    }
}

/// `[tokens]`: JWT issuing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// The `iss` of every token, checked on every token read; not empty.
    pub issuer: String,
    /// How long an access token lives (at least 1 s); also the longest `exp - iat` accepted,
    /// plus 60 s of clock skew.
    pub access_ttl: HumanDuration,
    /// How long a refresh token lives without "remember me" (at least 1 s).
    pub refresh_ttl: HumanDuration,
    /// How long a refresh token lives with "remember me" (at least 1 s).
    pub remember_me_ttl: HumanDuration,
    /// The Ed25519 key that signs new tokens; generated on first start when absent.
    pub signing_key_file: String,
    /// Older public or private keys still accepted for verification during a rotation.
    pub verification_key_files: Vec<String>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            issuer: "portcullis".into(),
            access_ttl: HumanDuration::from_secs(15 * 60),
            refresh_ttl: HumanDuration::from_secs(7 * 86400),
            remember_me_ttl: HumanDuration::from_secs(30 * 86400),
            signing_key_file: "data/signing-key.pem".into(),
            verification_key_files: Vec::new(),
        }
    }
}

/// `[passwords]`: hashing, and what a new password is held to (NIST SP 800-63B §3.1.1.2).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordsConfig {
    /// bcrypt's cost factor, 4 to 31: each step doubles the work of a hash.
    pub bcrypt_cost: u32,
    /// Fewest characters a new password has, 8 to 64 (default 10).
    pub min_length: usize,
    /// Whether a new password needs a lower-case and an upper-case letter, a digit and a
    /// symbol (default `false`: SP 800-63B advises against composition rules).
    pub require_classes: bool,
    /// The strength estimate (zxcvbn's score, 0 to 4) a new password must reach (default 3).
    pub min_score: u8,
}

impl Default for PasswordsConfig {
    fn default() -> Self {
        let policy = PasswordPolicy::default();
        Self {
            bcrypt_cost: 12,
            min_length: policy.min_chars,
            require_classes: policy.require_classes,
            min_score: policy.min_score,
        }
    }
}

impl PasswordsConfig {
    /// The policy every new password is admitted by.
    pub fn policy(&self) -> PasswordPolicy {
        PasswordPolicy {
            min_chars: self.min_length,
            require_classes: self.require_classes,
            min_score: self.min_score,
        }
    }
}

/// `[audit]`: the audit trail (`audit_events` in the user database).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How long an event is kept (a duration such as `"365d"`); `None` — written `"0"` or
    /// `""` — keeps every event forever. Older events are deleted by the hourly purger.
    #[serde(deserialize_with = "deserialize_retention")]
    pub retention: Option<HumanDuration>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention: Some(HumanDuration::from_secs(365 * 86_400)),
        }
    }
}

/// `[admin]`: the admin API (`/api/admin/*`) and console (`{portal.path_prefix}/admin`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The role an account needs (a role name, as `portcullis user grant-role` takes it).
    pub role: String,
    /// How recently the session's second factor (a code or a passkey) must have been proven
    /// (OWASP's step-up); older, the API answers 403 `step_up_required` and the console asks
    /// for it again. From 1 second to 24 hours.
    pub max_auth_age: HumanDuration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            role: "admin".to_owned(),
            max_auth_age: HumanDuration::from_secs(15 * 60),
        }
    }
}

impl AdminConfig {
    /// Checks `[admin]`.
    fn validate(&self) -> Result<(), Invalid> {
        if !is_role_name(&self.role) {
            return Err(invalid(
                "admin.role",
                format!(
                    "{:?} is not a role name: use 1 to 64 characters from letters, digits, \
                     '-', '_', '.' and ':'",
                    self.role
                ),
            ));
        }
        let secs = self.max_auth_age.get().as_secs();
        if !(1..=86_400).contains(&secs) {
            return Err(invalid(
                "admin.max_auth_age",
                "must be from 1 second to 24 hours (such as \"15m\")",
            ));
        }
        Ok(())
    }
}

/// What a field of role names is told when one of them is no role name ([`is_role_name`]).
pub const ROLE_NAME_RULE: &str =
    "Each role name must be 1 to 64 letters, digits, '-', '_', '.' or ':'.";

/// Whether `role` can be a role name: it ends up in a comma-separated identity header and in
/// route config, so only letters, digits, `-`, `_`, `.` and `:`, 1 to 64 of them.
pub fn is_role_name(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// Deserializes a retention: `""`, `"0"` (or the number 0) keep forever.
fn deserialize_retention<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<HumanDuration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(i64),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Number(0) => Ok(None),
        Raw::Number(n) => Err(serde::de::Error::custom(format!(
            "invalid retention {n}; write a duration like \"365d\", or \"0\" to keep forever"
        ))),
        Raw::Text(t) if t.trim().is_empty() || t.trim() == "0" => Ok(None),
        Raw::Text(t) => t.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// `[lockout]`: brute-force protection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Wrong passwords or codes an account takes per lock window before it locks (at least
    /// 1); right ones never count.
    pub max_failed_attempts: u32,
    /// How long a locked account stays locked.
    pub duration: HumanDuration,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            max_failed_attempts: 5,
            duration: HumanDuration::from_secs(15 * 60),
        }
    }
}

/// `[mail]`: outgoing mail.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// Where mail goes: `smtp://…`, `smtps://…` or `file://DIR` (see [`MailUrl`]).
    pub url: MailUrl,
    /// The `From` of every mail: an address, optionally with a display name
    /// (`Portcullis <no-reply@example.com>`).
    pub from: String,
    /// A directory whose templates replace the built-in ones by file name; `""` keeps the
    /// built-in ones.
    pub templates_dir: String,
    /// Whether the user is mailed on a sign-in from a new device or address.
    pub login_notifications: bool,
}

/// `mail.url`, parsed at load.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum MailUrl {
    /// `smtp://…` or `smtps://…` in lettre's URL conventions (`?tls=required`…), as written
    /// (it may hold a password).
    Smtp(String),
    /// `file://DIR`: one `.eml` file per message in DIR, relative to the working directory
    /// (`file://data/outbox`) or absolute (`file:///var/mail`).
    File(PathBuf),
}

impl MailUrl {
    /// The URL with any password masked, for messages and logs.
    pub fn redacted(&self) -> String {
        match self {
            Self::Smtp(url) => redact_url(url),
            Self::File(dir) => format!("\"file://{}\"", dir.display()),
        }
    }
}

impl std::str::FromStr for MailUrl {
    type Err = String;

    /// Parses without touching the network or the file system; the SMTP form is held to
    /// lettre's own rules, so a URL that loads is one the transport takes.
    fn from_str(url: &str) -> Result<Self, String> {
        let invalid = |reason: &str| format!("{}: {reason}", redact_url(url));
        if let Some(rest) = url.strip_prefix("file://") {
            // `file://data/outbox` is relative to the working directory and `file:///var/mail`
            // absolute, which is what an operator writing a path expects (and not what a strict
            // URL parser would make of the first: a host named `data`).
            let path = rest.split(['?', '#']).next().unwrap_or_default();
            if path.is_empty() {
                return Err(invalid("names no directory (write file://DIR)"));
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        if url.starts_with("smtp://") || url.starts_with("smtps://") {
            let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(invalid("names no host"));
            }
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
                .map_err(|e| invalid(&e.to_string()))?;
            return Ok(Self::Smtp(url.to_owned()));
        }
        Err(invalid("is not smtp://, smtps:// or file://DIR"))
    }
}

impl TryFrom<String> for MailUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        url.parse()
    }
}

impl std::fmt::Debug for MailUrl {
    // The SMTP URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp(_) => write!(f, "Smtp({})", self.redacted()),
            Self::File(dir) => write!(f, "File({})", dir.display()),
        }
    }
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            url: MailUrl::File(PathBuf::from("data/outbox")),
            from: "Portcullis <no-reply@localhost>".into(),
            templates_dir: String::new(),
            login_notifications: true,
        }
    }
}

/// `[two_factor]`: TOTP.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwoFactorConfig {
    /// The name authenticator apps show beside the account.
    pub issuer: String,
    /// The key file TOTP secrets are encrypted with at rest; generated on first start when
    /// absent. Must name a file.
    pub encryption_key_file: String,
}

impl Default for TwoFactorConfig {
    fn default() -> Self {
        Self {
            issuer: "Portcullis".into(),
            encryption_key_file: "data/totp.key".into(),
        }
    }
}

/// `[rate_limits]`: per client IP; `""` disables a limit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Requests to all of `/api/auth/*` (`"100/15m"`); `None` (`""`) for no limit.
    #[serde(deserialize_with = "deserialize_optional_rate")]
    pub global: Option<RateSpec>,
    /// Registrations; `None` (`""`) for no limit.
    #[serde(deserialize_with = "deserialize_optional_rate")]
    pub register: Option<RateSpec>,
    /// Sign-ins (password, second factor, passkey); `None` (`""`) for no limit.
    #[serde(deserialize_with = "deserialize_optional_rate")]
    pub login: Option<RateSpec>,
    /// Password-reset requests; `None` (`""`) for no limit.
    #[serde(deserialize_with = "deserialize_optional_rate")]
    pub password_reset: Option<RateSpec>,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        let rate = |limit, secs| {
            Some(RateSpec {
                limit,
                window: std::time::Duration::from_secs(secs),
            })
        };
        Self {
            global: rate(100, 15 * 60),
            register: rate(5, 15 * 60),
            login: rate(10, 15 * 60),
            password_reset: rate(3, 3600),
        }
    }
}

/// `[identity_headers]`: names of the headers that carry the identity to upstreams, parsed
/// at load (RFC 9110 §5.1 field names; held lower-case, as HTTP/2 and Pingora send them).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeadersConfig {
    /// The account's id (a UUID).
    #[serde(deserialize_with = "deserialize_header_name")]
    pub user_id: HeaderName,
    /// The account's address.
    #[serde(deserialize_with = "deserialize_header_name")]
    pub email: HeaderName,
    /// The account's roles, joined with commas; empty when it has none.
    #[serde(deserialize_with = "deserialize_header_name")]
    pub roles: HeaderName,
    /// The session's id.
    #[serde(deserialize_with = "deserialize_header_name")]
    pub session_id: HeaderName,
    /// `"true"` or `"false"`: whether the user proved they own the address.
    #[serde(deserialize_with = "deserialize_header_name")]
    pub email_verified: HeaderName,
    /// `""` in the file disables the signed assertion (`None`).
    #[serde(deserialize_with = "deserialize_optional_header_name")]
    pub assertion: Option<HeaderName>,
}

impl Default for IdentityHeadersConfig {
    fn default() -> Self {
        Self {
            user_id: HeaderName::from_static("x-user-id"),
            email: HeaderName::from_static("x-user-email"),
            roles: HeaderName::from_static("x-user-roles"),
            session_id: HeaderName::from_static("x-session-id"),
            email_verified: HeaderName::from_static("x-user-email-verified"),
            assertion: Some(HeaderName::from_static("x-identity-assertion")),
        }
    }
}

impl IdentityHeadersConfig {
    /// Every configured header name, the assertion included when enabled.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.keyed().into_iter().filter_map(|(_, name)| name)
    }

    /// Each name beside its key in `[identity_headers]`; the assertion's is `None` when off.
    fn keyed(&self) -> [(&'static str, Option<&HeaderName>); 6] {
        [
            ("user_id", Some(&self.user_id)),
            ("email", Some(&self.email)),
            ("roles", Some(&self.roles)),
            ("session_id", Some(&self.session_id)),
            ("email_verified", Some(&self.email_verified)),
            ("assertion", self.assertion.as_ref()),
        ]
    }
}

/// A header name as it is compared: lower case, `_` read as `-` (a client's `X_User_Id` is
/// taken for `x-user-id` by many servers).
pub(crate) fn normalize_header_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Names an identity header may not take: a copy in a client's request is removed as a
/// spoofing attempt and the gateway then sets its own value, so these would break the
/// request's framing (RFC 9112 §6), its hop-by-hop handling (RFC 9110 §7.6.1), its routing,
/// its credentials or the forwarding headers the gateway sets itself.
const RESERVED_HEADER_NAMES: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "content-type",
    "content-encoding",
    "content-range",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "range",
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "www-authenticate",
    "cookie",
    "set-cookie",
    "origin",
    "forwarded",
    "via",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
];

impl IdentityHeadersConfig {
    /// Refuses a reserved name ([`RESERVED_HEADER_NAMES`]) and two identity headers with the
    /// same name (`_` and `-` count as one, as in the spoofing check); `Err((key, message))`.
    fn check_names(&self) -> Result<(), (String, String)> {
        let mut seen: Vec<(&str, String)> = Vec::new();
        for (key, name) in self.keyed() {
            let Some(name) = name else { continue };
            let normal = normalize_header_name(name.as_str());
            if RESERVED_HEADER_NAMES.contains(&normal.as_str()) {
                return Err((
                    format!("identity_headers.{key}"),
                    format!(
                        "{name:?} is a header the gateway or HTTP itself needs; pick another name"
                    ),
                ));
            }
            if let Some((other, _)) = seen.iter().find(|(_, n)| *n == normal) {
                return Err((
                    format!("identity_headers.{key}"),
                    format!("{name:?} is already the name of identity_headers.{other}"),
                ));
            }
            seen.push((key, normal));
        }
        Ok(())
    }
}

/// A header name from the file: `"X-User-Id"` → `x-user-id`; anything that is not an RFC 9110
/// §5.1 token is refused, naming the key.
fn deserialize_header_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
    parse_header_name(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn parse_header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))
}

/// As [`deserialize_header_name`], with `""` meaning "none".
fn deserialize_optional_header_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<HeaderName>, D::Error> {
    let name = String::deserialize(d)?;
    if name.is_empty() {
        return Ok(None);
    }
    parse_header_name(&name)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `[cors]`: cross-origin access to the account API.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`) allowed to call `/api/auth/*`; empty = none.
    pub allowed_origins: Vec<String>,
    /// Whether those origins may send credentials (`Access-Control-Allow-Credentials`).
    pub allow_credentials: bool,
}

/// `[portal]`: the sign-in pages for browsers, served by the gateway under `path_prefix`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    /// Serve the pages (and send unauthenticated browsers to them when `server.login_url`
    /// is empty).
    pub enabled: bool,
    /// Where the pages live (`/auth/login`, `/auth/account`, …); no route may use it.
    pub path_prefix: String,
    /// The name shown in page titles and the header.
    pub title: String,
    /// An image shown beside the title; `""` for none.
    pub logo_url: String,
    /// An image file shown beside the title, read at start and served from the portal's
    /// prefix (so signed-out visitors see it too); `""` for none. Not with `logo_url`.
    pub logo_file: String,
    /// The site's icon, read at start and served from the portal's prefix and at
    /// `/favicon.ico`; `""` for the built-in one.
    pub favicon_file: String,
    /// The colour of buttons and links, `#rrggbb`; keep it dark enough for white text.
    pub accent_color: String,
    /// Overrides for the built-in page templates, file by file; `""` for none.
    pub templates_dir: String,
    /// Hosts besides this one that `return_to` may name (sibling apps behind forward-auth).
    pub allowed_return_hosts: Vec<String>,
    /// The language of a browser that asks for none the portal has.
    pub default_language: String,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path_prefix: "/auth".into(),
            title: "Portcullis".into(),
            logo_url: String::new(),
            logo_file: String::new(),
            favicon_file: String::new(),
            accent_color: "#1d4ed8".into(),
            templates_dir: String::new(),
            allowed_return_hosts: Vec::new(),
            default_language: "en".into(),
        }
    }
}

/// What a route demands of a request before it is forwarded.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Anyone; identity headers are still stripped.
    Public,
    /// A valid access token whose session is live.
    #[default]
    Authenticated,
    /// As `authenticated`, and the session passed a second factor.
    TwoFactor,
    /// Nobody.
    Deny,
}

/// One `[[routes]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A short name used in metrics and logs; defaults to the path prefix.
    #[serde(default)]
    pub name: String,
    /// `Host` to match (without port): exact (`app.example.com`), or `*.example.com` for one
    /// or more labels before `.example.com` (never `example.com` itself); `""` matches any
    /// host. Compared ignoring letter case and a trailing dot.
    #[serde(default)]
    pub host: String,
    /// The path this route serves, with everything under it on a segment boundary;
    /// defaults to `/`. Must start with `/`.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Where requests go: `http://host:port` or `https://host:port` (resolved at start).
    pub upstream: String,
    /// Who may pass; `authenticated` by default.
    #[serde(default)]
    pub policy: Policy,
    /// The methods this route serves (405 with `Allow` for others); left out, any.
    #[serde(default)]
    pub methods: Option<Vec<MethodName>>,
    /// Where clients may come from (the address after `server.trusted_proxies`); left out,
    /// anywhere.
    #[serde(default)]
    pub networks: Option<Vec<Network>>,
    /// Accounts (by id) that may pass; one condition with `emails`: either names the account.
    #[serde(default)]
    pub users: Option<Vec<UserEntry>>,
    /// Accounts (by address) that may pass; one condition with `users`.
    #[serde(default)]
    pub emails: Option<Vec<EmailEntry>>,
    /// Domains the account's address must be at (`example.com`, `*.example.com`).
    #[serde(default)]
    pub email_domains: Option<Vec<EmailDomain>>,
    /// Roles the account must hold ANY one of; empty (or left out) for none.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Roles the account must hold ALL of.
    #[serde(default)]
    pub all_roles: Vec<String>,
    /// Refuse (403 `email_unverified`) users who have not proved their address; on by
    /// default, so an upstream never sees an unproven `X-User-Email` unless it opts in.
    #[serde(default = "default_true")]
    pub require_verified_email: bool,
    /// A per-address limit on this route (`"300/1m"`); `None` (`""`) for none.
    #[serde(default, deserialize_with = "deserialize_optional_rate")]
    pub rate_limit: Option<RateSpec>,
    /// Overrides `server.upstream_timeout` for this route.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Lets an encoded slash (`%2F`) through to this route's upstream (refused by default:
    /// upstreams disagree on whether it separates segments).
    #[serde(default)]
    pub allow_encoded_slashes: bool,
    /// Lets `;` path parameters through to this route's upstream (refused by default: Tomcat,
    /// Jetty and Spring drop them before matching, so `/a;x/../b` means `/b` to them).
    #[serde(default)]
    pub allow_path_parameters: bool,
    /// Forwards a client's own `Authorization` header (a Portcullis token never is).
    #[serde(default)]
    pub forward_authorization: bool,
    /// How recently the user must have proved who they are (`"10m"`; at least 1 second):
    /// a session whose `auth_time` is older is asked to reauthenticate (API clients get 401
    /// `reauthentication_required`, browsers the portal's page). Left out, any age.
    #[serde(default)]
    pub max_auth_age: Option<HumanDuration>,
}

fn default_path_prefix() -> String {
    "/".into()
}

fn default_true() -> bool {
    true
}

/// An upstream address resolved at load time (Pingora's peer constructor must not resolve).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// The address connected to.
    pub addr: SocketAddr,
    /// Whether the connection is TLS (`https://`).
    pub tls: bool,
    /// The host name, for SNI and certificate checks.
    pub host: String,
}

impl Upstream {
    /// `host:port` of the upstream, for a `Host` header (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.addr.port())
        } else {
            format!("{}:{}", self.host, self.addr.port())
        }
    }

    /// Parses and resolves an `http://host:port` or `https://host:port` URL: the syntax
    /// check of [`Upstream::check`], then one DNS lookup (the first address is kept).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, host, port) = Self::check(url)?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve upstream {}: {e}", redact_url(url)))?
            .next()
            .ok_or_else(|| format!("upstream {} resolves to no address", redact_url(url)))?;
        Ok(Self { addr, tls, host })
    }

    /// The syntax of an upstream URL without resolving it: `(tls, host, port)`. Config
    /// loading checks this; the gateway resolves once, when it builds its route table.
    pub fn check(url: &str) -> Result<(bool, String, u16), String> {
        // Messages show the URL with any password masked.
        let shown = redact_url(url);
        let parsed = url::Url::parse(url).map_err(|e| format!("{shown} is not a URL: {e}"))?;
        let tls = match parsed.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "unsupported upstream scheme {other:?} in {shown}; use http:// or https://"
                ));
            }
        };
        if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!(
                "upstream {shown} must be scheme://host[:port] without a path; the request path is forwarded as is"
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!(
                "upstream {shown} must not carry a user or password: they would not be sent"
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("upstream {shown} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed
            .port_or_known_default()
            .filter(|&port| port != 0)
            .ok_or_else(|| format!("upstream {shown} has no usable port"))?;
        Ok((tls, host, port))
    }
}

impl Config {
    /// Loads `path` (which must exist) and applies `PORTCULLIS_<SECTION>__<KEY>` overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Self::load_from(path, &text, std::env::vars())
    }

    /// Loads `source` again, with the environment as it is now: what a reload reads.
    pub fn reload(source: &ConfigSource) -> Result<Self, ConfigError> {
        match source {
            ConfigSource::File(path) => Self::load(path),
            ConfigSource::Embedded => Self::load_from(
                Path::new("the embedded defaults"),
                EMBEDDED_DEFAULTS,
                std::env::vars(),
            ),
        }
    }

    /// Loads the configuration the command line asks for: `named` (from `--config` or
    /// `PORTCULLIS_CONFIG`), which must exist; else [`DEFAULT_CONFIG_PATH`] when it exists;
    /// else [`EMBEDDED_DEFAULTS`]. Environment overrides apply to each.
    pub fn locate(named: Option<&Path>) -> Result<(Self, ConfigSource), ConfigError> {
        let default = Path::new(DEFAULT_CONFIG_PATH);
        match named {
            Some(path) => Ok((Self::load(path)?, ConfigSource::File(path.to_path_buf()))),
            None if default.exists() => {
                Ok((Self::load(default)?, ConfigSource::File(default.into())))
            }
            None => Ok((
                Self::reload(&ConfigSource::Embedded)?,
                ConfigSource::Embedded,
            )),
        }
    }

    /// Loads from already-read text and an explicit environment (used by `load` and tests).
    pub fn load_from(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (env, stray): (Vec<Variable>, Vec<Variable>) = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .partition(|(k, _)| k[ENV_PREFIX.len()..].contains("__"));
        if let Some((name, _)) = stray.iter().find(|(k, _)| {
            FILE_ONLY_SECTIONS.contains(&k[ENV_PREFIX.len()..].to_ascii_lowercase().as_str())
        }) {
            let section = name[ENV_PREFIX.len()..].to_ascii_lowercase();
            return Err(ConfigError::Parse(format!(
                "environment variable {name}: [[{section}]] come from the config file only"
            )));
        }
        let file_name = path.display().to_string();
        let figment = Figment::new()
            .merge(Toml::string(text))
            .merge(EnvOverrides(env.clone()));
        let mut config: Config = figment.extract().map_err(|e| {
            ConfigError::Parse(
                e.into_iter()
                    .map(|err| describe_figment_error(&err, &file_name, &env))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        config.stray_variables = stray
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !NOT_SETTINGS.contains(&k.as_str()) && !k.starts_with("PORTCULLIS_TEST_"))
            .collect();
        config.validate().map_err(|(key, message)| {
            let source_name = variable_setting(&env, &key_parts(&key))
                .map(|var| format!("environment variable {var}"))
                .unwrap_or_else(|| file_name.clone());
            ConfigError::Invalid {
                key,
                source_name,
                message,
            }
        })?;
        Ok(config)
    }

    /// Checks what types alone cannot, section by section, then the rules that span
    /// sections; returns the offending key and what is wrong.
    fn validate(&self) -> Result<(), Invalid> {
        self.server.validate()?;
        self.tls.validate(&self.server)?;
        self.logging.validate()?;
        self.storage.validate()?;
        self.sessions.validate()?;
        self.tokens.validate()?;
        self.passwords.validate()?;
        self.lockout.validate()?;
        self.two_factor.validate()?;
        self.identity_headers.check_names()?;
        self.cors.validate()?;
        self.portal.validate()?;
        self.registration.validate()?;
        self.admin.validate()?;
        self.validate_cookie_domain()?;
        identity_providers::validate_all(&self.identity_providers, self.portal.enabled)?;
        self.validate_routes()
    }

    /// `sessions.cookie_domain` must domain-match `server.public_url`'s host (RFC 6265bis
    /// §5.1.3): a browser refuses a cookie whose `Domain` does not, so no sign-in would stick.
    fn validate_cookie_domain(&self) -> Result<(), Invalid> {
        let domain = self.sessions.cookie_domain.trim_start_matches('.');
        if domain.is_empty() {
            return Ok(());
        }
        let domain = domain.to_ascii_lowercase();
        if !domain.contains('.') {
            return Err(invalid(
                "sessions.cookie_domain",
                format!("{domain:?} is a top-level domain: browsers refuse cookies for it"),
            ));
        }
        let host = self.server.public_url.domain().unwrap_or("");
        if host == domain || host.ends_with(&format!(".{domain}")) {
            return Ok(());
        }
        Err(invalid(
            "sessions.cookie_domain",
            format!(
                "{domain:?} does not cover server.public_url's host {:?}: browsers would refuse \
                 every cookie; set it to that host or one of its parents",
                self.server.public_url.host()
            ),
        ))
    }

    /// Checks each route, and what spans routes and the portal: no route under the portal's
    /// prefix, no two routes for one host and prefix.
    fn validate_routes(&self) -> Result<(), Invalid> {
        let portal_prefix = self
            .portal
            .enabled
            .then_some(self.portal.path_prefix.as_str());
        let mut seen = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes[{i}].{field}");
            route.validate(key)?;
            if let Some(portal) = portal_prefix
                && path_is_under(&route.path_prefix, portal)
            {
                return Err(invalid(
                    key("path_prefix"),
                    format!(
                        "{:?} is served by the portal (portal.path_prefix = {portal:?})",
                        route.path_prefix
                    ),
                ));
            }
            if let Some(problem) = route_name_problem(&route.name) {
                return Err(invalid(key("name"), problem));
            }
            let same_name = |r: &RouteConfig| r.name.to_lowercase() == route.name.to_lowercase();
            if !route.name.is_empty() && self.routes[..i].iter().any(same_name) {
                return Err(invalid(
                    key("name"),
                    format!(
                        "{:?} names an earlier route too (letter case aside): metrics and \
                         logs could not tell them apart",
                        route.name
                    ),
                ));
            }
            // In letter case too: an upstream that ignores case (IIS, some frameworks) would
            // serve one route's prefix as the other's.
            let host = HostPattern::of(&route.host).to_string();
            let prefix = route.path_prefix.trim_end_matches('/').to_ascii_lowercase();
            if !seen.insert((host, prefix)) {
                return Err(invalid(
                    key("path_prefix"),
                    format!(
                        "host {:?} with prefix {:?} is already routed by an earlier entry \
                         (prefixes are compared ignoring letter case)",
                        route.host, route.path_prefix
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// What is valid but probably not meant, one sentence each, for `check-config` and
    /// `serve` to print: open registration in front of routes any account may pass, and
    /// `allowed_domains` in a mode that does not read them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        warnings.extend(self.open_registration_warning());
        warnings.extend(route_checks::warnings(&self.routes));
        warnings.extend(identity_providers::warnings(
            &self.identity_providers,
            self.registration.mode,
            &self.admin.role,
        ));
        for name in &self.stray_variables {
            warnings.push(match meant_variable(name) {
                Some(meant) => format!(
                    "environment variable {name} names no setting and is ignored; {meant} is \
                     one (a section and its key are joined by two underscores)"
                ),
                None => format!(
                    "environment variable {name} names no setting and is ignored (a section \
                     and its key are joined by two underscores: PORTCULLIS_SERVER__LISTEN)"
                ),
            });
        }
        if self.passwords.bcrypt_cost < 10 {
            warnings.push(format!(
                "passwords.bcrypt_cost = {} makes stolen password hashes cheap to guess; use \
                 10 or more (12, the default, costs about 0.25 s of one core per sign-in)",
                self.passwords.bcrypt_cost
            ));
        }
        warnings.extend(self.weak_settings());
        let mode = self.registration.mode;
        if matches!(mode, RegistrationMode::Invite | RegistrationMode::Closed)
            && !self.registration.allowed_domains.is_empty()
        {
            warnings.push(format!(
                "registration.allowed_domains has no effect with registration.mode = \"{}\": \
                 only \"domains\" reads it, and invitations and `user create` are not held to it",
                mode.as_str()
            ));
        }
        warnings
    }

    /// Settings that weaken what stands between a guesser and an account, or how long a
    /// token outlives its session for an upstream that checks tokens by itself (the gateway
    /// checks the live session on every request, whatever the token's lifetime).
    fn weak_settings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.passwords.min_score < 2 {
            warnings.push(format!(
                "passwords.min_score = {} admits passwords the estimator finds in its lists \
                 of common ones; use 2 or more (3, the default, is NIST SP 800-63B's advice)",
                self.passwords.min_score
            ));
        }
        if self.lockout.max_failed_attempts > 100 {
            warnings.push(format!(
                "lockout.max_failed_attempts = {} lets a guesser try that many passwords per \
                 account and lock window; 5 to 20 is usual (the default is 5)",
                self.lockout.max_failed_attempts
            ));
        }
        let access = self.tokens.access_ttl.get();
        if access > std::time::Duration::from_secs(3600) {
            warnings.push(format!(
                "tokens.access_ttl = {} outlives a revocation for an upstream that verifies \
                 tokens itself; an hour at most is usual (the default is 15m)",
                self.tokens.access_ttl
            ));
        }
        warnings
    }

    /// Open registration in front of `authenticated` or `two_factor` routes that name no
    /// role: anyone with a mailbox passes them.
    fn open_registration_warning(&self) -> Option<String> {
        if self.registration.mode != RegistrationMode::Open {
            return None;
        }
        let exposed: Vec<String> = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                matches!(r.policy, Policy::Authenticated | Policy::TwoFactor)
                    && !r.rules().has_identity_conditions()
            })
            .map(|(i, r)| {
                let name = if r.name.is_empty() {
                    &r.path_prefix
                } else {
                    &r.name
                };
                format!("routes[{i}] ({name:?})")
            })
            .collect();
        (!exposed.is_empty()).then(|| {
            format!(
                "registration is open (registration.mode = \"open\"): anyone with a \
                 mailbox can create an account and pass {}, which name no role; set \
                 registration.mode to \"domains\", \"invite\" or \"closed\", or give \
                 the route roles",
                exposed.join(", ")
            )
        })
    }
}

/// What is wrong with a route's name, which metrics, logs and `check-config` print: the
/// rule of text shown to people ([`crate::domain::text`]) at 64 characters, and no space
/// at either end.
fn route_name_problem(name: &str) -> Option<String> {
    crate::domain::text::display_text_problem(name, 64)
        .or_else(|| (name.trim() != name).then(|| "must not begin or end with a space".to_owned()))
}

/// A key that failed validation (`server.threads`, `routes[2].upstream`) and what is wrong
/// with its value.
type Invalid = (String, String);

/// The [`Invalid`] for `key`.
fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    (key.into(), message.into())
}

impl ServerConfig {
    /// Checks `[server]`: threads, listeners, URLs, limits, timeouts, header lists.
    fn validate(&self) -> Result<(), Invalid> {
        if self.threads == 0 || self.threads > 1024 {
            let message = format!("{} is not between 1 and 1024", self.threads);
            return Err(invalid("server.threads", message));
        }
        if self.listen == self.admin_listen {
            return Err(invalid(
                "server.admin_listen",
                format!(
                    "{} is also server.listen; give the admin listener its own port",
                    self.admin_listen
                ),
            ));
        }
        if !self.login_url.is_empty()
            && !self.login_url.starts_with('/')
            && parse_http_url(&self.login_url).is_err()
        {
            return Err(invalid(
                "server.login_url",
                format!(
                    "{:?} must be a path (\"/login\") or an http(s) URL",
                    self.login_url
                ),
            ));
        }
        self.validate_limits()?;
        self.validate_header_lists()
    }

    /// The head and body size limits and every timeout.
    fn validate_limits(&self) -> Result<(), Invalid> {
        // Pingora refuses a head over 1 MiB with a bare 400 before this limit could answer 431.
        if !(1024..=1_048_575).contains(&self.max_header_bytes) {
            let message = "must be between 1024 and 1048575";
            return Err(invalid("server.max_header_bytes", message));
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be greater than 0"));
        }
        for (key, d) in [
            (
                "server.upstream_connect_timeout",
                self.upstream_connect_timeout,
            ),
            ("server.upstream_timeout", self.upstream_timeout),
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.body_read_timeout", self.body_read_timeout),
            ("server.keepalive_timeout", self.keepalive_timeout),
        ] {
            if d.get().is_zero() {
                return Err(invalid(key, "must be longer than 0s"));
            }
        }
        if self.upstream_resolve_interval.get() < std::time::Duration::from_secs(1) {
            return Err(invalid(
                "server.upstream_resolve_interval",
                "must be at least 1s",
            ));
        }
        Ok(())
    }

    /// `proxy_headers` and `strip_headers`: header names, or prefixes ending in `*`.
    fn validate_header_lists(&self) -> Result<(), Invalid> {
        let header_lists = [
            ("proxy_headers", &self.proxy_headers),
            ("strip_headers", &self.strip_headers),
        ];
        for (key, i, name) in header_lists
            .iter()
            .flat_map(|(key, names)| names.iter().enumerate().map(move |(i, n)| (key, i, n)))
        {
            let bare = name.strip_suffix('*').unwrap_or(name);
            if bare.is_empty() || http::HeaderName::from_bytes(bare.as_bytes()).is_err() {
                return Err(invalid(
                    format!("server.{key}[{i}]"),
                    format!("{name:?} is not a header name (or a prefix ending in '*')"),
                ));
            }
        }
        Ok(())
    }
}

impl LoggingConfig {
    /// Checks `logging.level` as the log filter would read it.
    fn validate(&self) -> Result<(), Invalid> {
        match tracing_subscriber::EnvFilter::try_new(&self.level) {
            Ok(_) => Ok(()),
            Err(e) => Err(invalid("logging.level", format!("{:?}: {e}", self.level))),
        }
    }
}

impl StorageConfig {
    /// Checks `[storage]` (the URL was parsed at load).
    fn validate(&self) -> Result<(), Invalid> {
        if self.max_connections == 0 {
            return Err(invalid("storage.max_connections", "must be at least 1"));
        }
        Ok(())
    }
}

impl SessionsConfig {
    /// Checks `[sessions]`.
    fn validate(&self) -> Result<(), Invalid> {
        if let Err(message) = self.backend() {
            return Err(invalid("sessions.url", message));
        }
        if self.max_per_user == 0 {
            return Err(invalid("sessions.max_per_user", "must be at least 1"));
        }
        let domain = &self.cookie_domain;
        if !domain.is_empty() && !is_host_name(domain.trim_start_matches('.')) {
            let message = format!("{domain:?} is not a domain like example.com");
            return Err(invalid("sessions.cookie_domain", message));
        }
        Ok(())
    }
}

impl TokensConfig {
    /// Checks `[tokens]`.
    fn validate(&self) -> Result<(), Invalid> {
        if self.issuer.is_empty() {
            return Err(invalid("tokens.issuer", "must not be empty"));
        }
        for (key, d) in [
            ("tokens.access_ttl", self.access_ttl),
            ("tokens.refresh_ttl", self.refresh_ttl),
            ("tokens.remember_me_ttl", self.remember_me_ttl),
        ] {
            if d.get().as_secs() == 0 {
                return Err(invalid(key, "must be at least 1s"));
            }
        }
        if self.signing_key_file.is_empty() {
            return Err(invalid("tokens.signing_key_file", "must name a file"));
        }
        Ok(())
    }
}

impl PasswordsConfig {
    /// Checks `passwords.bcrypt_cost` against bcrypt's range, `min_length` against NIST's
    /// floor and what 72 bytes hold, `min_score` against zxcvbn's scale.
    fn validate(&self) -> Result<(), Invalid> {
        if !(4..=31).contains(&self.bcrypt_cost) {
            let message = format!("{} is outside bcrypt's range 4..=31", self.bcrypt_cost);
            return Err(invalid("passwords.bcrypt_cost", message));
        }
        if !(MIN_PASSWORD_FLOOR..=64).contains(&self.min_length) {
            let message = format!(
                "{} is outside 8..=64 (NIST SP 800-63B's floor is 8; bcrypt reads 72 bytes)",
                self.min_length
            );
            return Err(invalid("passwords.min_length", message));
        }
        if self.min_score > 4 {
            let message = format!("{} is outside zxcvbn's scores 0..=4", self.min_score);
            return Err(invalid("passwords.min_score", message));
        }
        Ok(())
    }
}

impl LockoutConfig {
    /// Checks `[lockout]`.
    fn validate(&self) -> Result<(), Invalid> {
        if self.max_failed_attempts == 0 {
            return Err(invalid("lockout.max_failed_attempts", "must be at least 1"));
        }
        Ok(())
    }
}

impl TwoFactorConfig {
    /// Checks `[two_factor]`.
    fn validate(&self) -> Result<(), Invalid> {
        if self.encryption_key_file.is_empty() {
            return Err(invalid(
                "two_factor.encryption_key_file",
                "must name a file",
            ));
        }
        Ok(())
    }
}

impl CorsConfig {
    /// Checks that each `cors.allowed_origins` entry is `*` or an origin.
    fn validate(&self) -> Result<(), Invalid> {
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if origin != "*" && parse_http_url(origin).is_err() {
                return Err(invalid(
                    format!("cors.allowed_origins[{i}]"),
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        Ok(())
    }
}

impl RouteConfig {
    /// The route's conditions, in the form requests are compared with.
    pub fn rules(&self) -> Rules {
        rules::rules_of(self)
    }

    /// The name logs and metrics give the route: `name`, else the path prefix.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.path_prefix
        } else {
            &self.name
        }
    }

    /// The route's whole policy, as both ways in decide it.
    pub fn guard(&self) -> RouteGuard {
        RouteGuard {
            name: self.display_name().to_owned(),
            policy: self.policy,
            verified_email: self.require_verified_email,
            rules: self.rules(),
            max_auth_age: self.max_auth_age,
        }
    }

    /// The first key that names who may pass (users, emails, domains, roles), if any.
    fn identity_condition(&self) -> Option<&'static str> {
        [
            ("users", self.users.is_some()),
            ("emails", self.emails.is_some()),
            ("email_domains", self.email_domains.is_some()),
            ("roles", !self.roles.is_empty()),
            ("all_roles", !self.all_roles.is_empty()),
        ]
        .into_iter()
        .find_map(|(field, given)| given.then_some(field))
    }

    /// `max_auth_age`: at least one second, on a route that asks who the user is.
    fn validate_max_auth_age(&self) -> Result<(), String> {
        let Some(age) = self.max_auth_age else {
            return Ok(());
        };
        if age.get() < std::time::Duration::from_secs(1) {
            return Err("must be at least 1s (such as \"10m\")".into());
        }
        if matches!(self.policy, Policy::Public | Policy::Deny) {
            return Err(
                "asks how recently the user signed in, which needs policy \"authenticated\" \
                 or \"two_factor\""
                    .into(),
            );
        }
        Ok(())
    }

    /// `host`: empty, a host name, or `*.` and a host name; no port, no other `*`.
    fn validate_host(&self) -> Result<(), String> {
        let host = self.host.as_str();
        let name = host.strip_prefix("*.").unwrap_or(host);
        if host.is_empty() {
            return Ok(());
        }
        let valid = !name.is_empty()
            && !name.contains(['*', ':', '/', '@', '[', ']'])
            && name.trim_end_matches('.').contains(|c: char| c != '.')
            && !name.trim_end_matches('.').split('.').any(str::is_empty);
        if !valid {
            return Err(format!(
                "{host:?} is not a host name (without port), e.g. \"app.example.com\", or \
                 \"*.example.com\" for its subdomains"
            ));
        }
        if host.starts_with("*.") && name.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!("{host:?}: an IP address has no subdomains"));
        }
        Ok(())
    }

    /// Checks what one route says by itself; `key` names its fields (`routes[2].upstream`).
    fn validate(&self, key: impl Fn(&str) -> String) -> Result<(), Invalid> {
        let prefix = &self.path_prefix;
        if !prefix.starts_with('/') {
            let message = format!("{prefix:?} must start with '/'");
            return Err(invalid(key("path_prefix"), message));
        }
        if is_reserved_path(prefix) {
            let message = format!("{prefix:?} is served by Portcullis itself");
            return Err(invalid(key("path_prefix"), message));
        }
        if let Err(e) = Upstream::check(&self.upstream) {
            return Err(invalid(key("upstream"), e));
        }
        self.validate_host().map_err(|m| invalid(key("host"), m))?;
        let role_lists = [
            ("roles", self.roles.as_slice()),
            ("all_roles", self.all_roles.as_slice()),
        ];
        for (field, roles) in role_lists {
            if roles.iter().any(|r| r.trim().is_empty() || r.contains(',')) {
                let message = "role names must be non-empty and contain no commas";
                return Err(invalid(key(field), message));
            }
        }
        if matches!(self.policy, Policy::Public | Policy::Deny)
            && let Some(field) = self.identity_condition()
        {
            let message = format!(
                "{field} names who may pass, which needs policy \"authenticated\" or \
                 \"two_factor\" (a {} route asks nobody who they are)",
                if self.policy == Policy::Public {
                    "public"
                } else {
                    "deny"
                }
            );
            return Err(invalid(key(field), message));
        }
        if self.timeout.is_some_and(|t| t.get().is_zero()) {
            return Err(invalid(key("timeout"), "must be longer than 0s"));
        }
        self.validate_max_auth_age()
            .map_err(|m| invalid(key("max_auth_age"), m))?;
        Ok(())
    }
}

impl PortalConfig {
    /// The sign-in page, where unauthenticated browsers go when `server.login_url` is
    /// empty; `None` when the portal is off.
    pub fn login_page(&self) -> Option<String> {
        self.enabled.then(|| format!("{}/login", self.path_prefix))
    }

    /// The account page, where a browser whose address is not yet proven is sent (it offers
    /// a fresh verification mail); `None` when the portal is off.
    pub fn account_page(&self) -> Option<String> {
        self.enabled
            .then(|| format!("{}/account", self.path_prefix))
    }

    /// The reauthentication page, where a browser whose sign-in is older than a route's
    /// `max_auth_age` proves who it is again; `None` when the portal is off.
    pub fn reauthenticate_page(&self) -> Option<String> {
        self.enabled
            .then(|| format!("{}/reauthenticate", self.path_prefix))
    }

    /// `templates_dir` when set: the directory of template overrides and of extra
    /// catalogues (`locales/<code>.toml`); an error naming the key when it is no directory.
    pub fn templates_dir(&self) -> Result<Option<&std::path::Path>, String> {
        let dir = self.templates_dir.trim();
        if dir.is_empty() {
            return Ok(None);
        }
        let dir = std::path::Path::new(dir);
        if !dir.is_dir() {
            return Err(format!(
                "invalid value for `portal.templates_dir` ({}): is not a directory",
                dir.display()
            ));
        }
        Ok(Some(dir))
    }

    /// Checks `[portal]`.
    fn validate(&self) -> Result<(), Invalid> {
        self.validate_prefix()?;
        self.validate_accent_color()?;
        if !self.logo_url.is_empty()
            && !self.logo_url.starts_with('/')
            && parse_http_url(&self.logo_url).is_err()
        {
            let message = format!("{:?} must be a path or an http(s) URL", self.logo_url);
            return Err(invalid("portal.logo_url", message));
        }
        self.validate_image_files()?;
        if self.title.trim().is_empty() {
            return Err(invalid("portal.title", "must not be empty"));
        }
        // Shown on every page and in every mail's subject and footer.
        if let Some(problem) = crate::domain::text::display_text_problem(&self.title, 100) {
            return Err(invalid("portal.title", problem));
        }
        for (i, host) in self.allowed_return_hosts.iter().enumerate() {
            if return_host(host).is_none() {
                return Err(invalid(
                    format!("portal.allowed_return_hosts[{i}]"),
                    format!(
                        "{host:?} is not a host name like app.example.com, with a port or without (app.example.com:8443); no scheme or path"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `portal.path_prefix`: plain segments, and clear of what the gateway serves itself.
    fn validate_prefix(&self) -> Result<(), Invalid> {
        let prefix = &self.path_prefix;
        let segments_ok = prefix.len() > 1
            && prefix.starts_with('/')
            && !prefix.ends_with('/')
            && prefix[1..].split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            });
        if !segments_ok {
            return Err(invalid(
                "portal.path_prefix",
                format!(
                    "{prefix:?} must be a path like \"/auth\": segments of letters, digits, '-', '.', '_', '~', no trailing '/'"
                ),
            ));
        }
        let covers_local = LOCAL_PATHS.iter().any(|local| path_is_under(local, prefix));
        if self.enabled && (is_reserved_path(prefix) || covers_local) {
            let message = format!("{prefix:?} overlaps a path Portcullis already serves");
            return Err(invalid("portal.path_prefix", message));
        }
        Ok(())
    }

    /// `portal.logo_file` and `portal.favicon_file`: image files by their extension; a
    /// logo from a file or from a URL, not both. (They are read when the portal is built.)
    fn validate_image_files(&self) -> Result<(), Invalid> {
        if !self.logo_file.is_empty() && !self.logo_url.is_empty() {
            let message = "set logo_file or logo_url, not both";
            return Err(invalid("portal.logo_file", message));
        }
        for (key, path) in [
            ("portal.logo_file", &self.logo_file),
            ("portal.favicon_file", &self.favicon_file),
        ] {
            if !path.is_empty() && image_content_type(path).is_none() {
                let message = format!(
                    "{path:?} must name an image file ending .svg, .png, .ico, .webp, .gif, .jpg or .jpeg"
                );
                return Err(invalid(key, message));
            }
        }
        Ok(())
    }

    /// `portal.accent_color`: `#rrggbb`, dark enough for white button text.
    fn validate_accent_color(&self) -> Result<(), Invalid> {
        let colour = &self.accent_color;
        let Some(contrast) = Rgb::parse(colour).map(|c| c.contrast(Rgb::WHITE)) else {
            let message = format!("{colour:?} is not a colour like \"#1d4ed8\"");
            return Err(invalid("portal.accent_color", message));
        };
        // Buttons carry white text on the accent colour: WCAG 2.2 AA (1.4.3) asks 4.5:1.
        if contrast < 4.5 {
            return Err(invalid(
                "portal.accent_color",
                format!(
                    "{colour} gives white button text a contrast of {contrast:.1}:1; WCAG AA needs 4.5:1, pick a darker colour"
                ),
            ));
        }
        Ok(())
    }
}

/// The `Content-Type` of an image file the portal serves, by its extension (any letter
/// case); `None` for a file that is no image the portal takes.
pub fn image_content_type(path: &str) -> Option<&'static str> {
    let extension = Path::new(path).extension()?.to_str()?.to_ascii_lowercase();
    Some(match extension.as_str() {
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "jpg" | "jpeg" => "image/jpeg",
        _ => return None,
    })
}

/// A DNS name in lower case: labels of letters, digits and `-`, separated by dots.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A `portal.allowed_return_hosts` entry as its host name (lower case, as validated) and
/// the port it names, if any: `app.example.com`, `app.example.com:8443`. `None` for
/// anything else (a scheme, a path, a port out of range).
pub fn return_host(entry: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port.parse::<u16>().ok().filter(|p| *p != 0)?))
        }
        Some(_) => return None,
        None => (entry, None),
    };
    is_host_name(host).then_some((host, port))
}

/// Whether `path` is `prefix` or below it, segment-aligned; either may end in `/`.
fn path_is_under(path: &str, prefix: &str) -> bool {
    let path = path.trim_end_matches('/');
    let prefix = prefix.trim_end_matches('/');
    path == prefix || path.starts_with(&format!("{prefix}/")) || prefix.is_empty()
}

/// Paths the gateway answers itself; routes may not shadow them.
pub fn is_reserved_path(prefix: &str) -> bool {
    is_local_path(prefix.trim_end_matches('/'))
}

/// Whether the gateway answers `path` itself (one of [`LOCAL_PATHS`] or below it), the
/// portal's pages aside.
pub fn is_local_path(path: &str) -> bool {
    LOCAL_PATHS.iter().any(|local| is_under(path, local, false))
}

/// The paths the gateway answers itself, each with everything under it (the portal's
/// `portal.path_prefix` besides).
pub const LOCAL_PATHS: &[&str] = &[
    "/favicon.ico",
    "/api/auth",
    "/api/admin",
    "/.well-known/jwks.json",
    "/health",
];

/// Whether `path` is `prefix` or lies under it on a segment boundary (`/app` covers `/app`
/// and `/app/x`, not `/application`), optionally ignoring ASCII letter case.
pub fn is_under(path: &str, prefix: &str, ignore_case: bool) -> bool {
    let (path, prefix) = (path.as_bytes(), prefix.as_bytes());
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let same = if ignore_case {
        head.eq_ignore_ascii_case(prefix)
    } else {
        head == prefix
    };
    same && matches!(path.get(prefix.len()), None | Some(b'/'))
}

fn parse_http_url(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{s:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(url)
}

/// Hides the password in a URL before it goes into an error message.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(_) => format!("{s:?}"),
        // Not a URL the parser takes (a bad port, a missing scheme…): mask everything between
        // the scheme (or the start) and the last `@`, where a user and password would be.
        Err(_) => {
            let start = s.find("://").map_or(0, |i| i + 3);
            match s[start..].rfind('@') {
                Some(at) => format!("{:?}", format!("{}***{}", &s[..start], &s[start + at..])),
                None => format!("{s:?}"),
            }
        }
    }
}

/// `PORTCULLIS_<SECTION>__<KEY>` variables as a figment provider over an explicit list,
/// so that tests can hand in their own environment.
struct EnvOverrides(Vec<(String, String)>);

impl figment::Provider for EnvOverrides {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(ENV_SOURCE_NAME)
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        use figment::value::{Dict, Value};
        let mut root = Dict::new();
        for (name, raw) in &self.0 {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.clone()));
            if path
                .first()
                .is_some_and(|s| FILE_ONLY_SECTIONS.contains(&s.as_str()))
            {
                return Err(figment::Error::from(format!(
                    "environment variable {name}: [[{}]] come from the config file only",
                    path[0]
                )));
            }
            let Some((last, parents)) = path.split_last() else {
                continue;
            };
            let mut dict = &mut root;
            for part in parents {
                let entry = dict
                    .entry(part.clone())
                    .or_insert_with(|| Value::from(Dict::new()));
                match entry {
                    Value::Dict(_, inner) => dict = inner,
                    _ => {
                        return Err(figment::Error::from(format!(
                            "environment variable {name} conflicts with another override"
                        )));
                    }
                }
            }
            dict.insert(last.clone(), value);
        }
        Ok(figment::Profile::Default.collect(root))
    }
}

const ENV_SOURCE_NAME: &str = "environment overrides";

/// The lists of tables, which an environment variable cannot address one entry of.
const FILE_ONLY_SECTIONS: [&str; 2] = ["routes", "identity_providers"];

/// An environment variable: its name and value.
type Variable = (String, String);

/// The variables of this process that are no setting of its own (`PORTCULLIS_CONFIG`
/// names the file; the test suite's variables are read by the tests).
const NOT_SETTINGS: [&str; 2] = ["PORTCULLIS_CONFIG", "PORTCULLIS_SCREENSHOTS"];

/// A figment error as one line: the key (`routes[0].upstream`), what is wrong (serde's
/// text, without its nested quoting) and where the value came from — the file, or the
/// variable that set it.
fn describe_figment_error(
    err: &figment::Error,
    file_name: &str,
    env: &[(String, String)],
) -> String {
    let key = if err.path.is_empty() {
        String::new()
    } else {
        format!("`{}`: ", key_path(&err.path))
    };
    let from_env = err
        .metadata
        .as_ref()
        .is_some_and(|m| m.name == ENV_SOURCE_NAME);
    let source = if from_env {
        match variable_setting(env, &err.path) {
            Some(var) => format!(" (from environment variable {var})"),
            None => " (from the environment)".to_owned(),
        }
    } else {
        format!(" (in {file_name})")
    };
    let what = err
        .kind
        .to_string()
        .replace("`one of ", "one of ")
        .replace("``", "`");
    format!("{key}{}{source}", without_quoted_source(&what))
}

/// A parse error without the lines of the file it quotes (`38 | client_secret = "…`, and
/// the `|` and `^` lines around them): the line and column stay, the text — which may be a
/// secret the error cut off — is never printed or logged.
fn without_quoted_source(message: &str) -> String {
    let quotes_source = |line: &str| {
        let (number, _) = line.split_once('|').unwrap_or(("x", ""));
        number.trim().chars().all(|c| c.is_ascii_digit())
    };
    message
        .lines()
        .filter(|line| !quotes_source(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `routes.0.upstream` written the way validation messages write it: `routes[0].upstream`.
fn key_path(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// The setting a variable with one underscore where two belong was probably meant for
/// (`PORTCULLIS_SERVER_ADMIN_LISTEN` → `PORTCULLIS_SERVER__ADMIN_LISTEN`): the first split of
/// its name into a section and a key that the configuration has.
fn meant_variable(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    rest.match_indices('_')
        .filter(|&(i, _)| !FILE_ONLY_SECTIONS.contains(&rest[..i].to_ascii_lowercase().as_str()))
        .map(|(i, _)| format!("{ENV_PREFIX}{}__{}", &rest[..i], &rest[i + 1..]))
        .find(|candidate| names_a_setting(candidate))
}

/// Whether the variable `name` sets a key of the configuration (whatever its value): the
/// embedded defaults with it set to `""` fail, if at all, for its value, not for its name.
fn names_a_setting(name: &str) -> bool {
    let probe = Figment::new()
        .merge(Toml::string(EMBEDDED_DEFAULTS))
        .merge(EnvOverrides(vec![(name.to_owned(), String::new())]));
    match probe.extract::<Config>() {
        Ok(_) => true,
        Err(errors) => !errors
            .into_iter()
            .any(|e| matches!(e.kind, figment::error::Kind::UnknownField(..))),
    }
}

/// `cors.allowed_origins[0]` as figment's path: `["cors", "allowed_origins", "0"]`.
fn key_parts(key: &str) -> Vec<String> {
    key.split(['.', '[', ']'])
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The variable among `env` that set the value at `path`: its key path is `path`, or holds
/// it (`PORTCULLIS_CORS__ALLOWED_ORIGINS` for `cors.allowed_origins[0]`), or lies within it.
fn variable_setting(env: &[(String, String)], path: &[String]) -> Option<String> {
    env.iter()
        .map(|(name, _)| name)
        .find(|name| {
            let parts: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            !path.is_empty() && (parts.starts_with(path) || path.starts_with(&parts))
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::load_from(Path::new("test.toml"), text, Vec::new())
    }

    #[test]
    fn a_parse_error_names_line_and_column_but_never_quotes_the_file() {
        for text in [
            "[mail]\nurl = \"smtp://user:SuperSecretPW3@host\n",
            "[[identity_providers]]\nclient_secret = \"SuperSecretPW3\n",
            "[server]\nlisten = SuperSecretPW3\n",
            "[[routes]\nname = \"SuperSecretPW3\"\n",
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(!err.contains("SuperSecretPW3"), "{err}");
            assert!(err.contains("line"), "{err}");
        }
    }

    #[test]
    fn a_cookie_domain_that_covers_the_public_host_is_taken() {
        for (public_url, domain) in [
            ("https://auth.example.com", "example.com"),
            ("https://example.com", "example.com"),
            ("http://a.b.example.com:8080", "b.example.com"),
        ] {
            let text = format!(
                "[server]\npublic_url = \"{public_url}\"\n[sessions]\ncookie_domain = \"{domain}\"\n"
            );
            assert!(
                load(&text).is_ok(),
                "{public_url} {domain}: {:?}",
                load(&text).err()
            );
        }
    }

    #[test]
    fn empty_file_gives_embedded_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.server.listen.port(), 8080);
        assert_eq!(c.storage.url.as_str(), "sqlite://data/portcullis.db");
        assert_eq!(c.sessions.url, "memory://");
        assert_eq!(c.rate_limits.login.unwrap().limit, 10);
    }

    #[test]
    fn audit_retention_is_a_duration_or_forever() {
        let year = Some(HumanDuration::from_secs(365 * 86_400));
        assert_eq!(load("").unwrap().audit.retention, year);
        let days = load("[audit]\nretention = \"30d\"\n").unwrap();
        assert_eq!(
            days.audit.retention,
            Some(HumanDuration::from_secs(30 * 86_400))
        );
        for forever in ["\"0\"", "\"\"", "0", "\" 0 \""] {
            let c = load(&format!("[audit]\nretention = {forever}\n")).unwrap();
            assert_eq!(c.audit.retention, None, "{forever}");
        }
        let env = vec![("PORTCULLIS_AUDIT__RETENTION".to_owned(), "0".to_owned())];
        let c = Config::load_from(Path::new("test.toml"), "", env).unwrap();
        assert_eq!(c.audit.retention, None);
        for bad in ["\"a year\"", "7", "\"-1d\""] {
            let err = load(&format!("[audit]\nretention = {bad}\n")).unwrap_err();
            assert!(err.to_string().contains("audit.retention"), "{bad}: {err}");
        }
    }

    #[test]
    fn errors_name_the_variable_and_the_key_as_validation_writes_it() {
        let cases = [
            ("PORTCULLIS_FOO__BAR", "1", "`foo`", "PORTCULLIS_FOO__BAR"),
            (
                "PORTCULLIS_SERVER__LISTN",
                "1",
                "`server.listn`",
                "PORTCULLIS_SERVER__LISTN",
            ),
            (
                "PORTCULLIS_SERVER__THREADS",
                "many",
                "`server.threads`",
                "PORTCULLIS_SERVER__THREADS",
            ),
            // An entry of a list: the variable that set the whole list.
            (
                "PORTCULLIS_SERVER__TRUSTED_PROXIES",
                "[\"10.0.0.0/33\"]",
                "`server.trusted_proxies[0]`",
                "PORTCULLIS_SERVER__TRUSTED_PROXIES",
            ),
            (
                "PORTCULLIS_SERVER__STRIP_HEADERS",
                "[\"ok\", 5]",
                "`server.strip_headers[1]`",
                "PORTCULLIS_SERVER__STRIP_HEADERS",
            ),
            // Found by validation rather than by the types.
            (
                "PORTCULLIS_CORS__ALLOWED_ORIGINS",
                "[\"bad\"]",
                "`cors.allowed_origins[0]`",
                "PORTCULLIS_CORS__ALLOWED_ORIGINS",
            ),
            (
                "PORTCULLIS_PORTAL__ALLOWED_RETURN_HOSTS",
                "[\"a b\"]",
                "`portal.allowed_return_hosts",
                "PORTCULLIS_PORTAL__ALLOWED_RETURN_HOSTS",
            ),
        ];
        for (name, value, key, var) in cases {
            let env = vec![(name.to_owned(), value.to_owned())];
            let text = Config::load_from(Path::new("test.toml"), "", env)
                .unwrap_err()
                .to_string();
            assert!(text.contains(key), "{name}: {text}");
            assert!(
                text.contains(&format!("environment variable {var})")),
                "{name}: {text}"
            );
            assert!(
                !text.contains("``") && !text.contains("`one of"),
                "{name}: {text}"
            );
        }
        let text = load("[[routes]]\nupstream = \"http://127.0.0.1:1\"\npolicy = \"nobody\"\n")
            .unwrap_err()
            .to_string();
        assert!(text.contains("`routes[0].policy`"), "{text}");
    }

    #[test]
    fn stray_variables_and_a_cheap_bcrypt_cost_are_warned_about() {
        let env = vec![
            (
                "PORTCULLIS_SERVER_LISTEN".to_owned(),
                "0.0.0.0:1".to_owned(),
            ),
            ("PORTCULLIS_CONFIG".to_owned(), "x.toml".to_owned()),
            (
                "PORTCULLIS_TEST_REDIS_URL".to_owned(),
                "redis://x".to_owned(),
            ),
        ];
        let c =
            Config::load_from(Path::new("t.toml"), "[passwords]\nbcrypt_cost = 4\n", env).unwrap();
        let warnings = c.warnings().join("\n");
        assert!(
            warnings.contains("PORTCULLIS_SERVER_LISTEN names no setting"),
            "{warnings}"
        );
        // The hint names the setting the variable was meant for, wherever the missing
        // underscore belongs.
        for (stray, meant) in [
            (
                "PORTCULLIS_SERVER_LISTEN",
                Some("PORTCULLIS_SERVER__LISTEN"),
            ),
            (
                "PORTCULLIS_SERVER_ADMIN_LISTEN",
                Some("PORTCULLIS_SERVER__ADMIN_LISTEN"),
            ),
            (
                "PORTCULLIS_RATE_LIMITS_LOGIN",
                Some("PORTCULLIS_RATE_LIMITS__LOGIN"),
            ),
            ("PORTCULLIS_STORAGE_URL", Some("PORTCULLIS_STORAGE__URL")),
            ("PORTCULLIS_NO_SUCH_THING", None),
        ] {
            let env = vec![(stray.to_owned(), "x".to_owned())];
            let c = Config::load_from(Path::new("t.toml"), "", env).unwrap();
            let warnings = c.warnings().join("\n");
            assert!(
                warnings.contains(&format!("{stray} names no setting")),
                "{warnings}"
            );
            match meant {
                Some(meant) => assert!(
                    warnings.contains(&format!("; {meant} is one")),
                    "{stray}: {warnings}"
                ),
                None => assert!(
                    warnings.contains("PORTCULLIS_SERVER__LISTEN)"),
                    "{warnings}"
                ),
            }
        }
        assert!(!warnings.contains("PORTCULLIS_CONFIG"), "{warnings}");
        assert!(!warnings.contains("PORTCULLIS_TEST_"), "{warnings}");
        assert!(warnings.contains("bcrypt_cost = 4"), "{warnings}");
        let weak = "[passwords]\nmin_score = 1\n[lockout]\nmax_failed_attempts = 100000\n\
                    [tokens]\naccess_ttl = \"30d\"\n";
        let warnings = load(weak).unwrap().warnings().join("\n");
        for key in [
            "min_score = 1",
            "max_failed_attempts = 100000",
            "access_ttl = 30d",
        ] {
            assert!(warnings.contains(key), "{key}: {warnings}");
        }
        let defaults = load("").unwrap().warnings().join("\n");
        for key in ["min_score", "max_failed_attempts", "access_ttl"] {
            assert!(!defaults.contains(key), "{key}: {defaults}");
        }
        let c = load("[passwords]\nbcrypt_cost = 10\n").unwrap();
        assert!(!c.warnings().join("").contains("bcrypt"));
    }

    /// One `[[identity_providers]]` entry of `kind`, with `extra` lines.
    fn provider(id: &str, kind: &str, extra: &str) -> String {
        let issuer = if kind == "oidc" {
            "issuer = \"https://sso.example.com\"\n"
        } else {
            ""
        };
        format!(
            "[[identity_providers]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"{kind}\"\n\
             {issuer}client_id = \"c\"\nclient_secret = \"s\"\n{extra}"
        )
    }

    #[test]
    fn route_names_are_unique_and_unnamed_routes_that_collide_are_warned_about() {
        let route = |name: &str, host: &str| {
            format!(
                "[[routes]]\nname = \"{name}\"\nhost = \"{host}\"\npath_prefix = \"/\"\n\
                 upstream = \"http://127.0.0.1:1\"\n"
            )
        };
        let err = load(&(route("app", "a.example.com") + &route("app", "b.example.com")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes[1].name") && err.contains("earlier route"),
            "{err}"
        );
        // Names that print badly, or that only letter case tells apart.
        for (first, second) in [
            ("app", "APP"),
            ("x\\\"} 1\\nportcullis_fake{a=\\\"b", "y"),
            ("app\\u001b[31m", "y"),
            ("app\\u202e", "y"),
            ("app ", "y"),
            ("a\\u200bpp", "y"),
        ] {
            let text = route(first, "a.example.com") + &route(second, "b.example.com");
            let err = load(&text).unwrap_err().to_string();
            assert!(err.contains("].name"), "{first:?}: {err}");
        }
        let unnamed = route("", "a.example.com") + &route("", "b.example.com");
        let warnings = load(&unnamed).unwrap().warnings().join("\n");
        assert!(warnings.contains("give each a name"), "{warnings}");
        let named = route("a", "a.example.com") + &route("b", "b.example.com");
        let warnings = load(&named).unwrap().warnings().join("\n");
        assert!(!warnings.contains("give each a name"), "{warnings}");
    }

    #[test]
    fn the_site_title_is_text_people_can_read() {
        for bad in ["Acme\\u202eevil", "Acme\\u0007", "Acme\\nGate", "\\u200b "] {
            let err = load(&format!("[portal]\ntitle = \"{bad}\"\n")).unwrap_err();
            assert!(err.to_string().contains("portal.title"), "{bad}: {err}");
        }
        let long = "A".repeat(101);
        assert!(load(&format!("[portal]\ntitle = \"{long}\"\n")).is_err());
        assert!(load("[portal]\ntitle = \"Вход · Acme & Co\"\n").is_ok());
    }

    #[test]
    fn unsound_identity_providers_are_refused_naming_the_key() {
        let cases = [
            (
                provider("a", "oidc", "role_mapping = { \"\" = \"staff\" }\n"),
                "identity_providers[0].role_mapping",
            ),
            (
                provider("a", "oidc", "allowed_groups = [\" \"]\n"),
                "identity_providers[0].allowed_groups",
            ),
            (
                provider("a", "github", "trust_provider_mfa = true\n"),
                "identity_providers[0].trust_provider_mfa",
            ),
            (
                provider("a", "oidc", "") + &provider("b", "oidc", ""),
                "identity_providers[1].client_id",
            ),
            (
                provider("a", "github", "web_url = \"https://github.example.com\"\n"),
                "identity_providers[0].api_url",
            ),
        ];
        for (text, key) in cases {
            let err = load(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        // The same issuer with another client is two providers, not one twice.
        let two = provider("a", "oidc", "") + &provider("b", "oidc", "").replace("\"c\"", "\"d\"");
        assert!(load(&two).is_ok());
    }

    #[test]
    fn identity_provider_settings_that_do_nothing_or_too_much_are_warned_about() {
        let cases = [
            (
                "[registration]\nmode = \"closed\"\n".to_owned()
                    + &provider("a", "oidc", "auto_create = true\n"),
                "auto_create makes no account",
            ),
            (
                "[registration]\nmode = \"invite\"\n".to_owned()
                    + &provider("a", "oidc", "auto_create = true\n"),
                "auto_create makes no account",
            ),
            (
                provider(
                    "a",
                    "oidc",
                    "scopes = [\"openid\"]\nallowed_domains = [\"example.com\"]\n",
                ),
                "allowed_domains needs an address",
            ),
            (
                provider("a", "oidc", "role_mapping = { everyone = \"admin\" }\n"),
                "an administrator",
            ),
        ];
        for (text, said) in cases {
            let warnings = load(&text).unwrap().warnings().join("\n");
            assert!(warnings.contains(said), "{said}: {warnings}");
        }
        let quiet = provider(
            "a",
            "oidc",
            "auto_create = true\nallowed_domains = [\"example.com\"]\nrole_mapping = { ops = \"ops\" }\n",
        );
        let warnings = load(&quiet).unwrap().warnings().join("\n");
        assert!(!warnings.contains("identity_providers"), "{warnings}");
    }

    #[test]
    fn a_variable_naming_a_list_of_tables_is_refused_by_name() {
        for (name, value) in [
            ("PORTCULLIS_ROUTES__0__UPSTREAM", "http://127.0.0.1:1"),
            ("PORTCULLIS_IDENTITY_PROVIDERS__0__CLIENT_SECRET", "s"),
            ("PORTCULLIS_IDENTITY_PROVIDERS__X", "[]"),
            ("PORTCULLIS_ROUTES", "[{name = \"x\"}]"),
            ("PORTCULLIS_IDENTITY_PROVIDERS", "[]"),
        ] {
            let env = vec![(name.to_owned(), value.to_owned())];
            let err = Config::load_from(Path::new("test.toml"), "", env).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(name) && text.contains("file only"), "{text}");
        }
    }

    #[test]
    fn registration_is_parsed_at_load_naming_the_key() {
        let c = load("").unwrap();
        assert_eq!(c.registration.mode, RegistrationMode::Open);
        let c = load(
            "[registration]\nmode = \"domains\"\nallowed_domains = [\"Example.COM.\", \"*.münchen.de\"]\n",
        )
        .unwrap();
        let domains: Vec<String> = c
            .registration
            .allowed_domains
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(domains, ["example.com", "*.xn--mnchen-3ya.de"]);
        for (text, key) in [
            (
                "[registration]\nmode = \"domains\"\n",
                "registration.allowed_domains",
            ),
            (
                "[registration]\nallowed_domains = [\"example.com\"]\n",
                "registration.allowed_domains",
            ),
            (
                "[registration]\nmode = \"domains\"\nallowed_domains = [\"ex*ample.com\"]\n",
                "registration.allowed_domains",
            ),
            (
                "[registration]\nmode = \"sometimes\"\n",
                "registration.mode",
            ),
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let env = [
            ("PORTCULLIS_REGISTRATION__MODE", "domains"),
            (
                "PORTCULLIS_REGISTRATION__ALLOWED_DOMAINS",
                "[\"example.com\"]",
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = Config::load_from(Path::new("test.toml"), "", env).unwrap();
        assert_eq!(c.registration.mode, RegistrationMode::Domains);
        assert_eq!(c.registration.allowed_domains.len(), 1);
        let env = [("PORTCULLIS_REGISTRATION__MODE", "domains")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let err = Config::load_from(Path::new("test.toml"), "", env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("registration.allowed_domains"), "{err}");
    }

    #[test]
    fn open_registration_before_a_route_any_account_passes_is_warned_about() {
        let route = |policy: &str, roles: &str| {
            format!(
                "[[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\npolicy = \"{policy}\"\nroles = {roles}\n"
            )
        };
        for (text, warned) in [
            (route("authenticated", "[]"), true),
            (route("two_factor", "[]"), true),
            (route("authenticated", "[\"staff\"]"), false),
            (route("public", "[]"), false),
            (
                format!(
                    "[registration]\nmode = \"invite\"\n{}",
                    route("authenticated", "[]")
                ),
                false,
            ),
            (String::new(), false),
        ] {
            let warnings = load(&text).unwrap().warnings();
            assert!(
                warnings.iter().all(|w| !w.contains("allowed_domains")),
                "{warnings:?}"
            );
            assert_eq!(warnings.len(), usize::from(warned), "{text}: {warnings:?}");
            if warned {
                assert!(warnings[0].contains("routes[0] (\"app\")"), "{warnings:?}");
                assert!(warnings[0].contains("registration.mode"), "{warnings:?}");
            }
        }
    }

    #[test]
    fn allowed_domains_in_a_mode_that_does_not_read_them_are_warned_about() {
        for (mode, warned) in [("invite", true), ("closed", true), ("domains", false)] {
            let text =
                format!("[registration]\nmode = \"{mode}\"\nallowed_domains = [\"example.com\"]\n");
            let warnings = load(&text).unwrap().warnings();
            let found = warnings
                .iter()
                .any(|w| w.contains("allowed_domains has no effect"));
            assert_eq!(found, warned, "{mode}: {warnings:?}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load("[server]\nlisten_port = 1\n").unwrap_err().to_string();
        assert!(err.contains("listen_port"), "{err}");
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn connection_limits_are_checked_naming_the_key() {
        for (line, key) in [
            ("keepalive_timeout = \"0s\"", "server.keepalive_timeout"),
            ("keepalive_timeout = \"later\"", "keepalive_timeout"),
            ("max_header_bytes = 1023", "server.max_header_bytes"),
            ("max_header_bytes = 1048576", "server.max_header_bytes"),
            ("admin_max_connections = -1", "admin_max_connections"),
        ] {
            let err = load(&format!("[server]\n{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
        let c = load("").unwrap();
        assert_eq!(c.server.keepalive_timeout.get().as_secs(), 75);
        assert_eq!(
            (c.server.max_connections, c.server.admin_max_connections),
            (10000, 64)
        );
    }

    #[test]
    fn bad_duration_is_named() {
        let err = load("[lockout]\nduration = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lockout.duration"), "{err}");
    }

    #[test]
    fn identity_headers_cannot_take_reserved_or_each_others_names() {
        for (text, key) in [
            ("user_id = \"Content-Length\"", "identity_headers.user_id"),
            ("email = \"Host\"", "identity_headers.email"),
            ("roles = \"transfer_encoding\"", "identity_headers.roles"),
            (
                "session_id = \"Authorization\"",
                "identity_headers.session_id",
            ),
            ("assertion = \"Cookie\"", "identity_headers.assertion"),
            (
                "email_verified = \"X-Forwarded-For\"",
                "identity_headers.email_verified",
            ),
            ("email = \"X-User-Id\"", "identity_headers.email"),
            ("roles = \"x_user_email\"", "identity_headers.roles"),
        ] {
            let err = load(&format!("[identity_headers]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        assert!(load("[identity_headers]\nuser_id = \"X-Remote-User\"\n").is_ok());
    }

    #[test]
    fn identity_header_names_are_parsed_at_load() {
        let c = load("[identity_headers]\nuser_id = \"X-Who\"\nassertion = \"\"\n").unwrap();
        assert_eq!(c.identity_headers.user_id, "x-who");
        assert!(c.identity_headers.assertion.is_none());
        let err = load("[identity_headers]\nemail = \"bad header\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("identity_headers"), "{err}");
        assert!(err.contains("is not a header name"), "{err}");
    }

    #[test]
    fn route_validation_names_the_index() {
        let err = load("[[routes]]\npath_prefix = \"app\"\nupstream = \"http://127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("routes[0].path_prefix"), "{err}");
        let err = load("[[routes]]\nupstream = \"ftp://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("routes[0].upstream"), "{err}");
    }

    #[test]
    fn a_routes_max_auth_age_is_a_second_or_more_on_a_route_that_asks_who() {
        let route = |policy: &str, age: &str| {
            format!(
                "[[routes]]\npath_prefix = \"/r\"\nupstream = \"http://127.0.0.1:1\"\n\
                 policy = \"{policy}\"\nmax_auth_age = \"{age}\"\n"
            )
        };
        // (policy, max_auth_age, the refusal's words; None: taken)
        for (policy, age, refused) in [
            ("authenticated", "1s", None),
            ("authenticated", "1500ms", None),
            ("two_factor", "10m", None),
            ("authenticated", "24h", None),
            ("authenticated", "0s", Some("at least 1s")),
            ("authenticated", "999ms", Some("at least 1s")),
            ("two_factor", "1ms", Some("at least 1s")),
            ("authenticated", "soon", Some("invalid duration")),
            ("authenticated", "", Some("expected a duration")),
            ("public", "10m", Some("needs policy")),
            ("deny", "10m", Some("needs policy")),
        ] {
            let loaded = load(&route(policy, age));
            match refused {
                None => {
                    let config = loaded.unwrap_or_else(|e| panic!("{policy} {age}: {e}"));
                    let taken = config.routes[0].max_auth_age.map(HumanDuration::get);
                    let meant = age.parse::<HumanDuration>().map(HumanDuration::get);
                    assert_eq!(taken, meant.ok(), "{policy} {age}");
                }
                Some(words) => {
                    let err = loaded.expect_err(age).to_string();
                    assert!(err.contains("max_auth_age"), "{policy} {age}: {err}");
                    assert!(err.contains(words), "{policy} {age}: {err}");
                }
            }
        }
    }

    #[test]
    fn reserved_paths_cannot_be_routed() {
        assert!(is_reserved_path("/api/auth"));
        assert!(is_reserved_path("/api/auth/login"));
        assert!(is_reserved_path("/api/admin"));
        assert!(is_reserved_path("/api/admin/users/"));
        assert!(!is_reserved_path("/api/administrator"));
        assert!(is_reserved_path("/health"));
        assert!(is_reserved_path("/favicon.ico"));
        assert!(!is_reserved_path("/favicon.icons"));
        assert!(!is_reserved_path("/api"));
        assert!(!is_reserved_path("/healthz"));
        for prefix in ["/api/auth", "/api/admin", "/api/admin/users"] {
            let text = format!(
                "[[routes]]\npath_prefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:1\"\n"
            );
            let err = load(&text).unwrap_err().to_string();
            assert!(err.contains("routes[0].path_prefix"), "{prefix}: {err}");
        }
    }

    #[test]
    fn portal_settings_are_checked() {
        let err = |text: &str| load(text).unwrap_err().to_string();
        for (text, key) in [
            ("[portal]\npath_prefix = \"auth\"\n", "portal.path_prefix"),
            ("[portal]\npath_prefix = \"/auth/\"\n", "portal.path_prefix"),
            ("[portal]\npath_prefix = \"/\"\n", "portal.path_prefix"),
            (
                "[portal]\npath_prefix = \"/a/../b\"\n",
                "portal.path_prefix",
            ),
            (
                "[portal]\npath_prefix = \"/api/auth/x\"\n",
                "portal.path_prefix",
            ),
            ("[portal]\npath_prefix = \"/api\"\n", "portal.path_prefix"),
            (
                "[portal]\npath_prefix = \"/api/admin\"\n",
                "portal.path_prefix",
            ),
            (
                "[portal]\npath_prefix = \"/.well-known\"\n",
                "portal.path_prefix",
            ),
            (
                "[portal]\npath_prefix = \"/health\"\n",
                "portal.path_prefix",
            ),
            ("[portal]\naccent_color = \"blue\"\n", "portal.accent_color"),
            (
                "[portal]\naccent_color = \"#7fb3ff\"\n",
                "portal.accent_color",
            ),
            ("[portal]\nlogo_url = \"javascript:x\"\n", "portal.logo_url"),
            (
                "[portal]\nallowed_return_hosts = [\"https://a.example\"]\n",
                "portal.allowed_return_hosts[0]",
            ),
            (
                "[portal]\nallowed_return_hosts = [\"ok.example:8443\", \"a.example:0\"]\n",
                "portal.allowed_return_hosts[1]",
            ),
            (
                "[portal]\nallowed_return_hosts = [\"ok.example:8443\", \"a.example:65536\"]\n",
                "portal.allowed_return_hosts[1]",
            ),
            (
                "[portal]\nallowed_return_hosts = [\"ok.example:8443\", \"a.example:\"]\n",
                "portal.allowed_return_hosts[1]",
            ),
            (
                "[portal]\nallowed_return_hosts = [\"ok.example:8443\", \"a.example:+80\"]\n",
                "portal.allowed_return_hosts[1]",
            ),
            (
                "[portal]\nallowed_return_hosts = [\"ok.example:8443\", \"A.example\"]\n",
                "portal.allowed_return_hosts[1]",
            ),
            (
                "[portal]\nallowed_return_hosts = [\"ok.example:8443\", \"a.example/x\"]\n",
                "portal.allowed_return_hosts[1]",
            ),
            (
                "[sessions]\ncookie_domain = \"exa mple.com\"\n",
                "sessions.cookie_domain",
            ),
            (
                "[sessions]\ncookie_domain = \"example.com\"\n",
                "sessions.cookie_domain",
            ),
            (
                "[server]\npublic_url = \"https://auth.example.com\"\n\
                 [sessions]\ncookie_domain = \"com\"\n",
                "sessions.cookie_domain",
            ),
            (
                "[server]\npublic_url = \"https://auth.example.org\"\n\
                 [sessions]\ncookie_domain = \"example.com\"\n",
                "sessions.cookie_domain",
            ),
            (
                "[server]\npublic_url = \"https://notexample.com\"\n\
                 [sessions]\ncookie_domain = \"example.com\"\n",
                "sessions.cookie_domain",
            ),
            (
                "[[routes]]\npath_prefix = \"/auth/app\"\nupstream = \"http://127.0.0.1:1\"\n",
                "routes[0].path_prefix",
            ),
        ] {
            assert!(err(text).contains(key), "{text}: {}", err(text));
        }
        let c =
            load("[portal]\npath_prefix = \"/sso/pages\"\naccent_color = \"#0b5394\"\n").unwrap();
        assert_eq!(c.portal.path_prefix, "/sso/pages");
        load("[portal]\nenabled = false\n[[routes]]\npath_prefix = \"/auth\"\nupstream = \"http://127.0.0.1:1\"\n")
            .expect("a disabled portal leaves its prefix to routes");
    }

    #[test]
    fn portal_image_files_are_named_by_their_type_and_a_logo_has_one_source() {
        let err = |text: &str| load(text).unwrap_err().to_string();
        for (text, key) in [
            (
                "[portal]\nlogo_url = \"/logo.svg\"\nlogo_file = \"logo.svg\"\n",
                "portal.logo_file",
            ),
            ("[portal]\nlogo_file = \"logo.txt\"\n", "portal.logo_file"),
            ("[portal]\nfavicon_file = \"icon\"\n", "portal.favicon_file"),
        ] {
            assert!(err(text).contains(key), "{text}: {}", err(text));
        }
        assert_eq!(image_content_type("/x/Logo.SVG"), Some("image/svg+xml"));
        assert_eq!(image_content_type("a.jpeg"), Some("image/jpeg"));
        assert_eq!(image_content_type("a.svg.txt"), None);
        load("[portal]\nlogo_file = \"/etc/logo.png\"\nfavicon_file = \"/etc/icon.ico\"\n")
            .expect("image files are read when the portal is built, not at load");
    }

    #[test]
    fn the_password_policy_keys_are_read_and_checked() {
        let policy = load("").unwrap().passwords.policy();
        assert_eq!(policy, PasswordPolicy::default());
        assert_eq!(
            (policy.min_chars, policy.require_classes, policy.min_score),
            (10, false, 3)
        );
        let read = load("[passwords]\nmin_length = 12\nrequire_classes = true\nmin_score = 4\n")
            .unwrap()
            .passwords
            .policy();
        assert_eq!(
            (read.min_chars, read.require_classes, read.min_score),
            (12, true, 4)
        );
        let refused = [
            ("min_length = 7", "`passwords.min_length`"),
            ("min_length = 65", "`passwords.min_length`"),
            ("min_score = 5", "`passwords.min_score`"),
            ("min_score = -1", "passwords.min_score"),
            ("require_classes = \"yes\"", "passwords.require_classes"),
            ("min_lenght = 10", "min_lenght"),
        ];
        for (line, key) in refused {
            let text = load(&format!("[passwords]\n{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(text.contains(key), "{line}: {text}");
        }
        for line in ["min_length = 8", "min_length = 64", "min_score = 0"] {
            assert!(load(&format!("[passwords]\n{line}\n")).is_ok(), "{line}");
        }
    }

    #[test]
    fn redacts_passwords() {
        // Parseable, and not (a bad port, no scheme separator, a bad host).
        for url in [
            "postgres://u:secret@h/db",
            "redis://u:secret@h:99999/0",
            "smtp://user:secret@h:99999",
            "redis//u:secret@h",
            "foo://u:secret@[bad/x",
        ] {
            let r = redact_url(url);
            assert!(!r.contains("secret"), "{url}: {r}");
        }
        assert_eq!(redact_url("redis://h:6379/0"), "\"redis://h:6379/0\"");
    }

    #[test]
    fn session_urls_are_checked_as_the_redis_client_would() {
        let backend = |url: &str| {
            SessionsConfig {
                url: url.into(),
                ..SessionsConfig::default()
            }
            .backend()
            .map(|b| b == SessionBackend::Memory)
        };
        assert_eq!(backend(" memory:// "), Ok(true));
        for good in [
            "redis://127.0.0.1:6379/0",
            "rediss://u:p@h",
            "redis://h/",
            "redis://h",
        ] {
            assert_eq!(backend(good), Ok(false), "{good}");
        }
        for bad in [
            "redis://",
            "redis://127.0.0.1:99999/0",
            "redis://127.0.0.1:6379/abc",
            "memory://x",
            "postgres://h/db",
        ] {
            assert!(backend(bad).is_err(), "{bad}");
        }
        let err = backend("redis://u:secret@h:99999/0").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn storage_urls_are_parsed_at_load_naming_the_key() {
        let parse = |url: &str| url.parse::<StorageUrl>();
        for (url, sqlite) in [
            ("sqlite://data/x.db", true),
            ("sqlite::memory:", true),
            ("postgres://u@h/db", false),
            ("postgresql://u@h/db", false),
        ] {
            assert_eq!(
                matches!(parse(url), Ok(StorageUrl::Sqlite(_))),
                sqlite,
                "{url}"
            );
            assert_eq!(parse(url).unwrap().as_str(), url);
        }
        for (url, file) in [
            ("sqlite://data/x.db", Some("data/x.db")),
            ("sqlite:x.db?mode=rwc", Some("x.db")),
            ("sqlite::memory:", None),
            ("postgres://u@h/db", None),
        ] {
            assert_eq!(
                parse(url).unwrap().sqlite_file(),
                file.map(PathBuf::from),
                "{url}"
            );
        }
        let err = parse("mysql://root:hunter2@db/x").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = load("[storage]\nurl = \"mysql://root:hunter2@db/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let shown = format!("{:?}", parse("postgres://u:hunter2@h/db").unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn the_public_url_is_parsed_at_load_naming_the_key() {
        let url: PublicUrl = "https://Auth.Example.com/base".parse().unwrap();
        assert!(url.is_https());
        assert_eq!(
            (url.host(), url.port(), url.origin()),
            ("auth.example.com", 443, "https://auth.example.com")
        );
        assert_eq!(url.as_str(), "https://Auth.Example.com/base");
        let url: PublicUrl = "http://localhost:8080".parse().unwrap();
        assert!(!url.is_https());
        assert_eq!(
            (url.host(), url.port(), url.origin()),
            ("localhost", 8080, "http://localhost:8080")
        );
        let url: PublicUrl = "HTTPS://[::1]:8443".parse().unwrap();
        assert!(url.is_https());
        assert_eq!(
            (url.host(), url.port(), url.domain()),
            ("[::1]", 8443, None)
        );
        for bad in ["ftp://h", "localhost:8080", "/auth", "", "https://"] {
            assert!(bad.parse::<PublicUrl>().is_err(), "{bad}");
            let err = load(&format!("[server]\npublic_url = {bad:?}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.public_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn mail_urls_are_parsed_at_load_naming_the_key() {
        let parse = |url: &str| url.parse::<MailUrl>();
        assert_eq!(
            parse("file://data/outbox"),
            Ok(MailUrl::File(PathBuf::from("data/outbox")))
        );
        assert_eq!(
            parse("file:///var/spool/portcullis"),
            Ok(MailUrl::File(PathBuf::from("/var/spool/portcullis")))
        );
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://mail.example.com:587?tls=required",
            "smtp://mail.example.com?tls=opportunistic",
            "smtps://user:secret@mail.example.com",
            "smtps://user:secret@mail.example.com:2465",
        ] {
            assert!(matches!(parse(url), Ok(MailUrl::Smtp(_))), "{url}");
        }
        for url in [
            "file://",
            "smtp://host?tls=sometimes",
            "smtp://",
            "imap://host",
        ] {
            assert!(parse(url).is_err(), "{url}");
        }
        let err = parse("smtp://user:hunter2@host?tls=bogus").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let shown = format!("{:?}", parse("smtps://user:hunter2@h").unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        for text in [
            "[mail]\nurl = \"imap://user:hunter2@h\"\n",
            "[mail]\nurl = \"smtp://user:hunter2@h?tls=bogus\"\n",
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains("mail.url"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn upstreams_with_credentials_a_fragment_or_port_zero_are_refused() {
        for url in [
            "http://u:secret@127.0.0.1:3000",
            "http://u@127.0.0.1:3000",
            "http://127.0.0.1:3000#f",
            "http://127.0.0.1:0",
        ] {
            let err = Upstream::check(url).unwrap_err();
            assert!(!err.contains("secret"), "{url}: {err}");
        }
        assert!(Upstream::check("http://[::1]:3000").is_ok());
    }
}
