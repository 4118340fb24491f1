//! The floor under Portcullis: Pingora forwarding to one upstream and doing nothing else
//! (no routes, no authentication, no header rewriting, no metrics), with the same server
//! settings and allocator as the gateway. `benches/load.sh` runs it beside nginx and
//! Portcullis, so the gap between Portcullis and nginx splits into what Pingora itself costs
//! and what the gateway's own work adds.
//!
//!     bare_proxy LISTEN_ADDR UPSTREAM_ADDR [THREADS]
//!
//! THREADS (default 1) is the number of worker threads, as `server.threads` in the gateway.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use pingora::modules::http::HttpModules;
use pingora::modules::http::compression::ResponseCompressionBuilder;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Bare {
    upstream: SocketAddr,
    /// Keep the response-compression module Pingora installs (disabled) by default.
    default_modules: bool,
    /// Set the gateway's upstream timeouts (connect, read, write, idle) on every peer.
    peer_timeouts: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        if self.default_modules {
            modules.add_module(ResponseCompressionBuilder::enable(0));
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        if self.peer_timeouts {
            // What portcullis::gateway sets for a route with the default timeouts.
            peer.options.connection_timeout = Some(Duration::from_secs(5));
            peer.options.total_connection_timeout = Some(Duration::from_secs(5));
            peer.options.read_timeout = Some(Duration::from_secs(60));
            peer.options.write_timeout = Some(Duration::from_secs(60));
            peer.options.idle_timeout = Some(Duration::from_secs(60));
        }
        Ok(Box::new(peer))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR [THREADS]");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse() else {
        eprintln!("not an address: {upstream}");
        std::process::exit(2);
    };
    let Ok(threads) = args.next().as_deref().unwrap_or("1").parse::<usize>() else {
        eprintln!("THREADS must be a whole number");
        std::process::exit(2);
    };
    // As portcullis::server::build sets them for `serve`.
    let conf = ServerConf {
        threads,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    // Like the gateway, no downstream modules; PINGORA_DEFAULT_MODULES=1 keeps Pingora's
    // default (a disabled compression module), to measure what that costs.
    // PINGORA_PEER_TIMEOUTS=1 sets the gateway's upstream timeouts, to measure their timers.
    let flag = |name: &str| std::env::var_os(name).is_some_and(|v| v == "1");
    let bare = Bare {
        upstream,
        default_modules: flag("PINGORA_DEFAULT_MODULES"),
        peer_timeouts: flag("PINGORA_PEER_TIMEOUTS"),
    };
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, bare);
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
