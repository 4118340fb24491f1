//! What `[[routes]]` may say that is valid but likely unmeant: a route that refuses everyone,
//! a `roles` list read as all-of, and a route whose requests another takes first.

use super::{RouteConfig, path_is_under};

/// How specific a route's `host` is: exact, `*.suffix`, or any host. Routes are chosen by
/// host first (exact, then the longest wildcard suffix, then any host), then by the longest
/// path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// One host: lower case, no trailing dot.
    Exact(String),
    /// `*.example.com`: held as `.example.com`, lower case, no trailing dot; one or more
    /// labels must come before it.
    Wildcard(String),
    /// No `host`: every host, and requests without one.
    Any,
}

impl HostPattern {
    /// The pattern of a route's `host` as written (validated: see `RouteConfig::validate`).
    pub fn of(host: &str) -> Self {
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if host.is_empty() {
            Self::Any
        } else if let Some(suffix) = host.strip_prefix('*') {
            Self::Wildcard(suffix.to_owned())
        } else {
            Self::Exact(host)
        }
    }

    /// Whether a canonical host (lower case, no port, no trailing dot) is matched.
    pub fn matches(&self, host: Option<&str>) -> bool {
        match (self, host) {
            (Self::Any, _) => true,
            (Self::Exact(exact), Some(host)) => exact.eq_ignore_ascii_case(host),
            (Self::Wildcard(suffix), Some(host)) => {
                let Some(split) = host.len().checked_sub(suffix.len()) else {
                    return false;
                };
                let (head, tail) = (&host.as_bytes()[..split], &host.as_bytes()[split..]);
                !head.is_empty()
                    && !head.ends_with(b".")
                    && tail.eq_ignore_ascii_case(suffix.as_bytes())
            }
            (_, None) => false,
        }
    }

    /// The order routes are tried in: lower first.
    pub fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            Self::Exact(_) => (0, std::cmp::Reverse(0)),
            Self::Wildcard(suffix) => (1, std::cmp::Reverse(suffix.len())),
            Self::Any => (2, std::cmp::Reverse(0)),
        }
    }

    /// Whether every host this pattern matches is also matched by `other`, or some are:
    /// whether the two ever compete for a request.
    fn overlaps(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) | (_, Self::Any) => true,
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Exact(h), w @ Self::Wildcard(_)) | (w @ Self::Wildcard(_), Self::Exact(h)) => {
                w.matches(Some(h))
            }
            (Self::Wildcard(a), Self::Wildcard(b)) => {
                a.ends_with(b.as_str()) || b.ends_with(a.as_str())
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(host) => f.write_str(host),
            Self::Wildcard(suffix) => write!(f, "*{suffix}"),
            Self::Any => f.write_str("any host"),
        }
    }
}

/// A route as the warnings name it: `routes[2] ("admin")`.
fn label(i: usize, route: &RouteConfig) -> String {
    let name = if route.name.is_empty() {
        &route.path_prefix
    } else {
        &route.name
    };
    format!("routes[{i}] ({name:?})")
}

/// Every warning about the routes, in config order.
pub(super) fn warnings(routes: &[RouteConfig]) -> Vec<String> {
    let mut warnings = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let rules = route.rules();
        let empty = rules.empty_lists();
        if !empty.is_empty() {
            warnings.push(format!(
                "{} can never let a request through: {} given as an empty list matches \
                 nobody (leave a key out to set no condition)",
                label(i, route),
                empty.join(", ")
            ));
        }
        if route.roles.len() > 1 {
            warnings.push(format!(
                "{}: roles = {:?} lets in an account holding any of these; use all_roles to \
                 require all",
                label(i, route),
                route.roles
            ));
        }
        warnings.extend(shadowing(routes, i));
        if route.name.is_empty()
            && let Some(j) = routes[..i]
                .iter()
                .position(|r| r.display_name() == route.display_name())
        {
            warnings.push(format!(
                "{} and routes[{j}] are both {:?} in metrics and logs (a route without a \
                 name is called by its path): give each a name",
                label(i, route),
                route.display_name()
            ));
        }
    }
    warnings
}

/// Routes that take requests under `routes[b]`'s prefix before it can: a more specific host
/// with a shorter prefix (host is matched before path).
fn shadowing(routes: &[RouteConfig], b: usize) -> Vec<String> {
    let shadowed = &routes[b];
    let b_host = HostPattern::of(&shadowed.host);
    routes
        .iter()
        .enumerate()
        .filter(|&(a, taker)| {
            let a_host = HostPattern::of(&taker.host);
            a != b
                && a_host.rank() < b_host.rank()
                && a_host.overlaps(&b_host)
                && taker.path_prefix.trim_end_matches('/')
                    != shadowed.path_prefix.trim_end_matches('/')
                && path_is_under(&shadowed.path_prefix, &taker.path_prefix)
        })
        .map(|(a, taker)| {
            format!(
                "{} ({}, {}) does not apply to {}: {} ({}, {}) takes those requests first, \
                 as host is matched before path; give that host a route for {} too",
                label(b, shadowed),
                b_host,
                shadowed.path_prefix,
                HostPattern::of(&taker.host),
                label(a, taker),
                HostPattern::of(&taker.host),
                taker.path_prefix,
                shadowed.path_prefix
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_or_more_labels_only() {
        let wild = HostPattern::of("*.Example.com.");
        for host in ["a.example.com", "a.b.example.com", "A.EXAMPLE.COM"] {
            assert!(wild.matches(Some(host)), "{host}");
        }
        for host in [
            "example.com",
            "xexample.com",
            "example.com.evil.test",
            ".example.com",
            "a..example.com",
            "",
        ] {
            assert!(!wild.matches(Some(host)), "{host}");
        }
        assert!(!wild.matches(None));
        assert!(HostPattern::Any.matches(None));
    }

    #[test]
    fn ranks_put_exact_first_then_longer_suffixes() {
        let mut patterns = [
            HostPattern::of(""),
            HostPattern::of("*.example.com"),
            HostPattern::of("*.a.example.com"),
            HostPattern::of("b.a.example.com"),
        ];
        patterns.sort_by_key(HostPattern::rank);
        let order: Vec<String> = patterns.iter().map(ToString::to_string).collect();
        assert_eq!(
            order,
            [
                "b.a.example.com",
                "*.a.example.com",
                "*.example.com",
                "any host"
            ]
        );
    }
}
