//! Prometheus metrics. Labels are bounded: route names come from config, statuses are
//! HTTP codes, reasons are fixed strings. Never a user, token or IP.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// `portcullis_build_info{version}`, always 1.
fn build_info() -> IntGaugeVec {
    let build_info = IntGaugeVec::new(
        Opts::new(
            "build_info",
            "1, labelled with the version of the running build",
        ),
        &["version"],
    )
    .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    build_info
}

/// A counter with labels.
fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

/// A counter without labels.
fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

/// A gauge without labels.
fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

/// The process collector on a registry of its own (no prefix): `process_*` on Linux,
/// nothing where `/proc` is not.
fn process_registry() -> Registry {
    let registry = Registry::new();
    let _ = registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ));
    registry
}

/// Every metric the gateway exports: its own in one registry (names prefixed
/// `portcullis_`), and the process's (`process_*`, the Prometheus client's collector:
/// CPU seconds, resident and virtual memory, open and maximum descriptors, start time) in
/// another, under the names every exporter uses. A clone shares the registries and series.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    process: Registry,
    /// Requests answered, by route name and HTTP status.
    pub requests: IntCounterVec,
    /// Time from request start to the end of the response, by route name.
    pub request_duration: HistogramVec,
    /// Time from sending to an upstream to its response header, by route name.
    pub upstream_duration: HistogramVec,
    /// Upstream failures by route name and kind (`connect`, `timeout`, `other`).
    pub upstream_errors: IntCounterVec,
    /// Requests currently being handled.
    pub in_flight: IntGauge,
    /// Login attempts by result (`success`, `failure`, `locked`, `deactivated`, `two_factor_required`).
    pub logins: IntCounterVec,
    /// Accounts locked by brute-force protection.
    pub lockouts: IntCounter,
    /// Refresh tokens presented again after rotation (possible theft).
    pub refresh_reuse: IntCounter,
    /// Decisions on proxied and forward-auth requests, by route, outcome and reason.
    pub auth_decisions: IntCounterVec,
    /// Live sessions in the session store (every instance's, when it is shared), refreshed
    /// periodically, not per request.
    pub sessions_active: IntGauge,
    /// Accounts in the user store, active or not, refreshed periodically.
    pub users_registered: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("portcullis".into()), None)
            .unwrap_or_else(|_| Registry::new());
        let requests = counter_vec(
            "http_requests_total",
            "HTTP requests answered, by route and status",
            &["route", "status"],
        );
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer a request, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "upstream_duration_seconds",
                "Time for an upstream to send its response header, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let upstream_errors = counter_vec(
            "upstream_errors_total",
            "Requests an upstream could not answer, by route and kind",
            &["route", "kind"],
        );
        let in_flight = gauge("http_requests_in_flight", "Requests being handled now");

        let logins = counter_vec("logins_total", "Login attempts by result", &["result"]);
        let lockouts = counter("lockouts_total", "Accounts locked after repeated failures");
        let refresh_reuse = counter(
            "refresh_token_reuse_total",
            "Rotated-out refresh tokens presented again (the session is ended)",
        );

        let auth_decisions = counter_vec(
            "auth_decisions_total",
            "Access decisions on proxied requests, by route, outcome and reason",
            &["route", "outcome", "reason"],
        );

        let sessions_active = gauge(
            "sessions_active",
            "Live sessions in the session store (shared by every instance on Redis)",
        );
        let users_registered = gauge(
            "users_registered",
            "Accounts in the user store, active or not",
        );

        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(in_flight.clone()),
            Box::new(logins.clone()),
            Box::new(lockouts.clone()),
            Box::new(refresh_reuse.clone()),
            Box::new(auth_decisions.clone()),
            Box::new(sessions_active.clone()),
            Box::new(users_registered.clone()),
            Box::new(build_info()),
        ] {
            // Names are unique by construction; a clash would be a programming error caught by tests.
            let _ = registry.register(collector);
        }
        Self {
            registry,
            process: process_registry(),
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            in_flight,
            logins,
            lockouts,
            refresh_reuse,
            auth_decisions,
            sessions_active,
            users_registered,
        }
    }

    /// Registers another collector (used by later subsystems).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        let _ = self.registry.register(collector);
    }

    /// Both registries in Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Status labels with a series of their own; any other status counts under its class.
const STATUS_LABELS: [&str; 34] = [
    "0", "100", "101", "200", "201", "202", "204", "206", "301", "302", "303", "304", "307", "308",
    "400", "401", "403", "404", "405", "409", "413", "415", "422", "423", "429", "500", "502",
    "503", "504", "1xx", "2xx", "3xx", "4xx", "5xx",
];

/// The label of a status: its own code when common, else its class. Static, so metrics
/// never allocate per request.
pub fn status_label(status: u16) -> &'static str {
    STATUS_LABELS[status_index(status)]
}

/// The codes with a label of their own: `STATUS_LABELS[i]` is `STATUS_CODES[i]` written out.
const STATUS_CODES: [u16; 29] = [
    0, 100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405,
    409, 413, 415, 422, 423, 429, 500, 502, 503, 504,
];

fn status_index(status: u16) -> usize {
    STATUS_CODES
        .iter()
        .position(|c| *c == status)
        .unwrap_or(match status {
            s if s < 200 => 29,
            s if s < 300 => 30,
            s if s < 400 => 31,
            s if s < 500 => 32,
            _ => 33,
        })
}

/// One route's series, looked up once each and then kept, so the proxy path does no
/// label hashing. Series still appear only once used, as with plain label lookups.
pub struct RouteMetrics {
    route: String,
    requests: IntCounterVec,
    request_duration_vec: HistogramVec,
    upstream_duration_vec: HistogramVec,
    auth_decisions: IntCounterVec,
    by_status: [OnceLock<IntCounter>; STATUS_LABELS.len()],
    request_duration: OnceLock<Histogram>,
    upstream_duration: OnceLock<Histogram>,
    allowed: OnceLock<IntCounter>,
}

impl RouteMetrics {
    /// The series of the route labelled `route`.
    pub fn new(metrics: &Metrics, route: &str) -> Self {
        Self {
            route: route.to_owned(),
            requests: metrics.requests.clone(),
            request_duration_vec: metrics.request_duration.clone(),
            upstream_duration_vec: metrics.upstream_duration.clone(),
            auth_decisions: metrics.auth_decisions.clone(),
            by_status: std::array::from_fn(|_| OnceLock::new()),
            request_duration: OnceLock::new(),
            upstream_duration: OnceLock::new(),
            allowed: OnceLock::new(),
        }
    }

    /// `http_requests_total{route, status}`.
    pub fn requests(&self, status: u16) -> &IntCounter {
        let i = status_index(status);
        self.by_status[i].get_or_init(|| {
            self.requests
                .with_label_values(&[self.route.as_str(), STATUS_LABELS[i]])
        })
    }

    /// `http_request_duration_seconds{route}`.
    pub fn request_duration(&self) -> &Histogram {
        self.request_duration
            .get_or_init(|| self.request_duration_vec.with_label_values(&[&self.route]))
    }

    /// `upstream_duration_seconds{route}`.
    pub fn upstream_duration(&self) -> &Histogram {
        self.upstream_duration
            .get_or_init(|| self.upstream_duration_vec.with_label_values(&[&self.route]))
    }

    /// `auth_decisions_total{route, outcome="allowed", reason="allowed"}`.
    pub fn allowed(&self) -> &IntCounter {
        self.allowed.get_or_init(|| {
            self.auth_decisions
                .with_label_values(&[self.route.as_str(), "allowed", "allowed"])
        })
    }

    /// `auth_decisions_total{route, outcome="denied", reason}` (refusals are the slow path).
    pub fn denied(&self, reason: &str) -> IntCounter {
        self.auth_decisions
            .with_label_values(&[self.route.as_str(), "denied", reason])
    }
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names() {
        let m = Metrics::new();
        m.requests.with_label_values(&["app", "200"]).inc();
        m.request_duration.with_label_values(&["app"]).observe(0.01);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("portcullis_http_requests_total{route=\"app\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_http_requests_in_flight 0"),
            "{text}"
        );
    }

    #[test]
    fn route_series_are_the_labelled_ones_and_appear_once_used() {
        let m = Metrics::new();
        let route = RouteMetrics::new(&m, "app");
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("route=\"app\""), "{text}");
        route.requests(200).inc();
        route.requests(200).inc();
        route.requests(418).inc();
        route.allowed().inc();
        route.request_duration().observe(0.01);
        let text = String::from_utf8(m.render()).unwrap();
        for series in [
            "portcullis_http_requests_total{route=\"app\",status=\"200\"} 2",
            "portcullis_http_requests_total{route=\"app\",status=\"4xx\"} 1",
            "portcullis_auth_decisions_total{outcome=\"allowed\",reason=\"allowed\",route=\"app\"} 1",
            "portcullis_http_request_duration_seconds_count{route=\"app\"} 1",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }

    #[test]
    fn status_labels_are_codes_or_classes() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(0), "0");
        assert_eq!(status_label(299), "2xx");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(status_label(102), "1xx");
        for (code, label) in STATUS_CODES.iter().zip(STATUS_LABELS) {
            assert_eq!(status_label(*code), label);
            assert_eq!(code.to_string(), label);
        }
    }
}
