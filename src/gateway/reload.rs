//! Reloading the configuration without a restart (`SIGHUP`, `portcullis reload`, the admin
//! listener's `POST /reload`), and resolving upstream names again as time passes.
//!
//! A reload reads the file, validates it completely and builds the whole next generation —
//! keys, languages, mail templates, account core, portal, route table with its upstreams
//! resolved — beside the running one; only then is it swapped in, in one step
//! ([`super::live`]). Any failure keeps the running generation and says why. Settings that
//! need a restart keep their running values and are named in the log
//! (`Config::keep_restart_settings`).
//!
//! With TLS on, a reload reads the certificate files again too, before anything is swapped:
//! a file that cannot be served refuses the reload and the running certificates stay. The
//! files are also watched (`tls.watch_interval`): a change of one is read and swapped in by
//! itself ([`Reloader::refresh_certificates`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use prometheus::{Gauge, IntCounterVec, IntGauge, Opts};

use super::Gateway;
use super::live::Current;
use super::routes::RouteTable;
use super::tls::{CertStore, CertificateError, Certificates};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;

/// How the configuration is read again: the file the gateway started from (or the embedded
/// defaults), with the environment overrides.
pub struct Source {
    /// What is read, as a reload's answer names it: the file's absolute path, or "the
    /// embedded default configuration".
    pub name: String,
    /// Reads and validates it.
    pub load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was started without a file to read again (tests, embedded use).
    #[error("this instance has no configuration file to read again")]
    NoSource,
    /// The file does not load or does not validate.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// The file is valid but its parts cannot be built (a key file, a template, an upstream
    /// that does not resolve).
    #[error("{0:#}")]
    Unbuildable(anyhow::Error),
    /// A certificate or key file cannot be served; the running certificates stay.
    #[error("{0}")]
    Certificate(#[from] CertificateError),
}

/// A reload that took effect.
#[derive(Debug)]
pub struct Reloaded {
    /// What was read ([`Source::name`]); empty for [`Reloader::apply`].
    pub source: String,
    /// The generation now serving.
    pub generation: u64,
    /// The changed settings that keep their running values until a restart.
    pub restart_needed: Vec<&'static str>,
}

/// `portcullis_config_*`: which generation serves, and how the last reload went.
struct ReloadMetrics {
    generation: IntGauge,
    last_successful: IntGauge,
    last_timestamp: Gauge,
    reloads: IntCounterVec,
}

impl ReloadMetrics {
    fn new(metrics: &Metrics) -> Self {
        let gauge = |name: &str, help: &str| {
            IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("static metric: {e}"))
        };
        let this = Self {
            generation: gauge(
                "config_generation",
                "The configuration serving: 1 at start, one more with each reload",
            ),
            last_successful: gauge(
                "config_last_reload_successful",
                "Whether the last reload took effect (1) or was refused (0); 1 before any",
            ),
            last_timestamp: Gauge::new(
                "config_last_reload_timestamp_seconds",
                "When the last reload was tried, Unix seconds; 0 before any",
            )
            .unwrap_or_else(|e| unreachable!("static metric: {e}")),
            reloads: IntCounterVec::new(
                Opts::new("config_reloads_total", "Reloads tried, by result"),
                &["result"],
            )
            .unwrap_or_else(|e| unreachable!("static metric: {e}")),
        };
        this.generation.set(1);
        this.last_successful.set(1);
        metrics.register(Box::new(this.generation.clone()));
        metrics.register(Box::new(this.last_successful.clone()));
        metrics.register(Box::new(this.last_timestamp.clone()));
        metrics.register(Box::new(this.reloads.clone()));
        this
    }

    fn record(&self, result: &Result<Reloaded, ReloadError>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_timestamp.set(now);
        match result {
            Ok(reloaded) => {
                self.generation.set(reloaded.generation as i64);
                self.last_successful.set(1);
                self.reloads.with_label_values(&["ok"]).inc();
            }
            Err(_) => {
                self.last_successful.set(0);
                self.reloads.with_label_values(&["refused"]).inc();
            }
        }
    }
}

/// Swaps in the next generation of the configuration; one reload at a time.
pub struct Reloader {
    current: Current,
    /// `server.trusted_proxies` as the connection guard reads it.
    trusted: Arc<ArcSwap<Vec<IpNet>>>,
    source: Option<Source>,
    /// The main listener's certificates, when it speaks TLS.
    certificates: Option<Arc<CertStore>>,
    /// Held through a reload, a re-resolution and a certificate refresh, so that none undoes
    /// another.
    busy: Mutex<()>,
    metrics: ReloadMetrics,
}

impl Reloader {
    /// Reloads into `current` (and the guard's `trusted`, and `certificates` with TLS on),
    /// reading `source` again; without a source only [`Reloader::apply`] works.
    pub fn new(
        current: Current,
        trusted: Arc<ArcSwap<Vec<IpNet>>>,
        source: Option<Source>,
        certificates: Option<Arc<CertStore>>,
    ) -> Self {
        let metrics = ReloadMetrics::new(&current.load().app.metrics);
        Self {
            current,
            trusted,
            source,
            certificates,
            busy: Mutex::new(()),
            metrics,
        }
    }

    /// The generation serving now.
    pub fn current(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Reads the configuration again and applies it (see [`Reloader::apply`]). Blocking:
    /// files are read and upstream names resolved on the calling thread.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let Some(source) = &self.source else {
            return self.finish(Err(ReloadError::NoSource));
        };
        match (source.load)() {
            Ok(config) => self.apply(config).map(|reloaded| Reloaded {
                source: source.name.clone(),
                ..reloaded
            }),
            Err(e) => self.finish(Err(e.into())),
        }
    }

    /// Builds the next generation from `config` and swaps it in, or leaves the running one
    /// as it is and says why. Each outcome is logged and counted.
    pub fn apply(&self, mut config: Config) -> Result<Reloaded, ReloadError> {
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let running = self.current.load_full();
        let restart_needed = match config.keep_restart_settings(&running.app.config) {
            Ok(changed) => changed,
            Err(e) => return self.finish(Err(e.into())),
        };
        let warnings = config.warnings();
        let trusted = config.server.trusted_proxies.clone();
        let certificates = match &self.certificates {
            Some(_) => match Certificates::load(&config.tls) {
                Ok(loaded) => Some(loaded),
                Err(e) => return self.finish(Err(e.into())),
            },
            None => None,
        };
        let next = running
            .app
            .reconfigured(config)
            .and_then(Gateway::new)
            .map_err(ReloadError::Unbuildable);
        let result = next.map(|mut next| {
            next.generation = running.generation + 1;
            let generation = next.generation;
            self.current.store(Arc::new(next));
            self.trusted.store(Arc::new(trusted));
            if let (Some(store), Some(loaded)) = (&self.certificates, certificates) {
                store.install(loaded);
            }
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            Reloaded {
                source: String::new(),
                generation,
                restart_needed,
            }
        });
        self.finish(result)
    }

    fn finish(&self, result: Result<Reloaded, ReloadError>) -> Result<Reloaded, ReloadError> {
        match &result {
            Ok(r) if r.restart_needed.is_empty() => {
                tracing::info!(generation = r.generation, "configuration reloaded");
            }
            Ok(r) => tracing::warn!(
                generation = r.generation,
                "configuration reloaded; these settings changed but keep their running values \
                 until a restart: {}",
                r.restart_needed.join(", ")
            ),
            Err(e) => tracing::error!("configuration reload refused, the running one stays: {e}"),
        }
        self.metrics.record(&result);
        result
    }

    /// Resolves every upstream name again and, when an address changed, swaps in the same
    /// generation with the new addresses. A name that no longer resolves keeps its last
    /// address (logged). `true` when something changed.
    pub fn resolve_upstreams(&self) -> bool {
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let running = self.current.load_full();
        let fresh = match RouteTable::from_config(&running.app.config, &running.app.metrics) {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!("upstreams not resolved again, the last addresses stay: {e}");
                return false;
            }
        };
        let changed = running.routes.upstream_changes(&fresh);
        if changed.is_empty() {
            return false;
        }
        for (route, addr) in &changed {
            tracing::info!(route = %route, upstream = %addr, "upstream resolves to a new address");
        }
        self.current.store(Arc::new(running.with_routes(fresh)));
        true
    }

    /// Resolves upstream names again every `server.upstream_resolve_interval` (read from the
    /// generation serving at each turn) on a thread of its own, for the life of the process.
    pub fn spawn_resolver(self: &Arc<Self>) -> std::io::Result<()> {
        let reloader = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("portcullis-resolver".into())
            .spawn(move || {
                loop {
                    let Some(interval) = reloader.upgrade().map(|r| r.resolve_interval()) else {
                        return;
                    };
                    std::thread::sleep(interval);
                    match reloader.upgrade() {
                        Some(r) => {
                            r.resolve_upstreams();
                        }
                        None => return,
                    }
                }
            })
            .map(drop)
    }

    /// Reads the certificate files of the serving configuration again when one changed
    /// since they were last read, and serves them; a change that cannot be served is logged
    /// (once) and the running certificates stay. `true` when new certificates serve.
    pub fn refresh_certificates(&self) -> bool {
        let Some(store) = &self.certificates else {
            return false;
        };
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let running = self.current.load_full();
        match store.refresh_if_changed(&running.app.config.tls) {
            None => false,
            Some(Ok(())) => {
                tracing::info!("certificate files changed: the new certificates serve");
                for warning in store.current().date_warnings(unix_now()) {
                    tracing::warn!("{warning}");
                }
                true
            }
            Some(Err(e)) => {
                tracing::error!(
                    "certificate files changed but cannot be served, the running certificates stay: {e}"
                );
                false
            }
        }
    }

    /// Looks at the certificate files every `tls.watch_interval` (read from the generation
    /// serving at each turn) on a thread of its own, for the life of the process; nothing
    /// when TLS is off.
    pub fn spawn_certificate_watch(self: &Arc<Self>) -> std::io::Result<()> {
        if self.certificates.is_none() {
            return Ok(());
        }
        let reloader = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("portcullis-tls-watch".into())
            .spawn(move || {
                loop {
                    let Some(interval) = reloader.upgrade().map(|r| r.watch_interval()) else {
                        return;
                    };
                    std::thread::sleep(interval);
                    match reloader.upgrade() {
                        Some(r) => {
                            r.refresh_certificates();
                        }
                        None => return,
                    }
                }
            })
            .map(drop)
    }

    fn watch_interval(&self) -> Duration {
        self.current.load().app.config.tls.watch_interval.get()
    }

    fn resolve_interval(&self) -> Duration {
        self.current
            .load()
            .app
            .config
            .server
            .upstream_resolve_interval
            .get()
    }
}

/// Now, in Unix seconds (0 before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
