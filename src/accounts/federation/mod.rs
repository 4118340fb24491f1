//! Signing in through `[[identity_providers]]`: the authorization-code flow with PKCE, its
//! single-use state in the session backend (any instance finishes what another started),
//! and what an external identity (provider, `sub`) means for local accounts.
//!
//! - [`Accounts::begin_federated`]: the provider's authorization URL; `state`, `nonce`, the
//!   PKCE verifier, `return_to` and a hash of the browser's binding cookie are stashed for
//!   [`FLOW_TTL`] under the state's hash;
//! - [`Accounts::finish_federated`]: the stash taken (once, on any instance), the browser
//!   compared, the provider's error shown or the code exchanged and the identity checked
//!   (`oidc.rs`), then the account found, linked or made, and an ordinary session opened.
//!
//! An identity reaches an existing local account only through a link made from the signed-in
//! account page, or — with `link_by_verified_email` — when provider and account both call the
//! address verified. Never by an address alone.

mod claims;
mod discovery;
mod github;
pub mod http;
mod oidc;
mod probe;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Accounts, Client, StepUp, Tokens};
use crate::auth::secrets::{random_token, sha256_hex};
use crate::config::{Config, IdentityProviderConfig, ProviderKind, Refusal};
use crate::domain::{Email, UserId};
use crate::session::{PasskeyUse, SessionId};
use crate::store::{
    Actor, AuditKind, AuditOutcome, LinkedIdentity, NewAuditEvent, NewLinkedIdentity, NewUser,
    StoreError, User,
};
use crate::telemetry::SECURITY;

pub use oidc::JWKS_REFETCH_FLOOR;
pub use probe::{Probe, probe_discovery};

/// How long a started sign-in may take at the provider: its stash lives this long.
pub const FLOW_TTL: Duration = Duration::from_secs(600);

/// The `amr` values (RFC 8176 §2) that name no factor of their own: where or how risky the
/// sign-in was, or over how many channels.
const NOT_A_FACTOR_AMR: &[&str] = &["geo", "mca", "rba"];

/// Whether `amr` says more than one factor was checked (RFC 8176 §2): `mfa` itself, or two
/// registered values that name different factors (`pwd` and `otp`). One method alone — an
/// SMS code, a face, a hardware key — is one factor, however strong.
fn is_multi_factor(amr: &[String]) -> bool {
    if amr.iter().any(|m| m == "mfa") {
        return true;
    }
    let mut factors = amr
        .iter()
        .map(String::as_str)
        .filter(|m| RFC_8176_AMR.contains(m) && !NOT_A_FACTOR_AMR.contains(m))
        .collect::<Vec<_>>();
    factors.sort_unstable();
    factors.dedup();
    factors.len() >= 2
}

/// Every `amr` value RFC 8176 registers: the audit trail notes these and no other text.
const RFC_8176_AMR: &[&str] = &[
    "face", "fpt", "geo", "hwk", "iris", "kba", "mca", "mfa", "otp", "pin", "pop", "pwd", "rba",
    "retina", "sc", "sms", "swk", "tel", "user", "vbm", "wia",
];

/// The most characters of a provider's subject the audit trail notes.
const MAX_NOTED_SUBJECT_CHARS: usize = 100;

/// Why a federated sign-in did not happen; the portal shows each as a page.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// No provider has that id (404).
    #[error("no such identity provider")]
    UnknownProvider,
    /// The provider could not be reached (transport, timeout, an error status) (502).
    #[error("the identity provider is unavailable")]
    Unavailable,
    /// The provider was reached but its answer is refused: a discovery document or a token
    /// response that does not parse (a claim of an impossible type), an endpoint that is not
    /// https, a `sub` outside OpenID Connect Core §2 (502).
    #[error("the identity provider's answer was not valid")]
    InvalidAnswer,
    /// The provider answered with an OAuth error (`error`, `error_description`): shown to
    /// the user as text, escaped (400).
    #[error("the identity provider refused: {error}")]
    ProviderRefused {
        /// The `error` code as sent.
        error: String,
        /// The `error_description` as sent, if any.
        description: Option<String>,
    },
    /// The callback matches no flow started by this browser: unknown, expired, replayed,
    /// from another browser or for another provider (400).
    #[error("the sign-in could not be matched to one this browser started")]
    InvalidCallback,
    /// The provider's answer failed a check; the label names which (`iss`, `aud`, …) (401).
    #[error("the identity provider's answer failed the {0} check")]
    InvalidToken(&'static str),
    /// The identity is outside `allowed_domains` or `allowed_groups` (403).
    #[error("this identity is not allowed here")]
    NotAllowed,
    /// No account is linked, none may be made (`auto_create` off), and none joins by
    /// address (403).
    #[error("no account is linked to this identity")]
    NoAccount,
    /// An account would be made but the address has one already: it must be linked from
    /// its account page. Answered exactly as [`NoAccount`](Self::NoAccount) (403, the same
    /// page), so a sign-in tells nobody which addresses have accounts; only the audit trail
    /// tells them apart.
    #[error("an account with this address exists")]
    AddressTaken,
    /// The provider asserted no address, and an account cannot be made without one (403).
    #[error("the identity provider gave no email address")]
    NoAddress,
    /// A first sign-in with `auto_create`, and an address the provider does not call
    /// verified: no account is made under it (403).
    #[error("the identity provider did not verify the email address")]
    UnverifiedAddress,
    /// Linking asked for an account whose own address is not proven yet (403).
    #[error("the account's address is not proven")]
    AccountUnproven,
    /// `[registration]` turns the address away (403).
    #[error("{0}")]
    Registration(Refusal),
    /// The identity is linked to another account already (409).
    #[error("this identity is linked to another account")]
    LinkedElsewhere,
    /// The identity is not linked to this account (404).
    #[error("no such linked identity")]
    NotLinked,
    /// A link finished after the session that started it ended (signed out, ended from
    /// another device or by an administrator) or for another account: nothing linked (403).
    #[error("the session that started the link has ended")]
    LinkSessionEnded,
    /// The account is deactivated, or a backend failed.
    #[error("the account core refused: {0:?}")]
    Account(super::AccountError),
}

/// An error about a provider's answer as the log may hold it: every quoted value (`"…"`)
/// and every back-quoted one that is no field name (`` `12345` ``) replaced by `…`, at
/// most 200 characters. Parsers quote what they were sent, and a provider (or whoever
/// stands in for one) chooses that text: a token in the wrong field would reach the logs.
pub(super) fn loggable(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let mut out = String::with_capacity(text.len().min(256));
    let mut rest = text.as_str();
    while let Some(at) = rest.find(['"', '`']) {
        let quote = rest[at..].chars().next().unwrap_or('"');
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        // A quote escaped inside the value (`\"`) does not end it.
        let end = after
            .char_indices()
            .find(|&(i, c)| c == quote && !after[..i].ends_with('\\'))
            .map(|(i, _)| i);
        let Some(end) = end else {
            out.push(quote);
            out.push('…');
            rest = "";
            break;
        };
        let inner = &after[..end];
        let field_name = quote == '`'
            && inner.len() <= 40
            && inner.starts_with(|c: char| c.is_ascii_lowercase())
            && inner
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        out.push(quote);
        out.push_str(if field_name { inner } else { "…" });
        out.push(quote);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if out.chars().count() > 200 {
        out = out.chars().take(200).collect::<String>() + "…";
    }
    out
}

impl From<super::AccountError> for FederationError {
    fn from(e: super::AccountError) -> Self {
        Self::Account(e)
    }
}

impl FederationError {
    /// A provider that could not be reached, logged with its id and `what` (never a URL's
    /// query, a token or a code).
    pub(super) fn unavailable(provider: &str, what: &str, e: &dyn std::fmt::Display) -> Self {
        let error = loggable(e);
        tracing::warn!(
            provider,
            what,
            error,
            "an identity provider could not be reached"
        );
        Self::Unavailable
    }

    /// A provider whose answer is refused, logged with its id, `what` and why.
    pub(super) fn invalid_answer(provider: &str, what: &str, e: &dyn std::fmt::Display) -> Self {
        let error = loggable(e);
        tracing::warn!(
            provider,
            what,
            error,
            "an identity provider's answer was not valid"
        );
        Self::InvalidAnswer
    }

    /// The status of the page that explains it.
    pub fn status(&self) -> ::http::StatusCode {
        use ::http::StatusCode as S;
        match self {
            Self::UnknownProvider => S::NOT_FOUND,
            Self::Unavailable | Self::InvalidAnswer => S::BAD_GATEWAY,
            Self::ProviderRefused { .. } | Self::InvalidCallback => S::BAD_REQUEST,
            Self::InvalidToken(_) => S::UNAUTHORIZED,
            Self::NotAllowed
            | Self::NoAccount
            | Self::AddressTaken
            | Self::NoAddress
            | Self::UnverifiedAddress
            | Self::AccountUnproven
            | Self::Registration(_)
            | Self::LinkSessionEnded => S::FORBIDDEN,
            Self::LinkedElsewhere => S::CONFLICT,
            Self::NotLinked => S::NOT_FOUND,
            // The portal answers these as it answers the account core's other refusals.
            Self::Account(_) => S::SERVICE_UNAVAILABLE,
        }
    }

    /// The portal catalogue's key for the sentence that explains it.
    pub fn catalogue_key(&self) -> &'static str {
        match self {
            Self::UnknownProvider => "error_not_found",
            Self::Unavailable => "federation_unavailable",
            Self::InvalidAnswer => "federation_invalid_answer",
            Self::ProviderRefused { .. } => "federation_refused",
            Self::InvalidCallback => "federation_invalid_callback",
            Self::InvalidToken(_) => "federation_invalid_token",
            Self::NotAllowed => "federation_not_allowed",
            // One sentence for both: whether the address has an account is not told.
            Self::NoAccount | Self::AddressTaken => "federation_no_account",
            Self::NoAddress => "federation_no_address",
            Self::UnverifiedAddress => "federation_unverified_address",
            Self::AccountUnproven => "federation_account_unproven",
            Self::Registration(Refusal::InvitationRequired) => "error_invitation_required",
            Self::Registration(_) => "error_registration_closed",
            Self::LinkedElsewhere => "federation_linked_elsewhere",
            Self::NotLinked => "error_generic",
            Self::LinkSessionEnded => "federation_link_session_ended",
            Self::Account(e) => e.catalogue_key(),
        }
    }

    /// How the audit trail records it when a callback ends so, and why (a fixed note: never
    /// the provider's own text, a token or a code); `None` for what is no refusal.
    fn audit_reason(&self) -> Option<(AuditOutcome, String)> {
        use AuditOutcome::{Failure, Refused};
        let (outcome, why) = match self {
            Self::UnknownProvider | Self::NotLinked => return None,
            Self::Unavailable => (Failure, "the provider could not be reached"),
            Self::ProviderRefused { .. } => (Failure, "the provider answered with an error"),
            Self::InvalidAnswer => (Failure, "the provider's answer was not valid"),
            Self::InvalidCallback => (Failure, "the callback matched no flow of this browser"),
            Self::InvalidToken(check) => {
                return Some((Failure, format!("the answer failed the {check} check")));
            }
            Self::NotAllowed => (Refused, "not in allowed_domains or allowed_groups"),
            Self::NoAccount => (Refused, "no account"),
            Self::AddressTaken => (Refused, "the address has an account not linked to it"),
            Self::NoAddress => (Refused, "no address"),
            Self::UnverifiedAddress => (Refused, "the provider did not verify the address"),
            Self::AccountUnproven => (Refused, "the account's address is not proven"),
            Self::Registration(_) => (Refused, "[registration] refused the address"),
            Self::LinkedElsewhere => (Refused, "linked to another account"),
            Self::LinkSessionEnded => (Refused, "the session that started the link has ended"),
            Self::Account(super::AccountError::Deactivated) => (Refused, "account deactivated"),
            Self::Account(_) => return None,
        };
        Some((outcome, why.to_owned()))
    }
}

/// What a provider said about who signed in, after every check of its answer.
#[derive(Debug)]
pub struct Asserted {
    /// The provider's stable subject (`sub`; GitHub: the numeric id).
    pub subject: String,
    /// The address it asserted.
    pub email: Option<String>,
    /// Whether it calls that address verified.
    pub email_verified: bool,
    /// Given name, for a new account.
    pub given_name: String,
    /// Family name, for a new account.
    pub family_name: String,
    /// The ID token as received (compact), for the provider's sign-out; `""` for GitHub.
    pub id_token: String,
    /// `amr` (RFC 8176) as asserted.
    pub amr: Vec<String>,
    /// When the provider says the user last proved who they are (`auth_time`), when it said
    /// so and the time is sane (not in the future beyond the clock skew); `None` otherwise,
    /// and the session counts the callback as the proof.
    pub auth_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The token's other claims (`groups_claim` is read here).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// One configured provider, ready to use.
struct Provider {
    config: IdentityProviderConfig,
    protocol: Option<Protocol>,
}

/// What a provider speaks.
enum Protocol {
    Oidc(Box<oidc::OidcProvider>),
    Github(github::GithubProvider),
}

impl Protocol {
    async fn check_response_issuer(
        &self,
        http: &http::Http,
        iss: Option<&str>,
    ) -> Result<(), FederationError> {
        match self {
            Self::Oidc(p) => p.check_response_issuer(http, iss).await,
            Self::Github(p) => p.check_response_issuer(iss),
        }
    }

    async fn start(&self, http: &http::Http) -> Result<oidc::Started, FederationError> {
        match self {
            Self::Oidc(p) => p.start(http).await,
            Self::Github(p) => p.start(),
        }
    }

    async fn finish(
        &self,
        http: &http::Http,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<Asserted, FederationError> {
        match self {
            Self::Oidc(p) => p.finish(http, code, verifier, nonce).await,
            Self::Github(p) => p.finish(http, code, verifier).await,
        }
    }
}

/// The configured providers and their HTTP client; built with [`Accounts`].
pub struct Federation {
    providers: Vec<Arc<Provider>>,
    http: http::Http,
}

impl Federation {
    /// The providers of `config`. A provider whose secret cannot be read is kept (its
    /// button shows) but answers `Unavailable`, with the reason logged once here.
    pub fn new(config: &Config) -> Self {
        let http = http::Http::new().unwrap_or_else(|e| {
            tracing::error!(error = %e, "identity providers are unavailable");
            http::Http::new().expect("a default HTTP client")
        });
        let providers = config
            .identity_providers
            .iter()
            .map(|p| {
                let redirect = p.redirect_uri(&config.server.public_url, &config.portal.path_prefix);
                let protocol = match (p.kind, p.read_client_secret()) {
                    (ProviderKind::Oidc, Ok(secret)) => {
                        oidc::OidcProvider::new(p, secret.expose(), &redirect)
                            .map(|p| Protocol::Oidc(Box::new(p)))
                            .map_err(|e| tracing::error!(provider = %p.id, error = %e, "identity provider unusable"))
                            .ok()
                    }
                    (_, Err(e)) => {
                        tracing::error!(provider = %p.id, error = %e, "identity provider unusable");
                        None
                    }
                    (ProviderKind::Github, Ok(secret)) => Some(Protocol::Github(
                        github::GithubProvider::new(p, secret.expose(), &redirect),
                    )),
                };
                Arc::new(Provider { config: p.clone(), protocol })
            })
            .collect();
        Self { providers, http }
    }

    fn provider(&self, id: &str) -> Result<Arc<Provider>, FederationError> {
        self.providers
            .iter()
            .find(|p| p.config.id.as_str() == id)
            .cloned()
            .ok_or(FederationError::UnknownProvider)
    }
}

/// What a flow is for: signing in, or linking an identity to the signed-in account.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "intent", content = "link")]
pub enum Intent {
    /// Sign in (or up) with the identity.
    SignIn,
    /// Link the identity to this account (its owner passed a step-up first), from this
    /// session: the link is made only while the session still lives and is the account's.
    Link {
        /// The account.
        user: UserId,
        /// The session the link was started from.
        session: SessionId,
    },
}

/// What a callback has learnt so far, for the audit trail when it ends in a refusal.
#[derive(Default)]
struct Attempt {
    /// The flow's purpose, once its stash is found.
    intent: Option<Intent>,
    /// The provider's subject, once its answer passed every check.
    subject: Option<String>,
    /// The account concerned, once known.
    user: Option<UserId>,
}

/// What a started flow keeps in the session backend under its state's hash.
#[derive(Serialize, Deserialize)]
struct Stashed {
    provider: String,
    browser: String,
    nonce: String,
    verifier: String,
    return_to: Option<String>,
    intent: Intent,
}

/// What the provider sent back to the redirect URI.
#[derive(Clone, Copy, Debug, Default)]
pub struct Callback<'a> {
    /// `state`.
    pub state: Option<&'a str>,
    /// `code`.
    pub code: Option<&'a str>,
    /// `error` (RFC 6749 §4.1.2.1).
    pub error: Option<&'a str>,
    /// `error_description`.
    pub error_description: Option<&'a str>,
    /// `iss` (RFC 9207): the issuer that answered.
    pub iss: Option<&'a str>,
}

/// A finished flow: a session opened, or an identity linked.
pub enum Finished {
    /// A new session, and where the browser goes next.
    SignedIn {
        /// Its first tokens.
        tokens: Tokens,
        /// The `return_to` kept from the start.
        return_to: Option<String>,
    },
    /// The identity is now linked to the signed-in account.
    Linked {
        /// The provider's name, for the notice.
        provider: String,
    },
}

/// A configured provider as the sign-in page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderButton {
    /// The slug, in paths.
    pub id: String,
    /// The label.
    pub name: String,
}

fn stash_key(state: &str) -> String {
    format!("federation:{}", sha256_hex(state))
}

/// The address a provider asserted, when it is one Portcullis can take as written: no
/// surrounding space, an ASCII local part (mail servers tell `ｖictim` from `victim`; a
/// compatibility fold here would hand one person's account to another), and no other
/// change from parsing than letter case (and an A-label domain read as its U-label).
/// Anything else is no address.
pub(super) fn provider_email(raw: &str) -> Option<Email> {
    let (local, domain) = raw.rsplit_once('@')?;
    if raw.trim() != raw || !local.is_ascii() {
        return None;
    }
    let email = Email::parse(raw).ok()?;
    let (parsed_local, parsed_domain) = email.as_str().rsplit_once('@')?;
    let same_domain = parsed_domain == domain.to_lowercase()
        || (domain.is_ascii() && domain.to_ascii_lowercase().contains("xn--"));
    (parsed_local == local.to_ascii_lowercase() && same_domain).then_some(email)
}

impl Accounts {
    /// The configured providers, in config order, for the sign-in page's buttons.
    pub fn identity_providers(&self) -> Vec<ProviderButton> {
        self.federation
            .providers
            .iter()
            .map(|p| ProviderButton {
                id: p.config.id.to_string(),
                name: p.config.name.clone(),
            })
            .collect()
    }

    /// Starts a flow at `provider` for the browser whose binding cookie is `browser` (a
    /// random value the portal keeps in an HttpOnly cookie): answers the URL to send the
    /// browser to. `return_to` (already checked by the caller) comes back at the end.
    pub async fn begin_federated(
        &self,
        provider: &str,
        browser: &str,
        return_to: Option<String>,
        intent: Intent,
    ) -> Result<String, FederationError> {
        let provider = self.federation.provider(provider)?;
        let started = {
            let (this, http) = (Arc::clone(&provider), self.federation.http.clone());
            self.backend
                .run(async move {
                    match &this.protocol {
                        Some(p) => p.start(&http).await,
                        None => Err(FederationError::Unavailable),
                    }
                })
                .await
                .map_err(|e| {
                    FederationError::unavailable(provider.config.id.as_str(), "start", &e)
                })??
        };
        let stashed = Stashed {
            provider: provider.config.id.to_string(),
            browser: sha256_hex(browser),
            nonce: started.nonce,
            verifier: started.verifier,
            return_to,
            intent,
        };
        let value = serde_json::to_string(&stashed)
            .map_err(|e| super::AccountError::internal("stashing a federated flow", &e))?;
        self.sessions
            .stash(&stash_key(&started.state), &value, FLOW_TTL)
            .await
            .map_err(super::AccountError::from)?;
        Ok(started.url)
    }

    /// Finishes a flow at the redirect URI of `provider`: the stash is taken (so a state
    /// works once, on any instance), the browser and provider compared, then the provider's
    /// error shown or its answer checked, and the account signed in or the identity linked.
    /// Every refusal after the provider is known is written to the audit trail.
    pub async fn finish_federated(
        &self,
        provider: &str,
        callback: Callback<'_>,
        browser: Option<&str>,
        client: &Client<'_>,
    ) -> Result<Finished, FederationError> {
        let provider = self.federation.provider(provider)?;
        let mut attempt = Attempt::default();
        let result = self
            .finish_flow(&provider, callback, browser, client, &mut attempt)
            .await;
        if let Err(e) = &result {
            self.audit_refusal(&provider.config, &attempt, e, client);
        }
        result
    }

    /// [`Accounts::finish_federated`] for a known provider, noting in `attempt` what it learns.
    async fn finish_flow(
        &self,
        provider: &Arc<Provider>,
        callback: Callback<'_>,
        browser: Option<&str>,
        client: &Client<'_>,
        attempt: &mut Attempt,
    ) -> Result<Finished, FederationError> {
        let stashed = self.take_flow(provider, callback, browser, client).await?;
        attempt.intent = Some(stashed.intent);
        self.check_response_issuer(provider, callback.iss).await?;
        if let Some(error) = callback.error {
            return Err(FederationError::ProviderRefused {
                error: super::fields::shown_text(error, 200),
                description: callback
                    .error_description
                    .map(|d| super::fields::shown_text(d, 500)),
            });
        }
        let code = callback.code.ok_or(FederationError::InvalidCallback)?;
        let asserted = self.exchange(provider, code, &stashed).await?;
        attempt.subject = Some(asserted.subject.clone());
        self.admit_identity(&provider.config, &asserted)?;
        match stashed.intent {
            Intent::SignIn => {
                let user = self
                    .account_for(&provider.config, &asserted, client)
                    .await?;
                attempt.user = Some(user.id);
                let tokens = self
                    .open_federated_session(&provider.config, &user, &asserted, client)
                    .await?;
                self.remember_for_sign_out(&provider.config, &asserted, &tokens)
                    .await;
                Ok(Finished::SignedIn {
                    tokens,
                    return_to: stashed.return_to,
                })
            }
            Intent::Link { user, session } => {
                attempt.user = Some(user);
                self.link_session_lives(user, session).await?;
                let how = "from the account page";
                self.link(&provider.config, user, &asserted, how, client)
                    .await?;
                Ok(Finished::Linked {
                    provider: provider.config.name.clone(),
                })
            }
        }
    }

    /// The stash of the flow `callback` finishes, taken (once, on any instance); refused
    /// unless this browser started it at this provider.
    async fn take_flow(
        &self,
        provider: &Provider,
        callback: Callback<'_>,
        browser: Option<&str>,
        client: &Client<'_>,
    ) -> Result<Stashed, FederationError> {
        let state = callback.state.ok_or(FederationError::InvalidCallback)?;
        let taken = self
            .sessions
            .take_stash(&stash_key(state))
            .await
            .map_err(super::AccountError::from)?;
        let stashed: Stashed = taken
            .and_then(|v| serde_json::from_str(&v).ok())
            .ok_or(FederationError::InvalidCallback)?;
        let same_browser = browser.is_some_and(|b| {
            subtle::ConstantTimeEq::ct_eq(sha256_hex(b).as_bytes(), stashed.browser.as_bytes())
                .into()
        });
        if stashed.provider != provider.config.id.as_str() || !same_browser {
            tracing::warn!(target: SECURITY, event = "federated_callback_refused", provider = %provider.config.id, client_ip = %client.ip);
            return Err(FederationError::InvalidCallback);
        }
        Ok(stashed)
    }

    /// `LinkSessionEnded` unless `session`, which started linking, still lives and is `user`'s:
    /// signing out (everywhere), an administrator's revocation or an eviction ends the link
    /// it started, even one already at the provider.
    async fn link_session_lives(
        &self,
        user: UserId,
        session: SessionId,
    ) -> Result<(), FederationError> {
        let live = self
            .sessions
            .get(&session)
            .await
            .map_err(super::AccountError::from)?;
        match live {
            Some(live) if live.user_id == user => Ok(()),
            _ => {
                tracing::warn!(target: SECURITY, event = "identity_link_refused", user_id = %user, reason = "session_ended");
                Err(FederationError::LinkSessionEnded)
            }
        }
    }

    /// Writes a refused callback to the audit trail: the provider, the subject once its
    /// answer was checked, the account when one is concerned, and why.
    fn audit_refusal(
        &self,
        provider: &IdentityProviderConfig,
        attempt: &Attempt,
        e: &FederationError,
        client: &Client<'_>,
    ) {
        let Some((outcome, why)) = e.audit_reason() else {
            return;
        };
        let (kind, actor) = match attempt.intent {
            Some(Intent::Link { user, .. }) => (AuditKind::IdentityLink, Actor::User(user)),
            _ => (AuditKind::SignIn, Actor::Anonymous),
        };
        let who = identity_note(provider, attempt.subject.as_deref());
        let event = NewAuditEvent::new(kind, actor, None)
            .outcome(outcome)
            .from_ip(client.ip)
            .detail(format!("{who}: {why}"));
        match attempt.user {
            Some(user) => self.audit_about(user, event),
            None => self.audit(event),
        }
    }

    /// RFC 9207's `iss` of the response, before anything in it is used (its error shown, its
    /// code exchanged).
    async fn check_response_issuer(
        &self,
        provider: &Arc<Provider>,
        iss: Option<&str>,
    ) -> Result<(), FederationError> {
        let (provider, http) = (Arc::clone(provider), self.federation.http.clone());
        let iss = iss.map(str::to_owned);
        let id = provider.config.id.to_string();
        self.backend
            .run(async move {
                match &provider.protocol {
                    Some(p) => p.check_response_issuer(&http, iss.as_deref()).await,
                    None => Err(FederationError::Unavailable),
                }
            })
            .await
            .map_err(|e| FederationError::unavailable(&id, "callback", &e))?
    }

    /// The code exchange and the identity's checks, on the backend runtime (which owns the
    /// HTTP client's connections).
    async fn exchange(
        &self,
        provider: &Arc<Provider>,
        code: &str,
        stashed: &Stashed,
    ) -> Result<Asserted, FederationError> {
        let (provider, http) = (Arc::clone(provider), self.federation.http.clone());
        let id = provider.config.id.to_string();
        let (code, verifier, nonce) = (
            code.to_owned(),
            stashed.verifier.clone(),
            stashed.nonce.clone(),
        );
        self.backend
            .run(async move {
                match &provider.protocol {
                    Some(p) => p.finish(&http, &code, &verifier, &nonce).await,
                    None => Err(FederationError::Unavailable),
                }
            })
            .await
            .map_err(|e| FederationError::unavailable(&id, "exchange", &e))?
    }

    /// `allowed_domains` (on a verified address) and `allowed_groups`.
    fn admit_identity(
        &self,
        provider: &IdentityProviderConfig,
        asserted: &Asserted,
    ) -> Result<(), FederationError> {
        if !provider.allowed_domains.is_empty() {
            let domain_ok = asserted.email_verified
                && asserted
                    .email
                    .as_deref()
                    .and_then(provider_email)
                    .is_some_and(|e| provider.allowed_domains.iter().any(|p| p.matches_email(&e)));
            if !domain_ok {
                return Err(FederationError::NotAllowed);
            }
        }
        if !provider.allowed_groups.is_empty() {
            let groups = groups_of(provider, asserted);
            if !provider.allowed_groups.iter().any(|g| groups.contains(g)) {
                return Err(FederationError::NotAllowed);
            }
        }
        Ok(())
    }

    /// The account the identity signs in to: the linked one; else, with
    /// `link_by_verified_email`, the account of the same address when both sides call it
    /// verified; else, with `auto_create`, a new one under `[registration]`.
    ///
    /// A sign-in through a linked identity never marks its account verified, whatever
    /// `email_verified` now says: an account made unproven is proven only by mail (the
    /// verification link or a reset). Were the identity able to verify it, whoever made it
    /// with someone else's address would do so before the owner resets, and the reset —
    /// which removes a first registrant's ways in only when it proves an unproven address —
    /// would keep them.
    async fn account_for(
        &self,
        provider: &IdentityProviderConfig,
        asserted: &Asserted,
        client: &Client<'_>,
    ) -> Result<User, FederationError> {
        let id = provider.id.as_str();
        let email_text = asserted.email.clone().unwrap_or_default();
        if let Some(user) = self
            .store
            .find_linked_user(id, &asserted.subject)
            .await
            .map_err(super::AccountError::from)?
        {
            let user = self
                .store
                .find_by_id(user)
                .await
                .map_err(super::AccountError::from)?
                .ok_or(FederationError::NoAccount)?;
            self.store
                .touch_linked_identity(id, &asserted.subject, &email_text)
                .await
                .map_err(super::AccountError::from)?;
            return Ok(user);
        }
        // A first sign-in makes an account only for an address the provider vouches for:
        // whoever can make a provider assert someone else's address must not hold an account
        // under it (the pre-registration takeover; oauth2-proxy refuses the same by default).
        // Asked before any lookup, so the answer tells nothing of the address's account.
        if provider.auto_create && asserted.email.is_some() && !asserted.email_verified {
            return Err(FederationError::UnverifiedAddress);
        }
        let email = asserted.email.as_deref().and_then(provider_email);
        let existing = match &email {
            Some(e) => self
                .store
                .find_by_email(e)
                .await
                .map_err(super::AccountError::from)?,
            None => None,
        };
        if let Some(user) = existing {
            // Only an address proven here counts: an account that some provider made (and
            // vouched for) is no proof of who owns the address for another one.
            let made_elsewhere = !self
                .store
                .linked_identities(user.id)
                .await
                .map_err(super::AccountError::from)?
                .is_empty();
            if provider.link_by_verified_email
                && asserted.email_verified
                && user.is_verified
                && !made_elsewhere
            {
                self.link(provider, user.id, asserted, "by verified address", client)
                    .await?;
                return Ok(user);
            }
            return Err(if provider.auto_create {
                FederationError::AddressTaken
            } else {
                FederationError::NoAccount
            });
        }
        if !provider.auto_create {
            return Err(FederationError::NoAccount);
        }
        let email = email.ok_or(FederationError::NoAddress)?;
        self.config
            .registration
            .admits(&email)
            .map_err(FederationError::Registration)?;
        self.create_federated(provider, email, asserted, client)
            .await
    }

    /// A new account for the identity, its address verified only when the provider says so.
    async fn create_federated(
        &self,
        provider: &IdentityProviderConfig,
        email: Email,
        asserted: &Asserted,
        client: &Client<'_>,
    ) -> Result<User, FederationError> {
        let hash = self
            .hasher
            .hash_of_unknown_secret()
            .await
            .map_err(super::AccountError::from)?;
        let user_id = UserId::random();
        let new = NewUser {
            email,
            password_hash: hash,
            first_name: short(&asserted.given_name),
            last_name: short(&asserted.family_name),
            language: client.language.to_owned(),
        };
        let identity = NewLinkedIdentity {
            user_id,
            provider: provider.id.to_string(),
            subject: asserted.subject.clone(),
            email: asserted.email.clone().unwrap_or_default(),
        };
        let user = match self
            .store
            .create_linked_user(new, asserted.email_verified, &identity)
            .await
        {
            Ok(user) => user,
            Err(StoreError::DuplicateEmail) => return Err(FederationError::AddressTaken),
            Err(e) => return Err(super::AccountError::from(e).into()),
        };
        let how = identity_note(provider, Some(&asserted.subject));
        self.audit_own(
            AuditKind::Registration,
            &user,
            Some(client),
            AuditOutcome::Success,
            &format!("through {how}"),
        );
        Ok(user)
    }

    /// Links the identity to `user` (`how`: the audit trail's note on the way it came);
    /// `LinkedElsewhere` when another account has it.
    async fn link(
        &self,
        provider: &IdentityProviderConfig,
        user: UserId,
        asserted: &Asserted,
        how: &str,
        client: &Client<'_>,
    ) -> Result<(), FederationError> {
        let identity = NewLinkedIdentity {
            user_id: user,
            provider: provider.id.to_string(),
            subject: asserted.subject.clone(),
            email: asserted.email.clone().unwrap_or_default(),
        };
        if self
            .store
            .link_identity(&identity)
            .await
            .map_err(super::AccountError::from)?
        {
            tracing::info!(target: SECURITY, event = "identity_linked", user_id = %user, provider = %provider.id);
            let who = identity_note(provider, Some(&asserted.subject));
            let event = NewAuditEvent::new(AuditKind::IdentityLink, Actor::User(user), None)
                .from_ip(client.ip)
                .detail(format!("{who}, {how}"));
            self.audit_about(user, event);
            return Ok(());
        }
        match self
            .store
            .find_linked_user(provider.id.as_str(), &asserted.subject)
            .await
            .map_err(super::AccountError::from)?
        {
            Some(owner) if owner == user => Ok(()),
            _ => Err(FederationError::LinkedElsewhere),
        }
    }

    /// Roles from `role_mapping` refreshed, then an ordinary session: two factors only when
    /// the provider says so and `trust_provider_mfa` takes its word.
    async fn open_federated_session(
        &self,
        provider: &IdentityProviderConfig,
        user: &User,
        asserted: &Asserted,
        client: &Client<'_>,
    ) -> Result<Tokens, FederationError> {
        if !user.is_active {
            tracing::warn!(target: SECURITY, event = "login_refused_deactivated", user_id = %user.id, client_ip = %client.ip);
            return Err(super::AccountError::Deactivated.into());
        }
        self.refresh_mapped_roles(provider, user, asserted).await?;
        let provider_mfa = is_multi_factor(&asserted.amr);
        // Only the values RFC 8176 registers are noted: never whatever else a provider sent.
        let amr: Vec<&str> = asserted
            .amr
            .iter()
            .map(String::as_str)
            .filter(|m| RFC_8176_AMR.contains(m))
            .collect();
        let how = format!(
            "{}, amr {}",
            identity_note(provider, Some(&asserted.subject)),
            if amr.is_empty() {
                "none".to_owned()
            } else {
                amr.join(" ")
            }
        );
        let proven = super::Proven {
            two_factor: provider.trust_provider_mfa && provider_mfa,
            passkey: PasskeyUse::None,
            provider: Some(provider.id.as_str()),
            auth_time: asserted.auth_time,
            how: &how,
        };
        Ok(self.open_session_as(user, proven, false, client).await?)
    }

    /// Grants the roles `role_mapping` gives the asserted groups that the account lacks
    /// (recorded as mapped through this identity) and takes back the roles recorded so that
    /// they no longer give; roles granted otherwise are left alone (one store transaction,
    /// [`UserStore::apply_role_mapping`](crate::store::UserStore::apply_role_mapping)).
    /// Each grant and revocation is audited (`role_grant`, `role_revoke`) as the signed-in
    /// account's, its detail naming the role and the provider.
    async fn refresh_mapped_roles(
        &self,
        provider: &IdentityProviderConfig,
        user: &User,
        asserted: &Asserted,
    ) -> Result<(), FederationError> {
        let groups = groups_of(provider, asserted);
        let given: Vec<String> = provider
            .role_mapping
            .iter()
            .filter(|(group, _)| groups.contains(*group))
            .map(|(_, role)| role.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let changes = self
            .store
            .apply_role_mapping(user.id, provider.id.as_str(), &asserted.subject, &given)
            .await
            .map_err(super::AccountError::from)?;
        if !changes.changed() {
            return Ok(());
        }
        self.access.forget_user_record(user.id);
        let who = identity_note(provider, Some(&asserted.subject));
        let granted = changes.granted.iter().map(|r| (AuditKind::RoleGrant, r));
        let revoked = changes.revoked.iter().map(|r| (AuditKind::RoleRevoke, r));
        for (kind, role) in granted.chain(revoked) {
            tracing::info!(target: SECURITY, event = kind.as_str(), user_id = %user.id, provider = %provider.id, role = %role);
            let event = NewAuditEvent::new(kind, Actor::User(user.id), None)
                .detail(format!("{role}, by role_mapping of {who}"));
            self.audit_about(user.id, event);
        }
        Ok(())
    }
}

/// What a session opened through a provider with `end_session` keeps for its sign-out.
#[derive(Serialize, Deserialize)]
struct SignOutHint {
    provider: String,
    id_token: String,
}

fn sign_out_key(session: &str) -> String {
    format!("federation-signout:{session}")
}

impl Accounts {
    /// With `end_session`: keeps the provider and the ID token for the session's sign-out,
    /// as long as the session may live. A failure is logged: the sign-in stands.
    async fn remember_for_sign_out(
        &self,
        provider: &IdentityProviderConfig,
        asserted: &Asserted,
        tokens: &Tokens,
    ) {
        if !provider.end_session || asserted.id_token.is_empty() {
            return;
        }
        let Some((session, _)) = crate::auth::secrets::parse_refresh_token(&tokens.refresh_token)
        else {
            return;
        };
        let hint = SignOutHint {
            provider: provider.id.to_string(),
            id_token: asserted.id_token.clone(),
        };
        let Ok(value) = serde_json::to_string(&hint) else {
            return;
        };
        let ttl = Duration::from_secs(tokens.refresh_expires_in.max(1));
        if let Err(e) = self
            .sessions
            .stash(&sign_out_key(&session.to_string()), &value, ttl)
            .await
        {
            tracing::warn!(provider = %provider.id, error = %e, "could not keep a provider's sign-out hint");
        }
    }

    /// Where to send a browser that has just signed out of `session`, when the session was
    /// opened through a provider with `end_session` and that provider has an
    /// `end_session_endpoint`: its sign-out URL, coming back to `post_logout`.
    pub async fn provider_sign_out_url(
        &self,
        session: &crate::session::SessionId,
        post_logout: &str,
    ) -> Option<String> {
        let stashed = self
            .sessions
            .take_stash(&sign_out_key(&session.to_string()))
            .await
            .ok()??;
        let hint: SignOutHint = serde_json::from_str(&stashed).ok()?;
        let provider = self.federation.provider(&hint.provider).ok()?;
        let http = self.federation.http.clone();
        let post_logout = post_logout.to_owned();
        self.backend
            .run(async move {
                match &provider.protocol {
                    Some(Protocol::Oidc(p)) => {
                        p.end_session_url(&http, &hint.id_token, &post_logout).await
                    }
                    _ => None,
                }
            })
            .await
            .ok()
            .flatten()
    }
}

/// A linked identity as the account page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct LinkedView {
    /// The provider's id.
    pub provider: String,
    /// The provider's name (its id when it is no longer configured).
    pub name: String,
    /// The provider's subject.
    pub subject: String,
    /// The address it last asserted.
    pub email: String,
    /// When it was linked.
    pub linked_at: chrono::DateTime<chrono::Utc>,
}

impl Accounts {
    /// The identities linked to `user`, with their providers' names.
    pub async fn linked_identities(
        &self,
        user: &User,
    ) -> Result<Vec<LinkedView>, super::AccountError> {
        let linked = self.store.linked_identities(user.id).await?;
        Ok(linked
            .into_iter()
            .map(|l: LinkedIdentity| LinkedView {
                name: self
                    .federation
                    .providers
                    .iter()
                    .find(|p| p.config.id.as_str() == l.provider)
                    .map_or_else(|| l.provider.clone(), |p| p.config.name.clone()),
                provider: l.provider,
                subject: l.subject,
                email: l.email,
                linked_at: l.created_at,
            })
            .collect())
    }

    /// Starts linking an identity at `provider` to `user`, from their `session`, after the
    /// step-up (the current password, and a code while TOTP is on): the URL to send the
    /// browser to. The link is made only if `session` still lives when the provider answers.
    pub async fn begin_link(
        &self,
        user: &User,
        session: SessionId,
        provider: &str,
        proof: StepUp<'_>,
        browser: &str,
        client: &Client<'_>,
    ) -> Result<String, FederationError> {
        self.federation.provider(provider)?;
        // An identity joins only an account whose address was proven here: one registered
        // under someone else's address must not collect a way in its owner cannot see.
        if !user.is_verified {
            return Err(FederationError::AccountUnproven);
        }
        self.step_up_with_code(user, proof, client).await?;
        let intent = Intent::Link {
            user: user.id,
            session,
        };
        self.begin_federated(provider, browser, None, intent).await
    }

    /// Detaches one of `user`'s linked identities, after the step-up. The step-up's
    /// password is itself a way in, so an account never loses its last one here.
    pub async fn unlink_identity(
        &self,
        user: &User,
        provider: &str,
        subject: &str,
        proof: StepUp<'_>,
        client: &Client<'_>,
    ) -> Result<(), FederationError> {
        self.step_up_with_code(user, proof, client).await?;
        let removed = self
            .remove_identity(user, provider, subject, Actor::User(user.id), client)
            .await?;
        if !removed {
            return Err(FederationError::NotLinked);
        }
        Ok(())
    }

    /// Detaches the identity (`provider`, `subject`) from `user`, by `actor` (the owner, or
    /// an administrator), audited as `identity_unlink`; `false` when it was not linked to
    /// `user`. No way in is checked here: the owner has just proven their password, and an
    /// administrator may remove the last identity (the account keeps its password and the
    /// reset by mail).
    pub(crate) async fn remove_identity(
        &self,
        user: &User,
        provider: &str,
        subject: &str,
        actor: Actor,
        client: &Client<'_>,
    ) -> Result<bool, super::AccountError> {
        if !self
            .store
            .unlink_identity(user.id, provider, subject)
            .await?
        {
            return Ok(false);
        }
        tracing::info!(target: SECURITY, event = "identity_unlinked", user_id = %user.id, provider, by = actor.kind());
        let who = match self.federation.provider(provider) {
            Ok(p) => identity_note(&p.config, Some(subject)),
            Err(_) => format!("provider {}, subject {}", noted(provider), noted(subject)),
        };
        let event = NewAuditEvent::new(
            AuditKind::IdentityUnlink,
            actor,
            Some((user.id, &user.email)),
        );
        self.audit(event.from_ip(client.ip).detail(who));
        Ok(true)
    }
}

/// `provider ID, subject SUB` for the audit trail (the subject as [`noted`]).
fn identity_note(provider: &IdentityProviderConfig, subject: Option<&str>) -> String {
    match subject {
        Some(subject) => format!("provider {}, subject {}", provider.id, noted(subject)),
        None => format!("provider {}", provider.id),
    }
}

/// A provider's text as the audit trail notes it: no control characters, cut short.
fn noted(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_NOTED_SUBJECT_CHARS)
        .collect()
}

/// The groups in `groups_claim`: a list of strings (or one string).
fn groups_of(provider: &IdentityProviderConfig, asserted: &Asserted) -> BTreeSet<String> {
    match asserted.claims.get(&provider.groups_claim) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(serde_json::Value::String(one)) => BTreeSet::from([one.clone()]),
        _ => BTreeSet::new(),
    }
}

/// A name as a provider sent it, cut to what the profile takes.
fn short(name: &str) -> String {
    super::fields::shown_text(name, 100)
}

/// A random value for a browser's binding cookie.
pub fn new_browser_binding() -> String {
    random_token()
}

#[cfg(test)]
mod tests {
    use super::{loggable, provider_email};

    /// A provider's address is taken only as written: compatibility forms, space and
    /// non-ASCII local parts are no address (they would fold onto someone else's).
    #[test]
    fn only_mfa_or_two_different_factors_count_as_two() {
        let cases: [(&[&str], bool); 12] = [
            (&["mfa"], true),
            (&["pwd", "otp"], true),
            (&["pwd", "hwk"], true),
            (&["hwk", "face"], true),
            (&["hwk"], false),
            (&["otp"], false),
            (&["sms"], false),
            (&["face"], false),
            (&["pwd", "pwd"], false),
            (&["pwd", "mca"], false),
            (&["pwd", "MFA"], false),
            (&["pwd", "custom"], false),
        ];
        for (amr, multi) in cases {
            let amr: Vec<String> = amr.iter().map(|m| (*m).to_owned()).collect();
            assert_eq!(super::is_multi_factor(&amr), multi, "{amr:?}");
        }
    }

    #[test]
    fn what_a_provider_sent_stays_out_of_the_log() {
        let cases = [
            (
                r#"expires_in: invalid type: string "SECRETEXP", expected u64"#,
                r#"expires_in: invalid type: string "…", expected u64"#,
            ),
            (
                "access_token: invalid type: integer `12345`, expected a string",
                "access_token: invalid type: integer `…`, expected a string",
            ),
            (
                "missing field `access_token`",
                "missing field `access_token`",
            ),
            (r#"unterminated "eyJhbGciOi"#, r#"unterminated "…"#),
            ("unknown variant `Bearer x`", "unknown variant `…`"),
            (
                r#"Error("invalid type: string \"mfa\", expected a sequence", line: 1)"#,
                r#"Error("…", line: 1)"#,
            ),
        ];
        for (raw, logged) in cases {
            assert_eq!(loggable(&raw), logged, "{raw}");
        }
        let long = "x".repeat(500);
        assert_eq!(loggable(&long).chars().count(), 201);
    }

    #[test]
    fn a_provider_address_is_taken_only_as_written() {
        let table = [
            ("victim@example.com", Some("victim@example.com")),
            ("Victim@Example.COM", Some("victim@example.com")),
            ("ada+tag@example.com", Some("ada+tag@example.com")),
            ("ada@xn--mnchen-3ya.de", Some("ada@münchen.de")),
            ("ada@münchen.de", Some("ada@münchen.de")),
            ("\u{FF56}ictim@example.com", None),
            ("\u{24E5}ictim@example.com", None),
            ("victim@\u{FF45}xample.com", None),
            ("\u{212A}arol@example.com", None),
            (" victim@example.com", None),
            ("victim@example.com ", None),
            ("vïctim@example.com", None),
            ("victim", None),
            ("", None),
        ];
        for (raw, want) in table {
            let got = provider_email(raw).map(|e| e.as_str().to_owned());
            assert_eq!(got.as_deref(), want, "{raw:?}");
        }
    }
}
