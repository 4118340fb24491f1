//! The endpoint table of the account and admin APIs, written once: each endpoint's method,
//! path and per-IP limit. Routing, `405 Allow`, the `Allow` of an `OPTIONS` answer and the
//! rate limits all read [`ENDPOINTS`]; the OpenAPI contract test checks the document against it.

use http::Method;

/// What an endpoint does: the handler `api::route` calls for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // Each variant is named after its endpoint; the table gives its path.
pub enum Operation {
    Jwks,
    OpenApi,
    ForwardAuth,
    Register,
    AcceptInvitation,
    VerifyEmail,
    ResendVerification,
    RequestPasswordReset,
    ResetPassword,
    Login,
    RefreshToken,
    Reauthenticate,
    Logout,
    LogoutAll,
    GetProfile,
    UpdateProfile,
    ChangePassword,
    Deactivate,
    ListSessions,
    DeleteSession,
    SetupTwoFactor,
    EnableTwoFactor,
    DisableTwoFactor,
    RegenerateRecoveryCodes,
    ListPasskeys,
    PasskeyRegisterOptions,
    PasskeyRegister,
    PasskeyLoginOptions,
    PasskeyLogin,
    RenamePasskey,
    DeletePasskey,
    /// An endpoint of the admin API.
    Admin(AdminOperation),
}

/// What an endpoint of the admin API (`/api/admin/*`) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // Each variant is named after its endpoint; the table gives its path.
pub enum AdminOperation {
    StepUp,
    ListUsers,
    CreateUser,
    GetUser,
    DeleteUser,
    ActivateUser,
    DeactivateUser,
    UnlockUser,
    ResetTwoFactor,
    VerifyEmail,
    RevokeSessions,
    GrantRole,
    RevokeRole,
    UnlinkIdentity,
    UserSessions,
    EndSession,
    ListInvitations,
    Invite,
    RevokeInvitations,
    Audit,
}

/// The per-IP limits an endpoint counts against (`[rate_limits]`, DESIGN section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// None: a document, or forward-auth (it answers for other servers' page loads).
    Unlimited,
    /// `global` only.
    Global,
    /// `global`, then `register`.
    Register,
    /// `global`, then `login`.
    Login,
    /// `global`, then `password_reset`.
    PasswordReset,
}

/// One endpoint: the method (`None`: every method, decided alike), the path (an `{id}`
/// segment, anywhere in it, stands for one non-empty segment), the limits and the operation.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The method it answers; `None` for forward-auth, which decides every method like GET.
    pub method: Option<Method>,
    /// The path as the OpenAPI document writes it (`/api/auth/passkeys/{id}`,
    /// `/api/admin/users/{id}/activate`).
    pub path: &'static str,
    /// The per-IP limits it counts against.
    pub limit: Limit,
    /// What answers it.
    pub operation: Operation,
}

const fn at(method: Method, path: &'static str, limit: Limit, operation: Operation) -> Endpoint {
    Endpoint {
        method: Some(method),
        path,
        limit,
        operation,
    }
}

const fn any_method(path: &'static str, limit: Limit, operation: Operation) -> Endpoint {
    Endpoint {
        method: None,
        path,
        limit,
        operation,
    }
}

use AdminOperation as Adm;
use Limit::{Global, Unlimited};
use Operation as Op;

/// Every endpoint of the account API. Where a path has several methods, their order here is
/// the order of `Allow`.
#[rustfmt::skip]
pub static ENDPOINTS: &[Endpoint] = &[
    at(Method::GET, "/.well-known/jwks.json", Unlimited, Op::Jwks),
    at(Method::HEAD, "/.well-known/jwks.json", Unlimited, Op::Jwks),
    at(Method::GET, "/api/auth/openapi.json", Global, Op::OpenApi),
    at(Method::HEAD, "/api/auth/openapi.json", Global, Op::OpenApi),
    // Forward-auth decides every method like GET: a proxy may ask with the client's own.
    any_method("/api/auth/verify", Unlimited, Op::ForwardAuth),
    at(Method::POST, "/api/auth/register", Limit::Register, Op::Register),
    at(Method::POST, "/api/auth/accept-invitation", Limit::Register, Op::AcceptInvitation),
    at(Method::POST, "/api/auth/verify-email", Global, Op::VerifyEmail),
    at(Method::POST, "/api/auth/resend-verification", Global, Op::ResendVerification),
    at(Method::POST, "/api/auth/request-password-reset", Limit::PasswordReset, Op::RequestPasswordReset),
    at(Method::POST, "/api/auth/reset-password", Global, Op::ResetPassword),
    at(Method::POST, "/api/auth/login", Limit::Login, Op::Login),
    at(Method::POST, "/api/auth/refresh-token", Global, Op::RefreshToken),
    // A password (or code) guess like a sign-in's: the sign-in's limits.
    at(Method::POST, "/api/auth/reauthenticate", Limit::Login, Op::Reauthenticate),
    at(Method::POST, "/api/auth/logout", Global, Op::Logout),
    at(Method::POST, "/api/auth/logout-all", Global, Op::LogoutAll),
    at(Method::GET, "/api/auth/profile", Global, Op::GetProfile),
    at(Method::PATCH, "/api/auth/profile", Global, Op::UpdateProfile),
    at(Method::POST, "/api/auth/change-password", Global, Op::ChangePassword),
    at(Method::POST, "/api/auth/deactivate", Global, Op::Deactivate),
    at(Method::GET, "/api/auth/sessions", Global, Op::ListSessions),
    at(Method::DELETE, "/api/auth/sessions/{id}", Global, Op::DeleteSession),
    at(Method::POST, "/api/auth/setup-2fa", Global, Op::SetupTwoFactor),
    at(Method::POST, "/api/auth/enable-2fa", Global, Op::EnableTwoFactor),
    at(Method::POST, "/api/auth/disable-2fa", Global, Op::DisableTwoFactor),
    at(Method::POST, "/api/auth/2fa/recovery-codes", Global, Op::RegenerateRecoveryCodes),
    at(Method::GET, "/api/auth/passkeys", Global, Op::ListPasskeys),
    at(Method::POST, "/api/auth/passkeys/register/options", Global, Op::PasskeyRegisterOptions),
    at(Method::POST, "/api/auth/passkeys/register", Global, Op::PasskeyRegister),
    // Options for a passwordless sign-in check nothing and are fetched by the sign-in page on
    // every load (autofill): only `global` limits them, so page views cannot use up the
    // password sign-ins of everyone behind one address.
    at(Method::POST, "/api/auth/passkeys/login/options", Global, Op::PasskeyLoginOptions),
    at(Method::POST, "/api/auth/passkeys/login", Limit::Login, Op::PasskeyLogin),
    at(Method::PATCH, "/api/auth/passkeys/{id}", Global, Op::RenamePasskey),
    at(Method::DELETE, "/api/auth/passkeys/{id}", Global, Op::DeletePasskey),
    // The admin API: `global` only, like the rest of the signed-in API.
    at(Method::POST, "/api/admin/step-up", Global, Op::Admin(Adm::StepUp)),
    at(Method::GET, "/api/admin/users", Global, Op::Admin(Adm::ListUsers)),
    at(Method::POST, "/api/admin/users", Global, Op::Admin(Adm::CreateUser)),
    at(Method::GET, "/api/admin/users/{id}", Global, Op::Admin(Adm::GetUser)),
    at(Method::DELETE, "/api/admin/users/{id}", Global, Op::Admin(Adm::DeleteUser)),
    at(Method::POST, "/api/admin/users/{id}/activate", Global, Op::Admin(Adm::ActivateUser)),
    at(Method::POST, "/api/admin/users/{id}/deactivate", Global, Op::Admin(Adm::DeactivateUser)),
    at(Method::POST, "/api/admin/users/{id}/unlock", Global, Op::Admin(Adm::UnlockUser)),
    at(Method::POST, "/api/admin/users/{id}/reset-2fa", Global, Op::Admin(Adm::ResetTwoFactor)),
    at(Method::POST, "/api/admin/users/{id}/verify-email", Global, Op::Admin(Adm::VerifyEmail)),
    at(Method::POST, "/api/admin/users/{id}/revoke-sessions", Global, Op::Admin(Adm::RevokeSessions)),
    at(Method::POST, "/api/admin/users/{id}/grant-role", Global, Op::Admin(Adm::GrantRole)),
    at(Method::POST, "/api/admin/users/{id}/revoke-role", Global, Op::Admin(Adm::RevokeRole)),
    at(Method::POST, "/api/admin/users/{id}/unlink-identity", Global, Op::Admin(Adm::UnlinkIdentity)),
    at(Method::GET, "/api/admin/users/{id}/sessions", Global, Op::Admin(Adm::UserSessions)),
    at(Method::DELETE, "/api/admin/sessions/{id}", Global, Op::Admin(Adm::EndSession)),
    at(Method::GET, "/api/admin/invitations", Global, Op::Admin(Adm::ListInvitations)),
    at(Method::POST, "/api/admin/invitations", Global, Op::Admin(Adm::Invite)),
    at(Method::POST, "/api/admin/invitations/revoke", Global, Op::Admin(Adm::RevokeInvitations)),
    at(Method::GET, "/api/admin/audit", Global, Op::Admin(Adm::Audit)),
];

/// The paths under which every request counts against `global` at least: the account API
/// (but forward-auth and the JWKS) and the admin API.
const LIMITED_PREFIXES: [&str; 2] = ["/api/auth/", "/api/admin/"];

/// How a request's method and path meet the table.
#[derive(Debug)]
pub enum Resolved<'a> {
    /// An endpoint answers it; `id` is the `{id}` segment of a parameterised path.
    Found {
        /// The endpoint that answers.
        endpoint: &'static Endpoint,
        /// The `{id}` segment, when the path has one.
        id: Option<&'a str>,
    },
    /// The path is known but not with this method: `Allow` lists those it takes
    /// (`"GET, PATCH"`).
    WrongMethod {
        /// The methods the path takes, comma-separated, in table order.
        allow: String,
    },
    /// No endpoint has this path.
    Unknown,
}

/// The endpoints whose path is `path` (a trailing `/` ignored), with the `{id}` segment:
/// an exact path wins over a parameterised one (`/api/auth/passkeys/register` is not a
/// passkey's id, `/api/admin/invitations/revoke` not an invitation's).
fn matching(path: &str) -> (Vec<&'static Endpoint>, Option<&str>) {
    let path = path.trim_end_matches('/');
    let exact: Vec<_> = ENDPOINTS.iter().filter(|e| e.path == path).collect();
    if !exact.is_empty() {
        return (exact, None);
    }
    let mut id = None;
    let found = ENDPOINTS
        .iter()
        .filter(|e| {
            let segment = id_in(e.path, path);
            id = id.or(segment);
            segment.is_some()
        })
        .collect();
    (found, id)
}

/// The segment of `path` that stands where `template` has `{id}`, when `path` is the
/// template with one non-empty segment (no `/`) in that place; `None` for a template
/// without `{id}` or a path that does not fit it.
fn id_in<'a>(template: &str, path: &'a str) -> Option<&'a str> {
    let (before, after) = template.split_once("{id}")?;
    let rest = path.strip_prefix(before)?;
    let segment = rest.strip_suffix(after)?;
    (!segment.is_empty() && !segment.contains('/')).then_some(segment)
}

/// Finds the endpoint for `method` on `path`.
pub fn resolve<'a>(method: &Method, path: &'a str) -> Resolved<'a> {
    let (endpoints, id) = matching(path);
    if endpoints.is_empty() {
        return Resolved::Unknown;
    }
    match endpoints
        .iter()
        .find(|e| e.method.as_ref().is_none_or(|m| m == method))
    {
        Some(endpoint) => Resolved::Found { endpoint, id },
        None => Resolved::WrongMethod {
            allow: allow_of(&endpoints),
        },
    }
}

/// The per-IP limits a request counts against: its endpoint's; only `global` for anything
/// else under `/api/auth/` or `/api/admin/` (a wrong method or an unknown path uses no
/// endpoint, so it must not use up the sign-ins, registrations or reset mails of everyone
/// behind the address); none outside them.
pub fn limit_of(method: &Method, path: &str) -> Limit {
    match resolve(method, path) {
        Resolved::Found { endpoint, .. } => endpoint.limit,
        _ if LIMITED_PREFIXES
            .iter()
            .any(|prefix| path.trim_end_matches('/').starts_with(prefix)) =>
        {
            Limit::Global
        }
        _ => Limit::Unlimited,
    }
}

/// The methods `path` takes, comma-separated in table order (`"GET, PATCH"`); `None` for a
/// path no endpoint has, or forward-auth's (which takes every method).
pub fn allowed_methods(path: &str) -> Option<String> {
    let (endpoints, _) = matching(path);
    if endpoints.is_empty() || endpoints.iter().any(|e| e.method.is_none()) {
        return None;
    }
    Some(allow_of(&endpoints))
}

fn allow_of(endpoints: &[&'static Endpoint]) -> String {
    let names: Vec<&str> = endpoints
        .iter()
        .filter_map(|e| e.method.as_ref().map(Method::as_str))
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_paths_win_over_an_id_and_ids_are_one_segment() {
        let cases: &[(Method, &str, Option<Op>, Option<&str>)] = &[
            (
                Method::POST,
                "/api/auth/passkeys/register",
                Some(Op::PasskeyRegister),
                None,
            ),
            (
                Method::PATCH,
                "/api/auth/passkeys/abc",
                Some(Op::RenamePasskey),
                Some("abc"),
            ),
            (
                Method::DELETE,
                "/api/auth/passkeys/abc/",
                Some(Op::DeletePasskey),
                Some("abc"),
            ),
            (
                Method::DELETE,
                "/api/auth/sessions/abc",
                Some(Op::DeleteSession),
                Some("abc"),
            ),
            (Method::DELETE, "/api/auth/sessions/a/b", None, None),
            (Method::DELETE, "/api/auth/sessions/", None, None),
            (Method::PUT, "/api/auth/verify", Some(Op::ForwardAuth), None),
            (Method::HEAD, "/.well-known/jwks.json", Some(Op::Jwks), None),
            // `{id}` in the middle of a path.
            (
                Method::POST,
                "/api/admin/users/u-1/activate",
                Some(Op::Admin(Adm::ActivateUser)),
                Some("u-1"),
            ),
            (
                Method::GET,
                "/api/admin/users/u-1/sessions/",
                Some(Op::Admin(Adm::UserSessions)),
                Some("u-1"),
            ),
            (
                Method::GET,
                "/api/admin/users/u-1",
                Some(Op::Admin(Adm::GetUser)),
                Some("u-1"),
            ),
            (
                Method::GET,
                "/api/admin/users",
                Some(Op::Admin(Adm::ListUsers)),
                None,
            ),
            (
                Method::POST,
                "/api/admin/invitations/revoke",
                Some(Op::Admin(Adm::RevokeInvitations)),
                None,
            ),
            (Method::POST, "/api/admin/users//activate", None, None),
            (Method::POST, "/api/admin/users/activate", None, None),
            (Method::POST, "/api/admin/users/a/b/activate", None, None),
            (Method::POST, "/api/admin/users/a/activate/x", None, None),
            (Method::GET, "/api/admin/users/a/sessionsx", None, None),
        ];
        for (method, path, op, want_id) in cases {
            match (resolve(method, path), op) {
                (Resolved::Found { endpoint, id }, Some(op)) => {
                    assert_eq!(endpoint.operation, *op, "{method} {path}");
                    assert_eq!(id, *want_id, "{method} {path}");
                }
                (Resolved::Found { endpoint, .. }, None) => {
                    panic!("{method} {path} found {:?}", endpoint.operation)
                }
                (_, Some(op)) => panic!("{method} {path} should be {op:?}"),
                _ => {}
            }
        }
    }

    #[test]
    fn only_the_endpoint_itself_uses_its_own_limit() {
        let cases: &[(Method, &str, Limit)] = &[
            (Method::POST, "/api/auth/login", Limit::Login),
            (Method::POST, "/api/auth/login/", Limit::Login),
            (Method::POST, "/api/auth/passkeys/login", Limit::Login),
            (Method::POST, "/api/auth/register", Limit::Register),
            (
                Method::POST,
                "/api/auth/request-password-reset",
                Limit::PasswordReset,
            ),
            (Method::GET, "/api/auth/login", Limit::Global),
            (Method::HEAD, "/api/auth/register", Limit::Global),
            (
                Method::DELETE,
                "/api/auth/request-password-reset/",
                Limit::Global,
            ),
            (Method::GET, "/api/auth/passkeys/login", Limit::Global),
            (
                Method::POST,
                "/api/auth/passkeys/login/options",
                Limit::Global,
            ),
            (Method::GET, "/api/auth/nothing", Limit::Global),
            (Method::GET, "/api/auth/sessions/a/b", Limit::Global),
            (Method::GET, "/api/auth/", Limit::Unlimited),
            (Method::POST, "/api/auth//", Limit::Unlimited),
            (Method::GET, "/api/auth/verify", Limit::Unlimited),
            (Method::POST, "/api/auth/verify/", Limit::Unlimited),
            (Method::GET, "/.well-known/jwks.json", Limit::Unlimited),
            (Method::POST, "/.well-known/jwks.json", Limit::Unlimited),
            (Method::GET, "/api/auth/openapi.json", Limit::Global),
            (Method::GET, "/api/admin/users", Limit::Global),
            (Method::POST, "/api/admin/step-up", Limit::Global),
            (Method::PUT, "/api/admin/users/x/activate", Limit::Global),
            (Method::GET, "/api/admin/nothing", Limit::Global),
            (Method::GET, "/api/admin/", Limit::Unlimited),
            (Method::GET, "/api/administrator", Limit::Unlimited),
        ];
        for (method, path, want) in cases {
            assert_eq!(limit_of(method, path), *want, "{method} {path}");
        }
    }

    #[test]
    fn allow_lists_a_paths_methods_in_table_order() {
        let cases = [
            ("/api/auth/profile", Some("GET, PATCH")),
            ("/api/auth/passkeys/x", Some("PATCH, DELETE")),
            ("/api/auth/passkeys/register", Some("POST")),
            ("/api/auth/sessions/x", Some("DELETE")),
            ("/.well-known/jwks.json", Some("GET, HEAD")),
            ("/api/auth/verify", None),
            ("/api/auth/nothing", None),
            ("/api/admin/users", Some("GET, POST")),
            ("/api/admin/users/x", Some("GET, DELETE")),
            ("/api/admin/users/x/grant-role", Some("POST")),
            ("/api/admin/invitations", Some("GET, POST")),
            ("/api/admin/invitations/revoke", Some("POST")),
            ("/api/admin/users/x/y", None),
        ];
        for (path, want) in cases {
            assert_eq!(allowed_methods(path).as_deref(), want, "{path}");
        }
    }
}
