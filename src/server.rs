//! Assembling and running the Pingora server: the main listener, the admin listener and
//! shutdown; [`startup`] the report `serve` logs once it listens.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tokio::sync::watch;

use crate::app::App;
use crate::config::Config;
use crate::gateway::admin::AdminApp;
use crate::gateway::connections::{Drain, Guarded, Limits};
use crate::gateway::redirect::RedirectApp;
use crate::gateway::reload::{Reloader, Source, unix_now};
use crate::gateway::tls::{CertStore, CertificateError, Certificates};
use crate::gateway::{Gateway, LiveGateway};

pub mod startup;

/// A listener address that cannot be bound, with the config key that names it.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (`{key}`): {source}")]
pub struct BindError {
    key: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
}

/// Tries every listener address before Pingora does: Pingora only logs a failed bind,
/// and an operator needs a non-zero exit with the reason.
pub fn check_binds(config: &Config) -> Result<(), BindError> {
    let redirect = config
        .tls
        .redirect_listen
        .map(|a| ("tls.redirect_listen", a));
    for (key, addr) in [
        ("server.listen", config.server.listen),
        ("server.admin_listen", config.server.admin_listen),
    ]
    .into_iter()
    .chain(redirect)
    {
        TcpListener::bind(addr).map_err(|source| BindError { key, addr, source })?;
    }
    Ok(())
}

/// Reads the certificate files `[tls]` names, as the listener will: the first that cannot
/// be served is the error (naming its key, never quoting it); else a warning for each
/// certificate out of its dates or expiring soon. Nothing when TLS is off.
pub fn check_certificates(config: &Config) -> Result<Vec<String>, CertificateError> {
    if !config.tls.enabled() {
        return Ok(Vec::new());
    }
    Ok(Certificates::load(&config.tls)?.date_warnings(unix_now()))
}

/// How the proxy's worker threads schedule their tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduling {
    /// One single-threaded runtime per worker thread, as nginx runs one event loop per
    /// worker: a request never migrates between threads, which saves the cross-thread
    /// wake-ups of a work-stealing scheduler (about 15% of proxied throughput, measured with
    /// benches/load.sh). Connections are spread over the workers as they arrive. Only for
    /// one server per process: Pingora 0.9.1 can hand a later server's workers the runtimes
    /// of an earlier, stopped one (cloudflare/pingora#981).
    PerThread,
    /// One work-stealing runtime shared by the workers; safe for several servers started and
    /// stopped in one process, as the tests do.
    WorkStealing,
}

/// Builds the Pingora server with both services, and the [`Reloader`] that swaps in the
/// next configuration (read from `source`, when there is one); fails on a route the config
/// cannot express. `drain` counts both listeners' connections (see [`run_forever`]).
pub fn build(
    app: Arc<App>,
    scheduling: Scheduling,
    drain: Arc<Drain>,
    source: Option<Source>,
) -> anyhow::Result<(Server, Arc<Reloader>)> {
    let config = &app.config;
    let grace = config.server.shutdown_grace.as_secs_ceil();
    let conf = ServerConf {
        threads: config.server.threads,
        work_stealing: scheduling == Scheduling::WorkStealing,
        // An upper bound: `run_forever` returns as soon as nothing is in flight.
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let s = &config.server;
    let trusted = Arc::new(ArcSwap::from_pointee(s.trusted_proxies.clone()));
    let current = Arc::new(ArcSwap::from_pointee(Gateway::new(app.clone())?));
    let certificates = if config.tls.enabled() {
        Some(Arc::new(CertStore::new(Certificates::load(&config.tls)?)))
    } else {
        None
    };
    let reloader = Arc::new(Reloader::new(
        current.clone(),
        trusted.clone(),
        source,
        certificates.clone(),
    ));
    reloader.spawn_resolver()?;
    reloader.spawn_certificate_watch()?;
    let limits = |per_ip, total| Limits {
        head_deadline: s.header_read_timeout.get(),
        max_head_bytes: s.max_header_bytes,
        idle: s.keepalive_timeout.get(),
        per_ip,
        total,
        trusted: trusted.clone(),
        access_log: config.logging.access_log,
    };
    if let Some(addr) = config.tls.redirect_listen {
        // The main listener's limits: it faces the same clients.
        let redirect = Guarded::new(
            RedirectApp::new(current.clone(), drain.clone()),
            limits(s.max_connections_per_ip, s.max_connections),
            drain.clone(),
        );
        let mut redirect = Service::new("portcullis-redirect".into(), redirect);
        redirect.threads = Some(1);
        redirect.add_tcp(&addr.to_string());
        server.add_service(redirect);
    }
    let proxy = pingora::proxy::http_proxy(&server.configuration, LiveGateway::new(current));
    let mut proxy = Guarded::new(
        proxy,
        limits(s.max_connections_per_ip, s.max_connections),
        drain.clone(),
    );
    if let Some(store) = certificates {
        proxy = proxy.with_tls(CertStore::server_config(store));
    }
    let mut proxy = Service::new("portcullis".into(), proxy);
    proxy.add_tcp(&s.listen.to_string());

    let admin = Guarded::new(
        AdminApp::new(app.clone(), drain.clone(), reloader.clone()),
        limits(s.admin_max_connections_per_ip, s.admin_max_connections),
        drain,
    );
    let mut admin = Service::new("portcullis-admin".into(), admin);
    admin.threads = Some(1);
    admin.add_tcp(&s.admin_listen.to_string());

    server.add_service(proxy);
    server.add_service(admin);
    Ok((server, reloader))
}

/// Runs the gateway in the foreground until SIGTERM (graceful) or SIGINT (fast).
///
/// On SIGTERM the listeners stop accepting, idle connections close at once and busy ones
/// after their answer; this returns as soon as no connection is left, or when the grace
/// period (`server.shutdown_grace`) is over, whichever comes first. Pingora's own shutdown
/// always sleeps the whole grace period, so the server runs on a thread of its own and is
/// left behind when nothing is in flight any more. `source` reads the configuration again
/// on a reload; `hangups` (from [`handle_hangups`]) is told where SIGHUP's reloads go.
pub fn run_forever(app: Arc<App>, source: Source, hangups: &Hangups) -> anyhow::Result<()> {
    let drain = Arc::new(Drain::default());
    let (server, reloader) = build(app, Scheduling::PerThread, drain.clone(), Some(source))?;
    let _ = hangups.reloader.set(reloader);
    let returned = drain.clone();
    std::thread::Builder::new()
        .name("portcullis-server".into())
        .spawn(move || {
            server.run(RunArgs::default());
            returned.finish();
        })?;
    drain.wait();
    Ok(())
}

/// Where SIGHUP's reloads go, once the gateway runs (see [`handle_hangups`]).
#[derive(Default)]
pub struct Hangups {
    reloader: Arc<OnceLock<Arc<Reloader>>>,
}

/// Handles SIGHUP, whose default action would end the process: it reopens the log files
/// (logrotate's `postrotate` sends it) and reloads the configuration (see
/// [`crate::gateway::reload`]); a SIGHUP before the gateway runs only reopens the files.
/// The handler is installed before this returns: call it first thing in `serve`, so that no
/// SIGHUP during start-up (migrations, key loading) ends the gateway.
pub fn handle_hangups() -> anyhow::Result<Hangups> {
    let hangups = Hangups::default();
    let reloader = hangups.reloader.clone();
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let mut signals = runtime.block_on(async { signal(SignalKind::hangup()) })?;
    std::thread::Builder::new()
        .name("portcullis-signals".into())
        .spawn(move || {
            runtime.block_on(async {
                while signals.recv().await.is_some() {
                    crate::telemetry::reopen_files();
                    tracing::info!("SIGHUP: log files reopened");
                    if let Some(reloader) = reloader.get() {
                        // Blocking (files, DNS) on this thread of its own: a reload's
                        // result is logged by the reloader.
                        let _ = reloader.reload();
                    }
                }
            })
        })?;
    Ok(hangups)
}

/// A gateway running on a background thread; shuts down when dropped.
pub struct RunningGateway {
    /// The instance the gateway serves (its stores, config and core).
    pub app: Arc<App>,
    /// The public listener address (`server.listen`), accepting once `spawn` returns.
    pub addr: SocketAddr,
    /// The admin listener address (`server.admin_listen`): `/metrics` and `/health`.
    pub admin_addr: SocketAddr,
    /// The redirect listener address (`tls.redirect_listen`), when there is one.
    pub redirect_addr: Option<SocketAddr>,
    /// Swaps in another configuration ([`Reloader::apply`]; it has no file to read again).
    pub reloader: Arc<Reloader>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

struct ChannelShutdown(watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for ChannelShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        // An error means the sender is gone, which is as good as a request to stop.
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::FastShutdown
    }
}

/// Starts the gateway on a background thread and waits until both listeners accept.
/// Used by the tests and benchmarks; `serve` uses [`run_forever`].
pub fn spawn(app: Arc<App>) -> anyhow::Result<RunningGateway> {
    check_binds(&app.config)?;
    let addr = app.config.server.listen;
    let admin_addr = app.config.server.admin_listen;
    let redirect_addr = app.config.tls.redirect_listen;
    let (tx, rx) = watch::channel(false);
    let (server, reloader) = build(app.clone(), Scheduling::WorkStealing, Arc::default(), None)?;
    let thread = std::thread::Builder::new()
        .name("portcullis-server".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(ChannelShutdown(rx)),
            })
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    for target in [addr, admin_addr].into_iter().chain(redirect_addr) {
        while TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("gateway did not start listening on {target}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(RunningGateway {
        app,
        addr,
        admin_addr,
        redirect_addr,
        reloader,
        shutdown: tx,
        thread: Some(thread),
    })
}

impl RunningGateway {
    /// `http://addr` of the main listener (`https://` with TLS on).
    pub fn url(&self) -> String {
        let scheme = if self.app.config.tls.enabled() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// `http://addr` of the admin listener.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Stops the server and waits for its threads.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}
