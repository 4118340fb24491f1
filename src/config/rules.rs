//! A route's conditions (`methods`, `networks`, `users`, `emails`, `email_domains`, `roles`,
//! `all_roles`), parsed at load into the form the hot path compares without allocating.
//!
//! Host and path choose a route; these are conditions of its policy. Within one list any
//! entry matches; across kinds every condition must hold. A key left out sets no condition;
//! `methods`, `networks`, `users`/`emails` or `email_domains` given as an empty list match
//! nobody (`check-config` warns about it); `roles = []` and `all_roles = []` ask for no role,
//! as `roles = []` always did.
//! `users` and `emails` are one condition, "who": the account named by its id or by its
//! address.

use std::net::IpAddr;

use http::Method;
use ipnet::IpNet;
use serde::Deserialize;

use crate::domain::{Email, HumanDuration, UserId};

/// One `methods` entry: an RFC 9110 method token as requests carry it (methods are
/// case-sensitive, so `get` is refused rather than left to match nothing).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MethodName(Method);

impl TryFrom<String> for MethodName {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let token = !text.is_empty() && text.bytes().all(is_tchar);
        if !token {
            return Err(format!("{text:?} is not an HTTP method, e.g. \"GET\""));
        }
        if text.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(format!(
                "{text:?}: methods are case-sensitive; write {:?}",
                text.to_ascii_uppercase()
            ));
        }
        if matches!(text.as_str(), "TRACE" | "TRACK") {
            return Err(format!(
                "{text:?} never reaches a route: the gateway answers it itself (405), so that no \
                 upstream can echo a request's identity headers back"
            ));
        }
        Method::from_bytes(text.as_bytes())
            .map(Self)
            .map_err(|_| format!("{text:?} is not an HTTP method, e.g. \"GET\""))
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One `networks` entry: `10.0.0.0/8`, `2001:db8::/32`, or one address. An IPv4-mapped IPv6
/// network (`::ffff:10.0.0.0/104`) is taken as the IPv4 network it stands for, as client
/// addresses are; host bits must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Network(IpNet);

impl Network {
    /// Whether `ip` (already canonical: IPv4-mapped addresses as IPv4) is in this network.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let trimmed = text.trim();
        let net = match trimmed.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => trimmed
                .parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| format!("{text:?} is not a network, e.g. \"10.0.0.0/8\""))?,
        };
        if net.trunc() != net {
            return Err(format!(
                "{text:?} has bits set after its prefix; write {:?}",
                net.trunc().to_string()
            ));
        }
        Ok(Self(ipv4_mapped(net).unwrap_or(net)))
    }
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) as the IPv4 network `a.b.c.d/(n-96)`.
fn ipv4_mapped(net: IpNet) -> Option<IpNet> {
    let IpNet::V6(v6) = net else { return None };
    let v4 = v6.addr().to_ipv4_mapped()?;
    let prefix = v6.prefix_len().checked_sub(96)?;
    ipnet::Ipv4Net::new(v4, prefix).ok().map(IpNet::V4)
}

/// One `users` entry: an account id (a UUID, as `portcullis user show` prints it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct UserEntry(UserId);

impl TryFrom<String> for UserEntry {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.trim()
            .parse()
            .map(Self)
            .map_err(|_| format!("{text:?} is not an account id (a UUID)"))
    }
}

/// One `emails` entry: an address, in the canonical form accounts hold.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct EmailEntry(Email);

impl TryFrom<String> for EmailEntry {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Email::parse(&text)
            .map(Self)
            .map_err(|e| format!("{text:?}: {e}"))
    }
}

/// One `email_domains` entry: `example.com` (addresses at that domain only) or
/// `*.example.com` (at any subdomain of it, not the domain itself), held in the canonical
/// form addresses take (lower case, Unicode labels), so matching compares bytes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct EmailDomain {
    /// The domain, canonical as an address's domain is.
    domain: String,
    /// `*.domain`: any subdomain, at any depth.
    subdomains: bool,
}

impl EmailDomain {
    /// Whether an address's domain (canonical, from an account) is this entry's.
    pub fn matches(&self, address_domain: &str) -> bool {
        if self.subdomains {
            address_domain
                .strip_suffix(self.domain.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            address_domain == self.domain
        }
    }
}

impl std::fmt::Display for EmailDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.subdomains {
            f.write_str("*.")?;
        }
        f.write_str(&self.domain)
    }
}

impl TryFrom<String> for EmailDomain {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let trimmed = text.trim();
        let (subdomains, rest) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let rest = rest.strip_suffix('.').unwrap_or(rest);
        let bad = || format!("{text:?} is not a domain like example.com or *.example.com");
        if rest.contains(['*', '@']) || !rest.contains('.') {
            return Err(bad());
        }
        let email = Email::parse(&format!("x@{rest}")).map_err(|_| bad())?;
        Ok(Self {
            domain: email.domain().to_owned(),
            subdomains,
        })
    }
}

/// What a route asks of a request besides its policy, read from its `[[routes]]` entry.
/// `None` is a key left out (no condition); `Some(empty)` matches nobody.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// `methods`: the methods allowed (any of).
    pub methods: Option<Vec<Method>>,
    /// The `Allow` header of a 405, built once.
    pub allow: String,
    /// `networks`: where the client may be (any of), after `trusted_proxies`.
    pub networks: Option<Vec<Network>>,
    /// `users`: account ids (any of; one condition with `emails`).
    pub users: Option<Vec<UserId>>,
    /// `emails`: account addresses (any of; one condition with `users`).
    pub emails: Option<Vec<Email>>,
    /// `email_domains`: the account address's domain (any of).
    pub email_domains: Option<Vec<EmailDomain>>,
    /// `roles`: any of these; empty for no condition (as `roles = []` always meant).
    pub roles: Vec<String>,
    /// `all_roles`: every one of these.
    pub all_roles: Vec<String>,
}

/// A route's whole policy, as both ways in (the proxy and forward-auth) decide it.
#[derive(Debug)]
pub struct RouteGuard {
    /// The route's name (metrics, logs).
    pub name: String,
    /// Who may pass: public, authenticated, two-factor or nobody.
    pub policy: super::Policy,
    /// Whether an unproven address is refused.
    pub verified_email: bool,
    /// The conditions besides the policy.
    pub rules: Rules,
    /// How recently the user must have proved who they are; `None` for any age.
    pub max_auth_age: Option<HumanDuration>,
}

/// Why a request failed a route's conditions: the `reason` of the refusal metric and the
/// security log, one per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmet {
    /// `methods` (405 with `Allow`).
    Method,
    /// `networks`.
    Network,
    /// `users` / `emails`.
    User,
    /// `email_domains`.
    EmailDomain,
    /// `roles` or `all_roles`.
    Role,
}

impl Unmet {
    /// The stable `code` of the refusal and the `reason` label of its metric.
    pub fn code(self) -> &'static str {
        match self {
            Self::Method => "method_not_allowed",
            Self::Network => "forbidden_network",
            Self::User => "forbidden_user",
            Self::EmailDomain => "forbidden_email_domain",
            Self::Role => "forbidden_role",
        }
    }
}

/// The account facts the identity conditions read.
pub struct Account<'a> {
    /// The account's id.
    pub id: UserId,
    /// Its canonical address.
    pub email: &'a str,
    /// Its roles.
    pub roles: &'a [String],
}

impl Rules {
    /// No condition at all (forward-auth without a route).
    pub const NONE: Self = Self {
        methods: None,
        allow: String::new(),
        networks: None,
        users: None,
        emails: None,
        email_domains: None,
        roles: Vec::new(),
        all_roles: Vec::new(),
    };

    /// Whether the route names anyone (users, emails, domains or roles).
    pub fn has_identity_conditions(&self) -> bool {
        self.users.is_some()
            || self.emails.is_some()
            || self.email_domains.is_some()
            || !self.roles.is_empty()
            || !self.all_roles.is_empty()
    }

    /// The conditions that need no account: the method, then the client's network.
    pub fn check_request(&self, method: &Method, client: &IpAddr) -> Result<(), Unmet> {
        if let Some(methods) = &self.methods
            && !methods.contains(method)
        {
            return Err(Unmet::Method);
        }
        if let Some(networks) = &self.networks
            && !networks.iter().any(|n| n.contains(client))
        {
            return Err(Unmet::Network);
        }
        Ok(())
    }

    /// The conditions on the account: who, its address's domain, its roles.
    pub fn check_account(&self, account: &Account<'_>) -> Result<(), Unmet> {
        if self.users.is_some() || self.emails.is_some() {
            let by_id = self.users.as_ref().is_some_and(|u| u.contains(&account.id));
            let by_email = self
                .emails
                .as_ref()
                .is_some_and(|e| e.iter().any(|e| e.as_str() == account.email));
            if !by_id && !by_email {
                return Err(Unmet::User);
            }
        }
        if let Some(domains) = &self.email_domains {
            let domain = account.email.rsplit_once('@').map_or("", |(_, d)| d);
            if !domains.iter().any(|d| d.matches(domain)) {
                return Err(Unmet::EmailDomain);
            }
        }
        let holds = |role: &String| account.roles.contains(role);
        if !self.roles.is_empty() && !self.roles.iter().any(holds) {
            return Err(Unmet::Role);
        }
        if !self.all_roles.iter().all(holds) {
            return Err(Unmet::Role);
        }
        Ok(())
    }

    /// The kinds given as empty lists: they match nobody, so the route refuses everyone.
    pub fn empty_lists(&self) -> Vec<&'static str> {
        let mut empty = Vec::new();
        if self.methods.as_ref().is_some_and(Vec::is_empty) {
            empty.push("methods");
        }
        if self.networks.as_ref().is_some_and(Vec::is_empty) {
            empty.push("networks");
        }
        let users = self.users.as_ref().map(Vec::len);
        let emails = self.emails.as_ref().map(Vec::len);
        if (users.is_some() || emails.is_some()) && users.unwrap_or(0) + emails.unwrap_or(0) == 0 {
            empty.push("users/emails");
        }
        if self.email_domains.as_ref().is_some_and(Vec::is_empty) {
            empty.push("email_domains");
        }
        empty
    }
}

/// Builds [`Rules`] from a route's parsed keys.
pub(super) fn rules_of(route: &super::RouteConfig) -> Rules {
    let methods: Option<Vec<Method>> = route
        .methods
        .as_ref()
        .map(|m| m.iter().map(|m| m.0.clone()).collect());
    let allow = methods
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    Rules {
        methods,
        allow,
        networks: route.networks.clone(),
        users: route
            .users
            .as_ref()
            .map(|u| u.iter().map(|u| u.0).collect()),
        emails: route
            .emails
            .as_ref()
            .map(|e| e.iter().map(|e| e.0.clone()).collect()),
        email_domains: route.email_domains.clone(),
        roles: route.roles.clone(),
        all_roles: route.all_roles.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Result<Network, String> {
        Network::try_from(text.to_owned())
    }

    #[test]
    fn networks_parse_and_normalise() {
        assert_eq!(net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            net("::ffff:10.0.0.0/104").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(net("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(net("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "nonsense",
            "",
            "2001:db8::1/32",
        ] {
            assert!(net(bad).is_err(), "{bad}");
        }
        let v4 = net("::ffff:10.0.0.0/104").unwrap();
        assert!(v4.contains(&"10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn methods_are_tokens_in_upper_case() {
        for good in ["GET", "HEAD", "PROPFIND", "M-SEARCH"] {
            assert!(MethodName::try_from(good.to_owned()).is_ok(), "{good}");
        }
        for bad in ["get", "Get", "", "GE T", "GET,POST", "GÉT"] {
            assert!(MethodName::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn email_domains_match_on_label_boundaries() {
        let exact = EmailDomain::try_from("Example.COM.".to_owned()).unwrap();
        let wild = EmailDomain::try_from("*.example.com".to_owned()).unwrap();
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("a.example.com"));
        assert!(wild.matches("a.example.com") && wild.matches("a.b.example.com"));
        for other in [
            "example.com",
            "xexample.com",
            "example.com.evil.test",
            ".example.com",
        ] {
            assert!(!wild.matches(other), "{other}");
        }
        for bad in [
            "",
            "com",
            "*.",
            "a@b.com",
            "*.*.example.com",
            "ex ample.com",
        ] {
            assert!(EmailDomain::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}
