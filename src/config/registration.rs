//! `[registration]`: who may create an account by themselves, parsed at load into a policy
//! the registration asks before it writes or mails anything.

use std::fmt;

use serde::Deserialize;

use crate::domain::{Email, HumanDuration};

/// `[registration]`: who may register through `POST /api/auth/register` and the portal's
/// sign-up page. Accounts an operator creates (`portcullis user create`) are not held to it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationPolicy {
    /// `open` (anyone with a mailbox; the default), `domains` (only addresses under
    /// `allowed_domains`), `invite` (only with an invitation) or `closed` (nobody).
    pub mode: RegistrationMode,
    /// With `mode = "domains"`: the domains whose addresses may register, `example.com`
    /// (that domain only) or `*.example.org` (any subdomain of it, not the domain itself).
    /// Compared after lower-casing and IDNA (Unicode and punycode spellings are one
    /// domain); a trailing dot is ignored. Must be empty with `mode = "open"`.
    pub allowed_domains: Vec<DomainPattern>,
    /// How long an invitation's link works (`portcullis user invite`); 7 days by default.
    /// Invitations work in every mode, `closed` included: an operator vouches for the
    /// invitee, as with `portcullis user create`.
    pub invitation_ttl: HumanDuration,
}

/// The longest an invitation may work: a year (a link that lives longer is a standing
/// password to an account, and far-future times do not fit every clock type).
pub const MAX_INVITATION_TTL: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

/// How long an invitation works unless `registration.invitation_ttl` says otherwise.
pub const DEFAULT_INVITATION_TTL: HumanDuration = HumanDuration::from_secs(7 * 86_400);

impl Default for RegistrationPolicy {
    fn default() -> Self {
        Self {
            mode: RegistrationMode::default(),
            allowed_domains: Vec::new(),
            invitation_ttl: DEFAULT_INVITATION_TTL,
        }
    }
}

/// `registration.mode`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// Anyone may register.
    #[default]
    Open,
    /// Only addresses under `registration.allowed_domains`.
    Domains,
    /// Only with an invitation.
    Invite,
    /// Nobody registers by themselves.
    Closed,
}

impl RegistrationMode {
    /// The value as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Domains => "domains",
            Self::Invite => "invite",
            Self::Closed => "closed",
        }
    }
}

/// Why the registration policy turned an address away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `mode = "closed"`: 403 `registration_closed`.
    #[error("registration is closed")]
    Closed,
    /// `mode = "domains"` and the address is under none of them: 403 `registration_closed`
    /// (the answer does not say which domains would do).
    #[error("registration is closed for this address's domain")]
    DomainNotAllowed,
    /// `mode = "invite"`: 403 `invitation_required`.
    #[error("registration needs an invitation")]
    InvitationRequired,
}

impl Refusal {
    /// The code of the account API's 403: `registration_closed` or `invitation_required`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Closed | Self::DomainNotAllowed => "registration_closed",
            Self::InvitationRequired => "invitation_required",
        }
    }
}

impl RegistrationPolicy {
    /// Whether `email` may register by itself.
    pub fn admits(&self, email: &Email) -> Result<(), Refusal> {
        if let Some(refusal) = self.refuses_everyone() {
            return Err(refusal);
        }
        if self.mode == RegistrationMode::Open {
            return Ok(());
        }
        let domain = ascii_domain(email.domain()).ok_or(Refusal::DomainNotAllowed)?;
        if self.allowed_domains.iter().any(|p| p.matches(&domain)) {
            Ok(())
        } else {
            Err(Refusal::DomainNotAllowed)
        }
    }

    /// The refusal every address gets (`closed`, `invite`), before any is read: the portal
    /// shows no sign-up form then, and the account API answers before parsing the body.
    pub fn refuses_everyone(&self) -> Option<Refusal> {
        match self.mode {
            RegistrationMode::Closed => Some(Refusal::Closed),
            RegistrationMode::Invite => Some(Refusal::InvitationRequired),
            RegistrationMode::Open | RegistrationMode::Domains => None,
        }
    }

    /// Checks what spans the two keys; returns the offending key and what is wrong.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let ttl = self.invitation_ttl.get();
        if ttl.is_zero() || ttl > MAX_INVITATION_TTL {
            return Err((
                "registration.invitation_ttl".into(),
                "must be longer than zero and at most a year, e.g. \"7d\"".into(),
            ));
        }
        let key = "registration.allowed_domains".to_owned();
        match self.mode {
            RegistrationMode::Domains if self.allowed_domains.is_empty() => Err((
                key,
                "registration.mode = \"domains\" needs at least one domain, e.g. \
                 [\"example.com\", \"*.example.org\"]"
                    .into(),
            )),
            RegistrationMode::Open if !self.allowed_domains.is_empty() => Err((
                key,
                "is read only with registration.mode = \"domains\"; with \"open\" anyone \
                 may register, so set the mode too"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

/// One `registration.allowed_domains` entry, parsed at load: the domain in its ASCII
/// (IDNA) form, and whether it stands for the subdomains below it (`*.`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DomainPattern {
    /// The domain, lower-cased ASCII (`xn--…` for internationalised labels).
    domain: String,
    /// `*.domain`: any subdomain of `domain` (at any depth), not `domain` itself.
    subdomains: bool,
}

impl DomainPattern {
    /// Whether `email`'s domain is this entry's (or, for `*.`, under it), compared in ASCII
    /// form as [`RegistrationPolicy::admits`] compares it.
    pub fn matches_email(&self, email: &Email) -> bool {
        ascii_domain(email.domain()).is_some_and(|d| self.matches(&d))
    }

    /// Whether an address's ASCII domain is this entry's (or, for `*.`, under it).
    fn matches(&self, domain: &str) -> bool {
        if self.subdomains {
            domain
                .strip_suffix(self.domain.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            domain == self.domain
        }
    }
}

impl std::str::FromStr for DomainPattern {
    type Err = String;

    /// `example.com`, `*.example.org`, `münchen.de`, `xn--mnchen-3ya.de`, `Example.COM.`.
    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let (subdomains, rest) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        if rest.contains('*') {
            return Err(format!(
                "{text:?}: '*' may only stand as a whole first label (\"*.example.org\")"
            ));
        }
        let domain = ascii_domain(rest.strip_suffix('.').unwrap_or(rest))
            .filter(|d| d.contains('.'))
            .ok_or_else(|| format!("{text:?} is not a domain like example.com"))?;
        Ok(Self { domain, subdomains })
    }
}

impl TryFrom<String> for DomainPattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subdomains {
            f.write_str("*.")?;
        }
        f.write_str(&self.domain)
    }
}

impl fmt::Debug for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainPattern({self})")
    }
}

/// A host name in its ASCII form (UTS #46 processing: lower-cased, mapped, Unicode labels
/// as `xn--` punycode), or `None` when it is not one: an empty label, a label that is not
/// letters, digits and inner hyphens, or a top-level label of digits only.
fn ascii_domain(name: &str) -> Option<String> {
    let ascii = idna::domain_to_ascii(name).ok()?;
    let labels: Vec<&str> = ascii.split('.').collect();
    let labels_ok = labels.iter().all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b == b'-' || b.is_ascii_alphanumeric())
    });
    let tld_ok = labels
        .last()
        .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()));
    (labels_ok && tld_ok && ascii.len() <= 253).then_some(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: RegistrationMode, domains: &[&str]) -> RegistrationPolicy {
        RegistrationPolicy {
            mode,
            allowed_domains: domains.iter().map(|d| d.parse().unwrap()).collect(),
            ..RegistrationPolicy::default()
        }
    }

    #[test]
    fn an_invitation_lasts_seven_days_unless_set_and_never_zero() {
        let mut policy = RegistrationPolicy::default();
        assert_eq!(policy.invitation_ttl.get().as_secs(), 7 * 86_400);
        assert!(policy.validate().is_ok());
        for refused in [0, 367 * 86_400, 100_000_000 * 86_400] {
            policy.invitation_ttl = HumanDuration::from_secs(refused);
            let (key, _) = policy.validate().unwrap_err();
            assert_eq!(key, "registration.invitation_ttl", "{refused} s");
        }
        policy.invitation_ttl = HumanDuration::from_secs(365 * 86_400);
        assert!(policy.validate().is_ok());
    }

    fn email(text: &str) -> Email {
        Email::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn domains_mode_admits_by_the_domain_in_every_spelling() {
        use RegistrationMode::Domains;
        let refused = Err(Refusal::DomainNotAllowed);
        // (allowed_domains, address, answer)
        let table: &[(&[&str], &str, Result<(), Refusal>)] = &[
            (&["example.com"], "bob@example.com", Ok(())),
            (&["example.com"], "Bob@EXAMPLE.com", Ok(())),
            (&["EXAMPLE.COM"], "bob@example.com", Ok(())),
            (&["example.com."], "bob@example.com", Ok(())),
            (&["example.com"], "bob+tag@example.com", Ok(())),
            (&["example.com"], "bob+example.com@evil.test", refused),
            (&["example.com"], "bob@example.com.evil.test", refused),
            (&["example.com"], "bob@evil-example.com", refused),
            (&["example.com"], "bob@evilexample.com", refused),
            (&["example.com"], "bob@mail.example.com", refused),
            (&["example.com"], "bob@example.co", refused),
            (&["*.example.com"], "bob@mail.example.com", Ok(())),
            (&["*.example.com"], "bob@a.b.example.com", Ok(())),
            (&["*.example.com"], "bob@Mail.EXAMPLE.com", Ok(())),
            (&["*.example.com"], "bob@example.com", refused),
            (&["*.example.com"], "bob@evilexample.com", refused),
            (
                &["*.example.com"],
                "bob@mail.example.com.evil.test",
                refused,
            ),
            (&["*.example.com", "example.com"], "bob@example.com", Ok(())),
            // Unicode and punycode are one domain, whichever is written where.
            (&["münchen.de"], "bob@münchen.de", Ok(())),
            (&["münchen.de"], "bob@xn--mnchen-3ya.de", Ok(())),
            (&["xn--mnchen-3ya.de"], "bob@münchen.de", Ok(())),
            (&["xn--mnchen-3ya.de"], "bob@MÜNCHEN.de", Ok(())),
            (&["MÜNCHEN.DE"], "bob@xn--mnchen-3ya.de", Ok(())),
            (&["*.münchen.de"], "bob@rathaus.xn--mnchen-3ya.de", Ok(())),
            (&["münchen.de"], "bob@munchen.de", refused),
            (&["other.org", "example.com"], "bob@example.com", Ok(())),
        ];
        for (domains, address, want) in table {
            let got = policy(Domains, domains).admits(&email(address));
            assert_eq!(got, *want, "{domains:?} {address}");
        }
    }

    #[test]
    fn an_address_with_a_trailing_dot_is_no_address() {
        // Refused as malformed before any policy is asked (400, not 403).
        assert!(Email::parse("bob@example.com.").is_err());
    }

    #[test]
    fn each_mode_answers_with_its_refusal() {
        let bob = email("bob@example.com");
        for (mode, want) in [
            (RegistrationMode::Open, Ok(())),
            (RegistrationMode::Closed, Err(Refusal::Closed)),
            (RegistrationMode::Invite, Err(Refusal::InvitationRequired)),
        ] {
            assert_eq!(policy(mode, &[]).admits(&bob), want, "{mode:?}");
        }
        // Closed and invite refuse whatever the domains say.
        let listed = policy(RegistrationMode::Invite, &["example.com"]);
        assert_eq!(listed.admits(&bob), Err(Refusal::InvitationRequired));
        assert_eq!(Refusal::Closed.code(), "registration_closed");
        assert_eq!(Refusal::DomainNotAllowed.code(), "registration_closed");
        assert_eq!(Refusal::InvitationRequired.code(), "invitation_required");
    }

    #[test]
    fn patterns_are_parsed_into_one_ascii_form() {
        for (written, parsed) in [
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            (" *.Example.org ", "*.example.org"),
            ("münchen.de", "xn--mnchen-3ya.de"),
            ("*.XN--MNCHEN-3YA.de", "*.xn--mnchen-3ya.de"),
        ] {
            let pattern: DomainPattern = written.parse().unwrap();
            assert_eq!(pattern.to_string(), parsed, "{written:?}");
        }
        for bad in [
            "",
            "*",
            "*.",
            "com",
            "*.com",
            "ex*ample.com",
            "*example.com",
            "a.*.example.com",
            "**.example.com",
            "example..com",
            "-example.com",
            "exa mple.com",
            "bob@example.com",
            "1.2.3.4",
            "example.com..",
        ] {
            assert!(bad.parse::<DomainPattern>().is_err(), "{bad:?} was taken");
        }
    }
}
