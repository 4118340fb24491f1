//! `[[identity_providers]]`: the OpenID Connect and GitHub sign-ins the portal offers, parsed
//! at load. The flow itself lives in `accounts::federation`.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use super::{DomainPattern, Invalid, PublicUrl, invalid, is_role_name};

/// One `[[identity_providers]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderConfig {
    /// A slug (`a-z`, `0-9`, `-`; 1 to 32 characters) naming the provider in paths
    /// (`{portal.path_prefix}/oidc/{id}/…`) and in the accounts' linked identities; changing
    /// it detaches every identity linked through it.
    pub id: ProviderId,
    /// The button's label on the sign-in page ("Sign in with {name}").
    pub name: String,
    /// `oidc` (discovery from `issuer`) or `github` (OAuth2 with GitHub's user and emails APIs).
    pub kind: ProviderKind,
    /// With `kind = "oidc"`: the issuer, exactly as the provider's discovery document names it;
    /// `https://`, or `http://` on a loopback host only (local providers and tests).
    #[serde(default)]
    pub issuer: Option<Url>,
    /// The client id the provider gave this gateway.
    pub client_id: String,
    /// The client secret, written in the file; prefer `client_secret_file`.
    #[serde(default)]
    pub client_secret: Option<ClientSecret>,
    /// A file holding the client secret (surrounding white space ignored), read at start.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The scopes asked for; empty means the kind's default (`openid email profile` for
    /// `oidc`, `read:user user:email` for `github`). `oidc` always asks for `openid`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Only addresses under these domains sign in (`example.com`, `*.example.org`); empty
    /// means any. The address must be one the provider calls verified.
    #[serde(default)]
    pub allowed_domains: Vec<DomainPattern>,
    /// Only members of one of these groups sign in (read from `groups_claim`); empty means any.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// The ID-token claim that lists the user's groups (a list of strings); `groups` by default.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Group → Portcullis role: the roles these groups give, set afresh at every sign-in
    /// through this provider (roles granted otherwise are left alone).
    #[serde(default)]
    pub role_mapping: BTreeMap<String, String>,
    /// Make a local account at the first sign-in of an identity nobody has linked (the
    /// `[registration]` policy still applies); without it such a sign-in is refused.
    #[serde(default)]
    pub auto_create: bool,
    /// Take the provider's word (`amr` naming a second factor) for the second factor of
    /// `two_factor` routes; by default the local second factor is still asked for.
    #[serde(default)]
    pub trust_provider_mfa: bool,
    /// Attach a first-seen identity to the existing local account with the same address when
    /// both the provider and Portcullis call it verified. Off by default: see the README
    /// (an attacker who registers your address at a lax provider would get your account).
    #[serde(default)]
    pub link_by_verified_email: bool,
    /// With `kind = "oidc"`: signing out of Portcullis also signs out at the provider, through
    /// its `end_session_endpoint` (OpenID Connect RP-Initiated Logout 1.0), coming back to the
    /// sign-in page (register `{public_url}{portal.path_prefix}/login` as a post-logout
    /// redirect URI). Off by default.
    #[serde(default)]
    pub end_session: bool,
    /// With `kind = "github"`: where the authorisation and token endpoints live
    /// (`{web_url}/login/oauth/authorize`, `…/access_token`); `https://github.com` by default
    /// (GitHub Enterprise Server: its own host).
    #[serde(default = "default_github_web_url")]
    pub web_url: Url,
    /// With `kind = "github"`: the REST API (`{api_url}/user`, `{api_url}/user/emails`);
    /// `https://api.github.com` by default (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[serde(default = "default_github_api_url")]
    pub api_url: Url,
}

/// What an identity provider speaks.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenID Connect with discovery (`{issuer}/.well-known/openid-configuration`).
    Oidc,
    /// GitHub's OAuth2 apps: no ID token; the user and verified-emails APIs say who it is.
    Github,
}

impl ProviderKind {
    /// The value as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::Github => "github",
        }
    }
}

/// A provider's `id`: a slug, used in paths and stored beside every identity linked through it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct ProviderId(String);

impl ProviderId {
    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProviderId {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let ok = (1..=32).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-');
        if ok {
            Ok(Self(text))
        } else {
            Err(format!(
                "{text:?} is not a provider id: 1 to 32 of a-z, 0-9 and '-', not starting with '-'"
            ))
        }
    }
}

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client secret: never printed (`Debug` shows `[redacted]`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// The secret, for the token request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_github_web_url() -> Url {
    Url::parse("https://github.com").expect("a constant URL")
}

fn default_github_api_url() -> Url {
    Url::parse("https://api.github.com").expect("a constant URL")
}

impl IdentityProviderConfig {
    /// The redirect URI to register at the provider:
    /// `{public_url}{portal.path_prefix}/oidc/{id}/callback`.
    pub fn redirect_uri(&self, public_url: &PublicUrl, path_prefix: &str) -> String {
        format!(
            "{}{}/oidc/{}/callback",
            public_url.origin(),
            path_prefix.trim_end_matches('/'),
            self.id
        )
    }

    /// The scopes to ask for: the configured ones or the kind's default; `openid` first for
    /// `oidc`.
    pub fn effective_scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = if self.scopes.is_empty() {
            match self.kind {
                ProviderKind::Oidc => vec!["openid".into(), "email".into(), "profile".into()],
                ProviderKind::Github => vec!["read:user".into(), "user:email".into()],
            }
        } else {
            self.scopes.clone()
        };
        if self.kind == ProviderKind::Oidc && !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        scopes
    }

    /// The client secret: `client_secret`, or the trimmed contents of `client_secret_file`.
    /// `Err` names the file and why it cannot be read (or that it is empty).
    pub fn read_client_secret(&self) -> Result<ClientSecret, String> {
        if let Some(secret) = &self.client_secret {
            return Ok(secret.clone());
        }
        let Some(path) = &self.client_secret_file else {
            return Err("neither client_secret nor client_secret_file is set".into());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        Ok(ClientSecret(secret.to_owned()))
    }

    /// Checks one entry; `key` makes `identity_providers[i].field`.
    fn validate(&self, key: impl Fn(&str) -> String) -> Result<(), Invalid> {
        if self.name.trim().is_empty() || self.name.chars().count() > 64 {
            return Err(invalid(key("name"), "must be 1 to 64 characters"));
        }
        if self.client_id.trim().is_empty() {
            return Err(invalid(key("client_id"), "must not be empty"));
        }
        match (&self.client_secret, &self.client_secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    key("client_secret_file"),
                    "set client_secret or client_secret_file, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    key("client_secret"),
                    "a client secret is needed: set client_secret_file (or client_secret)",
                ));
            }
            (Some(secret), None) if secret.expose().trim().is_empty() => {
                return Err(invalid(key("client_secret"), "must not be empty"));
            }
            _ => {}
        }
        self.validate_kind(&key)?;
        if self.groups_claim.trim().is_empty() {
            return Err(invalid(key("groups_claim"), "must not be empty"));
        }
        if let Some(scope) = self
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '"'))
        {
            return Err(invalid(
                key("scopes"),
                format!("{scope:?} is not a scope (one word each)"),
            ));
        }
        let groups = self.role_mapping.keys().chain(&self.allowed_groups);
        if groups.clone().any(|g| g.trim().is_empty()) {
            return Err(invalid(
                key(if self.role_mapping.keys().any(|g| g.trim().is_empty()) {
                    "role_mapping"
                } else {
                    "allowed_groups"
                }),
                "a group name must not be empty",
            ));
        }
        if let Some((group, role)) = self.role_mapping.iter().find(|(_, r)| !is_role_name(r)) {
            return Err(invalid(
                key("role_mapping"),
                format!("{group:?} maps to {role:?}, which is not a role name"),
            ));
        }
        Ok(())
    }

    /// What each kind needs: an issuer for `oidc`, sound base URLs for `github`.
    fn validate_kind(&self, key: &impl Fn(&str) -> String) -> Result<(), Invalid> {
        match self.kind {
            ProviderKind::Oidc => {
                let Some(issuer) = &self.issuer else {
                    return Err(invalid(key("issuer"), "kind = \"oidc\" needs an issuer"));
                };
                check_provider_url(issuer).map_err(|m| invalid(key("issuer"), m))?;
            }
            ProviderKind::Github => {
                if self.issuer.is_some() {
                    return Err(invalid(
                        key("issuer"),
                        "kind = \"github\" has no issuer; set web_url and api_url",
                    ));
                }
                if self.end_session {
                    return Err(invalid(
                        key("end_session"),
                        "GitHub has no sign-out endpoint",
                    ));
                }
                if self.trust_provider_mfa {
                    return Err(invalid(
                        key("trust_provider_mfa"),
                        "GitHub says nothing of how its user signed in (no amr): there is no \
                         multi-factor claim to trust",
                    ));
                }
                if !self.allowed_groups.is_empty() || !self.role_mapping.is_empty() {
                    return Err(invalid(
                        key("allowed_groups"),
                        "kind = \"github\" asserts no groups: allowed_groups and role_mapping \
                         work with kind = \"oidc\" only",
                    ));
                }
                // An Enterprise Server's users and tokens must not go to github.com's API.
                if self.web_url != default_github_web_url()
                    && self.api_url == default_github_api_url()
                {
                    return Err(invalid(
                        key("api_url"),
                        format!(
                            "web_url names a GitHub Enterprise Server: set api_url to its API \
                             too (usually {}/api/v3), or its users' tokens would go to \
                             api.github.com",
                            self.web_url.as_str().trim_end_matches('/')
                        ),
                    ));
                }
                check_provider_url(&self.web_url).map_err(|m| invalid(key("web_url"), m))?;
                check_provider_url(&self.api_url).map_err(|m| invalid(key("api_url"), m))?;
            }
        }
        Ok(())
    }
}

/// An issuer or API base: an endpoint URL (below) without a query either.
fn check_provider_url(url: &Url) -> Result<(), String> {
    if url.query().is_some() {
        return Err(format!("{url} must have no query or fragment"));
    }
    check_endpoint_url(url)
}

/// A URL a provider is reached at (an issuer, an API base, or an endpoint its discovery
/// document names): `https://` with a host, or `http://` only on a loopback host
/// (`127.0.0.0/8`, `::1`, `localhost`); no fragment (RFC 6749 §3.1) and no credentials. A
/// query is allowed here (some providers' endpoints carry one); the caller decides.
pub fn check_endpoint_url(url: &Url) -> Result<(), String> {
    if url.fragment().is_some() {
        return Err(format!("{url} must have no query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{} must carry no credentials",
            url.origin().ascii_serialization()
        ));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "{url} is plain http: only https, or http on a loopback host (127.0.0.0/8, ::1, \
             localhost)"
        )),
        _ => Err(format!("{url} is not an https:// URL")),
    }
}

/// Whether the URL's host is a loopback address or `localhost`.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Checks every entry and what spans them: unique ids, and a portal to serve the paths.
pub(super) fn validate_all(
    providers: &[IdentityProviderConfig],
    portal_enabled: bool,
) -> Result<(), Invalid> {
    let mut ids = HashSet::new();
    for (i, provider) in providers.iter().enumerate() {
        let key = |field: &str| format!("identity_providers[{i}].{field}");
        if !portal_enabled {
            return Err(invalid(
                key("id"),
                "identity providers sign in through the portal: set portal.enabled = true",
            ));
        }
        provider.validate(key)?;
        if !ids.insert(provider.id.as_str()) {
            return Err(invalid(
                key("id"),
                format!("{:?} names an earlier provider too", provider.id.as_str()),
            ));
        }
        let issuer = provider.issuer.as_ref().map(Url::as_str);
        if providers[..i].iter().any(|p| {
            issuer.is_some()
                && p.issuer.as_ref().map(Url::as_str) == issuer
                && p.client_id == provider.client_id
        }) {
            return Err(invalid(
                key("client_id"),
                "an earlier provider has the same issuer and client_id: their answers could not \
                 be told apart (RFC 9207); give each its own client at the provider",
            ));
        }
    }
    Ok(())
}

/// What is valid but likely unmeant in `[[identity_providers]]`: `auto_create` that the
/// registration mode turns into nothing, `allowed_domains` without the scope that brings
/// an address, a group mapped onto the administrators' role.
pub(super) fn warnings(
    providers: &[IdentityProviderConfig],
    registration: super::RegistrationMode,
    admin_role: &str,
) -> Vec<String> {
    use super::RegistrationMode::{Closed, Invite};
    let mut out = Vec::new();
    for (i, p) in providers.iter().enumerate() {
        let at = format!("identity_providers[{i}] ({})", p.id);
        if p.auto_create && matches!(registration, Closed | Invite) {
            out.push(format!(
                "{at}: auto_create makes no account while registration.mode = \"{}\" (the \
                 mode refuses every first sign-in that is not linked; invite people, or link \
                 their identities from the account page)",
                registration.as_str()
            ));
        }
        let asks_email = p
            .effective_scopes()
            .iter()
            .any(|s| s == "email" || s == "user:email");
        if !p.allowed_domains.is_empty() && !asks_email {
            out.push(format!(
                "{at}: allowed_domains needs an address, but scopes do not ask for one \
                 (\"email\"): every sign-in through it will be refused"
            ));
        }
        for (group, _) in p
            .role_mapping
            .iter()
            .filter(|(_, r)| r.as_str() == admin_role)
        {
            out.push(format!(
                "{at}: role_mapping makes every member of the provider's group {group:?} an \
                 administrator (admin.role = \"{admin_role}\") at each sign-in"
            ));
        }
    }
    out
}
