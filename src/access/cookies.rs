//! What the gateway's cookies are called, how they are set, and how copies planted beside
//! them are cleared.
//!
//! Names (RFC 6265bis §4.1.3): with an HTTPS `server.public_url` and no
//! `sessions.cookie_domain`, every gateway cookie is `__Host-` prefixed, which a browser
//! accepts only from this very host, `Secure`, with `Path=/` and no `Domain`: no other host
//! can set one. With a `cookie_domain`, the access and refresh cookies must name it, so they
//! are `__Secure-` (only an HTTPS page can set them, but any HTTPS host under the domain
//! can); the CSRF cookie stays `__Host-`. Over plain HTTP the names carry no prefix.
//!
//! A second copy of a name is refused where cookies are read (`credentials::cookie`); the
//! answer to such a request clears every copy it can reach with [`CookieRules::clearing`].

use http::HeaderMap;

use crate::config::PublicUrl;

use super::credentials::{GATEWAY_COOKIES, same_cookie_name, unprefixed};

/// At most this many spellings of the gateway's names are cleared in one answer.
const MAX_CLEARED_NAMES: usize = 4;
/// Path prefixes of the request taken for clearing (segments), each with and without `/`.
const MAX_CLEARED_SEGMENTS: usize = 2;

/// The gateway's cookie names and scopes, fixed at start from `server.public_url`,
/// `sessions.cookie_domain` and `portal.path_prefix`.
#[derive(Clone, Debug)]
pub struct CookieRules {
    /// The access cookie (the access token).
    pub access: &'static str,
    /// The refresh cookie (the refresh token).
    pub refresh: &'static str,
    /// The portal's CSRF cookie.
    pub csrf: &'static str,
    secure: bool,
    /// `sessions.cookie_domain` without a leading dot; `None` for host-only cookies.
    domain: Option<String>,
    /// The `Domain`s a copy may have been set with: the shared domain, the public host and
    /// its parents.
    clear_domains: Vec<String>,
    /// The paths cleared whatever the request: `/` and the portal's prefix.
    clear_paths: Vec<String>,
}

impl CookieRules {
    /// The rules for a gateway at `public_url` (its scheme and host), sharing its cookies
    /// with `cookie_domain` (`""` for none), its portal under `portal_prefix`.
    pub fn new(public_url: &PublicUrl, cookie_domain: &str, portal_prefix: &str) -> Self {
        let secure = public_url.is_https();
        let host = public_url.domain().unwrap_or("").to_ascii_lowercase();
        let domain = Some(cookie_domain.trim_start_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty());
        let (access, refresh, csrf) = match (secure, domain.is_some()) {
            (true, false) => (
                "__Host-portcullis",
                "__Host-portcullis_refresh",
                "__Host-portcullis_csrf",
            ),
            (true, true) => (
                "__Secure-portcullis",
                "__Secure-portcullis_refresh",
                "__Host-portcullis_csrf",
            ),
            (false, _) => ("portcullis", "portcullis_refresh", "portcullis_csrf"),
        };
        let mut clear_domains: Vec<String> = domain.iter().cloned().collect();
        let mut rest = host.as_str();
        // The host and each parent with two labels or more (a public suffix is refused by
        // the browser, harmlessly).
        while rest.contains('.') {
            if !clear_domains.iter().any(|d| d == rest) {
                clear_domains.push(rest.to_owned());
            }
            rest = rest.split_once('.').map_or("", |(_, parent)| parent);
        }
        Self {
            access,
            refresh,
            csrf,
            secure,
            domain,
            clear_domains,
            clear_paths: vec!["/".to_owned(), portal_prefix.to_owned()],
        }
    }

    /// Whether the gateway's cookies are `Secure` (an HTTPS `public_url`).
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// The `Set-Cookie` value (RFC 6265bis §4.1) of gateway cookie `name`: `HttpOnly`,
    /// `SameSite=Lax`, `Path=/`, `Secure` over HTTPS; `Max-Age` in seconds when given
    /// (0 clears it); `Domain=sessions.cookie_domain` when `shared` and one is set.
    pub fn set_cookie(
        &self,
        name: &str,
        value: &str,
        max_age: Option<u64>,
        shared: bool,
    ) -> String {
        let mut out = format!("{name}={value}; Path=/");
        if let Some(seconds) = max_age {
            out.push_str(&format!("; Max-Age={seconds}"));
        }
        out.push_str("; HttpOnly; SameSite=Lax");
        if let Some(domain) = self.domain.as_deref().filter(|_| shared) {
            out.push_str("; Domain=");
            out.push_str(domain);
        }
        if self.secure {
            out.push_str("; Secure");
        }
        out
    }

    /// The `Set-Cookie` values that clear every copy of the gateway's cookies this request
    /// carries: for each spelling of a gateway name it sent, the host-only cookie at `/`
    /// (the gateway's own) and, for each domain a sibling can set a cookie for this host
    /// with (`cookie_domain`, the public host and its parents), every path a copy sent with
    /// this request can have (`/` and the first segments of `request_path`, with and without
    /// a trailing `/`: RFC 6265bis §5.1.4 path-match) and the portal's prefix, where the
    /// browser goes next to sign in. A `__Host-` name has one scope only; prefixed names and an HTTPS
    /// gateway clear with `Secure`. Bounded (a few dozen lines at most), so that no proxy
    /// in front refuses the answer for its size: a copy deeper than the bound is not
    /// cleared, and its requests stay anonymous while it lives.
    pub fn clearing(&self, headers: &HeaderMap, request_path: Option<&str>) -> Vec<String> {
        self.clear(self.sent_names(headers, |_| true), request_path)
    }

    /// As [`CookieRules::clearing`], for the spellings of the gateway's names that are not
    /// the ones it sets (`PORTCULLIS`, a name an earlier version used): a sign-in sends
    /// them with its new cookies, so that no twin is left to make the next request
    /// ambiguous.
    pub fn clearing_strays(&self, headers: &HeaderMap, request_path: Option<&str>) -> Vec<String> {
        let own = [self.access, self.refresh, self.csrf];
        self.clear(
            self.sent_names(headers, |n| !own.contains(&n)),
            request_path,
        )
    }

    /// Each spelling of a gateway name the request sent that `keep` selects, once.
    fn sent_names<'h>(&self, headers: &'h HeaderMap, keep: impl Fn(&str) -> bool) -> Vec<&'h str> {
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in super::credentials::cookie_pairs(headers) {
            let ours = GATEWAY_COOKIES.iter().any(|g| same_cookie_name(g, name));
            if ours && keep(name) && names.len() < MAX_CLEARED_NAMES && !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    fn clear(&self, names: Vec<&str>, request_path: Option<&str>) -> Vec<String> {
        let paths = self.paths_for(request_path);
        let mut out = Vec::new();
        for name in names {
            let prefix_len = name.len() - unprefixed(name).len();
            let secure = if self.secure || prefix_len > 0 {
                "; Secure"
            } else {
                ""
            };
            out.push(format!("{name}=; Path=/; Max-Age=0{secure}"));
            if name[..prefix_len].eq_ignore_ascii_case("__host-") {
                continue;
            }
            for domain in &self.clear_domains {
                for path in &paths {
                    out.push(format!(
                        "{name}=; Path={path}; Max-Age=0; Domain={domain}{secure}"
                    ));
                }
            }
        }
        out
    }

    /// `/`, the portal's prefix (where the sign-in pages a refused browser goes to live) and
    /// the first segments of `request_path` (with and without a trailing `/`), each once.
    fn paths_for(&self, request_path: Option<&str>) -> Vec<String> {
        let mut paths = self.clear_paths.clone();
        let path = request_path
            .and_then(|p| p.split(['?', '#']).next())
            .unwrap_or("");
        let mut end = 0;
        for segment in path.split('/').skip(1).take(MAX_CLEARED_SEGMENTS) {
            if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
                break;
            }
            end += 1 + segment.len();
            for candidate in [&path[..end], &path[..(end + 1).min(path.len())]] {
                if !paths.iter().any(|p| p == candidate) {
                    paths.push(candidate.to_owned());
                }
            }
        }
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> PublicUrl {
        text.parse().expect("a public URL")
    }
    use http::HeaderValue;

    #[test]
    fn names_follow_the_scheme_and_the_shared_domain() {
        let host_only = CookieRules::new(&url("https://auth.example.com"), "", "/auth");
        assert_eq!(
            [host_only.access, host_only.refresh, host_only.csrf],
            [
                "__Host-portcullis",
                "__Host-portcullis_refresh",
                "__Host-portcullis_csrf"
            ]
        );
        let shared = CookieRules::new(&url("https://auth.example.com"), ".example.com", "/auth");
        assert_eq!(
            [shared.access, shared.refresh, shared.csrf],
            [
                "__Secure-portcullis",
                "__Secure-portcullis_refresh",
                "__Host-portcullis_csrf"
            ]
        );
        assert!(
            shared
                .set_cookie(shared.refresh, "t", Some(5), true)
                .ends_with("; Max-Age=5; HttpOnly; SameSite=Lax; Domain=example.com; Secure")
        );
        let plain = CookieRules::new(&url("http://127.0.0.1:8080"), "", "/auth");
        assert_eq!(
            [plain.access, plain.refresh, plain.csrf],
            ["portcullis", "portcullis_refresh", "portcullis_csrf"]
        );
        assert!(plain.clear_domains.is_empty(), "no parent of an address");
    }

    #[test]
    fn clearing_reaches_every_path_and_domain_a_copy_can_have() {
        let rules = CookieRules::new(&url("http://victim.example.test:8080"), "", "/auth");
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_static("Portcullis_Refresh=a; portcullis_refresh=b; x=1"),
        );
        let cleared = rules.clearing(&headers, Some("/app/page?x=1"));
        for expected in [
            "portcullis_refresh=; Path=/; Max-Age=0",
            "Portcullis_Refresh=; Path=/; Max-Age=0",
            "portcullis_refresh=; Path=/; Max-Age=0; Domain=example.test",
            "Portcullis_Refresh=; Path=/app; Max-Age=0; Domain=victim.example.test",
            "portcullis_refresh=; Path=/app/; Max-Age=0; Domain=example.test",
            "portcullis_refresh=; Path=/app/page; Max-Age=0; Domain=example.test",
        ] {
            assert!(
                cleared.iter().any(|c| c == expected),
                "{expected} not in {cleared:#?}"
            );
        }
        assert_eq!(cleared.len(), 2 * (1 + 2 * 5), "{cleared:#?}");
        assert!(
            cleared
                .iter()
                .any(|c| c
                    == "portcullis_refresh=; Path=/auth; Max-Age=0; Domain=victim.example.test")
        );
        assert!(!cleared.iter().any(|c| c.starts_with("x=")));
        assert!(!cleared.iter().any(|c| c.contains("Domain=test")));
        let strays = rules.clearing_strays(&headers, None);
        assert!(
            strays.iter().all(|c| c.starts_with("Portcullis_Refresh=")),
            "{strays:#?}"
        );
        assert!(!strays.is_empty());
        let unknown_path = rules.clearing(&headers, None);
        assert!(
            unknown_path
                .iter()
                .any(|c| c == "portcullis_refresh=; Path=/auth; Max-Age=0; Domain=example.test")
        );

        let https = CookieRules::new(&url("https://auth.example.com"), "", "/auth");
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_static("__Host-portcullis=a; __secure-portcullis=b"),
        );
        let cleared = https.clearing(&headers, None);
        assert_eq!(
            cleared
                .iter()
                .filter(|c| c.starts_with("__Host-portcullis="))
                .collect::<Vec<_>>(),
            ["__Host-portcullis=; Path=/; Max-Age=0; Secure"]
        );
        assert!(cleared.iter().any(
            |c| c == "__secure-portcullis=; Path=/auth; Max-Age=0; Domain=example.com; Secure"
        ));
    }
}
