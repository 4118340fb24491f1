//! The route table: `[[routes]]` matched on host, then the longest path prefix.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Policy, RouteConfig, Upstream};
use crate::domain::RateSpec;
use crate::metrics::{Metrics, RouteMetrics};

/// One route, resolved and ready for the hot path.
#[derive(Debug)]
pub struct Route {
    /// Label for metrics and logs; from config, so the label set is bounded.
    pub name: String,
    /// Lower-case host to match, or empty for any host.
    pub host: String,
    pub path_prefix: String,
    pub upstream: Upstream,
    pub policy: Policy,
    pub roles: Vec<String>,
    /// Users who have not proved their email address are refused.
    pub require_verified_email: bool,
    pub rate_limit: Option<RateSpec>,
    /// The rate-limit scope (`route:<name>`), built once.
    pub rate_limit_scope: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// This route's metric series.
    pub metrics: RouteMetrics,
}

impl Route {
    fn from_config(cfg: &RouteConfig, config: &Config, metrics: &Metrics) -> Result<Self, String> {
        let name = if cfg.name.is_empty() {
            cfg.path_prefix.clone()
        } else {
            cfg.name.clone()
        };
        Ok(Self {
            rate_limit_scope: format!("route:{name}"),
            metrics: RouteMetrics::new(metrics, &name),
            name,
            host: cfg.host.to_ascii_lowercase(),
            path_prefix: cfg.path_prefix.clone(),
            upstream: Upstream::parse(&cfg.upstream)?,
            policy: cfg.policy,
            roles: cfg.roles.clone(),
            require_verified_email: cfg.require_verified_email,
            rate_limit: cfg.rate_limit,
            connect_timeout: config.server.upstream_connect_timeout.get(),
            read_timeout: cfg.timeout.unwrap_or(config.server.upstream_timeout).get(),
        })
    }

    /// Whether `path` falls under this route's prefix, on a segment boundary:
    /// `/app` matches `/app`, `/app/x` and `/app?q`, but not `/application`.
    fn matches_path(&self, path: &str) -> bool {
        let prefix = self.path_prefix.as_str();
        if prefix.ends_with('/') {
            return path.starts_with(prefix) || path == &prefix[..prefix.len() - 1];
        }
        match path.strip_prefix(prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// All routes, ordered so that the first match is the right one.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Host-specific routes first, then catch-all ones; each group by descending prefix length.
    routes: Vec<Arc<Route>>,
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
        routes.sort_by_key(|r| (r.host.is_empty(), std::cmp::Reverse(r.path_prefix.len())));
        Ok(Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        })
    }

    /// The route for a request, if any. `host` may carry a port, which is ignored.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        let host = host.map(strip_port).unwrap_or("");
        self.routes.iter().find(|r| {
            (r.host.is_empty() || r.host.eq_ignore_ascii_case(host)) && r.matches_path(path)
        })
    }

    /// Every route, in match order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }
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
