//! What `portcullis serve` tells an operator as it starts: which configuration it runs on
//! and, once both listeners accept, the URLs to open, the route table, whether passkeys
//! work, which upstreams do not answer yet, and a final `ready`.
//!
//! Everything here runs on a thread of its own after the listeners are bound: the upstream
//! probes take up to [`UPSTREAM_PROBE_TIMEOUT`] and never delay or fail the start.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::config::{Config, ConfigSource, DEFAULT_CONFIG_PATH};
use crate::gateway::routes::RouteTable;
use crate::metrics::Metrics;

/// How long an upstream has to accept a TCP connection before the start-up warns about it.
pub const UPSTREAM_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the report waits for the listeners to accept before it gives up.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);

/// Logs which configuration is in use: the file, or the embedded defaults and how to name a
/// file instead.
pub fn log_config_source(source: &ConfigSource) {
    match source {
        ConfigSource::File(path) => {
            tracing::info!(config = %path.display(), "configuration: {}", path.display());
        }
        ConfigSource::Embedded => tracing::info!(
            config = "embedded",
            "configuration: the embedded defaults (no --config or PORTCULLIS_CONFIG given, and \
             no {DEFAULT_CONFIG_PATH} here); data, keys and logs go under this directory"
        ),
    }
}

/// Starts the thread that writes the start-up report once both listeners accept.
pub fn report_when_listening(app: Arc<App>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("portcullis-startup".into())
        .spawn(move || {
            let config = &app.config;
            let listeners = [config.server.listen, config.server.admin_listen];
            if listeners.into_iter().all(wait_accepting) {
                report(config);
            }
        })
        .map(drop)
}

/// The report itself: listeners, routes, passkeys, unreachable upstreams, then `ready`.
fn report(config: &Config) {
    log_listeners(config);
    let table = log_routes(config);
    log_passkeys(config);
    if let Some(table) = table {
        warn_unreachable_upstreams(&table);
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "ready");
}

/// One line per listener with the URLs to open there.
fn log_listeners(config: &Config) {
    let server = &config.server;
    let base = server.public_url.as_str().trim_end_matches('/');
    match config.portal.login_page() {
        Some(page) => tracing::info!(
            listener = "main",
            address = %server.listen,
            "main listener on {}: open {base}/ (sign-in page {base}{page})",
            server.listen
        ),
        None => tracing::info!(
            listener = "main",
            address = %server.listen,
            "main listener on {}: open {base}/ (the portal is off)",
            server.listen
        ),
    }
    let admin = format!("http://{}", reachable(server.admin_listen));
    tracing::info!(
        listener = "admin",
        address = %server.admin_listen,
        "admin listener on {}: metrics {admin}/metrics, health {admin}/health",
        server.admin_listen
    );
    if let Some(redirect) = config.tls.redirect_listen {
        tracing::info!(
            listener = "redirect",
            address = %redirect,
            "redirect listener on {redirect}: plain HTTP, every request sent to {base}"
        );
    }
}

/// The route table in match order, one line each (`Route::describe`, as check-config
/// prints it); `None` when it cannot be built (the gateway built it already, so only a
/// changed DNS answer gets here).
fn log_routes(config: &Config) -> Option<RouteTable> {
    let table = match RouteTable::from_config(config, &Metrics::new()) {
        Ok(table) => table,
        Err(e) => {
            tracing::warn!("the route table cannot be shown: {e}");
            return None;
        }
    };
    if config.routes.is_empty() {
        tracing::info!("no routes: only the account API and the portal answer");
    }
    for route in table.iter() {
        tracing::info!(route = %route.name, "route {}", route.describe());
    }
    Some(table)
}

/// Whether passkeys work, and why not when they do not.
fn log_passkeys(config: &Config) {
    match crate::passkeys::relying_party_of(config.server.public_url.as_str()) {
        Ok((rp_id, origin)) => tracing::info!(
            "passkeys: on (relying-party id {rp_id}, origin {})",
            origin.as_str().trim_end_matches('/')
        ),
        Err(reason) => tracing::info!("passkeys: off: {reason}"),
    }
}

/// One warning per upstream address that does not accept a TCP connection within
/// [`UPSTREAM_PROBE_TIMEOUT`], naming the routes it serves. The probes run at once, one
/// thread each, so the report waits one timeout at most.
fn warn_unreachable_upstreams(table: &RouteTable) {
    let mut upstreams: Vec<(SocketAddr, String, Vec<String>)> = Vec::new();
    for route in table.iter() {
        let addr = route.upstream.addr;
        match upstreams.iter_mut().find(|(a, _, _)| *a == addr) {
            Some((_, _, names)) => names.push(route.name.clone()),
            None => upstreams.push((addr, route.upstream.authority(), vec![route.name.clone()])),
        }
    }
    std::thread::scope(|scope| {
        for (addr, authority, routes) in &upstreams {
            scope.spawn(move || probe_upstream(*addr, authority, routes));
        }
    });
}

/// Connects to one upstream address; warns when it does not accept within
/// [`UPSTREAM_PROBE_TIMEOUT`].
fn probe_upstream(addr: SocketAddr, authority: &str, routes: &[String]) {
    let Err(e) = TcpStream::connect_timeout(&addr, UPSTREAM_PROBE_TIMEOUT) else {
        return;
    };
    let shown = if authority == addr.to_string() {
        authority.to_owned()
    } else {
        format!("{authority} ({addr})")
    };
    let (noun, verb) = if routes.len() == 1 {
        ("route", "answers")
    } else {
        ("routes", "answer")
    };
    tracing::warn!(
        upstream = %authority,
        address = %addr,
        routes = %routes.join(","),
        "upstream {shown} does not accept connections ({e}): {noun} {} {verb} 502 until it does",
        routes.join(", ")
    );
}

/// Waits until `addr` accepts a connection; `false` after [`LISTEN_DEADLINE`].
fn wait_accepting(addr: SocketAddr) -> bool {
    let target = reachable(addr);
    let deadline = Instant::now() + LISTEN_DEADLINE;
    while TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A listener address as this host reaches it: a wildcard address becomes loopback.
pub fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9100".parse().unwrap();
        let v6: SocketAddr = "[::]:9100".parse().unwrap();
        let own: SocketAddr = "10.0.0.1:9100".parse().unwrap();
        assert_eq!(reachable(v4), "127.0.0.1:9100".parse().unwrap());
        assert_eq!(reachable(v6), "[::1]:9100".parse().unwrap());
        assert_eq!(reachable(own), own);
    }
}
