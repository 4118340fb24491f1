//! Throttling of repeated warnings and errors, per call site.
//!
//! When a dependency is down, every request can log the same WARN: a Redis outage wrote
//! about 45 KB/s to `error.log`, which buried everything else and made the file useless for
//! alerting. Each WARN or ERROR call site may write [`BURST`] lines per [`WINDOW`]; further
//! lines from it are counted, and a reporter thread writes one line per call site with the
//! count ("repeated log lines suppressed") when its window ends. INFO and below are never
//! throttled (they are off by default for per-request events), nor are the security and
//! access logs, which keep every line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter as LayerFilter};

/// Lines one call site may write per window before the rest are counted instead.
pub const BURST: u32 = 5;
/// The window, and how often the suppressed counts are reported.
pub const WINDOW: Duration = Duration::from_secs(10);

/// What one call site wrote in its current window.
struct Site {
    meta: &'static Metadata<'static>,
    window_start: Instant,
    written: u32,
    suppressed: u64,
}

/// The per-call-site counts, shared by the filter and the reporter.
#[derive(Default)]
pub struct Throttle {
    sites: Mutex<HashMap<Identifier, Site>>,
}

impl Throttle {
    /// Whether a line from `meta`'s call site may be written now; counts it if not.
    pub fn admit(&self, meta: &'static Metadata<'static>, now: Instant) -> bool {
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        let site = sites.entry(meta.callsite()).or_insert(Site {
            meta,
            window_start: now,
            written: 0,
            suppressed: 0,
        });
        if now.duration_since(site.window_start) >= WINDOW && site.suppressed == 0 {
            site.window_start = now;
            site.written = 0;
        }
        if site.written < BURST {
            site.written += 1;
            true
        } else {
            site.suppressed += 1;
            false
        }
    }

    /// Takes the counts of the call sites whose window has ended with lines suppressed,
    /// and starts their next window.
    pub fn take_ended(&self, now: Instant) -> Vec<(&'static Metadata<'static>, u64)> {
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        let mut ended = Vec::new();
        sites.retain(|_, site| {
            if now.duration_since(site.window_start) < WINDOW {
                return true;
            }
            if site.suppressed > 0 {
                ended.push((site.meta, site.suppressed));
            }
            false
        });
        ended
    }
}

/// The process's one throttle, and its reporter thread, started on first use.
fn shared() -> &'static Arc<Throttle> {
    static SHARED: OnceLock<Arc<Throttle>> = OnceLock::new();
    SHARED.get_or_init(|| {
        let throttle = Arc::new(Throttle::default());
        let reporter = throttle.clone();
        // A thread of its own: the log subscriber exists before any runtime does.
        let _ = std::thread::Builder::new()
            .name("portcullis-log-throttle".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(WINDOW / 2);
                    report(&reporter.take_ended(Instant::now()));
                }
            });
        throttle
    })
}

fn report(ended: &[(&'static Metadata<'static>, u64)]) {
    for (meta, suppressed) in ended {
        tracing::warn!(
            suppressed,
            of_target = meta.target(),
            of_level = %meta.level(),
            of_site = meta.name(),
            "repeated log lines suppressed"
        );
    }
}

/// The per-layer filter over stdout, `combined.log` and `error.log`: throttles WARN and
/// ERROR lines per call site, and drops Pingora's ERROR lines that are no error of ours
/// (`PINGORA_NOISE` in the parent module).
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter;

impl<S> LayerFilter<S> for Filter {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return true;
        }
        if super::is_pingora_noise(event) {
            return false;
        }
        shared().admit(meta, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> &'static Metadata<'static> {
        struct Probe;
        impl tracing::Callsite for Probe {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                &META
            }
        }
        static PROBE: Probe = Probe;
        static META: Metadata<'static> = tracing::metadata::Metadata::new(
            "probe",
            "portcullis::probe",
            Level::WARN,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&PROBE)),
            tracing::metadata::Kind::EVENT,
        );
        &META
    }

    #[test]
    fn a_call_site_writes_a_burst_per_window_and_the_rest_is_counted_once() {
        let throttle = Throttle::default();
        let start = Instant::now();
        let admitted = (0..50).filter(|_| throttle.admit(site(), start)).count();
        assert_eq!(admitted, BURST as usize);
        assert!(throttle.take_ended(start + WINDOW / 2).is_empty());
        let ended = throttle.take_ended(start + WINDOW);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].1, 50 - u64::from(BURST));
        // The next window starts afresh.
        let later = start + WINDOW;
        assert!(throttle.admit(site(), later));
        assert!(throttle.take_ended(later + WINDOW).is_empty());
    }
}
