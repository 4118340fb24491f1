//! Who may pass: one home for access control, used by both ways in — the proxy
//! (`gateway/`) and the account API (`api/`, forward-auth included).
//!
//! - [`credentials`]: where a token comes from (Bearer, cookie; the CSRF rule; one value per
//!   cookie name or none), the account API's uncached check, the 401 both ways in answer;
//! - [`cookies`]: the gateway's cookie names and scopes, and clearing planted copies;
//! - [`gatekeeper`]: the cached per-request check of proxied traffic and its caches;
//! - [`policy`]: route policies, roles and the verified-email rule → a [`policy::Verdict`];
//! - [`refusal`]: why a request was refused ([`refusal::Refusal`]), and whether it is a
//!   browser's navigation ([`refusal::is_navigation`]), which gets a page rather than JSON;
//! - [`identity`]: the identity header names, pre-normalised for the hot path;
//! - [`Access`]: the above bound to the key ring and the stores, and the only way to end
//!   sessions ([`Access::revoke_session`], [`Access::revoke_user`]): the store first, then
//!   the caches, so a revocation holds at once.
//!
//! Invariants: no Pingora type and no `App` here; the cached check allocates nothing on a
//! hit (`Principal` is two `Arc`s).

pub mod cookies;
pub mod credentials;
pub mod gatekeeper;
pub mod identity;
pub mod policy;
pub mod refusal;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use crate::auth::jwt::{AccessClaims, KeyRing};
use crate::backend::Backend;
use crate::domain::UserId;
use crate::session::{SessionError, SessionId, SessionStore};
use crate::store::{User, UserStore};
use cookies::CookieRules;
use gatekeeper::{Denial, Gatekeeper, Principal};
use identity::{IdentityHeader, IdentityHeaderNames};

/// Access control bound to this instance's keys and stores.
pub struct Access {
    gatekeeper: Arc<Gatekeeper>,
    keys: Arc<KeyRing>,
    sessions: Arc<dyn SessionStore>,
    users: Arc<dyn UserStore>,
    /// The identity header names (set on forwarded requests, stripped from clients').
    pub identity_headers: IdentityHeaderNames,
    cookies: CookieRules,
}

impl Access {
    /// Binds the checks to `keys` and the stores; `cookies` names the browser's cookies.
    pub fn new(
        keys: Arc<KeyRing>,
        sessions: Arc<dyn SessionStore>,
        users: Arc<dyn UserStore>,
        identity_headers: IdentityHeaderNames,
        cookies: CookieRules,
    ) -> Self {
        Self {
            gatekeeper: Arc::new(Gatekeeper::new()),
            keys,
            sessions,
            users,
            identity_headers,
            cookies,
        }
    }

    /// The same access control under a reloaded configuration: `keys` and the identity
    /// header names are the new ones; the caches, their followers, the stores and the cookie
    /// rules (which only a restart changes) are shared with `self`. A token verified under
    /// the old keys is verified again under the new ones on its next use, so a key no longer
    /// trusted verifies nothing more; assertions signed by a replaced key are forgotten.
    pub fn reconfigured(&self, keys: Arc<KeyRing>, identity_headers: IdentityHeaderNames) -> Self {
        if keys.signing_kid() != self.keys.signing_kid() {
            self.gatekeeper.forget_assertions();
        }
        Self {
            gatekeeper: self.gatekeeper.clone(),
            keys,
            sessions: self.sessions.clone(),
            users: self.users.clone(),
            identity_headers,
            cookies: self.cookies.clone(),
        }
    }

    /// Starts following revocation events and the account change feed on `backend`, the
    /// runtime that owns the stores' sockets.
    pub fn spawn_followers(&self, backend: &Backend) {
        self.gatekeeper.spawn_listener(backend, &*self.sessions);
        self.gatekeeper
            .spawn_change_follower(backend, self.users.clone(), self.sessions.clone());
    }

    /// The names and scopes of the browser's cookies.
    pub fn cookies(&self) -> &CookieRules {
        &self.cookies
    }

    /// The proxy's check of a request: its Bearer token, else its session cookie, through
    /// the caches.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Denial> {
        match credentials::proxied_token(headers, self.cookies.access) {
            Some(token) => self.check(token).await,
            None => Err(Denial::NoCredentials),
        }
    }

    /// When the request carries one of the gateway's cookie names twice
    /// ([`credentials::cookies_ambiguous`]: it has no credentials), the `Set-Cookie` values
    /// that clear every copy a browser can hold for `request_path`; `None` otherwise. The
    /// proxy, forward-auth and the portal all ask here.
    pub fn clear_ambiguous_cookies(
        &self,
        headers: &HeaderMap,
        request_path: Option<&str>,
    ) -> Option<Vec<String>> {
        if !credentials::cookies_ambiguous(headers) {
            return None;
        }
        tracing::info!(target: crate::telemetry::SECURITY, event = "ambiguous_cookies_refused");
        Some(self.cookies.clearing(headers, request_path))
    }

    /// The cached check of one access token.
    pub async fn check(&self, token: &str) -> Result<Principal, Denial> {
        self.gatekeeper
            .check(token, &self.keys, &*self.sessions, &*self.users)
            .await
    }

    /// The identity headers `principal` is sent with, in one place for the proxy and
    /// forward-auth: user id, email, roles (comma-separated), session id and whether the
    /// address is verified, then the signed assertion when `identity_headers.assertion`
    /// names a header. Values are shared, not copied.
    pub fn identity_headers_of<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> impl Iterator<Item = IdentityHeader<'a>> + 'a {
        let names = &self.identity_headers;
        let values = principal.header_values();
        let header = |name, wire, value: &HeaderValue| IdentityHeader {
            name,
            wire,
            value: value.clone(),
        };
        let fixed = [
            header(&names.user_id, &names.wire.user_id, values.user_id),
            header(&names.email, &names.wire.email, values.email),
            header(&names.roles, &names.wire.roles, values.roles),
            header(&names.session_id, &names.wire.session_id, values.session_id),
            header(
                &names.email_verified,
                &names.wire.email_verified,
                values.email_verified,
            ),
        ];
        let assertion = names
            .assertion
            .as_ref()
            .zip(names.wire.assertion.as_ref())
            .and_then(|(name, wire)| {
                Some(IdentityHeader {
                    name,
                    wire,
                    value: self.assertion(principal)?,
                })
            });
        fixed.into_iter().chain(assertion)
    }

    /// The principal of an access token just signed for `user`'s live session (see
    /// [`Gatekeeper::admit`]): no second verification of a token minted microseconds ago.
    pub fn admit(
        &self,
        token: &str,
        claims: AccessClaims,
        user: &User,
        two_factor: bool,
    ) -> Option<Principal> {
        self.gatekeeper
            .admit(token, claims, &self.keys, user, two_factor)
    }

    /// The signed identity assertion for `principal` (cached per session).
    pub fn assertion(&self, principal: &Principal) -> Option<HeaderValue> {
        self.gatekeeper.assertion(principal, &self.keys)
    }

    /// Ends one session: in the store, then in this instance's caches (other instances
    /// learn it from the store's revocation event). `false` when it was already gone.
    pub async fn revoke_session(&self, id: &SessionId) -> Result<bool, SessionError> {
        let ended = self.sessions.revoke(id).await?;
        self.gatekeeper.forget_session(id);
        Ok(ended)
    }

    /// Ends every session of `user` but `except`: in the store, then in the caches (the
    /// user's cached record included). Returns the ids it ended.
    pub async fn revoke_user(
        &self,
        user: UserId,
        except: Option<&SessionId>,
    ) -> Result<Vec<SessionId>, SessionError> {
        let ended = self.sessions.revoke_all(user, except).await?;
        self.gatekeeper.forget_user(user);
        Ok(ended)
    }

    /// Drops sessions the store already ended by itself (evicted at login over
    /// `sessions.max_per_user`) from the caches.
    pub fn forget_sessions(&self, ids: &[SessionId]) {
        for id in ids {
            self.gatekeeper.forget_session(id);
        }
    }

    /// Drops the cached record of `user` and its sessions: the account changed (email
    /// verified) and every check must read it afresh.
    pub fn forget_user(&self, user: UserId) {
        self.gatekeeper.forget_user(user);
    }

    /// Drops only the cached record of `user` (a new login reads the account afresh; the
    /// user's other sessions stay cached).
    pub fn forget_user_record(&self, user: UserId) {
        self.gatekeeper.forget_user_record(user);
    }
}
