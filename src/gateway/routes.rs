//! The route table: `[[routes]]` matched on host, then the longest path prefix.

use std::sync::Arc;
use std::time::Duration;

use super::canonical::{self, PathFlags, Refusal};
use crate::config::{Config, HostPattern, Policy, RouteConfig, RouteGuard, Upstream};
use crate::domain::RateSpec;
use crate::metrics::{Metrics, RouteMetrics};

/// One route, resolved and ready for the hot path.
#[derive(Debug)]
pub struct Route {
    /// Label for metrics and logs; from config, so the label set is bounded.
    pub name: String,
    /// The hosts this route serves: exact, `*.suffix`, or any.
    pub host: HostPattern,
    /// Path prefix to match on a segment boundary (`/app` matches `/app/x`, not `/apps`).
    pub path_prefix: String,
    /// Where matching requests are forwarded.
    pub upstream: Upstream,
    /// Who may pass: the policy and its conditions (methods, networks, who, roles), parsed
    /// at load; shared with forward-auth's decisions.
    pub guard: Arc<RouteGuard>,
    /// This route's limit per client address; `None` for no limit.
    pub rate_limit: Option<RateSpec>,
    /// The rate-limit scope (`route:<name>`), built once.
    pub rate_limit_scope: String,
    /// Time allowed to connect to the upstream (`server.upstream_connect_timeout`).
    pub connect_timeout: Duration,
    /// Time allowed for each upstream read or write (the route's `timeout`, else
    /// `server.upstream_timeout`).
    pub read_timeout: Duration,
    /// Whether an encoded slash (`%2F`) may reach this route's upstream.
    pub allow_encoded_slashes: bool,
    /// Whether `;` path parameters may reach this route's upstream.
    pub allow_path_parameters: bool,
    /// Whether a client's own `Authorization` (never a Portcullis token) is forwarded.
    pub forward_authorization: bool,
    /// This route's metric series.
    pub metrics: RouteMetrics,
}

impl Route {
    fn from_config(cfg: &RouteConfig, config: &Config, metrics: &Metrics) -> Result<Self, String> {
        // Requests are matched in canonical form, so a prefix or host in another form could
        // never match: say so at start instead.
        match canonical::canonical_path(&cfg.path_prefix) {
            Ok((canonical, flags)) if canonical == cfg.path_prefix && flags.is_plain() => {}
            Ok((canonical, _)) if canonical == cfg.path_prefix => {
                return Err(format!(
                    "path_prefix {:?} holds `;` or an encoded `/` (`%2F`), which a prefix cannot \
                     hold (a route's allow_path_parameters and allow_encoded_slashes are about \
                     the requests under it)",
                    cfg.path_prefix
                ));
            }
            Ok((canonical, _)) => {
                return Err(format!(
                    "path_prefix {:?} is not in canonical form; write it as {canonical:?}",
                    cfg.path_prefix
                ));
            }
            Err(_) => {
                return Err(format!(
                    "path_prefix {:?} holds characters requests may not carry",
                    cfg.path_prefix
                ));
            }
        }
        let bare_host = cfg.host.strip_prefix("*.").unwrap_or(&cfg.host);
        if !cfg.host.is_empty()
            && (bare_host.contains(':') || canonical::canonical_host(bare_host).is_err())
        {
            return Err(format!(
                "host {:?} is not a host name (without port), e.g. \"app.example.com\"",
                cfg.host
            ));
        }
        let name = cfg.display_name().to_owned();
        Ok(Self {
            rate_limit_scope: format!("route:{name}"),
            metrics: RouteMetrics::new(metrics, &name),
            name,
            host: HostPattern::of(&cfg.host),
            path_prefix: cfg.path_prefix.clone(),
            upstream: Upstream::parse(&cfg.upstream).map_err(|e| format!("upstream: {e}"))?,
            guard: Arc::new(cfg.guard()),
            rate_limit: cfg.rate_limit,
            connect_timeout: config.server.upstream_connect_timeout.get(),
            read_timeout: cfg.timeout.unwrap_or(config.server.upstream_timeout).get(),
            allow_encoded_slashes: cfg.allow_encoded_slashes,
            allow_path_parameters: cfg.allow_path_parameters,
            forward_authorization: cfg.forward_authorization,
        })
    }

    /// One line of `check-config`'s route table: name, host, path, methods, networks, and
    /// who may pass.
    pub fn describe(&self) -> String {
        let rules = &self.guard.rules;
        let list = |items: Option<Vec<String>>| match items {
            None => "any".to_owned(),
            Some(items) if items.is_empty() => "none".to_owned(),
            Some(items) => items.join(","),
        };
        let methods = list(
            rules
                .methods
                .as_ref()
                .map(|m| m.iter().map(ToString::to_string).collect()),
        );
        let networks = list(
            rules
                .networks
                .as_ref()
                .map(|n| n.iter().map(ToString::to_string).collect()),
        );
        format!(
            "{}: host {} path {} methods {methods} networks {networks} -> {}",
            self.name,
            self.host,
            self.path_prefix,
            who(&self.guard)
        )
    }

    /// Whether `path` falls under this route's prefix, on a segment boundary:
    /// `/app` matches `/app`, `/app/x` and `/app?q`, but not `/application`.
    fn matches_path(&self, path: &str, ignore_case: bool) -> bool {
        // `/app/` covers what `/app` does: the final slash marks a directory, not a segment.
        let prefix = self.path_prefix.trim_end_matches('/');
        crate::config::is_under(path, prefix, ignore_case)
    }
}

/// All routes, ordered so that the first match is the right one.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Exact hosts first, then wildcards (the longest suffix first), then any host; each
    /// group by descending prefix length.
    routes: Vec<Arc<Route>>,
    /// Whether any prefix holds an upper-case letter (then every path gets the case check).
    has_upper_case_prefix: bool,
}

/// The non-ASCII letters whose Unicode case mapping is an ASCII letter, as a canonical path
/// spells them (UTF-8, percent-encoded): `ı` (upper case `I`), `İ` (lower case `i` plus a
/// dot), `ſ` (upper case `S`) and the Kelvin sign `K` (lower case `k`). Java's
/// `equalsIgnoreCase` and .NET's `OrdinalIgnoreCase` read `/adm%C4%B1n` as `/admin`.
const FOLDS_TO_ASCII: [(&str, &str); 4] = [
    ("%C4%B1", "i"),
    ("%C4%B0", "i"),
    ("%C5%BF", "s"),
    ("%E2%84%AA", "k"),
];

/// The path as an upstream that folds Unicode case would compare it, when that differs.
fn unicode_case_folded(path: &str) -> Option<String> {
    if !FOLDS_TO_ASCII.iter().any(|(from, _)| path.contains(from)) {
        return None;
    }
    let folded = FOLDS_TO_ASCII
        .iter()
        .fold(path.to_owned(), |p, (from, to)| p.replace(from, to));
    (folded != path).then_some(folded)
}

fn same_route(a: Option<&Arc<Route>>, b: Option<&Arc<Route>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl RouteTable {
    /// Builds the table from validated config (upstreams are resolved here, once).
    pub fn from_config(config: &Config, metrics: &Metrics) -> Result<Self, String> {
        let mut routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Route::from_config(r, config, metrics).map_err(|e| format!("routes[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Stable sort keeps config order among equals, so "first match wins" still holds.
        routes.sort_by_key(|r| (r.host.rank(), std::cmp::Reverse(r.path_prefix.len())));
        Ok(Self {
            has_upper_case_prefix: routes
                .iter()
                .any(|r| r.path_prefix.bytes().any(|b| b.is_ascii_uppercase())),
            routes: routes.into_iter().map(Arc::new).collect(),
        })
    }

    /// The route for a request, if any. `host` may carry a port, which is ignored.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.find_with(host, path, false)
    }

    fn find_with(&self, host: Option<&str>, path: &str, ignore_case: bool) -> Option<&Arc<Route>> {
        let host = host
            .map(strip_port)
            .map(|h| h.strip_suffix('.').unwrap_or(h));
        self.routes
            .iter()
            .find(|r| r.host.matches(host) && r.matches_path(path, ignore_case))
    }

    /// The route for a canonical request, or why it must be refused.
    ///
    /// Besides the match itself, every other reading an upstream may give the path must
    /// land on the same route: ignoring letter case (IIS, some frameworks), dropping the
    /// trailing dots and spaces of segments (Windows), decoding `%2F`
    /// into a separator (when the route allows encoded slashes) and dropping `;` parameters
    /// (when the route allows them; Tomcat, Jetty, Spring). Otherwise the request is refused,
    /// so no upstream can resolve it to a path under a policy that was not checked.
    ///
    /// # Errors
    ///
    /// [`Refusal::AmbiguousCase`], [`Refusal::EncodedSlash`] or [`Refusal::PathParameters`].
    pub fn route_for(
        &self,
        host: Option<&str>,
        path: &str,
        flags: PathFlags,
    ) -> Result<Option<&Arc<Route>>, Refusal> {
        let route = self.find(host, path);
        if (self.has_upper_case_prefix || path.bytes().any(|b| b.is_ascii_uppercase()))
            && !same_route(route, self.find_with(host, path, true))
        {
            return Err(Refusal::AmbiguousCase);
        }
        if let Some(reading) = canonical::windows_reading(path) {
            self.same_everywhere(host, &reading?, route, Refusal::AmbiguousCase)?;
        }
        if let Some(folded) = unicode_case_folded(path) {
            self.same_everywhere(host, &folded, route, Refusal::AmbiguousCase)?;
        }
        if flags.is_plain() {
            return Ok(route);
        }
        let Some(chosen) = route else {
            return Err(if flags.encoded_slash {
                Refusal::EncodedSlash
            } else {
                Refusal::PathParameters
            });
        };
        if flags.encoded_slash {
            if !chosen.allow_encoded_slashes {
                return Err(Refusal::EncodedSlash);
            }
            let decoded = canonical::with_slashes_decoded(path)?;
            self.same_everywhere(host, &decoded, route, Refusal::EncodedSlash)?;
        }
        if flags.path_parameters {
            if !chosen.allow_path_parameters {
                return Err(Refusal::PathParameters);
            }
            let stripped = canonical::without_path_parameters(path)?;
            self.same_everywhere(host, &stripped, route, Refusal::PathParameters)?;
            if flags.encoded_slash {
                let both = canonical::with_slashes_decoded(&stripped)?;
                self.same_everywhere(host, &both, route, Refusal::PathParameters)?;
            }
        }
        Ok(route)
    }

    /// Checks that `alternative` lands on `route` both with and without letter case.
    fn same_everywhere(
        &self,
        host: Option<&str>,
        alternative: &str,
        route: Option<&Arc<Route>>,
        refusal: Refusal,
    ) -> Result<(), Refusal> {
        let same = same_route(route, self.find_with(host, alternative, false))
            && same_route(route, self.find_with(host, alternative, true));
        if same { Ok(()) } else { Err(refusal) }
    }

    /// Every route, in match order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// The routes of `fresh`, the same configuration resolved again, whose upstream address
    /// differs from this table's: (route name, new address).
    pub fn upstream_changes(&self, fresh: &RouteTable) -> Vec<(String, std::net::SocketAddr)> {
        self.routes
            .iter()
            .zip(&fresh.routes)
            .filter(|(old, new)| old.upstream.addr != new.upstream.addr)
            .map(|(_, new)| (new.name.clone(), new.upstream.addr))
            .collect()
    }
}

/// Who may pass a route, in words: the policy, then each condition on the account.
fn who(guard: &RouteGuard) -> String {
    let mut parts = vec![match guard.policy {
        Policy::Public => "anyone".to_owned(),
        Policy::Deny => "nobody".to_owned(),
        Policy::Authenticated => "signed in".to_owned(),
        Policy::TwoFactor => "signed in with a second factor".to_owned(),
    }];
    let rules = &guard.rules;
    if guard.verified_email && matches!(guard.policy, Policy::Authenticated | Policy::TwoFactor) {
        parts.push("verified address".into());
    }
    if rules.users.is_some() || rules.emails.is_some() {
        let mut named: Vec<String> = rules
            .users
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        named.extend(rules.emails.iter().flatten().map(|e| e.as_str().to_owned()));
        parts.push(format!("account one of [{}]", named.join(", ")));
    }
    if let Some(domains) = &rules.email_domains {
        let domains: Vec<String> = domains.iter().map(ToString::to_string).collect();
        parts.push(format!("address at one of [{}]", domains.join(", ")));
    }
    if !rules.roles.is_empty() {
        parts.push(format!("any of roles [{}]", rules.roles.join(", ")));
    }
    if !rules.all_roles.is_empty() {
        parts.push(format!("all of roles [{}]", rules.all_roles.join(", ")));
    }
    if let Some(age) = guard.max_auth_age {
        parts.push(format!("signed in within {age}"));
    }
    parts.join("; ")
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table(routes: &str) -> RouteTable {
        let config = Config::load_from(Path::new("t.toml"), routes, Vec::new()).unwrap();
        RouteTable::from_config(&config, &Metrics::new()).unwrap()
    }

    const ROUTES: &str = r#"
        [[routes]]
        name = "root"
        path_prefix = "/"
        upstream = "http://127.0.0.1:3000"
        [[routes]]
        name = "app"
        path_prefix = "/app"
        upstream = "http://127.0.0.1:3001"
        [[routes]]
        name = "app-admin"
        path_prefix = "/app/admin/"
        upstream = "http://127.0.0.1:3002"
        [[routes]]
        name = "docs-host"
        host = "Docs.Example.com"
        path_prefix = "/"
        upstream = "http://127.0.0.1:3003"
    "#;

    #[test]
    fn a_prefix_with_parameters_or_an_encoded_slash_says_it_cannot_be_one() {
        for prefix in ["/adm;in", "/a%2Fb"] {
            let text = format!(
                "[[routes]]\nname = \"r\"\npath_prefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:1\"\nallow_path_parameters = true\nallow_encoded_slashes = true\n"
            );
            let config = Config::load_from(Path::new("t.toml"), &text, Vec::new()).unwrap();
            let err = RouteTable::from_config(&config, &Metrics::new()).unwrap_err();
            assert!(
                err.contains("which a prefix cannot hold"),
                "{prefix}: {err}"
            );
        }
    }

    #[test]
    fn upstream_changes_name_the_routes_whose_address_moved() {
        let before = table(ROUTES);
        assert!(before.upstream_changes(&table(ROUTES)).is_empty());
        let moved = ROUTES
            .replace("127.0.0.1:3001", "127.0.0.2:3001")
            .replace("127.0.0.1:3003", "[::1]:3003");
        let changes = before.upstream_changes(&table(&moved));
        let mut changes: Vec<String> = changes
            .iter()
            .map(|(route, addr)| format!("{route} {addr}"))
            .collect();
        changes.sort();
        assert_eq!(changes, ["app 127.0.0.2:3001", "docs-host [::1]:3003"]);
    }

    fn name(t: &RouteTable, host: Option<&str>, path: &str) -> Option<String> {
        t.find(host, path).map(|r| r.name.clone())
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(ROUTES);
        assert_eq!(
            name(&t, None, "/app/admin/users").as_deref(),
            Some("app-admin")
        );
        assert_eq!(name(&t, None, "/app/admin").as_deref(), Some("app-admin"));
        assert_eq!(name(&t, None, "/app/x").as_deref(), Some("app"));
        assert_eq!(name(&t, None, "/app").as_deref(), Some("app"));
        assert_eq!(name(&t, None, "/application").as_deref(), Some("root"));
        assert_eq!(name(&t, None, "/").as_deref(), Some("root"));
    }

    #[test]
    fn host_routes_come_first_and_ignore_case_and_port() {
        let t = table(ROUTES);
        assert_eq!(
            name(&t, Some("docs.example.com:8080"), "/app").as_deref(),
            Some("docs-host")
        );
        assert_eq!(
            name(&t, Some("other.example.com"), "/app").as_deref(),
            Some("app")
        );
    }

    #[test]
    fn exact_hosts_then_longer_wildcards_then_any_host() {
        let route = |name: &str, host: &str, prefix: &str| {
            format!(
                "[[routes]]\nname = \"{name}\"\nhost = \"{host}\"\npath_prefix = \"{prefix}\"\n\
                 upstream = \"http://127.0.0.1:1\"\n"
            )
        };
        let t = table(
            &[
                route("any", "", "/"),
                route("any-deep", "", "/a/b/c"),
                route("wild", "*.example.com", "/"),
                route("wild-long", "*.b.example.com", "/"),
                route("exact", "a.b.example.com", "/a"),
            ]
            .concat(),
        );
        let cases = [
            ("a.b.example.com", "/a/b/c", Some("exact")),
            ("a.b.example.com", "/x", Some("wild-long")),
            ("x.b.example.com", "/a/b/c", Some("wild-long")),
            ("b.example.com", "/x", Some("wild")),
            ("B.Example.Com.:8080", "/x", Some("wild")),
            ("example.com", "/a/b/c", Some("any-deep")),
            ("example.com.evil.test", "/x", Some("any")),
            ("xexample.com", "/x", Some("any")),
        ];
        for (host, path, expected) in cases {
            assert_eq!(
                name(&t, Some(host), path).as_deref(),
                expected,
                "{host}{path}"
            );
        }
        assert_eq!(name(&t, None, "/x").as_deref(), Some("any"));
    }

    #[test]
    fn no_route_no_match() {
        let t = table("[[routes]]\npath_prefix = \"/only\"\nupstream = \"http://127.0.0.1:1\"\n");
        assert!(t.find(None, "/").is_none());
        assert!(t.find(None, "/onlyx").is_none());
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
